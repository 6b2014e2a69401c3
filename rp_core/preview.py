"""`rp detect --preview`: the photo with each face's box and the number it has in faces.json.

A reviewer edits faces.json by number (keep, prompt, delete a false detection); the preview
shows which face each number is. Imported only by the command (it pulls in OpenCV).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rp_core.types import Face

#: Box colours: faces the main detector found, and those only the coverage detector found.
MAIN_COLOUR = (0, 220, 0)
COVERAGE_COLOUR = (255, 150, 0)


def draw_faces(image: np.ndarray, faces: Sequence[Face], coverage_from: int) -> np.ndarray:
    """A copy of `image` with face k boxed and labelled `k`; faces from index `coverage_from` on in orange."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    thickness = max(2, round(max(image.shape[:2]) / 400))
    scale = max(0.6, max(image.shape[:2]) / 1000)
    for index, face in enumerate(faces):
        colour = MAIN_COLOUR if index < coverage_from else COVERAGE_COLOUR
        x0, y0, x1, y1 = (round(v) for v in face.box)
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness)
        label = str(index)
        (width, height), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y0 - height - base - 2 * thickness)
        cv2.rectangle(out, (x0, top), (x0 + width + 2 * thickness, top + height + base + thickness), colour, -1)
        cv2.putText(
            out,
            label,
            (x0 + thickness, top + height + thickness),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 0),
            thickness,
        )
    return out
