"""End-to-end CLI runs of SYNAPSE on the real eeg-notebooks N170 data with a reduced training budget."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import DATA_ROOT, WEIGHTS_ROOT, needs_real_data

pytestmark = [needs_real_data, pytest.mark.slow]

QUICK = [
    "--set", "stage1_steps=20", "--set", "stage2_steps=20", "--set", "stage1_eval_every=10",
    "--set", "stage2_eval_every=10", "--backbone-set", "denoiser_steps=20",
    "--max-test-trials", "16", "--n-samples", "2", "--steps", "4", "--no-progress",
]


def _cli(*args, cwd):
    proc = subprocess.run([sys.executable, "-m", "eegbench", *args], capture_output=True, text=True,
                          timeout=900, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two runs with the same seed (the second reuses the cached denoiser and reference statistics)."""
    tmp = tmp_path_factory.mktemp("e2e")
    common = ["run", "--method", "synapse", "--setting", "multi-subject", "--data-root", str(DATA_ROOT),
              "--weights-root", str(WEIGHTS_ROOT), "--cache-dir", str(tmp / "cache"), "--runs-dir",
              str(tmp / "runs"), *QUICK]
    _cli(*common, "--run-id", "first", cwd=tmp)
    _cli(*common, "--run-id", "second", cwd=tmp)
    return tmp


def test_run_writes_result_samples_grid_and_log(two_runs):
    run = two_runs / "runs" / "first"
    result = json.loads((run / "result.json").read_text())
    m = result["metrics"]
    assert m["fid"]["value"] > 0 and m["fid"]["higher_is_better"] is False
    assert m["fid"]["n_gen"] == 32 and m["fid"]["n_ref"] == 16
    assert "std" in m["kid"]
    assert 0.0 <= m["probe_accuracy"]["value"] <= 1.0 and m["probe_accuracy"]["chance"] == 0.5
    # N170 test trials show the training stimuli: the probe's reference accuracy is a fit, not a ceiling
    assert m["probe_accuracy"]["reference_in_probe_training"] is True
    assert 0.0 <= m["probe_accuracy"]["balanced_accuracy"] <= 1.0
    assert sum(m["probe_accuracy"]["predicted_distribution"]) == pytest.approx(1.0)
    # no Inception logits offline: the IS is the honestly labelled EfficientNet-Lite0 one, never titled plain "IS"
    assert m["is"]["value"] >= 1.0 and "EfficientNet" in m["is"]["label"] and m["is"]["variant"] == "is_effnet_lite0"
    assert m["nway_topk"]["value"] is None and "WNID" in m["nway_topk"]["skipped"]  # N170 classes are not ImageNet's
    assert result["protocol"]["sampler"] is None and result["method"]["config"]["sampler"] == "ddim"
    assert result["parameters"]["trainable_total"] > 0
    assert set(result["parameters"]["per_stage"]) == {"stage1", "stage2"}
    assert len(result["split"]["sha256"]) == 64 and result["split"]["sizes"]["test"] > 16
    assert {"load_data", "denoiser_pretrain", "fit", "generate", "metrics", "total"} <= set(result["durations_s"])
    usage = result["stage_resources"]
    assert set(result["durations_s"]) - {"total"} <= set(usage) and "process" in usage
    assert all(set(u) == {"cpu_user_s", "cpu_sys_s", "minor_faults", "major_faults"} for u in usage.values())
    assert usage["fit"]["cpu_user_s"] > 0 and usage["process"]["minor_faults"] >= usage["fit"]["minor_faults"]
    assert result["environment"]["host_allocator"]["applied"] is True  # a CPU run on Linux/glibc
    # features of the generated images beside the samples; reference and training stimuli in the cache
    assert result["artifacts"]["features"] == "features"
    assert sorted(p.name.split("-w")[0] for p in (run / "features").glob("*.safetensors")) == [
        "efficientnet-lite0-imagenet", "inception-v3-tf-fidhelper"]
    cached = sorted(p.name for p in (two_runs / "cache" / "fidelity" / "features").glob("*.safetensors"))
    assert len(cached) == 3 and sum("-ref-train--" in n for n in cached) == 1
    assert result["dataset"]["n_chans"] == 4 and result["dataset"]["unit"] == "V"
    assert result["dataset"]["options"] == {} and result["config"]["dataset_options"] == {}
    manifest = pd.read_csv(run / "samples" / "manifest.csv")
    assert len(manifest) == 32 and set(manifest["sample_index"]) == {0, 1}
    assert all((run / p).is_file() for p in manifest["path"])
    assert (run / "grid.png").is_file() and (run / "log.txt").read_text()
    assert not list((two_runs / "runs").glob(".partial-*"))


def test_same_seed_gives_same_metrics_and_images(two_runs):
    a, b = (json.loads((two_runs / "runs" / r / "result.json").read_text()) for r in ("first", "second"))
    for key in ("fid", "kid", "probe_accuracy"):
        assert a["metrics"][key]["value"] == b["metrics"][key]["value"], key
    first = sorted((two_runs / "runs" / "first" / "samples").glob("*.png"))
    assert [p.read_bytes() for p in first] == [
        (two_runs / "runs" / "second" / "samples" / p.name).read_bytes() for p in first]
    assert b["durations_s"]["denoiser_pretrain"] < a["durations_s"]["denoiser_pretrain"]


def test_compare_writes_leaderboard(two_runs):
    _cli("compare", str(two_runs / "runs"), "--out", str(two_runs / "reports"), cwd=two_runs)
    text = (two_runs / "reports" / "leaderboard-eegnb-n170-multi-subject.md").read_text()
    # two runs of seed 0: the second is a duplicate of the first and is left out (named in a warning)
    assert "| synapse" in text and "| 1 " in text and "## Significance" in text
    (kept,) = (two_runs / "reports" / "results" / "eegnb-n170-multi-subject").glob("*.json")
    compact = json.loads(kept.read_text())
    assert compact["compact"]["run_id"] in ("first", "second") and len(compact["training_log"]) > 0
    assert len(compact["metrics"]["probe_accuracy"]["per_trial_correct"]) == 16  # per test trial
    grid = two_runs / "reports" / "figures" / "eegnb-n170-multi-subject-grid.png"
    assert grid.is_file() and "figures/eegnb-n170-multi-subject-grid.png" in text


def test_evaluate_rescores_the_saved_samples_identically(two_runs):
    run = two_runs / "runs" / "first"
    _cli("evaluate", str(run), "--cache-dir", str(two_runs / "cache"), "--no-progress", cwd=two_runs)
    original = json.loads((run / "result.json").read_text())
    (again,) = run.glob("evaluations/*/result.json")
    rescored = json.loads(again.read_text())
    for key in ("fid", "kid", "is", "probe_accuracy"):
        assert rescored["metrics"][key]["value"] == original["metrics"][key]["value"], key
