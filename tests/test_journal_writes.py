"""A full disk while the run writes its journal: one line, exit 4, and a journal `--resume` can still read.

The disk fills for real: a child process runs under a file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored),
so the kernel cuts a write short and then refuses it, as on a full disk (EFBIG instead of ENOSPC), the way
tests/test_io_writes.py does for images. Nothing in rp is mocked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")

RP = [sys.executable, "-c", "import sys; from rp_core.cli import main; sys.argv[0] = 'rp'; main()"]
ROOT = Path(__file__).resolve().parents[1]


def _limit(limit: int) -> None:
    """In the child, before exec: writes past `limit` bytes fail (EFBIG) instead of killing the process."""
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


_APPENDS = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from rp_core.files.write import AppendLog

    log = AppendLog(Path(sys.argv[1]))
    log.open(keep=True)
    appended = 0
    try:
        for i in range(1000):
            log.append((json.dumps({"input": f"photo-{i}.jpg", "status": "anonymized"}) + "\\n").encode())
            appended += 1
    except OSError as exc:
        print(json.dumps({"appended": appended, "message": str(exc)}))
    finally:
        log.close()
    """
)


def test_a_journal_line_that_does_not_fit_is_cut_off_again(tmp_path: Path) -> None:
    journal = tmp_path / ".manifest.json.journal"
    journal.write_bytes(b'{"input": "old.jpg", "status": "anonymized"}\n{"input": "torn')  # a killed run's tail
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _APPENDS, str(journal)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        preexec_fn=lambda: _limit(1000),
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "File too large" in result["message"] and "\n" not in result["message"]
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends on a complete line: the record that did not fit left nothing behind
    records = [json.loads(line) for line in lines[:-1]]  # and every line parses (the torn tail was cut off)
    assert [r["input"] for r in records] == ["old.jpg"] + [f"photo-{i}.jpg" for i in range(result["appended"])]
    assert 900 < journal.stat().st_size <= 1000  # it did fill the "disk"


def _flat_photos(folder: Path, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        Image.fromarray(np.full((16, 16, 3), 40 + 10 * i, np.uint8)).save(folder / f"p{i:02d}.png")


@pytest.mark.e2e
def test_a_full_disk_on_the_journal_stops_the_run_with_one_line_and_resume_finishes_it(tmp_path: Path) -> None:
    source, out = tmp_path / "photos", tmp_path / "out"
    _flat_photos(source, 12)  # no faces: copied through the run (and journalled) like any photo
    args = [*RP, "anonymize", str(source), "-o", str(out), "--preset", "offline"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    full = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, preexec_fn=lambda: _limit(1500)
    )
    assert full.returncode == 4, full.stderr
    errors = [line for line in full.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in full.stderr, full.stderr
    assert ".manifest.json.journal" in errors[0] and "File too large" in errors[0] and "--resume" in errors[0]
    assert not (out / "manifest.json").exists()
    journal = out / ".manifest.json.journal"
    text = journal.read_text()
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]  # consistent: every line is a whole record
    finished = {Path(r["input"]).name for r in records if r["status"] != "writing"}
    assert finished and len(finished) < 12
    published = {p.name for p in out.iterdir() if p.suffix == ".png"}
    assert finished <= published  # what the journal calls done is on disk
    assert not list(out.glob(".*.part"))  # no temporary file left

    again = subprocess.run([*args, "--resume"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert again.returncode == 0, again.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(Path(e["input"]).name for e in manifest["images"]) == [f"p{i:02d}.png" for i in range(12)]
    assert not journal.exists() and {p.name for p in out.iterdir() if p.suffix == ".png"} == {
        f"p{i:02d}.png" for i in range(12)
    }
