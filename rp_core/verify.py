"""Fail closed: re-check every anonymized face and decide what to do with the ones that leak.

After merging, each face's original identity is compared with the output twice: encoded
again at the original landmarks, and (with `verify.search`) against every face a detector
finds anew on the output in and around that face's region, upsampled when small. A
generator that moves or turns the face cannot hide it from the second look. The worst
score decides. A face that still matches (similarity above, or distance below, the
verification threshold: the encoder's match threshold moved by a safety margin) or whose
pixels did not change at all is a leak. `FailClosed.enforce` then retries with a stronger
generator, falls back to an obfuscating one, fills the face as a last resort, or refuses
the image (`verify.policy`), and returns a frozen `Verdict`; an image with a face still
leaking after that is never returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rp_core.errors import VerificationError
from rp_core.interfaces import Detector, Generator, IdentityEncoder, compare_embeddings, same_person
from rp_core.types import AlignedFace, Face, GenerationRequest, IdentityEmbedding

if TYPE_CHECKING:
    from rp_core.config import RunConfig
    from rp_core.pipeline import Pipeline

Box = tuple[float, float, float, float]
#: Faces found on an output image inside a region (the search of `verify.search`).
FaceFinder = Callable[[np.ndarray, Box], list[Face]]


@dataclass(frozen=True)
class Check:
    """The verification of one face on one output: its worst score and where it was found."""

    score: float
    unchanged: bool
    leak: bool
    #: Box of the face found anew on the output that scored worst, when that was not the original position.
    found_at: Box | None = None


class Verifier:
    """Compares faces of an output with their originals through one identity encoder."""

    def __init__(self, encoder: IdentityEncoder[Any], threshold: float | None = None) -> None:
        self.encoder = encoder
        self.metric = encoder.metric
        default = encoder.verify_threshold if encoder.verify_threshold is not None else encoder.match_threshold
        self.threshold = float(default if threshold is None else threshold)

    @property
    def name(self) -> str:
        return self.encoder.name

    def encode(self, image: np.ndarray, faces: Sequence[Face]) -> list[IdentityEmbedding]:
        if not faces:
            return []
        embeddings = list(self.encoder.encode(image, faces))
        if len(embeddings) != len(faces):
            raise RuntimeError(
                f"identity encoder {self.name!r} returned {len(embeddings)} embeddings for {len(faces)} faces"
            )
        return embeddings

    def matches(self, score: float) -> bool:
        """True when `score` says "same person" (similarity above, or distance below, the threshold)."""
        return same_person(score, self.metric, self.threshold)

    def worse(self, a: float, b: float) -> bool:
        """True when score `a` is closer to "same person" than `b`."""
        return a > b if self.metric == "cosine" else a < b

    def check(
        self,
        original: np.ndarray,
        output: np.ndarray,
        faces: Sequence[Face],
        before: Sequence[IdentityEmbedding],
        regions: Sequence[Box] | None = None,
        finder: FaceFinder | None = None,
        others: Sequence[IdentityEmbedding] = (),
        kept: Sequence[Box] = (),
    ) -> list[Check]:
        """One Check per face of `faces`, against every identity an attacker could look for.

        `before` holds the faces' embeddings taken on `original`; `others` the identities of the
        images processed just before this one in the run (`RecentIdentities`). Each face is read on
        `output` at its original landmarks and compared with its own identity. With a `finder`, every
        face a detector finds on `output` inside each of `regions` (one per face: where the merger may
        have changed pixels) is read and compared with EVERY identity (this image's and `others`), so a
        crop swapped in from another face of the image or replayed from an earlier image is caught; the
        worst score counts for each face whose region holds it. A found face where a face of `faces`
        was is also read on `original` at the same landmarks and compared with that: a face the merger
        missed (landmarks displaced, the fill beside it) is still there, as it was, and matches itself.
        Faces found on a `kept` face (left unchanged on purpose) are skipped.
        """
        identities = _Identities([*before, *others], self.metric)
        after = self.encode(output, faces)
        # read at its own landmarks, a face is compared with its own identity: what is read there may be no face at
        # all (a fill), and no faces look alike (a solid fill reads 0.51 from a sleeve's false detection)
        scores = [compare_embeddings(b, a, self.metric) for b, a in zip(before, after, strict=True)]
        where: list[Box | None] = [None] * len(faces)
        if finder is not None and regions is not None:
            found = _unique(face for region in regions for face in finder(output, region))
            found = [f for f in found if all(iou(f.box, box) < 0.3 for box in kept)]
            for face, embedding in zip(found, self._encode_found(output, found), strict=True):
                if embedding is None:
                    continue
                score = identities.worst(embedding)
                if any(iou(face.box, f.box) > 0.1 for f in faces):  # where a face was: still there, as it was?
                    [there_before] = self._encode_found(original, [face])
                    own = score if there_before is None else compare_embeddings(there_before, embedding, self.metric)
                    score = own if self.worse(own, score) else score
                for i, region in enumerate(regions):
                    if _inside(face.box, region) and self.worse(score, scores[i]):
                        scores[i], where[i] = score, face.box
        checks = []
        for face, score, found_at in zip(faces, scores, where, strict=True):
            unchanged = region_unchanged(original, output, face.box)
            checks.append(Check(score, unchanged, unchanged or self.matches(score), found_at))
        return checks

    def _encode_found(self, image: np.ndarray, faces: Sequence[Face]) -> list[IdentityEmbedding | None]:
        """Embeddings of faces found on the output; a face this encoder cannot read (wrong landmark layout) is None."""
        out: list[IdentityEmbedding | None] = []
        for face in faces:
            try:
                out.append(self.encode(image, [face])[0])
            except Exception:  # e.g. a 5-point face for a 68-point encoder: the original-landmark check still runs
                out.append(None)
        return out

    def describe(self) -> dict[str, Any]:
        return {"encoder": self.name, "metric": self.metric, "threshold": self.threshold}


class _Identities:
    """Identity vectors stacked once, so each reading is compared with all of them in one product."""

    def __init__(self, embeddings: Sequence[IdentityEmbedding], metric: str) -> None:
        self.metric = metric
        self.models = {e.model for e in embeddings}
        vectors = np.stack([e.vector for e in embeddings]) if embeddings else np.zeros((0, 1), np.float32)
        if metric == "cosine":
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.where(norms > 0, norms, 1.0)
        self.vectors = vectors.astype(np.float64)

    def worst(self, embedding: IdentityEmbedding) -> float:
        """The score of the identity `embedding` is closest to (highest similarity, or lowest distance)."""
        if embedding.model not in self.models or len(self.models) > 1:
            raise ValueError(f"cannot compare embeddings of {embedding.model!r} and {sorted(self.models)!r}")
        v = embedding.vector.astype(np.float64)
        if self.metric == "euclidean":
            return float(np.min(np.linalg.norm(self.vectors - v, axis=1)))
        norm = float(np.linalg.norm(v))
        return float(np.max(self.vectors @ v) / norm) if norm > 0 else 0.0


class RecentIdentities:
    """The original identities of the last images of a run, for the verifier (bounded, per run).

    A generator that pastes a crop of another image's face (a batch neighbour's, or one seen
    earlier in the run) writes a real person the image's own identities do not know: the
    orchestrator feeds each image's identities here as it prepares the image, and every check
    compares the output's faces with the identities of the `images` most recent images too.
    """

    def __init__(self, images: int = 16) -> None:
        from collections import deque

        self._recent: deque[tuple[object, tuple[IdentityEmbedding, ...]]] = deque(maxlen=max(1, images))

    def add(self, key: object, identities: Sequence[IdentityEmbedding]) -> None:
        """Remember an image's identities (`key`: the image's own object, so a check can leave its own out)."""
        if identities:
            self._recent.append((key, tuple(identities)))

    def others(self, key: object) -> list[IdentityEmbedding]:
        """The identities of the remembered images other than `key`."""
        return [e for k, identities in list(self._recent) if k is not key for e in identities]


def _inside(box: Box, region: Box) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= cx <= region[2] and region[1] <= cy <= region[3]


def _unique(faces: Any) -> list[Face]:
    """Faces found through overlapping regions, each once."""
    kept: list[Face] = []
    for face in faces:
        if all(iou(face.box, other.box) < 0.7 for other in kept):
            kept.append(face)
    return kept


def region_unchanged(original: np.ndarray, output: np.ndarray, box: Box) -> bool:
    """True when not one pixel inside the face box changed: the face was not replaced at all."""
    height, width = original.shape[:2]
    x0, y0, x1, y1 = box
    left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    right, bottom = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    if right <= left or bottom <= top:
        return False  # a box wholly off-image has nothing to compare; the identity check decides
    return bool(np.array_equal(original[top:bottom, left:right], output[top:bottom, left:right]))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def missed_faces(found: Sequence[Face], others: Sequence[Face], threshold: float) -> list[Face]:
    """Faces of `others` that overlap none of `found` by at least `threshold` IoU."""
    return [o for o in others if all(iou(o.box, f.box) < threshold for f in found)]


def footprint(face: AlignedFace, image_shape: tuple[int, ...], grow: float = 0.1) -> Box:
    """The image box a face's crop can change when pasted back (its square warped back), grown a little."""
    size = face.size
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    inverse = np.linalg.inv(np.vstack([face.matrix, [0.0, 0.0, 1.0]]))[:2]
    points = corners @ inverse[:, :2].T + inverse[:, 2]
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    pad_x, pad_y = (x1 - x0) * grow, (y1 - y0) * grow
    height, width = image_shape[:2]
    return (max(0.0, x0 - pad_x), max(0.0, y0 - pad_y), min(float(width), x1 + pad_x), min(float(height), y1 + pad_y))


