"""The per-file work of a run: read, anonymize and write the files of a plan, wherever it runs.

`FileWork` is what an executor runs: `LocalExecutor` in this process, each Ray actor
(rp_core.scale) on its share of the plan. It never touches the journal or the manifest: it
yields one `Outcome` per file and the session, their single writer, records it. A photo is
published here, atomically, as it finishes (`intent` notes it in the journal first where the
journal is in reach); a video is encoded into a finished temporary file that the session
publishes, so each video has one publisher however many workers tried it.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rp_core.errors import InputError, RpError, VerificationError
from rp_core.io import ImageMetadata, InputPlan
from rp_core.manifest import ImageEntry
from rp_core.pipeline import Pipeline
from rp_core.run_options import Event, ManifestPaths, SessionOptions
from rp_core.types import ImageResult

if TYPE_CHECKING:
    from rp_core.orchestrator import Anonymizer


@dataclass(frozen=True)
class FileNames:
    """How the manifest names each job's input and output (the driver and every worker name them alike)."""

    plan: InputPlan
    mode: ManifestPaths
    #: Inputs are named from the deepest folder holding them all, outputs from the manifest's folder.
    sources: Path
    targets: Path

    @classmethod
    def of(cls, plan: InputPlan, mode: ManifestPaths) -> FileNames:
        targets = plan.manifest_path.absolute().parent
        sources = targets if plan.in_place else common_root([job.source for job in plan.jobs])
        return cls(plan, mode, sources, targets)

    def _name(self, path: Path, root: Path) -> str:
        if self.mode == "absolute":
            return str(path)
        relative = os.path.relpath(path, root) if root != Path("") else str(path)
        if self.mode == "hashed":
            return hashlib.sha256(relative.encode()).hexdigest()[:16] + path.suffix.lower()
        return relative

    def source(self, i: int) -> str:
        return self._name(self.plan.jobs[i].source, self.sources)

    def target(self, i: int) -> str:
        return self._name(self.plan.jobs[i].target, self.targets)


def common_root(paths: list[Path]) -> Path:
    """The deepest folder holding every path (the root that manifest and faces-JSON names are relative to)."""
    if not paths:
        return Path("")
    return Path(os.path.commonpath([str(p.absolute().parent) for p in paths]))


@dataclass(frozen=True)
class Outcome:
    """One file's final record, as the work reports it to the session."""

    index: int
    entry: ImageEntry
    #: The face count when the file went through the pipeline to its writer (a "done" file), else None.
    faces: int | None = None
    #: A finished video at its temporary name, for the session to publish as `entry.output`.
    staged: Path | None = None


@dataclass(frozen=True)
class _Decoded:
    """What reading a photo gave that writing it needs (faces are batched across files in between)."""

    metadata: ImageMetadata
    read_s: float
    input_sha256: str | None


