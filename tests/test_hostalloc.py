"""eegbench.hostalloc: freed host buffers are reused instead of faulted in again (glibc)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

CHURN = """
import json, resource, torch
import torch.nn.functional as F
from eegbench.hostalloc import keep_freed_memory, state
applied = keep_freed_memory()
assert keep_freed_memory() is applied  # idempotent
torch.manual_seed(0)
x = torch.randn(8, 16, 128, 128)
w1, w2 = torch.randn(32, 16, 3, 3), torch.randn(16, 32, 3, 3)

def step():  # a forward pass whose activations (16-64 MiB) are freed again, like a training step
    h = F.relu(F.conv2d(x, w1, padding=1))
    h = torch.cat([h, h, h, h], 1)
    return F.conv2d(h[:, :32], w2, padding=1).sum()

step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
print(json.dumps({"applied": applied, "state": state(), "faults": faults}))
"""


def _churn(**env):
    out = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env}, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_setting_is_left_alone_on_request():
    out = _churn(EEGBENCH_HOST_ALLOCATOR="default")
    assert out["applied"] is False and "EEGBENCH_HOST_ALLOCATOR=default" in out["state"]["reason"]


def test_keep_freed_memory_stops_refaulting_large_buffers():
    tuned, default = _churn(EEGBENCH_HOST_ALLOCATOR=""), _churn(EEGBENCH_HOST_ALLOCATOR="default")
    assert tuned["applied"] is True and "M_MMAP_MAX=0" in tuned["state"]["reason"]
    pages = 20 * (64 * 2**20 // 4096)  # 20 steps, each with at least a 64 MiB activation
    if default["faults"] < pages // 4:  # e.g. transparent huge pages on every mapping: no churn to remove
        pytest.skip(f"this kernel faults {default['faults']} times in 20 steps with glibc's defaults; nothing to compare")
    assert tuned["faults"] * 4 < default["faults"]  # the buffers of the first step are reused
