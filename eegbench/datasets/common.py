"""Shared helpers of the dataset loaders: typed ``--dataset-option`` parsing, safe file reading and
realistic test images.

:func:`parse_options` turns the CLI's ``key=value`` strings into a frozen options dataclass (one
line naming the option on a bad value). :func:`load_pickled` reads the pickled-dict files that
THINGS-EEG2 ships (``np.load(..., allow_pickle=True)`` in the owners' code) with an unpickler
that only rebuilds numpy arrays and plain containers, the counterpart of
``torch.load(weights_only=True)`` for ``.pth`` files: a file that needs any other Python object is
refused instead of executed.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from eegbench.errors import ConfigError, DataFormatError, DataNotFoundError

__all__ = ["check_recorded_sha256", "load_pickled", "parse_options", "photo_sources", "photo_variant",
           "read_keyed_cache", "recorded_sources"]

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def parse_options(cls: type, dataset: str, options: dict[str, Any]) -> Any:
    """An instance of the options dataclass ``cls`` from strings (the CLI) or typed values.

    Field types ``int``, ``float``, ``bool`` and ``str`` are parsed; the instance's ``validate()``
    (if any) is called.

    Parameters
    ----------
    cls : dataclass type
        The loader's options (field defaults are the dataset's defaults).
    dataset : str
        Registered dataset name, for messages.
    options : dict
        ``--dataset-option`` values.

    Returns
    -------
    cls instance

    Raises
    ------
    ConfigError
        One line naming an unknown option or a value that is not of the field's type.
    """
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"dataset {dataset!r}: unknown option(s) {unknown}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for key, raw in options.items():
        kind = known[key].type
        kind = kind.__name__ if isinstance(kind, type) else str(kind)
        try:
            if kind == "float":
                values[key] = float(raw)
            elif kind == "int":
                if isinstance(raw, float) or (isinstance(raw, str) and not raw.strip().lstrip("-").isdigit()):
                    raise ValueError("not an integer")
                values[key] = int(raw)
            elif kind == "bool":
                text = str(raw).strip().lower()
                if text not in _TRUE | _FALSE:
                    raise ValueError("not a boolean")
                values[key] = text in _TRUE
            else:
                values[key] = str(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"dataset {dataset!r}: {key}={raw!r} is not a valid {kind}") from None
    opts = cls(**values)
    if hasattr(opts, "validate"):
        opts.validate()
    return opts


#: The globals a pickled dict of numpy arrays, lists and strings needs (numpy 1.x and 2.x names).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def __init__(self, fh, path: Path) -> None:
        super().__init__(fh)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise DataFormatError(f"{self.path}: needs unpickling of the Python object {module}.{name}; eegbench only "
                              "reads pickles of numpy arrays, lists, dicts, numbers and strings")


def load_pickled(path: Path | str, *, hint: str = "") -> Any:
    """Read a pickle, or a ``.npy`` holding a pickled object, rebuilding only arrays and containers.

    Handles both forms ``np.load(path, allow_pickle=True)`` reads: a plain pickle (written with
    ``pickle.dump``) and a ``.npy`` file with an object array (``np.save`` of a dict, read back with
    ``.item()``), which is unwrapped.

    Parameters
    ----------
    path : Path
    hint : str
        Appended to the not-found message (where the file comes from).

    Returns
    -------
    object
        The unpickled object (for ``np.save`` of a dict: the dict).

    Raises
    ------
    DataNotFoundError
        If the file does not exist.
    DataFormatError
        If it is truncated or corrupt, or needs any Python object besides numpy arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: file is missing" + (f"; {hint}" if hint else ""))
    try:
        with open(path, "rb") as fh:
            if fh.read(6) == b"\x93NUMPY":
                fh.seek(0)
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(fh)
                if not dtype.hasobject:
                    count = int(np.prod(shape))
                    data = np.fromfile(fh, dtype=dtype, count=count)
                    return data.reshape(shape, order="F" if fortran else "C")
                obj = _ArraysOnlyUnpickler(fh, path).load()
                if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
                    return obj.item()
                return obj
            fh.seek(0)
            return _ArraysOnlyUnpickler(fh, path).load()
    except DataFormatError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OSError, MemoryError) as exc:
        detail = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise DataFormatError(f"{path}: truncated or corrupt pickle/.npy file ({detail[:200]})") from None


def photo_sources(photos: Path | str | None) -> list[Path]:
    """Every photo under ``photos`` (``.jpeg``/``.jpg``/``.png``, sorted), or [] when it is None or absent."""
    if photos is None or not Path(photos).is_dir():
        return []
    return sorted(p for p in Path(photos).rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))


