"""`eegbench compare`: durable results, paired statistics, per-subject tables, exports, figures, grid."""

from __future__ import annotations

import json
import logging
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eegbench.cli import main
from eegbench.leaderboard import load_committed
from eegbench.reports import compare
from eegbench.results import load_results, write_json_atomic
from eegbench.stats import holm, paired_test

N_TRIALS = 40


def result(method="synapse", seed=0, fid=50.0, acc=0.7, subject=None, split="s" * 64, n_trials=N_TRIALS):
    """A made-up result with per-trial probe counts whose accuracy is ``acc`` (two samples per trial)."""
    # a stable seed: hash() of a str tuple changes between processes (PYTHONHASHSEED)
    rng = np.random.default_rng(zlib.crc32(f"{method}/{seed}/{subject}".encode()))
    correct = rng.binomial(2, acc, n_trials).tolist()
    return {
        "schema_version": 1,
        "run_id": f"{method}-s{seed}" + ("" if subject is None else f"-sub{subject}"),
        "created": f"2026-12-01T00:00:{seed:02d}+00:00",
        "method": {"name": method, "version": "0.1", "profile": "small", "config": {"steps": 1}},
        "dataset": {"name": "eegnb-n170"},
        "split": {"setting": "single-subject" if subject is not None else "multi-subject",
                  "options": {} if subject is None else {"subject": subject},
                  "sha256": split if subject is None else f"{subject}" * 64, "sizes": {"test": n_trials},
                  "source": "recording-level"},
        "protocol": {"hash": "p" * 16, "n_samples_per_trial": 2, "image_size": 8},
        "seed": seed,
        "metrics": {
            "fid": {"value": fid, "higher_is_better": False, "label": "FID"},
            "probe_accuracy": {"value": sum(correct) / (2 * n_trials), "higher_is_better": True, "chance": 0.5,
                               "label": "Class acc. (probe)", "per_trial_correct": correct,
                               "per_trial_total": [2] * n_trials, "trial_ids_sha256": "t" * 64},
        },
        "parameters": {"trainable_total": 1_000_000, "inference_total": 2_000_000},
        "durations_s": {"fit": 10.0},
        "config": {"data_root": "/somewhere/local"},
        "artifacts": {"samples": "samples"},
        "training_history": [{"stage": "train", "step": 1, "loss": 1.0}],
    }


def write_run(runs_dir, r, *, images=True):
    """A run folder with result.json, train_log.jsonl and (optionally) tiny samples + references."""
    run = runs_dir / r["run_id"]
    write_json_atomic(run / "result.json", r)
    (run / "train_log.jsonl").write_text(
        "\n".join(json.dumps({"stage": "train", "step": s, "loss": 1.0 / s}) for s in range(1, 6)) + "\n")
    if images:
        rows = []
        for i in range(N_TRIALS):
            label = i % 2
            tid = f"s01/r1/e{i:04d}"
            ref = f"reference/e{i:04d}.png"
            (run / "reference").mkdir(parents=True, exist_ok=True)
            (run / "samples").mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (255 * label, 0, 0)).save(run / ref)
            for k in range(2):
                path = f"samples/e{i:04d}_{k}.png"
                Image.new("RGB", (8, 8), (0, 40 * k + i, 0)).save(run / path)
                rows.append({"trial_id": tid, "sample_index": k, "label": label,
                             "class_name": ["house", "face"][label], "subject": 1, "image_id": f"img{i}",
                             "path": path, "reference_path": ref})
        pd.DataFrame(rows).to_csv(run / "samples" / "manifest.csv", index=False)
    return run


def four_methods(tmp_path, seeds=(0, 1, 2)):
    runs = tmp_path / "runs"
    for m, fid in (("alpha", 40.0), ("beta", 60.0), ("gamma", 80.0), ("delta", 100.0)):
        for s in seeds:
            write_run(runs, result(m, s, fid=fid + s))
    return runs


