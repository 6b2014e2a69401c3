"""The pipeline's stages over a stream of video frames: faces batched across frames, each frame verified.

This is the image orchestrator's flow (align -> encode -> invert -> generate -> merge -> fail-closed
verification through `rp_core.verify.FailClosed`) with what video adds: faces come from the
tracker, each carries its track's seed and target identity, faces predicted for a lost track and
faces only the coverage detector finds go to the fallback generator, and frames leave in order
once all their faces are generated, so the diffusion path fills its batches from several frames.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from rp_core.align import align_faces
from rp_core.orchestrator import Anonymizer
from rp_core.pipeline import Pipeline
from rp_core.types import AlignedFace, Face, GenerationRequest, IdentityEmbedding
from rp_core.verify import FaceVerdict, FailClosed, iou
from rp_core.video.tracks import FaceTracker, TrackedFace

#: Why a face goes where it goes (the image routes, plus a face the tracker predicted).
GENERATE, COVERAGE, SMALL, PREDICTED = "generate", "coverage", "small", "predicted"


@dataclass(eq=False)
class FrameWork:
    """One frame on its way through the stages."""

    index: int
    payload: Any
    image: np.ndarray
    faces: list[AlignedFace]
    tracked: list[TrackedFace | None]
    routes: list[str]
    identities: list[IdentityEmbedding | None]
    verify: bool
    originals: list[IdentityEmbedding] | None = None
    crops: dict[int, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return len(self.crops) == len(self.faces)

    def seed(self, i: int, default: int) -> int:
        tracked = self.tracked[i]
        seed = None if tracked is None else tracked.seed
        return default if seed is None else seed


@dataclass(frozen=True)
class FrameOutcome:
    """A finished frame: the image to encode and what happened to each of its faces."""

    index: int
    payload: Any
    image: np.ndarray
    routes: tuple[str, ...]
    generators: tuple[str, ...]
    verdicts: tuple[FaceVerdict | None, ...]
    timings: dict[str, float]
    #: The faces as placed (smoothed or predicted landmarks) and their track numbers (None: untracked).
    faces: tuple[Face, ...] = ()
    tracks: tuple[int | None, ...] = ()


class FrameAnonymizer:
    """Feeds frames through one assembled pipeline; `push` returns the frames that are finished, in order."""

    def __init__(self, pipeline: Pipeline, tracker: FaceTracker, verify_every: int = 1, search_every: int = 1) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config
        self.tracker = tracker
        self.verify_every = max(1, verify_every)
        self.search_every = max(1, search_every)
        self.images = Anonymizer(pipeline=pipeline)  # its fail-closed policy and output search, not its loop
        self.pending: deque[FrameWork] = deque()
        self.queue: deque[tuple[FrameWork, int]] = deque()
        self._fail_closed: FailClosed | None = None

    # -- feeding --------------------------------------------------------------------------------

    def push(self, index: int, image: np.ndarray, time_s: float, payload: Any = None) -> Iterator[FrameOutcome]:
        work = self._prepare(index, image, time_s, payload)
        self.pending.append(work)
        self.queue.extend((work, i) for i, route in enumerate(work.routes) if route == GENERATE)
        batch = self.pipeline.batch_size
        while len(self.queue) >= batch:
            self._generate([self.queue.popleft() for _ in range(batch)])
        yield from self._finished()

    def flush(self) -> Iterator[FrameOutcome]:
        while self.queue:
            self._generate([self.queue.popleft() for _ in range(min(self.pipeline.batch_size, len(self.queue)))])
        yield from self._finished()

    # -- per frame ------------------------------------------------------------------------------

    def _prepare(self, index: int, image: np.ndarray, time_s: float, payload: Any) -> FrameWork:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        found = self.pipeline.detect.detect(image)
        timings["detect"] = time.perf_counter() - start
        start = time.perf_counter()
        tracked = self.tracker.update(found, index, time_s, image.shape)
        timings["track"] = time.perf_counter() - start
        entries: list[tuple[TrackedFace | None, Face, str]] = [
            (t, t.face, PREDICTED if t.predicted else GENERATE) for t in tracked
        ]
        if self.pipeline.coverage is not None:
            start = time.perf_counter()
            threshold = self.config.coverage.iou
            # the image path's coverage step (same detector, same passes), so videos get whatever images get
            for face in self.images._coverage_faces(image, found):
                # a real detection where a lost track was predicted replaces the prediction (current landmarks)
                entries = [e for e in entries if not (e[2] == PREDICTED and iou(e[1].box, face.box) >= threshold)]
                entries.append((None, face, COVERAGE))
            timings["coverage"] = time.perf_counter() - start
        start = time.perf_counter()
        faces = align_faces(image, [face for _, face, _ in entries], self.config.align.face_image_size)
        min_size = self.config.coverage.min_face_size
        routes = [
            SMALL if r == GENERATE and af.face.size < min_size else r
            for (_, _, r), af in zip(entries, faces, strict=True)
        ]
        work = FrameWork(
            index,
            payload,
            image,
            faces,
            [t for t, _, _ in entries],
            routes,
            [None] * len(faces),
            verify=self.config.verify.enabled and index % self.verify_every == 0,
            timings=timings,
        )
        timings["align"] = time.perf_counter() - start
        if self.pipeline.needs_identity:
            self._identities(work)
        if work.verify and faces:
            start = time.perf_counter()
            work.originals = self.images.verifier.encode(image, [f.face for f in faces])
            timings["verify_encode"] = time.perf_counter() - start
        others = [i for i, route in enumerate(routes) if route != GENERATE]
        if others:
            start = time.perf_counter()
            crops = self.images.fallback_generator.generate([GenerationRequest(face=faces[i]) for i in others])
            for i, crop in zip(others, crops, strict=True):
                work.crops[i] = crop
            timings["fallback"] = time.perf_counter() - start
        return work

    def _identities(self, work: FrameWork) -> None:
        """One target identity per track: encoded at the track's first generated frame, then reused."""
        todo = [
            i
            for i in range(len(work.faces))
            if work.routes[i] == GENERATE and (work.tracked[i] is None or work.tracked[i].track.identity is None)  # type: ignore[union-attr]
        ]
        if todo:
            start = time.perf_counter()
            encoder = self.images.encoder
            for i, embedding in zip(todo, encoder.encode(work.image, [work.faces[i].face for i in todo]), strict=True):
                work.identities[i] = embedding
                tracked = work.tracked[i]
                if tracked is not None and tracked.track is not None:
                    tracked.track.identity = embedding
            work.timings["encode"] = time.perf_counter() - start
        for i, tracked in enumerate(work.tracked):
            if work.routes[i] == GENERATE and work.identities[i] is None and tracked is not None and tracked.track:
                work.identities[i] = tracked.track.identity

    # -- generation across frames ---------------------------------------------------------------

    def _generate(self, items: list[tuple[FrameWork, int]], attempt: int = 0) -> None:
        crops = self._invert_generate(items, self.images.generator, attempt)
        for (work, i), crop in zip(items, crops, strict=True):
            work.crops[i] = crop

    def _invert_generate(self, items: list[tuple[FrameWork, int]], generator: Any, attempt: int) -> list[np.ndarray]:
        base = self.config.runtime.seed
        seeds = [work.seed(i, base) + attempt for work, i in items]
        faces = [work.faces[i] for work, i in items]
        inversions: list[Any] = [None] * len(items)
        if self.pipeline.needs_inversion:
            inversions = self.images.inverter.invert(faces, seeds)
        requests = [
            GenerationRequest(face=face, identity=work.identities[i], inversion=inversion, seed=seed)
            for (work, i), face, inversion, seed in zip(items, faces, inversions, seeds, strict=True)
        ]
        crops = generator.generate(requests)
        if len(crops) != len(requests):
            raise RuntimeError(f"generator {generator.name!r} returned {len(crops)} crops for {len(requests)} faces")
        return list(crops)

    # -- merging and verification ---------------------------------------------------------------

    def _finished(self) -> Iterator[FrameOutcome]:
        while self.pending and self.pending[0].done:
            yield self._merge(self.pending.popleft())

    def _merge(self, work: FrameWork) -> FrameOutcome:
        start = time.perf_counter()
        main, fallback = self.images.generator.name, self.images.fallback_generator.name if work.faces else ""
        generators = [main if r == GENERATE else fallback for r in work.routes]
        crops = [work.crops[i] for i in range(len(work.faces))]
        verdicts: tuple[FaceVerdict | None, ...] = (None,) * len(work.faces)
        if not work.faces:
            image = work.image
        elif work.verify:
            assert work.originals is not None
            policy = self.fail_closed()
            if work.index % self.search_every:
                policy = replace(policy, finder=None)
            verdict = policy.enforce(
                work.image,
                work.faces,
                crops,
                work.originals,
                generators,
                [r == GENERATE for r in work.routes],
                self.images.merger.merge,
                lambda indices, generator, seed: self._invert_generate(
                    [(work, i) for i in indices], generator, seed - self.config.runtime.seed
                ),
                lambda i: self._confirmed(work, i),
                self._stronger,
            )
            image, verdicts = verdict.image, verdict.faces
            generators = [v.generator for v in verdict.faces]
        else:
            image = self.images.merger.merge(work.image, work.faces, crops, [self.images.hides(g) for g in generators])
        work.timings["merge_verify" if work.verify else "merge"] = time.perf_counter() - start
        return FrameOutcome(
            work.index,
            work.payload,
            image,
            tuple(work.routes),
            tuple(generators),
            verdicts,
            work.timings,
            tuple(af.face for af in work.faces),
            tuple(None if t is None or t.track is None else t.track.number for t in work.tracked),
        )

    def fail_closed(self) -> FailClosed:
        """The pipeline's policy, as for images (its output search runs each distinct detector once)."""
        if self._fail_closed is None:
            self._fail_closed = self.images.fail_closed()
        return self._fail_closed

    def _stronger(self, attempt: int) -> Any:
        generator = self.images.generator.stronger(attempt, self.config.verify.guidance_factor)
        if generator is not None:
            generator.load()
        return generator

    def _confirmed(self, work: FrameWork, i: int) -> bool:
        """Does a detector of another family than the one that placed face `i` see a face there (as for images)?"""
        return self.images._confirmed_face(work, i)  # type: ignore[arg-type]
