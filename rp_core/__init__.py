"""rp: Reverse Personalization face anonymization.

Import-light on purpose: `rp --help` and `rp plugins` must not pull in torch or OpenCV,
so the heavier public names below are resolved on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rp_core.hookspecs import hookimpl

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rp_core.api import anonymize
    from rp_core.orchestrator import Anonymizer

_LAZY = {
    "anonymize": ("rp_core.api", "anonymize"),
    "Anonymizer": ("rp_core.orchestrator", "Anonymizer"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'rp_core' has no attribute {name!r}")


__all__ = ["Anonymizer", "__version__", "anonymize", "hookimpl"]
