"""Fail closed: a generator that leaks the original face never gets a recognisable face out.

The leaking generators are real components registered through the real hooks for one
test; whether a face is still recognisable is judged by conftest's `reidentifier`, built
straight from dlib's descriptor, not through rp's plugins or its verifier.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import Field

from rp_core import hookimpl
from rp_core.cli import create_cli
from rp_core.config import resolve_config
from rp_core.errors import ConfigError, VerificationError
from rp_core.interfaces import ComponentOptions, Detector, Generator
from rp_core.io import read_image, write_image
from rp_core.orchestrator import Anonymizer
from rp_core.types import Face, GenerationRequest
from rp_core.verify import iou, missed_faces, region_unchanged


class LeakGenerator(Generator):
    """Hands back the original crop: every face leaves exactly as it came in."""

    name = "leak"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        return [np.array(r.face.crop) for r in requests]


class WeakOptions(ComponentOptions):
    guidance_scale: float = Field(-10.0, ge=-100.0, le=100.0)


class WeakGenerator(Generator):
    """Leaks unless pushed harder than |guidance| 12; then fills the face grey. Records the seeds it saw."""

    name = "weak"
    Options: ClassVar[type[ComponentOptions]] = WeakOptions
    seeds: ClassVar[list[int]] = []

    def stronger(self, attempt: int, factor: float) -> WeakGenerator:
        """Declared capability: retries scale the guidance (as the diffusion generator does)."""
        options = WeakOptions(guidance_scale=self.options.guidance_scale * factor**attempt)  # type: ignore[attr-defined]
        return WeakGenerator(options, self.context)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        from rp_plugins._facemask import face_region

        out = []
        for r in requests:
            WeakGenerator.seeds.append(r.seed)
            crop = np.array(r.face.crop)
            if abs(self.options.guidance_scale) > 12:  # type: ignore[attr-defined]
                crop[face_region(r.face)] = 128
            out.append(crop)
        return out


class BlindDetector(Detector):
    """Finds nothing: the main detector that misses every face."""

    name = "blind"

    def detect(self, image: np.ndarray) -> list[Face]:
        return []


class LeakPlugin:
    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        register(LeakGenerator)
        register(WeakGenerator)

    @hookimpl
    def rp_register_detectors(self, register: Callable[[type], None]) -> None:
        register(BlindDetector)


@pytest.fixture
def leak_host(host):  # type: ignore[no-untyped-def]
    name = host.register_plugin(LeakPlugin(), name="test-leak")
    try:
        yield host
    finally:
        host.unregister_plugin(name)


@pytest.fixture(scope="module")
def originals(t1: np.ndarray, astronaut: np.ndarray, reidentifier) -> dict[str, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    found = {"t1": reidentifier.descriptors(t1), "astronaut": reidentifier.descriptors(astronaut)}
    assert (len(found["t1"]), len(found["astronaut"])) == (6, 1)
    return found


def _config(host, *overrides: str):  # type: ignore[no-untyped-def]
    return resolve_config(host, preset="offline", overrides=["generator.name=leak", *overrides], environ={})


def _assert_nobody_recognised(reidentifier, output: np.ndarray, originals: list[np.ndarray]) -> list[float]:  # type: ignore[no-untyped-def]
    """Every original face is either not found on the output or farther than dlib's 0.6."""
    found = reidentifier.descriptors(output, upsample=1)  # the attacker looks harder than the pipeline did
    nearest = [min((float(np.linalg.norm(o - d)) for d in found), default=np.inf) for o in originals]
    assert all(d > reidentifier.threshold for d in nearest), nearest
    return nearest


@pytest.fixture
def images(t1: np.ndarray, astronaut: np.ndarray) -> dict[str, np.ndarray]:
    return {"t1": t1, "astronaut": astronaut}


def test_the_leaking_generator_really_leaks_when_verification_is_off(
    leak_host, images, originals, reidentifier
) -> None:  # type: ignore[no-untyped-def]
    anonymizer = Anonymizer(_config(leak_host, "verify.enabled=false"), leak_host)
    for name, image in images.items():
        result = anonymizer.anonymize(image)
        found = reidentifier.descriptors(result.image, upsample=1)
        nearest = [min(float(np.linalg.norm(o - d)) for d in found) for o in originals[name]]
        assert max(nearest) < 0.3, nearest  # every face is recognised: the test generator is a real leak


