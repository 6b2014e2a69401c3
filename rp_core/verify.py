"""Fail closed: re-check every anonymized face and decide what to do with the ones that leak.

After merging, the output is checked as an attacker would check it (with `verify.search`): every
face a detector finds anew in the pixels the merger changed (each face's region, enlarged when
small, turned every way) is read and compared with every original identity of the image and of
the run's recent images; the worst score decides, and a region where no face is found holds
nothing to identify. Without the search, each face is read again at its original landmarks and
compared with its own identity. A face that still matches (similarity above, or distance below,
the verification threshold: the encoder's match threshold moved by a safety margin) or whose
pixels did not change at all is a leak. `FailClosed.enforce` then retries with a stronger
generator, falls back to an obfuscating one, fills the face as a last resort, or refuses the
image (`verify.policy`), and returns a frozen `Verdict`; an image with a face still leaking after
that is never returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from rp_core.errors import VerificationError
from rp_core.geometry import Box, box_region, centre_inside, changed_box, footprint, iou
from rp_core.identities import LazyIdentities, chain, pick
from rp_core.interfaces import Detector, Generator, IdentityEncoder, compare_embeddings, same_person
from rp_core.types import AlignedFace, Face, GenerationRequest, IdentityEmbedding

if TYPE_CHECKING:
    from rp_core.config import RunConfig
    from rp_core.pipeline import Pipeline

#: Faces found on an output image inside a region (the search of `verify.search`).
FaceFinder = Callable[[np.ndarray, Box], list[Face]]


#: After the last resort, a face still found beside the fill (inside the face's search region) is covered too, this
#: many times at most, its box grown by COVER_GROWTH x its larger side each way; what is still found then refuses.
COVER_ROUNDS = 2
COVER_GROWTH = 0.15


@dataclass(frozen=True)
class Check:
    """The verification of one face on one output: its worst score and where it was found."""

    #: None: no face was found (and read) there, so there is nothing for an attacker to compare.
    score: float | None
    unchanged: bool
    leak: bool
    #: Box of the face found anew on the output that scored worst, when that was not the original position.
    found_at: Box | None = None
    #: The worst score of the faces a detector found anew in this face's region (None: none was found and read).
    #: What an attacker, who must find a face before reading it, would get.
    found_score: float | None = None


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
        images processed just before this one in the run (`RecentIdentities`); both may be
        `LazyIdentities`, read only if some face is found to compare. With a `finder`, the check is
        the attacker's: every face a detector finds on `output` inside each of `regions` (one per
        face: where the merger may have changed pixels) is read and compared with EVERY identity
        (this image's and `others`), so a crop swapped in from another face of the image or replayed
        from an earlier image is caught; the worst score counts for each face whose region holds it,
        and a face where nothing is found reads as no face (score None). A found face where a face
        of `faces` was, and matches none of the identities, is also read on `original` at the same
        landmarks and compared with that: a face the merger missed (landmarks displaced, the fill
        beside it) is still there, as it was, and matches itself. (A face that already matches
        someone leaks whatever that reading says; its score is then the identities'.) Without a
        `finder`, each face is read on `output` at its original landmarks and compared with its own
        identity. Faces found on a `kept` face (left unchanged on purpose) are skipped. A face whose
        pixels did not change at all leaks either way.
        """
        scores: list[float | None] = [None] * len(faces)
        if finder is None:
            after = self.encode(output, faces)
            scores = [compare_embeddings(b, a, self.metric) for b, a in zip(before, after, strict=True)]
        where: list[Box | None] = [None] * len(faces)
        found_scores: list[float | None] = [None] * len(faces)
        if finder is not None and regions is not None:
            found = _unique(face for region in regions for face in finder(output, region))
            found = [  # faces on kept faces, or centred outside every region (unchanged pixels), are not read
                f
                for f in found
                if all(iou(f.box, box) < 0.3 for box in kept) and any(centre_inside(f.box, r) for r in regions)
            ]
            identities: _Identities | None = None
            for face, embedding in zip(found, self._encode_found(output, found), strict=True):
                if embedding is None:
                    continue
                if identities is None:  # read the originals only now: most outputs show no face to compare
                    identities = _Identities([*before, *others], self.metric)
                score = identities.worst(embedding)
                # where a face was: still there, as it was? (Not asked when the face already matches someone: it
                # leaks either way, and the reading of the original would cost one more descriptor.)
                if not self.matches(score) and any(iou(face.box, f.box) > 0.1 for f in faces):
                    [there_before] = self._encode_found(original, [face])
                    own = score if there_before is None else compare_embeddings(there_before, embedding, self.metric)
                    score = own if self.worse(own, score) else score
                for i, region in enumerate(regions):
                    if not centre_inside(face.box, region):
                        continue
                    known = found_scores[i]
                    if known is None or self.worse(score, known):
                        found_scores[i] = score
                    current = scores[i]
                    if current is None or self.worse(score, current):
                        scores[i], where[i] = score, face.box
        checks = []
        for face, final, found_at, found_score in zip(faces, scores, where, found_scores, strict=True):
            unchanged = region_unchanged(original, output, face.box)
            leak = unchanged or (final is not None and self.matches(final))
            checks.append(Check(final, unchanged, leak, found_at, found_score))
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

        self._recent: deque[tuple[object, Sequence[IdentityEmbedding]]] = deque(maxlen=max(1, images))

    def add(self, key: object, identities: Sequence[IdentityEmbedding]) -> None:
        """Remember an image's identities (`key`: the image's own object, so a check can leave its own out);
        `LazyIdentities` stay unread until a check compares a found face with them."""
        if len(identities):
            self._recent.append((key, identities))

    def others(self, key: object) -> LazyIdentities:
        """The identities of the remembered images other than `key` (read when first needed)."""
        return chain(*(identities for k, identities in list(self._recent) if k is not key))


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


