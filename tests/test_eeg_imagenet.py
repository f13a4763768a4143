"""``eeg-imagenet``: EEG-ImageNet (2024) files in the exact release format (made-up EEG, real photos)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import DATA_ROOT
from eegbench.cli import main
from eegbench.datasets.eeg_imagenet import EEGImageNet2024, write_eeg_imagenet_files
from eegbench.errors import ConfigError, DataFormatError, DataNotFoundError
from eegbench.metrics.retrieval import RETRIEVAL_METRICS

PHOTOS = DATA_ROOT / "imagenet-samples"
SMALL = {"block": 5, "train_per_block": 3}  # the owners' 50 / 30 rule at fixture size


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """2 subjects (one per file), 4 coarse + 4 fine classes × 10 images, 460 samples per trial."""
    root = tmp_path_factory.mktemp("eeg-imagenet")
    write_eeg_imagenet_files(root, photos=PHOTOS)
    return root


def test_shapes_crop_classes_and_the_owners_split(files, tmp_path):
    ds = EEGImageNet2024(files, tmp_path, **SMALL).load()
    info = ds.info
    assert (info.n_chans, info.n_times, info.sfreq, info.tmin) == (62, 400, 1000.0, 0.04)
    assert ds.eeg.shape == (160, 62, 400) and ds.eeg.dtype == np.float32
    assert info.wnids[0] == "n02389026" and info.class_names[0] == "sorrel horse"  # from synset_map_en.txt
    assert info.protocol_metrics == RETRIEVAL_METRICS and info.stimulus_level == "image" and info.test_eeg == ""
    raw = torch.load(files / "eeg-imagenet-2024" / "EEG-ImageNet_2.pth", weights_only=True)["dataset"]
    row = ds.trials.index[ds.trials["trial_id"] == "t000083"][0]  # file 2's 4th item (file 1 holds 80)
    assert np.array_equal(ds.eeg[row], raw[3]["eeg_data"][:, 40:440].numpy())
    t = ds.trials
    # per subject and class, positions p % 5 < 3 train, the rest test; default val 0 (the owners' exact set)
    per = t[(t["subject"] == 1) & (t["label"] == 2)]
    assert list(per["split"]) == ["train"] * 3 + ["test"] * 2 + ["train"] * 3 + ["test"] * 2
    assert (t["split"] == "val").sum() == 0 and ds.split_source.startswith("official")
    assert set(t["session"]) == {0, 1} and set(t["recording"]) >= {"subject00/coarse", "subject01/fine"}


def test_validation_positions_and_granularities(files, tmp_path):
    ds = EEGImageNet2024(files, tmp_path, val_images_per_class=1, **SMALL).load()
    assert ds.trials["split"].value_counts().to_dict() == {"train": 64, "test": 64, "val": 32}
    coarse = EEGImageNet2024(files, tmp_path, granularity="coarse", **SMALL).load()
    fine = EEGImageNet2024(files, tmp_path, granularity="fine", **SMALL).load()
    assert coarse.info.wnids == ds.info.wnids[:4] and fine.info.wnids == ds.info.wnids[4:]
    assert set(fine.trials["granularity"]) == {"fine"} and fine.labels.max() == 3
    with pytest.raises(DataFormatError, match="no class of granularity 'fine1'"):
        EEGImageNet2024(files, tmp_path, granularity="fine1", **SMALL).load()  # 4 fine classes: only fine0 exists
    assert EEGImageNet2024(files, tmp_path, granularity="fine0", **SMALL).load().info.n_classes == 4


def test_one_merged_file_and_the_default_rule(tmp_path):
    root = tmp_path / "data"
    write_eeg_imagenet_files(root, n_subjects=1, n_coarse=2, n_fine=0, images_per_class=50, n_times=441,
                             split_files=False)
    ds = EEGImageNet2024(root, tmp_path / "c", files="EEG-ImageNet.pth").load()
    assert ds.trials["split"].value_counts().to_dict() == {"train": 60, "test": 40}  # 30 / 20 per class


def test_short_trials_are_dropped_with_a_warning(tmp_path, caplog):
    root = tmp_path / "data"
    write_eeg_imagenet_files(root, n_subjects=1, n_coarse=2, n_fine=0, images_per_class=5, split_files=False)
    path = root / "eeg-imagenet-2024" / "EEG-ImageNet.pth"
    obj = torch.load(path, weights_only=True)
    obj["dataset"][1]["eeg_data"] = obj["dataset"][1]["eeg_data"][:, :439]
    torch.save(obj, path)
    ds = EEGImageNet2024(root, tmp_path / "c", files="EEG-ImageNet.pth", **SMALL).load()
    assert len(ds) == 9 and "t000001" not in set(ds.trials["trial_id"])
    assert "dropping 1 trial(s) shorter than 440 samples" in caplog.text
    # positions count the dropped trial too (the owners' rule): the class's 3rd trial still trains, its 4th tests
    part = dict(zip(ds.trials["trial_id"], ds.trials["split"]))
    assert (part["t000002"], part["t000003"]) == ("train", "test")


@pytest.mark.parametrize("case, match", [
    ("missing", r"EEG-ImageNet_2.pth.*github.com/Promise-Z5Q2SQ"),
    ("channels", r"dataset\[0\]\['eeg_data'\] is a torch.float32 tensor of shape \(61, 460\)"),
    ("label", r"dataset\[0\]\['label'\] = 'n00000000' is not one of 'labels'"),
    ("granularity", r"\['granularity'\] = 'medium', expected 'coarse' or 'fine'"),
    ("image", r"n02389026_1000.JPEG: stimulus image of trial t000000"),
    ("global", r"needs unpickling of arbitrary Python objects"),
])
def test_bad_files_are_one_line_errors(tmp_path, case, match):
    root = tmp_path / "data"
    write_eeg_imagenet_files(root, n_subjects=2, n_coarse=1, n_fine=1, images_per_class=5)
    base = root / "eeg-imagenet-2024"
    path = base / "EEG-ImageNet_1.pth"
    obj = torch.load(path, weights_only=True)
    if case == "missing":
        (base / "EEG-ImageNet_2.pth").unlink()
    elif case == "channels":
        obj["dataset"][0]["eeg_data"] = obj["dataset"][0]["eeg_data"][:61]
    elif case == "label":
        obj["dataset"][0]["label"] = "n00000000"
    elif case == "granularity":
        obj["dataset"][0]["granularity"] = "medium"
    elif case == "image":
        (base / "imageNet_images" / "n02389026" / "n02389026_1000.JPEG").unlink()
    elif case == "global":
        import datetime

        obj["extra"] = datetime.date(2024, 6, 1)
    if case not in ("missing", "image"):
        torch.save(obj, path)
    with pytest.raises((DataFormatError, DataNotFoundError), match=match) as err:
        EEGImageNet2024(root, tmp_path / "cache", **SMALL).load()
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "cache").rglob("manifest-*.json"))


def test_options_and_cli(files, tmp_path, capsys):
    for bad, match in ((dict(granularity="medium"), "granularity='medium'"),
                       (dict(block=5, train_per_block=5), "train_per_block < block"),
                       (dict(val_images_per_class=30), "val_images_per_class=30"), (dict(files=" , "), "names no file")):
        with pytest.raises(ConfigError, match=match):
            EEGImageNet2024("/nowhere", **bad)
    common = ["--dataset-option", "block=5", "--dataset-option", "train_per_block=3", "--data-root", str(files),
              "--cache-dir", str(tmp_path)]
    assert main(["data", "info", "eeg-imagenet", *common]) == 0
    out = capsys.readouterr().out
    assert "WNIDs: n02389026" in out and "sfreq 1000 Hz" in out and "positions p % 5 < 3" in out
    assert main(["data", "verify", "eeg-imagenet", *common]) == 0
    out = capsys.readouterr().out
    assert out.count("matches the cache manifest") == 2 and "160 trials" in out
