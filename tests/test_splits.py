"""Tests of the settings (eegbench.splits): recording-level splits on the real N170 and P300 data and on
synthetic data; the official image-disjoint split of ``cvpr40`` on files written in its exact format."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eegbench import splits
from eegbench.datasets.cvpr40 import CVPR40, write_synthetic_files
from eegbench.datasets.eegnb import EEGNotebooksN170, EEGNotebooksP300
from eegbench.datasets.synthetic import SyntheticEEG
from eegbench.errors import ConfigError

DATA_ROOT = Path(os.environ.get("EEGBENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
N170_DIR = DATA_ROOT / "eeg-notebooks" / "data" / "visual" / "N170"
P300_DIR = DATA_ROOT / "eeg-notebooks" / "data" / "visual" / "P300"
REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "multi-subject": splits.multi_subject,
    "single-subject": splits.single_subject,
    "cross-subject": splits.cross_subject,
}


@pytest.fixture(scope="session")
def n170_cache(tmp_path_factory):
    """Cache folder of the N170 epochs; the same place as in test_datasets.py, so one session epochs once."""
    return tmp_path_factory.getbasetemp() / "eegnb-n170-cache"


@pytest.fixture(scope="session")
def n170_dataset(n170_cache):
    """Real N170 data, epoched once per session."""
    if not N170_DIR.is_dir():
        pytest.skip(f"eeg-notebooks N170 data absent under {DATA_ROOT} (set EEGBENCH_DATA)")
    return EEGNotebooksN170(DATA_ROOT, n170_cache).load()


@pytest.fixture(scope="session")
def p300_dataset(tmp_path_factory):
    """Real P300 cats/dogs data, epoched once per session."""
    if not P300_DIR.is_dir():
        pytest.skip(f"eeg-notebooks P300 data absent under {DATA_ROOT} (set EEGBENCH_DATA)")
    return EEGNotebooksP300(DATA_ROOT, tmp_path_factory.getbasetemp() / "eegnb-p300-cache").load()


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory):
    return SyntheticEEG(cache_dir=tmp_path_factory.mktemp("synthetic")).load()


@pytest.fixture(params=["n170", "p300", "synthetic"])
def dataset(request):
    return request.getfixturevalue(f"{request.param}_dataset")


def _valid_cases(ds):
    """(setting, subject) pairs that must succeed: subjects with >= 2 recordings for single-subject."""
    recs = ds.trials.groupby("subject")["recording"].nunique()
    cases = [("multi-subject", None)]
    cases += [("single-subject", int(s)) for s, n in recs.items() if n >= 2]
    cases += [("cross-subject", int(s)) for s in recs.index]
    return cases


def _make(ds, setting, subject, **kw):
    fn = SETTINGS[setting]
    return fn(ds, **kw) if subject is None else fn(ds, subject=subject, **kw)


def _recordings(ds, ids):
    t = ds.trials.set_index("trial_id")
    return set(t.loc[list(ids), "recording"])


def _subjects(ds, ids):
    t = ds.trials.set_index("trial_id")
    return set(int(s) for s in t.loc[list(ids), "subject"])


def _joint_test_ids(ds, rows):
    """Test ids of the joint recording assignment used before validation became per subject."""
    trials = ds.trials[rows]
    counts = trials.groupby("recording").size().to_dict()
    fractions = splits.SPLIT_FRACTIONS if len(counts) >= 5 else {"train": 0.8, "test": 0.2}
    test_recs = splits.assign_recordings(counts, fractions, 0)["test"]
    return set(trials.loc[trials["recording"].isin(test_recs), "trial_id"])


def _check_val_rule(ds, sp):
    """Every training subject has val trials, made from its non-test recordings by the documented rule."""
    t = ds.trials.set_index("trial_id")
    test_recs = _recordings(ds, sp.test)
    train, val = set(sp.train), set(sp.val)
    assert not train & val and not _recordings(ds, sp.val) & test_recs
    assert _subjects(ds, sp.train) == _subjects(ds, sp.val), sp.sizes()
    for s in _subjects(ds, sp.train):
        mine = t[(t["subject"] == s) & ~t["recording"].isin(test_recs)]
        by_rec = {r: list(g.index) for r, g in mine.groupby("recording", sort=False)}
        order = splits._stable_order(list(by_rec), 0)
        m = int(len(order) * 0.125)  # floor
        if 1 <= m < len(order):  # whole recordings
            assert {i for r in order[:m] for i in by_rec[r]} == val & set(mine.index), s
            assert {i for r in order[m:] for i in by_rec[r]} == train & set(mine.index), s
        else:  # the tail of every recording
            for r, ids in by_rec.items():
                k = min(max(int(len(ids) * 0.125 + 0.5), 1), len(ids) - 1) if len(ids) >= 2 else 0
                assert set(ids[len(ids) - k:]) == val & set(ids) and set(ids[:len(ids) - k]) <= train, (s, r)


def test_no_recording_shared_between_parts(dataset):
    ds = dataset
    position = {t: i for i, t in enumerate(ds.trials["trial_id"])}
    for setting, subject in _valid_cases(ds):
        sp = _make(ds, setting, subject)
        train, val, test = (_recordings(ds, getattr(sp, p)) for p in ("train", "val", "test"))
        assert not train & test and not val & test, (setting, subject)
        shared = train & val
        if shared:
            # only the documented tail hold-out: val is the last trials of those training recordings
            # (val is made per subject, so whole val recordings of one subject may sit beside the
            # tails of another's: ``val <= train`` no longer holds as a whole)
            t = ds.trials.set_index("trial_id")
            for rec in shared:
                tr = [position[i] for i in sp.train if t.at[i, "recording"] == rec]
                va = [position[i] for i in sp.val if t.at[i, "recording"] == rec]
                assert max(tr) < min(va), (setting, subject, rec)
                # 12.5 % of the recording, rounded half up, at least 1 and leaving 1 for train
                # (the tail hold-out was 10 % with round() when val was assigned jointly)
                n = len(tr) + len(va)
                assert len(va) == min(max(int(n * 0.125 + 0.5), 1), n - 1), (setting, subject, rec)


def test_parts_are_disjoint_and_cover_the_intended_trials(dataset):
    ds = dataset
    for setting, subject in _valid_cases(ds):
        sp = _make(ds, setting, subject)
        train, val, test = set(sp.train), set(sp.val), set(sp.test)
        assert len(train) == len(sp.train) and len(val) == len(sp.val) and len(test) == len(sp.test)
        assert not (train & val or train & test or val & test), (setting, subject)
        assert train and val and test, (setting, subject, sp.sizes())
        if setting == "single-subject":
            intended = set(ds.trials.loc[ds.trials["subject"] == subject, "trial_id"])
        else:
            intended = set(ds.trials["trial_id"])
        assert train | val | test == intended, (setting, subject)
        if setting == "cross-subject":
            assert test == set(ds.trials.loc[ds.trials["subject"] == subject, "trial_id"])
            subjects = ds.trials.set_index("trial_id").loc[list(train | val), "subject"]
            assert subject not in set(subjects)


def test_every_training_subject_has_validation_trials(dataset):
    ds = dataset
    for setting, subject in _valid_cases(ds):
        sp = _make(ds, setting, subject)
        _check_val_rule(ds, sp)
        assert sp == _make(ds, setting, subject), (setting, subject)  # deterministic
    # multi-subject: every subject with a non-test recording trains and validates
    sp = splits.multi_subject(ds)
    assert _subjects(ds, sp.val) == set(int(s) for s in ds.subjects) - (
        _subjects(ds, sp.test) - _subjects(ds, sp.train))


def test_test_recordings_are_those_of_the_joint_assignment(dataset):
    """Per-subject validation leaves the test part (and the hash of its ids) as it was."""
    ds = dataset
    for setting, subject in _valid_cases(ds):
        sp = _make(ds, setting, subject)
        if setting == "multi-subject":
            expected = _joint_test_ids(ds, np.ones(len(ds), dtype=bool))
        elif setting == "single-subject":
            expected = _joint_test_ids(ds, ds.subjects == subject)
        else:
            expected = set(ds.trials.loc[ds.trials["subject"] == subject, "trial_id"])
        assert set(sp.test) == expected, (setting, subject)


def test_whole_recording_and_tail_validation_on_unequal_subjects(tmp_path):
    """Subjects with many, few and a single recording: whole recordings vs. the tail hold-out."""
    full = SyntheticEEG(cache_dir=tmp_path, n_recordings=8, n_trials=8).load()
    t = full.trials
    keep = ((t["subject"] == 1) | ((t["subject"] == 2) & t["recording"].isin([f"subject2/rec{r}" for r in (1, 2, 3)]))
            | (t["recording"] == "subject3/rec1"))
    ds = full.subset(list(t.loc[keep, "trial_id"]))
    cases = [("multi-subject", None), ("single-subject", 1), ("single-subject", 2),
             *[("cross-subject", s) for s in (1, 2, 3)]]
    for setting, subject in cases:
        sp = _make(ds, setting, subject)
        _check_val_rule(ds, sp)
        mine = ds.trials["subject"] == subject if setting == "single-subject" else np.ones(len(ds), dtype=bool)
        assert set(sp.train) | set(sp.val) | set(sp.test) == set(ds.trials.loc[mine, "trial_id"]), (setting, subject)
    # cross-subject 3: subject 1's 8 recordings give 1 whole val recording, subject 2's 3 a tail each
    sp = splits.cross_subject(ds, subject=3)
    t = ds.trials.set_index("trial_id")
    val1 = t.loc[[i for i in sp.val if t.at[i, "subject"] == 1], "recording"]
    assert val1.nunique() == 1 and len(val1) == 8 and not set(val1) & _recordings(ds, sp.train)
    val2 = t.loc[[i for i in sp.val if t.at[i, "subject"] == 2], "recording"]
    assert val2.value_counts().to_dict() == {f"subject2/rec{r}": 1 for r in (1, 2, 3)}


def test_tail_hold_out_edge_cases():
    import pandas as pd

    def split(sizes):  # one subject, recordings "r0", "r1", ... with the given trial counts
        rows = [(f"r{r}-t{i}", 1, f"r{r}") for r, n in enumerate(sizes) for i in range(n)]
        return splits._train_val_per_subject(pd.DataFrame(rows, columns=["trial_id", "subject", "recording"]), 0)

    assert split([1]) == {"train": ["r0-t0"], "val": []}  # a single trial: nothing to hold out
    assert split([2]) == {"train": ["r0-t0"], "val": ["r0-t1"]}  # at least one val trial
    assert len(split([4])["val"]) == 1 and len(split([12])["val"]) == 2  # 0.5 and 1.5 round up
    assert len(split([28])["val"]) == 4 and len(split([192])["val"]) == 24
    ids = split([1, 1, 1])  # only 1-trial recordings: one of them whole to val
    assert len(ids["val"]) == 1 and len(ids["train"]) == 2
    ids = split([5, 5, 5, 5])  # 4 recordings: floor(4 * 0.125) = 0 whole recordings, the tail of each
    assert len(ids["val"]) == 4 and len({i.split("-")[0] for i in ids["val"]}) == 4
    ids = split([5] * 8)  # 8 recordings: floor(8 * 0.125) = 1 whole recording
    assert len(ids["val"]) == 5 and len({i.split("-")[0] for i in ids["val"]}) == 1
    assert splits.VAL_FRACTION_OF_NON_TEST == splits.SPLIT_FRACTIONS["val"] / 0.8


@pytest.mark.skipif(not N170_DIR.is_dir(), reason=f"eeg-notebooks N170 data absent under {DATA_ROOT}")
def test_n170_validation_covers_every_training_subject(n170_cache):
    from eegbench.datasets.info import make_loader
    from eegbench.plugins import get_plugin_manager

    ds = make_loader("eegnb-n170", DATA_ROOT, n170_cache, {}, plugins=get_plugin_manager()).load()
    sp = splits.multi_subject(ds)
    # joint assignment (before): val = subjects 2 and 3 only, train = 1, 2, 3, 10, 11
    assert _subjects(ds, sp.train) == _subjects(ds, sp.val) == {1, 2, 3, 10, 11}
    assert set(sp.test) == _joint_test_ids(ds, np.ones(len(ds), dtype=bool))
    assert not _recordings(ds, sp.val) & _recordings(ds, sp.test) and not set(sp.train) & set(sp.val)
    _check_val_rule(ds, sp)
    for s in (1, 2, 3, 10, 11):
        sp = splits.cross_subject(ds, subject=s)
        assert _subjects(ds, sp.train) == _subjects(ds, sp.val) == {1, 2, 3, 10, 11} - {s}


def test_multi_subject_fractions_and_classes(dataset):
    ds = dataset
    sp = splits.multi_subject(ds)
    sizes = sp.sizes()
    n = len(ds)
    assert sizes["train"] > sizes["test"] > 0 and sizes["val"] > 0
    assert 0.55 < sizes["train"] / n < 0.8 and 0.1 < sizes["test"] / n < 0.3
    labels = ds.trials.set_index("trial_id")["label"]
    for part in ("train", "val", "test"):
        assert set(labels.loc[list(getattr(sp, part))]) == set(range(ds.info.n_classes)), part


def test_split_hash_is_deterministic_and_distinguishes_splits(dataset):
    ds = dataset
    hashes = {}
    for setting, subject in _valid_cases(ds):
        a, b = _make(ds, setting, subject), _make(ds, setting, subject)
        assert a == b and a.sha256 == b.sha256 == splits.split_hash(a)
        assert len(a.sha256) == 64 and a.to_dict()["sha256"] == a.sha256
        hashes[(setting, subject)] = a.sha256
    assert len(set(hashes.values())) == len(hashes)  # every setting/subject has its own split
    # order of trial ids follows the dataset, and another split seed gives another assignment
    sp = splits.multi_subject(ds)
    order = {t: i for i, t in enumerate(ds.trials["trial_id"])}
    assert [order[t] for t in sp.train] == sorted(order[t] for t in sp.train)
    assert splits.multi_subject(ds, split_seed=1).sha256 != sp.sha256


def test_split_is_identical_after_reloading_the_dataset(tmp_path, synthetic_dataset, request):
    again = SyntheticEEG(cache_dir=tmp_path).load()
    assert splits.multi_subject(again).sha256 == splits.multi_subject(synthetic_dataset).sha256
    if N170_DIR.is_dir():
        n170 = request.getfixturevalue("n170_dataset")
        cache = request.getfixturevalue("n170_cache")
        reloaded = EEGNotebooksN170(DATA_ROOT, cache).load()  # from the cache
        for s in (1, 3):
            assert splits.cross_subject(reloaded, subject=s).sha256 == splits.cross_subject(n170, subject=s).sha256


def test_split_hash_stable_across_processes(synthetic_dataset, tmp_path):
    """The assignment uses sha256, not Python's salted hash(): another interpreter agrees."""
    code = (
        "from eegbench.datasets.synthetic import SyntheticEEG; from eegbench import splits; "
        f"d = SyntheticEEG(cache_dir={str(tmp_path)!r}).load(); "
        "print(splits.multi_subject(d).sha256, splits.cross_subject(d, subject=2).sha256)"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO,
                         check=True, timeout=120).stdout.split()
    assert out == [splits.multi_subject(synthetic_dataset).sha256,
                   splits.cross_subject(synthetic_dataset, subject=2).sha256]


