"""Video settings reach a run from the command line, a config file and the API; loosening them is said and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("av")
pytest.importorskip("trackers")

from rp_core.cli import create_cli  # noqa: E402
from rp_core.io import write_image  # noqa: E402
from rp_core.video.samples import pan_zoom_clip  # noqa: E402

LOOSER = "video verify_every=2: only 1 frame in 2 is re-checked"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, t1: np.ndarray, astronaut: np.ndarray) -> Path:
    """A photo and a 4-frame clip of t1."""
    path = tmp_path_factory.mktemp("in")
    pan_zoom_clip(t1, path / "clip.mp4", frames=4, size=(320, 192), tone_hz=None, span=0.05)
    write_image(path / "astronaut.png", astronaut)
    return path


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.e2e
def test_verify_every_from_the_command_line_is_used_warned_and_recorded(folder: Path, tmp_path: Path) -> None:
    args = ["anonymize", str(folder), "--preset", "offline", "--set", "coverage.detector=null"]
    loose = CliRunner().invoke(create_cli(), [*args, "-o", str(tmp_path / "loose"), "--verify-every", "2"])
    assert loose.exit_code == 0, loose.output
    assert f"warning: {LOOSER}" in loose.output
    manifest = _manifest(tmp_path / "loose")
    assert LOOSER in manifest["safety_warnings"] and manifest["config"]["video"]["verify_every"] == 2
    videos = [e["video"] for e in manifest["images"] if e.get("video")]
    assert videos[0]["frames"] == 4 and videos[0]["verified_frames"] == 2  # frames 0 and 2 were re-checked

    strict = CliRunner().invoke(create_cli(), [*args, "-o", str(tmp_path / "strict")])
    assert strict.exit_code == 0 and "video verify_every=" not in strict.output
    manifest = _manifest(tmp_path / "strict")
    assert not any("video" in w for w in manifest["safety_warnings"])
    assert [e["video"]["verified_frames"] for e in manifest["images"] if e.get("video")] == [4]


@pytest.mark.e2e
def test_video_settings_from_a_config_file_and_the_api(folder: Path, tmp_path: Path) -> None:
    from rp_core.api import anonymize_files

    config = tmp_path / "rp.toml"
    config.write_text(
        'preset = "offline"\n[coverage]\ndetector = "dlib"\nsearch = "plain"\n[video]\nverify_every = 2\ncodec = "mpeg4"\n'
    )
    events = []
    summary = anonymize_files(folder / "clip.mp4", tmp_path / "out.mkv", config_file=config, on_event=events.append)
    assert summary.anonymized == 1 and LOOSER in summary.warnings
    assert any(e.kind == "safety" and e.message == LOOSER for e in events)  # shown even with --quiet
    video = json.loads((tmp_path / "out.mkv.manifest.json").read_text())["images"][0]["video"]
    assert video["codec"] == "mpeg4" and video["verified_frames"] == 2
    # the API's flags are the CLI's: the default verifies every frame, a flag loosens it
    summary = anonymize_files(folder / "clip.mp4", tmp_path / "flag.mp4", preset="offline", verify_every=3)
    assert "video verify_every=3: only 1 frame in 3 is re-checked" in summary.warnings
    assert json.loads((tmp_path / "flag.mp4.manifest.json").read_text())["images"][0]["video"]["verified_frames"] == 2
    photos_only = anonymize_files(folder / "astronaut.png", tmp_path / "a.png", preset="offline", verify_every=3)
    assert not any("video" in w for w in photos_only.warnings)  # a run without a video says nothing about them
