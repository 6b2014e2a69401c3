"""The `rp` command line.

Import-light on purpose: `rp --help` and `rp plugins` must answer in well under a
second, so torch, OpenCV and the orchestrator are imported inside the commands that
need them. Expected errors (RpError) print one message and exit with their code;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rp_core import __version__
from rp_core.errors import InputError, RpError
from rp_core.plugins import PluginHost

if TYPE_CHECKING:
    from rich.console import Console

    from rp_core.config import RunConfig
    from rp_core.io import ImageMetadata, InputPlan
    from rp_core.manifest import ImageEntry, RunManifest

_DEBUG = "rp.debug"
_PLUGINS_DIR = "rp.plugins_dir"
_HOST = "rp.host"


# -- errors, console, host -------------------------------------------------------------------


def _console() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False)


class RpGroup(click.Group):
    """A click group that turns expected errors into one message and their exit code."""

    def __init__(self, *args: Any, host: PluginHost | None = None, host_error: RpError | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.host = host
        self.host_error = host_error

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RpError as exc:
            if ctx.meta.get(_DEBUG):
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def _set_meta(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value:
            ctx.meta[key] = value

    return callback


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--plugins-dir and --debug, accepted by the group and by every command."""
    func = click.option(
        "--plugins-dir",
        type=click.Path(file_okay=False, path_type=Path),
        expose_value=False,
        is_eager=True,
        callback=_set_meta(_PLUGINS_DIR),
        help="Also load plugins from the .py files of this folder (env RP_PLUGINS_DIR).",
    )(func)
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_set_meta(_DEBUG),
        help="Show tracebacks for expected errors.",
    )(func)


def get_host(ctx: click.Context) -> PluginHost:
    """The plugin host of this invocation (one per process, rebuilt if --plugins-dir names another folder)."""
    if _HOST in ctx.meta:
        host: PluginHost = ctx.meta[_HOST]
        return host
    root = ctx.find_root().command
    plugins_dir = ctx.meta.get(_PLUGINS_DIR)
    if isinstance(root, RpGroup) and root.host is not None and plugins_dir is None:
        host = root.host
    elif isinstance(root, RpGroup) and root.host_error is not None and plugins_dir is None:
        raise root.host_error
    else:
        host = PluginHost(plugins_dir=plugins_dir)
    ctx.meta[_HOST] = host
    return host


# -- config options ----------------------------------------------------------------------------


class BatchSize(click.ParamType):
    name = "INTEGER|auto"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        if isinstance(value, int) or value == "auto":
            return value
        try:
            number = int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a whole number nor 'auto'", param, ctx)
        if number < 1:
            self.fail(f"{value!r} must be >= 1 (or 'auto')", param, ctx)
        return number


