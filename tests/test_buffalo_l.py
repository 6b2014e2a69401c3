"""The buffalo_l encoder through InsightFace's real loading code, on a small random ONNX ArcFace."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from rp_core.errors import MissingModelsError
from rp_core.interfaces import RuntimeContext, compare_embeddings
from rp_core.models import ModelPool
from rp_core.types import Face
from rp_plugins.buffalo_l import BuffaloL, BuffaloLOptions
from rp_plugins.dlib_faces import DlibDetector


@pytest.fixture(scope="module")
def t1_faces(t1: np.ndarray) -> list[Face]:
    return DlibDetector().detect(t1)


@pytest.fixture(scope="module")
def encoder(random_buffalo_dir: Path) -> BuffaloL:
    return BuffaloL(context=RuntimeContext(models_dir=random_buffalo_dir, pool=ModelPool()))


def test_loads_through_insightface_and_gives_unit_512d(encoder: BuffaloL, t1: np.ndarray, t1_faces: list[Face]) -> None:
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    embeddings = encoder.encode(t1, t1_faces)
    assert isinstance(encoder._model, ArcFaceONNX)
    assert encoder._model.session.get_providers() == ["CPUExecutionProvider"]
    assert len(embeddings) == 6
    for embedding in embeddings:
        assert embedding.vector.shape == (512,)
        assert embedding.vector.dtype == np.float32
        assert abs(float(np.linalg.norm(embedding.vector)) - 1.0) < 1e-5
        assert embedding.model == "buffalo_l/w600k_r50"


def test_batch_and_single_agree(encoder: BuffaloL, t1: np.ndarray, t1_faces: list[Face]) -> None:
    batch = encoder.encode(t1, t1_faces)
    for i in (0, 5):
        single = encoder.encode(t1, [t1_faces[i]])[0]
        assert np.allclose(batch[i].vector, single.vector, atol=1e-5)
        assert compare_embeddings(batch[i], single) > 0.99999


def test_different_faces_give_different_embeddings(encoder: BuffaloL, t1: np.ndarray, t1_faces: list[Face]) -> None:
    vectors = np.stack([e.vector for e in encoder.encode(t1, t1_faces)])
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3


def test_uses_the_five_points_of_the_landmarks(encoder: BuffaloL, t1: np.ndarray, t1_faces: list[Face]) -> None:
    five = Face(box=t1_faces[2].box, score=1.0, landmarks=t1_faces[2].five_points)
    from_68 = encoder.encode(t1, [t1_faces[2]])[0]
    from_5 = encoder.encode(t1, [five])[0]
    assert np.allclose(from_68.vector, from_5.vector, atol=1e-6)


def test_no_faces_is_empty(encoder: BuffaloL, t1: np.ndarray) -> None:
    assert encoder.encode(t1, []) == []


def test_root_option_finds_the_pack(random_buffalo_dir: Path, astronaut: np.ndarray) -> None:
    encoder = BuffaloL(BuffaloLOptions(root=str(random_buffalo_dir)), RuntimeContext(pool=ModelPool()))
    assert encoder.model_files()[0].found_at == random_buffalo_dir / "models" / "buffalo_l" / "w600k_r50.onnx"
    faces = DlibDetector().detect(astronaut)
    assert encoder.encode(astronaut, faces)[0].vector.shape == (512,)


def test_missing_file_fails_fast_naming_the_path(tmp_path: Path) -> None:
    encoder = BuffaloL(
        BuffaloLOptions(root=str(tmp_path / "root")), RuntimeContext(models_dir=tmp_path / "models", pool=ModelPool())
    )
    start = time.perf_counter()
    with pytest.raises(MissingModelsError) as caught:
        encoder.load()
    assert time.perf_counter() - start < 5
    message = str(caught.value)
    assert str(tmp_path / "root" / "models" / "buffalo_l" / "w600k_r50.onnx") in message
    assert str(tmp_path / "models" / "buffalo_l" / "w600k_r50.onnx") in message
    assert "buffalo_l.zip" in message


def test_options_reject_unknown_keys() -> None:
    with pytest.raises(ValueError):
        BuffaloLOptions.model_validate({"roots": "/x"})
