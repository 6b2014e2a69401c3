"""The paper's method: LEDITS++ SDXL inversion + IP-Adapter-FaceID regeneration with negative guidance."""

from __future__ import annotations

from collections.abc import Callable

from rp_core import hookimpl


@hookimpl
def rp_register_inverters(register: Callable[[type], None]) -> None:
    from rp_plugins.diffusion.components import LeditsSdxlInverter

    register(LeditsSdxlInverter)


@hookimpl
def rp_register_generators(register: Callable[[type], None]) -> None:
    from rp_plugins.diffusion.components import IpAdapterFaceIdGenerator

    register(IpAdapterFaceIdGenerator)
