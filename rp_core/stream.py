"""One face stream: the per-face work of a photo and of a video frame, in one place.

find faces (detector + coverage search) -> select (keep/only/faces JSON/limits) -> align -> route
-> identities -> batch across items -> invert/generate -> merge -> fail closed. A photo
(`rp_core.orchestrator.Anonymizer`) and a video frame (`rp_core.video.frames.FrameAnonymizer`)
are thin adapters: they say where an item's faces come from (`Candidate`s: detected, given by a
faces JSON, placed by a tracker) and turn a `Finished` item into their own records. What a frame
adds is carried by the item, not by a second loop: each face may hold a `FaceMemory` (a video
track) with its own seed, its target identity and its selection decision, kept across items.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from rp_core.align import align_faces
from rp_core.errors import RpError
from rp_core.geometry import changed_pixels, clipped_window
from rp_core.identities import LazyIdentities, chain, face_identities, pick
from rp_core.interfaces import Component, Detector, Generator, IdentityEncoder, Inverter, Merger
from rp_core.selection import References, encode_references, kept_faces, match_references
from rp_core.types import AlignedFace, Face, GenerationRequest, IdentityEmbedding, Inversion
from rp_core.verify import (
    Box,
    FaceVerdict,
    FailClosed,
    RecentIdentities,
    Rect,
    Verifier,
    footprint,
    iou,
    missed_faces,
    overlap_group,
    verifier_of,
)

if TYPE_CHECKING:
    from rp_core.pipeline import Pipeline, Stage

#: Called with an item's key and its (one-line) error when the stream goes on without it.
ErrorHandler = Callable[[Hashable, Exception], None]
#: Given an item, its changed faces merged onto it, and those faces' indices: the faces a cheaper check
#: vouches for (a video track whose output is what it was on a fully verified frame). The others get
#: fail closed in full. It may refresh `item.originals` of the faces it does not vouch for.
Vouch = Callable[["WorkItem", np.ndarray, list[int]], Collection[int]]


class Route(StrEnum):
    """Where a face goes; the same names for photos, frames, the manifest and the console."""

    #: The main generator (and fail-closed retries).
    GENERATE = "generate"
    #: Found only by the coverage detector: straight to the fallback generator.
    COVERAGE = "coverage"
    #: Smaller than `coverage.min_face_size`: straight to the fallback generator.
    SMALL = "small"
    #: Chosen to stay unchanged (--keep-face, --only-face, --only-largest, --max-faces, a faces JSON).
    KEEP = "keep"
    #: Placed by a video tracker where a lost track's face should be: straight to the fallback generator.
    PREDICTED = "predicted"
    #: The person's track needed a stronger obfuscation on an earlier frame: it keeps that one (no flicker).
    ESCALATED = "escalated"
    #: A video track's face carried from its keyframe: the main generator's crop made there, verified there,
    #: pasted at this frame's landmarks (`Candidate.crop`); regenerated like a generated face if it leaks.
    CARRIED = "carried"


#: Routes whose faces get the fallback generator's crop while the item is prepared.
FALLBACK_ROUTES = frozenset({Route.COVERAGE, Route.SMALL, Route.PREDICTED})
#: How far fail closed took a person's face, weakest first (`FaceMemory.floor`).
FLOORS = ("generator", "fallback", "last_resort")


@dataclass(eq=False)
class FaceMemory:
    """What the stream remembers about one person across items (a video track), set as items pass."""

    number: int
    seed: int
    #: The target identity, encoded at the person's first generated face and reused after.
    identity: IdentityEmbedding | None = None
    #: A --keep-face reference matched this person once: kept from then on.
    kept: bool = False
    #: An --only-face reference matched this person once: anonymized from then on.
    chosen: bool = False
    #: --only-largest/--max-faces, decided at the person's first item with a free place: True, one of the
    #: largest (anonymized from then on, even where another face is larger); False, passed over (left as is).
    by_size: bool | None = None
    #: The strongest obfuscation fail closed needed for this person so far (one of FLOORS): later items
    #: start there, so a track does not switch between obfuscations from frame to frame.
    floor: str = "generator"

    def raise_floor(self, verdict: FaceVerdict) -> None:
        reached = "last_resort" if verdict.last_resort else "fallback" if verdict.fallback else "generator"
        if FLOORS.index(reached) > FLOORS.index(self.floor):
            self.floor = reached


@dataclass(frozen=True)
class Candidate:
    """A face an item brings to the stream: where it is, how it is routed, and what it carries."""

    face: Face
    route: Route = Route.GENERATE
    #: Left as it is (a faces JSON's `keep`).
    keep: bool = False
    prompt: str | None = None
    memory: FaceMemory | None = None
    #: The person's original identity when it is already read (a video track's, on an earlier frame): used
    #: instead of reading this face again (a tracker's predicted landmarks read no person at all).
    original: IdentityEmbedding | None = None
    #: The crop of a CARRIED face (made by the main generator on an earlier item).
    crop: np.ndarray | None = None


@dataclass(eq=False)  # identity matters: two items may hold equal data
class WorkItem:
    """One photo or one frame on its way through the stages."""

    key: Hashable
    image: np.ndarray
    faces: list[AlignedFace]
    routes: list[Route]
    prompts: list[str | None]
    memory: list[FaceMemory | None]
    seeds: list[int]
    #: Fail-closed verification of this item (a video may verify every n-th frame only).
    verify: bool = True
    #: Search the output for moved faces while verifying (`verify.search`; a video may do it every n-th frame).
    search: bool = True
    identities: list[IdentityEmbedding | None] = field(default_factory=list)
    originals: Sequence[IdentityEmbedding] | None = None
    crops: dict[int, np.ndarray] = field(default_factory=dict)
    #: Inversions kept for fail-closed retries (only when the generator declares it can reuse them).
    inversions: dict[int, Inversion] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    face_timings: dict[int, dict[str, float]] = field(default_factory=dict)
    error: Exception | None = None

    @property
    def to_generate(self) -> list[int]:
        return [i for i, route in enumerate(self.routes) if route == Route.GENERATE]

    @property
    def drawn(self) -> list[int]:
        """Faces the main generator draws: generated on this item, or carried from an earlier one."""
        return [i for i, route in enumerate(self.routes) if route in (Route.GENERATE, Route.CARRIED)]

    @property
    def changed(self) -> list[int]:
        """Faces this run replaces (all but the kept ones)."""
        return [i for i, route in enumerate(self.routes) if route != Route.KEEP]

    @property
    def done(self) -> bool:
        return self.error is not None or all(i in self.crops for i in self.changed)


@dataclass(frozen=True)
class Finished:
    """A merged and verified item: the output image and, per face, its generator, verdict and notes."""

    item: WorkItem
    image: np.ndarray
    #: Generator name per changed face (kept faces are absent).
    generators: dict[int, str]
    verdicts: dict[int, FaceVerdict]
    notes: list[dict[str, Any]]


def _of(stage: Stage | None) -> Component[Any] | None:
    return None if stage is None else stage.component


def _missing(stage: Stage | None, what: str) -> RpError:
    got = "none" if stage is None else f"{stage.key} {stage.name!r} of kind {stage.component.kind!r}"
    return RpError(f"this pipeline has no {what} stage (got {got})")


def _passed_over_by_size(
    faces: Sequence[Face], memory: Sequence[FaceMemory | None], keep: set[int], limit: int
) -> set[int]:
    """Faces --only-largest/--max-faces leave as they are: all but the `limit` largest of those not kept.

    A remembered person (a video track) keeps the decision made at their first item, so the person chosen
    stays anonymized in every frame even where someone else is larger; the places left after the chosen
    people present go to undecided faces, largest first. A face without memory (a photo) is decided alone.
    """
    changing = sorted((i for i in range(len(faces)) if i not in keep), key=lambda i: -faces[i].size)
    places = limit - sum(1 for i in changing if (m := memory[i]) is not None and m.by_size)
    passed = set()
    for i in changing:
        remembered = memory[i]
        if remembered is not None and remembered.by_size is not None:
            chosen = remembered.by_size
        else:
            chosen, places = places > 0, places - 1
            if remembered is not None:
                remembered.by_size = chosen
        if not chosen:
            passed.add(i)
    return passed


class FaceStream:
    """The stages of one assembled pipeline, applied to `WorkItem`s; faces are batched across items."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.config = pipeline.config
        self._verifier: Verifier | None = None
        self._references: References | None = None
        self._fail_closed: FailClosed | None = None
        self._recent: RecentIdentities | None = None
        #: Inversion and generation run under this lock: the GPU stages are never entered by two threads.
        self.gpu = threading.RLock()
        #: The image this thread's `detect` last searched (`coverage_faces` does not search it twice).
        self._searched = threading.local()

    @property
    def recent(self) -> RecentIdentities:
        """The original identities of the run's last items (at least two batches, sized once the models are loaded):
        a crop swapped in from another face or replayed from an earlier item is checked against them."""
        if self._recent is None:
            self._recent = RecentIdentities(images=max(16, 2 * self.pipeline.batch_size))
        return self._recent

    # -- stages, typed by kind -----------------------------------------------------------------

    @property
    def detector(self) -> Detector[Any]:
        if isinstance(component := _of(self.pipeline.detector), Detector):
            return component
        raise _missing(self.pipeline.detector, "detector")

    @property
    def encoder(self) -> IdentityEncoder[Any]:
        if isinstance(component := _of(self.pipeline.identity_encoder), IdentityEncoder):
            return component
        raise _missing(self.pipeline.identity_encoder, "identity encoder")

    @property
    def inverter(self) -> Inverter[Any]:
        if isinstance(component := _of(self.pipeline.inverter), Inverter):
            return component
        raise _missing(self.pipeline.inverter, "inverter")

    @property
    def generator(self) -> Generator[Any]:
        if isinstance(component := _of(self.pipeline.generator), Generator):
            return component
        raise _missing(self.pipeline.generator, "generator")

    @property
    def merger(self) -> Merger[Any]:
        if isinstance(component := _of(self.pipeline.merger), Merger):
            return component
        raise _missing(self.pipeline.merger, "merger")

    @property
    def coverage_detector(self) -> Detector[Any] | None:
        if isinstance(component := _of(self.pipeline.coverage), Detector) or component is None:
            return component
        raise _missing(self.pipeline.coverage, "coverage detector")

    @property
    def fallback_generator(self) -> Generator[Any]:
        if isinstance(component := _of(self.pipeline.fallback), Generator):
            return component
        raise _missing(self.pipeline.fallback, "fallback generator")

    @property
    def last_resort(self) -> Generator[Any] | None:
        if isinstance(component := _of(self.pipeline.last_resort), Generator) or component is None:
            return component
        raise _missing(self.pipeline.last_resort, "last resort")

    @property
    def verifier(self) -> Verifier:
        if self._verifier is None:
            self._verifier = verifier_of(self.pipeline)
            if self._verifier is None:
                raise RpError("verification is off (verify.enabled=false)")
        return self._verifier

    # -- find faces ------------------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> list[Face]:
        """The main detector's faces; when it is its own coverage detector (searched harder), every face of that
        one search, each as its best-scoring pass saw it (a sideways face with the landmarks of the turned pass
        that saw it upright, not the poor ones of the plain pass)."""
        if self._searches_itself():
            from rp_core.coverage import search_faces

            faces = search_faces(self.detector.detect, image, self._coverage_passes())
        else:
            faces = self.detector.detect(image)
        self._searched.image = image  # this thread's coverage step on this image has nothing more to search
        return faces

    def coverage_faces(self, image: np.ndarray, found: Sequence[Face]) -> list[Face]:
        """Faces the coverage detector finds (with the `coverage.search` passes) that none of `found` covers.

        When the coverage detector is the main one and `detect` just searched this image with it, nothing
        more; faces given from elsewhere (a faces JSON) are still searched around.
        """
        coverage = self.coverage_detector
        if coverage is None or (self._searches_itself() and getattr(self._searched, "image", None) is image):
            return []
        from rp_core.coverage import search_faces

        return missed_faces(
            found, search_faces(coverage.detect, image, self._coverage_passes()), self.config.coverage.iou
        )

    def _searches_itself(self) -> bool:
        """Is the coverage detector the main detector with the same options (searched harder)?"""
        coverage, main = self.coverage_detector, self.detector
        return coverage is not None and coverage.name == main.name and coverage.options == main.options

    def _coverage_passes(self) -> Any:
        from rp_core import coverage

        mode = self.config.coverage.search
        if mode == "plain":
            return coverage.PLAIN
        if mode == "thorough":
            return coverage.THOROUGH
        detector = self.coverage_detector
        return coverage.HOG if detector is not None and detector.coverage_passes == "hog" else coverage.DEFAULT

    # -- select, align, route, identities --------------------------------------------------------

    @property
    def selection_by_identity(self) -> bool:
        return bool(self.config.select.keep_faces or self.config.select.only_faces)

    def identity_checker(self) -> IdentityEncoder[Any] | None:
        """The encoder that reads the originals' identities: verification's, else the pipeline's own."""
        if self.config.verify.enabled:
            return self.verifier.encoder
        if self.selection_by_identity:
            return self.encoder
        return None

    @property
    def references(self) -> References:
        """The keep/only reference identities, encoded once per run."""
        if self._references is None:
            select = self.config.select
            checker = self.identity_checker()
            if checker is None:
                self._references = References()
            else:
                detect = self.detector.detect
                self._references = References(
                    keep=encode_references(select.keep_faces, detect, checker, "--keep-face"),
                    only=encode_references(select.only_faces, detect, checker, "--only-face"),
                )
        return self._references

    def prepare(
        self,
        key: Hashable,
        image: np.ndarray,
        candidates: Sequence[Candidate],
        *,
        faces: list[AlignedFace] | None = None,
        verify: bool | None = None,
        search: bool = True,
    ) -> WorkItem:
        """Align `candidates` (unless `faces` are given already aligned), route, select, encode and obfuscate.

        Faces routed to the fallback (coverage, small, predicted) get their crop here; faces to
        generate wait for their batch (`Lane`).
        """
        start = time.perf_counter()
        image = read_only(image)  # the faces' deferred crops read it when first needed
        if faces is None:
            size = self.config.align.face_image_size
            faces = align_faces(image, [c.face for c in candidates], size, deferred=True)
        min_size = self.config.coverage.min_face_size
        routes = [
            Route.SMALL if c.route == Route.GENERATE and af.face.size < min_size else c.route
            for c, af in zip(candidates, faces, strict=True)
        ]
        base = self.config.runtime.seed
        item = WorkItem(
            key,
            image,
            faces,
            routes,
            [c.prompt for c in candidates],
            [c.memory for c in candidates],
            [base if c.memory is None else c.memory.seed for c in candidates],
            verify=self.config.verify.enabled if verify is None else verify and self.config.verify.enabled,
            search=search,
            identities=[None] * len(faces),
        )
        item.timings["align"] = time.perf_counter() - start
        checker = self.identity_checker()
        if checker is not None and faces and (item.verify or self.selection_by_identity):
            start = time.perf_counter()
            known = [c.original for c in candidates] if len(candidates) == len(faces) else [None] * len(faces)
            todo = [i for i, original in enumerate(known) if original is None]
            if item.verify and item.search and self.config.verify.search:
                # the check reads faces found on the output: the originals are read only if one is found
                unread = face_identities(checker.encode, image, [faces[i].face for i in todo])
                item.originals = LazyIdentities(lambda: _filled(known, unread), len(known))
            else:
                item.originals = _filled(known, checker.encode(image, [faces[i].face for i in todo]) if todo else [])
            item.timings["verify_encode"] = time.perf_counter() - start
        keep = {i for i, c in enumerate(candidates) if c.keep} | self._selected_to_keep(item)
        item.routes = [
            Route.KEEP if i in keep else self._escalated(r, item.memory[i]) for i, r in enumerate(item.routes)
        ]
        if self.pipeline.needs_identity and item.drawn:
            self._identities(item, checker)
        if item.originals is not None:  # before its batch runs: its batch neighbours are checked against it too
            self.recent.add(item, pick(item.originals, item.changed))
        for i, candidate in enumerate(candidates):
            if item.routes[i] == Route.CARRIED and candidate.crop is not None:
                item.crops[i] = candidate.crop
        self._obfuscate(item, [i for i in item.changed if i not in item.drawn])
        return item

    def _obfuscate(self, item: WorkItem, indices: list[int]) -> None:
        """Crops of the faces `indices` from the generator their route starts at (fallback or last resort)."""
        if not indices:
            return  # a pipeline without safeguards has no fallback stage to ask for
        start = time.perf_counter()
        for stage in (self.fallback_generator, self.last_resort):
            chosen = [i for i in indices if self.start_generator(item, i) is stage]
            if stage is not None and chosen:
                crops = stage.generate([GenerationRequest(face=item.faces[i]) for i in chosen])
                for i, crop in zip(chosen, crops, strict=True):
                    item.crops[i] = crop
        item.timings["fallback"] = item.timings.get("fallback", 0.0) + time.perf_counter() - start

    def _escalate_late(self, item: WorkItem) -> None:
        """Faces of a person whose floor rose while this item waited for its batch start at that floor too."""
        late = []
        for i in item.changed:
            before = self.start_generator(item, i)
            item.routes[i] = self._escalated(item.routes[i], item.memory[i])
            if self.start_generator(item, i) is not before:
                late.append(i)
        self._obfuscate(item, late)

    def _escalated(self, route: Route, memory: FaceMemory | None) -> Route:
        """A remembered person whose track needed the fallback (or the last resort) starts there."""
        if (
            memory is None
            or memory.floor == "generator"
            or route not in (Route.GENERATE, Route.PREDICTED, Route.ESCALATED, Route.CARRIED)
        ):
            return route
        if memory.floor == "fallback" and route == Route.PREDICTED:
            return route  # the fallback already
        return Route.ESCALATED

    def start_generator(self, item: WorkItem, i: int) -> Generator[Any] | None:
        """The generator that makes face `i`'s first crop (None: a kept face)."""
        route = item.routes[i]
        if route == Route.KEEP:
            return None
        if route in (Route.GENERATE, Route.CARRIED):
            return self.generator
        memory = item.memory[i]
        if route == Route.ESCALATED and memory is not None and memory.floor == "last_resort":
            return self.last_resort or self.fallback_generator
        return self.fallback_generator

    def _selected_to_keep(self, item: WorkItem) -> set[int]:
        """Faces the selection flags leave unchanged; a person's decision sticks to their `FaceMemory`."""
        select = self.config.select
        if not (self.selection_by_identity or select.only_largest or select.max_faces is not None):
            return set()
        checker = self.identity_checker()
        keep_matched: set[int] = set()
        only_matched: set[int] = set()
        if self.selection_by_identity and checker is not None and item.originals is not None:
            matches = match_references(item.originals, checker, self.references)
            keep_matched, only_matched = set(matches.keep), set(matches.only)
        for i, memory in enumerate(item.memory):
            if memory is None:
                continue
            memory.kept = memory.kept or i in keep_matched
            memory.chosen = memory.chosen or i in only_matched
            keep_matched |= {i} if memory.kept else set()
            only_matched |= {i} if memory.chosen else set()
        faces = [af.face for af in item.faces]
        keep = kept_faces(faces, keep_matched, only_matched if self.references.only else None)
        limit = 1 if select.only_largest else select.max_faces
        return keep if limit is None else keep | _passed_over_by_size(faces, item.memory, keep, limit)

    def _identities(self, item: WorkItem, checker: IdentityEncoder[Any] | None) -> None:
        """One target identity per face to generate; a remembered person's is encoded once, then reused."""
        for i in item.drawn:
            memory = item.memory[i]
            if memory is not None and memory.identity is not None:
                item.identities[i] = memory.identity
        todo = [i for i in item.drawn if item.identities[i] is None]
        if not todo:
            return
        start = time.perf_counter()
        if checker is not None and checker is self.pipeline.encode and item.originals is not None:
            encoded = [item.originals[i] for i in todo]  # the same encoder: encode once
        else:
            encoded = self.encoder.encode(item.image, [item.faces[i].face for i in todo])
        for i, embedding in zip(todo, encoded, strict=True):
            item.identities[i] = embedding
            memory = item.memory[i]
            if memory is not None:
                memory.identity = embedding
        item.timings["encode"] = time.perf_counter() - start

    # -- invert and generate ---------------------------------------------------------------------

    def _keeps_inversions(self, item: WorkItem) -> bool:
        verify = self.config.verify
        return (
            self.generator.retry_keeps_inversion
            and item.verify
            and verify.policy == "retry"
            and verify.max_retries > 0
            and self.pipeline.needs_inversion
        )

    def generate_into(self, items: Sequence[tuple[WorkItem, int]]) -> None:
        """Invert and generate one batch of faces (from one or several items) with the main generator."""
        inversions: list[Inversion | None] = [None] * len(items)
        crops, per_face, inversions = self.invert_generate(
            [item.faces[i] for item, i in items],
            [item.identities[i] for item, i in items],
            [item.seeds[i] for item, i in items],
            [item.prompts[i] for item, i in items],
            self.generator,
            inversions,
        )
        for (item, i), crop, inversion in zip(items, crops, inversions, strict=True):
            item.crops[i] = crop
            item.face_timings[i] = dict(per_face)
            if inversion is not None and self._keeps_inversions(item):
                item.inversions[i] = inversion

    def invert_generate(
        self,
        faces: list[AlignedFace],
        identities: list[IdentityEmbedding | None],
        seeds: list[int],
        prompts: list[str | None],
        generator: Generator[Any],
        inversions: list[Inversion | None],
    ) -> tuple[list[np.ndarray], dict[str, float], list[Inversion | None]]:
        """New crops for `faces`; faces without an inversion (where one is needed) are inverted first."""
        with self.gpu:
            per_face: dict[str, float] = {}
            inversions = list(inversions)
            todo = [k for k, inversion in enumerate(inversions) if inversion is None]
            if self.pipeline.needs_inversion and todo:
                start = time.perf_counter()
                made = self.inverter.invert([faces[k] for k in todo], [seeds[k] for k in todo])
                for k, inversion in zip(todo, made, strict=True):
                    inversions[k] = inversion
                per_face["invert"] = (time.perf_counter() - start) / len(todo)
            requests = [
                GenerationRequest(face=face, identity=identity, inversion=inversion, seed=seed, prompt=prompt)
                for face, identity, inversion, seed, prompt in zip(
                    faces, identities, inversions, seeds, prompts, strict=True
                )
            ]
            start = time.perf_counter()
            crops = generator.generate(requests)
            per_face["generate"] = (time.perf_counter() - start) / max(1, len(faces))
        if len(crops) != len(faces):
            raise RuntimeError(f"generator {generator.name!r} returned {len(crops)} crops for {len(faces)} faces")
        return list(crops), per_face, inversions

    def run_batch(self, items: list[tuple[WorkItem, int]], on_error: ErrorHandler | None) -> None:
        """Invert and generate one batch; an exception fails only the items it comes from.

        When a batch holding faces of several items fails, each item's faces are run again on
        their own, so one bad image (or a transient error) does not take its batch neighbours down.
        """
        try:
            self.generate_into(items)
            return
        except Exception as exc:
            if on_error is None:
                raise
            error = exc
        works = list(dict.fromkeys(item for item, _ in items))
        if len(works) == 1:
            works[0].error = works[0].error or per_item_error(error)
            return
        for work in works:
            try:
                self.generate_into([(w, i) for w, i in items if w is work])
            except Exception as exc:
                work.error = work.error or per_item_error(exc)

    # -- merge and fail closed -------------------------------------------------------------------

    def fail_closed(self) -> FailClosed:
        """The pipeline's `verify.policy`, with the output search of `verify.search`."""
        if self._fail_closed is None:
            self._fail_closed = FailClosed(
                config=self.config,
                verifier=self.verifier,
                fallback=self.fallback_generator,
                last_resort=self.last_resort,
                finder=self.find_on_output if self.config.verify.search else None,
                synthesizer=self.generator.name if self.generator.synthesizes else None,
            )
        return self._fail_closed

    def set_fail_closed(self, policy: FailClosed) -> None:
        """Use `policy` for every item from now on (a test counting the output searches, a benchmark)."""
        self._fail_closed = policy

    def finish(self, item: WorkItem, vouch: Vouch | None = None) -> Finished:
        """Paste every changed face back, verify (fail closed), and note what happened to each face.

        With `vouch`, the faces it vouches for (and that overlap no other face's footprint) are pasted
        without the full check; their identities still count for the faces that get it."""
        if item.error is not None:
            raise item.error
        self._escalate_late(item)
        active = item.changed
        start = time.perf_counter()
        generators = {i: _name(self.start_generator(item, i)) for i in active}
        notes = self._route_notes(item)
        verdicts: dict[int, FaceVerdict] = {}
        if not active:
            merged = item.image.copy()
        elif item.verify:
            merged = self._verify_vouched(item, active, generators, verdicts, vouch)
            item.timings["verify"] = time.perf_counter() - start
        else:
            merged = self._paste(item, active, generators)
            item.timings["merge"] = time.perf_counter() - start
        item.inversions.clear()
        for i, verdict in verdicts.items():
            notes[i]["verify"] = verdict.to_dict(self.verifier)
            memory = item.memory[i]
            if memory is not None:
                memory.raise_floor(verdict)
        return Finished(item, merged, generators, verdicts, notes)

    def hides(self, generator_name: str) -> bool:
        """Does the crop this generator made hide the face (pasted with the merger's whole-head mask)?"""
        return not (generator_name == self.generator.name and self.generator.synthesizes)

    def _route_notes(self, item: WorkItem) -> list[dict[str, Any]]:
        notes: list[dict[str, Any]] = [{} for _ in item.faces]
        for i, route in enumerate(item.routes):
            if route == Route.COVERAGE:
                coverage = self.coverage_detector
                notes[i]["found_by"] = f"coverage detector {coverage.name if coverage else '?'}"
                notes[i]["found_in_pass"] = item.faces[i].face.detector  # e.g. "centerface+rot90"
            elif route == Route.SMALL:
                notes[i]["obfuscated_because"] = (
                    f"smaller than coverage.min_face_size ({self.config.coverage.min_face_size:g} px)"
                )
            elif route == Route.CARRIED:
                notes[i]["carried_from"] = (
                    "this person's keyframe (its crop, verified there, pasted at these landmarks)"
                )
            elif route == Route.ESCALATED:
                notes[i]["obfuscated_because"] = "this person's track needed this obfuscation on an earlier frame"
            elif route == Route.PREDICTED:
                notes[i]["obfuscated_because"] = "a lost track's predicted position (no detection in this frame)"
            elif route == Route.KEEP:
                notes[i]["kept_because"] = (
                    "chosen to stay unchanged (--keep-face/--only-face/--only-largest/--max-faces/faces JSON)"
                )
        return notes

    def _verify_vouched(
        self,
        item: WorkItem,
        active: list[int],
        generators: dict[int, str],
        verdicts: dict[int, FaceVerdict],
        vouch: Vouch | None,
    ) -> np.ndarray:
        """Fail closed over `active`, less the faces `vouch` vouches for that overlap none of the others."""
        if vouch is None:
            return self._verify(item, active, generators, verdicts)
        merged = self._paste(item, active, generators)
        vouched = set(vouch(item, merged, list(active)))
        if all(i in vouched for i in active):
            return merged
        # faces whose pasted pixels meet are checked together (pasted apart, they would not add up to `merged`)
        rects = [self._written(item, i, merged) for i in active]
        seeds = [k for k, i in enumerate(active) if i not in vouched]
        full = [active[k] for k in overlap_group(rects, seeds)] if seeds else []
        if not full:
            return merged
        rest = [i for i in active if i not in full]
        # the output without the checked faces: their written rectangles given back their input pixels (no other
        # face changed a pixel there, or its rectangle would meet theirs and it would be checked with them)
        base = merged.copy()
        for k, i in enumerate(active):
            if i in full:
                x0, y0, x1, y1 = rects[k]
                base[y0:y1, x0:x1] = item.image[y0:y1, x0:x1]
        assert item.originals is not None
        return self._verify(
            item, full, generators, verdicts, base, pick(item.originals, rest), pasted=merged
        )  # rest's identities are read only if compared

    def _written(self, item: WorkItem, i: int, merged: np.ndarray) -> Rect:
        """The pixel rectangle of face `i`'s footprint where `merged` differs from the input (empty: none).

        It holds what face `i`'s paste wrote and whatever a neighbour's paste wrote into its footprint, so
        faces are grouped at least as often as their own writes meet (never checked apart when they should
        not be), without pasting each face on its own."""
        window = clipped_window(footprint(item.faces[i], item.image.shape, grow=0.0), item.image.shape)
        changed = changed_pixels(item.image, merged, window)
        return changed if changed is not None else (window[0], window[1], window[0], window[1])

    def _paste(self, item: WorkItem, indices: list[int], generators: dict[int, str]) -> np.ndarray:
        """The item's image with the crops of faces `indices` pasted (hidden or drawn, as their generator says)."""
        return self.merger.merge(
            item.image,
            [item.faces[i] for i in indices],
            [item.crops[i] for i in indices],
            [self.hides(generators[i]) for i in indices],
        )

    def _verify(
        self,
        item: WorkItem,
        active: list[int],
        generators: dict[int, str],
        verdicts: dict[int, FaceVerdict],
        base: np.ndarray | None = None,
        vouched: Sequence[IdentityEmbedding] = (),
        pasted: np.ndarray | None = None,
    ) -> np.ndarray:
        """Fail closed over the faces this run changes (`active`); kept faces are neither pasted nor checked.

        `base`: the image the faces are pasted onto (the item's own, or with vouched-for faces pasted);
        `vouched`: those faces' identities, compared with every face found like the image's others;
        `pasted`: `active`'s crops already pasted onto `base` (not pasted again)."""
        assert item.originals is not None
        reuse = self.generator.retry_keeps_inversion

        def regenerate(indices: list[int], generator: Generator[Any], attempt: int) -> list[np.ndarray]:
            chosen = [active[k] for k in indices]
            # a reusable inversion keeps the face's seed (the seed drives the inversion's noise, rp_core docs/method.md)
            seeds = [item.seeds[i] + (0 if reuse else attempt) for i in chosen]
            kept: list[Inversion | None] = [item.inversions.get(i) if reuse else None for i in chosen]
            return self.invert_generate(
                [item.faces[i] for i in chosen],
                [item.identities[i] for i in chosen],
                seeds,
                [item.prompts[i] for i in chosen],
                generator,
                kept,
            )[0]

        def stronger(attempt: int) -> Generator[Any] | None:
            generator = self.generator.stronger(attempt, self.config.verify.guidance_factor)
            if generator is not None:
                generator.load()  # pooled weights: shares the loaded pipeline, loads nothing twice
            return generator

        policy = replace(
            self.fail_closed(),
            others=chain(self.recent.others(item), vouched),
            kept=tuple(f.face.box for i, f in enumerate(item.faces) if i not in item.changed),
        )
        if not item.search:
            policy = replace(policy, finder=None)
        verdict = policy.enforce(
            item.image if base is None else base,
            [item.faces[i] for i in active],
            [item.crops[i] for i in active],
            pick(item.originals, active),
            [generators[i] for i in active],
            [i in item.drawn for i in active],
            self.merger.merge,
            regenerate,
            lambda k: self.confirmed_face(item, active[k]),
            stronger,
            pasted=pasted,
        )
        for i, face_verdict in zip(active, verdict.faces, strict=True):
            generators[i] = face_verdict.generator
            verdicts[i] = face_verdict
        return verdict.image

    def find_on_output(self, image: np.ndarray, region: Box) -> list[Face]:
        """Faces the detectors find in `region` of `image` (upsampled when small), in image coordinates."""
        return [face for detector in self._distinct_detectors() for face in _search_region(detector, image, region)]

    def _distinct_detectors(self) -> list[Detector[Any]]:
        """The main detector, and the coverage detector when it is not the very same detector and options."""
        coverage, main = self.coverage_detector, self.detector
        same = coverage is not None and coverage.name == main.name and coverage.options == main.options
        return [main] if coverage is None or same else [main, coverage]

    def confirmed_face(self, item: WorkItem, i: int) -> bool:
        """Does a detector of another family than the one that found face `i` see a face there in the original?"""
        face = item.faces[i].face
        family = face.detector.split("+", 1)[0]  # "centerface+rot90": found by centerface in a turned pass
        others = [d for d in (self.detector, self.coverage_detector) if d is not None and d.name != family]
        if not others:
            return True  # nothing independent to ask: treat it as a face (fail closed)
        region = footprint(item.faces[i], item.image.shape, grow=0.0)
        for detector in others:
            if any(iou(f.box, face.box) > 0.1 for f in _search_region(detector, item.image, region)):
                return True
        return False


