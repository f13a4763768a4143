"""eegbench: a plugin-based benchmark harness for EEG-to-image generation.

Public API for plugin authors: :data:`hookimpl`, :class:`~eegbench.method.Method`,
:class:`~eegbench.method.RunContext`, :class:`~eegbench.data.EEGDataset`,
:class:`~eegbench.data.DatasetInfo`, :class:`~eegbench.splits.Split`.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"

#: Marker for hook implementations of eegbench plugins.
hookimpl = pluggy.HookimplMarker("eegbench")

__all__ = ["__version__", "hookimpl"]
