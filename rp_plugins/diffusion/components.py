"""Inverter `ledits_sdxl` and generator `ipadapter_faceid`: the paper's method over diffusers components."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rp_core.interfaces import Generator, Inverter
from rp_core.models import ModelFile
from rp_core.types import AlignedFace, GenerationRequest, Inversion
from rp_plugins.diffusion.model_files import download_sdxl, sdxl_model_files
from rp_plugins.diffusion.options import GeneratorOptions, InverterOptions, SdxlOptions
from rp_plugins.diffusion.sdxl import SdxlBundle, load_bundle

FACEID_DIM = 512
PRODUCER = "ledits_sdxl"


@dataclass(frozen=True)
class LeditsState:
    """One face's inversion: the start latent x_T, its noise maps, the timesteps, and x0 for checks."""

    start: Any  # (C, h, w) float32, on the pipeline's device
    noise_maps: Any  # (steps, C, h, w) float32
    timesteps: tuple[int, ...]
    latents: Any  # x0, the encoded crop


class _SdxlComponent:
    """Shared loading for both halves of the method."""

    requires: ClassVar[tuple[str, ...]] = ("torch", "diffusers", "transformers", "peft", "huggingface_hub")
    install_hint: ClassVar[str] = "pip install 'rp-anonymize[gpu]' (with a CUDA build of torch)"
    options: SdxlOptions
    _bundle: SdxlBundle | None = None

    def check_can_run(self) -> None:
        """Refuse a full-size SDXL on a CPU before ~15 GB are downloaded for it (hours per face)."""
        from rp_core.devices import resolve_torch_device
        from rp_core.errors import DeviceError
        from rp_plugins.diffusion.model_files import is_full_size
        from rp_plugins.diffusion.sdxl import cpu_refusal

        context = self.context  # type: ignore[attr-defined]
        if context.allow_slow_cpu or resolve_torch_device(context.device).type != "cpu":
            return
        sdxl_dir = self.model_files()[0].found_at
        if sdxl_dir is None or is_full_size(sdxl_dir):
            raise DeviceError(cpu_refusal())

    def model_files(self) -> list[ModelFile]:
        return sdxl_model_files(self.options, self.context)  # type: ignore[attr-defined]

    def download(self, target: Path | None = None) -> list[Path]:
        return download_sdxl(self.options, target)

    def load_weights(self) -> None:
        self._bundle = load_bundle(self.options, self.context)  # type: ignore[attr-defined]

    @property
    def bundle(self) -> SdxlBundle:
        self.load()  # type: ignore[attr-defined]
        assert self._bundle is not None
        return self._bundle

    def _identity_tensor(self, vectors: Sequence[np.ndarray | None]) -> Any:
        import torch

        rows = [np.zeros(FACEID_DIM, np.float32) if v is None else np.asarray(v, np.float32) for v in vectors]
        for row in rows:
            if row.shape != (FACEID_DIM,):
                raise ValueError(f"IP-Adapter-FaceID needs {FACEID_DIM}-d ArcFace embeddings, got shape {row.shape}")
        return torch.from_numpy(np.stack(rows)).unsqueeze(1).to(self.bundle.device)