def photo_variant(source: Path | None, rng: np.random.Generator, px: int):
    """A distinct square image made from a real photo: a random crop (60–100 % of the short side),
    resized to ``px`` × ``px`` (bicubic) and mirrored half of the time; a solid random colour when
    ``source`` is None. For dataset fixtures (files in a real format with made-up content).

    Parameters
    ----------
    source : Path or None
        The photo.
    rng : numpy.random.Generator
    px : int
        Output edge in pixels.

    Returns
    -------
    PIL.Image.Image
        RGB.
    """
    from PIL import Image, ImageOps

    if source is None:
        return Image.new("RGB", (px, px), tuple(int(v) for v in rng.integers(0, 256, 3)))
    with Image.open(source) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = int(min(w, h) * (0.6 + 0.4 * rng.random()))
        left, top = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
        im = im.crop((left, top, left + s, top + s)).resize((px, px), Image.BICUBIC)
    return ImageOps.mirror(im) if rng.random() < 0.5 else im


# ---------------------------------------------------------------------------------------------- array caches
def read_keyed_cache(root: Path, key: str, dataset: str, *, shape: tuple[int, ...] | None = None):
    """A cache entry written as ``manifest-<key16>.json`` + its EEG ``.npy`` and trials ``.csv``.

    Parameters
    ----------
    root : Path
        The dataset's cache folder.
    key : str
        Full cache key (the manifest's ``key`` must equal it).
    dataset : str
        Name for the log lines.
    shape : tuple of int, optional
        Expected ``eeg.shape[1:]`` (``(n_chans, n_times)``); None: any.

    Returns
    -------
    (numpy.ndarray, pandas.DataFrame, dict) or None
        The memory-mapped float32 EEG, the trial table and the manifest; None when the entry is
        missing, unreadable or inconsistent (logged), so the caller rebuilds it.
    """
    import logging

    import pandas as pd

    log = logging.getLogger(f"eegbench.datasets.{dataset}")
    path = Path(root) / f"manifest-{key[:16]}.json"
    try:
        manifest = json.loads(path.read_text())
        if manifest.get("key") != key:
            return None
        eeg = np.load(Path(root) / manifest["eeg_file"], mmap_mode="r", allow_pickle=False)
        table = pd.read_csv(Path(root) / manifest["trials_file"], keep_default_na=False,
                            dtype={"trial_id": str, "recording": str, "image_id": str, "split": str})
    except (OSError, ValueError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        if path.exists():
            log.warning("%s: ignoring unreadable cache %s (%s)", dataset, path, exc)
        return None
    if eeg.shape[0] != len(table) or eeg.dtype != np.float32 or len(table) != manifest.get("n_trials") \
            or (shape is not None and tuple(eeg.shape[1:]) != tuple(shape)):
        log.warning("%s: ignoring inconsistent cache %s", dataset, path)
        return None
    return eeg, table, manifest


def recorded_sources(root: Path) -> dict[str, Any]:
    """The ``sources`` blocks (name, size, mtime, sha256 per source file) of every cache manifest in ``root``."""
    recorded: dict[str, Any] = {}
    for manifest_file in sorted(Path(root).glob("manifest-*.json")):
        try:
            recorded.update(json.loads(manifest_file.read_text()).get("sources", {}))
        except (OSError, ValueError):
            continue
    return recorded


def check_recorded_sha256(path: Path, record: dict[str, Any] | None) -> str:
    """Hash ``path`` and compare with the sha256 recorded for it when the cache was built.

    The record counts only if it names this file (when it names one) with the same size and
    modification time; otherwise nothing was recorded for this version of the file.

    Returns
    -------
    str
        One line: the digest and whether it matches the cache manifest.

    Raises
    ------
    DataFormatError
        The bytes differ from those recorded for the same name, size and mtime (corrupted or replaced).
    """
    from eegbench.datasets.eegnb import sha256_file

    digest = sha256_file(path)
    st = Path(path).stat()
    rec = record or {}
    if rec.get("sha256") and rec.get("name", str(path)) == str(path) and rec.get("size") == st.st_size \
            and rec.get("mtime_ns") == st.st_mtime_ns:
        if rec["sha256"] != digest:
            raise DataFormatError(f"{path}: sha256 {digest[:16]}… differs from {rec['sha256'][:16]}… recorded when "
                                  "the cache was built (file corrupted or replaced)")
        return f"{path}: sha256 {digest} (matches the cache manifest)"
    return f"{path}: sha256 {digest} (none recorded yet)"
