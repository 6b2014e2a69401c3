"""The `rp` command line.

Import-light on purpose: `rp --help` and `rp plugins` must answer in well under a
second, so torch, OpenCV and the orchestrator are imported inside the commands that
need them. Expected errors (RpError) print one message and exit with their code;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rp_core import __version__
from rp_core.errors import RpError
from rp_core.plugins import PluginHost

if TYPE_CHECKING:
    from rich.console import Console

    from rp_core.config import RunConfig

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


#: (flag, config flag key, click type, help): runtime settings and slot names (rp_core.config.CORE_FLAG_KEYS).
#: Component options add their own flags (ConfigCommand), declared on their options models.
_FLAG_OPTIONS: tuple[tuple[str, str, Any, str], ...] = (
    ("--detector", "detector", str, "Detector component name (see `rp plugins`)."),
    ("--identity-encoder", "identity_encoder", str, "Identity encoder component name."),
    ("--inverter", "inverter", str, "Inverter component name."),
    ("--generator", "generator", str, "Generator component name."),
    ("--merger", "merger", str, "Merger component name."),
    ("--device", "device", str, "auto, cpu, cuda, cuda:N or mps."),
    ("--face-image-size", "face_image_size", int, "Side of the aligned face crop, pixels."),
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


class ConfigCommand(click.Command):
    """A command that also takes every flag the installed components declare on their options."""

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        params = super().get_params(ctx)
        extra = _component_options(ctx)
        if not extra:
            return params
        names = {p.name for p in params}
        return [*params[:-1], *(o for o in extra if o.name not in names), params[-1]]  # --help stays last


def _component_options(ctx: click.Context) -> list[click.Option]:
    if "rp.component_options" in ctx.meta:
        cached: list[click.Option] = ctx.meta["rp.component_options"]
        return cached
    from rp_core.config import component_flags

    try:
        flags = component_flags(get_host(ctx))
    except RpError:
        flags = {}
    options = []
    for flag in sorted(flags.values(), key=lambda f: f.flag):
        owners = ", ".join(sorted({f"{section} {name}" for section, name, _ in flag.targets}))
        options.append(
            click.Option(
                [f"--{flag.flag.replace('_', '-')}", flag.flag],
                type=_click_type(flag.annotation),
                default=None,
                help=f"{flag.help} [{owners}]",
            )
        )
    ctx.meta["rp.component_options"] = options
    return options


def _click_type(annotation: Any) -> Any:
    """The click type for an options field's annotation (numbers, text, booleans, choices)."""
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    first = args[0]
    if typing.get_origin(first) is typing.Literal:
        return click.Choice([str(v) for v in typing.get_args(first)])
    return {int: int, float: float, bool: bool}.get(first, str)


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


