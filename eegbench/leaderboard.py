"""Markdown leaderboards from run results (``eegbench compare``).

Runs are grouped by dataset (with its loader options, see :func:`eegbench.datasets.info.dataset_label`)
and setting (with its options); seeds of one method aggregate into
``mean ± std (n)``. Runs whose protocol or split hash differ are never put in one table: the error
names the fields that differ. Under each table, a separate block quotes the published numbers
(:mod:`eegbench.published`), clearly marked as not comparable.
"""

from __future__ import annotations

import logging

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eegbench.datasets.info import dataset_label
from eegbench.errors import EegbenchError
from eegbench.protocol import protocol_differences
from eegbench.published import published_markdown

__all__ = ["METRIC_COLUMNS", "compare", "leaderboard_markdown", "metrics_summary", "results_frame"]

#: (result metric key, default column title, decimals, scale). A column appears when any run has a
#: value for it; the title is the metric's recorded ``label`` when it has one (e.g. the IS from
#: EfficientNet-Lite0 is never titled plain "IS").
METRIC_COLUMNS = (
    ("fid", "FID", 2, 1.0),
    ("kid", "KID ×10³", 2, 1e3),
    ("is", "IS", 2, 1.0),
    ("is_effnet_lite0", "IS (EfficientNet-Lite0, not comparable to Inception IS)", 2, 1.0),
    ("is_tiny_test", "IS (tiny test projection, not a metric)", 2, 1.0),
    ("nway_topk", "n-way top-k acc.", 3, 1.0),
    ("probe_accuracy", "Class acc. (probe)", 3, 1.0),
)
_LABELLED = {"is", "is_effnet_lite0", "is_tiny_test", "nway_topk"}


def _setting_label(result: dict[str, Any]) -> str:
    split = result["split"]
    opts = split.get("options") or {}
    return split["setting"] + "".join(f"-{k}{v}" for k, v in sorted(opts.items()))


def _value(m: dict | None) -> float:
    if not m or m.get("value") is None:
        return np.nan
    return float(m["value"])


