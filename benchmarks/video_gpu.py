"""The paper's method on a clip, on a GPU: frames/s of `video.regenerate=every` and `keyframes`, and temporal stability.

Two steps, because the GPU box has neither dlib nor the sample photos:

  here (CPU):  python -m benchmarks.video_gpu prepare --out build/video-bench [--frames 6 12]
               1280x720 30 fps clips panning over t1.jpg (6 people) at video_speed's speed, one per length, and the
               faces dlib finds in each decoded frame keyed by a hash of its pixels (the `hashed_faces` benchmark
               detector of benchmarks/bench_plugins)
  on the GPU:  python -m benchmarks.video_gpu run --bench build/video-bench [--every-frames 6 --keyframe-frames 12]
               random full-size SDXL + FaceID and a random ArcFace ONNX, then `anonymize_video` at the default
               settings (100 steps, batch 8, fail-closed check on) once per mode; it prints frames/s of each
               and the temporal change of the new faces: the mean absolute difference of a face's aligned crop
               (at the original frame's landmarks) between consecutive frames, against the same on the input.

With random ArcFace weights the identity check cannot tell people apart, so its threshold is set where nothing
matches (`verify.threshold=0.99`) and retries are off: the check's work is done and timed, its verdicts mean
nothing. Needs PyAV (the same version as where the hashes were made: the decoded pixels must match), trackers
and supervision on the box.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def decoded_frames(path: Path) -> list[np.ndarray]:
    """The frames as rp decodes them (upright RGB)."""
    from rp_core.video.codec import VideoReader

    reader = VideoReader(path)
    try:
        return [frame.image for frame in reader.frames()]
    finally:
        reader.close()


def prepare(out: Path, frames: list[int], path_frames: int) -> None:
    from PIL import Image

    from rp_core.config import resolve_config
    from rp_core.pipeline import assemble
    from rp_core.plugins import PluginHost
    from rp_core.samples import insightface_t1
    from rp_core.selection import face_to_json
    from rp_core.video.samples import pan_zoom_clip

    sys.path.insert(0, str(ROOT / "benchmarks" / "bench_plugins"))
    from rp_bench import array_key

    out.mkdir(parents=True, exist_ok=True)
    with Image.open(insightface_t1()) as photo:
        t1 = np.asarray(photo.convert("RGB"))
    host = PluginHost()
    detector = assemble(resolve_config(host, preset="offline", environ={}), host).detect
    detector.load()
    faces: dict[str, Any] = {}
    for count in frames:  # the same motion per frame: the first `count` frames of a `path_frames`-frame clip's path
        clip = pan_zoom_clip(
            t1, out / f"clip-{count}.mp4", frames=count, size=(1280, 720), zoom=(1.0, 1.2),
            span=(count - 1) / (path_frames - 1),
        )  # fmt: skip
        found = {array_key(image): [face_to_json(f) for f in detector.detect(image)] for image in decoded_frames(clip)}
        faces |= found
        print(f"{clip}: {len(found)} frames, {sum(len(v) for v in found.values())} faces")
    (out / "hashed_faces.json").write_text(json.dumps(faces))


def temporal_change(frames: list[np.ndarray], faces: list[list[Any]], size: int = 256) -> float:
    """Mean absolute difference (grey levels) of each face's aligned crop between consecutive frames.

    `faces[t]` are frame t's faces in the input (their landmarks align both the input and the output the same
    way); a face is followed to the next frame by the largest box overlap (IoU above 0.3)."""
    from rp_core.align import align_face
    from rp_core.geometry import iou

    changes = []
    for t in range(1, len(frames)):
        for face in faces[t]:
            before = max(faces[t - 1], key=lambda f: iou(f.box, face.box), default=None)
            if before is None or iou(before.box, face.box) < 0.3:
                continue
            now = align_face(frames[t], face, size).crop.astype(np.int16)
            then = align_face(frames[t - 1], before, size).crop.astype(np.int16)
            changes.append(float(np.abs(now - then).mean()))
    return float(np.mean(changes)) if changes else float("nan")


def run(bench: Path, every_frames: int, keyframe_frames: int, out: Path, tiny: bool = False) -> None:
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_random_arcface

    from benchmarks.full_size import ensure_random_models
    from rp_core.config import resolve_config
    from rp_core.pipeline import assemble
    from rp_core.plugins import PluginHost
    from rp_core.video import VideoOptions, anonymize_video
    from rp_core.video.frames import CheapCheck

    sys.path.insert(0, str(ROOT / "benchmarks" / "bench_plugins"))
    from rp_bench import HashedFaces

    if tiny:  # a smoke run of this script on a CPU: the tests' tiny SDXL, 4 steps, 64 px faces
        from rp_plugins.diffusion.random_weights import write_random_models

        if not (bench / "tiny" / "sdxl" / "model_index.json").exists():
            write_random_models(bench / "tiny", "tiny", seed=0)
    else:
        ensure_random_models(bench / "models")
    models = bench / ("tiny" if tiny else "models")
    if not (bench / "arcface.onnx").exists():
        write_random_arcface(bench / "arcface.onnx")
    host = PluginHost(plugins_dir=ROOT / "benchmarks" / "bench_plugins")
    flags = {
        "sd_model": str(models / "sdxl"),
        "ip_adapter": str(models / "faceid" / "ip-adapter-faceid_sdxl.bin"),
        "detector": "hashed_faces",
        "identity_encoder": "arcface_onnx",
    }
    overrides = [
        f"detector.options.path={bench / 'hashed_faces.json'}",
        f"identity_encoder.options.path={bench / 'arcface.onnx'}",
        "coverage.detector=null",  # no second detector family on the box
        "verify.max_retries=0",
        "verify.threshold=0.99",  # random ArcFace: see the module's docstring
    ]
    if tiny:
        flags |= {"face_image_size": 64, "num_inversion_steps": 4, "device": "cpu", "dtype": "float32"}
    config = resolve_config(host, flags=flags, overrides=overrides, environ={})
    pipeline = assemble(config, host)
    start = time.perf_counter()
    pipeline.load()
    report: dict[str, Any] = {
        "card": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "load_s": round(time.perf_counter() - start, 1),
        "steps": config.inverter.options.get("num_inversion_steps", 100),
        "batch_size": pipeline.batch_size,
    }
    detector = HashedFaces(HashedFaces.Options(path=str(bench / "hashed_faces.json")))
    for mode, frames in (("keyframes", keyframe_frames), ("every", every_frames)):
        if frames <= 0:  # a mode left out
            continue
        clip = bench / f"clip-{frames}.mp4"
        target = out / f"out-{mode}.mp4"
        options = VideoOptions(cheap=CheapCheck(regenerate=mode))
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = anonymize_video(pipeline, clip, target, options)
        seconds = time.perf_counter() - start
        inputs, outputs = decoded_frames(clip), decoded_frames(target)
        faces = [detector.detect(image) for image in inputs]
        report[mode] = {
            "frames": result.frames,
            "faces": result.faces,
            "seconds": round(seconds, 1),
            "fps": round(result.frames / seconds, 3),
            "routes": result.routes,
            "checks": result.checks,
            "fallbacks": result.fallbacks,
            "timings": {k: round(v, 1) for k, v in sorted(result.timings.items(), key=lambda kv: -kv[1])},
            "temporal_change_output": round(temporal_change(outputs, faces), 2),
            "temporal_change_input": round(temporal_change(inputs, faces), 2),
        }
        print(json.dumps({mode: report[mode]}), flush=True)
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "video-bench")
    p.add_argument("--frames", type=int, nargs="+", default=[6, 12])
    p.add_argument("--path-frames", type=int, default=90, help="the pan's length (90: video_speed's 3 s clip)")
    r = sub.add_parser("run")
    r.add_argument("--bench", type=Path, default=ROOT / "build" / "video-bench")
    r.add_argument("--every-frames", type=int, default=6, help="0: leave video.regenerate=every out")
    r.add_argument("--keyframe-frames", type=int, default=12)
    r.add_argument("--out", type=Path, default=Path("/tmp/video-gpu"))
    r.add_argument("--tiny", action="store_true", help="a CPU smoke run with the tests' tiny SDXL")
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args.out, args.frames, args.path_frames)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        run(args.bench.resolve(), args.every_frames, args.keyframe_frames, args.out, args.tiny)


if __name__ == "__main__":
    main()
