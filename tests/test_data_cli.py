"""``eegbench data info|verify`` and bad data through the CLI: one-line errors, exit 2, nothing half-written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA_ROOT, WEIGHTS_ROOT

from eegbench.cli import main
from eegbench.datasets.cvpr40 import write_synthetic_files

REPO = Path(__file__).resolve().parents[1]
P300_DIR = DATA_ROOT / "eeg-notebooks" / "data" / "visual" / "P300"


@pytest.fixture
def cvpr40_root(tmp_path):
    root = tmp_path / "data"
    write_synthetic_files(root, n_subjects=2, n_classes=3, images_per_class=8, n_out_of_filter=2)
    return root


def _run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _no_cache_entries(cache: Path) -> bool:
    return not [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else True


def test_data_info_cvpr40_reports_counts_units_licence(cvpr40_root, tmp_path, capsys):
    rc, out, err = _run(capsys, "data", "info", "cvpr40", "--data-root", str(cvpr40_root),
                        "--cache-dir", str(tmp_path / "cache"))
    assert rc == 0, err
    assert "n_chans=128, n_times=440" in out and "sfreq 1000 Hz" in out and "unit a.u." in out
    assert "official: block_splits_by_image_all.pth split 0" in out
    assert "Spampinato" in out and "ImageNet" in out
    assert "| sorrel horse |" in out and "n02389026" in out
    assert "## Trials per subject and split part" in out and "- trials: 46;" in out


def test_data_verify_cvpr40_ok_then_missing_file_exit_2(cvpr40_root, tmp_path, capsys):
    cache = tmp_path / "cache"
    rc, out, err = _run(capsys, "data", "verify", "cvpr40", "--data-root", str(cvpr40_root), "--cache-dir", str(cache))
    assert rc == 0, err
    assert out.strip().endswith("cvpr40: OK") and "46 trials, eeg (46, 128, 440) float32" in out
    split = cvpr40_root / "eeg-imagenet" / "block_splits_by_image_all.pth"
    split.unlink()
    rc, _, err = _run(capsys, "data", "verify", "cvpr40", "--data-root", str(cvpr40_root), "--cache-dir", str(cache))
    assert rc == 2 and err.count("\n") == 1 and str(split) in err and "missing" in err


@pytest.mark.parametrize("action", ["info", "verify"])
def test_truncated_pth_exit_2_and_no_cache_written(cvpr40_root, tmp_path, capsys, action):
    eeg = cvpr40_root / "eeg-imagenet" / "eeg_5_95_std.pth"
    eeg.write_bytes(eeg.read_bytes()[:4096])
    cache = tmp_path / "cache"
    rc, _, err = _run(capsys, "data", action, "cvpr40", "--data-root", str(cvpr40_root), "--cache-dir", str(cache))
    assert rc == 2
    assert err.startswith("eegbench: error: ") and err.count("\n") == 1
    assert str(eeg) in err and "truncated or corrupt" in err
    assert _no_cache_entries(cache)


def test_nan_eeg_exit_2_through_a_subprocess(cvpr40_root, tmp_path):
    import torch

    eeg = cvpr40_root / "eeg-imagenet" / "eeg_5_95_std.pth"
    data = torch.load(eeg, weights_only=True)
    data["dataset"][0]["eeg"][:] = float("nan")
    data["dataset"][0]["eeg"] = data["dataset"][0]["eeg"][:, :500]  # keep it inside the length filter
    torch.save(data, eeg)
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "eegbench", "data", "verify", "cvpr40", "--data-root",
                           str(cvpr40_root), "--cache-dir", str(cache)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(eeg) in lines[0] and "dataset[0]['eeg'] holds nan" in lines[0]
    assert _no_cache_entries(cache)


def test_unknown_dataset_and_bad_option_exit_2(tmp_path, capsys):
    rc, _, err = _run(capsys, "data", "info", "cvpr4", "--data-root", str(tmp_path))
    assert rc == 2 and "cvpr4" in err and err.count("\n") == 1
    for flag in ("--option", "--dataset-option"):  # `data` takes the same flag as `run`, and the short one
        rc, _, err = _run(capsys, "data", "info", "cvpr40", "--data-root", str(tmp_path), flag, "bogus=1")
        assert rc == 2 and "bogus" in err and err.count("\n") == 1


@pytest.mark.skipif(not (WEIGHTS_ROOT / "taef2" / "taef2_encoder.pth").is_file(),
                    reason="TAEF2 weights absent (the run checks them before loading data)")
def test_run_with_a_missing_stimulus_image_exit_2_and_no_run_folder(cvpr40_root, tmp_path, capsys):
    images = sorted((cvpr40_root / "eeg-imagenet" / "images").rglob("*.JPEG"))
    images[0].unlink()
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    rc, _, err = _run(capsys, "run", "--method", "synapse", "--dataset", "cvpr40", "--data-root", str(cvpr40_root),
                        "--weights-root", str(WEIGHTS_ROOT), "--cache-dir", str(cache), "--runs-dir", str(runs),
                        "--no-progress")
    assert rc == 2, err
    msg = err.strip().splitlines()[-1]
    assert msg.startswith("eegbench: error: ") and str(images[0]) in msg and "is missing" in msg
    assert not runs.exists() or not any(runs.iterdir())
    assert _no_cache_entries(cache / "datasets")


@pytest.mark.skipif(not P300_DIR.is_dir(), reason=f"eeg-notebooks P300 data absent under {DATA_ROOT}")
def test_data_info_and_verify_real_p300(tmp_path, capsys):
    cache = tmp_path / "cache"
    rc, out, err = _run(capsys, "data", "info", "eegnb-p300", "--data-root", str(DATA_ROOT), "--cache-dir", str(cache))
    assert rc == 0, err
    assert "| dog " in out and "| cat " in out and "unit V" in out and "sfreq 256 Hz" in out
    assert "recording-level, split_seed=0" in out and "BSD-3-Clause" in out
    rc, out, err = _run(capsys, "data", "verify", "eegnb-p300", "--data-root", str(DATA_ROOT), "--cache-dir", str(cache))
    assert rc == 0, err
    assert "45 recording CSVs" in out and "sha256 of 45 match the cache manifest" in out
    assert "8 stimulus images decode" in out and out.strip().endswith("eegnb-p300: OK")
