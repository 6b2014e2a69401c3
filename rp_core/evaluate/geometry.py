"""Pure measurements on landmarks and pixels: what changed about a face besides its identity.

Everything here works on plain arrays (68 iBUG points, or 5 ArcFace points where noted),
so it is tested without any model and reused by any evaluator.
"""

from __future__ import annotations

import math

import numpy as np

from rp_core.types import five_points_from

#: A generic, roughly average head in millimetres, in the image's axes (x right, y down, z away
#: from the camera) with the nose tip at the origin: a frontal face then has yaw = pitch = roll = 0.
#: Points: nose tip (30), chin (8), outer eye corners (36, 45), mouth corners (48, 54).
_HEAD_MODEL = np.array(
    [
        (0.0, 0.0, 0.0),
        (0.0, 66.0, 13.0),
        (-45.0, -34.0, 27.0),
        (45.0, -34.0, 27.0),
        (-30.0, 30.0, 25.0),
        (30.0, 30.0, 25.0),
    ],
    dtype=np.float64,
)
_HEAD_POINTS = (30, 8, 36, 45, 48, 54)


def inter_ocular(landmarks: np.ndarray) -> float:
    """Distance between the two eye centres, the usual scale for landmark errors."""
    five = five_points_from(landmarks)
    return float(np.linalg.norm(five[0] - five[1]))


def landmark_displacement(before: np.ndarray, after: np.ndarray) -> float:
    """Mean point-to-point distance between two landmark sets, in units of the original inter-ocular distance.

    Sets of different layouts (68 vs 5 points) are compared on their 5 ArcFace points.
    """
    a, b = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if a.shape != b.shape:
        a, b = five_points_from(a), five_points_from(b)
    scale = inter_ocular(a)
    if scale <= 0:
        return math.nan
    return float(np.linalg.norm(a - b, axis=1).mean() / scale)


def head_pose(landmarks: np.ndarray, image_shape: tuple[int, ...]) -> tuple[float, float, float] | None:
    """(yaw, pitch, roll) in degrees from 68 landmarks with cv2.solvePnP and a generic head; None for 5 points.

    The camera is a pinhole with the focal length of the image width, centred: absolute angles are
    approximate, changes between two images of the same size are what the report uses.
    """
    import cv2

    points = np.asarray(landmarks, np.float64)
    if points.shape != (68, 2):
        return None
    height, width = image_shape[:2]
    camera = np.array([[width, 0, width / 2.0], [0, width, height / 2.0], [0, 0, 1]], dtype=np.float64)
    image_points = points[list(_HEAD_POINTS)]
    # start from a frontal head at the distance its eye spacing implies: without a start the
    # iterative solver sometimes lands on the mirror solution (a head upside down, roll ~180)
    eyes = inter_ocular(points)
    if eyes <= 0:
        return None
    depth = width * 90.0 / eyes
    nose = image_points[0]
    start = np.array([(nose[0] - width / 2.0) * depth / width, (nose[1] - height / 2.0) * depth / width, depth])
    ok, rotation_vector, _ = cv2.solvePnP(
        _HEAD_MODEL,
        image_points,
        camera,
        np.zeros(4),
        rvec=np.zeros((3, 1)),
        tvec=start.reshape(3, 1),
        useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    if not ok:
        return None
    rotation, _ = cv2.Rodrigues(rotation_vector)
    angles = cv2.RQDecomp3x3(rotation)[0]  # degrees about x (pitch), y (yaw), z (roll)
    pitch, yaw, roll = (float(v) for v in angles)
    return _wrap(yaw), _wrap(pitch), _wrap(roll)


def _wrap(angle: float) -> float:
    """An angle in (-180, 180]."""
    wrapped = (angle + 180.0) % 360.0 - 180.0
    return 180.0 if wrapped == -180.0 else wrapped


def eye_openness(landmarks: np.ndarray) -> float | None:
    """Mean eye aspect ratio of both eyes (lid distance over eye width; ~0.3 open, <0.15 closed); None for 5 points."""
    points = np.asarray(landmarks, np.float64)
    if points.shape != (68, 2):
        return None
    ratios = []
    for start in (36, 42):
        p = points[start : start + 6]
        width = np.linalg.norm(p[0] - p[3])
        if width <= 0:
            return None
        ratios.append((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * width))
    return float(np.mean(ratios))


def mouth_openness(landmarks: np.ndarray) -> float | None:
    """Inner-lip aspect ratio (mean lip gap over mouth width; ~0 closed); None for 5 points."""
    points = np.asarray(landmarks, np.float64)
    if points.shape != (68, 2):
        return None
    width = np.linalg.norm(points[60] - points[64])
    if width <= 0:
        return None
    gaps = [np.linalg.norm(points[61 + i] - points[67 - i]) for i in range(3)]
    return float(np.mean(gaps) / width)


def face_regions_mask(
    shape: tuple[int, ...], boxes: list[tuple[float, float, float, float]], margin: float
) -> np.ndarray:
    """Boolean (H, W) mask of every box grown by `margin` times its size on each side.

    Detector boxes are tight around the inner face while a merger blends a little beyond
    them; the margin keeps that blend edge out of "outside the faces".
    """
    height, width = shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        dx, dy = margin * (x1 - x0), margin * (y1 - y0)
        left, top = max(0, int(math.floor(x0 - dx))), max(0, int(math.floor(y0 - dy)))
        right, bottom = min(width, int(math.ceil(x1 + dx))), min(height, int(math.ceil(y1 + dy)))
        if right > left and bottom > top:
            mask[top:bottom, left:right] = True
    return mask


def changed_pixels(original: np.ndarray, anonymized: np.ndarray, tolerance: int) -> np.ndarray:
    """Boolean (H, W) mask of pixels whose largest channel difference exceeds `tolerance` (JPEG noise stays below)."""
    diff = np.abs(original.astype(np.int16) - anonymized.astype(np.int16)).max(axis=2)
    return diff > tolerance
