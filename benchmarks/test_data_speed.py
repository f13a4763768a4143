"""Load time of the real ``eegnb-n170`` data: cold (CSV → MNE filter + epochs) vs cached arrays.

Run::

    pytest benchmarks/test_data_speed.py --benchmark-enable
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from eegbench.datasets.eegnb import EEGNotebooksN170

DATA_ROOT = Path(os.environ.get("EEGBENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
pytestmark = pytest.mark.skipif(
    not (DATA_ROOT / "eeg-notebooks" / "data" / "visual" / "N170").is_dir(),
    reason=f"eeg-notebooks N170 data absent under {DATA_ROOT} (set EEGBENCH_DATA)",
)


def test_n170_cold_load(benchmark):
    """Parse every CSV, band-pass and epoch with MNE (the cache is emptied before each round)."""
    cache = Path(tempfile.mkdtemp())

    def setup():
        shutil.rmtree(cache, ignore_errors=True)
        return (), {}

    ds = benchmark.pedantic(lambda: EEGNotebooksN170(DATA_ROOT, cache).load(), setup=setup, rounds=3)
    benchmark.extra_info["n_trials"] = len(ds)
    assert len(ds) > 2000


def test_n170_cached_load(benchmark):
    """Load the cached arrays (sha256 of every source CSV checked, MNE not run)."""
    cache = Path(tempfile.mkdtemp())
    EEGNotebooksN170(DATA_ROOT, cache).load()

    def load():
        loader = EEGNotebooksN170(DATA_ROOT, cache)
        ds = loader.load()
        assert loader.cache_hit
        return ds

    ds = benchmark.pedantic(load, rounds=5)
    benchmark.extra_info["n_trials"] = len(ds)
