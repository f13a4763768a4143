"""Import shims for the CPU-only environment.

The registry's torchvision wheels are CUDA builds; next to a CPU torch their compiled extension does
not load and ``import torchvision`` fails with ``operator torchvision::nms does not exist``
(pytorch/vision#9085). :func:`ensure_torchvision` defines the two op schemas that torchvision's
meta registrations expect *only in that case*, so a working torchvision (e.g. on a GPU machine) is
left untouched.
"""

from __future__ import annotations

import importlib
import sys

_LIB = None


def ensure_torchvision():
    """Import and return :mod:`torchvision`, working around a CPU/CUDA build mismatch.

    Returns
    -------
    module
        The imported ``torchvision`` module.

    Raises
    ------
    ImportError
        If torchvision is not installed.
    RuntimeError
        If the import fails for another reason than the known missing-op problem.
    """
    global _LIB
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "transforms"):
        return sys.modules["torchvision"]
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    import torch

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if _LIB is None:
        _LIB = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 - schema-only library
        _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _LIB.define(
            "qnms(Tensor qdets, Tensor scores, float iou_threshold, float scale, int zero_point) -> Tensor"
        )
    return importlib.import_module("torchvision")