def test_committed_results_survive_a_local_duplicate_and_are_named(tmp_path, caplog):
    runs = four_methods(tmp_path)
    reports = tmp_path / "reports"
    (md,) = compare(load_results([runs]), reports)
    committed = sorted(p.name for p in (reports / "results" / "eegnb-n170-multi-subject").iterdir())
    assert len(committed) == 12 and "alpha-small-seed0-pppppppp.json" in committed
    compact = json.loads((reports / "results" / "eegnb-n170-multi-subject" / committed[0]).read_text())
    assert "config" not in compact and "artifacts" not in compact and compact["compact"]["run_id"]
    assert [x["step"] for x in compact["training_log"]] == [1, 2, 3, 4, 5]  # the whole train_log.jsonl
    before = {p: p.read_bytes() for p in reports.rglob("*") if p.is_file()}

    # a fresh checkout: runs/ is gone, one new local run of alpha seed 0 with other numbers
    fresh = tmp_path / "fresh"
    dup = result("alpha", 0, fid=999.0)
    dup["run_id"] = "alpha-again"
    write_run(fresh, dup)
    with caplog.at_level(logging.WARNING, logger="eegbench.leaderboard"):
        compare(load_results([fresh]), reports)
    assert "alpha-again duplicates committed alpha-s0" in caplog.text and "--replace" in caplog.text
    after = {p: p.read_bytes() for p in reports.rglob("*") if p.is_file()}
    assert after == before  # no row lost, not even a byte changed
    assert "999" not in md.read_text()

    # a new seed is added; --replace replaces explicitly
    write_run(fresh, result("alpha", 3, fid=41.0))
    compare(load_results([fresh]), reports)
    assert len(load_committed(reports / "results")) == 13
    compare(load_results([fresh]), reports, replace=True)
    kept = load_committed(reports / "results")
    assert len(kept) == 13
    assert [r["metrics"]["fid"]["value"] for r in kept if r["run_id"] == "alpha-again"] == [999.0]
    assert "| alpha    | small     | 4           | 280.75 [" in md.read_text()  # (999 + 41 + 42 + 41) / 4


def test_compare_twice_on_the_same_results_changes_no_file(tmp_path):
    runs = four_methods(tmp_path)
    reports = tmp_path / "reports"
    compare(load_results([runs]), reports, formats=("markdown", "csv", "json"))
    first = {p: p.read_bytes() for p in reports.rglob("*") if p.is_file()}
    compare(load_results([runs]), reports, formats=("markdown", "csv", "json"))
    assert {p: p.read_bytes() for p in reports.rglob("*") if p.is_file()} == first
    # and with the local runs gone, the committed results alone rebuild the same tables and figures
    compare([], reports, formats=("markdown", "csv", "json"))
    assert {p: p.read_bytes() for p in reports.rglob("*") if p.is_file()} == first


def _pairs(reports):
    return pd.read_csv(reports / "leaderboard-eegnb-n170-multi-subject-pairs.csv")


def test_significance_matches_scipy_and_holm_and_identical_methods_are_not_different(tmp_path):
    # eight seeds: alpha is clearly better (lower FID) than beta; gamma is an exact copy of alpha
    runs = tmp_path / "runs"
    rng = np.random.default_rng(1)
    values = {}
    for s in range(8):
        base = 50.0 + rng.normal()
        values.setdefault("alpha", []).append(base)
        values.setdefault("beta", []).append(base + 10.0 + rng.normal())
        values.setdefault("gamma", []).append(base)
    for m, vals in values.items():
        for s, v in enumerate(vals):
            r = result(m, s, fid=v)
            if m == "gamma":
                r["metrics"]["probe_accuracy"] = result("alpha", s)["metrics"]["probe_accuracy"]
            write_run(runs, r, images=False)
    reports = tmp_path / "reports"
    compare(load_results([runs]), reports, formats=("markdown", "csv"))
    pairs = _pairs(reports)
    fid = pairs[pairs.metric == "fid"].set_index(["a", "b"])
    expected = {(a, b): paired_test(values[a], values[b])["p"]
                for a, b in [("alpha", "beta"), ("alpha", "gamma"), ("beta", "gamma")]}
    for (a, b), p in expected.items():
        assert fid.loc[(a, b), "p"] == pytest.approx(p)
    assert expected[("alpha", "beta")] == pytest.approx(2 / 256)  # every difference has the same sign
    adjusted = holm(list(expected.values()))
    np.testing.assert_allclose(fid["p_holm"].to_numpy(), adjusted)
    assert bool(fid.loc[("alpha", "beta"), "significant"]) and fid.loc[("alpha", "beta"), "better"] == "alpha"
    assert fid.loc[("alpha", "beta"), "n"] == 8 and fid.loc[("alpha", "beta"), "mean_diff"] < -5
    # identical methods: p = 1, not significant, in every metric
    same = pairs.set_index(["a", "b"]).loc[("alpha", "gamma")]
    assert (same["p"] == 1.0).all() and not same["significant"].any() and (same["mean_diff"] == 0).all()
    text = (reports / "leaderboard-eegnb-n170-multi-subject.md").read_text()
    assert "## Significance" in text and "**Δ -" in text  # alpha vs beta in bold
    assert "Holm" in text


