"""Runs detect -> align -> encode -> invert -> generate -> merge over a stream of images.

Faces of consecutive images are gathered into batches of the pipeline's batch size for the
inverter and generator; images come out in input order as soon as all their faces are
done. The stages come from one assembled `rp_core.pipeline.Pipeline`.

Fail closed (rp_core.verify): faces a second detector finds that the main one missed, and
faces below `coverage.min_face_size`, go to the fallback generator instead; after merging,
every face is re-checked and a face that still matches its original is retried,
obfuscated, or fails its image (`verify.policy`). A failure inside a batch (an exception
while inverting or generating) fails only the images whose faces were in it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from rp_core.align import align_faces, aligned_input
from rp_core.errors import InputError, RpError
from rp_core.interfaces import Detector, Generator, IdentityEncoder, Inverter, Merger
from rp_core.pipeline import Pipeline, assemble
from rp_core.plugins import PluginHost
from rp_core.selection import References, encode_references, faces_to_keep
from rp_core.types import AlignedFace, Face, FaceChoice, FaceRecord, GenerationRequest, IdentityEmbedding, ImageResult
from rp_core.verify import Box, FailClosed, RecentIdentities, Verifier, footprint, iou, missed_faces, verifier_of

if TYPE_CHECKING:
    from rp_core.config import RunConfig
    from rp_core.models import ModelFile, ModelPool

#: Why a face skips the main generator and goes straight to the fallback one.
ROUTE_GENERATE, ROUTE_COVERAGE, ROUTE_SMALL = "generate", "coverage", "small"
#: A face the user chose to leave as it is (--keep-face, --only-face, --only-largest, --max-faces, a faces JSON).
ROUTE_KEEP = "keep"
ErrorHandler = Callable[[Hashable, Exception], None]


@dataclass(eq=False)  # identity matters: two images may hold equal data
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
    error: Exception | None = None
    prompts: list[str | None] = field(default_factory=list)
    #: The run's window of recent identities (verify: swapped and replayed crops), fed by `_remember`.
    recent: RecentIdentities | None = None

    @property
    def to_generate(self) -> list[int]:
        return [i for i, route in enumerate(self.routes) if route == ROUTE_GENERATE]

    @property
    def changed(self) -> list[int]:
        """Faces this run replaces (all but the kept ones)."""
        return [i for i, route in enumerate(self.routes) if route != ROUTE_KEEP]

    @property
    def done(self) -> bool:
        return self.error is not None or all(i in self.crops for i in self.changed)


class Anonymizer:
    """Anonymizes images with the stages of one assembled pipeline."""

    def __init__(
        self,
        config: RunConfig | None = None,
        host: PluginHost | None = None,
        pool: ModelPool | None = None,
        *,
        pipeline: Pipeline | None = None,
    ) -> None:
        if pipeline is None:
            if config is None:
                raise TypeError("Anonymizer needs a config or an assembled pipeline")
            host = host if host is not None else PluginHost()
            pipeline = assemble(config, host, config.runtime_context(pool))
        self.pipeline = pipeline
        self.config = pipeline.config
        self.host = pipeline.host
        self.context = pipeline.context
        self._verifier: Verifier | None = None
        self._references: References | None = None
        #: Inversion and generation run under this lock: the GPU stages are never entered by two threads.
        self._gpu = threading.RLock()

    # -- stages ---------------------------------------------------------------------------------

    @property
    def detector(self) -> Detector[Any]:
        return self.pipeline.detect

    @property
    def encoder(self) -> IdentityEncoder[Any]:
        encoder = self.pipeline.encode
        if encoder is None:
            raise RpError("this pipeline has no identity encoder")
        return encoder

    @property
    def inverter(self) -> Inverter[Any]:
        inverter = self.pipeline.invert
        if inverter is None:
            raise RpError("this pipeline has no inverter")
        return inverter

    @property
    def generator(self) -> Generator[Any]:
        return self.pipeline.generate

    @property
    def merger(self) -> Merger[Any]:
        return self.pipeline.merge

    @property
    def needs_identity(self) -> bool:
        return self.pipeline.needs_identity

    @property
    def needs_inversion(self) -> bool:
        return self.pipeline.needs_inversion

    def sections_in_use(self) -> list[str]:
        """The component slots this config will actually run."""
        return [s.key for s in self.pipeline.stages() if "." not in s.key]

    @property
    def verifier(self) -> Verifier:
        if self._verifier is None:
            self._verifier = verifier_of(self.pipeline)
            if self._verifier is None:
                raise RpError("verification is off (verify.enabled=false)")
        return self._verifier

    @property
    def coverage_detector(self) -> Detector[Any] | None:
        stage = self.pipeline.coverage
        return None if stage is None else stage.component  # type: ignore[return-value]

    @property
    def fallback_generator(self) -> Generator[Any]:
        stage = self.pipeline.fallback
        assert stage is not None, "the fallback is built whenever verification or coverage is on"
        return stage.component  # type: ignore[return-value]

    def model_files(self) -> list[ModelFile]:
        return self.pipeline.model_files()

    def load(self) -> None:
        """Load every stage (downloading where allowed); fails fast, before any image is touched."""
        self.pipeline.load()

    @property
    def batch_size(self) -> int:
        return self.pipeline.batch_size

    # -- running --------------------------------------------------------------------------------

    def anonymize(self, image: np.ndarray, *, aligned: bool = False) -> ImageResult:
        """Anonymize one RGB uint8 image; raises VerificationError rather than return a leaking one."""
        return next(iter(self.anonymize_stream([(0, image)], aligned=aligned)))[1]

    def anonymize_stream(
        self,
        images: Iterable[tuple[Hashable, np.ndarray]],
        *,
        aligned: bool = False,
        on_error: ErrorHandler | None = None,
        faces_for: Callable[[Hashable, np.ndarray], list[FaceChoice] | None] | None = None,
    ) -> Iterator[tuple[Hashable, ImageResult]]:
        """Anonymize (key, image) pairs, batching faces across images; yields in input order.

        Without `on_error` the first failing image raises. With it, an image whose detection,
        encoding, inversion, generation, merging or verification fails is handed to
        `on_error(key, exc)` and left out of the results, and the stream goes on with the others.
        `faces_for(key, image)` may give an image's faces (a reviewed faces JSON) instead of detecting
        them; the coverage detector still runs on top, so a face missing from the list is not let through.
        """
        self.load()
        if self.config.runtime.overlap:
            yield from self._stream_overlapped(images, aligned, on_error, faces_for)
            return
        pending: deque[_ImageWork] = deque()
        queue: deque[tuple[_ImageWork, int]] = deque()
        batch = self.batch_size
        recent = self._recent_identities()
        for key, image in images:
            try:
                given = faces_for(key, image) if faces_for is not None else None
                work = self._prepare(key, image, aligned, given)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(key, _per_image(exc))
                continue
            pending.append(self._remember(recent, work))
            queue.extend((work, i) for i in work.to_generate)
            while len(queue) >= batch:
                self._run_batch([queue.popleft() for _ in range(batch)], on_error)
            yield from self._finished(pending, on_error)
        while queue:
            self._run_batch([queue.popleft() for _ in range(min(batch, len(queue)))], on_error)
        yield from self._finished(pending, on_error)

    def _stream_overlapped(
        self,
        images: Iterable[tuple[Hashable, np.ndarray]],
        aligned: bool,
        on_error: ErrorHandler | None,
        faces_for: Callable[[Hashable, np.ndarray], list[FaceChoice] | None] | None,
    ) -> Iterator[tuple[Hashable, ImageResult]]:
        """The same stream, with the CPU stages off the GPU's thread (`runtime.overlap`).

        One worker thread reads and prepares the next images (decode, detection, alignment, encoding)
        and merges and verifies finished ones, in submission order, while this thread runs the
        inverter and generator. One worker, so CPU models are never called concurrently; the GPU
        stages take `_gpu` (verification retries run on the worker). Outputs equal the plain stream's.
        """
        from concurrent.futures import Future, ThreadPoolExecutor

        source = iter(images)
        done_reading = object()

        def prepare_next() -> Any:
            try:
                key, image = next(source)
            except StopIteration:
                return done_reading
            try:
                given = faces_for(key, image) if faces_for is not None else None
                return self._prepare(key, image, aligned, given)
            except Exception as exc:
                return (key, exc)

        def finish(work: _ImageWork) -> tuple[Hashable, ImageResult | Exception]:
            try:
                if work.error is not None:
                    raise work.error
                return work.key, self._merge(work)
            except Exception as exc:
                return work.key, exc

        pending: deque[_ImageWork] = deque()
        queue: deque[tuple[_ImageWork, int]] = deque()
        finishing: deque[Future[tuple[Hashable, ImageResult | Exception]]] = deque()
        batch = self.batch_size
        recent = self._recent_identities()

        def results(block: bool) -> Iterator[tuple[Hashable, ImageResult]]:
            while finishing and (block or finishing[0].done()):
                key, outcome = finishing.popleft().result()
                if isinstance(outcome, Exception):
                    if on_error is None:
                        raise outcome
                    on_error(key, _per_image(outcome))
                else:
                    yield key, outcome

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rp-cpu") as worker:
            ahead: deque[Future[Any]] = deque(worker.submit(prepare_next) for _ in range(2))
            while ahead:
                item = ahead.popleft().result()
                if item is done_reading:
                    continue
                ahead.append(worker.submit(prepare_next))
                if isinstance(item, tuple):
                    key, exc = item
                    if on_error is None:
                        raise exc
                    on_error(key, _per_image(exc))
                    continue
                pending.append(self._remember(recent, item))
                queue.extend((item, i) for i in item.to_generate)
                while len(queue) >= batch:
                    self._run_batch([queue.popleft() for _ in range(batch)], on_error)
                while pending and pending[0].done:
                    finishing.append(worker.submit(finish, pending.popleft()))
                yield from results(block=False)
            while queue:
                self._run_batch([queue.popleft() for _ in range(min(batch, len(queue)))], on_error)
            while pending:
                finishing.append(worker.submit(finish, pending.popleft()))
            yield from results(block=True)

    # -- the verifier's window of recent identities (rp_core.verify.RecentIdentities) -------------

    def _recent_identities(self) -> RecentIdentities:
        """One window per run: the images of at least two batches (one per face at most), and 16 at least."""
        return RecentIdentities(images=max(16, 2 * self.batch_size))

    @staticmethod
    def _remember(recent: RecentIdentities, work: _ImageWork) -> _ImageWork:
        """Feed the image's changed faces' identities to the window as it is prepared (before its batch runs)."""
        work.recent = recent
        if work.originals is not None:
            recent.add(work, [work.originals[i] for i in work.changed])
        return work

    def _prepare(
        self, key: Hashable, image: np.ndarray, aligned: bool, given: list[FaceChoice] | None = None
    ) -> _ImageWork:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        size = self.config.align.face_image_size
        choices = given if given is not None else [FaceChoice(f) for f in self.detector.detect(image)]
        found = [c.face for c in choices]
        if aligned:
            if len(found) > 1:  # regenerating the whole image as one face would leave the others as they are
                raise InputError(
                    f"--aligned expects one already-aligned face per image, but the detector found {len(found)}; "
                    "run without --aligned to anonymize every face"
                )
            if not found and self.config.verify.enabled:
                raise InputError(
                    "--aligned: the detector finds no face in this image, so its output could not be verified; "
                    "check that it is a face crop, or run without --aligned"
                )
            faces = [aligned_input(image, size, found[0] if found else None)]
            routes = [ROUTE_GENERATE]
            # the coverage detector still searches the whole input: other faces in the crop (a group in a
            # corner) are obfuscated on top of the regenerated image, not written as they are
            extra_aligned = self._coverage_faces(image, found)
            faces += align_faces(image, extra_aligned, size)
            routes += [ROUTE_COVERAGE] * len(extra_aligned)
        else:
            extra: list[Face] = self._coverage_faces(image, found)
            faces = align_faces(image, [*found, *extra], size)
            routes = [ROUTE_GENERATE] * len(found) + [ROUTE_COVERAGE] * len(extra)
            choices = [*choices, *(FaceChoice(f) for f in extra)]
        min_size = self.config.coverage.min_face_size
        routes = [
            ROUTE_SMALL if r == ROUTE_GENERATE and af.face.size < min_size else r
            for r, af in zip(routes, faces, strict=True)
        ]
        timings["detect_align"] = time.perf_counter() - start
        work = _ImageWork(key, image, faces, [None] * len(faces), timings, routes)
        work.prompts = [c.prompt for c in choices] if not aligned else [None] * len(faces)
        checker = self._identity_checker()
        if checker is not None and faces:
            start = time.perf_counter()
            work.originals = checker.encode(image, [f.face for f in faces])
            timings["verify_encode"] = time.perf_counter() - start
            keep = {i for i, c in enumerate(choices) if c.keep} | self._kept_by_selection(work)
            work.routes = routes = [ROUTE_KEEP if i in keep else r for i, r in enumerate(routes)]
        if self.needs_identity and work.to_generate:
            start = time.perf_counter()
            chosen = work.to_generate
            if checker is not None and checker is self.pipeline.encode and work.originals is not None:
                encoded = [work.originals[i] for i in chosen]  # the same encoder: encode once
            else:
                encoded = self.encoder.encode(image, [faces[i].face for i in chosen])
            for i, embedding in zip(chosen, encoded, strict=True):
                work.identities[i] = embedding
            timings["encode"] = time.perf_counter() - start
        others = [i for i, route in enumerate(routes) if route in (ROUTE_COVERAGE, ROUTE_SMALL)]
        if others:
            start = time.perf_counter()
            crops = self.fallback_generator.generate([GenerationRequest(face=faces[i]) for i in others])
            for i, crop in zip(others, crops, strict=True):
                work.crops[i] = crop
            timings["fallback"] = time.perf_counter() - start
        return work

    def _identity_checker(self) -> IdentityEncoder[Any] | None:
        """The encoder that reads the originals' identities: verification's, else the pipeline's own."""
        if self.config.verify.enabled:
            return self.verifier.encoder
        if self.selection_by_identity:
            return self.pipeline.encode
        return None

    @property
    def selection_by_identity(self) -> bool:
        return bool(self.config.select.keep_faces or self.config.select.only_faces)

    def _kept_by_selection(self, work: _ImageWork) -> set[int]:
        select = self.config.select
        if not (self.selection_by_identity or select.only_largest or select.max_faces is not None):
            return set()
        checker = self._identity_checker()
        assert checker is not None and work.originals is not None
        return faces_to_keep(
            [af.face for af in work.faces],
            work.originals,
            checker,
            self.references,
            only_largest=select.only_largest,
            max_faces=select.max_faces,
        )

    @property
    def references(self) -> References:
        """The keep/only reference identities, encoded once per run."""
        if self._references is None:
            select = self.config.select
            checker = self._identity_checker()
            if checker is None:
                self._references = References()
            else:
                detect = self.detector.detect
                self._references = References(
                    keep=encode_references(select.keep_faces, detect, checker, "--keep-face"),
                    only=encode_references(select.only_faces, detect, checker, "--only-face"),
                )
        return self._references

    def _coverage_faces(self, image: np.ndarray, found: list[Face]) -> list[Face]:
        """Faces the coverage detector finds that the main detector missed."""
        coverage = self.coverage_detector
        if coverage is None:
            return []
        from rp_core.coverage import search_faces

        return missed_faces(
            found, search_faces(coverage.detect, image, self._coverage_passes()), self.config.coverage.iou
        )

    def _coverage_passes(self) -> Any:
        """The search passes of `coverage.search` for the coverage detector (rp_core.coverage)."""
        from rp_core import coverage

        mode = self.config.coverage.search
        if mode == "plain":
            return coverage.PLAIN
        if mode == "thorough":
            return coverage.THOROUGH
        detector = self.coverage_detector
        return coverage.HOG if detector is not None and detector.coverage_passes == "hog" else coverage.DEFAULT

    def _run_batch(self, items: list[tuple[_ImageWork, int]], on_error: ErrorHandler | None) -> None:
        """Invert and generate one batch; an exception fails only the images it comes from.

        When a batch holding faces of several images fails, each image's faces are run again on
        their own, so one bad image (or a transient error) does not take its batch neighbours down.
        """
        try:
            self._generate_into(items)
            return
        except Exception as exc:
            if on_error is None:
                raise
            error = exc
        works = list(dict.fromkeys(work for work, _ in items))
        if len(works) == 1:
            works[0].error = works[0].error or _per_image(error)
            return
        for work in works:
            try:
                self._generate_into([(w, i) for w, i in items if w is work])
            except Exception as exc:
                work.error = work.error or _per_image(exc)

    def _generate_into(self, items: list[tuple[_ImageWork, int]]) -> None:
        crops, per_face = self._invert_generate(
            [work.faces[i] for work, i in items],
            [work.identities[i] for work, i in items],
            self.generator,
            self.config.runtime.seed,
            [work.prompts[i] if work.prompts else None for work, i in items],
        )
        for (work, i), crop in zip(items, crops, strict=True):
            work.crops[i] = crop
            work.face_timings[i] = dict(per_face)

    def _invert_generate(
        self,
        faces: list[AlignedFace],
        identities: list[IdentityEmbedding | None],
        generator: Generator[Any],
        seed: int,
        prompts: list[str | None] | None = None,
    ) -> tuple[list[np.ndarray], dict[str, float]]:
        with self._gpu:
            return self._invert_generate_locked(faces, identities, generator, seed, prompts)

    def _invert_generate_locked(
        self,
        faces: list[AlignedFace],
        identities: list[IdentityEmbedding | None],
        generator: Generator[Any],
        seed: int,
        prompts: list[str | None] | None,
    ) -> tuple[list[np.ndarray], dict[str, float]]:
        per_face: dict[str, float] = {}
        prompts = prompts if prompts is not None else [None] * len(faces)
        inversions: list[Any] = [None] * len(faces)
        if self.needs_inversion:
            start = time.perf_counter()
            inversions = self.inverter.invert(faces, [seed] * len(faces))
            per_face["invert"] = (time.perf_counter() - start) / len(faces)
        requests = [
            GenerationRequest(face=face, identity=identity, inversion=inversion, seed=seed, prompt=prompt)
            for face, identity, inversion, prompt in zip(faces, identities, inversions, prompts, strict=True)
        ]
        start = time.perf_counter()
        crops = generator.generate(requests)
        per_face["generate"] = (time.perf_counter() - start) / len(faces)
        if len(crops) != len(faces):
            raise RuntimeError(f"generator {generator.name!r} returned {len(crops)} crops for {len(faces)} faces")
        return crops, per_face

    def _finished(
        self, pending: deque[_ImageWork], on_error: ErrorHandler | None
    ) -> Iterator[tuple[Hashable, ImageResult]]:
        while pending and pending[0].done:
            work = pending.popleft()
            try:
                if work.error is not None:
                    raise work.error
                result = self._merge(work)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(work.key, _per_image(exc))
                continue
            yield work.key, result

    def _merge(self, work: _ImageWork) -> ImageResult:
        """Paste every changed face back, verify (fail closed), and record what happened to each face."""
        active = work.changed
        start = time.perf_counter()
        fallback_name = self.pipeline.fallback.name if self.pipeline.fallback else ""
        generators = {i: self.generator.name if work.routes[i] == ROUTE_GENERATE else fallback_name for i in active}
        notes: list[dict[str, Any]] = [{} for _ in work.faces]
        for i, route in enumerate(work.routes):
            if route == ROUTE_COVERAGE:
                coverage = self.coverage_detector
                notes[i]["found_by"] = f"coverage detector {coverage.name if coverage else '?'}"
                notes[i]["found_in_pass"] = work.faces[i].face.detector  # e.g. "centerface+rot90"
            elif route == ROUTE_SMALL:
                notes[i]["obfuscated_because"] = (
                    f"smaller than coverage.min_face_size ({self.config.coverage.min_face_size:g} px)"
                )
            elif route == ROUTE_KEEP:
                notes[i]["kept_because"] = (
                    "chosen to stay unchanged (--keep-face/--only-face/--only-largest/--max-faces/faces JSON)"
                )
        if not active:
            merged = work.image.copy()
        elif self.config.verify.enabled:
            merged = self._verify(work, active, generators, notes)
            work.timings["verify"] = time.perf_counter() - start
        else:
            faces, crops = [work.faces[i] for i in active], [work.crops[i] for i in active]
            merged = self.merger.merge(work.image, faces, crops)
            work.timings["merge"] = time.perf_counter() - start
        records = tuple(
            FaceRecord(
                index=i,
                box=af.face.box,
                score=af.face.score,
                detector=af.face.detector or str(self.config.detector.name),
                action=self._action(generators[i]) if i in generators else "kept",
                generator=generators.get(i),
                timings=work.face_timings.get(i, {}),
                notes=notes[i],
            )
            for i, af in enumerate(work.faces)
        )
        return ImageResult(image=merged, records=records, timings=work.timings)

    def _action(self, generator_name: str) -> str:
        if generator_name == self.generator.name and self.generator.synthesizes:
            return "regenerated"
        return "obfuscated"

    # -- verification (the policy lives in rp_core.verify) ----------------------------------------

    def fail_closed(self, work: _ImageWork | None = None) -> FailClosed:
        """The policy for one image; with its `work`, checks also compare with the run's recent identities."""
        last = self.pipeline.last_resort
        return FailClosed(
            config=self.config,
            verifier=self.verifier,
            fallback=self.fallback_generator,
            last_resort=None if last is None else last.component,  # type: ignore[arg-type]
            finder=self._find_on_output if self.config.verify.search else None,
            others=() if work is None or work.recent is None else tuple(work.recent.others(work)),
            kept=() if work is None else tuple(f.face.box for i, f in enumerate(work.faces) if i not in work.changed),
        )

    def _verify(
        self, work: _ImageWork, active: list[int], generators: dict[int, str], notes: list[dict[str, Any]]
    ) -> np.ndarray:
        """Fail closed over the faces this run changes (`active`); kept faces are neither pasted nor checked."""
        assert work.originals is not None
        faces = [work.faces[i] for i in active]

        def regenerate(indices: list[int], generator: Generator[Any], seed: int) -> list[np.ndarray]:
            chosen = [active[k] for k in indices]
            identities = [work.identities[i] for i in chosen]
            prompts = [work.prompts[i] if work.prompts else None for i in chosen]
            return self._invert_generate([work.faces[i] for i in chosen], identities, generator, seed, prompts)[0]

        def stronger(attempt: int) -> Generator[Any] | None:
            generator = self.generator.stronger(attempt, self.config.verify.guidance_factor)
            if generator is not None:
                generator.load()  # pooled weights: shares the loaded pipeline, loads nothing twice
            return generator

        verdict = self.fail_closed(work).enforce(
            work.image,
            faces,
            [work.crops[i] for i in active],
            [work.originals[i] for i in active],
            [generators[i] for i in active],
            [work.routes[i] == ROUTE_GENERATE for i in active],
            self.merger.merge,
            regenerate,
            lambda k: self._confirmed_face(work, active[k]),
            stronger,
        )
        for i, face_verdict in zip(active, verdict.faces, strict=True):
            generators[i] = face_verdict.generator
            notes[i]["verify"] = face_verdict.to_dict(self.verifier)
        return verdict.image

    def _find_on_output(self, image: np.ndarray, region: Box) -> list[Face]:
        """Faces the detectors find in `region` of `image` (upsampled when small), in image coordinates."""
        return [face for detector in self._distinct_detectors() for face in _search_region(detector, image, region)]

    def _distinct_detectors(self) -> list[Detector[Any]]:
        """The main detector, and the coverage detector when it is not the very same detector and options."""
        coverage = self.coverage_detector
        same = (
            coverage is not None and coverage.name == self.detector.name and coverage.options == self.detector.options
        )
        return [self.detector] if coverage is None or same else [self.detector, coverage]

    def _confirmed_face(self, work: _ImageWork, i: int) -> bool:
        """Does a detector of another family than the one that found face `i` see a face there in the original?"""
        face = work.faces[i].face
        family = face.detector.split("+", 1)[0]  # "centerface+rot90": found by centerface in a turned pass
        others = [d for d in (self.detector, self.coverage_detector) if d is not None and d.name != family]
        if not others:
            return True  # nothing independent to ask: treat it as a face (fail closed)
        region = footprint(work.faces[i], work.image.shape, grow=0.0)
        for detector in others:
            if any(iou(f.box, face.box) > 0.1 for f in _search_region(detector, work.image, region)):
                return True
        return False


def _search_region(detector: Detector[Any], image: np.ndarray, region: Box) -> list[Face]:
    """Faces `detector` finds in `region` (where a crop was pasted), enlarged and turned every way an attacker
    would (every quarter turn and the turns between, as the detector's `roll_tolerance` needs)."""
    from rp_core.coverage import region_turns, search_region

    turns = region_turns(detector.roll_tolerance)
    return search_region(detector.detect, image, region, margin=0.0, face_side=480, max_factor=4.0, turns=turns)


def _per_image(exc: Exception) -> Exception:
    """Expected errors pass as they are; anything else becomes one line naming its type."""
    if isinstance(exc, RpError):
        return exc
    wrapped = RpError(f"{type(exc).__name__}: {exc}".splitlines()[0])
    wrapped.__cause__ = exc
    return wrapped