class Lane:
    """Items in, items out in the order they came, their faces to generate gathered into full batches."""

    def __init__(self, stream: FaceStream, on_error: ErrorHandler | None = None) -> None:
        self.stream = stream
        self.on_error = on_error
        self.pending: deque[WorkItem] = deque()
        self.queue: deque[tuple[WorkItem, int]] = deque()

    def add(self, item: WorkItem) -> None:
        """Queue the item's faces to generate and run every batch that is full."""
        self.pending.append(item)
        self.queue.extend((item, i) for i in item.to_generate)
        batch = self.stream.pipeline.batch_size
        while len(self.queue) >= batch:
            self.stream.run_batch([self.queue.popleft() for _ in range(batch)], self.on_error)

    def drain(self) -> None:
        """Run the last, partial batches."""
        batch = self.stream.pipeline.batch_size
        while self.queue:
            self.stream.run_batch([self.queue.popleft() for _ in range(min(batch, len(self.queue)))], self.on_error)

    def ready(self) -> Iterator[WorkItem]:
        """Items whose faces are all generated (or that failed), in input order."""
        while self.pending and self.pending[0].done:
            yield self.pending.popleft()


def _name(generator: Generator[Any] | None) -> str:
    return "" if generator is None else generator.name


#: Real pixels around a searched region, as a share of its larger side: a window cut out of a photo has hard
#: edges where CenterFace sees faces that are not there (t1: 0.30 at a window's edge, nothing with this context).
#: What is found centred in this margin is not counted (unchanged pixels, searched on the input already).
SEARCH_CONTEXT = 0.1


