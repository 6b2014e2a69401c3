"""Detect faces inside one region of an image, enlarged and turned, in image coordinates.

Verification uses it to look for a face where a generator may have put it (the region a
crop was pasted into, where it may sit moved, shrunk or turned), and to ask a second
detector whether a detection is a face at all. Detectors miss faces of a few dozen pixels
and faces turned in the image plane, so the region is enlarged and also searched turned by
`TURNS` degrees; every face found is mapped back to image pixel coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from rp_core.types import Face

#: The region's longer side is enlarged to this many pixels: a face filling a third of it is then ~160 px,
#: well inside what frontal detectors find (~80 px and up).
TARGET_SIDE = 480
#: Enlarging stops at this factor (beyond it detectors see interpolation, not faces).
MAX_UPSCALE = 4.0
#: In-plane turns searched besides upright; frontal detectors miss faces tilted by more than ~20 degrees.
TURNS = (0.0, 30.0, -30.0)


def region_search(
    detect: Callable[[np.ndarray], list[Face]],
    image: np.ndarray,
    region: tuple[float, float, float, float],
    turns: Sequence[float] = TURNS,
) -> list[Face]:
    """Faces `detect` finds inside `region` of `image` (enlarged, upright and turned), in image coordinates."""
    import cv2

    height, width = image.shape[:2]
    x0, y0 = max(0, int(np.floor(region[0]))), max(0, int(np.floor(region[1])))
    x1, y1 = min(width, int(np.ceil(region[2]))), min(height, int(np.ceil(region[3])))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return []
    patch = np.ascontiguousarray(image[y0:y1, x0:x1])
    scale = min(MAX_UPSCALE, max(1.0, TARGET_SIDE / max(patch.shape[:2])))
    faces = []
    for angle in turns:
        # one affine from the region (in image pixels) to the searched picture: shift, scale, turn about its centre
        to_patch = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale], [0.0, 0.0, 1.0]])
        size = (round(patch.shape[1] * scale), round(patch.shape[0] * scale))
        if angle:
            side = int(np.ceil(np.hypot(*size)))
            turn = cv2.getRotationMatrix2D((size[0] / 2, size[1] / 2), angle, 1.0)
            turn[:, 2] += ((side - size[0]) / 2, (side - size[1]) / 2)
            to_patch = np.vstack([turn, [0.0, 0.0, 1.0]]) @ to_patch
            size = (side, side)
        picture = cv2.warpAffine(image, to_patch[:2], size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        back = np.linalg.inv(to_patch)[:2]
        for face in detect(np.ascontiguousarray(picture)):
            faces.append(_mapped(face, back))
    return faces


def _mapped(face: Face, matrix: np.ndarray) -> Face:
    """`face` moved through the 2x3 affine `matrix`; the box becomes the box around its mapped corners."""
    bx0, by0, bx1, by1 = face.box
    corners = np.array([[bx0, by0], [bx1, by0], [bx0, by1], [bx1, by1]]) @ matrix[:, :2].T + matrix[:, 2]
    (left, top), (right, bottom) = corners.min(axis=0), corners.max(axis=0)
    landmarks = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    return Face(box=(left, top, right, bottom), score=face.score, landmarks=landmarks, detector=face.detector)
