"""Curves across leaderboards (:mod:`eegbench.curves`): a metric against a numeric dataset option."""

from __future__ import annotations

import copy
import math
import zlib

import numpy as np
import pytest

from eegbench.curves import curve_groups, write_curves
from eegbench.leaderboard import build_leaderboard, results_frame
from eegbench.reports import compare
from test_compare import result

N = 40


def _counts(acc: float, tag: str) -> list[int]:
    rng = np.random.default_rng(zlib.crc32(tag.encode()))
    return rng.binomial(2, acc, N).tolist()


def _with_controls(r: dict, snr: str, acc: float, shuffled: float, within: float) -> dict:
    r = copy.deepcopy(r)
    r["run_id"] += f"-snr{snr}"
    r["dataset"] = {"name": "eegnb-groundtruth", "options": {"snr_db": snr, "variant": "evoked"}}
    r["split"]["sha256"] = "g" * 64
    r["eeg_decoding"] = {"lda": {"classifier": "shrinkage-lda-binned", "balanced_accuracy": 0.5 + acc / 4,
                                 "ci_low": 0.45 + acc / 4, "ci_high": 0.55 + acc / 4, "chance": 0.5,
                                 "majority_chance": 0.5, "n_train": 100, "n_test": N}}
    probe = r["metrics"]["probe_accuracy"]

    def metrics(a, tag):
        c = _counts(a, f"{r['run_id']}/{tag}")
        return {"probe_accuracy": {**probe, "value": sum(c) / (2 * N), "per_trial_correct": c},
                "fid": dict(r["metrics"]["fid"])}

    r["metrics"] = metrics(acc, "real")
    if r["method"]["name"] != "class-prior":
        r["controls"] = {"shuffled_eeg": {"metrics": metrics(shuffled, "shuffled")},
                         "block_shuffled_eeg": {"metrics": metrics(within, "within")}}
    else:
        r["method"]["role"] = "reference"
    return r


def _results():
    out = []
    for snr, acc in (("-inf", 0.5), ("0", 0.75), ("10", 0.95)):
        for seed in (0, 1):
            out.append(_with_controls(result("synapse", seed=seed), snr, acc, 0.5, 0.5))
            out.append(_with_controls(result("drifty", seed=seed), snr, acc, 0.5, acc))
            out.append(_with_controls(result("class-prior", seed=seed), snr, 0.5, 0.5, 0.5))
    return out


def test_leaderboards_that_differ_only_in_snr_are_joined_into_one_curve(tmp_path):
    written = compare(_results(), tmp_path / "reports", results_dir=tmp_path / "reports" / "results",
                      figures=False)
    (curve,) = [p for p in written if p.name.startswith("curve-")]
    assert curve.name == "curve-eegnb-groundtruth-variantevoked-multi-subject-snr_db.md"
    text = curve.read_text()
    # rows in SNR order, −∞ first; verdicts: synapse reads the stimulus at 10 dB, drifty is flagged
    assert text.index("| −∞") < text.index("| 0 ") < text.index("| 10 ")
    lines = [ln for ln in text.splitlines() if ln.startswith("| 10 ")]
    assert any("synapse" in ln and "stimulus" in ln for ln in lines)
    assert any("drifty" in ln and "⚠ recording block only" in ln for ln in lines)
    assert any("class-prior (reference)" in ln for ln in text.splitlines())
    assert "EEG decoding ceiling" in text and "snr_db = −∞: balanced accuracy" in text


def test_curve_figure_is_drawn_and_redrawing_changes_nothing(tmp_path):
    frame = results_frame(_results())
    by_hash = {(r["protocol"]["hash"], r["split"]["sha256"]): r for r in _results()}
    boards = [build_leaderboard(g, by_hash) for _, g in frame.groupby(["dataset", "setting"], sort=True)]
    ((name, setting, key, rest, items),) = curve_groups(boards)
    assert (name, key, rest) == ("eegnb-groundtruth", "snr_db", {"variant": "evoked"})
    assert [v for v, _ in items] == [-math.inf, 0.0, 10.0]
    paths = write_curves(boards, tmp_path)
    png = next(p for p in paths if p.suffix == ".png")
    assert png.stat().st_size > 10_000
    before = {p: p.read_bytes() for p in paths}
    write_curves(boards, tmp_path)
    assert {p: p.read_bytes() for p in paths} == before


def test_a_single_value_makes_no_curve():
    results = [r for r in _results() if r["dataset"]["options"]["snr_db"] == "0"]
    frame = results_frame(results)
    by_hash = {(r["protocol"]["hash"], r["split"]["sha256"]): r for r in results}
    boards = [build_leaderboard(g, by_hash) for _, g in frame.groupby(["dataset", "setting"], sort=True)]
    assert curve_groups(boards) == []


def test_negative_and_positive_option_values_get_distinct_files():
    from eegbench.leaderboard import _slug

    assert _slug("eegnb-groundtruth[snr_db=-10]-multi-subject") != _slug("eegnb-groundtruth[snr_db=10]-multi-subject")
    assert _slug("eegnb-groundtruth[snr_db=-inf]") == "eegnb-groundtruth-snr_db-neginf"
    assert _slug("eegnb-n170-multi-subject") == "eegnb-n170-multi-subject"
