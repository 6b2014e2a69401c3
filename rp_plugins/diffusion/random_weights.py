"""Randomly initialised SDXL + IP-Adapter-FaceID model folders of the real layouts.

Compute does not depend on weight values, so these serve tests (tiny size, CPU) and
GPU benchmarks (full size) without downloading anything. The folders they write are
loaded through exactly the code users run on the real weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rp_plugins.diffusion.model_files import FACEID_WEIGHT_NAME, SDXL_SCHEDULER_CONFIG


@dataclass(frozen=True)
class SdxlSize:
    """Architecture numbers of one SDXL size."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    text_encoder_2: dict[str, Any]
    faceid_lora_rank: int
    faceid_tokens: int


TINY = SdxlSize(
    unet=dict(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,
        cross_attention_dim=64,
        norm_num_groups=1,
    ),
    vae=dict(
        block_out_channels=(32, 32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        sample_size=128,
        scaling_factor=0.13025,
        force_upcast=True,
    ),
    text_encoder=dict(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5, projection_dim=32
    ),
    text_encoder_2=dict(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5, projection_dim=32
    ),
    faceid_lora_rank=4,
    faceid_tokens=4,
)

FULL = SdxlSize(
    unet=dict(
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_embed_type_num_heads=64,
        addition_time_embed_dim=256,
        transformer_layers_per_block=(1, 2, 10),
        projection_class_embeddings_input_dim=2816,
        cross_attention_dim=2048,
    ),
    vae=dict(
        block_out_channels=(128, 256, 512, 512),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        sample_size=1024,
        scaling_factor=0.13025,
        force_upcast=True,
    ),
    text_encoder=dict(
        hidden_size=768,
        intermediate_size=3072,
        num_attention_heads=12,
        num_hidden_layers=12,
        projection_dim=768,
        hidden_act="quick_gelu",
    ),
    text_encoder_2=dict(
        hidden_size=1280,
        intermediate_size=5120,
        num_attention_heads=20,
        num_hidden_layers=32,
        projection_dim=1280,
        hidden_act="gelu",
    ),
    faceid_lora_rank=128,
    faceid_tokens=4,
)

SIZES = {"tiny": TINY, "full": FULL}


def write_tiny_tokenizer(folder: Path) -> Path:
    """A CLIP BPE tokenizer over lowercase letters, enough for any ASCII prompt."""
    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    tokens = ["<|startoftext|>", "<|endoftext|>", "!"] + letters + [f"{ch}</w>" for ch in letters]
    tokens += ["th", "th</w>", "an", "an</w>", "ol", "old</w>", "man</w>", "wo", "wom", "woman</w>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = [
        "#version: 0.2",
        "t h",
        "t h</w>",
        "a n",
        "a n</w>",
        "o l",
        "ol d</w>",
        "m an</w>",
        "w o",
        "wo m",
        "wom an</w>",
    ]
    (folder / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
    return folder


def build_random_sdxl(size: str = "tiny", seed: int = 0, dtype: Any = None) -> Any:
    """An in-memory StableDiffusionXLPipeline with random weights of the given architecture."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    spec = SIZES[size]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**spec.unet)
    vae = AutoencoderKL(**spec.vae)

    def text_config(extra: dict[str, Any]) -> Any:
        base: dict[str, Any] = dict(
            bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=49408 if size == "full" else 1000
        )
        return CLIPTextConfig(**base, **extra)

    text_encoder = CLIPTextModel(text_config(spec.text_encoder))
    text_encoder_2 = CLIPTextModelWithProjection(text_config(spec.text_encoder_2))
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = write_tiny_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
        tokenizer_2 = CLIPTokenizer(
            str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77, pad_token="!"
        )
    scheduler = EulerDiscreteScheduler(**SDXL_SCHEDULER_CONFIG)
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    if dtype is not None:
        pipe.to(dtype=dtype)  # type: ignore[attr-defined]
    return pipe


def random_faceid_state_dict(
    unet: Any, size: str = "tiny", seed: int = 0, id_dim: int = 512
) -> dict[str, dict[str, Any]]:
    """A FaceID SDXL state dict of the real layout, sized for `unet`.

    `image_proj`: proj.0 (2*id_dim x id_dim), proj.2 (tokens*cross_dim x 2*id_dim), norm.
    `ip_adapter`: per attention processor k (in `unet.attn_processors` order) the LoRA
    keys `k.to_{q,k,v,out}_lora.{down,up}.weight`; cross-attention ones (odd k) also
    `k.to_k_ip.weight` and `k.to_v_ip.weight`.
    """
    import torch

    spec = SIZES[size]
    gen = torch.Generator().manual_seed(seed)
    cross_dim = unet.config.cross_attention_dim
    rank = spec.faceid_lora_rank

    def rand(*shape: int, scale: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device="cpu") * scale

    image_proj = {
        "proj.0.weight": rand(2 * id_dim, id_dim),
        "proj.0.bias": rand(2 * id_dim),
        "proj.2.weight": rand(spec.faceid_tokens * cross_dim, 2 * id_dim),
        "proj.2.bias": rand(spec.faceid_tokens * cross_dim),
        "norm.weight": 1 + rand(cross_dim),
        "norm.bias": rand(cross_dim),
    }
    ip_adapter: dict[str, torch.Tensor] = {}
    for k, name in enumerate(unet.attn_processors):
        attn = unet.get_submodule(name.rsplit(".processor", 1)[0])
        hidden = attn.to_q.in_features
        kv_in = attn.to_k.in_features
        for proj, (d_in, d_out) in {
            "to_q": (hidden, hidden),
            "to_k": (kv_in, hidden),
            "to_v": (kv_in, hidden),
            "to_out": (hidden, hidden),
        }.items():
            ip_adapter[f"{k}.{proj}_lora.down.weight"] = rand(rank, d_in)
            ip_adapter[f"{k}.{proj}_lora.up.weight"] = rand(d_out, rank)
        if name.endswith("attn2.processor"):
            ip_adapter[f"{k}.to_k_ip.weight"] = rand(hidden, cross_dim)
            ip_adapter[f"{k}.to_v_ip.weight"] = rand(hidden, cross_dim)
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def write_random_models(folder: Path, size: str = "tiny", seed: int = 0, dtype: Any = None) -> tuple[Path, Path]:
    """Save a random SDXL folder and a FaceID weight file; returns (sdxl_dir, faceid_file)."""
    import torch

    folder = Path(folder)
    pipe = build_random_sdxl(size, seed, dtype)
    sdxl_dir = folder / "sdxl"
    pipe.save_pretrained(sdxl_dir, variant="fp16" if dtype == torch.float16 else None)
    faceid_dir = folder / "faceid"
    faceid_dir.mkdir(parents=True, exist_ok=True)
    state = random_faceid_state_dict(pipe.unet, size, seed)
    if dtype is not None:
        state = {part: {k: v.to(dtype) for k, v in tensors.items()} for part, tensors in state.items()}
    torch.save(state, faceid_dir / FACEID_WEIGHT_NAME)
    return sdxl_dir, faceid_dir / FACEID_WEIGHT_NAME
