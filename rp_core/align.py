"""Face alignment: landmarks -> affine matrix -> square "whole face" crop, and back.

The crop is the reference method's: a similarity fit (Umeyama) of landmarks 17-48
and 54 to a unit mean face, a square around it padded by 0.40, its centre moved 7%
towards the forehead, then a 3-point affine map to a `size` x `size` square.
The same matrix, inverted, pastes the face back.
"""

from __future__ import annotations

from functools import partial

import cv2
import numpy as np

from rp_core.types import AlignedFace, Face, five_points_from

#: Mean face in a unit square for iBUG landmarks 17..48 and 54 (x right, y down).
MEAN_FACE_33 = np.array(
    [
        [0.000213256, 0.106454],
        [0.0752622, 0.038915],
        [0.18113, 0.0187482],
        [0.29077, 0.0344891],
        [0.393397, 0.0773906],
        [0.586856, 0.0773906],
        [0.689483, 0.0344891],
        [0.799124, 0.0187482],
        [0.904991, 0.038915],
        [0.98004, 0.106454],
        [0.490127, 0.203352],
        [0.490127, 0.307009],
        [0.490127, 0.409805],
        [0.490127, 0.515625],
        [0.36688, 0.587326],
        [0.426036, 0.609345],
        [0.490127, 0.628106],
        [0.554217, 0.609345],
        [0.613373, 0.587326],
        [0.121737, 0.216423],
        [0.187122, 0.178758],
        [0.265825, 0.179852],
        [0.334606, 0.231733],
        [0.260918, 0.245099],
        [0.182743, 0.244077],
        [0.645647, 0.231733],
        [0.714428, 0.179852],
        [0.793132, 0.178758],
        [0.858516, 0.216423],
        [0.79751, 0.244077],
        [0.719335, 0.245099],
        [0.254149, 0.780233],
        [0.726104, 0.780233],
    ],
    dtype=np.float64,
)
_MEAN_FACE_ROWS = list(range(17, 49)) + [54]

#: The same mean face reduced to ArcFace's 5 points, for detectors that give only those.
MEAN_FACE_5 = np.stack(
    [
        MEAN_FACE_33[19:25].mean(axis=0),  # left eye: landmarks 36-41
        MEAN_FACE_33[25:31].mean(axis=0),  # right eye: landmarks 42-47
        MEAN_FACE_33[13],  # nose tip: landmark 30
        MEAN_FACE_33[31],  # left mouth corner: landmark 48
        MEAN_FACE_33[32],  # right mouth corner: landmark 54
    ]
)

WHOLE_FACE_PADDING = 0.40
FOREHEAD_SHIFT = 0.07
CROP_BORDER_VALUE = (255, 255, 255)


def similarity_to_mean_face(landmarks: np.ndarray) -> np.ndarray:
    """2x3 similarity (Umeyama, with scale) from image points to the unit mean face."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape == (68, 2):
        src, dst = points[_MEAN_FACE_ROWS], MEAN_FACE_33
    elif points.shape == (5, 2):
        src, dst = points, MEAN_FACE_5
    else:
        raise ValueError(f"need 68 or 5 landmarks, got shape {points.shape}")
    return umeyama(src, dst)


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, shift) taking `src` points onto `dst`.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point
    patterns", eq. 34-42: the rotation from the SVD of the points' cross-covariance, a reflection
    ruled out by the sign of its determinant. Written here, not taken from scikit-image, whose import
    pulls in SciPy: ~0.4 s of every process (tests/test_align.py checks both agree to 1e-12).
    """
    n = len(src)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_centred, dst_centred = src - src_mean, dst - dst_mean
    covariance = dst_centred.T @ src_centred / n
    signs = np.ones(2)
    if np.linalg.det(covariance) < 0:
        signs[1] = -1.0
    u, singular, vt = np.linalg.svd(covariance)
    variance = float(src_centred.var(axis=0).sum())
    if not np.all(np.isfinite(covariance)) or variance <= 0 or np.linalg.matrix_rank(covariance) == 0:
        raise ValueError("landmarks are degenerate; cannot fit a similarity transform")
    rotation = u @ np.diag(signs) @ vt
    scale = float(singular @ signs) / variance
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def estimate_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """Affine matrix mapping image pixels to a `size` x `size` whole-face crop."""
    to_unit = similarity_to_mean_face(landmarks)
    from_unit = cv2.invertAffineTransform(to_unit)
    corners = _apply(from_unit, np.array([(0, 0), (1, 0), (1, 1), (0, 1), (0.5, 0.5)], dtype=np.float64))
    centre = corners[4].copy()
    diag_down = corners[2] - corners[0]
    diag_down /= np.linalg.norm(diag_down)
    diag_up = corners[1] - corners[3]
    diag_up /= np.linalg.norm(diag_up)
    half_diag = np.linalg.norm(corners[0] - corners[2]) * (WHOLE_FACE_PADDING * np.sqrt(2.0) + 0.5)
    upward = corners[0] - corners[3]
    centre += upward * FOREHEAD_SHIFT
    src = np.array([centre - diag_down * half_diag, centre + diag_up * half_diag, centre + diag_down * half_diag])
    dst = np.array([(0, 0), (size, 0), (size, size)], dtype=np.float64)
    return np.asarray(cv2.getAffineTransform(src.astype(np.float32), dst.astype(np.float32)), dtype=np.float64)


