"""Tests of the ``cvpr40`` loader on files written in the exact perceivelab format (made-up content)."""

from __future__ import annotations

import datetime
import fractions
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from eegbench.datasets.cvpr40 import CVPR40, WNID_NAMES, load_pth, write_synthetic_files
from eegbench.errors import ConfigError, DataFormatError, DataNotFoundError

N_ITEMS, N_KEPT = 48, 46


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Small dataset, written once: 2 subjects × 3 classes × 8 images (48 items, 2 outside the length filter)."""
    root = tmp_path_factory.mktemp("cvpr40-template")
    write_synthetic_files(root, n_subjects=2, n_classes=3, images_per_class=8, n_out_of_filter=2,
                          lengths=(460, 600))
    return root


@pytest.fixture
def files(template, tmp_path):
    """A private copy of the template files (tests edit them)."""
    shutil.copytree(template, tmp_path / "data")
    return tmp_path / "data"


def _raw(root):
    base = Path(root) / "eeg-imagenet"
    return (torch.load(base / "eeg_5_95_std.pth", weights_only=True),
            torch.load(base / "block_splits_by_image_all.pth", weights_only=True))


def _owner_splitter(data, splits, part):
    """The owners' Splitter, re-stated: split indices into the unfiltered list, then 450 <= T <= 600."""
    items = data["dataset"]
    return [i for i in splits["splits"][0][part] if 450 <= items[i]["eeg"].size(1) <= 600]


def _cache_files(cache):
    root = Path(cache) / "cvpr40"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def _one_line(exc, *needles):
    msg = str(exc)
    assert "\n" not in msg, msg
    for n in needles:
        assert str(n) in msg, (n, msg)


# ----------------------------------------------------------------------------- loading
def test_shapes_units_and_info(files, tmp_path):
    ds = CVPR40(files, tmp_path / "cache").load()
    info = ds.info
    assert ds.eeg.dtype == np.float32 and ds.eeg.shape == (N_KEPT, 128, 440)
    assert (info.name, info.n_chans, info.n_times, info.sfreq, info.unit) == ("cvpr40", 128, 440, 1000.0, "a.u.")
    assert info.tmin == pytest.approx(0.020) and len(info.ch_names) == 128
    assert info.wnids == tuple(list(WNID_NAMES)[:3]) and info.wnids[0] == "n02389026"
    assert info.class_names == ("sorrel horse", "parachute", "iron")
    assert info.subjects == (1, 2)
    assert "Spampinato" in info.citation and "ImageNet" in info.licence
    assert ds.split_source.startswith("official: block_splits_by_image_all.pth split 0 (sha256 ")
    assert set(ds.trials["split"]) == {"train", "val", "test"}
    # stimuli: <images>/<wnid>/<image name>.JPEG, served as uint8 (3, H, W)
    wnid = info.wnids[ds.trials["label"].iloc[0]]
    assert ds.stimuli.paths[ds.trials["image_id"].iloc[0]] == \
        files / "eeg-imagenet" / "images" / wnid / f"{ds.trials['image_id'].iloc[0]}.JPEG"
    assert ds.images(24).shape == (N_KEPT, 3, 24, 24) and ds.images(24).dtype == np.uint8


def test_crop_filter_and_split_match_the_owners_loader(files, tmp_path):
    data, splits = _raw(files)
    ds = CVPR40(files, tmp_path / "cache").load()
    kept = [i for i, it in enumerate(data["dataset"]) if 450 <= it["eeg"].shape[1] <= 600]
    assert len(kept) == N_KEPT
    assert list(ds.trials["trial_id"]) == [f"t{i:05d}" for i in kept]
    for row, i in enumerate(kept):
        item = data["dataset"][i]
        np.testing.assert_array_equal(ds.eeg[row], item["eeg"][:, 20:460].numpy())
        t = ds.trials.iloc[row]
        assert (t["label"], t["subject"], t["image_id"], t["n_times_raw"]) == \
            (item["label"], item["subject"], data["images"][item["image"]], item["eeg"].shape[1])
    for part in ("train", "val", "test"):
        expected = {f"t{i:05d}" for i in _owner_splitter(data, splits, part)}
        assert set(ds.trials.loc[ds.trials["split"] == part, "trial_id"]) == expected, part


