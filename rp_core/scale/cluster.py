"""Reach a Ray cluster (or start one on this machine) and start the pool of worker actors."""

from __future__ import annotations

from typing import Any

from rp_core.errors import ConfigError, RpError
from rp_core.scale.options import RayOptions
from rp_core.scale.worker import Worker, WorkerSpec

#: Object store of a Ray started here: records are small, images never travel through it.
LOCAL_OBJECT_STORE = 256 * 2**20


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RpError("--ray needs Ray: pip install 'rp-anonymize[ray]'") from None
    return ray


def connect(options: RayOptions) -> bool:
    """Join `options.address`, or start a local Ray over this machine's CPUs and GPUs; True if this call started it.

    A Ray already initialized in this process (a notebook, a test) is used as it is.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    try:
        if options.address:
            ray.init(address=options.address, log_to_driver=False, **options.init_kwargs)
        else:
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "object_store_memory": LOCAL_OBJECT_STORE,
            }
            ray.init(**{**kwargs, **options.init_kwargs})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {options.address}" if options.address else "a local Ray"
        raise RpError(f"cannot start or reach {where}: {exc}") from exc
    return True


def plan_workers(options: RayOptions, resources: dict[str, float]) -> tuple[int, float, float]:
    """(actors, GPUs each, CPUs each) for a cluster with `resources` (ray.cluster_resources())."""
    if options.workers is not None and options.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {options.workers}")
    if options.gpus_per_worker < 0 or options.cpus_per_worker <= 0:
        raise ConfigError("--gpus-per-worker must be >= 0 and CPUs per worker > 0")
    gpus, cpus = resources.get("GPU", 0.0), resources.get("CPU", 1.0)
    per_gpu = options.gpus_per_worker if gpus > 0 else 0.0
    if options.workers is not None:
        count = options.workers
    elif per_gpu:
        count = max(1, int(gpus // per_gpu))
    else:
        count = max(1, int(cpus // options.cpus_per_worker))
    if options.address is None:  # a local Ray never grows: actors it cannot place would wait forever
        if per_gpu and count * per_gpu > gpus:
            raise ConfigError(
                f"--workers {count} x --gpus-per-worker {per_gpu:g} needs {count * per_gpu:g} GPUs; "
                f"this machine has {gpus:g}"
            )
        if count * options.cpus_per_worker > cpus:
            raise ConfigError(
                f"--workers {count} x {options.cpus_per_worker:g} CPUs needs {count * options.cpus_per_worker:g} "
                f"CPUs; this Ray has {cpus:g}"
            )
    return count, per_gpu, options.cpus_per_worker


def start_workers(spec: WorkerSpec, count: int, gpus: float, cpus: float) -> tuple[list[Any], list[Any]]:
    """`count` actors, and `[reference to the spec]` to pass with every call; keep it for as long as they run.

    Ray restarts an actor that dies (the driver hands its unfinished files out again); the restarted
    actor fetches the spec on its next call, so the spec is not a constructor argument.
    """
    ray = import_ray()
    actor = ray.remote(Worker).options(num_gpus=gpus, num_cpus=cpus, max_restarts=-1, max_task_retries=0)
    shared = [ray.put(spec)]  # the plan travels once, not once per actor or task
    return [actor.remote() for _ in range(count)], shared


def stop_workers(workers: list[Any], shared: list[Any], infos: list[dict[str, Any]], timeout: float = 30.0) -> None:
    """Kill the actors and wait until they are gone, so none can still publish a file once the run has returned
    (a resumed run right after an interrupted one must not meet a late write or temporary file)."""
    import os
    import socket
    import time

    ray = import_ray()
    for worker in workers:
        ray.kill(worker, no_restart=True)
    deadline = time.monotonic() + timeout
    for worker in workers:
        while time.monotonic() < deadline:
            try:
                ray.get(worker.start.remote(shared), timeout=max(0.1, deadline - time.monotonic()))
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                break
            time.sleep(0.05)
    here = socket.gethostname()
    for info in infos:  # Ray reports an actor dead as it kills it: on this machine, wait for the process too
        if info.get("node") != here:
            continue
        while time.monotonic() < deadline:
            try:
                os.kill(int(info["pid"]), 0)
            except ProcessLookupError:
                break
            except PermissionError:  # a new process with the same id, not ours
                break
            time.sleep(0.05)
