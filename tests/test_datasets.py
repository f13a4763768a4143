"""Tests of the built-in datasets: ``eegnb-n170``, ``eegnb-p300`` (real Muse CSVs) and ``synthetic``
(``cvpr40`` is in test_cvpr40.py)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eegbench.data import TRIAL_COLUMNS
from eegbench.datasets.eegnb import (
    EEGNotebooksN170,
    EEGNotebooksP300,
    EEGNotebooksVisual,
)
from eegbench.datasets.synthetic import SyntheticEEG
from eegbench.errors import ConfigError, DataFormatError, DataNotFoundError

DATA_ROOT = Path(os.environ.get("EEGBENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
N170_DIR = DATA_ROOT / "eeg-notebooks" / "data" / "visual" / "N170"
needs_n170 = pytest.mark.skipif(
    not N170_DIR.is_dir(), reason=f"eeg-notebooks N170 data absent under {DATA_ROOT} (set EEGBENCH_DATA)"
)
SHORT_RUN = "subject10/session1/recording_2018-06-06-15.06.45.csv.csv"  # 6,180 samples, 28 events
DUPLICATE = ("subject3/session2/data_2018-05-14-19.38.10.csv", "subject3/session1/data_2018-05-14-19.38.10.csv")
STIM = Path("eeg-notebooks/notebooks/stimulus_presentation/stim/face_house")


@pytest.fixture(scope="session")
def n170(tmp_path_factory):
    """(loader, dataset, seconds) of the real N170 data, loaded once per session into a tmp cache.

    The cache folder sits at a fixed place under the session's base temp dir, so test_splits.py
    reuses it (a cache hit) when both files run in one session.
    """
    if not N170_DIR.is_dir():
        pytest.skip(f"eeg-notebooks N170 data absent under {DATA_ROOT} (set EEGBENCH_DATA)")
    loader = EEGNotebooksN170(DATA_ROOT, tmp_path_factory.getbasetemp() / "eegnb-n170-cache")
    t0 = time.perf_counter()
    dataset = loader.load()
    return loader, dataset, time.perf_counter() - t0


def _muse_csv(n_samples: int = 3000, every: int = 100, seed: int = 0, marker: str = "Marker0") -> str:
    """A small Muse-format CSV (µV values) with alternating house/face markers every ``every`` samples."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "timestamps": 1000.0 + np.arange(n_samples) / 256.0,
        **{ch: rng.normal(0, 20, n_samples).round(3) for ch in ("TP9", "AF7", "AF8", "TP10", "Right AUX")},
    })
    codes = np.zeros(n_samples, dtype=int)
    codes[every::every] = np.where(np.arange(len(codes[every::every])) % 2 == 0, 1, 2)
    frame[marker] = codes
    return frame.to_csv(index=False)


def _make_tree(root: Path, files: dict[str, str | bytes], n_images: int = 2) -> Path:
    """eeg-notebooks layout under ``root`` with the given N170 CSVs and tiny stimulus JPEGs."""
    from PIL import Image

    for rel, content in files.items():
        path = root / "eeg-notebooks/data/visual/N170" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for folder, grey in (("faces", 90), ("houses", 180)):
        d = root / STIM / folder
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_images):
            Image.new("L", (40, 40), grey + i).save(d / f"{folder[:-1]}{i}.jpg")
    return root


# ----------------------------------------------------------------------------- real N170 data
@needs_n170
def test_n170_shapes_dtype_units(n170):
    _, ds, _ = n170
    info = ds.info
    assert ds.eeg.dtype == np.float32 and ds.eeg.shape == (len(ds), 4, 180)
    assert (info.name, info.n_chans, info.n_times, info.sfreq, info.unit) == ("eegnb-n170", 4, 180, 256.0, "V")
    assert info.ch_names == ("TP9", "AF7", "AF8", "TP10")
    assert info.class_names == ("house", "face") and info.image_size == 256
    assert info.tmin == pytest.approx(-26 / 256)
    assert "Haxby" in info.citation and "CC BY-SA 3.0" in info.licence and "BSD-3-Clause" in info.licence
    assert list(ds.trials.columns) == list(TRIAL_COLUMNS)
    assert np.isfinite(ds.eeg).all()
    # volts, not µV: typical per-trial std of scalp EEG is a few to tens of µV
    median_std = float(np.median(ds.eeg.std(axis=-1)))
    assert 1e-6 < median_std < 1e-4, median_std
    # baseline correction: the pre-stimulus mean (first 27 samples, up to onset) is zero per channel
    assert np.abs(ds.eeg[:, :, :27].mean(axis=-1)).max() < 1e-9


