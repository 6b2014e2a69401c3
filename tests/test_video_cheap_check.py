"""Video: the cheap check of tracked faces, their keyframes, and the attacker on every frame."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from rp_core.config import CHEAP_TOLERANCE
from rp_core.types import AlignedFace, Face, GenerationRequest
from rp_core.video.recheck import PROBE_SIDE, Square, cell_difference


def _aligned(image: np.ndarray) -> AlignedFace:
    face = Face(box=(40.0, 40.0, 120.0, 120.0), score=1.0, landmarks=np.zeros((5, 2)))
    matrix = np.array([[1.6, 0.0, -32.0], [0.0, 1.6, -32.0]])  # the 80 px around the face to a 256 px square
    return AlignedFace(face, np.zeros((256, 256, 3), np.uint8), matrix)


def test_cell_difference_counts_only_written_pixels_and_catches_a_leak() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    face = _aligned(frame)
    hidden = frame.copy()
    hidden[60:100, 60:100] = 128  # a flat patch where the face was
    reference = Square.of(hidden, frame, face)
    assert reference.written.any() and not reference.written.all()
    assert cell_difference(Square.of(hidden, frame, face), reference) == 0.0
    moved_context = frame.copy()
    moved_context[:20] = 0  # pixels no merge wrote, on neither square: the input's own, not compared
    redone = moved_context.copy()
    redone[60:100, 60:100] = 128
    assert cell_difference(Square.of(redone, moved_context, face), reference) == 0.0
    # the face left as it was inside the region the reference hid: its pixels count against the hidden ones
    half = hidden.copy()
    half[60:80, 60:100] = frame[60:80, 60:100]
    assert cell_difference(Square.of(half, frame, face), reference) > 30
    assert PROBE_SIDE % 16 == 0


def test_the_edge_of_a_written_region_is_not_compared_but_its_inside_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same obfuscation a pixel further along, over a background that moved: only the ring at its edge
    differs (frame pixels where the reference's obfuscation was, and back), and that ring is not compared;
    the face left in a strip inside the region still is."""
    from rp_core.video import recheck

    rng = np.random.default_rng(2)
    before, after = (rng.integers(0, 255, (200, 200, 3), dtype=np.uint8) for _ in range(2))
    face = _aligned(before)
    hidden = before.copy()
    hidden[68:108, 68:108] = 128  # its edge crosses cells of the probe square, as a face's does
    reference = Square.of(hidden, before, face)
    carried = after.copy()
    carried[69:109, 69:109] = 128
    assert cell_difference(Square.of(carried, after, face), reference) == 0.0
    with monkeypatch.context() as patch:
        patch.setattr(recheck, "EDGE", 0)
        assert cell_difference(Square.of(carried, after, face), reference) > CHEAP_TOLERANCE
    leaked = carried.copy()
    leaked[75:105, 78:90] = after[75:105, 78:90]  # 12 px of the face, 9 px inside the region's edge
    assert cell_difference(Square.of(leaked, after, face), reference) > CHEAP_TOLERANCE


