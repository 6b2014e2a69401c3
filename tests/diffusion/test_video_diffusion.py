"""The paper's method on a clip (tiny random SDXL on the CPU): one identity and seed per track, keyframes carried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("trackers")

from rp_core.config import resolve_config  # noqa: E402
from rp_core.pipeline import Pipeline, assemble  # noqa: E402
from rp_core.plugins import PluginHost  # noqa: E402
from rp_core.video.frames import CheapCheck, FrameAnonymizer, FrameOutcome  # noqa: E402
from rp_core.video.samples import pan_zoom_clip  # noqa: E402
from rp_core.video.tracks import FaceTracker  # noqa: E402

#: Every frame is decoded, generated with the tiny SDXL and verified: outside the fast loop.
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pipeline(diffusion_params: dict[str, Any]) -> Pipeline:
    host = PluginHost()
    # the tiny random ArcFace cannot tell people apart: dlib's descriptor re-checks the output (a real recognizer)
    overrides = ["verify.encoder=dlib", "verify.encoder_options.landmarks=auto", "coverage.detector=null"]
    config = resolve_config(host, flags=diffusion_params, overrides=overrides, environ={})
    built = assemble(config, host)
    built.load()
    return built


def run_clip(pipeline: Pipeline, clip: Path, regenerate: str) -> tuple[FrameAnonymizer, list[FrameOutcome]]:
    import av

    frames = FrameAnonymizer(pipeline, FaceTracker(fps=30.0), cheap=CheapCheck(regenerate=regenerate))
    outcomes: list[FrameOutcome] = []
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            outcomes.extend(frames.push(i, frame.to_ndarray(format="rgb24"), i / 30))
    outcomes.extend(frames.flush())
    return frames, outcomes


def crop_change(outcomes: list[FrameOutcome], size: int = 64) -> float:
    """Mean absolute difference of each track's aligned output crop between consecutive frames."""
    from rp_core.align import align_face

    last: dict[int, np.ndarray] = {}
    changes = []
    for outcome in outcomes:
        for face, track in zip(outcome.faces, outcome.tracks, strict=True):
            if track is None:
                continue
            crop = align_face(outcome.image, face, size).crop.astype(np.int16)
            if track in last:
                changes.append(float(np.abs(crop - last[track]).mean()))
            last[track] = crop
    return float(np.mean(changes))


def test_keyframes_carry_each_track_s_drawn_face_and_every_frame_is_checked(
    tmp_path: Path, t1: np.ndarray, pipeline: Pipeline
) -> None:
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=6, tone_hz=None, span=0.02)
    keyframes, carried = run_clip(pipeline, clip, "keyframes")
    every, drawn = run_clip(pipeline, clip, "every")
    routes = [r for o in carried for r in o.routes]
    assert routes.count("carried") >= len(routes) // 2  # most faces pasted from their keyframe, not drawn again
    assert "carried" not in [r for o in drawn for r in o.routes]
    # every face of every frame was checked: in full, or against its track's verified output
    assert all(
        kind in ("full", "cheap") for o in carried for kind, r in zip(o.checks, o.routes, strict=True) if r != "keep"
    )
    assert keyframes.checks.counts.cheap > 0
    # one new identity and one seed per track, for its whole life
    tracks = {t for o in carried for t in o.tracks if t is not None}
    assert len(tracks) >= 3
    memories = keyframes.memory
    assert len({m.seed for m in memories.values()}) == len(memories)
    assert all(m.identity is not None for m in memories.values() if m.floor == "generator")
    # the carried face moves with its landmarks and does not change in its own aligned square: steadier
    assert crop_change(carried) < crop_change(drawn)
    assert every.checks.counts.carried == 0
