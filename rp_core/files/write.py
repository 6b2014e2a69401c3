"""The one way rp publishes a file, and the journal's checked appends.

`publishing(target)` hands out a temporary file beside the target; whatever the body writes there
(bytes through `Draft.write`'s checked writes, or a video encoder given `Draft.path`) is synced,
checked and atomically renamed over the target when the body ends, and removed when it fails.
The target is therefore either untouched or complete, also on a full disk or a kill.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rp_core.errors import InputError


class Draft:
    """The temporary file of a `publishing` block: write bytes with `write`, or hand `path` to an encoder."""

    def __init__(self, path: Path, handle: int, target: Path) -> None:
        self.path, self.target = path, target
        self._handle = handle
        #: bytes written through `write` (None: the file was written by someone else, e.g. a video encoder)
        self.written: int | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append `data` with checked writes: a short or failed write is an OSError naming the target."""
        view = memoryview(data).cast("B")
        done = write_all(self._handle, view, self.target)
        self.written = (self.written or 0) + done


@contextmanager
def publishing(
    path: Path | str,
    *,
    check: Callable[[Path], None] | None = None,
    before_publish: Callable[[], None] | None = None,
    staged: bool = False,
) -> Iterator[Draft]:
    """Write `path` through a temporary file beside it, published only when the block ends without error.

    On leaving the block the temporary file is synced and its size compared with what `Draft.write`
    wrote; then `check(temp)` may inspect it (raise to refuse), `before_publish()` runs (a run notes
    its intent there), and the file atomically replaces `path` (keeping an existing target's
    permissions) and the folder is synced. On any failure the temporary file is removed and the error
    re-raised: `path` is untouched. With `staged` a finished, synced file stays at `Draft.path` for the
    caller to `publish` later (a Ray driver publishes what its worker encoded: one publisher per output).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    draft = Draft(Path(temp_name), handle, path)
    try:
        try:
            yield draft
            os.fsync(handle)
            size = os.fstat(handle).st_size
        finally:
            os.close(handle)
        if draft.written is not None and size != draft.written:
            raise OSError(errno.EIO, f"{size} of {draft.written} bytes reached the disk", str(path))
        if check is not None:
            check(draft.path)
        if before_publish is not None:
            before_publish()
        if staged:
            return
        publish(draft.path, path)
    except BaseException:
        draft.path.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_write_bytes(
    path: Path | str,
    data: bytes | bytearray | memoryview,
    *,
    before_publish: Callable[[], None] | None = None,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Write `data` to `path` so that `path` is either untouched or holds exactly `data`, synced to disk.

    `publishing` with one checked write; OSError (with errno, a one-line reason and the path) on failure.
    """
    path = Path(path)
    with publishing(path, check=check, before_publish=before_publish) as draft:
        draft.write(data)
    return path


def write_all(handle: int, view: memoryview, path: Path) -> int:
    """Write all of `view` to the file descriptor; a failed or stalled write is an OSError naming `path`."""
    written = 0
    while written < len(view):
        try:
            count = os.write(handle, view[written:])
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise OSError(exc.errno, f"{reason} (after {written} of {len(view)} bytes)", str(path)) from None
        if count <= 0:
            raise OSError(errno.EIO, f"write stalled after {written} of {len(view)} bytes", str(path))
        written += count
    return written


class AppendLog:
    """An append-only file of lines (the run's journal): each append is checked, synced, and all or nothing.

    A failed append (a full disk) truncates the file back to its last complete record before raising,
    so the log never holds a torn record and a later `--resume` reads every record that was reported written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: int | None = None
        self._size = 0

    def open(self, *, keep: bool) -> None:
        """Open for appending (`keep`: after the records already there; else the file starts empty)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | (0 if keep else os.O_TRUNC) | getattr(os, "O_CLOEXEC", 0)
        handle = os.open(self.path, flags, 0o666)
        try:
            self._size = _complete_lines(handle)
            os.ftruncate(handle, self._size)  # a line torn by a killed run would swallow the next one
        except OSError:
            os.close(handle)
            raise
        self._handle = handle

    @property
    def is_open(self) -> bool:
        return self._handle is not None

    def append(self, record: bytes) -> None:
        """Append one record and sync it; on failure the file is cut back to where it was, then OSError."""
        if self._handle is None:
            raise ValueError(f"{self.path}: not open")
        try:
            os.lseek(self._handle, self._size, os.SEEK_SET)
            write_all(self._handle, memoryview(record), self.path)
            os.fsync(self._handle)
        except OSError:
            try:
                os.ftruncate(self._handle, self._size)  # freeing space never needs space
            except OSError:
                pass  # a reader ignores a torn last line anyway
            raise
        self._size += len(record)

    def close(self, *, remove: bool = False) -> None:
        if self._handle is not None:
            os.close(self._handle)
            self._handle = None
        if remove:
            self.path.unlink(missing_ok=True)


def _complete_lines(handle: int) -> int:
    """The length of the file up to and including its last newline."""
    end = os.lseek(handle, 0, os.SEEK_END)
    position = end
    while position > 0:
        start = max(0, position - 65536)
        chunk = os.pread(handle, position - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0


def fsync_folder(folder: Path) -> None:
    """Make the rename durable; filesystems (and systems) that cannot sync a folder are let be."""
    if os.name == "nt":
        return
    try:
        handle = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(handle)


def publish(temp_name: str | Path, path: Path) -> None:
    """Move a finished temporary file into place, with the replaced file's permissions (else the umask's).

    mkstemp makes files 0600; an --in-place original that was 0600 must not come back world-readable either.
    """
    try:
        existing = os.stat(path)
    except OSError:
        existing = None
    if existing is not None and stat.S_ISREG(existing.st_mode):
        os.chmod(temp_name, stat.S_IMODE(existing.st_mode))
        if hasattr(os, "chown"):
            try:
                os.chown(temp_name, existing.st_uid, existing.st_gid)
            except OSError:
                pass  # only root may give a file away; the permissions above still hold
    else:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)
    os.replace(temp_name, path)


def temporary_files_for(target: Path) -> list[Path]:
    """Leftover temporary files of an interrupted `write_image(target)` (or manifest write)."""
    if not target.parent.is_dir():
        return []
    return sorted(target.parent.glob(f".{glob_escape(target.name)}.*.part"))


def cannot_write(path: Path, exc: OSError) -> InputError:
    """One line for an output location that cannot be written: `cannot write to PATH: reason`."""
    for ancestor in (path, *path.parents):
        if ancestor.exists() or ancestor.is_symlink():
            if ancestor != path and not ancestor.is_dir():
                return InputError(f"cannot write to {path}: {ancestor} is a file, not a folder")
            break
    reason = exc.strerror or str(exc)
    if exc.filename is not None and Path(os.fsdecode(exc.filename)) != path:
        reason = f"{reason} ({os.fsdecode(exc.filename)})"
    return InputError(f"cannot write to {path}: {reason}")


def check_writable_folder(folder: Path) -> None:
    """Raise the OSError that creating or writing `folder` would meet (pass it to `cannot_write`); creates nothing."""
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise NotADirectoryError(20, os.strerror(20), str(ancestor))
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise PermissionError(13, os.strerror(13), str(ancestor))
            return


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
