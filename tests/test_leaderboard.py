"""Leaderboards: aggregation over seeds, directions, refusal to mix protocols or splits."""

from __future__ import annotations

import json

import pytest

from eegbench.errors import EegbenchError
from eegbench.reports import compare
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
    # mean [95 % Student-t interval] of 40, 50, 60: 50 ± t(0.975, 2) · 10 / sqrt(3)
    assert "50.00 [25.16, 74.84]" in text
    assert "| synapse" in text and "| other" in text
    assert "FID ↓" in text and "Class acc. (probe) ↑" in text
    assert "1.50 M" in text


def test_runs_with_other_dataset_options_get_their_own_leaderboard(tmp_path):
    results = [fake_result(seed=s) for s in range(2)]
    for s in range(2):  # same split and protocol hashes, but other EEG files: never averaged together
        r = fake_result(seed=s, fid=90.0)
        r["dataset"] = {"name": "eegnb-n170", "options": {"eeg_file": "eeg_14_70_std.pth"}}
        r["run_id"] += "-eeg14-70"
        results.append(r)
    paths = sorted(p.name for p in compare(results, tmp_path))
    assert paths == ["leaderboard-eegnb-n170-eeg_file-eeg_14_70_std.pth-multi-subject.md",
                     "leaderboard-eegnb-n170-multi-subject.md"]
    text = (tmp_path / paths[0]).read_text()
    assert "# Leaderboard: eegnb-n170[eeg_file=eeg_14_70_std.pth], multi-subject" in text
    assert "90.00 [90.00, 90.00]" in text and "50.00" not in text.split("## Protocol")[0]


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


# ---- new metric columns, honest labels, published block, differing fields ------------------------

from eegbench.published import PUBLISHED, published_markdown


def with_new_metrics(result, is_value=5.0, nway=0.3):
    result["metrics"]["is_effnet_lite0"] = {"value": is_value, "std": 0.1, "higher_is_better": True,
                                            "label": "IS (EfficientNet-Lite0, not comparable to Inception IS)"}
    result["metrics"]["nway_topk"] = {"value": nway, "std": 0.01, "higher_is_better": True,
                                      "label": "50-way top-1 acc. (efficientnet-lite0)"}
    result["protocol"].update({"n_way": 50, "top_k": 1, "n_way_trials": 50, "classifier": "efficientnet-lite0"})
    return result


def test_leaderboard_shows_new_metrics_with_honest_labels_and_arrows(tmp_path):
    results = [with_new_metrics(fake_result(seed=s), is_value=v) for s, v in [(0, 4.0), (1, 6.0)]]
    (path,) = compare(results, tmp_path)
    text = path.read_text()
    table = text.split("## Protocol")[0]
    assert "IS (EfficientNet-Lite0, not comparable to Inception IS) ↑" in table
    assert "| IS ↑ " not in table  # never plain "IS"
    assert "50-way top-1 acc. (efficientnet-lite0) ↑" in table and "5.00 [-7.71, 17.71]" in table
    assert "Trainable params" in table and "Inference params" in table and "3.00 M" in table
    assert "not** comparable to a published Inception Score" in text


def test_leaderboard_standard_is_column_only_when_present(tmp_path):
    r = fake_result()
    r["metrics"]["is"] = {"value": 12.0, "higher_is_better": True, "label": "IS"}
    (path,) = compare([r], tmp_path)
    table = path.read_text().split("## Protocol")[0]
    assert "| IS ↑ " in table and "| 12.00 " in table and "EfficientNet" not in table


def test_published_block_is_separate_and_labelled(tmp_path):
    (path,) = compare([fake_result()], tmp_path)
    text = path.read_text()
    measured, published = text.split("## Published numbers (quoted from the papers/READMEs)")
    assert "46.91" not in measured and "46.91" in published
    assert "not comparable with the table" in published
    assert "80.47" in published and "33.32" in published and "152.69 M" in published and "(arXiv 2410.02780) Table I" in published
    assert len(PUBLISHED) == 6 and {p.method for p in PUBLISHED} == {"synapse", "gwit", "brainvis", "dreamdiffusion"}
    assert "not reported" in published_markdown()  # SYNAPSE IS/ACC, DreamDiffusion FID


def test_compare_error_names_the_differing_protocol_fields(tmp_path):
    a, b = fake_result(), fake_result(seed=1, protocol="q" * 16)
    b["protocol"]["n_samples_per_trial"] = 4
    with pytest.raises(EegbenchError, match=r"differing: n_samples_per_trial: 2 ≠ 4"):
        compare([a, b], tmp_path)


def test_an_evaluation_under_the_same_protocol_counts_once(tmp_path):
    a = fake_result(fid=40.0)
    again = fake_result(fid=40.0)
    again["evaluation"] = {"created": "2030-01-01"}
    (path,) = compare([a, again], tmp_path)
    assert "| synapse  | small     | 1           |" in path.read_text()  # one seed, not two


def test_metrics_summary_uses_honest_labels_and_reports_skips():
    from eegbench.leaderboard import metrics_summary

    m = with_new_metrics(fake_result())["metrics"]
    m["nway_topk"] = {"value": None, "label": "50-way top-1 acc. (efficientnet-lite0)", "skipped": "no WNIDs"}
    line = metrics_summary(m)
    assert "FID 50.00" in line and "KID ×10³ 5.00" in line
    assert "IS (EfficientNet-Lite0, not comparable to Inception IS) 5.00" in line
    assert "50-way top-1 acc. (efficientnet-lite0): skipped (no WNIDs)" in line
    assert "Class acc. (probe) 0.700 (chance 0.500)" in line


