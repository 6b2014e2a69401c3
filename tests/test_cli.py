"""The `rp` command line, run as a user would: real plugins, real files, subprocesses where timing matters."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.throwaway import PLUGIN_FILE, throwaway_host

from rp_core.cli import create_cli
from rp_core.io import read_image, write_image
from rp_core.models import MODELS_DIR_ENV
from rp_core.plugins import PluginHost
from rp_core.samples import insightface_t1

CHECK_IMPORTS = """
import sys, time
from rp_core.cli import main
sys.argv = ["rp", *sys.argv[1:]]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
print("HEAVY:" + ",".join(m for m in ("torch", "diffusers", "cv2", "onnxruntime", "insightface") if m in sys.modules))
sys.exit(code)
"""


def _real_host() -> PluginHost:
    return PluginHost()


def _has(kind: str, name: str) -> bool:
    try:
        return name in _real_host().names(kind)
    except Exception:
        return False


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    return done, time.perf_counter() - start


@pytest.mark.parametrize("args", [("--help",), ("plugins",), ("plugins", "--json"), ("anonymize", "--help")])
def test_help_and_plugins_import_nothing_heavy(args: tuple[str, ...]) -> None:
    """The cause of a fast `rp --help` (no wall time: a loaded CI machine would make that flaky)."""
    done, _ = _run(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("HEAVY:"), done.stdout[-300:]


def test_the_offline_preset_imports_no_heavy_library(tmp_path: Path) -> None:
    """The cause of a fast one-photo run on a CPU (no wall time): neither SciPy (scikit-image's transforms), nor
    `onnx` (its ml_dtypes import alone is ~0.8 s), nor torch, nor multiprocessing (only a folder's worker processes
    need it, ~30 ms) is imported to anonymize a photo offline. The first run on a machine imports `onnx` once to
    write the networks' ONNX files to the cache folder; the runs after it (checked here, with a cache of their
    own) read them from there."""
    import skimage.data

    photo = tmp_path / "astronaut.png"
    write_image(photo, skimage.data.astronaut())
    script = CHECK_IMPORTS.replace('("torch", "diffusers", "cv2", "onnxruntime", "insightface")', HEAVY_FOR_A_PHOTO)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop(MODELS_DIR_ENV, None)
    runs = [
        subprocess.run(
            [sys.executable, "-c", script, "anonymize", str(photo), "-o", str(tmp_path / f"out{k}.png")]
            + ["--preset", "offline"],
            capture_output=True,
            text=True,
            env=env,
        )
        for k in range(2)
    ]
    assert [done.returncode for done in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert "1 anonymized (1 face)" in runs[1].stdout + runs[1].stderr
    assert "onnx" in runs[0].stdout.split("HEAVY:")[-1].split(",")  # the first run converted (the check sees it)
    assert runs[1].stdout.strip().endswith("HEAVY:"), runs[1].stdout[-300:]
    assert len(list((tmp_path / "cache" / "rp").glob("*.onnx"))) == 2  # CenterFace's and dlib's networks


HEAVY_FOR_A_PHOTO = '("torch", "diffusers", "insightface", "scipy", "skimage", "onnx", "ml_dtypes", "multiprocessing")'


def test_plugins_json_lists_every_builtin_plugin() -> None:
    result = CliRunner().invoke(create_cli(), ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert plugins["rp-presets"]["provides"]["preset"] == [
        "default",
        "fast",
        "offline",
    ]  # fp8 removed: not faster; throughput removed: ~6 % faster for ~2 min of compiling
    assert all({"name", "version", "hooks", "provides"} <= set(p) for p in plugins.values())


def test_config_show_prints_the_resolved_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[runtime]\nseed = 5\n")
    cli = create_cli(throwaway_host())
    args = ["config", "show", "--preset", "flat", "--config", str(config), "--set", "generator.options.level=3"]
    result = CliRunner().invoke(cli, [*args, "--format", "json"], env={"RP_RUNTIME__BATCH_SIZE": "2"})
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["detector"]["name"] == "centre" and shown["runtime"]["seed"] == 5
    assert shown["generator"]["options"] == {"level": 3} and shown["runtime"]["batch_size"] == 2
    yaml_result = CliRunner().invoke(cli, args)
    assert "preset: flat" in yaml_result.stdout


def test_config_error_is_one_message_and_exit_2_without_traceback() -> None:
    cli = create_cli(throwaway_host())
    result = CliRunner().invoke(cli, ["config", "show", "--preset", "flat", "--set", "runtime.seed"])
    assert result.exit_code == 2
    assert "expected section.key=value" in result.output and "Traceback" not in result.output
    debug = CliRunner().invoke(cli, ["config", "show", "--debug", "--preset", "flat", "--set", "runtime.seed"])
    assert debug.exception is not None and type(debug.exception).__name__ == "ConfigError"


def test_anonymize_with_a_plugins_dir_detector(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "local_detector.py").write_text(PLUGIN_FILE)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    write_image(tmp_path / "in.png", image)
    cli = create_cli(throwaway_host(plugins_dir=plugins))
    args = ["anonymize", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--preset", "flat"]
    result = CliRunner().invoke(cli, [*args, "--detector", "everywhere"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out.png.manifest.json").read_text())
    assert manifest["images"][0]["faces"][0]["detector"] == "everywhere"
    assert not np.array_equal(read_image(tmp_path / "out.png"), image)


def _photo_tree(root: Path) -> dict[str, np.ndarray]:
    """t1 (6 faces) and astronaut in a nested tree, a flat image with no face, and a broken file."""
    from skimage import data

    t1 = insightface_t1()
    assert t1 is not None, "insightface's t1.jpg is missing"
    (root / "people" / "group").mkdir(parents=True)
    shutil.copyfile(t1, root / "people" / "group" / "t1.jpg")
    write_image(root / "people" / "astronaut.png", data.astronaut())
    empty = np.full((48, 64, 3), 90, np.uint8)
    write_image(root / "empty.png", empty)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return {"empty.png": empty}


@pytest.mark.skipif(
    not (_has("detector", "dlib") and _has("generator", "pixelate")), reason="needs rp-dlib and rp-obfuscate"
)
def test_anonymize_folder_with_offline_preset_mirrors_tree_and_reports(tmp_path: Path) -> None:
    source, out = tmp_path / "in", tmp_path / "out"
    originals = _photo_tree(source)
    before = {p: p.read_bytes() for p in source.rglob("*") if p.is_file()}
    result = CliRunner().invoke(create_cli(), ["anonymize", str(source), "-o", str(out), "--preset", "offline"])
    assert result.exit_code == 4, result.output  # one bad file -> non-zero at the end
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == ["empty.png", "manifest.json", "people/astronaut.png", "people/group/t1.jpg"]
    assert "no face found; re-encoded unchanged (metadata stripped)" in result.output and "empty.png" in result.output
    assert "broken.jpg" in result.output and "1 of 4 files failed" in result.output
    assert np.array_equal(read_image(out / "empty.png"), originals["empty.png"])
    manifest = json.loads((out / "manifest.json").read_text())
    by_name = {Path(e["input"]).name: e for e in manifest["images"]}
    assert by_name["t1.jpg"]["status"] == "anonymized" and len(by_name["t1.jpg"]["faces"]) == 6
    assert by_name["empty.png"]["status"] == "no_face" and by_name["broken.jpg"]["status"] == "failed"
    assert manifest["components"]["detector"]["name"] == "centerface" and "numpy" in manifest["packages"]
    assert manifest["config"]["preset"] == "offline" and "total" in manifest["timings"]
    assert {p: p.read_bytes() for p in source.rglob("*") if p.is_file()} == before  # inputs untouched

    again = CliRunner().invoke(create_cli(), ["anonymize", str(source / "people"), "-o", str(out / "people")])
    assert again.exit_code == 0 and "exists, skipped" in again.output


@pytest.mark.skipif(
    not (_has("detector", "sfd") and _has("identity_encoder", "buffalo_l")), reason="needs rp-sfd and rp-buffalo-l"
)
@pytest.mark.parametrize("command", [["doctor"], ["models", "download"]])
def test_missing_models_fail_fast_with_one_clear_message(tmp_path: Path, command: list[str]) -> None:
    env = {"TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf"), "RP_OFFLINE": "1"}
    args = [*command, "--detector", "sfd", "--insightface-root", str(tmp_path / "insightface")]
    done, _ = _run(*args, env=env)
    assert done.returncode == 3, done.stderr
    heavy = done.stdout.strip().rsplit("HEAVY:", 1)[-1].split(",")
    assert not {"torch", "diffusers", "insightface"} & set(heavy), heavy  # fast because no model stack is imported
    assert "Traceback" not in done.stderr
    assert "s3fd-619a316812.pth" in done.stderr and str(tmp_path / "torch") in done.stderr
    assert "w600k_r50.onnx" in done.stderr and str(tmp_path / "insightface") in done.stderr
    assert "buffalo_l.zip" in done.stderr and "get it:" in done.stderr


def test_samples_copies_photos(tmp_path: Path) -> None:
    result = CliRunner().invoke(create_cli(throwaway_host()), ["samples", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert read_image(tmp_path / "s" / "t1.jpg").shape == (886, 1280, 3)
    assert read_image(tmp_path / "s" / "astronaut.png").shape == (512, 512, 3)


def test_bad_flag_value_is_a_usage_error() -> None:
    result = CliRunner().invoke(create_cli(throwaway_host()), ["config", "show", "--batch-size", "lots"])
    assert result.exit_code == 2 and "lots" in result.output and "auto" in result.output


def test_no_face_message_says_re_encoded_and_whether_metadata_was_kept(tmp_path: Path) -> None:
    from PIL import Image

    flat = tmp_path / "flat.jpg"
    exif = Image.Exif()
    exif[0x0132] = "2021:06:01 10:00:00"  # DateTime: a kept fact (free text such as the camera make never is)
    Image.new("RGB", (64, 48), (90, 120, 150)).save(flat, exif=exif, quality=95)
    args = ["anonymize", str(flat), "--preset", "offline"]
    kept = CliRunner().invoke(create_cli(), [*args, "-o", str(tmp_path / "kept.jpg"), "--keep-metadata"])
    assert kept.exit_code == 0, kept.output
    assert "no face found; re-encoded unchanged (metadata kept)" in kept.output and "copied" not in kept.output
    assert b"2021:06:01 10:00:00" in (tmp_path / "kept.jpg").read_bytes()
    stripped = CliRunner().invoke(create_cli(), [*args, "-o", str(tmp_path / "stripped.jpg")])
    assert "no face found; re-encoded unchanged (metadata stripped)" in stripped.output
    assert b"2021:06:01 10:00:00" not in (tmp_path / "stripped.jpg").read_bytes()


def test_output_folder_equal_to_the_input_folder_is_a_usage_error(tmp_path: Path) -> None:
    source = tmp_path / "in"
    write_image(source / "a.png", np.full((32, 32, 3), 90, np.uint8))
    before = (source / "a.png").read_bytes()
    for output in (source, tmp_path / "in" / ".." / "in"):
        result = CliRunner().invoke(create_cli(), ["anonymize", str(source), "-o", str(output), "--preset", "offline"])
        assert result.exit_code == 2, result.output
        assert "is the input folder" in result.output and "--in-place" in result.output
    assert sorted(p.name for p in source.iterdir()) == ["a.png"] and (source / "a.png").read_bytes() == before


@pytest.mark.parametrize("contents", [[], ["notes.txt", "clip.flv"], [".hidden.gif"]])
def test_a_folder_without_images_is_an_error(tmp_path: Path, contents: list[str]) -> None:
    source = tmp_path / "in"
    source.mkdir()
    for name in contents:
        (source / name).write_bytes(b"x")
    result = CliRunner().invoke(
        create_cli(), ["anonymize", str(source), "-o", str(tmp_path / "out"), "--preset", "offline"]
    )
    assert result.exit_code == 2, result.output
    assert f"no images or videos found in {source}" in result.output
    assert ".mp4" in result.output and ".jpg" in result.output  # "supported:" lists both kinds
    assert not (tmp_path / "out").exists()


# -- option rules: the API refuses what the CLI refuses, with the same line ----------------------------------


def _api_refusal(call: str, photo: Path, out: Path) -> str:
    """The one line the Python API raises for the same combination."""
    from rp_core.api import anonymize_files
    from rp_core.errors import ConfigError
    from rp_core.session import SessionOptions

    calls = {
        "gps": lambda: anonymize_files(photo, out, options=SessionOptions(keep_gps=True), preset="offline"),
        "both": lambda: anonymize_files(photo, out, in_place=True, preset="offline"),
        "neither": lambda: anonymize_files(photo, preset="offline"),
        "symlinks": lambda: anonymize_files(photo, out, follow_symlinks=True, preset="offline"),
        "same folder": lambda: anonymize_files(photo.parent, photo.parent, preset="offline"),
    }
    with pytest.raises(ConfigError) as refused:
        calls[call]()
    return str(refused.value)


@pytest.mark.parametrize(
    ("call", "flags"),
    [
        ("gps", ["-o", "{out}", "--keep-gps"]),
        ("both", ["-o", "{out}", "--in-place"]),
        ("neither", []),
        ("symlinks", ["-o", "{out}", "--follow-symlinks"]),
        ("same folder", ["-o", "{folder}"]),
    ],
)
def test_the_api_refuses_what_the_cli_refuses(tmp_path: Path, call: str, flags: list[str]) -> None:
    folder = tmp_path / "in"
    photo = folder / "a.png"
    write_image(photo, np.full((32, 32, 3), 90, np.uint8))
    out = tmp_path / "out"
    line = _api_refusal(call, photo, out)
    source = str(folder) if call == "same folder" else str(photo)
    args = [flag.format(out=out, folder=folder) for flag in flags]
    result = CliRunner().invoke(create_cli(), ["anonymize", source, *args, "--preset", "offline"])
    assert result.exit_code == 2 and result.output.splitlines() == [f"Error: {line}"], result.output
    assert "\n" not in line and not out.exists() and sorted(p.name for p in folder.iterdir()) == ["a.png"]


def test_session_options_refuse_values_the_cli_cannot_take() -> None:
    from rp_core.errors import ConfigError
    from rp_core.session import SessionOptions

    for bad in ({"quality": 0}, {"quality": 101}, {"manifest_paths": "short"}):
        with pytest.raises(ConfigError, match="quality|manifest-paths"):
            SessionOptions(**bad)  # type: ignore[arg-type]
    assert SessionOptions(keep_metadata=True, keep_gps=True, quality=100).keep_gps
