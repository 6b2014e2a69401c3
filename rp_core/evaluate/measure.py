"""Measure one original/anonymized pair the way an attacker and a dataset user would.

Attacker: every face found on the original is encoded by each recognizer and compared with
the anonymized image at the same landmarks and with every face any detector finds anywhere
in the anonymized image (upsampled); the most similar one is the face's worst case.
User: landmarks, head pose, eye and mouth openness before and after, which detectors still
find the face, and how many pixels changed away from the faces.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import rp_core.evaluate.geometry as geometry
from rp_core.errors import InputError, MissingModelsError, RpError
from rp_core.evaluate.pairs import ImagePair
from rp_core.geometry import box_region, same_face_any_detector
from rp_core.interfaces import Component, Detector, IdentityEncoder, RuntimeContext, compare_embeddings, same_person
from rp_core.types import Face

C = TypeVar("C", bound=Component[Any])

#: Thresholds reported besides the one an encoder declares: the ones commonly quoted for these models.
USUAL_THRESHOLDS: dict[str, tuple[float, ...]] = {
    "dlib": (0.6,),
    "buffalo_l": (0.28, 0.35, 0.5),
}
#: Options for the whole-image search on the anonymized picture: look harder than a normal run does
#: (upsampled, lower threshold); a false detection only adds a face to compare with, never hides one.
SEARCH_OPTIONS: dict[str, dict[str, Any]] = {"dlib": {"upsample": 1, "det_thresh": -0.5}}


@dataclass(frozen=True)
class Settings:
    """How an evaluation detects, recognizes and counts."""

    detector: str = "dlib"
    detector_options: dict[str, Any] = field(default_factory=dict)
    recognizer: str = "dlib"
    recognizer_options: dict[str, Any] = field(default_factory=dict)
    #: Detectors asked whether they still find each face; None = every installed one whose weights are here.
    detectors: tuple[str, ...] | None = None
    #: Also measure faces only those other detectors find on the original (a face nobody measures can leak).
    union: bool = True
    #: Share of a face box added on each side before counting pixels as "outside the faces".
    face_margin: float = 0.25
    #: A pixel counts as changed when a channel moved by more than this (JPEG re-encoding stays below).
    pixel_tolerance: int = 8
    models_dir: Path | None = None
    device: str = "auto"
    thumbnails: bool = True
    #: Picture the original faces unblurred in the report (default: blurred, so the report can be shared).
    show_originals: bool = False


@dataclass
class IdentityScore:
    """One recognizer's verdict on one face: scores are similarities (cosine) or distances (euclidean)."""

    encoder: str
    metric: str
    roles: list[str]
    thresholds: list[float]
    #: The threshold the encoder itself declares (`match_threshold`): the one `--fail-on-match` uses.
    declared_threshold: float
    at_position: float
    worst: float
    worst_source: str
    reidentified: dict[str, bool]
    searched_faces: int
    reported_by_run: float | None = None


@dataclass
class FaceResult:
    image: str
    index: int
    box: tuple[float, float, float, float]
    landmarks: int
    #: The detector whose box and landmarks this face has: the main one, or another that alone found it.
    found_by: str = ""
    identity: dict[str, IdentityScore] = field(default_factory=dict)
    landmarks_after: str | None = None  # "redetected" or None when the detector no longer finds the face
    displacement: float | None = None
    pose_before: tuple[float, float, float] | None = None
    pose_after: tuple[float, float, float] | None = None
    eyes_before: float | None = None
    eyes_after: float | None = None
    mouth_before: float | None = None
    mouth_after: float | None = None
    found_before: dict[str, bool] = field(default_factory=dict)
    found_after: dict[str, bool] = field(default_factory=dict)
    changed_in_box: float = 0.0
    in_manifest: bool | None = None
    action: str | None = None
    generator: str | None = None
    thumbnail: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("thumbnail")
        return _rounded(data)


