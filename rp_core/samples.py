"""Sample photos a newcomer can try rp on, taken from packages rp already installs.

We ship no photos of people ourselves: InsightFace bundles `t1.jpg` (six faces) and
scikit-image bundles the `astronaut` test image (one face).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def insightface_t1() -> Path | None:
    """InsightFace's group photo, located without importing insightface (which pulls in onnxruntime)."""
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "images" / "t1.jpg"
    return path if path.is_file() else None


def copy_samples(folder: Path) -> tuple[list[Path], list[str]]:
    """Write t1.jpg and astronaut.png into `folder`; return what was written and what was not available."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    problems: list[str] = []
    t1 = insightface_t1()
    if t1 is None:
        problems.append("t1.jpg (install insightface)")
    else:
        from rp_core.files.write import atomic_write_bytes

        written.append(atomic_write_bytes(folder / "t1.jpg", t1.read_bytes()))
    try:
        from skimage import data
    except ImportError:
        problems.append("astronaut.png (install scikit-image)")
    else:
        from rp_core.io import write_image

        written.append(write_image(folder / "astronaut.png", data.astronaut()))
    return written, problems
