"""Run a session's files on Ray workers: the same plan, journal, manifest and summary as one process.

`RayExecutor` is the executor (rp_core.executor) a `RunSession` is given for `rp anonymize --ray`:
long-lived Ray actors (one per GPU, each holding the assembled pipeline, models loaded once)
run the same `rp_core.work.FileWork` as one process does. The session keeps everything that
must have a single writer: it plans (resume, overwrite, skips), records each finished file, writes
the one manifest and publishes every video. This executor notes in the journal each file it
hands out before a worker may publish it (so `--resume` after a killed driver redoes exactly
those). Workers read, anonymize (faces batched across the files of a task) and publish photos
with the same atomic writes; a video goes to one worker as a task of its own (its frames stay in
order there) and comes back as a finished temporary file that the session publishes.

When a worker dies, Ray restarts it and the executor hands the files the worker had not reported
out again, one file per task; a file whose worker died `max_attempts` times while holding it fails
(reported like any failed file) instead of taking the run down.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rp_core.errors import ConfigError, RpError
from rp_core.executor import Executor, WorkSpec
from rp_core.io import InputPlan, Job
from rp_core.manifest import ImageEntry
from rp_core.run_options import Event, SessionOptions
from rp_core.scale.options import RayOptions
from rp_core.scale.worker import outcome_of, remote_error
from rp_core.session import RunSummary
from rp_core.work import FileNames, Outcome

#: Tasks queued on one actor at once, so it starts its next files while the driver reads the last records.
TASKS_PER_WORKER = 2
#: Probes a restarted actor may fail in a row (pausing up to 8 s between them) before it is given up on.
RESTART_REFUSALS = 30


@dataclass
class _Task:
    worker: int
    indices: list[int]
    received: set[int] = field(default_factory=set)


class RayExecutor(Executor):
    """Run a session's files on Ray actors: `RunSession(pipeline, plan, executor=RayExecutor(options))`."""

    def __init__(self, ray_options: RayOptions | None = None) -> None:
        self.ray_options = ray_options if ray_options is not None else RayOptions()
        #: The actor handles while the run is on (a test may kill one to check that no file is lost).
        self.workers: list[Any] = []
        self.worker_info: list[dict[str, Any]] = []
        self._shared: list[Any] = []  # [the workers' spec in Ray's object store], passed with every call
        self._started_ray = False
        self._spec: WorkSpec | None = None
        self._names: FileNames | None = None
        self._on_event: Callable[[Event], None] = lambda event: None

    def check(self, plan: InputPlan) -> None:
        if plan.in_place:
            raise ConfigError("--ray writes to an output folder (-o); it does not support --in-place")

    def start(self, spec: WorkSpec, todo: Sequence[int], on_event: Callable[[Event], None]) -> None:
        """Start the workers; each loads the models (before the journal opens, as in one process)."""
        from rp_core.scale.cluster import connect, import_ray, plan_workers, start_workers
        from rp_core.scale.worker import WorkerSpec

        self._spec, self._on_event = spec, on_event
        self._names = FileNames.of(spec.plan, spec.options.manifest_paths)
        ray = import_ray()
        self._started_ray = connect(self.ray_options)
        count, gpus, cpus = plan_workers(self.ray_options, ray.cluster_resources())
        count = min(count, len(todo))  # an actor without a file would load its models for nothing
        worker_spec = WorkerSpec(
            config=spec.pipeline.config.model_dump(mode="json"),
            # a local Ray's workers share this process's working folder; a cluster's do not
            plan=spec.plan if self.ray_options.address is None else _absolute(spec.plan),
            options=spec.options,
            environ=self.ray_options.plugin_environ(),
            plugins_dir=self.ray_options.plugins_dir,
        )
        device = f"{gpus:g} GPU + {cpus:g} CPU" if gpus else f"{cpus:g} CPU"
        on_event(Event("info", f"Ray: {count} worker(s), {device} each; loading the models on each"))
        self.workers, self._shared = start_workers(worker_spec, count, gpus, cpus)
        try:
            infos = ray.get([worker.start.remote(self._shared) for worker in self.workers])
        except ray.exceptions.RayActorError as exc:
            raise RpError(f"a Ray worker died while loading the models: {exc}") from exc
        self.worker_info = self._checked(infos)
        self.packages = self.worker_info[0]["packages"]

    def run(self, todo: Sequence[int], journal: Callable[[ImageEntry], None]) -> Iterator[Outcome]:
        from rp_core.scale.cluster import import_ray

        return self._dispatch(import_ray(), list(todo), journal)

    def stop(self) -> None:
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
        assert self._spec is not None
        mine = self._spec.pipeline.describe()
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

    def _tasks(self, todo: list[int]) -> deque[list[int]]:
        """Each video a task of its own (its frames stay in order on one worker), the photos in shares."""
        from rp_core.video.probe import is_video

        assert self._spec is not None
        jobs = self._spec.plan.jobs
        videos = [i for i in todo if is_video(jobs[i].source)]
        photos = [i for i in todo if i not in set(videos)]
        per_task = self.ray_options.files_per_task or self._spec.pipeline.batch_size
        size = max(1, min(per_task, math.ceil(len(photos) / len(self.workers)))) if photos else 1
        return deque([*([i] for i in videos), *(photos[k : k + size] for k in range(0, len(photos), size))])

    def _dispatch(self, ray: Any, todo: list[int], journal: Callable[[ImageEntry], None]) -> Iterator[Outcome]:
        """Keep every live worker busy until each file of `todo` has its final outcome.

        A worker whose task failed (it died; Ray restarts it) gets no file until it answers `start`
        again, so a file's attempts are spent only on workers that were up when they got it.
        """
        assert self._names is not None
        queue = self._tasks(todo)
        attempts: dict[int, int] = {}
        slots = _Slots(len(self.workers), self.ray_options.max_attempts * TASKS_PER_WORKER)
        running: dict[Any, _Task] = {}
        probes: dict[Any, int] = {}  # start() calls to restarted workers
        while queue or running:
            for down in slots.to_probe():
                probes[self.workers[down].start.remote(self._shared)] = down
            while queue and (worker := slots.take()) is not None:
                indices = queue.popleft()
                for i in indices:  # noted before any worker may publish it: a resumed run redoes it
                    journal(ImageEntry(self._names.source(i), self._names.target(i), "writing"))
                running[self.workers[worker].run.remote(indices, self._shared)] = _Task(worker, indices)
            pause = slots.pause_s()
            if not running and not probes:
                if pause is None:
                    raise RpError("every Ray worker died; run the same command again with --resume to finish")
                time.sleep(pause)
                continue
            ready, _ = ray.wait([*running, *probes], num_returns=1, timeout=pause)
            if not ready:
                continue  # a paused worker may be probed now
            if ready[0] in probes:
                self._probed(ray, slots, probes.pop(ready[0]), ready[0])
                continue
            stream = ready[0]
            task = running[stream]
            try:
                record = ray.get(next(stream))
            except StopIteration:
                del running[stream]
                slots.done(task.worker)
                continue
            except ray.exceptions.RayActorError as exc:
                del running[stream]
                yield from self._lost(task, exc, queue, attempts)
                if not slots.failed(task.worker):
                    self._on_event(Event("warning", f"Ray worker {task.worker} keeps dying; not using it any more"))
                continue
            outcome = outcome_of(record, self._on_event)
            task.received.add(outcome.index)
            slots.succeeded(task.worker)
            yield outcome

    def _probed(self, ray: Any, slots: _Slots, worker: int, probe: Any) -> None:
        """A restarted worker answered `start` (models loaded again): it takes files again, or is probed later."""
        try:
            info = ray.get(probe)
        except ray.exceptions.RayActorError:
            info = {"error": "unavailable"}
        if "error" not in info:
            slots.up(worker)
        elif not slots.refused(worker):
            self._on_event(Event("warning", f"Ray worker {worker} does not come back; not using it any more"))

    def _lost(
        self, task: _Task, exc: Exception, queue: deque[list[int]], attempts: dict[int, int]
    ) -> Iterator[Outcome]:
        """A worker died holding `task`: its unreported files go out again, one per task, or fail after max_attempts."""
        from rp_core.io import temporary_files_for

        assert self._spec is not None and self._names is not None
        jobs = self._spec.plan.jobs
        lost = [i for i in task.indices if i not in task.received]
        if not lost:  # every file of the task was reported before the worker died: nothing to hand out again
            return
        again = []
        for i in lost:
            for temporary in temporary_files_for(jobs[i].target):  # the dead worker's half-written file
                temporary.unlink(missing_ok=True)
            attempts[i] = attempts.get(i, 0) + 1
            if attempts[i] >= self.ray_options.max_attempts:
                error = f"{jobs[i].source}: the Ray worker processing it died {attempts[i]} times (last: {type(exc).__name__})"
                self._on_event(Event("failed", error))
                yield Outcome(i, ImageEntry(self._names.source(i), None, "failed", error=error))
            else:
                again.append(i)
        for i in reversed(again):
            queue.appendleft([i])
        self._on_event(
            Event("warning", f"Ray worker {task.worker} died; {len(again)} unfinished file(s) handed out again")
        )


