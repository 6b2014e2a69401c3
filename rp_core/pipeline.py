"""Turns a resolved config into the components that run: the one place where that happens.

`assemble(config, host)` builds every stage a run uses (the pipeline slots the generator
needs, and the fail-closed safeguards), validates each stage's options with its own model,
and checks that the stages fit together (identity model, inversion producer, options that
must agree) before any weights load. The result, a frozen `Pipeline`, is what
`rp anonymize`, `rp config show`, `rp doctor`, `rp models download`, the manifest and the
Python API read: it knows its model files, loads them, and describes itself with the
effective options (defaults filled) and the plugin that provided each stage.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rp_core.errors import ConfigError, MissingModelsError, PluginError, RpError
from rp_core.interfaces import (
    Component,
    Detector,
    Generator,
    IdentityEncoder,
    Inverter,
    Merger,
    RuntimeContext,
)
from rp_core.models import ModelFile

if TYPE_CHECKING:
    from rp_core.config import RunConfig
    from rp_core.plugins import PluginHost


#: The kind of component a stage holds (Detector[Any], Generator[Any], ...).
C = TypeVar("C", bound=Component[Any])


@dataclass(frozen=True)
class Stage(Generic[C]):
    """One built component, the config key that chose it and the plugin that provided it."""

    key: str
    component: C
    plugin: str
    plugin_version: str

    @property
    def name(self) -> str:
        return self.component.name

    def describe(self) -> dict[str, Any]:
        """Name, provenance and the effective options (every default filled in)."""
        return {
            "name": self.component.name,
            "plugin": self.plugin,
            "plugin_version": self.plugin_version,
            "version": self.component.version(),
            "options": self.component.options.model_dump(mode="json"),
        }


@dataclass(frozen=True)
class Pipeline:
    """The stages of one run; built by `assemble`, never by hand."""

    config: RunConfig
    host: PluginHost
    context: RuntimeContext
    detector: Stage[Detector[Any]]
    generator: Stage[Generator[Any]]
    merger: Stage[Merger[Any]]
    identity_encoder: Stage[IdentityEncoder[Any]] | None = None
    inverter: Stage[Inverter[Any]] | None = None
    #: Fail-closed safeguards (rp_core.verify); None where the config turns them off.
    verify_encoder: Stage[IdentityEncoder[Any]] | None = None
    fallback: Stage[Generator[Any]] | None = None
    last_resort: Stage[Generator[Any]] | None = None
    coverage: Stage[Detector[Any]] | None = None
    _loaded: list[bool] = field(default_factory=lambda: [False], repr=False, compare=False)

    # -- typed access -------------------------------------------------------------------------

    @property
    def detect(self) -> Detector[Any]:
        return self.detector.component

    @property
    def generate(self) -> Generator[Any]:
        return self.generator.component

    @property
    def merge(self) -> Merger[Any]:
        return self.merger.component

    @property
    def encode(self) -> IdentityEncoder[Any] | None:
        return None if self.identity_encoder is None else self.identity_encoder.component

    @property
    def invert(self) -> Inverter[Any] | None:
        return None if self.inverter is None else self.inverter.component

    @property
    def needs_identity(self) -> bool:
        return self.generate.needs_identity

    @property
    def needs_inversion(self) -> bool:
        return self.generate.needs_inversion

    # -- what it is ---------------------------------------------------------------------------

    def _keyed(self) -> list[Stage[Any]]:
        """Every stage by the key that chose it, in data-flow order then the safeguards (shared ones twice)."""
        stages: tuple[Stage[Any] | None, ...] = (
            self.detector,
            self.identity_encoder,
            self.inverter,
            self.generator,
            self.merger,
            self.verify_encoder,
            self.fallback,
            self.last_resort,
            self.coverage,
        )
        return [stage for stage in stages if stage is not None]

    def stages(self) -> Iterator[Stage[Any]]:
        """Every stage in data-flow order, then the safeguards; a component shared by two keys once."""
        seen: set[int] = set()
        for stage in self._keyed():
            if id(stage.component) not in seen:
                seen.add(id(stage.component))
                yield stage

    def components(self) -> list[Component[Any]]:
        return [stage.component for stage in self.stages()]

    def model_files(self) -> list[ModelFile]:
        return [f for component in self.components() for f in component.model_files()]

    def describe(self) -> dict[str, Any]:
        """Each stage by the config key that chose it, with effective options; what will not run is absent."""
        return {stage.key: stage.describe() for stage in self._keyed()}

    # -- loading ------------------------------------------------------------------------------

    def ensure_models(
        self,
        keys: Collection[str] | None = None,
        *,
        download: bool = True,
        target: Path | None = None,
        check: bool = True,
    ) -> list[str]:
        """Get the model files of the stages chosen by `keys` (default: every stage) ready: `ensure_models`.

        `rp anonymize` (through `load`), `rp detect`, `rp models download` and the API all come here.
        """
        chosen: dict[str, Component[Any]] = {}
        for stage in self._keyed():
            if (keys is None or stage.key in keys) and stage.component not in chosen.values():
                chosen[stage.key] = stage.component
        return ensure_models(chosen, download=download, target=target, check=check)

    def load(self) -> None:
        """Load every stage once (downloading where allowed); one error names every missing file."""
        if self._loaded[0]:
            return
        self.ensure_models()
        for component in self.components():
            component.load()
        self._loaded[0] = True

    @property
    def batch_size(self) -> int:
        """Faces per inverter/generator call: the config's, or the generator's preference for 'auto'."""
        size = self.config.runtime.batch_size
        if size == "auto":
            preferred = self.generate.preferred_batch_size()
            return max(1, preferred) if preferred else 8
        return int(size)


def assemble(config: RunConfig, host: PluginHost, context: RuntimeContext | None = None) -> Pipeline:
    """Build (not load) every stage `config` runs and check that they fit together.

    Raises ConfigError naming the config keys involved: an unknown component, bad options,
    a generator that cannot read the chosen encoder's identities or inverter's inversions,
    options that must agree between inverter and generator, or a no-op safeguard.
    """
    from rp_core.config import sections_in_use

    context = context if context is not None else config.runtime_context()

    def stage(key: str, kind: type[C], name: str | None, options: dict[str, Any]) -> Stage[C]:
        component = build_component(host, context, kind, name, options, key)
        plugin = host.get(kind.kind, component.name).plugin
        return Stage(key, component, plugin, host.plugin_version(plugin))

    def slot(section: str, kind: type[C]) -> Stage[C]:
        choice = getattr(config, section)
        return stage(section, kind, choice.name, choice.options)

    used = sections_in_use(host, config.generator.name)
    detector = slot("detector", Detector)
    encoder = slot("identity_encoder", IdentityEncoder) if "identity_encoder" in used else None
    inverter = slot("inverter", Inverter) if "inverter" in used else None
    generator_stage = slot("generator", Generator)
    merger = slot("merger", Merger)
    generator = generator_stage.component
    _check_identity(generator, encoder)
    _check_inversion(generator, inverter)

    verify, coverage = config.verify, config.coverage
    verify_encoder: Stage[IdentityEncoder[Any]] | None = None
    fallback: Stage[Generator[Any]] | None = None
    last_resort: Stage[Generator[Any]] | None = None
    coverage_stage: Stage[Detector[Any]] | None = None
    if verify.enabled:
        own = encoder
        name = verify.encoder or config.identity_encoder.name
        if (
            own is not None
            and name == own.name
            and (not verify.encoder_options or verify.encoder_options == dict(config.identity_encoder.options))
        ):
            verify_encoder = Stage("verify.encoder", own.component, own.plugin, own.plugin_version)
        else:
            # the identity encoder's own options come along when verification uses it by default
            inherited = dict(config.identity_encoder.options) if not verify.encoder else {}
            verify_encoder = stage("verify.encoder", IdentityEncoder, name, {**inherited, **verify.encoder_options})
    if verify.enabled or coverage_detector_name(config, host) or coverage.min_face_size > 0:
        fallback = stage("verify.fallback_generator", Generator, verify.fallback_generator, verify.fallback_options)
        _check_obfuscator(fallback, host)
    if verify.enabled and verify.last_resort:
        last_resort = stage("verify.last_resort", Generator, verify.last_resort, {})
        _check_obfuscator(last_resort, host, "or null: fail the image instead")
    select = config.select
    if (select.keep_faces or select.only_faces) and verify_encoder is None and encoder is None:
        raise ConfigError(
            "select.keep_faces/only_faces (--keep-face/--only-face) match people by identity, but this config runs no "
            "identity encoder: turn verification on (verify.enabled=true) or use a generator with one"
        )
    coverage_name = coverage_detector_name(config, host)
    if coverage_name:
        coverage_stage = stage("coverage.detector", Detector, coverage_name, coverage.detector_options)
        _check_coverage(config, detector, coverage_stage, host.names("detector"))
    return Pipeline(
        config=config,
        host=host,
        context=context,
        detector=detector,
        generator=generator_stage,
        merger=merger,
        identity_encoder=encoder,
        inverter=inverter,
        verify_encoder=verify_encoder,
        fallback=fallback,
        last_resort=last_resort,
        coverage=coverage_stage,
    )


def build_component(
    host: PluginHost,
    context: RuntimeContext,
    kind: type[C],
    name: str | None,
    options: dict[str, Any],
    key: str,
) -> C:
    """Construct (not load) one component of `kind` (Detector, Generator, ...) by name with validated options.

    `key` is the config key (or command-line option) that chose it, so every error names the
    setting to fix. `assemble` builds each stage with it; tools outside a run (rp evaluate) too.
    """
    from rp_core.config import validate_model

    if not name:
        hint = " (it defaults to identity_encoder.name)" if key == "verify.encoder" else ""
        raise ConfigError(
            f"{key}: no component named{hint} (unset, it takes the installed component that declares itself its "
            "default, if one does); name one, or turn the stage off (e.g. verify.enabled=false)"
        )
    try:
        registration = host.get(kind.kind, name)
    except PluginError as exc:
        raise ConfigError(f"{key}: bad value {name!r}: {exc}") from None
    validated = validate_model(registration.cls.Options, options, _options_key(key))
    component = registration.cls(validated, context)
    if not isinstance(component, kind):  # the host checks the class at registration; this narrows the type
        raise PluginError(f"{key}: {name!r} is not a {kind.__name__}")
    return component


def _options_key(key: str) -> str:
    """Where a stage's options live in the config: `generator` -> `generator.options.`."""
    section, _, rest = key.partition(".")
    if not rest:
        return f"{section}.options."
    return {
        "encoder": "verify.encoder_options.",
        "fallback_generator": "verify.fallback_options.",
        "detector": "coverage.detector_options.",
    }.get(rest, f"{key}.options.")


