"""The plugin author's starting point (examples/example_method) works: conformance, registration, a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import WEIGHTS_ROOT

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "example_method"


@pytest.fixture
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield
    for name in [m for m in sys.modules if m.startswith("eegbench_example_method")]:
        del sys.modules[name]


def test_example_method_passes_the_conformance_kit(example_on_path, tmp_path):
    from eegbench.testing import check_method
    from eegbench_example_method.method import EEGTokens

    report = check_method(EEGTokens, tmp_path)
    assert report.passed == ["declaration", "construction", "fit", "generate", "save_load"]
    # it trains its encoder and the UNet's cross-attention only: less than the whole UNet copy
    counts = report.parameters
    assert 0 < counts["per_stage"]["train"]["total"] < counts["total"]


def test_example_plugin_registers_through_the_plugin_hook(example_on_path, monkeypatch):
    from eegbench.plugins import get_plugin_manager

    monkeypatch.setenv("EEGBENCH_PLUGINS", "eegbench_example_method")
    plugins = get_plugin_manager()
    assert "example-eeg-tokens" in plugins.methods.names()
    entry = {e.name: e for e in plugins.methods.entries()}["example-eeg-tokens"]
    assert "example plugin" in entry.summary


@pytest.mark.slow
@pytest.mark.skipif(not (WEIGHTS_ROOT / "taef2" / "taef2_encoder.pth").is_file(),
                    reason=f"TAEF2 weights absent under {WEIGHTS_ROOT} (set EEGBENCH_WEIGHTS)")
def test_example_plugin_runs_end_to_end_and_reaches_a_leaderboard(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EEGBENCH_PLUGINS": "eegbench_example_method",
           "PYTHONPATH": os.pathsep.join([str(EXAMPLE), os.environ.get("PYTHONPATH", "")])}
    run = [sys.executable, "-m", "eegbench", "run", "--method", "example-eeg-tokens", "--dataset", "synthetic",
           "--weights-root", str(WEIGHTS_ROOT), "--cache-dir", str(tmp_path / "cache"), "--runs-dir",
           str(tmp_path / "runs"), "--run-id", "ex", "--set", "steps=20", "--backbone-set", "denoiser_steps=10",
           "--max-test-trials", "6", "--n-samples", "2", "--steps", "3", "--no-progress"]
    proc = subprocess.run(run, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "runs" / "ex" / "result.json").read_text())
    assert result["method"]["name"] == "example-eeg-tokens" and result["metrics"]["fid"]["value"] > 0
    proc = subprocess.run([sys.executable, "-m", "eegbench", "compare", "runs", "--out", "reports"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (board,) = (tmp_path / "reports").glob("leaderboard-synthetic*.md")
    assert "| example-eeg-tokens" in board.read_text()