def _search_region(detector: Detector[Any], image: np.ndarray, region: Box) -> list[Face]:
    """Faces `detector` finds in `region` (the pixels that changed and the face, `geometry.changed_box`),
    enlarged so a face shrunk to a quarter of it is still big enough for the detector (its `smallest_face`:
    4x for dlib's HOG, not at all for CenterFace on faces of ~100 px; never reduced: a pixelated face searched
    smaller looks like a face), and turned every way an attacker would (every quarter turn and the turns
    between, as the detector's `roll_tolerance` needs)."""
    from rp_core.coverage import region_turns, search_region

    turns = region_turns(detector.roll_tolerance)
    side = round(4 * detector.smallest_face)
    return search_region(
        detector.detect,
        image,
        region,
        margin=SEARCH_CONTEXT,
        face_side=side,
        max_factor=4.0,
        turns=turns,
    )


def read_only(image: np.ndarray) -> np.ndarray:
    """A view of `image` no stage can write through."""
    view = image.view()
    view.setflags(write=False)
    return view


def _filled(known: Sequence[IdentityEmbedding | None], read: Sequence[IdentityEmbedding]) -> list[IdentityEmbedding]:
    """`known` with each None replaced, in order, by the next of `read` (a predicted face takes its track's)."""
    fresh = iter(read)
    return [next(fresh) if original is None else original for original in known]


def per_item_error(exc: Exception) -> Exception:
    """Expected errors pass as they are; anything else becomes one line naming its type."""
    if isinstance(exc, RpError):
        return exc
    wrapped = RpError(f"{type(exc).__name__}: {exc}".splitlines()[0])
    wrapped.__cause__ = exc
    return wrapped
