"""A run over files spread across Ray workers: the same plan, journal, manifest and summary as one process.

`RaySession` is a `RunSession` whose files are anonymized by long-lived Ray actors (one per GPU,
each holding the assembled pipeline, models loaded once) instead of in this process. The driver
keeps everything that must have a single writer: it plans (resume, overwrite, skips), notes in the
journal each file it hands out before a worker may publish it (so `--resume` after a killed driver
redoes exactly those), records each finished file as its worker reports it, and writes the one
manifest. Workers read, anonymize (faces batched across the files of a task) and publish outputs
with the same atomic writes; each output path belongs to one task at a time.

When a worker dies, Ray restarts it and the driver hands the files the worker had not reported
out again, one file per task; a file whose worker died `max_attempts` times while holding it fails
(reported like any failed file) instead of taking the run down.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rp_core import errors
from rp_core.errors import ConfigError, RpError
from rp_core.io import InputPlan, Job
from rp_core.manifest import ImageEntry
from rp_core.pipeline import Pipeline
from rp_core.scale.options import RayOptions
from rp_core.session import Event, RunSession, RunSummary, SessionOptions

#: Tasks queued on one actor at once, so it starts its next files while the driver reads the last records.
TASKS_PER_WORKER = 2


@dataclass
class _Task:
    worker: int
    indices: list[int]
    received: set[int] = field(default_factory=set)


class RaySession(RunSession):
    """Anonymize the files of an `InputPlan` on Ray actors; `run()` returns the same summary as `RunSession`."""

    def __init__(
        self,
        pipeline: Pipeline,
        plan: InputPlan,
        options: SessionOptions | None = None,
        on_event: Callable[[Event], None] | None = None,
        ray_options: RayOptions | None = None,
    ) -> None:
        if plan.in_place:
            raise ConfigError(
                "--ray does not support --in-place: write to an output folder (-o), then replace the originals"
            )
        super().__init__(pipeline, plan, options, on_event)
        self.ray_options = ray_options if ray_options is not None else RayOptions()
        #: The actor handles while the run is on (a test may kill one to check that no file is lost).
        self.workers: list[Any] = []
        self.worker_info: list[dict[str, Any]] = []
        self._shared: list[Any] = []  # [the workers' spec in Ray's object store], passed with every call
        self._started_ray = False

    # -- the run: RunSession.run with the models loaded on Ray workers and the files handed to them ---

    def run(self) -> RunSummary:
        """Plan here, anonymize on the workers (only when there is work), record, and return the summary."""
        try:
            return super().run()
        finally:
            self._stop()

    def _load(self, todo: list[int]) -> None:
        """Start the workers; each loads the models (before the journal opens, as in one process)."""
        from rp_core.scale.cluster import connect, import_ray, plan_workers, start_workers
        from rp_core.scale.worker import WorkerSpec

        ray = import_ray()
        self._started_ray = connect(self.ray_options)
        count, gpus, cpus = plan_workers(self.ray_options, ray.cluster_resources())
        count = min(count, len(todo))  # an actor without a file would load its models for nothing
        spec = WorkerSpec(
            config=self.pipeline.config.model_dump(mode="json"),
            # a local Ray's workers share this process's working folder; a cluster's do not
            plan=self.plan if self.ray_options.address is None else _absolute(self.plan),
            options=self.options,
            environ=self.ray_options.plugin_environ(),
            plugins_dir=self.ray_options.plugins_dir,
        )
        device = f"{gpus:g} GPU + {cpus:g} CPU" if gpus else f"{cpus:g} CPU"
        self.on_event(Event("info", f"Ray: {count} worker(s), {device} each; loading the models on each"))
        self.workers, self._shared = start_workers(spec, count, gpus, cpus)
        try:
            infos = ray.get([worker.start.remote(self._shared) for worker in self.workers])
        except ray.exceptions.RayActorError as exc:
            raise RpError(f"a Ray worker died while loading the models: {exc}") from exc
        self.worker_info = self._checked(infos)
        self.packages = self.worker_info[0]["packages"]

    def _anonymize(self, todo: list[int]) -> None:
        from rp_core.scale.cluster import import_ray

        self._dispatch(import_ray(), todo)

    def _stop(self) -> None:
        """Stop the workers (waiting until they are gone) and a Ray this run started."""
        from rp_core.scale.cluster import import_ray, stop_workers

        if self.workers:
            stop_workers(self.workers, self._shared, self.worker_info)
        self.workers, self._shared = [], []
        if self._started_ray:
            import_ray().shutdown()
            self._started_ray = False

    def _checked(self, infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Every worker must have built this run's pipeline, with the same package versions (else: mixed outputs)."""
        mine = self.pipeline.describe()
        for info in infos:
            if "error" in info:
                raise remote_error(info)
        for info in infos:
            if info["components"] != mine:
                differing = sorted(k for k in {*mine, *info["components"]} if mine.get(k) != info["components"].get(k))
                raise RpError(
                    f"the Ray worker on {info['node']} built a different pipeline ({', '.join(differing)} differ): "
                    "install the same rp, plugins and models on every node"
                )
            if info["packages"] != infos[0]["packages"]:
                raise RpError(
                    f"Ray workers on {infos[0]['node']} and {info['node']} run different package versions: "
                    "install the same environment on every node"
                )
        return infos

    # -- handing out files --------------------------------------------------------------------

    def _dispatch(self, ray: Any, todo: list[int]) -> None:
        """Keep every live worker busy until each file of `todo` has its final record."""
        options = self.ray_options
        per_task = options.files_per_task or self.pipeline.batch_size
        size = max(1, min(per_task, math.ceil(len(todo) / len(self.workers))))
        queue: deque[list[int]] = deque(todo[k : k + size] for k in range(0, len(todo), size))
        attempts: dict[int, int] = {}
        alive = set(range(len(self.workers)))
        failures = dict.fromkeys(alive, 0)  # deaths in a row without one finished file
        slots = deque(w for _ in range(TASKS_PER_WORKER) for w in range(len(self.workers)))
        running: dict[Any, _Task] = {}
        while queue or running:
            while queue and slots:
                worker = slots.popleft()
                if worker not in alive:
                    continue
                indices = queue.popleft()
                for i in indices:  # noted before any worker may publish it: a resumed run redoes it
                    self.journal.record(ImageEntry(self.source_name(i), self.target_name(i), "writing"))
                running[self.workers[worker].run.remote(indices, self._shared)] = _Task(worker, indices)
            if not running:
                raise RpError("every Ray worker died; run the same command again with --resume to finish")
            ready, _ = ray.wait(list(running), num_returns=1)
            stream = ready[0]
            task = running[stream]
            try:
                record = ray.get(next(stream))
            except StopIteration:
                del running[stream]
                slots.append(task.worker)
                continue
            except ray.exceptions.RayActorError as exc:
                del running[stream]
                self._lost(task, exc, queue, attempts)
                failures[task.worker] += 1  # one death fails each task queued on it
                if failures[task.worker] >= options.max_attempts * TASKS_PER_WORKER:
                    alive.discard(task.worker)
                    self.on_event(Event("warning", f"Ray worker {task.worker} keeps dying; not using it any more"))
                else:
                    slots.append(task.worker)
                continue
            if "error" in record:
                raise remote_error(record)
            task.received.add(record["index"])
            failures[task.worker] = 0
            self._finish(record)

    def _lost(self, task: _Task, exc: Exception, queue: deque[list[int]], attempts: dict[int, int]) -> None:
        """A worker died holding `task`: its unreported files go out again, one per task, or fail after max_attempts."""
        from rp_core.io import temporary_files_for

        lost = [i for i in task.indices if i not in task.received]
        again = []
        for i in lost:
            for temporary in temporary_files_for(self.plan.jobs[i].target):  # the dead worker's half-written file
                temporary.unlink(missing_ok=True)
            attempts[i] = attempts.get(i, 0) + 1
            if attempts[i] >= self.ray_options.max_attempts:
                source = self.plan.jobs[i].source
                error = f"{source}: the Ray worker processing it died {attempts[i]} times (last: {type(exc).__name__})"
                self.entries[i] = ImageEntry(self.source_name(i), None, "failed", error=error)
                self.on_event(Event("failed", error))
                self.journal.record(self.entries[i])
            else:
                again.append(i)
        for i in reversed(again):
            queue.appendleft([i])
        self.on_event(
            Event("warning", f"Ray worker {task.worker} died; {len(again)} unfinished file(s) handed out again")
        )

    def _finish(self, record: dict[str, Any]) -> None:
        """A worker's final record of one file: forward its events, record it, count it as done."""
        i = int(record["index"])
        for kind, message in record["events"]:
            self.on_event(Event(kind, message))
        entry = ImageEntry.from_dict(record["entry"])
        entry.input = self.source_name(i)  # as this run names it (a cluster's workers see absolute paths)
        if entry.output is not None:
            entry.output = self.target_name(i)
        self.entries[i] = entry
        self.journal.record(self.entries[i])
        if record["faces"] is not None:
            self.on_event(Event("done", faces=int(record["faces"])))


