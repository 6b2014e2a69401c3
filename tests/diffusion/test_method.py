"""The paper's method on a tiny random SDXL, loaded through the same code as the real weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from rp_core.config import resolve_config
from rp_core.orchestrator import Anonymizer
from rp_core.plugins import PluginHost
from rp_core.types import GenerationRequest, IdentityEmbedding
from rp_plugins.diffusion.components import LeditsSdxlInverter


def build(host: PluginHost, **params: Any) -> Anonymizer:
    """The method alone: the random tiny ArcFace cannot tell faces apart, so leak checks stay off here."""
    return Anonymizer(resolve_config(host, flags=params, overrides=["verify.enabled=false"]), PluginHost())


@pytest.fixture(scope="module")
def plugin_host() -> PluginHost:
    return PluginHost()


def faces_of(anonymizer: Anonymizer, image: np.ndarray):  # type: ignore[no-untyped-def]
    from rp_core.align import align_faces

    anonymizer.load()
    return align_faces(image, anonymizer.detector.detect(image), anonymizer.config.align.face_image_size)


def test_reference_timesteps() -> None:
    from rp_plugins.diffusion.ledits import reference_timesteps

    steps = reference_timesteps(0.7, 100)
    assert steps[0] == 299 and steps[-1] == 1 and len(steps) == 100
    assert all(a >= b for a, b in zip(steps, steps[1:], strict=False))


def test_step_noise_is_per_face_and_in_reference_order() -> None:
    from rp_plugins.diffusion.ledits import draw_step_noise

    batch = draw_step_noise([torch.Generator().manual_seed(s) for s in (0, 7)], (4, 8, 8), 5, torch.float32)
    alone = draw_step_noise([torch.Generator().manual_seed(7)], (4, 8, 8), 5, torch.float32)
    assert torch.equal(batch[:, 1], alone[:, 0])
    reference = torch.Generator().manual_seed(0)  # the reference draws one (1, C, h, w) tensor per step
    first_steps = [torch.randn((1, 4, 8, 8), generator=reference) for _ in range(5)]
    assert torch.equal(batch[:, 0], torch.cat(first_steps))


def test_inversion_is_exact_when_generation_repeats_its_conditioning(plugin_host, diffusion_params, t1) -> None:  # type: ignore[no-untyped-def]
    anonymizer = build(plugin_host, **diffusion_params, id_emb_scale=0.0)
    faces = faces_of(anonymizer, t1)[:3]
    identities = anonymizer.encoder.encode(t1, [f.face for f in faces])
    inversions = anonymizer.inverter.invert(faces, [0] * len(faces))
    requests = [GenerationRequest(f, i, inv) for f, i, inv in zip(faces, identities, inversions, strict=True)]
    latents = anonymizer.generator.generate_latents(requests)  # type: ignore[attr-defined]
    x0 = torch.stack([inv.state.latents for inv in inversions])
    assert (latents - x0).abs().max().item() < 1e-4
    assert x0.abs().max().item() > 1e-2  # a real latent, not an empty one


def test_exact_inversion_makes_the_output_independent_of_the_seed(plugin_host, diffusion_params, astronaut) -> None:  # type: ignore[no-untyped-def]
    first = build(plugin_host, **diffusion_params, id_emb_scale=0.0, seed=0).anonymize(astronaut)
    second = build(plugin_host, **diffusion_params, id_emb_scale=0.0, seed=123).anonymize(astronaut)
    assert first.face_count == 1
    assert np.abs(first.image.astype(int) - second.image.astype(int)).max() <= 1


def test_identity_and_seed_change_the_output(plugin_host, diffusion_params, astronaut) -> None:  # type: ignore[no-untyped-def]
    anonymizer = build(plugin_host, **diffusion_params)
    faces = faces_of(anonymizer, astronaut)
    identity = anonymizer.encoder.encode(astronaut, [faces[0].face])[0]
    other = IdentityEmbedding(-identity.vector, identity.model)
    generator = anonymizer.generator

    def regenerate(embedding: IdentityEmbedding, seed: int) -> torch.Tensor:
        inversion = anonymizer.inverter.invert(faces, [seed])[0]
        return generator.generate_latents([GenerationRequest(faces[0], embedding, inversion)])  # type: ignore[attr-defined]

    base = regenerate(identity, 0)
    assert (base - regenerate(identity, 0)).abs().max().item() == 0  # reproducible
    assert (base - regenerate(other, 0)).abs().max().item() > 1e-3
    assert (base - regenerate(identity, 1)).abs().max().item() > 1e-3


def test_batches_keep_faces_apart(plugin_host, diffusion_params, t1) -> None:  # type: ignore[no-untyped-def]
    """A face's result does not depend on which faces share its batch: no identity, noise or latent leaks across.

    The face runs at the same row of two batches of three with different companions (other crops, identities
    and seeds). Both runs compute with the same shapes, so its latents must be bit-identical: any leak shows,
    however small. (Comparing one batch with one-face batches instead sees BLAS's batch-size-dependent rounding,
    which the chaotic tiny model grows past any useful tolerance unless it runs 100 steps: 20x the cost.
    That a batch's images match one-face batches up to rounding is test_batch_size_changes_the_image_only_by_rounding.)
    """
    anonymizer = build(plugin_host, **diffusion_params)
    faces = faces_of(anonymizer, t1)
    assert len(faces) == 6
    rng = np.random.default_rng(0)
    identities = [IdentityEmbedding(v / np.linalg.norm(v), "buffalo_l") for v in rng.standard_normal((6, 512))]
    generator = anonymizer.generator

    def run(batch: list[int]) -> torch.Tensor:
        inversions = anonymizer.inverter.invert([faces[i] for i in batch], batch)  # seed = face number
        requests = [GenerationRequest(faces[i], identities[i], inv) for i, inv in zip(batch, inversions, strict=True)]
        return generator.generate_latents(requests)  # type: ignore[attr-defined]

    first, second = run([0, 1, 2]), run([0, 3, 4])
    assert torch.equal(first[0], second[0])
    assert (first[0] - first[1]).abs().max().item() > 1e-3 and (second[0] - second[1]).abs().max().item() > 1e-3


def test_batch_size_changes_the_image_only_by_rounding(plugin_host, diffusion_params, t1) -> None:  # type: ignore[no-untyped-def]
    """Batching faces changes a face's result by floating-point rounding only, and the image by a bounded amount.

    A face's latents are the same function of its own inputs in a batch of one and of six, but the BLAS kernels
    a CPU picks depend on the batch and round differently (measured: AMD EPYC 1 grey level apart, Intel Xeon 2).
    The real bound, stage by stage:
    - latents: float32 rounding carried through the steps: within 1e-3 of their scale (1.5e-4 measured);
    - decoded crops: one rounding to uint8 on a sub-level float difference: at most 1 level;
    - the image: the crop is Lanczos-warped as uint8 and rounded again (Lanczos4's negative lobes sum to about
      1.6 in 2D, so a 1-level crop difference becomes at most 2), then alpha-blended and rounded (+1): 3 levels.
    """
    anonymizer = build(plugin_host, **diffusion_params, batch_size=1)
    faces = faces_of(anonymizer, t1)
    assert len(faces) == 6
    rng = np.random.default_rng(0)
    identities = [IdentityEmbedding(v / np.linalg.norm(v), "buffalo_l") for v in rng.standard_normal((6, 512))]
    generator: Any = anonymizer.generator

    def latents(batch: list[int]) -> torch.Tensor:
        inversions = anonymizer.inverter.invert([faces[i] for i in batch], batch)  # seed = face number
        requests = [GenerationRequest(faces[i], identities[i], inv) for i, inv in zip(batch, inversions, strict=True)]
        return generator.generate_latents(requests)

    one_by_one = torch.cat([latents([i]) for i in range(6)])
    batched = latents(list(range(6)))
    assert (one_by_one - batched).abs().max().item() <= 1e-3 * one_by_one.abs().max().item()
    crops_one = np.stack(generator.bundle.decode_latents(one_by_one)).astype(int)
    crops_six = np.stack(generator.bundle.decode_latents(batched)).astype(int)
    assert np.abs(crops_one - crops_six).max() <= 1
    assert (crops_one != crops_six).mean() < 0.25  # rounding ties (0.5 % measured), not a different picture

    single = anonymizer.anonymize(t1)
    six = build(plugin_host, **diffusion_params, batch_size=6).anonymize(t1)
    assert single.face_count == six.face_count == 6
    difference = np.abs(single.image.astype(int) - six.image.astype(int))
    assert difference.max() <= 3
    # the whole default pipeline changed every face and nothing outside the faces' crops
    from rp_core.align import crop_footprint

    touched = np.any([crop_footprint(f.matrix, f.size, t1.shape) for f in faces], axis=0)
    assert np.count_nonzero(difference.max(axis=2)) < 0.25 * np.count_nonzero(touched)
    assert np.array_equal(single.image[~touched], t1[~touched])
    for face in faces:
        x0, y0, x1, y1 = (int(v) for v in face.face.box)
        assert np.abs(single.image[y0:y1, x0:x1].astype(int) - t1[y0:y1, x0:x1].astype(int)).mean() > 5


def test_inverter_and_generator_share_one_pipeline(plugin_host, diffusion_params) -> None:  # type: ignore[no-untyped-def]
    anonymizer = build(plugin_host, **diffusion_params)
    anonymizer.load()
    assert isinstance(anonymizer.inverter, LeditsSdxlInverter)
    assert anonymizer.inverter.bundle is anonymizer.generator.bundle  # type: ignore[attr-defined]
    assert (
        "encode" in type(anonymizer.inverter.bundle.pipe).__dict__
        or anonymizer.inverter.bundle.pipe.image_encoder is None
    )


def test_fused_faceid_lora_computes_what_the_unfused_adapter_does(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """Merging FaceID's LoRA into the UNet at load is a speed-up only: same guided noise."""
    from rp_core.interfaces import RuntimeContext
    from rp_core.models import ModelPool
    from rp_plugins.diffusion.options import InverterOptions
    from rp_plugins.diffusion.sdxl import load_bundle

    sdxl_dir, faceid_file = tiny_models
    context = RuntimeContext(device="cpu", dtype="float32", pool=ModelPool())
    bundles = [
        load_bundle(
            InverterOptions(sd_model=str(sdxl_dir), ip_adapter=str(faceid_file), fuse_faceid_lora=fuse), context
        )
        for fuse in (False, True)
    ]
    assert bundles[0] is not bundles[1]
    lora_layers = [sum("lora" in name for name, _ in b.pipe.unet.named_modules()) for b in bundles]
    assert lora_layers[0] > 0 and lora_layers[1] == 0
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 16, 16, generator=generator)
    identity = torch.randn(3, 1, 512, generator=generator)
    noise = [
        b.guided_noise(x, torch.tensor(299), b.prompt_conditioning(None), torch.zeros_like(identity), identity, -10.0)
        for b in bundles
    ]
    assert (noise[0] - noise[1]).abs().max().item() < 1e-4 * noise[0].abs().max().item()
    assert noise[0].abs().max().item() > 0


