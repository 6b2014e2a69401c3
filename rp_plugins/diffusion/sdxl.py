"""The loaded SDXL + IP-Adapter-FaceID bundle (once per process) and the UNet/VAE/text calls both loops use.

The inverter and the generator ask the shared model pool for the same key
(model, adapter, dtype, device, speed levers), so one pipeline serves both. Files are
located first (model_files.py) so a missing model fails fast with a clear message.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rp_core.devices import resolve_torch_device
from rp_core.errors import DeviceError, MissingModelsError
from rp_core.interfaces import RuntimeContext
from rp_core.models import default_cache_dir
from rp_plugins.diffusion import fused_cache, prompt_cache
from rp_plugins.diffusion.distributions import scan_distributions_once
from rp_plugins.diffusion.model_files import SDXL_SCHEDULER_CONFIG, is_full_size, sdxl_model_files
from rp_plugins.diffusion.options import SdxlOptions
from rp_plugins.diffusion.speed import (
    CudaGraphUnet,
    GraphCaptureError,
    call_unet,
    compile_transformer_blocks,
    compiled_regions,
    pad_faces,
    persist_compile_cache,
    quantize_linear_fp8_rowwise,
    unpad_noise,
)

CPU_FULL_SIZE_NOTE = (
    "Full-size SDXL on a CPU takes roughly an hour per face at the default 100 steps "
    "(200 UNet evaluations of ~14 TFLOP each)."
)


def cpu_refusal() -> str:
    """The refusal of a full-size SDXL on the CPU, with the way out this machine actually has."""
    import torch

    if torch.cuda.is_available():
        way = "this machine has a CUDA GPU: use --device cuda (or auto)"
    else:
        way = "this machine has no CUDA GPU: --preset offline anonymizes on any CPU (dlib + pixelation)"
    return f"{CPU_FULL_SIZE_NOTE} {way}; or pass --set runtime.allow_slow_cpu=true to run anyway."


#: Compiled transformer blocks serve only calls of the run's full batch (`runtime.batch_size`, at least
#: 2 faces; from 4 faces with `auto`); smaller calls run the blocks' eager code. Each batch shape costs
#: ~10 s of compiling on an H200, while a lone face would save only ~1 s over its 200 calls
#: (benchmarks/RESULTS.md): only the shape that recurs all run long pays that back, and a photo with
#: one face waits for no compile.
COMPILED_MIN_FACES = 4


def resolve_dtype(dtype: str, device: Any) -> Any:
    import torch

    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[dtype]


def check_fp8_support(device: Any) -> None:
    """Fail before loading anything when fp8 was asked for but cannot run here."""
    import torch

    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
        raise DeviceError(
            f"runtime.fp8=true needs a GPU with fp8 matrix units (compute capability 8.9+, e.g. H100/H200/L40S); {name} has none"
        )


@dataclass
class SdxlBundle:
    """One loaded SDXL + FaceID pipeline and the calls the inversion and sampling loops make."""

    pipe: Any
    device: Any
    dtype: Any
    scheduler_config: dict[str, Any]
    #: With a compiled UNet every call is padded to this many faces, so one compiled graph serves the run.
    fixed_batch: int | None = None
    #: Replay one captured CUDA graph per input shape instead of launching the UNet's kernels each call.
    cuda_graphs: bool = False
    #: Regional compilation: calls of at least this many faces run compiled transformer blocks; None = off.
    compile_blocks_from: int | None = None
    #: torch.compile backend of the blocks (tests use a cheap one).
    compile_backend: str = "inductor"
    #: Transformer blocks compiled so far: they are compiled at the first call that needs them.
    compiled_blocks: int = 0
    #: Where merged weights and torch's compiled kernels persist between processes; None: nowhere.
    cache_dir: Path | None = None
    #: (SDXL folder, weight variant, where the empty prompt's embeddings are kept or None): the text encoders
    #: are loaded from there when a prompt is asked for that no loaded encoder or kept file can serve.
    text_source: tuple[Path, str | None, Path | None] | None = None
    _graphed: CudaGraphUnet | None = None
    _ip_adapter_scale: float | None = None
    _size_conditioning: dict[int, Any] = field(default_factory=dict)
    _prompts: dict[str | None, tuple[Any, Any, Any, Any]] = field(default_factory=dict)

    def set_ip_adapter_scale(self, scale: float) -> None:
        """FaceID's strength for the next UNet calls (inverter and generator may differ)."""
        self.pipe.set_ip_adapter_scale(scale)
        self._ip_adapter_scale = scale

    def compile_unet(self, batch: int | None) -> None:
        """torch.compile the UNet (fixed shapes); the first call at each shape compiles, later calls are faster."""
        import torch

        self.pipe.unet = torch.compile(self.pipe.unet, dynamic=False)
        self.fixed_batch = batch

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    def new_scheduler(self, timesteps: Sequence[int]) -> Any:
        """A fresh SDE-DPM-Solver++ (2nd order) with the reference's custom timesteps and a clean multistep state."""
        from diffusers import DPMSolverMultistepScheduler

        scheduler = DPMSolverMultistepScheduler.from_config(
            self.scheduler_config,
            algorithm_type="sde-dpmsolver++",
            solver_order=2,
            final_sigmas_type="sigma_min",
            use_karras_sigmas=False,
            use_lu_lambdas=False,
            use_exponential_sigmas=False,
            use_beta_sigmas=False,
        )
        scheduler.set_timesteps(timesteps=[int(t) for t in timesteps], device=self.device)
        return scheduler

    def prompt_conditioning(self, attribute_prompt: str | None) -> tuple[Any, Any, Any, Any]:
        """(cond_embeds, cond_pooled, uncond_embeds, uncond_pooled): cond is "", uncond the attribute prompt or zeros.

        Encoded once per distinct prompt and kept.
        """
        import torch

        if attribute_prompt not in self._prompts:
            if self.pipe.text_encoder is None:
                self._load_text_encoders()
            with torch.no_grad():
                cond, uncond, cond_pooled, uncond_pooled = self.pipe.encode_prompt(
                    prompt="",
                    device=self.device,
                    num_images_per_prompt=1,
                    do_classifier_free_guidance=True,
                    negative_prompt=attribute_prompt or None,
                )
            self._prompts[attribute_prompt] = (cond, cond_pooled, uncond, uncond_pooled)
            kept_at = self.text_source[2] if self.text_source else None
            if attribute_prompt is None and kept_at is not None and not kept_at.is_file():
                prompt_cache.save(kept_at, self._prompts[None])
        return self._prompts[attribute_prompt]

    def _load_text_encoders(self) -> None:
        """The text encoders and tokenizers a load skipped (the empty prompt was kept on disk), as it loads them."""
        from diffusers import StableDiffusionXLPipeline

        if self.text_source is None:
            raise RuntimeError("this SDXL bundle was loaded without text encoders and without their source")
        sdxl_dir, variant, _ = self.text_source
        text = StableDiffusionXLPipeline.from_pretrained(
            sdxl_dir, torch_dtype=self.dtype, variant=variant, add_watermarker=False, unet=None, vae=None
        )
        for name in prompt_cache.TEXT_COMPONENTS:
            component = getattr(text, name)
            setattr(self.pipe, name, component.to(self.device) if hasattr(component, "to") else component)

    def encode_images(self, crops: Sequence[np.ndarray]) -> Any:
        """uint8 crops -> scaled latents (VAE in fp32: SDXL's VAE overflows in fp16)."""
        import torch

        pixels = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        vae = self.pipe.vae
        with torch.no_grad():
            latents = vae.encode(pixels.to(self.device, torch.float32)).latent_dist.mode()
        # a standard layout: the UNet's conv kernels round differently per memory layout
        return (latents * vae.config.scaling_factor).contiguous()

    def decode_latents(self, latents: Any) -> list[np.ndarray]:
        import torch

        vae = self.pipe.vae
        with torch.no_grad():
            images = vae.decode(latents.to(torch.float32) / vae.config.scaling_factor).sample
        images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [np.ascontiguousarray(img) for img in images]

    def guided_noise(
        self,
        latents: Any,
        timestep: Any,
        text: tuple[Any, Any, Any, Any],
        identity_uncond: Any,
        identity_cond: Any,
        guidance_scale: float,
    ) -> Any:
        """Classifier-free guided noise prediction for a batch, both branches in one UNet call.

        Each batch entry carries its own FaceID embedding (`image_embeds` row order = batch order),
        so faces of one batch never share an identity.
        """
        import torch

        batch = latents.shape[0]
        latents, identity_uncond, identity_cond, timestep, padded = pad_faces(
            self.fixed_batch, latents, identity_uncond, identity_cond, timestep
        )
        cond, cond_pooled, uncond, uncond_pooled = text
        time_ids = self._time_ids(latents.shape[-1] * self.vae_scale_factor)
        model_input = torch.cat([latents, latents]).to(self.dtype).contiguous()
        hidden = torch.cat([uncond.expand(padded, -1, -1), cond.expand(padded, -1, -1)]).to(self.dtype)
        pooled = torch.cat([uncond_pooled.expand(padded, -1), cond_pooled.expand(padded, -1)]).to(self.dtype)
        faces = torch.cat([identity_uncond, identity_cond]).to(self.device, self.dtype)
        if timestep.ndim == 1:  # one timestep per row (several timesteps in one call): both branches
            timestep = torch.cat([timestep, timestep])
        compiled = self.compile_blocks_from is not None and padded >= self.compile_blocks_from
        if compiled and not self.compiled_blocks:  # here, not at load: runs of small calls never import dynamo
            if self.cache_dir is not None:
                persist_compile_cache(self.cache_dir / "torch-compile")
            self.compiled_blocks = compile_transformer_blocks(self.pipe.unet, self.compile_backend)
        with torch.no_grad(), compiled_regions(compiled or not self.compiled_blocks):
            noise = self._unet(model_input, timestep, hidden, pooled, time_ids.expand(2 * padded, -1), faces).float()
        noise = unpad_noise(noise, batch)
        noise_uncond, noise_cond = noise.chunk(2)
        return noise_uncond + guidance_scale * (noise_cond - noise_uncond)

    def _time_ids(self, size: int) -> Any:
        """SDXL's size conditioning (original = target = size, no crop), made once per size.

        Building it per call would copy from host memory and wait for the GPU every step.
        """
        import torch

        if size not in self._size_conditioning:
            values = [[size, size, 0, 0, size, size]]
            self._size_conditioning[size] = torch.tensor(values, device=self.device, dtype=self.dtype)
        return self._size_conditioning[size]

    def _unet(self, sample: Any, timestep: Any, hidden: Any, pooled: Any, time_ids: Any, faces: Any) -> Any:
        """One UNet evaluation, replayed from a CUDA graph when enabled."""
        if self.cuda_graphs and sample.is_cuda:
            if self._graphed is None or self._graphed.unet is not self.pipe.unet:
                self._graphed = CudaGraphUnet(self.pipe.unet)
            try:
                return self._graphed(sample, timestep, hidden, pooled, time_ids, faces, state=(self._ip_adapter_scale,))
            except GraphCaptureError as exc:  # run on without graphs rather than fail the run
                warnings.warn(f"{exc}; running the UNet without CUDA graphs", RuntimeWarning, stacklevel=2)
                self.cuda_graphs, self._graphed = False, None
        return call_unet(self.pipe.unet, sample, timestep, hidden, pooled, time_ids, faces)


