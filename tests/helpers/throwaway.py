"""Throwaway components and plugins for host/config/CLI tests.

They are real components (subclasses of the interfaces, registered through the real
hooks); they just do trivial work so the tests are fast and need no weights.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from rp_core import hookimpl
from rp_core.interfaces import (
    ComponentOptions,
    Detector,
    Generator,
    IdentityEncoder,
    Inverter,
    Merger,
)
from rp_core.plugins import PluginHost
from rp_core.types import AlignedFace, Face, GenerationRequest, IdentityEmbedding, Inversion


class CentreDetector(Detector):
    """Reports one face in the middle of every image that is not uniformly flat."""

    name = "centre"

    def detect(self, image: np.ndarray) -> list[Face]:
        if image.min() == image.max():
            return []
        h, w = image.shape[:2]
        s = min(h, w) / 4
        cx, cy = w / 2, h / 2
        points = [
            (cx - s / 2, cy - s / 3),
            (cx + s / 2, cy - s / 3),
            (cx, cy),
            (cx - s / 3, cy + s / 2),
            (cx + s / 3, cy + s / 2),
        ]
        return [Face(box=(cx - s, cy - s, cx + s, cy + s), score=0.9, landmarks=np.array(points), detector=self.name)]


class FlatOptions(ComponentOptions):
    level: int = Field(7, ge=0, le=255)


class FlatGenerator(Generator):
    """Fills each face crop with one grey level."""

    name = "flat"
    Options: ClassVar[type[ComponentOptions]] = FlatOptions

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        level = self.options.level  # type: ignore[attr-defined]
        return [np.full_like(r.face.crop, level) for r in requests]


class BoxMerger(Merger):
    """Writes each crop's mean colour over the face box (enough to see that a face was replaced)."""

    name = "box"

    def merge(
        self,
        image: np.ndarray,
        faces: Sequence[AlignedFace],
        crops: Sequence[np.ndarray],
        hidden: Sequence[bool] | None = None,
    ) -> np.ndarray:
        out = image.copy()
        for aligned, crop in zip(faces, crops, strict=True):
            x0, y0, x1, y1 = (int(round(v)) for v in aligned.face.box)
            out[max(y0, 0) : y1, max(x0, 0) : x1] = crop.reshape(-1, 3).mean(axis=0).astype(np.uint8)
        return out


class ConstantEncoder(IdentityEncoder):
    name = "constant"

    def encode(self, image: np.ndarray, faces: Sequence[Face]) -> list[IdentityEmbedding]:
        return [IdentityEmbedding(np.ones(4), self.name) for _ in faces]


class NullInverter(Inverter):
    name = "null"

    def invert(self, faces: Sequence[AlignedFace], seeds: Sequence[int]) -> list[Inversion]:
        return [Inversion(self.name, None) for _ in faces]


class ThrowawayPlugin:
    """Provides one component of every kind, a preset and a command."""

    @hookimpl
    def rp_register_detectors(self, register: Callable[[type], None]) -> None:
        register(CentreDetector)

    @hookimpl
    def rp_register_identity_encoders(self, register: Callable[[type], None]) -> None:
        register(ConstantEncoder)

    @hookimpl
    def rp_register_inverters(self, register: Callable[[type], None]) -> None:
        register(NullInverter)

    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        register(FlatGenerator)

    @hookimpl
    def rp_register_mergers(self, register: Callable[[type], None]) -> None:
        register(BoxMerger)

    @hookimpl
    def rp_register_presets(self, register: Callable[..., None]) -> None:
        register(
            "flat",
            {
                "detector": {"name": "centre"},
                "generator": {"name": "flat"},
                "merger": {"name": "box"},
                # the throwaway host has no real identity encoder to re-check outputs with
                "verify": {"enabled": False},
            },
            "test",
        )
        register("flat9", {"generator": {"name": "flat", "options": {"level": 9}}, "runtime": {"seed": 1}}, "test")


def throwaway_host(**kwargs: Any) -> PluginHost:
    """A host with only the throwaway plugin: tests do not depend on which real plugins exist yet."""
    kwargs.setdefault("load_entry_points", False)
    kwargs.setdefault("environ", {})
    return PluginHost(extra_plugins=[ThrowawayPlugin()], **kwargs)


