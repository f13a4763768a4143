"""Built-in datasets: ``eegnb-n170``, ``eegnb-p300`` (:mod:`eegbench.datasets.eegnb`), ``cvpr40``
(:mod:`eegbench.datasets.cvpr40`) and ``synthetic``
(:mod:`eegbench.datasets.synthetic`), plus where their data and caches live by default.
"""

from __future__ import annotations

import os
from pathlib import Path


def default_data_root() -> Path:
    """``$EEGBENCH_DATA``, else ``../shared/data`` beside the checkout, else ``~/.cache/eegbench/data``.

    The data root is the folder that *contains* ``eeg-notebooks/`` (and other datasets' folders).
    """
    env = os.environ.get("EEGBENCH_DATA")
    if env:
        return Path(env)
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if shared.is_dir():
        return shared
    return Path.home() / ".cache" / "eegbench" / "data"


def default_cache_dir() -> Path:
    """``$EEGBENCH_CACHE``, else ``~/.cache/eegbench``: where datasets keep preprocessed arrays."""
    env = os.environ.get("EEGBENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "eegbench"
