"""Speed of generating ``eegnb-groundtruth`` for a full split (target: under 30 s on 2 cores).

Run::

    pytest benchmarks/test_groundtruth_speed.py --benchmark-enable

Three figures: the whole dataset and its split from an empty cache (CSV parsing and MNE epoching of
the N170 background included), the same from the cached N170 epochs, and the N170 load alone from
its cache, so the simulation's own cost is the ratio of the last two (measured in one run, since the
machines are noisy). The first must stay under the issue's 30 s budget; it asserts that.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from eegbench.datasets.eegnb import EEGNotebooksN170
from eegbench.datasets.groundtruth import GroundTruthEEG
from eegbench.splits import multi_subject

DATA_ROOT = Path(os.environ.get("EEGBENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
pytestmark = pytest.mark.skipif(
    not (DATA_ROOT / "eeg-notebooks" / "data" / "visual" / "N170").is_dir(),
    reason=f"eeg-notebooks N170 data absent under {DATA_ROOT} (set EEGBENCH_DATA)",
)
BUDGET_S = 30.0
_TIMES: dict[str, float] = {}


def _generate(cache: Path, **options):
    ds = GroundTruthEEG(DATA_ROOT, cache, snr_db="0", **options).load()
    split = multi_subject(ds)
    return ds, split


@pytest.mark.parametrize("variant", ["evoked", "drift"])
def test_groundtruth_cold(benchmark, variant):
    """From an empty cache: N170 CSVs → MNE epochs, then the simulation and the split."""
    cache = Path(tempfile.mkdtemp())

    def setup():
        shutil.rmtree(cache, ignore_errors=True)
        return (), {}

    t0 = time.perf_counter()
    ds, split = benchmark.pedantic(lambda: _generate(cache, variant=variant), setup=setup, rounds=2)
    benchmark.extra_info["n_trials"] = len(ds)
    benchmark.extra_info["split_sizes"] = split.sizes()
    assert (time.perf_counter() - t0) / 2 < BUDGET_S
    shutil.rmtree(cache, ignore_errors=True)


def test_groundtruth_cached(benchmark):
    """From the cached N170 epochs: the simulation (features, encoding model, gain) and the split."""
    cache = Path(tempfile.mkdtemp())
    _generate(cache)
    ds, _ = benchmark.pedantic(lambda: _generate(cache), rounds=5)
    _TIMES["groundtruth"] = benchmark.stats.stats.min if benchmark.stats else float("nan")
    benchmark.extra_info["n_trials"] = len(ds)
    shutil.rmtree(cache, ignore_errors=True)


def test_n170_cached_baseline(benchmark):
    """The N170 load the simulation starts from (cached), for the overhead ratio."""
    cache = Path(tempfile.mkdtemp())
    EEGNotebooksN170(DATA_ROOT, cache).load()
    benchmark.pedantic(lambda: EEGNotebooksN170(DATA_ROOT, cache).load(), rounds=5)
    if benchmark.stats and "groundtruth" in _TIMES:
        ratio = _TIMES["groundtruth"] / benchmark.stats.stats.min
        benchmark.extra_info["groundtruth_over_n170"] = ratio
        print(f"\neegnb-groundtruth (cached N170) / eegnb-n170 cached load: {ratio:.2f}x")
    shutil.rmtree(cache, ignore_errors=True)
