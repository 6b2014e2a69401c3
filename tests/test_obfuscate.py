"""Obfuscation generators, end to end through the Anonymizer: no face stays recognisable to dlib."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rp_core.align import align_face
from rp_core.config import resolve_config
from rp_core.orchestrator import Anonymizer
from rp_core.types import GenerationRequest
from rp_plugins._facemask import HEAD_SCALE, face_region
from rp_plugins.dlib_faces import DlibDetector
from rp_plugins.obfuscate import (
    Blur,
    BlurOptions,
    BoxBlur,
    BoxBlurOptions,
    Pixelate,
    PixelateOptions,
    Solid,
    SolidOptions,
)

GENERATORS = ["pixelate", "blur", "boxblur", "solid"]


def offline_config(host, generator: str):  # type: ignore[no-untyped-def]
    """The offline preset with another generator; the diffusion slots are emptied (not loaded in these tests)."""
    overrides = ["inverter.name=null", f"generator.name={generator}"]  # the preset verifies with dlib
    return resolve_config(host, preset="offline", overrides=overrides, environ={})


@pytest.fixture(scope="module")
def originals(t1: np.ndarray, astronaut: np.ndarray, reidentifier) -> dict[str, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    found = {"t1": reidentifier.descriptors(t1), "astronaut": reidentifier.descriptors(astronaut)}
    assert (len(found["t1"]), len(found["astronaut"])) == (6, 1)
    return found


@pytest.mark.parametrize("generator", GENERATORS)
def test_faces_are_not_reidentified(generator: str, host, t1, astronaut, originals, reidentifier) -> None:  # type: ignore[no-untyped-def]
    config = offline_config(host, generator)
    assert (config.detector.name, config.merger.name) == ("centerface", "affine")
    anonymizer = Anonymizer(config, host)
    assert anonymizer.sections_in_use() == ["detector", "generator", "merger"]
    for name, image in (("t1", t1), ("astronaut", astronaut)):
        result = anonymizer.anonymize(image)
        assert result.face_count == len(originals[name])
        assert all(r.action == "obfuscated" and r.generator == generator for r in result.records)
        # the attacker upsamples once to look harder than the pipeline's own detector did
        found = reidentifier.descriptors(result.image, upsample=1)
        for original in originals[name]:
            distances = [float(np.linalg.norm(original - d)) for d in found]
            assert min(distances, default=np.inf) > reidentifier.threshold, (name, distances)


def test_offline_preset_is_pixelate(host) -> None:  # type: ignore[no-untyped-def]
    assert (
        resolve_config(host, preset="offline", overrides=["inverter.name=null"], environ={}).generator.name
        == "pixelate"
    )


@pytest.fixture(scope="module")
def request_(astronaut: np.ndarray) -> GenerationRequest:
    face = DlibDetector().detect(astronaut)[0]
    return GenerationRequest(face=align_face(astronaut, face, 256))


@pytest.mark.parametrize(
    "generator",
    [
        Pixelate(),
        Pixelate(PixelateOptions(blocks=12)),
        Blur(),
        Blur(BlurOptions(strength=0.05)),
        BoxBlur(),
        BoxBlur(BoxBlurOptions(kernel=0.2)),
        Solid(),
        Solid(SolidOptions(color=(255, 0, 0))),
    ],
    ids=lambda g: f"{g.name}-{next(iter(g.options.model_dump().values()))}",
)
def test_the_whole_crop_is_obfuscated(generator, request_: GenerationRequest) -> None:  # type: ignore[no-untyped-def]
    """The generator hides the whole crop; the merger decides the shape (so one mask_scale serves all)."""
    crop = request_.face.crop
    (new,) = generator.generate([request_])
    assert new.shape == crop.shape and new.dtype == np.uint8
    head = face_region(request_.face, scale=1.3)
    assert (new[head] != crop[head]).any(axis=1).mean() > 0.5
    assert not generator.needs_identity and not generator.needs_inversion


def test_boxblur_averages_the_head_over_its_own_window(request_: GenerationRequest) -> None:
    """deface's blur: the head's window is averaged from its own pixels only (nothing of the hair or background
    around it bleeds in), into a far smoother patch than the face was."""
    face = request_.face
    rows, cols = np.nonzero(face_region(face, scale=HEAD_SCALE))
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    (new,) = BoxBlur().generate([request_])
    painted = np.array(face.crop)
    outside = np.ones(painted.shape[:2], dtype=bool)
    outside[top:bottom, left:right] = False
    painted[outside] = 255
    (new_painted,) = BoxBlur().generate([GenerationRequest(face=replace(face, crop=painted))])
    assert np.array_equal(new[top:bottom, left:right], new_painted[top:bottom, left:right])
    assert not np.array_equal(new[outside], new_painted[outside]), "outside the window the crop is blurred too"
    window, blurred = face.crop[top:bottom, left:right].astype(float), new[top:bottom, left:right].astype(float)
    roughness = [np.abs(np.diff(w, axis=0)).mean() + np.abs(np.diff(w, axis=1)).mean() for w in (window, blurred)]
    assert roughness[1] < 0.1 * roughness[0], roughness


def test_boxblur_widens_for_each_retry_up_to_the_whole_window() -> None:
    kernels = []
    for attempt in (1, 2, 3):
        stronger = BoxBlur().stronger(attempt, 1.5)
        kernels.append(None if stronger is None else stronger.options.kernel)
    assert kernels == [0.75, 1.0, 1.0]
    assert BoxBlur(BoxBlurOptions(kernel=1.0)).stronger(1, 1.5) is None


def test_solid_fills_with_its_colour(request_: GenerationRequest) -> None:
    (new,) = Solid(SolidOptions(color=(255, 0, 0))).generate([request_])
    assert (new == (255, 0, 0)).all()


def test_batch_of_requests(request_: GenerationRequest) -> None:
    outputs = Pixelate().generate([request_, request_, request_])
    assert len(outputs) == 3 and all(np.array_equal(outputs[0], o) for o in outputs)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError):
        PixelateOptions.model_validate({"block": 8})
    with pytest.raises(ValueError):
        SolidOptions.model_validate({"color": [0, 0, 300]})
    with pytest.raises(ValueError):
        BlurOptions(strength=0)
    with pytest.raises(ValueError):
        BoxBlurOptions(kernel=0.05)
    with pytest.raises(ValueError):  # the merger owns the mask: one --mask-scale for every generator
        PixelateOptions.model_validate({"mask_scale": 1.3})


def _alpha_at(alpha: np.ndarray, point: np.ndarray) -> float:
    x, y = (int(round(v)) for v in point)
    return float(alpha[y, x])


@pytest.mark.parametrize("name", ["t1", "astronaut"])
def test_offline_preset_hides_the_whole_head(name: str, host, t1, astronaut, originals, reidentifier) -> None:  # type: ignore[no-untyped-def]
    """deface's default: the mask covers the jaw line and the hair line; nobody is re-identified."""
    import cv2

    from rp_core.align import align_faces, warp_to_image

    image = {"t1": t1, "astronaut": astronaut}[name]
    anonymizer = Anonymizer(offline_config(host, "pixelate"), host)
    result = anonymizer.anonymize(image)
    merger = anonymizer.merger
    assert merger.options.mask_scale == 1.3 and not merger.options.boxes
    aligned = align_faces(image, [DlibDetector().detect(image)[r.index] for r in result.records], 256)
    assert len(aligned) == len(originals[name])
    changed = (result.image != image).any(axis=2)
    for face in aligned:
        alpha = warp_to_image(merger.alpha(face, hidden=True), face.matrix, image.shape[:2], cv2.INTER_LINEAR)
        landmarks = face.face.landmarks
        assert min(_alpha_at(alpha, p) for p in landmarks[0:17]) > 0.9, "the jaw line is inside the mask"
        brows, chin = landmarks[17:27].mean(axis=0), landmarks[8]
        hair_line = brows + (brows - chin) * 0.4  # face thirds: the hair line is ~half a brow-chin above the brows
        assert _alpha_at(alpha, hair_line) > 0.5
        # the output really changed there (pixelation of the forehead and of the jaw line)
        for point in (hair_line, landmarks[3], landmarks[13]):
            x, y = (int(round(v)) for v in point)
            assert changed[max(0, y - 3) : y + 4, max(0, x - 3) : x + 4].any()
    found = reidentifier.descriptors(result.image, upsample=1)
    for original in originals[name]:
        distances = [float(np.linalg.norm(original - d)) for d in found]
        assert min(distances, default=np.inf) > reidentifier.threshold, distances
    escalated = [r for r in result.records if r.notes.get("verify", {}).get("last_resort")]
    assert not escalated, "with the whole head hidden, no face needs the solid last resort"