def ensure_models(
    components: Mapping[str, Component[Any]],
    *,
    download: bool = True,
    target: Path | None = None,
    check: bool = True,
) -> list[str]:
    """Make `components` (by the config key or option that chose each) ready to load; one policy for every command.

    1. `check`: each one's libraries import and this machine can run it, else one line naming the key and
       how to fix it (before anything is downloaded; `rp models download` skips this: it may fetch for
       another machine).
    2. `download`: missing weights are fetched (into `target`, else their usual caches) when a download
       host resolves; a failed download is kept as a line, never a traceback.
    3. Files still missing raise one MissingModelsError naming each, where it was looked for, how to get
       it, and why it was not downloaded. Returns the download failures of files that are present anyway.
    """
    from rp_core.imports import import_status
    from rp_core.models import DOWNLOAD_HOSTS, network_available

    if check:
        for key, component in components.items():
            absent = [m for m in component.requires if import_status(m, deep=False) is not None]
            if absent:
                raise RpError(
                    f"{key} {component.name!r} needs {', '.join(absent)}, which {'is' if len(absent) == 1 else 'are'}"
                    f" not installed: {component.install_hint}; or choose another component (--preset offline runs "
                    "without them)"
                )
            component.check_can_run()
    lacking = {key: c for key, c in components.items() if any(not f.present for f in c.model_files())}
    problems: list[str] = []
    if lacking and download and not network_available():
        problems.append(f"offline: none of {', '.join(DOWNLOAD_HOSTS)} resolves, so nothing was downloaded")
    elif lacking and download:
        for key, component in lacking.items():
            try:
                component.download(target)
            except MissingModelsError:
                pass  # what is still missing is named below
            except Exception as exc:  # network failures arrive in many types: name them, keep going
                problems.append(f"{key} {component.name}: download failed: {type(exc).__name__}: {exc}")
    missing = [f for component in components.values() for f in component.model_files() if not f.present]
    if missing:
        raise MissingModelsError(missing, problems)
    return problems


