"""An attacker that searches the whole output, for everyone: rp's offline preset on more photo variants.

benchmarks/offline_vs_deface.py counts a face as identifiable where it was, for the person who was there. This
attacker does not know either: on every view of the whole output (turned by every 45 degrees, mirrored or
not, at 1x and upsampled 2x) dlib's HOG detector and CenterFace (threshold 0.3; dlib's 68 landmarks fitted in
its box) find faces; each is read with dlib's 128-d descriptor and compared with EVERY person of the source photo the
variant was made from (faces both detectors agree on, or CenterFace at >= 0.5), read upright, as an attacker's
reference pictures would be. A person counts as matched when any face found anywhere is within 0.6 of them.
(Read on the variant itself, a face rolled 30 degrees gets dlib's 68 points fitted askew and a reading near
unrelated patches: until 2026-12-03 the people were read there, and a lamp read 0.39 from one so read.)

Photos: t1.jpg and astronaut, mirrored, rolled by 45 and -30 degrees (grey corners), upsampled 2x, grey,
JPEG quality 15, with noise, and shrunk to 35 % in a corner of a 1920x1080 canvas. rp runs once over the folder
(`rp anonymize DIR -o OUT --preset offline`), deface once per photo.

A low detector threshold and a fixed distance let the attacker "match" things that are not the person's face
(the closest two people of t1 read 0.63 apart, and chips of hair and collar around a face can read near
it). So where rp's output has a match, the same attacker also searches deface's output and the photo with
every face rp found covered by a grey box 1.6x its size, which leaves no face at all: a match there is the
context, not a face.

    python -m benchmarks.anywhere_attack [--only NAME ...] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.coverage_variants import Attacker, load_sources
from rp_core.geometry import iou
from rp_core.io import read_image, write_image
from rp_core.types import Face

THRESHOLD = 0.6
CENTERFACE_THRESHOLD = 0.3
GREY = 128


def variants(name: str, image: np.ndarray) -> dict[str, np.ndarray]:
    """The photo variants this attacker is run on (none of them in offline_vs_deface's table)."""
    import cv2

    out = {"mirror": np.ascontiguousarray(image[:, ::-1])}
    for degrees in (45, -30):
        out[f"roll{degrees}"] = rolled(image, degrees, border=90)
    out["up2x"] = cv2.resize(image, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    out["grey"] = np.repeat(grey[:, :, None], 3, axis=2)
    ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 15])
    assert ok
    out["jpeg15"] = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1]
    noise = np.random.default_rng(0).normal(0, 18, image.shape)
    out["noise"] = np.clip(image + noise, 0, 255).astype(np.uint8)
    canvas = np.full((1080, 1920, 3), 120, np.uint8)
    small = cv2.resize(image, None, fx=0.35, fy=0.35, interpolation=cv2.INTER_AREA)
    canvas[600 : 600 + small.shape[0], 1300 : 1300 + small.shape[1]] = small
    out["smallincanvas"] = canvas
    return {f"{name}_{k}": np.ascontiguousarray(v) for k, v in out.items()}


def rolled(image: np.ndarray, degrees: float, border: int = 0) -> np.ndarray:
    """The image turned counter-clockwise by `degrees` on a canvas that holds all of it."""
    import cv2

    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(height * sin + width * cos), int(height * cos + width * sin)
    matrix[0, 2] += new_w / 2 - width / 2
    matrix[1, 2] += new_h / 2 - height / 2
    return cv2.warpAffine(image, matrix, (new_w, new_h), borderValue=(border, border, border))


