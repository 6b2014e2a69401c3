"""Fail closed: re-check every anonymized face and decide what to do with the ones that leak.

After merging, each face is encoded again on the output at the same landmarks with an
identity encoder (by default the generator's own, else dlib's descriptor) and compared
with its original. A face that still matches (cosine similarity above, or Euclidean
distance below, the threshold) or whose pixels did not change at all is a leak. The
orchestrator then retries, falls back to an obfuscating generator, or fails the image
(`verify.policy`); an image with a face still leaking after that is never returned.

Also here: the coverage check (faces a second, cheap detector finds that the main one
missed) and the IoU used to tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rp_core.errors import ConfigError, PluginError
from rp_core.interfaces import Component, IdentityEncoder, compare_embeddings, same_person
from rp_core.types import Face, IdentityEmbedding

if TYPE_CHECKING:
    from rp_core.interfaces import RuntimeContext
    from rp_core.plugins import PluginHost


def build_extra_component(
    host: PluginHost, context: RuntimeContext, kind: str, name: str, options: dict[str, Any], key: str
) -> Component:
    """A component outside the five pipeline slots (verify encoder, fallback generator, coverage detector).

    `key` is the config key that named it, so an error says which setting to fix.
    """
    from pydantic import ValidationError

    try:
        registration = host.get(kind, name)
    except PluginError as exc:
        raise ConfigError(f"{key}: bad value {name!r}: {exc}") from None
    try:
        validated = registration.cls.Options.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{key} {name!r}: bad options {options!r}: {problems}") from None
    return registration.cls(validated, context)


@dataclass(frozen=True)
class Check:
    """The verification of one face on one output."""

    score: float
    unchanged: bool
    leak: bool


class Verifier:
    """Compares faces of an output with their originals through one identity encoder."""

    def __init__(self, encoder: IdentityEncoder, threshold: float | None = None) -> None:
        self.encoder = encoder
        self.metric = encoder.metric
        self.threshold = float(encoder.match_threshold if threshold is None else threshold)

    @property
    def name(self) -> str:
        return self.encoder.name

    def encode(self, image: np.ndarray, faces: Sequence[Face]) -> list[IdentityEmbedding]:
        if not faces:
            return []
        embeddings = list(self.encoder.encode(image, faces))
        if len(embeddings) != len(faces):
            raise RuntimeError(
                f"identity encoder {self.name!r} returned {len(embeddings)} embeddings for {len(faces)} faces"
            )
        return embeddings

    def matches(self, score: float) -> bool:
        """True when `score` says "same person" (similarity above, or distance below, the threshold)."""
        return same_person(score, self.metric, self.threshold)

    def check(
        self, original: np.ndarray, output: np.ndarray, faces: Sequence[Face], before: Sequence[IdentityEmbedding]
    ) -> list[Check]:
        """One Check per face of `output`, against the embeddings `before` taken on `original`."""
        after = self.encode(output, faces)
        checks = []
        for face, a, b in zip(faces, before, after, strict=True):
            score = compare_embeddings(a, b, self.metric)
            unchanged = region_unchanged(original, output, face.box)
            checks.append(Check(score=score, unchanged=unchanged, leak=unchanged or self.matches(score)))
        return checks

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.name, "metric": self.metric, "threshold": self.threshold}


def region_unchanged(original: np.ndarray, output: np.ndarray, box: tuple[float, float, float, float]) -> bool:
    """True when not one pixel inside the face box changed: the face was not replaced at all."""
    height, width = original.shape[:2]
    x0, y0, x1, y1 = box
    left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    right, bottom = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    if right <= left or bottom <= top:
        return False  # a box wholly off-image has nothing to compare; the identity check decides
    return bool(np.array_equal(original[top:bottom, left:right], output[top:bottom, left:right]))


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def missed_faces(found: Sequence[Face], others: Sequence[Face], threshold: float) -> list[Face]:
    """Faces of `others` that overlap none of `found` by at least `threshold` IoU."""
    return [o for o in others if all(iou(o.box, f.box) < threshold for f in found)]


def verify_encoder_name(config_encoder: str | None, needs_identity: bool, identity_encoder: str | None) -> str:
    """The encoder that re-checks outputs: the configured one, else the generator's own, else dlib."""
    if config_encoder:
        return config_encoder
    if needs_identity and identity_encoder:
        return identity_encoder
    return "dlib"
