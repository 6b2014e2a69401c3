"""SIGTERM ends a run like Ctrl-C (cleanup, resume hint); two runs cannot write one output at once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.runs import RP, shifted_images

from rp_core.cli import create_cli
from rp_core.files.lock import OutputBusyError, lock_path, output_lock
from rp_core.io import write_image


def test_a_second_run_into_a_busy_output_exits_2_with_one_line(tmp_path: Path, astronaut: np.ndarray) -> None:
    write_image(tmp_path / "a.png", astronaut)
    out = tmp_path / "out"
    args = ["anonymize", str(tmp_path / "a.png"), "-o", str(out / "a.png"), "--preset", "offline"]
    with output_lock(out / "a.png.manifest.json"):  # what the first run holds while it works
        result = CliRunner().invoke(create_cli(), args)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"another rp run (pid {os.getpid()}) is writing to {out}" in errors[0]
    assert not (out / "a.png").exists()
    again = CliRunner().invoke(create_cli(), args)  # released: the next run goes ahead, and leaves no lock behind
    assert again.exit_code == 0, again.output
    assert (out / "a.png").exists() and not lock_path(out / "a.png.manifest.json").exists()


def test_the_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    manifest = tmp_path / "new" / "manifest.json"
    with output_lock(manifest):
        assert lock_path(manifest).read_text().strip() == str(os.getpid())
        with pytest.raises(OutputBusyError), output_lock(manifest):
            pass
    with output_lock(manifest):  # free again
        pass


@pytest.mark.e2e
def test_sigterm_cleans_up_and_hints_at_resume(tmp_path: Path, astronaut: np.ndarray) -> None:
    source, out = tmp_path / "photos", tmp_path / "out"
    shifted_images(source, astronaut)
    process = subprocess.Popen(
        [*RP, "anonymize", str(source), "-o", str(out), "--preset", "offline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while process.poll() is None and not (out.is_dir() and any(p.suffix == ".jpg" for p in out.iterdir())):
        time.sleep(0.01)  # until the first output is published, however slow the machine
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    written = [p for p in out.iterdir() if p.suffix == ".jpg"]
    if len(written) == 6:
        pytest.skip("the run finished before the signal arrived")
    assert process.returncode == 143, stderr
    assert "terminated: run the same command again with --resume to finish" in stderr
    assert "Traceback" not in stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".part") or p.name.endswith(".lock")]
    again = subprocess.run(
        [*RP, "anonymize", str(source), "-o", str(out), "--preset", "offline", "--resume"],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert len([p for p in out.iterdir() if p.suffix == ".jpg"]) == 6
