"""Video frames through the one face stream (rp_core.stream): the frame adapter.

A frame is a stream item like a photo; what video adds is where its faces come from and what
they carry. Faces come from the tracker (a lost track's predicted face is routed to the
fallback generator), plus the coverage search; each tracked face carries its track's
`FaceMemory`: one seed and one target identity for the whole track, and the track's
selection decision (a `--keep-face` person matched once stays kept in every later frame of
their track; an `--only-face` person matched once stays anonymized). Frames leave in order once
all their faces are generated, so the diffusion path fills its batches from several frames.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rp_core.config import CHEAP_IOU, CHEAP_TOLERANCE, KEYFRAME_EVERY
from rp_core.cores import sharing_cores
from rp_core.errors import ConfigError
from rp_core.pipeline import Pipeline
from rp_core.stream import Candidate, FaceMemory, FaceStream, Finished, Lane, Route, WorkItem
from rp_core.types import Face
from rp_core.verify import FaceVerdict, FailClosed, iou
from rp_core.video.recheck import Reference, TrackChecks
from rp_core.video.tracks import FaceTracker, TrackedFace

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

#: A frame's search: the detector's faces, the coverage search's faces none of them covers, and their seconds.
Searched = tuple[list[Face], list[Face], dict[str, float]]

#: The stream's route names (one enum for photos and frames: rp_core.stream.Route).
GENERATE, COVERAGE, SMALL, PREDICTED, KEEP = Route.GENERATE, Route.COVERAGE, Route.SMALL, Route.PREDICTED, Route.KEEP


@dataclass(frozen=True)
class FrameOutcome:
    """A finished frame: the image to encode and what happened to each of its faces."""

    index: int
    payload: Any
    image: np.ndarray
    routes: tuple[str, ...]
    #: The generator that made each face's final crop; None for a kept face.
    generators: tuple[str | None, ...]
    verdicts: tuple[FaceVerdict | None, ...]
    timings: dict[str, float]
    #: The faces as placed (smoothed or predicted landmarks) and their track numbers (None: untracked).
    faces: tuple[Face, ...] = ()
    tracks: tuple[int | None, ...] = ()
    #: How each face was checked: "full" (fail closed), "cheap" (compared with its track's verified output), "".
    checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheapCheck:
    """The cheap check of a tracked face, and its keyframes (rp_core.video.recheck; docs/video.md)."""

    #: Largest mean absolute difference (grey levels) of any cell of the face's aligned square from its verified
    #: output (0: every face gets the full check).
    tolerance: float = CHEAP_TOLERANCE
    #: A face whose box overlaps its track's verified box less than this has moved: the full check.
    min_iou: float = CHEAP_IOU
    #: `video.regenerate`: "keyframes" carries a track's verified crop to its next frames, "every" draws every face.
    regenerate: str = "keyframes"
    #: Frames a crop is carried at most after the frame it was drawn on.
    keyframe_every: int = KEYFRAME_EVERY

    @property
    def carry_frames(self) -> int:
        return self.keyframe_every if self.regenerate == "keyframes" else 0


def refuse_unsupported_selection(*, aligned: bool, faces_json: object) -> None:
    """A video cannot take `--aligned` or `--faces-json` (both describe one still image): refuse, never ignore."""
    if aligned:
        raise ConfigError("--aligned takes face crops (photos), not videos: run the video without --aligned")
    if faces_json is not None:
        raise ConfigError(
            "--faces-json describes the faces of photos, not of video frames: run the video without it "
            "(--keep-face/--only-face select people in videos)"
        )


class FrameAnonymizer:
    """Feeds frames through one assembled pipeline; `push` returns the frames that are finished, in order."""

    def __init__(
        self,
        pipeline: Pipeline,
        tracker: FaceTracker,
        verify_every: int = 1,
        search_every: int = 1,
        cheap: CheapCheck | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config
        self.tracker = tracker
        self.verify_every = max(1, verify_every)
        self.search_every = max(1, search_every)
        self.stream = FaceStream(pipeline)
        self.lane = Lane(self.stream)
        cheap = cheap or CheapCheck()
        #: The cheap check of tracked faces unchanged since a fully verified frame (rp_core.video.recheck).
        self.checks = TrackChecks(self.stream, cheap.tolerance, cheap.min_iou, cheap.carry_frames)
        #: One memory per track number, for the whole clip.
        self.memory: dict[int, FaceMemory] = {}
        #: (frame index, payload) of the frames in the lane, in order (frames leave in the order they came).
        self._frames: deque[tuple[int, Any]] = deque()
        #: Searches of frames not yet prepared, queued or running on `_ahead` (`search_ahead`), with their images.
        self._searches: dict[int, tuple[Future[Searched], np.ndarray]] = {}
        self._ahead: ThreadPoolExecutor | None = None

    # -- feeding --------------------------------------------------------------------------------

    def push(self, index: int, image: np.ndarray, time_s: float, payload: Any = None) -> Iterator[FrameOutcome]:
        self.lane.add(self._prepare(index, image, time_s, payload))
        yield from self._finished()

    def search_ahead(self, index: int, image: np.ndarray) -> None:
        """Start searching frame `index` for faces on a worker thread, so the search of the next frame runs while
        this one is verified (both use the cores: a search is mostly the detector's network). Only when every
        detector of the search may run on two threads at once (`Detector.concurrent`); the search is the one
        `_prepare` runs (it depends on the image alone), so outputs are the same either way."""
        if not self._concurrent_search():
            return
        if self._ahead is None:
            from concurrent.futures import ThreadPoolExecutor

            self._ahead = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rp-search")
        self._searches[index] = (self._ahead.submit(self._search_beside, image), image)

    def threads_at_once(self) -> int:
        """Threads of this video run that do CPU work at once: the look-ahead search's and the checks' (2), or 1."""
        return 2 if self._concurrent_search() else 1

    def _search_beside(self, image: np.ndarray) -> Searched:
        with sharing_cores(self.threads_at_once()):  # the checks of earlier frames run beside it
            return self._search(image)

    def _searched(self, index: int, image: np.ndarray) -> Searched:
        """Frame `index`'s search: the look-ahead's result, or the search run here when there was none.

        While the look-ahead thread is still on this frame, this thread would only wait: it runs the search of
        the next frame still queued instead (taken off the queue), so both threads search. On the 720p clip the
        checks waited for the search for 1-1.5 s at a time, every few seconds, with one of two cores idle. A
        search depends on its image alone: the output is the same whichever thread ran it."""
        ahead = self._searches.pop(index, None)
        if ahead is None:
            return self._search(image)
        future = ahead[0]
        while not future.done() and self._search_one_queued():
            pass
        return future.result()

    def _search_one_queued(self) -> bool:
        """Run, on this thread, the earliest search still waiting in the look-ahead's queue; False if none was."""
        from concurrent.futures import Future

        for index in sorted(self._searches):
            queued, image = self._searches[index]
            if queued.cancel():  # not started: the look-ahead thread will skip it
                done: Future[Searched] = Future()
                try:
                    done.set_result(self._search(image))
                except Exception as exc:  # raised when that frame is prepared, as from the look-ahead thread
                    done.set_exception(exc)
                self._searches[index] = (done, image)
                return True
        return False

    def flush(self) -> Iterator[FrameOutcome]:
        self.lane.drain()
        yield from self._finished()

    def close(self) -> None:
        """Stop the look-ahead thread (a search still running is waited for, its result dropped)."""
        self._searches.clear()
        if self._ahead is not None:
            self._ahead.shutdown(wait=True, cancel_futures=True)
            self._ahead = None

    def _concurrent_search(self) -> bool:
        coverage = self.stream.coverage_detector if self.pipeline.coverage is not None else None
        return self.stream.detector.concurrent and (coverage is None or coverage.concurrent)

    def _search(self, image: np.ndarray) -> Searched:
        """The frame's faces (detector) and the coverage search's faces none of them covers, with their seconds."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        found = self.stream.detect(image)
        timings["detect"] = time.perf_counter() - start
        missed: list[Face] = []
        if self.pipeline.coverage is not None:
            start = time.perf_counter()
            missed = self.stream.coverage_faces(image, found)  # the same thread as `detect`: no second search
            timings["coverage"] = time.perf_counter() - start
        return found, missed, timings

    def fail_closed(self) -> FailClosed:
        """The pipeline's policy, as for photos (its output search runs each distinct detector once)."""
        return self.stream.fail_closed()

    # -- per frame ------------------------------------------------------------------------------

    def _prepare(self, index: int, image: np.ndarray, time_s: float, payload: Any) -> WorkItem:
        # the photo path's detection and coverage step (same detectors, same passes): videos get what photos get
        found, missed, timings = self._searched(index, image)
        start = time.perf_counter()
        tracked = self.tracker.update(found, index, time_s, image.shape)
        timings["track"] = time.perf_counter() - start
        carried: dict[int, Reference] = {}
        candidates = [self._candidate(t, index, carried, k) for k, t in enumerate(tracked)]
        threshold = self.config.coverage.iou
        for face in missed:
            # a real detection where a lost track was predicted replaces the prediction (current landmarks)
            candidates = [
                c for c in candidates if not (c.route == Route.PREDICTED and iou(c.face.box, face.box) >= threshold)
            ]
            candidates.append(Candidate(face, Route.COVERAGE))
        self._frames.append((index, payload))
        item = self.stream.prepare(
            index,
            image,
            candidates,
            verify=index % self.verify_every == 0,
            search=index % self.search_every == 0,
        )
        item.timings.update(timings)
        self.checks.prepared(item, [c.original is not None for c in candidates], carried)
        return item

    def _candidate(self, tracked: TrackedFace, frame: int, carried: dict[int, Reference], k: int) -> Candidate:
        """The frame's `k`-th face; a tracked face near its keyframe carries that crop (noted in `carried`)."""
        route = Route.PREDICTED if tracked.predicted else Route.GENERATE
        track = tracked.track
        if track is None:
            return Candidate(tracked.face, route)
        memory = self.memory.get(track.number)
        if memory is None:
            memory = self.memory[track.number] = FaceMemory(track.number, track.seed)
        original = self.checks.original(track.number, tracked.predicted)
        reference = self.checks.carry(memory, tracked.face, frame)
        if reference is None:
            return Candidate(tracked.face, route, memory=memory, original=original)
        carried[k] = reference
        return Candidate(tracked.face, Route.CARRIED, memory=memory, original=original, crop=reference.crop)

    # -- finished frames ------------------------------------------------------------------------

    def _finished(self) -> Iterator[FrameOutcome]:
        for item in self.lane.ready():
            yield self._outcome(self.stream.finish(item, self.checks.vouch))

    def _outcome(self, done: Finished) -> FrameOutcome:
        item = done.item
        start = time.perf_counter()
        checks = self.checks.finished(done)
        item.timings["references"] = time.perf_counter() - start
        index, payload = self._frames.popleft()
        assert index == item.key, "frames leave the lane in the order they came"
        return FrameOutcome(
            index,
            payload,
            done.image,
            tuple(str(route) for route in item.routes),
            tuple(done.generators.get(i) for i in range(len(item.faces))),
            tuple(done.verdicts.get(i) for i in range(len(item.faces))),
            item.timings,
            tuple(af.face for af in item.faces),
            tuple(None if m is None else m.number for m in item.memory),
            checks,
        )
