"""Named partial configs selectable with `--preset NAME` (they never change the defaults)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rp_core import hookimpl

OFFLINE = {
    "detector": {"name": "dlib"},
    # re-checks outputs (verification) with dlib's descriptor; "auto" also reads faces that only a 5-point
    # detector found (the CenterFace coverage detector) by fitting dlib's 5-point predictor on them
    "identity_encoder": {"name": "dlib", "options": {"landmarks": "auto"}},
    "generator": {"name": "pixelate"},
    "merger": {"name": "affine"},
    "align": {"face_image_size": 256},
}

DEFAULT: dict[str, Any] = {}

#: Half the steps of the paper's method (same noise levels, walked half as finely): about half
#: the GPU time per face (benchmarks/RESULTS.md). Its effect on identity and realism is not yet
#: measured with real weights, so keep verification on.
FAST = {"inverter": {"name": "ledits_sdxl", "options": {"num_inversion_steps": 50}}}

#: For large batch jobs: whole-UNet torch.compile + 8 faces per batch: 6.2-6.3 s/face on an H200 against 6.65 s for
#: the default (which compiles only the transformer blocks, ~10 s), for ~2 min of compiling at start (cached by torch).
THROUGHPUT = {"runtime": {"compile": True, "batch_size": 8}}


@hookimpl
def rp_register_presets(register: Callable[[str, dict[str, Any], str], None]) -> None:
    register(
        "default",
        DEFAULT,
        "The paper's method: SFD + ArcFace + LEDITS++ SDXL inversion + IP-Adapter-FaceID, guidance -10.",
    )
    register("fast", FAST, "Half the diffusion steps (50): ~2x faster per face; effect on the result unmeasured.")
    register(
        "throughput",
        THROUGHPUT,
        "Whole-UNet compile, 8 faces per batch: ~5% faster per face than the default, ~2 min compile at start.",
    )
    register("offline", OFFLINE, "Runs anywhere with no downloads: dlib detector + pixelation + feathered paste-back.")
