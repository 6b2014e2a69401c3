"""The originals' identities are read on demand, once, from each face's neighbourhood, as on the whole photo."""

from __future__ import annotations

import numpy as np

from rp_core.identities import chain, face_identities, pick
from rp_core.types import Face, IdentityEmbedding
from rp_plugins.centerface import CenterFaceDetector
from rp_plugins.dlib_faces import DlibEncoder


def test_identities_are_read_once_when_asked_and_equal_those_read_on_the_whole_photo(t1: np.ndarray) -> None:
    faces = CenterFaceDetector().detect(t1)
    encoder = DlibEncoder(DlibEncoder.Options(landmarks="predict5"))
    whole = encoder.encode(t1, faces)
    calls: list[int] = []

    def encode(image: np.ndarray, chosen: list[Face]) -> list[IdentityEmbedding]:
        calls.append(image.size)
        return list(encoder.encode(image, chosen))

    lazy = face_identities(encode, t1, faces)
    later = chain(pick(lazy, [5, 0]), pick(lazy, [2]))
    assert len(lazy) == 6 and len(later) == 3 and calls == []  # nothing read until a check compares something
    for read, expected in zip(lazy, whole, strict=True):
        np.testing.assert_allclose(read.vector, expected.vector, atol=1e-5)
    assert len(calls) == 6 and all(size < t1.size / 4 for size in calls)  # one small neighbourhood per face
    assert [e.vector.tolist() for e in later] == [lazy[i].vector.tolist() for i in (5, 0, 2)]
    assert len(calls) == 6  # read once
