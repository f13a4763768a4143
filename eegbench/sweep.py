"""``eegbench sweep``: many runs (methods × seeds × subjects × settings) as submitit jobs.

A sweep expands lists of the ``run`` options (``--method synapse,gwit --seed 0-5 --subject all``)
into one :class:`~eegbench.runner.RunConfig` per run and hands each to a submitit executor
(``facebookincubator/submitit``): ``local`` (default; one subprocess per run on this machine, at
most ``--jobs`` at a time), ``slurm`` (a SLURM job array, one task per run, partition / GPUs / time
/ memory options; ``--jobs`` caps how many run at once) or ``debug`` (in this process, for tests
and debugging). The harness does not schedule anything itself beyond keeping ``--jobs`` local runs
in flight.

Idempotent by construction: every run gets a deterministic id (:func:`run_id_for`: method,
dataset, setting, subject and seed, plus a hash of every option that changes its result), so a
sweep that is run again

- skips the runs whose ``runs/<run_id>/result.json`` exists (finished; ``eegbench compare`` reads
  them from there),
- continues the interrupted ones (a ``runs/.partial-<run_id>/`` with training state) when given
  ``--resume``, and reports them otherwise,
- reports the runs that failed before (recorded in the sweep's state file) and runs them again
  only with ``--retry-failed``.

State and logs: ``<runs dir>/sweeps/<name>/state.json`` (every run's id, options, status, wall time
and error line; rewritten atomically after each run), ``summary.md`` (the final table) and
``submitit/`` (the executor's pickles and per-job stdout/stderr). Progress is one line per run as it
ends, then the summary table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from eegbench.errors import ConfigError, EegbenchError
from eegbench.results import write_json_atomic
from eegbench.run_config import RUN_ID_FIELDS

log = logging.getLogger("eegbench.sweep")

__all__ = ["EXECUTORS", "SweepRun", "expand", "make_executor", "parse_list", "parse_seeds", "run_id_for",
           "run_sweep", "slurm_parameters"]

#: Executors ``--executor`` accepts.
EXECUTORS = ("local", "slurm", "debug")
def parse_list(text: str | Sequence[str] | None, what: str) -> list[str]:
    """``"synapse,gwit"`` → ``["synapse", "gwit"]`` (order kept, duplicates dropped).

    Raises
    ------
    ConfigError
        For an empty list.
    """
    items = text if isinstance(text, (list, tuple)) else str(text or "").split(",")
    out = list(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))
    if not out:
        raise ConfigError(f"--{what}: expected a comma-separated list, got {text!r}")
    return out


def parse_seeds(text: str | int | Sequence[int]) -> list[int]:
    """Seeds from ``"0-5"``, ``"0,2,4"`` or ``"0-2,7"`` (ranges inclusive).

    Raises
    ------
    ConfigError
        For anything else (names the bad part).
    """
    if isinstance(text, int):
        return [text]
    if isinstance(text, (list, tuple)):
        return list(dict.fromkeys(int(s) for s in text))
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m and int(m.group(1)) <= int(m.group(2)):
            seeds += range(int(m.group(1)), int(m.group(2)) + 1)
        elif re.fullmatch(r"\d+", part):
            seeds.append(int(part))
        else:
            raise ConfigError(f"--seed {text!r}: {part!r} is not a seed or a range such as 0-5")
    return list(dict.fromkeys(seeds))


def run_id_for(cfg) -> str:
    """Deterministic run id: ``<method>_<dataset>_<setting>[-sub<N>]_seed<S>_<hash>``.

    The hash (10 hex chars) covers every :class:`~eegbench.runner.RunConfig` field that can change
    the result (dataset options, profile, ``--set`` / ``--backbone-set``, protocol options,
    mixed precision, ``--max-steps``, extra metrics), not paths, progress or batch sizes.
    """
    identity = {k: v for k, v in asdict(cfg).items() if k in RUN_ID_FIELDS}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]
    subject = f"-sub{cfg.subject}" if cfg.subject is not None else ""
    name = f"{cfg.method}_{cfg.dataset}_{cfg.setting}{subject}_seed{cfg.seed}_{digest}"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def _subjects_of(base, dataset: str, plugins) -> list[int]:
    """Every subject of a dataset (its ``DatasetInfo.subjects``; loads it, from the cache when built)."""
    from eegbench.datasets.info import make_loader

    loader = make_loader(dataset, base.data_root, base.cache_dir, dict(base.dataset_options), plugins=plugins)
    subjects = list(loader.load().info.subjects)
    if not subjects:
        raise ConfigError(f"--subject all: dataset {dataset!r} lists no subjects")
    return subjects


def _overrides_per_method(base, methods: Sequence[str], plugins) -> dict[str, dict[str, str]]:
    """Each method's ``--set`` overrides: ``key=value`` goes to the methods whose config has ``key``,
    ``method.key=value`` to that method only.

    Raises
    ------
    ConfigError
        A key no method of the sweep has, or a ``method.`` prefix naming a method not in the sweep.
    """
    fields_of = {m: {f.name for f in dataclasses.fields(plugins.methods.get(m).default_config(base.profile))}
                 for m in methods}
    out: dict[str, dict[str, str]] = {m: {} for m in methods}
    for key, value in base.overrides.items():
        target, _, name = key.rpartition(".")
        if target:
            if target not in out:
                raise ConfigError(f"--set {key}={value}: {target!r} is not a method of this sweep ({', '.join(methods)})")
            out[target][name] = value
            continue
        having = [m for m in methods if key in fields_of[m]]
        if not having:
            raise ConfigError(f"--set {key}={value}: no method of this sweep ({', '.join(methods)}) has a {key!r} "
                              "hyperparameter")
        for m in having:
            out[m][key] = value
    return out


def expand(base, *, methods: Sequence[str], seeds: Sequence[int], settings: Sequence[str],
           subjects: str | Sequence[int] | None, plugins=None) -> list:
    """Every run of the grid methods × settings × subjects × seeds, as RunConfigs with their ids.

    Parameters
    ----------
    base : RunConfig
        Every other option (dataset, profile, overrides, protocol, paths). A ``--set key=value``
        override goes to every method whose config has ``key``; ``method.key=value`` to one method.
    methods, settings : sequence of str
        Registered names (checked here: an unknown one fails before anything runs).
    seeds : sequence of int
    subjects : "all", sequence of int or None
        Subjects of ``single-subject`` / ``cross-subject`` runs; ``"all"`` = every subject of the
        dataset; None = no subject (``multi-subject``).
    plugins : eegbench.plugins.PluginSet, optional

    Returns
    -------
    list of RunConfig
        In the order method, setting, subject, seed; ``run_id`` set by :func:`run_id_for`.

    Raises
    ------
    ConfigError, PluginError
        An unknown method or setting, a subject for ``multi-subject``, a per-subject setting
        without subjects.
    """
    from eegbench.plugins import get_plugin_manager

    plugins = plugins or get_plugin_manager()
    for m in methods:
        plugins.methods.get(m)
    for s in settings:
        plugins.settings.get(s)
    overrides = _overrides_per_method(base, methods, plugins)
    if subjects == "all":
        subject_list: list[int | None] = list(_subjects_of(base, base.dataset, plugins))
    elif subjects is None:
        subject_list = [None]
    else:
        subject_list = list(subjects)
    runs = []
    for method in methods:
        for setting in settings:
            per_subject = setting != "multi-subject"
            if per_subject and subject_list == [None]:
                raise ConfigError(f"--setting {setting} needs --subject (a list such as 1,2,3 or all)")
            for subject in (subject_list if per_subject else [None]):
                for seed in seeds:
                    cfg = dataclasses.replace(base, method=method, setting=setting, subject=subject, seed=int(seed),
                                              overrides=overrides[method], resume=False, run_id=None,
                                              progress=False)
                    runs.append(dataclasses.replace(cfg, run_id=run_id_for(cfg)))
    return runs


@dataclass
class SweepRun:
    """One run of a sweep and what became of it.

    Parameters
    ----------
    config : RunConfig
    status : str
        ``pending``, ``done`` (finished now), ``skipped`` (finished before), ``interrupted`` (a
        partial folder waits for ``--resume``), ``failed`` (now or before), ``resumed`` (finished now
        from a partial folder).
    wall_s : float, optional
        Wall time of the job.
    error : str
        Last line of the error of a failed run.
    summary : str
        One-line metrics of a finished run.
    """

    config: Any
    status: str = "pending"
    wall_s: float | None = None
    error: str = ""
    summary: str = ""
    job_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return str(self.config.run_id)

    def row(self) -> dict[str, Any]:
        """The summary table's row."""
        c = self.config
        return {"run_id": self.run_id, "method": c.method, "setting": c.setting,
                "subject": "" if c.subject is None else c.subject, "seed": c.seed, "status": self.status,
                "wall (s)": "" if self.wall_s is None else f"{self.wall_s:.0f}",
                "result": self.summary or self.error}


