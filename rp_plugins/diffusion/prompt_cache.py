"""The empty prompt's text embeddings kept on disk, so a later process loads no text encoder.

Every face is inverted, and without an attribute prompt also regenerated, with the prompt "" and no negative
prompt: its embeddings are a constant of SDXL's two text encoders (0.8 B parameters, 1.6 GB in fp16). The first
process saves the four tensors `encode_prompt` returns; later ones read them back bit for bit and skip loading
the encoders, which are loaded only when a run asks for an attribute prompt. The file's name holds a digest of
the encoders' and tokenizers' files, the dtype and the library versions (rp_core.models.digest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rp_core.models import digest
from rp_plugins.diffusion import fused_cache

#: The pipeline components that only encode prompts.
TEXT_COMPONENTS = ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")
#: The tensors of SdxlBundle.prompt_conditioning, in its order.
NAMES = ("cond", "cond_pooled", "uncond", "uncond_pooled")


def cache_file(cache_dir: Path, sdxl_dir: Path, dtype: Any) -> Path:
    """Where the empty prompt's embeddings for these text encoders at this dtype are (or will be) kept."""
    import diffusers
    import transformers

    sources = sorted(f for part in TEXT_COMPONENTS for f in (sdxl_dir / part).glob("*") if f.is_file())
    name = digest(sources, dtype, diffusers.__version__, transformers.__version__)
    return cache_dir / f"empty-prompt-{name}.safetensors"


def save(path: Path, embeddings: tuple[Any, ...]) -> bool:
    """Keep the four embeddings (False where the file cannot be written: the run goes on)."""
    return fused_cache.save_atomically(path, dict(zip(NAMES, embeddings, strict=True)))


def load(path: Path, device: Any) -> tuple[Any, ...] | None:
    """The four embeddings on `device`, or None when no complete readable file is there."""
    tensors = fused_cache.load_tensors(path, device)
    if tensors is None or set(tensors) != set(NAMES):
        return None
    return tuple(tensors[name] for name in NAMES)
