"""Options of the diffusion inverter and generator (the reference's parameter table)."""

from __future__ import annotations

from pydantic import Field

from rp_core.interfaces import ComponentOptions, cli_flag

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
FACEID_REPO = "h94/IP-Adapter-FaceID"


class SdxlOptions(ComponentOptions):
    """Settings the inverter and generator share; equal values share one loaded pipeline."""

    sd_model: str = Field(
        SDXL_BASE,
        description="Hugging Face id or local folder of SDXL base 1.0",
        json_schema_extra=cli_flag("sd-model"),
    )
    ip_adapter: str = Field(
        FACEID_REPO,
        description="Hugging Face id, local folder or file of the IP-Adapter-FaceID SDXL weights (ip-adapter-faceid_sdxl.bin)",
        json_schema_extra=cli_flag("ip-adapter"),
    )
    ip_adapter_scale: float = Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="IP-Adapter influence strength",
        json_schema_extra=cli_flag("ip-adapter-scale"),
    )
    guidance_scale: float = Field(
        -10.0,
        ge=-100.0,
        le=100.0,
        description="classifier-free guidance; negative pushes away from the identity",
        json_schema_extra=cli_flag("guidance-scale"),
    )
    fuse_faceid_lora: bool = Field(
        True,
        description="merge FaceID's LoRA into the UNet weights once at load (fewer matmuls per step; equal to the "
        "unfused adapter up to floating-point rounding)",
    )


class InverterOptions(SdxlOptions):
    faces_per_call: int = Field(
        1,
        ge=1,
        le=64,
        description="invert several timesteps per UNet call when fewer faces than this are inverted at once "
        "(8 makes a single face invert ~8x faster on a GPU; results then match the one-step-per-call path "
        "only up to floating-point rounding, not bit for bit); 1 = off. A compiled UNet always fills its batch",
    )
    skip: float = Field(
        0.7,
        ge=0.0,
        lt=1.0,
        description="fraction of the 1000 diffusion timesteps skipped at the noisy end",
        json_schema_extra=cli_flag("skip"),
    )
    num_inversion_steps: int = Field(
        100,
        ge=2,
        le=1000,
        description="number of inversion (and regeneration) steps",
        json_schema_extra=cli_flag("num-inversion-steps"),
    )


class GeneratorOptions(SdxlOptions):
    attribute_prompt: str | None = Field(
        None,
        max_length=1000,
        description='steers the new face, e.g. "an old man"',
        json_schema_extra=cli_flag("attribute-prompt"),
    )
    id_emb_scale: float = Field(
        1.0,
        ge=0.0,
        le=100.0,
        description="scale of the identity embedding pushed away from",
        json_schema_extra=cli_flag("id-emb-scale"),
    )