def run_job(config: dict[str, Any]) -> dict[str, Any]:
    """What one submitit job runs: :func:`eegbench.runner.run` of one config (picklable, top level).

    Parameters
    ----------
    config : dict
        ``dataclasses.asdict`` of a RunConfig (paths as strings).

    Returns
    -------
    dict
        ``run_id``, ``summary`` (one line of metrics), ``total_s``.
    """
    from eegbench.leaderboard import metrics_summary
    from eegbench.run_config import config_from_record
    from eegbench.runner import run

    result = run(config_from_record(config))
    summary = metrics_summary(result.get("metrics") or {}, skipped=False) if result else ""
    return {"run_id": result.get("run_id", config.get("run_id")), "summary": summary,
            "total_s": (result.get("durations_s") or {}).get("total")}


def slurm_parameters(slurm: Mapping[str, Any] | None, jobs: int = 1) -> dict[str, Any]:
    """``submitit.SlurmExecutor.update_parameters`` keywords from the sweep's SLURM options.

    Parameters
    ----------
    slurm : mapping, optional
        ``partition``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``timeout_min``,
        ``account``, ``qos`` (None values are left out).
    jobs : int
        Array tasks running at once (``array_parallelism``, ``#SBATCH --array=0-N%jobs``).

    Returns
    -------
    dict
        ``partition``, ``gpus_per_node``, ``cpus_per_task``, ``mem`` (``"64GB"``), ``time``
        (minutes), ``account``, ``qos`` as given, and ``array_parallelism``.
    """
    mapped = {"partition": "partition", "gpus_per_node": "gpus_per_node", "cpus_per_task": "cpus_per_task",
              "mem_gb": "mem", "timeout_min": "time", "account": "account", "qos": "qos"}
    params = {mapped[k]: (f"{v}GB" if k == "mem_gb" else v) for k, v in (slurm or {}).items()
              if v is not None and k in mapped}
    return {**params, "array_parallelism": max(1, int(jobs))}


