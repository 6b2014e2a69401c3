"""Box geometry on the ground floor: overlap, footprints and windows, shared by detection, verification and evaluation.

Boxes are (x0, y0, x1, y1) in image pixels, floats. Nothing here knows about detectors,
verification or files: it imports only numpy (and `rp_core.types` for typing), so any
module may use it without creating an import cycle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rp_core.types import AlignedFace

Box = tuple[float, float, float, float]
#: An integer window (left, top, right, bottom), right and bottom exclusive.
Window = tuple[int, int, int, int]


def area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def intersection(a: Box, b: Box) -> float:
    """Area two boxes share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when both are empty)."""
    inter = intersection(a, b)
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def centre_inside(box: Box, region: Box) -> bool:
    """True when the centre of `box` lies in `region` (lenient: boxes of turned faces differ in shape)."""
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= x <= region[2] and region[1] <= y <= region[3]


def same_face(a: Box, b: Box, iou_threshold: float, containment: float) -> bool:
    """True when two boxes of one detector family frame the same face (overlap, or one inside the other)."""
    if iou(a, b) >= iou_threshold:
        return True
    smaller = min(area(a), area(b))
    return smaller > 0 and intersection(a, b) / smaller >= containment


def same_face_any_detector(a: Box, b: Box) -> bool:
    """True when two boxes from any detectors frame the same face.

    Box conventions differ (dlib's is tight, CenterFace's includes forehead and chin), so this
    asks for close centres and similar sizes instead of an IoU threshold.
    """
    size_a, size_b = math.sqrt(area(a)), math.sqrt(area(b))
    if size_a <= 0 or size_b <= 0:
        return False
    centre_a = ((a[0] + a[2]) / 2.0, (a[1] + a[3]) / 2.0)
    centre_b = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0)
    distance = math.hypot(centre_a[0] - centre_b[0], centre_a[1] - centre_b[1])
    return distance < 0.5 * min(size_a, size_b) and 0.5 <= size_a / size_b <= 2.0


def box_through(box: Box, mapping: Callable[[np.ndarray], np.ndarray]) -> Box:
    """The axis-aligned box around a box's four corners after `mapping`."""
    x0, y0, x1, y1 = box
    corners = mapping(np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64))
    return (
        float(corners[:, 0].min()),
        float(corners[:, 1].min()),
        float(corners[:, 0].max()),
        float(corners[:, 1].max()),
    )


def footprint(face: AlignedFace, image_shape: tuple[int, ...], grow: float = 0.1) -> Box:
    """The image box a face's crop can change when pasted back (its square warped back), grown a little."""
    size = face.size
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    inverse = np.linalg.inv(np.vstack([face.matrix, [0.0, 0.0, 1.0]]))[:2]
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    pad_x, pad_y = (x1 - x0) * grow, (y1 - y0) * grow
    height, width = image_shape[:2]
    return (max(0.0, x0 - pad_x), max(0.0, y0 - pad_y), min(float(width), x1 + pad_x), min(float(height), y1 + pad_y))


def changed_box(original: np.ndarray, output: np.ndarray, region: Box, face: Box, grow: float = 0.25) -> Box:
    """The part of `region` an output search must look at: the pixels that changed there, and the face itself.

    Unchanged pixels elsewhere were searched on the input already. The face's box, grown by `grow` x its
    larger side each way, always counts: a face left almost as it was (one pixel changed), or hidden by a crop
    pasted too small or beside it (poor landmarks), is looked for whole where it is, not cut by the edge.
    """
    x0, y0, x1, y1 = face
    pad = grow * max(x1 - x0, y1 - y0)
    x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
    changed = changed_pixels(original, output, clipped_window(region, original.shape))
    if changed is not None:
        cx0, cy0, cx1, cy1 = (float(v) for v in changed)
        x0, y0, x1, y1 = min(x0, cx0), min(y0, cy0), max(x1, cx1), max(y1, cy1)
    height, width = original.shape[:2]
    return (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))


def changed_pixels(before: np.ndarray, after: np.ndarray, window: Window) -> Window | None:
    """The smallest pixel rectangle inside `window` holding every pixel that differs (None: none does)."""
    left, top, right, bottom = window
    rows, cols = np.nonzero(np.any(before[top:bottom, left:right] != after[top:bottom, left:right], axis=-1))
    if not len(rows):
        return None
    return (left + int(cols.min()), top + int(rows.min()), left + int(cols.max()) + 1, top + int(rows.max()) + 1)


def clipped_window(box: Box, shape: tuple[int, ...]) -> Window:
    """The integer pixels a box touches, clipped to an image of `shape` (may be empty: right <= left)."""
    height, width = shape[:2]
    x0, y0, x1, y1 = box
    left, top = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
    right, bottom = min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1)))
    return left, top, right, bottom


def box_region(shape: tuple[int, ...], box: Box) -> tuple[slice, slice]:
    """Integer row and column slices of a box clipped to the image."""
    left, top, right, bottom = clipped_window(box, shape)
    return slice(top, max(top, bottom)), slice(left, max(left, right))


def region_window(box: Box, shape: tuple[int, ...], margin: float) -> Window:
    """Integer window around `box` grown by `margin` x its larger side on every side, clipped to the image."""
    x0, y0, x1, y1 = box
    grow = margin * max(x1 - x0, y1 - y0, 1.0)
    left, top, right, bottom = clipped_window((x0 - grow, y0 - grow, x1 + grow, y1 + grow), shape)
    return left, top, max(right, left + 1), max(bottom, top + 1)


def tiles(shape: tuple[int, ...], tile: int, overlap: float) -> list[Window]:
    """Windows of side `tile` covering an image of `shape`, overlapping by `overlap` x tile."""
    height, width = shape[:2]
    step = max(1, round(tile * (1.0 - overlap)))

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        values = list(range(0, length - tile, step))
        return [*values, length - tile]

    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in starts(height) for x in starts(width)]
