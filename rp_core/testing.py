"""Contract checks a component package runs against its own classes, in its own test suite.

    from rp_core.testing import check_detector

    def test_my_detector_keeps_rps_contract(photo):
        check_detector(MyDetector, photo)

Each check raises ContractError (an AssertionError, so pytest shows it as a failure) naming the
rule that broke. They cover what the orchestrator relies on without checking: options that reject
unknown keys, no heavy import when the plugin module is imported (`rp --help` stays fast), cheap
construction, outputs of the right shape inside the image, and the same output for the same input.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from rp_core.interfaces import (
    COMPONENT_KINDS,
    Component,
    ComponentOptions,
    Detector,
    Generator,
    IdentityEncoder,
    RuntimeContext,
    compare_embeddings,
)
from rp_core.types import Face, IdentityEmbedding

#: Modules that take long to import or pull native libraries: only `load()` or a method may import them.
HEAVY_MODULES: tuple[str, ...] = (
    "torch",
    "tensorflow",
    "jax",
    "cv2",
    "onnxruntime",
    "insightface",
    "dlib",
    "face_alignment",
    "mediapipe",
    "diffusers",
    "transformers",
    "matplotlib",
)
_UNKNOWN_KEY = "rp_contract_unknown_key"


class ContractError(AssertionError):
    """A component breaks a rule of rp's component contract."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ContractError(message)


def check_options(cls: type[Component]) -> None:
    """The options model has defaults for everything and rejects unknown keys (a typo must never be ignored)."""
    from pydantic import ValidationError

    _require(
        isinstance(cls.Options, type) and issubclass(cls.Options, ComponentOptions),
        f"{cls.__name__}.Options must subclass rp_core.interfaces.ComponentOptions",
    )
    try:
        cls.Options()
    except ValidationError as exc:
        raise ContractError(f"{cls.__name__}.Options() needs values: give every option a default ({exc})") from None
    try:
        cls.Options.model_validate({_UNKNOWN_KEY: 1})
    except ValidationError:
        return
    raise ContractError(f"{cls.__name__}.Options accepted the unknown key {_UNKNOWN_KEY!r}; keep extra='forbid'")


def check_light_import(module: str, heavy: Sequence[str] = HEAVY_MODULES) -> None:
    """Importing `module` in a fresh interpreter imports none of `heavy` (checked through sys.modules)."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"print(json.dumps([m for m in {list(heavy)!r} if m in sys.modules]))\n"
    )
    # the child sees what this interpreter sees (a test runner's additions to sys.path included)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False, env=env
    )
    _require(done.returncode == 0, f"importing {module} failed: {done.stderr.strip()[-1000:]}")
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    _require(
        not loaded,
        f"importing {module} imports {', '.join(loaded)}; import them inside load() or the method that needs them",
    )


def check_component(cls: type[Component], kind: str) -> None:
    """Class-level rules every component follows: its kind's base class, a name, options, a light module."""
    base = COMPONENT_KINDS.get(kind)
    _require(base is not None, f"unknown component kind {kind!r}; one of {', '.join(COMPONENT_KINDS)}")
    assert base is not None
    _require(isinstance(cls, type) and issubclass(cls, base), f"{cls!r} is not a {base.__name__}")
    _require(isinstance(cls.name, str) and bool(cls.name), f"{cls.__name__} has no `name`")
    check_options(cls)
    check_light_import(cls.__module__)


def _build(cls: type[Component], options: dict[str, Any] | None, context: RuntimeContext | None) -> Any:
    component = cls(cls.Options.model_validate(options or {}), context or RuntimeContext(device="cpu"))
    _require(not component._loaded, f"{cls.__name__}() loaded weights; construction must be cheap (use load())")
    _require(isinstance(component.version(), str), f"{cls.__name__}.version() must return a string")
    json.dumps(component.describe())  # the manifest stores it
    return component


