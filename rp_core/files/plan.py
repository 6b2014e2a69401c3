"""Input planning: which files a run reads, where each output goes, and every path it leaves out and why."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rp_core.errors import InputError
from rp_core.files.formats import IMAGE_LIKE_EXTENSIONS, UsageError, check_output_format, is_supported


@dataclass(frozen=True)
class Job:
    """One input file and where its anonymized version goes."""

    source: Path
    target: Path


@dataclass(frozen=True)
class Skipped:
    """A path the run will not process, and why: every one is reported, none is left out silently.

    Reasons: "symlink", "symlinked folder" (in-place without following symlinks), "unsupported format",
    "not readable", "folder not readable", "not a regular file", "broken symlink", "symlink loop",
    "folder already included", "symlink to a processed file".
    """

    path: Path
    reason: str

    @property
    def may_hold_faces(self) -> bool:
        """Whether the untouched file may still show a face: worth a warning, above all with --in-place."""
        if self.reason in ("symlinked folder", "folder not readable"):
            return True
        if self.reason in ("broken symlink", "symlink loop", "folder already included", "symlink to a processed file"):
            return False
        return self.path.suffix.lower() in IMAGE_LIKE_EXTENSIONS


@dataclass(frozen=True)
class InputPlan:
    """What a run will read and write; `to_folder` is False only for a single file -> file run."""

    jobs: tuple[Job, ...]
    to_folder: bool
    output: Path
    skipped: tuple[Skipped, ...] = field(default_factory=tuple)
    manifest_name: str = "manifest.json"
    in_place: bool = False
    #: --in-place inputs with hard links outside the plan: replacing this name leaves the original
    #: photo readable under its other name(s), which the run cannot find
    linked_elsewhere: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def manifest_path(self) -> Path:
        if self.to_folder:
            return self.output / self.manifest_name
        return self.output.with_name(self.output.name + ".manifest.json")

    @property
    def ignored(self) -> tuple[Path, ...]:
        """Files skipped as not supported images (kept for callers written before `skipped`)."""
        return tuple(s.path for s in self.skipped if s.reason == "unsupported format")

    @property
    def may_hold_faces(self) -> tuple[Skipped, ...]:
        """Skipped paths that may still show a face (image-like files, symlinked folders)."""
        return tuple(s for s in self.skipped if s.may_hold_faces)


def journal_path(manifest_path: Path) -> Path:
    """Where a run notes each finished file as it goes, so `--resume` can rebuild the manifest after a kill."""
    return manifest_path.with_name(f".{manifest_path.name}.journal")


def plan_inputs(inputs: Sequence[Path | str], output: Path | str) -> InputPlan:
    """Pair every input file with its output path.

    One file and an output with an image extension -> file to file. Otherwise the
    output is a folder: files land by name, a single input folder is mirrored into
    it keeping relative paths, and several folders each get a subfolder of their name.
    Hidden files and folders are inputs too (thumbnails show faces). Symlinks are
    followed (reading through them harms nothing), a loop is reported and not entered.
    """
    sources = [Path(p) for p in inputs]
    if str(output) == "-":
        raise UsageError("-o -: rp cannot write images to standard output; give an output file or folder")
    out = Path(output)
    if not sources:
        raise InputError("no input given")
    for source in sources:
        _check_exists(source)
    single_file = len(sources) == 1 and sources[0].is_file()
    if single_file and not out.is_dir() and out.suffix:
        check_output_format(sources[0], out)
        _check_not_same(sources[0], out)
        return InputPlan((Job(sources[0], out),), to_folder=False, output=out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: output must be a folder when the input is a folder or several files")

    walker = _Walker(follow=True, exclude=out)
    jobs: list[Job] = []
    for source in sources:
        if source.is_file():
            check_output_format(source, source)  # written under its own name, so in the format it names
            jobs.append(Job(source, out / source.name))
        elif source.is_dir():
            base = out if len(sources) == 1 else out / source.resolve().name
            jobs.extend(Job(f, base / f.relative_to(source)) for f in walker.files(source))
        else:
            walker.skipped.append(Skipped(source, "not a regular file"))
    _check_unique(jobs)
    for job in jobs:
        _check_not_same(job.source, job.target)
    return InputPlan(tuple(jobs), to_folder=True, output=out, skipped=tuple(walker.skipped))


def plan_reading(inputs: Sequence[Path | str]) -> InputPlan:
    """Every image below `inputs` for a command that only reads them (`rp detect`); each job's target is its source.

    Files and folders are walked as for `plan_inputs` (symlinks followed, hidden files included).
    """
    sources = [Path(p) for p in inputs]
    if not sources:
        raise InputError("no input given")
    walker = _Walker(follow=True, exclude=None)
    jobs: list[Job] = []
    for source in sources:
        _check_exists(source)
        if source.is_file():
            jobs.append(Job(source, source))
        elif source.is_dir():
            jobs.extend(Job(f, f) for f in walker.files(source))
        else:
            walker.skipped.append(Skipped(source, "not a regular file"))
    _check_unique(jobs)
    return InputPlan(tuple(jobs), to_folder=True, output=sources[0], skipped=tuple(walker.skipped))


def plan_in_place(inputs: Sequence[Path | str], *, follow_symlinks: bool = False) -> InputPlan:
    """Pair every input file with itself (`--in-place`): each is replaced, atomically, by its anonymized version.

    Hidden files and folders are processed. A symlink (to a file or a folder) is skipped and reported:
    replacing the link would leave its target, the real photo, untouched. With `follow_symlinks` the
    resolved target is processed instead, each target once. The manifest goes next to a single file
    (`photo.jpg.manifest.json`), else into the first input folder (or the first file's folder) as
    `rp-manifest.json`.
    """
    sources = [Path(p) for p in inputs]
    if not sources:
        raise InputError("no input given")
    for source in sources:
        _check_exists(source)
    single_file = len(sources) == 1 and sources[0].is_file()
    if single_file:
        plan = InputPlan((), to_folder=False, output=sources[0], in_place=True)
    else:
        folder = next((s for s in sources if s.is_dir() and not s.is_symlink()), None)
        folder = folder or next((s for s in sources if s.is_dir()), sources[0].parent)
        plan = InputPlan((), to_folder=True, output=folder, manifest_name="rp-manifest.json", in_place=True)
    own = {plan.manifest_path.resolve(), journal_path(plan.manifest_path).resolve()}
    walker = _Walker(follow=follow_symlinks, exclude=None, own=own, in_place=True)
    jobs: list[Job] = []
    for source in sources:
        if source.is_symlink() and not follow_symlinks:
            walker.skipped.append(Skipped(source, "symlinked folder" if source.is_dir() else "symlink"))
        elif source.is_file():
            real = source.resolve() if source.is_symlink() else source
            check_output_format(real, real)  # it is written back in the format its extension names
            jobs.append(Job(real, real))
        elif source.is_dir():
            jobs.extend(Job(f, f) for f in walker.files(source))
        else:
            walker.skipped.append(Skipped(source, "not a regular file"))
    unique: dict[Path, Job] = {}
    for job in jobs:
        unique.setdefault(job.source.resolve(), job)  # a file reached twice (directly and by a link) is one job
    skipped = _mark_processed_links(walker.skipped, set(unique))
    return InputPlan(
        tuple(unique.values()),
        to_folder=plan.to_folder,
        output=plan.output,
        skipped=tuple(skipped),
        manifest_name=plan.manifest_name,
        in_place=True,
        linked_elsewhere=_linked_elsewhere(unique.values()),
    )


def _linked_elsewhere(jobs: Iterable[Job]) -> tuple[Path, ...]:
    """Jobs whose file has more hard links than the plan has names for it (the other names keep the original)."""
    names: dict[tuple[int, int], tuple[int, list[Path]]] = {}
    for job in jobs:
        try:
            info = os.stat(job.source)
        except OSError:
            continue
        names.setdefault((info.st_dev, info.st_ino), (info.st_nlink, []))[1].append(job.source)
    return tuple(path for links, paths in names.values() if links > len(paths) for path in paths)


def _check_exists(source: Path) -> None:
    if source.is_symlink() and not source.exists():
        raise InputError(f"{source}: broken symlink (its target does not exist)")
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")


def _mark_processed_links(skipped: list[Skipped], processed: set[Path]) -> list[Skipped]:
    """A skipped link whose target is processed anyway leaves no face behind: say so instead of warning."""
    marked = []
    for entry in skipped:
        if entry.reason == "symlink":
            try:
                target = entry.path.resolve(strict=True)
            except (OSError, RuntimeError):
                target = None
            if target in processed:
                entry = Skipped(entry.path, "symlink to a processed file")
        marked.append(entry)
    return marked


class _Walker:
    """Walks input folders in name order, collecting supported files and reporting everything else."""

    def __init__(self, *, follow: bool, exclude: Path | None, own: Iterable[Path] = (), in_place: bool = False) -> None:
        self.follow, self.in_place = follow, in_place
        self.exclude = exclude.resolve() if exclude is not None else None
        self.own = frozenset(own)
        self.skipped: list[Skipped] = []
        self._visited: set[tuple[int, int]] = set()

    def files(self, root: Path) -> list[Path]:
        """Supported files below `root`, as reached; the rest goes to `skipped`.

        A followed symlink to a file counts as its target in place (that is the file to replace), and under
        its own name otherwise (that is the name its output gets).

        Only an output folder inside `root` is left out: one that holds `root` (or is it) would hide every file.
        """
        exclude = self.exclude
        if exclude is not None and _is_within(root.resolve(), exclude):
            exclude = None
        found: list[Path] = []
        try:
            top = os.stat(root)
        except OSError:
            self.skipped.append(Skipped(root, "folder not readable"))
            return found
        key = (top.st_dev, top.st_ino)
        if key in self._visited:
            self.skipped.append(Skipped(root, "folder already included"))
            return found
        self._visited.add(key)
        self._visit(root, frozenset({key}), exclude, found)
        return found

    def _visit(self, folder: Path, ancestors: frozenset[tuple[int, int]], exclude: Path | None, found: list) -> None:
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError:
            self.skipped.append(Skipped(folder, "folder not readable"))
            return
        for entry in entries:
            path = Path(entry.path)
            link = entry.is_symlink()
            try:
                info = os.stat(path)
            except OSError:
                self.skipped.append(Skipped(path, "broken symlink" if link else "not readable"))
                continue
            if link and not self.follow:
                self.skipped.append(Skipped(path, "symlinked folder" if stat.S_ISDIR(info.st_mode) else "symlink"))
                continue
            if stat.S_ISDIR(info.st_mode):
                if exclude is not None and _is_within(path.resolve(), exclude):
                    continue  # the run's own output folder
                key = (info.st_dev, info.st_ino)
                if key in ancestors:
                    self.skipped.append(Skipped(path, "symlink loop"))
                elif key in self._visited:
                    self.skipped.append(Skipped(path, "folder already included"))
                else:
                    self._visited.add(key)
                    self._visit(path, ancestors | {key}, exclude, found)
            elif stat.S_ISREG(info.st_mode):
                real = path.resolve()
                if (exclude is not None and _is_within(real, exclude)) or real in self.own:
                    continue  # the run's own outputs and manifest are not inputs
                name = real if link and self.in_place else path
                if not is_supported(name):
                    self.skipped.append(Skipped(path, "unsupported format"))
                elif not os.access(path, os.R_OK):
                    self.skipped.append(Skipped(path, "not readable"))
                else:
                    found.append(name)
            else:
                self.skipped.append(Skipped(path, "not a regular file"))


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_unique(jobs: Iterable[Job]) -> None:
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = job.target.resolve()
        if key in seen:
            raise InputError(f"{seen[key]} and {job.source} would both be written to {job.target}; rename one")
        seen[key] = job.source


def _check_not_same(source: Path, target: Path) -> None:
    if target.exists() and source.resolve() == target.resolve():
        raise InputError(f"{target}: the output would overwrite its own input; choose another output path")
