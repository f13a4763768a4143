"""The plugin manager: loads plugins and fills the registries.

Order (pytest/tox style):

1. the hook specifications of :mod:`eegbench.hookspecs`;
2. names in ``EEGBENCH_DISABLED_PLUGINS`` (comma-separated) are blocked;
3. the core plugin :mod:`eegbench.builtin` (datasets, settings, metrics, backbones);
4. the ``eegbench`` entry-point group (built-in methods and third-party plugins alike), unless
   ``EEGBENCH_DISABLE_PLUGIN_AUTOLOAD`` is set;
5. modules named in ``EEGBENCH_PLUGINS`` (comma-separated), for plugins under development;
6. ``check_pending()`` — an implementation of an unknown hook (a typo) is an error.

A plugin that fails to import is reported by name in :attr:`PluginSet.broken` and skipped, so one
broken third-party plugin does not take the CLI down. ``EEGBENCH_TRACE_PLUGINS=1`` prints every
hook call to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy

from eegbench import hookspecs
from eegbench.errors import PluginError
from eegbench.registry import Registry

GROUP = "eegbench"
KINDS = ("methods", "datasets", "settings", "metrics", "backbones", "profiles")


@dataclass
class PluginSet:
    """A loaded plugin manager with its filled registries.

    Attributes
    ----------
    pm : pluggy.PluginManager
    registries : dict of str to Registry
        One per kind in :data:`KINDS`.
    broken : dict of str to str
        Plugins that failed to load, with the error message.
    dists : dict of str to tuple of (str, str)
        Plugin name → (distribution name, version) for entry-point plugins.
    """

    pm: pluggy.PluginManager
    registries: dict[str, Registry]
    broken: dict[str, str] = field(default_factory=dict)
    dists: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def methods(self) -> Registry:
        return self.registries["methods"]

    @property
    def datasets(self) -> Registry:
        return self.registries["datasets"]

    @property
    def settings(self) -> Registry:
        return self.registries["settings"]

    @property
    def metrics(self) -> Registry:
        return self.registries["metrics"]

    @property
    def backbones(self) -> Registry:
        return self.registries["backbones"]

    @property
    def profiles(self) -> Registry:
        """Backbone profiles (:class:`eegbench.backbones.profiles.BackboneProfile` subclasses)."""
        return self.registries["profiles"]

    def plugin_info(self) -> list[dict[str, Any]]:
        """One dict per registered plugin: name, distribution, version, hooks, registered names."""
        rows = []
        for name, plugin in sorted(self.pm.list_name_plugin(), key=lambda x: x[0]):
            if plugin is None:
                continue
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            dist, version = self.dists.get(name, ("eegbench", _version()))
            registered = {
                kind: [e.name for e in reg.entries() if e.plugin == name] for kind, reg in self.registries.items()
            }
            rows.append({"name": name, "distribution": dist, "version": version, "hooks": hooks,
                         **{k: v for k, v in registered.items() if v}})
        for name, err in sorted(self.broken.items()):
            rows.append({"name": name, "broken": err})
        return rows


def _version() -> str:
    from eegbench import __version__

    return __version__


def _env_list(var: str) -> list[str]:
    return [x.strip() for x in os.environ.get(var, "").split(",") if x.strip()]


def _trace(pm: pluggy.PluginManager) -> None:
    def before(hook_name, hook_impls, kwargs):
        print(f"[eegbench-trace] {hook_name} -> {[i.plugin_name for i in hook_impls]}", file=sys.stderr)

    def after(outcome, hook_name, hook_impls, kwargs):
        print(f"[eegbench-trace] {hook_name} done", file=sys.stderr)

    pm.add_hookcall_monitoring(before, after)


def get_plugin_manager(*, autoload: bool | None = None, extra_plugins: list[Any] | None = None) -> PluginSet:
    """Build a plugin manager, load plugins and fill the registries.

    Parameters
    ----------
    autoload : bool, optional
        Load the ``eegbench`` entry-point group; default: unless ``EEGBENCH_DISABLE_PLUGIN_AUTOLOAD``
        is set.
    extra_plugins : list, optional
        Plugin objects/modules to register in addition (tests use this).

    Returns
    -------
    PluginSet

    Raises
    ------
    PluginError
        A name clash between plugins, or a hook implementation with no matching spec.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    if os.environ.get("EEGBENCH_TRACE_PLUGINS"):
        _trace(pm)
    for name in _env_list("EEGBENCH_DISABLED_PLUGINS"):
        pm.set_blocked(name)
    plugins = PluginSet(pm, {k: Registry(k[:-1]) for k in KINDS})

    from eegbench import builtin

    pm.register(builtin, name="eegbench.builtin")
    if autoload is None:
        autoload = not os.environ.get("EEGBENCH_DISABLE_PLUGIN_AUTOLOAD")
    if autoload:
        for ep in entry_points(group=GROUP):
            if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
                continue
            try:
                module = ep.load()
                pm.register(module, name=ep.name)
            except Exception as exc:  # a broken third-party plugin must not take the CLI down
                plugins.broken[ep.name] = f"{type(exc).__name__}: {exc}"
                continue
            if ep.dist is not None:
                plugins.dists[ep.name] = (ep.dist.name, ep.dist.version)
    for modname in _env_list("EEGBENCH_PLUGINS"):
        if pm.is_blocked(modname) or pm.has_plugin(modname):
            continue
        try:
            pm.register(importlib.import_module(modname), name=modname)
        except Exception as exc:
            plugins.broken[modname] = f"{type(exc).__name__}: {exc}"
    for obj in extra_plugins or []:
        pm.register(obj)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from None

    for kind, registry in plugins.registries.items():
        hook = getattr(pm.hook, f"eegbench_register_{kind}")
        for impl in hook.get_hookimpls():  # registration order
            registry._current_plugin = impl.plugin_name
            try:
                impl.function(registry=registry)
            except PluginError:
                raise
            except Exception as exc:
                plugins.broken[impl.plugin_name] = f"{type(exc).__name__}: {exc}"
        registry._current_plugin = "?"
    return plugins
