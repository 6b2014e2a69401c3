"""runtime.overlap: the CPU stages on a worker thread give the same outputs as the plain stream."""

from __future__ import annotations

from typing import Any

import numpy as np

from rp_core.config import resolve_config
from rp_core.orchestrator import Anonymizer
from rp_core.plugins import PluginHost


def _stream(host: PluginHost, params: dict[str, Any], overlap: bool, images: list[np.ndarray]) -> list[np.ndarray]:
    overrides = ["verify.enabled=false", f"runtime.overlap={str(overlap).lower()}", "runtime.batch_size=4"]
    anonymizer = Anonymizer(resolve_config(host, flags=params, overrides=overrides), host)
    return [result.image for _, result in anonymizer.anonymize_stream(enumerate(images))]


def test_overlapped_stream_equals_the_plain_one_on_the_tiny_diffusion_model(
    diffusion_params: dict[str, Any], t1: np.ndarray, astronaut: np.ndarray
) -> None:
    host = PluginHost()
    images = [
        astronaut,
        t1[:, ::-1].copy(),
        astronaut[::2, ::2].copy(),
    ]  # 1 + 6 faces + a small one: batches span images
    plain = _stream(host, diffusion_params, False, images)
    overlapped = _stream(host, diffusion_params, True, images)
    assert len(plain) == len(overlapped) == 3
    for a, b in zip(plain, overlapped, strict=True):
        assert np.array_equal(a, b)
    assert not np.array_equal(plain[0], astronaut)  # something was regenerated
