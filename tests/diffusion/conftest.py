"""A tiny random SDXL + FaceID (the real layouts) written to disk once, and configs that load it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Any:
    """One intra-op thread: the tiny models gain nothing from more, and on a loaded machine extra threads
    made one test run ~6x slower (81 s instead of 13 s, measured). One thread is also deterministic."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from rp_plugins.diffusion.random_weights import write_random_models

    return write_random_models(tmp_path_factory.mktemp("tiny-sdxl"), "tiny", seed=0)


@pytest.fixture(scope="session")
def diffusion_params(tiny_models: tuple[Path, Path], random_buffalo_dir: Path) -> dict[str, Any]:
    """Flags for the default pipeline on the tiny model: dlib detector (runs here), fp32 on CPU."""
    sdxl_dir, faceid_file = tiny_models
    return {
        "detector": "dlib",
        "sd_model": str(sdxl_dir),
        "ip_adapter": str(faceid_file),
        "insightface_root": str(random_buffalo_dir),
        "face_image_size": 64,
        "num_inversion_steps": 10,
        "device": "cpu",
        "dtype": "float32",
    }