#: (flag, config flag key, click type, help). The keys are rp_core.config.FLAG_KEYS.
_FLAG_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("--detector", "detector", str, "Detector component name (see `rp plugins`)."),
    ("--identity-encoder", "identity_encoder", str, "Identity encoder component name."),
    ("--inverter", "inverter", str, "Inverter component name."),
    ("--generator", "generator", str, "Generator component name."),
    ("--merger", "merger", str, "Merger component name."),
    ("--attribute-prompt", "attribute_prompt", str, 'Steer the new face, e.g. "an old man".'),
    ("--sd-model", "sd_model", str, "SDXL model: hub id or local folder."),
    ("--ip-adapter", "ip_adapter", str, "IP-Adapter-FaceID weights: hub repo or local file."),
    ("--insightface-root", "insightface_root", str, "Folder holding models/buffalo_l/."),
    ("--device", "device", str, "auto, cpu, cuda, cuda:N or mps."),
    ("--skip", "skip", float, "Fraction of diffusion timesteps skipped (0-1)."),
    ("--id-emb-scale", "id_emb_scale", float, "Scale of the identity embedding."),
    ("--guidance-scale", "guidance_scale", float, "Guidance; negative pushes away from the identity."),
    ("--num-inversion-steps", "num_inversion_steps", int, "Number of inversion/generation steps."),
    ("--face-image-size", "face_image_size", int, "Side of the aligned face crop, pixels."),
    ("--det-thresh", "det_thresh", float, "Face detection confidence threshold."),
    ("--det-size", "det_size", int, "Detector input size."),
    ("--ip-adapter-scale", "ip_adapter_scale", float, "IP-Adapter attention scale."),
    ("--seed", "seed", int, "Random seed."),
    ("--dtype", "dtype", click.Choice(["auto", "float16", "bfloat16", "float32"]), "Model precision."),
    ("--batch-size", "batch_size", BatchSize(), "Faces per GPU batch, or 'auto'."),
    (
        "--models",
        "models_dir",
        click.Path(file_okay=False, path_type=Path),
        "Folder of model files (env RP_MODELS_DIR).",
    ),
)


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every option that shapes the resolved config, shared by anonymize, config show, doctor and models."""
    for flag, key, kind, help_text in reversed(_FLAG_OPTIONS):
        func = click.option(flag, key, type=kind, default=None, help=help_text)(func)
    func = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Set any config key, e.g. --set generator.options.blocks=8 (repeatable).",
    )(func)
    func = click.option("--preset", default=None, help="Start from a named preset (see `rp plugins`).")(func)
    func = click.option(
        "--config",
        "config_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Config file (.toml, .yaml or .yml).",
    )(func)
    return common_options(func)


def _pop_config_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    keys = ["config_file", "preset", "overrides", *(key for _, key, _, _ in _FLAG_OPTIONS)]
    return {key: kwargs.pop(key, None) for key in keys}


def resolve(ctx: click.Context, args: dict[str, Any]) -> RunConfig:
    from rp_core.config import resolve_config

    flags = {key: args[key] for _, key, _, _ in _FLAG_OPTIONS if args.get(key) is not None}
    if "models_dir" in flags:
        flags["models_dir"] = str(flags["models_dir"])
    return resolve_config(
        get_host(ctx),
        config_file=args.get("config_file"),
        preset=args.get("preset"),
        flags=flags,
        overrides=list(args.get("overrides") or ()),
    )


# -- the group -----------------------------------------------------------------------------


def create_cli(host: PluginHost | None = None) -> RpGroup:
    """A fresh `rp` group with the built-in commands and those plugins add through rp_register_commands."""
    host_error: RpError | None = None
    if host is None:
        try:
            host = PluginHost(plugins_dir=_argv_plugins_dir(sys.argv[1:]))
        except RpError as exc:  # `rp --help` must still work with a broken plugin installed
            host_error = exc

    @click.group(
        cls=RpGroup, host=host, host_error=host_error, context_settings={"help_option_names": ["-h", "--help"]}
    )
    @click.version_option(__version__, prog_name="rp")
    @common_options
    def rp() -> None:
        """Anonymize faces: regenerate every face with a new identity, keep the rest of the photo."""

    for command in (anonymize, plugins, config, doctor, models, samples):
        rp.add_command(command)
    if host is not None:
        try:
            host.add_commands(rp)
        except RpError as exc:
            rp.host_error = exc
    return rp  # type: ignore[return-value]


def _argv_plugins_dir(argv: Sequence[str]) -> str | None:
    """Plugin commands must exist before click parses, so --plugins-dir is looked up early."""
    for i, arg in enumerate(argv):
        if arg == "--plugins-dir" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--plugins-dir="):
            return arg.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point."""
    create_cli().main(args=list(argv) if argv is not None else None, prog_name="rp")


