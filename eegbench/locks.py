"""Inter-process file locks for the shared caches (``filelock``).

Two runs may share one cache folder (dataset arrays, the pretrained shared denoiser, reference
feature statistics). Whoever builds a cache entry holds its lock; the others wait, then find the
finished entry, so nothing is read half-written or built twice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("eegbench.locks")

__all__ = ["cache_lock"]


@contextlib.contextmanager
def cache_lock(path: Path | str, *, what: str = "") -> Iterator[None]:
    """Hold the lock ``<path>.lock`` (created beside ``path``) for the ``with`` block.

    Waits as long as another process holds it (logging once that it waits). A cache folder that
    cannot be written (read-only) is used without a lock: nothing is built into it then.

    Parameters
    ----------
    path : Path or str
        The cache entry (file or folder) being read or built.
    what : str
        What is built, for the log line.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        try:
            lock.acquire(timeout=0.05)
        except Timeout:
            log.info("waiting for another process building %s (%s)", what or path.name, path)
            lock.acquire()
    except OSError as exc:  # read-only cache: no lock can be taken, and nothing will be written
        log.warning("cannot lock %s (%s); going on without a lock", path, exc)
        yield
        return
    try:
        yield
    finally:
        lock.release()