def test_pixels_now_outside_the_frame_do_not_count_and_new_ones_inside_do() -> None:
    """A face leaving the frame: the part of its square outside shows nothing (not compared); a face entering:
    its pixels in the frame compare against its reference's black outside (it gets the full check)."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    face = _aligned(frame)
    hidden = frame.copy()
    hidden[40:120, 40:120] = 128  # the whole face region obfuscated
    reference = Square.of(hidden, frame, face)
    assert reference.inside.all()
    cut = hidden[:, :90]  # the frame now ends inside the face: the square's right part lies outside it
    now = Square.of(cut, frame[:, :90], face)
    assert 0 < now.inside.mean() < 1
    assert cell_difference(now, reference) == 0.0
    # the obfuscation dropped in the part still in the frame: caught
    leaked = cut.copy()
    leaked[40:120, 60:90] = frame[40:120, 60:90]
    assert cell_difference(Square.of(leaked, frame[:, :90], face), reference) > 30
    # entering: the reference saw only the left part; the right part, now in the frame, counts
    assert cell_difference(reference, now) > 30


pytest.importorskip("av")
pytest.importorskip("trackers")

from helpers.attacker import identified, people  # noqa: E402
from helpers.stacks import FACE_STACK_PLUGINS  # noqa: E402

from rp_core import hookimpl  # noqa: E402
from rp_core.config import resolve_config  # noqa: E402
from rp_core.pipeline import Pipeline, assemble  # noqa: E402
from rp_core.plugins import PluginHost  # noqa: E402
from rp_core.video import VideoOptions, anonymize_video  # noqa: E402
from rp_core.video.frames import CheapCheck  # noqa: E402
from rp_core.video.samples import pan_zoom_clip  # noqa: E402
from rp_plugins.obfuscate import Pixelate  # noqa: E402


def frames_of(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def audio_samples(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)


class LateLeak(Pixelate):
    """Pixelation, except that from its 4th face of the first track on it hands back that face as it was."""

    name: ClassVar[str] = "pixelate-late-leak"
    calls: ClassVar[int] = 0
    leaked: ClassVar[int] = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        crops = super().generate(requests)
        for k, request in enumerate(requests):
            if request.seed != 0:  # track 0's seed is the run's seed; the others are seed + 1009 n
                continue
            type(self).calls += 1
            if type(self).calls >= 4:
                type(self).leaked += 1
                crops[k] = np.array(request.face.crop)
        return crops


class CheapCheckPlugin:
    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        register(LateLeak)


def pipeline_of(host: PluginHost, *overrides: str) -> Pipeline:
    pipeline = assemble(resolve_config(host, preset="offline", overrides=list(overrides), environ={}), host)
    pipeline.load()
    return pipeline


@pytest.mark.e2e
def test_a_leak_on_a_later_frame_of_a_track_fails_the_cheap_check_and_is_caught(
    tmp_path: Path, t1: np.ndarray, reidentifier: Any
) -> None:
    host = PluginHost(environ={"RP_PLUGINS": FACE_STACK_PLUGINS}, extra_plugins=[CheapCheckPlugin()])
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=10, tone_hz=None, span=0.05)
    every = VideoOptions(cheap=CheapCheck(regenerate="every"))  # the generator draws every face of every frame
    persons = people(reidentifier, t1)
    # unchecked, the leak is there: the attacker identifies the leaked person on the later frames
    LateLeak.calls = LateLeak.leaked = 0
    unchecked = pipeline_of(host, "generator.name=pixelate-late-leak", "verify.enabled=false")
    anonymize_video(unchecked, clip, tmp_path / "unchecked.mp4", every)
    assert LateLeak.leaked >= 5
    assert identified(reidentifier, frames_of(tmp_path / "unchecked.mp4")[-1], persons) >= 1
    # checked: frames before the leak are vouched for cheaply; the leaked face fails that, gets the full check
    LateLeak.calls = LateLeak.leaked = 0
    checked = pipeline_of(host, "generator.name=pixelate-late-leak")
    result = anonymize_video(checked, clip, tmp_path / "out.mp4", every)
    assert LateLeak.leaked >= 1
    assert result.checks["cheap"] > 0 and result.checks["cheap_failed"] >= 1
    assert result.retries + result.fallbacks >= 1  # the full check caught it: a coarser pixelation hid the face
    for i, frame in enumerate(frames_of(tmp_path / "out.mp4")):
        assert identified(reidentifier, frame, persons) == 0, f"frame {i}"


@pytest.mark.e2e
def test_default_run_carries_keyframes_and_no_frame_is_identifiable(
    tmp_path: Path, t1: np.ndarray, reidentifier: Any
) -> None:
    """Default settings on a clip with six people: most faces carried and cheaply checked, the attacker (every
    frame, every orientation, upsampled) identifies nobody, and the audio comes out sample for sample."""
    host = PluginHost(environ={"RP_PLUGINS": FACE_STACK_PLUGINS})
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=16, span=0.1)
    result = anonymize_video(pipeline_of(host), clip, tmp_path / "out.mp4", VideoOptions())
    assert result.verified_frames == result.frames == 16
    checks = result.checks
    assert checks["carried"] > 0 and checks["cheap"] > 0
    assert checks["full"] + checks["cheap"] == result.faces  # every face of every frame checked one way or the other
    assert checks["full"] < result.faces  # the cause of the speed: fewer full checks than faces
    persons = people(reidentifier, t1)
    assert len(persons) >= 5
    originals = frames_of(clip)
    for i, frame in enumerate(frames_of(tmp_path / "out.mp4")):
        assert identified(reidentifier, frame, persons) == 0, f"frame {i}"
    assert identified(reidentifier, originals[0], persons) >= 3  # the attacker sees them in the input (3 on this clip)
    np.testing.assert_array_equal(audio_samples(tmp_path / "out.mp4"), audio_samples(clip))


def test_cheap_check_settings_come_from_the_config_and_loosening_is_loud() -> None:
    from rp_core.config import VideoSection
    from rp_core.video.run import VideoOptions as Options
    from rp_core.video.run import video_warnings

    section = VideoSection(regenerate="every", keyframe_every=4, cheap_tolerance=20.0, cheap_iou=0.4)
    options = Options.from_config(section)
    assert options.cheap == CheapCheck(20.0, 0.4, "every", 4)
    assert options.cheap.carry_frames == 0 and replace(options.cheap, regenerate="keyframes").carry_frames == 4
    warnings = video_warnings(options)
    assert any("cheap_tolerance=20" in w for w in warnings) and any("cheap_iou=0.4" in w for w in warnings)
    assert video_warnings(Options()) == [] and VideoSection().loosenings() == []


def test_carried_faces_never_warp_their_own_crop(
    tmp_path: Path, t1: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cause of part of the video speed: a face carried from its keyframe pastes that frame's crop, so the
    Lanczos warp of its own crop (deferred, `AlignedFace.deferred`) is never made; every other face's is."""
    import rp_core.align

    made = []
    warp = rp_core.align.warp_to_crop
    monkeypatch.setattr(rp_core.align, "warp_to_crop", lambda *a, **k: made.append(1) or warp(*a, **k))
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=8, tone_hz=None, span=0.05)
    result = anonymize_video(pipeline_of(PluginHost()), clip, tmp_path / "out.mp4", VideoOptions())
    carried = result.checks["carried"]
    assert carried > 0
    assert len(made) == result.faces - carried