def test_three_seeds_say_that_no_difference_can_be_significant(tmp_path):
    runs = four_methods(tmp_path)
    compare(load_results([runs]), tmp_path / "reports")
    text = (tmp_path / "reports" / "leaderboard-eegnb-n170-multi-subject.md").read_text()
    assert "smallest attainable p is 0.250" in text
    table = text.split("## Significance")[0]
    assert "| Seeds (n)" in table and "| 3 " in table
    # FID intervals over seeds (t), accuracy intervals over test trials (bootstrap)
    assert "percentile bootstraps over test trials" in text and "Student-t intervals over seeds" in text


def test_exports_carry_every_cell_with_interval_and_n(tmp_path):
    runs = four_methods(tmp_path)
    reports = tmp_path / "reports"
    paths = compare(load_results([runs]), reports, formats=("csv", "json"))
    assert [p.name for p in paths] == ["leaderboard-eegnb-n170-multi-subject.csv",
                                       "leaderboard-eegnb-n170-multi-subject-pairs.csv",
                                       "leaderboard-eegnb-n170-multi-subject.json"]
    assert not (reports / "leaderboard-eegnb-n170-multi-subject.md").exists()  # markdown only when asked
    cells = pd.read_csv(paths[0])
    assert set(cells.metric) == {"fid", "probe_accuracy"} and (cells.n == 3).all()
    acc = cells[(cells.metric == "probe_accuracy") & (cells.method == "alpha")].iloc[0]
    assert acc.interval == "bootstrap over test trials" and acc.ci_low < acc["mean"] < acc.ci_high
    fid = cells[(cells.metric == "fid") & (cells.method == "alpha")].iloc[0]
    assert fid.interval == "t over seeds" and fid["mean"] == pytest.approx(41.0)
    data = json.loads(paths[2].read_text())
    assert {m["key"] for m in data["metrics"]} == {"fid", "probe_accuracy"} and len(data["pairs"]) == 12
    assert len(data["runs"]) == 12


def test_per_subject_tables_and_their_mean(tmp_path):
    runs = tmp_path / "runs"
    for subj, shift in ((1, 0.0), (2, 10.0)):
        for m, fid in (("alpha", 40.0), ("beta", 60.0)):
            for s in (0, 1):
                write_run(runs, result(m, s, fid=fid + shift + s, subject=subj), images=False)
    (md,) = compare(load_results([runs]), tmp_path / "reports")
    assert md.name == "leaderboard-eegnb-n170-single-subject.md"  # every subject in one leaderboard
    text = md.read_text()
    assert "## Mean over subjects" in text and "### Subject 1" in text and "### Subject 2" in text
    assert "| Subjects × seeds (n)" in text
    # alpha: subject means 40.5 and 50.5 -> 45.50 over subjects; in subject 2 alone 50.50
    assert "| alpha    | small     | 4 " in text and "45.50 [" in text
    per_subject = text.split("### Subject 2")[1].split("## Significance")[0]
    assert "50.50 [" in per_subject
    pairs = _pairs_single(tmp_path / "reports")
    assert (pairs[pairs.metric == "fid"].n == 4).all()  # paired over subject × seed


def _pairs_single(reports):
    compare(load_results([reports.parent / "runs"]), reports, formats=("csv",))
    return pd.read_csv(reports / "leaderboard-eegnb-n170-single-subject-pairs.csv")


