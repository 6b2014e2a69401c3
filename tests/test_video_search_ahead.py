"""A video's next frames are searched for faces on a worker thread while the current one is verified: same output."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
pytest.importorskip("trackers")

from helpers.stacks import FACE_STACK_PLUGINS  # noqa: E402

from rp_core.config import resolve_config  # noqa: E402
from rp_core.cores import usable_cores  # noqa: E402
from rp_core.pipeline import assemble  # noqa: E402
from rp_core.plugins import PluginHost  # noqa: E402
from rp_core.video import VideoOptions, anonymize_video  # noqa: E402
from rp_core.video.frames import FrameAnonymizer  # noqa: E402
from rp_core.video.samples import pan_zoom_clip  # noqa: E402
from rp_plugins.centerface import CenterFaceDetector  # noqa: E402


def _run(clip: Path, target: Path) -> tuple[bytes, list[tuple[str, int | None]]]:
    """The offline preset's output bytes, and the thread each frame's search ran on with its network threads."""
    threads: list[tuple[str, int | None]] = []
    search = FrameAnonymizer._search

    def recorded(self: FrameAnonymizer, image: np.ndarray) -> object:
        threads.append((threading.current_thread().name, self.stream.detector.context.call_threads()))
        return search(self, image)

    host = PluginHost(environ={"RP_PLUGINS": FACE_STACK_PLUGINS})
    pipeline = assemble(resolve_config(host, preset="offline", environ={}), host)
    pipeline.load()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FrameAnonymizer, "_search", recorded)
        anonymize_video(pipeline, clip, target, VideoOptions())
    return target.read_bytes(), threads


def test_the_next_frame_is_searched_on_a_worker_thread_and_the_output_is_the_same(
    tmp_path: Path, t1: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=6, tone_hz=None, span=0.05, size=(480, 272))
    ahead, threads = _run(clip, tmp_path / "ahead.mp4")
    # the cause of the speed: every frame is searched ahead, on the worker, with its share of the cores
    share = max(1, usable_cores() // 2)
    assert threads == [("rp-search_0", share)] * 6
    # a detector that does not declare it can run on two threads at once is never searched ahead
    monkeypatch.setattr(CenterFaceDetector, "concurrent", False)
    inline, threads = _run(clip, tmp_path / "inline.mp4")
    assert threads == [(threading.main_thread().name, None)] * 6
    assert ahead == inline
