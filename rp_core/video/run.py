"""`anonymize_video`: one video file in, one anonymized video file out, published only when complete."""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rp_core.cores import sharing_cores
from rp_core.errors import InputError
from rp_core.files.write import publishing
from rp_core.pipeline import Pipeline
from rp_core.video.background import WriterThread
from rp_core.video.codec import DecodedFrame, EncodeSettings, VideoReader, VideoWriter
from rp_core.video.frames import COVERAGE, GENERATE, PREDICTED, CheapCheck, FrameAnonymizer, FrameOutcome
from rp_core.video.probe import MUXERS, VideoInfo, probe
from rp_core.video.tracks import FaceTracker

#: Frames decoded, and searched on the look-ahead thread, beyond the one being verified: a frame whose faces get
#: the full check takes longer than its search, one whose faces are all carried far less, so a few frames of
#: slack keep both threads busy (one frame ahead, the 720p clip's checks waited 7-8 s of ~28 s for searches while
#: the search thread idled; 8 ahead, ~2 s). Costs that many decoded frames of memory (720p: 2.7 MB each).
SEARCH_AHEAD = 8

if TYPE_CHECKING:
    from rp_core.config import VideoSection


@dataclass(frozen=True)
class VideoOptions:
    """How a video is anonymized and encoded (the pipeline decides how each face is)."""

    encode: EncodeSettings = field(default_factory=EncodeSettings)
    #: Frames a lost track's predicted face region is still obfuscated (at the clip's rate: 30 = 1 s at 30 fps).
    lost_frames: int = 30
    #: One-euro landmark smoothing: cutoff (Hz) when still, and how fast it opens with speed (per face size/s).
    smooth_min_cutoff: float = 2.0
    smooth_beta: float = 1.0
    #: Verify every n-th frame (1: every frame, the fail-closed default; more is faster and reported as a warning).
    verify_every: int = 1
    #: On verified frames, search the output for moved faces (`verify.search`) every n-th frame (1: every one).
    search_every: int = 1
    #: Progress callback period in frames.
    progress_every: int = 10
    #: The cheap check of tracked faces unchanged since a fully verified frame (docs/video.md).
    cheap: CheapCheck = field(default_factory=CheapCheck)

    @classmethod
    def from_config(cls, section: VideoSection) -> VideoOptions:
        """The options a run's `video` config section sets."""
        encode = EncodeSettings(codec=section.codec, crf=section.crf, preset=section.preset, pix_fmt=section.pix_fmt)
        return cls(
            encode=encode,
            lost_frames=section.lost_frames,
            smooth_min_cutoff=section.smooth_min_cutoff,
            smooth_beta=section.smooth_beta,
            verify_every=section.verify_every,
            search_every=section.search_every,
            cheap=CheapCheck(section.cheap_tolerance, section.cheap_iou, section.regenerate, section.keyframe_every),
        )


@dataclass(frozen=True)
class VideoProgress:
    """Reported through `on_event` every `progress_every` frames and at the end."""

    frame: int
    frames: int
    fps: float
    eta_s: float | None


@dataclass(frozen=True)
class VideoResult:
    """What anonymizing one video did; `to_dict()` is its manifest record's `video` field."""

    path: Path
    info: VideoInfo
    frames: int
    faces: int
    routes: dict[str, int]
    generators: dict[str, int]
    fallbacks: int
    last_resorts: int
    retries: int
    verified_frames: int
    #: How the faces of verified frames were checked: {"full", "cheap", "cheap_failed"} counts.
    checks: dict[str, int]
    tracks: tuple[dict[str, Any], ...]
    codec: str
    pix_fmt: str
    audio_copied: bool
    timings: dict[str, float]

    @property
    def face_count(self) -> int:
        return self.faces

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.info.to_dict(),
            "frames": self.frames,
            "faces": self.faces,
            "routes": self.routes,
            "generators": self.generators,
            "fallbacks": self.fallbacks,
            "last_resorts": self.last_resorts,
            "retries": self.retries,
            "verified_frames": self.verified_frames,
            "checks": self.checks,
            "tracks": list(self.tracks),
            "codec": self.codec,
            "pix_fmt": self.pix_fmt,
            "audio": "copied" if self.audio_copied else None,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def video_warnings(options: VideoOptions) -> list[str]:
    """Settings that weaken the fail-closed guarantee for videos (print them, keep them in the manifest)."""
    from rp_core.config import video_loosenings

    return video_loosenings(options.verify_every, options.search_every, options.cheap.tolerance, options.cheap.min_iou)


