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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rp_core import __version__
from rp_core.cli_base import _PLUGINS_DIR, RpGroup, _console, common_options, get_host
from rp_core.cli_config import ConfigCommand, _pop_config_args, assemble_pipeline, config_options, resolve
from rp_core.cli_detect import detect
from rp_core.errors import RpError
from rp_core.plugins import PluginHost

if TYPE_CHECKING:
    from rich.console import Console


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

    from rp_core.cli_evaluate import evaluate  # here: `rp --help` must not import what evaluate needs
    from rp_core.review.command import review  # likewise

    for command in (anonymize, detect, plugins, config, doctor, models, samples, evaluate, review):
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
    help="Keep exposure/date EXIF and XMP facts and a rebuilt ICC profile (default: strip all metadata). "
    "No free text (camera make/model, software, labels, names, comments) is ever kept; GPS only with --keep-gps.",
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
    from rp_core.session import Destination, RunSession

    # the option rules live on the objects they constrain (the API refuses the same): built first, before models
    destination = Destination(output, in_place, kwargs.pop("follow_symlinks"))
    options = _session_options(kwargs)
    executor = _executor(ctx, kwargs)
    if kwargs["quiet"] and kwargs["verbose"]:
        raise click.UsageError("--quiet and --verbose exclude each other")
    args = _pop_config_args(ctx, kwargs)
    for key in ("keep_face", "only_face", "only_largest", "max_faces"):
        value = kwargs.pop(key)
        if value not in (None, (), False):
            args[key] = [str(p) for p in value] if isinstance(value, tuple) else value
    config = resolve(ctx, args)
    pipeline = assemble_pipeline(ctx, config)  # incompatible choices fail here, before any file is read
    plan = destination.plan(list(inputs))
    console = _console()
    if not plan.jobs:
        _no_inputs(console, plan, inputs)
    verbosity = -1 if kwargs["quiet"] else 1 if kwargs["verbose"] else 0
    from rp_core.quiet import set_library_verbosity

    set_library_verbosity(kwargs["verbose"])
    with _ProgressPrinter(console, verbosity, kwargs["log_json"]) as printer:
        session = RunSession(pipeline, plan, options, printer, executor)
        terminated: list[int] = []
        try:
            with _terminate_as_interrupt() as terminated:
                summary = session.run()
        except KeyboardInterrupt:
            printer.stop()
            how = "terminated" if terminated else "interrupted"
            printer.line("interrupted", f"{how}: run the same command again with --resume to finish")
            raise click.exceptions.Exit(143 if terminated else 130) from None
    printer.line("summary", summary.line())
    if summary.failed and not kwargs["log_json"]:  # each failure was already one JSON event
        console.print(f"{len(summary.failed)} of {len(summary.entries)} files failed:", markup=False)
        for entry in summary.failed:
            console.print(f"  {entry.error}", markup=False)
    code = summary.exit_code(config.verify.no_face)
    if code:
        raise click.exceptions.Exit(code)


def _session_options(kwargs: dict[str, Any]) -> Any:
    from rp_core.session import SessionOptions

    return SessionOptions(
        **{
            key: kwargs.pop(key)
            for key in ("aligned", "overwrite", "resume", "keep_metadata", "keep_gps", "quality", "faces_json")
        },
        manifest_paths=kwargs.pop("manifest_paths"),
    )


