"""Named partial configs selectable with `--preset NAME` (they never change the defaults)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rp_core import hookimpl

OFFLINE = {
    "detector": {"name": "dlib"},
    "identity_encoder": {"name": "dlib"},  # re-checks outputs (verification) with dlib's descriptor
    "generator": {"name": "pixelate"},
    "merger": {"name": "affine"},
    "align": {"face_image_size": 256},
}

DEFAULT: dict[str, Any] = {}

#: Half the steps of the paper's method (same noise levels, walked half as finely): about half
#: the GPU time per face (benchmarks/RESULTS.md). Its effect on identity and realism is not yet
#: measured with real weights, so keep verification on.
FAST = {"inverter": {"name": "ledits_sdxl", "options": {"num_inversion_steps": 50}}}

#: For large batch jobs: torch.compile'd UNet (6.2 instead of 7.6 s per face at batch 8 on an H200,
#: about 2 minutes of compiling at start, cached by torch) and 8 faces per batch.
THROUGHPUT = {"runtime": {"compile": True, "batch_size": 8}}

#: Opt-in lower precision: fp8 matmuls in the UNet's transformer layers on top of `throughput`.
#: It changes the result more than fp16 rounding does (benchmarks/RESULTS.md); its speed with
#: torch.compile is not yet measured (uncompiled fp8 is slower than fp16).
FP8 = {"runtime": {"compile": True, "batch_size": 8, "fp8": True}}


@hookimpl
def rp_register_presets(register: Callable[[str, dict[str, Any], str], None]) -> None:
    register(
        "default",
        DEFAULT,
        "The paper's method: SFD + ArcFace + LEDITS++ SDXL inversion + IP-Adapter-FaceID, guidance -10.",
    )
    register("fast", FAST, "Half the diffusion steps (50): ~2x faster per face; effect on the result unmeasured.")
    register("throughput", THROUGHPUT, "Compiled UNet, 8 faces per batch: fastest per face for big jobs, slow start.")
    register(
        "fp8",
        FP8,
        "Experimental: throughput + fp8 matmuls (torchao, H100/H200/L40S); changes the numbers, speed unmeasured.",
    )
    register("offline", OFFLINE, "Runs anywhere with no downloads: dlib detector + pixelation + feathered paste-back.")
