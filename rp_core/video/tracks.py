"""Faces followed across frames: ByteTrack over the detector's boxes, smoothed landmarks, one seed per person.

Each track keeps, for its whole life, one seed (and, set by the caller, one target identity), so
a person keeps the same new face from frame to frame; its landmarks go through a one-euro filter
(steady when the face is still, little lag when it moves) so the paste-back does not jitter. While
a track is alive but the detector misses its face, the tracker's motion prediction gives where
the face should be: that region is obfuscated, never left as it is (fail closed across frames).

The association is the `trackers` package's ByteTrack (Roboflow); its tracklets are read through
their public `tracks` list to learn which detection started which track and where lost ones are.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rp_core.types import Face

#: Track n's seed is `seed + SEED_STRIDE * n`: fail-closed retries add 1, 2, ... and never reach the next track's.
SEED_STRIDE = 1009
#: Detector name on faces placed by the tracker's prediction (no detection in that frame).
PREDICTED = "track-prediction"


class OneEuroFilter:
    """Casiez et al.'s one-euro filter over a whole landmark set, speed measured in face sizes per second.

    One smoothing factor per frame for all points keeps the face's shape rigid; it follows fast
    motion (cutoff grows with speed) and steadies detector jitter when the face is still. A move of
    more than `jump` face sizes in one frame restarts it (a cut, or the tracker swapped two people).
    """

    def __init__(self, min_cutoff: float = 2.0, beta: float = 1.0, d_cutoff: float = 1.0, jump: float = 0.5) -> None:
        self.min_cutoff, self.beta, self.d_cutoff, self.jump = min_cutoff, beta, d_cutoff, jump
        self.value: np.ndarray | None = None
        self.speed = 0.0

    @staticmethod
    def _alpha(cutoff: float, dt: float) -> float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, points: np.ndarray, dt: float, scale: float) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64)
        if self.value is None or self.value.shape != points.shape or dt <= 0:
            self.value = points.copy()
            return self.value
        moved = float(np.linalg.norm(points - self.value, axis=1).mean()) / max(scale, 1.0)
        if moved > self.jump:  # a cut or a swapped track: start over rather than paste between two faces
            self.value, self.speed = points.copy(), 0.0
            return self.value
        raw_speed = moved / dt
        self.speed += self._alpha(self.d_cutoff, dt) * (raw_speed - self.speed)
        alpha = self._alpha(self.min_cutoff + self.beta * self.speed, dt)
        self.value = self.value + alpha * (points - self.value)
        return self.value


@dataclass
class Track:
    """One person across frames."""

    number: int
    seed: int
    first_frame: int
    tracklet: Any
    smoother: OneEuroFilter
    last_box: np.ndarray
    last_landmarks: np.ndarray
    last_time: float
    last_frame: int = 0
    frames: int = 0
    predicted_frames: int = 0
    #: The target identity for the whole track (set once by the caller, e.g. the first encoding).
    identity: Any = None
    misses: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "track": self.number,
            "seed": self.seed,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "frames": self.frames,
            "predicted_frames": self.predicted_frames,
        }


@dataclass(frozen=True)
class TrackedFace:
    """A face of one frame: smoothed (or predicted) landmarks and the track it belongs to (None: untracked)."""

    face: Face
    track: Track | None
    predicted: bool = False

    @property
    def seed(self) -> int | None:
        return None if self.track is None else self.track.seed


@dataclass
class FaceTracker:
    """Assigns the detector's faces of each frame to tracks and predicts the missed ones."""

    fps: float
    seed: int = 0
    #: Frames a lost track is still predicted (and its region obfuscated) before it ends.
    lost_frames: int = 30
    min_cutoff: float = 2.0
    beta: float = 1.0
    min_iou: float = 0.1
    tracks: dict[int, Track] = field(default_factory=dict)
    ended: list[Track] = field(default_factory=list)
    _next: int = 0
    _tracker: Any = None

    def __post_init__(self) -> None:
        if importlib.util.find_spec("trackers") is None:  # say so before the first frame, as the import would
            raise ModuleNotFoundError("No module named 'trackers'", name="trackers")

    def _bytetrack(self) -> Any:
        """The ByteTrack tracker, made on the first frame: importing `trackers` takes ~0.9 s (it imports SciPy),
        which then runs beside the look-ahead search of the first frames instead of before it."""
        if self._tracker is None:
            from trackers import ByteTrackTracker

            self._tracker = ByteTrackTracker(
                lost_track_buffer=self.lost_frames,
                frame_rate=30.0,  # the buffer is then counted in our frames, whatever the clip's rate
                minimum_consecutive_frames=1,
                minimum_iou_threshold=self.min_iou,
            )
        return self._tracker

    def update(
        self, faces: list[Face], frame: int, time_s: float, shape: tuple[int, ...] | None = None
    ) -> list[TrackedFace]:
        """The frame's detected faces (each once, in input order) and then the predicted faces of lost tracks."""
        import supervision as sv

        bytetrack = self._bytetrack()
        out: list[TrackedFace | None] = [None] * len(faces)
        matched: set[int] = set()
        if faces or bytetrack.tracks:
            boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
            detections = sv.Detections(xyxy=boxes, data={"face": np.arange(len(faces))})
            result = bytetrack.update(detections)
            by_id = {t.tracker_id: t for t in bytetrack.tracks if t.tracker_id != -1}
            spawned = [t for t in bytetrack.tracks if t.tracker_id == -1 and t.time_since_update == 0]
            for index, tracker_id in zip(result.data.get("face", []), result.tracker_id, strict=True):
                face = faces[int(index)]
                tracklet = by_id.get(int(tracker_id)) if tracker_id != -1 else _spawned_for(spawned, face.box)
                track = self._track_for(tracklet, face, frame, time_s)
                if track is None:
                    out[int(index)] = TrackedFace(face, None)
                    continue
                matched.add(id(track))
                out[int(index)] = TrackedFace(self._smoothed(track, face, frame, time_s), track)
        tracked = [t if t is not None else TrackedFace(f, None) for t, f in zip(out, faces, strict=True)]
        alive = {id(t) for t in bytetrack.tracks}
        for key, track in list(self.tracks.items()):
            if id(track.tracklet) not in alive:
                self.ended.append(self.tracks.pop(key))
            elif id(track) not in matched:
                predicted = self._predicted(track, frame, shape)
                if predicted is not None:
                    tracked.append(predicted)
        return tracked

    def all_tracks(self) -> list[Track]:
        return sorted([*self.ended, *self.tracks.values()], key=lambda t: t.number)

    def _track_for(self, tracklet: Any, face: Face, frame: int, time_s: float) -> Track | None:
        if tracklet is None:
            return None
        track = self.tracks.get(id(tracklet))
        if track is None or track.tracklet is not tracklet:
            track = Track(
                number=self._next,
                seed=self.seed + SEED_STRIDE * self._next,
                first_frame=frame,
                tracklet=tracklet,
                smoother=OneEuroFilter(self.min_cutoff, self.beta),
                last_box=np.array(face.box),
                last_landmarks=np.asarray(face.landmarks, dtype=np.float64),
                last_time=time_s,
            )
            self._next += 1
            self.tracks[id(tracklet)] = track
        return track

    def _smoothed(self, track: Track, face: Face, frame: int, time_s: float) -> Face:
        dt = time_s - track.last_time if track.frames else 0.0
        points = track.smoother(face.landmarks, dt, face.size)
        track.last_box, track.last_landmarks, track.last_time = np.array(face.box), points.copy(), time_s
        track.last_frame, track.frames, track.misses = frame, track.frames + 1, 0
        return Face(box=face.box, score=face.score, landmarks=points, detector=face.detector)

    def _predicted(self, track: Track, frame: int, shape: tuple[int, ...] | None) -> TrackedFace | None:
        """The track's last landmarks moved and scaled with the box the tracker's motion model predicts."""
        track.misses += 1
        if track.misses > self.lost_frames:
            return None
        box = np.asarray(track.tracklet.get_state_bbox(), dtype=np.float64)
        old = track.last_box
        if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            box = old
        sx = (box[2] - box[0]) / max(old[2] - old[0], 1e-6)
        sy = (box[3] - box[1]) / max(old[3] - old[1], 1e-6)
        points = (track.last_landmarks - old[:2]) * (sx, sy) + box[:2]
        if shape is not None and _inside_fraction(tuple(box), shape) < 0.1:
            return None  # the face left the picture: nothing of it to hide
        track.last_frame, track.frames, track.predicted_frames = frame, track.frames + 1, track.predicted_frames + 1
        face = Face(box=tuple(box), score=0.0, landmarks=points, detector=PREDICTED)
        return TrackedFace(face, track, predicted=True)


def _spawned_for(spawned: list[Any], box: tuple[float, float, float, float]) -> Any:
    """The tracklet this frame started from `box` (ByteTrack reports new tracks without an id for a frame)."""
    for tracklet in spawned:
        if np.allclose(np.asarray(tracklet.get_state_bbox(), dtype=np.float64), box, atol=1e-3):
            return tracklet
    return None


def _inside_fraction(box: tuple[float, float, float, float], shape: tuple[int, ...]) -> float:
    """How much of `box` lies inside the frame (a track that left the picture needs no obfuscation)."""
    height, width = shape[:2]
    x0, y0, x1, y1 = box
    area = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    inside = max(min(x1, width) - max(x0, 0.0), 0.0) * max(min(y1, height) - max(y0, 0.0), 0.0)
    return inside / area if area > 0 else 0.0