@needs_n170
def test_n170_counts_match_marker_events(n170):
    """Trials = marker events of the unique files whose −26…+153 sample window fits in the file."""
    loader, ds, _ = n170
    assert sorted(set(ds.trials["subject"])) == [1, 2, 3, 10, 11]
    assert len(loader.recordings) == 18  # 19 CSVs, one byte-identical copy
    expected = {}
    for path in loader.recordings:
        markers = pd.read_csv(path, usecols=["Marker0"])["Marker0"].to_numpy()
        onsets = np.flatnonzero(markers)
        fits = (onsets - 26 >= 0) & (onsets + 153 <= len(markers) - 1)
        for code in (1, 2):
            expected[(path.relative_to(N170_DIR).as_posix(), code - 1)] = int((fits & (markers[onsets] == code)).sum())
    got = ds.trials.groupby(["recording", "label"]).size().to_dict()
    assert {k: v for k, v in expected.items() if v} == got
    per_class = ds.trials["label"].value_counts().to_dict()
    assert 1250 < per_class[0] <= 1413 and 1200 < per_class[1] <= 1370
    assert ds.trials["recording"].nunique() == 15  # three subject-10 runs hold one marker on sample 0


@needs_n170
def test_n170_trial_ids_and_images(n170):
    _, ds, _ = n170
    t = ds.trials
    assert t["trial_id"].is_unique
    row = t.iloc[0]
    assert row["trial_id"].startswith("s01/ses1/data_2017-09-13-15.30.01/e")
    assert row["recording"] == "subject1/session1/data_2017-09-13-15.30.01.csv"
    assert len(ds.stimuli) == 96
    assert sum(v == 1 for v in ds.stimuli.labels.values()) == 48
    # every trial shows a photo of its own class, chosen by sha256(trial_id) over the sorted photo list
    photos = {c: sorted(i for i, lab in ds.stimuli.labels.items() if lab == c) for c in (0, 1)}
    for tid, lab, img in t[["trial_id", "label", "image_id"]].itertuples(index=False):
        assert img == photos[lab][int(hashlib.sha256(tid.encode()).hexdigest(), 16) % 48]
    assert t["image_id"].nunique() == 96  # 2,581 trials cover every photo
    images = ds.subset(list(t["trial_id"][:3])).images()
    assert images.dtype == np.uint8 and images.shape == (3, 3, 256, 256)


@needs_n170
def test_n170_duplicate_recording_counted_once(n170):
    loader, ds, _ = n170
    dropped, kept = DUPLICATE
    assert [(d.relative_to(N170_DIR).as_posix(), k.relative_to(N170_DIR).as_posix())
            for d, k in loader.duplicates] == [(dropped, kept)]
    recordings = set(ds.trials["recording"])
    assert kept in recordings and dropped not in recordings


@needs_n170
def test_n170_second_load_is_cached_fast_and_identical(n170, monkeypatch):
    loader, ds, _ = n170

    def fail(*args, **kwargs):
        raise AssertionError("MNE epoching ran on a cache hit")

    monkeypatch.setattr(EEGNotebooksVisual, "epoch_recording", fail)
    again = EEGNotebooksN170(DATA_ROOT, loader.cache_root.parent)
    t0 = time.perf_counter()
    ds2 = again.load()
    elapsed = time.perf_counter() - t0
    assert again.cache_hit is True
    assert elapsed < 1.0, f"cached load took {elapsed:.2f} s"
    np.testing.assert_array_equal(ds.eeg, ds2.eeg)
    pd.testing.assert_frame_equal(ds.trials, ds2.trials)
    assert ds.info == ds2.info


@needs_n170
def test_n170_cache_invalidated_when_a_file_changes(tmp_path):
    src = N170_DIR / SHORT_RUN
    root = _make_tree(tmp_path / "data", {SHORT_RUN: src.read_bytes(), "subject2/session1/extra.csv": _muse_csv()})
    cache = tmp_path / "cache"
    calls = []
    real = EEGNotebooksVisual.epoch_recording

    def counting(self, eeg, events):
        calls.append(len(events))
        return real(self, eeg, events)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EEGNotebooksVisual, "epoch_recording", counting)
        first = EEGNotebooksN170(root, cache)
        ds1 = first.load()
        assert first.cache_hit is False and len(calls) == 2
        second = EEGNotebooksN170(root, cache)
        ds2 = second.load()
        assert second.cache_hit is True and len(calls) == 2
        np.testing.assert_array_equal(ds1.eeg, ds2.eeg)
        # change one value in the real file: the cache must be rebuilt
        path = root / "eeg-notebooks/data/visual/N170" / SHORT_RUN
        frame = pd.read_csv(path)
        frame.loc[3000, "TP9"] += 500.0
        path.write_text(frame.to_csv(index=False))
        third = EEGNotebooksN170(root, cache)
        ds3 = third.load()
        assert third.cache_hit is False and len(calls) == 4
    assert ds3.eeg.shape == ds1.eeg.shape and not np.array_equal(ds3.eeg, ds1.eeg)
    assert len(list((cache / "eegnb-n170").glob("eeg-*.npz"))) == 1  # the stale entry is removed
    assert not list((cache / "eegnb-n170").glob("*.tmp"))  # no temporary files left behind


