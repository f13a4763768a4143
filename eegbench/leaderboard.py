"""Leaderboards from run results (``eegbench compare``): tables, statistics, figures, durable results.

What ``eegbench compare`` (:func:`eegbench.reports.compare`) does:

1. **Durable results.** Every run that feeds a leaderboard is kept in the repository in compact form
   (:func:`compact_result`: its ``result.json`` without the run-local paths and duplicated config,
   with its full training log) under ``<out>/results/<leaderboard>/``. Tables are built from those
   committed results plus the local runs given. A local run never silently replaces a committed one
   of the same method, profile, seed and subject under the same protocol and split: the committed one
   is kept and both are named in a warning, unless ``replace=True`` (``--replace``).
2. **Groups.** Runs are grouped by dataset (with its loader options, see
   :func:`eegbench.datasets.info.dataset_label`) and setting (with its options other than the
   subject). Single- and cross-subject runs of every subject share one leaderboard, with one table per
   subject and a table of the mean over subjects. Runs whose protocol hashes differ, or whose split
   hashes differ for one subject, are never put in one table: the error names the fields that differ.
3. **Statistics** (:mod:`eegbench.stats`). Every cell is a mean with a 95 % interval and ``n``;
   every pair of methods is compared per metric over its paired units (seeds; subject × seed) with
   an exact sign-flip permutation test, Holm-corrected over the pairs of the metric, with the mean
   difference and Cohen's d_z as effect sizes.
4. **Figures** (:mod:`eegbench.figures`, PNG and SVG under ``<out>/figures/``): scores with per-unit
   points and intervals, the significance matrices, training curves per method and stage, and one
   side-by-side grid of the same test trials across methods, all linked from the markdown.
5. **Exports**: ``markdown`` (default), ``csv`` and ``json``.
6. **Curves** (:mod:`eegbench.curves`): leaderboards of one dataset and setting that differ only in a
   numeric dataset option (``eegnb-groundtruth``'s ``snr_db``) are joined into
   ``<out>/curve-<dataset>-<setting>-<option>.md`` and its figure: every metric against the option,
   per method with its controls, the references and the EEG decoding ceiling.

Files are only rewritten when their content changes, so re-running ``compare`` on the same results
leaves a checkout unmodified. Under each table a separate block quotes the published numbers
(:mod:`eegbench.published`), clearly marked as not comparable.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eegbench import stats
from eegbench.datasets.info import dataset_label
from eegbench.errors import EegbenchError
from eegbench.protocol import protocol_differences
from eegbench.published import published_markdown
from eegbench.results import DEFAULT_RECIPE_HASH, INFERENCE_CONVENTION, read_train_log, recipe_of, run_dir_of

__all__ = [
    "METRIC_COLUMNS", "Leaderboard", "compact_result", "leaderboard_markdown",
    "load_committed", "metrics_summary", "results_frame",
]

log = logging.getLogger("eegbench.leaderboard")

#: Columns of results written before metric records carried their metadata: (result metric key,
#: default column title, decimals, scale). Newer records carry ``label``, ``higher_is_better``,
#: ``interval``, ``decimals`` and ``scale`` (:meth:`eegbench.metric.Metric.metadata`), and the
#: leaderboard takes every column from there, in the protocol's metric order, a plugin's included.
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
#: Legacy metrics whose results carry per-trial counts: their intervals bootstrap over test trials.
_PER_TRIAL = {"nway_topk", "probe_accuracy"}
#: Suffixes of the shuffled-EEG control's columns: its values, and real minus shuffled.
SHUFFLED, DELTA = "@shuffled", "@delta"
#: Suffixes of the within-block shuffled-EEG control (datasets with recording blocks): its values,
#: and real minus within-block shuffled.
BLOCK, BLOCK_DELTA = "@blockshuffled", "@blockdelta"
#: ``result["controls"]`` key of each suffix.
_CONTROL_OF = {SHUFFLED: "shuffled_eeg", DELTA: "shuffled_eeg", BLOCK: "block_shuffled_eeg",
               BLOCK_DELTA: "block_shuffled_eeg"}
#: Setting options that name the subject: runs of every subject share one leaderboard.
_SUBJECT_OPTIONS = ("subject",)
COMPACT_FORMAT = "eegbench-compact-result-1"
ALPHA = 0.05
FORMATS = ("markdown", "csv", "json")


# ----------------------------------------------------------------------------------------------
# durable (compact) results


def compact_result(result: dict[str, Any]) -> dict[str, Any]:
    """The durable form of a run result, as committed under ``reports/results/``.

    Kept: everything a leaderboard, its statistics and figures need and what describes the run
    (method and config, dataset, split, protocol, seed, metrics with their per-trial counts,
    parameters, durations, resources, environment, fingerprint). Dropped: the resolved ``config``
    block (local paths; the method config is kept under ``method.config``), ``artifacts``, the
    per-process fingerprints and run-local paths. ``training_history`` (the last 50 log records)
    is replaced by the run's whole ``train_log.jsonl`` as ``training_log`` when the run folder is
    at hand.

    Parameters
    ----------
    result : dict
        A loaded ``result.json`` (of a run, or of ``eegbench evaluate``), or an already compact one
        (returned unchanged).

    Returns
    -------
    dict
        A new dict with ``compact`` = ``{"format", "run_id", "source"}`` added.
    """
    if result.get("compact"):
        return {k: v for k, v in result.items() if k != "_path"}
    out = {k: copy.deepcopy(v) for k, v in result.items()
           if k not in ("config", "artifacts", "_path", "training_history")}
    out["recipe"] = recipe_of(result)  # read from ``config`` where an older run recorded no recipe
    if isinstance(out.get("fit_fingerprint"), dict):
        out["fit_fingerprint"].pop("per_process", None)
    if isinstance(out.get("evaluation"), dict):
        for key in ("run_dir", "result_path"):
            out["evaluation"].pop(key, None)
    history = read_train_log(run_dir_of(result))
    out["training_log"] = history if history is not None else copy.deepcopy(result.get("training_history", []))
    source = "evaluation" if result.get("evaluation") else "run"
    out["compact"] = {"format": COMPACT_FORMAT, "run_id": result.get("run_id"), "source": source}
    return out


def load_committed(results_dir: Path) -> list[dict[str, Any]]:
    """Load the compact results under ``results_dir`` (``*/*.json``; missing folder → empty list).

    Raises
    ------
    EegbenchError
        A file that is not JSON or not a compact result (names the file).
    """
    results_dir = Path(results_dir)
    out = []
    if not results_dir.is_dir():
        return out
    for f in sorted(results_dir.glob("*/*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EegbenchError(f"{f}: not a readable compact result ({exc})") from None
        if not isinstance(data, dict) or (data.get("compact") or {}).get("format") != COMPACT_FORMAT:
            raise EegbenchError(f"{f}: not an eegbench compact result (no compact.format {COMPACT_FORMAT!r})")
        data["_path"] = str(f)
        out.append(data)
    return out


# ----------------------------------------------------------------------------------------------
# one row per result


def _setting(result: dict[str, Any]) -> tuple[str, int | None]:
    split = result["split"]
    opts = dict(split.get("options") or {})
    subject = None
    for key in _SUBJECT_OPTIONS:
        if opts.get(key) is not None:
            subject = int(opts.pop(key))
    return split["setting"] + "".join(f"-{k}{v}" for k, v in sorted(opts.items())), subject


def _value(m: dict | None, key: str = "", run_id: Any = "") -> float:
    if not m or m.get("value") is None:
        return np.nan
    v = float(m["value"])
    if not math.isfinite(v):
        log.warning("run %s: %s = %s is not finite; left out of the table and the tests", run_id, key, v)
        return np.nan
    return v


def _shuffled_metrics(result: dict[str, Any], control_key: str = "shuffled_eeg") -> dict[str, Any] | None:
    """A control's metric records of a result (default the shuffled-EEG control; ``block_shuffled_eeg``:
    the within-block one), or None when it has none."""
    control = (result.get("controls") or {}).get(control_key) or {}
    metrics = control.get("metrics")
    return metrics if isinstance(metrics, dict) else None


@dataclass(frozen=True)
class MetricSpec:
    """How the leaderboard shows one metric, read from the metadata stored in the results.

    Attributes
    ----------
    key : str
        Result key.
    label : str
        Column title without the direction arrow.
    higher_is_better : bool or None
    decimals : int
    scale : float
    interval : {"runs", "trials"}
        ``"trials"``: per-trial values in the records, bootstrap over test trials.
    """

    key: str
    label: str
    higher_is_better: bool | None
    decimals: int
    scale: float
    interval: str

    @property
    def title(self) -> str:
        arrow = "" if self.higher_is_better is None else ("↑" if self.higher_is_better else "↓")
        return f"{self.label} {arrow}".strip()


def metric_specs(results: Iterable[dict[str, Any]]) -> list[MetricSpec]:
    """Every metric the results record, in the order of their metric blocks (the protocol's order).

    Label, direction, decimals, scale and interval come from each record's metadata; records
    written before metrics carried it fall back to :data:`METRIC_COLUMNS`.
    """
    legacy = {k: (t, d, sc) for k, t, d, sc in METRIC_COLUMNS}
    found: dict[str, dict[str, Any]] = {}
    for r in results:
        for key, m in (r.get("metrics") or {}).items():
            if not isinstance(m, dict):
                continue
            spec = found.setdefault(key, {})
            for field_name in ("label", "higher_is_better", "decimals", "scale", "interval"):
                if spec.get(field_name) is None and m.get(field_name) is not None:
                    spec[field_name] = m[field_name]
    out = []
    for key, spec in found.items():
        title, dec, scale = legacy.get(key, (key, 3, 1.0))
        label = spec.get("label") if (key in _LABELLED or key not in legacy) else title
        out.append(MetricSpec(
            key=key, label=label or title,
            higher_is_better=None if spec.get("higher_is_better") is None else bool(spec["higher_is_better"]),
            decimals=int(spec.get("decimals", dec)), scale=float(spec.get("scale", scale)),
            interval=spec.get("interval") or ("trials" if key in _PER_TRIAL else "runs")))
    return out


#: Protocol fields left out of a leaderboard's Protocol section when unset (datasets without the choice).
_UNSET_HIDDEN = ("test_eeg",)


def run_cost(result: Mapping[str, Any]) -> dict[str, Any]:
    """What a run cost, from its result: device-hours, peak memory and generation throughput.

    Parameters
    ----------
    result : mapping
        A run result (``durations_s``, ``stage_resources``, ``peak_memory_mb``, ``processes``,
        ``split``, ``protocol``).

    Returns
    -------
    dict
        ``device_hours`` (float; GPU-hours = wall time × processes for a CUDA run, CPU-hours = the
        process's CPU time (user + system) × processes otherwise), ``device`` (``"GPU"`` or
        ``"CPU"``), ``peak_memory_gb`` (CUDA max allocated for a CUDA run, else peak RSS),
        ``images_per_s`` (generated test images per second of the real-EEG generation pass). NaN
        where the result lacks the figure.
    """
    durations = result.get("durations_s") or {}
    memory = result.get("peak_memory_mb") or {}
    processes = int(result.get("processes") or 1)
    on_gpu = "cuda_max_allocated" in memory
    if on_gpu:
        hours = float(durations.get("total", np.nan)) * processes / 3600
        peak = memory.get("cuda_max_allocated", np.nan)
    else:
        usage = (result.get("stage_resources") or {}).get("process") or {}
        cpu = usage.get("cpu_user_s", np.nan) + usage.get("cpu_sys_s", 0.0) if usage else np.nan
        hours = float(cpu) * processes / 3600
        peak = memory.get("rss_total", np.nan)
    protocol, split = result.get("protocol") or {}, result.get("split") or {}
    n_test = (split.get("sizes") or {}).get("test", np.nan)
    if protocol.get("max_test_trials"):
        n_test = min(n_test, int(protocol["max_test_trials"]))
    generate = durations.get("generate", np.nan)
    n_images = n_test * int(protocol.get("n_samples_per_trial") or 0)
    return {"device_hours": hours, "device": "GPU" if on_gpu else "CPU", "peak_memory_gb": float(peak) / 1024,
            "images_per_s": n_images / generate if generate and generate == generate else np.nan}


def results_frame(results: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per run (and evaluation) with the columns the leaderboard needs.

    A run re-scored by ``eegbench evaluate`` under its own protocol hash counts once (the newest
    result of a ``(run_id, protocol hash)`` pair is kept). ``result`` holds the loaded dict.
    """
    rows = []
    for r in results:
        params = r.get("parameters", {})
        setting, subject = _setting(r)
        recipe = recipe_of(r)
        row = {
            "dataset": dataset_label(r["dataset"]["name"], r["dataset"].get("options")),
            "setting": setting,
            "subject": subject,
            "method": r["method"]["name"],
            "profile": r["method"].get("profile", ""),
            "seed": r["seed"],
            "run_id": r.get("run_id", r.get("_path", "")),
            "created": (r.get("evaluation") or {}).get("created", r.get("created", "")),
            "protocol_hash": r["protocol"]["hash"],
            "split_hash": r["split"]["sha256"],
            "recipe_hash": recipe["hash"],
            "recipe": "" if recipe["default"] else recipe["text"],
            "trainable_params": params.get("trainable_total", np.nan),
            "inference_params": params.get("inference_total", np.nan),
            "inference_convention": params.get("inference_convention", 1),
            "fit_s": r.get("durations_s", {}).get("fit", np.nan),
            **run_cost(r),
            "path": r.get("_path", ""),
            "chance": (r["metrics"].get("probe_accuracy") or {}).get("chance", np.nan),
            "role": r["method"].get("role") or r["method"].get("kind") or "method",
            "reads_test_labels": bool(r["method"].get("reads_test_labels", False)),
            "result": r,
        }
        shuffled = _shuffled_metrics(r)
        within = _shuffled_metrics(r, "block_shuffled_eeg")
        for key, m in r["metrics"].items():
            if not isinstance(m, dict):
                continue
            row[key] = _value(m, key, row["run_id"])
            for control, values, delta in ((shuffled, SHUFFLED, DELTA), (within, BLOCK, BLOCK_DELTA)):
                if control is not None and key in control:
                    row[key + values] = _value(control[key], key + values, row["run_id"])
                    row[key + delta] = row[key] - row[key + values]
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values("created", kind="stable").drop_duplicates(["run_id", "protocol_hash"], keep="last")
    return frame.sort_index()


def _key(row) -> tuple:
    """What makes a result unique on a leaderboard: dataset, setting, subject, method, profile, seed,
    protocol, split and recipe (:func:`eegbench.results.recipe_of`) hashes."""
    subject = None if pd.isna(row["subject"]) else int(row["subject"])
    return (row["dataset"], row["setting"], subject, row["method"], row["profile"], int(row["seed"]),
            row["protocol_hash"], row["split_hash"], row["recipe_hash"])


def _key_text(key: tuple) -> str:
    dataset, setting, subject, method, profile, seed, p_hash, _, r_hash = key
    subj = f" subject {subject}" if subject is not None else ""
    recipe = "" if r_hash == DEFAULT_RECIPE_HASH else f", recipe {r_hash}"
    return f"{method} ({profile}) {dataset} {setting}{subj} seed {seed}, protocol {p_hash}{recipe}"


def _slug(text: str) -> str:
    """File-name form of a label: runs of other characters → ``-``; a negative option value keeps its
    sign as ``neg`` (``snr_db=-10`` → ``snr_db-neg10``, which must not collide with ``snr_db=10``)."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", text.replace("=-", "=neg")).strip("-")


def _compact_name(key: tuple) -> str:
    _, _, subject, method, profile, seed, p_hash, _, r_hash = key
    subj = f"-subject{subject}" if subject is not None else ""
    recipe = "" if r_hash == DEFAULT_RECIPE_HASH else f"-r{r_hash[:8]}"
    return _slug(f"{method}-{profile}{subj}-seed{seed}-{p_hash[:8]}{recipe}") + ".json"


# ----------------------------------------------------------------------------------------------
# aggregation and statistics


def _units(g: pd.DataFrame) -> list[tuple]:
    return [(None if pd.isna(s) else int(s), int(seed)) for s, seed in zip(g["subject"], g["seed"])]


def _trial_values(m: dict | None) -> tuple[list[float], list[float], str] | None:
    """Per-trial (numerator, denominator) of one metric record: counts, or values with weight 1."""
    m = m or {}
    c, t = m.get("per_trial_correct"), m.get("per_trial_total")
    if c is None and m.get("per_trial") is not None:
        c, t = m["per_trial"], [1.0] * len(m["per_trial"])
    if c is None or t is None or len(c) != len(t) or not len(c):
        return None
    return c, t, m.get("trial_ids_sha256", "")


def _per_trial(result: dict, key: str) -> tuple | None:
    """Per-trial values of column ``key`` of one result (``@shuffled`` / ``@blockshuffled``: the control's;
    ``@delta`` / ``@blockdelta``: both).

    Returns ``(c, t, sha)`` or, for a Δ column, ``(c, t, sha, c_control, t_control)``.
    """
    base = key.split("@")[0]
    real = _trial_values(result["metrics"].get(base))
    if key == base:
        return real
    suffix = key[len(base):]
    shuffled = _trial_values((_shuffled_metrics(result, _CONTROL_OF[suffix]) or {}).get(base))
    if suffix in (SHUFFLED, BLOCK):
        return shuffled
    if real is None or shuffled is None or len(real[0]) != len(shuffled[0]):
        return None
    return (*real, shuffled[0], shuffled[1])


@dataclass
class Cell:
    """One method's aggregate of one metric: mean, 95 % interval, n and the per-unit values."""

    mean: float
    low: float
    high: float
    n: int
    std: float
    interval: str  # "bootstrap over test trials" | "t over seeds" | "t over subjects" | "none"
    units: list[tuple] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def _cell(g: pd.DataFrame, key: str, subject_wise: bool, seed: int, per_trial: bool = False) -> Cell | None:
    """Aggregate column ``key`` over the runs ``g`` of one entry (one subject, or all subjects).

    ``per_trial``: the metric records per-trial values; the interval is then a bootstrap over test
    trials (for a ``@delta`` column, of the paired real − shuffled difference).
    """
    if key not in g:
        return None
    g = g[g[key].notna()]
    if g.empty:
        return None
    units, values = _units(g), [float(v) for v in g[key]]
    by_subject: dict[Any, list[int]] = {}
    for i, (subj, _) in enumerate(units):
        by_subject.setdefault(subj, []).append(i)
    subject_means = [float(np.mean([values[i] for i in idx])) for idx in by_subject.values()]
    mean = float(np.mean(subject_means))
    over_subjects = subject_wise and len(by_subject) > 1
    spread = subject_means if over_subjects else values
    std = float(np.std(spread, ddof=1)) if len(spread) > 1 else float("nan")
    low = high = float("nan")
    kind = "none"
    if per_trial:
        groups, ok = [], True
        for idx in by_subject.values():
            runs = [_per_trial(g["result"].iloc[i], key) for i in idx]
            if any(r is None for r in runs) or len({(len(r[0]), r[2]) for r in runs}) != 1:
                ok = False
                break
            groups.append([(r[0], r[1], *r[3:]) for r in runs])
        if ok:
            low, high = stats.bootstrap_trials(groups, seed=seed)
            kind = "bootstrap over test trials"
    if kind == "none" and len(spread) > 1:
        low, high = stats.t_interval(spread)
        kind = "t over subjects" if over_subjects else "t over seeds"
    return Cell(mean, low, high, len(values), std, kind, units, values)


def _pairs(cells: dict[str, Cell], higher_is_better: bool | None, seed: int) -> list[dict[str, Any]]:
    """Every pair of methods on their common units; Holm over the pairs of this metric."""
    names = sorted(cells)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            va = dict(zip(cells[a].units, cells[a].values))
            vb = dict(zip(cells[b].units, cells[b].values))
            common = sorted(set(va) & set(vb), key=lambda u: (-1 if u[0] is None else u[0], u[1]))
            row = {"a": a, "b": b, "n": len(common), "mean_diff": float("nan"), "d_z": float("nan"),
                   "p": float("nan"), "min_p": float("nan"), "better": None}
            if common:
                t = stats.paired_test([va[u] for u in common], [vb[u] for u in common], seed=seed)
                row.update({k: t[k] for k in ("mean_diff", "d_z", "p", "min_p")})
                if higher_is_better is not None and t["mean_diff"] != 0:
                    row["better"] = a if (t["mean_diff"] > 0) == bool(higher_is_better) else b
            out.append(row)
    adjusted = stats.holm([r["p"] for r in out])
    for r, p in zip(out, adjusted):
        r["p_holm"] = float(p)
        r["significant"] = bool(p <= ALPHA) if not math.isnan(p) else False
    return out


@dataclass
class Leaderboard:
    """Everything one leaderboard file shows, computed once for all output formats.

    Attributes
    ----------
    dataset, setting : str
        Group labels (``setting`` without the subject).
    slug : str
        File stem: ``leaderboard-<slug>.md``.
    subject_wise : bool
        True when the runs carry a subject (single-/cross-subject): per-subject tables are shown.
    frame : pandas.DataFrame
        One row per result in the table (see :func:`results_frame`).
    protocol, split : dict
        The shared protocol, and the split of the first result.
    splits : dict
        Split per subject (key ``None`` for multi-subject).
    metrics : list of (key, title, decimals, scale)
        The metric columns shown, titles with direction arrows.
    higher : dict
        Metric key → ``True`` (higher is better), ``False`` or ``None`` (unknown).
    cells : dict
        ``cells[subject][column][entry]`` → :class:`Cell`; ``subject`` is ``"all"`` for the main
        table; ``column`` is a metric key, or ``key@shuffled`` / ``key@delta`` for the
        shuffled-EEG control and real − shuffled, ``key@blockshuffled`` / ``key@blockdelta`` for the
        within-block shuffled-EEG control and real − within-block. Entries are methods and references.
    controlled : list of str
        Metric keys with shuffled-EEG values in some run.
    block_controlled : list of str
        Metric keys with within-block shuffled-EEG values in some run (datasets with recording blocks).
    specs : dict
        Metric key → :class:`MetricSpec`.
    pairs : dict
        ``pairs[metric]`` → list of pair dicts (``a``, ``b``, ``n``, ``mean_diff``, ``d_z``, ``p``,
        ``p_holm``, ``significant``, ``better``, ``min_p``) over the units of the main table.
    """

    dataset: str
    setting: str
    slug: str
    subject_wise: bool
    frame: pd.DataFrame
    protocol: dict[str, Any]
    split: dict[str, Any]
    splits: dict[Any, dict[str, Any]]
    metrics: list[tuple]
    higher: dict[str, bool | None]
    cells: dict[Any, dict[str, dict[str, Cell]]]
    pairs: dict[str, list[dict[str, Any]]]
    controlled: list[str] = field(default_factory=list)
    specs: dict[str, MetricSpec] = field(default_factory=dict)
    block_controlled: list[str] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        """Ranked entries (methods), sorted; references are in :attr:`references`."""
        return sorted(self.frame.loc[self.frame["role"] != "reference", "entry"].unique())

    @property
    def references(self) -> list[str]:
        """Reference entries (``class-prior``, ``oracle-class``), never ranked with methods."""
        return sorted(self.frame.loc[self.frame["role"] == "reference", "entry"].unique())

    @property
    def subjects(self) -> list[int]:
        return sorted(int(s) for s in self.frame["subject"].dropna().unique())


def build_leaderboard(group: pd.DataFrame, by_hash: dict, *, seed: int = 0) -> Leaderboard:
    """Aggregate one (dataset, setting) group into a :class:`Leaderboard` (see :func:`compare`)."""
    group = group.sort_values(["method", "profile", "subject", "seed"], na_position="first", kind="stable").copy()
    if "role" not in group:
        group["role"] = "method"
    group["role"] = group["role"].fillna("method")
    # one entry per (method, profile): a method run at two profiles gets two entries, never one pooled cell
    several = group.groupby("method")["profile"].transform("nunique") > 1
    if "recipe" not in group:
        group["recipe"] = ""
    # ... and per recipe: runs with other --set / --backbone-set values, precision or processes never pool
    group["entry"] = [(f"{m} ({p})" if s else m) + (f" [{r}]" if r else "")
                      for m, p, s, r in zip(group["method"], group["profile"], several, group["recipe"].fillna(""))]
    dataset, setting = group["dataset"].iloc[0], group["setting"].iloc[0]
    subject_wise = group["subject"].notna().any()
    specs = {sp.key: sp for sp in metric_specs(group["result"]) if sp.key in group and group[sp.key].notna().any()}
    metrics = [(k, sp.title, sp.decimals, sp.scale) for k, sp in specs.items()]
    higher = {k: sp.higher_is_better for k, sp in specs.items()}
    controlled = [k for k in specs if k + SHUFFLED in group and group[k + SHUFFLED].notna().any()]
    block_controlled = [k for k in specs if k + BLOCK in group and group[k + BLOCK].notna().any()]
    columns = (list(specs) + [k + suffix for k in controlled for suffix in (SHUFFLED, DELTA)]
               + [k + suffix for k in block_controlled for suffix in (BLOCK, BLOCK_DELTA)])
    scopes: list[Any] = ["all"] + (sorted(int(s) for s in group["subject"].dropna().unique()) if subject_wise else [])
    cells: dict[Any, dict[str, dict[str, Cell]]] = {}
    for scope in scopes:
        sub = group if scope == "all" else group[group["subject"] == scope]
        cells[scope] = {}
        for column in columns:
            per_entry = {}
            trials = specs[column.split("@")[0]].interval == "trials"
            for entry, g in sub.groupby("entry", sort=True):
                c = _cell(g, column, subject_wise, seed, per_trial=trials)
                if c is not None:
                    per_entry[entry] = c
            cells[scope][column] = per_entry
    ranked = set(group.loc[group["role"] != "reference", "entry"])
    pairs = {key: _pairs({e: c for e, c in cells["all"][key].items() if e in ranked}, higher[key], seed)
             for key, *_ in metrics}
    first = group.iloc[0]
    ref = by_hash[(first["protocol_hash"], first["split_hash"])]
    splits = {}
    for subj, g in group.groupby(group["subject"].fillna(-1), sort=True):
        r = by_hash[(g["protocol_hash"].iloc[0], g["split_hash"].iloc[0])]
        splits[None if subj == -1 else int(subj)] = r["split"]
    return Leaderboard(dataset, setting, _slug(f"{dataset}-{setting}"), bool(subject_wise), group,
                       ref["protocol"], ref["split"], splits, metrics, higher, cells, pairs, controlled, specs,
                       block_controlled)


# ----------------------------------------------------------------------------------------------
# markdown


def _num(v: float, dec: int, scale: float) -> str:
    if v is None or math.isnan(v):
        return "–"
    text = f"{v * scale:.{dec}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.00"


def _fmt_cell(c: Cell | None, dec: int, scale: float) -> str:
    if c is None:
        return "–"
    text = _num(c.mean, dec, scale)
    if not math.isnan(c.low):
        text += f" [{_num(c.low, dec, scale)}, {_num(c.high, dec, scale)}]"
    return text


def _fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _millions(n: float) -> str:
    return "–" if n is None or (isinstance(n, float) and np.isnan(n)) else f"{n / 1e6:.2f} M"


def metrics_summary(metrics: dict[str, Any], *, skipped: bool = True) -> str:
    """One line with every metric of a result, each with its honest label (for the CLI).

    Skipped metrics are listed once per reason at the end (``skipped=False`` leaves them out).
    """
    parts, reasons = [], {}
    for spec in metric_specs([{"metrics": metrics}]):
        key, label, dec, scale = spec.key, spec.label, spec.decimals, spec.scale
        m = metrics.get(key)
        if m.get("value") is None:
            reasons.setdefault(m.get("skipped", "n/a"), []).append(label)
            continue
        text = f"{label} {m['value'] * scale:.{dec}f}"
        if m.get("chance") is not None:
            text += f" (chance {m['chance']:.3f})"
        parts.append(text)
    if skipped:
        parts += [f"{', '.join(labels)}: skipped ({reason})" for reason, labels in reasons.items()]
    return " | ".join(parts)


def run_summary(result: dict[str, Any]) -> list[str]:
    """The CLI's lines about a finished run: metrics, shuffled-EEG control, decoding ceiling."""
    lines = [metrics_summary(result["metrics"])]
    control = (result.get("controls") or {}).get("shuffled_eeg") or {}
    if control.get("metrics"):
        lines.append("shuffled EEG: " + metrics_summary(control["metrics"], skipped=False))
    elif control.get("skipped"):
        lines.append(f"shuffled EEG: not run ({control['skipped']})")
    within = (result.get("controls") or {}).get("block_shuffled_eeg") or {}
    if within.get("metrics"):
        lines.append("within-block shuffled EEG: " + metrics_summary(within["metrics"], skipped=False))
    ceiling = _ceiling_text(result)
    if ceiling:
        lines.append(f"EEG decoding ceiling: {ceiling}")
    own = result.get("method_eeg_classifier")
    if own:
        lines.append(f"{own['what']}: balanced accuracy {own['balanced_accuracy']:.3f} on {own['n_trials']} test "
                     "trials")
    return lines


def summary_table(lb: Leaderboard, scope: Any = "all", *, references: bool = False) -> pd.DataFrame:
    """The displayed table of one scope (``"all"`` or a subject id) as strings, one row per method
    (``references=True``: one row per reference instead, with what it reads)."""
    sub = lb.frame if scope == "all" else lb.frame[lb.frame["subject"] == scope]
    sub = sub[(sub["role"] == "reference") == references]
    n_title = ("Subjects × seeds (n)" if scope == "all" else "Seeds (n)") if lb.subject_wise else "Seeds (n)"
    verdicts = method_verdicts(lb, scope) if lb.block_controlled and not references else {}
    rows = []
    for (method, profile, recipe), g in sub.groupby(["method", "profile", "recipe"], sort=True):
        entry = g["entry"].iloc[0]
        row = {"Reference" if references else "Method": method + (f" [{recipe}]" if recipe else ""),
               "Profile": profile, n_title: str(len(g))}
        if references:
            row["Reads"] = "test labels (by design)" if g["reads_test_labels"].any() else "training labels only"
        for key, title, dec, scale in lb.metrics:
            row[title] = _fmt_cell(lb.cells[scope][key].get(entry), dec, scale)
        if "probe_accuracy" in lb.higher:
            chance = g["chance"].dropna()
            row["Chance (probe)"] = f"{chance.iloc[0]:.3f}" if len(chance) else "–"
        if lb.block_controlled and not references:
            row["EEG use (controls)"] = verdicts.get(entry, "–")
        row["Trainable params"] = _millions(g["trainable_params"].iloc[0])
        old = "inference_convention" in g and (g["inference_convention"].fillna(1) < INFERENCE_CONVENTION).any()
        row["Inference params"] = _millions(g["inference_params"].iloc[0]) + (" †" if old else "")
        fit = g["fit_s"].dropna().to_numpy(dtype=float)
        row["Fit time (s)"] = "–" if not len(fit) else (
            f"{fit.mean():.0f}" if len(fit) == 1 else f"{fit.mean():.0f} ± {fit.std(ddof=1):.0f}")
        row.update(_cost_cells(g))
        rows.append(row)
    return pd.DataFrame(rows)


def _cost_cells(g: pd.DataFrame) -> dict[str, str]:
    """Cost columns of one row: mean device-hours per run (GPU or CPU), peak memory, images/s."""
    cells = {}
    for title, column, unit, fmt in (("Cost per run", "device_hours", "-h", "{:.2f}"),
                                     ("Peak memory (GB)", "peak_memory_gb", "", "{:.1f}"),
                                     ("Images/s", "images_per_s", "", "{:.2f}")):
        values = g[column].dropna().to_numpy(dtype=float) if column in g else np.array([])
        if not len(values):
            cells[title] = "–"
            continue
        kinds = sorted(set(g["device"].dropna())) if "device" in g else []
        if column == "device_hours":
            suffix = f" {'/'.join(kinds)}{unit}" if kinds else ""
        elif column == "peak_memory_gb":
            suffix = " GPU" if kinds == ["GPU"] else " RSS" if kinds == ["CPU"] else ""
        else:
            suffix = ""
        cells[title] = fmt.format(values.mean()) + suffix
    return cells


def _md(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, tablefmt="github", disable_numparse=True)


def _excludes_zero(c: Cell | None) -> bool:
    return c is not None and not (math.isnan(c.low) or math.isnan(c.high)) and (c.low > 0 or c.high < 0)


def _better_than_control(delta: Cell | None, higher_is_better: bool | None) -> bool:
    """Whether Δ = real − control has a 95 % interval that excludes 0 on the metric's better side."""
    if not _excludes_zero(delta):
        return False
    if higher_is_better is None:
        return True
    return delta.low > 0 if higher_is_better else delta.high < 0


#: Verdicts of :func:`eeg_use_verdict`.
VERDICT_STIMULUS = "stimulus"
VERDICT_BLOCK = "recording block (flagged)"
VERDICT_NONE = "no evidence"


def eeg_use_verdict(lb: Leaderboard, entry: str, key: str, scope: Any = "all") -> str | None:
    """What a method's score on one metric rests on, from its controls.

    - :data:`VERDICT_STIMULUS`: real EEG beats the shuffled-EEG control (Δ interval excludes 0 on the
      better side) and, where the dataset has recording blocks, also the within-block shuffled control;
    - :data:`VERDICT_BLOCK`: real EEG beats the shuffled control but **not** the within-block shuffled
      control: the score survives when each trial gets another trial's EEG from its own block, so it
      comes from what the block shares (slow drift, recording order: the block-design confound of
      Li et al. 2020), not from the response to the trial's stimulus. Never counted as a success;
    - :data:`VERDICT_NONE`: real EEG does not beat the shuffled control.

    Returns
    -------
    str or None
        None when the run has no shuffled-EEG control for ``key``.
    """
    delta = lb.cells[scope].get(key + DELTA, {}).get(entry)
    if delta is None:
        return None
    hib = lb.higher.get(key)
    if not _better_than_control(delta, hib):
        return VERDICT_NONE
    if key in lb.block_controlled:
        within = lb.cells[scope][key + BLOCK_DELTA].get(entry)
        if within is not None and not _better_than_control(within, hib):
            return VERDICT_BLOCK
    return VERDICT_STIMULUS


def eeg_use_table(lb: Leaderboard, scope: Any = "all") -> pd.DataFrame:
    """Real vs shuffled-EEG control per method and metric, with Δ = real − shuffled (bold when its
    95 % interval excludes 0); on datasets with recording blocks also the within-block shuffled
    control, its Δ and the verdict of :func:`eeg_use_verdict`."""
    rows = []
    for entry in lb.methods:
        for key in lb.controlled:
            sp = lb.specs[key]
            real = lb.cells[scope][key].get(entry)
            shuffled = lb.cells[scope][key + SHUFFLED].get(entry)
            delta = lb.cells[scope][key + DELTA].get(entry)
            if shuffled is None and delta is None:
                continue
            d = _fmt_cell(delta, _delta_decimals(delta, sp.decimals, sp.scale), sp.scale)
            row = {"Method": entry, "Metric": sp.title, "Real EEG": _fmt_cell(real, sp.decimals, sp.scale),
                   "Shuffled EEG": _fmt_cell(shuffled, sp.decimals, sp.scale),
                   "Δ real − shuffled": f"**{d}**" if _excludes_zero(delta) else d,
                   "n": str(delta.n if delta is not None else 0)}
            if lb.block_controlled:
                within = lb.cells[scope].get(key + BLOCK, {}).get(entry)
                wdelta = lb.cells[scope].get(key + BLOCK_DELTA, {}).get(entry)
                wd = _fmt_cell(wdelta, _delta_decimals(wdelta, sp.decimals, sp.scale), sp.scale)
                row["Within-block shuffled EEG"] = _fmt_cell(within, sp.decimals, sp.scale)
                row["Δ real − within-block"] = f"**{wd}**" if _excludes_zero(wdelta) else wd
                verdict = eeg_use_verdict(lb, entry, key, scope)
                row["Score rests on"] = "⚠ " + verdict if verdict == VERDICT_BLOCK else (verdict or "–")
                row["n"] = row.pop("n")
            rows.append(row)
    return pd.DataFrame(rows)


def method_verdicts(lb: Leaderboard, scope: Any = "all") -> dict[str, str]:
    """One line per method: ``"stimulus (…metrics)"``, ``"⚠ recording block only (…)"`` or ``"no evidence"``.

    A method counts as reading the stimulus when at least one metric has the verdict
    :data:`VERDICT_STIMULUS`; a method whose every above-control metric has :data:`VERDICT_BLOCK` is
    flagged instead (its success is the recording-order confound).
    """
    out = {}
    for entry in lb.methods:
        verdicts = {lb.specs[k].label: eeg_use_verdict(lb, entry, k, scope) for k in lb.controlled}
        stim = [k for k, v in verdicts.items() if v == VERDICT_STIMULUS]
        block = [k for k, v in verdicts.items() if v == VERDICT_BLOCK]
        if stim:
            out[entry] = "stimulus (" + ", ".join(stim) + ")" + (
                f"; ⚠ block only: {', '.join(block)}" if block else "")
        elif block:
            out[entry] = "⚠ recording block only (" + ", ".join(block) + "): not a success"
        else:
            out[entry] = VERDICT_NONE
    return out


def _delta_decimals(delta: Cell | None, dec: int, scale: float, extra: int = 4) -> int:
    """Decimals for a Δ cell: the metric's own, or up to ``extra`` more when the interval excludes 0
    but both of its bounds would round to 0 (a small, consistent difference must not read 0.00 [0.00, 0.00])."""
    if delta is None or not _excludes_zero(delta):
        return dec
    nearest = min(abs(delta.low), abs(delta.high)) * scale
    for d in range(dec, dec + extra + 1):
        if round(nearest, d) != 0:
            return d
    return dec + extra


def _run_mean(g: pd.DataFrame, read) -> list[float]:
    vals = []
    for r in g["result"]:
        try:
            v = read(r)
        except (KeyError, TypeError, IndexError):
            v = None
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            vals.append(v)
    return vals


def _mean_text(vals: list[float], dec: int = 3) -> str:
    if not vals:
        return "–"
    arr = np.asarray(vals, dtype=float)
    if len(arr) == 1 or np.ptp(arr) == 0:  # one run, or the same value in every run (e.g. majority chance)
        return f"{arr[0]:.{dec}f}"
    lo, hi = stats.t_interval(arr)
    return f"{arr.mean():.{dec}f} [{lo:.{dec}f}, {hi:.{dec}f}]"


def class_table(lb: Leaderboard) -> pd.DataFrame:
    """Class accuracy that shows collapse, per method then reference: probe accuracy, balanced
    accuracy, majority-class chance, predicted-class distribution, the method's own EEG classifier."""
    rows = []
    class_names = (lb.frame["result"].iloc[0].get("dataset") or {}).get("class_names") or []
    for entry in lb.methods + lb.references:
        g = lb.frame[lb.frame["entry"] == entry]
        probe = lambda r: r["metrics"]["probe_accuracy"]  # noqa: E731
        dists = _run_mean(g, lambda r: probe(r).get("predicted_distribution"))
        dist = np.mean(np.asarray(dists, dtype=float), axis=0) if dists else None
        names = class_names if dist is not None and len(class_names) == len(dist) else [str(i) for i in
                                                                                       range(len(dist or []))]
        shown = "" if dist is None else " / ".join(f"{n} {v:.2f}" for n, v in
                                                   sorted(zip(names, dist), key=lambda x: -x[1])[:3])
        bal_shuffled = _run_mean(g, lambda r: _shuffled_metrics(r)["probe_accuracy"]["balanced_accuracy"])
        rows.append({
            "Entry": entry + (" (reference)" if entry in lb.references else ""),
            "Class acc. (probe)": _fmt_cell(lb.cells["all"].get("probe_accuracy", {}).get(entry), 3, 1.0),
            "Balanced acc.": _mean_text(_run_mean(g, lambda r: probe(r).get("balanced_accuracy"))),
            "Balanced acc., shuffled EEG": _mean_text(bal_shuffled),
            "Majority chance": _mean_text(_run_mean(g, lambda r: probe(r).get("majority_chance"))),
            "Predicted classes (mean share)": shown or "–",
            "Own EEG classifier (balanced acc.)": _mean_text(
                _run_mean(g, lambda r: (r.get("method_eeg_classifier") or {}).get("balanced_accuracy"))),
        })
    return pd.DataFrame(rows)


def _ceiling_text(result: dict[str, Any]) -> str | None:
    """One line of the EEG decoding ceiling recorded in a result, or None when it has none."""
    from eegbench.decoding import CLASSIFIER, XDAWN_CLASSIFIER

    dec = result.get("eeg_decoding") or {}
    names = {CLASSIFIER: "shrinkage LDA on binned epochs", XDAWN_CLASSIFIER: "xDAWN covariances + tangent space"}
    parts = []
    for key in ("lda", "xdawn_ts"):
        d = dec.get(key) or {}
        name = names.get(d.get("classifier"), d.get("classifier", key))
        if "balanced_accuracy" in d:
            parts.append(f"{name}: {d['balanced_accuracy']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]")
        elif d.get("skipped"):
            parts.append(f"{name}: not run ({d['skipped']})")
    if not parts:
        return None
    d = dec.get("lda") or {}
    chance = f"; chance {d['chance']:.3f}, majority class {d['majority_chance']:.3f}" if "chance" in d else ""
    n = f", {d['n_train']} train / {d['n_test']} test trials" if "n_train" in d else ""
    return "balanced accuracy of " + "; ".join(parts) + chance + n


def ceiling_lines(lb: Leaderboard) -> list[str]:
    """Markdown lines of the EEG decoding ceiling of each split of the leaderboard."""
    lines = []
    for subj, split in sorted(lb.splits.items(), key=lambda kv: -1 if kv[0] is None else kv[0]):
        rows = lb.frame[lb.frame["split_hash"] == split.get("sha256")]
        text = next((t for t in (_ceiling_text(r) for r in rows["result"]) if t), None)
        if text is None:
            continue
        who = f"subject {subj}: " if subj is not None else ""
        lines.append(f"- {who}{text}")
    if not lines:
        return []
    return ["**EEG decoding ceiling** — how much class information the test EEG holds: standard EEG classifiers "
            "fitted on the training split and scored on the test split, no images involved (95 % bootstrap "
            "intervals over test trials):", "", *lines, ""]


def significance_tables(lb: Leaderboard) -> list[str]:
    """Markdown lines: per metric, a method × method matrix of the Holm-adjusted p-values."""
    lines: list[str] = []
    methods = lb.methods
    if len(methods) < 2:
        return ["One method only: nothing to compare."]
    unit = "subject × seed pairs" if lb.subject_wise else "seeds"
    for key, title, dec, scale in lb.metrics:
        pairs = {(p["a"], p["b"]): p for p in lb.pairs[key]}
        if not pairs:
            continue
        table = []
        for a in methods:
            row = {"": a}
            for b in methods:
                if a == b:
                    row[b] = "—"
                    continue
                p = pairs.get((a, b)) or pairs.get((b, a))
                if p is None or p["n"] == 0:
                    row[b] = "no common units"
                    continue
                diff = p["mean_diff"] if (p["a"], p["b"]) == (a, b) else -p["mean_diff"]
                text = f"Δ {diff * scale:+.{dec}f}, p={_fmt_p(p['p_holm'])}, n={p['n']}"
                row[b] = f"**{text}**" if p["significant"] else text
            table.append(row)
        min_ps = sorted({p["min_p"] for p in lb.pairs[key] if not math.isnan(p["min_p"])})
        lines += [f"**{title}** — row minus column", "", _md(pd.DataFrame(table)), ""]
        if min_ps and min_ps[0] > ALPHA:
            lines += [f"_With these n the smallest attainable p is {_fmt_p(min_ps[0])}: no difference can reach "
                      f"p ≤ {ALPHA} (at least 6 paired {unit} are needed)._", ""]
    lines.append(
        f"Paired units: {unit} both methods were run on. Test: exact two-sided sign-flip permutation test of "
        "the mean paired difference (scipy.stats.permutation_test); p-values Holm-corrected over the pairs of "
        f"each metric; **bold**: p ≤ {ALPHA}. Δ is the mean paired difference (row − column) in the column's "
        "unit; Cohen's d_z is in the CSV/JSON export.")
    return lines


def _interval_note(lb: Leaderboard) -> str:
    kinds = sorted({c.interval for per in lb.cells["all"].values() for c in per.values() if c.interval != "none"})
    text = ("Cells are mean [95 % interval]; n is the number of runs (" +
            ("subjects × seeds; the mean is over subjects of the per-subject mean over seeds" if lb.subject_wise
             else "seeds") + ").")
    if "bootstrap over test trials" in kinds:
        text += (" Accuracy-type and per-trial intervals are percentile bootstraps over test trials (2,000 "
                 "replicates; the same trials for every seed of a subject; a run's samples of a trial stay "
                 "together).")
    if any(k.startswith("t over") for k in kinds):
        text += " Other intervals are Student-t intervals over " + (
            "subjects" if any(k == "t over subjects" for k in kinds) else "seeds") + "."
    if any(c.n == 1 and c.interval == "none" for per in lb.cells["all"].values() for c in per.values()):
        text += " FID, KID and IS of a single run have no interval."
    exceptions = [f"{m} {title.split(' ↑')[0].split(' ↓')[0]} ({c.interval})"
                  for key, title, *_ in lb.metrics if lb.specs[key].interval == "trials"
                  for m, c in sorted(lb.cells["all"][key].items()) if c.interval.startswith("t over")]
    if exceptions:
        text += (" Without per-trial counts in every run, these accuracy intervals are over runs instead: "
                 + "; ".join(exceptions) + ".")
    if any(key.startswith("retrieval_") for key, *_ in lb.metrics):
        text += (" Retrieval columns: cosine similarity between the method's EEG embedding (`Method.embed_eeg`) "
                 "of each test trial and the embedding of every distinct test image (N-way: all of them; 2-/4-way: "
                 "the own image and random images of other classes); – = not reported, the method exposes no EEG "
                 "embedding.")
    if lb.subject_wise:
        subjects = {m: sorted({u[0] for per in lb.cells["all"].values() if m in per for u in per[m].units})
                    for m in lb.methods}
        if len({tuple(v) for v in subjects.values()}) > 1:
            text += (" **Not every method was run on the same subjects** (" + "; ".join(
                f"{m}: {', '.join(str(x) for x in v)}" for m, v in subjects.items())
                + "): their means over subjects are over different subjects; compare them per subject.")
    return text


def _references_note(lb: Leaderboard) -> str:
    return ("References sample the shared pretrained denoiser with a class prompt and no EEG. "
            "`class-prior` draws each trial's class from the training class frequencies: a method at its level "
            "passes on no class information from the EEG. `oracle-class` is prompted with each test trial's "
            "**true class** (it reads the test labels by design): the ceiling of class metrics with this denoiser. "
            "Neither is ranked or tested against the methods.")


def _control_note(lb: Leaderboard) -> str:
    return ("Shuffled EEG: after generating from the test EEG, each run generates again from the same test "
            "trials with their EEG permuted across trials (within subject, one seeded random cycle, so no trial "
            "keeps its own EEG), through the same trained model and the same image seeds, and scores those images "
            "against the same ground truth. Δ = real − shuffled per run; a method that uses the EEG scores better "
            "on real than on shuffled EEG. **Bold**: the 95 % interval of Δ excludes 0 (bootstrap over test "
            "trials for per-trial metrics, paired per trial; Student-t over seeds otherwise)."
            + (" Within-block shuffled EEG (datasets with recording blocks): the same, but each trial takes the "
               "EEG of another test trial of its own recording block, which keeps whatever the block shares (slow "
               "drift, time in the session) and removes the response to the trial's own image. A score that beats "
               "the shuffled control but not the within-block one rests on the recording block, not the stimulus "
               "(the block-design confound of Li et al. 2020): it is flagged ⚠ and not counted as a success."
               if lb.block_controlled else ""))


def _published_checks(lb: Leaderboard) -> list[str]:
    """Protocol-block lines: the decoding ceiling, the controls and what each reference reads."""
    protocol = lb.protocol
    out = []
    if any(r.get("eeg_decoding") for r in lb.frame["result"]):
        out.append("- EEG decoding ceiling: shrinkage LDA (Ledoit-Wolf, scikit-learn) on 10 time bins per channel, "
                   "and xDAWN covariances + tangent space + logistic regression (pyriemann), fitted on train, "
                   "balanced accuracy on test")
    if "shuffled-eeg" in (protocol.get("controls") or []):
        out.append("- controls: `shuffled-eeg` (EEG permuted within subject across test trials; same model and "
                   "image seeds) for every method that reads the EEG"
                   + ("; within-block shuffled EEG (permuted within each recording block) where the dataset marks "
                      "blocks" if lb.block_controlled else ""))
    out.append("- references: `class-prior` reads the training labels only; `oracle-class` reads the test labels "
               "(by design; flagged `reads_test_labels` in its results)")
    return out


def leaderboard_markdown(lb: Leaderboard, *, figures: dict[str, str] | None = None,
                         grid_note: str | None = None) -> str:
    """Markdown for one leaderboard (``figures``: name → path relative to the markdown file)."""
    protocol, split = lb.protocol, lb.split
    figures = figures or {}
    notes = [
        _interval_note(lb),
        "↑ higher is better, ↓ lower is better. FID/KID: torch-fidelity on TF-Inception pool3 features "
        f"(`{protocol.get('fid_feature_extractor', 'inception-v3-tf-fidhelper')}`), generated images vs one "
        "ground-truth image per test trial.",
    ]
    if "is_effnet_lite0" in lb.higher or "EfficientNet" in str(lb.specs.get("is").label if "is" in lb.specs else ""):
        notes.append("The IS column is computed from EfficientNet-Lite0 ImageNet logits because the standard "
                     "Inception weights were not supplied (`--inception-weights`): it is **not** comparable to "
                     "a published Inception Score.")
    if "nway_topk" in lb.higher:
        notes.append(f"n-way accuracy: {protocol.get('n_way')}-way top-{protocol.get('top_k')}, "
                     f"{protocol.get('n_way_trials')} seeded distractor draws, true class = the "
                     f"`{protocol.get('classifier')}` top-1 on the ground-truth image; chance "
                     f"{(protocol.get('top_k') or 1) / (protocol.get('n_way') or 50):.3f}.")
    if "probe_accuracy" in lb.higher:
        notes.append("Class acc. (probe) comes from a probe classifier fitted on the training stimuli; "
                     "*Chance* is 1 / number of classes.")
        if any((r["metrics"].get("probe_accuracy") or {}).get("reference_in_probe_training")
               for r in lb.frame["result"]):
            notes.append("The test trials show the same stimulus images the probe was fitted on, so the probe's "
                         "accuracy on the ground-truth images (`reference_accuracy`) is a fit, not a ceiling.")
    notes.append("Parameter counts are computed by the harness (trainable: summed over all training stages; "
                 "inference: every module used to generate, frozen ones included).")
    if "inference_convention" in lb.frame and (lb.frame["inference_convention"].fillna(1) < INFERENCE_CONVENTION).any():
        notes.append("† Inference parameters counted by an earlier convention that left out text encoders used at "
                     "generation (GWIT's and BrainVis's class prompts, the references'); rerun to count them.")
    notes.append("Cost per run (mean over runs): GPU-hours (wall time × GPUs) of a CUDA run or CPU-hours (CPU time "
                 "of the process, user + system, × processes) of a CPU run, for the whole run — fit, generation "
                 "of the real and control images, scoring; peak memory: CUDA max allocated (GPU) or the process's "
                 "peak resident set (RSS); images/s: test images generated per second in the real-EEG pass.")
    n_results = len(lb.frame)
    lines = [
        f"# Leaderboard: {lb.dataset}, {lb.setting}",
        "",
        "_Generated by `eegbench compare` from the run results kept in "
        f"[`results/{lb.slug}/`](results/{lb.slug}/) ({n_results} result{'s' if n_results != 1 else ''}); "
        "do not edit by hand._",
        "",
    ]
    lines += ceiling_lines(lb)
    if lb.subject_wise:
        lines += ["## Mean over subjects", ""]
    if lb.methods:
        lines += [_md(summary_table(lb)), "", " ".join(notes), ""]
    else:
        lines += ["No method results yet (references only).", "", " ".join(notes), ""]
    if lb.references:
        lines += ["### References (not ranked)", "", _md(summary_table(lb, references=True)), "",
                  _references_note(lb), ""]
    if lb.controlled:
        table = eeg_use_table(lb)
        if not table.empty:
            lines += ["## Does the method use the EEG?", "", _md(table), "", _control_note(lb), ""]
    if "probe_accuracy" in lb.specs:
        lines += ["## Class accuracy and collapse", "", _md(class_table(lb)), "",
                  "Balanced accuracy is the mean over classes of the share of a class's generated images the probe "
                  "assigns to it: images that all look like one class score chance there even when the test "
                  "classes are unbalanced. *Majority chance* is the accuracy of always answering the most frequent "
                  "test class. *Own EEG classifier*: the test accuracy of the EEG classifier inside the method "
                  "(GWIT's k-NN, BrainVis's fusion head), where it has one — compare it with the decoding "
                  "ceiling above. Class acc. (probe) has the bootstrap interval over test trials of the table "
                  "above; the other cells are mean [Student-t 95 % interval over runs].", ""]
    if "scores" in figures:
        lines += [f"![Scores per method]({figures['scores']})", "",
                  f"Per-run points and 95 % intervals: [{Path(figures['scores']).name}]({figures['scores']}) "
                  f"([SVG]({figures['scores_svg']})).", ""]
    if lb.subject_wise:
        lines += ["## Per subject", ""]
        for subj in lb.subjects:
            s = lb.splits.get(subj) or {}
            lines += [f"### Subject {subj}", "", f"split hash `{s.get('sha256', '')[:16]}`, sizes {s.get('sizes')}",
                      "", _md(summary_table(lb, subj)), ""]
    lines += ["## Significance", ""] + significance_tables(lb) + [""]
    if "significance" in figures:
        lines += [f"![Significance matrices]({figures['significance']})", ""]
    if "training" in figures:
        lines += ["## Training curves", "",
                  f"![Training curves]({figures['training']})", "",
                  "Every logged training loss per method and stage (one line per run), from each run's "
                  f"`train_log.jsonl` ([SVG]({figures['training_svg']})).", ""]
    if "grid" in figures or grid_note:
        lines += ["## Side by side", ""]
        if "grid" in figures:
            lines += [f"![The same test trials across methods]({figures['grid']})", ""]
        if grid_note:
            lines += [grid_note, ""]
    lines += [
        "## Protocol",
        "",
        f"- protocol hash `{protocol['hash']}`, split hash `{split['sha256'][:16]}`"
        + (f" (subject {(split.get('options') or {}).get('subject')}'s; every subject's is above)"
           if lb.subject_wise and len(lb.splits) > 1 else ""),
        (
            f"- split: {split['setting']} {split.get('options') or ''} — {split.get('source', '')}; sizes "
            f"{split.get('sizes')}"
        ),
    ]
    recipes = lb.frame.loc[lb.frame["recipe"].fillna("") != "", ["method", "recipe", "recipe_hash"]] \
        if "recipe" in lb.frame else lb.frame.iloc[:0]
    if len(recipes):  # every other row ran the method's defaults, single process, full precision
        lines.append("- recipes (rows in brackets; every other row: the method's defaults, one process, no mixed "
                     "precision): " + "; ".join(f"{m} [{r}] = recipe `{h}`" for m, r, h in
                                                 recipes.drop_duplicates().itertuples(index=False)))
    lines += _published_checks(lb)
    published = {}
    for r in lb.frame["result"]:
        gen = r.get("generation") or {}
        if gen.get("source") == "published":
            published[r["method"]["name"]] = gen.get("num_inference_steps")
    lines += [f"- {k}: `{v}`" if not (k == "num_inference_steps" and v is None) else
              "- num_inference_steps: each method's published number (" +
              ", ".join(f"{m} {n}" for m, n in sorted(published.items())) + ")"
              for k, v in protocol.items()
              if k not in ("hash", "seed") and not (k in _UNSET_HIDDEN and v is None)]
    lines += ["", published_markdown()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# csv / json exports


def _nan_to_none(v):
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def export_rows(lb: Leaderboard) -> pd.DataFrame:
    """Numbers behind the tables: one row per (scope, method, metric), unscaled."""
    rows = []
    scopes = ["all"] + lb.subjects
    titles = {key: title for key, title, *_ in lb.metrics}
    titles.update({k + suffix: f"{titles[k]} ({what})" for k in lb.controlled
                   for suffix, what in ((SHUFFLED, "shuffled EEG"), (DELTA, "real − shuffled"))})
    titles.update({k + suffix: f"{titles[k]} ({what})" for k in lb.block_controlled
                   for suffix, what in ((BLOCK, "within-block shuffled EEG"), (BLOCK_DELTA, "real − within-block"))})
    for scope in scopes:
        for key, title in titles.items():
            for method, c in sorted(lb.cells[scope].get(key, {}).items()):
                rows.append({"dataset": lb.dataset, "setting": lb.setting,
                             "subject": "mean" if scope == "all" and lb.subject_wise else (
                                 "" if scope == "all" else scope),
                             "method": method, "role": "reference" if method in lb.references else "method",
                             "metric": key, "label": title, "mean": c.mean, "ci_low": c.low,
                             "ci_high": c.high, "interval": c.interval, "std": c.std, "n": c.n})
    return pd.DataFrame(rows)


def export_pairs(lb: Leaderboard) -> pd.DataFrame:
    """Every pairwise test: one row per (metric, pair)."""
    rows = []
    for key, title, *_ in lb.metrics:
        for p in lb.pairs[key]:
            rows.append({"metric": key, "label": title, **p})
    return pd.DataFrame(rows)


def export_json(lb: Leaderboard, figures: dict[str, str]) -> dict[str, Any]:
    """The leaderboard as one JSON-able dict (cells, pairs, runs, protocol, split, figures)."""
    def clean(records):
        return [{k: _nan_to_none(v) for k, v in r.items()} for r in records]

    runs = lb.frame[["method", "profile", "subject", "seed", "run_id"]].copy()
    runs["subject"] = [None if pd.isna(s) else int(s) for s in runs["subject"]]
    return {
        "dataset": lb.dataset, "setting": lb.setting, "protocol": lb.protocol,
        "splits": {("all" if k is None else str(k)): v for k, v in lb.splits.items()},
        "metrics": [{"key": k, "label": t, "higher_is_better": lb.higher[k]} for k, t, *_ in lb.metrics],
        "references": lb.references,
        "eeg_decoding": {("all" if k is None else str(k)): next(
            (r["eeg_decoding"] for r in lb.frame.loc[lb.frame["split_hash"] == v.get("sha256"), "result"]
             if r.get("eeg_decoding")), None) for k, v in lb.splits.items()},
        "cells": clean(export_rows(lb).to_dict("records")),
        "pairs": clean(export_pairs(lb).to_dict("records")),
        "runs": clean(runs.to_dict("records")),
        "figures": figures,
    }


# ----------------------------------------------------------------------------------------------
# compare


def _check_hashes(dataset: str, setting: str, group: pd.DataFrame, by_hash: dict) -> None:
    problems = []
    if group["protocol_hash"].nunique() > 1:
        problems.append(group)
    for _, g in group.groupby(group["subject"].fillna(-1)):
        if g["split_hash"].nunique() > 1:
            problems.append(g)
    if not problems:
        return
    g = problems[0]
    hashes = g[["protocol_hash", "split_hash"]].drop_duplicates()
    detail = "; ".join(
        f"protocol {p} / split {s[:12]}: "
        + ", ".join(str(x) for x in g[(g.protocol_hash == p) & (g.split_hash == s)].run_id)
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


def _merge(local: list[dict], committed: list[dict], replace: bool) -> tuple[list[dict], dict, list[Path]]:
    """Committed results plus new local ones; returns (results, compact files to write, files to remove)."""
    frame_c = results_frame(committed)
    by_key: dict[tuple, dict] = {}
    paths: dict[tuple, Path] = {}
    for _, row in frame_c.iterrows():
        k = _key(row)
        if k in by_key:
            raise EegbenchError(f"{row['path']} and {paths[k]} are both committed results of {_key_text(k)}; "
                                "remove one")
        by_key[k], paths[k] = row["result"], Path(row["path"])
    to_write: dict[tuple, dict] = {}
    to_remove: list[Path] = []
    newest: dict[tuple, dict] = {}
    frame_l = results_frame(local)
    if not frame_l.empty:
        frame_l = frame_l.sort_values("created", kind="stable")
    for _, row in frame_l.iterrows():  # in creation order: the newer local run of one key wins
        k = _key(row)
        if k in newest:
            log.warning("local runs %s and %s are both results of %s: the newer, %s, is used",
                        newest[k].get("run_id"), row["result"].get("run_id"), _key_text(k),
                        row["result"].get("run_id"))
        newest[k] = row["result"]
    for k, r in newest.items():
        if k in by_key:
            kept = by_key[k]
            same_run = (kept.get("compact") or {}).get("run_id", kept.get("run_id")) == r.get("run_id")
            if same_run and not replace:  # the committed run itself, on disk: its samples feed the grid
                by_key[k] = {**r, "_committed_path": str(paths[k])}
                continue
            if not replace:
                if not same_run:
                    log.warning("local run %s duplicates committed %s (%s, file %s): the committed result is "
                                "kept; pass --replace to replace it", r.get("run_id"),
                                (kept.get("compact") or {}).get("run_id", kept.get("run_id")), _key_text(k),
                                paths[k])
                continue
            if same_run and compact_result(r) == {k2: v for k2, v in kept.items() if k2 != "_path"}:
                continue
            log.warning("replacing committed %s with local run %s (%s)", paths[k].name, r.get("run_id"),
                        _key_text(k))
            to_remove.append(paths[k])
        to_write[k] = r
        by_key[k] = r
    return list(by_key.values()), to_write, to_remove


