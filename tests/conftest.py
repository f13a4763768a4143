"""Shared test configuration: offline hub, paths of the real shared data and weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = Path(os.environ.get("EEGBENCH_SHARED") or Path(__file__).resolve().parents[2] / "shared")
DATA_ROOT = Path(os.environ.get("EEGBENCH_DATA") or SHARED / "data")
WEIGHTS_ROOT = Path(os.environ.get("EEGBENCH_WEIGHTS") or SHARED / "weights")

needs_real_data = pytest.mark.skipif(
    not (DATA_ROOT / "eeg-notebooks" / "data" / "visual" / "N170").is_dir()
    or not (WEIGHTS_ROOT / "taef2" / "taef2_encoder.pth").is_file(),
    reason=f"real N170 data or TAEF2 weights absent under {SHARED} (set EEGBENCH_DATA / EEGBENCH_WEIGHTS)",
)
