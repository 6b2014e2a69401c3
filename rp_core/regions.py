"""Detect faces inside one region of an image, enlarged when it is small, in image coordinates.

Verification uses it to look for a face where a generator may have put it (the region a
crop was pasted into), and to ask a second detector whether a detection is a face at all.
Detectors miss faces of a few dozen pixels, so a small region is upsampled first.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rp_core.types import Face

#: A region whose shorter side is below this many pixels is enlarged to it before detection.
MIN_REGION_SIDE = 320
#: Enlarging stops at this factor (beyond it detectors see interpolation, not faces).
MAX_UPSCALE = 4.0


def region_search(
    detect: Callable[[np.ndarray], list[Face]],
    image: np.ndarray,
    region: tuple[float, float, float, float],
    min_side: int = MIN_REGION_SIDE,
) -> list[Face]:
    """Faces `detect` finds inside `region` of `image`, mapped back to image pixel coordinates."""
    import cv2

    height, width = image.shape[:2]
    x0, y0 = max(0, int(np.floor(region[0]))), max(0, int(np.floor(region[1])))
    x1, y1 = min(width, int(np.ceil(region[2]))), min(height, int(np.ceil(region[3])))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return []
    patch = np.ascontiguousarray(image[y0:y1, x0:x1])
    scale = min(MAX_UPSCALE, max(1.0, min_side / min(patch.shape[:2])))
    if scale > 1.0:
        size = (round(patch.shape[1] * scale), round(patch.shape[0] * scale))
        patch = cv2.resize(patch, size, interpolation=cv2.INTER_CUBIC)
    faces = []
    for face in detect(patch):
        bx0, by0, bx1, by1 = face.box
        faces.append(
            Face(
                box=(bx0 / scale + x0, by0 / scale + y0, bx1 / scale + x0, by1 / scale + y0),
                score=face.score,
                landmarks=face.landmarks / scale + np.array([x0, y0]),
                detector=face.detector,
            )
        )
    return faces