# -- rp anonymize ------------------------------------------------------------------------------


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=False, path_type=Path))
@click.option("-o", "--output", default=None, type=click.Path(path_type=Path), help="Output file or folder.")
@config_options
@click.option(
    "--aligned",
    is_flag=True,
    help="Treat each input as one already-aligned face crop (its landmarks are still detected; an image with several faces is refused).",
)
@click.option("--overwrite", is_flag=True, help="Replace outputs that already exist (default: skip them).")
@click.option(
    "--resume",
    is_flag=True,
    help="Finish an interrupted run: keep the outputs it wrote (writes are atomic) and its manifest entries.",
)
@click.option(
    "--in-place", is_flag=True, help="Replace each input by its anonymized version (instead of -o); irreversible."
)
@click.option("--keep-metadata", is_flag=True, help="Keep EXIF/XMP/ICC/comments (default: strip all metadata).")
@click.pass_context
def anonymize(ctx: click.Context, inputs: tuple[Path, ...], output: Path | None, in_place: bool, **kwargs: Any) -> None:
    """Anonymize every face in the input files or folders; OUTPUT is a file, or a folder mirroring the inputs."""
    from rp_core.io import plan_in_place, plan_inputs

    if output is None and not in_place:
        raise click.UsageError("give an output with -o/--output, or --in-place to replace the inputs")
    if output is not None and in_place:
        raise click.UsageError("-o/--output and --in-place exclude each other")
    if output is not None:
        for source in inputs:
            if source.is_dir() and output.resolve() == source.resolve():
                raise click.UsageError(
                    f"the output folder {output} is the input folder; choose another output folder "
                    "(or use --in-place to replace the inputs)"
                )
    args = _pop_config_args(kwargs)
    config = resolve(ctx, args)
    plan = plan_in_place(inputs) if in_place else plan_inputs(inputs, output)  # type: ignore[arg-type]
    console = _console()
    for path in plan.ignored:
        console.print(f"ignored (not a supported image): {path}", markup=False)
    if not plan.jobs:
        from rp_core.io import SUPPORTED_EXTENSIONS

        names = ", ".join(str(p) for p in inputs)
        count = len(plan.ignored)
        ignored = f" ({count} unsupported file{'' if count == 1 else 's'} ignored)" if count else ""
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise click.UsageError(f"no images found in {names}{ignored}; supported: {supported}")
    _Run(get_host(ctx), config, plan, console, **kwargs).execute()


