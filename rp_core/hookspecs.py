"""Hook specifications: what a plugin may provide.

Each registration hook receives a `register` callback; calling it records the
component class together with the plugin that provided it, so a name claimed by
two plugins is reported with both names. New arguments may be added to a hook,
existing ones never change (pluggy lets implementations accept a subset).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("rp")
hookimpl = pluggy.HookimplMarker("rp")


@hookspec
def rp_register_detectors(register: Callable[[type], None]) -> None:
    """Call `register(DetectorClass)` for each Detector this plugin provides. Returns nothing."""


@hookspec
def rp_register_identity_encoders(register: Callable[[type], None]) -> None:
    """Call `register(EncoderClass)` for each IdentityEncoder this plugin provides. Returns nothing."""


@hookspec
def rp_register_inverters(register: Callable[[type], None]) -> None:
    """Call `register(InverterClass)` for each Inverter this plugin provides. Returns nothing."""


@hookspec
def rp_register_generators(register: Callable[[type], None]) -> None:
    """Call `register(GeneratorClass)` for each Generator this plugin provides. Returns nothing."""


@hookspec
def rp_register_mergers(register: Callable[[type], None]) -> None:
    """Call `register(MergerClass)` for each Merger this plugin provides. Returns nothing."""


@hookspec
def rp_register_presets(register: Callable[[str, dict[str, Any], str], None]) -> None:
    """Call `register(name, partial_config, description)` for each named preset. Returns nothing."""


@hookspec
def rp_register_commands(cli: Any) -> None:
    """Add click commands to the `rp` command group `cli`. Returns nothing."""
