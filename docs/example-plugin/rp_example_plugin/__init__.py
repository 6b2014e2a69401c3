"""An example third-party rp plugin: a generator that turns each face into coloured tiles.

Copy this package to start your own plugin: one module with `@hookimpl` functions,
listed under the `rp.plugins` entry-point group in pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
from pydantic import Field

from rp_core import hookimpl
from rp_core.interfaces import ComponentOptions, Generator, cli_flag
from rp_core.types import GenerationRequest

__version__ = "0.1.0"


class MosaicOptions(ComponentOptions):
    """Options are validated by rp before anything runs; unknown keys are an error."""

    tiles: int = Field(
        6, ge=2, le=64, description="tiles along each side of the face crop", json_schema_extra=cli_flag("mosaic-tiles")
    )


class ExampleMosaic(Generator):
    """Replaces each face crop by `tiles` x `tiles` blocks of the crop's mean colours, shuffled."""

    name = "example_mosaic"
    Options: ClassVar[type[ComponentOptions]] = MosaicOptions
    options: MosaicOptions

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        return [self._mosaic(r.face.crop, r.seed) for r in requests]

    def _mosaic(self, crop: np.ndarray, seed: int) -> np.ndarray:
        n = self.options.tiles
        h, w = crop.shape[:2]
        ys, xs = np.linspace(0, h, n + 1).astype(int), np.linspace(0, w, n + 1).astype(int)
        colours = [
            crop[ys[i] : ys[i + 1], xs[j] : xs[j + 1]].reshape(-1, 3).mean(axis=0) for i in range(n) for j in range(n)
        ]
        order = np.random.default_rng(seed).permutation(len(colours))  # shuffling breaks the face's layout
        out = np.empty_like(crop)
        for k, index in enumerate(order):
            i, j = divmod(k, n)
            out[ys[i] : ys[i + 1], xs[j] : xs[j + 1]] = colours[index].astype(np.uint8)
        return out

    def version(self) -> str:
        return f"example-mosaic-{__version__}"


@hookimpl
def rp_register_generators(register: Callable[[type], None]) -> None:
    register(ExampleMosaic)
