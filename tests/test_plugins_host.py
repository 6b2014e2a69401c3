"""The plugin host: one test per hook, name clashes, allow/block lists and local plugin folders."""

from __future__ import annotations

from collections.abc import Callable

import click
import numpy as np
import pytest
from click.testing import CliRunner
from helpers.throwaway import (
    PLUGIN_FILE,
    BoxMerger,
    CentreDetector,
    ConstantEncoder,
    FlatGenerator,
    NullInverter,
    ThrowawayPlugin,
    throwaway_host,
)

from rp_core import hookimpl
from rp_core.cli import create_cli
from rp_core.errors import PluginError
from rp_core.plugins import PluginHost


def _host() -> PluginHost:
    return PluginHost(load_entry_points=False, environ={})


def _one_hook_plugin(hook: str, cls: type) -> object:
    """A plugin object implementing exactly one registration hook."""

    def impl(register: Callable[[type], None]) -> None:
        register(cls)

    impl.__name__ = hook
    return type("OneHook", (), {hook: staticmethod(hookimpl(impl))})()


@pytest.mark.parametrize(
    ("hook", "kind", "cls"),
    [
        ("rp_register_detectors", "detector", CentreDetector),
        ("rp_register_identity_encoders", "identity_encoder", ConstantEncoder),
        ("rp_register_inverters", "inverter", NullInverter),
        ("rp_register_generators", "generator", FlatGenerator),
        ("rp_register_mergers", "merger", BoxMerger),
    ],
)
def test_each_component_hook_registers_and_unregisters(hook: str, kind: str, cls: type) -> None:
    host = _host()
    name = host.register_plugin(_one_hook_plugin(hook, cls), name="one-hook")
    registration = host.get(kind, cls.name)
    assert registration.cls is cls and registration.plugin == "one-hook"
    assert host.describe()[0]["provides"] == {kind: [cls.name]}
    assert host.describe()[0]["hooks"] == [hook]
    host.unregister_plugin(name)
    with pytest.raises(PluginError, match=f"no {kind} named '{cls.name}'"):
        host.get(kind, cls.name)


def test_preset_hook() -> None:
    host = _host()
    host.register_plugin(ThrowawayPlugin(), name="throwaway")
    assert host.presets["flat"].config["generator"] == {"name": "flat"}
    assert host.presets["flat"].plugin == "throwaway"


def test_command_hook_adds_a_command_to_rp() -> None:
    class CommandPlugin:
        @hookimpl
        def rp_register_commands(self, cli: click.Group) -> None:
            @cli.command()
            def hello() -> None:
                """Say hello."""
                click.echo("hello from a plugin")

    host = _host()
    host.register_plugin(CommandPlugin(), name="greeter")
    result = CliRunner().invoke(create_cli(host), ["hello"])
    assert result.exit_code == 0, result.output
    assert "hello from a plugin" in result.output


def test_duplicate_component_name_names_both_plugins() -> None:
    host = _host()
    host.register_plugin(_one_hook_plugin("rp_register_generators", FlatGenerator), name="first-plugin")
    host.register_plugin(_one_hook_plugin("rp_register_generators", FlatGenerator), name="second-plugin")
    with pytest.raises(PluginError) as info:
        host.get("generator", "flat")
    assert "first-plugin" in str(info.value) and "second-plugin" in str(info.value)
    assert "'flat'" in str(info.value)


def test_duplicate_preset_names_both_plugins() -> None:
    host = _host()
    host.register_plugin(ThrowawayPlugin(), name="a-plugin")
    host.register_plugin(ThrowawayPlugin(), name="b-plugin")
    with pytest.raises(PluginError) as info:
        _ = host.presets
    assert "a-plugin" in str(info.value) and "b-plugin" in str(info.value)


def test_registering_a_non_component_is_refused() -> None:
    host = _host()
    host.register_plugin(_one_hook_plugin("rp_register_detectors", dict), name="confused")
    with pytest.raises(PluginError, match="confused.*not a Detector"):
        host.get("detector", "anything")


def test_misspelled_hook_is_reported() -> None:
    class Typo:
        @hookimpl
        def rp_register_detector(self, register: Callable[[type], None]) -> None:  # missing the final "s"
            register(CentreDetector)

    with pytest.raises(PluginError, match="unknown hook"):
        _host().register_plugin(Typo(), name="typo")


def test_allow_list_env_loads_only_named_entry_points() -> None:
    host = PluginHost(environ={"RP_PLUGINS": "rp-presets"})
    assert [p["name"] for p in host.describe()] == ["rp-presets"]
    assert "offline" in host.presets


def test_block_list_env_wins_over_allow_list() -> None:
    host = PluginHost(environ={"RP_PLUGINS": "rp-presets,rp-obfuscate", "RP_PLUGINS_BLOCK": "rp-obfuscate"})
    names = [p["name"] for p in host.describe()]
    assert names == ["rp-presets"]
    with pytest.raises(PluginError, match="no generator named 'pixelate'"):
        host.get("generator", "pixelate")


def test_plugins_dir_loads_unpackaged_plugin(tmp_path) -> None:
    (tmp_path / "my_local_plugin.py").write_text(PLUGIN_FILE)
    host = PluginHost(plugins_dir=tmp_path, load_entry_points=False, environ={})
    registration = host.get("detector", "everywhere")
    assert registration.plugin == "my_local_plugin"
    faces = registration.cls().detect(np.zeros((40, 60, 3), np.uint8))
    assert len(faces) == 1 and faces[0].detector == "everywhere"
    described = {p["name"]: p for p in host.describe()}
    assert described["my_local_plugin"]["version"] == "local"


def test_plugins_dir_from_env_and_block_list(tmp_path) -> None:
    (tmp_path / "my_local_plugin.py").write_text(PLUGIN_FILE)
    host = PluginHost(load_entry_points=False, environ={"RP_PLUGINS_DIR": str(tmp_path)})
    assert "everywhere" in host.names("detector")
    blocked = PluginHost(
        load_entry_points=False, environ={"RP_PLUGINS_DIR": str(tmp_path), "RP_PLUGINS_BLOCK": "my_local_plugin"}
    )
    assert blocked.names("detector") == []


def test_missing_plugins_dir_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(PluginError, match="does not exist"):
        PluginHost(plugins_dir=tmp_path / "nope", load_entry_points=False, environ={})


def test_broken_plugin_file_names_itself(tmp_path) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PluginError, match="broken.py.*boom"):
        PluginHost(plugins_dir=tmp_path, load_entry_points=False, environ={})


def test_throwaway_host_describes_every_kind() -> None:
    provides = throwaway_host().describe()[0]["provides"]
    assert set(provides) == {"detector", "identity_encoder", "inverter", "generator", "merger", "preset"}
