"""The cheap check of a tracked face: its output compared with what it was on the track's last fully verified frame.

The full check (rp_core.verify: the identity read again, the output searched by every detector at every
turn, compared with every identity) costs most of a video's time. A person's face changes little from one
frame to the next, and neither does its obfuscation: when a track's face sits where it sat on a frame
whose output passed the full check (its box overlaps that box by `min_iou`), comes from the same
generator, and its output, seen in the face's own aligned square, differs from the verified output by at
most `tolerance` grey levels in every cell of that square, then what an attacker can find there was
already searched for and found safe. Anything else (a new track, a track that was lost or only
predicted, a moved face, another obfuscation, a cell that changed) gets the full check, whose output then
becomes the track's new reference. The difference is measured against the verified output itself, never
against the previous frame, so small changes cannot add up unchecked.

Only what the merge wrote is compared (the rest of the square is the frame's own pixels), less the outer
EDGE pixels of what it wrote: there the merge's feather shows the frame's own (moving) pixels through the
obfuscation, and a mask placed a pixel further along starts a pixel sooner. Measured on the 720p pan-zoom clip,
a carried crop differs from its reference by 2-3 grey levels inside that ring and by 12-27 with it, so with it
most carried faces failed the cheap check over pixels no face fits in. With
`video.regenerate=keyframes` a track's verified crop is carried to its next frames (pasted at their
landmarks), so the carried output matches its reference to a few grey levels; a crop drawn anew every frame
(pixelation blocks over slightly shifted content) differs by about as much as the tolerance, and often gets the
full check.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from rp_core.config import CHEAP_IOU, CHEAP_TOLERANCE
from rp_core.geometry import Box, iou
from rp_core.identities import Encode, LazyIdentities, face_identities
from rp_core.stream import FaceMemory, FaceStream, Finished, Route, WorkItem
from rp_core.types import AlignedFace, Face, IdentityEmbedding
from rp_core.verify import FaceVerdict
from rp_core.video.tracks import PREDICTED

#: Side of the square a face's output is compared in, and of the cells compared (8 x 8 cells of 16 px).
PROBE_SIDE = 128
CELL = 16
#: A cell counts when at least this share of it was written (by this frame's merge or by the reference's).
COVERED = 0.25
#: Width (px of the PROBE_SIDE square, about 1.5 % of it) of the outer ring of a written region that is not
#: compared: the merge's feathered edge, and the pixel a mask shifts by between frames.
EDGE = 2


@dataclass(frozen=True)
class Square:
    """A face's aligned square of an output (int16), which of its pixels the merge wrote (differ from the input),
    and which lie in the frame (a face near the edge has part of its square outside: nothing is seen there)."""

    pixels: np.ndarray
    written: np.ndarray
    inside: np.ndarray

    @classmethod
    def of(cls, output: np.ndarray, original: np.ndarray, face: AlignedFace) -> Square:
        pixels = _square(output, face)
        frame = np.full(output.shape[:2], 255, dtype=np.uint8)
        inside = _square(frame, face) > 0  # any part of the pixel in the frame: it counts
        return cls(pixels, np.any(pixels != _square(original, face), axis=2), inside)


def _square(image: np.ndarray, face: AlignedFace) -> np.ndarray:
    """The face's aligned square of `image` at PROBE_SIDE px (outside the image black)."""
    import cv2

    matrix = np.asarray(face.matrix, dtype=np.float64) * (PROBE_SIDE / face.size)
    square = cv2.warpAffine(image, matrix, (PROBE_SIDE, PROBE_SIDE), flags=cv2.INTER_AREA, borderValue=0)
    return square.astype(np.int16)


