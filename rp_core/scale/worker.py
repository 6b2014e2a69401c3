"""The body of one Ray actor: an assembled, loaded pipeline that anonymizes and writes the files it is given.

A worker rebuilds the driver's pipeline from the resolved config (a pipeline holds a plugin host
and loaded models, neither of which travels between processes), loads its models once, and runs
shards of the driver's plan through the same per-file code as a single-process run
(`rp_core.work.FileWork`: read, anonymize with faces batched across the shard, write photos
atomically, encode a video into a finished temporary file). It never touches the journal or the
manifest and publishes no video: it yields each file's record to the driver, which does. This
module imports no Ray; the driver wraps `Worker` with `ray.remote`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rp_core import errors
from rp_core.errors import RpError
from rp_core.io import InputPlan
from rp_core.run_options import Event, SessionOptions

if TYPE_CHECKING:
    from rp_core.work import Outcome


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to rebuild the driver's pipeline and name files as the driver does."""

    config: dict[str, Any]
    plan: InputPlan
    options: SessionOptions
    #: What the workers' plugin hosts read (RP_PLUGINS, RP_PLUGINS_BLOCK, RP_PLUGINS_DIR), as on the driver.
    environ: dict[str, str] = field(default_factory=dict)
    plugins_dir: Path | None = None


def error_payload(exc: RpError) -> dict[str, Any]:
    """An expected error as plain data: some RpError subclasses cannot be rebuilt from their message alone."""
    return {"error": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}


def remote_error(payload: dict[str, Any]) -> RpError:
    """A worker's expected error, raised here with its message and exit code (as one process would)."""
    cls = getattr(errors, str(payload.get("error")), None)
    if isinstance(cls, type) and issubclass(cls, RpError) and cls is not errors.MissingModelsError:
        return cls(payload["message"])
    error = RpError(payload["message"])
    error.exit_code = int(payload.get("exit_code", RpError.exit_code))
    return error


def outcome_of(record: dict[str, Any], on_event: Callable[[Event], None]) -> Outcome:
    """A worker's record of one finished file as the session's `Outcome`, its events passed on first; an error
    record raises here as one process would have (`remote_error`)."""
    from rp_core.manifest import ImageEntry
    from rp_core.work import Outcome

    if "error" in record:
        raise remote_error(record)
    for kind, message in record["events"]:
        on_event(Event(kind, message))
    staged = record.get("staged")
    return Outcome(
        int(record["index"]), ImageEntry.from_dict(record["entry"]), record["faces"], Path(staged) if staged else None
    )


class Worker:
    """One long-lived actor: `start()` loads the models; `run(indices)` yields one record per finished file.

    On Ray the spec comes with each call as `shared`, a list holding its object reference (a list, so
    that Ray hands over the reference rather than the plan each time): an actor that Ray restarts after
    a crash is built without arguments and fetches the spec on its next call.
    """

    def __init__(self, spec: WorkerSpec | None = None) -> None:
        self.spec = spec
        self._work: Any = None
        self._events: list[Event] = []

    def _ensure_loaded(self, shared: list[Any] | None) -> None:
        """Assemble and load once per process (an actor restarted after a crash loads again here)."""
        if self._work is not None:
            return
        if self.spec is None:
            import ray

            assert shared, "a Worker built without a spec needs one with each call"
            self.spec = ray.get(shared[0])
        assert self.spec is not None
        from rp_core.config import RunConfig
        from rp_core.pipeline import assemble
        from rp_core.plugins import PluginHost
        from rp_core.work import FileWork

        host = PluginHost(plugins_dir=self.spec.plugins_dir, environ=dict(self.spec.environ))
        pipeline = assemble(RunConfig.model_validate(self.spec.config), host)
        # names files exactly as the driver does (same plan); records nothing itself: the driver does
        work = FileWork(pipeline, self.spec.plan, self.spec.options, self._events.append)
        work.load()
        self._work = work

    def start(self, shared: list[Any] | None = None) -> dict[str, Any]:
        """Load the models; return what the driver checks (the stages as built here) and records."""
        from rp_core.manifest import package_versions

        try:
            self._ensure_loaded(shared)
        except RpError as exc:
            return error_payload(exc)
        return {
            "components": self._work.pipeline.describe(),
            "packages": package_versions(),
            "node": socket.gethostname(),
            "pid": os.getpid(),
        }

    def run(self, indices: list[int], shared: list[Any] | None = None) -> Iterator[dict[str, Any]]:
        """Anonymize the plan's jobs `indices`; yield one record per file as soon as it is final.

        A record: `index`, `entry` (an ImageEntry dict), `events` (what the work reported since the
        last record, as (kind, message) pairs), `faces` (the face count when the file went through
        the pipeline to the writer, else None) and `staged` (a finished video's temporary file, which
        the driver publishes, else None).
        """
        try:
            self._ensure_loaded(shared)
        except RpError as exc:
            yield error_payload(exc)
            return
        for outcome in self._work.run(indices):
            events, self._events[:] = [(e.kind, e.message) for e in self._events], []
            yield {
                "index": outcome.index,
                "entry": outcome.entry.to_dict(),
                "events": events,
                "faces": outcome.faces,
                "staged": str(outcome.staged) if outcome.staged is not None else None,
            }
