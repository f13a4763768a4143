"""``things-eeg2``: files in the exact release format (made-up content, real photos when present)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from conftest import DATA_ROOT
from eegbench.cli import main
from eegbench.datasets.common import load_pickled
from eegbench.datasets.things_eeg2 import ThingsEEG2, concept_name, write_things_eeg2_files
from eegbench.errors import ConfigError, DataFormatError, DataNotFoundError
from eegbench.metrics.retrieval import RETRIEVAL_METRICS
from eegbench.splits import cross_subject, multi_subject, single_subject

PHOTOS = DATA_ROOT / "imagenet-samples"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """2 subjects, 8 training concepts × 10 images × 4 repetitions, 8 test concepts × 80 repetitions."""
    root = tmp_path_factory.mktemp("things")
    write_things_eeg2_files(root, photos=PHOTOS)
    return root


def _load(root, tmp_path, **options):
    loader = ThingsEEG2(root, tmp_path / "cache", **{"val_images": 8, **options})
    return loader, loader.load()


def _raw(root, subject, part):
    return load_pickled(root / "things-eeg2" / "Preprocessed_data_100Hz" / f"sub-{subject:02d}" /
                        f"preprocessed_eeg_{part}.npy")


def test_shapes_units_info_and_zero_shot_split(files, tmp_path):
    _, ds = _load(files, tmp_path)
    info = ds.info
    assert (info.n_chans, info.n_times, info.sfreq, info.tmin, info.unit) == (17, 100, 100.0, -0.2, "a.u.")
    assert ds.eeg.dtype == np.float32 and ds.eeg.shape == (2 * (80 * 4 + 8), 17, 100)
    assert info.n_classes == 16 and info.class_names[0] == "aardvark" and info.stimulus_level == "image"
    assert info.protocol_metrics == RETRIEVAL_METRICS and info.test_eeg == "mean of 80 repetitions"
    t = ds.trials
    assert t["split"].value_counts().to_dict() == {"train": 2 * 72 * 4, "val": 2 * 8 * 4, "test": 2 * 8}
    train_labels = set(t.loc[t["split"] != "test", "label"])
    test_labels = set(t.loc[t["split"] == "test", "label"])
    assert train_labels == set(range(8)) and test_labels == set(range(8, 16))  # zero-shot: disjoint concepts
    # val images are whole images (every repetition), never training images
    val_images = set(t.loc[t["split"] == "val", "image_id"])
    assert len(val_images) == 8 and not val_images & set(t.loc[t["split"] == "train", "image_id"])
    assert len(ds.stimuli) == 88 and ds.images(32).shape == (len(ds), 3, 32, 32)


def test_trials_hold_the_files_repetitions_and_test_means(files, tmp_path):
    _, ds = _load(files, tmp_path)
    train, test = _raw(files, 2, "training")["preprocessed_eeg_data"], _raw(files, 2, "test")["preprocessed_eeg_data"]
    row = ds.trials.index[ds.trials["trial_id"] == "s02-train-00013-r2"][0]
    assert np.array_equal(ds.eeg[row], train[13, 2].astype(np.float32))
    assert ds.trials.loc[row, "image_id"] == "training_images/00002_abacus/abacus_04b"  # event 13 = concept 1, image 3
    row = ds.trials.index[ds.trials["trial_id"] == "s02-test-0005-avg"][0]
    np.testing.assert_allclose(ds.eeg[row], test[5].mean(axis=0), rtol=1e-6, atol=1e-6)


def test_repetition_options_change_trials_and_the_protocol_hash(files, tmp_path):
    from eegbench.protocol import EvalProtocol
    from eegbench.runner import dataset_protocol

    _, avg = _load(files, tmp_path)
    _, single = _load(files, tmp_path, train_trials="average", test_trials="single")
    assert (single.trials["split"] == "test").sum() == 2 * 8 * 80
    assert (single.trials["split"] != "test").sum() == 2 * 80  # one averaged trial per training image
    assert single.info.test_eeg == "single trial"
    assert dataset_protocol(EvalProtocol(), avg.info).hash() != dataset_protocol(EvalProtocol(), single.info).hash()


def test_cache_is_memory_mapped_and_reused(files, tmp_path):
    loader, ds = _load(files, tmp_path)
    assert loader.cache_hit is False
    again, ds2 = _load(files, tmp_path)
    assert again.cache_hit is True and isinstance(ds2.eeg, np.memmap)
    assert np.array_equal(np.asarray(ds.eeg), np.asarray(ds2.eeg)) and ds.trials.equals(ds2.trials)


def test_settings_joint_intra_subject_and_leave_one_subject_out(files, tmp_path):
    _, ds = _load(files, tmp_path)
    joint = multi_subject(ds)
    assert joint.sizes() == {"train": 576, "val": 64, "test": 16} and joint.source.startswith("official")
    intra = single_subject(ds, subject=1)
    assert intra.sizes() == {"train": 288, "val": 32, "test": 8}
    loso = cross_subject(ds, subject=2)
    subj = dict(zip(ds.trials["trial_id"], ds.trials["subject"]))
    assert {subj[t] for t in loso.test} == {2} and {subj[t] for t in loso.train + loso.val} == {1}


def test_the_63_channel_variant_with_nices_untrimmed_times_and_an_npy_container(tmp_path):
    root = tmp_path / "data"
    write_things_eeg2_files(root, n_subjects=1, n_train_concepts=2, n_test_concepts=2, test_reps=3,
                            variant="63ch-250hz", container="npy", dtype="float64")
    path = root / "things-eeg2" / "Preprocessed_data_250Hz" / "sub-01" / "preprocessed_eeg_test.npy"
    obj = load_pickled(path)
    obj["times"] = np.round(np.arange(-50, 250) / 250.0, 6)  # NICE keeps -0.2 … 1.0 s in 'times'
    np.save(path, obj, allow_pickle=True)
    ds = ThingsEEG2(root, tmp_path / "cache", variant="63ch-250hz", val_images=1).load()
    assert (ds.info.n_chans, ds.info.n_times, ds.info.sfreq, ds.info.tmin) == (63, 250, 250.0, 0.0)
    assert ds.info.test_eeg == "mean of 3 repetitions"


def test_missing_files_and_folders_are_one_line_with_the_source(files, tmp_path):
    with pytest.raises(DataNotFoundError, match=r"Preprocessed_data_250Hz: EEG folder is missing .*osf.io/3jk45"):
        ThingsEEG2(files, tmp_path / "c", variant="63ch-250hz").load()
    with pytest.raises(DataNotFoundError, match="sub-07: folder of subject 7 is missing"):
        ThingsEEG2(files, tmp_path / "c", subjects="1,7").load()
    root = tmp_path / "d"
    write_things_eeg2_files(root, n_subjects=1, n_train_concepts=2, n_test_concepts=2, test_reps=2)
    (root / "things-eeg2" / "Preprocessed_data_100Hz" / "sub-01" / "preprocessed_eeg_test.npy").unlink()
    with pytest.raises(DataNotFoundError, match=r"preprocessed_eeg_test.npy: file is missing"):
        ThingsEEG2(root, tmp_path / "c").load()


def _rewrite(root, part, **changes):
    path = root / "things-eeg2" / "Preprocessed_data_100Hz" / "sub-01" / f"preprocessed_eeg_{part}.npy"
    obj = load_pickled(path)
    obj.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del obj[key]
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)
    return path


@pytest.mark.parametrize("case, match", [
    ("channels", "16 channels .* variant 17ch-100hz has 17"),
    ("key", r"missing key\(s\) \['times'\]"),
    ("rank", "expected a float array"),
    ("images", "8 images but .* holds 6"),
    ("nan", "non-finite EEG value at image 3, repetition 0, channel 2, sample 5"),
    ("global", "needs unpickling of the Python object collections.OrderedDict"),
    ("truncated", "truncated or corrupt"),
])
def test_bad_files_are_one_line_errors_and_leave_no_cache(tmp_path, case, match):
    root = tmp_path / "data"
    write_things_eeg2_files(root, n_subjects=1, n_train_concepts=2, n_test_concepts=2, test_reps=2)
    data = load_pickled(root / "things-eeg2" / "Preprocessed_data_100Hz" / "sub-01" /
                        "preprocessed_eeg_training.npy")["preprocessed_eeg_data"]
    path = root / "things-eeg2" / "Preprocessed_data_100Hz" / "sub-01" / "preprocessed_eeg_training.npy"
    if case == "channels":
        _rewrite(root, "training", preprocessed_eeg_data=data[:, :, :16], ch_names=[f"c{i}" for i in range(16)])
    elif case == "key":
        _rewrite(root, "training", times=None)
    elif case == "rank":
        _rewrite(root, "training", preprocessed_eeg_data=data[:, 0])
    elif case == "images":
        _rewrite(root, "training", preprocessed_eeg_data=data[:8])  # 8 images, the folders hold 20 → mismatch
        for folder in sorted((root / "things-eeg2" / "training_images").iterdir())[1:]:
            for image in sorted(folder.iterdir())[6:]:
                image.unlink()
        for image in sorted(sorted((root / "things-eeg2" / "training_images").iterdir())[0].iterdir())[:]:
            image.unlink()
    elif case == "nan":
        bad = data.copy()
        bad[3, 0, 2, 5] = np.nan
        _rewrite(root, "training", preprocessed_eeg_data=bad)
    elif case == "global":
        from collections import OrderedDict

        with open(path, "wb") as fh:
            pickle.dump(OrderedDict(preprocessed_eeg_data=data, ch_names=[], times=[]), fh)
    elif case == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    with pytest.raises((DataFormatError, DataNotFoundError), match=match) as err:
        ThingsEEG2(root, tmp_path / "cache", val_images=1).load()
    assert "\n" not in str(err.value) and str(path.parent) in str(err.value) or case == "images"
    cache = tmp_path / "cache" / "things-eeg2"
    assert not cache.exists() or not list(cache.glob("manifest-*.json"))


def test_options_are_checked():
    for bad, match in ((dict(variant="32ch"), "variant='32ch'"), (dict(test_trials="mean"), "test_trials='mean'"),
                       (dict(val_images="-1"), "val_images=-1"), (dict(subjects="one"), "subjects='one'"),
                       (dict(val_images="x"), "val_images='x' is not a valid int"), (dict(nope=1), "unknown option")):
        with pytest.raises(ConfigError, match=match):
            ThingsEEG2("/nowhere", **bad)
    assert concept_name("00001_aircraft_carrier") == "aircraft carrier"


def test_data_info_and_verify_cli(files, tmp_path, capsys):
    common = ["--dataset-option", "val_images=8", "--data-root", str(files), "--cache-dir", str(tmp_path)]
    assert main(["data", "info", "things-eeg2", *common]) == 0
    out = capsys.readouterr().out
    assert "zero-shot split: 8 test concepts" in out and "sfreq 100 Hz" in out and "CC BY 4.0" in out
    assert main(["data", "verify", "things-eeg2", *common]) == 0
    out = capsys.readouterr().out
    assert out.count("sha256") == 4 and "matches the cache manifest" in out and "train 576" in out
    assert main(["data", "info", "things-eeg2", "--dataset-option", "variant=x", "--data-root", str(files)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eegbench: error:") and "\n" not in err


def test_verify_detects_changed_bytes(files, tmp_path):
    import os
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(files, root)
    loader = ThingsEEG2(root, tmp_path / "cache", val_images=8)
    loader.load()
    path = loader.eeg_file(1, "test")
    st = path.stat()
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(DataFormatError, match="differs from .* recorded when the cache was built"):
        loader.verify()
    manifest = json.loads(next((tmp_path / "cache" / "things-eeg2").glob("manifest-*.json")).read_text())
    assert manifest["sources"]["sub-01/test"]["shape"] == [8, 80, 17, 100]


def test_caching_in_chunks_gives_the_same_arrays(files, tmp_path, monkeypatch):
    import eegbench.datasets.things_eeg2 as mod

    _, whole = _load(files, tmp_path / "a")
    monkeypatch.setattr(mod, "_CHUNK_IMAGES", 3)  # 80 training images → 27 chunks, 8 test images → 3
    _, chunked = _load(files, tmp_path / "b", train_trials="single")
    assert np.array_equal(np.asarray(whole.eeg), np.asarray(chunked.eeg))
    _, avg = _load(files, tmp_path / "c", train_trials="average")
    train = _raw(files, 1, "training")["preprocessed_eeg_data"]
    row = avg.trials.index[avg.trials["trial_id"] == "s01-train-00079-avg"][0]
    np.testing.assert_allclose(avg.eeg[row], train[79].mean(axis=0), rtol=1e-6, atol=1e-6)
