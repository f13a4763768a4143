"""Speed of the zero-shot pieces: loading THINGS-EEG2 and scoring k-way retrieval at the release's size.

Run::

    pytest benchmarks/test_zero_shot_speed.py --benchmark-enable

Two old-vs-new ratios, each measured in one run (the machines are noisy):

- ``things-eeg2`` from its memory-mapped cache vs the cold build (pickled files → checked,
  averaged, float32 cache) of a 2-subject fixture with 200 training concepts (16,000 training
  trials); the cold build must stay under 60 s and the cached load must be faster.
- :func:`eegbench.metrics.retrieval.kway_retrieval` (distinct distractor positions drawn per class,
  vectorised over its trials) vs the first implementation (a per-trial loop that ranks a random key
  per candidate), for 4,000 test trials × 200 candidates × 50 draws (a single-trial THINGS-EEG2
  test set of one subject is 16,000 trials); both give the chance level on random embeddings.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from eegbench.datasets.things_eeg2 import ThingsEEG2, write_things_eeg2_files
from eegbench.metrics.retrieval import kway_retrieval

COLD_BUDGET_S = 60.0
_TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def things(tmp_path_factory):
    root = tmp_path_factory.mktemp("things-bench")
    write_things_eeg2_files(root, n_subjects=2, n_train_concepts=200, n_test_concepts=200, test_reps=80)
    return root


def test_things_eeg2_cold(benchmark, things):
    cache = Path(tempfile.mkdtemp())

    def setup():
        shutil.rmtree(cache, ignore_errors=True)
        return (), {}

    t0 = time.perf_counter()
    ds = benchmark.pedantic(lambda: ThingsEEG2(things, cache).load(), setup=setup, rounds=2)
    _TIMES["cold"] = benchmark.stats.stats.min if benchmark.stats else (time.perf_counter() - t0) / 2
    benchmark.extra_info["n_trials"] = len(ds)
    assert (time.perf_counter() - t0) / 2 < COLD_BUDGET_S
    shutil.rmtree(cache, ignore_errors=True)


def test_things_eeg2_cached(benchmark, things):
    cache = Path(tempfile.mkdtemp())
    ThingsEEG2(things, cache).load()
    benchmark.pedantic(lambda: ThingsEEG2(things, cache).load(), rounds=5)
    if benchmark.stats and "cold" in _TIMES:
        ratio = benchmark.stats.stats.min / _TIMES["cold"]
        benchmark.extra_info["cached_over_cold"] = ratio
        print(f"\nthings-eeg2 cached / cold load: {ratio:.3f}")
        assert ratio < 1.0
    shutil.rmtree(cache, ignore_errors=True)


def _kway_loop(eeg, cand, own, classes, *, k, n_draws, seed):
    """The first implementation: one trial at a time, the k - 1 smallest of a random key per candidate."""
    e = eeg / np.linalg.norm(eeg, axis=1, keepdims=True)
    c = cand / np.linalg.norm(cand, axis=1, keepdims=True)
    sims = e @ c.T
    rng = np.random.default_rng([seed, k])
    out = np.empty(len(e))
    for i in range(len(e)):
        keys = rng.random((n_draws, len(c)), dtype=np.float32)
        keys[:, classes == classes[own[i]]] = np.inf
        picks = np.argpartition(keys, k - 2, axis=-1)[:, : k - 1]
        d = sims[i][picks]
        g, t = (d > sims[i, own[i]]).sum(-1), (d == sims[i, own[i]]).sum(-1)
        out[i] = (np.clip(1 - g, 0, t + 1) / (t + 1)).mean()
    return out


@pytest.fixture(scope="module")
def embeddings():
    rng = np.random.default_rng(0)
    cand = rng.standard_normal((200, 64))
    own = np.tile(np.arange(200), 20)
    return rng.standard_normal((len(own), 64)), cand, own, np.arange(200)


def test_kway_loop_baseline(benchmark, embeddings):
    eeg, cand, own, classes = embeddings
    out = benchmark.pedantic(lambda: _kway_loop(eeg, cand, own, classes, k=4, n_draws=50, seed=0), rounds=2)
    _TIMES["loop"] = benchmark.stats.stats.min if benchmark.stats else float("nan")
    assert abs(out.mean() - 0.25) < 0.02


def test_kway_vectorised(benchmark, embeddings):
    eeg, cand, own, classes = embeddings
    res = benchmark.pedantic(lambda: kway_retrieval(eeg, cand, own, classes, k=4, n_draws=50, seed=0), rounds=3)
    assert abs(res["value"] - 0.25) < 0.02
    if benchmark.stats and "loop" in _TIMES:
        ratio = _TIMES["loop"] / benchmark.stats.stats.min
        benchmark.extra_info["loop_over_vectorised"] = ratio
        print(f"\nk-way retrieval, per-trial loop / vectorised: {ratio:.2f}x")
