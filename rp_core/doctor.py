"""Can this machine run a config? Import checks and model-file checks, without loading any model.

Shared by `rp doctor` and `rp models download`: both build the components a config
uses (construction is cheap) and ask them which files they need, so the answer and
the missing-model error always name the same files in the same words. Nothing here
imports the orchestrator, so a broken OpenCV install is reported, not crashed on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rp_core.config import COMPONENT_SECTIONS
from rp_core.imports import LIBGL_HINT, import_status  # noqa: F401 (doctor's checks, re-exported)
from rp_core.models import ModelFile
from rp_core.plugins import PluginHost

if TYPE_CHECKING:  # annotations; preset_verdicts imports it where it runs
    from rp_core.pipeline import Pipeline

#: Libraries rp_core itself needs to anonymize anything.
CORE_MODULES = ("numpy", "PIL", "cv2", "skimage", "pydantic", "yaml")


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


def check_components(host: PluginHost, pipeline: Pipeline) -> list[ComponentHealth]:
    """Every registered component, those the pipeline runs first (with its options); nothing is loaded."""
    in_use = {(stage.component.kind, stage.name): stage.component for stage in pipeline.stages()}
    report: list[ComponentHealth] = []
    for section in COMPONENT_SECTIONS:
        for name in host.names(section):
            registration = host.get(section, name)
            used = in_use.get((section, name))
            health = ComponentHealth(section, name, registration.plugin, in_use=used is not None)
            health.imports = {module: import_status(module, deep=False) for module in registration.cls.requires}
            try:
                component = used if used is not None else registration.cls(None, pipeline.context)
                health.files = component.model_files()
            except Exception as exc:  # one broken plugin must not hide the state of the others
                health.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            report.append(health)
    report.sort(key=lambda h: (not h.in_use, COMPONENT_SECTIONS.index(h.kind), h.name))
    return report


def _cuda() -> tuple[str | None, str]:
    """(why this machine cannot run CUDA torch, or None; the torch version or ""), without importing torch."""
    import glob
    import importlib.metadata

    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "torch is not installed", ""
    if version.endswith("+cpu"):
        return "CPU-only torch", version
    if not glob.glob("/dev/nvidia[0-9]*"):
        return "no CUDA GPU", version
    return None, version


def gpu_status(pipeline: Pipeline) -> str:
    """One line about the accelerator, and whether this config can run without one.

    Read from the installed torch's version and the NVIDIA device files, without importing torch
    (seconds), so `rp doctor` stays fast.
    """
    import glob

    if not pipeline.needs_inversion:
        return "not needed by this config (it runs on the CPU)"
    missing, version = _cuda()
    offline = "the diffusion pipeline would take hours per face on a CPU and is refused; use --preset offline"
    if missing == "torch is not installed":
        return "torch is not installed; this config's generator needs it: pip install 'rp-anonymize[gpu]'"
    if missing == "CPU-only torch":
        return f"torch {version} is a CPU-only build: {offline}, or install a CUDA build of torch"
    if missing:
        return f"no NVIDIA GPU found (torch {version}): {offline}, or run on a machine with a GPU"
    return f"{len(glob.glob('/dev/nvidia[0-9]*'))} NVIDIA GPU device(s) present, torch {version}"


@dataclass(frozen=True)
class PresetVerdict:
    """Can this machine run a preset? `reason` says why not (None: it can)."""

    name: str
    reason: str | None

    @property
    def ok(self) -> bool:
        return self.reason is None


def preset_verdicts(host: PluginHost, models_dir: str | None = None) -> list[PresetVerdict]:
    """Every registered preset judged on its libraries, model files and GPU; nothing is imported or loaded."""
    from rp_core.config import resolve_config
    from rp_core.errors import RpError
    from rp_core.pipeline import assemble

    environ = {"RP_MODELS_DIR": models_dir} if models_dir else {}
    verdicts = []
    for name in host.presets:
        try:
            pipeline = assemble(resolve_config(host, preset=name, environ=environ), host)
        except RpError as exc:
            verdicts.append(PresetVerdict(name, str(exc).split(";")[0]))
            continue
        verdicts.append(PresetVerdict(name, _why_not(pipeline)))
    return verdicts


def _why_not(pipeline: Pipeline) -> str | None:
    """The first reason a pipeline cannot run here, in a few words (GPU, libraries, then model files)."""
    if pipeline.needs_inversion:
        missing, _ = _cuda()
        if missing:
            return "no CUDA GPU (CPU-only torch)" if missing == "CPU-only torch" else missing
    libraries = sorted(
        {m for c in pipeline.components() for m in c.requires if import_status(m, deep=False) is not None}
    )
    if libraries:
        return f"{', '.join(libraries)} not installed"
    files = [f for f in pipeline.model_files() if not f.present]
    if files:
        return f"{len(files)} model file{'' if len(files) == 1 else 's'} missing: rp models download"
    return None


def verdict_line(verdicts: list[PresetVerdict]) -> str:
    """ "this machine can run: offline; cannot run: default (no CUDA GPU), ...": the first line of `rp doctor`."""
    can = ", ".join(v.name for v in verdicts if v.ok) or "no preset"
    cannot = ", ".join(f"{v.name} ({v.reason})" for v in verdicts if not v.ok)
    return f"this machine can run: {can}" + (f"; cannot run: {cannot}" if cannot else "")
