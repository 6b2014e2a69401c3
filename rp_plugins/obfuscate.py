"""Classic obfuscation generators: pixelate, blur and solid fill of the face in its aligned crop.

They need no weights, no identity and no inversion, and take milliseconds, so the
`offline` preset runs anywhere. Each obfuscates the whole aligned crop; the merger
decides the shape it pastes (an ellipse around the whole head by default, `mask_scale`
1.3, or a rectangle with `boxes`), so one setting shapes every obfuscating generator,
the fail-closed fallbacks included.
Their defaults are strong enough that dlib's detector + 128-d descriptor no longer
re-identify the faces of t1.jpg and astronaut (tests/test_obfuscate.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, ClassVar, Self

import numpy as np
from pydantic import Field

from rp_core import hookimpl
from rp_core.interfaces import ComponentOptions, Generator
from rp_core.types import AlignedFace, GenerationRequest

Channel = Annotated[int, Field(ge=0, le=255)]


class _Obfuscator(Generator):
    """Common loop: obfuscate the whole crop; the merger keeps only its (whole-head) face mask of it."""

    needs_identity: ClassVar[bool] = False
    needs_inversion: ClassVar[bool] = False
    options: PixelateOptions | BlurOptions | BoxBlurOptions | SolidOptions

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        return [np.array(self._obfuscate(r.face), dtype=np.uint8) for r in requests]

    def _widened(self, key: str, attempt: int, factor: float) -> Self | None:
        """This generator with option `key` (a share, at most 1) x factor**attempt, for fail-closed retry
        `attempt`; None when it is already at 1."""
        value = float(getattr(self.options, key))
        if value >= 1.0:
            return None
        return type(self)(self.options.model_copy(update={key: min(1.0, value * factor**attempt)}), self.context)

    def _obfuscate(self, face: AlignedFace) -> np.ndarray:
        """The whole crop of `face` obfuscated (same shape, uint8)."""
        raise NotImplementedError


class PixelateOptions(ComponentOptions):
    """Options of the pixelate generator."""

    blocks: int = Field(
        6,
        ge=2,
        le=64,
        description="pixel blocks across the face width (fewer = stronger); 6 defeats dlib re-identification",
    )
    min_block: float = Field(
        16.0,
        ge=0.0,
        description="smallest block side in image pixels: a smaller face gets fewer, larger blocks (never fewer "
        "than 2 across it), as finely pixelated small faces are still found and matched; 0: always `blocks`",
    )


class Pixelate(_Obfuscator):
    """Mosaic: average the crop over a coarse grid aligned to the face."""

    name: ClassVar[str] = "pixelate"
    #: Hides a leaking or skipped face while keeping its outline (the fail-closed fallback unless a config names one).
    default_for: ClassVar[tuple[str, ...]] = ("verify.fallback_generator",)
    Options: ClassVar[type[ComponentOptions]] = PixelateOptions
    options: PixelateOptions

    def stronger(self, attempt: int, factor: float) -> Pixelate | None:
        """Fewer, coarser blocks for fail-closed retry `attempt` (6 -> 4 -> 3 at factor 1.5); None at 2 blocks."""
        blocks = max(2, round(self.options.blocks / factor**attempt))
        if blocks >= self.options.blocks:
            return None
        return Pixelate(self.options.model_copy(update={"blocks": blocks}), self.context)

    def blocks_for(self, face: AlignedFace) -> int:
        """Blocks across this face's width: `blocks`, fewer where they would be under `min_block` image pixels."""
        width = _face_width(face)
        if self.options.min_block <= 0:
            return self.options.blocks
        return min(self.options.blocks, max(2, round(width / self.options.min_block)))

    def smoothed(self, face: AlignedFace) -> bool:
        """True for a face too small for even 2 blocks of `min_block` (under 2.5 of them wide): its mosaic is
        smoothed, as a 2x2 mosaic's hard edges still read as a face to a detector that upsamples it."""
        return self.options.min_block > 0 and _face_width(face) < 2.5 * self.options.min_block

    def _obfuscate(self, face: AlignedFace) -> np.ndarray:
        import cv2

        from rp_plugins._facemask import FACE_WIDTH_FRACTION

        crop = np.asarray(face.crop)
        side = crop.shape[0]
        grid = max(2, round(self.blocks_for(face) / FACE_WIDTH_FRACTION))
        small = cv2.resize(crop, (grid, grid), interpolation=cv2.INTER_AREA)
        upscale = cv2.INTER_LINEAR if self.smoothed(face) else cv2.INTER_NEAREST
        return cv2.resize(small, (side, side), interpolation=upscale)


def _face_width(face: AlignedFace) -> float:
    """The face's width in image pixels (the share of its crop a face spans, at the crop's scale)."""
    from rp_plugins._facemask import FACE_WIDTH_FRACTION

    crop_per_image = float(np.sqrt(abs(np.linalg.det(face.matrix[:, :2]))))
    return FACE_WIDTH_FRACTION * face.size / crop_per_image