def test_the_inner_mask_scale_changes_far_less(host, t1) -> None:  # type: ignore[no-untyped-def]
    """--mask-scale reaches the merger: 1.0 (brows to chin) changes clearly fewer pixels than the default 1.3."""
    whole = Anonymizer(offline_config(host, "solid"), host).anonymize(t1).image
    config = resolve_config(
        host,
        preset="offline",
        overrides=["inverter.name=null", "generator.name=solid"],
        flags={"mask_scale": 1.0},
        environ={},
    )
    inner = Anonymizer(config, host).anonymize(t1).image
    assert config.merger.options["mask_scale"] == 1.0
    assert (whole != t1).any(axis=2).sum() > 1.5 * (inner != t1).any(axis=2).sum()


@pytest.mark.e2e
def test_faces_of_a_rotated_photo_are_pixelated_like_their_neighbours(host, t1) -> None:  # type: ignore[no-untyped-def]
    """Issue 20, item 6: a real face of a turned photo became a black oval (solid) beside pixelated ones; with the
    whole-head mask none needs the last resort (measured: t1 turned by 90, 180 and 270 degrees, 6/6 pixelated each)."""
    result = Anonymizer(offline_config(host, "pixelate"), host).anonymize(np.ascontiguousarray(np.rot90(t1)))
    assert result.face_count == 6
    assert [r.generator for r in result.records] == ["pixelate"] * 6
    assert not any(r.notes.get("verify", {}).get("last_resort") for r in result.records)


