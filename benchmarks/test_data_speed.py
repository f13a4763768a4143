"""Data loading speed: real ``eegnb-n170`` (cold CSV → MNE epochs vs cached arrays) and a
realistic-size made-up ``cvpr40`` file (cold ``.pth`` → memory-mapped cache vs cached).

Run::

    pytest benchmarks/test_data_speed.py --benchmark-enable

The cvpr40 benchmarks write a file of the published size (11,965 trials × 128 channels × ~500
samples, float32, ≈3.1 GB, plus 2,000 tiny JPEGs) into a temporary folder once per session; set
``EEGBENCH_BENCH_CVPR40_TRIALS`` to a smaller number for a quick run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from eegbench.datasets.cvpr40 import CVPR40, write_synthetic_files
from eegbench.datasets.eegnb import EEGNotebooksN170

DATA_ROOT = Path(os.environ.get("EEGBENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_n170 = pytest.mark.skipif(
    not (DATA_ROOT / "eeg-notebooks" / "data" / "visual" / "N170").is_dir(),
    reason=f"eeg-notebooks N170 data absent under {DATA_ROOT} (set EEGBENCH_DATA)",
)
CVPR40_TRIALS = int(os.environ.get("EEGBENCH_BENCH_CVPR40_TRIALS", "11965"))


@needs_n170
def test_n170_cold_load(benchmark):
    """Parse every CSV, band-pass and epoch with MNE (the cache is emptied before each round)."""
    cache = Path(tempfile.mkdtemp())

    def setup():
        shutil.rmtree(cache, ignore_errors=True)
        return (), {}

    ds = benchmark.pedantic(lambda: EEGNotebooksN170(DATA_ROOT, cache).load(), setup=setup, rounds=3)
    benchmark.extra_info["n_trials"] = len(ds)
    assert len(ds) > 2000


@needs_n170
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


@pytest.fixture(scope="module")
def cvpr40_root(tmp_path_factory):
    """A realistic-size perceivelab-format file: 6 subjects × 40 classes × 50 images, first 11,965 items,
    T uniform in 491–520 samples (the real file's common range) and 25 items outside the 450–600 filter."""
    root = tmp_path_factory.mktemp("cvpr40-bench")
    t0 = time.perf_counter()
    write_synthetic_files(root, n_subjects=6, n_classes=40, images_per_class=50, lengths=(491, 520),
                          n_out_of_filter=25, n_items=CVPR40_TRIALS, image_px=8)
    size = (root / "eeg-imagenet" / "eeg_5_95_std.pth").stat().st_size
    print(f"\nwrote {size / 2**30:.2f} GiB in {time.perf_counter() - t0:.1f} s")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_cvpr40_cold_load(benchmark, cvpr40_root):
    """Read the ~3 GB ``.pth`` (weights_only, mmap), check it, crop, write the memory-mapped cache."""
    cache = Path(tempfile.mkdtemp())

    def setup():
        shutil.rmtree(cache, ignore_errors=True)
        return (), {}

    def load():
        loader = CVPR40(cvpr40_root, cache)
        ds = loader.load()
        assert loader.cache_hit is False
        return ds

    ds = benchmark.pedantic(load, setup=setup, rounds=1)
    benchmark.extra_info["n_trials"] = len(ds)
    assert len(ds) == CVPR40_TRIALS - 25 and ds.eeg.shape[1:] == (128, 440)
    shutil.rmtree(cache, ignore_errors=True)


def test_cvpr40_cached_load(benchmark, cvpr40_root):
    """Open the cache: stat the sources, map the ``.npy``, read the table, check the stimuli exist."""
    cache = Path(tempfile.mkdtemp())
    CVPR40(cvpr40_root, cache).load()

    def load():
        loader = CVPR40(cvpr40_root, cache)
        ds = loader.load()
        assert loader.cache_hit is True
        return ds

    ds = benchmark.pedantic(load, rounds=5)
    benchmark.extra_info["n_trials"] = len(ds)
    assert len(ds) == CVPR40_TRIALS - 25
    shutil.rmtree(cache, ignore_errors=True)