def _executor(ctx: click.Context, kwargs: dict[str, Any]) -> Any:
    """Where the files run: this process, or Ray workers with --ray (its flags are refused without it)."""
    ray_keys = ("ray_address", "workers", "gpus_per_worker")
    ray_args = {key: kwargs.pop(key) for key in ray_keys}
    if not kwargs.pop("use_ray"):
        given = [f"--{k.replace('_', '-')}" for k, v in ray_args.items() if v is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply only with --ray")
        return None
    from rp_core.scale import RayExecutor, RayOptions

    return RayExecutor(
        RayOptions(
            address=ray_args["ray_address"],
            workers=ray_args["workers"],
            gpus_per_worker=1.0 if ray_args["gpus_per_worker"] is None else ray_args["gpus_per_worker"],
            plugins_dir=ctx.meta.get(_PLUGINS_DIR),
        )
    )


def _no_inputs(console: Console, plan: Any, inputs: tuple[Path, ...]) -> None:
    """Nothing to anonymize: say what was skipped and which files are supported."""
    from rp_core.files.formats import SUPPORTED_EXTENSIONS, VIDEO_EXTENSIONS

    for skipped in plan.skipped:
        console.print(f"skipped ({skipped.reason}): {skipped.path}", markup=False)
    names = ", ".join(str(p) for p in inputs)
    count = len(plan.skipped)
    ignored = f" ({count} file{'' if count == 1 else 's'} skipped)" if count else ""
    supported = f"images {', '.join(sorted(SUPPORTED_EXTENSIONS))}; videos {', '.join(sorted(VIDEO_EXTENSIONS))}"
    raise click.UsageError(f"no images or videos found in {names}{ignored}; supported: {supported}")


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
                self.console.print(
                    f"{event.message} ({event.faces} face{'' if event.faces == 1 else 's'}, {event.seconds:.2f} s)",
                    markup=False,
                )
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


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM (docker stop, systemd, `timeout`) ends a run like Ctrl-C: the same cleanup and resume hint.

    Yields a list that holds the signal number once one arrived (the exit status is then 143).
    """
    import signal
    import threading

    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield received
        return

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    """Which presets this machine can run, then each component's libraries and model files, and the GPU.

    Everything goes to stdout (`rp doctor | less`), the verdict first. Exit 0 when some preset can
    run; when a config is named (--preset, --config, flags), exit non-zero when that one cannot.
    """
    from rp_core.doctor import CORE_MODULES, check_components, gpu_status, import_status, preset_verdicts, verdict_line
    from rp_core.errors import MissingModelsError

    host = get_host(ctx)
    args = _pop_config_args(ctx, kwargs)
    named = any(value not in (None, ()) for value in args.values())
    config = resolve(ctx, args)
    pipeline = assemble_pipeline(ctx, config)
    verdicts = preset_verdicts(host, None if config.runtime.models_dir is None else str(config.runtime.models_dir))
    core = {module: import_status(module) for module in CORE_MODULES}
    report = check_components(host, pipeline)
    gpu = gpu_status(pipeline)
    if as_json:
        presets = {v.name: {"can_run": v.ok, "reason": v.reason} for v in verdicts}
        payload = {"presets": presets, "core": core, "gpu": gpu, "components": [h.to_dict() for h in report]}
        click.echo(json.dumps(payload, indent=2))
    else:
        click.echo(verdict_line(verdicts))
        click.echo("")
        _print_doctor(core, report)
        click.echo(f"gpu   {gpu}")
    in_use = [h for h in report if h.in_use]
    missing = [f for h in in_use for f in h.missing_files]
    broken_core = [module for module, reason in core.items() if reason]
    ready = not missing and not broken_core and all(h.ok for h in in_use)
    checked = f"preset {config.preset}" if config.preset else "this config"
    if named or broken_core:
        if missing:
            raise MissingModelsError(missing)
        if not ready:
            raise RpError(f"{checked} cannot run here (see above)")
    elif not ready and not as_json:
        runnable = [v.name for v in verdicts if v.ok]
        advice = f"; use --preset {runnable[0]}" if runnable else ""
        click.echo(f"the default config cannot run here (see above){advice}")
    if not any(v.ok for v in verdicts) and not named:
        raise RpError("no preset can run on this machine (see above)")


def _print_doctor(core: dict[str, str | None], report: Sequence[Any]) -> None:
    for module, reason in core.items():
        click.echo(f"core  {module:<10} {'ok' if reason is None else 'BROKEN: ' + reason}")
    for health in report:
        mark = "ok" if health.ok else "NOT READY"
        use = "in use" if health.in_use else "available"
        click.echo(f"{health.kind:<16} {health.name:<18} {use:<9} {mark}  (plugin {health.plugin})")
        for module, reason in health.imports.items():
            if reason is not None:
                click.echo(f"    import {module}: {reason}")
        if health.error:
            click.echo(f"    error: {health.error}")
        for f in health.files:
            if f.present:
                click.echo(f"    present: {f.description} at {f.found_at}")
            else:
                looked = ", ".join(str(p) for p in f.looked_in) or "(nowhere)"
                click.echo(f"    MISSING: {f.description}; looked in {looked}; get it: {f.how_to_get}")


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
    args = _pop_config_args(ctx, kwargs)
    if target is not None:
        args["models_dir"] = target
        target.mkdir(parents=True, exist_ok=True)
    pipeline = assemble_pipeline(ctx, resolve(ctx, args))
    console = _console()
    # no check that this machine can run them: the files may be meant for another one (--to DIR)
    problems = pipeline.ensure_models(target=target, check=False)
    for problem in problems:
        console.print(problem, markup=False)
    if problems:
        raise RpError("some downloads failed (see above)")
    components = pipeline.components()
    where = f" into {target}; use --models {target} (or RP_MODELS_DIR) to point rp at it" if target else ""
    console.print(f"all model files present for: {', '.join(c.name for c in components)}{where}", markup=False)


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