class BlurOptions(ComponentOptions):
    """Options of the blur generator."""

    strength: float = Field(
        0.12,
        gt=0.0,
        le=1.0,
        description="Gaussian sigma as a share of the face width; 0.12 defeats dlib re-identification",
    )


class Blur(_Obfuscator):
    """Gaussian blur with a sigma proportional to the face, so the result does not depend on resolution."""

    name: ClassVar[str] = "blur"
    Options: ClassVar[type[ComponentOptions]] = BlurOptions
    options: BlurOptions

    def stronger(self, attempt: int, factor: float) -> Blur | None:
        """A wider blur (sigma x factor**attempt) for fail-closed retry `attempt`; None past the widest."""
        return self._widened("strength", attempt, factor)

    def _obfuscate(self, face: AlignedFace) -> np.ndarray:
        import cv2

        from rp_plugins._facemask import FACE_WIDTH_FRACTION

        crop = np.asarray(face.crop)
        side = crop.shape[0]
        sigma = self.options.strength * FACE_WIDTH_FRACTION * side
        # A wide blur loses nothing at a lower resolution: blur a copy with sigma ~4 px and scale it up.
        factor = max(1.0, sigma / 4.0)
        work = max(8, round(side / factor))
        small = cv2.resize(crop, (work, work), interpolation=cv2.INTER_AREA) if work < side else crop
        small_sigma = sigma * work / side
        blurred = cv2.GaussianBlur(small, (0, 0), sigmaX=small_sigma, sigmaY=small_sigma, borderType=cv2.BORDER_REFLECT)
        if work < side:
            blurred = cv2.resize(blurred, (side, side), interpolation=cv2.INTER_LINEAR)
        return np.asarray(blurred, dtype=np.uint8)


class BoxBlurOptions(ComponentOptions):
    """Options of the boxblur generator."""

    kernel: float = Field(
        0.5,
        ge=0.1,
        le=1.0,
        description="box filter side as a share of the whole head's window (deface's blur: 0.5); 1: nearly flat",
    )


class BoxBlur(_Obfuscator):
    """deface's blur: a box filter half as wide as the head, over the head's window only.

    deface averages each face box with a box filter half the box's size, using nothing from outside the
    box, so the head becomes a smooth oval. This does the same in the aligned crop, over the window of the
    whole-head region (`HEAD_SCALE`); the rest of the crop is box-blurred too, so the whole crop is
    obfuscated whatever mask the merger pastes. With the merger's `erode` and `feather` at 0 the oval's
    edge is hard, as in deface.
    """

    name: ClassVar[str] = "boxblur"
    Options: ClassVar[type[ComponentOptions]] = BoxBlurOptions
    options: BoxBlurOptions

    def stronger(self, attempt: int, factor: float) -> BoxBlur | None:
        """A wider box (kernel x factor**attempt, at most 1) for fail-closed retry `attempt`; None past the widest."""
        return self._widened("kernel", attempt, factor)

    def _obfuscate(self, face: AlignedFace) -> np.ndarray:
        import cv2

        from rp_plugins._facemask import HEAD_SCALE, face_region

        crop = np.asarray(face.crop)
        rows, cols = np.nonzero(face_region(face, scale=HEAD_SCALE))
        if rows.size == 0:  # no head in the crop at all: treat the whole crop as the window
            top, bottom, left, right = 0, crop.shape[0], 0, crop.shape[1]
        else:
            top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        kernel = self.options.kernel
        size = (max(1, round((right - left) * kernel)), max(1, round((bottom - top) * kernel)))
        out = np.array(cv2.blur(crop, size, borderType=cv2.BORDER_REFLECT), dtype=np.uint8)
        window = np.ascontiguousarray(crop[top:bottom, left:right])
        out[top:bottom, left:right] = cv2.blur(window, size, borderType=cv2.BORDER_REFLECT)
        return out


class SolidOptions(ComponentOptions):
    """Options of the solid generator."""

    color: tuple[Channel, Channel, Channel] = Field((0, 0, 0), description="fill colour as RGB 0-255")


class Solid(_Obfuscator):
    """Fill the face with one colour: nothing of the face survives."""

    name: ClassVar[str] = "solid"
    #: Nothing of the face survives: the last resort after a fallback that still matches.
    default_for: ClassVar[tuple[str, ...]] = ("verify.last_resort",)
    Options: ClassVar[type[ComponentOptions]] = SolidOptions
    options: SolidOptions

    def _obfuscate(self, face: AlignedFace) -> np.ndarray:
        return np.broadcast_to(np.array(self.options.color, dtype=np.uint8), face.crop.shape)


@hookimpl
def rp_register_generators(register: Callable[[type], None]) -> None:
    register(Pixelate)
    register(Blur)
    register(BoxBlur)
    register(Solid)
