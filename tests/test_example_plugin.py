"""The example third-party plugin in docs/example-plugin, installed by .ci/run, selected from a config file."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rp_core.cli import create_cli
from rp_core.io import read_image, write_image
from rp_core.plugins import PluginHost

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("rp_example_plugin") is None,
    reason="docs/example-plugin is not installed (pip install --no-deps -e docs/example-plugin; .ci/run does)",
)

CONFIG = """
preset = "offline"

[generator]
name = "example_mosaic"
options = { tiles = 4 }
"""


def test_example_plugin_is_found_through_its_entry_point() -> None:
    host = PluginHost(environ={"RP_PLUGINS": "rp-example"})
    assert host.get("generator", "example_mosaic").plugin == "rp-example"
    assert host.plugin_version("rp-example") == "0.1.0"


def test_example_plugin_selected_by_config_file(tmp_path: Path) -> None:
    from skimage import data

    (tmp_path / "rp.toml").write_text(CONFIG)
    original = data.astronaut()
    write_image(tmp_path / "astronaut.png", original)
    args = [
        "anonymize",
        str(tmp_path / "astronaut.png"),
        "-o",
        str(tmp_path / "out.png"),
        "--config",
        str(tmp_path / "rp.toml"),
    ]
    result = CliRunner().invoke(create_cli(), args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out.png.manifest.json").read_text())
    assert manifest["components"]["generator"] == {
        "name": "example_mosaic",
        "version": "example-mosaic-0.1.0",
        "plugin": "rp-example",
        "plugin_version": "0.1.0",
        "options": {"tiles": 4},  # the manifest records each stage's effective options
    }
    assert len(manifest["images"][0]["faces"]) == 1
    assert not np.array_equal(read_image(tmp_path / "out.png"), original)