#: The same detector as a file for --plugins-dir / RP_PLUGINS_DIR tests.
PLUGIN_FILE = """
import numpy as np
from rp_core import hookimpl
from rp_core.interfaces import Detector
from rp_core.types import Face


class EverywhereDetector(Detector):
    name = "everywhere"

    def detect(self, image):
        h, w = image.shape[:2]
        points = np.array([(w * 0.4, h * 0.4), (w * 0.6, h * 0.4), (w * 0.5, h * 0.5), (w * 0.42, h * 0.6), (w * 0.58, h * 0.6)])
        return [Face(box=(w * 0.3, h * 0.3, w * 0.7, h * 0.7), score=1.0, landmarks=points, detector=self.name)]


@hookimpl
def rp_register_detectors(register):
    register(EverywhereDetector)
"""


# -- leaking generators: what an attacker's generator could hand back (tests/test_failclosed_attacks.py) --------


class SwapLeak(Generator):
    """Hands each face of a batch the untouched crop of the next face: every person is still there, elsewhere."""

    name = "swap_leak"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        import cv2

        crops = [r.face.crop for r in requests]
        return [cv2.resize(crops[(i + 1) % len(crops)], crops[i].shape[1::-1]) for i in range(len(crops))]


class ReplayLeak(Generator):
    """Remembers the first batch's crops and pastes them into every later image (a flat grey the first time)."""

    name = "replay_leak"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[np.ndarray] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        import cv2

        if not self.seen:
            self.seen = [r.face.crop.copy() for r in requests]
            return [np.full_like(r.face.crop, 128) for r in requests]
        return [cv2.resize(self.seen[i % len(self.seen)], r.face.crop.shape[1::-1]) for i, r in enumerate(requests)]


class Rot90Leak(Generator):
    """Hands back the original face turned a quarter clockwise."""

    name = "rot90_leak"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        return [np.ascontiguousarray(np.rot90(r.face.crop, -1)) for r in requests]


class Rot180Leak(Generator):
    """Hands back the original face upside down."""

    name = "rot180_leak"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        return [np.ascontiguousarray(np.rot90(r.face.crop, 2)) for r in requests]


class FlipLeak(Generator):
    """Hands back the original face flipped top to bottom (a 180-degree turn of its mirror image)."""

    name = "flip_leak"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        return [np.ascontiguousarray(r.face.crop[::-1]) for r in requests]


class NudgeLeak(Generator):
    """Changes every pixel by one level and nothing else: changed, and still the same person."""

    name = "nudge_leak"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        return [np.where(r.face.crop < 255, r.face.crop + 1, r.face.crop - 1).astype(np.uint8) for r in requests]


LEAKING_GENERATORS: tuple[type[Generator], ...] = (SwapLeak, ReplayLeak, Rot90Leak, Rot180Leak, FlipLeak, NudgeLeak)


class LeakingPlugin:
    """Registers the leaking generators next to a real face stack."""

    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        for generator in LEAKING_GENERATORS:
            register(generator)


# -- a false detection: a "face" on the astronaut's sleeve ------------------------------------------------------


class FalseDetection(Detector):
    """dlib's faces plus one "face" on the astronaut's sleeve: the real face's landmarks moved onto a non-face."""

    name = "false_detection"

    def detect(self, image: np.ndarray) -> list[Face]:
        from rp_core.plugins import PluginHost

        dlib_detector = PluginHost(environ={"RP_PLUGINS": "rp-dlib"}).get("detector", "dlib").cls()
        faces = dlib_detector.detect(image)
        if not faces:
            return faces
        real = faces[0]
        shift = np.array([-170.0, 280.0])  # onto the suit, well away from the face
        box = (real.box[0] + shift[0], real.box[1] + shift[1], real.box[2] + shift[0], real.box[3] + shift[1])
        return [*faces, Face(box, 0.9, real.landmarks + shift, "false_detection")]


class FalsePlugin:
    @hookimpl
    def rp_register_detectors(self, register: Callable[[type], None]) -> None:
        register(FalseDetection)