class _Run:
    """One `rp anonymize` invocation: load, stream, write, report."""

    def __init__(
        self,
        host: PluginHost,
        config: RunConfig,
        plan: InputPlan,
        console: Console,
        *,
        aligned: bool,
        overwrite: bool,
        keep_metadata: bool,
        resume: bool = False,
    ) -> None:
        from rp_core.manifest import Journal, journal_path

        self.host, self.config, self.plan, self.console = host, config, plan, console
        self.aligned, self.overwrite, self.keep_metadata, self.resume = aligned, overwrite, keep_metadata, resume
        self.metadata: dict[int, ImageMetadata] = {}
        self.read_times: dict[int, float] = {}
        self.entries: dict[int, ImageEntry] = {}
        self.skipped: set[int] = set()  # outputs that existed and were left alone by this run
        self.journal = Journal(journal_path(plan.manifest_path))

    def _plan_todo(self) -> list[int]:
        """Which jobs to run; the others keep their earlier manifest entry, or get a skipped one.

        An existing output is never replaced without --overwrite, with one exception under --resume:
        an output the interrupted run itself was publishing (its journal notes the intent before the
        file replaces anything, see `_write`) is redone; redoing one is deterministic.
        """
        from rp_core.io import temporary_files_for
        from rp_core.manifest import ImageEntry, previous_entries

        previous = previous_entries(self.plan.manifest_path)
        if self.resume:  # a killed run may leave its temporary files behind: they are never outputs
            for target in {*(job.target for job in self.plan.jobs), self.plan.manifest_path}:
                for temporary in temporary_files_for(target):
                    temporary.unlink(missing_ok=True)
        todo = []
        for i, job in enumerate(self.plan.jobs):
            earlier = previous.get(str(job.source))
            done_before = (
                earlier is not None
                and earlier.status in ("anonymized", "no_face")
                and (self.plan.in_place or earlier.output == str(job.target))
            )
            ours = (
                self.resume
                and earlier is not None
                and earlier.status == "writing"
                and earlier.output == str(job.target)
            )
            exists = self.plan.in_place or job.target.exists()
            if self.overwrite or not exists:
                todo.append(i)
            elif self.plan.in_place:  # an in-place output always exists: only a resumed, recorded one is done
                if self.resume and done_before and earlier is not None:
                    self.entries[i] = earlier
                else:
                    todo.append(i)
            elif ours:
                todo.append(i)
            else:
                if done_before and earlier is not None:
                    self.entries[i] = earlier  # keep what the earlier run recorded about this output
                else:
                    self.entries[i] = ImageEntry(str(job.source), str(job.target), "skipped_existing")
                if not (self.resume and done_before):
                    self.skipped.add(i)
                    self.console.print(f"{job.target}: exists, skipped (use --overwrite to replace it)", markup=False)
        if self.resume:
            resumed = sum(1 for i in self.entries if i not in self.skipped)
            self.console.print(f"resuming: {resumed} files already done, {len(todo)} to go", markup=False)
        return todo

    def execute(self) -> None:
        from rp_core.io import check_writable_folder
        from rp_core.manifest import RunManifest

        started = time.perf_counter()
        anonymizer = _build_anonymizer(self.config, self.host)
        with self._writing():
            check_writable_folder(self.plan.manifest_path.parent)  # before loading models for minutes
            todo = self._plan_todo()
        load_start = time.perf_counter()
        if todo:
            anonymizer.load()
        manifest = RunManifest(config=self.config.model_dump(mode="json"), components=_component_info(anonymizer))
        manifest.timings["load"] = time.perf_counter() - load_start
        if todo:
            # a resumed run appends to the journal the killed one left, so nothing it did is forgotten
            with self._writing():
                self.journal.open(keep=self.resume)
            try:
                self._stream(anonymizer, todo)
            finally:
                self.journal.close(remove=False)
        manifest.images = [self.entries[i] for i in sorted(self.entries)]
        manifest.timings["total"] = time.perf_counter() - started
        if todo or any(e.status != "skipped_existing" for e in manifest.images):
            with self._writing():
                manifest.write(self.plan.manifest_path)
                self.journal.close(remove=True)
        self._summary(manifest)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """An output location that cannot be written is one InputError line, not a traceback."""
        from rp_core.io import cannot_write

        try:
            yield
        except OSError as exc:
            raise cannot_write(self.plan.output, exc) from exc

    def _stream(self, anonymizer: Any, todo: list[int]) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            files = progress.add_task("files", total=len(todo))
            faces = progress.add_task("faces", total=None)
            self._advance = lambda: progress.advance(files)
            stream = anonymizer.anonymize_stream(self._images(todo), aligned=self.aligned, on_error=self._image_failed)
            for key, result in stream:
                self._write(int(key), result)
                self.journal.record(self.entries[int(key)])
                progress.advance(faces, result.face_count)
                progress.advance(files)

    def _images(self, todo: list[int]) -> Iterator[tuple[int, Any]]:
        """Decode inputs lazily; a bad file is reported and skipped, the run goes on."""
        from rp_core.io import read_image_with_metadata
        from rp_core.manifest import ImageEntry

        for i in todo:
            job = self.plan.jobs[i]
            start = time.perf_counter()
            try:
                array, metadata = read_image_with_metadata(job.source)
            except InputError as exc:
                self._fail(i, exc)
                continue
            self.entries[i] = ImageEntry(str(job.source), str(job.target), "pending")
            self.metadata[i] = metadata
            self.read_times[i] = time.perf_counter() - start
            yield i, array

    def _fail(self, i: int, exc: Exception) -> None:
        from rp_core.errors import VerificationError
        from rp_core.manifest import ImageEntry

        job = self.plan.jobs[i]
        status = "verification_failed" if isinstance(exc, VerificationError) else "failed"
        self.entries[i] = ImageEntry(str(job.source), None, status, error=str(exc))
        self.console.print(f"failed: {exc}", markup=False)
        self.journal.record(self.entries[i])
        self._advance()

    def _image_failed(self, key: Any, exc: Exception) -> None:
        """A decoded image the pipeline could not anonymize safely: nothing is written for it."""
        job = self.plan.jobs[int(key)]
        message = str(exc)
        if str(job.source) not in message:
            message = f"{job.source}: {message}"
        error = type(exc)(message) if isinstance(exc, RpError) else RpError(message)
        self._fail(int(key), error)

    def _write(self, i: int, result: Any) -> None:
        from rp_core.io import write_image
        from rp_core.manifest import ImageEntry

        job = self.plan.jobs[i]
        entry = self.entries[i]
        start = time.perf_counter()
        intent = ImageEntry(str(job.source), str(job.target), "writing")
        try:
            write_image(
                job.target,
                result.image,
                metadata=self.metadata[i] if self.keep_metadata else None,
                before_publish=lambda: self.journal.record(intent),  # so --resume knows the output is ours
            )
        except (InputError, OSError) as exc:
            entry.status, entry.output, entry.error = "failed", None, f"{job.target}: cannot write ({exc})"
            self.console.print(f"failed: {entry.error}", markup=False)
            return
        entry.faces = [record.to_dict() for record in result.records]
        entry.timings = {"read": self.read_times.get(i, 0.0), **result.timings, "write": time.perf_counter() - start}
        if result.face_count == 0:
            entry.status = "no_face"
            kept = "kept" if self.keep_metadata else "stripped"
            self.console.print(f"{job.source}: no face found; re-encoded unchanged (metadata {kept})", markup=False)
        else:
            entry.status = "anonymized"

    def _summary(self, manifest: RunManifest) -> None:
        entries = manifest.images
        fresh = [e for i, e in sorted(self.entries.items()) if i not in self.skipped]
        done = sum(e.status == "anonymized" for e in fresh)
        no_face = sum(e.status == "no_face" for e in fresh)
        skipped = len(self.skipped)
        failed = [e for e in entries if e.status in ("failed", "verification_failed")]
        leaking = [e for e in failed if e.status == "verification_failed"]
        faces = sum(len(e.faces) for e in fresh)
        line = f"{done} anonymized ({faces} faces), {no_face} without a face, {skipped} skipped, {len(failed)} failed"
        if leaking:
            line += f" ({len(leaking)} refused: a face still matched its original)"
        where = f"; manifest: {self.plan.manifest_path}" if any(e.status != "skipped_existing" for e in entries) else ""
        self.console.print(line + where, markup=False)
        if failed:
            self.console.print(f"{len(failed)} of {len(entries)} files failed:", markup=False)
            for entry in failed:
                self.console.print(f"  {entry.error}", markup=False)
            from rp_core.errors import VerificationError

            raise click.exceptions.Exit(VerificationError.exit_code if leaking else InputError.exit_code)