class LeditsSdxlInverter(_SdxlComponent, Inverter):
    """Edit-friendly DDPM inversion of each crop with SDXL, FaceID fed the null identity."""

    name = "ledits_sdxl"
    default_for = ("inverter",)
    Options = InverterOptions
    options: InverterOptions

    def invert(self, faces: Sequence[AlignedFace], seeds: Sequence[int]) -> list[Inversion]:
        import torch

        from rp_plugins.diffusion.ledits import draw_step_noise, invert, reference_timesteps

        bundle = self.bundle
        bundle.set_ip_adapter_scale(self.options.ip_adapter_scale)
        timesteps = reference_timesteps(
            self.options.skip,
            self.options.num_inversion_steps,
            bundle.scheduler_config.get("num_train_timesteps", 1000),
        )
        scheduler = bundle.new_scheduler(timesteps)
        x0 = bundle.encode_images([f.crop for f in faces])
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        step_noise = draw_step_noise(generators, x0.shape[1:], len(timesteps), bundle.dtype)
        text = bundle.prompt_conditioning(None)
        null_identity = self._identity_tensor([None] * len(faces))
        guidance = self.options.guidance_scale

        def noise_fn(x: Any, t: Any) -> Any:
            identity = null_identity.repeat(x.shape[0] // len(faces), 1, 1)  # rows: faces of step i, of step i+1, ...
            return bundle.guided_noise(x, t, text, identity, identity, guidance)

        per_call = bundle.fixed_batch or self.options.faces_per_call
        result = invert(x0, scheduler, noise_fn, step_noise, timesteps_per_call=max(1, per_call // len(faces)))
        return [
            Inversion(
                producer=PRODUCER,
                state=LeditsState(result.start[i], result.noise_maps[:, i], result.timesteps, x0[i]),
            )
            for i in range(len(faces))
        ]


class IpAdapterFaceIdGenerator(_SdxlComponent, Generator):
    """Regenerates each face from its inversion, guided away from its own identity."""

    name = "ipadapter_faceid"
    default_for = ("generator",)
    Options = GeneratorOptions
    options: GeneratorOptions
    needs_identity: ClassVar[bool] = True
    needs_inversion: ClassVar[bool] = True
    synthesizes: ClassVar[bool] = True
    accepts_identity_models: ClassVar[tuple[str, ...]] = ("buffalo_l/w600k_r50",)
    accepts_inverters: ClassVar[tuple[str, ...]] = (PRODUCER,)
    #: The inversion must come from the same SDXL, adapter and LoRA merge as the regeneration.
    options_shared_with_inverter: ClassVar[tuple[str, ...]] = ("sd_model", "ip_adapter", "fuse_faceid_lora")
    #: `stronger()` changes only the generation's guidance_scale; the inversion (run with the inverter's own
    #: guidance, its noise drawn from the face's seed) does not depend on it, so a retry reuses it.
    retry_keeps_inversion: ClassVar[bool] = True

    def stronger(self, attempt: int, factor: float) -> IpAdapterFaceIdGenerator | None:
        """The same generator with guidance_scale x factor**attempt (further from the identity); None past its range."""
        from pydantic import ValidationError

        values = self.options.model_dump()
        values["guidance_scale"] = values["guidance_scale"] * factor**attempt
        try:
            options = GeneratorOptions.model_validate(values)
        except ValidationError:
            return None  # beyond the allowed range: nothing stronger to try
        return IpAdapterFaceIdGenerator(options, self.context)

    def generate_latents(self, requests: Sequence[GenerationRequest]) -> Any:
        """The regenerated latents (B, C, h, w) before decoding; all requests share one attribute prompt."""
        import torch

        from rp_plugins.diffusion.ledits import regenerate

        states = [self._state(r) for r in requests]
        timesteps = states[0].timesteps
        if any(s.timesteps != timesteps for s in states):
            raise ValueError("faces of one batch were inverted with different timesteps")
        bundle = self.bundle
        bundle.set_ip_adapter_scale(self.options.ip_adapter_scale)
        scheduler = bundle.new_scheduler(timesteps)
        start = torch.stack([s.start for s in states])
        noise_maps = torch.stack([s.noise_maps for s in states], dim=1)
        text = bundle.prompt_conditioning(self._prompt(requests[0]))
        identity = self._identity_tensor([r.identity.vector if r.identity else None for r in requests])
        identity = identity * self.options.id_emb_scale
        null_identity = torch.zeros_like(identity)
        guidance = self.options.guidance_scale

        def noise_fn(x: Any, t: Any) -> Any:
            return bundle.guided_noise(x, t, text, null_identity, identity, guidance)

        return regenerate(start, noise_maps, scheduler, noise_fn)

    def preferred_batch_size(self) -> int:
        """Faces per batch that fit the free GPU memory (`--batch-size auto`); 1 on a CPU.

        Measured on an H200 at 1024 px, fp16: 12.5 GiB peak for one face, 39.6 GiB for eight,
        so about 3.9 GiB per extra face once the pipeline is loaded. Capped at 16, where the
        UNet is already compute-bound.
        """
        import torch

        bundle = self.bundle
        if bundle.device.type != "cuda":
            return 1
        free, _ = torch.cuda.mem_get_info(bundle.device)
        return int(max(1, min(16, (0.9 * free) // (3.9 * 2**30))))

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        """New crops; faces asking for different attribute prompts are regenerated in one call per prompt.

        Regeneration draws no new randomness (its noise maps come from the inversion), so splitting a
        batch by prompt changes no face's result.
        """
        if not requests:
            return []
        groups: dict[str | None, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(self._prompt(request), []).append(i)
        crops: list[np.ndarray] = [np.empty(0)] * len(requests)
        for indices in groups.values():
            latents = self.generate_latents([requests[i] for i in indices])
            for i, crop in zip(indices, self.bundle.decode_latents(latents), strict=True):
                crops[i] = crop
        return crops

    def _prompt(self, request: GenerationRequest) -> str | None:
        """The face's own attribute prompt (a faces JSON), else the run's."""
        return request.prompt if request.prompt is not None else self.options.attribute_prompt

    @staticmethod
    def _state(request: GenerationRequest) -> LeditsState:
        inversion = request.inversion
        if inversion is None or inversion.producer != PRODUCER or not isinstance(inversion.state, LeditsState):
            producer = inversion.producer if inversion else None
            raise ValueError(f"ipadapter_faceid needs an inversion from {PRODUCER!r}, got {producer!r}")
        if request.identity is None:
            raise ValueError("ipadapter_faceid needs the face's identity embedding")
        return inversion.state
