"""InsightFace buffalo_l ArcFace (`w600k_r50.onnx`): the identity the diffusion generator steers away from.

The embedding is computed from the five points of the landmarks we already have
(`Face.five_points`) with InsightFace's own `norm_crop` and `ArcFaceONNX`, so it is the
embedding IP-Adapter-FaceID was trained on, without InsightFace's detector or the other
buffalo_l models. A missing file fails fast, before onnxruntime is even imported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from rp_core import hookimpl
from rp_core.interfaces import ComponentOptions, IdentityEncoder, cli_flag
from rp_core.models import ModelFile, first_existing, require_present
from rp_core.types import Face, IdentityEmbedding

PACK = "buffalo_l"
ONNX_FILE = "w600k_r50.onnx"
PACK_URL = "https://github.com/deepinsight/insightface/releases/download/model-zoo/buffalo_l.zip"
_CHUNK = 32


class BuffaloLOptions(ComponentOptions):
    """Options of the buffalo_l identity encoder."""

    root: str = Field(
        "~/.insightface",
        description="InsightFace root; the model is read from <root>/models/buffalo_l/",
        json_schema_extra=cli_flag("insightface-root"),
    )


class BuffaloL(IdentityEncoder):
    """L2-normalised 512-d ArcFace embedding, batched over faces."""

    name: ClassVar[str] = "buffalo_l"
    default_for: ClassVar[tuple[str, ...]] = ("identity_encoder",)
    Options: ClassVar[type[ComponentOptions]] = BuffaloLOptions
    options: BuffaloLOptions
    metric: ClassVar[Literal["cosine", "euclidean"]] = "cosine"
    #: Cosine similarity above which ArcFace w600k_r50 calls two faces the same person
    #: (InsightFace's usual verification threshold for this model is ~0.3-0.4).
    match_threshold: ClassVar[float] = 0.35
    #: Fail-closed verification draws its line further out: a regenerated face scoring above 0.28 is
    #: retried. A margin chosen, not measured here (no real ArcFace weights on this machine); dlib's
    #: margin (0.6 -> 0.72) is measured in benchmarks/verify_margin.py.
    verify_threshold: ClassVar[float | None] = 0.28
    model_name: ClassVar[str] = "buffalo_l/w600k_r50"

    def candidates(self) -> list[Path]:
        """Where the ONNX file is looked for: the models dir first, then InsightFace's root."""
        paths: list[Path] = []
        if self.context.models_dir is not None:
            base = Path(self.context.models_dir).expanduser()
            paths += [base / PACK / ONNX_FILE, base / "models" / PACK / ONNX_FILE]
        paths.append(Path(self.options.root).expanduser() / "models" / PACK / ONNX_FILE)
        return paths

    def model_files(self) -> list[ModelFile]:
        candidates = self.candidates()
        return [
            ModelFile(
                component=self.name,
                description=f"InsightFace buffalo_l ArcFace ({ONNX_FILE})",
                found_at=first_existing(candidates),
                looked_in=tuple(candidates),
                how_to_get=(
                    f"`rp models download`, or unzip {PACK_URL} into {candidates[-1].parent} "
                    f"(only {ONNX_FILE} is needed)"
                ),
            )
        ]

    def download(self, target: Path | None = None) -> list[Path]:
        """Fetch buffalo_l.zip as InsightFace does (into `<root>/models/buffalo_l`, or `<target>/models/buffalo_l`)."""
        files = self.model_files()
        if files[0].found_at is not None:
            return [files[0].found_at]
        from insightface.utils import storage

        root = Path(target) if target is not None else Path(self.options.root).expanduser()
        folder = Path(storage.download("models", PACK, force=True, root=str(root)))
        found = first_existing([folder / ONNX_FILE, *folder.glob(f"*/{ONNX_FILE}")])
        return [found] if found is not None else []

    def providers(self) -> list[Any]:
        """onnxruntime execution providers for `runtime.device` (rp_core.devices.onnx_providers)."""
        from rp_core.devices import onnx_providers

        return onnx_providers(self.context.device)

    def load_weights(self) -> None:
        files = self.model_files()
        require_present(files)
        path = files[0].found_at
        assert path is not None
        providers = self.providers()
        self._model = self.context.pool.get(
            ("insightface", str(path), repr(providers)), lambda: _arcface(path, providers)
        )

    def version(self) -> str:
        return "buffalo_l-w600k_r50"

    def encode(self, image: np.ndarray, faces: Sequence[Face]) -> list[IdentityEmbedding]:
        from insightface.utils.face_align import norm_crop

        if not faces:
            return []
        self.load()
        bgr = np.ascontiguousarray(image[:, :, 2::-1])  # InsightFace works in BGR (OpenCV) order
        size = int(self._model.input_size[0])
        crops = [norm_crop(bgr, landmark=face.five_points.astype(np.float32), image_size=size) for face in faces]
        vectors = []
        for start in range(0, len(crops), _CHUNK):
            vectors.append(np.asarray(self._model.get_feat(crops[start : start + _CHUNK]), dtype=np.float32))
        features = np.concatenate(vectors).reshape(len(crops), -1)
        norms = np.linalg.norm(features, axis=1, keepdims=True)
        features = features / np.maximum(norms, 1e-12)
        return [IdentityEmbedding(vector=v, model=self.model_name) for v in features]


def _arcface(path: Path, providers: list[Any]) -> Any:
    """Load the ONNX file with InsightFace's model router; refuse anything that is not a recognition model."""
    from insightface.model_zoo import get_model
    from insightface.model_zoo.arcface_onnx import ArcFaceONNX

    from rp_core.errors import RpError

    model = get_model(str(path), providers=providers)
    if not isinstance(model, ArcFaceONNX):
        raise RpError(f"{path} is not an ArcFace recognition model (InsightFace routed it to {type(model).__name__})")
    return model


@hookimpl
def rp_register_identity_encoders(register: Callable[[type], None]) -> None:
    register(BuffaloL)