def load_bundle(options: SdxlOptions, context: RuntimeContext) -> SdxlBundle:
    """Load (or reuse from the pool) the pipeline these options and this runtime name."""
    device = resolve_torch_device(context.device)
    dtype = resolve_dtype(context.dtype, device)
    files = sdxl_model_files(options, context)
    if not all(f.present for f in files):
        raise MissingModelsError([f for f in files if not f.present])
    sdxl_dir, faceid_file = files[0].found_at, files[1].found_at
    assert sdxl_dir is not None and faceid_file is not None
    if device.type == "cpu" and not context.allow_slow_cpu and is_full_size(sdxl_dir):
        raise DeviceError(cpu_refusal())
    if context.fp8:
        check_fp8_support(device)
    fuse = options.fuse_faceid_lora
    fixed_batch = context.batch_size if context.compile and isinstance(context.batch_size, int) else None
    key: tuple[Any, ...] = ("sdxl-faceid", str(sdxl_dir.resolve()), str(faceid_file.resolve()), str(dtype), str(device))
    key += (fuse,)
    key += (("compiled", fixed_batch),) if context.compile else ()
    # a whole-UNet compile supersedes the regional one; both need a GPU to pay back their compile time
    regional = context.compile_blocks and device.type == "cuda" and not context.compile
    key += (("cuda_graphs", context.cuda_graphs), ("fp8", context.fp8), ("compiled_blocks", regional))

    # merges and compiled kernels kept between processes, for the GPU runs they speed up (not for CPU tests)
    cache_dir = default_cache_dir(context.models_dir) if device.type == "cuda" else None

    def build() -> SdxlBundle:
        bundle = _load(sdxl_dir, faceid_file, device, dtype, fuse, cache_dir)
        if context.fp8:  # opt-in: changes the numbers ~12x more than fp16 rounding does (RESULTS.md)
            quantize_linear_fp8_rowwise(bundle.pipe.unet, fast_accumulation=True)
        if context.compile:
            bundle.compile_unet(fixed_batch)
        elif regional:
            batch = context.batch_size
            bundle.compile_blocks_from = max(2, batch) if isinstance(batch, int) else COMPILED_MIN_FACES
        bundle.cuda_graphs = context.cuda_graphs and device.type == "cuda"
        return bundle

    return context.pool.get(key, build)


