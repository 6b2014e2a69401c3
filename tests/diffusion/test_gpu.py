"""GPU-only checks (skipped on machines without CUDA): device placement and fp16 numerics of the method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rp_core.interfaces import RuntimeContext
from rp_core.models import ModelPool
from rp_core.types import AlignedFace, Face, GenerationRequest, IdentityEmbedding

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(tiny_models, device: str, dtype: str):  # type: ignore[no-untyped-def]
    from rp_plugins.diffusion.components import IpAdapterFaceIdGenerator, LeditsSdxlInverter

    sdxl_dir, faceid_file = tiny_models
    context = RuntimeContext(device=device, dtype=dtype, pool=ModelPool())
    common = {"sd_model": str(sdxl_dir), "ip_adapter": str(faceid_file)}
    inverter = LeditsSdxlInverter(LeditsSdxlInverter.Options(**common, num_inversion_steps=20), context)
    generator = IpAdapterFaceIdGenerator(IpAdapterFaceIdGenerator.Options(**common), context)
    rng = np.random.default_rng(0)
    faces = [
        AlignedFace(
            Face((0, 0, 1, 1), 1.0, np.zeros((5, 2))), rng.integers(0, 256, (64, 64, 3), np.uint8), np.eye(2, 3)
        )
        for _ in range(2)
    ]
    identities = [IdentityEmbedding(v / np.linalg.norm(v), "buffalo_l") for v in rng.standard_normal((2, 512))]
    inversions = inverter.invert(faces, [0, 0])
    requests = [GenerationRequest(f, i, inv) for f, i, inv in zip(faces, identities, inversions, strict=True)]
    return generator.generate_latents(requests), inverter.bundle


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_the_named_gpu_is_used_and_no_other(tiny_models) -> None:  # type: ignore[no-untyped-def]
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated(0)
    latents, bundle = _run(tiny_models, "cuda:1", "float16")
    assert latents.device == torch.device("cuda", 1)
    assert all(p.device == torch.device("cuda", 1) for p in bundle.pipe.unet.parameters())
    assert torch.cuda.memory_allocated(0) == before


def test_fp16_noise_prediction_on_the_gpu_matches_fp32_on_the_cpu(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """One guided UNet call: fp16 on the GPU is fp32 on the CPU up to half-precision rounding.

    (Whole 20-step trajectories of the random tiny model at guidance -10 are chaotic: rounding
    differences grow to O(1), so they are compared through the exact-replay property below instead.)
    """
    from rp_plugins.diffusion.options import InverterOptions
    from rp_plugins.diffusion.sdxl import load_bundle

    sdxl_dir, faceid_file = tiny_models
    options = InverterOptions(sd_model=str(sdxl_dir), ip_adapter=str(faceid_file))
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=generator)
    identity = torch.randn(2, 1, 512, generator=generator)
    outputs = []
    for device, dtype in (("cuda", "float16"), ("cpu", "float32")):
        bundle = load_bundle(options, RuntimeContext(device=device, dtype=dtype, pool=ModelPool()))
        dev = bundle.device
        text = bundle.prompt_conditioning(None)
        eps = bundle.guided_noise(
            x.to(dev), torch.tensor(299, device=dev), text, torch.zeros_like(identity).to(dev), identity.to(dev), -10.0
        )
        outputs.append(eps.float().cpu())
    relative = ((outputs[0] - outputs[1]).norm() / outputs[1].norm()).item()
    print(f"guided noise, fp16 GPU vs fp32 CPU: relative difference {relative:.2e}")
    assert torch.isfinite(outputs[0]).all() and relative < 1e-2


def test_fp16_inversion_replays_exactly_on_the_gpu(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """With generation conditioned like inversion (id_emb_scale=0), fp16 on the GPU regenerates x0."""
    from rp_plugins.diffusion.components import IpAdapterFaceIdGenerator, LeditsSdxlInverter

    sdxl_dir, faceid_file = tiny_models
    context = RuntimeContext(device="cuda", dtype="float16", pool=ModelPool())
    common = {"sd_model": str(sdxl_dir), "ip_adapter": str(faceid_file)}
    inverter = LeditsSdxlInverter(LeditsSdxlInverter.Options(**common, num_inversion_steps=100), context)
    generator = IpAdapterFaceIdGenerator(IpAdapterFaceIdGenerator.Options(**common, id_emb_scale=0.0), context)
    rng = np.random.default_rng(0)
    faces = [
        AlignedFace(
            Face((0, 0, 1, 1), 1.0, np.zeros((5, 2))), rng.integers(0, 256, (64, 64, 3), np.uint8), np.eye(2, 3)
        )
        for _ in range(2)
    ]
    inversions = inverter.invert(faces, [0, 0])
    identity = IdentityEmbedding(np.ones(512, np.float32), "buffalo_l")
    latents = generator.generate_latents(
        [GenerationRequest(f, identity, inv) for f, inv in zip(faces, inversions, strict=True)]
    )
    x0 = torch.stack([inv.state.latents for inv in inversions])
    error = (latents - x0).abs().max().item()
    print(f"fp16 GPU replay error {error:.2e} (latents up to {x0.abs().max().item():.2f})")
    assert torch.isfinite(latents).all() and error < 1e-3


def test_cuda_graph_replay_predicts_what_the_eager_unet_does(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """runtime.cuda_graphs (default on): replayed graphs give the eager call's noise, for several shapes and
    after the IP-Adapter scale changes (a Python value baked into each capture)."""
    from rp_plugins.diffusion.options import InverterOptions
    from rp_plugins.diffusion.sdxl import load_bundle

    sdxl_dir, faceid_file = tiny_models
    bundles = {
        graphs: load_bundle(
            InverterOptions(sd_model=str(sdxl_dir), ip_adapter=str(faceid_file)),
            RuntimeContext(device="cuda", dtype="float16", pool=ModelPool(), cuda_graphs=graphs),
        )
        for graphs in (False, True)
    }
    assert bundles[True].cuda_graphs and not bundles[False].cuda_graphs
    generator = torch.Generator().manual_seed(0)
    for batch, scale in ((3, 1.0), (1, 1.0), (3, 0.3), (3, 1.0)):
        x = torch.randn(batch, 4, 16, 16, generator=generator).cuda()
        identity = torch.randn(batch, 1, 512, generator=generator).cuda()
        outputs = []
        for bundle in bundles.values():
            bundle.set_ip_adapter_scale(scale)
            text = bundle.prompt_conditioning(None)
            t = torch.tensor(299, device="cuda")
            outputs.append(bundle.guided_noise(x, t, text, torch.zeros_like(identity), identity, -10.0))
        assert torch.equal(outputs[0], outputs[1]), (batch, scale)


def test_a_unet_that_cannot_be_captured_runs_without_graphs(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """A capture failure (here: a host sync inside the UNet) warns once and falls back to plain calls."""
    from rp_plugins.diffusion.options import InverterOptions
    from rp_plugins.diffusion.sdxl import load_bundle

    sdxl_dir, faceid_file = tiny_models
    bundle = load_bundle(
        InverterOptions(sd_model=str(sdxl_dir), ip_adapter=str(faceid_file)),
        RuntimeContext(device="cuda", dtype="float16", pool=ModelPool()),
    )
    unet = bundle.pipe.unet

    class SyncingUnet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = unet
            self.config = unet.config

        def forward(self, sample, *args, **kwargs):  # type: ignore[no-untyped-def]
            float(sample.sum())  # a host sync: not allowed while capturing
            return self.inner(sample, *args, **kwargs)

    bundle.pipe.unet = SyncingUnet()
    x = torch.randn(2, 4, 16, 16, device="cuda")
    identity = torch.randn(2, 1, 512, device="cuda")
    text = bundle.prompt_conditioning(None)
    t = torch.tensor(299, device="cuda")
    with pytest.warns(RuntimeWarning, match="without CUDA graphs"):
        first = bundle.guided_noise(x, t, text, torch.zeros_like(identity), identity, -10.0)
    assert not bundle.cuda_graphs
    bundle.pipe.unet = unet
    assert torch.equal(first, bundle.guided_noise(x, t, text, torch.zeros_like(identity), identity, -10.0))


def test_compiled_blocks_under_cuda_graphs_predict_the_eager_noise(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """The default on CUDA: full batches replay graphs of regionally compiled blocks (fp16 rounding apart from
    eager), smaller batches replay graphs of the eager blocks (bit-identical); no fallback warning."""
    import warnings

    from rp_plugins.diffusion.options import InverterOptions
    from rp_plugins.diffusion.sdxl import load_bundle

    sdxl_dir, faceid_file = tiny_models
    bundles = [
        load_bundle(
            InverterOptions(sd_model=str(sdxl_dir), ip_adapter=str(faceid_file)),
            RuntimeContext(device="cuda", dtype="float16", pool=ModelPool(), batch_size=3, compile_blocks=compiled),
        )
        for compiled in (False, True)
    ]
    assert bundles[1].compile_blocks_from == 3 and bundles[0].compile_blocks_from is None
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 3, 1):
        x = torch.randn(batch, 4, 16, 16, generator=generator).cuda()
        identity = torch.randn(batch, 1, 512, generator=generator).cuda()
        t = torch.tensor(299, device="cuda")
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            eager, compiled = (
                b.guided_noise(x, t, b.prompt_conditioning(None), torch.zeros_like(identity), identity, -10.0)
                for b in bundles
            )
        if batch == 1:
            assert torch.equal(eager, compiled)
        else:
            assert bundles[1].compiled_blocks > 0 and bundles[1].cuda_graphs
            assert (eager - compiled).abs().max().item() < 2e-2 * eager.abs().max().item()