def test_default_policy_catches_every_leak(leak_host, images, originals, reidentifier) -> None:  # type: ignore[no-untyped-def]
    config = _config(leak_host)
    assert config.verify.enabled and config.verify.policy == "retry"  # the defaults, untouched
    anonymizer = Anonymizer(config, leak_host)
    # the verification threshold has a margin past dlib's 0.6 match threshold (fail closed round 2, finding 9)
    assert anonymizer.verifier.name == "dlib" and anonymizer.verifier.threshold == 0.65
    caught = 0
    for name, image in images.items():
        result = anonymizer.anonymize(image)
        assert result.face_count == len(originals[name])
        for record in result.records:
            verify = record.notes["verify"]
            assert verify["score_first"] < 0.3 and verify["retries"] == 0  # leak gave the same face back
            assert verify["fallback"] == "pixelate" and record.generator == "pixelate"
            # the pixelated face: no detector finds a face there (None), or what it finds reads as someone else
            assert verify["score_final"] is None or verify["score_final"] > 0.65
            assert not verify["leak"]
            caught += 1
        _assert_nobody_recognised(reidentifier, result.image, originals[name])
    assert caught == 7  # 6 faces in t1, 1 in astronaut: 100 %


def test_retry_uses_stronger_guidance_and_a_new_seed(leak_host, astronaut, originals, reidentifier) -> None:  # type: ignore[no-untyped-def]
    WeakGenerator.seeds.clear()
    anonymizer = Anonymizer(_config(leak_host, "generator.name=weak", "runtime.seed=3"), leak_host)
    result = anonymizer.anonymize(astronaut)
    verify = result.records[0].notes["verify"]
    assert verify["retries"] == 1 and verify["fallback"] is None and result.records[0].generator == "weak"
    assert WeakGenerator.seeds == [3, 4]  # first run, then one retry with guidance -15 and seed + 1
    _assert_nobody_recognised(reidentifier, result.image, originals["astronaut"])


def test_policy_fail_raises_and_a_generator_without_guidance_goes_straight_to_fallback(leak_host, astronaut) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(VerificationError, match="1 of 1 faces still match"):
        Anonymizer(_config(leak_host, "verify.policy=fail"), leak_host).anonymize(astronaut)
    result = Anonymizer(_config(leak_host, "verify.policy=fallback"), leak_host).anonymize(astronaut)
    assert result.records[0].notes["verify"]["fallback"] == "pixelate"


def test_a_fallback_that_still_leaks_gets_the_last_resort_or_fails(
    leak_host, astronaut, originals, reidentifier
) -> None:  # type: ignore[no-untyped-def]
    result = Anonymizer(_config(leak_host, "verify.fallback_generator=leak"), leak_host).anonymize(astronaut)
    verify = result.records[0].notes["verify"]
    assert verify["fallback"] == "leak" and verify["last_resort"] == "solid" and result.records[0].generator == "solid"
    assert not verify["leak"]  # the fill passed its own check: no face found there that reads as anyone
    assert verify["score_final"] is None or verify["score_final"] >= verify["threshold"]
    _assert_nobody_recognised(reidentifier, result.image, originals["astronaut"])
    anonymizer = Anonymizer(_config(leak_host, "verify.fallback_generator=leak", "verify.last_resort=null"), leak_host)
    with pytest.raises(VerificationError, match=r"face 0: distance 0\.[0-2]"):  # the leaked face, resampled
        anonymizer.anonymize(astronaut)


def test_a_last_resort_that_still_matches_refuses_the_image(leak_host, astronaut) -> None:  # type: ignore[no-untyped-def]
    """The last resort's result is checked like any other: never marked safe while it still matches."""
    overrides = ("verify.fallback_generator=leak", "verify.last_resort=leak")
    with pytest.raises(VerificationError, match=r"and the last resort: face 0: distance 0\.[0-2]"):
        Anonymizer(_config(leak_host, *overrides), leak_host).anonymize(astronaut)