def test_figures_and_grid_are_written_and_linked(tmp_path):
    runs = four_methods(tmp_path)
    reports = tmp_path / "reports"
    (md,) = compare(load_results([runs]), reports)
    text = md.read_text()
    figs = reports / "figures"
    for name in ("scores", "significance", "training"):
        assert (figs / f"eegnb-n170-multi-subject-{name}.png").stat().st_size > 1000
        assert (figs / f"eegnb-n170-multi-subject-{name}.svg").is_file()
        assert f"figures/eegnb-n170-multi-subject-{name}.png" in text
    grid = figs / "eegnb-n170-multi-subject-grid.png"
    meta = json.loads(grid.with_suffix(".json").read_text())
    assert "figures/eegnb-n170-multi-subject-grid.png" in text
    assert [r["label"] for r in meta["rows"]] == ["ground truth", "alpha", "beta", "delta", "gamma"]
    assert all(r["seed"] == 0 for r in meta["rows"][1:])  # each method's lowest seed
    labels = [int(t.rsplit("e", 1)[1]) % 2 for t in meta["trials"]]
    assert len(meta["trials"]) == 8 and labels.count(0) == labels.count(1) == 4  # stratified by class
    with Image.open(grid) as im:
        assert im.size[0] > 8 * 8 and im.size[1] > 5 * 8
    # without local samples (a fresh checkout) the committed grid is kept as it is
    data = grid.read_bytes()
    compare([], reports)
    assert grid.read_bytes() == data and "Side by side" in md.read_text()


def test_cli_compare_formats_and_errors(tmp_path, capsys):
    runs = four_methods(tmp_path, seeds=(0,))
    out = tmp_path / "reports"
    assert main(["compare", str(runs), "--out", str(out), "--format", "csv,json", "--no-figures"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "leaderboard-eegnb-n170-multi-subject.csv"),
                       str(out / "leaderboard-eegnb-n170-multi-subject-pairs.csv"),
                       str(out / "leaderboard-eegnb-n170-multi-subject.json")]
    fresh = tmp_path / "fresh"
    dup = result("alpha", 0, fid=1.0)
    dup["run_id"] = "alpha-again"
    write_run(fresh, dup, images=False)
    assert main(["compare", str(fresh), "--out", str(out), "--format", "csv", "--no-figures"]) == 0
    assert "eegbench: local run alpha-again duplicates committed alpha-s0" in capsys.readouterr().err
    assert main(["compare", str(runs), "--out", str(out), "--format", "html"]) == 2
    assert "--format html" in capsys.readouterr().err
    bad = out / "results" / "eegnb-n170-multi-subject" / "broken.json"
    bad.write_text("{}")
    assert main(["compare", str(runs), "--out", str(out)]) == 2
    assert "broken.json: not an eegbench compact result" in capsys.readouterr().err


def test_edge_cases_two_profiles_unequal_subjects_non_finite_and_broken_samples(tmp_path, caplog):
    # one method at two profiles: two entries, never one pooled cell
    runs = tmp_path / "runs"
    for s in (0, 1):
        write_run(runs, result("alpha", s, fid=40.0), images=False)
        r = result("alpha", s, fid=90.0)
        r["method"]["profile"], r["run_id"] = "paper", f"alpha-paper-{s}"
        write_run(runs, r, images=False)
    paths = compare(load_results([runs]), tmp_path / "a", formats=("csv",))
    cells = pd.read_csv(paths[0])
    fid = cells[cells.metric == "fid"].set_index("method")["mean"]
    assert fid["alpha (small)"] == 40.0 and fid["alpha (paper)"] == 90.0

    # methods on different subjects are flagged; an infinite FID is left out with a warning
    runs = tmp_path / "runs2"
    for subj in (1, 2, 3):
        write_run(runs, result("alpha", 0, fid=40.0 + subj, subject=subj), images=False)
    bad = result("beta", 0, fid=float("inf"), subject=1)
    write_run(runs, bad, images=False)
    write_run(runs, result("beta", 1, fid=60.0, subject=1), images=False)
    with caplog.at_level(logging.WARNING, logger="eegbench.leaderboard"):
        (md,) = compare(load_results([runs]), tmp_path / "b")
    assert "fid = inf is not finite" in caplog.text
    text = md.read_text()
    assert "Not every method was run on the same subjects" in text and "alpha: 1, 2, 3; beta: 1" in text

    # a run folder with an unreadable manifest costs only the grid
    runs = four_methods(tmp_path / "c", seeds=(0,))
    (runs / "beta-s0" / "samples" / "manifest.csv").write_text("")
    with caplog.at_level(logging.WARNING, logger="eegbench.figures"):
        (md,) = compare(load_results([runs]), tmp_path / "c" / "reports")
    assert "side-by-side grid" in caplog.text and "## Significance" in md.read_text()


