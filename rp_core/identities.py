"""Identities read on demand: an image's faces are encoded only when a check needs to compare something.

Verification compares the faces a detector finds on an output with every original identity of the
image and of the run's recent images. Most outputs show no face where faces were changed (a
pixelated or regenerated-beyond-recognition face is found by no detector, or found and compared),
so reading every original identity up front (one descriptor per face: ~0.1 s each for dlib's on a
CPU) mostly buys nothing. `LazyIdentities` reads them the first time one is indexed, once.

A window of recent images (`rp_core.verify.RecentIdentities`) holds these objects long after
their photo is gone, so `face_identities` keeps only each face's neighbourhood, never the photo.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import overload

import numpy as np

from rp_core.types import Face, IdentityEmbedding

#: An identity encoder's `encode(image, faces)`.
Encode = Callable[[np.ndarray, Sequence[Face]], Sequence[IdentityEmbedding]]

#: Context kept around each face, as a share of its box's larger side on every side: an encoder's alignment
#: (dlib's chip with its padding, ArcFace's 112-px template) reads well within one face side of the box.
CONTEXT = 1.0


class LazyIdentities(Sequence[IdentityEmbedding]):
    """A fixed number of identities, read by `read()` the first time any is asked for."""

    def __init__(self, read: Callable[[], Sequence[IdentityEmbedding]], length: int) -> None:
        self._read: Callable[[], Sequence[IdentityEmbedding]] | None = read
        self._length = length
        self._values: list[IdentityEmbedding] | None = None

    def values(self) -> list[IdentityEmbedding]:
        if self._values is None:
            assert self._read is not None
            values = list(self._read()) if self._length else []
            if len(values) != self._length:
                raise RuntimeError(f"expected {self._length} identities, the encoder returned {len(values)}")
            self._values, self._read = values, None  # drop what reading needed (crops, encoder)
        return self._values

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> IdentityEmbedding: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[IdentityEmbedding]: ...

    def __getitem__(self, index: int | slice) -> IdentityEmbedding | Sequence[IdentityEmbedding]:
        return self.values()[index]

    def __iter__(self) -> Iterator[IdentityEmbedding]:
        return iter(self.values())


def pick(identities: Sequence[IdentityEmbedding], indices: Sequence[int]) -> LazyIdentities:
    """The identities at `indices`, read when first needed."""
    chosen = list(indices)
    return LazyIdentities(lambda: [identities[i] for i in chosen], len(chosen))


def chain(*parts: Sequence[IdentityEmbedding]) -> LazyIdentities:
    """All identities of `parts`, in order, read when first needed."""
    return LazyIdentities(lambda: [e for part in parts for e in part], sum(len(part) for part in parts))


def face_identities(encode: Encode, image: np.ndarray, faces: Sequence[Face]) -> LazyIdentities:
    """The identities of `faces` of `image`, read on demand from a copy of each face's neighbourhood."""
    parts = [_neighbourhood(image, face) for face in faces]

    def read() -> list[IdentityEmbedding]:
        out: list[IdentityEmbedding] = []
        for part, face in parts:
            out += list(encode(part, [face]))
        return out

    return LazyIdentities(read, len(parts))


def _neighbourhood(image: np.ndarray, face: Face) -> tuple[np.ndarray, Face]:
    """A copy of the image around `face` (CONTEXT face sides on each side) and the face in its coordinates.

    The shift is whole pixels, so an encoder that rounds landmarks or samples the image reads the same
    pixels as on the whole image.
    """
    height, width = image.shape[:2]
    x0, y0, x1, y1 = face.box
    grow = CONTEXT * max(x1 - x0, y1 - y0, 1.0)
    left, top = max(0, int(np.floor(x0 - grow))), max(0, int(np.floor(y0 - grow)))
    right, bottom = min(width, int(np.ceil(x1 + grow))), min(height, int(np.ceil(y1 + grow)))
    if right <= left or bottom <= top:  # a face wholly off the image (a predicted track): keep the whole image
        return image.copy(), face
    shifted = Face(
        box=(x0 - left, y0 - top, x1 - left, y1 - top),
        score=face.score,
        landmarks=np.asarray(face.landmarks, dtype=np.float64) - (left, top),
        detector=face.detector,
    )
    return np.ascontiguousarray(image[top:bottom, left:right]).copy(), shifted