# -- the policy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceVerdict:
    """What verification concluded about one face, and what it took."""

    check: Check
    score_first: float
    generator: str
    retries: int = 0
    fallback: str | None = None
    last_resort: str | None = None
    #: The face the verifier could not confirm as a face (another detector family sees none there):
    #: it keeps one obfuscation and is not filled.
    unconfirmed: bool = False

    def to_dict(self, verifier: Verifier) -> dict[str, Any]:
        data: dict[str, Any] = {
            **verifier.describe(),
            "score_first": round(self.score_first, 4),
            "score_final": round(self.check.score, 4),
            "unchanged": self.check.unchanged,
            "leak": self.check.leak,
            "retries": self.retries,
            "fallback": self.fallback,
            "last_resort": self.last_resort,
        }
        if self.check.found_at is not None:
            data["worst_found_at"] = [round(v, 1) for v in self.check.found_at]
        if self.unconfirmed:
            data["unconfirmed"] = "no detector of another family sees a face here: obfuscated once, not filled"
        return data


@dataclass(frozen=True)
class Verdict:
    """The verified output image and one FaceVerdict per face."""

    image: np.ndarray
    faces: tuple[FaceVerdict, ...]


#: Regenerates the faces at the given indices with `generator` and `seed`; returns one crop each.
Regenerate = Callable[[list[int], Generator[Any], int], list[np.ndarray]]
#: Pastes crops into an image (the merger's `merge`).
Merge = Callable[[np.ndarray, Sequence[AlignedFace], Sequence[np.ndarray]], np.ndarray]
#: True when some detector other than the one that found the face sees a face in the original there.
Confirm = Callable[[int], bool]


