"""Where should fail-closed verification draw the line? dlib 128-d distances measured on the sample photos.

Prints, for the faces of t1.jpg and astronaut:
- different people: every pair of distinct faces (the distribution a threshold must not reach into much);
- the same person under perturbations that keep a face recognisable (blur, downscale, JPEG, darkening, noise);
- the same person after rp's obfuscations (pixelate/blur at their defaults), encoded at the original landmarks
  and, where dlib still finds a face, re-detected with upsampling;
- rank-1 identification among the photo's people for each perturbed face.

Run: python -m benchmarks.verify_margin
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
from skimage import data

from rp_core.io import read_image
from rp_core.samples import insightface_t1
from rp_plugins.dlib_faces import package_models_dir


def main() -> None:
    import dlib

    models = package_models_dir()
    assert models is not None
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def describe(image: np.ndarray, rect: object) -> np.ndarray:
        return np.array(net.compute_face_descriptor(np.ascontiguousarray(image), predictor(image, rect)))

    photos = {"t1": read_image(insightface_t1()), "astronaut": np.ascontiguousarray(data.astronaut()[:, :, :3])}
    faces = []  # (photo, rect, descriptor)
    for name, image in photos.items():
        for rect in detector(image, 0):
            faces.append((name, rect, describe(image, rect)))
    different = [float(np.linalg.norm(a[2] - b[2])) for a, b in itertools.combinations(faces, 2)]
    print(
        f"faces: {len(faces)}; different people: min {min(different):.3f} p10 {np.percentile(different, 10):.3f} "
        f"median {np.median(different):.3f} max {max(different):.3f}"
    )

    def perturb(image: np.ndarray, kind: str, level: float) -> np.ndarray:
        if kind == "blur":
            return cv2.GaussianBlur(image, (0, 0), level)
        if kind == "downscale":
            h, w = image.shape[:2]
            small = cv2.resize(image, (max(1, int(w / level)), max(1, int(h / level))), interpolation=cv2.INTER_AREA)
            return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        if kind == "jpeg":
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(level)])
            return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if kind == "dark":
            return np.clip(image.astype(np.float32) * level, 0, 255).astype(np.uint8)
        if kind == "noise":
            rng = np.random.default_rng(0)
            return np.clip(image + rng.normal(0, level, image.shape), 0, 255).astype(np.uint8)
        raise ValueError(kind)

    print("\nsame person, perturbed (distance at the original box; rank-1 among all faces; re-detected distance)")
    print(f"{'perturbation':<16}{'max dist':>9}{'median':>8}{'rank1':>7}{'redetected max':>16}")
    for kind, levels in {
        "blur": (2, 4, 6, 8),
        "downscale": (2, 4, 6, 8),
        "jpeg": (30, 10, 5),
        "dark": (0.5, 0.25, 0.12),
        "noise": (10, 25),
    }.items():
        for level in levels:
            dists, rank1, redetected = [], 0, []
            for name, rect, original in faces:
                changed = perturb(photos[name], kind, level)
                d = describe(changed, rect)
                dist = float(np.linalg.norm(d - original))
                dists.append(dist)
                nearest = min(faces, key=lambda f: float(np.linalg.norm(f[2] - d)))
                rank1 += nearest[2] is original
                found = [describe(changed, r) for r in detector(changed, 1)]
                if found:
                    redetected.append(min(float(np.linalg.norm(f - original)) for f in found))
            red = f"{max(redetected):.3f} ({len(redetected)}/{len(faces)})" if redetected else "none found"
            print(
                f"{kind + ' ' + str(level):<16}{max(dists):>9.3f}{np.median(dists):>8.3f}{rank1:>4}/{len(faces)}{red:>16}"
            )


if __name__ == "__main__":
    main()
