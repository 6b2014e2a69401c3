"""Runs detect -> align -> encode -> invert -> generate -> merge over a stream of images.

Faces of consecutive images are gathered into batches of `runtime.batch_size` for the
inverter and generator; images come out in input order as soon as all their faces
are done. Only the components the chosen generator needs are built and loaded.

Fail closed (rp_core.verify): faces a second detector finds that the main one missed,
and faces below `coverage.min_face_size`, go to the fallback generator instead; after
merging, every face is re-checked with an identity encoder and a face that still
matches its original is retried, obfuscated, or fails its image (`verify.policy`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rp_core.align import align_faces, aligned_input
from rp_core.config import COMPONENT_SECTIONS, RunConfig, sections_in_use, validate_options
from rp_core.errors import ConfigError, InputError, RpError, VerificationError
from rp_core.interfaces import Component, Detector, Generator, IdentityEncoder, Inverter, Merger
from rp_core.models import ModelFile, ModelPool
from rp_core.plugins import PluginHost
from rp_core.types import AlignedFace, FaceRecord, GenerationRequest, IdentityEmbedding, ImageResult
from rp_core.verify import Check, Verifier, build_extra_component, missed_faces, verify_encoder_name

#: Why a face skips the main generator and goes straight to the fallback one.
ROUTE_GENERATE, ROUTE_COVERAGE, ROUTE_SMALL = "generate", "coverage", "small"
ErrorHandler = Callable[[Hashable, Exception], None]


@dataclass
class _ImageWork:
    key: Hashable
    image: np.ndarray
    faces: list[AlignedFace]
    identities: list[IdentityEmbedding | None]
    timings: dict[str, float]
    routes: list[str] = field(default_factory=list)
    originals: list[IdentityEmbedding] | None = None
    crops: dict[int, np.ndarray] = field(default_factory=dict)
    face_timings: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def to_generate(self) -> list[int]:
        return [i for i, route in enumerate(self.routes) if route == ROUTE_GENERATE]

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
            raise ConfigError(
                f"generator {config.generator.name!r} needs an identity encoder; identity_encoder.name is empty"
            )
        if self.needs_inversion and not config.inverter.name:
            raise ConfigError(f"generator {config.generator.name!r} needs an inverter; inverter.name is empty")
        self._extras: dict[str, Component] = {}
        self._verifier: Verifier | None = None
        self._safeguards()  # built now, so a misspelt name or option fails before any image is read

    # -- components ----------------------------------------------------------------------

    def _registration(self, section: str) -> Any:
        name = getattr(self.config, section).name
        if not name:
            raise ConfigError(f"{section}.name is empty")
        return self.host.get(section, name)

    def sections_in_use(self) -> list[str]:
        """The component slots this config will actually run."""
        return sections_in_use(self.host, self.config.generator.name)

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

    # -- safeguards (rp_core.verify) ------------------------------------------------------

    def _extra(self, key: str, kind: str, name: str, options: dict[str, Any]) -> Component:
        if key not in self._extras:
            self._extras[key] = build_extra_component(self.host, self.context, kind, name, options, key)
        return self._extras[key]

    @property
    def verifier(self) -> Verifier:
        """The re-check encoder; the pipeline's own identity encoder when it is the same one."""
        if self._verifier is None:
            cfg = self.config.verify
            name = verify_encoder_name(cfg.encoder, self.needs_identity, self.config.identity_encoder.name)
            own = self.config.identity_encoder
            if (
                self.needs_identity
                and name == own.name
                and (not cfg.encoder_options or cfg.encoder_options == own.options)
            ):
                encoder = self.encoder
            else:
                try:
                    encoder = self._extra("verify.encoder", "identity_encoder", name, cfg.encoder_options)  # type: ignore[assignment]
                except ConfigError as exc:
                    raise ConfigError(
                        f"{exc}\nOutputs are re-checked before they are written: set verify.encoder to an installed "
                        "identity encoder, or verify.enabled=false to write them unchecked"
                    ) from None
            self._verifier = Verifier(encoder, cfg.threshold)  # type: ignore[arg-type]
        return self._verifier

    @property
    def fallback_generator(self) -> Generator:
        cfg = self.config.verify
        generator = self._extra("verify.fallback_generator", "generator", cfg.fallback_generator, cfg.fallback_options)
        if getattr(generator, "needs_identity", False) or getattr(generator, "needs_inversion", False):
            raise ConfigError(
                f"verify.fallback_generator: bad value {cfg.fallback_generator!r}: a fallback must need no identity "
                "and no inversion (use pixelate, blur or solid)"
            )
        return generator  # type: ignore[return-value]

    @property
    def last_resort_generator(self) -> Generator | None:
        """What fills a face that still matches after the fallback (`verify.last_resort`), if any."""
        cfg = self.config.verify
        if not (cfg.enabled and cfg.last_resort):
            return None
        filler = self._extra("verify.last_resort", "generator", cfg.last_resort, {})
        if getattr(filler, "needs_identity", False) or getattr(filler, "needs_inversion", False):
            raise ConfigError(f"verify.last_resort: bad value {cfg.last_resort!r}: use solid (or null)")
        return filler  # type: ignore[return-value]

    @property
    def coverage_detector(self) -> Detector | None:
        cfg = self.config.coverage
        if not cfg.detector:
            return None
        return self._extra("coverage.detector", "detector", cfg.detector, cfg.detector_options)  # type: ignore[return-value]

    def _safeguards(self) -> list[Component]:
        extras: list[Component] = []
        if self.config.verify.enabled:
            extras.append(self.verifier.encoder)
        if self.config.verify.enabled or self.config.coverage.detector or self.config.coverage.min_face_size > 0:
            extras.append(self.fallback_generator)
        extras.extend(c for c in (self.last_resort_generator, self.coverage_detector) if c is not None)
        own = {id(c) for c in self._components.values()}
        return [c for c in extras if id(c) not in own]

    def components_in_use(self) -> list[Component]:
        """The pipeline's components this config runs, then its safeguards."""
        return [self.component(s) for s in self.sections_in_use()] + self._safeguards()

    def model_files(self) -> list[ModelFile]:
        return [f for component in self.components_in_use() for f in component.model_files()]

    def load(self) -> None:
        """Load every component in use and every safeguard (fails fast, before any image is touched).

        Missing weights are downloaded the normal way when the download hosts resolve;
        offline, one error names every missing file, where it was looked for and how to get it.
        """
        from rp_core.models import network_available, require_present

        in_use = self.components_in_use()
        lacking = [c for c in in_use if any(not f.present for f in c.model_files())]
        if lacking and network_available():
            for component in lacking:
                try:
                    component.download()
                except Exception:  # reported below as missing files, not as a network traceback
                    pass
        require_present(self.model_files())
        for component in in_use:
            component.load()

    @property
    def batch_size(self) -> int:
        size = self.config.runtime.batch_size
        if size == "auto":
            chooser: Callable[[], int] | None = getattr(self.generator, "auto_batch_size", None)
            return max(1, chooser()) if chooser else 8
        return int(size)

    # -- running ---------------------------------------------------------------------------

    def anonymize(self, image: np.ndarray, *, aligned: bool = False) -> ImageResult:
        """Anonymize one RGB uint8 image; raises VerificationError rather than return a leaking one."""
        return next(iter(self.anonymize_stream([(0, image)], aligned=aligned)))[1]

    def anonymize_stream(
        self,
        images: Iterable[tuple[Hashable, np.ndarray]],
        *,
        aligned: bool = False,
        on_error: ErrorHandler | None = None,
    ) -> Iterator[tuple[Hashable, ImageResult]]:
        """Anonymize (key, image) pairs, batching faces across images; yields in input order.

        Without `on_error` the first failing image raises. With it, an image whose detection,
        encoding, merging or verification fails is handed to `on_error(key, exc)` and left
        out of the results, and the stream goes on with the other images.
        """
        self.load()
        pending: deque[_ImageWork] = deque()
        queue: deque[tuple[_ImageWork, int]] = deque()
        batch = self.batch_size
        for key, image in images:
            try:
                work = self._prepare(key, image, aligned)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(key, _per_image(exc))
                continue
            pending.append(work)
            queue.extend((work, i) for i in work.to_generate)
            while len(queue) >= batch:
                self._run_batch([queue.popleft() for _ in range(batch)])
            yield from self._finished(pending, on_error)
        while queue:
            self._run_batch([queue.popleft() for _ in range(min(batch, len(queue)))])
        yield from self._finished(pending, on_error)

    def _prepare(self, key: Hashable, image: np.ndarray, aligned: bool) -> _ImageWork:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        size = self.config.align.face_image_size
        if aligned:
            found = self.detector.detect(image)
            if len(found) > 1:  # regenerating the whole image as one face would leave the others as they are
                raise InputError(
                    f"--aligned expects one already-aligned face per image, but the detector found {len(found)}; "
                    "run without --aligned to anonymize every face"
                )
            faces = [aligned_input(image, size, found[0] if found else None)]
            routes = [ROUTE_GENERATE]
        else:
            found = self.detector.detect(image)
            extra: list[Any] = []
            coverage = self.coverage_detector
            if coverage is not None:
                extra = missed_faces(found, coverage.detect(image), self.config.coverage.iou)
            faces = align_faces(image, [*found, *extra], size)
            routes = [ROUTE_GENERATE] * len(found) + [ROUTE_COVERAGE] * len(extra)
        min_size = self.config.coverage.min_face_size
        routes = [
            ROUTE_SMALL if r == ROUTE_GENERATE and af.face.size < min_size else r
            for r, af in zip(routes, faces, strict=True)
        ]
        timings["detect_align"] = time.perf_counter() - start
        work = _ImageWork(key, image, faces, [None] * len(faces), timings, routes)
        if self.needs_identity and work.to_generate:
            start = time.perf_counter()
            chosen = work.to_generate
            encoded = self.encoder.encode(image, [faces[i].face for i in chosen])
            for i, embedding in zip(chosen, encoded, strict=True):
                work.identities[i] = embedding
            timings["encode"] = time.perf_counter() - start
        if self.config.verify.enabled and faces:
            start = time.perf_counter()
            verifier = self.verifier
            if self.needs_identity and verifier.encoder is self.encoder and all(e is not None for e in work.identities):
                work.originals = [e for e in work.identities if e is not None]
            else:
                work.originals = verifier.encode(image, [f.face for f in faces])
            timings["verify_encode"] = time.perf_counter() - start
        others = [i for i, route in enumerate(routes) if route != ROUTE_GENERATE]
        if others:
            start = time.perf_counter()
            crops = self.fallback_generator.generate([GenerationRequest(face=faces[i]) for i in others])
            for i, crop in zip(others, crops, strict=True):
                work.crops[i] = crop
            timings["fallback"] = time.perf_counter() - start
        return work

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

    def _finished(
        self, pending: deque[_ImageWork], on_error: ErrorHandler | None
    ) -> Iterator[tuple[Hashable, ImageResult]]:
        while pending and pending[0].done:
            work = pending.popleft()
            try:
                result = self._merge(work)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(work.key, _per_image(exc))
                continue
            yield work.key, result

    def _merge(self, work: _ImageWork) -> ImageResult:
        if not work.faces:
            return ImageResult(image=work.image.copy(), records=(), timings=work.timings)
        start = time.perf_counter()
        crops = [work.crops[i] for i in range(len(work.faces))]
        merged = self.merger.merge(work.image, work.faces, crops)
        work.timings["merge"] = time.perf_counter() - start
        fallback_name = self.config.verify.fallback_generator
        generators = [self.generator.name if r == ROUTE_GENERATE else fallback_name for r in work.routes]
        notes: list[dict[str, Any]] = [{} for _ in work.faces]
        for i, route in enumerate(work.routes):
            if route == ROUTE_COVERAGE:
                notes[i]["found_by"] = f"coverage detector {self.config.coverage.detector}"
            elif route == ROUTE_SMALL:
                notes[i]["obfuscated_because"] = (
                    f"smaller than coverage.min_face_size ({self.config.coverage.min_face_size:g} px)"
                )
        if self.config.verify.enabled:
            start = time.perf_counter()
            merged = self._verify(work, crops, merged, generators, notes)
            work.timings["verify"] = time.perf_counter() - start
        records = tuple(
            FaceRecord(
                index=i,
                box=af.face.box,
                score=af.face.score,
                detector=af.face.detector or str(self.config.detector.name),
                action="regenerated" if self.needs_inversion and generators[i] == self.generator.name else "obfuscated",
                generator=generators[i],
                timings=work.face_timings.get(i, {}),
                notes=notes[i],
            )
            for i, af in enumerate(work.faces)
        )
        return ImageResult(image=merged, records=records, timings=work.timings)

    # -- verification ---------------------------------------------------------------------------

    def _verify(
        self,
        work: _ImageWork,
        crops: list[np.ndarray],
        merged: np.ndarray,
        generators: list[str],
        notes: list[dict[str, Any]],
    ) -> np.ndarray:
        """Re-check every face of `merged`; fix or refuse leaks per `verify.policy`. Updates crops/generators/notes."""
        cfg = self.config.verify
        verifier = self.verifier
        faces = [af.face for af in work.faces]
        assert work.originals is not None
        checks = verifier.check(work.image, merged, faces, work.originals)
        first = [c.score for c in checks]
        tries = [0] * len(faces)
        fallback: list[str | None] = [None] * len(faces)

        def leaking() -> list[int]:
            return [i for i, c in enumerate(checks) if c.leak]

        if leaking() and cfg.policy == "fail":
            raise VerificationError(self._leak_message(leaking(), checks, "policy 'fail'"))
        if cfg.policy == "retry":
            for attempt in range(1, cfg.max_retries + 1):
                retry = [i for i in leaking() if work.routes[i] == ROUTE_GENERATE]
                generator = self._stronger_generator(attempt) if retry else None
                if generator is None:
                    break
                seed = self.config.runtime.seed + attempt
                for i, crop in zip(retry, self._regenerate(work, retry, generator, seed), strict=True):
                    crops[i] = crop
                    tries[i] = attempt
                merged = self.merger.merge(work.image, work.faces, crops)
                checks = verifier.check(work.image, merged, faces, work.originals)
        to_fallback = leaking()
        if to_fallback:
            generator = self.fallback_generator
            for i, crop in zip(
                to_fallback,
                generator.generate([GenerationRequest(face=work.faces[i]) for i in to_fallback]),
                strict=True,
            ):
                crops[i] = crop
                fallback[i] = generator.name
                generators[i] = generator.name
            merged = self.merger.merge(work.image, work.faces, crops)
            checks = verifier.check(work.image, merged, faces, work.originals)
        last_resort: list[str | None] = [None] * len(faces)
        filler = self.last_resort_generator
        if leaking() and filler is not None:
            stuck = leaking()
            requests = [GenerationRequest(face=work.faces[i]) for i in stuck]
            for i, crop in zip(stuck, filler.generate(requests), strict=True):
                crops[i] = crop
                last_resort[i] = generators[i] = filler.name
            merged = self.merger.merge(work.image, work.faces, crops)
            # pasted once more on top, so no neighbour's crop covers any part of a filled face
            merged = self.merger.merge(merged, [work.faces[i] for i in stuck], [crops[i] for i in stuck])
            checks = verifier.check(work.image, merged, faces, work.originals)
            # Nothing of these face regions survives, yet the encoder still calls them a match: it is reading
            # the surroundings or a region that is no face (a false detection). Kept, and said so.
            checks = [Check(c.score, c.unchanged, False) if last_resort[i] else c for i, c in enumerate(checks)]
        for i, check in enumerate(checks):
            notes[i]["verify"] = {
                **verifier.describe(),
                "score_first": round(first[i], 4),
                "score_final": round(check.score, 4),
                "unchanged": check.unchanged,
                "leak": check.leak,
                "retries": tries[i],
                "fallback": fallback[i],
                "last_resort": last_resort[i],
            }
            if last_resort[i] and verifier.matches(check.score):
                notes[i]["verify"]["inconclusive"] = "still matches with the face region filled: not identity"
        if leaking():
            raise VerificationError(self._leak_message(leaking(), checks, f"policy {cfg.policy!r} and the fallback"))
        return merged

    def _leak_message(self, leaks: list[int], checks: list[Any], after: str) -> str:
        verifier = self.verifier
        word = "similarity" if verifier.metric == "cosine" else "distance"
        sign = ">" if verifier.metric == "cosine" else "<"
        parts = [
            f"face {i}: "
            + ("not replaced" if checks[i].unchanged else f"{word} {checks[i].score:.3f} {sign} {verifier.threshold:g}")
            for i in leaks
        ]
        return (
            f"{len(leaks)} of {len(checks)} faces still match their original ({verifier.name}) after {after}: "
            f"{'; '.join(parts)}; nothing written"
        )

    def _stronger_generator(self, attempt: int) -> Generator | None:
        """The generator with guidance_scale times guidance_factor**attempt; None when it has no guidance."""
        from pydantic import ValidationError

        generator = self.generator
        fields = type(generator.options).model_fields
        if "guidance_scale" not in fields:
            return None
        values = generator.options.model_dump()
        values["guidance_scale"] = values["guidance_scale"] * self.config.verify.guidance_factor**attempt
        try:
            options = type(generator.options).model_validate(values)
        except ValidationError:
            return None  # beyond the allowed range: nothing stronger to try
        stronger = type(generator)(options, self.context)
        stronger.load()  # pooled weights: shares the loaded pipeline, loads nothing twice
        return stronger

    def _regenerate(self, work: _ImageWork, indices: list[int], generator: Generator, seed: int) -> list[np.ndarray]:
        faces = [work.faces[i] for i in indices]
        inversions: list[Any] = [None] * len(indices)
        if self.needs_inversion:
            inversions = self.inverter.invert(faces, [seed] * len(faces))
        requests = [
            GenerationRequest(face=work.faces[i], identity=work.identities[i], inversion=inv, seed=seed)
            for i, inv in zip(indices, inversions, strict=True)
        ]
        crops = generator.generate(requests)
        if len(crops) != len(indices):
            raise RuntimeError(f"generator {generator.name!r} returned {len(crops)} crops for {len(indices)} faces")
        return crops


def _per_image(exc: Exception) -> Exception:
    """Expected errors pass as they are; anything else becomes one line naming its type."""
    if isinstance(exc, RpError):
        return exc
    wrapped = RpError(f"{type(exc).__name__}: {exc}".splitlines()[0])
    wrapped.__cause__ = exc
    return wrapped
