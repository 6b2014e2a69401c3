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

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rp_core.errors import ConfigError, PluginError
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


@dataclass(frozen=True)
class Stage:
    """One built component, the config key that chose it and the plugin that provided it."""

    key: str
    component: Component[Any]
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
    detector: Stage
    generator: Stage
    merger: Stage
    identity_encoder: Stage | None = None
    inverter: Stage | None = None
    #: Fail-closed safeguards (rp_core.verify); None where the config turns them off.
    verify_encoder: Stage | None = None
    fallback: Stage | None = None
    last_resort: Stage | None = None
    coverage: Stage | None = None
    _loaded: list[bool] = field(default_factory=lambda: [False], repr=False, compare=False)

    # -- typed access -------------------------------------------------------------------------

    @property
    def detect(self) -> Detector[Any]:
        return self.detector.component  # type: ignore[return-value]

    @property
    def generate(self) -> Generator[Any]:
        return self.generator.component  # type: ignore[return-value]

    @property
    def merge(self) -> Merger[Any]:
        return self.merger.component  # type: ignore[return-value]

    @property
    def encode(self) -> IdentityEncoder[Any] | None:
        return None if self.identity_encoder is None else self.identity_encoder.component  # type: ignore[return-value]

    @property
    def invert(self) -> Inverter[Any] | None:
        return None if self.inverter is None else self.inverter.component  # type: ignore[return-value]

    @property
    def needs_identity(self) -> bool:
        return self.generate.needs_identity

    @property
    def needs_inversion(self) -> bool:
        return self.generate.needs_inversion

    # -- what it is ---------------------------------------------------------------------------

    def _keyed(self) -> list[Stage]:
        """Every stage by the key that chose it, in data-flow order then the safeguards (shared ones twice)."""
        stages = (
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

    def stages(self) -> Iterator[Stage]:
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

    def download_missing(self) -> None:
        """Fetch missing weights the normal way when the download hosts resolve; offline, do nothing."""
        from rp_core.models import network_available

        lacking = [c for c in self.components() if any(not f.present for f in c.model_files())]
        if lacking and network_available():
            for component in lacking:
                try:
                    component.download()
                except Exception:  # reported by require_present as missing files, not as a network traceback
                    pass

    def check_can_run(self) -> None:
        """Fail before any download: a stage's libraries are missing, or this machine cannot run it."""
        from rp_core.errors import RpError
        from rp_core.imports import import_status

        for stage in self.stages():
            component = stage.component
            missing = [m for m in component.requires if import_status(m, deep=False) is not None]
            if missing:
                raise RpError(
                    f"{stage.key} {stage.name!r} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                    f"not installed: {component.install_hint}; or choose another component (--preset offline runs "
                    "without them)"
                )
            component.check_can_run()

    def load(self) -> None:
        """Load every stage once (downloading where allowed); one error names every missing file."""
        if self._loaded[0]:
            return
        from rp_core.models import require_present

        self.check_can_run()
        self.download_missing()
        require_present(self.model_files())
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
    built: dict[str, Stage] = {}

    def stage(key: str, kind: str, name: str | None, options: dict[str, Any]) -> Stage:
        component = build_component(host, context, kind, name, options, key)
        plugin = host.get(kind, component.name).plugin
        return Stage(key, component, plugin, host.plugin_version(plugin))

    for section in sections_in_use(host, config.generator.name):
        choice = getattr(config, section)
        built[section] = stage(section, section, choice.name, choice.options)
    generator: Generator[Any] = built["generator"].component  # type: ignore[assignment]
    _check_identity(generator, built.get("identity_encoder"))
    _check_inversion(generator, built.get("inverter"))

    verify, coverage = config.verify, config.coverage
    verify_encoder = fallback = last_resort = coverage_stage = None
    if verify.enabled:
        own = built.get("identity_encoder")
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
            verify_encoder = stage("verify.encoder", "identity_encoder", name, {**inherited, **verify.encoder_options})
    if verify.enabled or coverage_detector_name(config, host) or coverage.min_face_size > 0:
        fallback = stage("verify.fallback_generator", "generator", verify.fallback_generator, verify.fallback_options)
        _check_obfuscator(fallback, "use pixelate, blur or solid")
    if verify.enabled and verify.last_resort:
        last_resort = stage("verify.last_resort", "generator", verify.last_resort, {})
        _check_obfuscator(last_resort, "use solid (or null)")
    select = config.select
    if (select.keep_faces or select.only_faces) and verify_encoder is None and "identity_encoder" not in built:
        raise ConfigError(
            "select.keep_faces/only_faces (--keep-face/--only-face) match people by identity, but this config runs no "
            "identity encoder: turn verification on (verify.enabled=true) or use a generator with one"
        )
    coverage_name = coverage_detector_name(config, host)
    if coverage_name:
        coverage_stage = stage("coverage.detector", "detector", coverage_name, coverage.detector_options)
        _check_coverage(config, built["detector"], coverage_stage)
    return Pipeline(
        config=config,
        host=host,
        context=context,
        detector=built["detector"],
        generator=built["generator"],
        merger=built["merger"],
        identity_encoder=built.get("identity_encoder"),
        inverter=built.get("inverter"),
        verify_encoder=verify_encoder,
        fallback=fallback,
        last_resort=last_resort,
        coverage=coverage_stage,
    )


def build_component(
    host: PluginHost,
    context: RuntimeContext,
    kind: str,
    name: str | None,
    options: dict[str, Any],
    key: str,
) -> Component[Any]:
    """Construct (not load) one component by kind and name with validated options.

    `key` is the config key (or command-line option) that chose it, so every error names the
    setting to fix. `assemble` builds each stage with it; tools outside a run (rp evaluate) too.
    """
    from rp_core.config import validate_model

    if not name:
        hint = " (it defaults to identity_encoder.name)" if key == "verify.encoder" else ""
        raise ConfigError(
            f"{key}: no component named{hint}; name one, or turn the stage off (e.g. verify.enabled=false)"
        )
    try:
        registration = host.get(kind, name)
    except PluginError as exc:
        raise ConfigError(f"{key}: bad value {name!r}: {exc}") from None
    validated = validate_model(registration.cls.Options, options, _options_key(key))
    return registration.cls(validated, context)


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


#: Coverage detectors `coverage.detector = "auto"` tries, in order: another family than the main one first.
AUTO_COVERAGE = ("centerface", "dlib")


def coverage_detector_name(config: RunConfig, host: PluginHost) -> str | None:
    """The coverage detector a config names; for "auto", the first installed of AUTO_COVERAGE that is not
    the main detector, else the main detector itself searched harder when it is one of them, else None."""
    name = config.coverage.detector
    if name != "auto":
        return name
    installed = host.registry["detector"]
    for candidate in AUTO_COVERAGE:
        if candidate in installed and candidate != config.detector.name:
            return candidate
    if config.detector.name in AUTO_COVERAGE and config.coverage.searches_harder:
        return config.detector.name
    return None


def _check_identity(generator: Generator[Any], encoder: Stage | None) -> None:
    if not generator.needs_identity:
        return
    if encoder is None:
        raise ConfigError(f"generator {generator.name!r} needs an identity encoder; identity_encoder.name is empty")
    model = getattr(encoder.component, "model_name", "")
    accepted = generator.accepts_identity_models
    if accepted and model not in accepted:
        raise ConfigError(
            f"identity_encoder.name={encoder.name!r} and generator.name={generator.name!r} do not fit: the generator "
            f"reads {', '.join(accepted)} identities, the encoder makes {model or 'unnamed'} ones"
        )


def _check_inversion(generator: Generator[Any], inverter: Stage | None) -> None:
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


def _check_obfuscator(stage: Stage, advice: str) -> None:
    generator: Generator[Any] = stage.component  # type: ignore[assignment]
    if generator.needs_identity or generator.needs_inversion or generator.synthesizes:
        raise ConfigError(
            f"{stage.key}: bad value {stage.name!r}: it must hide a face on its own (no identity, no inversion, "
            f"no new face); {advice}"
        )


def _check_coverage(config: RunConfig, main: Stage, coverage: Stage) -> None:
    """A coverage detector identical to the main one finds nothing new: refuse it rather than pretend."""
    same = coverage.name == main.name and coverage.component.options == main.component.options
    if same and not config.coverage.searches_harder:
        raise ConfigError(
            f"coverage.detector={coverage.name!r} runs the same detector with the same options as detector.name="
            f"{main.name!r}, so it cannot find a face the main one missed; choose another family (e.g. centerface), "
            "other coverage.detector_options, or turn on coverage search passes"
        )
