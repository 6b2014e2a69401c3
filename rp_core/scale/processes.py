"""Run a folder's photos on local worker processes: the CPU stages of a CPU-only pipeline across every core.

The face stream overlaps a photo's CPU stages with the GPU's work on one worker thread; a pipeline
with no GPU stage (obfuscating generators: the offline preset) therefore runs one core's worth of
work at a time. `ProcessExecutor` runs such a folder on `cpu_workers` processes instead, each one
the same `rp_core.scale.worker.Worker` a Ray actor runs (pipeline rebuilt from the resolved config,
models loaded once, photos read, anonymized and published atomically by `FileWork`). The session
still plans, journals (each photo noted before it is handed out, as with Ray), records and reports.

What differs from one process: the window of recent identities that verification compares found
faces with (`RecentIdentities`) is each process's own, so a crop replayed from a photo that another
process anonymized is compared with that photo's people only when the verifier finds it as a face of
its own image's people too. Videos and `--in-place` runs stay in this process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import TYPE_CHECKING, Any

from rp_core.cores import cores_each, usable_cores
from rp_core.errors import RpError
from rp_core.executor import Executor, LocalExecutor, WorkSpec
from rp_core.manifest import ImageEntry
from rp_core.run_options import Event
from rp_core.work import FileNames, Outcome

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

    from rp_core.config import RunConfig

#: A folder smaller than this runs in this process: starting a worker (imports, models) costs ~1-2 s.
MIN_PHOTOS = 8

_worker: Any = None  # this worker process's `Worker`, built by `_load`


def _load(spec: Any) -> None:
    """Pool initializer: build and load this process's pipeline once. Ctrl-C is the driver's to handle (it stops
    handing out photos and waits for the shares in flight, which publish whole), not each worker's."""
    import signal

    from rp_core.scale.worker import Worker

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _worker
    _worker = Worker(spec)
    _worker.start()


def _run(indices: list[int]) -> list[dict[str, Any]]:
    """One task: the records of `indices`, anonymized and published by this process."""
    assert _worker is not None
    return list(_worker.run(indices))


def cpu_workers(configured: int | None) -> int:
    """How many processes `runtime.cpu_workers` asks for (null: the cores this process may use)."""
    return configured if configured is not None else usable_cores()


def worker_config(config: RunConfig, workers: int) -> RunConfig:
    """The config each of `workers` processes runs: the cores shared out among them (`runtime.cpu_threads`), not
    every core to each, whose threads would then outnumber the cores and wait for each other; a set value stays."""
    if config.runtime.cpu_threads is not None:
        return config
    share = cores_each(workers)
    return config.model_copy(update={"runtime": config.runtime.model_copy(update={"cpu_threads": share})})


class ProcessExecutor(Executor):
    """The photos of a plan on `workers` local processes; anything else (videos, in place, a few photos) here."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._local = LocalExecutor()
        self._pool: ProcessPoolExecutor | None = None
        self._spec: WorkSpec | None = None
        self._on_event: Callable[[Event], None] = lambda event: None

    def start(self, spec: WorkSpec, todo: Sequence[int], on_event: Callable[[Event], None]) -> None:
        from rp_core.scale.worker import WorkerSpec
        from rp_core.video.probe import is_video

        self._spec, self._on_event = spec, on_event
        photos = [i for i in todo if not is_video(spec.plan.jobs[i].source)]
        count = min(self.workers, len(photos))
        simple = not spec.plan.in_place and len(photos) == len(todo) and spec.pipeline.host.portable
        if not simple or len(photos) < MIN_PHOTOS or count < 2:
            self._local.start(spec, todo, on_event)
            return
        worker_spec = WorkerSpec(
            config=worker_config(spec.pipeline.config, count).model_dump(mode="json"),
            plan=spec.plan,
            options=spec.options,
            environ=dict(spec.pipeline.host.environ),
            plugins_dir=spec.pipeline.host.plugins_dir,
        )
        on_event(Event("info", f"{count} worker processes (runtime.cpu_workers), each loading the models once"))
        import multiprocessing  # here, not at the top: a run of one photo never imports it (~30 ms)
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(
            max_workers=count,
            mp_context=multiprocessing.get_context("spawn"),  # no fork of a process holding threads and models
            initializer=_load,
            initargs=(worker_spec,),
        )

    def run(self, todo: Sequence[int], journal: Callable[[ImageEntry], None]) -> Iterator[Outcome]:
        if self._pool is None:
            return self._local.run(todo, journal)
        return self._dispatch(list(todo), journal)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._local.stop()

    def _dispatch(self, todo: list[int], journal: Callable[[ImageEntry], None]) -> Iterator[Outcome]:
        """Shares of the photos (two per process, at most a batch each) until every photo has its outcome."""
        from concurrent.futures.process import BrokenProcessPool

        from rp_core.scale.worker import outcome_of

        assert self._pool is not None and self._spec is not None
        names = FileNames.of(self._spec.plan, self._spec.options.manifest_paths)
        size = max(1, min(self._spec.pipeline.batch_size, math.ceil(len(todo) / (2 * self.workers))))
        running: dict[Future[list[dict[str, Any]]], list[int]] = {}
        for start in range(0, len(todo), size):
            share = todo[start : start + size]
            for i in share:  # noted before a worker may publish it: a resumed run redoes it
                journal(ImageEntry(names.source(i), names.target(i), "writing"))
            running[self._pool.submit(_run, share)] = share
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                running.pop(future)
                try:
                    records = future.result()
                except BrokenProcessPool as exc:
                    raise RpError(
                        "a worker process died (out of memory, or killed); run the same command again with "
                        "--resume to finish"
                    ) from exc
                for record in records:
                    yield outcome_of(record, self._on_event)
