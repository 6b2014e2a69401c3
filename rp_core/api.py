"""The Python API: the same power and guarantees as `rp anonymize`.

`anonymize(image, **params)` anonymizes one image in memory; `anonymize_files(inputs, output, **params)`
runs the same session as the command line (atomic writes, manifest, resume, per-file failures).
`params` are the CLI's flags in snake case, including those that components declare.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from PIL import Image

from rp_core.config import RunConfig, known_flags, resolve_config
from rp_core.errors import ConfigError
from rp_core.executor import Executor
from rp_core.orchestrator import Anonymizer
from rp_core.pipeline import Pipeline, assemble
from rp_core.plugins import PluginHost
from rp_core.session import Destination, Event, RunSession, RunSummary, SessionOptions
from rp_core.types import ImageResult

_ANONYMIZERS: dict[str, Anonymizer] = {}


def _as_rgb_array(image: str | Path | Image.Image | np.ndarray) -> np.ndarray:
    """RGB uint8 from a path, a PIL image, or a uint8 array (grayscale, RGB or RGBA; alpha composited on white)."""
    if isinstance(image, (str, Path)):
        from rp_core.io import read_image

        return read_image(Path(image))
    from rp_core.io import to_rgb_array

    return to_rgb_array(image)


def build_pipeline(
    *,
    config_file: str | Path | None = None,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    host: PluginHost | None = None,
    **params: Any,
) -> Pipeline:
    """The assembled pipeline for the same sources as the CLI (nothing loaded yet)."""
    host = host if host is not None else PluginHost()
    allowed = known_flags(host)
    unknown = set(params) - allowed
    if unknown:
        raise ConfigError(f"unknown parameters: {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}")
    config: RunConfig = resolve_config(
        host, config_file=config_file, preset=preset, flags=params, overrides=list(overrides)
    )
    return assemble(config, host)


def build_anonymizer(
    *,
    config_file: str | Path | None = None,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    host: PluginHost | None = None,
    **params: Any,
) -> Anonymizer:
    """An Anonymizer from the same sources as the CLI; reused across calls with the same settings."""
    pipeline = build_pipeline(config_file=config_file, preset=preset, overrides=overrides, host=host, **params)
    key = pipeline.config.model_dump_json()
    if key not in _ANONYMIZERS or _ANONYMIZERS[key].host is not pipeline.host:
        _ANONYMIZERS[key] = Anonymizer(pipeline=pipeline)
    return _ANONYMIZERS[key]


@overload
def anonymize(image: Any, *, return_result: Literal[False] = ..., **params: Any) -> Image.Image: ...
@overload
def anonymize(image: Any, *, return_result: Literal[True], **params: Any) -> tuple[Image.Image, ImageResult]: ...


def anonymize(
    image: str | Path | Image.Image | np.ndarray,
    *,
    config_file: str | Path | None = None,
    preset: str | None = None,
    aligned: bool = False,
    return_result: bool = False,
    overrides: Sequence[str] = (),
    host: PluginHost | None = None,
    **params: Any,
) -> Image.Image | tuple[Image.Image, ImageResult]:
    """Anonymize every face of one image and return it as a PIL image.

    `params` are the CLI's flags in snake case (`guidance_scale=-10`, `generator="blur"`, ...).
    With `return_result=True` the per-face records come back too.
    """
    anonymizer = build_anonymizer(config_file=config_file, preset=preset, overrides=overrides, host=host, **params)
    result = anonymizer.anonymize(_as_rgb_array(image), aligned=aligned)
    output = Image.fromarray(result.image)
    return (output, result) if return_result else output


def anonymize_files(
    inputs: Sequence[str | Path] | str | Path,
    output: str | Path | None = None,
    *,
    in_place: bool = False,
    follow_symlinks: bool = False,
    config_file: str | Path | None = None,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    host: PluginHost | None = None,
    options: SessionOptions | None = None,
    on_event: Callable[[Event], None] | None = None,
    executor: Executor | None = None,
    **params: Any,
) -> RunSummary:
    """Anonymize files or folders into `output` (or in place) exactly as `rp anonymize` does.

    Writes are atomic, the manifest and journal are the CLI's, `options=SessionOptions(resume=True)`
    finishes a killed run, and a file that fails is recorded in the summary while the others go on.
    `executor` says where the files run: by default this process, or for a pipeline whose every stage runs on
    the CPU (the offline preset) worker processes, one per core (`runtime.cpu_workers`); or
    `rp_core.scale.RayExecutor(...)`.
    Combinations the CLI refuses raise the same ConfigError here (rp_core.run_options).
    """
    destination = Destination(Path(output) if output is not None else None, in_place, follow_symlinks)
    pipeline = build_pipeline(config_file=config_file, preset=preset, overrides=overrides, host=host, **params)
    sources = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    plan = destination.plan([Path(source) for source in sources])
    return RunSession(pipeline, plan, options, on_event, executor).run()
