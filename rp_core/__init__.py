"""rp: Reverse Personalization face anonymization.

Import-light on purpose: `rp --help` and `rp plugins` must not pull in torch or OpenCV,
so the heavier public names below are resolved on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rp_core.hookspecs import hookimpl

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rp_core.api import anonymize, anonymize_files
    from rp_core.orchestrator import Anonymizer
    from rp_core.pipeline import Pipeline, assemble
    from rp_core.session import SessionOptions

_LAZY = {
    "anonymize": ("rp_core.api", "anonymize"),
    "anonymize_files": ("rp_core.api", "anonymize_files"),
    "Anonymizer": ("rp_core.orchestrator", "Anonymizer"),
    "Pipeline": ("rp_core.pipeline", "Pipeline"),
    "assemble": ("rp_core.pipeline", "assemble"),
    "SessionOptions": ("rp_core.session", "SessionOptions"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'rp_core' has no attribute {name!r}")


__all__ = [
    "Anonymizer",
    "Pipeline",
    "SessionOptions",
    "__version__",
    "anonymize",
    "anonymize_files",
    "assemble",
    "hookimpl",
]