def _build_anonymizer(config: RunConfig, host: PluginHost) -> Any:
    try:
        from rp_core.orchestrator import Anonymizer
    except ImportError as exc:
        from rp_core.doctor import LIBGL_HINT

        hint = f" ({LIBGL_HINT})" if "libGL" in str(exc) else ""
        raise RpError(f"cannot import the pipeline: {exc}{hint}") from exc
    return Anonymizer(config, host)


def _component_info(anonymizer: Any) -> dict[str, dict[str, Any]]:
    info = {}
    for section in anonymizer.sections_in_use():
        component = anonymizer.component(section)
        registration = anonymizer.host.get(section, component.name)
        info[section] = {
            "name": component.name,
            "version": component.version(),
            "plugin": registration.plugin,
            "plugin_version": anonymizer.host.plugin_version(registration.plugin),
        }
    return info


# -- rp plugins / config show ---------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@common_options
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List plugins with their versions, hooks and the components they provide."""
    described = get_host(ctx).describe()
    if as_json:
        click.echo(json.dumps(described, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("plugin", "version", "provides")
    for plugin in described:
        provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in plugin["provides"].items())
        table.add_row(plugin["name"], plugin["version"], provides or "(commands/hooks only)")
    Console(soft_wrap=False).print(table)


@click.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@config_options
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.pass_context
def config_show(ctx: click.Context, fmt: str, **kwargs: Any) -> None:
    """Print the fully resolved config (defaults < preset < file < env < flags)."""
    resolved = resolve(ctx, _pop_config_args(kwargs)).model_dump(mode="json")
    if fmt == "json":
        click.echo(json.dumps(resolved, indent=2))
    else:
        import yaml

        click.echo(yaml.safe_dump(resolved, sort_keys=False).rstrip())


# -- rp doctor / models ------------------------------------------------------------------------


@click.command()
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, **kwargs: Any) -> None:
    """Which components can run here, and which model files are present or missing."""
    from rp_core.doctor import CORE_MODULES, check_components, import_status
    from rp_core.errors import MissingModelsError

    host = get_host(ctx)
    resolved = resolve(ctx, _pop_config_args(kwargs))
    core = {module: import_status(module) for module in CORE_MODULES}
    report = check_components(host, resolved)
    if as_json:
        click.echo(json.dumps({"core": core, "components": [h.to_dict() for h in report]}, indent=2))
    else:
        _print_doctor(core, report)
    in_use = [h for h in report if h.in_use]
    missing = [f for h in in_use for f in h.missing_files]
    if missing:
        raise MissingModelsError(missing)
    broken_core = [module for module, reason in core.items() if reason]
    if broken_core or any(not h.ok for h in in_use):
        raise RpError("some components this config uses cannot run here (see above)")


def _print_doctor(core: dict[str, str | None], report: Sequence[Any]) -> None:
    console = _console()
    for module, reason in core.items():
        console.print(f"core  {module:<10} {'ok' if reason is None else 'BROKEN: ' + reason}", markup=False)
    for health in report:
        mark = "ok" if health.ok else "NOT READY"
        use = "in use" if health.in_use else "available"
        console.print(f"{health.kind:<16} {health.name:<18} {use:<9} {mark}  (plugin {health.plugin})", markup=False)
        for module, reason in health.imports.items():
            if reason is not None:
                console.print(f"    import {module}: {reason}", markup=False)
        if health.error:
            console.print(f"    error: {health.error}", markup=False)
        for f in health.files:
            if f.present:
                console.print(f"    present: {f.description} at {f.found_at}", markup=False)
            else:
                looked = ", ".join(str(p) for p in f.looked_in) or "(nowhere)"
                console.print(f"    MISSING: {f.description}; looked in {looked}; get it: {f.how_to_get}", markup=False)


@click.group()
def models() -> None:
    """Fetch the model files a config needs."""


@models.command("download")
@config_options
@click.option(
    "--to",
    "target",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Download into this folder (copy it to an offline machine, then use --models DIR there).",
)
@click.pass_context
def models_download(ctx: click.Context, target: Path | None, **kwargs: Any) -> None:
    """Download every model file the chosen components need (into their usual caches, or --to DIR)."""
    from rp_core.doctor import components_in_use
    from rp_core.errors import MissingModelsError
    from rp_core.models import DOWNLOAD_HOSTS, network_available

    args = _pop_config_args(kwargs)
    if target is not None:
        args["models_dir"] = target
        target.mkdir(parents=True, exist_ok=True)
    resolved = resolve(ctx, args)
    console = _console()
    components = components_in_use(get_host(ctx), resolved)
    problems: list[str] = []
    incomplete = {s: c for s, c in components.items() if any(not f.present for f in c.model_files())}
    if incomplete and not network_available():
        console.print(f"offline: none of {', '.join(DOWNLOAD_HOSTS)} resolves; nothing was downloaded", markup=False)
        incomplete = {}
    for section, component in incomplete.items():
        try:
            component.download(target)
        except RpError as exc:
            if not isinstance(exc, MissingModelsError):
                problems.append(f"{section} {component.name}: {exc}")
        except Exception as exc:  # network failures arrive in many types; name them, keep going
            problems.append(f"{section} {component.name}: download failed: {type(exc).__name__}: {exc}")
    missing = [f for component in components.values() for f in component.model_files() if not f.present]
    for problem in problems:
        console.print(problem, markup=False)
    if missing:
        raise MissingModelsError(missing)
    if problems:
        raise RpError("some downloads failed (see above)")
    where = f" into {target}; use --models {target} (or RP_MODELS_DIR) to point rp at it" if target else ""
    console.print(f"all model files present for: {', '.join(c.name for c in components.values())}{where}", markup=False)


# -- rp samples -----------------------------------------------------------------------------------


@click.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@common_options
def samples(folder: Path) -> None:
    """Copy sample photos that ship inside installed packages into FOLDER, to try rp on."""
    from rp_core.samples import copy_samples

    console = _console()
    written, problems = copy_samples(folder)
    for path in written:
        console.print(f"wrote {path}", markup=False)
    for problem in problems:
        console.print(f"not available: {problem}", markup=False)
    if not written:
        raise RpError("no sample photo could be copied (install insightface or scikit-image)")


if __name__ == "__main__":  # pragma: no cover
    main()