def _load(
    sdxl_dir: Path, faceid_file: Path, device: Any, dtype: Any, fuse_lora: bool = True, cache_dir: Path | None = None
) -> SdxlBundle:
    """SDXL + FaceID with its LoRA merged (unless `fuse_lora` is off), on `device`.

    With a `cache_dir`, the merge is read from there when an earlier process saved it (fused_cache.py), and
    saved there otherwise: the same weights either way, bit for bit.
    """
    with scan_distributions_once(cache_dir):
        import torch
        from diffusers import StableDiffusionXLPipeline
        from diffusers.utils import logging as diffusers_logging

    from rp_core.quiet import libraries_verbose

    if not libraries_verbose():  # no "Loading pipeline components" bars on the user's console (rp -v shows them)
        diffusers_logging.set_verbosity_error()
        diffusers_logging.disable_progress_bar()
    cached_at = fused_cache.cache_file(cache_dir, sdxl_dir, faceid_file, dtype) if fuse_lora and cache_dir else None
    cached = fused_cache.load(cached_at, device) if cached_at else None
    prompts_at = prompt_cache.cache_file(cache_dir, sdxl_dir, dtype) if cache_dir else None
    empty_prompt = prompt_cache.load(prompts_at, device) if prompts_at else None
    # with the merge cached, every weight goes straight to the device; without it the merge runs where it always
    # did (on the host), so a first process merges to the very bits earlier versions did
    placement = direct_placement(device) if cached is not None else {}
    # with the empty prompt's embeddings cached, the text encoders load only if an attribute prompt needs them
    without_text = dict.fromkeys(prompt_cache.TEXT_COMPONENTS) if empty_prompt is not None else {}
    variant = "fp16" if any(sdxl_dir.glob("unet/*.fp16.safetensors")) else None
    pipe = StableDiffusionXLPipeline.from_pretrained(
        sdxl_dir, torch_dtype=dtype, variant=variant, add_watermarker=False, **placement, **without_text
    )
    pipe.set_progress_bar_config(disable=True)
    if cached is not None:
        merged, faceid = cached
        pipe.to(device)
        _attach_faceid(pipe, faceid)
        with torch.no_grad():
            for name, weight in merged.items():
                pipe.unet.get_parameter(name).copy_(weight)
    else:
        state = _read_faceid(faceid_file)
        _attach_faceid(pipe, state)
        if fuse_lora and getattr(pipe.unet, "peft_config", None):
            # FaceID ships a rank-128 LoRA; merged once, each UNet call skips its extra matmuls
            lora_layers = [name for name, module in pipe.unet.named_modules() if hasattr(module, "lora_A")]
            pipe.fuse_lora(adapter_names=list(pipe.unet.peft_config), lora_scale=1.0)
            pipe.unload_lora_weights()
            if cached_at is not None:
                merged = {f"{name}.weight": pipe.unet.get_submodule(name).weight for name in lora_layers}
                fused_cache.save(cached_at, merged, fused_cache.split_faceid(state)[0])
        pipe.to(device)
    pipe.vae.to(torch.float32)
    scheduler_config = dict(pipe.scheduler.config) if pipe.scheduler is not None else dict(SDXL_SCHEDULER_CONFIG)
    bundle = SdxlBundle(pipe=pipe, device=device, dtype=dtype, scheduler_config=scheduler_config, cache_dir=cache_dir)
    bundle.text_source = (sdxl_dir, variant, prompts_at)
    if empty_prompt is not None:
        bundle._prompts[None] = empty_prompt
    return bundle


