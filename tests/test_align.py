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