def make_executor(kind: str, folder: Path, *, slurm: Mapping[str, Any] | None = None, jobs: int = 1):
    """The submitit executor of ``--executor``.

    Parameters
    ----------
    kind : {"local", "slurm", "debug"}
    folder : Path
        submitit's folder (pickles, stdout/stderr per job; ``%j`` is the job id).
    slurm : mapping, optional
        ``partition``, ``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``timeout_min``,
        ``account``, ``qos`` (None values are left out).
    jobs : int
        SLURM: ``slurm_array_parallelism`` (tasks of the array running at once).

    Raises
    ------
    ConfigError
        For an unknown kind.
    """
    import submitit

    if kind == "local":
        ex = submitit.LocalExecutor(folder=str(folder / "%j"))
        timeout = (slurm or {}).get("timeout_min")
        if timeout:
            ex.update_parameters(timeout_min=int(timeout))
        return ex
    if kind == "debug":
        return submitit.DebugExecutor(folder=str(folder / "%j"))
    if kind == "slurm":
        try:
            ex = submitit.SlurmExecutor(folder=str(folder / "%j"))
        except RuntimeError as exc:  # submitit checks for srun
            raise ConfigError(f"--executor slurm: {exc} (use --executor local on one machine)") from None
        ex.update_parameters(**slurm_parameters(slurm, jobs))
        return ex
    raise ConfigError(f"--executor {kind!r}: known {', '.join(EXECUTORS)}")


