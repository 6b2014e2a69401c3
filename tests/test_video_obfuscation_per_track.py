"""One obfuscation per track: once fail closed escalates a person's face, later frames of the track start there."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("trackers")

from rp_core import hookimpl  # noqa: E402
from rp_core.config import resolve_config  # noqa: E402
from rp_core.interfaces import Generator  # noqa: E402
from rp_core.pipeline import assemble  # noqa: E402
from rp_core.plugins import PluginHost  # noqa: E402
from rp_core.types import GenerationRequest  # noqa: E402
from rp_core.video.frames import CheapCheck, FrameAnonymizer  # noqa: E402
from rp_core.video.samples import pan_zoom_clip  # noqa: E402
from rp_core.video.tracks import FaceTracker  # noqa: E402


class FlakyPixelate(Generator):
    """Pixelates like the offline generator, but hands back track 0's third face as it was (once)."""

    name = "flaky-pixelate"
    seen: ClassVar[int] = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        from rp_plugins.obfuscate import Pixelate

        out = []
        for request in requests:
            leak = False
            if request.seed == 0:  # track 0 (seed + 1009 x track number, runtime.seed 0)
                FlakyPixelate.seen += 1
                leak = FlakyPixelate.seen == 3
            out.append(np.array(request.face.crop) if leak else Pixelate().generate([request])[0])
        return out


class FlakyPlugin:
    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        register(FlakyPixelate)


@pytest.mark.e2e
def test_a_track_escalated_to_the_fallback_never_goes_back(host: PluginHost, t1: np.ndarray, tmp_path: Any) -> None:
    import av

    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=7, tone_hz=None, span=0.05)
    with av.open(str(clip)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    name = host.register_plugin(FlakyPlugin(), name="test-flaky")
    try:
        config = resolve_config(host, preset="offline", overrides=["generator.name=flaky-pixelate"], environ={})
        pipeline = assemble(config, host)
        pipeline.load()
        FlakyPixelate.seen = 0
        # every face drawn on every frame (keyframes would carry track 0's first crop and never ask for a third)
        stream = FrameAnonymizer(pipeline, FaceTracker(fps=30.0), cheap=CheapCheck(regenerate="every"))
        outcomes = [o for i, image in enumerate(frames) for o in stream.push(i, image, i / 30)]
        outcomes += list(stream.flush())
    finally:
        host.unregister_plugin(name)
    by_track: dict[int, list[str | None]] = {}
    for outcome in outcomes:
        for track, generator in zip(outcome.tracks, outcome.generators, strict=True):
            if track is not None:
                by_track.setdefault(track, []).append(generator)
    strength = {"flaky-pixelate": 0, "pixelate": 1, "solid": 2}
    for track, kinds in by_track.items():
        levels = [strength[k] for k in kinds if k is not None]
        assert levels == sorted(levels), f"track {track} changes obfuscation back and forth: {kinds}"
    escalated = by_track[0]
    first = escalated.index("pixelate")  # the leaking frame went to the fallback ...
    assert first == 2 and escalated[first:] == ["pixelate"] * (len(escalated) - first) and len(escalated) > first + 2
    assert any(r == "escalated" for o in outcomes[first + 1 :] for r in o.routes)  # ... and stays there
