"""Which original goes with which anonymized file: mirrored paths, or the run manifest `rp anonymize` wrote.

A pair that cannot be compared (missing counterpart, different size) is kept as a problem
and reported, so one bad file does not hide the rest of an evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rp_core.errors import InputError
from rp_core.files.formats import SUPPORTED_EXTENSIONS, is_supported

#: The names `rp anonymize` gives its manifest: in an output folder, in an in-place folder, next to one file.
MANIFEST_NAMES = ("manifest.json", "rp-manifest.json")
SINGLE_FILE_SUFFIX = ".manifest.json"


@dataclass
class ImagePair:
    """One original and its anonymized version; `entry` is its run-manifest record when there is one."""

    name: str
    original: Path | None
    anonymized: Path | None
    entry: dict[str, Any] | None = None
    problem: str | None = None


@dataclass
class PairSet:
    """The pairs of one evaluation and the manifest they came with (its config names the verify encoder)."""

    pairs: list[ImagePair]
    manifest_path: Path | None = None
    manifest: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def find_manifest(path: Path) -> Path | None:
    """The run manifest of an `rp anonymize` output folder or file, if it wrote one there."""
    if path.is_dir():
        for name in MANIFEST_NAMES:
            if (path / name).is_file():
                return path / name
        return None
    beside = path.with_name(path.name + SINGLE_FILE_SUFFIX)
    return beside if beside.is_file() else None


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the run manifest ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise InputError(f"{path}: not a JSON run manifest ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(f"{path}: not an rp run manifest (no 'images' list)")
    return data


def pairs_from_manifest(manifest_path: Path) -> PairSet:
    """Every image a run recorded, paired with the output it wrote.

    The manifest stores paths as the run was given them (often relative to where it ran), so
    they are resolved against the run's folder: the ancestor of the manifest under which the
    recorded outputs exist, else the current folder.
    """
    data = read_manifest(manifest_path)
    entries = [e for e in data["images"] if isinstance(e, dict) and "input" in e]
    base = _run_folder(manifest_path, entries, data)
    if data.get("paths") in ("relative", "hashed") and not data.get("in_place"):
        raise InputError(
            f"{manifest_path} names its inputs relative to the input folder (so no folder name travels with the "
            "outputs): give the originals too, `rp evaluate ORIGINALS ANONYMIZED`"
        )
    pairs: list[ImagePair] = []
    for entry in entries:
        source = _resolve(base, str(entry["input"]))
        output = _resolve(base, str(entry["output"])) if entry.get("output") else None
        pair = ImagePair(name=str(entry["input"]), original=source, anonymized=output, entry=entry)
        status = str(entry.get("status", ""))
        if output is None:
            pair.problem = (
                f"the run wrote no output for it (status {status}: {entry.get('error') or 'no reason given'})"
            )
        elif source == output:
            pair.problem = "anonymized in place: the original is gone, nothing to compare with"
        pairs.append(pair)
    _check_files(pairs)
    return PairSet(pairs, manifest_path=manifest_path, manifest=data)


def pairs_from_paths(originals: Path, anonymized: Path) -> PairSet:
    """Pair a file with a file, or every image below a folder with the same relative path below the other."""
    for path, role in ((originals, "originals"), (anonymized, "anonymized")):
        if not path.exists():
            raise InputError(f"{path}: no such file or folder ({role})")
    if originals.is_file() != anonymized.is_file():
        kinds = f"{originals} is a {'file' if originals.is_file() else 'folder'}, {anonymized} is not"
        raise InputError(f"give two files or two folders: {kinds}")
    manifest_path = find_manifest(anonymized)
    manifest = read_manifest(manifest_path) if manifest_path else None
    if originals.is_file():
        pairs = [ImagePair(originals.name, originals, anonymized)]
    else:
        pairs = []
        for source in _images_below(originals):
            relative = source.relative_to(originals)
            target = _counterpart(anonymized / relative)
            pair = ImagePair(str(relative), source, target)
            if target is None:
                pair.problem = f"no anonymized counterpart at {anonymized / relative}"
            pairs.append(pair)
        if not pairs:
            supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
            raise InputError(f"{originals}: no images found (supported: {supported})")
    if manifest is not None:
        _attach_entries(pairs, manifest, manifest_path)  # type: ignore[arg-type]
    _check_files(pairs)
    return PairSet(pairs, manifest_path=manifest_path, manifest=manifest)


def _images_below(folder: Path) -> list[Path]:
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and is_supported(path) and not any(p.startswith(".") for p in relative.parts):
            files.append(path)
    return files


def _counterpart(path: Path) -> Path | None:
    """The anonymized file at the same relative path, allowing another image extension (a PNG saved as JPEG)."""
    if path.is_file():
        return path
    if path.parent.is_dir():
        for candidate in sorted(path.parent.glob(f"{_glob_escape(path.stem)}.*")):
            if candidate.is_file() and is_supported(candidate):
                return candidate
    return None


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _run_folder(manifest_path: Path, entries: list[dict[str, Any]], manifest: dict[str, Any] | None = None) -> Path:
    if manifest is not None and manifest.get("paths") == "relative":
        return manifest_path.resolve().parent  # outputs are named from the manifest's folder
    outputs = [str(e["output"]) for e in entries if e.get("output")]
    relative = [o for o in outputs if not Path(o).is_absolute()]
    if not relative:
        return Path.cwd()
    folder = manifest_path.resolve().parent
    for candidate in (folder, *folder.parents):
        if all((candidate / o).exists() for o in relative[:20]):
            return candidate
    return Path.cwd()


def _resolve(base: Path, recorded: str) -> Path:
    path = Path(recorded)
    return path if path.is_absolute() else base / path


def _attach_entries(pairs: list[ImagePair], manifest: dict[str, Any], manifest_path: Path) -> None:
    """Give each pair the manifest record whose output is its anonymized file."""
    entries = [e for e in manifest["images"] if isinstance(e, dict) and e.get("output")]
    base = _run_folder(manifest_path, entries, manifest)
    by_output = {_resolve(base, str(e["output"])).resolve(): e for e in entries}
    for pair in pairs:
        if pair.anonymized is not None:
            pair.entry = by_output.get(pair.anonymized.resolve())


def _check_files(pairs: list[ImagePair]) -> None:
    for pair in pairs:
        if pair.problem is not None:
            continue
        for path, role in ((pair.original, "original"), (pair.anonymized, "anonymized")):
            if path is None or not path.is_file():
                pair.problem = f"the {role} file {path} does not exist"
                break
