"""`rp detect`: the faces `rp anonymize` would change, written as a faces JSON to review or edit.

It finds faces with the face stream's own step (main detector, then the coverage detector with its
search passes), so the file a user reviews lists what a run will do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from rp_core.cli_base import _console
from rp_core.cli_config import ConfigCommand, _pop_config_args, assemble_pipeline, config_options, resolve
from rp_core.errors import RpError

# -- rp detect ----------------------------------------------------------------------------------


@click.command(cls=ConfigCommand)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=False, path_type=Path))
@click.option(
    "-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="faces.json to write."
)
@click.option(
    "--preview",
    type=click.Path(path_type=Path),
    default=None,
    help="Also draw each face's box and faces.json number: a PNG for one image, a folder of PNGs for several.",
)
@config_options
@click.pass_context
def detect(ctx: click.Context, inputs: tuple[Path, ...], output: Path, preview: Path | None, **kwargs: Any) -> None:
    """Write every face the detectors find (main and coverage) to a JSON file to review or edit.

    Mark a face `"keep": true` to leave it unchanged, give it a `"prompt"`, delete a false detection,
    then render with `rp anonymize INPUTS -o OUT --faces-json faces.json`. Faces missing from the file
    are still found by the coverage detector and obfuscated there. `--preview` shows which face is which
    number (green: main detector; orange: found only by the coverage detector).
    """
    from rp_core.io import atomic_write_bytes, plan_reading, read_image
    from rp_core.selection import FACES_JSON_VERSION, face_to_json, faces_json_text
    from rp_core.session import common_root
    from rp_core.stream import FaceStream

    config = resolve(ctx, _pop_config_args(ctx, kwargs))
    pipeline = assemble_pipeline(ctx, config)
    plan = plan_reading(inputs)
    if not plan.jobs:
        raise click.UsageError(f"no images found in {', '.join(str(p) for p in inputs)}")
    pipeline.ensure_models({"detector", "coverage.detector"})  # the detectors only: no generator weights
    root = common_root([job.source for job in plan.jobs])
    stream = FaceStream(pipeline)  # the face stream's own find-faces step: the file lists what a run does
    console = _console()
    images = []
    for job in plan.jobs:
        try:
            image = read_image(job.source)
        except RpError as exc:
            console.print(f"failed: {exc}", markup=False)
            continue
        found = stream.detect(image)
        extra = stream.coverage_faces(image, found)  # with the coverage search's passes, as `rp anonymize` runs it
        name = os.path.relpath(job.source.absolute(), root)
        images.append(
            {
                "input": name,
                "size": [int(image.shape[1]), int(image.shape[0])],
                "faces": [face_to_json(face, k) for k, face in enumerate([*found, *extra])],
            }
        )
        console.print(f"{job.source}: {len(found) + len(extra)} face(s)", markup=False)
        if preview is not None:
            _write_preview(preview, name if len(plan.jobs) > 1 else None, image, [*found, *extra], len(found))
    document = {"rp_faces": FACES_JSON_VERSION, "detector": pipeline.detector.name, "images": images}
    atomic_write_bytes(output, faces_json_text(document).encode("utf-8"))
    console.print(f"wrote {output}: {sum(len(i['faces']) for i in images)} faces in {len(images)} images", markup=False)


def _write_preview(preview: Path, name: str | None, image: Any, faces: list[Any], coverage_from: int) -> None:
    """The numbered-box picture of one image: `preview` itself, or `preview/NAME.png` when several are drawn."""
    from rp_core.io import write_image
    from rp_core.preview import draw_faces

    target = preview if name is None else preview / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_image(target, draw_faces(image, faces, coverage_from))
