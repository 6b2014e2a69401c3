"""Anonymizes photos: the photo adapter over the one face stream (rp_core.stream).

Faces of consecutive images are gathered into batches of the pipeline's batch size for the
inverter and generator; images come out in input order as soon as all their faces are
done. The stages come from one assembled `rp_core.pipeline.Pipeline`; the per-face work
(find, select, align, route, identities, invert/generate, merge, fail closed) is the
stream's, shared with video frames. This module says where a photo's faces come from (the
detector and the coverage search, a reviewed faces JSON, or `--aligned` input) and turns a
finished item into an `ImageResult`. A failure inside a batch fails only the images whose
faces were in it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from rp_core.align import align_faces, aligned_input
from rp_core.errors import InputError
from rp_core.interfaces import Detector, Generator, IdentityEncoder, Inverter, Merger
from rp_core.pipeline import Pipeline, assemble
from rp_core.plugins import PluginHost
from rp_core.stream import Candidate, ErrorHandler, FaceStream, Finished, Lane, Route, WorkItem, per_item_error
from rp_core.types import FaceChoice, FaceRecord, ImageResult
from rp_core.verify import FailClosed, Verifier

if TYPE_CHECKING:
    from rp_core.config import RunConfig
    from rp_core.models import ModelFile, ModelPool

#: The route names, kept for callers of the earlier constants (one enum: rp_core.stream.Route).
ROUTE_GENERATE, ROUTE_COVERAGE, ROUTE_SMALL, ROUTE_KEEP = Route.GENERATE, Route.COVERAGE, Route.SMALL, Route.KEEP
FacesFor = Callable[[Hashable, np.ndarray], list[FaceChoice] | None]


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
        self.stream = FaceStream(pipeline)

    # -- stages ---------------------------------------------------------------------------------

    @property
    def detector(self) -> Detector[Any]:
        return self.stream.detector

    @property
    def encoder(self) -> IdentityEncoder[Any]:
        return self.stream.encoder

    @property
    def inverter(self) -> Inverter[Any]:
        return self.stream.inverter

    @property
    def generator(self) -> Generator[Any]:
        return self.stream.generator

    @property
    def merger(self) -> Merger[Any]:
        return self.stream.merger

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
        return self.stream.verifier

    @property
    def coverage_detector(self) -> Detector[Any] | None:
        return self.stream.coverage_detector

    @property
    def fallback_generator(self) -> Generator[Any]:
        return self.stream.fallback_generator

    def fail_closed(self) -> FailClosed:
        return self.stream.fail_closed()

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
        faces_for: FacesFor | None = None,
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
        lane = Lane(self.stream, on_error)
        for key, image in images:
            try:
                item = self._prepare(key, image, aligned, faces_for)
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(key, per_item_error(exc))
                continue
            lane.add(item)
            yield from self._finished(lane, on_error)
        lane.drain()
        yield from self._finished(lane, on_error)

    def _stream_overlapped(
        self,
        images: Iterable[tuple[Hashable, np.ndarray]],
        aligned: bool,
        on_error: ErrorHandler | None,
        faces_for: FacesFor | None,
    ) -> Iterator[tuple[Hashable, ImageResult]]:
        """The same stream, with the CPU stages off the GPU's thread (`runtime.overlap`).

        One worker thread reads and prepares the next images (decode, detection, alignment, encoding)
        and merges and verifies finished ones, in submission order, while this thread runs the
        inverter and generator. One worker, so CPU models are never called concurrently; the GPU
        stages take the stream's lock (verification retries run on the worker). Outputs equal the
        plain stream's.
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
                return self._prepare(key, image, aligned, faces_for)
            except Exception as exc:
                return (key, exc)

        def finish(item: WorkItem) -> tuple[Hashable, ImageResult | Exception]:
            try:
                return item.key, self._result(self.stream.finish(item))
            except Exception as exc:
                return item.key, exc

        lane = Lane(self.stream, on_error)
        finishing: deque[Future[tuple[Hashable, ImageResult | Exception]]] = deque()

        def results(block: bool) -> Iterator[tuple[Hashable, ImageResult]]:
            while finishing and (block or finishing[0].done()):
                key, outcome = finishing.popleft().result()
                if isinstance(outcome, Exception):
                    if on_error is None:
                        raise outcome
                    on_error(key, per_item_error(outcome))
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
                    on_error(key, per_item_error(exc))
                    continue
                lane.add(item)
                finishing.extend(worker.submit(finish, done) for done in lane.ready())
                yield from results(block=False)
            lane.drain()
            finishing.extend(worker.submit(finish, done) for done in lane.ready())
            yield from results(block=True)

    def _prepare(self, key: Hashable, image: np.ndarray, aligned: bool, faces_for: FacesFor | None) -> WorkItem:
        """A photo's faces: given (faces JSON) or detected, plus the coverage search; or one aligned crop."""
        given = faces_for(key, image) if faces_for is not None else None
        choices = given if given is not None else [FaceChoice(f) for f in self.stream.detect(image)]
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
            face = aligned_input(image, self.config.align.face_image_size, found[0] if found else None)
            # the coverage detector still searches the whole input: other faces in the crop (a group in a
            # corner) are obfuscated on top of the regenerated image, not written as they are
            extra = self.stream.coverage_faces(image, found)
            size = self.config.align.face_image_size
            candidates = [Candidate(face.face), *(Candidate(f, Route.COVERAGE) for f in extra)]
            return self.stream.prepare(key, image, candidates, faces=[face, *align_faces(image, extra, size)])
        candidates = [Candidate(c.face, keep=c.keep, prompt=c.prompt) for c in choices]
        candidates += [Candidate(f, Route.COVERAGE) for f in self.stream.coverage_faces(image, found)]
        return self.stream.prepare(key, image, candidates)

    def _finished(self, lane: Lane, on_error: ErrorHandler | None) -> Iterator[tuple[Hashable, ImageResult]]:
        for item in lane.ready():
            try:
                result = self._result(self.stream.finish(item))
            except Exception as exc:
                if on_error is None:
                    raise
                on_error(item.key, per_item_error(exc))
                continue
            yield item.key, result

    def _result(self, done: Finished) -> ImageResult:
        """One FaceRecord per face of a finished item."""
        item = done.item
        records = tuple(
            FaceRecord(
                index=i,
                box=af.face.box,
                score=af.face.score,
                detector=af.face.detector or str(self.config.detector.name),
                action=self._action(done.generators[i]) if i in done.generators else "kept",
                generator=done.generators.get(i),
                timings=item.face_timings.get(i, {}),
                notes=done.notes[i],
            )
            for i, af in enumerate(item.faces)
        )
        return ImageResult(image=done.image, records=records, timings=item.timings)

    def _action(self, generator_name: str) -> str:
        if generator_name == self.generator.name and self.generator.synthesizes:
            return "regenerated"
        return "obfuscated"
