"""Throughput of `rp anonymize --ray` on 1, 2, ... GPUs: full-size SDXL + FaceID with random weights.

Compute does not depend on the weight values (benchmarks/full_size.py), so random weights of the
real architectures give real timings without a download. The whole product path runs: files are
planned, handed to one Ray actor per GPU (each loads the pipeline once), anonymized with faces
batched, written atomically and recorded in the manifest. Only the face detector and identity
encoder are stand-ins (a fixed grid of faces, random unit identities), since their weights cannot be
downloaded there and they cost milliseconds next to the seconds of SDXL; verification is off for
the same reason (it would run the stand-in encoder).

    python benchmarks/ray_scaling.py --gpus 1
    python benchmarks/ray_scaling.py --gpus 2 --images 32 --json out.json
    python benchmarks/ray_scaling.py --gpus 2 --backend processes   # no Ray: one process per GPU
    python benchmarks/ray_scaling.py --tiny --gpus 0 --images 4      # CPU smoke test (tiny random SDXL)

`--backend processes` runs the same workers (rp_core.scale.worker.Worker) in one plain process per
GPU, without Ray's scheduling, for a machine where Ray is not installed; its rate is the ceiling the
Ray run is compared with.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rp_core import hookimpl  # noqa: E402
from rp_core.align import MEAN_FACE_5  # noqa: E402
from rp_core.interfaces import ComponentOptions, Detector, IdentityEncoder  # noqa: E402
from rp_core.types import Face, IdentityEmbedding  # noqa: E402

#: The plugins the benchmark's workers load: the stand-ins below and the product's diffusion and merger plugins.
PLUGINS = {
    "bench_standins": "from benchmarks.ray_scaling import rp_register_detectors, rp_register_identity_encoders\n",
    "bench_diffusion": "from rp_plugins.diffusion import rp_register_generators, rp_register_inverters\n",
    "bench_affine": "from rp_plugins.affine_merger import rp_register_mergers\n",
}


# -- stand-ins for the detector and identity encoder (weights that cannot be downloaded there) ---------


class GridOptions(ComponentOptions):
    faces: int = 1


class GridFaces(Detector[GridOptions]):
    """`faces` faces side by side across the middle of the image, with mean-face landmarks."""

    name = "bench_grid"
    Options: ClassVar[type[ComponentOptions]] = GridOptions

    def detect(self, image: np.ndarray) -> list[Face]:
        h, w = image.shape[:2]
        count = self.options.faces
        side = min(h * 0.6, w / count * 0.8)
        faces = []
        for k in range(count):
            x0, y0 = (k + 0.5) * w / count - side / 2, (h - side) / 2
            points = MEAN_FACE_5 * side + (x0, y0)
            faces.append(Face((x0, y0, x0 + side, y0 + side), 1.0, points, self.name))
        return faces


class RandomIdentity(IdentityEncoder[ComponentOptions]):
    """A unit random identity per face (seeded by the face's position), in buffalo_l's model name."""

    name = "bench_identity"
    model_name = "buffalo_l/w600k_r50"

    def encode(self, image: np.ndarray, faces: Sequence[Face]) -> list[IdentityEmbedding]:
        out = []
        for face in faces:
            vector = np.random.default_rng(int(face.box[0] * 7 + face.box[1])).standard_normal(512)
            out.append(IdentityEmbedding(vector / np.linalg.norm(vector), self.model_name))
        return out


@hookimpl
def rp_register_detectors(register: Callable[[type], None]) -> None:
    register(GridFaces)


@hookimpl
def rp_register_identity_encoders(register: Callable[[type], None]) -> None:
    register(RandomIdentity)


# -- the run ---------------------------------------------------------------------------------------


def write_models(folder: Path, tiny: bool) -> tuple[Path, Path]:
    """The random SDXL + FaceID folders, written in a child process so that this one holds no GPU memory."""
    sdxl, faceid = folder / "sdxl", folder / "faceid" / "ip-adapter-faceid_sdxl.bin"
    if not (sdxl / "model_index.json").exists():
        if tiny:
            code = (
                f"from rp_plugins.diffusion.random_weights import write_random_models as w; w({str(folder)!r}, 'tiny')"
            )
        else:
            code = f"from benchmarks.full_size import ensure_random_models as e; from pathlib import Path; e(Path({str(folder)!r}))"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    return sdxl, faceid


def write_photos(folder: Path, count: int, size: tuple[int, int]) -> None:
    """Smooth random photos (low-frequency noise), JPEG, `size` = (width, height)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        small = rng.integers(0, 256, (size[1] // 64, size[0] // 64, 3), dtype=np.uint8)
        Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(folder / f"photo{k:04d}.jpg", quality=92)


def write_config(path: Path, sdxl: Path, faceid: Path, args: argparse.Namespace) -> None:
    diffusion = {"sd_model": str(sdxl), "ip_adapter": str(faceid)}
    config = {
        "detector": {"name": "bench_grid", "options": {"faces": args.faces_per_image}},
        "identity_encoder": {"name": "bench_identity"},
        "inverter": {"name": "ledits_sdxl", "options": {**diffusion, "num_inversion_steps": args.steps}},
        "generator": {"name": "ipadapter_faceid", "options": diffusion},
        "merger": {"name": "affine"},
        "align": {"face_image_size": 64 if args.tiny else 1024},
        "runtime": {
            "device": "cpu" if args.tiny else "cuda",
            "dtype": "float32" if args.tiny else "float16",
            "batch_size": args.batch_size,
            "compile": args.compile,
            "allow_slow_cpu": args.tiny,
        },
        "verify": {"enabled": False},
        "coverage": {"detector": None},
    }
    path.write_text(json.dumps(config))  # JSON is YAML


def run_ray(pipeline: Any, plan: Any, args: argparse.Namespace, environ: dict[str, str], plugins: Path) -> list[float]:
    """Done times (seconds after all workers loaded) of every file, through a RunSession on a RayExecutor."""
    from rp_core.scale import RayExecutor, RayOptions
    from rp_core.session import RunSession

    marks: dict[str, float] = {}
    done: list[float] = []

    def on_event(event: Any) -> None:
        if event.kind == "start":
            marks["start"] = time.perf_counter()
        elif event.kind == "done":
            done.append(time.perf_counter() - marks["start"])
        elif event.kind in ("failed", "warning", "info"):
            print(f"[{event.kind}] {event.message}", flush=True)

    options = RayOptions(
        workers=max(1, args.gpus),
        gpus_per_worker=1.0 if args.gpus else 0.0,
        cpus_per_worker=1.0,
        environ=environ,
        plugins_dir=plugins,
    )
    summary = RunSession(pipeline, plan, on_event=on_event, executor=RayExecutor(options)).run()
    print(summary.line(), flush=True)
    return done


def _process_worker(gpu: int, spec: Any, indices: list[int], results: Any) -> None:
    if gpu >= 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    from rp_core.scale.worker import Worker

    worker = Worker(spec)
    info = worker.start()
    results.put(("ready", gpu, time.time(), info.get("error")))
    for record in worker.run(indices):
        results.put(("done", gpu, time.time(), record.get("entry", {}).get("status")))
    results.put(("end", gpu, time.time(), None))


def run_processes(pipeline: Any, plan: Any, args: argparse.Namespace, environ: dict[str, str], plugins: Path):
    """The same workers, one plain process per GPU, files split evenly; done times after the last one loaded."""
    import multiprocessing

    from rp_core.scale.worker import WorkerSpec
    from rp_core.session import SessionOptions

    spec = WorkerSpec(pipeline.config.model_dump(mode="json"), plan, SessionOptions(), environ, plugins)
    count = max(1, args.gpus)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    todo = list(range(len(plan.jobs)))
    procs = [
        context.Process(target=_process_worker, args=(k if args.gpus else -1, spec, todo[k::count], results))
        for k in range(count)
    ]
    for proc in procs:
        proc.start()
    ready, times, ended = [], [], 0
    while ended < count:
        kind, _gpu, stamp, detail = results.get()
        if kind == "ready":
            if detail:
                raise SystemExit(f"worker failed to load: {detail}")
            ready.append(stamp)
        elif kind == "done":
            times.append(stamp)
        else:
            ended += 1
    for proc in procs:
        proc.join()
    # a worker that loaded early starts early: its files before the last load count from that load
    start = max(ready)
    return [max(0.0, t - start) for t in sorted(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=1, help="workers, one GPU each (0: CPU workers, with --tiny)")
    parser.add_argument("--images", type=int, default=0, help="photos to anonymize (default: 16 per GPU)")
    parser.add_argument("--faces-per-image", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100, help="num_inversion_steps (100 = the method's default)")
    parser.add_argument("--compile", action="store_true", help="runtime.compile (the throughput preset's lever)")
    parser.add_argument("--backend", choices=["ray", "processes"], default="ray")
    parser.add_argument("--models", type=Path, default=Path("/tmp/rp-full-random"))
    parser.add_argument("--tiny", action="store_true", help="tiny random SDXL on CPU: a smoke test of this script")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from rp_core.config import resolve_config
    from rp_core.io import plan_inputs
    from rp_core.pipeline import assemble
    from rp_core.plugins import PluginHost

    images = args.images or 16 * max(1, args.gpus)
    work = Path(tempfile.mkdtemp(prefix="rp-ray-scaling-"))
    models = args.models.with_name(args.models.name + "-tiny") if args.tiny else args.models
    start = time.perf_counter()
    sdxl, faceid = write_models(models, args.tiny)
    print(f"random {'tiny' if args.tiny else 'full-size'} models ready in {time.perf_counter() - start:.1f} s")
    write_photos(work / "in", images, (256, 192) if args.tiny else (1536, 1024))
    plugins = work / "plugins"
    plugins.mkdir()
    for name, source in PLUGINS.items():
        (plugins / f"{name}.py").write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n{source}")
    environ = {"RP_PLUGINS": ",".join(PLUGINS)}
    host = PluginHost(plugins_dir=plugins, environ=environ)
    write_config(work / "config.yaml", sdxl, faceid, args)
    pipeline = assemble(resolve_config(host, config_file=work / "config.yaml", environ={}), host)
    plan = plan_inputs([work / "in"], work / "out")

    wall = time.perf_counter()
    run = run_ray if args.backend == "ray" else run_processes
    done = run(pipeline, plan, args, environ, plugins)
    wall = time.perf_counter() - wall
    if len(done) != images:
        raise SystemExit(f"{len(done)} of {images} images finished")
    faces = images * args.faces_per_image
    first = args.batch_size * max(1, args.gpus)  # after each worker's first batch (CUDA graph capture, warm-up)
    steady = (images - first) / (done[-1] - done[first - 1]) if images > first and done[-1] > done[first - 1] else None
    result = {
        "backend": args.backend,
        "gpus": args.gpus,
        "images": images,
        "faces": faces,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "compile": args.compile,
        "wall_s": wall,
        "load_and_start_s": wall - done[-1],
        "images_per_s": images / done[-1],
        "images_per_s_after_first_batch": steady,
        "s_per_face_per_gpu": done[-1] * max(1, args.gpus) / faces,
    }
    print(json.dumps(result, indent=2))
    per_gpu = result["images_per_s"] / max(1, args.gpus)
    print(
        f"\n{args.gpus} GPU(s), {args.backend}: {result['images_per_s']:.4f} images/s "
        f"({per_gpu:.4f} per GPU, {result['s_per_face_per_gpu']:.2f} s/face per GPU), "
        f"steady {steady if steady is None else round(steady, 4)} images/s; wall {wall:.0f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