def warp_to_crop(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Cut the aligned square out of the image (Lanczos; outside the image is white)."""
    return cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_LANCZOS4,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=CROP_BORDER_VALUE,
    )


def warp_to_image(
    crop: np.ndarray, matrix: np.ndarray, image_shape: tuple[int, ...], interpolation: int = cv2.INTER_LANCZOS4
) -> np.ndarray:
    """Warp a crop (or a float mask) back into image coordinates with the inverse of `matrix`."""
    height, width = image_shape[:2]
    return cv2.warpAffine(
        crop,
        matrix,
        (width, height),
        flags=interpolation | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def crop_footprint(matrix: np.ndarray, size: int, image_shape: tuple[int, ...]) -> np.ndarray:
    """Boolean mask of the image pixels covered by the crop square."""
    square = np.ones((size, size), dtype=np.uint8)
    return warp_to_image(square, matrix, image_shape, interpolation=cv2.INTER_NEAREST).astype(bool)


def align_face(image: np.ndarray, face: Face, size: int, index: int = 0, deferred: bool = False) -> AlignedFace:
    """The face's aligned crop; `deferred`: warped only when first read (the image must not change until then)."""
    matrix = estimate_matrix(face.landmarks, size)
    if deferred:
        return AlignedFace.deferred(face, matrix, size, partial(warp_to_crop, image, matrix, size), index)
    return AlignedFace(face=face, crop=warp_to_crop(image, matrix, size), matrix=matrix, index=index)


def align_faces(image: np.ndarray, faces: list[Face], size: int, deferred: bool = False) -> list[AlignedFace]:
    return [align_face(image, face, size, i, deferred) for i, face in enumerate(faces)]


def aligned_input(image: np.ndarray, size: int, face: Face | None = None) -> AlignedFace:
    """Treat the whole image as one already-aligned face (the reference's `enable_face_detection=False`).

    Without a detected face, the 5 landmarks are placed where the mean face sits in an aligned crop.
    """
    height, width = image.shape[:2]
    matrix = np.array([[size / width, 0, 0], [0, size / height, 0]], dtype=np.float64)
    if face is None:
        crop_points = _apply(estimate_matrix(MEAN_FACE_5, size), MEAN_FACE_5)
        image_points = _apply(cv2.invertAffineTransform(matrix), crop_points)
        face = Face(box=(0, 0, width, height), score=1.0, landmarks=image_points, detector="aligned-input")
    crop = (
        image if (height, width) == (size, size) else cv2.resize(image, (size, size), interpolation=cv2.INTER_LANCZOS4)
    )
    return AlignedFace(face=face, crop=crop, matrix=matrix, index=0)


__all__ = [
    "MEAN_FACE_33",
    "MEAN_FACE_5",
    "align_face",
    "align_faces",
    "aligned_input",
    "crop_footprint",
    "estimate_matrix",
    "five_points_from",
    "similarity_to_mean_face",
    "warp_to_crop",
    "warp_to_image",
]
