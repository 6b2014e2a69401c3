""" "Keep this person everywhere": the `--keep-face` identity match, run from a face the user points at.

The faces of every photo are encoded once with the pipeline's verification encoder (the one
`--keep-face` matches with, at its own match threshold), and each photo gives the person at
most the one face closest to them (`rp_core.selection.faces_to_keep`), so a look-alike standing
next to them is not kept along.
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

from rp_core.errors import RpError
from rp_core.interfaces import Detector, IdentityEncoder
from rp_core.review.state import ReviewState
from rp_core.types import IdentityEmbedding


class IdentityIndex:
    """The identities of every reviewed face, computed on first use."""

    def __init__(self, state: ReviewState, encoder: IdentityEncoder[Any] | None, detector: Detector[Any]) -> None:
        self.state, self.encoder, self.detector = state, encoder, detector
        self._embeddings: dict[int, list[IdentityEmbedding]] = {}
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.encoder is not None

    def _encoder(self) -> IdentityEncoder[Any]:
        if self.encoder is None:
            raise RpError("this config has no identity encoder (verification is off): keep faces one by one")
        self.encoder.load()
        return self.encoder

    def _faces(self, index: int) -> tuple[Any, list[IdentityEmbedding]]:
        from rp_core.io import read_image
        from rp_core.selection import face_choices_from_json

        image = self.state.image(index)
        faces = [c.face for c in face_choices_from_json(self.state.entry(index), _shape(self.state, index), image.name)]
        if index not in self._embeddings:
            pixels = read_image(image.source)
            self._embeddings[index] = self._encoder().encode(pixels, faces) if faces else []
        return faces, self._embeddings[index]

    def person_of(self, index: int, face: int) -> IdentityEmbedding:
        """The identity of one reviewed face (KeyError for an unknown face)."""
        with self._lock:
            embeddings = self._faces(index)[1]
        if not 0 <= face < len(embeddings):
            raise KeyError(face)
        return embeddings[face]

    def person_in_photo(self, data: bytes) -> IdentityEmbedding:
        """The identity of the largest face in an uploaded reference photo (decoded like any input)."""
        from rp_core.files.write import atomic_write_bytes
        from rp_core.selection import encode_references

        with tempfile.TemporaryDirectory(prefix="rp-review-") as folder:  # private to this user (0700)
            path = Path(folder) / "reference"
            atomic_write_bytes(path, data)
            self.detector.load()
            with self._lock:
                try:
                    return encode_references([path], self.detector.detect, self._encoder(), "upload:")[0]
                except RpError as exc:
                    raise type(exc)(str(exc).replace(str(path), "the uploaded photo")) from None

    def faces_of(self, person: IdentityEmbedding) -> list[tuple[int, int]]:
        """(photo, face) of every face that is this person: at most one per photo."""
        from rp_core.selection import References, faces_to_keep

        found = []
        with self._lock:
            for image in self.state.images:
                if image.error is not None:
                    continue
                faces, embeddings = self._faces(image.index)
                kept = faces_to_keep(faces, embeddings, self._encoder(), References(keep=(person,)))
                found += [(image.index, k) for k in sorted(kept)]
        return found


def _shape(state: ReviewState, index: int) -> tuple[int, int, int]:
    width, height = state.entry(index)["size"]
    return (int(height), int(width), 3)
