"""``eeg-imagenet``: EEG-ImageNet (Zhu et al. 2024), 16 subjects, 80 ImageNet classes at two granularities.

Data (Zhu, S. et al., "EEG-ImageNet: An Electroencephalogram Dataset and Benchmarks with Image
Visual Stimuli of Multi-Granularity Labels", 2024; files and loader from
``Promise-Z5Q2SQ/EEG-ImageNet-Dataset``, ``src/dataset.py``, ``object_classification.py``): 16
subjects each saw 4,000 ImageNet images, 50 per class, of 40 *coarse* classes (different
categories) and 40 *fine* classes (close categories, e.g. dog breeds), recorded with 62 channels
at 1 kHz. The files are not redistributable here; users put them under
``<data root>/eeg-imagenet-2024/``::

    eeg-imagenet-2024/EEG-ImageNet_1.pth          # subjects 0-7   (files=; or one merged EEG-ImageNet.pth)
    eeg-imagenet-2024/EEG-ImageNet_2.pth          # subjects 8-15
    eeg-imagenet-2024/imageNet_images/<wnid>/<image name>      # images_dir=
    eeg-imagenet-2024/imageNet_images/synset_map_en.txt        # optional: "<wnid> <name>" per line

Each ``.pth`` is ``{"dataset": [{"eeg_data": FloatTensor (62, T), "label": "<wnid>",
"granularity": "coarse" | "fine", "subject": int, "image": "<image name>"}, ...], "labels": [wnids],
"images": [image names]}``, read with ``torch.load(..., weights_only=True)`` (a file that needs
arbitrary Python objects is refused). An image name without a suffix is looked up as
``<name>.JPEG``.

Protocol, as the owners' code: each trial is cropped to samples ``[40, 440)`` (40 … 439 ms after
onset at 1 kHz; trials shorter than 440 samples are dropped with a warning). Split: within every
subject and class, in file order, the trials at positions ``p`` with ``p % 50 < 30`` train, the
others test (``i % 50 < 30`` over the owners' per-subject, class-ordered list: the first 30 of
each class's 50 images train, the last 20 test). ``val_images_per_class=v`` moves the last ``v``
of the 30 training positions to validation (default 0: the owners' exact training set, no
validation; a method then keeps its last weights). ``block`` and ``train_per_block`` change the
50 / 30 (for small fixtures).

Granularity (``granularity=``): ``all`` (default, 80 classes), ``coarse`` (40), ``fine`` (40) or
``fine0`` … ``fine4`` (the owners' 8-class fine subsets: the n-th group of 8 fine classes in
``labels`` order). Labels index the kept classes in ``labels`` order; class names come from
``synset_map_en.txt`` when present, else the CVPR40 names for shared WNIDs, else the WNID.

Units: as stored (not documented as volts): ``unit == "a.u."``. Table columns: ``trial_id``
``t<index>`` (position in the concatenated ``dataset`` lists, 6 digits), ``label``, ``subject``
(as stored, 0-15), ``session`` (0 coarse, 1 fine), ``recording`` ``subject<SS>/<granularity>``,
``image_id`` (image name), ``split``, ``granularity``, ``n_times_raw``. The split is image-level
per subject; if one image is train for one subject and test for another (the owners' rule does
not forbid it), a warning says how many.

Cache: the cropped EEG goes to ``<cache_dir>/eeg-imagenet/eeg-<key>.npy`` (float32, memory-mapped
on later loads) with ``trials-<key>.csv`` and ``manifest-<key>.json`` (written last); the key
hashes the loader version, the options and the name, size and mtime of the files. Their sha256 is
recorded on the cold path; ``eegbench data verify eeg-imagenet`` recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from eegbench.data import TRIAL_COLUMNS, DatasetInfo, EEGDataset, StimulusSet
from eegbench.datasets import default_cache_dir, default_data_root
from eegbench.datasets.common import (
    check_recorded_sha256,
    parse_options,
    photo_sources,
    photo_variant,
    read_keyed_cache,
    recorded_sources,
)
from eegbench.datasets.cvpr40 import WNID_NAMES, _is_int, load_pth
from eegbench.datasets.eegnb import sha256_file
from eegbench.files import atomic_path, atomic_write
from eegbench.errors import ConfigError, DataFormatError, DataNotFoundError

logger = logging.getLogger(__name__)

#: Version of the preprocessing output of :class:`EEGImageNet2024`; part of every cache key.
LOADER_VERSION = "eeg-imagenet-1"
GRANULARITIES = ("all", "coarse", "fine", "fine0", "fine1", "fine2", "fine3", "fine4")
_ITEM_KEYS = ("eeg_data", "label", "granularity", "subject", "image")
_HINT = ("EEG-ImageNet comes from https://github.com/Promise-Z5Q2SQ/EEG-ImageNet-Dataset (EEG-ImageNet_1.pth, "
         "EEG-ImageNet_2.pth and the imageNet_images folder); put it under <data root>/eeg-imagenet-2024/ or set "
         "--data-root / EEGBENCH_DATA")


@dataclass(frozen=True)
class EEGImageNetOptions:
    """Options of :class:`EEGImageNet2024` (``--dataset-option key=value``).

    Parameters
    ----------
    files : str
        Comma list of ``.pth`` files under ``eeg-imagenet-2024/`` (or absolute).
    images_dir : str
        Image folder under ``eeg-imagenet-2024/``.
    granularity : str
        One of :data:`GRANULARITIES`.
    val_images_per_class : int
        Training positions per subject and class moved to validation (0 … ``train_per_block - 1``).
    block, train_per_block : int
        Positions ``p % block < train_per_block`` train (50 and 30 in the owners' code).
    """

    files: str = "EEG-ImageNet_1.pth,EEG-ImageNet_2.pth"
    images_dir: str = "imageNet_images"
    granularity: str = "all"
    val_images_per_class: int = 0
    block: int = 50
    train_per_block: int = 30

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value out of range."""
        if self.granularity not in GRANULARITIES:
            raise ConfigError(f"dataset 'eeg-imagenet': granularity={self.granularity!r}; known: "
                              f"{', '.join(GRANULARITIES)}")
        if not 1 <= self.train_per_block < self.block:
            raise ConfigError(f"dataset 'eeg-imagenet': need 1 ≤ train_per_block < block, got "
                              f"{self.train_per_block} and {self.block}")
        if not 0 <= self.val_images_per_class < self.train_per_block:
            raise ConfigError(f"dataset 'eeg-imagenet': val_images_per_class={self.val_images_per_class} must lie in "
                              f"[0, {self.train_per_block - 1}]")
        if not [f for f in self.files.split(",") if f.strip()]:
            raise ConfigError("dataset 'eeg-imagenet': files= names no file")


class EEGImageNet2024:
    """``eeg-imagenet`` loader (see the module docstring for the files, protocol and options).

    Parameters
    ----------
    data_root : Path or None
        Folder that contains ``eeg-imagenet-2024/``.
    cache_dir : Path or None
        Cache root (``<cache_dir>/eeg-imagenet/``).
    **options
        :class:`EEGImageNetOptions` fields, as strings or typed values.

    Raises
    ------
    ConfigError
        For an unknown option or a bad value.
    """

    name: ClassVar[str] = "eeg-imagenet"
    n_chans: ClassVar[int] = 62
    sfreq: ClassVar[float] = 1000.0
    time_low: ClassVar[int] = 40
    time_high: ClassVar[int] = 440
    image_size: ClassVar[int] = 256
    citation: ClassVar[str] = (
        "Zhu, S., Ye, Z., Ai, Q., & Liu, Y. (2024). EEG-ImageNet: An Electroencephalogram Dataset and Benchmarks "
        "with Image Visual Stimuli of Multi-Granularity Labels. arXiv:2406.07151. Files and protocol: "
        "https://github.com/Promise-Z5Q2SQ/EEG-ImageNet-Dataset"
    )
    licence: ClassVar[str] = ("EEG: as distributed by the authors (research use; cite the paper); images: ImageNet "
                              "terms of access (non-commercial research and education)")

    def __init__(self, data_root: Path | str | None = None, cache_dir: Path | str | None = None,
                 **options: Any) -> None:
        self.options = parse_options(EEGImageNetOptions, self.name, options)
        self.data_root = Path(data_root) if data_root is not None else default_data_root()
        self.cache_root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / self.name
        self.base = self.data_root / "eeg-imagenet-2024"
        self.files = [self.base / f.strip() for f in self.options.files.split(",") if f.strip()]
        self.images_root = self.base / self.options.images_dir
        self.cache_hit: bool | None = None
        self.manifest: dict[str, Any] | None = None

    @property
    def n_times(self) -> int:
        """Samples per trial after the crop (400)."""
        return self.time_high - self.time_low

    def required_files(self) -> list[Path]:
        """The ``.pth`` files and the images folder."""
        return [*self.files, self.images_root]

    def _check_present(self) -> None:
        missing = [p for p in self.required_files() if not p.exists()]
        if missing:
            raise DataNotFoundError(f"dataset 'eeg-imagenet': missing {', '.join(map(str, missing))}; {_HINT}")

    def image_path(self, wnid: str, image: str) -> Path:
        """``<images_dir>/<wnid>/<image>`` (``.JPEG`` appended to a name without a suffix)."""
        return self.images_root / wnid / (image if Path(image).suffix else f"{image}.JPEG")

    def _cache_key(self) -> str:
        payload = {"version": LOADER_VERSION, "options": vars(self.options),
                   "files": [{"name": str(p), "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
                             for p in self.files]}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ parsing
    def read_file(self, path: Path) -> tuple[list[dict], list[str]]:
        """One ``.pth`` file, structure checked: ``(items, labels)``.

        Raises
        ------
        DataNotFoundError, DataFormatError
            Missing, corrupt or unsafe file; missing keys; an item whose ``eeg_data`` is not a 2-D
            float tensor with 62 channels, whose ``label`` is not one of ``labels``, whose
            ``granularity`` is not coarse/fine or whose ``subject`` is not an integer.
        """
        import torch

        obj = load_pth(path, hint=_HINT)
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}: expected a dict with keys dataset, labels, images, got {type(obj).__name__}")
        missing = [k for k in ("dataset", "labels", "images") if k not in obj]
        if missing:
            raise DataFormatError(f"{path}: missing key(s) {missing} (has {sorted(map(str, obj))})")
        items, labels = obj["dataset"], obj["labels"]
        if not isinstance(items, (list, tuple)) or not items:
            raise DataFormatError(f"{path}: 'dataset' must be a non-empty list")
        if not isinstance(labels, (list, tuple)) or not all(isinstance(x, str) for x in labels):
            raise DataFormatError(f"{path}: 'labels' must be a list of WNID strings")
        known = set(labels)
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise DataFormatError(f"{path}: dataset[{i}] is a {type(item).__name__}, expected a dict")
            lost = [k for k in _ITEM_KEYS if k not in item]
            if lost:
                raise DataFormatError(f"{path}: dataset[{i}] lacks key(s) {lost} (has {sorted(map(str, item))})")
            eeg = item["eeg_data"]
            if not isinstance(eeg, torch.Tensor) or eeg.ndim != 2 or not eeg.is_floating_point() \
                    or eeg.shape[0] != self.n_chans:
                what = f"{eeg.dtype} tensor of shape {tuple(eeg.shape)}" if isinstance(eeg, torch.Tensor) \
                    else type(eeg).__name__
                raise DataFormatError(f"{path}: dataset[{i}]['eeg_data'] is a {what}, expected a float tensor "
                                      f"({self.n_chans}, T)")
            if item["label"] not in known:
                raise DataFormatError(f"{path}: dataset[{i}]['label'] = {item['label']!r} is not one of 'labels'")
            if item["granularity"] not in ("coarse", "fine"):
                raise DataFormatError(f"{path}: dataset[{i}]['granularity'] = {item['granularity']!r}, expected "
                                      "'coarse' or 'fine'")
            if not _is_int(item["subject"]) or not isinstance(item["image"], str):
                raise DataFormatError(f"{path}: dataset[{i}] needs an integer 'subject' and a string 'image'")
        return list(items), list(labels)

    def _keep_classes(self, labels: list[str], granularity_of: dict[str, str]) -> list[str]:
        g = self.options.granularity
        if g == "all":
            return [w for w in labels if w in granularity_of]
        kind = "coarse" if g == "coarse" else "fine"
        kept = [w for w in labels if granularity_of.get(w) == kind]
        if g.startswith("fine") and len(g) == 5:
            n = int(g[4])
            kept = kept[8 * n: 8 * n + 8]
        if not kept:
            raise DataFormatError(f"dataset 'eeg-imagenet': no class of granularity {g!r} in {self.files[0]}")
        return kept

    def _table(self, items: list[tuple[int, dict]], classes: list[str]) -> pd.DataFrame:
        o = self.options
        index = {w: i for i, w in enumerate(classes)}
        rows = []
        position: dict[tuple[int, str], int] = {}
        for gi, item in items:
            s, w = int(item["subject"]), item["label"]
            p = position.get((s, w), 0)
            position[(s, w)] = p + 1
            q = p % o.block
            part = "test" if q >= o.train_per_block else ("val" if q >= o.train_per_block - o.val_images_per_class
                                                           else "train")
            rows.append({"trial_id": f"t{gi:06d}", "label": index[w], "subject": s,
                         "session": 0 if item["granularity"] == "coarse" else 1,
                         "recording": f"subject{s:02d}/{item['granularity']}", "image_id": str(item["image"]),
                         "split": part, "granularity": item["granularity"],
                         "n_times_raw": int(item["eeg_data"].shape[1])})
        return pd.DataFrame(rows)

    def _build(self, key: str) -> tuple[np.ndarray, pd.DataFrame, dict]:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        items, labels, sources = [], None, {}
        for path in self.files:
            file_items, file_labels = self.read_file(path)
            if labels is None:
                labels = file_labels
            elif file_labels != labels:
                raise DataFormatError(f"{path}: 'labels' differ from those of {self.files[0]}")
            items.extend(file_items)
            sources[str(path)] = {"name": str(path), "size": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns,
                                  "sha256": sha256_file(path), "n_items": len(file_items)}
        granularity_of: dict[str, str] = {}
        for it in items:
            granularity_of.setdefault(it["label"], it["granularity"])
        classes = self._keep_classes(labels, granularity_of)
        kept_classes = set(classes)
        lengths = np.array([int(it["eeg_data"].shape[1]) for it in items])
        short = [i for i, it in enumerate(items) if it["label"] in kept_classes and lengths[i] < self.time_high]
        if short:
            logger.warning("eeg-imagenet: dropping %d trial(s) shorter than %d samples, e.g. dataset[%d] (T=%d)",
                           len(short), self.time_high, short[0], lengths[short[0]])
        # positions count every trial of a kept class (the owners' rule), then the short ones are dropped
        table = self._table([(i, it) for i, it in enumerate(items) if it["label"] in kept_classes], classes)
        table = table[table["n_times_raw"] >= self.time_high].reset_index(drop=True)
        chosen = [(int(t[1:]), items[int(t[1:])]) for t in table["trial_id"]]
        if not chosen:
            raise DataFormatError(f"{self.files[0]}: no trial of the chosen classes has ≥ {self.time_high} samples")
        self._check_images(table, classes)
        root = self.cache_root
        root.mkdir(parents=True, exist_ok=True)
        eeg_file, trials_file = f"eeg-{key[:16]}.npy", f"trials-{key[:16]}.csv"
        with atomic_path(root / eeg_file) as tmp:  # the EEG file appears last, whole
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=(len(chosen), self.n_chans, self.n_times))
            for j, (i, it) in enumerate(tqdm(chosen, desc="eeg-imagenet: cropping", unit="trial", leave=False,
                                             disable=None)):
                x = it["eeg_data"][:, self.time_low:self.time_high].float().numpy()
                if not np.isfinite(x).all():
                    c, t = np.argwhere(~np.isfinite(x))[0]
                    raise DataFormatError(f"dataset[{i}]['eeg_data'] holds {x[c, t]} at channel {c}, sample "
                                          f"{t + self.time_low} (files {', '.join(map(str, self.files))})")
                out[j] = x
            out.flush()
            del out
            atomic_write(root / trials_file, lambda f: f.write(table.to_csv(index=False).encode()))
        manifest = {"key": key, "dataset": self.name, "version": LOADER_VERSION, "options": vars(self.options),
                    "sources": sources, "classes": classes, "granularity_of": granularity_of,
                    "n_items": len(items), "n_trials": len(table), "n_too_short": len(short),
                    "split_sizes": {p: int((table["split"] == p).sum()) for p in ("train", "val", "test")},
                    "eeg_file": eeg_file, "trials_file": trials_file,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_s": round(time.perf_counter() - t0, 2)}
        atomic_write(root / f"manifest-{key[:16]}.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        return np.load(root / eeg_file, mmap_mode="r", allow_pickle=False), table, manifest

    def _read_cache(self, key: str) -> tuple[np.ndarray, pd.DataFrame, dict] | None:
        return read_keyed_cache(self.cache_root, key, self.name, shape=(self.n_chans, self.n_times))

    def _check_images(self, table: pd.DataFrame, classes: list[str]) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        first = table.drop_duplicates("image_id")
        for tid, image, lab in zip(first["trial_id"], first["image_id"], first["label"]):
            path = self.image_path(classes[int(lab)], image)
            if not path.is_file():
                raise DataNotFoundError(f"{path}: stimulus image of trial {tid} (image {image!r}) is missing; "
                                        f"images go to {self.images_root}/<wnid>/<image name>")
            paths[image] = path
        return paths

    def class_names(self, wnids: list[str]) -> tuple[str, ...]:
        """Names from ``<images_dir>/synset_map_en.txt`` (``<wnid> <name>`` lines) when present, else
        the CVPR40 names of shared WNIDs, else the WNID."""
        names: dict[str, str] = {}
        synset = self.images_root / "synset_map_en.txt"
        if synset.is_file():
            for line in synset.read_text(encoding="utf-8", errors="replace").splitlines():
                parts = line.strip().split(None, 1)
                if len(parts) == 2:
                    names[parts[0]] = parts[1].split(",")[0].strip()
        return tuple(names.get(w) or WNID_NAMES.get(w) or w for w in wnids)

    # ------------------------------------------------------------------ load
    def load(self) -> EEGDataset:
        """Load the dataset (from the memory-mapped cache when valid).

        Returns
        -------
        EEGDataset
            ``eeg`` float32 ``(n_trials, 62, 400)`` as stored (a.u.); ``trials`` with the owners'
            ``split``; ``info.wnids`` the kept classes (ImageNet-class metrics apply).

        Raises
        ------
        DataNotFoundError
            A missing ``.pth`` file, images folder or stimulus image (one line, with the source).
        DataFormatError
            An unsafe or corrupt file, missing keys, a wrong channel count, non-finite values or
            no usable trial.
        """
        from eegbench.metrics.retrieval import RETRIEVAL_METRICS

        self._check_present()
        key = self._cache_key()
        cached = self._read_cache(key)
        self.cache_hit = cached is not None
        if cached is None:
            from eegbench.locks import cache_lock

            with cache_lock(self.cache_root / f"build-{key[:16]}", what=f"the {self.name} cache"):
                cached = self._read_cache(key)  # another process may have built it meanwhile
                eeg, table, manifest = cached if cached is not None else self._build(key)
        else:
            eeg, table, manifest = cached
        self.manifest = manifest
        classes = list(manifest["classes"])
        paths = self._check_images(table, classes)
        image_labels = dict(zip(table["image_id"], table["label"].astype(int)))
        parts = {p: set(table.loc[table["split"] == p, "image_id"]) for p in ("train", "val", "test")}
        shared = (parts["train"] | parts["val"]) & parts["test"]
        if shared:
            logger.warning("eeg-imagenet: %d image(s) are training images for one subject and test images for "
                           "another (the owners' per-subject position rule), e.g. %s", len(shared), min(shared))
        info = DatasetInfo(
            name=self.name, version=LOADER_VERSION, n_chans=self.n_chans, n_times=self.n_times, sfreq=self.sfreq,
            ch_names=tuple(f"EEG{i}" for i in range(1, self.n_chans + 1)), unit="a.u.",
            class_names=self.class_names(classes), tmin=self.time_low / self.sfreq, image_size=self.image_size,
            citation=self.citation, licence=self.licence,
            subjects=tuple(sorted(int(s) for s in table["subject"].unique())), wnids=tuple(classes),
            stimulus_level="image", protocol_metrics=RETRIEVAL_METRICS,
            description=(f"EEG-ImageNet ({self.options.granularity}: {len(classes)} classes) from "
                         f"{', '.join(p.name for p in self.files)}; {len(table)} trials of "
                         f"{table['subject'].nunique()} subjects; crop [{self.time_low}, {self.time_high}) samples "
                         f"at 1 kHz; split per subject and class: positions p % {self.options.block} < "
                         f"{self.options.train_per_block} train (last {self.options.val_images_per_class} of them "
                         f"val), the rest test; sizes {manifest['split_sizes']}; {len(shared)} image(s) in train "
                         "for one subject and test for another; retrieval metrics scored with every run."),
        )
        sha = hashlib.sha256("".join(s["sha256"] for s in manifest["sources"].values()).encode()).hexdigest()
        source = (f"official: EEG-ImageNet position rule p % {self.options.block} < {self.options.train_per_block} "
                  f"per subject and class, val {self.options.val_images_per_class}/class (files sha256 {sha[:16]})")
        columns = [*TRIAL_COLUMNS, "split", "granularity", "n_times_raw"]
        stimuli = StimulusSet(paths=paths, labels={k: int(v) for k, v in image_labels.items()})
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
            On the first failed check.
        """
        self._check_present()
        recorded = recorded_sources(self.cache_root)
        lines = [check_recorded_sha256(path, recorded.get(str(path))) for path in self.files]
        ds = self.load()
        sizes = ds.trials["split"].value_counts().to_dict()
        lines.append(f"{len(ds)} trials, eeg {tuple(ds.eeg.shape)} {ds.eeg.dtype}; {ds.info.n_classes} classes "
                     f"({self.options.granularity}); " + ", ".join(f"{p} {sizes.get(p, 0)}" for p in ("train", "val", "test")))
        lines.append(f"{len(ds.stimuli)} stimulus images present under {self.images_root}")
        return lines


def write_eeg_imagenet_files(
    root: Path | str, *, n_subjects: int = 2, n_coarse: int = 4, n_fine: int = 4, images_per_class: int = 10,
    n_times: int = 460, photos: Path | str | None = None, image_px: int = 64, signal: float = 1.0, seed: int = 0,
    split_files: bool = True,
) -> dict[str, Path]:
    """Write made-up files in the exact EEG-ImageNet format under ``<root>/eeg-imagenet-2024/``.

    Keys, item fields, tensor ranks, 62 channels and the folder layout are the release's; sizes are
    parameters (the release: 16 subjects, 40 + 40 classes, 50 images each). Classes are the CVPR40
    WNIDs (coarse first, then fine, in ``labels`` order); every subject sees every image once, in
    class blocks. The EEG is noise plus (``signal`` > 0) a fixed random linear map of the image's
    8 × 8 grayscale thumbnail. Images: a crop/flip of the real photo of the class under
    ``photos/<wnid>/`` (``../shared/data/imagenet-samples``), else of any photo, else a solid colour.

    Parameters
    ----------
    root : Path
    n_subjects, n_coarse, n_fine, images_per_class, n_times : int
    photos : Path, optional
    image_px : int
    signal : float
    seed : int
    split_files : bool
        Subjects in two files ``EEG-ImageNet_1.pth`` / ``_2.pth`` (first and second half) as
        released; False: one ``EEG-ImageNet.pth``.

    Returns
    -------
    dict of str to Path
        ``files`` (list of Path) and ``images_dir``.
    """
    import torch
    from PIL import Image

    if n_coarse + n_fine > len(WNID_NAMES):
        raise ConfigError(f"n_coarse + n_fine must be ≤ {len(WNID_NAMES)}")
    rng = np.random.default_rng(seed)
    base = Path(root) / "eeg-imagenet-2024"
    images_dir = base / "imageNet_images"
    wnids = list(WNID_NAMES)[: n_coarse + n_fine]
    everything = photo_sources(photos)
    names, thumbs = [], {}
    for c, w in enumerate(wnids):
        own = photo_sources(Path(photos) / w) if photos is not None else []
        pool = own or everything
        (images_dir / w).mkdir(parents=True, exist_ok=True)
        for k in range(images_per_class):
            name = f"{w}_{1000 + k}.JPEG"
            im = photo_variant(pool[k % len(pool)] if pool else None, rng, image_px)
            im.save(images_dir / w / name, quality=90)
            thumbs[name] = np.asarray(im.convert("L").resize((8, 8), Image.BILINEAR), dtype=np.float64).reshape(-1)
            names.append((c, w, name))
    (images_dir / "synset_map_en.txt").write_text("".join(f"{w} {WNID_NAMES[w]}\n" for w in wnids), encoding="utf-8")
    proj = rng.standard_normal((64, 62 * n_times)) / 8.0
    gen = torch.Generator().manual_seed(seed)
    per_subject = []
    for s in range(n_subjects):
        items = []
        for c, w, name in names:  # class blocks, images in order
            t = thumbs[name]
            evoked = ((t - t.mean()) / (t.std() + 1e-6)) @ proj
            eeg = torch.randn(62, n_times, generator=gen) + signal * torch.from_numpy(evoked.reshape(62, n_times)).float()
            items.append({"eeg_data": eeg, "label": w, "granularity": "coarse" if c < n_coarse else "fine",
                          "subject": s, "image": name})
        per_subject.append(items)
    all_names = [n for _, _, n in names]
    files = []
    groups = [per_subject[: (n_subjects + 1) // 2], per_subject[(n_subjects + 1) // 2:]] if split_files \
        else [per_subject]
    for j, group in enumerate(groups):
        path = base / (f"EEG-ImageNet_{j + 1}.pth" if split_files else "EEG-ImageNet.pth")
        torch.save({"dataset": [it for items in group for it in items], "labels": wnids, "images": all_names}, path)
        files.append(path)
    return {"files": files, "images_dir": images_dir}
