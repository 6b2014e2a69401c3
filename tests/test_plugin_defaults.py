"""Defaults come from the plugins' own registration (`default_for`, `coverage_priority`), never from core."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import pytest
from helpers.throwaway import BoxMerger, CentreDetector, ConstantEncoder, FlatGenerator, NullInverter

from rp_core import hookimpl
from rp_core.config import RunConfig, resolve_config
from rp_core.errors import ConfigError, PluginError
from rp_core.pipeline import assemble, coverage_detector_name
from rp_core.plugins import PluginHost


class DefaultDetector(CentreDetector):
    name = "centre-default"
    default_for: ClassVar[tuple[str, ...]] = ("detector",)
    coverage_priority: ClassVar[int | None] = 5


class RivalDetector(CentreDetector):
    name = "rival"
    default_for: ClassVar[tuple[str, ...]] = ("detector",)
    coverage_priority: ClassVar[int | None] = 1


class DefaultGenerator(FlatGenerator):
    name = "flat-default"
    default_for: ClassVar[tuple[str, ...]] = ("generator", "verify.fallback_generator")


class LastResort(FlatGenerator):
    name = "flat-last"
    default_for: ClassVar[tuple[str, ...]] = ("verify.last_resort",)


class DefaultMerger(BoxMerger):
    name = "box-default"
    default_for: ClassVar[tuple[str, ...]] = ("merger",)


class DefaultEncoder(ConstantEncoder):
    name = "constant-default"
    default_for: ClassVar[tuple[str, ...]] = ("identity_encoder",)


class Plugin:
    """Registers the given classes under their kind's hook."""

    def __init__(self, *classes: type) -> None:
        self.classes = classes

    def _register(self, register: Callable[[type], None], kind: str) -> None:
        for cls in self.classes:
            if getattr(cls, "kind", None) == kind:
                register(cls)

    @hookimpl
    def rp_register_detectors(self, register: Callable[[type], None]) -> None:
        self._register(register, "detector")

    @hookimpl
    def rp_register_identity_encoders(self, register: Callable[[type], None]) -> None:
        self._register(register, "identity_encoder")

    @hookimpl
    def rp_register_inverters(self, register: Callable[[type], None]) -> None:
        self._register(register, "inverter")

    @hookimpl
    def rp_register_generators(self, register: Callable[[type], None]) -> None:
        self._register(register, "generator")

    @hookimpl
    def rp_register_mergers(self, register: Callable[[type], None]) -> None:
        self._register(register, "merger")


def _host(*plugins: Plugin) -> PluginHost:
    host = PluginHost(load_entry_points=False, environ={})
    for i, plugin in enumerate(plugins):
        host.register_plugin(plugin, name=f"plugin-{i}")
    return host


SAFE = (DefaultDetector, DefaultGenerator, LastResort, DefaultMerger, DefaultEncoder, NullInverter)


def test_every_default_is_what_a_plugin_claims() -> None:
    config = resolve_config(_host(Plugin(*SAFE)), environ={})
    names = [getattr(config, s).name for s in ("detector", "identity_encoder", "generator", "merger")]
    assert names == ["centre-default", "constant-default", "flat-default", "box-default"]
    assert (config.verify.fallback_generator, config.verify.last_resort) == ("flat-default", "flat-last")
    assert config.inverter.name is None  # nothing claims it, and this generator runs none


def test_a_config_naming_a_component_wins_and_null_turns_the_last_resort_off() -> None:
    config = resolve_config(
        _host(Plugin(*SAFE, BoxMerger)), overrides=["merger.name=box", "verify.last_resort=null"], environ={}
    )
    assert config.merger.name == "box" and config.verify.last_resort is None


