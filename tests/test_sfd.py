"""The SFD + FAN detector: fast, clear failure without weights; the detection path on crafted weights."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from rp_core.errors import MissingModelsError
from rp_core.interfaces import RuntimeContext
from rp_core.models import ModelPool
from rp_plugins.sfd import FAN_FILE, FAN_URL, SFD_FILE, SFD_URL, SfdDetector, SfdOptions, torch_hub_checkpoints


def test_missing_weights_fail_fast_naming_paths_and_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    detector = SfdDetector(context=RuntimeContext(models_dir=tmp_path / "models", pool=ModelPool()))
    start = time.perf_counter()
    with pytest.raises(MissingModelsError) as caught:
        detector.load()
    assert time.perf_counter() - start < 5
    message = str(caught.value)
    hub = torch_hub_checkpoints()
    assert hub == (tmp_path / "torch" / "hub" / "checkpoints")
    for name, url in ((SFD_FILE, SFD_URL), (FAN_FILE, FAN_URL)):
        assert str(hub / name) in message
        assert str(tmp_path / "models" / name) in message
        assert url in message
    assert not list(tmp_path.rglob("*.pth*"))  # nothing was downloaded or created


def test_explicit_paths_are_the_only_place_looked(tmp_path: Path) -> None:
    options = SfdOptions(sfd_path=str(tmp_path / "a.pth"), fan_path=str(tmp_path / "b.pth.tar"))
    files = SfdDetector(options, RuntimeContext(pool=ModelPool())).model_files()
    assert [f.looked_in for f in files] == [(tmp_path / "a.pth",), (tmp_path / "b.pth.tar",)]
    with pytest.raises(MissingModelsError, match="a.pth"):
        SfdDetector(options, RuntimeContext(pool=ModelPool())).load()


def test_weights_in_models_dir_are_found(tmp_path: Path) -> None:
    (tmp_path / SFD_FILE).write_bytes(b"")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / FAN_FILE).write_bytes(b"")
    files = SfdDetector(context=RuntimeContext(models_dir=tmp_path, pool=ModelPool())).model_files()
    assert [f.found_at for f in files] == [tmp_path / SFD_FILE, tmp_path / "hub" / "checkpoints" / FAN_FILE]


@pytest.fixture(scope="module")
def crafted_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """S3FD weights whose only firing layer is conv7_2 (stride 128, 512-px anchors), and a random FAN.

    The real weights can't be downloaded here; these make SFD's output known exactly
    (boxes are its anchors) so the box mapping and the FAN landmark path can be checked.
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("face_alignment")
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    torch.manual_seed(0)
    state = s3fd().state_dict()
    for key, value in state.items():
        if "_mbox_" in key:
            value.zero_()
            if key.endswith("conf.bias"):
                value.fill_(-10.0)
                value[0] = 10.0  # background wins
    state["conv7_2_mbox_conf.bias"].copy_(torch.tensor([-3.0, 3.0]))  # face everywhere on the coarsest map
    folder = tmp_path_factory.mktemp("sfd")
    torch.save(state, folder / SFD_FILE)
    torch.save(FAN(4).state_dict(), folder / FAN_FILE)
    return folder / SFD_FILE, folder / FAN_FILE


@pytest.fixture(scope="module")
def flush_denormals() -> object:
    """Random FAN weights drive activations into denormal floats, which are ~5x slower on CPU."""
    import torch

    torch.set_flush_denormal(True)
    yield None
    torch.set_flush_denormal(False)


POOL = ModelPool()


def test_detection_path_maps_boxes_back(
    crafted_weights: tuple[Path, Path], astronaut: np.ndarray, flush_denormals: object
) -> None:
    sfd_path, fan_path = crafted_weights
    options = SfdOptions(sfd_path=str(sfd_path), fan_path=str(fan_path), det_size=128, flip_input=False)
    detector = SfdDetector(options, RuntimeContext(device="auto", pool=POOL))
    faces = detector.detect(astronaut)  # 512 px, detected at 128: scale 0.25
    assert len(faces) == 1  # conv7_2's few overlapping anchors, 512 px wide; NMS keeps one
    face = faces[0]
    x0, y0, x1, y1 = face.box
    # anchors of the 128-px copy are centred at 64 + 128k; mapped back: 256 + 512k, 2048 wide
    assert (x1 - x0, y1 - y0) == (pytest.approx(2048), pytest.approx(2048))
    for centre in ((x0 + x1) / 2, (y0 + y1) / 2):
        assert (centre - 256) % 512 == pytest.approx(0)
    assert face.score == pytest.approx(1 / (1 + np.exp(-6.0)), abs=1e-4)
    assert face.landmarks.shape == (68, 2) and np.isfinite(face.landmarks).all()
    assert face.detector == "sfd"


def test_high_threshold_finds_nothing(crafted_weights: tuple[Path, Path], astronaut: np.ndarray) -> None:
    sfd_path, fan_path = crafted_weights
    options = SfdOptions(
        sfd_path=str(sfd_path), fan_path=str(fan_path), det_size=128, det_thresh=0.999, flip_input=False
    )
    assert SfdDetector(options, RuntimeContext(pool=POOL)).detect(astronaut) == []


@pytest.mark.e2e
def test_landmark_jit_is_compiled_once_and_then_read_from_disk(tmp_path: Path) -> None:
    """face-alignment's numba helpers: the first process compiles and caches, the next one loads the cache."""
    import os
    import subprocess
    import sys

    script = (
        "import numpy as np\n"
        "from rp_plugins.sfd import cache_landmark_jit\n"
        "assert cache_landmark_jit()\n"
        "from face_alignment.utils import _get_preds_fromhm, get_preds_fromhm\n"
        "heatmaps = np.random.default_rng(0).random((1, 68, 64, 64), dtype=np.float32)\n"
        "get_preds_fromhm(heatmaps, np.array([100.0, 100.0]), 1.0)\n"
        "print(sum(_get_preds_fromhm.stats.cache_hits.values()), sum(_get_preds_fromhm.stats.cache_misses.values()))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs == [["0", "1"], ["1", "0"]]
    assert any(tmp_path.rglob("*.nbi"))
