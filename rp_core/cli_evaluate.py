"""`rp evaluate`: measure anonymized images against their originals and write a report.

Import-light like the rest of the CLI: the evaluation and its models load when the command
runs. Imported by `rp_core.cli.create_cli` once that module is fully loaded, so it can reuse
the shared options and host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rp_core.cli_base import _console, common_options, get_host
from rp_core.errors import ConfigError, InputError, VerificationError

#: The default recognizer's options: dlib reads 5-point faces (CenterFace's) through its own 5-point
#: predictor, so every face is measured; given --recognizer-option replaces them.
DEFAULT_RECOGNIZER_OPTIONS = {"dlib": ("landmarks=auto",)}


def _options(values: tuple[str, ...], flag: str = "--detector-option") -> dict[str, Any]:
    """KEY=VALUE pairs (values parsed as YAML scalars: numbers, booleans, null) into a dict."""
    import yaml

    options: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag}: bad value {item!r}: expected KEY=VALUE")
        options[key.strip()] = yaml.safe_load(raw)
    return options


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder.")
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Pair images through this run manifest of `rp anonymize` (instead of ORIGINALS ANONYMIZED).",
)
@click.option("--detector", default="dlib", show_default=True, help="Detector that finds the faces to measure.")
@click.option("--detector-option", "detector_option", multiple=True, metavar="KEY=VALUE", help="Option of --detector.")
@click.option("--recognizer", default="dlib", show_default=True, help="Independent identity encoder (any installed).")
@click.option(
    "--recognizer-option",
    "recognizer_option",
    multiple=True,
    metavar="KEY=VALUE",
    help="Option of --recognizer (default for dlib: landmarks=auto, so 5-point faces are measured too).",
)
@click.option(
    "--detectors",
    default=None,
    metavar="NAME,NAME",
    help="Detectors asked whether they still find each face (default: every installed one whose weights are here).",
)
@click.option(
    "--main-detector-only",
    is_flag=True,
    help="Measure only the faces --detector finds (default: also those only another detector finds).",
)
@click.option("--face-margin", type=float, default=0.25, show_default=True, help="Box growth before 'outside faces'.")
@click.option("--pixel-tolerance", type=int, default=8, show_default=True, help="Levels a pixel may move unchanged.")
@click.option(
    "--models", "models_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Models folder."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--max-thumbnails", type=int, default=300, show_default=True, help="Faces pictured in report.html.")
@click.option(
    "--show-originals",
    is_flag=True,
    help="Picture the original faces unblurred in report.html (default: blurred). Such a report identifies "
    "the people: do not share it.",
)
@click.option(
    "--fail-on-match",
    is_flag=True,
    help="Exit 5 when any face is re-identified at a recognizer's own threshold (a gate for CI or a pipeline).",
)
@common_options
@click.pass_context
def evaluate(
    ctx: click.Context,
    paths: tuple[Path, ...],
    output: Path,
    manifest_path: Path | None,
    detector: str,
    detector_option: tuple[str, ...],
    recognizer: str,
    recognizer_option: tuple[str, ...],
    detectors: str | None,
    main_detector_only: bool,
    face_margin: float,
    pixel_tolerance: int,
    models_dir: Path | None,
    device: str,
    max_thumbnails: int,
    show_originals: bool,
    fail_on_match: bool,
) -> None:
    """Measure anonymized images against their originals: re-identification, pose, expression, changed pixels.

    \b
      rp evaluate ORIGINALS ANONYMIZED -o report/   files, or folders mirrored by relative path
      rp evaluate OUT -o report/                    an `rp anonymize` output (pairs from its manifest)
      rp evaluate --manifest OUT/manifest.json -o report/

    Writes metrics.json, metrics.csv and a self-contained report.html. Exits 4 when some pair
    could not be compared (listed in the report), 5 with --fail-on-match when a face is re-identified.
    """
    from rp_core.evaluate import evaluate as run_evaluation
    from rp_core.evaluate import find_manifest, pairs_from_manifest, pairs_from_paths
    from rp_core.evaluate.measure import Settings

    if face_margin < 0 or pixel_tolerance < 0 or max_thumbnails < 0:
        raise ConfigError("--face-margin, --pixel-tolerance and --max-thumbnails must not be negative")
    if manifest_path is not None:
        if paths:
            raise click.UsageError("give either --manifest or ORIGINALS ANONYMIZED, not both")
        pair_set = pairs_from_manifest(manifest_path)
    elif len(paths) == 2:
        pair_set = pairs_from_paths(paths[0], paths[1])
    elif len(paths) == 1:
        if not paths[0].exists():
            raise InputError(f"{paths[0]}: no such file or folder")
        found = find_manifest(paths[0])
        if found is None:
            raise InputError(
                f"{paths[0]}: no run manifest there (manifest.json, rp-manifest.json or <file>.manifest.json); "
                "give ORIGINALS ANONYMIZED instead"
            )
        pair_set = pairs_from_manifest(found)
    else:
        raise click.UsageError("give ORIGINALS ANONYMIZED, one `rp anonymize` output, or --manifest PATH")
    if not pair_set.pairs:
        raise InputError("nothing to evaluate: the manifest lists no images")
    settings = Settings(
        detector=detector,
        detector_options=_options(detector_option),
        recognizer=recognizer,
        recognizer_options=_options(
            recognizer_option or DEFAULT_RECOGNIZER_OPTIONS.get(recognizer, ()), "--recognizer-option"
        ),
        detectors=tuple(d.strip() for d in detectors.split(",") if d.strip()) if detectors is not None else None,
        union=not main_detector_only,
        face_margin=face_margin,
        pixel_tolerance=pixel_tolerance,
        models_dir=models_dir,
        device=device,
        thumbnails=max_thumbnails > 0,
        show_originals=show_originals,
    )
    console = _console()
    if show_originals and max_thumbnails > 0:
        console.print(
            "warning: --show-originals pictures the original faces in report.html: it identifies the people, "
            "do not share it",
            markup=False,
        )
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("images", total=len(pair_set.pairs))
        result = run_evaluation(
            get_host(ctx),
            pair_set,
            settings,
            output,
            on_image=lambda _: progress.advance(task),
            max_thumbnails=max_thumbnails,
        )
    summary = result.summary
    console.print(
        f"{summary['evaluated']} of {summary['images']} pairs compared, {summary['faces']} faces",
        markup=False,
    )
    for name, identity in summary["identity"].items():
        rates = ", ".join(
            f"{identity['reidentified'][t]}/{identity['faces']} at {t}" for t in identity["reidentification_rate"]
        )
        console.print(f"re-identified by {name}: {rates}", markup=False)
    if summary["faces_missing_from_run"]:
        console.print(f"{summary['faces_missing_from_run']} face(s) were never processed by the run", markup=False)
    console.print(f"report: {result.files['html']}", markup=False)
    matched = [
        name
        for name, identity in summary["identity"].items()
        if identity["reidentified"].get(f"{identity['declared_threshold']:g}")
    ]
    if result.problems:
        console.print(f"{len(result.problems)} pair(s) could not be compared:", markup=False)
        for image in result.problems:
            console.print(f"  {image.name}: {image.problem}", markup=False)
        raise click.exceptions.Exit(InputError.exit_code)
    if fail_on_match and matched:
        console.print(f"faces re-identified by {', '.join(matched)} (--fail-on-match)", markup=False)
        raise click.exceptions.Exit(VerificationError.exit_code)
