"""The JSON run manifest: what ran, with which versions, on which files, and what happened to each face.

It lets someone holding an anonymized image say exactly how it was produced, and
lets a later run or an auditor check that every face was handled.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rp_core
from rp_core.errors import InputError
from rp_core.files.plan import journal_path
from rp_core.files.write import AppendLog, atomic_write_bytes, cannot_write

#: Distributions always reported, then modules reported only when this run imported them.
_DISTRIBUTIONS = ("rp-anonymize", "numpy", "pillow", "pydantic", "pluggy", "click", "rich")
_OPTIONAL_MODULES = (
    "torch",
    "diffusers",
    "transformers",
    "peft",
    "accelerate",
    "insightface",
    "onnxruntime",
    "dlib",
    "cv2",
    "skimage",
    "face_alignment",
)


def package_versions() -> dict[str, str]:
    """Versions of the packages that shaped this run's output."""
    versions: dict[str, str] = {"python": platform.python_version()}
    for dist in _DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    versions.setdefault("rp-anonymize", rp_core.__version__)
    for module_name in _OPTIONAL_MODULES:
        module = sys.modules.get(module_name)
        if module is not None:
            versions[module_name] = str(getattr(module, "__version__", "unknown"))
    return versions


@dataclass
class ImageEntry:
    """One input file's outcome."""

    input: str
    output: str | None
    status: str  # anonymized | no_face | failed | verification_failed | skipped_existing (journal only: writing)
    faces: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    #: Journal only, on a "writing" intent: the in-place input's digest and the status once published,
    #: so a resumed run can tell whether the killed one's rename happened.
    input_sha256: str | None = None
    final_status: str | None = None
    #: For a video: frames, tracks, routes, codec, audio (rp_core.video.VideoResult.to_dict()).
    video: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageEntry:
        return cls(
            input=str(data["input"]),
            output=data.get("output"),
            status=str(data["status"]),
            faces=list(data.get("faces") or []),
            timings=dict(data.get("timings") or {}),
            error=data.get("error"),
            input_sha256=data.get("input_sha256"),
            final_status=data.get("final_status"),
            video=data.get("video"),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "input": self.input,
            "output": self.output,
            "status": self.status,
            "faces": self.faces,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }
        for key in ("error", "input_sha256", "final_status", "video"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data


@dataclass
class RunManifest:
    """Accumulates a run's facts; `write` stores them atomically as JSON."""

    config: dict[str, Any]
    components: dict[str, dict[str, Any]]
    images: list[ImageEntry] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    #: Settings that weakened fail-closed for this run (rp_core.verify.safety_warnings).
    warnings: list[str] = field(default_factory=list)
    #: How file names are recorded: "relative" (inputs to the input folder, outputs to the folder of
    #: this manifest), "hashed", or "absolute" (as given).
    paths: str = "absolute"
    in_place: bool = False
    #: The versions of the processes that made the outputs, when not this one (rp_core.scale's workers).
    packages: dict[str, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for entry in self.images:
            counts[entry.status] = counts.get(entry.status, 0) + 1
        return {
            "rp_version": rp_core.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "config": self.config,
            "safety_warnings": self.warnings,
            "paths": self.paths,
            "in_place": self.in_place,
            "components": self.components,
            "packages": self.packages if self.packages is not None else package_versions(),
            "summary": {"images": len(self.images), "faces": sum(len(e.faces) for e in self.images), **counts},
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "images": [entry.to_dict() for entry in self.images],
        }

    def write(self, path: Path) -> Path:
        """Publish the manifest atomically with checked, fsynced writes (never a torn manifest)."""
        text = json.dumps(self.to_dict(), indent=2, default=str) + "\n"
        return atomic_write_bytes(path, text.encode("utf-8"))


class Journal:
    """Append-only JSON lines, one per finished file, synced each time; removed when the manifest is written.

    Each line goes through `rp_core.files.write.AppendLog`: a line that cannot be written whole (a full
    disk) is cut off again, so the journal stays readable by `--resume`, and the run stops with one line
    (InputError, exit 4) instead of a traceback.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log = AppendLog(path)
        self._lock = threading.Lock()  # records come from the run's thread and its CPU worker

    def open(self, *, keep: bool) -> None:
        self._log.open(keep=keep)

    def record(self, entry: ImageEntry) -> None:
        line = (json.dumps(entry.to_dict(), default=str) + "\n").encode("utf-8")
        with self._lock:
            if not self._log.is_open:
                return
            try:
                self._log.append(line)
            except OSError as exc:
                reason = f"{cannot_write(self.path, exc)}; the files published so far are complete"
                raise InputError(f"{reason}: free space, then run again with --resume") from exc

    def close(self, *, remove: bool) -> None:
        self._log.close(remove=remove)


def previous_entries(manifest_path: Path) -> dict[str, ImageEntry]:
    """Entries of an earlier run into the same output, by input path: its manifest, then its journal (newer wins).

    A torn last journal line (the process was killed while writing it) is ignored.
    """
    entries: dict[str, ImageEntry] = {}
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
        for item in data.get("images", []):
            entry = ImageEntry.from_dict(item)
            entries[entry.input] = entry
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    try:
        lines = journal_path(manifest_path).read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            entry = ImageEntry.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue
        entries[entry.input] = entry
    return entries