def _pop_config_args(ctx: click.Context, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Take the config-shaping arguments (core and component flags) out of a command's kwargs."""
    keys = ["config_file", "preset", "overrides", *(key for _, key, _, _ in _FLAG_OPTIONS)]
    keys += [str(o.name) for o in _component_options(ctx)]
    return {key: kwargs.pop(key, None) for key in keys}


def resolve(ctx: click.Context, args: dict[str, Any]) -> RunConfig:
    from rp_core.config import resolve_config

    reserved = ("config_file", "preset", "overrides")
    flags = {key: value for key, value in args.items() if key not in reserved and value is not None}
    if "models_dir" in flags:
        flags["models_dir"] = str(flags["models_dir"])
    return resolve_config(
        get_host(ctx),
        config_file=args.get("config_file"),
        preset=args.get("preset"),
        flags=flags,
        overrides=list(args.get("overrides") or ()),
    )


def assemble_pipeline(ctx: click.Context, config: RunConfig) -> Any:
    """The one assembled pipeline of this command (nothing is loaded); an import failure is one line."""
    try:
        from rp_core.pipeline import assemble
    except ImportError as exc:
        from rp_core.doctor import LIBGL_HINT

        hint = f" ({LIBGL_HINT})" if "libGL" in str(exc) else ""
        raise RpError(f"cannot import the pipeline: {exc}{hint}") from exc
    return assemble(config, get_host(ctx))


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

    from rp_core.cli_evaluate import evaluate  # here: it imports helpers from this module

    for command in (anonymize, detect, plugins, config, doctor, models, samples, evaluate):
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


@click.command(cls=ConfigCommand)
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
@click.option(
    "--keep-metadata",
    is_flag=True,
    help="Keep camera/exposure/date EXIF, technical XMP and the ICC profile (default: strip all metadata). "
    "Names, face regions, serial numbers and comments are never kept; GPS only with --keep-gps.",
)
@click.option("--keep-gps", is_flag=True, help="With --keep-metadata: keep the GPS position too.")
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=None,
    help="JPEG/WebP quality; default: a JPEG input keeps its own quantization tables, others 95.",
)
@click.option(
    "--follow-symlinks",
    is_flag=True,
    help="With --in-place: anonymize the targets of symlinked files and folders (default: skip and report them).",
)
@click.option(
    "--keep-face",
    "keep_face",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Reference photo of a person to leave unchanged (matched by identity; repeatable).",
)
@click.option(
    "--only-face",
    "only_face",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Reference photo of a person to anonymize; everyone else is left unchanged (repeatable).",
)
@click.option("--only-largest", is_flag=True, default=None, help="Anonymize only the largest face of each image.")
@click.option(
    "--max-faces", type=click.IntRange(0), default=None, help="Anonymize at most N faces per image, largest first."
)
@click.option(
    "--faces-json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Faces from `rp detect` (reviewed or edited: keep, prompt) instead of detecting; coverage still runs.",
)
@click.option(
    "--ray",
    "use_ray",
    is_flag=True,
    help="Spread the files over Ray workers, one per GPU (docs/scale.md; needs [ray]).",
)
@click.option(
    "--ray-address",
    default=None,
    help="With --ray: the cluster to join (auto, ray://HEAD:10001); default: a local Ray.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="With --ray: workers to start (default: one per GPU; one per CPU without GPUs).",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=None,
    help="With --ray: GPUs each worker holds (default 1; ignored without GPUs).",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only failures, loosened safeguards and the summary line.")
@click.option("-v", "--verbose", is_flag=True, help="Also print a line per file with its faces and time.")
@click.option("--log-json", is_flag=True, help="Print one JSON object per event on stderr (for batch jobs), no bar.")
@click.option(
    "--manifest-paths",
    type=click.Choice(["relative", "hashed", "absolute"]),
    default="relative",
    show_default=True,
    help="How file paths appear in the manifest: relative to the input/output folder, hashed, or as given.",
)
@click.pass_context
def anonymize(ctx: click.Context, inputs: tuple[Path, ...], output: Path | None, in_place: bool, **kwargs: Any) -> None:
    """Anonymize every face in the input files or folders; OUTPUT is a file, or a folder mirroring the inputs."""
    from rp_core.io import plan_in_place, plan_inputs
    from rp_core.session import RunSession, SessionOptions

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
    if kwargs["keep_gps"] and not kwargs["keep_metadata"]:
        raise click.UsageError("--keep-gps only applies with --keep-metadata (metadata is stripped otherwise)")
    if kwargs["follow_symlinks"] and not in_place:
        raise click.UsageError("--follow-symlinks applies to --in-place runs (runs with -o always read through links)")
    ray_flags = [
        f"--{k.replace('_', '-')}" for k in ("ray_address", "workers", "gpus_per_worker") if kwargs[k] is not None
    ]
    if ray_flags and not kwargs["use_ray"]:
        raise click.UsageError(f"{', '.join(ray_flags)} apply only with --ray")
    if kwargs["use_ray"] and in_place:
        raise click.UsageError("--ray writes to an output folder (-o); it does not support --in-place")
    args = _pop_config_args(ctx, kwargs)
    for key in ("keep_face", "only_face", "only_largest", "max_faces"):
        value = kwargs.pop(key)
        if value not in (None, (), False):
            args[key] = [str(p) for p in value] if isinstance(value, tuple) else value
    config = resolve(ctx, args)
    pipeline = assemble_pipeline(ctx, config)  # incompatible choices fail here, before any file is read
    if in_place:
        plan = plan_in_place(inputs, follow_symlinks=kwargs["follow_symlinks"])
    else:
        plan = plan_inputs(inputs, output)  # type: ignore[arg-type]
    console = _console()
    if not plan.jobs:
        from rp_core.io import SUPPORTED_EXTENSIONS

        for skipped in plan.skipped:
            console.print(f"skipped ({skipped.reason}): {skipped.path}", markup=False)
        names = ", ".join(str(p) for p in inputs)
        count = len(plan.skipped)
        ignored = f" ({count} file{'' if count == 1 else 's'} skipped)" if count else ""
        supported = ", ".join(sorted(SUPPORTED_EXTENSIONS))
        raise click.UsageError(f"no images found in {names}{ignored}; supported: {supported}")
    options = SessionOptions(
        aligned=kwargs["aligned"],
        overwrite=kwargs["overwrite"],
        resume=kwargs["resume"],
        keep_metadata=kwargs["keep_metadata"],
        keep_gps=kwargs["keep_gps"],
        quality=kwargs["quality"],
        manifest_paths=kwargs["manifest_paths"],
        faces_json=kwargs["faces_json"],
    )
    if kwargs["quiet"] and kwargs["verbose"]:
        raise click.UsageError("--quiet and --verbose exclude each other")
    verbosity = -1 if kwargs["quiet"] else 1 if kwargs["verbose"] else 0
    with _ProgressPrinter(console, verbosity, kwargs["log_json"]) as printer:
        if kwargs["use_ray"]:
            from rp_core.scale import RayOptions, RaySession

            ray_options = RayOptions(
                address=kwargs["ray_address"],
                workers=kwargs["workers"],
                gpus_per_worker=1.0 if kwargs["gpus_per_worker"] is None else kwargs["gpus_per_worker"],
                plugins_dir=ctx.meta.get(_PLUGINS_DIR),
            )
            session: RunSession = RaySession(pipeline, plan, options, printer, ray_options)
        else:
            session = RunSession(pipeline, plan, options, printer)
        try:
            summary = session.run()
        except KeyboardInterrupt:
            printer.stop()
            printer.line("interrupted", "interrupted: run the same command again with --resume to finish")
            raise click.exceptions.Exit(130) from None
    printer.line("summary", summary.line())
    if summary.failed and not kwargs["log_json"]:  # each failure was already one JSON event
        console.print(f"{len(summary.failed)} of {len(summary.entries)} files failed:", markup=False)
        for entry in summary.failed:
            console.print(f"  {entry.error}", markup=False)
    code = summary.exit_code(config.verify.no_face)
    if code:
        raise click.exceptions.Exit(code)


class _ProgressPrinter:
    """Prints a session's events: a progress bar with faces/s and ETA, warnings and failures as lines.

    `verbosity` -1 (--quiet): failures, loosened safeguards and the summary only; 1 (--verbose): also a line per file.
    `as_json` (--log-json): one JSON object per event on stderr, no bar, for batch jobs and log collectors.
    """

    def __init__(self, console: Console, verbosity: int = 0, as_json: bool = False) -> None:
        self.console = console
        self.verbosity = verbosity
        self.as_json = as_json
        self.progress: Any = None
        self.files: Any = None
        self.faces: Any = None

    def __enter__(self) -> _ProgressPrinter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def line(self, kind: str, text: str) -> None:
        """A line outside the event stream (the summary), in the chosen format."""
        if self.as_json:
            click.echo(json.dumps({"event": kind, "message": text}), err=True)
        else:
            self.console.print(text, markup=False)

    def __call__(self, event: Any) -> None:
        if self.as_json:
            click.echo(json.dumps(event.to_dict()), err=True)
            return
        if event.kind == "start":
            if self.verbosity >= 0:
                self._start(event.total)
        elif event.kind == "done":
            if self.progress is not None:
                self.progress.advance(self.files)
                self.progress.advance(self.faces, event.faces)
            if self.verbosity > 0:
                self.console.print(f"{event.message} ({event.faces} faces, {event.seconds:.2f} s)", markup=False)
        elif event.kind == "failed":
            self.console.print(f"failed: {event.message}", markup=False)
            if self.progress is not None:
                self.progress.advance(self.files)
        elif event.kind == "safety":  # a loosened safeguard: printed even with --quiet
            self.console.print(f"warning: {event.message}", markup=False)
        elif self.verbosity < 0:
            return
        elif event.kind == "warning":
            self.console.print(f"warning: {event.message}", markup=False)
        else:
            self.console.print(event.message, markup=False)

    def _start(self, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            ProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class Rate(ProgressColumn):
            """Items per second over the recent past (faces/s for the faces bar)."""

            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:.2f}/s" if speed else "")

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            Rate(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.progress = Progress(*columns, console=self.console, transient=False)
        self.progress.start()
        self.files = self.progress.add_task("files", total=total)
        self.faces = self.progress.add_task("faces", total=None)


# -- rp detect ----------------------------------------------------------------------------------


@click.command(cls=ConfigCommand)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=False, path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="faces.json to write."
)
@config_options
@click.pass_context
def detect(ctx: click.Context, inputs: tuple[Path, ...], output: Path, **kwargs: Any) -> None:
    """Write every face the detectors find (main and coverage) to a JSON file to review or edit.

    Mark a face `"keep": true` to leave it unchanged, give it a `"prompt"`, delete a false detection,
    then render with `rp anonymize INPUTS -o OUT --faces-json faces.json`. Faces missing from the file
    are still found by the coverage detector and obfuscated there.
    """
    from rp_core.io import atomic_write_bytes, plan_reading, read_image
    from rp_core.selection import FACES_JSON_VERSION, face_to_json
    from rp_core.session import common_root
    from rp_core.verify import missed_faces

    config = resolve(ctx, _pop_config_args(ctx, kwargs))
    pipeline = assemble_pipeline(ctx, config)
    plan = plan_reading(inputs)
    if not plan.jobs:
        raise click.UsageError(f"no images found in {', '.join(str(p) for p in inputs)}")
    detectors = [s.component for s in (pipeline.detector, pipeline.coverage) if s is not None]
    for detector in detectors:
        detector.check_can_run()
    pipeline.download_missing()
    from rp_core.models import require_present

    require_present([f for d in detectors for f in d.model_files()])
    root = common_root([job.source for job in plan.jobs])
    console = _console()
    images = []
    for job in plan.jobs:
        try:
            image = read_image(job.source)
        except RpError as exc:
            console.print(f"failed: {exc}", markup=False)
            continue
        found = detectors[0].detect(image)
        extra = missed_faces(found, detectors[1].detect(image), config.coverage.iou) if len(detectors) > 1 else []
        images.append(
            {
                "input": os.path.relpath(job.source.absolute(), root),
                "size": [int(image.shape[1]), int(image.shape[0])],
                "faces": [face_to_json(face) for face in [*found, *extra]],
            }
        )
        console.print(f"{job.source}: {len(found) + len(extra)} face(s)", markup=False)
    document = {"rp_faces": FACES_JSON_VERSION, "detector": pipeline.detector.name, "images": images}
    atomic_write_bytes(output, (json.dumps(document, indent=2) + "\n").encode("utf-8"))
    console.print(f"wrote {output}: {sum(len(i['faces']) for i in images)} faces in {len(images)} images", markup=False)


# -- rp plugins / config show ---------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--options", "with_options", is_flag=True, help="Also list every component's options.")
@common_options
@click.pass_context
def plugins(ctx: click.Context, as_json: bool, with_options: bool) -> None:
    """List plugins with their versions, hooks and the components they provide (--options: and their settings)."""
    host = get_host(ctx)
    described = host.describe()
    if as_json:
        if with_options:
            described = [{**p, "options": _component_options_table(host, p["name"])} for p in described]
        click.echo(json.dumps(described, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("plugin", "version", "provides")
    for plugin in described:
        provides = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in plugin["provides"].items())
        table.add_row(plugin["name"], plugin["version"], provides or "(commands/hooks only)")
    console = Console(soft_wrap=False)
    console.print(table)
    if with_options:
        for plugin in described:
            for component, rows in _component_options_table(host, plugin["name"]).items():
                options = Table("option", "default", "flag", "description", title=component, title_justify="left")
                for row in rows:
                    options.add_row(row["option"], json.dumps(row["default"]), row["flag"], row["description"])
                console.print(options)


def _component_options_table(host: PluginHost, plugin: str) -> dict[str, list[dict[str, Any]]]:
    """Each component a plugin provides, with its options' defaults, flags and descriptions."""
    from rp_core.interfaces import declared_flags

    tables: dict[str, list[dict[str, Any]]] = {}
    for kind, registrations in host.registry.items():
        for name, registration in sorted(registrations.items()):
            if registration.plugin != plugin:
                continue
            model = registration.cls.Options
            flags = {field: flag for flag, field in declared_flags(model).items()}
            defaults = model().model_dump(mode="json") if _constructible(model) else {}
            tables[f"{kind} {name}"] = [
                {
                    "option": field,
                    "default": defaults.get(field),
                    "flag": f"--{flags[field].replace('_', '-')}" if field in flags else "",
                    "description": info.description or "",
                }
                for field, info in model.model_fields.items()
            ]
    return tables


def _constructible(model: Any) -> bool:
    try:
        model()
    except Exception:  # an options model with required fields has no defaults to show
        return False
    return True


@click.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show", cls=ConfigCommand)
@config_options
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml", show_default=True)
@click.pass_context
def config_show(ctx: click.Context, fmt: str, **kwargs: Any) -> None:
    """Print the resolved config (defaults < preset < file < env < flags) with each stage's effective options.

    Slots the chosen generator never runs are marked `runs: false`; `pipeline` lists every stage that will
    run, safeguards included, with the plugin that provides it and all its options, defaults filled in.
    """
    config = resolve(ctx, _pop_config_args(ctx, kwargs))
    pipeline = assemble_pipeline(ctx, config)
    resolved = config.model_dump(mode="json")
    described = pipeline.describe()
    for section in ("detector", "identity_encoder", "inverter", "generator", "merger"):
        if section in described:
            resolved[section] = {"name": described[section]["name"], "options": described[section]["options"]}
        elif section == "identity_encoder" and "verify.encoder" in described:
            encoder = described["verify.encoder"]
            resolved[section] = {"name": encoder["name"], "options": encoder["options"], "used_by": "verify.encoder"}
        else:
            resolved[section] = {**resolved[section], "runs": False}
    resolved["pipeline"] = described
    resolved = json.loads(json.dumps(resolved))  # plain copies: the YAML shows values, not anchors to shared dicts
    if fmt == "json":
        click.echo(json.dumps(resolved, indent=2))
    else:
        import yaml

        click.echo(yaml.safe_dump(resolved, sort_keys=False).rstrip())


# -- rp doctor / models ------------------------------------------------------------------------


@click.command(cls=ConfigCommand)
@config_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def doctor(ctx: click.Context, as_json: bool, **kwargs: Any) -> None:
    """Which components can run here, which model files are present or missing, and the GPU."""
    from rp_core.doctor import CORE_MODULES, check_components, gpu_status, import_status
    from rp_core.errors import MissingModelsError

    host = get_host(ctx)
    pipeline = assemble_pipeline(ctx, resolve(ctx, _pop_config_args(ctx, kwargs)))
    core = {module: import_status(module) for module in CORE_MODULES}
    report = check_components(host, pipeline)
    gpu = gpu_status(pipeline)
    if as_json:
        click.echo(json.dumps({"core": core, "gpu": gpu, "components": [h.to_dict() for h in report]}, indent=2))
    else:
        _print_doctor(core, report)
        _console().print(f"gpu   {gpu}", markup=False)
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


@models.command("download", cls=ConfigCommand)
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
    from rp_core.errors import MissingModelsError
    from rp_core.models import DOWNLOAD_HOSTS, network_available

    args = _pop_config_args(ctx, kwargs)
    if target is not None:
        args["models_dir"] = target
        target.mkdir(parents=True, exist_ok=True)
    pipeline = assemble_pipeline(ctx, resolve(ctx, args))
    console = _console()
    components = {stage.key: stage.component for stage in pipeline.stages()}
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
