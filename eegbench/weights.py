"""``eegbench weights check``: which local weights each method needs at a profile, found or missing.

Paper profile: the Stable Diffusion / OpenCLIP / CLIP folders of :mod:`eegbench.backbones.sd`
(one row per folder a method reads, with the roles that read it). Small profile: the TAEF2
files under the weights root (EfficientNet-Lite0 and MiniLM come with their pip packages).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


__all__ = ["check_weights", "format_weight_rows"]


def _size(n: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20), ("kB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def check_weights(plugins, *, profile: str = "paper", method: str | None = None, weights_root: Path | None = None,
                  backbone_overrides: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows of what the methods need at ``profile``.

    Parameters
    ----------
    plugins : eegbench.plugins.PluginSet
    profile : str
        A registered profile (``small``, ``paper``; :mod:`eegbench.backbones.profiles`).
    method : str, optional
        Only this registered method (default: every one with that profile).
    weights_root : Path, optional
        Default: :func:`eegbench.backbones.default_weights_root`.
    backbone_overrides : mapping of str to str, optional
        ``--backbone-set`` folder overrides.

    Returns
    -------
    list of dict
        ``method``, ``key``, ``role``, ``folder``, ``found``, ``missing`` (relative file names, or
        the folder itself), ``bytes``.

    Raises
    ------
    PluginError
        For an unknown method.
    ConfigError
        For an unknown profile or override key.
    """
    from eegbench.backbones import default_weights_root

    from eegbench.backbones.profiles import get_profile

    root = Path(weights_root) if weights_root is not None else default_weights_root()
    names = [method] if method else sorted(plugins.methods.names())
    classes = {name: plugins.methods.get(name) for name in names}  # an unknown method fails here
    return get_profile(profile, plugins).weight_rows(classes, weights_root=root, backbone_overrides=backbone_overrides,
                                                     only_named=method is not None)


def format_weight_rows(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`check_weights` rows (status, size, missing files)."""
    from tabulate import tabulate

    table = []
    for r in rows:
        if r["found"]:
            status = "found"
        elif r["missing"] == [r["folder"]]:
            status = "MISSING folder"
        else:
            status = "MISSING " + ", ".join(r["missing"])
        table.append([r["method"], r["key"], r["role"], r["folder"], status, _size(r["bytes"]) if r["bytes"] else "—"])
    return tabulate(table, headers=["method", "weights", "used as", "folder", "status", "size"], tablefmt="simple")
