"""`rp review`: the click command (parsing and printing only; rp_core.review does the work)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from rp_core.cli_base import _console, get_host
from rp_core.cli_config import ConfigCommand, _pop_config_args, assemble_pipeline, config_options, resolve
from rp_core.cli_detect import detect
from rp_core.errors import RpError


@click.command(cls=ConfigCommand)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    default=Path("anonymized"),
    show_default=True,
    type=click.Path(path_type=Path),
    help="Output folder (or file, for one photo).",
)
@click.option(
    "--faces-json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the decisions are kept (default: faces.json in the output folder); an existing one is reused.",
)
@config_options
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port on 127.0.0.1 (default: a free one).")
@click.option("--no-browser", is_flag=True, help="Print the address only; do not open a browser.")
@click.option(
    "--allow-upload",
    is_flag=True,
    help="Accept a reference photo from the page (keep that person everywhere); off by default.",
)
@click.option(
    "--max-upload-mb", type=click.IntRange(1, 200), default=20, show_default=True, help="Largest upload accepted."
)
@click.option("--overwrite", is_flag=True, help="Replace results already in the output folder.")
@click.option("--resume", is_flag=True, help="Finish a render that was interrupted: keep the results it wrote.")
@click.pass_context
def review(ctx: click.Context, inputs: tuple[Path, ...], output: Path, faces_json: Path | None, **kwargs: Any) -> None:
    """Choose on a local web page which faces stay and which change, then render.

    Finds the faces as `rp detect` does (coverage search included) and opens a page at
    127.0.0.1 with a random token: click a face to keep it, give it a prompt, keep a person in
    every photo, then render, which runs `rp anonymize --faces-json` on the decisions. The
    decisions are kept in a faces JSON (render them later with `rp anonymize INPUTS -o OUT
    --faces-json FILE`); the run writes its manifest as usual. Ctrl-C stops the server.
    """
    from rp_core.io import plan_inputs
    from rp_core.review.state import faces_json_path

    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise RpError(f"rp review needs {exc.name}: pip install 'rp-anonymize[review]'") from None
    if kwargs["overwrite"] and kwargs["resume"]:
        raise click.UsageError("--overwrite and --resume exclude each other")
    for source in inputs:
        if source.is_dir() and output.resolve() == source.resolve():
            raise click.UsageError(f"the output folder {output} is the input folder; choose another output folder")
    args = _pop_config_args(ctx, kwargs)
    config = resolve(ctx, args)
    pipeline = assemble_pipeline(ctx, config)
    plan = plan_inputs(inputs, output)
    if not plan.jobs:
        raise click.UsageError(f"no images found in {', '.join(str(p) for p in inputs)}")
    done = [job.target for job in plan.jobs if job.target.exists()]
    if done and not (kwargs["overwrite"] or kwargs["resume"]):
        raise click.UsageError(
            f"{output} already holds results ({done[0]}); add --resume to finish an interrupted render "
            "or --overwrite to replace them"
        )
    faces_path = faces_json if faces_json is not None else faces_json_path(plan.output, plan.to_folder)
    console = _console()
    if faces_path.exists():
        console.print(f"using the decisions in {faces_path}", markup=False)
    else:
        ctx.invoke(detect, inputs=inputs, output=faces_path, **args)
    _serve(ctx, plan, faces_path, pipeline, args, config.verify.no_face, kwargs)


def _serve(
    ctx: click.Context,
    plan: Any,
    faces_path: Path,
    pipeline: Any,
    args: dict[str, Any],
    policy: str,
    kwargs: dict[str, Any],
) -> None:
    import webbrowser

    from rp_core.api import anonymize_files
    from rp_core.review.app import ReviewSettings, create_app
    from rp_core.review.identity import IdentityIndex
    from rp_core.review.render import RenderJob
    from rp_core.review.security import new_token
    from rp_core.review.server import HOST, bind, serve
    from rp_core.review.state import ReviewState
    from rp_core.session import SessionOptions

    state = ReviewState.load([j.source for j in plan.jobs], [j.target for j in plan.jobs], faces_path)
    host = get_host(ctx)
    reserved = ("config_file", "preset", "overrides")
    params: dict[str, Any] = {
        k: (str(v) if k == "models_dir" else v) for k, v in args.items() if k not in reserved and v is not None
    }
    sources = [j.source for j in plan.jobs]

    def runner(options: SessionOptions, on_event: Any) -> Any:
        return anonymize_files(
            sources,
            plan.output,
            config_file=args["config_file"],
            preset=args["preset"],
            overrides=list(args["overrides"] or ()),
            host=host,
            options=options,
            on_event=on_event,
            **params,
        )

    first = SessionOptions(faces_json=faces_path, overwrite=kwargs["overwrite"], resume=kwargs["resume"])
    encoder = pipeline.verify_encoder or pipeline.identity_encoder
    identities = IdentityIndex(state, None if encoder is None else encoder.component, pipeline.detect)
    token = new_token()
    sock = bind(kwargs["port"])
    port = sock.getsockname()[1]
    settings = ReviewSettings(token, port, kwargs["allow_upload"], kwargs["max_upload_mb"] * 1024 * 1024)
    app = create_app(state, RenderJob(runner, first, policy), identities, settings)
    url = f"http://{HOST}:{port}/?token={token}"

    def ready() -> None:
        click.echo(f"Review {len(plan.jobs)} photo(s) at {url}", err=False)
        click.echo("Decisions are saved as you make them; Ctrl-C stops the server.")
        if kwargs["no_browser"]:
            return
        if sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
            webbrowser.open(url)  # without a display it would start a text browser in this terminal
        else:
            click.echo("No display here: open the address in a browser (over SSH: ssh -L PORT:127.0.0.1:PORT).")

    serve(app, sock, ready)
    click.echo(f"Stopped. The decisions are in {faces_path}.")
