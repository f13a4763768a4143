"""Hook specifications of the ``eegbench`` pluggy host.

A plugin is a module (or object) with functions decorated by :data:`eegbench.hookimpl`, found
through the ``eegbench`` entry-point group (``[project.entry-points.eegbench]``) or listed in
``EEGBENCH_PLUGINS``. Hooks are called with keyword arguments; an implementation may accept a
subset of the arguments. Registration hooks receive a :class:`~eegbench.registry.Registry` and add
entries to it; lazy ``"module:attr"`` strings keep ``eegbench ls`` from importing heavy code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from eegbench.registry import Registry

hookspec = pluggy.HookspecMarker("eegbench")


# --- Registration hooks: called once while the plugin manager is built ------------------------


@hookspec
def eegbench_register_methods(registry: Registry) -> None:
    """Register method plugins (subclasses of :class:`eegbench.method.Method`).

    :param registry: add entries with ``registry.add("name", "package.module:Class",
        summary="one line")``.
    """


@hookspec
def eegbench_register_datasets(registry: Registry) -> None:
    """Register dataset loaders.

    A loader is a class taking ``(data_root, cache_dir=None, **options)`` with ``load() ->
    EEGDataset`` and ``required_files() -> list[Path]``.

    :param registry: the dataset registry.
    """


@hookspec
def eegbench_register_settings(registry: Registry) -> None:
    """Register evaluation settings: callables ``(dataset, *, subject=None) -> Split``.

    :param registry: the setting registry.
    """


@hookspec
def eegbench_register_metrics(registry: Registry) -> None:
    """Register metrics (names listed by ``eegbench ls metrics``; computed by the core).

    :param registry: the metric registry; entries point to the function computing the metric.
    """


@hookspec
def eegbench_register_backbones(registry: Registry) -> None:
    """Register backbones (image autoencoders, denoisers, embedders) by name.

    :param registry: the backbone registry.
    """


@hookspec
def eegbench_register_profiles(registry: Registry) -> None:
    """Register backbone profiles (``--profile NAME``): subclasses of
    :class:`eegbench.backbones.profiles.BackboneProfile`, which build a run's backbones, check its
    weights, set the protocol's defaults and describe the profile to ``eegbench params`` /
    ``eegbench weights check``.

    :param registry: the profile registry.
    """


# --- Run lifecycle: observers; return values are ignored ----------------------------------------


@hookspec
def eegbench_run_start(config: dict[str, Any], run_dir: Path) -> None:
    """Called after the split is made and before training starts.

    :param config: the resolved run configuration (JSON-ready dict).
    :param run_dir: the (still partial) run folder.
    """


@hookspec
def eegbench_run_end(result: dict[str, Any], run_dir: Path) -> None:
    """Called after ``result.json`` is written (e.g. push to a tracker). Must not change ``result``.

    :param result: the run result as written.
    :param run_dir: the final run folder.
    """


@hookspec
def eegbench_update_environment_info(info: dict[str, Any]) -> None:
    """Add keys to the ``environment`` block of every result (pytest-benchmark style).

    :param info: the environment dict, modified in place.
    """
