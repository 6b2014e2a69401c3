"""What every `rp` command shares: the error-printing group, --debug/--plugins-dir, the console and the plugin host.

Its own module so that command modules (`rp_core.cli_evaluate`) and `rp_core.cli`, which gathers
them, both import it and not each other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rp_core.errors import RpError
from rp_core.plugins import PluginHost

if TYPE_CHECKING:
    from rich.console import Console

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
