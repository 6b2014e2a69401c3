"""Named partial configs selectable with `--preset NAME` (they never change the defaults)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rp_core import hookimpl

OFFLINE = {
    "detector": {"name": "dlib"},
    "generator": {"name": "pixelate"},
    "merger": {"name": "affine"},
    "align": {"face_image_size": 256},
}

DEFAULT: dict[str, Any] = {}

#: Half the steps of the paper's method and several timesteps per UNet call for lone faces:
#: about half the GPU time per face (benchmarks/RESULTS.md); the faces move less far from
#: the original, so keep verification on.
FAST = {"inverter": {"name": "ledits_sdxl", "options": {"num_inversion_steps": 50, "faces_per_call": 8}}}

#: For large batch jobs: torch.compile'd UNet (about 17% faster per step, minutes of compiling
#: at start, cached by torch) and 8 faces per batch.
THROUGHPUT = {"runtime": {"compile": True, "batch_size": 8}}


@hookimpl
def rp_register_presets(register: Callable[[str, dict[str, Any], str], None]) -> None:
    register(
        "default",
        DEFAULT,
        "The paper's method: SFD + ArcFace + LEDITS++ SDXL inversion + IP-Adapter-FaceID, guidance -10.",
    )
    register(
        "fast", FAST, "Half the diffusion steps (50) and batched inversion of lone faces: ~2x faster, less change."
    )
    register("throughput", THROUGHPUT, "Compiled UNet, 8 faces per batch: fastest per face for big jobs, slow start.")
    register("offline", OFFLINE, "Runs anywhere with no downloads: dlib detector + pixelation + feathered paste-back.")