def anonymize_video(
    pipeline: Pipeline,
    source: Path | str,
    target: Path | str,
    options: VideoOptions | None = None,
    on_event: Callable[[VideoProgress], None] | None = None,
    before_publish: Callable[[VideoResult], None] | None = None,
    staged: bool = False,
) -> VideoResult:
    """Anonymize every face of every frame of `source` into `target` (same container format).

    The output is written to `.<name>.<random>.part` beside `target` (the names `rp_core.files.write`'s
    resume cleans up) and renamed over `target` only once the last frame is encoded and the
    file is synced; `before_publish(result)` runs just before that rename (the session journals
    its intent there, or raises to refuse, e.g. a video without a face). Any error (a face that still matches after the fail-closed policy, a bad
    frame, a full disk) removes the partial file and raises: nothing half-done is published.
    With `staged` the finished, synced file stays at its temporary name, `result.path`, for the
    caller to publish (a Ray driver publishes what its worker encoded: one publisher per output).
    """
    options = options or VideoOptions()
    source, target = Path(source), Path(target)
    muxer = MUXERS.get(target.suffix.lower())
    if muxer is None:
        raise InputError(f"{target}: not a video extension rp writes ({', '.join(sorted(MUXERS))})")
    started = time.perf_counter()
    info = probe(source)
    pipeline.load()
    reader = VideoReader(source)
    writer: WriterThread | None = None
    frames: FrameAnonymizer | None = None
    try:
        with publishing(target, staged=staged) as draft:  # synced and renamed over `target` only if the block completes
            writer = WriterThread(VideoWriter(draft.path, muxer, reader, options.encode))  # encodes beside the checks
            tracker = FaceTracker(
                fps=float(reader.rate),
                seed=pipeline.config.runtime.seed,
                lost_frames=options.lost_frames,
                min_cutoff=options.smooth_min_cutoff,
                beta=options.smooth_beta,
            )
            frames = FrameAnonymizer(pipeline, tracker, options.verify_every, options.search_every, options.cheap)
            tally = _Tally()
            total = info.frames
            progress = _Progress(total, options.progress_every, on_event)
            decoded = _timed(reader.frames(), tally.timings)
            upcoming: deque[DecodedFrame] = deque()

            def decode_ahead() -> None:
                """Keep SEARCH_AHEAD frames decoded and their searches queued beyond the one being verified."""
                while len(upcoming) <= SEARCH_AHEAD:
                    frame = next(decoded, None)
                    if frame is None:
                        return
                    frames.search_ahead(frame.index, frame.image)
                    upcoming.append(frame)

            with sharing_cores(frames.threads_at_once()):  # this thread's network calls leave the search its cores
                decode_ahead()
                while upcoming:
                    frame = upcoming.popleft()
                    decode_ahead()
                    for outcome in frames.push(frame.index, frame.image, frame.time_s, frame):
                        tally.add(outcome, writer)
                        progress.tick(tally.frames)
                for outcome in frames.flush():
                    tally.add(outcome, writer)
                    progress.tick(tally.frames)
            start = time.perf_counter()
            writer.close()
            writer = None
            tally.timings["encode"] += time.perf_counter() - start
            if tally.frames == 0:
                raise InputError(f"{source}: no frame decodes")
            progress.done(tally.frames)
            tally.timings["total"] = time.perf_counter() - started
            tally.checks = frames.checks.counts.to_dict()
            result = tally.result(
                draft.path if staged else target,
                info,
                tracker,
                writer_codec=frames_codec(muxer, options),
                audio=info.has_audio,
            )
            if before_publish is not None:
                before_publish(result)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if frames is not None:
            frames.close()
        reader.close()
    return result