def test_filtered_trials_listed_in_the_split_are_dropped(files, tmp_path):
    data, splits = _raw(files)
    out = [i for i, it in enumerate(data["dataset"]) if not 450 <= it["eeg"].shape[1] <= 600]
    listed = set().union(*(splits["splits"][0][p] for p in ("train", "val", "test")))
    assert len(out) == 2 and set(out) <= listed
    ds = CVPR40(files, tmp_path / "cache").load()
    assert not {f"t{i:05d}" for i in out} & set(ds.trials["trial_id"])


def test_cached_load_is_memory_mapped_identical_and_skips_the_pth(files, tmp_path, monkeypatch):
    first = CVPR40(files, tmp_path / "cache")
    ds1 = first.load()
    assert first.cache_hit is False
    monkeypatch.setattr("eegbench.datasets.cvpr40.load_pth",
                        lambda *a, **k: pytest.fail("the .pth was read on a cache hit"))
    second = CVPR40(files, tmp_path / "cache")
    t0 = time.perf_counter()
    ds2 = second.load()
    assert time.perf_counter() - t0 < 1.0
    assert second.cache_hit is True and isinstance(ds2.eeg, np.memmap) and not ds2.eeg.flags.writeable
    np.testing.assert_array_equal(ds1.eeg, ds2.eeg)
    assert ds1.trials.equals(ds2.trials) and ds1.info == ds2.info and ds1.split_source == ds2.split_source
    assert not [n for n in _cache_files(tmp_path / "cache") if n.endswith(".tmp")]


