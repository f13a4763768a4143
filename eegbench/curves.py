"""Curves across leaderboards: a metric against a numeric dataset option (e.g. ``snr_db``).

``eegbench compare`` writes one leaderboard per dataset label, and a label holds the loader
options (``eegnb-groundtruth[snr_db=10]``), so runs at different signal-to-noise ratios land on
different leaderboards. This module joins those leaderboards back along the option: for every
group of leaderboards of one dataset and setting whose options differ only in one numeric option
(two or more values), it writes

- ``reports/curve-<dataset>-<setting>-<option>.md``: per option value, the EEG decoding ceiling
  and, per method and metric, the score on real EEG, the shuffled-EEG control, Δ (bold when its 95 %
  interval excludes 0), the within-block control where the dataset has recording blocks, and the
  verdict of :func:`eegbench.leaderboard.eeg_use_verdict`; the references' scores;
- ``reports/figures/curve-<dataset>-<setting>-<option>.{png,svg}``: one panel per metric, score vs
  option value per method (solid, 95 % interval bars) with its shuffled-EEG control (dashed, same
  colour) and within-block shuffled control (dotted), the references (grey) and, on the class-accuracy panel, the decoding ceiling (black) and
  chance. ``-inf`` (no signal) is drawn left of the finite values and labelled ``−∞``.

Every number comes from the leaderboards' cells (the same intervals as in the tables).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from eegbench.results import write_bytes_if_changed

#: Metrics drawn and tabulated, in this order, when the leaderboards have them.
CURVE_METRICS = ("probe_accuracy", "two_way_inception", "two_way_effnet", "fid")


def _options(lb) -> dict[str, str]:
    first = lb.frame["result"].iloc[0]
    return {str(k): str(v) for k, v in sorted(((first.get("dataset") or {}).get("options") or {}).items())}


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def curve_groups(boards: list) -> list[tuple[str, str, str, dict[str, str], list[tuple[float, Any]]]]:
    """Groups of leaderboards that differ only in one numeric dataset option.

    Parameters
    ----------
    boards : list of eegbench.leaderboard.Leaderboard

    Returns
    -------
    list of (dataset name, setting, option key, the other options, [(value, leaderboard), ...])
        Values sorted ascending (``-inf`` first); only groups with two or more values.
    """
    found: dict[tuple, list[tuple[float, Any]]] = {}
    for lb in boards:
        name = lb.frame["result"].iloc[0]["dataset"]["name"]
        opts = _options(lb)
        for key, text in opts.items():
            value = _number(text)
            if value is None:
                continue
            rest = tuple((k, v) for k, v in opts.items() if k != key)
            found.setdefault((name, lb.setting, key, rest), []).append((value, lb))
    out = []
    for (name, setting, key, rest), items in sorted(found.items(), key=lambda kv: kv[0]):
        if len({v for v, _ in items}) >= 2:
            out.append((name, setting, key, dict(rest), sorted(items, key=lambda x: x[0])))
    return out


def _slug(name: str, setting: str, key: str, rest: dict[str, str]) -> str:
    from eegbench.leaderboard import _slug as slug

    extra = "".join(f"-{k}{v}" for k, v in rest.items())
    return slug(f"curve-{name}{extra}-{setting}-{key}")


def _value_text(v: float) -> str:
    return "−∞" if v == -math.inf else f"{v:g}"


def _ceiling(lb) -> tuple[float, float, float] | None:
    """LDA decoding ceiling of a leaderboard's split: (balanced accuracy, low, high), or None."""
    for r in lb.frame["result"]:
        d = (r.get("eeg_decoding") or {}).get("lda") or {}
        if "balanced_accuracy" in d:
            return float(d["balanced_accuracy"]), float(d["ci_low"]), float(d["ci_high"])
    return None


