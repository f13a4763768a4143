"""Leaderboards: aggregation over seeds, directions, refusal to mix protocols or splits."""

from __future__ import annotations

import json

import pytest

from eegbench.errors import EegbenchError
from eegbench.leaderboard import compare
from eegbench.results import load_results, write_json_atomic


def fake_result(method="synapse", seed=0, fid=50.0, acc=0.7, protocol="p" * 16, split="s" * 64):
    return {
        "schema_version": 1,
        "run_id": f"{method}-{seed}",
        "method": {"name": method, "version": "0.1", "profile": "small"},
        "dataset": {"name": "eegnb-n170"},
        "split": {"setting": "multi-subject", "options": {}, "sha256": split, "sizes": {"test": 10},
                  "source": "recording-level"},
        "protocol": {"hash": protocol, "n_samples_per_trial": 2, "image_size": 64},
        "seed": seed,
        "metrics": {
            "fid": {"value": fid, "higher_is_better": False},
            "kid": {"value": fid / 1e4, "std": 0.0, "higher_is_better": False},
            "probe_accuracy": {"value": acc, "higher_is_better": True, "chance": 0.5},
        },
        "parameters": {"trainable_total": 1_500_000, "inference_total": 3_000_000},
        "durations_s": {"fit": 100.0},
    }


def test_compare_aggregates_seeds_with_mean_std(tmp_path):
    results = [fake_result(seed=s, fid=f) for s, f in [(0, 40.0), (1, 50.0), (2, 60.0)]]
    results.append(fake_result(method="other", fid=70.0, acc=0.5))
    (path,) = compare(results, tmp_path)
    assert path.name == "leaderboard-eegnb-n170-multi-subject.md"
    text = path.read_text()
    assert "50.00 ± 10.00" in text  # mean ± sample std of 40, 50, 60
    assert "| synapse" in text and "| other" in text
    assert "FID ↓" in text and "Class acc. (probe) ↑" in text
    assert "1.50 M" in text


def test_compare_refuses_mixed_protocols(tmp_path):
    results = [fake_result(), fake_result(seed=1, protocol="q" * 16)]
    with pytest.raises(EegbenchError, match="different protocol or split hashes"):
        compare(results, tmp_path)
    assert not list(tmp_path.iterdir())
    (path,) = compare(results, tmp_path, protocol_hash="qqq")
    assert "qqqq" in path.read_text()


def test_compare_refuses_mixed_splits(tmp_path):
    with pytest.raises(EegbenchError, match="split"):
        compare([fake_result(), fake_result(seed=1, split="t" * 64)], tmp_path)


def test_load_results_skips_partial_runs_and_rejects_garbage(tmp_path):
    write_json_atomic(tmp_path / "a" / "result.json", fake_result())
    write_json_atomic(tmp_path / ".partial-b" / "result.json", fake_result(seed=1))
    assert [r["seed"] for r in load_results([tmp_path])] == [0]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "result.json").write_text("{not json")
    with pytest.raises(EegbenchError, match="c/result.json"):
        load_results([tmp_path])


def test_write_json_atomic_leaves_no_temp_file(tmp_path):
    write_json_atomic(tmp_path / "r.json", {"a": 1})
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
