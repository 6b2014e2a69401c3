"""rp's offline preset on a video vs `deface` on the same clip, in one run: frames per second and where rp's time goes.

    python -m benchmarks.video_speed [--clip clip.mp4 | --seconds 30] [--verify-every N] [--search-every N]
        [--set video.regenerate=every ...] [--audio-check]

Without --clip it builds a 1280x720, 30 fps clip panning and zooming over InsightFace's t1.jpg (6 people)
with a sine tone. It runs `deface CLIP` (CenterFace, blur) and then `anonymize_video` with the offline
preset (its `video` section's defaults: keyframes and the cheap check), and prints one JSON line: frames/s
of each by wall time and by CPU time (deface's as its process's children), peak memory, the machine's load
average before and after (the machine is shared: compare the two numbers of one run, not numbers of different
runs), how rp checked its faces, and rp's seconds per stage summed over frames (its profile).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import replace
from pathlib import Path


def build_clip(path: Path, seconds: float) -> Path:
    import numpy as np
    from PIL import Image

    from rp_core.video.samples import pan_zoom_clip

    images = Path(__import__("insightface").__file__).parent / "data" / "images"
    with Image.open(images / "t1.jpg") as photo:
        t1 = np.asarray(photo.convert("RGB"))
    return pan_zoom_clip(t1, path, frames=int(seconds * 30), size=(1280, 720), zoom=(1.0, 1.2))


def run_deface(clip: Path, out: Path) -> dict[str, float]:
    deface = shutil.which("deface")
    if deface is None:
        return {}
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([deface, str(clip), "-o", str(out), "--keep-audio"], check=True, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"seconds": time.perf_counter() - start, "cpu_seconds": cpu, "peak_rss_mb": after.ru_maxrss / 1024}


def run_rp(clip: Path, out: Path, verify_every: int, search_every: int, overrides: list[str]) -> dict[str, object]:
    import resource

    from rp_core.config import resolve_config
    from rp_core.pipeline import assemble
    from rp_core.plugins import PluginHost
    from rp_core.video import VideoOptions, anonymize_video

    host = PluginHost()
    config = resolve_config(host, preset="offline", overrides=overrides, environ={})
    pipeline = assemble(config, host)
    start, cpu = time.perf_counter(), time.process_time()
    pipeline.load()
    loaded = time.perf_counter() - start
    options = replace(VideoOptions.from_config(config.video), verify_every=verify_every, search_every=search_every)
    result = anonymize_video(pipeline, clip, out, options)
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "load_seconds": loaded,
        "checks": result.checks,
        "fallbacks": result.fallbacks,
        "frames": result.frames,
        "faces": result.faces,
        "routes": result.routes,
        "verified_frames": result.verified_frames,
        "profile_seconds": {k: round(v, 1) for k, v in sorted(result.timings.items(), key=lambda kv: -kv[1])},
    }


def same_audio(a: Path, b: Path) -> bool:
    """Do the two files decode to the same audio samples?"""
    import av
    import numpy as np

    def samples(path: Path) -> np.ndarray:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return np.zeros((0, 0))
            return np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)

    first, second = samples(a), samples(b)
    return first.shape == second.shape and bool(np.array_equal(first, second))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--verify-every", type=int, default=1)
    parser.add_argument("--search-every", type=int, default=1)
    parser.add_argument("--skip-deface", action="store_true")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for rp")
    parser.add_argument("--audio-check", action="store_true", help="compare the audio samples of input and outputs")
    args = parser.parse_args()
    from rp_core.video import probe

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = args.clip or build_clip(work / "clip.mp4", args.seconds)
        info = probe(clip)
        report: dict[str, object] = {
            "clip": {"width": info.width, "height": info.height, "frames": info.frames, "fps": float(info.fps)},
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg(),
        }
        if not args.skip_deface:
            deface = run_deface(clip, work / "deface.mp4")
            if deface:
                deface["fps"] = info.frames / deface["seconds"]
            report["deface"] = deface
        rp = run_rp(clip, work / "rp.mp4", args.verify_every, args.search_every, args.overrides)
        rp["fps"] = info.frames / float(rp["seconds"])  # type: ignore[arg-type]
        rp["fps_cpu"] = info.frames / float(rp["cpu_seconds"])  # type: ignore[arg-type]
        if "deface" in report and report["deface"]:
            deface_report: dict[str, float] = report["deface"]  # type: ignore[assignment]
            deface_report["fps_cpu"] = info.frames / deface_report["cpu_seconds"]
        if args.audio_check:
            report["audio_identical"] = {
                name: same_audio(clip, work / name) for name in ("rp.mp4", "deface.mp4") if (work / name).exists()
            }
        report["rp_offline"] = rp
        report["rp_options"] = {
            "verify_every": args.verify_every, "search_every": args.search_every, "set": args.overrides
        }  # fmt: skip
        report["load_after"] = os.getloadavg()
        print(json.dumps(report))


if __name__ == "__main__":
    main()
