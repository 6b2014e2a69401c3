"""One run at a time per output: a lock next to the run manifest, so two runs never write it at once.

The lock is an advisory `flock` on `<manifest>.lock` (the manifest's name with `.lock`), held for the
whole run and removed when it ends; the kernel drops it when a process dies, so a killed run leaves
nothing that blocks the next one. The file holds the owner's pid for the message. Where `fcntl` does
not exist (Windows) runs are not locked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from rp_core.errors import RpError


class OutputBusyError(RpError):
    """Another run holds the output's lock."""

    exit_code = 2


def lock_path(manifest: Path) -> Path:
    return manifest.with_name(manifest.name + ".lock")


def _open(path: Path) -> int:
    """The lock file, opened (an OSError is the caller's to word: it knows which output was asked for)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


@contextlib.contextmanager
def output_lock(manifest: Path) -> Iterator[None]:
    """Hold the lock of the output whose run manifest is `manifest` (its folder is created if needed)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover (Windows)
        yield
        return
    path = lock_path(manifest)
    for _ in range(3):
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise OutputBusyError(
                f"another rp run (pid {owner}) is writing to {manifest.parent}: wait for it to finish, or choose "
                f"another output (lock: {path})"
            ) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous owner removed the file between our open and our lock: take the new one
    else:  # pragma: no cover (three removals in a row)
        raise OutputBusyError(f"could not lock {path}: it keeps being replaced")
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
