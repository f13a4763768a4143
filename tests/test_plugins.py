"""Plugin manager and registries: built-ins, entry points, clashes, broken plugins, typos."""

from __future__ import annotations

import types

import pytest

from eegbench import hookimpl
from eegbench.errors import PluginError
from eegbench.plugins import get_plugin_manager
from eegbench.registry import Registry


def test_builtin_registries_are_filled_without_importing_heavy_modules():
    import sys

    for mod in ("eegbench_methods.synapse.method", "diffusers"):
        sys.modules.pop(mod, None)
    plugins = get_plugin_manager()
    assert "synapse" in plugins.methods
    assert {"eegnb-n170", "synthetic"} <= set(plugins.datasets.names())
    assert {"multi-subject", "single-subject", "cross-subject"} <= set(plugins.settings.names())
    assert {"fid", "kid", "is", "probe_accuracy", "nway_topk", "two_way_inception", "two_way_effnet", "ssim",
            "pixcorr"} <= set(plugins.metrics.names())
    assert {"class-prior", "oracle-class"} <= set(plugins.methods.names())
    assert "eegbench_methods.synapse.method" not in sys.modules  # lazy registration


def test_synapse_comes_from_the_entry_point_group():
    plugins = get_plugin_manager()
    assert plugins.methods.entry("synapse").plugin == "synapse"
    assert plugins.dists["synapse"][0] == "eegbench"
    # without entry points only the core's two references remain: every paper method is a plugin
    assert get_plugin_manager(autoload=False).methods.names() == ["class-prior", "oracle-class"]


def test_unknown_name_suggests_close_match():
    plugins = get_plugin_manager()
    with pytest.raises(PluginError, match="Did you mean: synapse"):
        plugins.methods.get("synapze")


def test_name_clash_names_both_plugins():
    clash = types.SimpleNamespace(
        eegbench_register_datasets=hookimpl(lambda registry: registry.add("synthetic", object)))
    with pytest.raises(PluginError, match="registered twice: by plugin 'eegbench.builtin'"):
        get_plugin_manager(extra_plugins=[clash])


def test_hook_typo_is_rejected():
    typo = types.SimpleNamespace(eegbench_register_methodz=hookimpl(lambda registry: None))
    with pytest.raises(PluginError, match="eegbench_register_methodz"):
        get_plugin_manager(extra_plugins=[typo])


def test_broken_plugin_is_reported_not_fatal(monkeypatch, tmp_path):
    (tmp_path / "broken_plugin_mod.py").write_text("raise ImportError('needs a missing package')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("EEGBENCH_PLUGINS", "broken_plugin_mod")
    plugins = get_plugin_manager()
    assert "needs a missing package" in plugins.broken["broken_plugin_mod"]
    assert "synapse" in plugins.methods


def test_disabled_plugin_is_blocked(monkeypatch):
    monkeypatch.setenv("EEGBENCH_DISABLED_PLUGINS", "synapse")
    assert "synapse" not in get_plugin_manager().methods


def test_lazy_reference_resolves_and_bad_reference_names_plugin():
    reg = Registry("method")
    reg._current_plugin = "demo"
    reg.add("good", "eegbench.splits:multi_subject")
    reg.add("bad", "eegbench.nonexistent:Thing")
    from eegbench.splits import multi_subject

    assert reg.get("good") is multi_subject
    with pytest.raises(PluginError, match="from plugin 'demo': cannot import"):
        reg.get("bad")


def test_every_hookspec_is_documented_in_the_plugin_guide():
    from pathlib import Path

    import inspect

    from eegbench import hookspecs

    guide = (Path(__file__).resolve().parents[1] / "methods" / "README.md").read_text()
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("eegbench_"):
            sig = f"{name}({', '.join(inspect.signature(fn).parameters)})"
            assert sig in guide, f"methods/README.md lacks the hook signature {sig}"
