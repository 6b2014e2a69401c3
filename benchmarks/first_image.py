"""Process start -> output written, for a first and a second process: `rp anonymize PHOTO -o OUT` as users run it.

On the GPU box, after `python -m benchmarks.whole_run prepare` here (the photos and the faces dlib finds in them):

    python -m benchmarks.first_image --bench build/bench --photos img_1_0,img_6_0 --runs 2 [--import-profile]

Each run is a fresh `python -m rp_core.cli anonymize` process (the real session, orchestrator, fail-closed check
and writing) over one photo, default settings (100 steps, batch 8), full-size random SDXL + FaceID loaded from disk
through the product's loader, with the benchmark detector and ArcFace of benchmarks/bench_plugins. Each process
starts in the bench folder: `python -m` puts the current folder first on the path, so started in a checkout it would
run the checkout's code whatever PYTHONPATH says; from there it runs the installed rp (PYTHONPATH, site-packages). The models
folder (`--models`) starts without a cache folder, so the first process is a first run (it merges FaceID's LoRA and
saves the merge) and later ones are second runs. Prints wall seconds per process, and with --import-profile the
import time of the modules the run loads (`python -X importtime`, the slowest top-level ones).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def anonymize_command(bench: Path, photo: Path, output: Path, extra: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "rp_core.cli", "anonymize", str(photo), "-o", str(output), "--overwrite", "-q",
        "--plugins-dir", str(ROOT / "benchmarks" / "bench_plugins"), "--models", str(bench / "models"),
        "--detector", "hashed_faces", "--set", f"detector.options.path={bench / 'hashed_faces.json'}",
        "--identity-encoder", "arcface_onnx", "--set", f"identity_encoder.options.path={bench / 'arcface.onnx'}",
        "--sd-model", str(bench / "models" / "sdxl"),
        "--ip-adapter", str(bench / "models" / "faceid" / "ip-adapter-faceid_sdxl.bin"),
        # as in whole_run.py: a random ArcFace cannot tell people apart (retries real weights would not make),
        # and no second detector family runs on the GPU box
        "--set", "verify.max_retries=0", "--set", "coverage.detector=null", *extra,
    ]  # fmt: skip


def timed_run(command: list[str], output: Path, env: dict[str, str]) -> float:
    """Wall seconds from starting the process to its exit, with the output file checked to exist."""
    output.unlink(missing_ok=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=output.parent)
    wall = time.perf_counter() - start
    if done.returncode != 0 or not output.is_file():
        raise SystemExit(f"rp anonymize failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return wall


def import_profile(command: list[str], output: Path, env: dict[str, str], top: int = 15) -> None:
    """The run's slowest imports (cumulative, top-level modules of each import chain)."""
    output.unlink(missing_ok=True)
    done = subprocess.run(
        [command[0], "-X", "importtime", *command[1:]], capture_output=True, text=True, env=env, cwd=output.parent
    )
    rows = []
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            _, cumulative, name = line.split("|")
            if not name.startswith("  "):  # imported from the program itself, not from another module
                rows.append((int(cumulative) / 1e6, name.strip()))
    total = sum(s for s, _ in rows)
    print(
        f"imports: {total:.1f} s in all; slowest top-level: "
        + ", ".join(f"{n} {s:.2f}" for s, n in sorted(rows)[::-1][:top])
    )


def load_profile(command: list[str], output: Path, env: dict[str, str], save: Path | None, top: int = 30) -> None:
    """cProfile of one run: the functions with the most cumulative time (loading's parts show up by name)."""
    import pstats

    output.unlink(missing_ok=True)
    stats = save or output.with_suffix(".prof")
    subprocess.run(
        [command[0], "-m", "cProfile", "-o", str(stats), *command[1:]], capture_output=True, env=env, cwd=output.parent
    )
    pstats.Stats(str(stats)).sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", type=Path, default=ROOT / "build" / "bench")
    parser.add_argument("--photos", default="img_1_0,img_6_0", help="photo names in <bench>/images (no .png)")
    parser.add_argument("--runs", type=int, default=2, help="processes per photo (the first is a first run)")
    parser.add_argument("--label", default="", help="printed with each line (e.g. the code version)")
    parser.add_argument("--fresh", action="store_true", help="delete the models' cache folder first")
    parser.add_argument("--import-profile", action="store_true", help="then one run under -X importtime (2 steps)")
    parser.add_argument(
        "--cprofile", type=Path, default=None, help="then one run under cProfile (all steps), saved here"
    )
    parser.add_argument("--set", dest="extra", action="append", default=[], help="more --set KEY=VALUE for rp")
    args = parser.parse_args()
    bench = args.bench.resolve()

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_random_arcface

    from benchmarks.full_size import ensure_random_models

    ensure_random_models(bench / "models")
    if not (bench / "arcface.onnx").exists():
        write_random_arcface(bench / "arcface.onnx")
    if args.fresh:
        shutil.rmtree(bench / "models" / "cache", ignore_errors=True)
    extra = [arg for item in args.extra for arg in ("--set", item)]
    env = dict(os.environ)
    results = []
    for run in range(args.runs):
        for name in args.photos.split(","):
            output = bench / f"out_{name}.png"
            command = anonymize_command(bench, bench / "images" / f"{name}.png", output, extra)
            wall = timed_run(command, output, env)
            results.append({"label": args.label, "photo": name, "process": run + 1, "wall_s": round(wall, 2)})
            print(json.dumps(results[-1]), flush=True)
    name = args.photos.split(",")[0]
    output = bench / f"out_{name}.png"
    short = anonymize_command(bench, bench / "images" / f"{name}.png", output, [*extra, "--num-inversion-steps", "2"])
    if args.import_profile:
        import_profile(short, output, env)
    if args.cprofile:
        photo = bench / "images" / f"{name}.png"
        load_profile(anonymize_command(bench, photo, output, extra), output, env, args.cprofile)


if __name__ == "__main__":
    main()
