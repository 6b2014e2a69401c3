"""Whether a library imports here, in one line: asked by the pipeline, doctor and evaluate, before any load."""

from __future__ import annotations

import importlib
import importlib.util

LIBGL_HINT = (
    "OpenCV needs libGL, which slim servers lack: "
    "pip uninstall -y opencv-python opencv-python-headless && pip install opencv-python-headless"
)


def import_status(module: str, *, deep: bool = True) -> str | None:
    """None when `module` imports here, else a one-line reason (with a fix for the usual libGL case).

    `deep=False` only checks that the module is installed: importing torch and diffusers
    takes seconds, and doctor must answer fast.
    """
    try:
        if not deep:
            if importlib.util.find_spec(module) is None:
                return f"ModuleNotFoundError: No module named {module!r}"
            return None
        importlib.import_module(module)
    except Exception as exc:  # ImportError, OSError from missing shared libraries, ...
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if "libGL" in reason or "libgthread" in reason:
            reason += f" ({LIBGL_HINT})"
        return reason
    return None