def curve_table(items: list[tuple[float, Any]]) -> pd.DataFrame:
    """One row per (option value, entry, metric): real, controls, Δ, verdict (strings)."""
    from eegbench.leaderboard import (BLOCK, BLOCK_DELTA, DELTA, SHUFFLED, _delta_decimals, _excludes_zero,
                                      _fmt_cell, eeg_use_verdict)

    rows = []
    for value, lb in items:
        ceiling = _ceiling(lb)
        for entry in lb.methods + lb.references:
            for key in CURVE_METRICS:
                if key not in lb.specs:
                    continue
                sp = lb.specs[key]
                cells = lb.cells["all"]
                real = cells[key].get(entry)
                if real is None:
                    continue
                row = {"Value": _value_text(value), "Entry": entry + (" (reference)" if entry in lb.references else ""),
                       "Metric": sp.title, "Real EEG": _fmt_cell(real, sp.decimals, sp.scale)}
                for title, suffix, dsuffix in (("Shuffled EEG", SHUFFLED, DELTA),
                                               ("Within-block shuffled", BLOCK, BLOCK_DELTA)):
                    if suffix == BLOCK and not lb.block_controlled:
                        continue
                    ctrl, delta = cells.get(key + suffix, {}).get(entry), cells.get(key + dsuffix, {}).get(entry)
                    d = _fmt_cell(delta, _delta_decimals(delta, sp.decimals, sp.scale), sp.scale)
                    row[title] = _fmt_cell(ctrl, sp.decimals, sp.scale)
                    row["Δ " + ("real − shuffled" if suffix == SHUFFLED else "real − within-block")] = (
                        f"**{d}**" if _excludes_zero(delta) else d)
                row["Score rests on"] = eeg_use_verdict(lb, entry, key) or "–"
                row["Decoding ceiling (LDA)"] = ("–" if ceiling is None else
                                                 f"{ceiling[0]:.3f} [{ceiling[1]:.3f}, {ceiling[2]:.3f}]")
                row["n"] = str(real.n)
                rows.append(row)
    frame = pd.DataFrame(rows)
    return frame.fillna("–") if not frame.empty else frame


def curve_figure(items: list[tuple[float, Any]], key_name: str, title: str, stem: Path) -> list[Path]:
    """Metric-vs-option panels (see the module docstring); returns the PNG and SVG paths."""
    from eegbench.figures import _figure, _save
    from eegbench.leaderboard import BLOCK, SHUFFLED

    values = [v for v, _ in items]
    finite = [v for v in values if math.isfinite(v)]
    span = (max(finite) - min(finite)) if len(finite) > 1 else 10.0
    left = (min(finite) if finite else 0.0) - max(span * 0.2, 1.0)
    xs = [left if v == -math.inf else v for v in values]
    metrics = [k for k in CURVE_METRICS if any(k in lb.specs for _, lb in items)]
    entries = sorted({e for _, lb in items for e in lb.methods})
    references = sorted({e for _, lb in items for e in lb.references})
    cols = min(2, max(1, len(metrics)))
    rows = math.ceil(len(metrics) / cols) if metrics else 1
    fig = _figure(5.0 * cols, 3.4 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(metrics):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, metrics):
        spec = next(lb.specs[key] for _, lb in items if key in lb.specs)
        for i, entry in enumerate(entries):
            color = f"C{i % 10}"
            for suffix, style, label in (("", "-o", entry), (SHUFFLED, "--v", f"{entry}, shuffled EEG"),
                                         (BLOCK, ":^", f"{entry}, within-block shuffled EEG")):
                pts = [(x, lb.cells["all"].get(key + suffix, {}).get(entry)) for x, (_, lb) in zip(xs, items)]
                pts = [(x, c) for x, c in pts if c is not None]
                if not pts:
                    continue
                px = np.array([x for x, _ in pts])
                mean = np.array([c.mean for _, c in pts]) * spec.scale
                ax.plot(px, mean, style, color=color, lw=1.4 if not suffix else 1.0, ms=4 if not suffix else 3,
                        label=label)
                if not suffix:
                    low = np.array([c.low if not math.isnan(c.low) else c.mean for _, c in pts]) * spec.scale
                    high = np.array([c.high if not math.isnan(c.high) else c.mean for _, c in pts]) * spec.scale
                    ax.errorbar(px, mean, yerr=[mean - low, high - mean], fmt="none", color=color, capsize=3,
                                lw=0.8)
        for j, entry in enumerate(references):
            pts = [(x, lb.cells["all"].get(key, {}).get(entry)) for x, (_, lb) in zip(xs, items)]
            pts = [(x, c) for x, c in pts if c is not None]
            if pts:
                ax.plot([x for x, _ in pts], [c.mean * spec.scale for _, c in pts], ":x" if j else "-.x",
                        color="0.45", lw=1.0, ms=5, label=f"{entry} (reference)")
        if key == "probe_accuracy":
            ceil = [(x, _ceiling(lb)) for x, (_, lb) in zip(xs, items)]
            ceil = [(x, c) for x, c in ceil if c is not None]
            if ceil:
                cx = [x for x, _ in ceil]
                ax.plot(cx, [c[0] for _, c in ceil], "-s", color="black", lw=1.2, ms=3,
                        label="EEG decoding ceiling (LDA)")
                ax.fill_between(cx, [c[1] for _, c in ceil], [c[2] for _, c in ceil], color="black", alpha=0.1,
                                lw=0)
            chance = pd.concat([lb.frame["chance"] for _, lb in items]).dropna()
            if len(chance):
                ax.axhline(float(chance.iloc[0]), color="0.3", lw=0.8, ls=":", label="chance")
        elif key.startswith("two_way"):
            ax.axhline(0.5, color="0.3", lw=0.8, ls=":", label="chance")
        ax.set_xticks(xs, [_value_text(v) for v in values], fontsize=8)
        ax.set_xlabel(key_name, fontsize=8)
        ax.set_title(spec.title, fontsize=9)
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(lw=0.3)
    if metrics:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, stem)


