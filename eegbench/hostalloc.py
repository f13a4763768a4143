"""Host-memory allocator settings for CPU runs.

On a CPU, a training step or a feature-extraction batch allocates large activation buffers and
frees them again. glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it on ``free``, and trims freed heap memory back to the kernel; the next step
then faults every page in again (zero-filled). On a 2-core machine the small-profile main job spent
about a fifth of its CPU time in the kernel that way (118 million minor page faults).

:func:`keep_freed_memory` tells glibc (``mallopt``) to serve large blocks from the heap
(``M_MMAP_MAX = 0``) and never to trim it (``M_TRIM_THRESHOLD`` at its maximum), so freed
buffers are reused by the next step. Numbers do not change (the same kernels run on the same
values); the process keeps its peak heap instead of returning it between steps. It is applied by
``eegbench run`` / ``eegbench evaluate`` when the run's device is the CPU, never on CUDA runs (their
activations live on the GPU, and a process that loaded multi-GB checkpoints on the host should give
that memory back). ``EEGBENCH_HOST_ALLOCATOR=default`` leaves glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger("eegbench.hostalloc")

__all__ = ["ENV_VAR", "keep_freed_memory", "state"]

#: Environment variable: ``default`` keeps glibc's allocator settings.
ENV_VAR = "EEGBENCH_HOST_ALLOCATOR"
# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_STATE = {"applied": False, "reason": "not requested"}


def state() -> dict:
    """What :func:`keep_freed_memory` did in this process: ``{"applied": bool, "reason": str}``."""
    return dict(_STATE)


def keep_freed_memory() -> bool:
    """Make glibc keep freed host memory for reuse (no mmap per large block, no heap trimming).

    Idempotent. Does nothing (and returns False) off Linux/glibc, or when
    ``EEGBENCH_HOST_ALLOCATOR=default``.

    Returns
    -------
    bool
        Whether the settings are in effect in this process.
    """
    if _STATE["applied"]:
        return True
    if os.environ.get(ENV_VAR, "").strip().lower() == "default":
        _STATE["reason"] = f"{ENV_VAR}=default"
        return False
    if not sys.platform.startswith("linux"):
        _STATE["reason"] = f"not Linux ({sys.platform})"
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:
        _STATE["reason"] = f"no glibc mallopt ({exc})"
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) != 1:
        _STATE["reason"] = "mallopt refused the settings"
        return False
    _STATE.update(applied=True, reason="glibc mallopt: M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1")
    log.debug("host allocator: %s", _STATE["reason"])
    return True
