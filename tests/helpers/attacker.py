"""The attacker of the fail-closed tests: an independent recognizer that searches a whole output every way.

Built straight from dlib and face_recognition_models (conftest's `Reidentifier`: HOG detector, 68-point
predictor, 128-d ResNet descriptor), not through rp's plugins or its verifier: it looks at the whole
output, turned by 0/90/180/270 degrees, each also mirrored, at its size and upsampled 2x, and compares
every face it finds with every person of the input photos. A person is identified when some face is
within dlib's 0.6 of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def views(image: np.ndarray) -> list[np.ndarray]:
    """The image in 4 quarter turns, each as it is and mirrored."""
    turned = [np.ascontiguousarray(np.rot90(image, k)) for k in range(4)]
    return [*turned, *(np.ascontiguousarray(t[:, ::-1]) for t in turned)]


def faces_seen(reidentifier: Any, image: np.ndarray, upscale_below: int = 1400) -> list[np.ndarray]:
    """The descriptor of every face found in any view, at 1x and (for images under `upscale_below` px) 2x."""
    import cv2

    found: list[np.ndarray] = []
    for view in views(image):
        found += reidentifier.descriptors(view)
        if max(image.shape[:2]) < upscale_below:
            found += reidentifier.descriptors(cv2.resize(view, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    return found


def people(reidentifier: Any, *photos: np.ndarray) -> list[np.ndarray]:
    """Every person of the input photos (upright, as the photos are), one descriptor each."""
    return [d for photo in photos for d in reidentifier.descriptors(photo)]


def distances(reidentifier: Any, image: np.ndarray, persons: Sequence[np.ndarray]) -> list[float]:
    """For each person, the distance to the nearest face the attacker finds anywhere in `image`."""
    found = faces_seen(reidentifier, image)
    return [min((float(np.linalg.norm(p - d)) for d in found), default=np.inf) for p in persons]


def identified(reidentifier: Any, image: np.ndarray, persons: Sequence[np.ndarray]) -> int:
    """How many of `persons` the attacker identifies in `image`."""
    return sum(d < reidentifier.threshold for d in distances(reidentifier, image, persons))
