"""The plugin host: loads plugins and keeps a typed registry of what each provides.

Built-in components come from the `rp_plugins` package through the same entry-point
group (`rp.plugins`) a third-party package uses; rp_core never imports them itself.
Core code talks to this class, never to `pm.hook` directly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from rp_core import hookspecs
from rp_core.errors import PluginError
from rp_core.interfaces import COMPONENT_KINDS, DEFAULT_KEYS, Component, Detector

ENTRY_POINT_GROUP = "rp.plugins"
ALLOW_ENV = "RP_PLUGINS"
BLOCK_ENV = "RP_PLUGINS_BLOCK"
PLUGINS_DIR_ENV = "RP_PLUGINS_DIR"

_KIND_HOOKS = {
    "detector": "rp_register_detectors",
    "identity_encoder": "rp_register_identity_encoders",
    "inverter": "rp_register_inverters",
    "generator": "rp_register_generators",
    "merger": "rp_register_mergers",
}


@dataclass(frozen=True)
class Registration:
    """A component class and the plugin that registered it."""

    kind: str
    name: str
    cls: type[Component]
    plugin: str


@dataclass(frozen=True)
class Preset:
    name: str
    config: dict[str, Any]
    description: str
    plugin: str


def _split_env(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def own_defaults(cls: type) -> tuple[str, ...]:
    """The config keys `cls` itself claims (`default_for` in its own body): a subclass of a built-in component
    (a third party's variant of pixelate) does not inherit the built-in's claim to be a default."""
    return tuple(vars(cls).get("default_for", ()))


class PluginHost:
    """Loads plugins (entry points, a plugins folder, or objects given directly) and indexes them."""

    def __init__(
        self,
        *,
        plugins_dir: Path | str | None = None,
        extra_plugins: Iterable[object] = (),
        load_entry_points: bool = True,
        environ: dict[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        #: What another process needs to build the same host (rp_core.scale): the plugin variables and folder;
        #: plugins given as objects cannot travel, so a host holding some is `portable` no more.
        self.environ = {k: env[k] for k in (ALLOW_ENV, BLOCK_ENV, PLUGINS_DIR_ENV) if k in env}
        self.plugins_dir = Path(plugins_dir) if plugins_dir else None
        self.extra_plugins = tuple(extra_plugins)
        self.pm = pluggy.PluginManager("rp")
        self.pm.add_hookspecs(hookspecs)
        self._versions: dict[str, str] = {}
        self._allow = _split_env(env.get(ALLOW_ENV))
        self._block = _split_env(env.get(BLOCK_ENV)) or set()
        if load_entry_points:
            self._load_entry_points()
        directory = plugins_dir or env.get(PLUGINS_DIR_ENV)
        if directory:
            self._load_directory(Path(directory))
        for plugin in self.extra_plugins:
            self.register_plugin(plugin)
        self._registry: dict[str, dict[str, Registration]] | None = None
        self._presets: dict[str, Preset] | None = None

    @property
    def portable(self) -> bool:
        """Can another process build this host from `environ` and `plugins_dir` (no plugin given as an object)?"""
        return not self.extra_plugins

    # -- loading -------------------------------------------------------------------------

    def _wanted(self, name: str) -> bool:
        if name in self._block:
            return False
        return self._allow is None or name in self._allow

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if not self._wanted(ep.name) or self.pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken third-party plugin must name itself
                raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}") from exc
            self.pm.register(plugin, name=ep.name)
            dist = getattr(ep, "dist", None)
            self._versions[ep.name] = dist.version if dist is not None else "unknown"
        self._check()

    def _load_directory(self, directory: Path) -> None:
        if not directory.is_dir():
            raise PluginError(f"plugins dir {directory} does not exist or is not a folder")
        for path in sorted(directory.glob("*.py")):
            name = f"{path.stem}"
            if not self._wanted(name):
                continue
            module = _import_file(path, f"rp_local_plugins.{path.stem}")
            self.pm.register(module, name=name)
            self._versions[name] = "local"
        self._check()

    def register_plugin(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object (a module or any object with hookimpls); returns its name."""
        registered = self.pm.register(plugin, name=name)
        if registered is None:
            raise PluginError(f"plugin {name or plugin!r} is blocked or already registered")
        self._versions.setdefault(registered, getattr(plugin, "__version__", "unknown"))
        self._check()
        self._registry = None
        self._presets = None
        return registered

    def unregister_plugin(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._registry = None
        self._presets = None

    def _check(self) -> None:
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginError(f"plugin defines an unknown hook: {exc}") from exc

    # -- registry ------------------------------------------------------------------------

    def _call_each(self, hook_name: str, callback: Callable[[str], Callable[..., None]], **kwargs: Any) -> None:
        """Call every implementation of a hook with a callback that knows the plugin's name."""
        hook = getattr(self.pm.hook, hook_name)
        for impl in reversed(hook.get_hookimpls()):
            args = {k: v for k, v in {"register": callback(impl.plugin_name), **kwargs}.items() if k in impl.argnames}
            impl.function(**args)

    def _build_registry(self) -> dict[str, dict[str, Registration]]:
        registry: dict[str, dict[str, Registration]] = {kind: {} for kind in COMPONENT_KINDS}
        for kind, hook_name in _KIND_HOOKS.items():
            base = COMPONENT_KINDS[kind]

            def make_register(plugin: str, kind: str = kind, base: type[Component] = base) -> Callable[..., None]:
                def register(cls: type) -> None:
                    if not (isinstance(cls, type) and issubclass(cls, base)):
                        raise PluginError(
                            f"plugin {plugin!r} registered {cls!r} as a {kind}, but it is not a {base.__name__}"
                        )
                    name = getattr(cls, "name", "")
                    if not name:
                        raise PluginError(f"plugin {plugin!r} registered {cls.__name__} without a `name`")
                    wrong = [key for key in own_defaults(cls) if DEFAULT_KEYS.get(key) != kind]
                    if wrong:
                        allowed = ", ".join(k for k, v in DEFAULT_KEYS.items() if v == kind)
                        raise PluginError(
                            f"plugin {plugin!r}: {kind} {name!r} claims default_for={wrong!r}; a {kind} may claim "
                            f"{allowed}"
                        )
                    existing = registry[kind].get(name)
                    if existing is not None:
                        raise PluginError(
                            f"two plugins provide a {kind} named {name!r}: {existing.plugin!r} and {plugin!r}; "
                            f"block one with {BLOCK_ENV}=<plugin>"
                        )
                    registry[kind][name] = Registration(kind, name, cls, plugin)

                return register

            self._call_each(hook_name, make_register)
        return registry

    @property
    def registry(self) -> dict[str, dict[str, Registration]]:
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def names(self, kind: str) -> list[str]:
        return sorted(self.registry[kind])

    def get(self, kind: str, name: str) -> Registration:
        try:
            return self.registry[kind][name]
        except KeyError:
            available = ", ".join(self.names(kind)) or "none"
            raise PluginError(f"no {kind} named {name!r}; available: {available}") from None

    def default_name(self, key: str) -> str | None:
        """The component that claims config key `key` (`default_for`); None when none does.

        Two claiming the same key is an error naming both plugins: a privacy tool never picks one silently.
        """
        kind = DEFAULT_KEYS[key]
        claims = [reg for reg in self.registry[kind].values() if key in own_defaults(reg.cls)]
        if len(claims) > 1:
            named = " and ".join(f"{reg.name!r} ({reg.plugin})" for reg in sorted(claims, key=lambda r: r.name))
            raise PluginError(
                f"{key}: two installed components claim to be the default: {named}; name one in the config "
                f"(--set {key if '.' in key else key + '.name'}=NAME) or block a plugin with {BLOCK_ENV}"
            )
        return claims[0].name if claims else None

    def auto_coverage(self) -> list[str]:
        """Detectors `coverage.detector = "auto"` may choose, by their declared `coverage_priority`."""
        ranked: dict[int, Registration] = {}
        for reg in self.registry["detector"].values():
            place = reg.cls.coverage_priority if issubclass(reg.cls, Detector) else None
            if place is None:
                continue
            if place in ranked:
                other = ranked[place]
                raise PluginError(
                    f"coverage.detector=auto: detectors {other.name!r} ({other.plugin}) and {reg.name!r} "
                    f"({reg.plugin}) both claim coverage_priority={place}; name one with --set coverage.detector=NAME "
                    f"or block a plugin with {BLOCK_ENV}"
                )
            ranked[place] = reg
        return [ranked[place].name for place in sorted(ranked)]

    @property
    def presets(self) -> dict[str, Preset]:
        if self._presets is None:
            presets: dict[str, Preset] = {}

            def make_register(plugin: str) -> Callable[..., None]:
                def register(name: str, config: dict[str, Any], description: str = "") -> None:
                    if name in presets:
                        raise PluginError(
                            f"two plugins provide a preset named {name!r}: {presets[name].plugin!r} and {plugin!r}"
                        )
                    presets[name] = Preset(name, config, description, plugin)

                return register

            self._call_each("rp_register_presets", make_register)
            self._presets = presets
        return self._presets

    def plugin_version(self, plugin: str) -> str:
        """The version of an installed plugin ("local" for a plugins-dir file)."""
        return self._versions.get(plugin, "unknown")

    def add_commands(self, cli: Any) -> None:
        self.pm.hook.rp_register_commands(cli=cli)

    def describe(self) -> list[dict[str, Any]]:
        """Every plugin with its version, hooks and the components it provides, by kind."""
        by_plugin: dict[str, dict[str, list[str]]] = {}
        for kind, entries in self.registry.items():
            for reg in entries.values():
                by_plugin.setdefault(reg.plugin, {}).setdefault(kind, []).append(reg.name)
        for preset in self.presets.values():
            by_plugin.setdefault(preset.plugin, {}).setdefault("preset", []).append(preset.name)
        out = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda item: item[0]):
            hooks = sorted(impl_hook.name for impl_hook in self.pm.get_hookcallers(plugin) or [])
            out.append(
                {
                    "name": name,
                    "version": self._versions.get(name, "unknown"),
                    "hooks": hooks,
                    "provides": {k: sorted(v) for k, v in sorted(by_plugin.get(name, {}).items())},
                }
            )
        return out


def _import_file(path: Path, module_name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"plugin file {path} failed to import: {exc}") from exc
    return module
