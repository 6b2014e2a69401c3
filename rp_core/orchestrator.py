"""Runs detect -> align -> encode -> invert -> generate -> merge over a stream of images.

Faces of consecutive images are gathered into batches of `runtime.batch_size` for the
inverter and generator; images come out in input order as soon as all their faces
are done. Only the components the chosen generator needs are built and loaded.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rp_core.align import align_faces, aligned_input
from rp_core.config import COMPONENT_SECTIONS, RunConfig, validate_options
from rp_core.errors import ConfigError
from rp_core.interfaces import Component, Detector, Generator, IdentityEncoder, Inverter, Merger
from rp_core.models import ModelFile, ModelPool
from rp_core.plugins import PluginHost
from rp_core.types import AlignedFace, FaceRecord, GenerationRequest, IdentityEmbedding, ImageResult


@dataclass
class _ImageWork:
    key: Hashable
    image: np.ndarray
    faces: list[AlignedFace]
    identities: list[IdentityEmbedding | None]
    timings: dict[str, float]
    crops: dict[int, np.ndarray] = field(default_factory=dict)
    face_timings: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return len(self.crops) == len(self.faces)


class Anonymizer:
    """Builds the components a config names and anonymizes images with them."""

    def __init__(self, config: RunConfig, host: PluginHost | None = None, pool: ModelPool | None = None) -> None:
        self.config = config
        self.host = host if host is not None else PluginHost()
        self.context = config.runtime_context(pool)
        self._components: dict[str, Component] = {}
        generator_cls = self._registration("generator").cls
        self.needs_identity = bool(getattr(generator_cls, "needs_identity", False))
        self.needs_inversion = bool(getattr(generator_cls, "needs_inversion", False))
        if self.needs_identity and not config.identity_encoder.name:
            raise ConfigError(f"generator {config.generator.name!r} needs an identity encoder; identity_encoder.name is empty")
        if self.needs_inversion and not config.inverter.name:
            raise ConfigError(f"generator {config.generator.name!r} needs an inverter; inverter.name is empty")

    # -- components ----------------------------------------------------------------------

    def _registration(self, section: str) -> Any:
        name = getattr(self.config, section).name
        if not name:
            raise ConfigError(f"{section}.name is empty")
        return self.host.get(section, name)

    def sections_in_use(self) -> list[str]:
        """The component slots this config will actually run."""
        used = ["detector"]
        if self.needs_identity:
            used.append("identity_encoder")
        if self.needs_inversion:
            used.append("inverter")
        return [*used, "generator", "merger"]

    def component(self, section: str) -> Component:
        if section not in COMPONENT_SECTIONS:
            raise KeyError(section)
        if section not in self._components:
            choice = getattr(self.config, section)
            options = validate_options(self.host, section, choice)
            self._components[section] = self._registration(section).cls(options, self.context)
        return self._components[section]

    @property
    def detector(self) -> Detector:
        return self.component("detector")  # type: ignore[return-value]

    @property
    def encoder(self) -> IdentityEncoder:
        return self.component("identity_encoder")  # type: ignore[return-value]

    @property
    def inverter(self) -> Inverter:
        return self.component("inverter")  # type: ignore[return-value]

    @property
    def generator(self) -> Generator:
        return self.component("generator")  # type: ignore[return-value]

    @property
    def merger(self) -> Merger:
        return self.component("merger")  # type: ignore[return-value]

    def model_files(self) -> list[ModelFile]:
        files: list[ModelFile] = []
        for section in self.sections_in_use():
            files.extend(self.component(section).model_files())
        return files

    def load(self) -> None:
        """Load every component in use (fails fast, before any image is touched)."""
        from rp_core.models import require_present

        require_present(self.model_files())
        for section in self.sections_in_use():
            self.component(section).load()

    @property
    def batch_size(self) -> int:
        size = self.config.runtime.batch_size
        if size == "auto":
            chooser: Callable[[], int] | None = getattr(self.generator, "auto_batch_size", None)
            return max(1, chooser()) if chooser else 8
        return int(size)

    # -- running ---------------------------------------------------------------------------

    def anonymize(self, image: np.ndarray, *, aligned: bool = False) -> ImageResult:
        """Anonymize one RGB uint8 image."""
        return next(iter(self.anonymize_stream([(0, image)], aligned=aligned)))[1]

    def anonymize_stream(
        self, images: Iterable[tuple[Hashable, np.ndarray]], *, aligned: bool = False
    ) -> Iterator[tuple[Hashable, ImageResult]]:
        """Anonymize (key, image) pairs, batching faces across images; yields in input order."""
        self.load()
        pending: deque[_ImageWork] = deque()
        queue: deque[tuple[_ImageWork, int]] = deque()
        batch = self.batch_size
        for key, image in images:
            work = self._prepare(key, image, aligned)
            pending.append(work)
            queue.extend((work, i) for i in range(len(work.faces)))
            while len(queue) >= batch:
                self._run_batch([queue.popleft() for _ in range(batch)])
            yield from self._finished(pending)
        while queue:
            self._run_batch([queue.popleft() for _ in range(min(batch, len(queue)))])
        yield from self._finished(pending)

    def _prepare(self, key: Hashable, image: np.ndarray, aligned: bool) -> _ImageWork:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        size = self.config.align.face_image_size
        if aligned:
            found = self.detector.detect(image)
            best = max(found, key=lambda f: f.size) if found else None
            faces = [aligned_input(image, size, best)]
        else:
            faces = align_faces(image, self.detector.detect(image), size)
        timings["detect_align"] = time.perf_counter() - start
        identities: list[IdentityEmbedding | None] = [None] * len(faces)
        if self.needs_identity and faces:
            start = time.perf_counter()
            identities = list(self.encoder.encode(image, [f.face for f in faces]))
            timings["encode"] = time.perf_counter() - start
        return _ImageWork(key, image, faces, identities, timings)

    def _run_batch(self, items: list[tuple[_ImageWork, int]]) -> None:
        seed = self.config.runtime.seed
        faces = [work.faces[i] for work, i in items]
        inversions: list[Any] = [None] * len(items)
        per_face: dict[str, float] = {}
        if self.needs_inversion:
            start = time.perf_counter()
            inversions = self.inverter.invert(faces, [seed] * len(faces))
            per_face["invert"] = (time.perf_counter() - start) / len(items)
        requests = [
            GenerationRequest(face=work.faces[i], identity=work.identities[i], inversion=inv, seed=seed)
            for (work, i), inv in zip(items, inversions, strict=True)
        ]
        start = time.perf_counter()
        crops = self.generator.generate(requests)
        per_face["generate"] = (time.perf_counter() - start) / len(items)
        if len(crops) != len(items):
            raise RuntimeError(f"generator {self.generator.name!r} returned {len(crops)} crops for {len(items)} faces")
        for (work, i), crop in zip(items, crops, strict=True):
            work.crops[i] = crop
            work.face_timings[i] = dict(per_face)

    def _finished(self, pending: deque[_ImageWork]) -> Iterator[tuple[Hashable, ImageResult]]:
        while pending and pending[0].done:
            work = pending.popleft()
            yield work.key, self._merge(work)

    def _merge(self, work: _ImageWork) -> ImageResult:
        if not work.faces:
            return ImageResult(image=work.image.copy(), records=(), timings=work.timings)
        start = time.perf_counter()
        crops = [work.crops[i] for i in range(len(work.faces))]
        merged = self.merger.merge(work.image, work.faces, crops)
        work.timings["merge"] = time.perf_counter() - start
        records = tuple(
            FaceRecord(
                index=i,
                box=af.face.box,
                score=af.face.score,
                detector=af.face.detector or str(self.config.detector.name),
                action="regenerated" if self.needs_inversion else "obfuscated",
                generator=self.generator.name,
                timings=work.face_timings.get(i, {}),
            )
            for i, af in enumerate(work.faces)
        )
        return ImageResult(image=merged, records=records, timings=work.timings)
