"""What a run over files is asked to do (`SessionOptions`, `Destination`) and what it reports (`Event`).

The rules between options live here, on the objects they constrain, so `rp anonymize` and the
Python API refuse the same combinations with the same one line (a `ConfigError`, exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rp_core.errors import ConfigError

if TYPE_CHECKING:
    from rp_core.io import InputPlan

ManifestPaths = Literal["relative", "hashed", "absolute"]


@dataclass(frozen=True)
class SessionOptions:
    """How a run treats existing outputs, metadata and paths (the pipeline decides everything else)."""

    aligned: bool = False
    overwrite: bool = False
    resume: bool = False
    keep_metadata: bool = False
    #: With keep_metadata: also keep GPS (it is dropped otherwise; names and face regions always are).
    keep_gps: bool = False
    #: JPEG/WebP quality 1-100; None: a JPEG input reuses its own quantization tables, others 95.
    quality: int | None = None
    #: A faces JSON from `rp detect` (possibly edited): its faces replace detection (coverage still runs).
    faces_json: Path | None = None
    #: How input and output paths appear in the manifest: relative to the input/output root (default),
    #: hashed (nothing of a folder or file name travels with the outputs), or as given.
    manifest_paths: ManifestPaths = "relative"

    def __post_init__(self) -> None:
        if self.keep_gps and not self.keep_metadata:
            raise ConfigError("--keep-gps only applies with --keep-metadata (metadata is stripped otherwise)")
        if self.quality is not None and not 1 <= self.quality <= 100:
            raise ConfigError(f"--quality must be 1-100, got {self.quality}")
        if self.manifest_paths not in ("relative", "hashed", "absolute"):
            raise ConfigError(f"--manifest-paths must be relative, hashed or absolute, got {self.manifest_paths!r}")


@dataclass(frozen=True)
class Destination:
    """Where a run's outputs go: an output file or folder, or over the inputs themselves (in place)."""

    output: Path | None = None
    in_place: bool = False
    #: In place only: anonymize the targets of symlinked files and folders (default: skip and report them).
    follow_symlinks: bool = False

    def __post_init__(self) -> None:
        if self.output is None and not self.in_place:
            raise ConfigError("give an output with -o/--output, or --in-place to replace the inputs")
        if self.output is not None and self.in_place:
            raise ConfigError("-o/--output and --in-place exclude each other")
        if self.follow_symlinks and not self.in_place:
            raise ConfigError("--follow-symlinks applies to --in-place runs (runs with -o always read through links)")

    def plan(self, inputs: list[Path]) -> InputPlan:
        """The `InputPlan` pairing every input file with its output (an output folder that is an input is refused)."""
        from rp_core.io import plan_in_place, plan_inputs

        if self.output is None:
            return plan_in_place(inputs, follow_symlinks=self.follow_symlinks)
        for source in inputs:
            if source.is_dir() and self.output.resolve() == source.resolve():
                raise ConfigError(
                    f"the output folder {self.output} is the input folder; choose another output folder "
                    "(or use --in-place to replace the inputs)"
                )
        return plan_inputs(inputs, self.output)


@dataclass(frozen=True)
class Event:
    """Something a run reports: `kind` is start | skip | safety | warning | failed | info | done.

    `safety` names a setting that loosens fail-closed: shown on every run, even the quietest.

    `done` comes once per written file with its face count, the output and the seconds it took.
    """

    kind: str
    message: str = ""
    total: int = 0
    faces: int = 0
    path: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The event as one JSON object (`--log-json`), without empty fields."""
        data = {"event": self.kind, "message": self.message, "total": self.total, "faces": self.faces}
        data |= {"path": self.path, "seconds": round(self.seconds, 4)}
        return {k: v for k, v in data.items() if v not in ("", 0, 0.0) or k == "event"}
