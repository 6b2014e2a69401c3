"""rp_core.align on real faces: crop, then paste back through the inverse matrix, reproduces the face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rp_core.align import align_face, align_faces, crop_footprint, estimate_matrix, warp_to_image
from rp_plugins.dlib_faces import DlibDetector


@pytest.fixture(scope="module")
def t1_faces(t1: np.ndarray) -> list:
    return DlibDetector().detect(t1)


@pytest.mark.parametrize("size", [256, 1024])
def test_crop_and_paste_back_round_trip(t1: np.ndarray, t1_faces: list, size: int) -> None:
    for aligned in align_faces(t1, t1_faces, size):
        back = warp_to_image(aligned.crop, aligned.matrix, t1.shape)
        footprint = crop_footprint(aligned.matrix, size, t1.shape).astype(np.uint8)
        inner = cv2.erode(footprint, np.ones((9, 9), np.uint8)).astype(bool)  # away from the interpolation border
        x0, y0, x1, y1 = (round(v) for v in aligned.face.box)
        face_box = np.zeros(t1.shape[:2], bool)
        face_box[y0:y1, x0:x1] = True
        region = inner & face_box
        assert region.sum() > 0.9 * face_box.sum()
        error = np.abs(back.astype(np.int16) - t1.astype(np.int16))[region]
        assert error.mean() < (3.0 if size == 256 else 1.0)  # within interpolation error
        assert np.percentile(error, 99) < (30 if size == 256 else 8)


def test_landmarks_land_on_the_same_crop_positions(t1: np.ndarray, t1_faces: list) -> None:
    size = 512
    eyes = []
    for face in t1_faces:
        matrix = estimate_matrix(face.landmarks, size)
        five = face.five_points @ matrix[:, :2].T + matrix[:, 2]
        eyes.append(five[:2])
    eyes_array = np.array(eyes)
    assert eyes_array.std(axis=0).max() < 0.05 * size  # aligned: eyes at the same place in every crop
    assert (eyes_array[:, 0, 0] < eyes_array[:, 1, 0]).all()  # image-left eye on the left


def test_crop_is_square_uint8_and_read_only(astronaut: np.ndarray) -> None:
    face = DlibDetector().detect(astronaut)[0]
    aligned = align_face(astronaut, face, 256)
    assert aligned.crop.shape == (256, 256, 3) and aligned.crop.dtype == np.uint8
    assert not aligned.crop.flags.writeable


def test_a_deferred_crop_is_the_crop_made_once_when_first_read(astronaut: np.ndarray) -> None:
    import dataclasses
    import pickle

    from rp_core.types import AlignedFace

    face = DlibDetector().detect(astronaut)[0]
    eager = align_face(astronaut, face, 256)
    calls = []

    def make() -> np.ndarray:
        calls.append(1)
        return np.asarray(align_face(astronaut, face, 256).crop)

    deferred = AlignedFace.deferred(face, eager.matrix, 256, make)
    assert deferred.size == 256 and deferred.crop_shape == (256, 256, 3) and not calls  # known without the warp
    np.testing.assert_array_equal(deferred.crop, eager.crop)
    np.testing.assert_array_equal(deferred.crop, align_face(astronaut, face, 256, deferred=True).crop)
    assert len(calls) == 1 and not deferred.crop.flags.writeable
    with pytest.raises(dataclasses.FrozenInstanceError):
        deferred.crop = eager.crop  # type: ignore[misc]
    again = AlignedFace.deferred(face, eager.matrix, 256, make)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(again)).crop, eager.crop)  # travels made
    assert dataclasses.replace(AlignedFace.deferred(face, eager.matrix, 256, make), index=3).index == 3
    wrong = AlignedFace.deferred(face, eager.matrix, 128, make)
    with pytest.raises(ValueError, match="side 128"):
        _ = wrong.crop


def test_umeyama_fit_agrees_with_scikit_image() -> None:
    """The similarity fit is written in numpy (scikit-image's import pulls in SciPy, ~0.4 s a process): it must
    give scikit-image's answer, on landmark-like point sets at every scale, turned and mirrored."""
    from skimage.transform import SimilarityTransform

    from rp_core.align import MEAN_FACE_33, umeyama

    rng = np.random.default_rng(7)
    for _ in range(200):
        angle = rng.uniform(-np.pi, np.pi)
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        mirror = np.diag([rng.choice([-1.0, 1.0]), 1.0])
        src = (MEAN_FACE_33 @ (mirror @ turn).T) * rng.uniform(10, 2000) + rng.uniform(-3000, 3000, 2)
        src += rng.normal(scale=0.02 * np.ptp(src), size=src.shape)  # a detector's noise
        expected = SimilarityTransform.from_estimate(src, MEAN_FACE_33).params[:2]
        np.testing.assert_allclose(umeyama(src, MEAN_FACE_33), expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    with pytest.raises(ValueError, match="degenerate"):
        umeyama(np.zeros((5, 2)), MEAN_FACE_33[:5])
