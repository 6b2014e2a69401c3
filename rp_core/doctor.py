"""Can this machine run a config? Import checks and model-file checks, without loading any model.

Shared by `rp doctor` and `rp models download`: both build the components a config
uses (construction is cheap) and ask them which files they need, so the answer and
the missing-model error always name the same files in the same words. Nothing here
imports the orchestrator, so a broken OpenCV install is reported, not crashed on.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any

from rp_core.config import COMPONENT_SECTIONS, RunConfig, validate_options
from rp_core.config import sections_in_use as config_sections_in_use
from rp_core.errors import RpError
from rp_core.interfaces import Component
from rp_core.models import ModelFile
from rp_core.plugins import PluginHost

#: Libraries rp_core itself needs to anonymize anything.
CORE_MODULES = ("numpy", "PIL", "cv2", "skimage", "pydantic", "yaml")
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


def sections_in_use(host: PluginHost, config: RunConfig) -> list[str]:
    """The slots a run of `config` fills that name a component (see rp_core.config.sections_in_use)."""
    return [s for s in config_sections_in_use(host, config.generator.name) if getattr(config, s).name]


def build_component(host: PluginHost, config: RunConfig, section: str, name: str | None = None) -> Component:
    """Construct (not load) a component: with the config's options if it is the chosen one, else defaults."""
    choice = getattr(config, section)
    chosen = name is None or name == choice.name
    name = choice.name if name is None else name
    if not name:
        raise RpError(f"{section}.name is empty")
    registration = host.get(section, name)
    options = validate_options(host, section, choice) if chosen else registration.cls.Options()
    return registration.cls(options, config.runtime_context())


def components_in_use(host: PluginHost, config: RunConfig) -> dict[str, Component]:
    return {section: build_component(host, config, section) for section in sections_in_use(host, config)}


@dataclass
class ComponentHealth:
    """What `rp doctor` says about one registered component."""

    kind: str
    name: str
    plugin: str
    in_use: bool
    imports: dict[str, str | None] = field(default_factory=dict)
    files: list[ModelFile] = field(default_factory=list)
    error: str | None = None

    @property
    def missing_imports(self) -> list[str]:
        return [module for module, reason in self.imports.items() if reason is not None]

    @property
    def missing_files(self) -> list[ModelFile]:
        return [f for f in self.files if not f.present]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.missing_imports and not self.missing_files

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "plugin": self.plugin,
            "in_use": self.in_use,
            "ok": self.ok,
            "imports": self.imports,
            "files": [f.to_dict() for f in self.files],
            "error": self.error,
        }


def check_components(host: PluginHost, config: RunConfig) -> list[ComponentHealth]:
    """Every registered component, those the config uses first; nothing is loaded."""
    used = {section: getattr(config, section).name for section in sections_in_use(host, config)}
    report: list[ComponentHealth] = []
    for section in COMPONENT_SECTIONS:
        for name in host.names(section):
            registration = host.get(section, name)
            health = ComponentHealth(section, name, registration.plugin, in_use=used.get(section) == name)
            requires: tuple[str, ...] = tuple(getattr(registration.cls, "requires", ()))
            health.imports = {module: import_status(module, deep=False) for module in requires}
            try:
                health.files = build_component(host, config, section, name).model_files()
            except Exception as exc:  # one broken plugin must not hide the state of the others
                health.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            report.append(health)
    report.sort(key=lambda h: (not h.in_use, COMPONENT_SECTIONS.index(h.kind), h.name))
    return report
