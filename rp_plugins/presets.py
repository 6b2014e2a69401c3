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


@hookimpl
def rp_register_presets(register: Callable[[str, dict[str, Any], str], None]) -> None:
    register("default", DEFAULT, "The paper's method: SFD + ArcFace + LEDITS++ SDXL inversion + IP-Adapter-FaceID, guidance -10.")
    register("offline", OFFLINE, "Runs anywhere with no downloads: dlib detector + pixelation + feathered paste-back.")