def _scaled(image: np.ndarray, factor: float) -> np.ndarray:
    import cv2

    return np.ascontiguousarray(cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA))


def test_small_faces_get_fewer_larger_blocks_and_the_smallest_a_smoothed_mosaic(t1: np.ndarray) -> None:
    """Blocks never under `min_block` image pixels: t1's ~100-px faces keep 6 blocks, the same faces at a third
    of the size get 2 (at least) and, too small for two such blocks, a smoothed mosaic; `min_block=0` always
    gives `blocks`."""
    from rp_plugins.centerface import CenterFaceDetector

    pixelate, fixed = Pixelate(), Pixelate(PixelateOptions(min_block=0))
    for factor, smallest, largest in ((1.0, 6, 6), (0.5, 3, 4), (0.3, 2, 2)):
        image = _scaled(t1, factor)
        faces = [align_face(image, f, 256) for f in CenterFaceDetector().detect(image)]
        assert len(faces) == 6
        blocks = [pixelate.blocks_for(f) for f in faces]
        assert smallest <= min(blocks) and max(blocks) <= largest, (factor, blocks)
        assert all(fixed.blocks_for(f) == 6 for f in faces)
        crops = pixelate.generate([GenerationRequest(face=f) for f in faces])
        for face, crop, count in zip(faces, crops, blocks, strict=True):
            grid = max(2, round(count / 0.6))
            row_changes = int((np.diff(crop.astype(int), axis=0) != 0).any(axis=(1, 2)).sum())
            if pixelate.smoothed(face):  # a gradient between the block colours: no hard edges left
                assert factor < 1 and row_changes > 4 * grid
            else:  # a mosaic: the colour changes only between blocks
                assert row_changes <= grid - 1


@pytest.mark.parametrize("factor", [0.33, 0.2, 0.125])
def test_small_faces_are_hidden_at_the_first_obfuscation(factor: float, host, t1, reidentifier) -> None:  # type: ignore[no-untyped-def]
    """Issue 18: t1 at a third, a fifth and an eighth of its size (faces ~40, ~24 and ~15 px). Pixelated in 6
    blocks, such faces were found again by the check and read (a third and a fifth: 3 of 6 each), and some
    still matched (an eighth: 4 retried, two of them filled black after the fallback); with blocks of at least `min_block` pixels
    the first obfuscation holds: the check finds no face on the output, no face needs a retry, the fallback or
    the fill, and the independent attacker, who identifies the people of the unprotected photo, identifies
    nobody. (At a quarter, a neck beside two faces is still found and sent to the fill: benchmarks/RESULTS.md.)"""
    image = _scaled(t1, factor)
    originals = reidentifier.descriptors(t1)
    if factor > 0.2:  # at an eighth, faces of ~15 px are too small for the attacker's HOG even unprotected
        unprotected = reidentifier.descriptors(image, upsample=2)
        assert sum(min(np.linalg.norm(o - d) for o in originals) < reidentifier.threshold for d in unprotected) >= 5
    result = Anonymizer(offline_config(host, "pixelate"), host).anonymize(image)
    assert result.face_count == 6
    for record in result.records:
        verify = record.notes["verify"]
        assert record.generator == "pixelate"
        assert (verify["retries"], verify["fallback"], verify["last_resort"]) == (0, None, None), verify
        assert "score_found" not in verify, verify  # nothing on the output a detector reads as a face
    found = reidentifier.descriptors(result.image, upsample=2)
    for original in originals:
        distances = [float(np.linalg.norm(original - d)) for d in found]
        assert min(distances, default=np.inf) > reidentifier.threshold, distances