def missed_faces(found: Sequence[Face], others: Sequence[Face], threshold: float) -> list[Face]:
    """Faces of `others` that overlap none of `found` by at least `threshold` IoU."""
    return [o for o in others if all(iou(o.box, f.box) < threshold for f in found)]


# -- the policy -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FaceVerdict:
    """What verification concluded about one face, and what it took."""

    check: Check
    score_first: float | None
    generator: str
    retries: int = 0
    fallback: str | None = None
    last_resort: str | None = None
    #: The face the verifier could not confirm as a face (another detector family sees none there):
    #: it keeps one obfuscation and is not filled.
    unconfirmed: bool = False
    #: How many times a face found beside the last resort's fill was covered too (COVER_ROUNDS at most).
    covered: int = 0

    def to_dict(self, verifier: Verifier) -> dict[str, Any]:
        data: dict[str, Any] = {
            **verifier.describe(),
            "score_first": _rounded(self.score_first),
            "score_final": _rounded(self.check.score),
            "unchanged": self.check.unchanged,
            "leak": self.check.leak,
            "retries": self.retries,
            "fallback": self.fallback,
            "last_resort": self.last_resort,
        }
        if self.check.found_at is not None:
            data["worst_found_at"] = [round(v, 1) for v in self.check.found_at]
        if self.check.found_score is not None:
            data["score_found"] = round(self.check.found_score, 4)  # the worst face a detector found in the region
        if self.last_resort and not self.check.leak:
            data["judged_by"] = (
                "faces the detectors find in the filled region (a fill read at its landmarks is no face)"
            )
        if self.covered:
            data["covered_beside_fill"] = self.covered
        if self.unconfirmed:
            data["unconfirmed"] = "no detector of another family sees a face here: obfuscated once, not filled"
        return data


def _rounded(score: float | None) -> float | None:
    return None if score is None else round(score, 4)


@dataclass(frozen=True)
class Verdict:
    """The verified output image and one FaceVerdict per face."""

    image: np.ndarray
    faces: tuple[FaceVerdict, ...]


#: Regenerates the faces at the given indices with `generator` for fail-closed retry `attempt` (1, 2, ...);
#: returns one crop each. The caller decides what an attempt changes (a new seed, or only the generator).
Regenerate = Callable[[list[int], Generator[Any], int], list[np.ndarray]]
#: Pastes crops into an image (the merger's `merge`; the last argument: which crops hide their face).
Merge = Callable[[np.ndarray, Sequence[AlignedFace], Sequence[np.ndarray], Sequence[bool]], np.ndarray]
#: True when some detector other than the one that found the face sees a face in the original there.
Confirm = Callable[[int], bool]
#: An integer pixel rectangle (x0, y0, x1, y1), end exclusive.
Rect = tuple[int, int, int, int]


def pixel_rect(box: Box) -> Rect:
    """The pixels a float box touches."""
    return (int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3])))


