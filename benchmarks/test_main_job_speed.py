"""Old vs new: the main job (``eegbench run --method synapse --setting multi-subject``) stage by stage.

One benchmark session runs the job four times on the real N170 recordings, each in its own process
and cache folder: the *old* code (a git revision, default :data:`OLD_REV`, checked out with
``git archive`` into a temporary folder) and the *new* code (this checkout), each once with an empty
cache and once more with the cache it filled (shared denoiser and reference features cached: what
scoring a second method costs). Old and new run back to back on the same machine, so their ratio is
meaningful even where the absolute seconds are noisy. For every stage it reports wall seconds, CPU
seconds in the kernel and minor page faults (``getrusage`` of the child for the whole process; per
stage from ``result.json`` where the code records it), and throughput:

- ``denoiser_pretrain`` and ``fit``: training steps/s;
- ``generate``: images generated per second;
- ``metrics``: images scored per second (generated images);

and checks that the two codes score the same images with the same numbers (both train the same way,
so their samples are bit-identical; FID, KID, IS and probe accuracy must agree to float tolerance).

Budgets: ``EEGBENCH_BENCH_SCALE=full`` runs the job as the README's command does (about 45 minutes
for the four runs on 2 cores; ``EEGBENCH_BENCH_TURNS=empty`` runs only the empty-cache pair, as on a
fresh machine); the default ``quick`` scale shortens every training stage and scores 64 test trials
(a few minutes). Every metric of the run and of its controls must be bit-identical between old and
new. Run::

    pytest benchmarks/test_main_job_speed.py --benchmark-enable -s
    EEGBENCH_BENCH_SCALE=full EEGBENCH_BENCH_TURNS=empty pytest benchmarks/test_main_job_speed.py --benchmark-enable -s
    EEGBENCH_BENCH_SCALE=full EEGBENCH_BENCH_OLD_REV=<rev> pytest benchmarks/test_main_job_speed.py --benchmark-enable -s

The table is printed and written to ``benchmarks/results/main-job-<scale>.md`` (and the raw figures
to ``.json`` beside it).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("EEGBENCH_DATA") or REPO.parent / "shared" / "data")
WEIGHTS_ROOT = Path(os.environ.get("EEGBENCH_WEIGHTS") or REPO.parent / "shared" / "weights")
#: The last commit before issue 26 (typed stages, one scoring context, scoring batch); the issue-12
#: comparison used 111cc6a (override with EEGBENCH_BENCH_OLD_REV).
OLD_REV = os.environ.get("EEGBENCH_BENCH_OLD_REV", "b0a5550")
#: Which cache turns to run: "empty" (a fresh machine: README command 1), "cached" (a second method).
TURNS = tuple(t.strip() for t in os.environ.get("EEGBENCH_BENCH_TURNS", "empty,cached").split(",") if t.strip())
SCALE = os.environ.get("EEGBENCH_BENCH_SCALE", "quick")
QUICK = ["--set", "stage1_steps=150", "--set", "stage2_steps=150", "--backbone-set", "denoiser_steps=150",
         "--max-test-trials", "64"]
STAGES = ("load_data", "denoiser_pretrain", "fit", "generate", "generate_shuffled", "metrics", "metrics_shuffled",
          "total")
METRICS = ("fid", "kid", "is_effnet_lite0", "probe_accuracy")

pytestmark = [
    pytest.mark.skipif(not (DATA_ROOT / "eeg-notebooks" / "data" / "visual" / "N170").is_dir(),
                       reason=f"eeg-notebooks N170 data absent under {DATA_ROOT} (set EEGBENCH_DATA)"),
    pytest.mark.skipif(not (WEIGHTS_ROOT / "taef2").is_dir(),
                       reason=f"TAEF2 weights absent under {WEIGHTS_ROOT} (set EEGBENCH_WEIGHTS)"),
    pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                       reason="the old code is checked out from git; no git checkout here"),
]


def _old_tree(dest: Path) -> Path:
    """The old revision's files under ``dest/src``, importable as ``eegbench`` / ``eegbench_methods``."""
    src = dest / "src"
    src.mkdir(parents=True)
    archive = dest / "old.tar"
    with archive.open("wb") as fh:
        subprocess.run(["git", "-C", str(REPO), "archive", OLD_REV], stdout=fh, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    pkgs = dest / "pkgs"
    pkgs.mkdir()
    (pkgs / "eegbench").symlink_to(src / "eegbench")
    (pkgs / "eegbench_methods").symlink_to(src / "methods")
    return pkgs


def _run(label: str, pythonpath: Path | None, cache: Path, runs: Path, run_id: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    usage_file = runs / f"{run_id}.usage.jsonl"
    env["EEGBENCH_BENCH_USAGE"] = str(usage_file)
    cmd = [sys.executable, str(REPO / "benchmarks" / "_stage_usage.py"), "run", "--method", "synapse", "--setting", "multi-subject",
           "--data-root", str(DATA_ROOT), "--weights-root", str(WEIGHTS_ROOT), "--cache-dir", str(cache),
           "--runs-dir", str(runs), "--run-id", run_id, "--no-progress", *(QUICK if SCALE != "full" else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=str(runs.parent), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise AssertionError(f"{label}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    result = json.loads((runs / run_id / "result.json").read_text())
    history = result.get("training_history", [])
    return {
        "label": label, "wall_s": wall, "durations": result["durations_s"],
        "stage_resources": {row.pop("stage"): row for row in map(json.loads, usage_file.read_text().splitlines())},
        "process": {"cpu_user_s": after.ru_utime - before.ru_utime, "cpu_sys_s": after.ru_stime - before.ru_stime,
                    "minor_faults": after.ru_minflt - before.ru_minflt},
        "metrics": {k: (result["metrics"].get(k) or {}).get("value") for k in METRICS},
        "all_metrics": {name: {k: v.get("value") for k, v in metrics.items()} for name, metrics in
                        [("samples", result["metrics"])] + [(c, r.get("metrics") or {}) for c, r in
                                                             (result.get("controls") or {}).items()]},
        "n_generated": result["metrics"]["fid"]["n_gen"],
        "steps": {"denoiser_pretrain": int(result["backbones"].get("denoiser_steps", 0)),
                  "fit": sum(int(v) for k, v in result["method"]["config"].items()
                             if k.startswith("stage") and k.endswith("_steps"))},
        "loaded_denoiser": result["backbones"].get("denoiser_loaded_from_cache"),
        "history_tail": history[-3:],
    }


def _rate(r: dict, stage: str) -> float | None:
    sec = r["durations"].get(stage)
    if not sec:
        return None
    if stage in ("denoiser_pretrain", "fit"):
        n = r["steps"][stage]
        return None if not n or (stage == "denoiser_pretrain" and r["loaded_denoiser"]) else n / sec
    if stage.startswith(("generate", "metrics")):
        return r["n_generated"] / sec
    return None


def _table(pairs: list[tuple[str, dict, dict]]) -> str:
    unit = {"denoiser_pretrain": "steps/s", "fit": "steps/s", "generate": "img/s", "metrics": "img/s"}
    lines = ["| cache | stage | old s | new s | kernel CPU / minor faults, old → new | throughput old → new | "
             "old ÷ new time |",
             "|---|---|---:|---:|---|---|---:|"]
    for cache, old, new in pairs:
        for stage in STAGES:
            a, b = old["durations"].get(stage), new["durations"].get(stage)
            if a is None or b is None:
                continue
            ra, rb = _rate(old, stage), _rate(new, stage)
            thr = f"{ra:.2f} → {rb:.2f} {unit[stage.split('_')[0] if stage != 'denoiser_pretrain' else stage]}" \
                if ra and rb else ""
            ua, ub = old["stage_resources"].get(stage), new["stage_resources"].get(stage)
            kernel = (f"{ua['cpu_sys_s']:.0f} s / {ua['minor_faults'] / 1e6:.2f} M → "
                      f"{ub['cpu_sys_s']:.0f} s / {ub['minor_faults'] / 1e6:.2f} M") if ua and ub else ""
            lines.append(f"| {cache} | {stage} | {a:.1f} | {b:.1f} | {kernel} | {thr} | {a / b:.2f}× |")
        po, pn = old["process"], new["process"]
        lines.append(f"| {cache} | whole process (wall) | {old['wall_s']:.1f} | {new['wall_s']:.1f} | "
                     f"{po['cpu_sys_s']:.0f} s / {po['minor_faults'] / 1e6:.2f} M → "
                     f"{pn['cpu_sys_s']:.0f} s / {pn['minor_faults'] / 1e6:.2f} M | | "
                     f"{old['wall_s'] / new['wall_s']:.2f}× |")
    return "\n".join(lines)


def test_main_job_old_vs_new(benchmark):
    work = Path(tempfile.mkdtemp(prefix="eegbench-bench-main-"))
    try:
        old_path = _old_tree(work / "old")
        runs = {}

        def all_runs():
            for label, path in (("old", old_path), ("new", None)):
                cache = work / f"cache-{label}"
                (work / f"runs-{label}").mkdir()
                for turn in TURNS:
                    runs[(label, turn)] = _run(f"{label}/{turn}", path, cache, work / f"runs-{label}",
                                               f"{label}-{turn}")

        benchmark.pedantic(all_runs, rounds=1, iterations=1)
        pairs = [(turn, runs[("old", turn)], runs[("new", turn)]) for turn in TURNS]
        table = _table(pairs)
        print(f"\nmain job, scale={SCALE}, old={OLD_REV} vs new (this checkout)\n{table}")
        for turn, old, new in pairs:
            benchmark.extra_info[turn] = {
                "old_s": old["durations"], "new_s": new["durations"],
                "speedup": {s: old["durations"][s] / new["durations"][s] for s in STAGES
                            if old["durations"].get(s) and new["durations"].get(s)},
                "old_metrics": old["metrics"], "new_metrics": new["metrics"],
            }
        out = REPO / "benchmarks" / "results"
        out.mkdir(exist_ok=True)
        (out / f"main-job-{SCALE}.md").write_text(
            f"# Main job, old ({OLD_REV}) vs new, scale `{SCALE}`\n\n"
            f"_Written by `benchmarks/test_main_job_speed.py`; one session, runs back to back._\n\n{table}\n",
            encoding="utf-8")
        (out / f"main-job-{SCALE}.json").write_text(
            json.dumps({f"{k[0]}/{k[1]}": v for k, v in runs.items()}, indent=1), encoding="utf-8")
        for turn, old, new in pairs:  # same seed, same machine: the same numbers, bit for bit
            assert new["all_metrics"] == old["all_metrics"], turn
        if "cached" in TURNS:
            assert runs[("new", "cached")]["loaded_denoiser"] and runs[("old", "cached")]["loaded_denoiser"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
