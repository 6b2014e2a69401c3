"""A video's next frames are searched for faces on a worker thread while the current one is verified: same output."""

from __future__ import annotations

import threading
import time
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
    # the cause of the speed: every frame is searched once, ahead on the worker (or, while the checks would wait
    # for the worker, on their own thread), each with its share of the cores
    share = max(1, usable_cores() // 2)
    assert len(threads) == 6
    assert {name for name, _ in threads} <= {"rp-search_0", threading.main_thread().name}
    assert ("rp-search_0", share) in threads
    assert all(cores == share for _, cores in threads)
    # a detector that does not declare it can run on two threads at once is never searched ahead
    monkeypatch.setattr(CenterFaceDetector, "concurrent", False)
    inline, threads = _run(clip, tmp_path / "inline.mp4")
    assert threads == [(threading.main_thread().name, None)] * 6
    assert ahead == inline


def test_the_checks_search_queued_frames_themselves_rather_than_wait(tmp_path: Path, t1: np.ndarray) -> None:
    """A slow look-ahead thread: the checks' thread takes the frames still queued for it (each searched once,
    nothing waits on a search nobody runs), and the output is the same bytes as searching every frame ahead."""
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=6, tone_hz=None, span=0.05, size=(480, 272))
    ahead, _ = _run(clip, tmp_path / "ahead.mp4")
    beside = FrameAnonymizer._search_beside

    def slow(self: FrameAnonymizer, image: np.ndarray) -> object:
        time.sleep(0.5)  # the worker lags: the checks' thread runs out of searched frames
        return beside(self, image)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FrameAnonymizer, "_search_beside", slow)
        helped, threads = _run(clip, tmp_path / "helped.mp4")
    names = [name for name, _ in threads]
    assert len(names) == 6
    assert names.count(threading.main_thread().name) >= 3
    assert "rp-search_0" in names
    assert helped == ahead
