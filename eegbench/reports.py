"""``eegbench compare``: every leaderboard, its figures and the curves across leaderboards, from results.

The top of the reporting layer: :mod:`eegbench.leaderboard` builds the tables and statistics,
:mod:`eegbench.figures` draws them, :mod:`eegbench.curves` joins leaderboards along a numeric
dataset option; :func:`compare` runs the three and writes the files (each only when its content
changes), plus the durable compact results under ``reports/results/``. Nothing below this
module imports it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from eegbench import figures as figs
from eegbench.curves import write_curves
from eegbench.errors import EegbenchError
from eegbench.files import write_bytes_if_changed
from eegbench.leaderboard import (
    FORMATS,
    _check_hashes,
    _compact_name,
    _key,
    _merge,
    build_leaderboard,
    compact_result,
    export_json,
    export_pairs,
    export_rows,
    leaderboard_markdown,
    load_committed,
    results_frame,
)

log = logging.getLogger("eegbench.leaderboard")

__all__ = ["compare"]


def compare(
    results: Sequence[dict[str, Any]],
    out_dir: Path,
    *,
    protocol_hash: str | None = None,
    results_dir: Path | None = None,
    replace: bool = False,
    formats: Iterable[str] = ("markdown",),
    figures: bool = True,
    seed: int = 0,
) -> list[Path]:
    """Build every leaderboard from the committed results plus ``results``; write what changed.

    Parameters
    ----------
    results : sequence of dict
        Loaded local ``result.json`` contents (runs and ``eegbench evaluate`` results; ``_path``
        locates the run folder for its samples and training log).
    out_dir : Path
        Report folder: ``leaderboard-<slug>.{md,csv,json}``, ``figures/``, ``results/<slug>/``.
    protocol_hash : str, optional
        Keep only results (local and committed) with this protocol hash (prefix match).
    results_dir : Path, optional
        Folder of the durable compact results (default ``out_dir / "results"``).
    replace : bool
        Let a local run replace a committed result of the same method/profile/seed/subject/protocol
        (default: the committed one is kept and the duplicate named in a warning).
    formats : iterable of str
        Any of ``markdown`` (with figures and grid), ``csv`` (``leaderboard-<slug>.csv`` cells and
        ``leaderboard-<slug>-pairs.csv`` tests) and ``json``.
    figures : bool
        Draw the figures and the side-by-side grid (markdown only).
    seed : int
        Seed of the bootstrap, the Monte-Carlo permutation tests and the grid's trial choice.

    Returns
    -------
    list of Path
        The leaderboard files of every group, per group in the order markdown, csv (cells, pairs),
        json (written, or already current). Compact results go to ``results_dir``, figures to
        ``out_dir / "figures"``.

    Raises
    ------
    EegbenchError
        No results (``--max-steps`` smoke-test runs are left out, with a warning); an unknown format;
        two results of one method/seed/subject under one protocol among the local runs or among the
        committed ones; or one group mixes protocol hashes (or split hashes for one subject): the
        message lists the runs per hash, the protocol fields that differ, and how to choose one.
        Nothing is written then.
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise EegbenchError(f"--format {','.join(unknown) or '(none)'}: expected one or more of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    results_dir = Path(results_dir) if results_dir is not None else out_dir / "results"
    committed = load_committed(results_dir)
    local = list(results)
    if protocol_hash:
        local = [r for r in local if r["protocol"]["hash"].startswith(protocol_hash)]
        committed = [r for r in committed if r["protocol"]["hash"].startswith(protocol_hash)]
    smoke = [r for r in local if r.get("max_steps")]
    if smoke:  # --max-steps runs are smoke tests: never ranked
        log.warning("left out %d --max-steps smoke-test run(s): %s", len(smoke),
                    ", ".join(str(r["run_id"]) for r in smoke))
        local = [r for r in local if not r.get("max_steps")]
        if not local and not committed:
            raise EegbenchError("only --max-steps smoke-test runs found; they never reach a leaderboard")
    if not local and not committed:
        raise EegbenchError("no run results found; run `eegbench run ...` first or pass the runs folder")
    merged, to_write, to_remove = _merge(local, committed, replace)
    frame = results_frame(merged)
    by_hash = {(r["protocol"]["hash"], r["split"]["sha256"]): r for r in merged}
    boards = []
    for (dataset, setting), group in frame.groupby(["dataset", "setting"], sort=True):
        _check_hashes(dataset, setting, group, by_hash)
        boards.append(build_leaderboard(group, by_hash, seed=seed))

    compacts = {k: compact_result(r) for k, r in to_write.items()}  # reads train logs: may raise, before writing
    # everything is computed; figures first (a failure there leaves the results and tables as they were),
    # then the compact results (the inputs of the tables), then the tables
    fig_paths: dict[str, dict[str, str]] = {}
    grid_notes: dict[str, str | None] = {}
    for lb in boards:
        fig_paths[lb.slug], grid_notes[lb.slug] = {}, None
        if figures and "markdown" in formats:
            fig_paths[lb.slug], grid_notes[lb.slug] = figs.leaderboard_figures(lb, out_dir, seed=seed)
    written: list[Path] = []
    if to_write:
        log.info("adding %d result(s) to %s", len(to_write), results_dir)
    slug_of = {}
    for lb in boards:
        for _, row in lb.frame.iterrows():
            slug_of[_key(row)] = lb.slug
    for path in to_remove:
        path.unlink(missing_ok=True)
    for k in to_write:
        path = results_dir / slug_of[k] / _compact_name(k)
        write_bytes_if_changed(path, (json.dumps(compacts[k], indent=1, default=str) + "\n").encode())
    for lb in boards:
        grid_note = grid_notes[lb.slug]
        stem = f"leaderboard-{lb.slug}"
        if "markdown" in formats:
            path = out_dir / f"{stem}.md"
            write_bytes_if_changed(path, leaderboard_markdown(lb, figures=fig_paths[lb.slug], grid_note=grid_note).encode())
            written.append(path)
        if "csv" in formats:
            for path, df in ((out_dir / f"{stem}.csv", export_rows(lb)),
                             (out_dir / f"{stem}-pairs.csv", export_pairs(lb))):
                write_bytes_if_changed(path, df.to_csv(index=False).encode())
                written.append(path)
        if "json" in formats:
            path = out_dir / f"{stem}.json"
            write_bytes_if_changed(path, (json.dumps(export_json(lb, fig_paths[lb.slug]), indent=1, default=str)
                                     + "\n").encode())
            written.append(path)
    if "markdown" in formats:  # a numeric dataset option swept over leaderboards (e.g. snr_db): its curves
        written += write_curves(boards, out_dir, figures=figures)
    return written
