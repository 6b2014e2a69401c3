"""Where a session's files are anonymized: an executor the session is given, not a subclass of it.

The session plans, journals, publishes videos, writes the manifest and reports; an executor only
loads the models where the files will run and turns jobs into `Outcome`s there. `LocalExecutor`
runs them in this process; `rp_core.scale.RayExecutor` on Ray actors. Both run the same
`rp_core.work.FileWork`, so a file's output does not depend on where it ran.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from rp_core.io import InputPlan
from rp_core.manifest import ImageEntry
from rp_core.pipeline import Pipeline
from rp_core.run_options import Event, SessionOptions
from rp_core.work import FileWork, Outcome


@dataclass(frozen=True)
class WorkSpec:
    """What an executor needs to run a session's files anywhere: the assembled pipeline, the plan, the options."""

    pipeline: Pipeline
    plan: InputPlan
    options: SessionOptions


class Executor(ABC):
    """Runs the jobs of a plan somewhere and reports one `Outcome` per job."""

    #: Package versions where the pixels are made, for the manifest; None: this process's.
    packages: dict[str, str] | None = None

    def check(self, plan: InputPlan) -> None:  # noqa: B027 (a hook with a safe default, not abstract)
        """Refuse, with one line (ConfigError), a plan this executor cannot run; before anything loads."""

    @abstractmethod
    def start(self, spec: WorkSpec, todo: Sequence[int], on_event: Callable[[Event], None]) -> None:
        """Load the models where `todo` will run (before the journal opens)."""

    @abstractmethod
    def run(self, todo: Sequence[int], journal: Callable[[ImageEntry], None]) -> Iterator[Outcome]:
        """One Outcome per job of `todo`, each as soon as it is final.

        `journal(entry)` notes a "writing" intent: called before a photo may be published, so a run
        resumed after a kill knows which outputs were this run's.
        """

    def stop(self) -> None:  # noqa: B027
        """Release what `start` took (workers, a cluster); called once the run is over, also on errors."""


class LocalExecutor(Executor):
    """Runs every job in this process, one after another (faces batched across photos)."""

    def __init__(self) -> None:
        self.work: FileWork | None = None

    def start(self, spec: WorkSpec, todo: Sequence[int], on_event: Callable[[Event], None]) -> None:
        self.work = FileWork(spec.pipeline, spec.plan, spec.options, on_event)
        self.work.load()

    def run(self, todo: Sequence[int], journal: Callable[[ImageEntry], None]) -> Iterator[Outcome]:
        assert self.work is not None, "start() first"
        return self.work.run(todo, intent=journal)

    def stop(self) -> None:
        self.work = None
