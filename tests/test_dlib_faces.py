"""The dlib detector and 128-d encoder on real photos."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from rp_core.errors import RpError
from rp_core.interfaces import RuntimeContext, compare_embeddings
from rp_core.models import ModelPool
from rp_core.types import Face
from rp_plugins.dlib_faces import SHAPE_68, DlibDetector, DlibDetectorOptions, DlibEncoder, package_models_dir


@pytest.fixture(scope="module")
def detector() -> DlibDetector:
    return DlibDetector()


@pytest.fixture(scope="module")
def encoder() -> DlibEncoder:
    return DlibEncoder()


def test_finds_all_six_faces_of_t1_with_68_landmarks(detector: DlibDetector, t1: np.ndarray) -> None:
    faces = detector.detect(t1)
    assert len(faces) == 6
    for face in faces:
        assert face.landmarks.shape == (68, 2)
        assert face.detector == "dlib"
        x0, y0, x1, y1 = face.box
        centre = face.landmarks.mean(axis=0)
        assert x0 <= centre[0] <= x1 and y0 <= centre[1] <= y1


def test_finds_the_astronaut(detector: DlibDetector, astronaut: np.ndarray) -> None:
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    assert faces[0].landmarks.shape == (68, 2)


def test_blank_image_has_no_faces(detector: DlibDetector) -> None:
    assert detector.detect(np.full((200, 300, 3), 127, np.uint8)) == []


def test_det_size_downscales_and_maps_back(t1: np.ndarray) -> None:
    full = DlibDetector().detect(t1)
    big = cv2.resize(t1, (t1.shape[1] * 2, t1.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    scaled = DlibDetector(DlibDetectorOptions(det_size=t1.shape[1])).detect(big)
    assert len(scaled) == len(full) == 6
    by_x = sorted(full, key=lambda f: f.box[0]), sorted(scaled, key=lambda f: f.box[0])
    for a, b in zip(*by_x, strict=True):
        assert np.allclose(np.array(b.box) / 2, a.box, atol=3)
        assert np.abs(b.landmarks / 2 - a.landmarks).mean() < 3  # landmarks fitted on the full-size image


def test_det_size_never_upscales(astronaut: np.ndarray) -> None:
    plain = DlibDetector().detect(astronaut)
    large = DlibDetector(DlibDetectorOptions(det_size=4096)).detect(astronaut)
    assert [f.box for f in plain] == [f.box for f in large]


def test_same_face_flipped_and_rescaled_matches(
    detector: DlibDetector, encoder: DlibEncoder, astronaut: np.ndarray
) -> None:
    other = np.ascontiguousarray(cv2.resize(astronaut[:, ::-1], (384, 384), interpolation=cv2.INTER_AREA))
    a = encoder.encode(astronaut, detector.detect(astronaut))[0]
    b = encoder.encode(other, detector.detect(other))[0]
    assert a.vector.shape == (128,)
    distance = compare_embeddings(a, b, encoder.metric)
    assert distance < 0.6
    assert encoder.is_match(a, b)


def test_different_people_do_not_match(detector: DlibDetector, encoder: DlibEncoder, t1: np.ndarray) -> None:
    embeddings = encoder.encode(t1, detector.detect(t1))
    assert len(embeddings) == 6
    for i in range(6):
        for j in range(i + 1, 6):
            assert compare_embeddings(embeddings[i], embeddings[j], "euclidean") > 0.6
            assert not encoder.is_match(embeddings[i], embeddings[j])


def test_batch_and_single_descriptors_agree(detector: DlibDetector, encoder: DlibEncoder, t1: np.ndarray) -> None:
    faces = detector.detect(t1)
    batch = encoder.encode(t1, faces)
    single = encoder.encode(t1, faces[3:4])
    assert np.allclose(batch[3].vector, single[0].vector, atol=1e-5)


def test_encoder_refuses_five_point_faces(encoder: DlibEncoder, astronaut: np.ndarray) -> None:
    five = Face(box=(0, 0, 100, 100), score=1.0, landmarks=np.zeros((5, 2)), detector="centerface")
    with pytest.raises(RpError, match="needs 68 landmarks"):
        encoder.encode(astronaut, [five])


def test_models_dir_is_looked_in_first(tmp_path: Path) -> None:
    source = package_models_dir()
    assert source is not None
    shutil.copy(source / SHAPE_68, tmp_path / SHAPE_68)
    context = RuntimeContext(models_dir=tmp_path, pool=ModelPool())
    files = DlibDetector(context=context).model_files()
    assert files[0].found_at == tmp_path / SHAPE_68
    assert files[0].looked_in[0] == tmp_path / SHAPE_68


def test_mmod_options_and_timing(astronaut: np.ndarray) -> None:
    detector = DlibDetector(DlibDetectorOptions(model="mmod", det_size=384))
    assert {f.description.split("(")[-1] for f in detector.model_files()} >= {"mmod_human_face_detector.dat)"}
    start = time.perf_counter()
    faces = detector.detect(astronaut)
    assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2)
    assert time.perf_counter() - start < 30


def test_options_reject_unknown_keys() -> None:
    with pytest.raises(ValueError):
        DlibDetectorOptions.model_validate({"upsampel": 1})
