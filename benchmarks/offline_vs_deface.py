"""The offline preset next to `deface` on the same photos and hard variants: faces left identifiable, seconds.

Both run as a user runs them, one whole process per image (`rp anonymize in.png -o out.png --preset offline`,
`deface in.png -o out.png`), in the same run on the same machine; rp also over the whole folder in one
process (models loaded once). The attacker and the variants are benchmarks/coverage_variants.py's: dlib HOG
(upsample 1) in the thorough search (every rotation, small faces, equalised, border), 68 landmarks, 128-d
descriptor at 0.6, compared with the faces of the original photo.

Each command runs under `/usr/bin/time -v`: the table gives wall seconds, CPU seconds (user + system: the figure
to trust on a shared machine) and peak memory (maximum RSS) of every process. rp runs first on even rows, deface on
odd rows (see the comment in `main`).

Run: python -m benchmarks.offline_vs_deface [--set KEY=VALUE ...]   (settings passed on to rp)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.coverage_variants import Attacker, load_sources, make_variants, original_descriptors
from rp_core.io import read_image, write_image


@dataclass
class Cost:
    """What one command took, as `/usr/bin/time -v` reports it: wall and CPU seconds, peak memory."""

    wall: float = 0.0
    cpu: float = 0.0
    peak_mb: float = 0.0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.wall + other.wall, self.cpu + other.cpu, max(self.peak_mb, other.peak_mb))


def timed(command: list[str]) -> Cost:
    """Run `command` under `/usr/bin/time -v` (GNU time): its elapsed, user + system seconds and maximum RSS."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as report:
        start = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-v", "-o", report.name, *command], check=True, capture_output=True)
        wall = time.perf_counter() - start
        fields = dict(line.strip().rsplit(": ", 1) for line in report.read().splitlines() if ": " in line)
    cpu = float(fields["User time (seconds)"]) + float(fields["System time (seconds)"])
    return Cost(wall, cpu, float(fields["Maximum resident set size (kbytes)"]) / 1024)


ROW = "| {} | {} | {} | {} | {} | {} | {} |"


def cost_cell(cost: Cost) -> str:
    return f"{cost.wall:.2f} / {cost.cpu:.2f} / {cost.peak_mb:.0f}"


def main() -> None:
    import argparse

    from rp_core.coverage import merge_faces
    from rp_plugins.centerface import CenterFaceDetector
    from rp_plugins.dlib_faces import DlibDetector

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed on to rp (repeatable)")
    settings = [arg for setting in parser.parse_args().set for arg in ("--set", setting)]
    attacker = Attacker()
    truth_detectors = (DlibDetector(), CenterFaceDetector())  # ground truth as in coverage_variants
    header = ROW.format(
        "variant", "faces", "identifiable before", "left by rp offline", "left by deface",
        "rp: wall s / CPU s / peak MB", "deface: wall s / CPU s / peak MB",
    )  # fmt: skip
    print(header + "\n|---|---|---|---|---|---|---|", flush=True)
    rows: list[str] = []
    left = {"rp": 0, "deface": 0, "folder": 0}
    faces = identifiable_total = 0
    rp_total, deface_total = Cost(), Cost()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "in").mkdir()
        variants = []
        for name, image in load_sources().items():
            if name == "camera":
                continue  # its profile face is not one the dlib attacker identifies (benchmarks/RESULTS.md)
            truth = merge_faces([f for d in truth_detectors for f in d.detect(image)], 0.3)
            originals = original_descriptors(attacker, image, truth)
            for variant in make_variants(name, image, truth):
                variants.append((variant, originals))
        sources = []
        for k, (variant, originals) in enumerate(variants):
            source = root / "in" / f"{k:02d}_{variant.source}_{variant.name}.png"
            write_image(source, variant.image)
            sources.append(source)
            rp_out, deface_out = root / f"rp{k}.png", root / f"deface{k}.png"
            commands = {
                "rp": [sys.executable, "-m", "rp_core.entry", "anonymize", str(source), "-o", str(rp_out),
                       "--preset", "offline", "-q", *settings],
                "deface": ["deface", str(source), "-o", str(deface_out)],
            }  # fmt: skip
            # the tools take turns going first: on a VM that hands freed memory back to its host, the process
            # that starts after the attacker's seconds of work pays for fresh pages (measured: up to 3x its
            # time, either tool), the one right after it reuses the pages the first one freed
            first = ("rp", "deface") if k % 2 == 0 else ("deface", "rp")
            costs = {tool: timed(commands[tool]) for tool in first}
            rp, deface = costs["rp"], costs["deface"]
            rp_total, deface_total = rp_total + rp, deface_total + deface
            identifiable = attacker.identifiable(variant, originals)
            counts = {
                tool: sum(a and b for a, b in zip(identifiable, attacker.identifiable(
                    type(variant)(variant.source, variant.name, read_image(out), variant.truth, variant.origin),
                    originals), strict=True))
                for tool, out in (("rp", rp_out), ("deface", deface_out))
            }  # fmt: skip
            left["rp"] += counts["rp"]
            left["deface"] += counts["deface"]
            faces += len(variant.truth)
            identifiable_total += sum(identifiable)
            rows.append(ROW.format(f"{variant.source}/{variant.name}", len(variant.truth), sum(identifiable),
                                   counts["rp"], counts["deface"], cost_cell(rp), cost_cell(deface)))  # fmt: skip
            print(rows[-1], flush=True)
        folder_cost = timed([sys.executable, "-m", "rp_core.entry", "anonymize", str(root / "in"), "-o",
                             str(root / "all"), "--preset", "offline", "-q", *settings])  # fmt: skip
        for source, (variant, originals) in zip(sources, variants, strict=True):
            out = read_image(root / "all" / source.name)
            identifiable = attacker.identifiable(variant, originals)
            seen = attacker.identifiable(
                type(variant)(variant.source, variant.name, out, variant.truth, variant.origin), originals
            )
            left["folder"] += sum(a and b for a, b in zip(identifiable, seen, strict=True))
    print()
    print(header + "\n|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print(ROW.format(f"**all {len(rows)}**", faces, identifiable_total, f"**{left['rp']}**", f"**{left['deface']}**",
                     cost_cell(rp_total), cost_cell(deface_total)))  # fmt: skip
    print(
        f"rp offline over the same {len(rows)} images in one process (models loaded once): {cost_cell(folder_cost)} "
        f"(wall s / CPU s / peak MB), {left['folder']} identifiable left"
    )
    print(
        f"rp / deface, wall: one process per photo {rp_total.wall / deface_total.wall:.2f}x, the folder in one process "
        f"{folder_cost.wall / deface_total.wall:.2f}x; CPU: {rp_total.cpu / deface_total.cpu:.2f}x and "
        f"{folder_cost.cpu / deface_total.cpu:.2f}x"
    )


if __name__ == "__main__":
    main()