def test_run_result_round_trips_and_names_what_is_missing(tmp_path):
    from eegbench.results import RunResult

    data = {**fake_result(), "created": "2026-12-01T00:00:00+00:00", "backbones": {"profile": "small"}}
    result = RunResult.from_dict(data)
    assert result.protocol_hash == "p" * 16 and result.split_sha256 == "s" * 64
    assert result.extra == {"backbones": {"profile": "small"}}
    result.write(tmp_path / "result.json")
    assert json.loads((tmp_path / "result.json").read_text()) == data
    assert RunResult.read(tmp_path / "result.json") == result
    broken = {k: v for k, v in data.items() if k not in ("metrics", "split")}
    with pytest.raises(EegbenchError, match=r"x\.json: not a complete eegbench result \(missing split, metrics\)"):
        RunResult.from_dict(broken, source="x.json")
    with pytest.raises(EegbenchError, match="newer than this eegbench"):
        RunResult.from_dict({**data, "schema_version": 99})


def test_runs_with_another_recipe_never_share_a_row_and_say_why(tmp_path):
    from eegbench.results import DEFAULT_RECIPE_HASH, recipe_of, recipe_record

    plain = [fake_result(method="gwit", seed=s, fid=40.0) for s in range(2)]  # no recipe recorded: the defaults
    assert recipe_of(plain[0])["hash"] == DEFAULT_RECIPE_HASH
    tuned = []
    for s in range(2):
        r = fake_result(method="gwit", seed=s, fid=80.0)
        r["run_id"] += "-mean"
        r["method"]["config"] = {"classifier_pooling": "mean", "controlnet_steps": 1000}
        r["recipe"] = recipe_record(method_config=r["method"]["config"], overrides=["classifier_pooling"],
                                    backbones={}, backbone_overrides=[], mixed_precision="no", processes=1)
        tuned.append(r)
    bf16 = fake_result(method="gwit", seed=0, fid=60.0)
    bf16["run_id"] += "-bf16"
    bf16["mixed_precision"] = "bf16"  # an old result: rebuilt from what it records
    (path,) = compare([*plain, *tuned, bf16], tmp_path, figures=False)
    text = path.read_text()
    rows = [line.split("|")[1].strip() for line in text.split("### References")[0].splitlines()
            if line.startswith("| gwit")]
    assert sorted(set(rows)) == ["gwit", "gwit [classifier_pooling=mean]", "gwit [mixed precision bf16]"]
    assert "| gwit [classifier_pooling=mean]" in text and "| gwit [mixed precision bf16]" in text
    assert "40.00 [40.00, 40.00]" in text and "80.00 [80.00, 80.00]" in text  # never averaged together
    assert f"gwit [classifier_pooling=mean] = recipe `{tuned[0]['recipe']['hash']}`" in text
    files = sorted(p.name for p in (tmp_path / "results").rglob("*.json"))
    assert f"gwit-small-seed0-pppppppp-r{tuned[0]['recipe']['hash'][:8]}.json" in files
    assert "gwit-small-seed0-pppppppp.json" in files  # default recipes keep their file names


def test_recipe_ignores_weight_folders_and_counts_processes():
    from eegbench.results import recipe_record

    base = dict(method_config={}, overrides=[], backbone_overrides=["sd21"], mixed_precision=None, processes=None)
    a = recipe_record(backbones={"sd21": "/models/a"}, **base)
    b = recipe_record(backbones={"sd21": "/elsewhere/b"}, **base)
    assert a["hash"] == b["hash"] and a["default"] and a["text"] == "default"
    c = recipe_record(backbones={"sd21": "/models/a"}, **{**base, "processes": 4})
    assert c["hash"] != a["hash"] and c["text"] == "4 processes"
    d = recipe_record(method_config={}, overrides=[], backbones={"denoiser_steps": 50},
                      backbone_overrides=["denoiser_steps"], mixed_precision="no", processes=1)
    assert d["text"] == "backbone denoiser_steps=50" and not d["default"]


def test_cost_columns_read_device_hours_memory_and_throughput(tmp_path):
    from eegbench.leaderboard import run_cost

    cpu = fake_result(seed=0)
    cpu["durations_s"] = {"fit": 100.0, "generate": 10.0, "total": 400.0}
    cpu["stage_resources"] = {"process": {"cpu_user_s": 700.0, "cpu_sys_s": 20.0}}
    cpu["peak_memory_mb"] = {"rss_total": 2048.0}
    cost = run_cost(cpu)
    assert cost == {"device_hours": pytest.approx(0.2), "device": "CPU", "peak_memory_gb": 2.0,
                    "images_per_s": pytest.approx(10 * 2 / 10.0)}
    gpu = fake_result(seed=1)
    gpu["durations_s"] = {"fit": 100.0, "generate": 4.0, "total": 3600.0}
    gpu["peak_memory_mb"] = {"rss_total": 9000.0, "cuda_max_allocated": 20480.0}
    gpu["processes"] = 2
    gpu["protocol"]["max_test_trials"] = 4
    cost = run_cost(gpu)
    assert cost["device"] == "GPU" and cost["device_hours"] == pytest.approx(2.0)
    assert cost["peak_memory_gb"] == pytest.approx(20.0) and cost["images_per_s"] == pytest.approx(4 * 2 / 4.0)
    (path,) = compare([cpu], tmp_path, figures=False)
    text = path.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert [c.strip() for c in header.split("|")[-4:-1]] == ["Cost per run", "Peak memory (GB)", "Images/s"]
    assert "0.20 CPU-h" in text and "2.0 RSS" in text and "2.00" in text
    assert "1.50 M" in text and "3.00 M †" in text  # counted before text encoders were included
