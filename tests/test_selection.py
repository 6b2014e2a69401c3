"""Choosing which faces change: keep a person by a reference photo, only the largest, a reviewed faces JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rp_core import hookimpl
from rp_core.cli import create_cli
from rp_core.interfaces import Generator
from rp_core.io import read_image, write_image
from rp_core.plugins import PluginHost
from rp_core.types import GenerationRequest


def _run(*args: object, host: PluginHost | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(create_cli(host), [str(a) for a in args])


def _boxes(reidentifier, image: np.ndarray) -> list:  # type: ignore[no-untyped-def]
    return list(reidentifier.detector(np.ascontiguousarray(image), 0))


def _face_unchanged(before: np.ndarray, after: np.ndarray, rect) -> bool:  # type: ignore[no-untyped-def]
    top, bottom, left, right = max(rect.top(), 0), rect.bottom(), max(rect.left(), 0), rect.right()
    return bool(np.array_equal(before[top:bottom, left:right], after[top:bottom, left:right]))


def test_keep_face_leaves_exactly_that_person_and_anonymizes_the_others(
    tmp_path: Path, t1: np.ndarray, reidentifier
) -> None:  # type: ignore[no-untyped-def]
    rects = sorted(_boxes(reidentifier, t1), key=lambda r: r.left())
    assert len(rects) == 6
    me = rects[2]
    pad = me.width()
    reference = t1[max(me.top() - pad, 0) : me.bottom() + pad, max(me.left() - pad, 0) : me.right() + pad]
    reference = np.ascontiguousarray(reference[:, ::-1])  # a mirrored crop: a different picture of the same person
    write_image(tmp_path / "me.png", reference)
    write_image(tmp_path / "t1.png", t1)
    result = _run(
        "anonymize",
        tmp_path / "t1.png",
        "-o",
        tmp_path / "out.png",
        "--preset",
        "offline",
        "--keep-face",
        tmp_path / "me.png",
    )
    assert result.exit_code == 0, result.output
    output = read_image(tmp_path / "out.png")
    assert _face_unchanged(t1, output, me)
    originals = [np.array(reidentifier.model.compute_face_descriptor(t1, reidentifier.predictor(t1, r))) for r in rects]
    found = reidentifier.descriptors(output, upsample=1)
    nearest = [min((float(np.linalg.norm(o - d)) for d in found), default=np.inf) for o in originals]
    assert nearest[2] < 0.1  # the kept person is still themselves
    assert all(d > reidentifier.threshold for k, d in enumerate(nearest) if k != 2), nearest
    records = json.loads((tmp_path / "out.png.manifest.json").read_text())["images"][0]["faces"]
    assert sorted(r["action"] for r in records) == ["kept"] + ["obfuscated"] * 5


def test_only_largest_and_max_faces(tmp_path: Path, t1: np.ndarray) -> None:
    write_image(tmp_path / "t1.png", t1)
    for flags, changed in ((["--only-largest"], 1), (["--max-faces", "3"], 3)):
        out = tmp_path / f"out{changed}.png"
        assert _run("anonymize", tmp_path / "t1.png", "-o", out, "--preset", "offline", *flags).exit_code == 0
        records = json.loads(out.with_name(out.name + ".manifest.json").read_text())["images"][0]["faces"]
        assert sum(r["action"] != "kept" for r in records) == changed


class RecordsPrompts(Generator):
    """Greys the face and remembers the prompt each face asked for."""

    name = "records_prompts"
    seen: list[str | None] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        RecordsPrompts.seen.extend(r.prompt for r in requests)
        return [np.full_like(r.face.crop, 127) for r in requests]


class PromptPlugin:
    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        register(RecordsPrompts)


def test_faces_json_round_trip_renders_like_a_direct_run_and_honours_keep_and_prompts(
    tmp_path: Path, t1: np.ndarray, astronaut: np.ndarray
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    write_image(photos / "t1.png", t1)
    write_image(photos / "astronaut.png", astronaut)
    detected = _run("detect", photos, "-o", tmp_path / "faces.json", "--preset", "offline")
    assert detected.exit_code == 0, detected.output
    document = json.loads((tmp_path / "faces.json").read_text())
    assert {e["input"]: len(e["faces"]) for e in document["images"]} == {"astronaut.png": 1, "t1.png": 6}

    direct = _run("anonymize", photos, "-o", tmp_path / "direct", "--preset", "offline")
    from_json = _run(
        "anonymize", photos, "-o", tmp_path / "json", "--preset", "offline", "--faces-json", tmp_path / "faces.json"
    )
    assert direct.exit_code == 0 and from_json.exit_code == 0, from_json.output
    for name in ("t1.png", "astronaut.png"):
        assert (tmp_path / "direct" / name).read_bytes() == (tmp_path / "json" / name).read_bytes()

    t1_entry = next(e for e in document["images"] if e["input"] == "t1.png")
    t1_entry["faces"][0]["keep"] = True
    t1_entry["faces"][1]["prompt"] = "an old man"
    (tmp_path / "edited.json").write_text(json.dumps(document))
    host = PluginHost(extra_plugins=[PromptPlugin()])
    RecordsPrompts.seen.clear()
    edited = _run(
        "anonymize",
        photos / "t1.png",
        "-o",
        tmp_path / "edited.png",
        "--preset",
        "offline",
        "--generator",
        "records_prompts",
        "--faces-json",
        tmp_path / "edited.json",
        host=host,
    )
    assert edited.exit_code == 0, edited.output
    assert RecordsPrompts.seen.count("an old man") == 1 and len(RecordsPrompts.seen) == 5
    x0, y0, x1, y1 = (round(v) for v in t1_entry["faces"][0]["box"])
    output = read_image(tmp_path / "edited.png")
    assert np.array_equal(output[y0:y1, x0:x1], t1[y0:y1, x0:x1])


def test_a_face_deleted_from_the_json_is_still_found_by_coverage(tmp_path: Path, astronaut: np.ndarray) -> None:
    write_image(tmp_path / "a.png", astronaut)
    _run("detect", tmp_path / "a.png", "-o", tmp_path / "faces.json", "--preset", "offline")
    document = json.loads((tmp_path / "faces.json").read_text())
    document["images"][0]["faces"] = []  # "reviewed" away
    (tmp_path / "faces.json").write_text(json.dumps(document))
    result = _run(
        "anonymize",
        tmp_path / "a.png",
        "-o",
        tmp_path / "b.png",
        "--preset",
        "offline",
        "--faces-json",
        tmp_path / "faces.json",
    )
    assert result.exit_code == 0, result.output
    records = json.loads((tmp_path / "b.png.manifest.json").read_text())["images"][0]["faces"]
    assert len(records) == 1 and records[0]["action"] == "obfuscated" and "found_by" in records[0]["notes"]


@pytest.mark.parametrize("flag", ["--keep-face", "--only-face"])
def test_a_reference_photo_without_a_face_is_an_input_error(tmp_path: Path, flag: str, astronaut: np.ndarray) -> None:
    write_image(tmp_path / "wall.png", np.full((80, 80, 3), 90, np.uint8))
    write_image(tmp_path / "a.png", astronaut)
    result = _run(
        "anonymize", tmp_path / "a.png", "-o", tmp_path / "b.png", "--preset", "offline", flag, tmp_path / "wall.png"
    )
    assert result.exit_code == 4 and "no face found in the reference photo" in result.output


def test_faces_json_is_compact_and_the_preview_numbers_the_faces(tmp_path: Path, t1: np.ndarray) -> None:
    """One block per face, index/box/keep/prompt first, landmarks on one line; the preview shows the numbers."""
    from rp_core.selection import read_faces_json

    write_image(tmp_path / "t1.png", t1)
    args = ["-o", tmp_path / "faces.json", "--preview", tmp_path / "faces.png", "--preset", "offline"]
    result = _run("detect", tmp_path / "t1.png", *args)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "faces.json").read_text()
    document = json.loads(text)
    faces = document["images"][0]["faces"]
    assert len(faces) == 6 and [f["index"] for f in faces] == list(range(6))
    assert all(list(f)[:4] == ["index", "box", "keep", "prompt"] for f in faces)
    assert len(text.splitlines()) < 15 * len(faces)  # was 1,731 lines for these 6 faces
    landmark_lines = [line for line in text.splitlines() if '"landmarks"' in line]
    assert len(landmark_lines) == 6 and all(line.rstrip().endswith("]]") for line in landmark_lines)
    assert read_faces_json(tmp_path / "faces.json")["t1.png"]["faces"] == faces
    preview = read_image(tmp_path / "faces.png")
    assert preview.shape == t1.shape
    for face in faces:  # each box is drawn in the main detector's green
        x0, y0 = (round(v) for v in face["box"][:2])
        assert tuple(preview[y0 + 8, x0]) == (0, 220, 0)