class FileWork:
    """Anonymize jobs of a plan with a loaded pipeline: `run(indices)` yields one `Outcome` per job."""

    def __init__(
        self,
        pipeline: Pipeline,
        plan: InputPlan,
        options: SessionOptions,
        on_event: Callable[[Event], None],
    ) -> None:
        self.pipeline, self.plan, self.options, self.on_event = pipeline, plan, options, on_event
        self.names = FileNames.of(plan, options.manifest_paths)
        self.anonymizer: Anonymizer | None = None
        self._decoded: dict[int, _Decoded] = {}  # photos read and not yet written
        self._failed: deque[Outcome] = deque()  # failures reported by the stream (possibly from its worker thread)
        self._faces_for = self._given_faces()

    def load(self) -> None:
        from rp_core.orchestrator import Anonymizer

        self.anonymizer = Anonymizer(pipeline=self.pipeline)
        self.anonymizer.load()

    def run(self, indices: Sequence[int], intent: Callable[[ImageEntry], None] | None = None) -> Iterator[Outcome]:
        """Videos one after another (frames in order), then the photos with faces batched across them.

        `intent(entry)` runs just before a photo replaces anything at its output (the session
        journals it, so a resumed run knows the output is its own).
        """
        from rp_core.video.probe import is_video

        assert self.anonymizer is not None, "load() first"
        videos = [i for i in indices if is_video(self.plan.jobs[i].source)]
        for i in videos:
            yield self._video(i)
        photos = [i for i in indices if i not in videos]
        if photos:
            stream = self.anonymizer.anonymize_stream(
                self._images(photos),
                aligned=self.options.aligned,
                on_error=self._image_failed,
                faces_for=self._faces_for,
            )
            for key, result in stream:
                assert isinstance(key, int)
                yield from self._drain()
                yield self._write(key, result, intent)
        yield from self._drain()

    def _drain(self) -> Iterator[Outcome]:
        while self._failed:
            yield self._failed.popleft()

    def _entry(self, i: int, status: str = "pending") -> ImageEntry:
        return ImageEntry(self.names.source(i), self.names.target(i), status)

    def _fail(self, i: int, exc: Exception) -> Outcome:
        self._decoded.pop(i, None)
        status = "verification_failed" if isinstance(exc, VerificationError) else "failed"
        self.on_event(Event("failed", str(exc)))
        return Outcome(i, ImageEntry(self.names.source(i), None, status, error=str(exc)))

    # -- photos -------------------------------------------------------------------------------

    def _images(self, todo: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Decode inputs lazily; a bad file is reported and skipped, the run goes on."""
        from rp_core.io import read_image_with_metadata

        for i in todo:
            job = self.plan.jobs[i]
            start = time.perf_counter()
            try:
                digest = hashlib.sha256(job.source.read_bytes()).hexdigest() if self.plan.in_place else None
                array, metadata = read_image_with_metadata(job.source)
            except (InputError, OSError) as exc:
                self._failed.append(
                    self._fail(i, exc if isinstance(exc, InputError) else InputError(f"{job.source}: {exc}"))
                )
                continue
            if metadata.flattened_transparency:
                self.on_event(Event("warning", f"{job.source}: transparent areas flattened onto white"))
            self._decoded[i] = _Decoded(metadata, time.perf_counter() - start, digest)
            yield i, array

    def _image_failed(self, key: Any, exc: Exception) -> None:
        """A decoded image the pipeline could not anonymize safely: nothing is written for it."""
        job = self.plan.jobs[int(key)]
        message = str(exc)
        if str(job.source) not in message:
            message = f"{job.source}: {message}"
        error = type(exc)(message) if isinstance(exc, RpError) else RpError(message)
        self._failed.append(self._fail(int(key), error))

    def _given_faces(self) -> Callable[[Any, np.ndarray], list[Any] | None] | None:
        """The faces JSON's faces for each job, looked up by the same names the manifest uses."""
        if self.options.faces_json is None:
            return None
        from rp_core.selection import face_choices_from_json, read_faces_json

        by_name = read_faces_json(self.options.faces_json)

        def faces_for(key: Any, image: np.ndarray) -> list[Any] | None:
            source = self.plan.jobs[int(key)].source
            entry = by_name.get(self.names.source(int(key)))
            if entry is None:
                self.on_event(Event("warning", f"{source}: not in the faces JSON; detected"))
                return None
            return face_choices_from_json(entry, image.shape, str(source))

        return faces_for

    def _write(self, i: int, result: ImageResult, intent: Callable[[ImageEntry], None] | None) -> Outcome:
        from rp_core.io import write_image

        job = self.plan.jobs[i]
        decoded = self._decoded.pop(i)
        entry = self._entry(i)
        start = time.perf_counter()
        entry.faces = [record.to_dict() for record in result.records]
        if result.face_count == 0 and self.pipeline.config.verify.no_face == "refuse":
            entry.status, entry.output = "no_face_refused", None
            entry.error = f"{job.source}: no face found; not written (verify.no_face=refuse)"
            self.on_event(Event("failed", entry.error))
            return Outcome(i, entry, result.face_count)
        entry.status = "anonymized" if result.face_count else "no_face"
        note = ImageEntry(entry.input, entry.output, "writing", faces=entry.faces, final_status=entry.status)
        note.input_sha256 = decoded.input_sha256
        try:
            write_image(
                job.target,
                result.image,
                metadata=decoded.metadata,  # always: a JPEG keeps its own quantization tables
                keep_metadata=self.options.keep_metadata,
                keep_gps=self.options.keep_gps,
                quality=self.options.quality,
                before_publish=(lambda: intent(note)) if intent is not None else None,
            )
        except (InputError, OSError) as exc:
            entry.status, entry.output, entry.error = "failed", None, f"{job.target}: cannot write ({exc})"
            self.on_event(Event("failed", entry.error))
            return Outcome(i, entry, result.face_count)
        entry.timings = {"read": decoded.read_s, **result.timings, "write": time.perf_counter() - start}
        self._announce(job.source, result)
        return Outcome(i, entry, result.face_count)

    def _announce(self, source: Path, result: ImageResult) -> None:
        """Console lines for what a user must know about one image: no face, or faces not regenerated."""
        if result.face_count == 0:
            kept = "kept" if self.options.keep_metadata else "stripped"
            kind = "info" if self.pipeline.config.verify.no_face == "copy" else "warning"
            self.on_event(Event(kind, f"{source}: no face found; re-encoded unchanged (metadata {kept})"))
            return
        for record in result.records:
            verify = record.notes.get("verify", {})
            what = None
            if verify.get("unconfirmed"):
                self.on_event(
                    Event(
                        "info",
                        f"{source}: face {record.index}: probably not a face (only {record.detector} saw it, no "
                        f"detector of another family does); obfuscated with {record.generator} as a precaution",
                    )
                )
            elif verify.get("last_resort"):
                what = f"filled with {verify['last_resort']} (it still matched after {verify.get('fallback')})"
            elif verify.get("fallback"):
                what = f"obfuscated with {verify['fallback']} (the {self.pipeline.generator.name} result still matched)"
            elif "found_by" in record.notes:
                what = f"obfuscated with {record.generator} (found only by the {record.notes['found_by']})"
            elif "obfuscated_because" in record.notes:
                what = f"obfuscated with {record.generator} ({record.notes['obfuscated_because']})"
            if what:
                self.on_event(Event("warning", f"{source}: face {record.index}: {what}"))

    # -- videos -------------------------------------------------------------------------------

    def _video(self, i: int) -> Outcome:
        """Encode one video (rp_core.video) into a finished temporary file beside its output: the session publishes it."""
        from rp_core.video import VideoOptions, anonymize_video

        job = self.plan.jobs[i]

        def progress(p: Any) -> None:
            eta = f", ETA {p.eta_s:.0f} s" if p.eta_s else ""
            self.on_event(Event("info", f"{job.source}: frame {p.frame}/{p.frames}, {p.fps:.1f} frames/s{eta}"))

        options = VideoOptions.from_config(self.pipeline.config.video)
        try:
            result = anonymize_video(self.pipeline, job.source, job.target, options, progress, staged=True)
        except (RpError, OSError) as exc:
            return self._fail(i, exc if isinstance(exc, RpError) else InputError(f"{job.source}: {exc}"))
        except ImportError as exc:
            return self._fail(i, InputError(f"{job.source}: videos need {exc.name}: pip install 'rp-anonymize[video]'"))
        except Exception as exc:  # a decoder or encoder error from PyAV: one line, the run goes on
            return self._fail(i, InputError(f"{job.source}: {type(exc).__name__}: {exc}".splitlines()[0]))
        entry = self._entry(i, "anonymized" if result.faces else "no_face")
        entry.video = result.to_dict()
        entry.timings = dict(result.timings)
        return Outcome(i, entry, result.faces, staged=result.path)
