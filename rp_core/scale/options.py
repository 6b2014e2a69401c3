"""How a run uses Ray: where the cluster is, how many workers, what each one holds."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Environment variables the workers' plugin hosts read; passed from the driver so every node loads the same plugins.
PLUGIN_ENV = ("RP_PLUGINS", "RP_PLUGINS_BLOCK", "RP_PLUGINS_DIR")


@dataclass(frozen=True)
class RayOptions:
    """Options of a run on Ray (`rp anonymize --ray`)."""

    #: A running cluster ("auto", "ray://head:10001", "head:6379"); None starts a local Ray on this machine.
    address: str | None = None
    #: Actors to start; None: one per `gpus_per_worker` GPUs of the cluster, or per `cpus_per_worker` CPUs without GPUs.
    workers: int | None = None
    #: GPUs each actor holds (one pipeline per actor); ignored on a cluster without GPUs (CPU workers then).
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    #: Files per task: faces are batched across the files of a task, and a task is the unit handed out;
    #: None: the pipeline's batch size (with at least a face a file, each task fills a batch).
    files_per_task: int | None = None
    #: A file whose worker died this many times while it was being processed fails (a file that crashes
    #: its worker every time must not take the whole run down with it).
    max_attempts: int = 3
    #: The plugin host the workers build: the RP_PLUGINS* variables (default: the driver's) and --plugins-dir.
    environ: dict[str, str] | None = None
    plugins_dir: Path | None = None
    #: Extra `ray.init` arguments when a local Ray is started (e.g. num_cpus, object_store_memory).
    init_kwargs: dict[str, Any] = field(default_factory=dict)

    def plugin_environ(self) -> dict[str, str]:
        if self.environ is not None:
            return dict(self.environ)
        return {key: os.environ[key] for key in PLUGIN_ENV if key in os.environ}
