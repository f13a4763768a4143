"""Atomic file writes: every file eegbench writes appears whole or not at all.

A file is written under a temporary name in its own folder and moved into place with
:func:`os.replace` (atomic on POSIX and Windows within one file system); on any error the
temporary file is removed and the old file, if any, is kept. Concurrent writers of the same
content (ranks of one run, sweep jobs sharing a cache) each use their own temporary name, and
the last replace wins.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write", "write_bytes_if_changed", "write_json_atomic", "write_text_atomic"]


@contextmanager
def atomic_path(path: Path | str, *, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside ``path`` that becomes ``path`` when the ``with`` block succeeds.

    For writers that need a file name rather than a file object (``numpy.lib.format.open_memmap``,
    ``safetensors.save_file``, ``torch.save``). The parent folder is created.

    Parameters
    ----------
    path : Path
        Final file.
    mode : int
        Permission bits of the final file (``0o644``: cache entries are meant to be shared; the
        temporary file is created ``0o600``).

    Yields
    ------
    Path
        The temporary file (already created, empty).

    Raises
    ------
    OSError
        From the file system; the temporary file is removed and ``path`` left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], Any], *, mode: int = 0o644) -> None:
    """Call ``write(binary_file_object)`` on a temporary file beside ``path``, then move it into place."""
    with atomic_path(path, mode=mode) as tmp, open(tmp, "wb") as fh:
        write(fh)


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def write_bytes_if_changed(path: Path | str, data: bytes) -> bool:
    """Write ``data`` to ``path`` atomically unless it already holds exactly these bytes.

    Returns
    -------
    bool
        True if the file was written, False if it already had exactly these bytes.
    """
    path = Path(path)
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write(path, lambda fh: fh.write(data))
    return True


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json_atomic(path: Path | str, data: Any) -> None:
    """Write ``data`` as indented UTF-8 JSON (paths as str, numpy scalars as numbers) to ``path`` atomically.

    Raises
    ------
    TypeError
        For a value JSON cannot hold; nothing is written.
    """
    text = json.dumps(data, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    write_text_atomic(path, text)
