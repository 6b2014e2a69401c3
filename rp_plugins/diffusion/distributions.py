"""The installed-distributions map that diffusers and transformers build at import, made once and kept on disk.

Each of them calls `importlib.metadata.packages_distributions()` while it is imported: a walk over every
installed package's file list (2.0 s of a second process's 21 s on the GPU box, ~1 s on a 2-core CPU, measured).
Its answer depends only on what is installed, so a process computes it once (`functools.cache` for the
second caller) and, given a cache folder, saves it beside the models under a name made of the installed
distributions' metadata folders and their modification times: a later process with the same packages reads
it back (a few milliseconds) instead of walking again; installing, removing or reinstalling any package changes
the name, and the map is computed afresh. The function is restored when the imports are done.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

Packages = Mapping[str, list[str]]


def installed_fingerprint(paths: list[str] | None = None) -> str:
    """A digest of every distribution's metadata folder on `paths` (sys.path): its place, name and modification
    time, in search order. Installing, upgrading, removing or reinstalling a package changes it."""
    digest = hashlib.sha256()
    for entry in sys.path if paths is None else paths:
        try:
            with os.scandir(entry or ".") as found:
                names = sorted(e.name for e in found if e.name.endswith((".dist-info", ".egg-info")))
        except NotADirectoryError:  # a zip or egg on the path: its own modification time stands for its contents
            names = [""]
        except OSError:  # a missing path: nothing importlib.metadata finds there either
            continue
        for name in names:
            try:
                stamp = os.stat(os.path.join(entry or ".", name) if name else entry).st_mtime_ns
            except OSError:
                continue
            digest.update(f"{entry}\0{name}\0{stamp}\n".encode())
    return digest.hexdigest()[:20]


def remembered(compute: Callable[[], Packages], cache_dir: Path | None) -> Callable[[], Packages]:
    """`compute` called at most once per process, and once per set of installed packages with a `cache_dir`."""

    @functools.cache
    def packages() -> Packages:
        path = cache_dir / f"distributions-{installed_fingerprint()}.json" if cache_dir is not None else None
        if path is not None:
            try:
                kept = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(kept, dict):
                    return {str(k): [str(d) for d in v] for k, v in kept.items()}
            except (OSError, ValueError, TypeError, AttributeError):
                pass  # absent or unreadable: computed below
        answer = {k: list(v) for k, v in compute().items()}
        if path is not None:
            _save(path, answer)
        return answer

    return packages


def _save(path: Path, answer: Packages) -> None:
    """Write the map (a crash leaves no half file); a folder that cannot be written just keeps nothing."""
    from rp_core.files.write import atomic_write_bytes

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(answer).encode("utf-8"))  # in the order computed, as a scan gives it
    except OSError:
        pass


@contextlib.contextmanager
def scan_distributions_once(cache_dir: Path | None = None) -> Iterator[None]:
    """While diffusers and transformers are imported, list the installed distributions once (`remembered`)."""
    import importlib.metadata as metadata

    original = metadata.packages_distributions
    metadata.packages_distributions = remembered(original, cache_dir)  # type: ignore[assignment]
    try:
        yield
    finally:
        metadata.packages_distributions = original  # type: ignore[assignment]