@needs_n170
def test_real_file_copies_are_deduplicated(tmp_path):
    content = (N170_DIR / SHORT_RUN).read_bytes()
    root = _make_tree(tmp_path, {"subject10/session1/a.csv": content, "subject10/session2/b.csv.csv": content})
    loader = EEGNotebooksN170(root, tmp_path / "cache")
    ds = loader.load()
    assert set(ds.trials["recording"]) == {"subject10/session1/a.csv"}
    assert len(ds) == 28 and len(loader.duplicates) == 1


# ----------------------------------------------------------------------------- real P300 data
P300_DIR = DATA_ROOT / "eeg-notebooks" / "data" / "visual" / "P300"
CATS_DOGS = Path("eeg-notebooks/notebooks/stimulus_presentation/stim/cats_dogs")


@pytest.fixture(scope="session")
def p300(tmp_path_factory):
    """(loader, dataset) of the real P300 data; same cache place as test_splits.py uses."""
    if not P300_DIR.is_dir():
        pytest.skip(f"eeg-notebooks P300 data absent under {DATA_ROOT} (set EEGBENCH_DATA)")
    loader = EEGNotebooksP300(DATA_ROOT, tmp_path_factory.getbasetemp() / "eegnb-p300-cache")
    return loader, loader.load()


def test_p300_shapes_classes_and_unbalanced_counts(p300):
    loader, ds = p300
    info = ds.info
    assert ds.eeg.dtype == np.float32 and ds.eeg.shape == (len(ds), 4, 180)
    assert (info.name, info.unit, info.sfreq, info.class_names) == ("eegnb-p300", "V", 256.0, ("dog", "cat"))
    assert info.subjects == (1, 2, 3, 4, 5) and "CC0" in info.licence
    assert len(loader.recordings) == 45 and not loader.duplicates
    # every marker-1 (dog) / marker-2 (cat) onset whose window fits: 7,281 dog + 1,373 cat events in the files
    counts = ds.trials["label"].value_counts().to_dict()
    assert 7200 <= counts[0] <= 7281 and 1350 <= counts[1] <= 1373
    assert counts[0] > 5 * counts[1]  # the oddball design: cats (targets) are rare
    assert np.isfinite(ds.eeg).all()


def test_p300_reads_both_marker_column_names(p300):
    """2017 runs name the marker column ``Marker``, 2018 runs ``Marker0``; both contribute trials."""
    _, ds = p300
    recs = set(ds.trials["recording"])
    assert "subject1/session1/data_2017-02-04-15_45_13.csv" in recs  # Marker
    assert "subject3/session1/data_2018-04-15-17.31.22.csv" in recs  # Marker0


def test_p300_stimuli_cats_are_targets_dogs_nontargets(p300):
    _, ds = p300
    for image_id, path in ds.stimuli.paths.items():
        cls = image_id.split("/")[0]
        assert path.name.startswith("target-" if cls == "cat" else "nontarget-"), (image_id, path)
        assert ds.stimuli.labels[image_id] == (1 if cls == "cat" else 0)
    assert len(ds.stimuli) == 8
    labels = ds.trials["label"].to_numpy()
    assert all(ds.stimuli.labels[i] == lab for i, lab in zip(ds.trials["image_id"], labels))


def _make_p300_tree(root: Path, files: dict[str, str]) -> Path:
    from PIL import Image

    for rel, content in files.items():
        path = root / "eeg-notebooks/data/visual/P300" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    d = root / CATS_DOGS
    d.mkdir(parents=True, exist_ok=True)
    for name, grey in (("target-1.jpg", 60), ("nontarget-1.jpg", 200)):
        Image.new("L", (40, 40), grey).save(d / name)
    return root