def test_bad_subjects_raise_config_error(dataset):
    ds = dataset
    subjects = sorted(set(int(s) for s in ds.subjects))
    with pytest.raises(ConfigError, match="takes no --subject"):
        splits.multi_subject(ds, subject=subjects[0])
    for fn in (splits.single_subject, splits.cross_subject):
        with pytest.raises(ConfigError, match="needs --subject"):
            fn(ds)
        with pytest.raises(ConfigError, match=r"--subject 99: not in dataset .*subjects: \["):
            fn(ds, subject=99)
        with pytest.raises(ConfigError, match="not an integer"):
            fn(ds, subject="abc")
        with pytest.raises(ConfigError, match="not an integer"):
            fn(ds, subject=1.5)
    # a subject id given as a string (CLI/config) is accepted and normalised
    assert splits.cross_subject(ds, subject=str(subjects[0])).options == {"subject": subjects[0]}


@pytest.mark.skipif(not N170_DIR.is_dir(), reason=f"eeg-notebooks N170 data absent under {DATA_ROOT}")
def test_n170_single_recording_subjects_are_rejected(n170_dataset):
    # subjects 10 and 11 have one usable recording each: no recording-level split is possible
    for s in (10, 11):
        with pytest.raises(ConfigError, match=f"--subject {s}: only 1 recording"):
            splits.single_subject(n170_dataset, subject=s)
    sp = splits.single_subject(n170_dataset, subject=2)  # two recordings: train/test + tail validation
    assert _recordings(n170_dataset, sp.val) <= _recordings(n170_dataset, sp.train)


