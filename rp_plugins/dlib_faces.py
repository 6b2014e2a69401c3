"""dlib's face detector (HOG or MMOD), 68-point shape predictor and 128-d face descriptor.

The descriptor's network runs in onnxruntime by default, read from dlib's own .dat (dlib_resnet_onnx.py).

Runs anywhere with no downloads: the weights ship in the `face_recognition_models`
package. It is the offline detector and the independent recognizer that measures
whether an anonymized face can still be re-identified (design section 4).
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from rp_core import hookimpl
from rp_core.errors import RpError
from rp_core.interfaces import ComponentOptions, Detector, IdentityEncoder, RuntimeContext, cli_flag
from rp_core.models import ModelFile, default_cache_dir, derived_model, first_existing, require_present
from rp_core.types import Face, IdentityEmbedding
from rp_plugins.dlib_resnet_onnx import CHIP_SIZE, INPUT, OUTPUT, build, cache_name, chip_blob

SHAPE_68 = "shape_predictor_68_face_landmarks.dat"
SHAPE_5 = "shape_predictor_5_face_landmarks.dat"
MMOD = "mmod_human_face_detector.dat"
RESNET = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_FILES_URL = "http://dlib.net/files/"
_HOW_TO_GET = "pip install face_recognition_models (bundles dlib's .dat files), or put {name} in the models dir"


def package_models_dir() -> Path | None:
    """Folder of the .dat files in `face_recognition_models` (not imported: it needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def dlib_model_file(component: str, filename: str, description: str, context: RuntimeContext) -> ModelFile:
    """Look for a dlib .dat file in the models dir first, then in face_recognition_models."""
    candidates: list[Path] = []
    if context.models_dir is not None:
        base = Path(context.models_dir).expanduser()
        candidates += [base / filename, base / "dlib" / filename]
    package = package_models_dir()
    if package is not None:
        candidates.append(package / filename)
    return ModelFile(
        component=component,
        description=f"{description} ({filename})",
        found_at=first_existing(candidates),
        looked_in=tuple(candidates),
        how_to_get=_HOW_TO_GET.format(name=filename) + f" (also at {DLIB_FILES_URL}{filename}.bz2)",
    )


def _download_dat(files: list[ModelFile], target: Path | None, context: RuntimeContext) -> list[Path]:
    """Fetch missing .dat files from dlib.net into `target` (or the models dir); returns present paths."""
    import bz2
    import urllib.request

    present = [f.found_at for f in files if f.found_at is not None]
    missing = [f for f in files if f.found_at is None]
    if not missing:
        return present
    folder = target or context.models_dir
    if folder is None:
        raise RpError("dlib weights are missing and there is no models dir to download into; pass a target folder")
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    for f in missing:
        filename = f.description.rsplit("(", 1)[-1].rstrip(")")
        with urllib.request.urlopen(f"{DLIB_FILES_URL}{filename}.bz2", timeout=60) as response:
            data = bz2.decompress(response.read())
        partial = folder / f"{filename}.part"
        partial.write_bytes(data)
        partial.replace(folder / filename)
        present.append(folder / filename)
    return present


#: dlib models loaded in this process, by (loader, file): they are read-only CPU objects, so every
#: component and every model pool shares one copy (a 68-point predictor takes ~0.5 s to load).
_LOADED: dict[tuple[Hashable, ...], Any] = {}
_LOADING = threading.Lock()


def _load_once(factory: Callable[..., Any], *args: Hashable) -> Any:
    key = (factory.__name__, *args)
    with _LOADING:
        if key not in _LOADED:
            _LOADED[key] = factory(*args)
        return _LOADED[key]


def _pooled(context: RuntimeContext, path: Path, factory: Callable[[str], Any]) -> Any:
    """Share one loaded dlib model per file across components (detector, encoder, evaluators) and pools."""
    return context.pool.get(("dlib", factory.__name__, str(path)), lambda: _load_once(factory, str(path)))


def longest_side_scale(shape: tuple[int, ...], det_size: int | None) -> float:
    """Factor that brings the longest side down to `det_size`; never above 1 (no upscaling)."""
    if det_size is None:
        return 1.0
    return min(1.0, det_size / float(max(shape[:2])))


def resize_for_detection(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class DlibDetectorOptions(ComponentOptions):
    """Options of the dlib detector."""

    model: Literal["hog", "mmod"] = Field(
        "hog", description="hog: fast frontal detector; mmod: CNN detector, finds more poses but slow on CPU"
    )
    upsample: int = Field(0, ge=0, le=4, description="upsample the image this many times to find small faces (slower)")
    det_thresh: float = Field(
        0.0,
        description="hog: adjust_threshold added to the SVM threshold; mmod: minimum confidence. Higher = fewer faces",
        json_schema_extra=cli_flag("det-thresh"),
    )
    det_size: int | None = Field(
        None, ge=32, description="longest image side given to the detector (downscale only); None = full size"
    )


class DlibDetector(Detector):
    """dlib HOG or MMOD face detector with the 68-point shape predictor."""

    name: ClassVar[str] = "dlib"
    Options: ClassVar[type[ComponentOptions]] = DlibDetectorOptions
    #: Second choice of `coverage.detector = "auto"` (after CenterFace), searched with every turn.
    coverage_priority: ClassVar[int | None] = 1
    #: HOG finds no face under ~80 px, nor half a face: coverage searches it with every turn and the border pass.
    coverage_passes: ClassVar[Literal["default", "hog"]] = "hog"
    recall_option: ClassVar[str | None] = "det_thresh"
    options: DlibDetectorOptions

    def model_files(self) -> list[ModelFile]:
        files = [dlib_model_file(self.name, SHAPE_68, "dlib 68-point shape predictor", self.context)]
        if self.options.model == "mmod":
            files.append(dlib_model_file(self.name, MMOD, "dlib MMOD CNN face detector", self.context))
        return files

    def download(self, target: Path | None = None) -> list[Path]:
        return _download_dat(self.model_files(), target, self.context)

    def load_weights(self) -> None:
        import dlib

        files = self.model_files()
        require_present(files)
        paths = [f.found_at for f in files if f.found_at is not None]
        self._predictor = _pooled(self.context, paths[0], dlib.shape_predictor)
        if self.options.model == "mmod":
            self._detector = _pooled(self.context, paths[1], dlib.cnn_face_detection_model_v1)
        else:
            self._detector = self.context.pool.get(("dlib", "hog"), lambda: _load_once(dlib.get_frontal_face_detector))

    def version(self) -> str:
        return "dlib-1"

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detect on a downscaled copy if `det_size` asks for it, then fit landmarks at full size."""
        import dlib

        self.load()
        image = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
        scale = longest_side_scale(image.shape, self.options.det_size)
        small = resize_for_detection(image, scale)
        found: list[tuple[Any, float]] = []
        if self.options.model == "mmod":
            for det in self._detector(small, self.options.upsample):
                if det.confidence >= self.options.det_thresh:
                    found.append((det.rect, float(det.confidence)))
        else:
            rects, scores, _ = self._detector.run(small, self.options.upsample, self.options.det_thresh)
            found = [(rect, float(score)) for rect, score in zip(rects, scores, strict=True)]
        faces = []
        for rect, score in found:
            box = tuple(v / scale for v in (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1))
            full_rect = dlib.rectangle(*(round(v) for v in box))
            shape = self._predictor(image, full_rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            faces.append(Face(box=box, score=score, landmarks=points, detector=self.name))
        return faces


class DlibEncoderOptions(ComponentOptions):
    """Options of the dlib face descriptor."""

    num_jitters: int = Field(
        0, ge=0, le=100, description="average over this many jittered copies (slower, slightly steadier)"
    )
    padding: float = Field(
        0.25, ge=0.0, le=1.0, description="context around the face chip, as dlib's compute_face_descriptor"
    )
    backend: Literal["auto", "onnxruntime", "dlib"] = Field(
        "auto",
        description=(
            "what runs the descriptor's network: onnxruntime (the same weights from the same .dat, converted once "
            "and kept in the cache folder; the same descriptors to ~1e-6 and ~20x faster than dlib-bin, which is "
            "built without BLAS), dlib (dlib's own code), or auto: onnxruntime where it is installed. Jittered "
            "reads (num_jitters > 0) always run in dlib"
        ),
    )
    threads: int = Field(
        1, ge=0, le=256, description="onnxruntime threads per read (0: onnxruntime's default, one per core)"
    )
    landmarks: Literal["auto", "face", "predict5"] = Field(
        "face",
        description=(
            "face: the face's own 68 landmarks (5-point faces are an error); predict5: dlib's 5-point predictor "
            "(9 MB, 0.1 s to load instead of 1 s for the 68-point one) fitted in the face box; auto: face when it "
            "has 68 landmarks, else predict5"
        ),
    )


class DlibEncoder(IdentityEncoder):
    """dlib's 128-d ResNet face descriptor, aligned on the face's 68 landmarks or dlib's 5 fitted in its box."""

    name: ClassVar[str] = "dlib"
    Options: ClassVar[type[ComponentOptions]] = DlibEncoderOptions
    options: DlibEncoderOptions
    metric: ClassVar[Literal["cosine", "euclidean"]] = "euclidean"
    match_threshold: ClassVar[float] = 0.6
    #: Fail-closed verification calls a face a leak below 0.65, not 0.6 (benchmarks/verify_margin.py, t1.jpg and
    #: astronaut): faces downscaled 8x sat at 0.59-0.68 from their originals and were all picked out rank-1
    #: among the photo's people, so 0.6 has no margin. Not higher: different people there are 0.62-0.91
    #: apart, and read at the original landmarks a face filled solid black still scores 0.70 (the descriptor's
    #: chip holds hair and ears), while every pixelated face of t1 lands 0.67-0.73 from the same
    #: "average" person: above ~0.67 the score no longer measures the face.
    verify_threshold: ClassVar[float | None] = 0.65
    model_name: ClassVar[str] = "dlib_resnet_v1"

    #: How many faces' fitted 5-point shapes are remembered (see `_shape`).
    fitted_memory: ClassVar[int] = 4096

    def model_files(self) -> list[ModelFile]:
        files = [dlib_model_file(self.name, RESNET, "dlib 128-d face recognition ResNet", self.context)]
        if self.options.landmarks != "face":
            files.append(dlib_model_file(self.name, SHAPE_5, "dlib 5-point shape predictor", self.context))
        return files

    def download(self, target: Path | None = None) -> list[Path]:
        return _download_dat(self.model_files(), target, self.context)

    def load_weights(self) -> None:
        import dlib

        files = self.model_files()
        require_present(files[:1])  # the 5-point predictor is checked (and loaded) when a face needs it
        dat = files[0].found_at
        assert dat is not None
        self._fitted: OrderedDict[int, tuple[Face, Any]] = OrderedDict()
        self._network: Any = None
        if self.runs_in() == "onnxruntime":
            where = (dat, self.context.models_dir, self.options.threads)
            self._network = self.context.pool.get(("dlib-onnx", *where), lambda: _load_once(_onnx_network, *where))
        else:
            self._model = _pooled(self.context, dat, dlib.face_recognition_model_v1)

    def runs_in(self) -> Literal["onnxruntime", "dlib"]:
        """Who runs the network for these options: onnxruntime unless asked for dlib, jittering, or not installed."""
        if self.options.backend == "dlib" or self.options.num_jitters > 0:
            return "dlib"
        if self.options.backend == "auto" and importlib.util.find_spec("onnxruntime") is None:
            return "dlib"
        return "onnxruntime"

    def version(self) -> str:
        return "dlib-resnet-v1"

    def encode(self, image: np.ndarray, faces: Sequence[Face]) -> list[IdentityEmbedding]:
        import dlib

        if not faces:
            return []
        self.load()
        image = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
        shapes = dlib.full_object_detections()
        for face in faces:
            shapes.append(self._shape(image, face))
        if self._network is not None:
            chips = dlib.get_face_chips(image, shapes, CHIP_SIZE, self.options.padding)
            vectors = self._network.run([OUTPUT], {INPUT: chip_blob([np.asarray(chip) for chip in chips])})[0]
        else:
            vectors = self._model.compute_face_descriptor(image, shapes, self.options.num_jitters, self.options.padding)
        return [IdentityEmbedding(vector=np.array(v, dtype=np.float32), model=self.model_name) for v in vectors]

    def _shape(self, image: np.ndarray, face: Face) -> Any:
        """The dlib shape the descriptor aligns with: the face's 68 points, or 5 fitted in its box.

        A fitted shape is remembered per Face object, so the verifier reads the output at the
        points fitted on the original (the first image this face was encoded on) instead of
        re-fitting them on an obfuscated face, which would misalign the chip and understate
        what an attacker with the original's landmarks can match.
        """
        use_face = self.options.landmarks == "face" or (
            self.options.landmarks == "auto" and face.landmarks.shape == (68, 2)
        )
        if use_face:
            return _object_detection(face)
        remembered = self._fitted.get(id(face))
        if remembered is not None and remembered[0] is face:
            self._fitted.move_to_end(id(face))
            return remembered[1]
        shape = _fit_upright(self._predictor5(), image, face)
        self._fitted[id(face)] = (face, shape)  # holding the face keeps its id from being reused
        while len(self._fitted) > self.fitted_memory:
            self._fitted.popitem(last=False)
        return shape

    def _predictor5(self) -> Any:
        import dlib

        files = self.model_files()
        require_present(files)
        assert files[1].found_at is not None
        return _pooled(self.context, files[1].found_at, dlib.shape_predictor)


def _onnx_network(dat: Path, models_dir: Path | None, threads: int) -> Any:
    """An onnxruntime session of dlib's ResNet read from `dat` (converted once, then from the cache folder)."""
    from rp_plugins._onnx import onnx_session

    load = partial(onnx_session, providers=["CPUExecutionProvider"], threads=threads)
    return derived_model(default_cache_dir(models_dir), cache_name(dat), lambda: build(dat), load)


def _fit_upright(predictor: Any, image: np.ndarray, face: Face) -> Any:
    """dlib's 5 points fitted on the face turned upright (its eye line level), mapped back to the image.

    dlib's predictor expects an upright face; a face found sideways or upside down (a rotated photo) would
    get points fitted to nothing. The face's own 5 points (ArcFace order, eyes first) give its roll.
    """
    import cv2
    import dlib

    eyes = face.five_points[:2]
    dx, dy = eyes[1] - eyes[0]
    angle = float(np.degrees(np.arctan2(dy, dx)))
    x0, y0, x1, y1 = face.box
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    if abs(angle) < 10:  # upright enough for the predictor as it is
        return predictor(image, _rectangle(face.box))
    turn = cv2.getRotationMatrix2D(centre, angle, 1.0)
    upright = cv2.warpAffine(image, turn, (image.shape[1], image.shape[0]), flags=cv2.INTER_LINEAR)
    half = max(x1 - x0, y1 - y0) / 2
    shape = predictor(
        np.ascontiguousarray(upright),
        _rectangle((centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)),
    )
    back = cv2.invertAffineTransform(turn)
    points = [back @ np.array([p.x, p.y, 1.0]) for p in shape.parts()]
    return dlib.full_object_detection(
        _rectangle(face.box), dlib.points([dlib.point(round(x), round(y)) for x, y in points])
    )


def _object_detection(face: Face) -> Any:
    """A dlib full_object_detection from the face's box and 68 landmarks."""
    import dlib

    if face.landmarks.shape != (68, 2):
        raise RpError(
            f"the dlib identity encoder with landmarks=face needs 68 landmarks, but detector "
            f"{face.detector or '?'!r} gave {face.landmarks.shape[0]}; dlib's 5-point layout (eye corners, nose "
            "base) cannot be derived from ArcFace's 5 points. Set the encoder's landmarks to auto or predict5 "
            "(dlib's 5-point predictor fits them), use a 68-point detector (dlib, sfd) or the buffalo_l encoder."
        )
    points = dlib.points([dlib.point(round(x), round(y)) for x, y in face.landmarks])
    return dlib.full_object_detection(_rectangle(face.box), points)


def _rectangle(box: tuple[float, float, float, float]) -> Any:
    """A dlib rectangle (inclusive right/bottom) from an (x0, y0, x1, y1) box."""
    import dlib

    x0, y0, x1, y1 = (round(v) for v in box)
    return dlib.rectangle(x0, y0, max(x1 - 1, x0), max(y1 - 1, y0))


@hookimpl
def rp_register_detectors(register: Callable[[type], None]) -> None:
    register(DlibDetector)


@hookimpl
def rp_register_identity_encoders(register: Callable[[type], None]) -> None:
    register(DlibEncoder)
