"""An independent attacker over every frame of anonymized clips: how many people of the photo each frame shows.

    python -m benchmarks.video_attack PHOTO CLIP [CLIP ...] [--every N] [--upsample 0|1]

The attacker is offline_vs_deface's (benchmarks/coverage_variants.py's `Attacker`, as the fail-closed tests'),
built straight from dlib and face_recognition_models, not through rp: HOG (upsampled `--upsample` times: 1 finds faces from ~40 px, 0 from
~80 px at a quarter of the time, enough for video_speed's 720p clip, whose faces are 100 px and more), 68 points,
the 128-d descriptor at dlib's 0.6.
It searches each frame whole, turned by 0/90/180/270 degrees and each mirrored, and compares every face
it finds with every person of PHOTO (the photo the clip was made from: `pan_zoom_clip`, video_speed's clip).
It prints one JSON line per clip: the frames searched, the frames where someone is identified, the people
identified over the clip, and the closest distance found. Run it on the input clip too: it proves the
attacker identifies people there.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.coverage_variants import Attacker


def seen(attacker: Attacker, image: np.ndarray, upsample: int) -> list[np.ndarray]:
    """Every face's descriptor found in any of the 8 views (quarter turns, each mirrored)."""
    found: list[np.ndarray] = []
    for k in range(4):
        turned = np.rot90(image, k)
        for view in (turned, turned[:, ::-1]):
            view = np.ascontiguousarray(view)
            found += attacker.descriptors(view, attacker.detect(view, upsample))
    return found


def attack(attacker: Attacker, persons: list[np.ndarray], clip: Path, every: int, upsample: int) -> dict[str, object]:
    from rp_core.video.codec import VideoReader

    reader = VideoReader(clip)
    searched, frames_with_someone, closest = 0, 0, float("inf")
    identified: set[int] = set()
    try:
        for frame in reader.frames():
            if frame.index % every:
                continue
            searched += 1
            found = seen(attacker, frame.image, upsample)
            who = {
                p for p, person in enumerate(persons) for d in found if np.linalg.norm(person - d) < attacker.threshold
            }
            frames_with_someone += bool(who)
            identified |= who
            distances = [float(np.linalg.norm(p - d)) for p in persons for d in found]
            closest = min([closest, *distances])
    finally:
        reader.close()
    return {
        "clip": clip.name,
        "frames_searched": searched,
        "frames_with_someone_identified": frames_with_someone,
        "people_identified": sorted(identified),
        "closest_distance": round(closest, 3) if closest != float("inf") else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("photo", type=Path)
    parser.add_argument("clips", type=Path, nargs="+")
    parser.add_argument("--every", type=int, default=1, help="search every n-th frame (1: all)")
    parser.add_argument("--upsample", type=int, default=1, choices=(0, 1), help="HOG upsampling of each view")
    args = parser.parse_args()
    from rp_core.io import read_image

    attacker = Attacker()
    photo = read_image(args.photo)
    persons = attacker.descriptors(photo, attacker.detect(photo, 1))
    print(json.dumps({"photo": args.photo.name, "people": len(persons)}), flush=True)
    for clip in args.clips:
        print(json.dumps(attack(attacker, persons, clip, max(1, args.every), args.upsample)), flush=True)


if __name__ == "__main__":
    main()