def results_frame(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per run (and evaluation) with the columns the leaderboard needs.

    A run re-scored by ``eegbench evaluate`` under its own protocol hash counts once (the newest
    result of a ``(run_id, protocol hash)`` pair is kept).
    """
    rows = []
    for r in results:
        params = r.get("parameters", {})
        row = {
            "dataset": dataset_label(r["dataset"]["name"], r["dataset"].get("options")),
            "setting": _setting_label(r),
            "method": r["method"]["name"],
            "profile": r["method"].get("profile", ""),
            "seed": r["seed"],
            "run_id": r.get("run_id", r.get("_path", "")),
            "created": (r.get("evaluation") or {}).get("created", r.get("created", "")),
            "protocol_hash": r["protocol"]["hash"],
            "split_hash": r["split"]["sha256"],
            "trainable_params": params.get("trainable_total", np.nan),
            "inference_params": params.get("inference_total", np.nan),
            "fit_s": r.get("durations_s", {}).get("fit", np.nan),
            "path": r.get("_path", ""),
            "chance": (r["metrics"].get("probe_accuracy") or {}).get("chance", np.nan),
        }
        for key, *_ in METRIC_COLUMNS:
            m = r["metrics"].get(key)
            row[key] = _value(m)
            row[f"{key}_higher_is_better"] = m.get("higher_is_better") if m else None
            row[f"{key}_label"] = m.get("label") if m else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame = frame.sort_values("created", kind="stable").drop_duplicates(["run_id", "protocol_hash"], keep="last")
    return frame.sort_index()


def _fmt(values: pd.Series, decimals: int, scale: float) -> str:
    v = values.dropna().to_numpy(dtype=float) * scale
    if len(v) == 0:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.{decimals}f}"
    return f"{v.mean():.{decimals}f} ± {v.std(ddof=1):.{decimals}f}"


def _millions(n: float) -> str:
    return "–" if n is None or (isinstance(n, float) and np.isnan(n)) else f"{n / 1e6:.2f} M"


def metrics_summary(metrics: dict[str, Any]) -> str:
    """One line with every metric of a result, each with its honest label (for the CLI)."""
    parts = []
    for key, title, dec, scale in METRIC_COLUMNS:
        m = metrics.get(key)
        if not m:
            continue
        label = (m.get("label") or title) if key in _LABELLED else title
        if m.get("value") is None:
            parts.append(f"{label}: skipped ({m.get('skipped', 'n/a')})")
            continue
        text = f"{label} {m['value'] * scale:.{dec}f}"
        if key in ("probe_accuracy", "nway_topk") and m.get("chance") is not None:
            text += f" (chance {m['chance']:.3f})"
        parts.append(text)
    return " | ".join(parts)


def leaderboard_markdown(group: pd.DataFrame, protocol: dict[str, Any], split: dict[str, Any]) -> str:
    """Markdown for one (dataset, setting) group with a single protocol and split hash."""
    dataset, setting = group["dataset"].iloc[0], group["setting"].iloc[0]
    shown = [(k, t, d, s) for k, t, d, s in METRIC_COLUMNS if group[k].notna().any()]
    titles = {}
    for key, title, *_ in shown:
        labels = group[f"{key}_label"].dropna()
        base = labels.iloc[0] if key in _LABELLED and len(labels) else title
        hib = group[f"{key}_higher_is_better"].dropna()
        arrow = ("↑" if hib.iloc[0] else "↓") if len(hib) else ""
        titles[key] = f"{base} {arrow}".strip()
    table = []
    for (method, profile), g in group.groupby(["method", "profile"], sort=True):
        row = {"Method": method, "Profile": profile, "Seeds (n)": len(g)}
        for key, _, dec, scale in shown:
            row[titles[key]] = _fmt(g[key], dec, scale)
        if "probe_accuracy" in titles:
            row["Chance (probe)"] = f"{g['chance'].iloc[0]:.3f}" if g["chance"].notna().any() else "–"
        row["Trainable params"] = _millions(g["trainable_params"].iloc[0])
        row["Inference params"] = _millions(g["inference_params"].iloc[0])
        row["Fit time (s)"] = _fmt(g["fit_s"], 0, 1.0)
        table.append(row)
    df = pd.DataFrame(table)
    notes = [
        (
            "Values are mean ± sample standard deviation over seeds (n = number of seeds). ↑ higher is better, "
            "↓ lower is better. FID/KID: torch-fidelity on TF-Inception pool3 features "
            f"(`{protocol.get('fid_feature_extractor', 'inception-v3-tf-fidhelper')}`), generated images vs one "
            "ground-truth image per test trial."
        ),
    ]
    if "is_effnet_lite0" in titles:
        notes.append("The IS column is computed from EfficientNet-Lite0 ImageNet logits because the standard "
                     "Inception weights were not supplied (`--inception-weights`): it is **not** comparable to "
                     "a published Inception Score.")
    if "nway_topk" in titles:
        notes.append(f"n-way accuracy: {protocol.get('n_way')}-way top-{protocol.get('top_k')}, "
                     f"{protocol.get('n_way_trials')} seeded distractor draws, true class = the "
                     f"`{protocol.get('classifier')}` top-1 on the ground-truth image; chance "
                     f"{(protocol.get('top_k') or 1) / (protocol.get('n_way') or 50):.3f}.")
    if "probe_accuracy" in titles:
        notes.append("Class acc. (probe) comes from a probe classifier fitted on the training stimuli; "
                     "*Chance* is 1 / number of classes.")
    notes.append("Parameter counts are computed by the harness (trainable: summed over all training stages; "
                 "inference: every module used to generate, frozen ones included).")
    lines = [
        f"# Leaderboard: {dataset}, {setting}",
        "",
        "_Generated by `eegbench compare` from run results; do not edit by hand._",
        f"_Updated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}._",
        "",
        df.to_markdown(index=False, tablefmt="github", disable_numparse=True),
        "",
        " ".join(notes),
        "",
        "## Protocol",
        "",
        f"- protocol hash `{protocol['hash']}`, split hash `{split['sha256'][:16]}`",
        (
            f"- split: {split['setting']} {split.get('options') or ''} — {split.get('source', '')}; sizes "
            f"{split.get('sizes')}"
        ),
    ]
    lines += [f"- {k}: `{v}`" for k, v in protocol.items() if k not in ("hash", "seed")]
    lines += ["", published_markdown()]
    return "\n".join(lines)


def compare(results: Sequence[dict[str, Any]], out_dir: Path, *, protocol_hash: str | None = None) -> list[Path]:
    """Write one ``leaderboard-<dataset>-<setting>.md`` per group into ``out_dir``.

    Parameters
    ----------
    results : sequence of dict
        Loaded ``result.json`` contents (runs and ``eegbench evaluate`` results).
    out_dir : Path
        Folder for the markdown files (created).
    protocol_hash : str, optional
        Keep only runs with this protocol hash (prefix match).

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    EegbenchError
        No results (``--max-steps`` smoke-test runs are left out, with a warning); or one group
        mixes protocol or split hashes (the message lists the runs per
        hash, the protocol fields that differ, and how to choose one).
    """
    if protocol_hash:
        results = [r for r in results if r["protocol"]["hash"].startswith(protocol_hash)]
    smoke = [r for r in results if r.get("max_steps")]
    if smoke:  # --max-steps runs are smoke tests: never ranked
        logging.getLogger("eegbench.leaderboard").warning(
            "left out %d --max-steps smoke-test run(s): %s", len(smoke), ", ".join(str(r["run_id"]) for r in smoke))
        results = [r for r in results if not r.get("max_steps")]
        if not results:
            raise EegbenchError("only --max-steps smoke-test runs found; they never reach a leaderboard")
    if not results:
        raise EegbenchError("no run results found; run `eegbench run ...` first or pass the runs folder")
    frame = results_frame(results)
    by_hash = {(r["protocol"]["hash"], r["split"]["sha256"]): r for r in results}
    written = []
    out_dir = Path(out_dir)
    texts = {}
    for (dataset, setting), group in frame.groupby(["dataset", "setting"], sort=True):
        hashes = group[["protocol_hash", "split_hash"]].drop_duplicates()
        if len(hashes) > 1:
            detail = "; ".join(
                f"protocol {p} / split {s[:12]}: "
                + ", ".join(str(x) for x in group[(group.protocol_hash == p) & (group.split_hash == s)].run_id)
                for p, s in hashes.itertuples(index=False)
            )
            keys = list(hashes.itertuples(index=False, name=None))
            first = by_hash[keys[0]]
            diffs = []
            for key in keys[1:]:
                other = by_hash[key]
                diffs += protocol_differences(first["protocol"], other["protocol"])
                if first["split"]["sha256"] != other["split"]["sha256"]:
                    diffs.append(f"split sha256: {first['split']['sha256'][:12]} ≠ {other['split']['sha256'][:12]}")
            differing = "; ".join(dict.fromkeys(diffs)) or "hashes only"
            raise EegbenchError(
                f"{dataset} {setting}: runs use different protocol or split hashes and cannot be compared "
                f"(differing: {differing}) ({detail}); pass --protocol HASH or move the other runs away"
            )
        p_hash, s_hash = hashes.iloc[0]
        ref = by_hash[(p_hash, s_hash)]
        slug = re.sub(r"[^A-Za-z0-9._]+", "-", f"{dataset}-{setting}").strip("-")
        texts[out_dir / f"leaderboard-{slug}.md"] = leaderboard_markdown(group, ref["protocol"], ref["split"])
    for path, text in texts.items():
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".md.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written