class AnywhereAttacker:
    """dlib HOG and CenterFace on every view of the whole image; dlib's descriptor of each face found."""

    def __init__(self) -> None:
        from rp_plugins.centerface import CenterFaceDetector, CenterFaceOptions

        self.dlib = Attacker()
        self.centerface = CenterFaceDetector(CenterFaceOptions(threshold=CENTERFACE_THRESHOLD))

    def faces(self, image: np.ndarray) -> list[Face]:
        """HOG's faces and CenterFace's, each with dlib's 68 landmarks."""
        image = np.ascontiguousarray(image)
        return self.dlib.detect(image, 1) + self.centerface_faces(image)

    def centerface_faces(self, image: np.ndarray, centerface_at_least: float = 0.0) -> list[Face]:
        """CenterFace's faces (at least that score) with dlib's 68 landmarks fitted in each box."""
        import dlib

        image = np.ascontiguousarray(image)
        found: list[Face] = []
        for face in self.centerface.detect(image):
            if face.score < centerface_at_least:
                continue
            x0, y0, x1, y1 = (round(v) for v in face.box)
            rect = dlib.rectangle(max(0, x0), max(0, y0), min(image.shape[1] - 1, x1), min(image.shape[0] - 1, y1))
            shape = self.dlib.predictor(image, rect)
            points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            found.append(Face(box=face.box, score=face.score, landmarks=points, detector="centerface"))
        return found

    def people(self, image: np.ndarray) -> list[np.ndarray]:
        """One descriptor per person of the original: faces both detectors see, or CenterFace at >= 0.5."""
        hog = self.dlib.detect(image, 1)
        sure = self.centerface_faces(image, centerface_at_least=0.5)
        faces = [f for f in hog if any(iou(f.box, c.box) > 0.3 for c in sure)]
        faces += [c for c in sure if all(iou(f.box, c.box) <= 0.3 for f in faces)]
        return self.dlib.descriptors(image, faces) if faces else []

    def everything(self, image: np.ndarray) -> list[np.ndarray]:
        """Descriptors of every face found on every view of the image."""
        import cv2

        out: list[np.ndarray] = []
        for view in views(image):
            for factor in (1, 2):
                big = view if factor == 1 else cv2.resize(view, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
                if max(big.shape[:2]) > 3000:
                    continue
                faces = self.faces(big)
                out += self.dlib.descriptors(big, faces) if faces else []
        return out


def views(image: np.ndarray) -> Iterator[np.ndarray]:
    """The image and its mirror image, each turned by every 45 degrees."""
    for mirrored in (False, True):
        base = np.ascontiguousarray(image[:, ::-1]) if mirrored else image
        for degrees in range(0, 360, 45):
            if degrees % 90 == 0:
                yield np.ascontiguousarray(np.rot90(base, degrees // 90))
            else:
                yield rolled(base, degrees)


def closest(people: list[np.ndarray], found: list[np.ndarray]) -> list[float]:
    """For each person, the distance of the nearest face found (inf where nothing was found)."""
    return [min((float(np.linalg.norm(f - p)) for f in found), default=float("inf")) for p in people]


def cell(distances: list[float]) -> str:
    hits = sum(d < THRESHOLD for d in distances)
    near = min(distances, default=float("inf"))
    return f"{hits} ({near:.3f})" if np.isfinite(near) else f"{hits} (-)"


def covered(image: np.ndarray, boxes: list[list[float]], grow: float = 1.6) -> np.ndarray:
    """The image with a grey box `grow` times each face box over it: no face left."""
    out = image.copy()
    for x0, y0, x1, y1 in boxes:
        cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * grow, (y1 - y0) * grow
        out[max(0, int(cy - h / 2)) : int(cy + h / 2), max(0, int(cx - w / 2)) : int(cx + w / 2)] = GREY
    return out


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed on to rp (repeatable)")
    args = parser.parse_args()
    attacker = AnywhereAttacker()
    print("| photo | people | closest two people | rp: people matched (closest) | deface | faces covered grey |")
    print("|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "in").mkdir()
        photos: dict[str, np.ndarray] = {}
        for source, image in load_sources().items():
            if source != "camera":
                photos.update(variants(source, image))
        photos = {k: v for k, v in photos.items() if not args.only or k in args.only}
        for name, image in photos.items():
            write_image(root / "in" / f"{name}.png", image)
        command = [sys.executable, "-m", "rp_core.cli", "anonymize", str(root / "in"), "-o", str(root / "rp")]
        settings = [arg for setting in args.set for arg in ("--set", setting)]
        subprocess.run([*command, "--preset", "offline", "-q", *settings], check=True, capture_output=True)
        manifest = json.loads((root / "rp" / "manifest.json").read_text())
        boxes = {Path(e["input"]).stem: [f["box"] for f in e["faces"]] for e in manifest["images"]}
        people_of = {source: attacker.people(image) for source, image in load_sources().items() if source != "camera"}
        for name, image in photos.items():
            people = people_of[name.split("_")[0]]
            pairs = sorted(float(np.linalg.norm(a - b)) for i, a in enumerate(people) for b in people[i + 1 :])
            rp = closest(people, attacker.everything(read_image(root / "rp" / f"{name}.png")))
            row = [name, str(len(people)), f"{pairs[0]:.2f}" if pairs else "-", cell(rp), "", ""]
            if any(d < THRESHOLD for d in rp):
                out = root / f"deface_{name}.png"
                subprocess.run(["deface", str(root / "in" / f"{name}.png"), "-o", str(out)], check=True,
                               capture_output=True)  # fmt: skip
                row[4] = cell(closest(people, attacker.everything(read_image(out))))
                row[5] = cell(closest(people, attacker.everything(covered(image, boxes[name]))))
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
