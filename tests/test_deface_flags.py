"""deface's flags where they map cleanly onto rp's (docs/deface.md), checked through `rp config show`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rp_core.cli import create_cli


def _show(*flags: str) -> tuple[int, str]:
    result = CliRunner().invoke(create_cli(), ["config", "show", "--preset", "offline", *flags, "--format", "json"])
    return result.exit_code, result.output


def test_deface_flags_land_on_the_components() -> None:
    code, output = _show("--thresh", "0.5", "--replacewith", "blur", "--mask-scale", "1.2", "--boxes")
    assert code == 0, output
    shown = json.loads(output)
    # the offline preset's detector is deface's, CenterFace: --thresh is its heatmap threshold, as in deface
    assert shown["detector"] == {"name": "centerface", "options": {**shown["detector"]["options"], "threshold": 0.5}}
    assert shown["generator"]["name"] == "blur"
    assert shown["merger"]["options"]["mask_scale"] == 1.2 and shown["merger"]["options"]["boxes"] is True


def test_replacewith_boxblur_is_deface_s_blur() -> None:
    code, output = _show(
        "--replacewith", "boxblur", "--set", "merger.options.erode=0", "--set", "merger.options.feather=0"
    )
    assert code == 0, output
    shown = json.loads(output)
    assert shown["generator"]["name"] == "boxblur"
    assert (shown["merger"]["options"]["erode"], shown["merger"]["options"]["feather"]) == (0.0, 0.0)


def test_det_thresh_reaches_the_chosen_detector() -> None:
    code, output = _show("--det-thresh", "0.5")
    assert code == 0, output
    assert json.loads(output)["detector"]["options"]["threshold"] == 0.5
    code, output = _show("--detector", "dlib", "--det-thresh", "0.5")
    assert code == 0, output
    assert json.loads(output)["detector"]["options"]["det_thresh"] == 0.5


def test_whole_head_is_the_default_and_set_reaches_the_merger() -> None:
    code, output = _show("--set", "merger.options.mask_scale=1.1")
    assert code == 0, output
    assert json.loads(output)["merger"]["options"] == {**json.loads(output)["merger"]["options"], "mask_scale": 1.1}
    code, output = _show()
    assert json.loads(output)["merger"]["options"]["mask_scale"] == 1.3


@pytest.mark.parametrize(
    ("flag", "hint"),
    [("--blur", "--replacewith blur"), ("--disable-progress-bar", "--quiet"), ("--draw-scores", "--preview")],
)
def test_a_deface_flag_points_to_its_rp_equivalent(flag: str, hint: str) -> None:
    result = CliRunner().invoke(create_cli(), ["anonymize", "a.jpg", "-o", "out", flag])
    assert result.exit_code == 2
    assert hint in result.output and "--debug" not in result.output


def test_replacewith_none_and_disagreeing_aliases_are_refused() -> None:
    code, output = _show("--replacewith", "none")
    assert code == 2 and "rp detect" in output
    code, output = _show("--thresh", "0.5", "--det-thresh", "0.3")
    assert code == 2 and "disagree" in output
    code, output = _show("--replacewith", "blur", "--generator", "blur")
    assert code == 0, output
