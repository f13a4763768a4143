"""Command-line interface: ``eegbench run | evaluate | compare | params | weights | ls | data | plugins | env``.

User errors (unknown names, missing data or weights, bad options) print one line
``eegbench: error: ...`` to stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from eegbench import __version__
from eegbench.errors import ConfigError, EegbenchError
from eegbench.run_config import key_value as _kv

EPILOG = """\
examples:
  eegbench run --method synapse --setting multi-subject
  eegbench run --method synapse --setting single-subject --subject 1 --seed 1
  eegbench run --resume synapse_eegnb-n170_multi-subject_seed0_20261201-120000
  eegbench evaluate runs/<run_id> --inception-weights weights-inception-2015-12-05-6726825d.pth
  eegbench sweep --method synapse,gwit --seed 0-5 --jobs 2
  eegbench sweep --method synapse --setting single-subject --subject all --seed 0-2 --executor slurm \
      --slurm-partition gpu --slurm-gpus-per-node 1 --timeout-min 240 --jobs 16 --profile paper
  eegbench compare
  eegbench params --method synapse --profile paper
  eegbench weights check --profile paper --method synapse --weights-root /data/weights
  eegbench run --method gwit --profile paper --dataset cvpr40 --weights-root /data/weights --max-steps 2
  eegbench ls methods
