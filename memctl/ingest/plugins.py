"""The plugin host: loads memctl's built-in sources and third-party plugins.

Built-ins (``memctl_plugins.*``) are registered first, by module name, through the same hooks
as anything else; then every entry point of group ``memctl`` is loaded. Loading is fault
tolerant: a plugin whose import raises, that registers twice, or whose hook raises is skipped
and recorded as a :class:`PluginWarning` (the CLI prints them, e.g. in ``memctl plugins``);
everything else keeps working.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pluggy

from memctl.ingest import hookspecs

log = logging.getLogger("memctl.plugins")

ENTRY_POINT_GROUP = "memctl"
#: Built-in plugin modules, registered under their last dotted component (``markdown``...).
BUILTIN_PLUGINS: tuple[str, ...] = (
    "memctl_plugins.markdown",
    "memctl_plugins.records",
    "memctl_plugins.mail",
    "memctl_plugins.chat",
    "memctl_plugins.shell",
    "memctl_plugins.bookmarks",
)


@dataclass(frozen=True)
class PluginWarning:
    """A plugin problem that did not stop memctl: which plugin, and what happened."""

    plugin: str
    message: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r}: {self.message}"


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _memctl_version() -> str:
    import memctl

    version = getattr(memctl, "__version__", None)
    if version:
        return str(version)
    try:
        return md.version("memctl")
    except md.PackageNotFoundError:
        return "unknown"


def _entry_points() -> Iterable[md.EntryPoint]:
    return md.entry_points(group=ENTRY_POINT_GROUP)


class PluginHost:
    """A pluggy manager plus what memctl needs around it: versions, warnings, sources."""

    def __init__(
        self,
        *,
        builtins: Iterable[str] = BUILTIN_PLUGINS,
        entry_points: Iterable[md.EntryPoint] | None = None,
        load_entry_points: bool = True,
    ) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.warnings: list[PluginWarning] = []
        self._versions: dict[str, str] = {}
        self._dists: dict[str, Any] = {}  # read lazily: distribution metadata costs a parse
        self._builtin: set[str] = set()
        self._sources: dict[str, Any] | None = None
        for module_name in builtins:
            self._load_builtin(module_name)
        if load_entry_points:
            eps = _entry_points() if entry_points is None else entry_points
            for ep in eps:
                self._load_entry_point(ep)

    # -- loading -------------------------------------------------------------------------

    def warn(self, plugin: str, message: str) -> None:
        """Record (and log) a plugin warning."""
        warning = PluginWarning(plugin or "?", message)
        if warning not in self.warnings:
            self.warnings.append(warning)
            log.warning("%s", warning)

    def _register(self, obj: Any, name: str) -> bool:
        try:
            self.pm.register(obj, name=name)
        except Exception as exc:
            self.warn(name, f"could not be registered: {_describe(exc)}")
            return False
        callers = self.pm.get_hookcallers(obj) or []
        if not callers:
            self.warn(name, "implements no memctl hook")
        for caller in callers:
            if caller.spec is None:
                self.warn(
                    name, f"implements unknown hook {caller.name!r} (a typo?); it is never called"
                )
        return True

    def _load_builtin(self, module_name: str) -> None:
        name = module_name.rsplit(".", 1)[-1]
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            self.warn(name, f"built-in failed to load: {_describe(exc)}")
            return
        if self._register(module, name):
            self._builtin.add(name)
            self._versions[name] = str(getattr(module, "__version__", None) or _memctl_version())

    def _load_entry_point(self, ep: md.EntryPoint) -> None:
        name = ep.name
        existing = self.pm.get_plugin(name)
        if existing is not None:
            if isinstance(existing, ModuleType) and existing.__name__ == ep.value:
                return  # a built-in, also declared as an entry point by memctl's own package
            self.warn(name, f"skipped: the name is already taken by {existing!r}")
            return
        try:
            obj = ep.load()
        except BaseException as exc:  # a plugin's import may even call sys.exit()
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.warn(name, f"failed to load ({ep.value}): {_describe(exc)}")
            return
        if self._register(obj, name):
            self._dists[name] = getattr(ep, "dist", None)
            version = getattr(obj, "__version__", None)
            if version:
                self._versions[name] = str(version)

    # -- queries -------------------------------------------------------------------------

    def list_plugins(self) -> list[dict[str, Any]]:
        """One dict per loaded plugin: ``name``, ``version``, ``hooks`` (sorted hook names),
        ``builtin`` and ``sources`` (names of the sources it provides)."""
        by_plugin: dict[str, list[str]] = {}
        for spec in self.sources().values():
            by_plugin.setdefault(spec.plugin, []).append(spec.name)
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(c.name for c in (self.pm.get_hookcallers(plugin) or []))
            out.append(
                {
                    "name": name,
                    "version": self._version(name),
                    "hooks": hooks,
                    "builtin": name in self._builtin,
                    "sources": sorted(by_plugin.get(name, [])),
                }
            )
        return out

    def _version(self, name: str) -> str:
        if name not in self._versions:
            try:
                version = getattr(self._dists.get(name), "version", None)
            except Exception:
                version = None
            self._versions[name] = str(version or "unknown")
        return self._versions[name]

    def sources(self) -> dict[str, Any]:
        """Every source, by name, in load order (built-ins first). Computed once.

        Each plugin's ``memctl_sources`` is called on its own, so one that raises or returns
        garbage is a warning and costs only its own sources.
        """
        if self._sources is not None:
            return self._sources
        from memctl.ingest.sources import SourceSpec

        found: dict[str, SourceSpec] = {}
        impls = self.pm.hook.memctl_sources.get_hookimpls()  # registration order
        for impl in impls:
            plugin = impl.plugin_name
            try:
                specs = impl.function()
            except Exception as exc:
                self.warn(plugin, f"memctl_sources() raised {_describe(exc)}")
                continue
            if not isinstance(specs, list | tuple):
                self.warn(plugin, "memctl_sources() must return a list of SourceSpec")
                continue
            for spec in specs:
                if not isinstance(spec, SourceSpec):
                    self.warn(plugin, f"memctl_sources() returned a {type(spec).__name__}")
                    continue
                if spec.name in found:
                    self.warn(
                        plugin,
                        f"source {spec.name!r} is already provided by plugin "
                        f"{found[spec.name].plugin!r}; ignored",
                    )
                    continue
                found[spec.name] = dataclasses.replace(spec, plugin=plugin)
        self._sources = found
        return found

    def register_commands(self, app: Any) -> None:
        """Call every ``memctl_commands(app)``; one that raises is a warning."""
        for impl in self.pm.hook.memctl_commands.get_hookimpls():
            try:
                impl.function(app=app)
            except Exception as exc:
                self.warn(impl.plugin_name, f"memctl_commands() raised {_describe(exc)}")


_HOST: PluginHost | None = None


def get_host() -> PluginHost:
    """The process-wide plugin host, loaded on first use."""
    global _HOST
    if _HOST is None:
        _HOST = PluginHost()
    return _HOST


def reset_host(host: PluginHost | None = None) -> None:
    """Replace (or drop, to reload on next use) the process-wide host. For tests."""
    global _HOST
    _HOST = host


def list_plugins() -> list[dict[str, Any]]:
    """``[{"name", "version", "hooks", "builtin", "sources"}, ...]`` for ``memctl plugins``."""
    return get_host().list_plugins()


def load_warnings() -> list[PluginWarning]:
    """Problems met while loading plugins (and calling their hooks so far)."""
    host = get_host()
    host.sources()  # source hooks run lazily; surface their failures too
    return list(host.warnings)