def coverage_detector_name(config: RunConfig, host: PluginHost) -> str | None:
    """The coverage detector a config names; for "auto", the first installed detector that declares a
    `coverage_priority` and is not the main one, else the main detector itself searched harder when it
    declares one, else None."""
    name = config.coverage.detector
    if name != "auto":
        return name
    candidates = host.auto_coverage()
    for candidate in candidates:
        if candidate != config.detector.name:
            return candidate
    if config.detector.name in candidates and config.coverage.searches_harder:
        return config.detector.name
    return None


def _check_identity(generator: Generator[Any], encoder: Stage[IdentityEncoder[Any]] | None) -> None:
    if not generator.needs_identity:
        return
    if encoder is None:
        raise ConfigError(f"generator {generator.name!r} needs an identity encoder; identity_encoder.name is empty")
    model = encoder.component.model_name
    accepted = generator.accepts_identity_models
    if accepted and model not in accepted:
        raise ConfigError(
            f"identity_encoder.name={encoder.name!r} and generator.name={generator.name!r} do not fit: the generator "
            f"reads {', '.join(accepted)} identities, the encoder makes {model or 'unnamed'} ones"
        )


def _check_inversion(generator: Generator[Any], inverter: Stage[Inverter[Any]] | None) -> None:
    if not generator.needs_inversion:
        return
    if inverter is None:
        raise ConfigError(f"generator {generator.name!r} needs an inverter; inverter.name is empty")
    accepted = generator.accepts_inverters
    if accepted and inverter.name not in accepted:
        raise ConfigError(
            f"inverter.name={inverter.name!r} and generator.name={generator.name!r} do not fit: the generator reads "
            f"inversions of {', '.join(accepted)}"
        )
    for option in generator.options_shared_with_inverter:
        mine = getattr(generator.options, option, None)
        theirs = getattr(inverter.component.options, option, None)
        if mine != theirs:
            raise ConfigError(
                f"inverter.options.{option}={theirs!r} and generator.options.{option}={mine!r} must be equal: the "
                "generator regenerates from the inverter's inversion, so both must use the same model"
            )