def test_policy_fail_writes_nothing_and_exits_5(leak_host, tmp_path: Path, t1, astronaut) -> None:  # type: ignore[no-untyped-def]
    source, out = tmp_path / "in", tmp_path / "out"
    write_image(source / "t1.png", t1)
    write_image(source / "astronaut.png", astronaut)
    write_image(source / "plain.png", np.full((40, 60, 3), 120, np.uint8))
    cli = create_cli(leak_host)
    args = ["anonymize", str(source), "-o", str(out), "--preset", "offline", "--generator", "leak"]
    result = CliRunner().invoke(cli, [*args, "--set", "verify.policy=fail"])
    assert result.exit_code == 5, result.output
    assert "Traceback" not in result.output and "still match their original" in result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == ["manifest.json", "plain.png"]  # no face, nothing to leak; the two photos are refused
    manifest = json.loads((out / "manifest.json").read_text())
    statuses = {Path(e["input"]).name: e["status"] for e in manifest["images"]}
    assert statuses == {"astronaut.png": "verification_failed", "t1.png": "verification_failed", "plain.png": "no_face"}

    default = CliRunner().invoke(cli, [*args, "--overwrite"])  # the default policy fixes them instead
    assert default.exit_code == 0, default.output
    manifest = json.loads((out / "manifest.json").read_text())
    faces = [f for e in manifest["images"] for f in e["faces"]]
    assert len(faces) == 7 and all(f["notes"]["verify"]["fallback"] == "pixelate" for f in faces)
    assert read_image(out / "t1.png").shape == t1.shape


def test_coverage_detector_catches_faces_the_main_detector_missed(leak_host, t1, originals, reidentifier) -> None:  # type: ignore[no-untyped-def]
    config = _config(leak_host, "detector.name=blind", "coverage.detector=dlib")
    result = Anonymizer(config, leak_host).anonymize(t1)
    assert result.face_count == 6
    assert all(r.notes["found_by"] == "coverage detector dlib" and r.generator == "pixelate" for r in result.records)
    assert all(r.notes["verify"]["fallback"] is None for r in result.records)  # obfuscated straight away
    _assert_nobody_recognised(reidentifier, result.image, originals["t1"])


def test_small_faces_are_obfuscated_not_regenerated(leak_host, t1, originals, reidentifier) -> None:  # type: ignore[no-untyped-def]
    result = Anonymizer(_config(leak_host, "coverage.min_face_size=10000"), leak_host).anonymize(t1)
    assert all("min_face_size" in r.notes["obfuscated_because"] and r.generator == "pixelate" for r in result.records)
    _assert_nobody_recognised(reidentifier, result.image, originals["t1"])


def test_bad_safeguard_settings_are_config_errors(leak_host) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="verify.encoder: bad value 'nope'"):
        Anonymizer(_config(leak_host, "verify.encoder=nope"), leak_host)
    with pytest.raises(ConfigError, match="verify.fallback_generator"):
        Anonymizer(_config(leak_host, "verify.fallback_generator=ipadapter_faceid"), leak_host)
    with pytest.raises(ConfigError, match="coverage.detector"):
        Anonymizer(_config(leak_host, "coverage.detector=nope"), leak_host)
    with pytest.raises(ConfigError, match="verify.policy"):
        _config(leak_host, "verify.policy=hope")


def test_geometry_helpers() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0 and iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    face = Face(box=(0, 0, 10, 10), score=1, landmarks=np.zeros((5, 2)))
    other = Face(box=(50, 50, 60, 60), score=1, landmarks=np.zeros((5, 2)))
    assert missed_faces([face], [face, other], 0.3) == [other]
    image = np.zeros((20, 20, 3), np.uint8)
    changed = image.copy()
    changed[15, 15] = 1
    assert region_unchanged(image, changed, (0, 0, 10, 10)) and not region_unchanged(image, changed, (10, 10, 20, 20))


class _T1Check:
    """dlib's verifier and detector on t1, its faces and identities, and a finder searching face 0's region."""

    def __init__(self, host, t1: np.ndarray) -> None:  # type: ignore[no-untyped-def]
        from rp_core.coverage import search_region
        from rp_core.verify import Verifier

        self.verifier = Verifier(host.get("identity_encoder", "dlib").cls())
        detector = host.get("detector", "dlib").cls()
        self.faces = detector.detect(t1)
        self.identities = self.verifier.encode(t1, self.faces)
        self.box = x0, y0, x1, y1 = tuple(int(v) for v in self.faces[0].box)
        self.region = [(x0 - 40.0, y0 - 40.0, x1 + 40.0, y1 + 40.0)]
        self.finder = lambda image, region: search_region(detector.detect, image, region, margin=0.0)