def test_cross_subject_needs_two_subjects(tmp_path):
    ds = SyntheticEEG(cache_dir=tmp_path, n_subjects=1).load()
    with pytest.raises(ConfigError, match="at least two subjects"):
        splits.cross_subject(ds, subject=1)
    assert np.all(ds.subjects == 1)


# ----------------------------------------------------------------------------- cvpr40 official split
@pytest.fixture(scope="module")
def cvpr40(tmp_path_factory):
    """(dataset, raw dataset list, raw split) of made-up perceivelab files: 3 subjects × 4 classes × 10 images."""
    import torch

    root = tmp_path_factory.mktemp("cvpr40")
    paths = write_synthetic_files(root, n_subjects=3, n_classes=4, images_per_class=10, n_out_of_filter=3)
    ds = CVPR40(root, root / "cache").load()
    return (ds, torch.load(paths["eeg_file"], weights_only=True)["dataset"],
            torch.load(paths["split_file"], weights_only=True)["splits"][0])


def _cvpr40_cases(ds):
    subjects = [int(s) for s in ds.info.subjects]
    return [("multi-subject", None), *[(st, s) for st in ("single-subject", "cross-subject") for s in subjects]]


def _images(ds, ids):
    return set(ds.trials.set_index("trial_id").loc[list(ids), "image_id"])


