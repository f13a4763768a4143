"""Inter-process file locks for the shared caches (``filelock``).

Two runs may share one cache folder. The shared denoiser (minutes of training) is built under a
lock: whoever trains it holds the lock, the others wait and then load the finished entry, so it is
trained once. Dataset arrays (``eegbench.datasets``) are deterministic for their key and written
to a temporary name then moved into place, so a reader never sees half a file; two runs building
the same entry at the same moment both write identical content. Scoring-feature files
(``eegbench.metrics.features``) grow as new images are scored: they are re-read, extended and
replaced under the lock, so two runs adding images to one file keep both.
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
    lock = None
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
        lock = None
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
