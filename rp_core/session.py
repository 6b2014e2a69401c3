"""One run over files: plan, journal, publishing, resume, manifest, summary and exit status.

`RunSession` is what `rp anonymize` and `rp_core.api.anonymize_files` both run, so the
Python API has the same guarantees as the command line: an output is published only when
complete, a killed run resumes where it stopped (`resume=True`), every file ends with one
manifest record, and a file that fails is reported while the run goes on. Where the files are
anonymized is the executor it is given (rp_core.executor: this process, or Ray workers); the
session stays the one writer of the journal and the manifest, and publishes every video. It
reports what happens through an `on_event` callback; it never prints.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rp_core.errors import InputError, VerificationError
from rp_core.executor import Executor, LocalExecutor, WorkSpec
from rp_core.io import InputPlan
from rp_core.manifest import ImageEntry, Journal, RunManifest, journal_path, previous_entries
from rp_core.pipeline import Pipeline
from rp_core.run_options import Destination, Event, ManifestPaths, SessionOptions
from rp_core.work import FileNames, Outcome, common_root

__all__ = [
    "NO_FACE_EXIT",
    "Destination",
    "Event",
    "FileRecord",
    "ManifestPaths",
    "RunSession",
    "RunSummary",
    "SessionOptions",
    "common_root",
]

#: Exit status of a run whose only problem is images without a face under `verify.no_face` warn/refuse.
NO_FACE_EXIT = 6


@dataclass
class FileRecord:
    """What the session knows of one job: its manifest record, and whether this run left the output alone."""

    entry: ImageEntry
    #: An output that existed and was not replaced (counted as skipped in the summary).
    skipped: bool = False


@dataclass(frozen=True)
class RunSummary:
    """The outcome of a run: counts, the manifest's records, and the exit status the CLI uses."""

    entries: tuple[ImageEntry, ...]
    fresh: tuple[ImageEntry, ...]
    skipped: int
    manifest_path: Path | None
    warnings: tuple[str, ...] = ()
    #: Inputs the plan left out (not an image or video, unreadable links, ...), each reported when the run began.
    unsupported: int = 0

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
        """Faces of photos, and face instances of videos (one per face per frame, as the video's bar counts)."""
        return sum(len(e.faces) + int((e.video or {}).get("faces", 0)) for e in self.fresh)

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
            f"{self.anonymized} anonymized ({self.faces} face{'' if self.faces == 1 else 's'}), "
            f"{self.no_face} without a face, "
            f"{self.skipped + self.unsupported} skipped, {len(self.failed)} failed"
        )
        if self.refused:
            text += f" ({len(self.refused)} refused: a face still matched its original)"
        return text + (f"; manifest: {self.manifest_path}" if self.manifest_path else "")


def default_executor(pipeline: Pipeline) -> Executor:
    """This process; for a pipeline whose every stage runs on the CPU (an obfuscating generator: no inversion,
    no new face), worker processes, one per core (`runtime.cpu_workers`), so a folder's photos use every core."""
    from rp_core.scale.processes import cpu_workers

    workers = cpu_workers(pipeline.config.runtime.cpu_workers)
    if workers > 1 and not pipeline.needs_inversion and not pipeline.generate.synthesizes:
        from rp_core.scale.processes import ProcessExecutor

        return ProcessExecutor(workers)
    return LocalExecutor()