def _absolute(plan: InputPlan) -> InputPlan:
    jobs = tuple(Job(job.source.absolute(), job.target.absolute()) for job in plan.jobs)
    return replace(plan, jobs=jobs, output=plan.output.absolute())


def remote_error(payload: dict[str, Any]) -> RpError:
    """A worker's expected error, raised here with its message and exit code (as one process would)."""
    cls = getattr(errors, str(payload.get("error")), None)
    if isinstance(cls, type) and issubclass(cls, RpError) and cls is not errors.MissingModelsError:
        return cls(payload["message"])
    error = RpError(payload["message"])
    error.exit_code = int(payload.get("exit_code", RpError.exit_code))
    return error


def anonymize_files_on_ray(
    inputs: Sequence[str | Path] | str | Path,
    output: str | Path,
    *,
    ray_options: RayOptions | None = None,
    config_file: str | Path | None = None,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    options: SessionOptions | None = None,
    on_event: Callable[[Event], None] | None = None,
    **params: Any,
) -> RunSummary:
    """`rp_core.api.anonymize_files` on Ray workers: the same outputs, manifest, resume and summary.

    The workers build their plugin host from `ray_options` (RP_PLUGINS* variables, plugins_dir), so a
    host object cannot be passed here.
    """
    from rp_core.api import build_pipeline
    from rp_core.io import plan_inputs
    from rp_core.plugins import PluginHost

    ray_options = ray_options if ray_options is not None else RayOptions()
    host = PluginHost(plugins_dir=ray_options.plugins_dir, environ=ray_options.plugin_environ())
    pipeline = build_pipeline(config_file=config_file, preset=preset, overrides=overrides, host=host, **params)
    sources = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    plan = plan_inputs(sources, output)
    return RaySession(pipeline, plan, options, on_event, ray_options).run()