@dataclass
class ImageResult:
    name: str
    original: str | None
    anonymized: str | None
    status: str  # evaluated | problem
    problem: str | None = None
    size: tuple[int, int] | None = None
    run_status: str | None = None
    faces: list[FaceResult] = field(default_factory=list)
    changed_outside: float | None = None
    mean_abs_diff_outside: float | None = None
    unmatched_run_faces: list[list[float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "faces"}
        data["faces"] = [f.to_dict() for f in self.faces]
        return _rounded(data)


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


@dataclass
class _Scorer:
    encoder: IdentityEncoder
    roles: list[str]
    thresholds: list[float]
    reported_key: bool = False

    @property
    def name(self) -> str:
        return self.encoder.name


def _why_not(exc: RpError) -> str:
    """Why an optional model is left out, in a few words."""
    if isinstance(exc, MissingModelsError):
        return f"its model files are missing here ({', '.join(f.description for f in exc.files)})"
    return str(exc).splitlines()[0]


class Evaluator:
    """Builds the detectors and recognizers once, then measures pair after pair."""

    def __init__(self, host: Any, settings: Settings, manifest: dict[str, Any] | None = None) -> None:
        self.host = host
        self.settings = settings
        self.manifest = manifest
        self.context = RuntimeContext(device=settings.device, models_dir=settings.models_dir)
        self.notes: list[str] = []
        self.detector: Detector[Any] = self._build(Detector, settings.detector, settings.detector_options, "--detector")
        self.recognizer: IdentityEncoder[Any] = self._build(
            IdentityEncoder, settings.recognizer, settings.recognizer_options, "--recognizer"
        )
        self.search: Detector | None = None
        self.coverage: dict[str, Detector] = {}
        self.scorers: list[_Scorer] = []

    # -- building ------------------------------------------------------------------------

    def _build(self, kind: type[C], name: str, options: dict[str, Any], key: str) -> C:
        from rp_core.pipeline import build_component

        return build_component(self.host, self.context, kind, name, options, key)

    def load(self) -> None:
        """Load every model; optional ones that cannot run here are left out with a note.

        The models it needs go through `rp_core.pipeline.ensure_models` (downloaded where allowed, one
        error naming what is missing), as for every command; optional ones are only used when present.
        """
        from rp_core.pipeline import ensure_models

        ensure_models({"--detector": self.detector, "--recognizer": self.recognizer})
        self.detector.load()
        search_options = {**self.settings.detector_options, **SEARCH_OPTIONS.get(self.settings.detector, {})}
        if search_options != self.settings.detector_options:
            self.search = self._build(Detector, self.settings.detector, search_options, "--detector")
            self.search.load()
        self._load_coverage()
        self._load_scorers()

    def _load_coverage(self) -> None:
        from rp_core.pipeline import ensure_models

        explicit = self.settings.detectors is not None
        names = self.settings.detectors if explicit else tuple(self.host.names("detector"))
        for name in names or ():
            if name == self.settings.detector:
                continue
            detector = self._build(Detector, name, {}, "--detectors")
            try:  # named with --detectors: needed (downloaded where allowed); else used only when present
                ensure_models({"--detectors": detector}, download=explicit)
                detector.load()
            except RpError as exc:
                if explicit:
                    raise
                self.notes.append(f"detector {name} left out: {_why_not(exc)}")
                continue
            self.coverage[name] = detector

    def _load_scorers(self) -> None:
        from rp_core.pipeline import ensure_models

        roles: dict[str, list[str]] = {self.settings.recognizer: ["recognizer"]}
        for name in self._verify_encoders():
            roles.setdefault(name, []).append("verify")
        for name, its_roles in roles.items():
            if "recognizer" in its_roles:
                encoder = self.recognizer  # ensured by load()
                encoder.load()
            else:
                encoder = self._build(IdentityEncoder, name, self._encoder_options(name), "verify encoder")
                try:  # the run's own verify encoder: used when present, never downloaded for an evaluation
                    ensure_models({"verify encoder": encoder}, download=False)
                    encoder.load()
                except RpError as exc:
                    self.notes.append(f"verify encoder {name} left out: {_why_not(exc)}")
                    continue
            thresholds = sorted({*USUAL_THRESHOLDS.get(name, ()), float(encoder.match_threshold)})
            self.scorers.append(_Scorer(encoder, its_roles, thresholds))

    def _verify_encoders(self) -> list[str]:
        """Encoders named by the run's verification notes (`notes.verify.encoder`), in order of appearance."""
        names: list[str] = []
        for entry in (self.manifest or {}).get("images", []):
            for record in entry.get("faces") or []:
                name = ((record.get("notes") or {}).get("verify") or {}).get("encoder")
                if isinstance(name, str) and name not in names:
                    names.append(name)
        return names

    def _encoder_options(self, name: str) -> dict[str, Any]:
        """The options the run used for this encoder, read from its recorded config."""
        config = (self.manifest or {}).get("config") or {}
        verify = config.get("verify") or {}
        if verify.get("encoder") == name:
            return dict(verify.get("encoder_options") or {})
        chosen = config.get("identity_encoder") or {}
        if chosen.get("name") == name:
            return dict(chosen.get("options") or {})
        return {}

    def describe(self) -> dict[str, Any]:
        return {
            "detector": self.settings.detector,
            "search_detector_options": self.search.options.model_dump(mode="json") if self.search else None,
            "show_originals": self.settings.show_originals,
            "coverage_detectors": [self.settings.detector, *self.coverage],
            "union": self.settings.union,
            "recognizers": [
                {
                    "name": s.name,
                    "metric": s.encoder.metric,
                    "roles": s.roles,
                    "thresholds": s.thresholds,
                    "declared_threshold": s.encoder.match_threshold,
                }
                for s in self.scorers
            ],
            "face_margin": self.settings.face_margin,
            "pixel_tolerance": self.settings.pixel_tolerance,
            "notes": self.notes,
        }

    # -- measuring -----------------------------------------------------------------------

    def evaluate(self, pair: ImagePair) -> ImageResult:
        """Measure one pair; a pair that cannot be compared comes back with its problem, never raises InputError."""
        from rp_core.files.decode import read_image

        start = time.perf_counter()
        result = ImageResult(
            name=pair.name,
            original=str(pair.original) if pair.original else None,
            anonymized=str(pair.anonymized) if pair.anonymized else None,
            status="problem",
            run_status=(pair.entry or {}).get("status"),
        )
        if pair.problem is not None:
            result.problem = pair.problem
            return result
        assert pair.original is not None and pair.anonymized is not None
        try:
            original = read_image(pair.original)
            anonymized = read_image(pair.anonymized)
        except InputError as exc:
            result.problem = str(exc)
            return result
        if original.shape != anonymized.shape:
            (h0, w0), (h1, w1) = original.shape[:2], anonymized.shape[:2]
            result.problem = (
                f"{pair.original} is {w0}x{h0} but {pair.anonymized} is {w1}x{h1}: not an original and its "
                "anonymized version (rp keeps the size)"
            )
            return result
        result.size = (int(original.shape[1]), int(original.shape[0]))
        self._measure(pair, original, anonymized, result)
        result.status = "evaluated"
        result.seconds = time.perf_counter() - start
        return result

    def _measure(self, pair: ImagePair, original: np.ndarray, anonymized: np.ndarray, result: ImageResult) -> None:
        main = self.settings.detector
        before_by = {main: self.detector.detect(original)}
        after_by = {main: self.detector.detect(anonymized)}
        before_by.update({name: d.detect(original) for name, d in self.coverage.items()})
        after_by.update({name: d.detect(anonymized) for name, d in self.coverage.items()})
        after = after_by[main]
        sources = [main] * len(before_by[main])
        faces = list(before_by[main])
        if self.settings.union:
            for name, found in before_by.items():
                for face in found:
                    if name != main and not any(same_face_any_detector(face.box, f.box) for f in faces):
                        faces.append(face)
                        sources.append(name)
        search = self.search.detect(anonymized) if self.search is not None else after
        candidates = [(f"{self.settings.detector} (search)", f) for f in search]
        candidates += [(name, f) for name, found in after_by.items() if name != main for f in found]

        records = list((pair.entry or {}).get("faces") or [])
        matched_records: set[int] = set()
        record_of: dict[int, dict[str, Any]] = {}
        results = []
        for i, face in enumerate(faces):
            fr = FaceResult(
                image=pair.name, index=i, box=face.box, landmarks=int(face.landmarks.shape[0]), found_by=sources[i]
            )
            self._geometry(face, after_by[sources[i]], original.shape, fr)
            fr.found_before = {n: any(same_face_any_detector(face.box, f.box) for f in v) for n, v in before_by.items()}
            fr.found_after = {n: any(same_face_any_detector(face.box, f.box) for f in v) for n, v in after_by.items()}
            if pair.entry is not None:
                j = next(
                    (j for j, r in enumerate(records) if j not in matched_records and _record_matches(r, face)), None
                )
                fr.in_manifest = j is not None
                if j is not None:
                    matched_records.add(j)
                    record_of[i] = records[j]
                    fr.action, fr.generator = records[j].get("action"), records[j].get("generator")
            results.append(fr)
        for scorer in self.scorers:
            self._identity(scorer, original, anonymized, faces, candidates, record_of, results, result)
        # every face anyone found or processed is "inside": changes there are the anonymization itself
        boxes = [f.box for found in before_by.values() for f in found]
        boxes += [tuple(r["box"]) for r in records if len(r.get("box") or ()) == 4]
        changed = geometry.changed_pixels(original, anonymized, self.settings.pixel_tolerance)
        inside = geometry.face_regions_mask(original.shape, boxes, self.settings.face_margin)  # type: ignore[arg-type]
        outside = ~inside
        if outside.any():
            result.changed_outside = float(changed[outside].mean())
            diff = np.abs(original.astype(np.int16) - anonymized.astype(np.int16)).max(axis=2)
            result.mean_abs_diff_outside = float(diff[outside].mean())
            if result.changed_outside > 0.5:
                result.notes.append("more than half the pixels outside the faces changed: are these the same picture?")
        for fr, face in zip(results, faces, strict=True):
            rows, cols = box_region(original.shape, face.box)
            region = changed[rows, cols]
            fr.changed_in_box = float(region.mean()) if region.size else 0.0
            if self.settings.thumbnails:
                fr.thumbnail = thumbnail(original, anonymized, face.box, redact=not self.settings.show_originals)
        result.unmatched_run_faces = [list(r["box"]) for j, r in enumerate(records) if j not in matched_records]
        if result.unmatched_run_faces:
            result.notes.append(
                f"{len(result.unmatched_run_faces)} face(s) the run processed were found by no detector of this "
                "evaluation on the original: not measured"
            )
        result.faces = results

    def _geometry(self, face: Face, after: Sequence[Face], shape: tuple[int, ...], fr: FaceResult) -> None:
        fr.pose_before = geometry.head_pose(face.landmarks, shape)
        fr.eyes_before = geometry.eye_openness(face.landmarks)
        fr.mouth_before = geometry.mouth_openness(face.landmarks)
        match = next((f for f in after if same_face_any_detector(face.box, f.box)), None)
        if match is None:
            return
        fr.landmarks_after = "redetected"
        fr.displacement = geometry.landmark_displacement(face.landmarks, match.landmarks)
        fr.pose_after = geometry.head_pose(match.landmarks, shape)
        fr.eyes_after = geometry.eye_openness(match.landmarks)
        fr.mouth_after = geometry.mouth_openness(match.landmarks)

    def _identity(
        self,
        scorer: _Scorer,
        original: np.ndarray,
        anonymized: np.ndarray,
        faces: Sequence[Face],
        candidates: Sequence[tuple[str, Face]],
        record_of: dict[int, dict[str, Any]],
        results: Sequence[FaceResult],
        result: ImageResult,
    ) -> None:
        encoder = scorer.encoder
        encoded = _encode_each(encoder, original, faces)
        usable = [i for i, e in enumerate(encoded) if e is not None]
        if len(usable) < len(faces):
            result.notes.append(f"{encoder.name}: {len(faces) - len(usable)} face(s) have landmarks it cannot use")
        if not usable:
            return
        before = [encoded[i] for i in usable]
        at_position = encoder.encode(anonymized, [faces[i] for i in usable])
        found: list[tuple[str, Any]] = []
        by_source: dict[str, list[Face]] = {}
        for source, face in candidates:
            by_source.setdefault(source, []).append(face)
        for source, group in by_source.items():
            try:
                embeddings = encoder.encode(anonymized, group)
            except RpError as exc:  # e.g. a 5-point detector's faces for a 68-point encoder
                result.notes.append(
                    f"{encoder.name} cannot search the faces {source} found: {str(exc).splitlines()[0]}"
                )
                continue
            found += [
                (f"{source} face at ({f.box[0]:.0f}, {f.box[1]:.0f})", e)
                for f, e in zip(group, embeddings, strict=True)
            ]
        worse = (lambda a, b: a > b) if encoder.metric == "cosine" else (lambda a, b: a < b)
        for k, i in enumerate(usable):
            score = compare_embeddings(before[k], at_position[k], encoder.metric)
            worst, source = score, "same position"
            for label, embedding in found:
                candidate = compare_embeddings(before[k], embedding, encoder.metric)
                if worse(candidate, worst):
                    worst, source = candidate, label
            reported = None
            fr = results[i]
            if i in record_of:
                verify = (record_of[i].get("notes") or {}).get("verify") or {}
                if verify.get("encoder") == encoder.name and isinstance(verify.get("score_final"), (int, float)):
                    reported = float(verify["score_final"])
            fr.identity[encoder.name] = IdentityScore(
                encoder=encoder.name,
                metric=encoder.metric,
                roles=list(scorer.roles),
                thresholds=list(scorer.thresholds),
                declared_threshold=float(encoder.match_threshold),
                at_position=score,
                worst=worst,
                worst_source=source,
                reidentified={f"{t:g}": same_person(worst, encoder.metric, t) for t in scorer.thresholds},
                searched_faces=len(found),
                reported_by_run=reported,
            )


def _encode_each(encoder: IdentityEncoder, image: np.ndarray, faces: Sequence[Face]) -> list[Any]:
    """Embeddings of `faces`, None for a face whose landmarks the encoder refuses (e.g. 5 points for dlib)."""
    try:
        return list(encoder.encode(image, faces))
    except RpError:
        pass
    embeddings: list[Any] = []
    for face in faces:
        try:
            embeddings.append(encoder.encode(image, [face])[0])
        except RpError:
            embeddings.append(None)
    return embeddings


def _record_matches(record: dict[str, Any], face: Face) -> bool:
    box = record.get("box") or ()
    return len(box) == 4 and same_face_any_detector(tuple(float(v) for v in box), face.box)  # type: ignore[arg-type]


#: Gaussian sigma of a redacted thumbnail tile, as a share of its height: a 160 px tile at sigma 13 px keeps
#: hair colour and head position but no features dlib's detector or descriptor can use.
REDACT_SIGMA = 0.08


def thumbnail(
    original: np.ndarray, anonymized: np.ndarray, box: tuple[float, float, float, float], redact: bool = True
) -> bytes:
    """original | anonymized | difference (x4, inferno) around one face, 160 px high, as JPEG bytes.

    `redact` blurs the original and the difference (which shows the original's edges wherever the face
    changed), so a report can be shared without the faces it was meant to hide.
    """
    import cv2
    from PIL import Image

    x0, y0, x1, y1 = box
    grow = 0.4 * max(x1 - x0, y1 - y0)
    rows, cols = box_region(original.shape, (x0 - grow, y0 - grow, x1 + grow, y1 + grow))
    a, b = original[rows, cols], anonymized[rows, cols]
    diff = np.clip(np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) * 4, 0, 255).astype(np.uint8)
    heat = cv2.applyColorMap(diff, cv2.COLORMAP_INFERNO)[:, :, ::-1]
    height = 160
    width = max(1, round(a.shape[1] * height / max(a.shape[0], 1)))
    tiles = [cv2.resize(np.ascontiguousarray(t), (width, height), interpolation=cv2.INTER_AREA) for t in (a, b, heat)]
    if redact:
        sigma = REDACT_SIGMA * height
        for k in (0, 2):
            tiles[k] = cv2.GaussianBlur(tiles[k], (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REPLICATE)
    gap = np.full((height, 4, 3), 255, np.uint8)
    strip = np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(strip).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