@dataclass(frozen=True)
class FailClosed:
    """`verify.policy` applied to one merged image."""

    config: RunConfig
    verifier: Verifier
    fallback: Generator[Any]
    last_resort: Generator[Any] | None
    finder: FaceFinder | None = None
    #: Identities of the images processed just before this one in the run (`RecentIdentities.others`).
    others: tuple[IdentityEmbedding, ...] = ()
    #: Boxes of faces left unchanged on purpose (selection): what is found on them is not checked.
    kept: tuple[Box, ...] = ()

    def enforce(
        self,
        image: np.ndarray,
        faces: Sequence[AlignedFace],
        crops: list[np.ndarray],
        originals: Sequence[IdentityEmbedding],
        generators: list[str],
        regenerable: Sequence[bool],
        merge: Merge,
        regenerate: Regenerate,
        confirm: Confirm,
        stronger: Callable[[int], Generator[Any] | None],
    ) -> Verdict:
        """Verify, then retry/fall back/fill per policy; raise VerificationError if a face still leaks."""
        cfg = self.config.verify
        boxes = [af.face for af in faces]
        regions = [footprint(af, image.shape) for af in faces]
        crops = list(crops)
        generators = list(generators)

        def check(merged: np.ndarray) -> list[Check]:
            return self.verifier.check(image, merged, boxes, originals, regions, self.finder, self.others, self.kept)

        merged = merge(image, faces, crops)
        checks = check(merged)
        first = [c.score for c in checks]
        tries = [0] * len(faces)
        fallback: list[str | None] = [None] * len(faces)
        last: list[str | None] = [None] * len(faces)
        unconfirmed = [False] * len(faces)

        def leaking() -> list[int]:
            return [i for i, c in enumerate(checks) if c.leak]

        if leaking() and cfg.policy == "fail":
            raise VerificationError(self._leak_message(leaking(), checks, "policy 'fail'"))
        if cfg.policy == "retry":
            for attempt in range(1, cfg.max_retries + 1):
                retry = [i for i in leaking() if regenerable[i]]
                generator = stronger(attempt) if retry else None
                if generator is None:
                    break
                for i, crop in zip(
                    retry, regenerate(retry, generator, self.config.runtime.seed + attempt), strict=True
                ):
                    crops[i], tries[i] = crop, attempt
                merged = merge(image, faces, crops)
                checks = check(merged)
        to_fallback = leaking()
        if to_fallback:
            requests = [GenerationRequest(face=faces[i]) for i in to_fallback]
            for i, crop in zip(to_fallback, self.fallback.generate(requests), strict=True):
                crops[i] = crop
                fallback[i] = generators[i] = self.fallback.name
            merged = merge(image, faces, crops)
            checks = check(merged)
        stuck = leaking()
        if stuck:
            # A face no detector of another family sees in the original is likely a false detection
            # (a patch, a print): it keeps its obfuscation rather than being blacked out.
            for i in stuck:
                if fallback[i] and not checks[i].unchanged and not confirm(i):
                    unconfirmed[i] = True
                    checks[i] = replace(checks[i], leak=False)
            stuck = leaking()
        if stuck and self.last_resort is not None:
            requests = [GenerationRequest(face=faces[i]) for i in stuck]
            for i, crop in zip(stuck, self.last_resort.generate(requests), strict=True):
                crops[i] = crop
                last[i] = generators[i] = self.last_resort.name
            merged = merge(image, faces, crops)
            # pasted once more on top, so no neighbour's crop covers any part of a filled face
            merged = merge(merged, [faces[i] for i in stuck], [crops[i] for i in stuck])
            checks = check(merged)
            # The fill is checked like any other result (it may have landed beside the face); only
            # what was judged no face above stays judged so on this re-check.
            checks = [replace(c, leak=False) if unconfirmed[i] else c for i, c in enumerate(checks)]
        if leaking():
            after = f"policy {cfg.policy!r}, the fallback" + (" and the last resort" if any(last) else "")
            raise VerificationError(self._leak_message(leaking(), checks, after))
        verdicts = tuple(
            FaceVerdict(checks[i], first[i], generators[i], tries[i], fallback[i], last[i], unconfirmed[i])
            for i in range(len(faces))
        )
        return Verdict(merged, verdicts)

    def _leak_message(self, leaks: list[int], checks: list[Check], after: str) -> str:
        verifier = self.verifier
        word = "similarity" if verifier.metric == "cosine" else "distance"
        sign = ">" if verifier.metric == "cosine" else "<"
        parts = [
            f"face {i}: "
            + ("not replaced" if checks[i].unchanged else f"{word} {checks[i].score:.3f} {sign} {verifier.threshold:g}")
            + (" (found moved on the output)" if checks[i].found_at is not None else "")
            for i in leaks
        ]
        return (
            f"{len(leaks)} of {len(checks)} faces still match their original ({verifier.name}) after {after}: "
            f"{'; '.join(parts)}; nothing written"
        )


