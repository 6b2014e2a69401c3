"""The run configuration: one pydantic model, resolved from layered sources.

Precedence, lowest first: built-in defaults < preset < config file (TOML or YAML)
< environment (`RP_SECTION__KEY=value`) < command-line flags and `--set`.
Every error names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rp_core.errors import ConfigError, PluginError
from rp_core.interfaces import ComponentOptions, RuntimeContext, declared_flags
from rp_core.models import ModelPool, models_dir_from_env

if TYPE_CHECKING:
    from rp_core.plugins import PluginHost

ENV_PREFIX = "RP_"
PRESET_ENV = "RP_PRESET"
COMPONENT_SECTIONS = ("detector", "identity_encoder", "inverter", "generator", "merger")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentChoice(_Section):
    """Which component fills a slot, and its options (validated by the component itself)."""

    name: str | None
    options: dict[str, Any] = Field(default_factory=dict)


class AlignSection(_Section):
    face_image_size: int = Field(1024, ge=64, le=4096, description="side of the aligned square crop, pixels")

    @field_validator("face_image_size")
    @classmethod
    def _multiple_of_8(cls, value: int) -> int:
        if value % 8:
            raise ValueError("must be a multiple of 8 (the VAE downsamples by 8)")
        return value


class RuntimeSection(_Section):
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$",
        description="auto (first CUDA GPU, else CPU), cpu, cuda, cuda:N, mps",
    )
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        "auto", description="model precision; auto: float16 on CUDA, float32 on the CPU"
    )
    seed: int = Field(0, ge=0, lt=2**63, description="seed of every random draw (the same seed gives the same output)")
    batch_size: int | Literal["auto"] = Field(
        8, description="faces per inverter/generator call, across images; auto: what the generator prefers (GPU memory)"
    )
    models_dir: Path | None = Field(None, description="folder of model files looked in first (env RP_MODELS_DIR)")
    allow_slow_cpu: bool = Field(
        False, description="run a full-size diffusion model on the CPU anyway (about an hour per face)"
    )
    compile: bool = Field(
        False,
        description="torch.compile the models that support it: faster per step, a few minutes of compiling "
        "on the first batch (cached on disk by torch); partial batches are padded to batch_size",
    )
    compile_blocks: bool = Field(
        True,
        description="on a CUDA GPU, torch.compile the UNet's transformer blocks one by one for full batches of 2+ "
        "faces (~10 s of compiling at the first full batch, ~10% less time per face after it; output equal up to "
        "fp16 rounding); smaller batches run uncompiled; ignored on a CPU and when `compile` compiles the whole UNet",
    )
    cpu_workers: int | None = Field(
        None,
        ge=1,
        le=256,
        description="processes a folder's photos run on when every stage runs on the CPU (obfuscating generators: "
        "the offline preset): each loads the models once and takes shares of the folder; null: one per CPU core "
        "for 8 photos or more; 1: this process only. The GPU pipeline always runs in this process",
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="threads one network call may use on the CPU (onnxruntime's intra-op threads, where a component "
        "leaves its own `threads` option at 0); null: the library's default (one per core), and the cores shared "
        "out where work runs side by side (a folder's worker processes; a video's look-ahead search and its checks)",
    )
    overlap: bool = Field(
        True,
        description="read, detect, align and encode the next images, and merge, verify and write finished ones, on "
        "a worker thread while the GPU runs (same outputs as off)",
    )
    cuda_graphs: bool = Field(
        True,
        description="replay captured CUDA graphs in fixed-shape loops (the same kernels and output, less launch "
        "overhead: about 2x faster for a lone face); ignored off CUDA",
    )
    fp8: bool = Field(
        False,
        description="experimental: fp8 matmuls (one scale per weight row and per token) in the UNet's transformer "
        "layers, needs an fp8 GPU (compute capability 8.9+). On an H200 237 ms per UNet call at batch 8 against "
        "255 ms for the default (-7 %); each call's noise prediction then differs from fp32 by ~12x what fp16 "
        "rounding does, so its effect on identity and realism needs real weights to judge (benchmarks/RESULTS.md)",
    )

    @field_validator("batch_size")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return value


class VerifySection(_Section):
    """Re-check every face on the output; what to do with one that still matches its original."""

    enabled: bool = Field(
        True, description="re-check every face of the output before writing it; off prints a warning on every run"
    )
    encoder: str | None = Field(
        None, description="identity encoder to re-check with; None: the pipeline's identity_encoder"
    )
    encoder_options: dict[str, Any] = Field(default_factory=dict, description="options of verify.encoder")
    threshold: float | None = Field(
        None,
        description="same-person threshold; None: the encoder's verification threshold (its match threshold moved "
        "by a safety margin). A looser value prints a warning on every run",
    )
    search: bool = Field(
        True,
        description="also detect faces anew on the output in and around each face region (upsampled when small) "
        "and compare every face found with every original identity of the image: the worst score decides",
    )
    policy: Literal["retry", "fallback", "fail"] = Field(
        "retry", description="retry (then fallback), fallback (obfuscate the face), fail (no output, exit 5)"
    )
    max_retries: int = Field(2, ge=0, le=10, description="retries with a stronger generator and a new seed")
    guidance_factor: float = Field(
        1.5, gt=1.0, le=10.0, description="how much stronger each retry is (e.g. guidance x)"
    )
    fallback_generator: str | None = Field(
        None,
        min_length=1,
        description="obfuscates faces that leak or are skipped; unset: the installed generator that declares itself "
        "its default (`default_for`)",
    )
    fallback_options: dict[str, Any] = Field(default_factory=dict, description="options of verify.fallback_generator")
    last_resort: str | None = Field(
        None,
        description="fills a face that still matches after the fallback (and, twice at most, a face still found "
        "beside the fill, the square around it); unset: the installed generator that declares itself its default "
        "(`default_for`); null (or no such generator): fail the image instead",
    )
    no_face: Literal["copy", "warn", "refuse"] = Field(
        "copy",
        description="an image where no face is found: copy (re-encoded, reported), warn (copied, and the run exits "
        "6), refuse (not written, exit 6), for pipelines that must not pass a face through silently",
    )


class CoverageSection(_Section):
    """Faces the main detector missed, and faces too small to regenerate: both are obfuscated."""

    detector: str | None = Field(
        "auto",
        description="a second detector of another family; auto: the first installed detector that declares a "
        "coverage_priority and is not the main one (else the main one, searched harder); None: off (prints a "
        "warning on every run)",
    )
    detector_options: dict[str, Any] = Field(default_factory=dict, description="options of coverage.detector")
    iou: float = Field(0.3, ge=0.0, le=1.0, description="a second-detector face overlapping less than this is missed")
    min_face_size: float = Field(
        0.0, ge=0.0, description="faces smaller than this (pixels, geometric mean of box sides) are obfuscated"
    )
    search: Literal["plain", "default", "thorough"] = Field(
        "default",
        description="how hard the coverage detector looks (rp_core.coverage): default: rotated photos (probes, "
        "full turns when nothing is upright), small faces in thumbnails, dark or flat photos equalized, as the "
        "detector declares (dlib's HOG: every turn and the mirrored border); thorough: every pass on every image "
        "(slow, for audits); plain: the image as it is",
    )

    @property
    def searches_harder(self) -> bool:
        """True when coverage adds passes the main detector does not run (so the same detector is no no-op)."""
        return self.search != "plain"


class SelectSection(_Section):
    """Which faces a run changes; all of them unless said otherwise. Kept faces stay byte-identical."""

    keep_faces: list[str] = Field(
        default_factory=list, description="reference photos: the face matching each (by identity) is left unchanged"
    )
    only_faces: list[str] = Field(
        default_factory=list, description="reference photos: only the faces matching them are anonymized"
    )
    only_largest: bool = Field(
        False, description="anonymize only the largest face of each image (a video: per track, docs/video.md)"
    )
    max_faces: int | None = Field(
        None,
        ge=0,
        description="anonymize at most this many faces per image, largest first (a video: per track, docs/video.md)",
    )


#: The cheap check's defaults (docs/video.md says how they were chosen).
CHEAP_TOLERANCE = 12.0
CHEAP_IOU = 0.6
KEYFRAME_EVERY = 15


class VideoSection(_Section):
    """How videos are anonymized and encoded (rp_core.video); photos ignore this section."""

    verify_every: int = Field(
        1,
        ge=1,
        description="re-check the faces of every n-th frame (1: every frame, the fail-closed default); more is faster "
        "and prints a warning on every run with a video",
    )
    search_every: int = Field(
        1,
        ge=1,
        description="on re-checked frames, search the output for moved faces (verify.search) every n-th time (1: "
        "every one); more prints a warning on every run with a video",
    )
    regenerate: Literal["keyframes", "every"] = Field(
        "keyframes",
        description="keyframes: a tracked face is drawn on its keyframe and, until it moves, changes or "
        "keyframe_every frames pass, that verified crop is pasted at its landmarks on the next frames; "
        "every: every face of every frame is drawn (docs/video.md)",
    )
    keyframe_every: int = Field(
        KEYFRAME_EVERY, ge=1, description="frames a keyframe's crop is carried at most (video.regenerate=keyframes)"
    )
    cheap_tolerance: float = Field(
        CHEAP_TOLERANCE,
        ge=0.0,
        le=255.0,
        description="a tracked face unchanged since its last fully verified frame gets the cheap check: the "
        "largest mean absolute difference (grey levels) of any 16 px cell of its aligned 128 px square from the "
        "verified one, at most this (0: every face gets the full check; more prints a warning)",
    )
    cheap_iou: float = Field(
        CHEAP_IOU,
        ge=0.0,
        le=1.0,
        description="a tracked face whose box overlaps its verified box less than this gets the full check; "
        "less prints a warning",
    )
    lost_frames: int = Field(
        30, ge=0, description="frames a lost track's predicted face region is still obfuscated (30: 1 s at 30 fps)"
    )
    smooth_min_cutoff: float = Field(
        2.0, gt=0.0, description="one-euro landmark smoothing: cutoff frequency (Hz) of a still face"
    )
    smooth_beta: float = Field(
        1.0, ge=0.0, description="one-euro landmark smoothing: how fast the cutoff opens with speed (0: fixed)"
    )
    codec: str = Field(
        "auto", min_length=1, description="encoder (PyAV/FFmpeg name); auto: libx264, libvpx-vp9 for .webm"
    )
    crf: int = Field(18, ge=0, le=63, description="constant quality of x264/x265/VP9/AV1 (lower: better, larger)")
    preset: str = Field("medium", min_length=1, description="x264/x265 speed preset (slower: smaller files)")
    pix_fmt: str | None = Field(
        None, description="output pixel format; None: the source's when the encoder supports it, else yuv420p"
    )

    def loosenings(self) -> list[str]:
        """Settings that weaken the fail-closed guarantee for videos (printed, and kept in the manifest)."""
        return video_loosenings(self.verify_every, self.search_every, self.cheap_tolerance, self.cheap_iou)


def video_loosenings(
    verify_every: int, search_every: int, cheap_tolerance: float = CHEAP_TOLERANCE, cheap_iou: float = CHEAP_IOU
) -> list[str]:
    """One line per video setting that re-checks fewer frames than every one, or cheap-checks looser."""
    warnings = []
    if cheap_tolerance > CHEAP_TOLERANCE:
        warnings.append(
            f"video cheap_tolerance={cheap_tolerance:g} is above the default {CHEAP_TOLERANCE:g}: a tracked face's "
            "output may change more from its verified one before it is checked in full"
        )
    if cheap_iou < CHEAP_IOU:
        warnings.append(
            f"video cheap_iou={cheap_iou:g} is below the default {CHEAP_IOU:g}: a tracked face may move further "
            "from its verified position before it is checked in full"
        )
    if verify_every > 1:
        warnings.append(f"video verify_every={verify_every}: only 1 frame in {verify_every} is re-checked")
    if search_every > 1:
        warnings.append(
            f"video search_every={search_every}: moved faces are searched for on 1 re-checked frame in "
            f"{search_every} only (the others are checked at the face's own landmarks)"
        )
    return warnings


class RunConfig(_Section):
    """The fully resolved configuration of one run."""

    preset: str | None = None
    #: Component names left unset here are filled by `resolve_config` from what the installed plugins
    #: declare (`Component.default_for`): core names no plugin.
    detector: ComponentChoice = ComponentChoice(name=None)
    identity_encoder: ComponentChoice = ComponentChoice(name=None)
    inverter: ComponentChoice = ComponentChoice(name=None)
    generator: ComponentChoice = ComponentChoice(name=None)
    merger: ComponentChoice = ComponentChoice(name=None)
    align: AlignSection = AlignSection()
    runtime: RuntimeSection = RuntimeSection()
    verify: VerifySection = VerifySection()
    coverage: CoverageSection = CoverageSection()
    select: SelectSection = SelectSection()
    video: VideoSection = VideoSection()

    def runtime_context(self, pool: ModelPool | None = None) -> RuntimeContext:
        rt = self.runtime
        ctx = RuntimeContext(
            device=rt.device,
            dtype=rt.dtype,
            seed=rt.seed,
            batch_size=rt.batch_size,
            models_dir=rt.models_dir,
            allow_slow_cpu=rt.allow_slow_cpu,
            compile=rt.compile,
            compile_blocks=rt.compile_blocks,
            cuda_graphs=rt.cuda_graphs,
            fp8=rt.fp8,
            cpu_threads=rt.cpu_threads,
        )
        if pool is not None:
            ctx.pool = pool
        return ctx


#: The command-line flags core knows: runtime settings and which component fills each slot.
#: Component options bring their own flags (`rp_core.interfaces.cli_flag`), see `component_flags`.
CORE_FLAG_KEYS: dict[str, str] = {
    "device": "runtime.device",
    "seed": "runtime.seed",
    "dtype": "runtime.dtype",
    "batch_size": "runtime.batch_size",
    "models_dir": "runtime.models_dir",
    "face_image_size": "align.face_image_size",
    "keep_face": "select.keep_faces",
    "only_face": "select.only_faces",
    "only_largest": "select.only_largest",
    "max_faces": "select.max_faces",
    "verify_every": "video.verify_every",
    "search_every": "video.search_every",
    "lost_frames": "video.lost_frames",
    "video_crf": "video.crf",
    **{section: f"{section}.name" for section in COMPONENT_SECTIONS},
}


@dataclass(frozen=True)
class ComponentFlag:
    """A flag some registered components declare on an options field: where it lands, and its help."""

    flag: str
    targets: tuple[tuple[str, str, str], ...]  # (section, component name, field name)
    annotation: Any
    help: str


def component_flags(host: PluginHost) -> dict[str, ComponentFlag]:
    """Every flag declared by a registered component's options, merged across components by flag name."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    info: dict[str, tuple[Any, str]] = {}
    for section in COMPONENT_SECTIONS:
        for name, registration in sorted(host.registry[section].items()):
            model = registration.cls.Options
            for flag, field_name in declared_flags(model).items():
                if flag in CORE_FLAG_KEYS:
                    continue  # core flags win; a plugin cannot shadow --device or --generator
                found.setdefault(flag, []).append((section, name, field_name))
                field_info = model.model_fields[field_name]
                info.setdefault(flag, (field_info.annotation, field_info.description or ""))
    return {
        flag: ComponentFlag(flag, tuple(targets), info[flag][0], info[flag][1] or f"sets {flag}")
        for flag, targets in found.items()
    }


