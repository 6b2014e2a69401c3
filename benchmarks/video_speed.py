"""rp's offline preset on a video vs `deface` on the same clip, in one run: frames per second and where rp's time goes.

    python -m benchmarks.video_speed [--clip clip.mp4 | --seconds 30] [--verify-every N] [--search-every N]

Without --clip it builds a 1280x720, 30 fps clip panning and zooming over InsightFace's t1.jpg (6 people)
with a sine tone. It runs `deface CLIP` (CenterFace, blur) and then `anonymize_video` with the offline
preset, and prints one JSON line: frames/s of each, the machine's load average before and after
(the machine is shared: compare the two numbers of one run, not numbers of different runs), and rp's
seconds per stage summed over frames (its profile).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
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
    start = time.perf_counter()
    subprocess.run([deface, str(clip), "-o", str(out), "--keep-audio"], check=True, capture_output=True)
    return {"seconds": time.perf_counter() - start}


def run_rp(clip: Path, out: Path, verify_every: int, search_every: int) -> dict[str, object]:
    from rp_core.config import resolve_config
    from rp_core.pipeline import assemble
    from rp_core.plugins import PluginHost
    from rp_core.video import VideoOptions, anonymize_video

    host = PluginHost()
    pipeline = assemble(resolve_config(host, preset="offline", environ={}), host)
    start = time.perf_counter()
    pipeline.load()
    loaded = time.perf_counter() - start
    options = VideoOptions(verify_every=verify_every, search_every=search_every)
    result = anonymize_video(pipeline, clip, out, options)
    return {
        "seconds": time.perf_counter() - start,
        "load_seconds": loaded,
        "frames": result.frames,
        "faces": result.faces,
        "routes": result.routes,
        "verified_frames": result.verified_frames,
        "profile_seconds": {k: round(v, 1) for k, v in sorted(result.timings.items(), key=lambda kv: -kv[1])},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--verify-every", type=int, default=1)
    parser.add_argument("--search-every", type=int, default=1)
    parser.add_argument("--skip-deface", action="store_true")
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
        rp = run_rp(clip, work / "rp.mp4", args.verify_every, args.search_every)
        rp["fps"] = info.frames / float(rp["seconds"])  # type: ignore[arg-type]
        report["rp_offline"] = rp
        report["rp_options"] = {"verify_every": args.verify_every, "search_every": args.search_every}
        report["load_after"] = os.getloadavg()
        print(json.dumps(report))


if __name__ == "__main__":
    main()
