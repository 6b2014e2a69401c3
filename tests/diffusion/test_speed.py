"""Speed levers on the CPU: regional compilation computes the plain path's function; test fixtures stay out of
the product's imports."""

from __future__ import annotations

import subprocess
import sys

import pytest
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


def test_the_cached_faceid_merge_loads_the_same_weights_bit_for_bit(tiny_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A second process reads FaceID's merged LoRA from the cache file instead of merging again: same weights."""
    from rp_plugins.diffusion import fused_cache
    from rp_plugins.diffusion.sdxl import _load

    sdxl_dir, faceid_file = tiny_models
    cpu = torch.device("cpu")
    plain = _load(sdxl_dir, faceid_file, cpu, torch.float32)  # no cache: the merge as before
    first = _load(sdxl_dir, faceid_file, cpu, torch.float32, cache_dir=tmp_path)  # merges, writes the cache
    cached = fused_cache.cache_file(tmp_path, sdxl_dir, faceid_file, torch.float32)
    assert cached.is_file() and list(tmp_path.iterdir()) == [cached]  # no partial file left behind
    merged, faceid = fused_cache.load(cached, cpu)  # type: ignore[misc]
    assert merged and all(".to_" in name for name in merged)  # only the layers FaceID's LoRA touched
    assert faceid["image_proj"] and not any("lora" in name for name in faceid["ip_adapter"])
    second = _load(sdxl_dir, faceid_file, cpu, torch.float32, cache_dir=tmp_path)  # reads the cache

    reference = plain.pipe.unet.state_dict()
    for bundle in (first, second):
        weights = bundle.pipe.unet.state_dict()
        assert weights.keys() == reference.keys()
        assert all(torch.equal(weights[name], reference[name]) for name in reference)
        assert not getattr(bundle.pipe.unet, "peft_config", None)  # merged: no LoRA layers left to run
    assert torch.equal(_noise(second, 2), _noise(plain, 2))
    cached.write_bytes(b"not a safetensors file")  # damaged on disk: merged again, and a good file written over it
    assert fused_cache.load(cached, cpu) is None
    again = _load(sdxl_dir, faceid_file, cpu, torch.float32, cache_dir=tmp_path)
    assert all(torch.equal(again.pipe.unet.state_dict()[name], reference[name]) for name in reference)
    assert fused_cache.load(cached, cpu) is not None
    # another dtype (or other weights) gets its own file, never this merge
    assert fused_cache.cache_file(tmp_path, sdxl_dir, faceid_file, torch.float16) != cached


def test_a_later_process_reads_the_empty_prompt_from_disk_and_loads_no_text_encoder(tiny_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The first process keeps the empty prompt's embeddings; a later one skips both text encoders and serves the
    same tensors bit for bit, and an attribute prompt then loads the encoders and encodes as a plain load does."""
    from rp_plugins.diffusion import prompt_cache
    from rp_plugins.diffusion.sdxl import _load

    sdxl_dir, faceid_file = tiny_models
    cpu = torch.device("cpu")
    plain = _load(sdxl_dir, faceid_file, cpu, torch.float32)  # no cache: encoders loaded, prompt encoded
    first = _load(sdxl_dir, faceid_file, cpu, torch.float32, cache_dir=tmp_path)
    assert first.pipe.text_encoder is not None and first.pipe.text_encoder_2 is not None
    first.prompt_conditioning(None)
    kept = prompt_cache.cache_file(tmp_path, sdxl_dir, torch.float32)
    assert kept.is_file()

    second = _load(sdxl_dir, faceid_file, cpu, torch.float32, cache_dir=tmp_path)
    assert second.pipe.text_encoder is None and second.pipe.text_encoder_2 is None and second.pipe.tokenizer is None
    assert all(map(torch.equal, second.prompt_conditioning(None), plain.prompt_conditioning(None)))
    assert all(map(torch.equal, second.prompt_conditioning("an old man"), plain.prompt_conditioning("an old man")))
    assert second.pipe.text_encoder is not None  # loaded for the attribute prompt
    kept.write_bytes(b"damaged")  # an unreadable file: the encoders load as without a cache
    assert _load(sdxl_dir, faceid_file, cpu, torch.float32, cache_dir=tmp_path).pipe.text_encoder is not None


def test_fp8_swaps_the_per_pixel_linears_for_one_module_type_that_computes_them_to_fp8_rounding(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """runtime.fp8 replaces the transformer blocks' per-pixel linears by one class: a compiled block then compiles once
    for every block (a class per layer hit dynamo's recompile limit on the H200, leaving 62 of 70 blocks eager), and
    each computes its linear to within e4m3 rounding (3 mantissa bits, per-row scales)."""
    from diffusers import UNet2DConditionModel

    from rp_plugins.diffusion.fp8 import FP8_ROWWISE_LAYERS, RowwiseFp8Linear
    from rp_plugins.diffusion.speed import quantize_linear_fp8_rowwise

    # where the lever runs (cuBLAS fp8 on a GPU of compute capability 8.9 or more), else the CPU, whose row-scaled
    # fp8 matmul only newer torch builds have (2.11's CPU backend takes per-tensor scales alone)
    fp8_gpu = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)
    device = torch.device("cuda" if fp8_gpu else "cpu")
    if not fp8_gpu and not _cpu_has_rowwise_fp8():
        pytest.skip(f"torch {torch.__version__}'s CPU backend has no row-scaled fp8 matmul, and no fp8 GPU is here")
    unet = UNet2DConditionModel.from_pretrained(tiny_models[0] / "unet").to(device)
    linears = {name: module for name, module in unet.named_modules() if isinstance(module, torch.nn.Linear)}
    assert quantize_linear_fp8_rowwise(unet, fast_accumulation=True) > 0
    swapped = {name: m for name, m in unet.named_modules() if type(m).__name__ == RowwiseFp8Linear.__name__}
    assert {type(m) for m in swapped.values()} == {RowwiseFp8Linear}
    assert all(name.endswith(FP8_ROWWISE_LAYERS) and "transformer_blocks" in name for name in swapped)
    assert all(name in swapped for name in linears if name.endswith(FP8_ROWWISE_LAYERS))
    assert not any(name.endswith(("attn2.to_k", "attn2.to_v")) for name in swapped)  # 77 text tokens: stay 16-bit
    generator = torch.Generator().manual_seed(0)
    for name, module in swapped.items():
        x = torch.randn(2, 9, module.in_features, generator=generator).to(device)
        exact = linears[name](x).detach()
        assert (module(x) - exact).abs().max() <= 0.1 * exact.abs().max()


def _cpu_has_rowwise_fp8() -> bool:
    probe = torch.zeros(16, 16).to(torch.float8_e4m3fn)
    try:
        torch._scaled_mm(
            probe, probe.t(), scale_a=torch.ones(16, 1), scale_b=torch.ones(1, 16), out_dtype=torch.float32
        )
    except RuntimeError:
        return False
    return True


def test_compiled_kernels_are_kept_beside_the_models_unless_the_user_chose_a_place(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Importing diffusers writes torch's /tmp default into TORCHINDUCTOR_CACHE_DIR: that default is replaced,
    a folder the user set is kept, and inductor's own lookup then answers the folder chosen."""
    import diffusers  # noqa: F401  (sets the variable to torch's default, as in a real run)
    from torch._inductor.runtime.cache_dir_utils import cache_dir, default_cache_dir

    from rp_plugins.diffusion.speed import persist_compile_cache

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    assert persist_compile_cache(tmp_path / "models" / "cache" / "torch-compile")
    assert cache_dir() == str(tmp_path / "models" / "cache" / "torch-compile")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert not persist_compile_cache(tmp_path / "elsewhere")
    assert cache_dir() == str(tmp_path / "mine") and not (tmp_path / "elsewhere").exists()
