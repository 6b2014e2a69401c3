"""Benchmark-only components for machines without InsightFace or dlib (the GPU box): load with --plugins-dir.

- identity encoder `arcface_onnx`: an ArcFace ONNX of buffalo_l's layout (input.1 (N, 3, 112, 112) -> (N, 512)) run
  with onnxruntime after the same 5-point similarity alignment InsightFace does; with a random model of that
  layout it costs what buffalo_l costs. It names its identities as buffalo_l's, which the FaceID generator reads.
- detector `hashed_faces`: returns the faces `rp detect` found here for an image with the same pixels (looked up
  by a hash of the array), and nothing for any other array: it stands in for a detector the GPU box cannot run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from rp_core import hookimpl
from rp_core.interfaces import ComponentOptions, Detector, IdentityEncoder
from rp_core.types import Face, IdentityEmbedding

#: ArcFace's 112x112 template (InsightFace's `arcface_dst`), the points the 5 landmarks are aligned to.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


class ArcFaceOnnxOptions(ComponentOptions):
    path: str = Field(description="ArcFace ONNX file (buffalo_l's w600k_r50 layout)")
    providers: list[str] = Field(default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])


class ArcFaceOnnx(IdentityEncoder[ArcFaceOnnxOptions]):
    name: ClassVar[str] = "arcface_onnx"
    Options: ClassVar[type[ComponentOptions]] = ArcFaceOnnxOptions
    metric: ClassVar[Literal["cosine", "euclidean"]] = "cosine"
    match_threshold: ClassVar[float] = 0.35
    verify_threshold: ClassVar[float | None] = 0.28
    model_name: ClassVar[str] = "buffalo_l/w600k_r50"

    def load_weights(self) -> None:
        import onnxruntime

        available = set(onnxruntime.get_available_providers())
        providers = [p for p in self.options.providers if p in available] or ["CPUExecutionProvider"]
        self._session = onnxruntime.InferenceSession(self.options.path, providers=providers)

    def encode(self, image: np.ndarray, faces: Sequence[Face]) -> list[IdentityEmbedding]:
        import cv2

        if not faces:
            return []
        self.load()
        crops = []
        for face in faces:
            matrix, _ = cv2.estimateAffinePartial2D(face.five_points.astype(np.float32), ARCFACE_TEMPLATE)
            crops.append(cv2.warpAffine(image, matrix, (112, 112), borderValue=0.0))
        batch = (np.stack(crops).astype(np.float32) - 127.5) / 127.5
        features = self._session.run(None, {"input.1": batch.transpose(0, 3, 1, 2)})[0]
        features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        return [IdentityEmbedding(vector=v, model=self.model_name) for v in features]


class HashedFacesOptions(ComponentOptions):
    path: str = Field(description="JSON: {sha1 of the RGB array bytes: [faces as rp detect writes them]}")


class HashedFaces(Detector[HashedFacesOptions]):
    name: ClassVar[str] = "hashed_faces"
    Options: ClassVar[type[ComponentOptions]] = HashedFacesOptions

    def load_weights(self) -> None:
        self._faces: dict[str, list[dict[str, Any]]] = json.loads(Path(self.options.path).read_text())

    def detect(self, image: np.ndarray) -> list[Face]:
        self.load()
        found = self._faces.get(array_key(image), [])
        return [Face(tuple(f["box"]), f["score"], np.array(f["landmarks"]), "hashed_faces") for f in found]


def array_key(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


@hookimpl
def rp_register_identity_encoders(register: Callable[[type], None]) -> None:
    register(ArcFaceOnnx)


@hookimpl
def rp_register_detectors(register: Callable[[type], None]) -> None:
    register(HashedFaces)