def test_reference_accuracy_is_not_called_a_ceiling_when_the_probe_saw_the_test_images(tmp_path):
    r = result()
    r["metrics"]["probe_accuracy"]["reference_in_probe_training"] = True
    (md,) = compare([r], tmp_path / "a", figures=False)
    assert "is a fit, not a ceiling" in md.read_text()
    (md,) = compare([result()], tmp_path / "b", figures=False)
    assert "not a ceiling" not in md.read_text()


def _with_control(r, shuffled_acc, seed):
    """Add a shuffled-EEG control (per-trial probe counts at ``shuffled_acc``) and a decoding ceiling."""
    rng = np.random.default_rng(seed + 100)
    correct = rng.binomial(2, shuffled_acc, N_TRIALS).tolist()
    r["controls"] = {"shuffled_eeg": {"n_own_eeg": 0, "metrics": {
        "fid": {"value": r["metrics"]["fid"]["value"] + 5.0, "higher_is_better": False, "label": "FID"},
        "probe_accuracy": {"value": sum(correct) / (2 * N_TRIALS), "higher_is_better": True, "chance": 0.5,
                           "label": "Class acc. (probe)", "per_trial_correct": correct,
                           "per_trial_total": [2] * N_TRIALS, "trial_ids_sha256": "t" * 64}}}}
    r["eeg_decoding"] = {"lda": {"classifier": "shrinkage-lda-binned", "balanced_accuracy": 0.61, "ci_low": 0.55,
                                 "ci_high": 0.67, "chance": 0.5, "majority_chance": 0.5, "n_train": 100,
                                 "n_test": N_TRIALS},
                         "xdawn_ts": {"classifier": "xdawn-covariances-tangent-space-logreg", "skipped": "test"}}
    return r


def test_controls_references_and_ceiling_reach_the_leaderboard(tmp_path):
    from eegbench.stats import bootstrap_trials

    runs = tmp_path / "runs"
    results = []
    for s in range(3):
        results.append(_with_control(result("alpha", s, acc=0.9), 0.5, s))
        results.append(_with_control(result("beta", s, acc=0.5), 0.5, s))
        oracle = result("oracle-class", s, acc=1.0)
        oracle["method"].update(role="reference", reads_eeg=False, reads_test_labels=True)
        oracle["controls"] = {"shuffled_eeg": {"skipped": "reads no EEG"}}
        results.append(oracle)
    for r in results:
        write_run(runs, r, images=False)
    compare(load_results([runs]), tmp_path / "reports", formats=("markdown", "json"), figures=False)
    md = (tmp_path / "reports" / "leaderboard-eegnb-n170-multi-subject.md").read_text()
    board = json.loads((tmp_path / "reports" / "leaderboard-eegnb-n170-multi-subject.json").read_text())
    cells = {(c["method"], c["metric"]): c for c in board["cells"]}
    # Δ of a per-trial metric: bootstrap of the paired real − shuffled difference over the same trials
    alpha = [r for r in results if r["method"]["name"] == "alpha"]
    groups = [[(r["metrics"]["probe_accuracy"]["per_trial_correct"], r["metrics"]["probe_accuracy"]["per_trial_total"],
                r["controls"]["shuffled_eeg"]["metrics"]["probe_accuracy"]["per_trial_correct"],
                r["controls"]["shuffled_eeg"]["metrics"]["probe_accuracy"]["per_trial_total"]) for r in alpha]]
    lo, hi = bootstrap_trials(groups, seed=0)
    d = cells[("alpha", "probe_accuracy@delta")]
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((lo, hi)) and d["ci_low"] > 0
    assert d["interval"] == "bootstrap over test trials"
    beta = cells[("beta", "probe_accuracy@delta")]
    assert beta["ci_low"] <= 0 <= beta["ci_high"]
    # FID Δ per run (real − shuffled = −5 each seed), t over seeds
    assert cells[("alpha", "fid@delta")]["mean"] == pytest.approx(-5.0)
    # the EEG-use table: alpha's class Δ is bold (interval excludes 0), beta's is not
    use = md.split("## Does the method use the EEG?")[1].split("##")[0]
    alpha_row = next(line for line in use.splitlines() if line.startswith("| alpha") and "Class acc." in line)
    beta_row = next(line for line in use.splitlines() if line.startswith("| beta") and "Class acc." in line)
    assert "**" in alpha_row and "**" not in beta_row
    # the reference has its own block, is never in the main table or a pair, and says what it reads
    main_table = md.split("### References (not ranked)")[0]
    assert "| oracle-class" not in main_table and "| alpha" in main_table
    refs = md.split("### References (not ranked)")[1].split("##")[0]
    assert "| oracle-class" in refs and "test labels (by design)" in refs
    assert board["references"] == ["oracle-class"]
    assert all("oracle-class" not in (p["a"], p["b"]) for p in board["pairs"])
    # the decoding ceiling above the tables and in the protocol block
    assert md.index("**EEG decoding ceiling**") < md.index("| Method")
    assert "shrinkage LDA on binned epochs: 0.610 [0.550, 0.670]" in md and "not run (test)" in md
    assert board["eeg_decoding"]["all"]["lda"]["balanced_accuracy"] == 0.61
    assert "- controls: `shuffled-eeg`" not in md  # this made-up protocol lists no controls
    assert "- references: `class-prior` reads the training labels only" in md


