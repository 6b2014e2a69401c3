"""The five component kinds of the pipeline, as abstract classes.

A component is cheap to construct (it only validates its options) and loads its
weights in `load()`, so listing plugins or printing help never imports torch.
Each component declares its options as a pydantic model that rejects unknown keys.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from rp_core.models import DEFAULT_POOL, ModelFile, ModelPool
from rp_core.types import AlignedFace, Face, GenerationRequest, IdentityEmbedding, Inversion


class ComponentOptions(BaseModel):
    """Base of every component's options: unknown keys are an error, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class RuntimeContext:
    """Run-wide settings every component sees (device, precision, seed, where models live)."""

    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    batch_size: int | Literal["auto"] = 8
    models_dir: Path | None = None
    allow_slow_cpu: bool = False
    compile: bool = False
    cuda_graphs: bool = True
    fp8: bool = False
    pool: ModelPool = field(default_factory=lambda: DEFAULT_POOL)


class Component(ABC):  # noqa: B024 (abstract by kind: the five subclasses declare the abstract methods)
    """Common shape of every pluggable stage."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Options: ClassVar[type[ComponentOptions]] = ComponentOptions
    #: Modules `load()` imports; `rp doctor` import-checks them without loading any weights.
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: ComponentOptions | None = None, context: RuntimeContext | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.context = context if context is not None else RuntimeContext()
        self._loaded = False

    def load(self) -> None:
        """Load weights once; later calls do nothing. Raise MissingModelsError when files are absent."""
        if not self._loaded:
            self._load()
            self._loaded = True

    def _load(self) -> None:  # noqa: B027 (optional hook: components without weights skip it)
        """Override to load weights."""

    def model_files(self) -> list[ModelFile]:
        """The weight files this component needs, with where they were looked for."""
        return []

    def download(self, target: Path | None = None) -> list[Path]:
        """Fetch missing weights into their usual cache, or into `target`; return what is now present."""
        return [f.found_at for f in self.model_files() if f.found_at is not None]

    def version(self) -> str:
        """A string that changes when outputs may change (for manifests and caches)."""
        return "1"

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "options": self.options.model_dump(mode="json")}


class Detector(Component):
    kind = "detector"

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Face]:
        """Every face in an RGB uint8 (H, W, 3) image, in image pixel coordinates."""


class IdentityEncoder(Component):
    kind = "identity_encoder"
    #: "cosine": similarity, higher means same person; "euclidean": distance, lower means same person.
    metric: ClassVar[Literal["cosine", "euclidean"]] = "cosine"
    #: Where "same person" starts for this model (similarity above, or distance below).
    match_threshold: ClassVar[float] = 0.5

    @abstractmethod
    def encode(self, image: np.ndarray, faces: Sequence[Face]) -> list[IdentityEmbedding]:
        """One embedding per face, computed from the image and the face's landmarks (no re-detection)."""

    def is_match(self, a: IdentityEmbedding, b: IdentityEmbedding) -> bool:
        return same_person(compare_embeddings(a, b, self.metric), self.metric, self.match_threshold)


def same_person(score: float, metric: str, threshold: float) -> bool:
    """The one "same person" rule: similarity above, or distance below, the threshold."""
    return score > threshold if metric == "cosine" else score < threshold


def compare_embeddings(a: IdentityEmbedding, b: IdentityEmbedding, metric: str = "cosine") -> float:
    """Cosine similarity or Euclidean distance between two embeddings of the same model."""
    if a.model != b.model:
        raise ValueError(f"cannot compare embeddings of {a.model!r} and {b.model!r}")
    if metric == "euclidean":
        return float(np.linalg.norm(a.vector - b.vector))
    denom = float(np.linalg.norm(a.vector) * np.linalg.norm(b.vector))
    return float(a.vector @ b.vector) / denom if denom > 0 else 0.0


class Inverter(Component):
    kind = "inverter"

    @abstractmethod
    def invert(self, faces: Sequence[AlignedFace], seeds: Sequence[int]) -> list[Inversion]:
        """Invert a batch of aligned crops; `seeds[i]` drives the randomness of face i."""


class Generator(Component):
    kind = "generator"
    #: The orchestrator builds an identity encoder only for generators that need one.
    needs_identity: ClassVar[bool] = False
    #: The orchestrator builds an inverter only for generators that need one.
    needs_inversion: ClassVar[bool] = False

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        """One new crop per request, uint8 and the same size as the request's crop."""


class Merger(Component):
    kind = "merger"

    @abstractmethod
    def merge(self, image: np.ndarray, faces: Sequence[AlignedFace], crops: Sequence[np.ndarray]) -> np.ndarray:
        """Paste each new crop back through its face's matrix; pixels away from faces stay unchanged."""


COMPONENT_KINDS: dict[str, type[Component]] = {
    "detector": Detector,
    "identity_encoder": IdentityEncoder,
    "inverter": Inverter,
    "generator": Generator,
    "merger": Merger,
}
