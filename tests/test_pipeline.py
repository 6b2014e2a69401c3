"""The assembled pipeline: effective options, capability checks before loading, failure isolation, plugin flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from rp_core import hookimpl
from rp_core.api import anonymize_files
from rp_core.cli import create_cli
from rp_core.config import resolve_config
from rp_core.errors import ConfigError
from rp_core.interfaces import Generator
from rp_core.io import read_image, write_image
from rp_core.pipeline import assemble
from rp_core.plugins import PluginHost
from rp_core.samples import insightface_t1
from rp_core.types import GenerationRequest

CLI_EXIT = """
import sys
from rp_core.cli import main
code = 0
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
print("HEAVY:" + ",".join(m for m in ("torch", "diffusers", "onnxruntime", "insightface") if m in sys.modules))
sys.exit(code)
"""


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CLI_EXIT, *args], capture_output=True, text=True, env=os.environ)


def test_config_show_prints_the_effective_method_parameters_and_marks_slots_that_do_not_run() -> None:
    runner = CliRunner()
    default = runner.invoke(create_cli(), ["config", "show"])
    assert default.exit_code == 0, default.output
    shown = yaml.safe_load(default.output)
    assert shown["generator"]["options"]["guidance_scale"] == -10.0
    assert shown["inverter"]["options"]["num_inversion_steps"] == 100
    assert shown["inverter"]["options"]["skip"] == 0.7
    assert shown["pipeline"]["verify.encoder"]["name"] == "buffalo_l"
    offline = yaml.safe_load(runner.invoke(create_cli(), ["config", "show", "--preset", "offline"]).output)
    assert offline["inverter"]["runs"] is False and "inverter" not in offline["pipeline"]
    assert offline["generator"]["options"]["blocks"] > 0  # pixelate's defaults filled in


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        (["--identity-encoder", "dlib"], ("identity_encoder.name", "generator.name")),
        (
            ["--set", "inverter.options.sd_model=/elsewhere/sdxl"],
            ("inverter.options.sd_model", "generator.options.sd_model"),
        ),
    ],
)
def test_incompatible_choices_exit_2_naming_both_keys_before_anything_loads(
    tmp_path: Path, args: list[str], keys: tuple[str, str]
) -> None:
    photo = insightface_t1()
    assert photo is not None
    done = _cli("anonymize", str(photo), "-o", str(tmp_path / "out.jpg"), *args)
    assert done.returncode == 2, done.stderr
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1 and all(key in message for key in keys), message
    assert "Traceback" not in done.stderr
    assert done.stdout.strip() == "HEAVY:", done.stdout  # nothing loaded: no torch, no onnxruntime
    assert not (tmp_path / "out.jpg").exists()


def test_a_coverage_detector_identical_to_the_main_one_is_refused(host: PluginHost) -> None:
    config = resolve_config(
        host,
        preset="offline",
        overrides=["coverage.detector=centerface", "coverage.search=plain"],  # the offline preset's detector
        environ={},
    )
    with pytest.raises(ConfigError, match="coverage.detector"):
        assemble(config, host)


class RaisesOnBlue(Generator):
    """Pixelates like the offline preset, but raises on an image whose faces sit on a blue-tinted photo."""

    name = "raises_on_blue"

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        out = []
        for r in requests:
            crop = np.array(r.face.crop)
            if crop[..., 2].mean() > crop[..., 0].mean() + 40:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            h, w = crop.shape[:2]
            small = crop[:: max(1, h // 8), :: max(1, w // 8)]
            out.append(
                np.kron(small, np.ones((h // small.shape[0] + 1, w // small.shape[1] + 1, 1)))[:h, :w].astype(np.uint8)
            )
        return out


class RaisingPlugin:
    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        register(RaisesOnBlue)


def _five_images(folder: Path, astronaut: np.ndarray) -> None:
    folder.mkdir()
    for i in range(5):
        image = astronaut.copy()
        if i == 2:
            image[..., 2] = np.clip(image[..., 2].astype(int) + 120, 0, 255).astype(np.uint8)
            image[..., 0] = image[..., 0] // 2
        write_image(folder / f"img{i}.png", image)


def test_a_generator_failing_on_one_image_fails_only_that_image(tmp_path: Path, astronaut: np.ndarray) -> None:
    from rp_core.plugins import PluginHost

    _five_images(tmp_path / "in", astronaut)
    host = PluginHost(extra_plugins=[RaisingPlugin()])
    cli = create_cli(host)
    result = CliRunner().invoke(
        cli,
        [
            "anonymize",
            str(tmp_path / "in"),
            "-o",
            str(tmp_path / "out"),
            "--preset",
            "offline",
            "--generator",
            "raises_on_blue",
        ],
    )
    assert result.exit_code == 4, result.output
    assert "Traceback" not in result.output and "illegal memory access" in result.output
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == ["img0.png", "img1.png", "img3.png", "img4.png"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    statuses = {e["input"]: e["status"] for e in manifest["images"]}
    assert statuses == {f"img{i}.png": ("failed" if i == 2 else "anonymized") for i in range(5)}

    summary = anonymize_files(
        tmp_path / "in", tmp_path / "api", host=host, preset="offline", generator="raises_on_blue"
    )
    assert [e.status for e in summary.entries] == [e["status"] for e in manifest["images"]]
    assert summary.exit_code() == 4
    for name in written:
        assert np.array_equal(read_image(tmp_path / "api" / name), read_image(tmp_path / "out" / name))


def test_a_third_party_flag_shows_in_help_and_reaches_its_options(tmp_path: Path, astronaut: np.ndarray) -> None:
    pytest.importorskip("rp_example_plugin")
    cli = create_cli()
    runner = CliRunner()
    assert "--mosaic-tiles" in runner.invoke(cli, ["anonymize", "--help"]).output
    shown = runner.invoke(
        cli, ["config", "show", "--preset", "offline", "--generator", "example_mosaic", "--mosaic-tiles", "9"]
    )
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.output)["generator"]["options"]["tiles"] == 9
    wrong = runner.invoke(cli, ["config", "show", "--preset", "offline", "--mosaic-tiles", "9"])
    assert wrong.exit_code == 2 and "--mosaic-tiles" in wrong.output and "generator=pixelate" in wrong.output


def test_component_options_are_listed_with_defaults_and_descriptions() -> None:
    result = CliRunner().invoke(create_cli(), ["plugins", "--json", "--options"])
    described = {p["name"]: p for p in json.loads(result.output)}
    pixelate = described["rp-obfuscate"]["options"]["generator pixelate"]
    assert any(row["option"] == "blocks" and row["description"] for row in pixelate)
    diffusion = described["rp-diffusion"]["options"]["generator ipadapter_faceid"]
    assert {row["flag"] for row in diffusion} >= {"--guidance-scale", "--attribute-prompt"}


class NeedsMissingLibrary(Generator):
    """A generator whose library is not installed, and one whose machine cannot run it; both record downloads."""

    name = "needs_missing_library"
    requires = ("rp_no_such_module_for_tests",)
    install_hint = "pip install 'rp-anonymize[imaginary]'"
    downloads: list[str] = []

    def model_files(self):  # type: ignore[no-untyped-def]
        from rp_core.models import ModelFile

        return [ModelFile(self.name, "a 15 GB model", None, (), "rp models download")]

    def download(self, target=None):  # type: ignore[no-untyped-def]
        NeedsMissingLibrary.downloads.append(self.name)
        return []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[np.ndarray]:
        raise AssertionError("never reached")


class NeedsAGpu(NeedsMissingLibrary):
    name = "needs_a_gpu"
    requires = ()

    def check_can_run(self) -> None:
        from rp_core.errors import DeviceError

        raise DeviceError("no CUDA GPU here: use --preset offline")


class PreflightPlugin:
    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        register(NeedsMissingLibrary)
        register(NeedsAGpu)


@pytest.mark.parametrize(
    ("generator", "expected"),
    [("needs_missing_library", "pip install 'rp-anonymize[imaginary]'"), ("needs_a_gpu", "--preset offline")],
)
def test_a_stage_that_cannot_run_here_fails_with_advice_before_any_download(generator: str, expected: str) -> None:
    from helpers.stacks import FACE_STACK_PLUGINS

    from rp_core.errors import RpError

    host = PluginHost(environ={"RP_PLUGINS": FACE_STACK_PLUGINS}, extra_plugins=[PreflightPlugin()])
    config = resolve_config(host, preset="offline", overrides=[f"generator.name={generator}"], environ={})
    NeedsMissingLibrary.downloads.clear()
    with pytest.raises(RpError, match="offline|imaginary") as caught:
        assemble(config, host).load()
    assert expected in str(caught.value)
    assert NeedsMissingLibrary.downloads == []


API_KILLED_AFTER = """
import os, sys
from rp_core.api import anonymize_files