class RunSession:
    """Anonymize the files of an `InputPlan` with an assembled pipeline, on `executor` (default: this process)."""

    def __init__(
        self,
        pipeline: Pipeline,
        plan: InputPlan,
        options: SessionOptions | None = None,
        on_event: Callable[[Event], None] | None = None,
        executor: Executor | None = None,
    ) -> None:
        from rp_core.verify import safety_warnings
        from rp_core.video.probe import is_video

        self.pipeline, self.plan = pipeline, plan
        self.options = options if options is not None else SessionOptions()
        self.on_event = on_event if on_event is not None else (lambda event: None)
        self.executor = executor if executor is not None else default_executor(pipeline)
        self.executor.check(plan)
        videos = any(is_video(job.source) for job in plan.jobs)
        self.warnings = (
            *safety_warnings(pipeline, self.options.aligned),
            *(pipeline.config.video.loosenings() if videos else ()),
        )
        self.files: dict[int, FileRecord] = {}
        self.journal = Journal(journal_path(plan.manifest_path))
        self.names = FileNames.of(plan, self.options.manifest_paths)

    def source_name(self, i: int) -> str:
        return self.names.source(i)

    def target_name(self, i: int) -> str:
        return self.names.target(i)

    # -- planning -----------------------------------------------------------------------------

    def _keep(self, i: int, entry: ImageEntry, skipped: bool = False) -> None:
        self.files[i] = FileRecord(entry, skipped)

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
                self._keep(i, _finished_from_intent(earlier))
            elif overwrite or not exists:
                todo.append(i)
            elif in_place:  # an in-place output always exists: only a resumed, recorded one is done
                if resume and done_before and earlier is not None:
                    self._keep(i, earlier)
                else:
                    todo.append(i)
            elif publishing:
                todo.append(i)
            else:
                kept = earlier if done_before and earlier is not None else None  # what the earlier run recorded
                skipped = not (resume and done_before)
                self._keep(i, kept or ImageEntry(self.source_name(i), self.target_name(i), "skipped_existing"), skipped)
                if skipped:
                    self.on_event(Event("skip", f"{job.target}: exists, skipped (use --overwrite to replace it)"))
        if resume:
            resumed = sum(1 for record in self.files.values() if not record.skipped)
            self.on_event(Event("info", f"resuming: {resumed} files already done, {len(todo)} to go"))
        return todo

    # -- running ------------------------------------------------------------------------------

    def run(self) -> RunSummary:
        """Load the pipeline where the files run (only when there is work), anonymize, record, return the summary."""
        from rp_core.files.lock import output_lock
        from rp_core.files.write import cannot_write

        with contextlib.ExitStack() as stack:
            try:  # a second run into the same output exits 2 here
                stack.enter_context(output_lock(self.plan.manifest_path))
            except OSError as exc:
                raise cannot_write(self.plan.output, exc) from exc
            try:
                return self._run()
            finally:
                self.executor.stop()

    def _run(self) -> RunSummary:
        from rp_core.io import cannot_write, check_writable_folder

        started = time.perf_counter()
        for warning in self.warnings:
            self.on_event(Event("safety", warning))
        self._report_plan()
        self._refuse_video_selection()
        try:
            check_writable_folder(self.plan.manifest_path.parent)  # before loading models for minutes
            todo = self._plan_todo()
        except OSError as exc:
            raise cannot_write(self.plan.output, exc) from exc
        load_start = time.perf_counter()
        if todo:
            self.executor.start(WorkSpec(self.pipeline, self.plan, self.options), todo, self.on_event)
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
                for outcome in self.executor.run(todo, self.journal.record):
                    self._finish(outcome)
            finally:
                self.journal.close(remove=False)
        manifest.packages = self.executor.packages
        manifest.images = [self.files[i].entry for i in sorted(self.files)]
        manifest.timings["total"] = time.perf_counter() - started
        written = todo or any(e.status != "skipped_existing" for e in manifest.images)
        if written:
            try:
                manifest.write(self.plan.manifest_path)
                self.journal.close(remove=True)
            except OSError as exc:
                raise cannot_write(self.plan.output, exc) from exc
        fresh = tuple(record.entry for _, record in sorted(self.files.items()) if not record.skipped)
        return RunSummary(
            entries=tuple(manifest.images),
            fresh=fresh,
            skipped=sum(record.skipped for record in self.files.values()),
            unsupported=len(self.plan.skipped),
            manifest_path=self.plan.manifest_path if written else None,
            warnings=self.warnings,
        )

    def _refuse_video_selection(self) -> None:
        """Selection flags a video cannot take are refused before any work, never ignored."""
        from rp_core.files.formats import is_video

        if any(is_video(job.source) for job in self.plan.jobs):
            from rp_core.video.frames import refuse_unsupported_selection

            refuse_unsupported_selection(aligned=self.options.aligned, faces_json=self.options.faces_json)

    def _finish(self, outcome: Outcome) -> None:
        """One file's outcome, wherever it ran: publish a staged video, record it, report it done."""
        i, entry, job = outcome.index, outcome.entry, self.plan.jobs[outcome.index]
        entry.input = self.source_name(i)  # as this run names it (a cluster's workers see absolute paths)
        if entry.output is not None:
            entry.output = self.target_name(i)
        done = outcome.faces is not None
        if outcome.staged is not None:
            done = self._publish_video(entry, outcome.staged, job.source, job.target)
        self._keep(i, entry)
        self.journal.record(entry)
        if done:
            seconds = entry.timings.get("total", sum(entry.timings.values()))  # a video's timings hold its total
            message = f"{job.source}: {entry.status}"
            self.on_event(Event("done", message, faces=outcome.faces or 0, path=str(job.target), seconds=seconds))

    def _publish_video(self, entry: ImageEntry, staged: Path, source: Path, target: Path) -> bool:
        """Move a finished video into place (journalled first), or refuse it; False (entry failed) when not written."""
        from rp_core.io import fsync_folder, publish

        error = None
        if entry.status == "no_face" and self.pipeline.config.verify.no_face == "refuse":
            error = f"{source}: no face in any frame; not written (verify.no_face=refuse)"
        else:
            self.journal.record(ImageEntry(entry.input, entry.output, "writing", final_status=entry.status))
            try:
                publish(staged, target)
                fsync_folder(target.parent)
            except OSError as exc:
                error = f"{target}: cannot write ({exc})"
        if error is None:
            return True
        staged.unlink(missing_ok=True)
        entry.status, entry.output, entry.error, entry.video = "failed", None, error, None
        self.on_event(Event("failed", error))
        return False

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
        self._announce_videos()

    def _announce_videos(self) -> None:
        """Say up front that videos are in the plan and how long they are: each frame costs what a photo does."""
        from rp_core.files.formats import is_video

        videos = [job.source for job in self.plan.jobs if is_video(job.source)]
        if not videos:
            return
        frames, seconds = 0, 0.0
        try:
            from rp_core.video.probe import probe

            for path in videos:
                info = probe(path)
                frames += info.frames
                seconds += info.duration_s or (info.frames / float(info.fps) if info.fps else 0.0)
        except Exception:  # unreadable or PyAV missing: the video's own job reports why, in one line
            frames = 0
        photos = len(self.plan.jobs) - len(videos)
        length = f": {frames} frames, {seconds:.1f} s of video" if frames else ""
        self.on_event(
            Event(
                "info",
                f"{len(videos)} video(s) among the inputs{length} ({photos} photo(s) besides); every frame is "
                "anonymized like a photo, so videos take most of the run; each one reports frames/s and an ETA",
            )
        )


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