def test_p300_generated_tree_labels_and_marker_errors(tmp_path):
    root = _make_p300_tree(tmp_path / "ok", {"subject1/session1/a.csv": _muse_csv(marker="Marker")})
    ds = EEGNotebooksP300(root, tmp_path / "cache").load()
    assert len(ds) == 28 and ds.trials["label"].tolist()[:4] == [0, 1, 0, 1]  # 1 = dog = 0, 2 = cat = 1
    assert set(ds.trials["image_id"]) == {"dog/nontarget-1", "cat/target-1"}
    bad = _make_p300_tree(tmp_path / "bad", {"subject1/session1/a.csv": _muse_csv(marker="Stim")})
    with pytest.raises(DataFormatError) as err:
        EEGNotebooksP300(bad, tmp_path / "cache2").load()
    _assert_one_line(err.value, "a.csv", "Marker or Marker0")
    assert not (tmp_path / "cache2").exists()


# ----------------------------------------------------------------------------- tmp trees
def test_generated_tree_loads_with_expected_epochs(tmp_path):
    # 3000 samples, markers every 100 from 100: window -26..+153 fits for onsets 100..2800 -> 28 epochs
    root = _make_tree(tmp_path, {"subject7/session2/run.csv.csv": _muse_csv()})
    ds = EEGNotebooksN170(root, tmp_path / "cache").load()
    assert len(ds) == 28 and ds.eeg.shape == (28, 4, 180)
    assert (ds.trials["subject"] == 7).all() and (ds.trials["session"] == 2).all()
    assert ds.trials["trial_id"].iloc[0] == "s07/ses2/run/e0000"
    assert ds.trials["label"].tolist()[:4] == [0, 1, 0, 1]  # marker 1 = house = 0, marker 2 = face = 1
    assert set(ds.trials["image_id"]) <= set(ds.stimuli.paths)


def _assert_one_line(exc: Exception, *needles: str) -> str:
    msg = str(exc)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


def test_missing_root_names_path_and_how_to_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as err:
        EEGNotebooksN170(missing, tmp_path / "cache").load()
    _assert_one_line(err.value, str(missing), "--data-root", "EEGBENCH_DATA", "eeg-notebooks")


def test_no_csv_files_is_data_not_found(tmp_path):
    root = _make_tree(tmp_path, {})
    (root / "eeg-notebooks/data/visual/N170").mkdir(parents=True)
    with pytest.raises(DataNotFoundError) as err:
        EEGNotebooksN170(root, tmp_path / "cache").load()
    _assert_one_line(err.value, "subject*", "EEGBENCH_DATA")


def test_missing_stimulus_folder_is_data_not_found(tmp_path):
    root = _make_tree(tmp_path, {"subject1/session1/a.csv": _muse_csv()})
    shutil.rmtree(root / STIM / "faces")
    with pytest.raises(DataNotFoundError) as err:
        EEGNotebooksN170(root, tmp_path / "cache").load()
    _assert_one_line(err.value, str(root / STIM / "faces"), "--data-root")


def test_n170_rejects_options(tmp_path):
    with pytest.raises(ConfigError, match="takes no options"):
        EEGNotebooksN170(tmp_path, tmp_path, n_times=10)


def test_required_files_lists_recordings_and_stimuli(tmp_path):
    req = EEGNotebooksN170(tmp_path).required_files()
    assert req[0] == tmp_path / "eeg-notebooks/data/visual/N170/subject*/session*/*.csv"
    assert set(req[1:]) == {tmp_path / STIM / "faces", tmp_path / STIM / "houses"}


@pytest.mark.parametrize(
    "content, needle",
    [
        (_muse_csv(400, marker="Marker1"), "Marker0"),                  # no marker column
        (b"", "empty"),                                                  # empty file
        (_muse_csv(400).replace(",0\n", ",x\n", 3), "'x'"),  # non-numeric marker
        (_muse_csv(400).replace("\n1000.00390625,", "\n1000.00390625,abc", 1), "TP9"),  # non-numeric EEG cell
        ("timestamps,TP9,AF7,AF8,TP10,Right AUX,Marker0\n", "no samples"),  # header only
        (re.sub(r"\n(1000\.00390625),[^,]*,", r"\n\1,nan,", _muse_csv(400), count=1), "value nan is not"),
        (re.sub(r"\n(1000\.00390625),[^,]*,", r"\n\1,-inf,", _muse_csv(400), count=1), "value -inf is not"),
        (_muse_csv(400).replace("AF8,", "AF9,", 1), "['AF8']"),  # a channel missing (wrong channel set)
    ],
    ids=["no-marker-column", "empty", "non-numeric-marker", "non-numeric-eeg", "header-only", "nan", "inf",
         "missing-channel"],
)
def test_bad_csv_is_data_format_error_naming_the_file(tmp_path, content, needle):
    root = _make_tree(tmp_path, {"subject1/session1/good.csv": _muse_csv(), "subject1/session1/bad.csv": content})
    with pytest.raises(DataFormatError) as err:
        EEGNotebooksN170(root, tmp_path / "cache").load()
    _assert_one_line(err.value, str(root / "eeg-notebooks/data/visual/N170/subject1/session1/bad.csv"), needle)
    assert not (tmp_path / "cache").exists()  # nothing cached from a failed load


