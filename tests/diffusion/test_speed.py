"""Speed levers on the CPU: regional compilation computes the plain path's function; test fixtures stay out of
the product's imports."""

from __future__ import annotations

import subprocess
import sys

import torch

from rp_core.interfaces import RuntimeContext
from rp_core.models import ModelPool


def _noise(bundle, batch: int):  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 4, 16, 16, generator=generator)
    identity = torch.randn(batch, 1, 512, generator=generator)
    text = bundle.prompt_conditioning(None)
    return bundle.guided_noise(x, torch.tensor(299), text, torch.zeros_like(identity), identity, -10.0)


def test_regionally_compiled_blocks_compute_the_plain_unets_noise(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """Full batches run compiled transformer blocks, smaller ones their eager code: both give the plain noise.

    Uses torch.compile's `aot_eager` backend (graph capture through dynamo and AOTAutograd, no code generation):
    it checks which blocks are compiled and which calls use them in ~2 s and needs no C++ compiler; inductor's
    GPU kernels differ from eager by fp16 rounding only (benchmarks/RESULTS.md, max abs 0.03 on noise of ~6).
    """
    from torch._dynamo.utils import counters

    from rp_plugins.diffusion.options import InverterOptions
    from rp_plugins.diffusion.sdxl import load_bundle
    from rp_plugins.diffusion.speed import TRANSFORMER_BLOCK

    sdxl_dir, faceid_file = tiny_models
    options = InverterOptions(sd_model=str(sdxl_dir), ip_adapter=str(faceid_file))
    plain = load_bundle(options, RuntimeContext(device="cpu", pool=ModelPool()))
    regional = load_bundle(options, RuntimeContext(device="cpu", pool=ModelPool()))
    assert regional.compile_blocks_from is None  # ignored on a CPU by default
    regional.compile_blocks_from, regional.compile_backend = 3, "aot_eager"
    blocks = sum(type(m).__name__ == TRANSFORMER_BLOCK for m in regional.pipe.unet.modules())

    single = _noise(regional, 1)  # below the full batch: nothing compiled yet
    assert regional.compiled_blocks == 0
    captured = counters["stats"]["calls_captured"]
    full = _noise(regional, 3)
    assert regional.compiled_blocks == blocks > 0
    assert counters["stats"]["calls_captured"] > captured  # dynamo really traced the blocks
    captured = counters["stats"]["calls_captured"]
    again_single = _noise(regional, 1)  # compiled blocks exist now, but a small call runs them eagerly
    assert counters["stats"]["calls_captured"] == captured

    for got, batch in ((single, 1), (full, 3), (again_single, 1)):
        expected = _noise(plain, batch)
        assert (got - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()


def test_partial_batches_are_padded_and_unpadded_row_for_row() -> None:
    from rp_plugins.diffusion.speed import pad_faces, unpad_noise

    latents, ids = torch.arange(3.0).reshape(3, 1), torch.arange(3.0).reshape(3, 1, 1)
    timestep = torch.tensor([7, 8, 9])
    padded, uncond, cond, steps, rows = pad_faces(5, latents, ids, -ids, timestep)
    assert rows == 5 and padded[:, 0].tolist() == [0, 1, 2, 2, 2] and steps.tolist() == [7, 8, 9, 9, 9]
    assert cond[:, 0, 0].tolist() == [0, -1, -2, -2, -2]
    two_branches = torch.cat([padded, padded + 10])  # unconditional rows, then conditional rows
    assert unpad_noise(two_branches, 3)[:, 0].tolist() == [0, 1, 2, 10, 11, 12]
    assert pad_faces(None, latents, ids, ids, torch.tensor(5))[4] == 3


def test_the_product_never_imports_the_random_weight_fixtures() -> None:
    """random_weights.py builds test and benchmark models; loading and running the method must not need it."""
    code = (
        "import sys, rp_plugins.diffusion as d, rp_plugins.diffusion.components, rp_plugins.diffusion.sdxl, "
        "rp_plugins.diffusion.ledits, rp_plugins.diffusion.model_files; "
        "print('rp_plugins.diffusion.random_weights' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
