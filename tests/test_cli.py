"""CLI behaviour: listing, exit status 2 with one-line errors, nothing half-written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from eegbench.cli import main


def test_ls_methods_lists_synapse(capsys):
    assert main(["ls", "methods"]) == 0
    assert "synapse" in capsys.readouterr().out


def test_unknown_method_exits_2_with_one_line(capsys, tmp_path):
    assert main(["run", "--method", "synapze", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Did you mean: synapse" in err
    assert not (tmp_path / "runs").exists()


def test_missing_data_exits_2_names_files_and_leaves_no_run_folder(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("EEGBENCH_DATA", str(empty))
    monkeypatch.setenv("EEGBENCH_CACHE", str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-m", "eegbench", "run", "--method", "synapse", "--setting", "multi-subject",
         "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(empty) in lines[0] and "--data-root" in lines[0] and "EEGBENCH_DATA" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_missing_weights_exits_2(tmp_path, capsys):
    rc = main(["run", "--weights-root", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path / "runs")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "taef2_encoder.pth" in err and "--weights-root" in err
    assert not (tmp_path / "runs").exists()


def test_bad_override_exits_2(tmp_path, capsys):
    assert main(["run", "--set", "no_such_option=1", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "no_such_option" in capsys.readouterr().err


@pytest.mark.parametrize("dataset, option, expected", [
    ("synthetic", "n_trails=8", "did you mean 'n_trials'"),
    ("synthetic", "n_trials=many", "n_trials='many' is not a valid int"),
    ("eegnb-n170", "eeg_file=x.pth", "takes no options"),
])
def test_bad_dataset_option_exits_2_before_any_work(dataset, option, expected, tmp_path, capsys):
    # the weights root does not exist either: the option is checked first, so it is what gets reported
    rc = main(["run", "--dataset", dataset, "--dataset-option", option, "--weights-root", str(tmp_path / "nowhere"),
               "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and expected in err and "taef2" not in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_compare_without_results_exits_2(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "none")]) == 2
    assert "no such run folder" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["datasets", "settings", "metrics", "backbones"])
def test_ls_kinds(kind, capsys):
    assert main(["ls", kind]) == 0
    assert capsys.readouterr().out.strip()