def cell_difference(now: Square, reference: Square) -> float:
    """The largest mean absolute difference (grey levels, over the colour channels) of any cell, over the pixels
    written on either square (the obfuscated region; the rest is the input's own pixels, searched on the input)
    that lie in the frame now.

    A pixel written on one and not on the other compares an obfuscated pixel with an original one: it counts
    (but for the EDGE ring of each written region).
    A pixel now outside the frame shows nothing: it does not (a face leaving the frame keeps its cheap check;
    one entering it compares its new pixels with the black outside of its reference, and gets the full check)."""
    union = ((_without_edge(now.written) | _without_edge(reference.written)) & now.inside).astype(np.float32)
    diff = np.abs(now.pixels - reference.pixels).astype(np.float32).mean(axis=2) * union
    shape = (PROBE_SIDE // CELL, CELL, PROBE_SIDE // CELL, CELL)
    sums, counts = diff.reshape(shape).sum(axis=(1, 3)), union.reshape(shape).sum(axis=(1, 3))
    covered = counts >= COVERED * CELL * CELL
    if not covered.any():
        return 0.0
    return float((sums[covered] / counts[covered]).max())


def _without_edge(written: np.ndarray) -> np.ndarray:
    """`written` less its outer EDGE pixels (a region thinner than 2 * EDGE + 1 px is dropped whole)."""
    import cv2

    kernel = np.ones((2 * EDGE + 1, 2 * EDGE + 1), np.uint8)
    return cv2.erode(written.astype(np.uint8), kernel).astype(bool)


@dataclass(frozen=True)
class Reference:
    """A track's face on its last fully verified frame."""

    box: Box
    generator: str
    square: Square
    #: The main generator's crop that passed there, and the frame it was drawn on (its keyframe); None when
    #: the output came from a retry, a fallback or a fill (nothing to carry).
    crop: np.ndarray | None = None
    keyframe: int = 0


@dataclass
class CheapCounts:
    """How each face of the verified frames was checked."""

    full: int = 0
    cheap: int = 0
    #: Faces that went to the cheap check and failed it (then got the full check).
    escalated: int = 0
    #: Faces carried from their keyframe (not generated on their frame).
    carried: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"full": self.full, "cheap": self.cheap, "cheap_failed": self.escalated, "carried": self.carried}


