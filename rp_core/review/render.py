"""Render in the background while the page polls: the same session as `rp anonymize --faces-json`.

The server thread only starts the run and reads its progress; the run itself is
`rp_core.api.anonymize_files` with the faces JSON, so it writes outputs atomically, journals
them and writes the manifest exactly as the command line would, and a server killed mid-render
leaves only finished files (`--resume` finishes the rest).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rp_core.errors import RpError
from rp_core.session import Event, RunSummary, SessionOptions

#: (options, on_event) -> summary: one run over the reviewed photos with the saved decisions.
Runner = Callable[[SessionOptions, Callable[[Event], None]], RunSummary]
MAX_MESSAGES = 200


@dataclass
class _Progress:
    state: str = "idle"  # idle | running | done | failed
    total: int = 0
    finished: int = 0
    faces: int = 0
    messages: list[str] = field(default_factory=list)
    summary: str = ""
    exit_code: int | None = None
    manifest: str | None = None
    #: manifest records of the last finished run, by input name (status, error, each face's action)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = 0.0
    seconds: float = 0.0


class RenderJob:
    """One render at a time, in a daemon thread; `snapshot()` is what the page polls."""

    def __init__(self, runner: Runner, first: SessionOptions, no_face_policy: str = "copy") -> None:
        self.runner, self.first, self.no_face_policy = runner, first, no_face_policy
        self.renders = 0
        self._progress = _Progress()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start a render (False if one is running). Later renders replace the outputs of earlier ones."""
        with self._lock:
            if self._progress.state == "running":
                return False
            options = self.first if self.renders == 0 else _replacing(self.first)
            self.renders += 1
            self._progress = _Progress(state="running", started=time.monotonic())
            self._thread = threading.Thread(target=self._run, args=(options,), name="rp-review-render", daemon=True)
            self._thread.start()
            return True

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self, options: SessionOptions) -> None:
        try:
            summary = self.runner(options, self._event)
        except RpError as exc:
            self._finish("failed", f"render failed: {exc}", None)
        except Exception as exc:  # the page must learn that the run ended, whatever ended it
            self._finish("failed", f"render failed: {type(exc).__name__}: {exc}", None)
        else:
            self._finish("done", summary.line(), summary)

    def _event(self, event: Event) -> None:
        with self._lock:
            progress = self._progress
            if event.kind == "start":
                progress.total = event.total
            elif event.kind in ("done", "failed"):
                progress.finished += 1
                progress.faces += event.faces
            if event.kind in ("warning", "failed", "skip", "info") and len(progress.messages) < MAX_MESSAGES:
                progress.messages.append(f"{event.kind}: {event.message}" if event.kind != "info" else event.message)

    def _finish(self, state: str, line: str, summary: RunSummary | None) -> None:
        with self._lock:
            progress = self._progress
            progress.state, progress.summary = state, line
            progress.seconds = time.monotonic() - progress.started
            if summary is not None:
                progress.exit_code = summary.exit_code(self.no_face_policy)
                progress.manifest = str(summary.manifest_path) if summary.manifest_path else None
                progress.results = {e.input: _result(e) for e in summary.entries}

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            p = self._progress
            seconds = time.monotonic() - p.started if p.state == "running" else p.seconds
            return {
                "state": p.state,
                "total": p.total,
                "finished": p.finished,
                "faces": p.faces,
                "messages": list(p.messages),
                "summary": p.summary,
                "exit_code": p.exit_code,
                "manifest": p.manifest,
                "results": dict(p.results),
                "seconds": round(seconds, 1),
                "renders": self.renders,
            }


def _replacing(options: SessionOptions) -> SessionOptions:
    from dataclasses import replace

    return replace(options, overwrite=True, resume=False)


def _result(entry: Any) -> dict[str, Any]:
    return {
        "status": entry.status,
        "error": entry.error,
        "actions": [face.get("action") for face in entry.faces],
    }