def test_auto_batch_size_runs_one_face_at_a_time_on_a_cpu(plugin_host, diffusion_params) -> None:  # type: ignore[no-untyped-def]
    anonymizer = build(plugin_host, **diffusion_params, batch_size="auto")
    anonymizer.load()
    assert anonymizer.batch_size == 1


def _bundle_noise(bundle, batch: int = 3):  # type: ignore[no-untyped-def]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 4, 16, 16, generator=generator)
    identity = torch.randn(batch, 1, 512, generator=generator)
    text = bundle.prompt_conditioning(None)
    return bundle.guided_noise(x, torch.tensor(299), text, torch.zeros_like(identity), identity, -10.0)


def test_several_timesteps_per_call_invert_like_one_per_call(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """The speed path (all steps' noise predicted in few UNet calls) gives the sequential path's noise maps."""
    from rp_core.interfaces import RuntimeContext
    from rp_plugins.diffusion.ledits import draw_step_noise, invert, reference_timesteps
    from rp_plugins.diffusion.options import InverterOptions
    from rp_plugins.diffusion.sdxl import load_bundle

    sdxl_dir, faceid_file = tiny_models
    bundle = load_bundle(
        InverterOptions(sd_model=str(sdxl_dir), ip_adapter=str(faceid_file)), RuntimeContext(device="cpu")
    )
    timesteps = reference_timesteps(0.7, 12)
    x0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    noise = draw_step_noise([torch.Generator().manual_seed(0)] * 2, x0.shape[1:], len(timesteps), torch.float32)
    zeros = torch.zeros(2, 1, 512)
    text = bundle.prompt_conditioning(None)

    def noise_fn(x, t):  # type: ignore[no-untyped-def]
        rows = x.shape[0]
        return bundle.guided_noise(x, t, text, zeros[:1].expand(rows, -1, -1), zeros[:1].expand(rows, -1, -1), -10.0)

    one = invert(x0, bundle.new_scheduler(timesteps), noise_fn, noise, timesteps_per_call=1)
    five = invert(x0, bundle.new_scheduler(timesteps), noise_fn, noise, timesteps_per_call=5)
    assert torch.equal(one.start, five.start)
    scale = one.noise_maps.abs().max().item()
    assert (one.noise_maps - five.noise_maps).abs().max().item() < 1e-4 * scale


def test_compiled_unet_predicts_what_the_eager_one_does(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """runtime.compile: torch.compile'd UNet, partial batches padded to the compiled size, same noise prediction.

    The compiled module runs on torch.compile's `eager` backend (dynamo's graph capture, no code generation):
    inductor's C++ code for a CPU doubled this test's time and is not what runs on a GPU (measured there,
    benchmarks/RESULTS.md).
    """
    from rp_core.interfaces import RuntimeContext
    from rp_core.models import ModelPool
    from rp_plugins.diffusion.options import InverterOptions
    from rp_plugins.diffusion.sdxl import load_bundle

    sdxl_dir, faceid_file = tiny_models
    options = InverterOptions(sd_model=str(sdxl_dir), ip_adapter=str(faceid_file))
    eager = load_bundle(options, RuntimeContext(device="cpu", pool=ModelPool()))
    compiled = load_bundle(options, RuntimeContext(device="cpu", pool=ModelPool(), compile=True, batch_size=4))
    assert compiled.fixed_batch == 4 and isinstance(compiled.pipe.unet, torch._dynamo.eval_frame.OptimizedModule)
    compiled.pipe.unet = torch.compile(compiled.pipe.unet._orig_mod, dynamic=False, backend="eager")
    expected, got = _bundle_noise(eager), _bundle_noise(compiled)  # 3 faces, padded to 4
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4 * expected.abs().max().item()


def test_cuda_graphs_are_off_the_gpu_and_fp8_is_refused_there(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """runtime.cuda_graphs (default on) is ignored on a CPU; runtime.fp8 fails before loading, saying what it needs."""
    from rp_core.config import RunConfig
    from rp_core.errors import DeviceError
    from rp_core.interfaces import RuntimeContext
    from rp_core.models import ModelPool
    from rp_plugins.diffusion.options import InverterOptions
    from rp_plugins.diffusion.sdxl import load_bundle

    sdxl_dir, faceid_file = tiny_models
    options = InverterOptions(sd_model=str(sdxl_dir), ip_adapter=str(faceid_file))
    defaults = RunConfig().runtime_context()
    assert defaults.cuda_graphs and not defaults.fp8
    assert not load_bundle(options, RuntimeContext(device="cpu", pool=ModelPool())).cuda_graphs
    with pytest.raises(DeviceError, match="fp8 matrix units"):
        load_bundle(options, RuntimeContext(device="cpu", pool=ModelPool(), fp8=True))


def test_a_face_s_own_prompt_steers_only_that_face(plugin_host, diffusion_params, t1) -> None:  # type: ignore[no-untyped-def]
    """Per-face prompts (faces JSON): the batch is split by prompt; faces without one match a run without prompts."""
    from rp_core.types import GenerationRequest

    anonymizer = build(plugin_host, **diffusion_params)
    faces = faces_of(anonymizer, t1)[:3]
    identities = anonymizer.encoder.encode(t1, [f.face for f in faces])
    inversions = anonymizer.inverter.invert(faces, [0] * 3)

    def crops(prompts: list[str | None]) -> list[np.ndarray]:
        requests = [
            GenerationRequest(face=f, identity=e, inversion=v, seed=0, prompt=p)
            for f, e, v, p in zip(faces, identities, inversions, prompts, strict=True)
        ]
        return anonymizer.generator.generate(requests)

    plain = crops([None, None, None])
    steered = crops([None, "an old man", None])
    for k in (0, 2):  # the same faces, in a batch of 2 instead of 3: equal up to batch-size rounding
        assert np.abs(plain[k].astype(int) - steered[k].astype(int)).max() <= 1
    assert np.abs(plain[1].astype(int) - steered[1].astype(int)).max() > 1
