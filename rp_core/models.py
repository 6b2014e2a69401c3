"""Model files: where each is looked for, whether it is there, how to get it.

Components describe their weights with `ModelFile` so `rp doctor`, `rp models download`
and the missing-model error all speak about the same files in the same words.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rp_core.errors import MissingModelsError

MODELS_DIR_ENV = "RP_MODELS_DIR"


@dataclass(frozen=True)
class ModelFile:
    """One weight file or folder a component needs."""

    component: str
    description: str
    found_at: Path | None
    looked_in: tuple[Path, ...]
    how_to_get: str

    @property
    def present(self) -> bool:
        return self.found_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "component": self.component,
            "description": self.description,
            "present": self.present,
            "found_at": str(self.found_at) if self.found_at else None,
            "looked_in": [str(p) for p in self.looked_in],
            "how_to_get": self.how_to_get,
        }


def first_existing(candidates: Sequence[Path]) -> Path | None:
    for path in candidates:
        if path.exists():
            return path
    return None


def require_present(files: Sequence[ModelFile]) -> None:
    """Raise one error naming every missing file, or return quietly."""
    missing = [f for f in files if not f.present]
    if missing:
        raise MissingModelsError(missing)


def models_dir_from_env() -> Path | None:
    value = os.environ.get(MODELS_DIR_ENV)
    return Path(value).expanduser() if value else None


def default_cache_dir(models_dir: Path | None) -> Path:
    """Where files derived from weights are kept (`<models_dir>/cache`, else ~/.cache/rp): made once, read later."""
    if models_dir is not None:
        return Path(models_dir) / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache"))).expanduser() / "rp"


def digest(sources: Sequence[Path], *more: Any) -> str:
    """A short hash of the files' paths, sizes and modification times and of `more`: a cache file's name part,
    so a changed input is never served a stale derived file."""
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in sources]
    key = json.dumps([stats, *map(str, more)])
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def derived_model(
    cache_dir: Path | None, name: str, build: Callable[[], bytes], load: Callable[[Path | bytes], Any]
) -> Any:
    """`load` of the file `name` derived from weights by `build`: read from `cache_dir` when a process wrote it
    before (only the first process pays for `build`, and imports what it needs), else built and written there
    atomically. An unwritable cache loads the built bytes from memory; a cached file that does not load (disks
    and people fail) is built and written again, once."""

    def made() -> Path | bytes:
        cached = cache_dir / name if cache_dir is not None else None
        if cached is not None and cached.is_file():
            return cached
        data = build()
        if cached is None:
            return data
        from rp_core.files.write import atomic_write_bytes

        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            return atomic_write_bytes(cached, data)
        except OSError:  # a read-only or full cache: this process runs from memory, the next one tries again
            return data

    model = made()
    try:
        return load(model)
    except Exception:
        if not isinstance(model, Path):
            raise
        model.unlink(missing_ok=True)
        return load(made())


class ModelPool:
    """Process-wide cache of loaded models keyed by (model, dtype, device, ...).

    The inverter and the generator ask for the same key and so share one SDXL.
    """

    def __init__(self) -> None:
        self._items: dict[Hashable, Any] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, factory: Callable[[], Any]) -> Any:
        with self._lock:
            if key not in self._items:
                self._items[key] = factory()
            return self._items[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


DEFAULT_POOL = ModelPool()


#: Hosts the default components download from; if none resolves, the machine is offline.
DOWNLOAD_HOSTS = ("huggingface.co", "github.com", "www.adrianbulat.com")


def network_available(hosts: tuple[str, ...] = DOWNLOAD_HOSTS, timeout: float = 2.0) -> bool:
    """True when any download host resolves within `timeout` seconds (DNS can hang; a thread bounds it)."""
    import socket
    import threading
    import time

    if os.environ.get("RP_OFFLINE") or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    found = threading.Event()
    threads = []

    def resolve(host: str) -> None:
        try:
            socket.getaddrinfo(host, 443)
        except OSError:
            return
        found.set()

    for host in hosts:
        thread = threading.Thread(target=resolve, args=(host,), daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout
    while not found.is_set() and any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        found.wait(0.02)
    return found.is_set()