@dataclass
class TrackChecks:
    """Per track: its reference, the cheap check against it, the crop it carries, its identity as last read."""

    stream: FaceStream
    tolerance: float = CHEAP_TOLERANCE
    min_iou: float = CHEAP_IOU
    #: Carry a track's verified crop to its next frames (`video.regenerate=keyframes`) for at most this many frames
    #: after the frame it was drawn on; 0: draw every face on every frame.
    keyframe_every: int = 0
    references: dict[int, Reference] = field(default_factory=dict)
    #: The original identity of each track as last read on a detected face.
    identities: dict[int, IdentityEmbedding] = field(default_factory=dict)
    counts: CheapCounts = field(default_factory=CheapCounts)
    #: Per item: the faces given a track's identity instead of a reading, and the reference each carried face
    #: carries (its cheap check compares with that one).
    _known: dict[object, set[int]] = field(default_factory=dict)
    _carried: dict[object, dict[int, Reference]] = field(default_factory=dict)

    def original(self, track: int | None, predicted: bool) -> IdentityEmbedding | None:
        """The identity a frame's face is given instead of being read: a predicted face always (its landmarks
        are a guess, what is read there is nobody), a detected one when the cheap check may vouch for it."""
        if track is None or not (predicted or (self.tolerance > 0 and not self.stream.selection_by_identity)):
            return None
        return self.identities.get(track)

    def carry(self, memory: FaceMemory | None, face: Face, frame: int) -> Reference | None:
        """The reference whose crop a detected face carries on `frame` instead of being drawn again, if any."""
        if memory is None or memory.floor != "generator" or face.detector == PREDICTED:
            return None
        reference = self.references.get(memory.number)
        if reference is None or reference.crop is None or frame - reference.keyframe >= self.keyframe_every:
            return None
        return reference if iou(face.box, reference.box) >= self.min_iou else None

    def prepared(self, item: WorkItem, given: list[bool], carried: dict[int, Reference]) -> None:
        """Remember which faces of `item` were given an identity or carry a crop, and the identities read."""
        self._known[item.key] = {i for i, known in enumerate(given) if known}
        self._carried[item.key] = {i: r for i, r in carried.items() if item.routes[i] == Route.CARRIED}
        self.counts.carried += len(self._carried[item.key])
        if item.originals is None:
            return
        for i, memory in enumerate(item.memory):
            if memory is not None and not given[i] and item.faces[i].face.detector != PREDICTED:
                self.identities[memory.number] = item.originals[i]

    def vouch(self, item: WorkItem, merged: np.ndarray, active: list[int]) -> Collection[int]:
        """The faces of `active` the cheap check vouches for; the others with a given identity are read again."""
        known = self._known.get(item.key, set())
        vouched: list[int] = []
        again: list[int] = []
        for i in active:
            reason = self._cheap(item, merged, i)
            if reason is None:
                vouched.append(i)
                continue
            if reason != "not eligible":
                self.counts.escalated += 1
            if i in known and item.faces[i].face.detector != PREDICTED:
                again.append(i)
        if again and item.originals is not None:
            checker = self.stream.identity_checker()
            if checker is not None:
                item.originals = self._read_again(item, item.originals, again, checker.encode)
        return vouched

    def _read_again(
        self, item: WorkItem, given: Sequence[IdentityEmbedding], again: list[int], encode: Encode
    ) -> LazyIdentities:
        """`given` with faces `again` read anew on the frame, when the full check first compares something
        (most outputs show no face to compare: then nothing is read); each read updates its track's identity."""
        fresh = face_identities(encode, item.image, [item.faces[i].face for i in again])

        def read() -> list[IdentityEmbedding]:
            originals = list(given)
            for i, embedding in zip(again, fresh, strict=True):
                originals[i] = embedding
                memory = item.memory[i]
                if memory is not None:
                    self.identities[memory.number] = embedding
            return originals

        return LazyIdentities(read, len(given))

    def _cheap(self, item: WorkItem, merged: np.ndarray, i: int) -> str | None:
        """None when face `i` passes the cheap check, else why not ("not eligible": it was never a candidate)."""
        memory = item.memory[i]
        face = item.faces[i]
        if (
            self.tolerance <= 0
            or memory is None
            or face.face.detector == PREDICTED
            or item.routes[i] not in (Route.GENERATE, Route.ESCALATED, Route.CARRIED)
        ):
            return "not eligible"
        reference = self._carried.get(item.key, {}).get(i) or self.references.get(memory.number)
        if reference is None:
            return "not eligible"
        generator = self.stream.start_generator(item, i)
        if generator is None or generator.name != reference.generator:
            return "another obfuscation"
        if iou(face.face.box, reference.box) < self.min_iou:
            return "moved"
        if cell_difference(Square.of(merged, item.image, face), reference.square) > self.tolerance:
            return "changed"
        return None

    def finished(self, done: Finished) -> tuple[str, ...]:
        """Update the references from a finished item; how each face was checked ("full", "cheap" or "")."""
        item = done.item
        self._known.pop(item.key, None)
        carried = self._carried.pop(item.key, {})
        frame = item.key if isinstance(item.key, int) else 0
        kinds: list[str] = []
        for i, af in enumerate(item.faces):
            memory = item.memory[i]
            verdict = done.verdicts.get(i)
            predicted = af.face.detector == PREDICTED
            if memory is not None and predicted:
                self.references.pop(memory.number, None)  # a lost track: the full check when it is found again
            if verdict is not None:
                self.counts.full += 1
                kinds.append("full")
                if memory is not None and not predicted:
                    self.references[memory.number] = self._reference(done, i, verdict, carried.get(i), frame)
            elif item.verify and i in item.changed:
                self.counts.cheap += 1  # vouched for (a vouched face pasted next to a fully checked one has a verdict)
                kinds.append("cheap")
            else:
                kinds.append("")
        return tuple(kinds)

    def _reference(
        self, done: Finished, i: int, verdict: FaceVerdict, carried: Reference | None, frame: int
    ) -> Reference:
        """Face `i`'s verified output; its crop too when it is the main generator's crop as drawn (or carried)."""
        item, af = done.item, done.item.faces[i]
        square = Square.of(done.image, item.image, af)
        drawn = (
            i in item.drawn
            and verdict.generator == self.stream.generator.name
            and not (verdict.retries or verdict.fallback or verdict.last_resort)
        )
        if not drawn or i not in item.crops:
            return Reference(af.face.box, verdict.generator, square)
        keyframe = carried.keyframe if carried is not None else frame
        return Reference(af.face.box, verdict.generator, square, item.crops[i], keyframe)
