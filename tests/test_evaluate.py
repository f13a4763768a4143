"""``eegbench evaluate``: re-scoring a run folder's saved samples under a protocol (tiny extractors)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from eegbench.errors import (
    ConfigError,
    DataFormatError,
    DataNotFoundError,
    WeightsNotFoundError,
)
from eegbench.evaluate import evaluate_run, find_inception_weights, reference_cache_name
from eegbench.reports import compare
from eegbench.protocol import EvalProtocol
from eegbench.results import load_results, write_json_atomic

TINY = {"fid_feature_extractor": "eegbench-tiny-test", "is_feature_extractor": "eegbench-tiny-test-logits"}
WNIDS = ("n01440764", "n01443537")


def tiny_embedder(images: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(images.float() / 255.0, (4, 4)).flatten(1)


class RedClassifier(torch.nn.Module):
    """Fake ImageNet classifier: class = mean red value."""

    name = "fake-red"
    weights_sha256 = "0" * 64

    def forward(self, images):
        red = images[:, 0].float().mean(dim=(1, 2)).round().long()
        return F.one_hot(red.clamp(0, 999), 1000).float()


def make_run(root, *, wnids=(), n_samples=2, size=32, dataset_name="synthetic", dataset_options=None):
    """A finished-looking run folder on the real synthetic dataset and split, with fake samples."""
    from eegbench.datasets.synthetic import SyntheticEEG
    from eegbench.splits import multi_subject

    cache = root / "cache"
    dataset_options = dict(dataset_options or {})
    ds = SyntheticEEG(None, cache_dir=cache / "datasets", **dataset_options).load()
    split = multi_subject(ds)
    test = ds.subset(split.test)
    refs = test.images(size)
    run = root / "runs" / "r0"
    (run / "samples").mkdir(parents=True)
    (run / "reference").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, (tid, lab, sub, iid) in enumerate(test.trials[["trial_id", "label", "subject", "image_id"]]
                                             .itertuples(index=False)):
        safe = tid.replace("/", "-")
        Image.fromarray(refs[i].transpose(1, 2, 0)).save(run / "reference" / f"{safe}.png")
        for k in range(n_samples):
            noise = rng.integers(-30, 30, refs[i].shape) if k else 0  # sample 0 = the ground truth itself
            noisy = np.clip(refs[i].astype(int) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(noisy.transpose(1, 2, 0)).save(run / "samples" / f"{safe}_{k}.png")
            rows.append({"trial_id": tid, "sample_index": k, "label": int(lab), "class_name": str(lab),
                         "subject": int(sub), "image_id": iid, "path": f"samples/{safe}_{k}.png",
                         "reference_path": f"reference/{safe}.png"})
    pd.DataFrame(rows).to_csv(run / "samples" / "manifest.csv", index=False)
    protocol = EvalProtocol(n_samples_per_trial=n_samples, image_size=size, **TINY)
    result = {
        "schema_version": 1, "run_id": "r0", "created": "2026-01-01T00:00:00+00:00",
        "method": {"name": "fake", "version": "0", "profile": "small", "config": {"guidance_scale": 3.0}},
        "dataset": {"name": dataset_name, "version": ds.info.version, "class_names": list(ds.info.class_names),
                    "wnids": list(wnids), "options": dataset_options},
        "split": split.to_dict(),
        "protocol": {**protocol.to_dict(), "hash": protocol.hash()},
        "seed": 0,
        "metrics": {"fid": {"value": 1.0, "higher_is_better": False}},
        "parameters": {"trainable_total": 10, "inference_total": 20},
        "durations_s": {"fit": 1.0},
        "config": {"data_root": str(root), "cache_dir": str(cache), "subject": None},
        "artifacts": {"samples": "samples", "manifest": "samples/manifest.csv", "reference": "reference"},
    }
    write_json_atomic(run / "result.json", result)
    return run, result


def evaluate(run, **kw):
    kw.setdefault("protocol_overrides", TINY)
    return evaluate_run(run, progress=False, image_embedder=tiny_embedder, classifier=RedClassifier(), **kw)


def test_evaluate_round_trip_writes_a_new_result_and_keeps_the_original(tmp_path):
    run, original = make_run(tmp_path, wnids=WNIDS)
    before = (run / "result.json").read_bytes()
    out = evaluate(run, n_samples=1)
    assert (run / "result.json").read_bytes() == before  # never overwritten
    path = run / "evaluations" / out["protocol"]["hash"] / "result.json"
    assert json.loads(path.read_text())["metrics"] == json.loads(json.dumps(out["metrics"]))
    assert out["protocol"]["n_samples_per_trial"] == 1 and out["protocol"]["hash"] != original["protocol"]["hash"]
    m = out["metrics"]
    n_test = original["split"]["sizes"]["test"]
    assert m["fid"]["n_gen"] == n_test and m["fid"]["n_ref"] == n_test
    assert abs(m["fid"]["value"]) < 1e-6  # sample 0 of every trial is its ground truth
    assert m["is"]["splits"] == 10 and m["is"]["value"] >= 1.0 and m["is"]["variant"] == "is_tiny_test"
    assert m["nway_topk"]["value"] == 1.0 and m["nway_topk"]["n"] == n_test  # sample 0 is the GT itself
    assert m["nway_topk"]["classifier"] == "fake-red"
    assert 0.0 <= m["probe_accuracy"]["value"] <= 1.0 and m["probe_accuracy"]["chance"] == 0.5
    assert out["evaluation"]["source_protocol_hash"] == original["protocol"]["hash"]
    # same inputs and seed -> identical metrics
    assert evaluate(run, n_samples=1)["metrics"] == m


def test_evaluate_results_are_picked_up_by_compare(tmp_path):
    run, _ = make_run(tmp_path)
    out = evaluate(run)
    assert out["metrics"]["fid"]["n_gen"] == 2 * out["metrics"]["fid"]["n_ref"] and out["metrics"]["fid"]["value"] > 0
    results = load_results([tmp_path / "runs"])
    assert len(results) == 2
    h = out["protocol"]["hash"]
    (md,) = compare(results, tmp_path / "reports", protocol_hash=h)
    text = md.read_text()
    assert "IS (tiny test projection, not a metric) ↑" in text and "| fake" in text
    assert "Published numbers (quoted from the papers/READMEs)" in text
    # no WNIDs: the n-way accuracy is skipped with the reason recorded, and has no column
    assert "n-way" not in text.split("## Protocol")[0]
    assert out["metrics"]["nway_topk"]["value"] is None and "ImageNet" in out["metrics"]["nway_topk"]["skipped"]


def test_evaluate_reloads_the_dataset_with_the_runs_loader_options(tmp_path):
    run, _ = make_run(tmp_path, dataset_options={"n_trials": "8"})
    out = evaluate(run)
    assert out["metrics"]["probe_accuracy"]["value"] is not None  # train stimuli reloaded, split hash matched
    assert out["dataset"]["options"] == {"n_trials": "8"}
    # control: without the options the default synthetic data (16 trials per recording) come back, whose
    # split differs from the run's, and evaluate refuses instead of scoring against other data
    stripped = json.loads((run / "result.json").read_text())
    stripped["dataset"]["options"] = {}
    write_json_atomic(run / "result.json", stripped)
    with pytest.raises(ConfigError, match="split hash"):
        evaluate(run)


def test_reference_cache_name_keeps_its_old_form_and_separates_loader_options():
    plain = reference_cache_name("eegnb-n170", "1", None, "39643a9a3683a05c" + "0" * 48, 583, 64)
    assert plain == reference_cache_name("eegnb-n170", "1", {}, "39643a9a3683a05c" + "0" * 48, 583, 64)
    assert plain == "eegnb-n170-1-39643a9a3683a05c-583-64px-ref"  # caches written before options still match
    other = reference_cache_name("cvpr40", "1", {"images_dir": "imgs/v2"}, "a" * 64, 583, 64)
    assert other == "cvpr40-images_dir-imgs-v2--1-aaaaaaaaaaaaaaaa-583-64px-ref"
    assert other != reference_cache_name("cvpr40", "1", None, "a" * 64, 583, 64)


def test_evaluate_without_the_dataset_skips_the_probe_with_a_reason(tmp_path):
    run, _ = make_run(tmp_path, dataset_name="not-registered", wnids=WNIDS)
    out = evaluate(run)
    assert out["metrics"]["probe_accuracy"]["value"] is None
    assert "not-registered" in out["metrics"]["probe_accuracy"]["skipped"]
    assert out["metrics"]["nway_topk"]["value"] is not None


def test_evaluate_bad_inputs(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        evaluate_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match="no result.json"):
        evaluate_run(tmp_path / "empty")
    run, _ = make_run(tmp_path)
    with pytest.raises(ConfigError, match="--n-samples 3"):
        evaluate(run, n_samples=3)
    with pytest.raises(ConfigError, match="image_size"):
        evaluate(run, protocol_overrides={**TINY, "image_size": 64})
    with pytest.raises(WeightsNotFoundError, match="missing.pth"):
        evaluate(run, inception_weights=tmp_path / "missing.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"xx")
    with pytest.raises(DataFormatError, match="corrupt.pth"):
        evaluate(run, inception_weights=corrupt)
    next((run / "samples").glob("*.png")).unlink()
    with pytest.raises(DataNotFoundError, match="missing"):
        evaluate(run)
    assert not (run / "evaluations").exists()


def test_inception_weights_found_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert find_inception_weights() is None
    f = tmp_path / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"")
    assert find_inception_weights() == f


def test_cli_evaluate_bad_run_dir_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "eegbench", "evaluate", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nope" in proc.stderr and "does not exist" in proc.stderr


def test_cli_run_with_a_missing_weights_file_fails_fast_naming_it(tmp_path):
    flag = "--inception-weights"
    (tmp_path / "w" / "taef2").mkdir(parents=True)
    for name in ("taef2_encoder.pth", "taef2_decoder.pth"):
        (tmp_path / "w" / "taef2" / name).write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "eegbench", "run", "--dataset", "synthetic", "--weights-root", str(tmp_path / "w"),
         "--runs-dir", str(tmp_path / "runs"), flag, str(tmp_path / "missing.pth"), "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().count("\n") == 0 and "missing.pth" in proc.stderr and flag in proc.stderr
    assert not (tmp_path / "runs").exists()
