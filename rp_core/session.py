"""One run over files: plan, journal, atomic writes, resume, manifest, summary and exit status.

`RunSession` is what `rp anonymize` and `rp_core.api.anonymize_files` both run, so the
Python API has the same guarantees as the command line: an output is published only when
complete, a killed run resumes where it stopped (`resume=True`), every file ends with one
manifest record, and a file that fails is reported while the run goes on. It reports what
happens through an `on_event` callback; it never prints.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rp_core.errors import InputError, RpError, VerificationError
from rp_core.io import ImageMetadata, InputPlan
from rp_core.manifest import ImageEntry, Journal, RunManifest, journal_path, previous_entries
from rp_core.pipeline import Pipeline
from rp_core.types import ImageResult

if TYPE_CHECKING:
    from rp_core.orchestrator import Anonymizer

#: Exit status of a run whose only problem is images without a face under `verify.no_face` warn/refuse.
NO_FACE_EXIT = 6
ManifestPaths = Literal["relative", "hashed", "absolute"]


@dataclass(frozen=True)
class SessionOptions:
    """How a run treats existing outputs, metadata and paths (the pipeline decides everything else)."""

    aligned: bool = False
    overwrite: bool = False
    resume: bool = False
    keep_metadata: bool = False
    #: With keep_metadata: also keep GPS (it is dropped otherwise; names and face regions always are).
    keep_gps: bool = False
    #: JPEG/WebP quality 1-100; None: a JPEG input reuses its own quantization tables, others 95.
    quality: int | None = None
    #: A faces JSON from `rp detect` (possibly edited): its faces replace detection (coverage still runs).
    faces_json: Path | None = None
    #: How input and output paths appear in the manifest: relative to the input/output root (default),
    #: hashed (nothing of a folder or file name travels with the outputs), or as given.
    manifest_paths: ManifestPaths = "relative"


@dataclass(frozen=True)
class Event:
    """Something a run reports: `kind` is start | skip | safety | warning | failed | info | done.

    `safety` names a setting that loosens fail-closed: shown on every run, even the quietest.

    `done` comes once per written file with its face count, the output and the seconds it took.
    """

    kind: str
    message: str = ""
    total: int = 0
    faces: int = 0
    path: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The event as one JSON object (`--log-json`), without empty fields."""
        data = {"event": self.kind, "message": self.message, "total": self.total, "faces": self.faces}
        data |= {"path": self.path, "seconds": round(self.seconds, 4)}
        return {k: v for k, v in data.items() if v not in ("", 0, 0.0) or k == "event"}


@dataclass(frozen=True)
class RunSummary:
    """The outcome of a run: counts, the manifest's records, and the exit status the CLI uses."""

    entries: tuple[ImageEntry, ...]
    fresh: tuple[ImageEntry, ...]
    skipped: int
    manifest_path: Path | None
    warnings: tuple[str, ...] = ()

    @property
    def anonymized(self) -> int:
        return sum(e.status == "anonymized" for e in self.fresh)

    @property
    def no_face(self) -> int:
        return sum(e.status in ("no_face", "no_face_refused") for e in self.fresh)

    @property
    def failed(self) -> list[ImageEntry]:
        return [e for e in self.entries if e.status in ("failed", "verification_failed")]

    @property
    def refused(self) -> list[ImageEntry]:
        return [e for e in self.failed if e.status == "verification_failed"]

    @property
    def faces(self) -> int:
        return sum(len(e.faces) for e in self.fresh)

    def exit_code(self, no_face_policy: str = "copy") -> int:
        if self.refused:
            return VerificationError.exit_code
        if self.failed:
            return InputError.exit_code
        if no_face_policy != "copy" and self.no_face:
            return NO_FACE_EXIT
        return 0

    def line(self) -> str:
        text = (
            f"{self.anonymized} anonymized ({self.faces} faces), {self.no_face} without a face, "
            f"{self.skipped} skipped, {len(self.failed)} failed"
        )
        if self.refused:
            text += f" ({len(self.refused)} refused: a face still matched its original)"
        return text + (f"; manifest: {self.manifest_path}" if self.manifest_path else "")