class _Slots:
    """Which worker takes the next task: each live, up worker holds up to `TASKS_PER_WORKER` tasks at once.

    A worker whose task failed is down until a `start` probe answers (Ray restarts it in the background);
    probes are spaced out, longer each time, and a worker is given up on after too many failures in a row.
    """

    def __init__(self, workers: int, max_failures: int) -> None:
        self.free = dict.fromkeys(range(workers), TASKS_PER_WORKER)
        self.alive = set(range(workers))
        self.down: dict[int, float] = {}  # worker -> when to probe it next (inf: a probe is out)
        self.failures = dict.fromkeys(self.alive, 0)  # failed tasks in a row without one finished file
        self.refusals = dict.fromkeys(self.alive, 0)  # failed probes in a row
        self.max_failures = max_failures

    def take(self) -> int | None:
        """The live, up worker with the most free slots, or None."""
        ready = [w for w in self.alive if w not in self.down and self.free[w] > 0]
        if not ready:
            return None
        worker = max(ready, key=lambda w: (self.free[w], -w))
        self.free[worker] -= 1
        return worker

    def done(self, worker: int) -> None:
        self.free[worker] += 1

    def succeeded(self, worker: int) -> None:
        self.failures[worker] = 0

    def failed(self, worker: int) -> bool:
        """A task on `worker` failed with it; False when the worker is given up on."""
        self.free[worker] += 1
        self.failures[worker] += 1
        return self._pause(worker, self.failures[worker] >= self.max_failures)

    def refused(self, worker: int) -> bool:
        """A probe found `worker` not back yet; False when it is given up on."""
        self.refusals[worker] += 1
        self.down[worker] = 0.0  # the probe is back: the next one waits its pause
        return self._pause(worker, self.refusals[worker] >= RESTART_REFUSALS)

    def up(self, worker: int) -> None:
        self.down.pop(worker, None)
        self.refusals[worker] = 0

    def _pause(self, worker: int, give_up: bool) -> bool:
        if give_up:
            self.alive.discard(worker)
            self.down.pop(worker, None)
            return False
        if self.down.get(worker) != math.inf:  # a probe already out answers for this failure too
            tries = self.failures[worker] + self.refusals[worker]
            self.down[worker] = time.monotonic() + min(8.0, 0.25 * 2**tries)
        return True

    def to_probe(self) -> list[int]:
        """Down workers whose pause is over; each gets one probe (marked out)."""
        now = time.monotonic()
        due = [w for w, at in self.down.items() if w in self.alive and at <= now]
        for worker in due:
            self.down[worker] = math.inf
        return due

    def pause_s(self) -> float | None:
        """Seconds until a down worker is due for a probe; None when none is waiting for one."""
        waits = [at - time.monotonic() for w, at in self.down.items() if w in self.alive and at != math.inf]
        return max(0.0, min(waits)) if waits else None


def _absolute(plan: InputPlan) -> InputPlan:
    jobs = tuple(Job(job.source.absolute(), job.target.absolute()) for job in plan.jobs)
    return replace(plan, jobs=jobs, output=plan.output.absolute())


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
    from rp_core.api import anonymize_files
    from rp_core.plugins import PluginHost

    ray_options = ray_options if ray_options is not None else RayOptions()
    host = PluginHost(plugins_dir=ray_options.plugins_dir, environ=ray_options.plugin_environ())
    executor = RayExecutor(ray_options)
    return anonymize_files(
        inputs,
        output,
        config_file=config_file,
        preset=preset,
        overrides=overrides,
        host=host,
        options=options,
        on_event=on_event,
        executor=executor,
        **params,
    )
