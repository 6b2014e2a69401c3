"""The affine merger: untouched outside the crop footprints, feathered inside, deterministic on overlaps."""

from __future__ import annotations

import numpy as np
import pytest

from rp_core.align import align_face, align_faces, crop_footprint
from rp_core.types import AlignedFace, Face
from rp_plugins.affine_merger import AffineMerger, AffineMergerOptions
from rp_plugins.dlib_faces import DlibDetector


@pytest.fixture(scope="module")
def t1_aligned(t1: np.ndarray) -> list[AlignedFace]:
    return align_faces(t1, DlibDetector().detect(t1), 256)


@pytest.fixture(scope="module")
def astronaut_face(astronaut: np.ndarray) -> Face:
    return DlibDetector().detect(astronaut)[0]


@pytest.mark.parametrize("region", ["face", "crop"])
def test_pixels_outside_footprints_are_byte_identical(
    t1: np.ndarray, t1_aligned: list[AlignedFace], region: str
) -> None:
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, af.crop.shape, dtype=np.uint8) for af in t1_aligned]
    out = AffineMerger(AffineMergerOptions(region=region)).merge(t1, t1_aligned, crops)
    assert out.shape == t1.shape and out.dtype == np.uint8
    footprints = np.zeros(t1.shape[:2], bool)
    for af in t1_aligned:
        footprints |= crop_footprint(af.matrix, af.size, t1.shape)
    assert np.array_equal(out[~footprints], t1[~footprints])
    changed = (out != t1).any(axis=2)
    for af in t1_aligned:  # every face changed at its centre
        x, y = (round(v) for v in af.face.landmarks[30])
        assert changed[y, x]
    assert not np.shares_memory(out, t1)


def test_face_region_leaves_the_crop_corners_alone(t1: np.ndarray, t1_aligned: list[AlignedFace]) -> None:
    crops = [np.zeros_like(af.crop) for af in t1_aligned]
    out = AffineMerger().merge(t1, t1_aligned, crops)
    changed = (out != t1).any(axis=2)
    footprints = np.zeros(t1.shape[:2], bool)
    for af in t1_aligned:
        footprints |= crop_footprint(af.matrix, af.size, t1.shape)
    assert changed.sum() < 0.6 * footprints.sum()  # only the face ellipse, not the whole squares


def test_no_hard_edge(astronaut_face: Face) -> None:
    image = np.full((512, 512, 3), 200, np.uint8)
    aligned = align_face(image, astronaut_face, 256)
    out = AffineMerger().merge(image, [aligned], [np.zeros_like(aligned.crop)])
    values = out[:, :, 0].astype(np.int16)
    x, y = (round(v) for v in astronaut_face.landmarks[30])
    assert values[y, x] == 0  # full strength on the face
    assert (values == 200).mean() > 0.5  # untouched elsewhere
    steps = max(np.abs(np.diff(values, axis=0)).max(), np.abs(np.diff(values, axis=1)).max())
    assert steps < 40  # a hard edge would step by 200 between neighbouring pixels
    ramp = (values > 5) & (values < 195)
    assert ramp.sum() > 500  # a band of intermediate values all around the face


def test_overlapping_faces_are_merged_deterministically(astronaut: np.ndarray, astronaut_face: Face) -> None:
    shifted = Face((0, 0, 1, 1), 0.5, astronaut_face.landmarks * 0.8 + 40, detector="dlib")  # smaller, overlapping
    faces = [align_face(astronaut, astronaut_face, 256, index=0), align_face(astronaut, shifted, 256, index=1)]
    crops = [np.full_like(faces[0].crop, 30), np.full_like(faces[1].crop, 220)]
    merger = AffineMerger()
    forward = merger.merge(astronaut, faces, crops)
    backward = merger.merge(astronaut, faces[::-1], crops[::-1])
    assert np.array_equal(forward, backward)
    assert np.array_equal(forward, merger.merge(astronaut, faces, crops))
    # the larger face is pasted last, so it wins where both are at full strength
    x, y = (round(v) for v in astronaut_face.landmarks[30])
    assert forward[y, x, 0] == 30


def test_rejects_bad_crops(astronaut: np.ndarray, astronaut_face: Face) -> None:
    aligned = align_face(astronaut, astronaut_face, 256)
    merger = AffineMerger()
    with pytest.raises(ValueError, match="must be uint8"):
        merger.merge(astronaut, [aligned], [np.zeros((128, 128, 3), np.uint8)])
    with pytest.raises(ValueError, match="must be uint8"):
        merger.merge(astronaut, [aligned], [np.zeros((256, 256, 3), np.float32)])
    with pytest.raises(ValueError, match="1 faces but 0 crops"):
        merger.merge(astronaut, [aligned], [])