def test_a_small_consistent_delta_is_shown_with_enough_decimals_to_read_nonzero(tmp_path):
    from eegbench.leaderboard import Cell, _delta_decimals

    tiny = Cell(mean=0.0031, low=0.0012, high=0.0050, n=3, std=0.001, interval="t over seeds")
    assert _delta_decimals(tiny, 2, 1.0) == 3  # 0.00 [0.00, 0.01] would hide the sign of the bound
    spans_zero = Cell(mean=0.0031, low=-0.001, high=0.007, n=3, std=0.004, interval="t over seeds")
    assert _delta_decimals(spans_zero, 2, 1.0) == 2  # not bold: the metric's own decimals
    # end to end: shuffled FID a steady 0.003 worse than real in every seed
    results = []
    for s in range(3):
        r = _with_control(result("alpha", s, fid=50.0 + s), 0.5, s)
        r["controls"]["shuffled_eeg"]["metrics"]["fid"]["value"] = 50.0 + s + 0.003 + 0.0002 * s
        results.append(r)
    (md,) = compare(results, tmp_path / "reports", figures=False)
    use = md.read_text().split("## Does the method use the EEG?")[1].split("##")[0]
    row = next(line for line in use.splitlines() if line.startswith("| alpha") and "FID" in line)
    delta = row.split("|")[-3].strip()
    assert delta.startswith("**-0.003") and "0.00 [0.00" not in delta, row


def test_collapse_table_shows_a_value_shared_by_every_run_without_an_interval(tmp_path):
    results = []
    for s in range(3):
        r = result("alpha", s)
        r["metrics"]["probe_accuracy"].update(balanced_accuracy=0.5 + 0.01 * s, majority_chance=0.5)
        results.append(r)
    (md,) = compare(results, tmp_path / "reports", figures=False)
    table = md.read_text().split("## Class accuracy and collapse")[1].split("##")[0]
    row = next(line for line in table.splitlines() if line.startswith("| alpha"))
    cells = [c.strip() for c in row.split("|")]
    assert "0.510 [" in cells[3]  # balanced accuracy varies over seeds: mean [t interval]
    assert cells[4] == "–" and cells[5] == "0.500"  # no shuffled control; majority chance is the same in every run
    assert "Student-t 95 % interval over runs" in table


def test_a_mean_that_rounds_to_zero_has_no_minus_sign():
    from eegbench.leaderboard import Cell, _fmt_cell

    c = Cell(mean=-0.0004, low=-0.02, high=0.019, n=3, std=0.01, interval="t over seeds")
    assert _fmt_cell(c, 2, 1.0) == "0.00 [-0.02, 0.02]"
