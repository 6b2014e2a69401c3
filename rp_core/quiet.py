"""Third-party chatter (transformers notices, diffusers' loading bars) stays off the console unless --verbose.

The libraries read their verbosity from the environment when first imported, so the CLI sets it
before any model loads; components that load those libraries ask `libraries_verbose()` for the
settings that only exist as calls (diffusers' progress bars).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

#: What a quiet run sets (unless the user set it): errors only, no advisory warnings.
QUIET = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DIFFUSERS_VERBOSITY": "error",
    "DIFFUSERS_NO_ADVISORY_WARNINGS": "1",
}
#: What --verbose sets (unless the user set it): the libraries' own information.
VERBOSE = {"TRANSFORMERS_VERBOSITY": "info", "DIFFUSERS_VERBOSITY": "info"}


def set_library_verbosity(verbose: bool, environ: MutableMapping[str, str] | None = None) -> None:
    """Quiet (or, with `verbose`, talkative) third-party libraries; variables the user set win."""
    environ = os.environ if environ is None else environ
    for key, value in (VERBOSE if verbose else QUIET).items():
        environ.setdefault(key, value)


def libraries_verbose() -> bool:
    """Should libraries show their progress bars and notices (the user asked with --verbose or their env)?"""
    return os.environ.get("DIFFUSERS_VERBOSITY", "error").lower() in ("info", "debug")
