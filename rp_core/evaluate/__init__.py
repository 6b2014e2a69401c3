"""`rp evaluate`: how well did anonymization hide identities, and what else did it change?

`evaluate(host, pair_set, settings, output)` measures every pair (rp_core.evaluate.measure)
and writes metrics.json, metrics.csv and report.html (rp_core.evaluate.report). Pairs come
from two mirrored paths or from the run manifest of `rp anonymize` (rp_core.evaluate.pairs).
Heavy libraries (OpenCV, dlib through the plugins, matplotlib) load only when it runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rp_core.evaluate.pairs import ImagePair, PairSet, find_manifest, pairs_from_manifest, pairs_from_paths

__all__ = [
    "Evaluation",
    "ImagePair",
    "PairSet",
    "evaluate",
    "find_manifest",
    "pairs_from_manifest",
    "pairs_from_paths",
]


@dataclass
class Evaluation:
    """What one evaluation measured and where it wrote it."""

    images: list[Any]
    summary: dict[str, Any]
    setup: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def problems(self) -> list[Any]:
        return [i for i in self.images if i.status != "evaluated"]


def evaluate(
    host: Any,
    pair_set: PairSet,
    settings: Any,
    output: Path,
    *,
    on_image: Callable[[Any], None] | None = None,
    max_thumbnails: int = 300,
) -> Evaluation:
    """Measure every pair and write the report files into `output` (created if needed).

    `settings` is a `rp_core.evaluate.measure.Settings`; `on_image` is called after each pair
    (progress). Pairs that cannot be compared are listed in the result, not raised.
    """
    from rp_core.evaluate.measure import Evaluator
    from rp_core.evaluate.report import summarize, write_csv, write_html, write_json
    from rp_core.files.write import cannot_write, check_writable_folder

    try:
        check_writable_folder(output)  # before loading models
    except OSError as exc:
        raise cannot_write(output, exc) from exc
    started = time.perf_counter()
    evaluator = Evaluator(host, settings, pair_set.manifest)
    evaluator.load()
    load_seconds = time.perf_counter() - started
    images = []
    for pair in pair_set.pairs:
        result = evaluator.evaluate(pair)
        images.append(result)
        _keep_worst_thumbnails(images, settings.recognizer, max_thumbnails)
        if on_image is not None:
            on_image(result)
    seconds = time.perf_counter() - started
    setup = {
        **evaluator.describe(),
        "manifest": str(pair_set.manifest_path) if pair_set.manifest_path else None,
        "run_config": (pair_set.manifest or {}).get("config"),
    }
    setup["notes"] = [*setup["notes"], *pair_set.notes]
    summary = summarize(images, seconds, load_seconds)
    files = {"json": output / "metrics.json", "csv": output / "metrics.csv", "html": output / "report.html"}
    try:
        output.mkdir(parents=True, exist_ok=True)
        write_json(files["json"], summary, setup, images)
        write_csv(files["csv"], images)
        write_html(files["html"], summary, setup, images, max_thumbnails=max_thumbnails)
    except OSError as exc:
        raise cannot_write(output, exc) from exc
    return Evaluation(images, summary, setup, files)


def _keep_worst_thumbnails(images: list[Any], encoder: str, limit: int) -> None:
    """Hold pictures of the `limit` most re-identifiable faces only, so a large evaluation stays small in memory."""
    from rp_core.evaluate.report import worst_first

    pictured = [f for image in images for f in image.faces if f.thumbnail is not None]
    if len(pictured) <= 2 * limit:
        return
    keep = {id(f) for f in worst_first(pictured, encoder)[:limit]}
    for face in pictured:
        if id(face) not in keep:
            face.thumbnail = None
