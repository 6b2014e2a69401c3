"""FaceID merged into SDXL once and kept on disk, so a later process skips the merge and the `.bin` unpickling.

Merging FaceID's rank-128 LoRA into the UNet (~4 s on the CPU) and unpickling its `.bin` (~3.6 s) are the
same work in every process. The first process saves what they produce: the merged weights of the layers the
LoRA touched and FaceID's own tensors (image projection, per-layer identity keys and values), as one
safetensors file read straight onto the GPU later. The file's name holds a digest of everything the merged
weights depend on (both weight files' paths, sizes and times, the dtype, the diffusers and peft versions),
so a changed input is never served a stale merge: it gets a new file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from rp_core.models import digest

#: Key prefixes in the cache file: merged UNet weights, then FaceID's two state-dict parts as diffusers names them.
FUSED, PARTS = "fused.", ("image_proj", "ip_adapter")


def cache_file(cache_dir: Path, sdxl_dir: Path, faceid_file: Path, dtype: Any) -> Path:
    """Where the merge of these weights at this dtype is (or will be) kept."""
    import diffusers
    import peft

    sources = [
        faceid_file,
        *sorted((sdxl_dir / "unet").glob("*.safetensors")),
        *sorted((sdxl_dir / "unet").glob("*.bin")),
    ]
    return cache_dir / f"faceid-fused-{digest(sources, dtype, diffusers.__version__, peft.__version__)}.safetensors"


def split_faceid(state: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """FaceID's state dict without its LoRA (what a merged UNet still needs), and the LoRA tensors alone."""
    kept: dict[str, dict[str, Any]] = {"image_proj": dict(state["image_proj"]), "ip_adapter": {}}
    lora: dict[str, Any] = {}
    for name, tensor in state["ip_adapter"].items():
        (lora if "lora" in name else kept["ip_adapter"])[name] = tensor
    return kept, lora


def save(path: Path, merged: dict[str, Any], faceid: dict[str, dict[str, Any]]) -> bool:
    """Write the cache file atomically (a crash leaves no half file); False where it cannot be written."""
    tensors = {FUSED + name: t.detach() for name, t in merged.items()}
    for part in PARTS:
        tensors.update({f"{part}.{name}": t for name, t in faceid[part].items()})
    return save_atomically(path, tensors)


def save_atomically(path: Path, tensors: dict[str, Any]) -> bool:
    """Write `tensors` as one safetensors file (a crash leaves no half file); False where it cannot be written."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    tensors = {name: t.contiguous().cpu() for name, t in tensors.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        os.close(fd)
        try:
            save_file(tensors, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except (OSError, SafetensorError):  # a full or read-only disk: the run goes on without a cache
        return False
    return True


def load(path: Path, device: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]] | None:
    """(merged weights, FaceID without its LoRA) read onto `device`; None when no readable cache file is there."""
    tensors = load_tensors(path, device)
    if tensors is None:  # absent or damaged on disk: merge again (and write a good file over it)
        return None
    merged = {k[len(FUSED) :]: t for k, t in tensors.items() if k.startswith(FUSED)}
    faceid: dict[str, dict[str, Any]] = {part: {} for part in PARTS}
    for key, tensor in tensors.items():
        part, _, name = key.partition(".")
        if part in faceid:
            faceid[part][name] = tensor
    return merged, faceid


def load_tensors(path: Path, device: Any) -> dict[str, Any] | None:
    """A cache file's tensors read onto `device`; None when the file is absent or unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        return load_file(path, device=str(device))
    except (OSError, SafetensorError):
        return None