# -- loud loosening -----------------------------------------------------------------------------


def verifier_of(pipeline: Pipeline) -> Verifier | None:
    """The pipeline's verifier (its verify encoder at the configured threshold); None when verification is off."""
    stage = pipeline.verify_encoder
    if stage is None:
        return None
    return Verifier(stage.component, pipeline.config.verify.threshold)  # type: ignore[arg-type]


def safety_warnings(pipeline: Pipeline, aligned: bool = False) -> list[str]:
    """One line per setting that weakens the fail-closed guarantee; printed on every run (even with -q) and kept
    in the manifest's `safety_warnings`. `aligned`: the run treats each input as one aligned face (--aligned)."""
    warnings = []
    verify = pipeline.config.verify
    verifier = verifier_of(pipeline)
    coverage = pipeline.coverage
    if not verify.enabled:
        warnings.append("verification is OFF (verify.enabled=false): outputs are written without re-checking any face")
    elif verifier is not None:
        encoder = verifier.encoder
        default = encoder.verify_threshold if encoder.verify_threshold is not None else encoder.match_threshold
        looser = verifier.threshold > default if verifier.metric == "cosine" else verifier.threshold < default
        if looser:
            warnings.append(
                f"verify.threshold={verifier.threshold:g} is looser than {encoder.name}'s default {default:g}: "
                "faces closer to their original are accepted"
            )
        if not verify.search:
            warnings.append(
                "verify.search is off: faces moved by the generator, or another person's face pasted in its place, "
                "are not looked for on the output"
            )
    if coverage is None:
        warnings.append(
            "coverage is OFF (coverage.detector=null): faces the main detector misses are written as they are"
        )
        if aligned:
            warnings.append("--aligned without coverage: faces other than the aligned one are written as they are")
    elif pipeline.config.coverage.search == "plain":
        warnings.append(
            "coverage.search=plain: the coverage detector does not look for turned, small or dark faces, "
            "which are written as they are"
        )
    stages = [("detector", pipeline.detector), ("coverage.detector", coverage)]
    for key, stage in stages:
        if stage is not None:
            warnings += _raised_threshold(key, stage.component)  # type: ignore[arg-type]
    return warnings


def _raised_threshold(key: str, detector: Detector[Any]) -> list[str]:
    """A warning when the detector's recall threshold (`Detector.recall_option`) is above its default."""
    name = detector.recall_option
    if name is None:
        return []
    value, default = getattr(detector.options, name), type(detector.options).model_fields[name].default
    if value is None or default is None or value <= default:
        return []
    section = "coverage.detector_options" if key == "coverage.detector" else f"{key}.options"
    return [
        f"{section}.{name}={value:g} is above {detector.name}'s default {default:g}: "
        "the detector finds fewer faces, and a face it misses is written as it is"
    ]
