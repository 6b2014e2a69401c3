"""The offline preset next to `deface` on the same photos and hard variants: faces left identifiable, seconds.

Both run as a user runs them, one whole process per image (`rp anonymize in.png -o out.png --preset offline`,
`deface in.png -o out.png`), in the same run on the same machine; rp also over the whole folder in one
process (models loaded once). The attacker and the variants are benchmarks/coverage_variants.py's: dlib HOG
(upsample 1) in the thorough search (every rotation, small faces, equalised, border), 68 landmarks, 128-d
descriptor at 0.6, compared with the faces of the original photo.

Run: python -m benchmarks.offline_vs_deface
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.coverage_variants import Attacker, load_sources, make_variants, original_descriptors
from rp_core.io import read_image, write_image


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    from rp_core.coverage import merge_faces
    from rp_plugins.centerface import CenterFaceDetector
    from rp_plugins.dlib_faces import DlibDetector

    attacker = Attacker()
    truth_detectors = (DlibDetector(), CenterFaceDetector())  # ground truth as in coverage_variants
    rows = []
    print(
        "| variant | faces | identifiable before | left by rp offline | left by deface | rp s (process) | deface s (process) |"
    )
    print("|---|---|---|---|---|---|---|", flush=True)
    totals = {"faces": 0, "identifiable": 0, "rp_left": 0, "deface_left": 0, "rp_s": 0.0, "deface_s": 0.0}
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
        for k, (variant, originals) in enumerate(variants):
            source = root / "in" / f"{k:02d}_{variant.source}_{variant.name}.png"
            write_image(source, variant.image)
            rp_out, deface_out = root / f"rp{k}.png", root / f"deface{k}.png"
            rp_s = timed([sys.executable, "-m", "rp_core.cli", "anonymize", str(source), "-o", str(rp_out),
                          "--preset", "offline", "-q"])  # fmt: skip
            deface_s = timed(["deface", str(source), "-o", str(deface_out), "--ep", "CPUExecutionProvider"])
            identifiable = attacker.identifiable(variant, originals)
            variant_rp = type(variant)(variant.source, variant.name, read_image(rp_out), variant.truth, variant.origin)
            variant_df = type(variant)(
                variant.source, variant.name, read_image(deface_out), variant.truth, variant.origin
            )
            rp_left = sum(
                a and b for a, b in zip(identifiable, attacker.identifiable(variant_rp, originals), strict=True)
            )
            df_left = sum(
                a and b for a, b in zip(identifiable, attacker.identifiable(variant_df, originals), strict=True)
            )
            rows.append(
                (
                    f"{variant.source}/{variant.name}",
                    len(variant.truth),
                    sum(identifiable),
                    rp_left,
                    df_left,
                    rp_s,
                    deface_s,
                )
            )
            for key, value in zip(
                ("faces", "identifiable", "rp_left", "deface_left", "rp_s", "deface_s"), rows[-1][1:], strict=True
            ):
                totals[key] += value  # type: ignore[operator]
            name, faces, ident, rp_left, df_left, rp_s, df_s = rows[-1]
            print(f"| {name} | {faces} | {ident} | {rp_left} | {df_left} | {rp_s:.2f} | {df_s:.2f} |", flush=True)
        folder_s = timed([sys.executable, "-m", "rp_core.cli", "anonymize", str(root / "in"), "-o", str(root / "all"),
                          "--preset", "offline", "-q"])  # fmt: skip
    print(
        "| variant | faces | identifiable before | left by rp offline | left by deface | rp s (process) | deface s (process) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, faces, ident, rp_left, df_left, rp_s, df_s in rows:
        print(f"| {name} | {faces} | {ident} | {rp_left} | {df_left} | {rp_s:.2f} | {df_s:.2f} |")
    t = totals
    print(f"| **all {len(rows)}** | {t['faces']} | {t['identifiable']} | **{t['rp_left']}** | **{t['deface_left']}** | "
          f"{t['rp_s']:.1f} | {t['deface_s']:.1f} |")  # fmt: skip
    print(f"rp offline over the same {len(rows)} images in one process (models loaded once): {folder_s:.1f} s")


if __name__ == "__main__":
    main()