def _state_file(runs_dir: Path, name: str) -> Path:
    return Path(runs_dir) / "sweeps" / name / "state.json"


def _read_state(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {r["run_id"]: r for r in data.get("runs", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_state(path: Path, name: str, runs: Sequence[SweepRun]) -> None:
    rows = [{"run_id": r.run_id, "status": r.status, "wall_s": r.wall_s, "error": r.error, "summary": r.summary,
             "job_id": r.job_id, "config": json.loads(json.dumps(asdict(r.config), default=str))} for r in runs]
    write_json_atomic(path, {"sweep": name, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": rows})


def classify(runs: Sequence[SweepRun], runs_dir: Path, previous: Mapping[str, Mapping[str, Any]], *,
             resume: bool, retry_failed: bool) -> list[SweepRun]:
    """Mark what is already done, interrupted or failed; return the runs to submit.

    Finished (``runs_dir/<id>/result.json``) → ``skipped``. A partial folder with a ``run.json`` →
    submitted with ``resume=True`` when ``resume``, else ``interrupted``. Failed in the previous
    state and no partial folder → ``failed`` (not submitted) unless ``retry_failed``.
    """
    todo = []
    for r in runs:
        rid = r.run_id
        if (runs_dir / rid / "result.json").is_file():
            r.status = "skipped"
            r.summary = "finished before"
        elif (runs_dir / f".partial-{rid}" / "run.json").is_file():
            if resume:
                r.config = dataclasses.replace(r.config, resume=True)
                todo.append(r)
            else:
                r.status = "interrupted"
                r.error = f"runs/.partial-{rid} holds an interrupted run: sweep again with --resume"
        elif (previous.get(rid) or {}).get("status") == "failed" and not retry_failed:
            r.status = "failed"
            r.error = (previous[rid].get("error") or "failed before") + " (run again with --retry-failed)"
        else:
            todo.append(r)
    return todo


def run_sweep(base, *, methods: Sequence[str], seeds: Sequence[int], settings: Sequence[str],
              subjects: str | Sequence[int] | None, executor: str = "local", jobs: int = 1, name: str = "sweep",
              resume: bool = False, retry_failed: bool = False, slurm: Mapping[str, Any] | None = None,
              dry_run: bool = False, echo: Callable[[str], None] = print, poll_s: float = 2.0,
              plugins=None) -> list[SweepRun]:
    """Expand, classify and run a sweep; print one line per run and the summary table.

    Parameters
    ----------
    base : RunConfig
        Options shared by every run (``runs_dir`` is where results and the sweep state go).
    methods, seeds, settings, subjects
        The grid (see :func:`expand`).
    executor : {"local", "slurm", "debug"}
    jobs : int
        Runs at once (local: subprocesses in flight; slurm: array parallelism; debug: 1).
    name : str
        Sweep name: its state and logs live in ``<runs dir>/sweeps/<name>/``.
    resume, retry_failed : bool
        Continue interrupted runs; run failed ones again.
    slurm : mapping, optional
        SLURM options (:func:`make_executor`).
    dry_run : bool
        Print the plan (every run with its status) and run nothing.
    echo : callable
        Where lines go.
    poll_s : float
        Seconds between status checks of running local/SLURM jobs.

    Returns
    -------
    list of SweepRun

    Raises
    ------
    ConfigError
        For a bad grid, executor, ``jobs`` or ``name``.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: must be ≥ 1")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise ConfigError(f"--name {name!r}: letters, digits, '.', '_' and '-' only")
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor {executor!r}: known {', '.join(EXECUTORS)}")
    runs_dir = Path(base.runs_dir)
    runs = [SweepRun(c) for c in expand(base, methods=methods, seeds=seeds, settings=settings, subjects=subjects,
                                        plugins=plugins)]
    state = _state_file(runs_dir, name)
    todo = classify(runs, runs_dir, _read_state(state), resume=resume, retry_failed=retry_failed)
    echo(f"sweep {name}: {len(runs)} run(s); {len(todo)} to run, "
         f"{sum(r.status == 'skipped' for r in runs)} finished before, "
         f"{sum(r.status == 'interrupted' for r in runs)} interrupted, "
         f"{sum(r.status == 'failed' for r in runs)} failed before ({executor} executor, {jobs} at a time)")
    if dry_run:
        for r in runs:
            echo(f"  {r.status if r not in todo else ('resume' if r.config.resume else 'run'):<11} {r.run_id}")
        return runs
    _write_state(state, name, runs)
    done = len(runs) - len(todo)
    counter = {"n": done}

    def finished(r: SweepRun, job) -> None:
        try:
            out = job.result()
            r.status = "resumed" if r.config.resume else "done"
            r.summary = out.get("summary", "")
        except Exception as exc:  # a failed job: submitit re-raises the run's error with its traceback
            r.status = "failed"
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            r.error = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines
                           else type(exc).__name__)[:300]
        r.wall_s = time.perf_counter() - r.extra.pop("t0", time.perf_counter())
        counter["n"] += 1
        echo(f"[{counter['n']}/{len(runs)}] {r.status:<8} {r.run_id} ({r.wall_s:.0f} s) "
             f"{r.summary if r.status != 'failed' else r.error}")
        _write_state(state, name, runs)

    folder = runs_dir / "sweeps" / name / "submitit"
    ex = make_executor(executor, folder, slurm=slurm, jobs=jobs)
    payload = {id(r): json.loads(json.dumps(asdict(r.config), default=str)) for r in todo}
    if executor == "slurm":  # one job array; SLURM runs --jobs tasks at a time
        with ex.batch():
            submitted = [(r, ex.submit(run_job, payload[id(r)])) for r in todo]
        for r, job in submitted:
            r.job_id, r.extra["t0"] = str(job.job_id), time.perf_counter()
        _write_state(state, name, runs)
        pending = list(submitted)
        while pending:
            for item in [p for p in pending if p[1].done()]:
                finished(*item)
                pending.remove(item)
            if pending:
                time.sleep(poll_s)
    else:
        queue = list(todo)
        running: list[tuple[SweepRun, Any]] = []
        width = 1 if executor == "debug" else jobs
        try:
            while queue or running:
                while queue and len(running) < width:
                    r = queue.pop(0)
                    r.extra["t0"] = time.perf_counter()
                    job = ex.submit(run_job, payload[id(r)])
                    r.job_id = str(job.job_id)
                    running.append((r, job))
                if executor == "debug":  # runs in this process when its result is asked for
                    finished(*running.pop(0))
                    continue
                for item in [p for p in running if p[1].done()]:
                    finished(*item)
                    running.remove(item)
                if running and not any(p[1].done() for p in running):
                    time.sleep(poll_s)
        except BaseException:  # Ctrl-C: stop the local subprocesses too (their checkpoints stay for --resume)
            for _, job in running:
                if executor == "local":
                    job.cancel(check=False)
            raise
    table = pd.DataFrame([r.row() for r in runs])
    text = table.to_markdown(index=False)
    (runs_dir / "sweeps" / name).mkdir(parents=True, exist_ok=True)
    (runs_dir / "sweeps" / name / "summary.md").write_text(f"# Sweep {name}\n\n{text}\n", encoding="utf-8")
    echo(text)
    failed = [r for r in runs if r.status in ("failed", "interrupted")]
    if failed:
        echo(f"{len(failed)} run(s) not finished: see {state} (--retry-failed / --resume)")
    return runs


def check_finished(runs: Sequence[SweepRun]) -> None:
    """Raise :class:`EegbenchError` naming the runs that did not finish (the CLI exits 2 then)."""
    bad = [r for r in runs if r.status not in ("done", "skipped", "resumed")]
    if bad:
        raise EegbenchError(f"{len(bad)} of {len(runs)} sweep run(s) did not finish: "
                            + ", ".join(f"{r.run_id} ({r.status})" for r in bad[:5]))