def test_cache_rebuilt_when_a_source_file_changes(files, tmp_path):
    CVPR40(files, tmp_path / "cache").load()
    path = files / "eeg-imagenet" / "eeg_5_95_std.pth"
    data, _ = _raw(files)
    data["dataset"][0]["eeg"] += 1.0
    torch.save(data, path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    loader = CVPR40(files, tmp_path / "cache")
    ds = loader.load()
    assert loader.cache_hit is False
    np.testing.assert_array_equal(ds.eeg[0], data["dataset"][0]["eeg"][:, 20:460].numpy())
    assert len([n for n in _cache_files(tmp_path / "cache") if n.startswith("eeg-")]) == 1


def test_segments_too_short_for_the_crop_are_dropped(tmp_path, caplog):
    root = tmp_path / "data"
    write_synthetic_files(root, n_subjects=1, n_classes=2, images_per_class=5, n_out_of_filter=0)
    _rewrite_eeg(root, lambda d: d["dataset"][4].__setitem__("eeg", d["dataset"][4]["eeg"][:, :455]))
    ds = CVPR40(root, tmp_path / "cache").load()
    assert len(ds) == 9 and "t00004" not in set(ds.trials["trial_id"])
    assert "too short" in caplog.text


def test_legacy_pickle_format_loads(tmp_path):
    """Files written by old torch (non-zip) are read without mmap, still with weights_only."""
    root = tmp_path / "data"
    write_synthetic_files(root, n_subjects=1, n_classes=2, images_per_class=5, n_out_of_filter=0)
    for name in ("eeg_5_95_std.pth", "block_splits_by_image_all.pth"):
        p = root / "eeg-imagenet" / name
        obj = torch.load(p, weights_only=True)
        torch.save(obj, p, _use_new_zipfile_serialization=False)
    ds = CVPR40(root, tmp_path / "cache").load()
    assert len(ds) == 10


def test_options_and_paths(files, tmp_path):
    alt = files / "elsewhere"
    (files / "eeg-imagenet" / "eeg_5_95_std.pth").rename(files / "eeg-imagenet" / "eeg_14_70_std.pth")
    (files / "eeg-imagenet" / "images").rename(alt)
    ds = CVPR40(files, tmp_path / "cache", eeg_file="eeg_14_70_std.pth", images_dir=alt).load()
    assert len(ds) == N_KEPT
    with pytest.raises(ConfigError, match="unknown option"):
        CVPR40(files, tmp_path, n_times=3)
    with pytest.raises(ConfigError, match="split_num"):
        CVPR40(files, tmp_path, split_num=-1)
    with pytest.raises(DataFormatError, match="split_num=1 requested but the file holds 1 split"):
        CVPR40(files, tmp_path / "c2", eeg_file="eeg_14_70_std.pth", images_dir=alt, split_num=1).load()


# ----------------------------------------------------------------------------- bad input
def _rewrite_eeg(root, edit):
    path = Path(root) / "eeg-imagenet" / "eeg_5_95_std.pth"
    data = torch.load(path, weights_only=True)
    edit(data)
    torch.save(data, path)
    return path


def _rewrite_split(root, edit):
    path = Path(root) / "eeg-imagenet" / "block_splits_by_image_all.pth"
    data = torch.load(path, weights_only=True)
    edit(data)
    torch.save(data, path)
    return path


def _first_kept(data):
    return next(i for i, it in enumerate(data["dataset"]) if 450 <= it["eeg"].shape[1] <= 600)


def _truncate(root):
    p = Path(root) / "eeg-imagenet" / "eeg_5_95_std.pth"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p


def _garbage(root):
    p = Path(root) / "eeg-imagenet" / "eeg_5_95_std.pth"
    p.write_bytes(np.random.default_rng(0).bytes(5000))
    return p


def _unsafe(root):
    p = Path(root) / "eeg-imagenet" / "eeg_5_95_std.pth"
    torch.save({"dataset": [], "labels": [], "images": [], "when": datetime.date(2017, 7, 1)}, p)
    return p


def _nan(data):
    data["dataset"][_first_kept(data)]["eeg"][5, 100] = float("nan")


def _inf(data):
    data["dataset"][_first_kept(data)]["eeg"][0, 30] = float("inf")


def _channels(data):
    data["dataset"][3]["eeg"] = data["dataset"][3]["eeg"][:127]


def _missing_image(root):
    data, _ = _raw(root)
    it = data["dataset"][_first_kept(data)]
    p = Path(root) / "eeg-imagenet" / "images" / data["labels"][it["label"]] / f"{data['images'][it['image']]}.JPEG"
    p.unlink()
    return p


def _missing(name):
    def fn(root):
        p = Path(root) / "eeg-imagenet" / name
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
        else:
            p.unlink()
        return p
    return fn


BAD = {
    "missing-eeg-file": (_missing("eeg_5_95_std.pth"), DataNotFoundError, ["missing", "--data-root"]),
    "missing-split-file": (_missing("block_splits_by_image_all.pth"), DataNotFoundError, ["missing"]),
    "missing-images-dir": (_missing("images"), DataNotFoundError, ["missing"]),
    "truncated-pth": (_truncate, DataFormatError, ["truncated or corrupt"]),
    "corrupt-pth": (_garbage, DataFormatError, ["truncated or corrupt"]),
    "needs-arbitrary-objects": (_unsafe, DataFormatError, ["arbitrary Python objects", "datetime",
                                                           "weights_only=True"]),
    "missing-key": (lambda r: _rewrite_eeg(r, lambda d: d.pop("labels")), DataFormatError,
                    ["missing key(s) ['labels']"]),
    "renamed-key": (lambda r: _rewrite_eeg(r, lambda d: d.__setitem__("data", d.pop("dataset"))), DataFormatError,
                    ["missing key(s) ['dataset']", "'data'"]),
    "renamed-item-key": (lambda r: _rewrite_eeg(r, lambda d: d["dataset"][7].__setitem__(
        "signal", d["dataset"][7].pop("eeg"))), DataFormatError, ["dataset[7] lacks key(s) ['eeg']"]),
    "nan": (lambda r: _rewrite_eeg(r, _nan), DataFormatError, ["nan", "channel 5", "sample 100"]),
    "inf": (lambda r: _rewrite_eeg(r, _inf), DataFormatError, ["inf", "channel 0", "sample 30"]),
    "wrong-channel-count": (lambda r: _rewrite_eeg(r, _channels), DataFormatError,
                            ["dataset[3]['eeg'] has 127 channels, expected 128"]),
    "label-out-of-range": (lambda r: _rewrite_eeg(r, lambda d: d["dataset"][2].__setitem__("label", 40)),
                           DataFormatError, ["dataset[2]['label'] = 40"]),
    "split-index-out-of-range": (lambda r: _rewrite_split(r, lambda d: d["splits"][0]["test"].append(N_ITEMS)),
                                 DataFormatError, [f"['test'] index {N_ITEMS} out of range", f"{N_ITEMS} trials"]),
    "split-negative-index": (lambda r: _rewrite_split(r, lambda d: d["splits"][0]["val"].append(-1)),
                             DataFormatError, ["index -1 out of range"]),
    "split-index-twice": (lambda r: _rewrite_split(r, lambda d: d["splits"][0]["test"].append(
        d["splits"][0]["train"][0])), DataFormatError, ["more than once"]),
    "split-missing-part": (lambda r: _rewrite_split(r, lambda d: d["splits"][0].pop("val")), DataFormatError,
                           ["lacks key 'val'"]),
    "split-renamed-key": (lambda r: _rewrite_split(r, lambda d: d.__setitem__("folds", d.pop("splits"))),
                          DataFormatError, ["missing key 'splits'"]),
    "stimulus-image-missing": (_missing_image, DataNotFoundError, ["stimulus image of trial t", "is missing"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_naming_the_file_and_leaves_no_cache(files, tmp_path, case):
    make, error, needles = BAD[case]
    path = make(files)
    cache = tmp_path / "cache"
    with pytest.raises(error) as err:
        CVPR40(files, cache).load()
    _one_line(err.value, path, *needles)
    assert _cache_files(cache) == [], _cache_files(cache)


def test_bad_input_after_a_good_cache_keeps_the_old_entry_whole(files, tmp_path):
    cache = tmp_path / "cache"
    CVPR40(files, cache).load()
    before = _cache_files(cache)
    path = _rewrite_eeg(files, _nan)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(DataFormatError, match="nan"):
        CVPR40(files, cache).load()
    assert _cache_files(cache) == before  # no temporary or partial file, old entry untouched


def test_load_pth_accepts_plain_containers_and_refuses_globals(tmp_path):
    ok = tmp_path / "ok.pth"
    torch.save({"a": [1, "x", torch.zeros(2)]}, ok)
    assert load_pth(ok)["a"][1] == "x"
    bad = tmp_path / "bad.pth"
    torch.save({"a": fractions.Fraction(1, 3)}, bad)
    with pytest.raises(DataFormatError, match=r"arbitrary Python objects \(fractions.Fraction\)"):
        load_pth(bad)
    with pytest.raises(DataNotFoundError, match="missing"):
        load_pth(tmp_path / "none.pth")


def test_verify_detects_changed_bytes_with_same_size_and_mtime(files, tmp_path):
    loader = CVPR40(files, tmp_path / "cache")
    lines = loader.verify()
    assert any("matches the cache manifest" in line or "none recorded" in line for line in lines)
    assert any(f"{N_KEPT} trials" in line for line in lines)
    path = files / "eeg-imagenet" / "block_splits_by_image_all.pth"
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[-30] ^= 0xFF  # same size
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: only the sha256 can tell
    with pytest.raises(DataFormatError) as err:
        CVPR40(files, tmp_path / "cache").verify()
    _one_line(err.value, path, "differs from", "recorded")


def test_a_split_sharing_images_between_train_and_test_is_flagged(files, tmp_path, caplog):
    CVPR40(files, tmp_path / "c1").load()
    assert "stimulus image(s) in train/val and test" not in caplog.text  # the by-image split is clean
    _, splits = _raw(files)
    train0, test0 = splits["splits"][0]["train"][0], splits["splits"][0]["test"][0]

    def share(d):  # the first train trial now shows the first test trial's image
        d["dataset"][train0]["image"] = d["dataset"][test0]["image"]
        d["dataset"][train0]["label"] = d["dataset"][test0]["label"]

    _rewrite_eeg(files, share)
    CVPR40(files, tmp_path / "c2").load()
    assert "stimulus image(s) in train/val and test" in caplog.text
