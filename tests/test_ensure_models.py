"""One way to get models ready (`ensure_models`) for anonymize, detect, models download and evaluate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.throwaway import CentreDetector, FlatGenerator, throwaway_host

from rp_core import hookimpl
from rp_core.cli import create_cli
from rp_core.config import resolve_config
from rp_core.errors import MissingModelsError
from rp_core.files.encode import write_image
from rp_core.models import ModelFile
from rp_core.pipeline import Pipeline, assemble
from rp_core.plugins import PluginHost


def _file(component: str, folder: Path | None, name: str) -> ModelFile:
    folder = folder or Path("/nonexistent-models")
    path = folder / name
    return ModelFile(component, name, path if path.exists() else None, (folder,), f"copy {name} into {folder}")


class WeightedDetector(CentreDetector):
    """Needs weighted.bin in the models folder; its download always fails (an unreachable host)."""

    name = "weighted"

    def model_files(self) -> list[ModelFile]:
        return [_file(self.name, self.context.models_dir, "weighted.bin")]

    def download(self, target: Path | None = None) -> list[Path]:
        raise ConnectionError("host unreachable")


class FetchingGenerator(FlatGenerator):
    """Needs fetched.bin; its download writes it where it is looked for."""

    name = "fetching"

    def model_files(self) -> list[ModelFile]:
        return [_file(self.name, self.context.models_dir, "fetched.bin")]

    def download(self, target: Path | None = None) -> list[Path]:
        folder = target or self.context.models_dir
        assert folder is not None
        (folder / "fetched.bin").write_bytes(b"weights")
        return [folder / "fetched.bin"]


class Plugin:
    @hookimpl
    def rp_register_detectors(self, register: Callable[[type], None]) -> None:
        register(WeightedDetector)

    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        register(FetchingGenerator)


def _host() -> PluginHost:
    host = throwaway_host()
    host.register_plugin(Plugin(), name="weights")
    return host


SETTINGS = ["detector.name=weighted", "generator.name=fetching", "merger.name=box", "verify.enabled=false"]


def _pipeline(host: PluginHost, models: Path) -> Pipeline:
    config = resolve_config(host, overrides=[*SETTINGS, "coverage.detector=null", f"runtime.models_dir={models}"])
    return assemble(config, host)


def test_offline_names_every_missing_file_where_it_was_looked_for_and_why_it_was_not_fetched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RP_OFFLINE", "1")
    pipeline = _pipeline(_host(), tmp_path)
    with pytest.raises(MissingModelsError) as caught:
        pipeline.ensure_models()
    message = str(caught.value)
    assert {f.description for f in caught.value.files} == {"weighted.bin", "fetched.bin"}
    assert f"looked in: {tmp_path}" in message and f"copy fetched.bin into {tmp_path}" in message
    assert "offline:" in message and not (tmp_path / "fetched.bin").exists()


def test_online_fetches_what_it_can_and_names_the_download_that_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RP_OFFLINE", raising=False)
    monkeypatch.setattr("rp_core.models.network_available", lambda *args, **kwargs: True)  # the gate, not the policy
    pipeline = _pipeline(_host(), tmp_path)
    with pytest.raises(MissingModelsError) as caught:
        pipeline.ensure_models()
    assert (tmp_path / "fetched.bin").read_bytes() == b"weights"
    assert [f.description for f in caught.value.files] == ["weighted.bin"]
    assert "detector weighted: download failed: ConnectionError: host unreachable" in str(caught.value)


def test_the_detectors_alone_need_no_generator_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RP_OFFLINE", "1")
    (tmp_path / "weighted.bin").write_bytes(b"x")
    pipeline = _pipeline(_host(), tmp_path)
    assert pipeline.ensure_models({"detector", "coverage.detector"}) == []
    with pytest.raises(MissingModelsError, match="fetched.bin"):
        pipeline.ensure_models()


def test_every_command_reports_a_missing_model_the_same_way(tmp_path: Path) -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 200
    write_image(tmp_path / "in.png", image)
    (tmp_path / "models").mkdir()
    common = [
        "--detector",
        "weighted",
        "--generator",
        "fetching",
        "--merger",
        "box",
        "--models",
        str(tmp_path / "models"),
    ]
    common += ["--set", "verify.enabled=false", "--set", "coverage.detector=null"]
    commands = {
        "anonymize": ["anonymize", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png")],
        "detect": ["detect", str(tmp_path / "in.png"), "-o", str(tmp_path / "faces.json")],
        "models download": ["models", "download"],
    }
    cli = create_cli(_host())
    outputs = {}
    for name, args in commands.items():
        result = CliRunner().invoke(cli, [*args, *common], env={"RP_OFFLINE": "1"})
        assert result.exit_code == 3, (name, result.output)
        outputs[name] = result.output[result.output.index("Missing model files:") :].strip()
    assert "weighted.bin" in outputs["detect"] and "fetched.bin" not in outputs["detect"]  # detect needs no generator
    assert outputs["anonymize"] == outputs["models download"] and "fetched.bin" in outputs["anonymize"]
    assert outputs["detect"].splitlines()[:4] == outputs["anonymize"].splitlines()[:4]  # the detector's lines alike
    assert not (tmp_path / "out.png").exists() and not (tmp_path / "faces.json").exists()
