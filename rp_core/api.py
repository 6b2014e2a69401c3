"""The Python API: `anonymize(image, **params)` with the same power as `rp anonymize`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from PIL import Image

from rp_core.config import FLAG_KEYS, RunConfig, resolve_config
from rp_core.errors import ConfigError
from rp_core.orchestrator import Anonymizer
from rp_core.plugins import PluginHost
from rp_core.types import ImageResult

_ANONYMIZERS: dict[str, Anonymizer] = {}


def _as_rgb_array(image: str | Path | Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ConfigError(f"image array must be uint8 (H, W, 3) RGB, got {image.dtype} {image.shape}")
        return np.ascontiguousarray(image[:, :, :3])
    if isinstance(image, (str, Path)):
        from rp_core.io import read_image

        return read_image(Path(image))
    from rp_core.io import to_rgb_array

    return to_rgb_array(image)


def build_anonymizer(
    *,
    config_file: str | Path | None = None,
    preset: str | None = None,
    overrides: tuple[str, ...] = (),
    host: PluginHost | None = None,
    **params: Any,
) -> Anonymizer:
    """An Anonymizer from the same sources as the CLI; reused across calls with the same settings."""
    unknown = set(params) - set(FLAG_KEYS)
    if unknown:
        raise ConfigError(f"unknown parameters: {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(FLAG_KEYS))}")
    host = host if host is not None else PluginHost()
    config: RunConfig = resolve_config(host, config_file=config_file, preset=preset, flags=params, overrides=overrides)
    key = config.model_dump_json()
    if key not in _ANONYMIZERS or _ANONYMIZERS[key].host is not host:
        _ANONYMIZERS[key] = Anonymizer(config, host)
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
    overrides: tuple[str, ...] = (),
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