def test_bad_folder_layout_is_data_format_error(tmp_path):
    root = _make_tree(tmp_path, {"subjectA/session1/a.csv": _muse_csv()})
    with pytest.raises(DataFormatError, match="subject<N>/session<K>"):
        EEGNotebooksN170(root, tmp_path / "cache").load()


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_defaults_shapes_and_units(tmp_path):
    ds = SyntheticEEG(cache_dir=tmp_path).load()
    assert ds.eeg.shape == (3 * 3 * 16, 4, 64) and ds.eeg.dtype == np.float32
    assert ds.info.unit == "V" and ds.info.n_classes == 2 and ds.info.sfreq == 128.0
    assert 1e-6 < float(ds.eeg.std()) < 1e-4
    assert sorted(set(ds.trials["subject"])) == [1, 2, 3] and ds.trials["recording"].nunique() == 9
    assert (ds.trials.groupby("recording")["label"].value_counts() == 8).all()  # balanced per recording
    assert SyntheticEEG().required_files() == []
    images = ds.images()
    assert images.shape == (len(ds), 3, 64, 64) and images.dtype == np.uint8
    # image of each trial belongs to the trial's class
    assert all(ds.stimuli.labels[i] == lab for i, lab in zip(ds.trials["image_id"], ds.trials["label"]))
    assert len(list(tmp_path.glob("synthetic/*/images/*.png"))) == 8


def test_synthetic_is_deterministic_for_a_seed(tmp_path):
    a = SyntheticEEG(cache_dir=tmp_path / "a", seed=3).load()
    b = SyntheticEEG(cache_dir=tmp_path / "b", seed=3).load()
    c = SyntheticEEG(cache_dir=tmp_path / "c", seed=4).load()
    np.testing.assert_array_equal(a.eeg, b.eeg)
    pd.testing.assert_frame_equal(a.trials, b.trials)
    np.testing.assert_array_equal(a.images(), b.images())
    assert not np.allclose(a.eeg, c.eeg)
    # a second load reusing the written images gives the same dataset
    a2 = SyntheticEEG(cache_dir=tmp_path / "a", seed=3).load()
    np.testing.assert_array_equal(a.eeg, a2.eeg)
    pd.testing.assert_frame_equal(a.trials, a2.trials)


def test_synthetic_class_signal_is_learnable(tmp_path):
    gen = SyntheticEEG(cache_dir=tmp_path, n_classes=3, n_trials=30, seed=1)
    ds = gen.load()
    freqs = np.fft.rfftfreq(ds.info.n_times, 1 / ds.info.sfreq)
    power = (np.abs(np.fft.rfft(ds.eeg, axis=-1)) ** 2).mean(axis=1)
    bins = [int(np.argmin(np.abs(freqs - f))) for f in gen.class_freqs()]
    accuracy = float((power[:, bins].argmax(axis=1) == ds.labels).mean())
    assert accuracy > 0.85, accuracy


def test_synthetic_options_are_validated():
    with pytest.raises(ConfigError, match="did you mean 'n_trials'"):
        SyntheticEEG(n_trail=4)
    with pytest.raises(ConfigError, match="n_chans"):
        SyntheticEEG(n_chans="four")
    with pytest.raises(ConfigError, match="n_classes"):
        SyntheticEEG(n_classes=1)
    with pytest.raises(ConfigError, match="0.4"):
        SyntheticEEG(n_classes=20)
    assert SyntheticEEG(n_chans="8").options.n_chans == 8


def test_corrupt_cache_is_rebuilt(tmp_path):
    root = _make_tree(tmp_path, {"subject1/session1/a.csv": _muse_csv()})
    first = EEGNotebooksN170(root, tmp_path / "cache").load()
    for npz in (tmp_path / "cache" / "eegnb-n170").glob("eeg-*.npz"):
        npz.write_bytes(b"not a zip file")
    loader = EEGNotebooksN170(root, tmp_path / "cache")
    again = loader.load()
    assert loader.cache_hit is False
    np.testing.assert_array_equal(first.eeg, again.eeg)
    third = EEGNotebooksN170(root, tmp_path / "cache")
    third.load()
    assert third.cache_hit is True  # the rebuilt entry is valid again
