"""dlib's face-recognition ResNet run by onnxruntime: the same descriptors as dlib's own code, read from its .dat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rp_core.errors import RpError
from rp_core.interfaces import RuntimeContext
from rp_core.models import ModelPool, derived_model
from rp_core.types import Face
from rp_plugins.dlib_faces import RESNET, SHAPE_68, DlibDetector, DlibEncoder, DlibEncoderOptions, package_models_dir
from rp_plugins.dlib_resnet_onnx import build, cache_name, read_network


def _dat(name: str) -> Path:
    folder = package_models_dir()
    assert folder is not None, "face_recognition_models is not installed"
    return folder / name


@pytest.fixture(scope="module")
def people(t1: np.ndarray, astronaut: np.ndarray) -> list[tuple[np.ndarray, list[Face]]]:
    detector = DlibDetector()
    return [(image, detector.detect(image)) for image in (t1, astronaut)]


def _encoder(backend: str, tmp_path: Path, **options: object) -> DlibEncoder:
    options = {"landmarks": "face", **options}
    return DlibEncoder(
        DlibEncoderOptions(backend=backend, **options),  # type: ignore[arg-type]
        context=RuntimeContext(models_dir=tmp_path, pool=ModelPool()),
    )


def test_descriptors_equal_dlibs_own_on_every_face_of_t1_and_astronaut(
    people: list[tuple[np.ndarray, list[Face]]], tmp_path: Path
) -> None:
    fast, slow = _encoder("onnxruntime", tmp_path), _encoder("dlib", tmp_path)
    assert fast.runs_in() == "onnxruntime" and slow.runs_in() == "dlib"
    ours, dlibs = [], []
    for image, faces in people:
        ours += [e.vector for e in fast.encode(image, faces)]
        dlibs += [e.vector for e in slow.encode(image, faces)]
    ours_m, dlibs_m = np.array(ours), np.array(dlibs)
    assert ours_m.shape == dlibs_m.shape == (7, 128)
    assert np.abs(ours_m - dlibs_m).max() < 1e-5
    distances = np.linalg.norm(ours_m[:, None] - ours_m[None], axis=2)
    assert np.abs(distances - np.linalg.norm(dlibs_m[:, None] - dlibs_m[None], axis=2)).max() < 1e-5
    assert distances[np.triu_indices(7, 1)].min() > 0.5  # seven different people: a real reading, not a constant


def test_the_default_runs_in_onnxruntime_and_jittered_reads_in_dlib(tmp_path: Path) -> None:
    assert DlibEncoder().runs_in() == "onnxruntime"
    assert _encoder("auto", tmp_path, num_jitters=2).runs_in() == "dlib"


def test_a_later_process_loads_the_cached_graph_without_importing_onnx(tmp_path: Path) -> None:
    script = """
import sys
import numpy as np
from rp_core.interfaces import RuntimeContext
from rp_core.types import Face
from rp_plugins.dlib_faces import DlibEncoder, DlibEncoderOptions
encoder = DlibEncoder(DlibEncoderOptions(landmarks="face"), context=RuntimeContext(models_dir=sys.argv[1]))
face = Face(box=(40, 40, 160, 160), score=1.0, landmarks=np.random.default_rng(0).uniform(60, 140, (68, 2)))
[embedding] = encoder.encode(np.full((200, 200, 3), 90, np.uint8), [face])
print("onnx" in sys.modules, embedding.vector.shape)
"""
    runs = [subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)]
    runs.append(
        subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    )
    assert [r.stdout.split() for r in runs] == [["True", "(128,)"], ["False", "(128,)"]]
    assert len(list((tmp_path / "cache").glob("dlib-resnet-*.onnx"))) == 1


def converted(dat: Path, cache_dir: Path) -> Path | bytes:
    """What the encoder loads: the cached file, written by the first call, or the bytes where it cannot be written."""
    return derived_model(cache_dir, cache_name(dat), lambda: build(dat), lambda model: model)


def test_an_unwritable_cache_still_reads_faces_from_memory(
    people: list[tuple[np.ndarray, list[Face]]], tmp_path: Path
) -> None:
    blocked = tmp_path / "models"
    blocked.mkdir()
    (blocked / "cache").write_text("a file where the cache folder would be")
    image, faces = people[1]
    from_memory = _encoder("onnxruntime", blocked).encode(image, faces)
    from_dlib = _encoder("dlib", tmp_path).encode(image, faces)
    assert np.abs(from_memory[0].vector - from_dlib[0].vector).max() < 1e-5
    assert isinstance(converted(_dat(RESNET), blocked / "cache"), bytes)


def test_a_damaged_cache_file_is_converted_again(people: list[tuple[np.ndarray, list[Face]]], tmp_path: Path) -> None:
    cached = converted(_dat(RESNET), tmp_path / "cache")
    assert isinstance(cached, Path)
    cached.write_bytes(b"not an onnx model")
    image, faces = people[1]
    again = _encoder("onnxruntime", tmp_path).encode(image, faces)
    assert np.abs(again[0].vector - _encoder("dlib", tmp_path).encode(image, faces)[0].vector).max() < 1e-5
    assert cached.stat().st_size > 20_000_000  # rewritten whole


@pytest.mark.parametrize("cut", [None, 0.5, "after a tag"])
def test_a_file_that_is_not_the_resnet_is_refused_with_what_to_do(cut: float | str | None) -> None:
    data = _dat(SHAPE_68).read_bytes() if cut is None else _dat(RESNET).read_bytes()
    if isinstance(cut, float):
        data = data[: int(len(data) * cut)]
    elif cut is not None:
        data = data[: data.index(b"con_4") + 5]  # ends right where the first layer's weights would start
    with pytest.raises(RpError, match="backend to dlib"):
        read_network(data)