def direct_placement(device: Any) -> dict[str, str]:
    """from_pretrained's arguments that read the weights straight onto `device` (no copy held in host memory).

    Only for the current CUDA device: diffusers accepts the plain device type as a map, and a one-device map
    places every module there without hooks, so later `.to()` calls stay allowed. Elsewhere: nothing.
    """
    import torch

    if device.type != "cuda" or (device.index is not None and device.index != torch.cuda.current_device()):
        return {}
    return {"device_map": "cuda"}


def _read_faceid(faceid_file: Path) -> dict[str, dict[str, Any]]:
    """FaceID's state dict ({"image_proj": ..., "ip_adapter": ...}) from its .bin or .safetensors file."""
    import torch

    if faceid_file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: dict[str, dict[str, Any]] = {part: {} for part in fused_cache.PARTS}
        for key, tensor in load_file(faceid_file).items():
            part, _, name = key.partition(".")
            if part in state:
                state[part][name] = tensor
        return state
    try:  # mapped, not copied: the tensors are read once, into the model
        return torch.load(faceid_file, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # a file in torch's legacy (non-zip) format cannot be mapped
        return torch.load(faceid_file, map_location="cpu", weights_only=True)


def _attach_faceid(pipe: Any, state: dict[str, dict[str, Any]]) -> None:
    """Load FaceID's image projection and attention processors (and its LoRA, when `state` has it) into the UNet."""
    pipe.load_ip_adapter(state, subfolder=None, weight_name="", image_encoder_folder=None)