"""


def _add_weights_flags(group) -> None:
    """``--inception-weights`` / ``--classifier-weights`` for ``eegbench evaluate`` (``run`` gets them from
    :class:`~eegbench.run_config.RunConfig`'s declarations, with the same help)."""
    from eegbench.run_config import flag_help, option_of

    for name in ("inception_weights", "classifier_weights"):
        option = option_of(name)
        group.add_argument(option.flag, dest=name, type=Path, default=None, metavar=option.metavar,
                           help=flag_help(name, option))


def _add_run_arguments(p: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """The options of ``eegbench run``: one flag per :class:`~eegbench.run_config.RunConfig` field
    (:func:`~eegbench.run_config.add_run_arguments`) plus ``--resume``; ``sweep=True``: those of
    ``eegbench sweep`` (lists of methods, settings, subjects and seeds; no ``--run-id``) and its own."""
    from eegbench.run_config import add_run_arguments

    add_run_arguments(p, sweep=sweep)
    g = next(g for g in p._action_groups if g.title == "checkpoints and resume")
    if sweep:
        g.add_argument("--resume", dest="resume_sweep", action="store_true",
                       help="continue the sweep's interrupted runs from their checkpoints (default: report them "
                            "and leave them)")
        g = p.add_argument_group("sweep")
        g.add_argument("--executor", default="local", choices=["local", "slurm", "debug"],
                       help="submitit executor: local (subprocesses on this machine, default), slurm (one job "
                            "array, one task per run) or debug (in this process)")
        g.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="runs at once (local: subprocesses; slurm: array parallelism; default 1 = sequential)")
        g.add_argument("--name", default="sweep", help="sweep name: state and logs in RUNS_DIR/sweeps/NAME/")
        g.add_argument("--retry-failed", action="store_true", help="run again the runs that failed before")
        g.add_argument("--dry-run", action="store_true", help="list the runs and what would happen; run nothing")
        g.add_argument("--timeout-min", type=int, default=None, help="time limit per run in minutes (local, slurm)")
        g.add_argument("--slurm-partition", default=None, help="SLURM partition")
        g.add_argument("--slurm-gpus-per-node", type=int, default=None, help="GPUs per run (SLURM)")
        g.add_argument("--slurm-cpus-per-task", type=int, default=None, help="CPUs per run (SLURM)")
        g.add_argument("--slurm-mem-gb", type=int, default=None, help="memory per run in GB (SLURM)")
        g.add_argument("--slurm-account", default=None, help="SLURM account")
        g.add_argument("--slurm-qos", default=None, help="SLURM QOS")
        return
    g.add_argument("--resume", dest="resume_run", default=None, metavar="RUN_ID",
                   help="continue the interrupted run runs/.partial-RUN_ID/ from its last checkpoint (other "
                        "options may be left out; any given must equal the run's own)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="eegbench", description="Benchmark harness for EEG-to-image generation.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"eegbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="train, generate and score one method", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_arguments(p)

    p = sub.add_parser("sweep", help="many runs (methods × seeds × subjects × settings) as submitit jobs",
                       description="Runs every combination of the listed methods, settings, subjects and seeds "
                                   "with the other `run` options, through submitit (local subprocesses, a SLURM "
                                   "job array, or in-process). Idempotent: finished runs are skipped, interrupted "
                                   "ones continue with --resume, failed ones run again with --retry-failed; "
                                   "results land in --runs-dir where `eegbench compare` reads them.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_arguments(p, sweep=True)

    p = sub.add_parser("evaluate", help="re-score a finished run's saved samples under a given protocol")
    p.add_argument("run_dir", type=Path, help="run folder written by `eegbench run`")
    _add_weights_flags(p)
    p.add_argument("--n-samples", type=int, default=None,
                   help="score the first N samples per trial (default: all the run saved)")
    p.add_argument("--data-root", type=Path, default=None, help="dataset folder (default: the run's)")
    p.add_argument("--cache-dir", type=Path, default=None, help="metric cache (default: the run's)")
    p.add_argument("--metric", dest="metrics", action="append", default=[], metavar="NAME",
                   help="score this registered metric too (repeatable; see `eegbench ls metrics`)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser(
        "compare", help="leaderboards (tables, paired statistics, figures, side-by-side grid) from the committed "
                        "results plus local runs",
        description="Builds every leaderboard from the compact results kept under OUT/results/ plus the given "
                    "local runs. New local runs are added to OUT/results/; a local run of a method/seed/subject "
                    "already committed under the same protocol is left out with a warning (see --replace). Files "
                    "are rewritten only when their content changes.")
    p.add_argument("paths", nargs="*", type=Path, default=None,
                   help="run folders or result files (default: runs, if it exists)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: reports)")
    p.add_argument("--results-dir", type=Path, default=None,
                   help="folder of the durable compact results (default: OUT/results)")
    p.add_argument("--protocol", default=None, help="only results with this protocol hash (prefix)")
    p.add_argument("--format", dest="formats", action="append", default=None, metavar="FORMAT",
                   help="markdown (default; with figures), csv, json; repeatable or comma-separated")
    p.add_argument("--replace", action="store_true",
                   help="let local runs replace committed results of the same method/profile/seed/subject/protocol")
    p.add_argument("--no-figures", action="store_true", help="markdown without figures and grid")

    p = sub.add_parser("ls", help="list registered methods, datasets, settings, metrics, backbones or profiles")
    p.add_argument("kind", choices=["methods", "datasets", "settings", "metrics", "backbones", "profiles"])

    p = sub.add_parser("data", help="describe a dataset (info) or check its files (verify)")
    p.add_argument("action", choices=["info", "verify", "ceiling"],
                   help="info: trials per subject/class/split, channels, sfreq, units, licence, citation; "
                        "verify: files present, checksums, shapes (exit 0 if OK, 2 otherwise); "
                        "ceiling: balanced test accuracy of shrinkage LDA on binned EEG epochs and of xDAWN covariances + "
                        "tangent space (pyriemann), fitted on the "
                        "training split (how much class information the test EEG holds), as JSON")
    p.add_argument("name", help="registered dataset name, e.g. eegnb-n170, eegnb-p300, cvpr40")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder holding the datasets (default: $EEGBENCH_DATA or ../shared/data)")
    p.add_argument("--cache-dir", type=Path, default=None, help="cache (default: $EEGBENCH_CACHE or ~/.cache/eegbench)")
    p.add_argument("--dataset-option", "--option", dest="options", type=_kv, action="append", default=[],
                   metavar="KEY=VALUE",
                   help="dataset loader option, as for `run`, e.g. --dataset-option eeg_file=eeg_14_70_std.pth (repeatable)")
    p.add_argument("--setting", default="multi-subject", help="setting whose split info counts (default: multi-subject)")
    p.add_argument("--subject", type=int, default=None, help="subject of a single-/cross-subject setting (ceiling)")
    p.add_argument("--n-bins", type=int, default=10, help="time windows per channel for the ceiling (default: 10)")
    p.add_argument("--sweep", type=_kv, default=None, metavar="KEY=V1,V2,...",
                   help="ceiling: one ceiling per value of a loader option, as a markdown table, e.g. "
                        "--sweep snr_db=-inf,-30,-20,-10,0 for eegnb-groundtruth")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="ceiling --sweep: also write the markdown table to FILE (and FILE's .csv beside it)")

    p = sub.add_parser("params", help="parameter counts of a method at a profile, built on the meta device")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--method", default=None, help="registered method name")
    g.add_argument("--all", action="store_true", help="every registered method (those that cannot be built "
                   "at the profile are listed on stderr and left out)")
    p.add_argument("--profile", default="paper",
                   help="paper: published sizes on CVPR40 facts; small: the CPU profile on N170 facts (default: paper)")
    p.add_argument("--set", dest="overrides", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="override a method hyperparameter, e.g. --set global_attn=false (repeatable)")
    p.add_argument("--format", dest="fmt", default="text", choices=["text", "markdown", "json"],
                   help="output format (default: text)")
    p.add_argument("--weights-root", type=Path, default=None,
                   help="paper profile: count the architectures of the local weight folders when they are all "
                        "present (default: $EEGBENCH_WEIGHTS or ../shared/weights; else the published configs)")
    p.add_argument("--backbone-set", dest="backbone_overrides", type=_kv, action="append", default=[],
                   metavar="KEY=VALUE", help="paper weight folder overrides, as for `run`")

    p = sub.add_parser("weights", help="check the local weight folders a profile's methods need")
    p.add_argument("action", choices=["check"], help="check: list what each method needs, found or missing, "
                   "with sizes (exit 2 when anything needed is missing)")
    p.add_argument("--profile", default="paper", help="profile (default: paper)")
    p.add_argument("--method", default=None, help="only this method (default: every registered method)")
    p.add_argument("--weights-root", type=Path, default=None,
                   help="folder holding local weights (default: $EEGBENCH_WEIGHTS or ../shared/weights)")
    p.add_argument("--backbone-set", dest="backbone_overrides", type=_kv, action="append", default=[],
                   metavar="KEY=VALUE", help="weight folder overrides, e.g. --backbone-set sd15=/models/sd15")

    sub.add_parser("plugins", help="list loaded plugins as JSON")
    sub.add_parser("env", help="print the environment record as JSON")
    return parser


def _run_config(args):
    """The :class:`~eegbench.run_config.RunConfig` of parsed ``eegbench run`` arguments."""
    from eegbench.run_config import config_from_args

    return config_from_args(args)


def _cmd_run(args) -> int:
    from eegbench.run_config import resume_config, stated_fields
    from eegbench.runner import run

    if args.resume_run:
        given = stated_fields(args)
        if given.get("run_id") not in (None, args.resume_run):
            raise EegbenchError(f"--run-id {given['run_id']} and --resume {args.resume_run} name different runs")
        cfg = resume_config(args.resume_run, given.pop("runs_dir", Path("runs")), given)
    else:
        cfg = _run_config(args)
    result = run(cfg)
    if result:
        from eegbench.leaderboard import run_summary

        print(f"run folder: {result['run_dir']}")
        first, *rest = run_summary(result)
        print(f"{first} | trainable params {result['parameters']['trainable_total']:,} | "
              f"total {result['durations_s']['total']:.0f} s")
        for line in rest:
            print(line)
    return 0


def _cmd_sweep(args) -> int:
    from eegbench.run_config import stated_fields
    from eegbench.sweep import check_finished, parse_list, parse_seeds, run_sweep

    lists = {k: getattr(args, k, None) for k in ("method", "setting", "subject", "seed")}
    fixed = {k: v for k, v in stated_fields(args).items() if k not in lists}
    from eegbench.run_config import RunConfig

    base = RunConfig(**fixed)
    subjects = None
    if lists["subject"] is not None:
        subjects = "all" if lists["subject"].strip() == "all" else [
            int(s) for s in parse_list(lists["subject"], "subject") if _int_or_fail(s, "--subject")]
    runs = run_sweep(
        base, methods=parse_list(base.method if lists["method"] is None else lists["method"], "method"),
        seeds=parse_seeds(base.seed if lists["seed"] is None else lists["seed"]),
        settings=parse_list(base.setting if lists["setting"] is None else lists["setting"], "setting"), subjects=subjects, executor=args.executor,
        jobs=args.jobs, name=args.name, resume=args.resume_sweep, retry_failed=args.retry_failed, dry_run=args.dry_run,
        slurm={"partition": args.slurm_partition, "gpus_per_node": args.slurm_gpus_per_node,
               "cpus_per_task": args.slurm_cpus_per_task, "mem_gb": args.slurm_mem_gb,
               "timeout_min": args.timeout_min, "account": args.slurm_account, "qos": args.slurm_qos},
    )
    if not args.dry_run:
        check_finished(runs)
    return 0


def _int_or_fail(text: str, flag: str) -> bool:
    if not text.strip().lstrip("-").isdigit():
        raise EegbenchError(f"{flag} {text!r}: expected subject numbers such as 1,2,3 or all")
    return True


def _cmd_evaluate(args) -> int:
    from eegbench.evaluate import evaluate_run
    from eegbench.leaderboard import metrics_summary
    from eegbench.plugins import get_plugin_manager
    from eegbench.runner import protocol_metrics

    overrides = {"metrics": protocol_metrics(args.metrics, get_plugin_manager())} if args.metrics else None
    result = evaluate_run(args.run_dir, inception_weights=args.inception_weights,
                          classifier_weights=args.classifier_weights, n_samples=args.n_samples,
                          data_root=args.data_root, cache_dir=args.cache_dir, progress=not args.no_progress,
                          protocol_overrides=overrides)
    print(f"evaluation: {result['evaluation']['result_path']} (protocol {result['protocol']['hash']})")
    print(metrics_summary(result["metrics"]))
    return 0


def _stderr_handler_class():
    import logging

    class StderrHandler(logging.StreamHandler):
        """A logging handler that writes to whatever ``sys.stderr`` is at emit time."""

        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, value):
            pass

    return StderrHandler


def _cmd_compare(args) -> int:
    from eegbench.reports import compare
    from eegbench.results import load_results

    import logging

    for name in ("eegbench.leaderboard", "eegbench.figures"):  # what compare adds, keeps and leaves out
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        if not any(getattr(h, "_eegbench_cli", False) for h in logger.handlers):
            handler = _stderr_handler_class()()
            handler.setFormatter(logging.Formatter("eegbench: %(message)s"))
            handler._eegbench_cli = True
            logger.addHandler(handler)
    paths = args.paths if args.paths else [p for p in (Path("runs"),) if p.exists()]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise EegbenchError(f"no such run folder or file: {', '.join(missing)}")
    formats = [f.strip() for item in (args.formats or ["markdown"]) for f in item.split(",") if f.strip()]
    for path in compare(load_results(paths), args.out, protocol_hash=args.protocol, results_dir=args.results_dir,
                        replace=args.replace, formats=formats, figures=not args.no_figures):
        print(path)
    return 0


def _cmd_ls(args, plugins) -> int:
    registry = plugins.registries[args.kind]
    width = max((len(n) for n in registry.names()), default=0)
    for entry in registry.entries():
        print(f"{entry.name:<{width}}  {entry.summary}  [{entry.plugin}]")
    for name, err in plugins.broken.items():
        print(f"(plugin {name!r} failed to load: {err})", file=sys.stderr)
    return 0


def _cmd_data(args) -> int:
    from eegbench.datasets.info import describe, make_loader, verify

    if args.sweep is not None:
        if args.action != "ceiling":
            raise ConfigError("--sweep applies to `eegbench data ceiling` only")
        from eegbench.decoding import ceiling_curve, ceiling_curve_markdown

        key, values = args.sweep[0], [v.strip() for v in args.sweep[1].split(",") if v.strip()]
        if not key or not values:
            raise ConfigError(f"--sweep {args.sweep[0]}={args.sweep[1]}: expected KEY=V1,V2,...")
        frame = ceiling_curve(args.name, key, values, options=dict(args.options), setting=args.setting,
                              subject=args.subject, n_bins=args.n_bins, data_root=args.data_root,
                              cache_dir=args.cache_dir)
        text = ceiling_curve_markdown(frame, args.name, key, args.setting)
        print(text, end="")
        if args.out is not None:
            from eegbench.results import write_bytes_if_changed

            write_bytes_if_changed(Path(args.out), text.encode())
            write_bytes_if_changed(Path(args.out).with_suffix(".csv"), frame.to_csv(index=False).encode())
        return 0
    loader = make_loader(args.name, args.data_root, args.cache_dir, dict(args.options))
    if args.action == "info":
        print(describe(loader.load(), setting=args.setting))
        return 0
    if args.action == "ceiling":
        from eegbench.decoding import eeg_decoding
        from eegbench.plugins import get_plugin_manager

        dataset = loader.load()
        kwargs = {} if args.subject is None else {"subject": args.subject}
        split = get_plugin_manager().settings.get(args.setting)(dataset, **kwargs)
        train, test = dataset.subset(split.train), dataset.subset(split.test)
        out = eeg_decoding(train.eeg, train.trials["label"].to_numpy(), test.eeg, test.trials["label"].to_numpy(),
                           n_classes=len(dataset.info.class_names), n_bins=args.n_bins)
        print(json.dumps({"dataset": args.name, "split": split.to_dict(), **out}, indent=1))
        return 0
    for line in verify(loader):
        print(f"ok: {line}")
    print(f"{args.name}: OK")
    return 0


def _cmd_params(args, plugins) -> int:
    from eegbench.params import format_reports, parameter_reports

    names = None if args.all else [args.method]
    reports, skipped = parameter_reports(names, profile=args.profile, overrides=dict(args.overrides),
                                         plugins=plugins, skip_unbuildable=args.all, weights_root=args.weights_root,
                                         backbone_overrides=dict(args.backbone_overrides))
    for name, reason in skipped.items():
        print(f"eegbench params: left out {name!r}: {reason}", file=sys.stderr)
    print(format_reports(reports, args.fmt))
    return 0


def _cmd_weights(args, plugins) -> int:
    from eegbench.weights import check_weights, format_weight_rows

    rows = check_weights(plugins, profile=args.profile, method=args.method, weights_root=args.weights_root,
                         backbone_overrides=dict(args.backbone_overrides))
    print(format_weight_rows(rows))
    missing = [r for r in rows if not r["found"]]
    if missing:
        print(f"eegbench: error: {len(missing)} needed weight folder(s) missing or incomplete "
              f"({', '.join(sorted({r['folder'] for r in missing}))})", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``eegbench`` console script; returns the exit status."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "compare":
            return _cmd_compare(args)
        if args.command == "sweep":
            return _cmd_sweep(args)
        if args.command == "evaluate":
            return _cmd_evaluate(args)
        if args.command == "data":
            return _cmd_data(args)
        from eegbench.plugins import get_plugin_manager

        plugins = get_plugin_manager()
        if args.command == "ls":
            return _cmd_ls(args, plugins)
        if args.command == "params":
            return _cmd_params(args, plugins)
        if args.command == "weights":
            return _cmd_weights(args, plugins)
        if args.command == "plugins":
            print(json.dumps(plugins.plugin_info(), indent=2))
            return 0
        if args.command == "env":
            from eegbench.results import environment_info

            print(json.dumps(environment_info(), indent=2))
            return 0
    except EegbenchError as exc:
        print(f"eegbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("eegbench: interrupted", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
