"""Edit-friendly DDPM inversion (LEDITS++ Algorithm 1) and the sampler that replays it.

The noise maps are computed with exactly the step the sampler takes: each map is
found by stepping copies of the live scheduler (once with zero noise for the mean,
once with unit noise for the scale), so solver order, `lower_order_final` and the
last step all match by construction. Inversion and regeneration each start from a
fresh scheduler, so regenerating with the inversion's own conditioning reproduces
the input latents (the reference code does not reset the solver state).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: noise_fn(latents, timestep) -> guided noise prediction for the whole batch.
NoiseFn = Callable[[Any, Any], Any]


def reference_timesteps(skip: float, num_steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """The reference's schedule: linspace(T - skip*T - 1, 1, steps) as int64, descending (299..1 for skip 0.7)."""
    start = num_train_timesteps - skip * num_train_timesteps - 1
    return [int(t) for t in np.linspace(start, 1, num_steps).astype(np.int64)]


@dataclass(frozen=True)
class InvertedLatents:
    """The start latent x_T and one noise map per step, for a batch (latents are float32)."""

    start: Any  # (B, C, h, w)
    noise_maps: Any  # (steps, B, C, h, w)
    timesteps: tuple[int, ...]


def draw_step_noise(generators: Sequence[Any], shape: Sequence[int], steps: int, dtype: Any) -> Any:
    """Per face, `steps` standard-normal draws of one latent's shape in the reference's order.

    Face i draws only from generators[i] (a CPU generator), so the noise of a face does not
    depend on which faces share its batch. Draws are taken in `dtype` (the reference draws
    in the model's dtype) and returned as float32 (steps, B, *shape) in ascending-t order.
    """
    import torch

    per_face = [
        torch.stack([torch.randn(tuple(shape), generator=g, dtype=dtype) for _ in range(steps)]) for g in generators
    ]
    return torch.stack(per_face, dim=1).float()


def _step_copy(scheduler: Any, eps: Any, t: Any, x: Any, noise: Any) -> Any:
    clone = copy.copy(scheduler)
    clone.model_outputs = list(scheduler.model_outputs)
    return clone.step(eps, t, x, variance_noise=noise).prev_sample


def invert(x0: Any, scheduler: Any, noise_fn: NoiseFn, step_noise: Any, timesteps_per_call: int = 1) -> InvertedLatents:
    """Invert latents `x0` (B, C, h, w) along `scheduler.timesteps` (descending).

    `step_noise` (steps, B, C, h, w) holds the independent draws in ascending-t order;
    x_t = add_noise(x0, draw, t) for each t, then every noise map z_t is solved so the
    sampler's step from x_t lands exactly on x_{t-1}.

    Each step lands on the next pre-noised latent (up to rounding), so the noise predictions
    of all steps are independent of each other: with `timesteps_per_call` > 1 they are
    computed several timesteps per UNet call (`noise_fn` then gets one timestep per row),
    which keeps the GPU busy when few faces are inverted at once. Only the cheap solver
    pass stays sequential.
    """
    import torch

    timesteps = [int(t) for t in scheduler.timesteps]
    steps, batch = len(timesteps), x0.shape[0]
    noisy: list[Any] = [None] * steps
    for k, t in enumerate(reversed(timesteps)):
        index = steps - 1 - k
        t_batch = torch.full((batch,), t, dtype=torch.int64, device=x0.device)
        noisy[index] = scheduler.add_noise(x0, step_noise[k].to(x0.device), t_batch)
    predicted: list[Any] = [None] * steps
    if timesteps_per_call > 1:
        for first in range(0, steps, timesteps_per_call):
            chunk = range(first, min(first + timesteps_per_call, steps))
            rows_t = torch.cat([scheduler.timesteps[i].reshape(1).expand(batch) for i in chunk])
            eps = noise_fn(torch.cat([noisy[i] for i in chunk]), rows_t)
            for j, i in enumerate(chunk):
                predicted[i] = eps[j * batch : (j + 1) * batch]
    noise_maps = torch.zeros((steps, *x0.shape), dtype=torch.float32, device=x0.device)
    x = noisy[0]
    for i, t in enumerate(scheduler.timesteps):
        eps = predicted[i] if predicted[i] is not None else noise_fn(x, t)
        target = noisy[i + 1] if i + 1 < steps else x0
        mean = _step_copy(scheduler, eps, t, x, torch.zeros_like(x))
        scale = _step_copy(scheduler, eps, t, x, torch.ones_like(x)) - mean
        z = torch.where(scale != 0, (target - mean) / torch.where(scale != 0, scale, 1), torch.zeros_like(x))
        noise_maps[i] = z
        x = scheduler.step(eps, t, x, variance_noise=z).prev_sample
    return InvertedLatents(start=noisy[0], noise_maps=noise_maps, timesteps=tuple(timesteps))


def regenerate(start: Any, noise_maps: Any, scheduler: Any, noise_fn: NoiseFn) -> Any:
    """Walk the same timesteps from x_T, injecting the stored noise maps."""
    x = start
    for i, t in enumerate(scheduler.timesteps):
        eps = noise_fn(x, t)
        x = scheduler.step(eps, t, x, variance_noise=noise_maps[i]).prev_sample
    return x