def rects_meet(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def overlap_group(rects: Sequence[Rect], seeds: Sequence[int]) -> list[int]:
    """`seeds` and every face connected to them by overlapping rectangles (transitively), in index order."""
    group = set(seeds)
    frontier = list(seeds)
    while frontier:
        i = frontier.pop()
        for j, rect in enumerate(rects):
            if j not in group and rects_meet(rect, rects[i]):
                group.add(j)
                frontier.append(j)
    return sorted(group)


@dataclass(frozen=True)
class FailClosed:
    """`verify.policy` applied to one merged image."""

    config: RunConfig
    verifier: Verifier
    fallback: Generator[Any]
    last_resort: Generator[Any] | None
    finder: FaceFinder | None = None
    #: The run's generator when it draws new faces (its crops are pasted as faces); every other crop hides one.
    synthesizer: str | None = None
    #: Identities of the images processed just before this one in the run (`RecentIdentities.others`).
    others: Sequence[IdentityEmbedding] = ()
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
        *,
        pasted: np.ndarray | None = None,
    ) -> Verdict:
        """Verify, then retry/fall back/fill per policy; raise VerificationError if a face still leaks.

        `pasted`: `crops` already merged onto `image` (a caller that pasted them to decide what to check), so
        they are not pasted again; what is verified and returned starts from it.

        Incremental: after a retry, fallback or last resort, only the faces whose footprint overlaps
        a changed face's are pasted again (with the faces overlapping them, so the merge equals a full
        one) and checked again; every other face's pixels, and so its check, are what they were. A face
        whose new crop is the one it had (a small face's pixelation is the same at every strength) is
        neither pasted nor checked again: the same pixels give the same check, and it goes on leaking.
        """
        cfg = self.config.verify
        boxes = [af.face for af in faces]
        regions = [footprint(af, image.shape) for af in faces]
        rects = [pixel_rect(region) for region in regions]
        crops = list(crops)
        generators = list(generators)

        def check(output: np.ndarray, indices: Sequence[int]) -> None:
            """Re-check faces `indices`; found faces are compared with every identity of the image all the same."""
            chosen = set(indices)
            rest = pick(originals, [j for j in range(len(faces)) if j not in chosen])
            found = self.verifier.check(
                image,
                output,
                [boxes[i] for i in indices],
                pick(originals, indices),
                [changed_box(image, output, regions[i], boxes[i].box) for i in indices],
                self.finder,
                chain(self.others, rest),
                self.kept,
            )
            for i, result in zip(indices, found, strict=True):
                checks[i] = result

        def paste(base: np.ndarray, indices: Sequence[int]) -> np.ndarray:
            """Paste crops `indices`, telling the merger which ones hide their face (a whole-head mask)."""
            hidden = [generators[i] != self.synthesizer for i in indices]
            return merge(base, [faces[i] for i in indices], [crops[i] for i in indices], hidden)

        def update(merged: np.ndarray, changed: list[int], on_top: bool = False) -> np.ndarray:
            """Paste the faces `changed` touches again, then re-check the faces whose footprint meets theirs."""
            group = overlap_group(rects, changed)
            partial = paste(image, group)
            out = merged.copy()
            for i in group:  # no face outside the group pastes into these rectangles
                x0, y0, x1, y1 = rects[i]
                out[y0:y1, x0:x1] = partial[y0:y1, x0:x1]
            if on_top:  # pasted once more on top, so no neighbour's crop covers any part of these faces
                out = paste(out, changed)
            check(out, [j for j in range(len(faces)) if any(rects_meet(rects[j], rects[i]) for i in changed)])
            return out

        checks: list[Check] = [Check(None, False, False)] * len(faces)
        merged = paste(image, range(len(faces))) if pasted is None else pasted
        check(merged, range(len(faces)))
        first = [c.score for c in checks]
        tries = [0] * len(faces)
        fallback: list[str | None] = [None] * len(faces)
        last: list[str | None] = [None] * len(faces)
        unconfirmed = [False] * len(faces)
        covered = [0] * len(faces)

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
                changed = []
                for i, crop in zip(retry, regenerate(retry, generator, attempt), strict=True):
                    tries[i] = attempt
                    if not np.array_equal(crop, crops[i]):  # the same crop gives the same pixels and check
                        crops[i] = crop
                        changed.append(i)
                if changed:
                    merged = update(merged, changed)
        # a face that starts at the last resort (a video track escalated there earlier) does not step back
        filled = self.last_resort.name if self.last_resort is not None else None
        to_fallback = [i for i in leaking() if regenerable[i] or generators[i] != filled]
        if to_fallback:
            requests = [GenerationRequest(face=faces[i]) for i in to_fallback]
            changed = []
            for i, crop in zip(to_fallback, self.fallback.generate(requests), strict=True):
                hid = generators[i] != self.synthesizer
                fallback[i] = generators[i] = self.fallback.name
                if not (hid and np.array_equal(crop, crops[i])):  # same crop, same mask: same pixels and check
                    crops[i] = crop
                    changed.append(i)
            if changed:
                merged = update(merged, changed)
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
            merged = update(merged, stuck, on_top=True)

            # The fill is checked as an attacker checks it: a face any detector finds in its region (it may have
            # landed beside the face) that matches someone, or pixels left as they were, refuse the image. Read at
            # the face's own landmarks, a fill is no face: what that reading matches is the context around it (a
            # border-cut face's hair and edge read 0.48 from the person), which no detector sees as a face.
            def judge_filled() -> list[Check]:
                return [
                    c
                    if not last[i]
                    else replace(c, leak=False)
                    if unconfirmed[i]
                    else replace(
                        c, leak=c.unchanged or (c.found_score is not None and self.verifier.matches(c.found_score))
                    )
                    for i, c in enumerate(checks)
                ]

            checks = judge_filled()
            for _ in range(COVER_ROUNDS):  # a face still found beside the fill is covered too, then judged again
                beside = [
                    (i, c.found_at) for i, c in enumerate(checks) if c.leak and last[i] and c.found_at is not None
                ]
                for i, box in beside:
                    if box is not None:
                        merged = self._cover(merged, box)
                        covered[i] += 1
                if not beside:
                    break
                check(merged, range(len(faces)))  # the cover may reach past its face's footprint
                checks = judge_filled()
        if leaking():
            after = f"policy {cfg.policy!r}, the fallback" + (" and the last resort" if any(last) else "")
            raise VerificationError(self._leak_message(leaking(), checks, after))
        verdicts = tuple(
            FaceVerdict(checks[i], first[i], generators[i], tries[i], fallback[i], last[i], unconfirmed[i], covered[i])
            for i in range(len(faces))
        )
        return Verdict(merged, verdicts)

    def _cover(self, merged: np.ndarray, box: Box) -> np.ndarray:
        """The last resort over a face found beside a filled one: the square around its box, grown by
        COVER_GROWTH, filled with the last resort's output for those pixels (a face cut by the fill's edge, an ear
        and hair read as its owner at 0.48, is covered whole). Square, as generators expect their crops (the
        image's edge may cut it: a crop drawn at another shape is resized to it)."""
        assert self.last_resort is not None
        x0, y0, x1, y1 = box
        half = (0.5 + COVER_GROWTH) * max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        rows, cols = box_region(merged.shape, (cx - half, cy - half, cx + half, cy + half))
        patch = merged[rows, cols]
        if patch.size == 0:
            return merged
        height, width = patch.shape[:2]
        corners = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]]) * [width, height]
        origin = np.array([[1.0, 0.0, -cols.start], [0.0, 1.0, -rows.start]])
        spot = Face((cols.start, rows.start, cols.stop, rows.stop), 1.0, corners + [cols.start, rows.start], "cover")
        [filled] = self.last_resort.generate([GenerationRequest(face=AlignedFace(spot, patch, origin))])
        if filled.shape != patch.shape:  # a last resort that draws at its own size
            import cv2

            filled = cv2.resize(np.asarray(filled, dtype=np.uint8), (width, height), interpolation=cv2.INTER_AREA)
        out = merged.copy()
        out[rows, cols] = filled
        return out

    def _leak_message(self, leaks: list[int], checks: list[Check], after: str) -> str:
        verifier = self.verifier
        word = "similarity" if verifier.metric == "cosine" else "distance"
        sign = ">" if verifier.metric == "cosine" else "<"
        parts = [
            f"face {i}: "
            + (
                "not replaced"
                if checks[i].unchanged
                else f"{word} {checks[i].score or 0.0:.3f} {sign} {verifier.threshold:g}"
            )
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
    return Verifier(stage.component, pipeline.config.verify.threshold)


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
            warnings += _raised_threshold(key, stage.component)
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
