"""Full small-profile SYNAPSE runs on THINGS-EEG2- and EEG-ImageNet-format fixtures: retrieval metrics
scored with the shuffled-EEG control, re-scored identically by ``eegbench evaluate``, and put on a
leaderboard by ``eegbench compare``."""

from __future__ import annotations

import json

import pytest

from conftest import DATA_ROOT, WEIGHTS_ROOT, needs_real_data
from eegbench.cli import main
from eegbench.datasets.eeg_imagenet import write_eeg_imagenet_files
from eegbench.datasets.things_eeg2 import write_things_eeg2_files
from eegbench.metrics.retrieval import RETRIEVAL_METRICS

pytestmark = [needs_real_data, pytest.mark.slow]

QUICK = ["--set", "stage1_steps=20", "--set", "stage2_steps=20", "--set", "stage1_eval_every=10",
         "--set", "stage2_eval_every=10", "--backbone-set", "denoiser_steps=20", "--n-samples", "2", "--steps", "4",
         "--no-progress"]
CASES = {
    "things-eeg2": (write_things_eeg2_files, ["--dataset-option", "val_images=8"]),
    "eeg-imagenet": (write_eeg_imagenet_files, ["--dataset-option", "block=5", "--dataset-option", "train_per_block=3"]),
}


@pytest.fixture(scope="module", params=[pytest.param(name, marks=pytest.mark.e2e) if name == "eeg-imagenet" else name
                                        for name in sorted(CASES)])  # eeg-imagenet: `pytest -m e2e` (CI)
def run(request, tmp_path_factory):
    name = request.param
    write, options = CASES[name]
    tmp = tmp_path_factory.mktemp(name)
    write(tmp / "data", photos=DATA_ROOT / "imagenet-samples")
    args = ["run", "--method", "synapse", "--dataset", name, *options, "--data-root", str(tmp / "data"),
            "--weights-root", str(WEIGHTS_ROOT), "--cache-dir", str(tmp / "cache"), "--runs-dir", str(tmp / "runs"),
            "--run-id", "r", *QUICK]
    assert main(args) == 0
    return name, tmp


def test_retrieval_is_scored_for_the_run_and_its_shuffled_control(run):
    name, tmp = run
    result = json.loads((tmp / "runs" / "r" / "result.json").read_text())
    assert tuple(result["protocol"]["metrics"][-len(RETRIEVAL_METRICS):]) == RETRIEVAL_METRICS
    m, shuffled = result["metrics"], result["controls"]["shuffled_eeg"]["metrics"]
    n_images = result["retrieval"]["n_candidates"]
    assert m["retrieval_top1"]["label"] == f"{n_images}-way top-1 retrieval (image)"
    assert m["retrieval_top1"]["chance"] == pytest.approx(1 / n_images)
    # the fixture's EEG is a function of the image: SYNAPSE's aligned embedding finds it, the control does not
    assert m["retrieval_2way"]["value"] >= shuffled["retrieval_2way"]["value"] + 0.15
    assert (tmp / "runs" / "r" / "retrieval" / "embeddings.safetensors").is_file()
    if name == "things-eeg2":  # zero-shot: no class metric of the training classes, one image per test concept
        assert result["protocol"]["test_eeg"] == "mean of 80 repetitions"
        assert "zero-shot" in m["probe_accuracy"]["skipped"] and "zero-shot" in result["eeg_decoding"]["skipped"]
        assert "single test image" in m["retrieval_class_top1"]["skipped"]
    else:
        assert result["protocol"].get("test_eeg") is None
        assert m["retrieval_class_top1"]["value"] is not None and m["nway_topk"]["value"] is not None


def test_evaluate_rescores_retrieval_identically(run):
    _, tmp = run
    run_dir = tmp / "runs" / "r"
    assert main(["evaluate", str(run_dir), "--no-progress"]) == 0
    original = json.loads((run_dir / "result.json").read_text())
    new = json.loads(next((run_dir / "evaluations").glob("*/result.json")).read_text())
    for key in RETRIEVAL_METRICS:
        assert new["metrics"][key].get("value") == original["metrics"][key].get("value")
        control = original["controls"]["shuffled_eeg"]["metrics"][key].get("value")
        assert new["controls"]["shuffled_eeg"]["metrics"][key].get("value") == control


def test_compare_puts_retrieval_on_the_leaderboard(run):
    name, tmp = run
    assert main(["compare", str(tmp / "runs"), "--out", str(tmp / "reports"), "--no-figures"]) == 0
    board = next((tmp / "reports").glob(f"leaderboard-{name}-*.md")).read_text()
    assert "top-1 retrieval (image) ↑" in board and "2-way retrieval (image) ↑" in board
