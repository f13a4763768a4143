"""Leaderboard figures (matplotlib, PNG and SVG) and the side-by-side grid of test trials.

All figures are drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot state,
no display needed) and saved without timestamps, so drawing the same leaderboard twice gives the same
files. Written under ``<reports>/figures/``:

- ``<slug>-scores.{png,svg}``: one panel per metric, a dot per run (seed, or subject × seed), the
  mean with its 95 % interval per method;
- ``<slug>-significance.{png,svg}``: per metric, the method × method matrix of Holm-adjusted
  p-values of the paired tests, shaded by which of the two is better;
- ``<slug>-training.{png,svg}``: per method (rows) and training stage (columns), the logged training
  loss (and validation loss, dashed) against the optimiser step, one line per run;
- ``<slug>-grid.png`` and ``<slug>-grid.json``: the same test trials (seeded, stratified by class)
  across methods — the ground-truth stimulus, then each method's first sample, then the references
  (results whose ``method.kind`` is ``"reference"``) — with the runs and trials it shows.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eegbench.errors import DataFormatError
from eegbench.results import read_samples_manifest, read_train_log, run_dir_of, write_bytes_if_changed

__all__ = ["comparison_grid", "leaderboard_figures", "score_figure", "significance_figure", "training_figure"]

log = logging.getLogger("eegbench.figures")
GRID_TRIALS = 8


def _figure(width: float, height: float, dpi: int = 100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, stem: Path, svg: bool = True) -> list[Path]:
    import io

    import matplotlib

    out = []
    with matplotlib.rc_context({"svg.hashsalt": "eegbench", "svg.fonttype": "none"}):
        for ext in ("png", "svg") if svg else ("png",):
            path = stem.with_name(f"{stem.name}.{ext}")
            buf = io.BytesIO()
            meta = {"Software": None} if ext == "png" else {"Date": None, "Creator": None}
            fig.savefig(buf, format=ext, metadata=meta)
            write_bytes_if_changed(path, buf.getvalue())
            out.append(path)
    return out


def _is_reference(frame: pd.DataFrame, method: str) -> bool:
    rows = frame[frame["entry"] == method]
    return any(r["method"].get("role", r["method"].get("kind")) == "reference" for r in rows["result"])


def score_figure(lb, stem: Path) -> list[Path]:
    """Per-metric panels: per-run points, mean and 95 % interval per method (see module doc)."""
    metrics = lb.metrics
    methods = lb.methods
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = _figure(3.6 * cols, 2.9 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, (key, title, dec, scale) in zip(axes.flat, metrics):
        cells = lb.cells["all"][key]
        for x, method in enumerate(methods):
            c = cells.get(method)
            if c is None:
                continue
            vals = np.asarray(c.values) * scale
            jitter = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(1)
            ax.scatter(x + jitter, vals, s=14, color="0.55", zorder=2, label="run" if x == 0 else None)
            if not math.isnan(c.low):
                ax.errorbar([x], [c.mean * scale], yerr=[[c.mean * scale - c.low * scale],
                                                         [c.high * scale - c.mean * scale]],
                            fmt="o", color="C0", capsize=4, zorder=3, label="mean, 95 % interval" if x == 0 else None)
            else:
                ax.plot([x], [c.mean * scale], "o", color="C0", zorder=3)
        if key in lb.higher and "probe_accuracy" == key:
            chance = lb.frame["chance"].dropna()
            if len(chance):
                ax.axhline(float(chance.iloc[0]), color="0.3", lw=0.8, ls=":", label="chance")
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.set_title(title if len(title) < 40 else title[:37] + "…", fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="y", lw=0.3)
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.suptitle(f"{lb.dataset}, {lb.setting}: scores (n per method = runs)", fontsize=10)
    return _save(fig, stem)


def significance_figure(lb, stem: Path) -> list[Path]:
    """Per metric, the matrix of Holm-adjusted p-values (row vs column), coloured by the better one."""
    from matplotlib.colors import TwoSlopeNorm

    methods = lb.methods
    k = len(methods)
    metrics = [m for m in lb.metrics if lb.pairs.get(m[0])]
    cols = min(3, max(1, len(metrics)))
    rows = max(1, math.ceil(len(metrics) / cols))
    fig = _figure(max(3.2, 0.9 * k + 1.6) * cols, max(3.0, 0.8 * k + 1.4) * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    norm = TwoSlopeNorm(vmin=-3, vcenter=0, vmax=3)
    for ax, (key, title, *_) in zip(axes.flat, metrics):
        score = np.zeros((k, k))
        text = [["" for _ in range(k)] for _ in range(k)]
        for p in lb.pairs[key]:
            i, j = methods.index(p["a"]), methods.index(p["b"])
            if p["n"] == 0 or math.isnan(p["p_holm"]):
                continue
            strength = -math.log10(max(p["p_holm"], 1e-3))
            sign = 0 if p["better"] is None else (1 if p["better"] == p["a"] else -1)
            score[i, j], score[j, i] = sign * strength, -sign * strength
            label = f"{p['p_holm']:.2f}" if p["p_holm"] >= 0.01 else f"{p['p_holm']:.0e}"
            text[i][j] = text[j][i] = label + ("*" if p["significant"] else "")
        ax.imshow(score, cmap="RdBu", norm=norm)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, "—" if i == j else text[i][j], ha="center", va="center", fontsize=7)
        ax.set_xticks(range(k), methods, rotation=30, ha="right", fontsize=7)
        ax.set_yticks(range(k), methods, fontsize=7)
        ax.set_title(title if len(title) < 40 else title[:37] + "…", fontsize=9)
    fig.suptitle("Holm-adjusted p (paired permutation test); blue: row better, red: column better; * p ≤ 0.05",
                 fontsize=9)
    return _save(fig, stem)


def _training_log(result: dict[str, Any]) -> list[dict[str, Any]]:

    log_records = read_train_log(run_dir_of(result))
    if log_records is not None:
        return log_records
    return result.get("training_log") or result.get("training_history") or []


def training_figure(lb, stem: Path) -> list[Path] | None:
    """Training (and validation) loss per method and stage, one line per run; None without logs."""
    per_method: dict[str, list[tuple[str, list[dict]]]] = {}
    for _, row in lb.frame.sort_values(["method", "subject", "seed"], na_position="first").iterrows():
        if row["entry"] not in lb.methods:  # references train nothing
            continue
        records = _training_log(row["result"])
        if records:
            unit = f"seed {row['seed']}" + ("" if pd.isna(row["subject"]) else f", subject {int(row['subject'])}")
            per_method.setdefault(row["entry"], []).append((unit, records))
    if not per_method:
        return None
    stages = {m: list(dict.fromkeys(r["stage"] for _, recs in runs for r in recs if "stage" in r))
              for m, runs in per_method.items()}
    cols = max(len(s) for s in stages.values())
    fig = _figure(3.0 * cols, 2.3 * len(per_method))
    axes = fig.subplots(len(per_method), cols, squeeze=False)
    for r, (method, runs) in enumerate(per_method.items()):
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(stages[method]):
                ax.set_visible(False)
                continue
            stage = stages[method][c]
            for i, (unit, recs) in enumerate(runs):
                tr = [(x["step"], x["loss"]) for x in recs if x.get("stage") == stage and "loss" in x]
                va = [(x["step"], x["val_loss"]) for x in recs if x.get("stage") == stage and "val_loss" in x]
                color = f"C{i % 10}"
                if tr:
                    ax.plot(*zip(*tr), color=color, lw=1, label=unit)
                if va:
                    ax.plot(*zip(*va), color=color, lw=1, ls="--", marker=".", ms=3)
            ax.set_title(f"{method}: {stage}", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_xlabel("step", fontsize=7)
            if c == 0:
                ax.set_ylabel("loss (dashed: val)", fontsize=7)
                ax.legend(fontsize=6, loc="best")
    fig.suptitle(f"{lb.dataset}, {lb.setting}: training curves", fontsize=10)
    return _save(fig, stem)


# ----------------------------------------------------------------------------------------------
# side-by-side grid


def _grid_source(lb) -> tuple[list[tuple[str, Path, dict]], list[str]]:
    """Per method (methods first, then references), a result with samples on disk.

    All rows come from one subject (the test trials must be the same): the lowest subject for which
    the most methods have samples; within it each method's lowest seed.
    """

    methods = list(lb.methods) + list(lb.references)
    on_disk: dict[Any, dict[str, tuple]] = {}
    rows = lb.frame.sort_values(["subject", "seed"], na_position="first")
    for _, row in rows.iterrows():
        run_dir = run_dir_of(row["result"])
        if run_dir is None or not (run_dir / "samples" / "manifest.csv").is_file():
            continue
        subject = None if pd.isna(row["subject"]) else int(row["subject"])
        on_disk.setdefault(subject, {}).setdefault(row["entry"], (row["entry"], run_dir, row["result"]))
    if not on_disk:
        return [], list(methods)
    best = max(on_disk, key=lambda s: (len(on_disk[s]), -(s if s is not None else -1)))
    have = [on_disk[best][m] for m in methods if m in on_disk[best]]
    return have, [m for m in methods if m not in on_disk[best]]


def comparison_grid(sources: list[tuple[str, Path, dict]], png: Path, *, n_trials: int = GRID_TRIALS,
                    seed: int = 0, title: str = "") -> dict[str, Any]:
    """Draw the same test trials across runs: ground truth, then each run's first sample.

    Parameters
    ----------
    sources : list of (label, run_dir, result)
        One entry per row after the ground truth, in order; each ``run_dir`` holds
        ``samples/manifest.csv`` with the columns ``trial_id, sample_index, label, class_name, path,
        reference_path``.
    png : Path
        Output PNG; a JSON sidecar with the same stem lists the runs and trials.
    n_trials : int
        Columns: trials common to every run, picked with ``numpy.random.default_rng(seed)`` round-robin
        over classes (stratified), in class order.
    seed : int
    title : str

    Returns
    -------
    dict
        The sidecar's content: ``trials`` (trial ids), ``rows`` (label, run_id, seed per row).

    Raises
    ------
    DataFormatError
        If the runs share no test trial or an image is missing.
    """
    from PIL import Image

    manifests = [read_samples_manifest(d / "samples" / "manifest.csv") for _, d, _ in sources]
    common = set(manifests[0].loc[manifests[0]["sample_index"] == 0, "trial_id"])
    for m in manifests[1:]:
        common &= set(m.loc[m["sample_index"] == 0, "trial_id"])
    if not common:
        raise DataFormatError("side-by-side grid: the runs share no test trial")
    first = manifests[0][(manifests[0]["sample_index"] == 0) & manifests[0]["trial_id"].isin(common)]
    first = first.sort_values("trial_id")
    rng = np.random.default_rng(seed)
    by_class = {lab: list(rng.permutation(g["trial_id"].to_numpy()))
                for lab, g in first.groupby("label", sort=True)}
    picked: list[str] = []
    while len(picked) < min(n_trials, len(first)):
        for lab in sorted(by_class):
            if by_class[lab] and len(picked) < n_trials:
                picked.append(str(by_class[lab].pop(0)))
    info = first.set_index("trial_id").loc[picked]
    picked = sorted(picked, key=lambda t: (int(info.loc[t, "label"]), t))

    def load(path: Path):
        if not path.is_file():
            raise DataFormatError(f"side-by-side grid: missing image {path}")
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    rows = [("ground truth", [load(sources[0][1] / info.loc[t, "reference_path"]) for t in picked])]
    for (label, run_dir, _), m in zip(sources, manifests):
        m0 = m[m["sample_index"] == 0].set_index("trial_id")
        rows.append((label, [load(run_dir / m0.loc[t, "path"]) for t in picked]))
    tile = max(img.shape[0] for _, imgs in rows for img in imgs) / 72  # about one screen pixel per image pixel
    fig = _figure(tile * 1.1 * len(picked) + 1.4, tile * 1.1 * len(rows) + 0.6, dpi=72)
    axes = fig.subplots(len(rows), len(picked), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c, img in enumerate(images):
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(info.loc[picked[c], "class_name"]), fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title, fontsize=8)
    _save(fig, png.with_suffix(""), svg=False)
    meta = {"trials": picked, "seed": seed,
            "rows": [{"label": "ground truth", "run_id": sources[0][2].get("run_id")}]
            + [{"label": label, "run_id": r.get("run_id"), "seed": r.get("seed"),
                "subject": (r["split"].get("options") or {}).get("subject")} for label, _, r in sources]}
    write_bytes_if_changed(png.with_suffix(".json"), (json.dumps(meta, indent=1) + "\n").encode())
    return meta


def leaderboard_figures(lb, out_dir: Path, *, seed: int = 0) -> tuple[dict[str, str], str | None]:
    """Draw every figure of one leaderboard; returns (name → path relative to ``out_dir``, grid note).

    The grid is redrawn when every method of the table has a run with samples on disk; otherwise an
    existing grid is kept (a fresh checkout has only the committed compact results) and, without one,
    the grid shows the methods that have samples and the note names the others.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    made: dict[str, str] = {}

    def rel(p: Path) -> str:
        return p.relative_to(out_dir).as_posix()

    if lb.metrics:
        png, svg = score_figure(lb, fig_dir / f"{lb.slug}-scores")
        made["scores"], made["scores_svg"] = rel(png), rel(svg)
    if any(lb.pairs.get(k) for k, *_ in lb.metrics):
        png, svg = significance_figure(lb, fig_dir / f"{lb.slug}-significance")
        made["significance"], made["significance_svg"] = rel(png), rel(svg)
    tr = training_figure(lb, fig_dir / f"{lb.slug}-training")
    if tr:
        made["training"], made["training_svg"] = rel(tr[0]), rel(tr[1])
    grid = fig_dir / f"{lb.slug}-grid.png"
    have, missing = _grid_source(lb)
    note = None
    redraw = bool(have) and (not missing or not grid.is_file())
    if redraw:
        try:
            comparison_grid(have, grid, seed=seed, title=f"{lb.dataset}, {lb.setting}")
        except (OSError, ValueError, KeyError, DataFormatError) as exc:  # a broken run folder costs only the grid
            log.warning("side-by-side grid %s not drawn: %s", grid, exc)
            redraw = False
    elif missing and grid.is_file():
        log.info("side-by-side grid %s kept: no samples on disk for %s", grid, ", ".join(missing))
    side = grid.with_suffix(".json")
    if grid.is_file() and side.is_file():
        meta = json.loads(side.read_text(encoding="utf-8"))
        shown = ", ".join(f"{r['label']}: {r['run_id']}" for r in meta.get("rows", [])[1:])
        note = (f"Columns: {len(meta.get('trials', []))} test trials drawn with seed {meta.get('seed', seed)}, "
                "stratified by class; rows: the ground-truth stimulus, then each method's first sample of that "
                f"trial (runs {shown}).")
        if redraw and missing:
            note += f" No samples on disk for: {', '.join(missing)}."
    if grid.is_file():
        made["grid"] = rel(grid)
    return made, note
