"""``cvpr40``: EEG-ImageNet ("CVPR40") in the perceivelab ``.pth`` format, with its official split.

Data (Spampinato et al., CVPR 2017; Palazzo et al., TPAMI 2020; format and protocol from
``perceivelab/eeg_visual_classification @9108fb4``, ``README.md`` and
``eeg_signal_classification.py``): 6 subjects watched 40 ImageNet classes × 50 images in a block
design (one class per block, 0.5 s per image), recorded with 128 channels at 1 kHz. The files are
not redistributable here; users put them under ``<data root>/eeg-imagenet/``::

    eeg-imagenet/eeg_5_95_std.pth                  # or eeg_14_70_std.pth / eeg_55_95_std.pth (eeg_file=)
    eeg-imagenet/block_splits_by_image_all.pth     # split_file=
    eeg-imagenet/images/<wnid>/<image name>.JPEG   # images_dir=

``eeg_*_std.pth`` is a dict ``{"dataset": [{"eeg": FloatTensor (128, T), "image": int,
"label": int, "subject": int}, ...], "labels": [40 WNIDs], "images": [image names]}``; ``label``
indexes ``labels`` and ``image`` indexes ``images`` (names ``"<wnid>_<num>"``).
``block_splits_by_image_all.pth`` is ``{"splits": [{"train": [...], "val": [...], "test": [...]},
...]}``, index lists into ``dataset``. Both are read with ``torch.load(..., weights_only=True)``:
a file that needs arbitrary Python objects is refused.

Protocol, exactly as the owners' loader (``eeg_signal_classification.py``: ``EEGDataset`` +
``Splitter``): the split indices address the **unfiltered** ``dataset`` list, then every index
whose segment length ``T`` is outside ``450 ≤ T ≤ 600`` is dropped; each kept segment is cropped
to samples ``[20, 460)`` → ``(128, 440)``, i.e. 20 … 459 ms after onset at 1 kHz (a segment with
450 ≤ T < 460 passes the owners' filter but is too short for that crop: it is dropped with a
warning; the published files hold none, their T starts at 491). Split 0 is used
("leave this always to zero"); with the 5–95 Hz file it gives train 7,959 / val 1,994 /
test 1,987 trials (``research/methods.md`` §1.3). Trials outside the length filter are not in the
dataset; kept trials in no part of the split have ``split == ""`` and are used by no setting.

Units: the values are the file's, which the owners standardised (``_std``); they are not volts,
so ``DatasetInfo.unit == "a.u."``. The owners' loader transposes to ``(time, channels)``; eegbench
keeps ``(n_chans, n_times)``. Channel names are not in the file (``E001`` … ``E128``).

Table columns: ``trial_id`` ``t<index>`` (position in ``dataset``, 5 digits), ``label``,
``subject`` (1–6 as stored), ``session`` 0 (not recorded in the file), ``recording``
``subject<SS>/block-<wnid>`` (the class block the trial came from: one block per class and
subject in this design; the file does not mark blocks, so this is derived), ``image_id`` (image
name), ``split`` and ``n_times_raw`` (``T`` before the crop). Note that the official split is
image-disjoint but not block-disjoint: trials of one class block fall in train and test.

Cache: the ~3 GB ``.pth`` is read once; the cropped EEG goes to ``<cache_dir>/cvpr40/eeg-<key>.npy``
(float32, opened with ``mmap_mode="r"``, so a cached load only maps the file), the table to
``trials-<key>.csv`` and ``manifest.json`` (written last, so a reader never sees a half-written
entry; every file goes to a temporary name first and is moved into place with :func:`os.replace`).
The cache key is a sha256 of the loader version, the protocol parameters and the **name, size and
modification time** of the two source files, not of their bytes: hashing 3 GB would take
seconds on every run, while any rewrite of a file changes its mtime. The bytes' sha256 is computed
once on the cold path and recorded in the manifest; ``eegbench data verify cvpr40`` recomputes it
and compares.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import time
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from eegbench.data import TRIAL_COLUMNS, DatasetInfo, EEGDataset, StimulusSet
from eegbench.datasets import default_cache_dir, default_data_root
from eegbench.datasets.eegnb import sha256_file
from eegbench.files import atomic_path, atomic_write
from eegbench.errors import ConfigError, DataFormatError, DataNotFoundError

logger = logging.getLogger(__name__)

#: Version of the preprocessing output of :class:`CVPR40`; part of every cache key.
LOADER_VERSION = "cvpr40-1"

#: The 40 classes: WNID → short name (``RomGai/BrainVis @129b8c2, cascade_diffusion.py``; the
#: order is the ``labels`` order of the perceivelab files, ``labels[0] == "n02389026"``).
WNID_NAMES: dict[str, str] = {
    "n02389026": "sorrel horse", "n03888257": "parachute", "n03584829": "iron",
    "n02607072": "anemone fish", "n03297495": "espresso maker", "n03063599": "coffee mug",
    "n03792782": "mountain bike", "n04086273": "revolver", "n02510455": "giant panda",
    "n11939491": "daisy", "n02951358": "canoe", "n02281787": "lycaenid butterfly",
    "n02106662": "German shepherd", "n04120489": "running shoe", "n03590841": "jack-o'-lantern",
    "n02992529": "cellular telephone", "n03445777": "golf ball", "n03180011": "desktop computer",
    "n02906734": "broom", "n07873807": "pizza", "n03773504": "missile",
    "n02492035": "capuchin", "n03982430": "pool table", "n03709823": "mailbag",
    "n03100240": "convertible", "n03376595": "folding chair", "n03877472": "pajama",
    "n03775071": "mitten", "n03272010": "electric guitar", "n04069434": "reflex camera",
    "n03452741": "grand piano", "n03792972": "mountain tent", "n07753592": "banana",
    "n13054560": "bolete", "n03197337": "digital watch", "n02504458": "African elephant",
    "n02690373": "airliner", "n03272562": "electric locomotive", "n04044716": "radio telescope",
    "n02124075": "Egyptian cat",
}

_HINT = ("expected <data root>/eeg-imagenet/{eeg_5_95_std.pth, block_splits_by_image_all.pth, "
         "images/<wnid>/<image name>.JPEG} (from github.com/perceivelab/eeg_visual_classification); "
         "set --data-root or EEGBENCH_DATA")
_ITEM_KEYS = ("eeg", "image", "label", "subject")
_WEIGHTS_ONLY_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_pth(path: Path, hint: str = _HINT) -> Any:
    """Read a PyTorch file with ``torch.load(weights_only=True)``, memory-mapped when possible.

    Files saved in the zip format (torch ≥ 1.6) are opened with ``mmap=True`` so a 3 GB file is
    not copied into memory; older (legacy pickle) files are read normally.

    Parameters
    ----------
    path : Path
        The ``.pth`` file.
    hint : str
        Where the file comes from (appended to the not-found message).

    Returns
    -------
    object
        The unpickled object (dicts, lists, ints, strs and tensors only).

    Raises
    ------
    DataNotFoundError
        If the file does not exist.
    DataFormatError
        If the file is truncated or corrupt, or needs arbitrary Python objects to unpickle (which
        ``weights_only=True`` refuses; the message names the offending global).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"{path}: file is missing; {hint}")
    use_mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "Unsupported class" in text:
            m = _WEIGHTS_ONLY_GLOBAL.search(text)
            what = f" ({m.group(1)})" if m else ""
            raise DataFormatError(
                f"{path}: needs unpickling of arbitrary Python objects{what}; eegbench only reads files of "
                "tensors, lists, dicts, ints and strs (torch.load weights_only=True)"
            ) from None
        m = re.search(r"Unsupported operand \d+|[^\n]*truncated[^\n]*", text)
        detail = m.group(0).strip() if m else ("unpickling failed" if "Weights only" in text else _first_line(text))
        raise DataFormatError(f"{path}: truncated or corrupt PyTorch file ({detail[:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError,
            IndexError, TypeError, UnicodeDecodeError) as exc:
        raise DataFormatError(f"{path}: truncated or corrupt PyTorch file ({_first_line(str(exc)) or type(exc).__name__})"
                              ) from None


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]


