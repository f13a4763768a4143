"""``eegbench sweep`` (:mod:`eegbench.sweep`): the grid, idempotence, executors, a killed sweep."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import WEIGHTS_ROOT, needs_real_data
from eegbench.cli import main
from eegbench.errors import ConfigError
from eegbench.runner import RunConfig
from eegbench.sweep import (
    SweepRun,
    classify,
    expand,
    make_executor,
    parse_list,
    parse_seeds,
    run_id_for,
    run_sweep,
    slurm_parameters,
)

#: A run of the reference (no training) on the synthetic dataset: ~25 s on 2 cores.
QUICK = ["--dataset", "synthetic", "--backbone-set", "denoiser_steps=5", "--max-test-trials", "8", "--n-samples", "1",
         "--steps", "2", "--no-progress"]


def test_seeds_and_lists_parse_and_bad_input_is_named():
    assert parse_seeds("0-5") == [0, 1, 2, 3, 4, 5]
    assert parse_seeds("0,2-3,2") == [0, 2, 3]
    for bad in ("a", "3-1", "1,,x"):
        with pytest.raises(ConfigError, match="is not a seed or a range"):
            parse_seeds(bad)
    assert parse_list("synapse, gwit,synapse", "method") == ["synapse", "gwit"]
    with pytest.raises(ConfigError, match="--method: expected a comma-separated list"):
        parse_list(" , ", "method")


def test_run_ids_are_deterministic_and_change_with_what_changes_a_result(tmp_path):
    base = RunConfig(method="synapse", dataset="synthetic", seed=3)
    rid = run_id_for(base)
    assert rid.startswith("synapse_synthetic_multi-subject_seed3_") and rid == run_id_for(RunConfig(
        method="synapse", dataset="synthetic", seed=3, runs_dir=tmp_path, progress=False, generate_batch_size=4))
    for change in ({"overrides": {"stage1_steps": "5"}}, {"num_inference_steps": 7}, {"mixed_precision": "bf16"},
                   {"dataset_options": {"snr_db": "0"}}, {"profile": "paper"}):
        assert run_id_for(dataclasses.replace(base, **change)) != rid


def test_expand_grid_subjects_and_per_method_overrides(tmp_path):
    base = RunConfig(dataset="synthetic", cache_dir=tmp_path, overrides={"stage1_steps": "5",
                                                                            "gwit.controlnet_steps": "3"})
    runs = expand(base, methods=["synapse", "gwit"], seeds=[0, 1], settings=["multi-subject", "single-subject"],
                  subjects="all")
    subjects = sorted({r.subject for r in runs if r.setting == "single-subject"})
    assert subjects and len(runs) == 2 * 2 * (1 + len(subjects))
    assert {r.run_id for r in runs} == {run_id_for(r) for r in runs} and len({r.run_id for r in runs}) == len(runs)
    syn = next(r for r in runs if r.method == "synapse")
    gw = next(r for r in runs if r.method == "gwit")
    assert syn.overrides == {"stage1_steps": "5"} and gw.overrides == {"controlnet_steps": "3"}
    with pytest.raises(ConfigError, match="no method of this sweep .* has a 'nope'"):
        expand(dataclasses.replace(base, overrides={"nope": "1"}), methods=["synapse"], seeds=[0],
               settings=["multi-subject"], subjects=None)
    with pytest.raises(ConfigError, match="needs --subject"):
        expand(RunConfig(dataset="synthetic"), methods=["synapse"], seeds=[0], settings=["cross-subject"],
               subjects=None)
    with pytest.raises(Exception, match="nosuch"):
        expand(RunConfig(dataset="synthetic"), methods=["nosuch"], seeds=[0], settings=["multi-subject"], subjects=None)


def test_classify_skips_finished_resumes_interrupted_and_holds_failed(tmp_path):
    cfgs = expand(RunConfig(dataset="synthetic", runs_dir=tmp_path), methods=["synapse"], seeds=[0, 1, 2, 3],
                  settings=["multi-subject"], subjects=None)
    done, partial, failed, fresh = (SweepRun(c) for c in cfgs)
    (tmp_path / done.run_id).mkdir()
    (tmp_path / done.run_id / "result.json").write_text("{}")
    (tmp_path / f".partial-{partial.run_id}").mkdir()
    (tmp_path / f".partial-{partial.run_id}" / "run.json").write_text("{}")
    previous = {failed.run_id: {"status": "failed", "error": "ConfigError: boom"}}
    runs = [done, partial, failed, fresh]
    todo = classify(runs, tmp_path, previous, resume=False, retry_failed=False)
    assert todo == [fresh]
    assert [r.status for r in runs] == ["skipped", "interrupted", "failed", "pending"]
    assert "--resume" in partial.error and "boom" in failed.error and "--retry-failed" in failed.error
    runs = [SweepRun(c) for c in cfgs]
    todo = classify(runs, tmp_path, previous, resume=True, retry_failed=True)
    assert [r.run_id for r in todo] == [c.run_id for c in cfgs[1:]] and todo[0].config.resume is True


def test_slurm_executor_is_one_array_with_the_given_resources(tmp_path):
    p = slurm_parameters({"partition": "gpu", "gpus_per_node": 1, "mem_gb": 64, "timeout_min": 240,
                          "cpus_per_task": None}, jobs=8)
    assert p == {"partition": "gpu", "gpus_per_node": 1, "mem": "64GB", "time": 240, "array_parallelism": 8}
    import submitit

    # the keywords are ones submitit's SLURM executor accepts (checked without a cluster)
    assert set(p) <= set(submitit.SlurmExecutor._valid_parameters())
    if shutil.which("srun") is None:
        with pytest.raises(ConfigError, match="--executor slurm: .*srun.*use --executor local"):
            make_executor("slurm", tmp_path)
    with pytest.raises(ConfigError, match="--executor 'k8s'"):
        make_executor("k8s", tmp_path)


def test_a_failed_run_is_reported_and_retried_only_on_request(tmp_path, capsys):
    args = ["sweep", "--method", "synapse", "--seed", "0", "--set", "stage1_steps=-4", "--executor", "debug",
            "--runs-dir", str(tmp_path / "runs"), "--weights-root", str(tmp_path / "no-weights"), *QUICK]
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert "[1/1] failed" in out and "did not finish" in err and "\n" not in err.strip()
    state = json.loads((tmp_path / "runs" / "sweeps" / "sweep" / "state.json").read_text())
    assert state["runs"][0]["status"] == "failed" and state["runs"][0]["error"]
    assert main(args) == 2  # reported again, not re-run
    out, _ = capsys.readouterr()
    assert "0 to run" in out and "1 failed before" in out and "--retry-failed" in out
    assert main([*args, "--retry-failed"]) == 2
    assert "1 to run" in capsys.readouterr().out


@needs_real_data
@pytest.mark.slow
def test_debug_executor_runs_land_where_compare_reads_them(tmp_path, capsys):
    runs_dir = tmp_path / "runs"
    base = RunConfig(dataset="synthetic", runs_dir=runs_dir, weights_root=WEIGHTS_ROOT, cache_dir=tmp_path / "cache",
                     backbone_overrides={"denoiser_steps": "5"}, max_test_trials=8, n_samples_per_trial=1,
                     num_inference_steps=2)
    lines = []
    runs = run_sweep(base, methods=["class-prior"], seeds=[0, 1], settings=["multi-subject"], subjects=None,
                     executor="debug", echo=lines.append)
    assert [r.status for r in runs] == ["done", "done"]
    assert all((runs_dir / r.run_id / "result.json").is_file() for r in runs)
    assert lines[1].startswith("[1/2] done") and "FID" in lines[1] and "| status" in lines[-1]
    again = run_sweep(base, methods=["class-prior"], seeds=[0, 1], settings=["multi-subject"], subjects=None,
                      executor="debug", echo=lines.append)
    assert [r.status for r in again] == ["skipped", "skipped"]
    assert main(["compare", str(runs_dir), "--out", str(tmp_path / "reports"), "--no-figures"]) == 0
    board = (tmp_path / "reports" / "leaderboard-synthetic-multi-subject.md").read_text()
    assert "class-prior [backbone denoiser_steps=5]" in board and "| 2 " in board  # both seeds in one row


@needs_real_data
@pytest.mark.e2e  # the longest end-to-end runs: `python -m pytest -m e2e` (CI runs them)
@pytest.mark.slow
def test_a_killed_local_sweep_rerun_skips_what_was_done(tmp_path):
    """Three local runs one at a time; the sweep is killed once the first has finished; run again it
    skips the finished one, and the others finish (an interrupted one resumes with --resume)."""
    runs_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "eegbench", "sweep", "--method", "class-prior", "--seed", "0-2", "--jobs", "1",
           "--runs-dir", str(runs_dir), "--weights-root", str(WEIGHTS_ROOT), "--cache-dir", str(tmp_path / "cache"),
           *QUICK]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not list(runs_dir.glob("*/result.json")):
        assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
        time.sleep(1)
    first = list(runs_dir.glob("*/result.json"))
    assert len(first) == 1
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its running job
    proc.wait()
    mtime = first[0].stat().st_mtime_ns
    out = subprocess.run([*cmd, "--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "1 finished before" in out.stdout and out.stdout.count("] done") + out.stdout.count("] resumed") == 2
    assert first[0].stat().st_mtime_ns == mtime  # the finished run was not run again
    assert len(list(runs_dir.glob("*/result.json"))) == 3
    state = json.loads((runs_dir / "sweeps" / "sweep" / "state.json").read_text())
    assert sorted(r["status"] for r in state["runs"]) in (["done", "done", "skipped"], ["done", "resumed", "skipped"])
    assert Path(runs_dir / "sweeps" / "sweep" / "summary.md").is_file()