def check_detector(
    cls: type[Detector],
    image: np.ndarray,
    *,
    options: dict[str, Any] | None = None,
    context: RuntimeContext | None = None,
    min_faces: int = 1,
) -> list[Face]:
    """Run a detector on a photo with at least `min_faces` faces and check what it returns; returns the faces."""
    check_component(cls, "detector")
    detector = _build(cls, options, context)
    detector.load()
    original = np.array(image, copy=True)
    faces = detector.detect(image)
    _require(np.array_equal(original, image), f"{cls.name}.detect changed its input image")
    _require(isinstance(faces, list), f"{cls.name}.detect must return a list, got {type(faces).__name__}")
    _require(len(faces) >= min_faces, f"{cls.name} found {len(faces)} faces, expected at least {min_faces}")
    height, width = image.shape[:2]
    for i, face in enumerate(faces):
        _require(isinstance(face, Face), f"{cls.name}.detect returned {type(face).__name__}, not rp_core.types.Face")
        x0, y0, x1, y1 = face.box
        where = f"{cls.name} face {i} (box {face.box})"
        _require(all(math.isfinite(v) for v in face.box) and math.isfinite(face.score), f"{where}: not finite")
        _require(x0 < x1 and y0 < y1, f"{where}: box is empty or inverted; expected (x0, y0, x1, y1) in pixels")
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        _require(0 <= centre[0] <= width and 0 <= centre[1] <= height, f"{where}: box centre outside the image")
        points = face.landmarks
        _require(bool(np.isfinite(points).all()), f"{where}: landmarks are not finite")
        margin = 0.1 * max(width, height)
        inside = (points[:, 0] >= -margin) & (points[:, 0] <= width + margin)
        inside &= (points[:, 1] >= -margin) & (points[:, 1] <= height + margin)
        _require(bool(inside.all()), f"{where}: landmarks outside the image (pixel coordinates expected)")
        _require(face.detector == cls.name, f"{where}: Face.detector is {face.detector!r}, expected {cls.name!r}")
    again = detector.detect(image)
    _require(_same_faces(faces, again), f"{cls.name}.detect gave different faces on the same image twice")
    flat = np.full((max(64, height // 4), max(64, width // 4), 3), 128, dtype=np.uint8)
    _require(detector.detect(flat) == [], f"{cls.name} found a face in a uniform grey image")
    return faces


def _same_faces(a: Sequence[Face], b: Sequence[Face]) -> bool:
    if len(a) != len(b):
        return False
    return all(
        np.allclose(f.box, g.box, atol=1e-4) and np.allclose(f.landmarks, g.landmarks, atol=1e-4)
        for f, g in zip(a, b, strict=True)
    )


def check_identity_encoder(
    cls: type[IdentityEncoder],
    image: np.ndarray,
    faces: Sequence[Face],
    *,
    options: dict[str, Any] | None = None,
    context: RuntimeContext | None = None,
) -> list[IdentityEmbedding]:
    """Encode detected faces and check count, finiteness, determinism and self-match; returns the embeddings."""
    check_component(cls, "identity_encoder")
    _require(cls.metric in ("cosine", "euclidean"), f"{cls.name}.metric must be 'cosine' or 'euclidean'")
    _require(math.isfinite(float(cls.match_threshold)), f"{cls.name}.match_threshold must be a finite number")
    encoder = _build(cls, options, context)
    encoder.load()
    _require(list(encoder.encode(image, [])) == [], f"{cls.name}.encode of no faces must return []")
    embeddings = list(encoder.encode(image, faces))
    _require(len(embeddings) == len(faces), f"{cls.name} returned {len(embeddings)} embeddings for {len(faces)} faces")
    models = {e.model for e in embeddings}
    _require(len(models) <= 1, f"{cls.name} embeddings name several models: {sorted(models)}")
    for i, embedding in enumerate(embeddings):
        _require(isinstance(embedding, IdentityEmbedding), f"{cls.name} returned {type(embedding).__name__}")
        _require(bool(np.isfinite(embedding.vector).all()), f"{cls.name}: embedding {i} is not finite")
        _require(encoder.is_match(embedding, embedding), f"{cls.name}: embedding {i} does not match itself")
    again = list(encoder.encode(image, faces))
    for i, (a, b) in enumerate(zip(embeddings, again, strict=True)):
        score = compare_embeddings(a, b, cls.metric)
        same = score > 1 - 1e-4 if cls.metric == "cosine" else score < 1e-4
        _require(same, f"{cls.name}: face {i} encoded twice gives different embeddings ({cls.metric} {score:.6f})")
    return embeddings


def check_generator(
    cls: type[Generator],
    image: np.ndarray,
    face: Face,
    *,
    options: dict[str, Any] | None = None,
    context: RuntimeContext | None = None,
    size: int = 256,
) -> np.ndarray:
    """Generate a new crop for one aligned face (obfuscating generators: no identity, no inversion); returns it."""
    from rp_core.align import align_face
    from rp_core.types import GenerationRequest

    check_component(cls, "generator")
    _require(
        not (cls.needs_identity or cls.needs_inversion),
        f"check_generator runs generators that need neither identity nor inversion; {cls.name} needs them",
    )
    generator = _build(cls, options, context)
    generator.load()
    aligned = align_face(image, face, size)
    crops = generator.generate([GenerationRequest(face=aligned, seed=0)])
    _require(len(crops) == 1, f"{cls.name}.generate returned {len(crops)} crops for 1 request")
    crop = np.asarray(crops[0])
    _require(
        crop.dtype == np.uint8 and crop.shape == aligned.crop.shape,
        f"{cls.name}: crop must be uint8 {aligned.crop.shape}, got {crop.dtype} {crop.shape}",
    )
    centre = slice(size * 3 // 8, size * 5 // 8)
    _require(
        not np.array_equal(crop[centre, centre], aligned.crop[centre, centre]),
        f"{cls.name} returned the middle of the face unchanged",
    )
    again = np.asarray(generator.generate([GenerationRequest(face=aligned, seed=0)])[0])
    _require(np.array_equal(crop, again), f"{cls.name}: the same face and seed gave a different crop")
    return crop
