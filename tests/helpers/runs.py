"""Whole runs the way a user starts them, and the folders they compare: the `rp` command, photo folders, snapshots."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

#: `rp` as a subprocess, from the Python running the tests (no console-script lookup on PATH).
RP = [sys.executable, "-c", "import sys; from rp_core.cli import main; sys.argv[0] = 'rp'; main()"]


def shifted_images(folder: Path, astronaut: np.ndarray, count: int = 6) -> None:
    folder.mkdir(parents=True)
    for i in range(count):
        shifted = np.roll(astronaut, shift=(i * 3, i * 5), axis=(0, 1))
        Image.fromarray(shifted).save(folder / f"img {i:02d}.jpg", quality=92)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def manifest_facts(folder: Path) -> list[tuple[str, str, int, list[object]]]:
    manifest = json.loads((folder / "manifest.json").read_text())
    facts = []
    for entry in manifest["images"]:
        faces = [{k: v for k, v in f.items() if k != "timings"} for f in entry["faces"]]
        facts.append((Path(entry["input"]).name, entry["status"], len(entry["faces"]), faces))
    return facts