def _is_int(x: Any) -> bool:
    import torch

    if isinstance(x, torch.Tensor):
        return x.ndim == 0 and not x.is_floating_point() and not x.is_complex()
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _stat_key(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"name": path.name, "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


class CVPR40:
    """``cvpr40`` dataset loader (EEG-ImageNet, perceivelab ``.pth`` files, official split 0).

    Parameters
    ----------
    data_root : Path or None
        Folder that contains ``eeg-imagenet/``; ``None`` → :func:`eegbench.datasets.default_data_root`.
    cache_dir : Path or None
        Root of the preprocessing cache (``<cache_dir>/cvpr40/``); ``None`` →
        :func:`eegbench.datasets.default_cache_dir`.
    eeg_file : str or Path
        EEG file, relative to ``<data_root>/eeg-imagenet/`` or absolute (default ``eeg_5_95_std.pth``,
        the owners' default band, 5–95 Hz).
    split_file : str or Path
        Split file, same resolution (default ``block_splits_by_image_all.pth``).
    images_dir : str or Path
        Folder of ``<wnid>/<image name>.JPEG`` (default ``images``).
    split_num : int
        Which split of the split file (default 0, as every published method uses).

    Raises
    ------
    ConfigError
        On an unknown option or a negative ``split_num``.

    Attributes
    ----------
    cache_hit : bool or None
        After :meth:`load`: whether the EEG came from the cache.
    manifest : dict or None
        After :meth:`load`: the cache manifest (source sizes, mtimes and sha256, counts).
    """

    name: ClassVar[str] = "cvpr40"
    #: Channels, sampling frequency (Hz), crop window in samples and the length filter (inclusive).
    n_chans: ClassVar[int] = 128
    sfreq: ClassVar[float] = 1000.0
    time_low: ClassVar[int] = 20
    time_high: ClassVar[int] = 460
    min_len: ClassVar[int] = 450
    max_len: ClassVar[int] = 600
    image_size: ClassVar[int] = 256
    citation: ClassVar[str] = (
        "Spampinato, C., Palazzo, S., Kavasidis, I., Giordano, D., Souly, N., & Shah, M. (2017). Deep learning "
        "human mind for automated visual classification. CVPR, 6809-6817. Palazzo, S., Spampinato, C., "
        "Kavasidis, I., Giordano, D., Schmidt, J., & Shah, M. (2020). Decoding brain representations by "
        "multimodal learning of neural activity and visual features. IEEE TPAMI, 43(11), 3833-3849. "
        "Files and split: https://github.com/perceivelab/eeg_visual_classification (commit 9108fb4)."
    )
    licence: ClassVar[str] = (
        "EEG: as distributed by perceivelab (no licence file in the repository; research use, cite the papers); "
        "images: ImageNet terms of access (non-commercial research and education)"
    )

    def __init__(self, data_root: Path | str | None = None, cache_dir: Path | str | None = None, *,
                 eeg_file: str | Path = "eeg_5_95_std.pth",
                 split_file: str | Path = "block_splits_by_image_all.pth",
                 images_dir: str | Path = "images", split_num: int = 0, **options: Any) -> None:
        if options:
            raise ConfigError(f"dataset 'cvpr40': unknown option(s) {sorted(options)} "
                              "(known: eeg_file, split_file, images_dir, split_num)")
        try:
            split_num = int(split_num)
        except (TypeError, ValueError):
            raise ConfigError(f"dataset 'cvpr40': split_num={split_num!r} is not an integer") from None
        if split_num < 0:
            raise ConfigError(f"dataset 'cvpr40': split_num={split_num} must be >= 0")
        self.data_root = Path(data_root) if data_root is not None else default_data_root()
        self.cache_root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / self.name
        base = self.data_root / "eeg-imagenet"
        self.eeg_path = base / eeg_file  # an absolute eeg_file replaces base
        self.split_path = base / split_file
        self.images_root = base / images_dir
        self.split_num = split_num
        self.cache_hit: bool | None = None
        self.manifest: dict[str, Any] | None = None

    # ------------------------------------------------------------------ layout
    @property
    def n_times(self) -> int:
        """Samples per trial after the crop (440)."""
        return self.time_high - self.time_low

    @property
    def ch_names(self) -> tuple[str, ...]:
        """``E001`` … ``E128`` (the file carries no channel names)."""
        return tuple(f"E{i:03d}" for i in range(1, self.n_chans + 1))

    def required_files(self) -> list[Path]:
        """The EEG file, the split file and the images folder."""
        return [self.eeg_path, self.split_path, self.images_root]

    def image_path(self, wnid: str, image_name: str) -> Path:
        """``<images_dir>/<wnid>/<image name>.JPEG``."""
        return self.images_root / wnid / f"{image_name}.JPEG"

    def _check_present(self) -> None:
        missing = [p for p in self.required_files() if not p.exists()]
        if missing:
            raise DataNotFoundError(f"dataset 'cvpr40': missing {', '.join(map(str, missing))}; {_HINT}")

    def _params(self) -> dict[str, Any]:
        return {"n_chans": self.n_chans, "time_low": self.time_low, "time_high": self.time_high,
                "min_len": self.min_len, "max_len": self.max_len, "split_num": self.split_num}

    def _cache_key(self) -> str:
        payload = {"version": LOADER_VERSION, "params": self._params(),
                   "eeg": _stat_key(self.eeg_path), "split": _stat_key(self.split_path)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ parsing
    def read_split(self, n_items: int) -> dict[str, np.ndarray]:
        """Read split ``split_num`` of the split file and check it against ``n_items`` trials.

        Parameters
        ----------
        n_items : int
            Length of the EEG file's ``dataset`` list (indices must lie in ``[0, n_items)``).

        Returns
        -------
        dict of str to numpy.ndarray
            ``train``, ``val``, ``test`` int64 index arrays into the unfiltered ``dataset`` list.

        Raises
        ------
        DataNotFoundError, DataFormatError
            Missing, corrupt or unsafe file; missing keys; a part that is not a list of ints; an
            index out of range; an index listed twice (within or across parts).
        """
        path = self.split_path
        obj = load_pth(path)
        if not isinstance(obj, dict) or "splits" not in obj:
            has = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise DataFormatError(f"{path}: missing key 'splits' (has {has})")
        splits = obj["splits"]
        if not isinstance(splits, (list, tuple)) or len(splits) <= self.split_num:
            n = len(splits) if isinstance(splits, (list, tuple)) else 0
            raise DataFormatError(f"{path}: split_num={self.split_num} requested but the file holds {n} split(s)")
        split = splits[self.split_num]
        if not isinstance(split, dict):
            raise DataFormatError(f"{path}: splits[{self.split_num}] is a {type(split).__name__}, expected a dict")
        parts: dict[str, np.ndarray] = {}
        for part in ("train", "val", "test"):
            if part not in split:
                raise DataFormatError(f"{path}: splits[{self.split_num}] lacks key {part!r} (has {sorted(split)})")
            idx = split[part]
            if hasattr(idx, "tolist"):
                idx = idx.tolist()
            if not isinstance(idx, (list, tuple)) or not all(_is_int(i) for i in idx):
                raise DataFormatError(f"{path}: splits[{self.split_num}][{part!r}] is not a list of integer indices")
            arr = np.asarray([int(i) for i in idx], dtype=np.int64)
            bad = arr[(arr < 0) | (arr >= n_items)]
            if len(bad):
                raise DataFormatError(
                    f"{path}: splits[{self.split_num}][{part!r}] index {int(bad[0])} out of range "
                    f"(the EEG file {self.eeg_path.name} has {n_items} trials)")
            parts[part] = arr
        all_idx = np.concatenate(list(parts.values()))
        uniq, counts = np.unique(all_idx, return_counts=True)
        if (counts > 1).any():
            raise DataFormatError(f"{path}: splits[{self.split_num}] lists trial index {int(uniq[counts > 1][0])} "
                                  "more than once")
        return parts

    def read_eeg_file(self) -> tuple[list[dict], list[str], list[str]]:
        """Read and check the structure of the EEG file (no copy of the EEG).

        Returns
        -------
        items : list of dict
            The ``dataset`` list (``eeg`` tensors, possibly memory-mapped).
        labels : list of str
            WNIDs, ``labels[label]``.
        images : list of str
            Image names, ``images[image]``.

        Raises
        ------
        DataNotFoundError, DataFormatError
            Missing, corrupt or unsafe file; missing or renamed keys; a trial whose ``eeg`` is not a
            2-D float tensor with 128 channels, or whose ``image``/``label`` index is out of range.
        """
        import torch

        path = self.eeg_path
        obj = load_pth(path)
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}: expected a dict with keys dataset, labels, images, got {type(obj).__name__}")
        missing = [k for k in ("dataset", "labels", "images") if k not in obj]
        if missing:
            raise DataFormatError(f"{path}: missing key(s) {missing} (has {sorted(map(str, obj))})")
        items, labels, images = obj["dataset"], obj["labels"], obj["images"]
        for key, value in (("dataset", items), ("labels", labels), ("images", images)):
            if not isinstance(value, (list, tuple)):
                raise DataFormatError(f"{path}: {key!r} is a {type(value).__name__}, expected a list")
        if not all(isinstance(x, str) for x in [*labels, *images]):
            raise DataFormatError(f"{path}: 'labels' and 'images' must be lists of strings")
        if not items:
            raise DataFormatError(f"{path}: 'dataset' is empty")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise DataFormatError(f"{path}: dataset[{i}] is a {type(item).__name__}, expected a dict")
            lost = [k for k in _ITEM_KEYS if k not in item]
            if lost:
                raise DataFormatError(f"{path}: dataset[{i}] lacks key(s) {lost} (has {sorted(map(str, item))})")
            eeg = item["eeg"]
            if not isinstance(eeg, torch.Tensor) or eeg.ndim != 2 or not eeg.is_floating_point():
                what = f"{eeg.dtype} tensor of shape {tuple(eeg.shape)}" if isinstance(eeg, torch.Tensor) \
                    else type(eeg).__name__
                raise DataFormatError(f"{path}: dataset[{i}]['eeg'] is a {what}, expected a float tensor "
                                      f"({self.n_chans}, T)")
            if eeg.shape[0] != self.n_chans:
                raise DataFormatError(f"{path}: dataset[{i}]['eeg'] has {eeg.shape[0]} channels, expected "
                                      f"{self.n_chans} (shape {tuple(eeg.shape)})")
            for key, size in (("label", len(labels)), ("image", len(images)), ("subject", None)):
                v = item[key]
                if not _is_int(v) or (size is not None and not 0 <= int(v) < size):
                    raise DataFormatError(
                        f"{path}: dataset[{i}][{key!r}] = {v!r} is not a valid index"
                        + (f" (0 … {size - 1})" if size is not None else ""))
        return list(items), list(labels), list(images)

    def _table(self, items, labels, images, parts) -> pd.DataFrame:
        n = len(items)
        lengths = np.array([int(it["eeg"].shape[1]) for it in items], dtype=np.int64)
        keep = (lengths >= self.min_len) & (lengths <= self.max_len)
        short = keep & (lengths < self.time_high)
        if short.any():  # the owners' crop would give < 440 samples; none in the published files (T >= 491)
            logger.warning("cvpr40: %s: dropping %d trial(s) with %d <= T < %d samples (too short for the "
                           "[%d:%d] crop), e.g. dataset[%d]", self.eeg_path, int(short.sum()), self.min_len,
                           self.time_high, self.time_low, self.time_high, int(np.flatnonzero(short)[0]))
            keep &= ~short
        part_of = np.full(n, "", dtype=object)
        for part, idx in parts.items():
            part_of[idx] = part
        rows = np.flatnonzero(keep)
        label = np.array([int(items[i]["label"]) for i in rows], dtype=np.int64)
        subject = np.array([int(items[i]["subject"]) for i in rows], dtype=np.int64)
        image = [images[int(items[i]["image"])] for i in rows]
        return pd.DataFrame({
            "trial_id": [f"t{i:05d}" for i in rows],
            "label": label,
            "subject": subject,
            "session": np.zeros(len(rows), dtype=np.int64),
            "recording": [f"subject{s:02d}/block-{labels[lab]}" for s, lab in zip(subject, label)],
            "image_id": image,
            "split": part_of[rows].astype(str),
            "n_times_raw": lengths[rows],
        })

    # ------------------------------------------------------------------ cache
    def _read_cache(self, key: str) -> tuple[np.ndarray, pd.DataFrame, dict] | None:
        manifest_path = self.cache_root / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("key") != key:
                return None
            eeg = np.load(self.cache_root / manifest["eeg_file"], mmap_mode="r", allow_pickle=False)
            table = pd.read_csv(self.cache_root / manifest["trials_file"], dtype={"trial_id": str, "recording": str,
                                "image_id": str, "split": str}, keep_default_na=False)
        except (OSError, ValueError, KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            if manifest_path.exists():
                logger.warning("cvpr40: ignoring unreadable cache in %s (%s)", self.cache_root, exc)
            return None
        if eeg.shape != (len(table), self.n_chans, self.n_times) or eeg.dtype != np.float32 \
                or len(table) != manifest.get("n_trials"):
            logger.warning("cvpr40: ignoring inconsistent cache in %s", self.cache_root)
            return None
        return eeg, table, manifest

    def _build_cache(self, key: str) -> tuple[np.ndarray, pd.DataFrame, dict]:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        items, labels, images = self.read_eeg_file()
        parts = self.read_split(len(items))
        table = self._table(items, labels, images, parts)
        if table.empty:
            raise DataFormatError(f"{self.eeg_path}: no trial has {self.min_len} <= T <= {self.max_len} samples")
        self._check_images(table, labels)
        rows = [int(t[1:]) for t in table["trial_id"]]
        root = self.cache_root
        root.mkdir(parents=True, exist_ok=True)
        eeg_file, trials_file = f"eeg-{key[:16]}.npy", f"trials-{key[:16]}.csv"
        with atomic_path(root / eeg_file) as tmp:  # the EEG file appears last, whole
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=(len(rows), self.n_chans, self.n_times))
            for j, i in enumerate(tqdm(rows, desc="cvpr40: cropping", unit="trial", leave=False, disable=None)):
                x = items[i]["eeg"][:, self.time_low:self.time_high].float().numpy()
                if not np.isfinite(x).all():
                    c, t = np.argwhere(~np.isfinite(x))[0]
                    raise DataFormatError(f"{self.eeg_path}: dataset[{i}]['eeg'] holds {x[c, t]} at channel {c}, "
                                          f"sample {t + self.time_low}")
                out[j] = x
            out.flush()
            del out
            sources = {}
            for role, path in (("eeg_file", self.eeg_path), ("split_file", self.split_path)):
                sources[role] = {**_stat_key(path), "sha256": sha256_file(path)}
            atomic_write(root / trials_file, lambda f: f.write(table.to_csv(index=False).encode()))
        manifest = {
            "key": key, "dataset": self.name, "version": LOADER_VERSION, "params": self._params(),
            "sources": sources, "labels": labels, "n_items": len(items), "n_trials": len(table),
            "n_filtered_out": int(len(items) - len(table)),
            "split_sizes": {p: int((table["split"] == p).sum()) for p in ("train", "val", "test")},
            "eeg_file": eeg_file, "trials_file": trials_file,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_s": round(time.perf_counter() - t0, 2),
        }
        atomic_write(root / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        for old in [*root.glob("eeg-*.npy"), *root.glob("trials-*.csv")]:
            if old.name not in (eeg_file, trials_file):
                old.unlink(missing_ok=True)
        eeg = np.load(root / eeg_file, mmap_mode="r", allow_pickle=False)
        return eeg, table, manifest

    def _check_images(self, table: pd.DataFrame, labels: list[str]) -> dict[str, Path]:
        """Path of every referenced stimulus; raises on the first missing one."""
        paths: dict[str, Path] = {}
        first = table.drop_duplicates("image_id")
        for tid, image, lab in zip(first["trial_id"], first["image_id"], first["label"]):
            wnid = labels[int(lab)]
            path = self.image_path(wnid, image)
            if not path.is_file():
                raise DataNotFoundError(f"{path}: stimulus image of trial {tid} (image {image!r}) is missing; "
                                        f"images go to {self.images_root}/<wnid>/<image name>.JPEG")
            paths[image] = path
        return paths

    # ------------------------------------------------------------------ load
    def load(self) -> EEGDataset:
        """Load the dataset (from the memory-mapped cache when valid).

        Returns
        -------
        EEGDataset
            ``eeg`` float32 ``(n_trials, 128, 440)`` in a.u. (the file's standardised values),
            a read-only memory map of the cache; ``trials`` with a ``split`` column (official split
            ``split_num``) and ``split_source`` naming the split file, split number and sha256.

        Raises
        ------
        DataNotFoundError
            If the EEG file, split file, images folder or a referenced stimulus image is missing.
        DataFormatError
            On a truncated/corrupt/unsafe ``.pth``, missing keys, wrong channel count, NaN/inf in a
            kept trial's window, out-of-range split indices, or no trial within the length filter.
        """
        self._check_present()
        key = self._cache_key()
        cached = self._read_cache(key)
        self.cache_hit = cached is not None
        if cached is None:
            eeg, table, manifest = self._build_cache(key)
        else:
            eeg, table, manifest = cached
        labels = list(manifest["labels"])
        self.manifest = manifest
        paths = self._check_images(table, labels)
        image_labels = dict(zip(table["image_id"], table["label"].astype(int)))
        stimuli = StimulusSet(paths=paths, labels={k: int(v) for k, v in image_labels.items()})
        class_names = tuple(WNID_NAMES.get(w, w) for w in labels)
        info = DatasetInfo(
            name=self.name, version=LOADER_VERSION, n_chans=self.n_chans, n_times=self.n_times, sfreq=self.sfreq,
            ch_names=self.ch_names, unit="a.u.", class_names=class_names, tmin=self.time_low / self.sfreq,
            image_size=self.image_size, citation=self.citation, licence=self.licence,
            subjects=tuple(sorted(int(s) for s in table["subject"].unique())), wnids=tuple(labels),
            stimulus_level="image",
        )
        parts = {p: set(table.loc[table["split"] == p, "image_id"]) for p in ("train", "val", "test")}
        shared = (parts["train"] | parts["val"]) & parts["test"]
        if shared:  # "by_image" files are image-disjoint; a hand-made split may not be
            logger.warning("cvpr40: %s split %d puts %d stimulus image(s) in train/val and test, e.g. %s",
                           self.split_path, self.split_num, len(shared), min(shared))
        split = manifest["sources"]["split_file"]
        source = f"official: {split['name']} split {self.split_num} (sha256 {split['sha256'][:16]})"
        columns = [*TRIAL_COLUMNS, "split", "n_times_raw"]
        return EEGDataset(info=info, eeg=eeg, trials=table[columns], stimuli=stimuli, split_source=source)

    def verify(self) -> list[str]:
        """Check the files: presence, sha256 against the cache manifest (if any), structure and shapes.

        Returns
        -------
        list of str
            One line per check that passed.

        Raises
        ------
        DataNotFoundError, DataFormatError
            On the first failed check (a sha256 that differs from the one recorded for an unchanged
            size and mtime is a :class:`DataFormatError`).
        """
        self._check_present()
        lines = []
        recorded = None
        try:
            recorded = json.loads((self.cache_root / "manifest.json").read_text()).get("sources")
        except (OSError, ValueError):
            pass
        for role, path in (("eeg_file", self.eeg_path), ("split_file", self.split_path)):
            digest = sha256_file(path)
            rec = (recorded or {}).get(role)
            if rec and rec.get("name") == path.name and rec.get("size") == path.stat().st_size:
                if rec.get("sha256") != digest:
                    raise DataFormatError(f"{path}: sha256 {digest[:16]}… differs from {rec['sha256'][:16]}… "
                                          "recorded when the cache was built (file corrupted or replaced)")
                lines.append(f"{path}: sha256 {digest} (matches the cache manifest)")
            else:
                lines.append(f"{path}: sha256 {digest} (none recorded yet)")
        ds = self.load()
        sizes = ds.trials["split"].value_counts().to_dict()
        lines.append(f"{len(ds)} trials, eeg {tuple(ds.eeg.shape)} {ds.eeg.dtype}, "
                     f"{self.manifest['n_filtered_out']} outside {self.min_len}-{self.max_len} samples; "
                     f"split {self.split_num}: " + ", ".join(f"{p} {sizes.get(p, 0)}" for p in ("train", "val", "test")))
        lines.append(f"{len(ds.stimuli)} stimulus images present under {self.images_root}")
        return lines


def write_synthetic_files(
    root: Path | str, *, n_subjects: int = 2, n_classes: int = 4, images_per_class: int = 10,
    lengths: tuple[int, int] = (480, 520), n_out_of_filter: int = 2, fractions: tuple[float, float] = (0.8, 0.1),
    eeg_file: str = "eeg_5_95_std.pth", image_px: int = 16, write_images: bool = True, seed: int = 0,
    n_items: int | None = None,
) -> dict[str, Path]:
    """Write made-up files in the exact perceivelab format under ``<root>/eeg-imagenet/``.

    Every subject sees every image once (``n_subjects × n_classes × images_per_class`` items, in
    subject-major order); ``eeg`` is ``(128, T)`` float32 noise with a class-dependent offset,
    ``T`` uniform in ``lengths`` (inclusive), except ``n_out_of_filter`` items with ``T`` of 449 or
    601 (outside the 450–600 filter). The split is image-disjoint: the images of each class are
    split ``fractions`` (train, val; the rest test) and all items of an image go to that part;
    items outside the filter are listed too (the loader must drop them). Images are small solid
    JPEGs. For tests, benchmarks and plugin authors; the real data are not redistributable.

    Parameters
    ----------
    root : Path
        Data root to write into (creates ``eeg-imagenet/``).
    n_subjects, n_classes, images_per_class : int
        Sizes (``n_classes`` ≤ 40; the WNIDs are the real ones in ``labels`` order).
    lengths : (int, int)
        Range of segment lengths ``T`` in samples.
    n_out_of_filter : int
        Items whose length falls outside 450–600.
    fractions : (float, float)
        Train and val fraction of each class's images.
    eeg_file : str
        Name of the EEG file.
    image_px : int
        Edge of the JPEGs.
    write_images : bool
        Whether to write the JPEGs.
    seed : int
        Random seed.
    n_items : int or None
        Keep only the first ``n_items`` items (like the real file's 11,965 of 12,000 possible
        presentations); the split then lists only those.

    Returns
    -------
    dict of str to Path
        ``eeg_file``, ``split_file`` and ``images_dir``.
    """
    import torch

    if not 1 <= n_classes <= len(WNID_NAMES):
        raise ConfigError(f"n_classes={n_classes}: must be 1 … {len(WNID_NAMES)}")
    rng = np.random.default_rng(seed)
    base = Path(root) / "eeg-imagenet"
    base.mkdir(parents=True, exist_ok=True)
    wnids = list(WNID_NAMES)[:n_classes]
    images = [f"{w}_{1000 + k}" for w in wnids for k in range(images_per_class)]
    image_label = [c for c in range(n_classes) for _ in range(images_per_class)]
    part_of_image = {}
    for c in range(n_classes):
        ids = [c * images_per_class + k for k in rng.permutation(images_per_class)]
        n_tr = round(fractions[0] * images_per_class)
        n_va = round(fractions[1] * images_per_class)
        for j, i in enumerate(ids):
            part_of_image[i] = "train" if j < n_tr else "val" if j < n_tr + n_va else "test"
    n_items = min(n_items, n_subjects * len(images)) if n_items is not None else n_subjects * len(images)
    t_len = rng.integers(lengths[0], lengths[1] + 1, size=n_items)
    odd = rng.choice(n_items, size=min(n_out_of_filter, n_items), replace=False)
    t_len[odd] = np.where(np.arange(len(odd)) % 2 == 0, 449, 601)
    gen = torch.Generator().manual_seed(seed)
    items, parts = [], {"train": [], "val": [], "test": []}
    for s in range(n_subjects):
        for i in rng.permutation(len(images)):  # trial order within a subject is shuffled
            idx = len(items)
            if idx >= n_items:
                break
            lab = image_label[i]
            eeg = torch.randn(128, int(t_len[idx]), generator=gen) + 0.5 * lab
            items.append({"eeg": eeg, "image": int(i), "label": int(lab), "subject": s + 1})
            parts[part_of_image[i]].append(idx)
    torch.save({"dataset": items, "labels": wnids, "images": images}, base / eeg_file)
    torch.save({"splits": [parts]}, base / "block_splits_by_image_all.pth")
    if write_images:
        from PIL import Image

        for i, name in enumerate(images):
            d = base / "images" / wnids[image_label[i]]
            d.mkdir(parents=True, exist_ok=True)
            colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
            Image.new("RGB", (image_px, image_px), colour).save(d / f"{name}.JPEG")
    return {"eeg_file": base / eeg_file, "split_file": base / "block_splits_by_image_all.pth",
            "images_dir": base / "images"}
