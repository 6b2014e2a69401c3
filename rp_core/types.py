"""Frozen data objects passed between pipeline stages.

Data flows one way: image -> Face -> AlignedFace -> IdentityEmbedding / Inversion
-> generated crop -> merged image. Arrays are made read-only on construction so a
stage cannot silently change what an earlier stage produced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np


def _frozen_array(value: Any, dtype: Any = None) -> np.ndarray:
    array = np.array(value, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class Face:
    """One detected face in image pixel coordinates.

    `landmarks` holds either the 68 iBUG 300-W points or the 5 ArcFace points
    (left eye, right eye, nose tip, left and right mouth corner, image-left first).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    detector: str = ""

    def __post_init__(self) -> None:
        points = _frozen_array(self.landmarks, np.float64)
        if points.shape not in ((68, 2), (5, 2)):
            raise ValueError(f"landmarks must have shape (68, 2) or (5, 2), got {points.shape}")
        object.__setattr__(self, "landmarks", points)
        object.__setattr__(self, "box", tuple(float(v) for v in self.box))
        object.__setattr__(self, "score", float(self.score))

    @property
    def five_points(self) -> np.ndarray:
        """The 5 ArcFace alignment points, derived from 68 landmarks when needed."""
        return five_points_from(self.landmarks)

    @property
    def size(self) -> float:
        """Geometric mean of the box sides, in pixels."""
        x0, y0, x1, y1 = self.box
        return float(np.sqrt(max(x1 - x0, 0.0) * max(y1 - y0, 0.0)))


def five_points_from(landmarks: np.ndarray) -> np.ndarray:
    """Map 68 iBUG landmarks (or 5 points, unchanged) to ArcFace's 5-point order."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape == (5, 2):
        return points.copy()
    return np.stack(
        [
            points[36:42].mean(axis=0),
            points[42:48].mean(axis=0),
            points[30],
            points[48],
            points[54],
        ]
    )


@dataclass(frozen=True)
class AlignedFace:
    """A face warped to a square crop; `matrix` maps image pixels to crop pixels.

    The crop is given, or (`AlignedFace.deferred`) warped the first time it is read: a video face carried from
    its keyframe pastes that frame's crop and never needs its own (a Lanczos warp of every face of every frame,
    ~5 % of a video run on a CPU).
    """

    face: Face
    crop: np.ndarray
    matrix: np.ndarray
    index: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop", _crop_array(self.crop))
        object.__setattr__(self, "matrix", _affine_matrix(self.matrix))

    @classmethod
    def deferred(
        cls, face: Face, matrix: np.ndarray, size: int, make: Callable[[], np.ndarray], index: int = 0
    ) -> AlignedFace:
        """An aligned face whose `size` x `size` crop is `make()`, called once, when the crop is first read."""
        aligned = cls.__new__(cls)
        frozen = _affine_matrix(matrix)
        for name, value in (("face", face), ("matrix", frozen), ("index", index), ("_make", (make, int(size)))):
            object.__setattr__(aligned, name, value)
        return aligned

    if not TYPE_CHECKING:  # typed as the field above; only a deferred face lacks it until it is read

        def __getattr__(self, name: str) -> Any:
            make = self.__dict__.get("_make") if name == "crop" else None
            if make is None:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            produce, size = make
            crop = _crop_array(produce())
            if crop.shape[:2] != (size, size):
                raise ValueError(f"a deferred crop of side {size} came out {crop.shape}")
            object.__setattr__(self, "crop", crop)
            self.__dict__.pop("_make", None)  # and lets go of the image it read (a second thread may be here too)
            return crop

    def __reduce__(self) -> tuple[type[AlignedFace], tuple[Face, np.ndarray, np.ndarray, int]]:
        return (AlignedFace, (self.face, self.crop, self.matrix, self.index))  # a deferred crop travels made

    @property
    def size(self) -> int:
        return self.crop_shape[0]

    @property
    def crop_shape(self) -> tuple[int, ...]:
        """The crop's shape, without making a deferred crop."""
        made = self.__dict__.get("crop")
        if made is not None:
            return tuple(made.shape)
        side = int(self.__dict__["_make"][1])
        return (side, side, 3)


def _affine_matrix(value: Any) -> np.ndarray:
    matrix = _frozen_array(value, np.float64)
    if matrix.shape != (2, 3):
        raise ValueError(f"matrix must be a 2x3 affine matrix, got {matrix.shape}")
    return matrix


def _crop_array(value: Any) -> np.ndarray:
    crop = _frozen_array(value, np.uint8)
    if crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"crop must be (H, W, 3) uint8, got {crop.shape}")
    return crop


@dataclass(frozen=True)
class IdentityEmbedding:
    """An identity vector and the model that produced it (embeddings of two models never compare)."""

    vector: np.ndarray
    model: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "vector", _frozen_array(self.vector, np.float32).reshape(-1))


@dataclass(frozen=True)
class Inversion:
    """What an Inverter hands its Generator; `state` is private to the producing plugin.

    `producer` names the inverter so a generator can refuse an inversion it cannot read.
    """

    producer: str
    state: Any


@dataclass(frozen=True)
class GenerationRequest:
    """Everything a Generator may use for one face; fields it does not need are None."""

    face: AlignedFace
    identity: IdentityEmbedding | None = None
    inversion: Inversion | None = None
    seed: int = 0
    #: This face's attribute prompt ("an old man"), overriding the generator's own; None: the generator's.
    prompt: str | None = None


@dataclass(frozen=True)
class FaceChoice:
    """A face given to a run from outside (a reviewed faces JSON): where it is, and what to do with it."""

    face: Face
    keep: bool = False
    prompt: str | None = None


@dataclass(frozen=True)
class FaceRecord:
    """What happened to one face, for the run manifest."""

    index: int
    box: tuple[float, float, float, float]
    score: float
    detector: str
    action: str
    generator: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "box": [round(v, 2) for v in self.box],
            "score": round(self.score, 4),
            "detector": self.detector,
            "action": self.action,
            "generator": self.generator,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "notes": self.notes,
        }


@dataclass(frozen=True)
class ImageResult:
    """The anonymized image and one record per face found in it."""

    image: np.ndarray
    records: tuple[FaceRecord, ...]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def face_count(self) -> int:
        return len(self.records)