def test_two_claims_of_one_default_name_both_and_only_matter_when_it_is_used() -> None:
    host = _host(Plugin(*SAFE), Plugin(RivalDetector))
    with pytest.raises(ConfigError) as caught:
        resolve_config(host, environ={})
    message = str(caught.value)
    assert "\n" not in message and "'centre-default' (plugin-0)" in message and "'rival' (plugin-1)" in message
    assert resolve_config(host, flags={"detector": "rival"}, environ={}).detector.name == "rival"


def test_a_slot_nobody_claims_is_one_line_naming_what_is_installed() -> None:
    host = _host(Plugin(DefaultDetector, DefaultGenerator, LastResort, BoxMerger))
    with pytest.raises(ConfigError) as caught:
        resolve_config(host, environ={})
    message = str(caught.value)
    assert "\n" not in message and message.startswith("merger.name: no installed plugin declares") and "box" in message
    assert resolve_config(host, flags={"merger": "box"}, environ={}).merger.name == "box"


def test_a_claim_of_another_kinds_key_is_refused_at_registration() -> None:
    class Confused(CentreDetector):
        name = "confused"
        default_for: ClassVar[tuple[str, ...]] = ("verify.fallback_generator",)

    with pytest.raises(PluginError, match="confused.*may claim detector"):
        _ = _host(Plugin(Confused)).registry


def test_auto_coverage_follows_the_declared_priority() -> None:
    host = _host(Plugin(*SAFE), Plugin(RivalDetector))
    config = resolve_config(host, flags={"detector": "rival"}, environ={})
    assert host.auto_coverage() == ["rival", "centre-default"]
    assert coverage_detector_name(config, host) == "centre-default"  # the first that is not the main detector
    plain = resolve_config(host, flags={"detector": "centre-default"}, environ={})
    assert coverage_detector_name(plain, host) == "rival"


def test_two_detectors_in_one_coverage_place_is_an_error_for_auto_only() -> None:
    class Tied(CentreDetector):
        name = "tied"
        coverage_priority: ClassVar[int | None] = 5

    host = _host(Plugin(*SAFE, Tied))
    config = resolve_config(host, overrides=["verify.enabled=false"], environ={})
    with pytest.raises(PluginError, match="'centre-default'.*'tied'.*coverage_priority=5"):
        assemble(config, host)
    off = resolve_config(host, overrides=["verify.enabled=false", "coverage.detector=null"], environ={})
    assert assemble(off, host).coverage is None


def test_core_model_names_no_component() -> None:
    defaults = RunConfig()
    assert [getattr(defaults, s).name for s in ("detector", "generator", "merger")] == [None, None, None]
    assert (defaults.verify.fallback_generator, defaults.verify.last_resort) == (None, None)


def test_the_builtin_plugins_declare_the_papers_defaults() -> None:
    host = PluginHost(environ={})
    if "sfd" not in host.registry["detector"] or "centerface" not in host.registry["detector"]:
        pytest.skip("the built-in plugins are not installed")
    config = resolve_config(host, environ={})
    slots = [getattr(config, s).name for s in ("detector", "identity_encoder", "inverter", "generator", "merger")]
    assert slots == ["sfd", "buffalo_l", "ledits_sdxl", "ipadapter_faceid", "affine"]
    assert (config.verify.fallback_generator, config.verify.last_resort) == ("pixelate", "solid")
    assert coverage_detector_name(config, host) == "centerface"


def test_a_safeguard_nobody_claims_is_refused_when_the_run_needs_it() -> None:
    host = _host(Plugin(DefaultDetector, DefaultMerger, DefaultEncoder, FlatGenerator))
    config = resolve_config(host, flags={"generator": "flat"}, overrides=["coverage.detector=null"], environ={})
    assert (config.verify.fallback_generator, config.verify.last_resort) == (None, None)
    with pytest.raises(ConfigError) as caught:
        assemble(config, host)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("verify.fallback_generator: no component")
    unchecked = resolve_config(
        host, flags={"generator": "flat"}, overrides=["coverage.detector=null", "verify.enabled=false"], environ={}
    )
    assert assemble(unchecked, host).fallback is None