def _timed(source: Iterator[DecodedFrame], timings: defaultdict[str, float]) -> Iterator[DecodedFrame]:
    """`source`'s frames, the seconds spent decoding each added to `timings["decode"]`."""
    while True:
        start = time.perf_counter()
        frame = next(source, None)
        timings["decode"] += time.perf_counter() - start
        if frame is None:
            return
        yield frame


def frames_codec(muxer: str, options: VideoOptions) -> tuple[str, str]:
    from rp_core.video.codec import output_codec

    return output_codec(muxer, options.encode), options.encode.pix_fmt or "source/yuv420p"


class _Tally:
    """Counts what happened to the faces of all frames, and encodes each finished frame."""

    def __init__(self) -> None:
        self.frames = 0
        self.faces = 0
        self.routes: Counter[str] = Counter()
        self.generators: Counter[str] = Counter()
        self.fallbacks = self.last_resorts = self.retries = self.verified = 0
        self.timings: defaultdict[str, float] = defaultdict(float)
        self.pix_fmt = ""
        self.checks: dict[str, int] = {}

    def add(self, outcome: FrameOutcome, writer: WriterThread) -> None:
        start = time.perf_counter()
        writer.write(outcome.payload, outcome.image)
        self.pix_fmt = writer.pix_fmt
        self.timings["encode"] += time.perf_counter() - start
        for key, value in outcome.timings.items():
            self.timings[key] += value
        self.frames += 1
        self.faces += len(outcome.routes)
        self.routes.update(outcome.routes)
        self.generators.update(g for g in outcome.generators if g is not None)  # None: a kept face
        self.verified += any(outcome.checks)
        for verdict in outcome.verdicts:
            if verdict is not None:
                self.fallbacks += verdict.fallback is not None
                self.last_resorts += verdict.last_resort is not None
                self.retries += verdict.retries

    def result(
        self, path: Path, info: VideoInfo, tracker: FaceTracker, writer_codec: tuple[str, str], audio: bool
    ) -> VideoResult:
        return VideoResult(
            path=path,
            info=info,
            frames=self.frames,
            faces=self.faces,
            routes={
                k: self.routes.get(k, 0)
                for k in (GENERATE, PREDICTED, COVERAGE, "small", "keep", "escalated", "carried")
            },
            generators=dict(self.generators),
            fallbacks=self.fallbacks,
            last_resorts=self.last_resorts,
            retries=self.retries,
            verified_frames=self.verified,
            checks=self.checks,
            tracks=tuple(t.summary() for t in tracker.all_tracks()),
            codec=writer_codec[0],
            pix_fmt=self.pix_fmt,
            audio_copied=audio,
            timings=dict(self.timings),
        )


class _Progress:
    def __init__(self, total: int, every: int, on_event: Callable[[VideoProgress], None] | None) -> None:
        self.total, self.every, self.on_event = total, max(1, every), on_event
        self.start = time.perf_counter()

    def tick(self, done: int) -> None:
        if self.on_event is not None and done % self.every == 0:
            self.on_event(self._event(done))

    def done(self, done: int) -> None:
        if self.on_event is not None:
            self.on_event(VideoProgress(done, done, self._fps(done), 0.0))

    def _fps(self, done: int) -> float:
        elapsed = time.perf_counter() - self.start
        return done / elapsed if elapsed > 0 else 0.0

    def _event(self, done: int) -> VideoProgress:
        fps = self._fps(done)
        eta = (self.total - done) / fps if self.total and fps > 0 else None
        return VideoProgress(done, self.total, fps, eta)