def known_flags(host: PluginHost) -> set[str]:
    return set(CORE_FLAG_KEYS) | set(component_flags(host))


def parse_scalar(text: str) -> Any:
    """Parse a value given as text (env or --set) the way YAML would: 1.5, true, null, [1, 2]."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def load_config_file(path: Path | str) -> dict[str, Any]:
    """Read a TOML (.toml) or YAML (.yaml/.yml) config file into a dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {path}: unsupported extension {path.suffix!r}; use .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: cannot set a key below {part!r}, which holds the value {child!r}")
        node = child
    node[parts[-1]] = value


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """`RP_GENERATOR__OPTIONS__BLOCK_SIZE=12` -> {"generator": {"options": {"block_size": 12}}}."""
    layer: dict[str, Any] = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            key = ".".join(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            set_dotted(layer, key, parse_scalar(value))
    if PRESET_ENV in environ:
        layer["preset"] = environ[PRESET_ENV]
    models_dir = models_dir_from_env() if environ is os.environ else environ.get("RP_MODELS_DIR")
    if models_dir:
        set_dotted(layer, "runtime.models_dir", str(models_dir))
    return layer


def merge_layers(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `top` over `base`. Choosing another component drops the options meant for the old one."""
    result = copy.deepcopy(base)
    for key, value in top.items():
        old = result.get(key)
        if key in COMPONENT_SECTIONS and isinstance(value, Mapping) and isinstance(old, dict):
            if "name" in value and "name" in old and value["name"] != old["name"]:
                old = {"name": value["name"], "options": {}}
            result[key] = merge_layers(old, value)
        elif isinstance(value, Mapping) and isinstance(old, dict):
            result[key] = merge_layers(old, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _format_validation_error(exc: ValidationError, prefix: str, data: Mapping[str, Any]) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        value = err.get("input", "<missing>")
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(_allowed_keys(exc, data, err["loc"]))) or "none"
            lines.append(f"{key}: unknown key (value {value!r}); allowed keys here: {allowed}")
        else:
            lines.append(f"{key}: bad value {value!r}: {err['msg']}")
    return "\n".join(lines)


def _allowed_keys(exc: ValidationError, data: Mapping[str, Any], loc: Sequence[Any]) -> list[str]:
    model = _MODEL_FOR_ERRORS.get(exc.title)
    if model is None:
        return []
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = getattr(field, "annotation", None) if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return []
    return list(model.model_fields)


_MODEL_FOR_ERRORS: dict[str, type[BaseModel]] = {}


def validate_model(model: type[BaseModel], data: Mapping[str, Any], prefix: str = "") -> Any:
    """Validate `data` with `model`; errors name each key under `prefix`, the bad value and what is allowed."""
    _MODEL_FOR_ERRORS[model.__name__] = model
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, prefix, data)) from None


def validate_options(host: PluginHost, section: str, choice: ComponentChoice) -> ComponentOptions:
    """Validate one component's options with the component's own model."""
    assert choice.name is not None

    try:
        registration = host.get(section, choice.name)
    except PluginError as exc:
        raise ConfigError(f"{section}.name: bad value {choice.name!r}: {exc}") from None
    options: ComponentOptions = validate_model(registration.cls.Options, choice.options, f"{section}.options.")
    return options


def resolve_config(
    host: PluginHost,
    *,
    config_file: Path | str | None = None,
    preset: str | None = None,
    flags: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> RunConfig:
    """Build the run config from every source, in precedence order, and validate all of it."""
    environ = os.environ if environ is None else environ
    file_layer = load_config_file(config_file) if config_file else {}
    env = env_layer(environ)
    flag_layer: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        set_dotted(flag_layer, key.strip(), parse_scalar(value))
    if preset:
        flag_layer["preset"] = preset

    preset_name = flag_layer.get("preset") or env.get("preset") or file_layer.get("preset")
    preset_layer: dict[str, Any] = {}
    if preset_name:
        presets = host.presets
        if preset_name not in presets:
            raise ConfigError(f"preset: bad value {preset_name!r}: allowed: {', '.join(sorted(presets)) or 'none'}")
        preset_layer = copy.deepcopy(presets[preset_name].config)
        preset_layer["preset"] = preset_name

    name_layer: dict[str, Any] = {}
    for flag, value in (flags or {}).items():
        if value is not None and flag in COMPONENT_SECTIONS:
            set_dotted(name_layer, f"{flag}.name", value)
    given = [preset_layer, file_layer, env, flag_layer, name_layer]
    layers = [default_layer(host, given), *given]
    merged: dict[str, Any] = {}
    for layer in _for_final_components(layers):
        merged = merge_layers(merged, layer)

    _apply_flags(host, merged, flags or {})
    config: RunConfig = validate_model(RunConfig, merged)
    used = sections_in_use(host, config.generator.name)
    for section in ("generator", *(s for s in COMPONENT_SECTIONS if s != "generator")):
        choice: ComponentChoice = getattr(config, section)
        if not choice.name:
            if section in used and not _is_set(given, f"{section}.name"):
                raise ConfigError(_unclaimed(host, section))
            continue
        # A slot the chosen generator never fills (the default diffusion inverter under the
        # offline preset) is only checked when its plugin is installed: blocking or not
        # installing a plugin must not break configs that never use it.
        if section in used or choice.name in host.registry[section]:
            validate_options(host, section, choice)
    return config


def default_layer(host: PluginHost, given: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The lowest layer: the model's defaults, with each component key filled by the installed component that
    claims it (`Component.default_for`). A key some layer of `given` sets needs no default, so two components
    claiming it is only an error when the default is used."""
    from rp_core.interfaces import DEFAULT_KEYS

    layer: dict[str, Any] = RunConfig().model_dump(mode="json")
    for key in DEFAULT_KEYS:
        dotted = key if "." in key else f"{key}.name"
        if _is_set(given, dotted):
            continue
        try:
            name = host.default_name(key)
        except PluginError as exc:
            raise ConfigError(str(exc)) from None
        if name is not None:
            set_dotted(layer, dotted, name)
    return layer


def _is_set(layers: Sequence[Mapping[str, Any]], dotted: str) -> bool:
    """True when some layer gives `dotted` a value (None included: a layer may turn a safeguard off)."""
    *parents, last = dotted.split(".")
    for layer in layers:
        node: Any = layer
        for part in parents:
            node = node.get(part) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and last in node:
            return True
    return False


def _unclaimed(host: PluginHost, section: str) -> str:
    installed = ", ".join(host.names(section)) or "none"
    return (
        f"{section}.name: no installed plugin declares a default {section}, and no layer of the config names one; "
        f"name one with --{section.replace('_', '-')} NAME (installed: {installed})"
    )


def _for_final_components(layers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each layer without what it says about components that a later layer replaced.

    The component finally chosen for a slot (by the last layer naming one) keeps the options
    every layer gives it, whichever layer names it: `--generator blur --set
    generator.options.strength=0.3` keeps the strength. Options a layer gives a component
    that is not the final one are dropped with its name.
    """
    final: dict[str, Any] = {}
    for layer in layers:
        for section in COMPONENT_SECTIONS:
            value = layer.get(section)
            if isinstance(value, Mapping) and "name" in value:
                final[section] = value["name"]
    cleaned: list[dict[str, Any]] = []
    for layer in layers:
        copied = copy.deepcopy(dict(layer))
        for section in COMPONENT_SECTIONS:
            value = copied.get(section)
            if isinstance(value, dict) and "name" in value and value["name"] != final.get(section):
                del copied[section]
        cleaned.append(copied)
    return cleaned


def sections_in_use(host: PluginHost, generator_name: str | None) -> list[str]:
    """The slots a run fills, in pipeline order: detector, what the generator needs, generator, merger.

    An unknown or empty generator adds nothing (it is the error to report).
    """
    registration = host.registry["generator"].get(generator_name) if generator_name else None
    needs = [
        section
        for section, flag in (("identity_encoder", "needs_identity"), ("inverter", "needs_inversion"))
        if registration is not None and getattr(registration.cls, flag, False)
    ]
    return ["detector", *needs, "generator", "merger"]


def _apply_flags(host: PluginHost, merged: dict[str, Any], flags: Mapping[str, Any]) -> None:
    """Apply command-line option flags; a flag no selected component understands is an error.

    Component-name flags (--generator ...) were already applied as the top layer by resolve_config.
    A component flag sets its field on every selected, running component that declares it.
    """
    declared = component_flags(host)
    used = sections_in_use(host, merged.get("generator", {}).get("name"))
    for flag, value in flags.items():
        if value is None or flag in COMPONENT_SECTIONS:
            continue
        if flag in CORE_FLAG_KEYS:
            set_dotted(merged, CORE_FLAG_KEYS[flag], list(value) if isinstance(value, tuple) else value)
            continue
        if flag not in declared:
            chosen = ", ".join(f"{sec}={merged.get(sec, {}).get('name')}" for sec in used)
            raise ConfigError(
                f"--{flag.replace('_', '-')} {value!r}: no installed component declares this flag "
                f"(selected: {chosen}); see `rp plugins --options`"
            )
        targets = declared[flag].targets
        applied = []
        for section, name, field_name in targets:
            if section in used and merged.get(section, {}).get("name") == name:
                set_dotted(merged, f"{section}.options.{field_name}", value)
                applied.append(section)
        if not applied:
            sections = dict.fromkeys(section for section, _, _ in targets)
            chosen = ", ".join(
                f"{sec}={merged.get(sec, {}).get('name')}{'' if sec in used else ' (not run by this generator)'}"
                for sec in sections
            )
            raise ConfigError(f"--{flag.replace('_', '-')} {value!r}: not used by the selected components ({chosen})")


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    return config.model_dump(mode="json")
