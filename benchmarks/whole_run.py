"""The whole run as users see it, on a GPU: `rp anonymize` over a folder, against the rate its GPU stages allow.

Two steps, because the GPU box has neither dlib nor InsightFace nor the sample photos:

  here (CPU):   python -m benchmarks.whole_run prepare --out build/bench
                 24 images cut from t1.jpg and astronaut with 1-6 faces each (87 faces), and the faces dlib finds
                 in each, keyed by a hash of the decoded pixels (for the `hashed_faces` benchmark detector)
  on the GPU:   python -m benchmarks.whole_run run --bench build/bench --steps 20 [--gpus 2]
                 random full-size SDXL + FaceID and a random ArcFace ONNX of buffalo_l's layout, then the real
                 `rp anonymize` (session, orchestrator, verification, writing) with the benchmark components of
                 benchmarks/bench_plugins (an onnxruntime ArcFace encoder; the hashed dlib faces as detector)

It prints images/s and faces/s (after loading), the GPU stages' own rate (faces / summed inversion+generation
time from the manifest), and the whole run's fraction of it. With --gpus 2 it also runs two processes, one per
GPU, on the two halves of the folder: the work one Ray actor per GPU does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def prepare(out: Path) -> None:
    """Write the images and their faces (run where dlib and the sample photos are installed)."""
    from skimage import data

    from rp_core.config import resolve_config
    from rp_core.io import read_image, write_image
    from rp_core.pipeline import assemble
    from rp_core.plugins import PluginHost
    from rp_core.samples import insightface_t1
    from rp_core.selection import face_to_json

    sys.path.insert(0, str(ROOT / "benchmarks" / "bench_plugins"))
    from rp_bench import array_key

    t1 = read_image(insightface_t1())
    astronaut = np.ascontiguousarray(data.astronaut()[:, :, :3])
    host = PluginHost()
    detector = assemble(resolve_config(host, preset="offline", environ={}), host).detect
    detector.load()
    boxes = sorted(detector.detect(t1), key=lambda f: f.box[0])
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    faces: dict[str, Any] = {}
    count = 0
    for n in range(1, 7):
        left, right = boxes[0].box[0], boxes[n - 1].box[2]
        crop = t1[:, max(0, int(left) - 60) : min(t1.shape[1], int(right) + 60)]
        import cv2

        darker = (crop.astype(np.float32) * 0.8).astype(np.uint8)
        smaller = cv2.resize(crop, None, fx=0.9, fy=0.9, interpolation=cv2.INTER_AREA)
        for variant, image in enumerate((crop, crop[:, ::-1], astronaut if n == 1 else darker, smaller)):
            image = np.ascontiguousarray(image)
            path = images / f"img_{n}_{variant}.png"
            write_image(path, image)
            found = detector.detect(read_image(path))
            faces[array_key(read_image(path))] = [face_to_json(f) for f in found]
            count += len(found)
    (out / "hashed_faces.json").write_text(json.dumps(faces))
    print(f"wrote {len(faces)} images with {count} faces into {out}")


def _anonymize(
    bench: Path, images: Path, output: Path, steps: int, device_env: dict[str, str], size: int = 1024
) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "rp_core.cli", "anonymize", str(images), "-o", str(output), "--overwrite", "-q",
        "--plugins-dir", str(ROOT / "benchmarks" / "bench_plugins"),
        "--detector", "hashed_faces", "--set", f"detector.options.path={bench / 'hashed_faces.json'}",
        "--identity-encoder", "arcface_onnx", "--set", f"identity_encoder.options.path={bench / 'arcface.onnx'}",
        "--sd-model", str(bench / "models" / "sdxl"),
        "--ip-adapter", str(bench / "models" / "faceid" / "ip-adapter-faceid_sdxl.bin"),
        "--num-inversion-steps", str(steps), "--batch-size", "8", "--face-image-size", str(size),
        # a random ArcFace cannot tell people apart, so its verdicts would trigger GPU retries that real weights
        # would not: verification still runs (encoding, checks, the fallback), retries do not
        "--set", "verify.max_retries=0",
        # no second detector family runs on the GPU box (no dlib, no CenterFace file there)
        "--set", "coverage.detector=null",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **device_env})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"rp anonymize failed ({done.returncode}):\n{done.stderr[-3000:]}")
    manifest = json.loads((output / "manifest.json").read_text())
    faces = [f for e in manifest["images"] for f in e["faces"]]
    gpu = sum(f["timings"].get("invert", 0.0) + f["timings"].get("generate", 0.0) for f in faces)
    load, total = manifest["timings"]["load"], manifest["timings"]["total"]
    return {"images": len(manifest["images"]), "faces": len(faces), "wall_s": wall, "load_s": load,
            "run_s": total - load, "gpu_s": gpu}  # fmt: skip


def first_images(bench: Path, limit: int | None) -> Path:
    """The folder of the run: all images, or the first `limit` of them (by name) linked into their own folder."""
    if limit is None:
        return bench / "images"
    return linked(bench / f"images-first{limit}", sorted((bench / "images").glob("*.png"))[:limit])


def linked(folder: Path, paths: list[Path]) -> Path:
    """`folder` holding a link to each of `paths` (made once)."""
    folder.mkdir(exist_ok=True)
    for path in paths:
        if not (folder / path.name).exists():
            (folder / path.name).symlink_to(path.resolve())
    return folder


def run(bench: Path, steps: int, gpus: int, limit: int | None = None) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_random_arcface

    from benchmarks.full_size import ensure_random_models

    ensure_random_models(bench / "models")
    if not (bench / "arcface.onnx").exists():
        write_random_arcface(bench / "arcface.onnx")
    images = first_images(bench, limit)
    one = _anonymize(bench, images, bench / "out1", steps, {"CUDA_VISIBLE_DEVICES": "0"})
    report(f"1 GPU, {steps} steps", one)
    if gpus < 2:
        return
    files = sorted(images.glob("*.png"))
    halves = [linked(bench / f"half{k}", files[k::2]) for k in range(2)]
    start = time.perf_counter()
    with_env = [
        subprocess.Popen([sys.executable, "-m", "benchmarks.whole_run", "one", "--bench", str(bench),
                          "--images", str(half), "--steps", str(steps), "--gpu", str(k)], stdout=subprocess.PIPE, text=True)
        for k, half in enumerate(halves)
    ]  # fmt: skip
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in with_env]
    wall = time.perf_counter() - start
    both = {key: sum(r[key] for r in results) for key in ("images", "faces", "gpu_s")}
    both |= {"wall_s": wall, "load_s": max(r["load_s"] for r in results), "run_s": max(r["run_s"] for r in results)}
    report(f"2 GPUs (one process each, halves of the folder), {steps} steps", both)
    print(f"scaling (images/s after load, 2 GPUs over 1): {one['run_s'] / both['run_s']:.2f}x; "
          f"with load: {one['wall_s'] / both['wall_s']:.2f}x")  # fmt: skip


def report(label: str, r: dict[str, Any]) -> None:
    unet_rate = r["faces"] / r["gpu_s"] if label.startswith("1") else 2 * r["faces"] / r["gpu_s"]
    print(
        f"{label}: {r['images']} images, {r['faces']} faces; load {r['load_s']:.1f} s; after load "
        f"{r['images'] / r['run_s']:.3f} images/s, {r['faces'] / r['run_s']:.3f} faces/s "
        f"(GPU stages alone: {unet_rate:.3f} faces/s; whole run at {r['faces'] / r['run_s'] / unet_rate:.0%} of it); "
        f"whole process {r['wall_s']:.1f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "bench")
    r = sub.add_parser("run")
    r.add_argument("--bench", type=Path, default=ROOT / "build" / "bench")
    r.add_argument("--steps", type=int, default=20)
    r.add_argument("--gpus", type=int, default=1)
    r.add_argument("--limit", type=int, default=None, help="only the first N images (by name), e.g. at 100 steps")
    o = sub.add_parser("one")  # one process on one GPU, for --gpus 2
    o.add_argument("--bench", type=Path, required=True)
    o.add_argument("--images", type=Path, required=True)
    o.add_argument("--steps", type=int, required=True)
    o.add_argument("--gpu", type=int, required=True)
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.out)
    elif args.step == "run":
        run(args.bench.resolve(), args.steps, args.gpus, args.limit)
    else:
        result = _anonymize(args.bench, args.images, args.bench / f"out-gpu{args.gpu}", args.steps,
                            {"CUDA_VISIBLE_DEVICES": str(args.gpu)})  # fmt: skip
        print(json.dumps(result))


if __name__ == "__main__":
    main()