def test_cvpr40_no_stimulus_image_shared_between_train_and_test_in_any_setting(cvpr40):
    ds, _, _ = cvpr40
    for setting, subject in _cvpr40_cases(ds):
        sp = _make(ds, setting, subject)
        train, val, test = (_images(ds, getattr(sp, p)) for p in ("train", "val", "test"))
        assert train and test, (setting, subject)
        assert not train & test and not val & test and not train & val, (setting, subject)
        assert not (set(sp.train) & set(sp.test) or set(sp.val) & set(sp.test)), (setting, subject)


def test_cvpr40_multi_subject_is_the_official_split_after_the_length_filter(cvpr40):
    ds, items, official = cvpr40
    sp = splits.multi_subject(ds)
    for part in ("train", "val", "test"):
        expected = [f"t{i:05d}" for i in official[part] if 450 <= items[i]["eeg"].shape[1] <= 600]
        assert sorted(getattr(sp, part)) == sorted(expected), part
    assert sum(sp.sizes().values()) == len(items) - 3
    assert sp.source == ds.split_source and sp.source.startswith("official: block_splits_by_image_all.pth split 0")
    assert splits.multi_subject(ds, split_seed=7).sha256 == sp.sha256  # never re-split


def test_cvpr40_single_subject_is_the_official_split_intersected_with_the_subject(cvpr40):
    ds, _, _ = cvpr40
    multi = splits.multi_subject(ds)
    subject_of = ds.trials.set_index("trial_id")["subject"]
    for s in ds.info.subjects:
        sp = splits.single_subject(ds, subject=s)
        for part in ("train", "val", "test"):
            assert set(getattr(sp, part)) == {t for t in getattr(multi, part) if subject_of[t] == s}, (s, part)
        # not the 0-999 "_single" quirk: indices are into the full list, never the subject-filtered one
        assert set(subject_of.loc[list(sp.train + sp.val + sp.test)]) == {s}


def test_cvpr40_cross_subject_holds_out_the_subject_and_the_test_images(cvpr40):
    ds, _, _ = cvpr40
    multi = splits.multi_subject(ds)
    subject_of = ds.trials.set_index("trial_id")["subject"]
    for s in ds.info.subjects:
        sp = splits.cross_subject(ds, subject=s)
        assert set(sp.test) == {t for t in multi.test if subject_of[t] == s}
        assert set(sp.train) == {t for t in multi.train if subject_of[t] != s}
        assert set(sp.val) == {t for t in multi.val if subject_of[t] != s}
    hashes = {_make(ds, st, s).sha256 for st, s in _cvpr40_cases(ds)}
    assert len(hashes) == len(_cvpr40_cases(ds))