def test_no_faces_returns_a_copy(astronaut: np.ndarray) -> None:
    out = AffineMerger().merge(astronaut, [], [])
    assert np.array_equal(out, astronaut) and not np.shares_memory(out, astronaut)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="3 x feather"):
        AffineMergerOptions(erode=0.01, feather=0.02)
    with pytest.raises(ValueError):
        AffineMergerOptions.model_validate({"blend": "poisson"})


def test_a_larger_square_never_restores_a_neighbouring_face(
    astronaut: np.ndarray, t1: np.ndarray, reidentifier
) -> None:  # type: ignore[no-untyped-def]
    """region=crop: a big face's whole square carries its small neighbour's original pixels; they must not win."""
    import cv2

    from rp_plugins.obfuscate import Pixelate

    scene = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_CUBIC)
    scene[200:313, 545:655] = cv2.resize(t1[250:420, 35:200], (110, 113), interpolation=cv2.INTER_AREA)
    faces = [f for f in DlibDetector().detect(scene) if f.size > 60]
    aligned = align_faces(scene, faces, 256)
    small = min(aligned, key=lambda a: a.face.size)
    original = reidentifier.descriptors(scene[150:360, 500:700])
    assert len(aligned) >= 2 and original, "the scene must hold the big face and its small neighbour"
    from rp_core.types import GenerationRequest

    crops = Pixelate().generate([GenerationRequest(face=a) for a in aligned])
    merged = AffineMerger(AffineMergerOptions(region="crop")).merge(scene, aligned, crops)
    x0, y0, x1, y1 = (int(v) for v in small.face.box)
    assert np.abs(merged[y0:y1, x0:x1].astype(int) - scene[y0:y1, x0:x1].astype(int)).mean() > 5
    after = reidentifier.descriptors(merged[150:360, 500:700], upsample=1)
    assert all(np.linalg.norm(d - original[0]) > 0.6 for d in after)


@pytest.mark.parametrize("boxes", [False, True])
def test_hidden_faces_get_the_whole_head_mask(t1: np.ndarray, t1_aligned: list[AlignedFace], boxes: bool) -> None:
    """hidden=True pastes the mask_scale mask (ellipse, or rectangle with boxes); redrawn faces the inner one."""
    crops = [np.zeros_like(af.crop) for af in t1_aligned]
    merger = AffineMerger(AffineMergerOptions(boxes=boxes))
    inner = (merger.merge(t1, t1_aligned, crops) != t1).any(axis=2).sum()
    head = (merger.merge(t1, t1_aligned, crops, [True] * len(crops)) != t1).any(axis=2).sum()
    assert head > 1.4 * inner
    ellipse = AffineMerger().merge(t1, t1_aligned, crops, [True] * len(crops))
    if boxes:
        assert head > (ellipse != t1).any(axis=2).sum()  # the rectangle holds the ellipse and its corners
    with pytest.raises(ValueError, match="hidden flags"):
        merger.merge(t1, t1_aligned, crops, [True])


def test_a_hidden_face_is_warped_once_and_its_second_paste_reuses_that_warp(
    t1: np.ndarray, t1_aligned: list[AlignedFace], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cause of a faster merge of hidden faces: the crop and its footprint are warped once per face; the inner
    face's second paste warps only its own mask (the output equals the old two full pastes: checked bit for bit on
    36 merges of the 720p benchmark clip when this changed)."""
    import rp_core.align

    rng = np.random.default_rng(1)
    crops = [rng.integers(0, 256, af.crop.shape, dtype=np.uint8) for af in t1_aligned]
    merger = AffineMerger()
    hidden = [True] * len(t1_aligned)
    calls: list[int] = []
    warp = rp_core.align.warp_to_image
    monkeypatch.setattr(rp_core.align, "warp_to_image", lambda *a, **k: calls.append(1) or warp(*a, **k))
    out = merger.merge(t1, t1_aligned, crops, hidden)
    assert len(calls) == 4 * len(t1_aligned)  # crop, footprint, head mask; then the inner face's mask alone
    monkeypatch.undo()
    assert np.array_equal(merger.merge(t1, t1_aligned, crops, hidden), out)  # deterministic
    changed = (out != t1).any(axis=2)
    for af in t1_aligned:  # every face hidden at its centre
        x, y = (round(v) for v in af.face.landmarks[30])
        assert changed[y, x]