def test_every_face_is_compared_with_every_identity_of_the_image_and_the_recent_ones(host, t1) -> None:  # type: ignore[no-untyped-def]
    """Another person's face does not pass because it is not the person who was there."""
    from rp_core.verify import RecentIdentities

    s = _T1Check(host, t1)
    # as if face 0's place had held nobody (grey) and the generator pasted person 0 there: a crop of another face
    x0, y0, x1, y1 = s.box
    before = t1.copy()
    before[y0:y1, x0:x1] = 128
    [alone] = s.verifier.check(before, t1, s.faces[:1], s.identities[1:2], s.region, s.finder)
    [recent] = s.verifier.check(before, t1, s.faces[:1], s.identities[1:2], s.region, s.finder, others=s.identities[:1])
    image = s.verifier.check(
        before, t1, s.faces[:2], [s.identities[1], s.identities[0]], [*s.region, *s.region], s.finder
    )
    assert not alone.leak  # only person 1 looked for
    assert recent.leak and image[0].leak and recent.found_at is not None
    assert recent.score == image[0].score < s.verifier.threshold
    # without the output search, a face is compared with its own identity at its landmarks only
    [unsearched] = s.verifier.check(before, t1, s.faces[:1], s.identities[1:2], others=s.identities[:1])
    assert not unsearched.leak

    window = RecentIdentities(images=2)
    first, second, third = object(), object(), object()
    window.add(first, s.identities[:2])
    window.add(second, s.identities[2:3])
    assert list(window.others(second)) == s.identities[:2]
    window.add(third, s.identities[3:4])  # the oldest image leaves the window
    assert list(window.others(third)) == s.identities[2:3]


def test_a_found_face_is_read_on_the_original_only_when_it_matches_no_identity(host, t1) -> None:  # type: ignore[no-untyped-def]
    """The reading of the original at a found face's landmarks catches a face the merger missed while the identities
    were read at the wrong place; a face that already matches someone leaks without it (one descriptor less)."""
    s = _T1Check(host, t1)
    x0, y0 = s.box[:2]
    output = t1.copy()
    output[y0, x0] ^= 1  # one pixel changed: the face is still there, as it was
    reads: list[bool] = []
    encode = s.verifier.encoder.encode

    def counted(image: np.ndarray, found: Sequence[Face]):  # type: ignore[no-untyped-def]
        reads.append(image is t1)  # True: a reading of the original
        return encode(image, found)

    s.verifier.encoder.encode = counted  # type: ignore[method-assign]
    [own] = s.verifier.check(t1, output, s.faces[:1], s.identities[:1], s.region, s.finder)
    assert own.leak and own.score is not None and own.score < s.verifier.threshold
    assert reads == [False]  # the face on the output, matched to its identity: the original is not read
    reads.clear()
    # the identity read at the wrong place (another person's): only the reading of the original catches the face
    [missed] = s.verifier.check(t1, output, s.faces[:1], s.identities[1:2], s.region, s.finder)
    assert missed.leak and missed.score is not None and missed.score < s.verifier.threshold
    assert reads == [False, True]


def test_faces_cut_by_the_border_are_obfuscated_and_written_not_refused(host, t1, reidentifier, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A pan-zoom frame of t1 with faces cut by the frame's border: each is obfuscated, the frame is written (not
    refused: what stays of a cut face, hair and the frame's edge, is no face a detector sees, so there is nothing
    to compare), and nobody is identifiable to the attacker."""
    av = pytest.importorskip("av")
    from helpers.attacker import distances, people

    from rp_core.video.samples import pan_zoom_clip

    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=12)
    with av.open(str(clip)) as container:
        frame = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][2]
    anonymizer = Anonymizer(resolve_config(host, preset="offline", environ={}), host)
    result = anonymizer.anonymize(frame)
    cut = [r for r in result.records if r.box[0] < 0 or r.box[1] < 0 or r.box[2] > frame.shape[1]]
    assert cut, "no face of this frame is cut by its border: this test no longer tests border-cut faces"
    assert all(r.generator in ("pixelate", "solid") and not r.notes["verify"]["leak"] for r in cut)
    assert min(distances(reidentifier, result.image, people(reidentifier, t1))) > reidentifier.threshold
