"""Face selection on videos: a --keep-face person stays in every frame of their track; the others do not.

Judged by conftest's `reidentifier` (dlib's HOG + 128-d descriptor, built straight from dlib, not
through rp's plugins), searching the whole frame, upsampled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("av")
pytest.importorskip("trackers")

from rp_core.cli import create_cli  # noqa: E402
from rp_core.config import resolve_config  # noqa: E402
from rp_core.io import write_image  # noqa: E402
from rp_core.pipeline import assemble  # noqa: E402
from rp_core.plugins import PluginHost  # noqa: E402
from rp_core.video import VideoOptions, anonymize_video  # noqa: E402
from rp_core.video.samples import pan_zoom_clip  # noqa: E402

FRAMES = 8


def _frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _nearest(reidentifier: Any, person: np.ndarray, frame: np.ndarray) -> float:
    found = reidentifier.descriptors(frame, upsample=1)
    return min((float(np.linalg.norm(person - d)) for d in found), default=np.inf)


def _anonymized(host: PluginHost, clip: Path, selection: str) -> tuple[Any, list[np.ndarray]]:
    """The offline preset with one selection override (verification on every 4th frame, for time)."""
    pipeline = assemble(resolve_config(host, preset="offline", overrides=[selection], environ={}), host)
    target = clip.with_name(f"out-{selection.split('=')[0]}.mp4")
    result = anonymize_video(pipeline, clip, target, VideoOptions(verify_every=4))
    return result, _frames(target)


@pytest.fixture(scope="module")
def clip_and_people(tmp_path_factory: pytest.TempPathFactory, t1: np.ndarray, reidentifier: Any) -> Any:
    """A slow pan over t1, a mirrored crop of one of its people as the reference, and who is in the clip."""
    folder = tmp_path_factory.mktemp("video-selection")
    clip = pan_zoom_clip(t1, folder / "clip.mp4", frames=FRAMES, tone_hz=None, span=0.1)
    rects = sorted(reidentifier.detector(np.ascontiguousarray(t1), 0), key=lambda r: r.left())
    people = [np.array(reidentifier.model.compute_face_descriptor(t1, reidentifier.predictor(t1, r))) for r in rects]
    frames = _frames(clip)
    # the people every input frame shows recognisably (the attacker's baseline)
    visible = [k for k, p in enumerate(people) if all(_nearest(reidentifier, p, f) < 0.5 for f in frames)]
    assert len(visible) >= 2, "the clip must show at least two recognisable people"
    me = visible[0]
    rect = rects[me]
    pad = rect.width()
    crop = t1[max(rect.top() - pad, 0) : rect.bottom() + pad, max(rect.left() - pad, 0) : rect.right() + pad]
    reference = folder / "me.png"
    write_image(reference, np.ascontiguousarray(crop[:, ::-1]))  # another picture of the same person
    return clip, reference, people, visible, me


@pytest.mark.e2e
def test_keep_face_keeps_that_person_in_every_frame_and_no_one_else(
    host: PluginHost, clip_and_people: Any, reidentifier: Any
) -> None:
    clip, reference, people, visible, me = clip_and_people
    result, outputs = _anonymized(host, clip, f"select.keep_faces=['{reference}']")
    assert result.routes["keep"] >= FRAMES  # the kept person, once per frame at least
    assert len(outputs) == FRAMES
    for n, frame in enumerate(outputs):
        assert _nearest(reidentifier, people[me], frame) < reidentifier.threshold, f"frame {n}: the kept person"
        for k in visible:
            if k != me:
                distance = _nearest(reidentifier, people[k], frame)
                assert distance > reidentifier.threshold, f"frame {n}: person {k} at {distance:.2f}"


@pytest.mark.e2e
def test_only_face_anonymizes_that_person_in_every_frame_and_keeps_the_others(
    host: PluginHost, clip_and_people: Any, reidentifier: Any
) -> None:
    clip, reference, people, visible, me = clip_and_people
    _, outputs = _anonymized(host, clip, f"select.only_faces=['{reference}']")
    for n, frame in enumerate(outputs):
        distance = _nearest(reidentifier, people[me], frame)
        assert distance > reidentifier.threshold, f"frame {n}: the chosen person at {distance:.2f}"
        for k in visible:
            if k != me:
                assert _nearest(reidentifier, people[k], frame) < reidentifier.threshold, f"frame {n}: person {k}"


@pytest.mark.parametrize("flag", ["--aligned", "--faces-json"])
def test_selection_flags_a_video_cannot_take_are_refused_before_any_work(
    tmp_path: Path, t1: np.ndarray, flag: str
) -> None:
    clip = pan_zoom_clip(t1, tmp_path / "clip.mp4", frames=2, tone_hz=None, span=0.05)
    args = ["anonymize", str(clip), "-o", str(tmp_path / "out.mp4"), "--preset", "offline", flag]
    if flag == "--faces-json":
        (tmp_path / "faces.json").write_text('{"images": []}', encoding="utf-8")
        args.append(str(tmp_path / "faces.json"))
    result = CliRunner().invoke(create_cli(), args)
    assert result.exit_code == 2, result.output
    assert flag in result.output and "video" in result.output
    assert not (tmp_path / "out.mp4").exists() and not list(tmp_path.glob(".*.part"))