def curve_markdown(name: str, setting: str, key: str, rest: dict[str, str], items: list[tuple[float, Any]],
                   figure: str | None) -> str:
    """The markdown file of one curve (see the module docstring)."""
    from eegbench.leaderboard import _ceiling_text, _md, method_verdicts

    other = ", ".join(f"{k}={v}" for k, v in rest.items())
    lines = [f"# {name} ({setting}): scores against `{key}`" + (f" ({other})" if other else ""), "",
             "_Generated by `eegbench compare` from the leaderboards linked below; do not edit by hand._", ""]
    if figure:
        lines += [f"![Scores against {key}]({figure})", ""]
    lines += ["## EEG decoding ceiling", ""]
    for value, lb in items:
        text = _ceiling_text(lb.frame["result"].iloc[0]) or "not recorded"
        lines.append(f"- {key} = {_value_text(value)}: {text} ([leaderboard](leaderboard-{lb.slug}.md))")
    lines += ["", "## Which methods use the EEG", ""]
    verdict_rows = []
    for value, lb in items:
        for entry, verdict in method_verdicts(lb).items():
            verdict_rows.append({key: _value_text(value), "Method": entry, "Score rests on": verdict})
    lines += [_md(pd.DataFrame(verdict_rows)) if verdict_rows else "No method results.", "",
              "A method uses the stimulus when a metric on real EEG beats its shuffled-EEG control (the 95 % "
              "interval of Δ excludes 0 on the better side) and, on datasets with recording blocks, also the "
              "within-block shuffled control; beating only the shuffled control is flagged ⚠ (the score rests on "
              "the recording block: slow drift, recording order), never a success.", "",
              "## Scores", "", _md(curve_table(items)), "",
              "Cells are mean [95 % interval] as in each leaderboard (bootstrap over test trials for class "
              "accuracy and 2-way identification; Student-t over seeds for FID). **Bold** Δ: its interval "
              "excludes 0.", ""]
    return "\n".join(lines)


def write_curves(boards: list, out_dir: Path, *, figures: bool = True) -> list[Path]:
    """Write every curve of :func:`curve_groups` (markdown, and figures when ``figures``).

    Returns
    -------
    list of Path
        The markdown files (written, or already current) followed by the figure files.
    """
    written, drawn = [], []
    for name, setting, key, rest, items in curve_groups(boards):
        slug = _slug(name, setting, key, rest)
        rel = None
        if figures:
            paths = curve_figure(items, key, f"{name}, {setting}: scores against {key}",
                                 Path(out_dir) / "figures" / slug)
            drawn += paths
            rel = f"figures/{paths[0].name}"
        path = Path(out_dir) / f"{slug}.md"
        write_bytes_if_changed(path, curve_markdown(name, setting, key, rest, items, rel).encode())
        written.append(path)
    return written + drawn