def _check_obfuscator(stage: Stage[Generator[Any]], host: PluginHost, also: str = "") -> None:
    if not _hides_alone(type(stage.component)):
        usable = [name for name, reg in sorted(host.registry["generator"].items()) if _hides_alone(reg.cls)]
        raise ConfigError(
            f"{stage.key}: bad value {stage.name!r}: it must hide a face on its own (no identity, no inversion, "
            f"no new face); use {', '.join(usable) or 'an obfuscating generator'}{' ' + also if also else ''}"
        )


def _hides_alone(cls: type[Component[Any]]) -> bool:
    """A generator that obfuscates with nothing but the crop: what a fail-closed fallback may be."""
    return issubclass(cls, Generator) and not (cls.needs_identity or cls.needs_inversion or cls.synthesizes)


def _check_coverage(
    config: RunConfig, main: Stage[Detector[Any]], coverage: Stage[Detector[Any]], installed: list[str]
) -> None:
    """A coverage detector identical to the main one finds nothing new: refuse it rather than pretend."""
    same = coverage.name == main.name and coverage.component.options == main.component.options
    if same and not config.coverage.searches_harder:
        raise ConfigError(
            f"coverage.detector={coverage.name!r} runs the same detector with the same options as detector.name="
            f"{main.name!r}, so it cannot find a face the main one missed; choose another family (installed: "
            f"{', '.join(n for n in installed if n != main.name) or 'none'}), "
            "other coverage.detector_options, or turn on coverage search passes"
        )
