"""Box geometry (rp_core.geometry): the one place detection, verification and evaluation measure boxes."""

from __future__ import annotations

import numpy as np
import pytest

from rp_core.align import align_face
from rp_core.geometry import (
    box_region,
    box_through,
    centre_inside,
    footprint,
    iou,
    region_window,
    same_face,
    same_face_any_detector,
    tiles,
)
from rp_core.types import Face


def test_iou_of_equal_disjoint_and_half_shifted_boxes() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0  # empty boxes: no division by zero


def test_same_face_counts_a_box_inside_another_as_the_same_place() -> None:
    outer, inner = (0.0, 0.0, 100.0, 100.0), (10.0, 10.0, 50.0, 50.0)
    assert iou(outer, inner) < 0.3
    assert same_face(outer, inner, iou_threshold=0.3, containment=0.8)
    assert not same_face(outer, (90.0, 90.0, 130.0, 130.0), iou_threshold=0.3, containment=0.8)


def test_same_face_any_detector_accepts_another_detectors_box_convention() -> None:
    tight = (100.0, 100.0, 200.0, 200.0)
    assert same_face_any_detector(tight, (85.0, 70.0, 215.0, 230.0))  # larger box with forehead and chin
    assert not same_face_any_detector(tight, (300.0, 100.0, 400.0, 200.0))
    assert not same_face_any_detector(tight, (140.0, 140.0, 160.0, 160.0))  # a much smaller face inside


def test_centre_inside_and_windows_clip_to_the_image() -> None:
    assert centre_inside((40.0, 40.0, 60.0, 60.0), (0.0, 0.0, 55.0, 55.0))
    assert not centre_inside((40.0, 40.0, 80.0, 80.0), (0.0, 0.0, 55.0, 55.0))
    rows, cols = box_region((50, 80, 3), (-5.2, 10.5, 90.0, 20.0))
    assert (rows, cols) == (slice(10, 20), slice(0, 80))
    assert region_window((10.0, 10.0, 20.0, 20.0), (50, 80, 3), margin=0.5) == (5, 5, 25, 25)
    assert region_window((-30.0, -30.0, -20.0, -20.0), (50, 80, 3), margin=0.0) == (0, 0, 1, 1)  # never empty


def test_tiles_cover_every_pixel() -> None:
    covered = np.zeros((300, 500), dtype=bool)
    for x0, y0, x1, y1 in tiles((300, 500), 200, 0.25):
        assert x1 - x0 <= 200 and y1 - y0 <= 200
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_footprint_holds_the_face_box_and_box_through_maps_corners() -> None:
    landmarks = np.array([[40.0, 50.0], [60.0, 50.0], [50.0, 60.0], [42.0, 70.0], [58.0, 70.0]])
    face = Face(box=(30.0, 35.0, 70.0, 80.0), score=1.0, landmarks=landmarks)
    aligned = align_face(np.zeros((120, 100, 3), np.uint8), face, 64)
    x0, y0, x1, y1 = footprint(aligned, (120, 100, 3))
    assert x0 <= 40 and y0 <= 50 and x1 >= 60 and y1 >= 70  # the landmarks lie inside what the crop can change
    assert 0 <= x0 and 0 <= y0 and x1 <= 100 and y1 <= 120
    assert box_through((0.0, 0.0, 10.0, 20.0), lambda p: p * 2 + 1) == (1.0, 1.0, 21.0, 41.0)


def test_the_output_search_region_is_the_changed_pixels_and_the_face_with_room_around_it() -> None:
    """Unchanged pixels were searched on the input: the output search looks only where pixels changed, and always
    at the face itself (grown a quarter each way), even when almost nothing of it changed."""
    from rp_core.geometry import changed_box

    original = np.zeros((400, 400, 3), np.uint8)
    output = original.copy()
    output[150:260, 140:300] = 200  # the paste: wider than the face
    region = (100.0, 100.0, 350.0, 350.0)  # the crop's footprint: larger than what changed
    face = (160.0, 160.0, 240.0, 240.0)
    assert changed_box(original, output, region, face) == (140.0, 140.0, 300.0, 260.0)
    untouched = original.copy()
    untouched[200, 200] = 1  # a "leak" that changes one pixel: the face is still searched, with room around it
    assert changed_box(original, untouched, region, face) == (140.0, 140.0, 260.0, 260.0)
    assert changed_box(original, untouched, region, (0.0, 0.0, 40.0, 40.0)) == (0.0, 0.0, 201.0, 201.0)