class RunSession:
    """Anonymize the files of an `InputPlan` with an assembled pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        plan: InputPlan,
        options: SessionOptions | None = None,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        from rp_core.verify import safety_warnings

        self.pipeline, self.plan = pipeline, plan
        self.options = options if options is not None else SessionOptions()
        self.on_event = on_event if on_event is not None else (lambda event: None)
        self.warnings = tuple(safety_warnings(pipeline, self.options.aligned))
        self.metadata: dict[int, ImageMetadata] = {}
        self.input_digest: dict[int, str] = {}
        self.read_times: dict[int, float] = {}
        self.entries: dict[int, ImageEntry] = {}
        self.skipped: set[int] = set()  # outputs that existed and were left alone by this run
        self.journal = Journal(journal_path(plan.manifest_path))
        #: Loaded by `_load` when there is work.
        self.anonymizer: Anonymizer | None = None
        #: Package versions for the manifest when the pixels are made elsewhere (None: this process's).
        self.packages: dict[str, str] | None = None
        # outputs are named from the manifest's folder; inputs from the deepest folder holding them all
        self._targets = plan.manifest_path.absolute().parent
        self._sources = self._targets if plan.in_place else common_root([job.source for job in plan.jobs])

    # -- names in the manifest -----------------------------------------------------------------

    def _name(self, path: Path, root: Path) -> str:
        mode = self.options.manifest_paths
        if mode == "absolute":
            return str(path)
        relative = os.path.relpath(path, root) if root != Path("") else str(path)
        if mode == "hashed":
            return hashlib.sha256(relative.encode()).hexdigest()[:16] + path.suffix.lower()
        return relative

    def source_name(self, i: int) -> str:
        return self._name(self.plan.jobs[i].source, self._sources)

    def target_name(self, i: int) -> str:
        return self._name(self.plan.jobs[i].target, self._targets)

    # -- planning -----------------------------------------------------------------------------

    def _plan_todo(self) -> list[int]:
        """Which jobs to run; the others keep their earlier manifest entry, or get a skipped one.

        An existing output is never replaced without overwrite, with one exception under resume:
        an output the interrupted run itself was publishing (its journal notes the intent before
        the file replaces anything) is redone, or, in place, taken as done when the file on disk
        is no longer the input the intent recorded (the rename happened before the kill).
        """
        from rp_core.io import temporary_files_for

        previous = previous_entries(self.plan.manifest_path)
        resume, overwrite, in_place = self.options.resume, self.options.overwrite, self.plan.in_place
        if resume:  # a killed run may leave its temporary files behind: they are never outputs
            for target in {*(job.target for job in self.plan.jobs), self.plan.manifest_path}:
                for temporary in temporary_files_for(target):
                    temporary.unlink(missing_ok=True)
        todo = []
        for i, job in enumerate(self.plan.jobs):
            # records name files as this run's manifest_paths does, or as given (runs before relative names)
            earlier = previous.get(self.source_name(i)) or previous.get(str(job.source))
            ours = earlier is not None and earlier.output in (self.target_name(i), str(job.target))
            done_before = earlier is not None and earlier.status in ("anonymized", "no_face") and (in_place or ours)
            publishing = resume and earlier is not None and earlier.status == "writing" and ours
            exists = in_place or job.target.exists()
            if publishing and in_place and earlier is not None and _published(job.target, earlier):
                self.entries[i] = _finished_from_intent(earlier)
            elif overwrite or not exists:
                todo.append(i)
            elif in_place:  # an in-place output always exists: only a resumed, recorded one is done
                if resume and done_before and earlier is not None:
                    self.entries[i] = earlier
                else:
                    todo.append(i)
            elif publishing:
                todo.append(i)
            else:
                if done_before and earlier is not None:
                    self.entries[i] = earlier  # keep what the earlier run recorded about this output
                else:
                    self.entries[i] = ImageEntry(self.source_name(i), self.target_name(i), "skipped_existing")
                if not (resume and done_before):
                    self.skipped.add(i)
                    self.on_event(Event("skip", f"{job.target}: exists, skipped (use --overwrite to replace it)"))
        if resume:
            resumed = sum(1 for i in self.entries if i not in self.skipped)
            self.on_event(Event("info", f"resuming: {resumed} files already done, {len(todo)} to go"))
        return todo

    # -- running ------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Load the pipeline (only when there is work), anonymize, write, and return the summary."""
        from rp_core.io import cannot_write, check_writable_folder

        started = time.perf_counter()
        for warning in self.warnings:
            self.on_event(Event("safety", warning))
        self._report_plan()
        try:
            check_writable_folder(self.plan.manifest_path.parent)  # before loading models for minutes
            todo = self._plan_todo()
        except OSError as exc:
            raise cannot_write(self.plan.output, exc) from exc
        load_start = time.perf_counter()
        if todo:
            self._load(todo)
        manifest = RunManifest(
            config=self.pipeline.config.model_dump(mode="json"),
            components=self.pipeline.describe(),
            warnings=list(self.warnings),
            paths=self.options.manifest_paths,
            in_place=self.plan.in_place,
        )
        manifest.timings["load"] = time.perf_counter() - load_start
        if todo:
            try:
                self.journal.open(keep=self.options.resume)
            except OSError as exc:
                raise cannot_write(self.plan.output, exc) from exc
            self.on_event(Event("start", total=len(todo)))
            try:
                self._anonymize(todo)
            finally:
                self.journal.close(remove=False)
        manifest.packages = self.packages
        manifest.images = [self.entries[i] for i in sorted(self.entries)]
        manifest.timings["total"] = time.perf_counter() - started
        written = todo or any(e.status != "skipped_existing" for e in manifest.images)
        if written:
            try:
                manifest.write(self.plan.manifest_path)
                self.journal.close(remove=True)
            except OSError as exc:
                raise cannot_write(self.plan.output, exc) from exc
        fresh = tuple(e for i, e in sorted(self.entries.items()) if i not in self.skipped)
        return RunSummary(
            entries=tuple(manifest.images),
            fresh=fresh,
            skipped=len(self.skipped),
            manifest_path=self.plan.manifest_path if written else None,
            warnings=self.warnings,
        )

    def _load(self, todo: list[int]) -> None:
        """Load the models where `todo` will be anonymized (here; rp_core.scale: on its workers)."""
        from rp_core.orchestrator import Anonymizer

        self.anonymizer = Anonymizer(pipeline=self.pipeline)
        self.anonymizer.load()

    def _anonymize(self, todo: list[int]) -> None:
        """Anonymize, write and record every job of `todo`, the journal open (rp_core.scale hands them to workers)."""
        from rp_core.video.probe import is_video

        videos = {i for i in todo if is_video(self.plan.jobs[i].source)}
        for i in sorted(videos):
            self._video(i)
        for i, faces in self.process([i for i in todo if i not in videos]):
            entry = self.entries[i]
            self.journal.record(entry)
            job = self.plan.jobs[i]
            seconds = sum(entry.timings.values())
            done = Event("done", f"{job.source}: {entry.status}", faces=faces, path=str(job.target), seconds=seconds)
            self.on_event(done)

    def _video(self, i: int) -> None:
        """Anonymize one video (rp_core.video): every frame through the pipeline, published whole or not at all."""
        from rp_core.video import VideoOptions, anonymize_video

        job = self.plan.jobs[i]
        entry = self.entries[i] = ImageEntry(self.source_name(i), self.target_name(i), "pending")

        def progress(p: Any) -> None:
            eta = f", ETA {p.eta_s:.0f} s" if p.eta_s else ""
            self.on_event(Event("info", f"{job.source}: frame {p.frame}/{p.frames}, {p.fps:.1f} frames/s{eta}"))

        def before_publish(result: Any) -> None:
            status = "anonymized" if result.faces else "no_face"
            if status == "no_face" and self.pipeline.config.verify.no_face == "refuse":
                raise InputError(f"{job.source}: no face in any frame; not written (verify.no_face=refuse)")
            self.journal.record(ImageEntry(entry.input, entry.output, "writing", final_status=status))

        try:
            result = anonymize_video(self.pipeline, job.source, job.target, VideoOptions(), progress, before_publish)
        except (RpError, OSError) as exc:
            self._fail(i, exc if isinstance(exc, RpError) else InputError(f"{job.source}: {exc}"))
            return
        except ImportError as exc:
            self._fail(i, InputError(f"{job.source}: videos need {exc.name}: pip install 'rp-anonymize[video]'"))
            return
        except Exception as exc:  # a decoder or encoder error from PyAV: one line, the run goes on
            self._fail(i, InputError(f"{job.source}: {type(exc).__name__}: {exc}".splitlines()[0]))
            return
        entry.status = "anonymized" if result.faces else "no_face"
        entry.video = result.to_dict()
        entry.timings = dict(result.timings)
        self.journal.record(entry)
        self.on_event(Event("done", f"{job.source}: {entry.status}", faces=result.faces, path=str(job.target)))

    def process(self, todo: list[int]) -> Iterator[tuple[int, int]]:
        """Anonymize and write jobs `todo` in this process; yield (job, face count) for each one that reached the writer.

        The others (unreadable, failed, refused) are recorded in `entries` and reported as they fail.
        A Ray worker runs this on its share of the plan, with its journal closed.
        """
        assert self.anonymizer is not None, "_load() first"
        stream = self.anonymizer.anonymize_stream(
            self._images(todo), aligned=self.options.aligned, on_error=self._image_failed, faces_for=self._given_faces()
        )
        for key, result in stream:
            assert isinstance(key, int)
            self._write(key, result)
            yield key, result.face_count

    def _given_faces(self) -> Callable[[Any, np.ndarray], list[Any] | None] | None:
        """The faces JSON's faces for each job, looked up by the same names the manifest uses."""
        if self.options.faces_json is None:
            return None
        from rp_core.selection import face_choices_from_json, read_faces_json

        by_name = read_faces_json(self.options.faces_json)

        def faces_for(key: Any, image: np.ndarray) -> list[Any] | None:
            entry = by_name.get(self.source_name(int(key)))
            if entry is None:
                self.on_event(Event("warning", f"{self.plan.jobs[int(key)].source}: not in the faces JSON; detected"))
                return None
            return face_choices_from_json(entry, image.shape, str(self.plan.jobs[int(key)].source))

        return faces_for

    def _report_plan(self) -> None:
        """Every path the plan skipped, with its reason, and a count of those that may still show a face."""
        for skipped in self.plan.skipped:
            self.on_event(Event("skip", f"skipped ({skipped.reason}): {skipped.path}"))
        risky = self.plan.may_hold_faces
        if risky:
            hint = (
                "; add --follow-symlinks to anonymize link targets in place"
                if self.plan.in_place and any("symlink" in s.reason for s in risky)
                else ""
            )
            self.on_event(Event("warning", f"{len(risky)} skipped file(s) may still show faces{hint}"))
        for path in self.plan.linked_elsewhere:
            self.on_event(Event("warning", f"{path} has other hard links: the original stays readable under them"))

    def _images(self, todo: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Decode inputs lazily; a bad file is reported and skipped, the run goes on."""
        from rp_core.io import read_image_with_metadata

        for i in todo:
            job = self.plan.jobs[i]
            start = time.perf_counter()
            try:
                if self.plan.in_place:
                    self.input_digest[i] = hashlib.sha256(job.source.read_bytes()).hexdigest()
                array, metadata = read_image_with_metadata(job.source)
            except (InputError, OSError) as exc:
                self._fail(i, exc if isinstance(exc, InputError) else InputError(f"{job.source}: {exc}"))
                continue
            self.entries[i] = ImageEntry(self.source_name(i), self.target_name(i), "pending")
            if metadata.flattened_transparency:
                self.on_event(Event("warning", f"{job.source}: transparent areas flattened onto white"))
            self.metadata[i] = metadata
            self.read_times[i] = time.perf_counter() - start
            yield i, array

    def _fail(self, i: int, exc: Exception) -> None:
        status = "verification_failed" if isinstance(exc, VerificationError) else "failed"
        self.entries[i] = ImageEntry(self.source_name(i), None, status, error=str(exc))
        self.on_event(Event("failed", str(exc)))
        self.journal.record(self.entries[i])

    def _image_failed(self, key: Any, exc: Exception) -> None:
        """A decoded image the pipeline could not anonymize safely: nothing is written for it."""
        job = self.plan.jobs[int(key)]
        message = str(exc)
        if str(job.source) not in message:
            message = f"{job.source}: {message}"
        error = type(exc)(message) if isinstance(exc, RpError) else RpError(message)
        self._fail(int(key), error)

    def _write(self, i: int, result: ImageResult) -> None:
        from rp_core.io import write_image

        job = self.plan.jobs[i]
        entry = self.entries[i]
        start = time.perf_counter()
        entry.faces = [record.to_dict() for record in result.records]
        policy = self.pipeline.config.verify.no_face
        if result.face_count == 0 and policy == "refuse":
            entry.status, entry.output = "no_face_refused", None
            entry.error = f"{job.source}: no face found; not written (verify.no_face=refuse)"
            self.on_event(Event("failed", entry.error))
            return
        entry.status = "anonymized" if result.face_count else "no_face"
        intent = ImageEntry(
            entry.input,
            entry.output,
            "writing",
            faces=entry.faces,
            input_sha256=self.input_digest.get(i),
            final_status=entry.status,
        )
        try:
            write_image(
                job.target,
                result.image,
                metadata=self.metadata[i],  # always: a JPEG keeps its own quantization tables
                keep_metadata=self.options.keep_metadata,
                keep_gps=self.options.keep_gps,
                quality=self.options.quality,
                before_publish=lambda: self.journal.record(intent),  # so resume knows the output is ours
            )
        except (InputError, OSError) as exc:
            entry.status, entry.output, entry.error = "failed", None, f"{job.target}: cannot write ({exc})"
            self.on_event(Event("failed", entry.error))
            return
        entry.timings = {"read": self.read_times.get(i, 0.0), **result.timings, "write": time.perf_counter() - start}
        self._announce(job.source, result)

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
            if verify.get("last_resort"):
                what = f"filled with {verify['last_resort']} (it still matched after {verify.get('fallback')})"
            elif verify.get("fallback"):
                what = f"obfuscated with {verify['fallback']} (the {self.pipeline.generator.name} result still matched)"
            elif "found_by" in record.notes:
                what = f"obfuscated with {record.generator} (found only by the {record.notes['found_by']})"
            elif "obfuscated_because" in record.notes:
                what = f"obfuscated with {record.generator} ({record.notes['obfuscated_because']})"
            if what:
                self.on_event(Event("warning", f"{source}: face {record.index}: {what}"))


def common_root(paths: list[Path]) -> Path:
    """The deepest folder holding every path (the root that manifest and faces-JSON names are relative to)."""
    if not paths:
        return Path("")
    return Path(os.path.commonpath([str(p.absolute().parent) for p in paths]))


def _published(target: Path, intent: ImageEntry) -> bool:
    """Did the killed run's rename happen? The in-place file no longer has the input's bytes."""
    if not intent.input_sha256:
        return False
    try:
        return hashlib.sha256(target.read_bytes()).hexdigest() != intent.input_sha256
    except OSError:
        return False


def _finished_from_intent(intent: ImageEntry) -> ImageEntry:
    return ImageEntry(intent.input, intent.output, intent.final_status or "anonymized", faces=list(intent.faces))
