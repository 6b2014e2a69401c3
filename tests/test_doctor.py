"""`rp doctor`: a verdict on stdout first, every preset judged, exit 0 when some preset can run."""

from __future__ import annotations

import json

from click.testing import CliRunner

from rp_core.cli import create_cli
from rp_core.doctor import PresetVerdict, preset_verdicts, verdict_line


def test_verdict_line_lists_what_runs_and_why_the_rest_does_not() -> None:
    line = verdict_line([PresetVerdict("offline", None), PresetVerdict("default", "no CUDA GPU")])
    assert line == "this machine can run: offline; cannot run: default (no CUDA GPU)"
    assert verdict_line([PresetVerdict("default", "no CUDA GPU")]).startswith("this machine can run: no preset;")


def test_offline_runs_here_and_doctor_says_so_on_stdout_first() -> None:
    from rp_core.plugins import PluginHost

    verdicts = {v.name: v for v in preset_verdicts(PluginHost())}
    assert verdicts["offline"].ok, verdicts["offline"].reason
    result = CliRunner().invoke(create_cli(), ["doctor"])
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first == verdict_line(list(verdicts.values()))
    assert "offline" in first.split(";")[0]
    assert "core  numpy" in result.stdout and "gpu   " in result.stdout  # details on stdout too
    shown = json.loads(CliRunner().invoke(create_cli(), ["doctor", "--json"]).stdout)
    assert shown["presets"]["offline"] == {"can_run": True, "reason": None}


def test_a_named_config_that_cannot_run_still_fails(tmp_path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "centerface.onnx"
    args = ["doctor", "--preset", "offline", "--set", f"coverage.detector_options.onnx_path={missing}"]
    result = CliRunner().invoke(create_cli(), args)
    assert result.exit_code == 3, result.output
    assert result.stdout.startswith("this machine can run: ")
    assert str(missing) in result.stderr


def test_the_cpu_refusal_suggests_what_this_machine_has(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import torch

    from rp_plugins.diffusion.sdxl import cpu_refusal

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "--device cuda" not in cpu_refusal() and "--preset offline" in cpu_refusal()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "--device cuda" in cpu_refusal()