written = []

def on_event(event):
    if event.kind == "done":
        written.append(event.path)
        if len(written) == int(sys.argv[3]):
            os._exit(9)  # killed between files, as by the OOM killer: no cleanup, no manifest

anonymize_files(sys.argv[1], sys.argv[2], preset="offline", on_event=on_event)
"""


@pytest.mark.e2e
def test_the_api_files_call_matches_the_cli_and_resumes_after_a_kill(tmp_path: Path, astronaut: np.ndarray) -> None:
    from helpers.runs import manifest_facts, shifted_images, snapshot

    from rp_core.session import SessionOptions

    source = tmp_path / "photos"
    shifted_images(source, astronaut, count=6)
    cli_out, api_out = tmp_path / "cli", tmp_path / "api"
    assert (
        CliRunner()
        .invoke(create_cli(), ["anonymize", str(source), "-o", str(cli_out), "--preset", "offline"])
        .exit_code
        == 0
    )
    killed = subprocess.run([sys.executable, "-c", API_KILLED_AFTER, str(source), str(api_out), "3"], env=os.environ)
    assert killed.returncode == 9
    assert len(list(api_out.glob("*.jpg"))) == 3 and not (api_out / "manifest.json").exists()
    summary = anonymize_files(source, api_out, preset="offline", options=SessionOptions(resume=True))
    assert summary.exit_code() == 0 and summary.anonymized == 6  # the 3 resumed and the 3 done now
    ours, theirs = snapshot(api_out), snapshot(cli_out)
    assert sorted(ours) == sorted(theirs)
    assert all(ours[name] == theirs[name] for name in ours if name != "manifest.json")
    assert manifest_facts(api_out) == manifest_facts(cli_out)


def test_overlap_gives_the_same_files_and_records_as_the_plain_stream(tmp_path: Path, astronaut: np.ndarray) -> None:
    """Offline preset over a folder with a failing image: the worker thread changes nothing users see."""
    from helpers.runs import manifest_facts, snapshot

    _five_images(tmp_path / "in", astronaut)
    host = PluginHost(extra_plugins=[RaisingPlugin()])
    outs = {}
    for overlap in ("true", "false"):
        out = tmp_path / f"out-{overlap}"
        result = CliRunner().invoke(
            create_cli(host),
            [
                "anonymize",
                str(tmp_path / "in"),
                "-o",
                str(out),
                "--preset",
                "offline",
                "--generator",
                "raises_on_blue",
                "--set",
                f"runtime.overlap={overlap}",
            ],
        )
        assert result.exit_code == 4, result.output
        outs[overlap] = out
    a, b = snapshot(outs["true"]), snapshot(outs["false"])
    assert sorted(a) == sorted(b) and all(a[k] == b[k] for k in a if k != "manifest.json")
    assert manifest_facts(outs["true"]) == manifest_facts(outs["false"])
