"""What a run tells its user: false detections explained, counts in words that agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.throwaway import FalsePlugin

from rp_core.cli import create_cli
from rp_core.io import write_image
from rp_core.plugins import PluginHost
from rp_core.session import RunSummary


def test_an_unconfirmed_detection_is_explained_not_alarmed(tmp_path: Path, astronaut: np.ndarray) -> None:
    pytest.importorskip("rp_plugins.centerface")
    write_image(tmp_path / "a.png", astronaut)
    host = PluginHost(extra_plugins=[FalsePlugin()])
    args = ["anonymize", str(tmp_path / "a.png"), "-o", str(tmp_path / "b.png"), "--preset", "offline"]
    # every face read "still matches": read at its landmarks (no output search), as the search finds no face on a suit
    args += ["--detector", "false_detection", "--set", "verify.threshold=2.0", "--set", "verify.search=false"]
    result = CliRunner().invoke(create_cli(host), args)
    assert result.exit_code == 0, result.output
    fake = [line for line in result.output.splitlines() if "face 1:" in line]
    assert len(fake) == 1 and "probably not a face" in fake[0] and "as a precaution" in fake[0], fake
    assert not fake[0].startswith("warning") and "still matched" not in fake[0]


@pytest.mark.parametrize(("faces", "words"), [(1, "(1 face)"), (0, "(0 faces)"), (7, "(7 faces)")])
def test_the_summary_counts_in_words_that_agree(faces: int, words: str) -> None:
    from rp_core.manifest import ImageEntry

    entry = ImageEntry("a.jpg", "b.jpg", "anonymized", faces=[{"index": i} for i in range(faces)])
    line = RunSummary(entries=(entry,), fresh=(entry,), skipped=0, manifest_path=None).line()
    assert line.startswith(f"1 anonymized {words}")


def test_skipped_inputs_are_counted_in_the_summary(tmp_path: Path, astronaut: np.ndarray) -> None:
    """The lines "skipped (...)" at the start and the summary's "N skipped" agree."""
    source = tmp_path / "in"
    source.mkdir()
    write_image(source / "a.png", astronaut)
    (source / "notes.txt").write_text("not a photo")
    (source / "clip.flv").write_bytes(b"x")
    result = CliRunner().invoke(
        create_cli(), ["anonymize", str(source), "-o", str(tmp_path / "out"), "--preset", "offline"]
    )
    assert result.exit_code == 0, result.output
    skipped_lines = [line for line in result.output.splitlines() if line.startswith("skipped (")]
    assert len(skipped_lines) == 2, result.output
    assert "1 anonymized (1 face), 0 without a face, 2 skipped" in result.output


def test_the_summary_counts_a_videos_face_instances() -> None:
    """A video's faces (one per face per frame, as its progress bar counts them) are in the summary, not 0."""
    from rp_core.manifest import ImageEntry

    photo = ImageEntry("a.jpg", "b.jpg", "anonymized", faces=[{"index": 0}])
    clip = ImageEntry("c.mp4", "d.mp4", "anonymized", video={"faces": 238, "frames": 48})
    line = RunSummary(entries=(photo, clip), fresh=(photo, clip), skipped=0, manifest_path=None).line()
    assert line.startswith("2 anonymized (239 faces)")
