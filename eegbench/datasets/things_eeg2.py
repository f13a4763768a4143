"""``things-eeg2``: THINGS-EEG2 (Gifford et al. 2022), the official preprocessed release, zero-shot split.

Data (Gifford, Dwivedi, Roig & Cichy, NeuroImage 264, 119754, 2022; OSF project 3jk45): 10
subjects saw 16,740 THINGS images in a rapid serial visual presentation. The **training** set is
1,654 concepts × 10 images, each shown 4 times; the **test** set is 200 other concepts × 1 image,
each shown 80 times. The test concepts appear in no training image, which makes the split
zero-shot: a method is scored on concepts it never trained on (NICE, ATM, UBP and the others
report 200-way retrieval of the test image). The files are not redistributable here; users put
them under ``<data root>/things-eeg2/``::

    things-eeg2/Preprocessed_data_100Hz/sub-01/preprocessed_eeg_training.npy   # eeg_dir= (per variant)
    things-eeg2/Preprocessed_data_100Hz/sub-01/preprocessed_eeg_test.npy
    ...                                    sub-10/...
    things-eeg2/training_images/00001_aardvark/aardvark_01b.jpg                # 1,654 folders × 10 images
    things-eeg2/test_images/00001_aircraft_carrier/aircraft_carrier_06s.jpg    # 200 folders × 1 image

Each EEG file is a pickled dict (``np.load(path, allow_pickle=True)`` in the owners' and NICE's
code; a plain pickle or an ``np.save``-d object array, both read here by an unpickler that rebuilds
numpy arrays only) with ``preprocessed_eeg_data`` ``(n_images, n_repetitions, n_chans, n_times)``,
``ch_names`` and ``times`` (s, relative to onset). Event ``e`` is image ``e`` of the sorted
listing: concept folders in name order, images in name order within a folder (event id =
concept × 10 + image on the training set; as ATM and NICE index it).

Variants (``variant=``)
    ``17ch-100hz`` (default): the official release: 17 occipital and parietal channels, 100 Hz,
    −0.2 … 0.79 s (100 samples), training (16540, 4, 17, 100), test (200, 80, 17, 100);
    folder ``Preprocessed_data_100Hz``. ``63ch-250hz``: the re-preprocessing of NICE
    (``eeyhsong/NICE-EEG``, ``preprocessing/``) that ATM also uses: 63 channels, 250 Hz, 0 … 0.996 s
    (250 samples; the file's ``times`` may still hold the −0.2 s pre-stimulus part that NICE
    drops: then the last 250 are used), training (16540, 4, 63, 250); folder
    ``Preprocessed_data_250Hz``. ``eeg_dir=`` names another folder.

Repetitions (``train_trials=``, ``test_trials=``; each ``single`` or ``average``)
    ``single``: every repetition is its own trial; ``average``: one trial per image, the mean over
    its repetitions. Defaults: training ``single`` (ATM trains on every repetition; NICE averages,
    ``train_trials=average``), test ``average`` (NICE and ATM both score the mean of the 80 test
    repetitions). Papers mix these up, so the test choice is recorded in the run's protocol
    (``test_eeg``, part of the protocol hash: a single-trial and an averaged run never share a
    leaderboard) as well as in the dataset options.

Split (official; ``split`` column)
    test = the test set; val = ``val_images`` training images (default 740, NICE's validation
    size, at most a tenth of the training images) chosen in the order of
    ``sha256("0:" + image_id)`` with every repetition of them; train = the other training images.
    The test concepts are disjoint from the training concepts (a warning is logged if a concept
    name appears in both). Settings: ``multi-subject`` = the papers' *joint* setting (all subjects
    pooled), ``single-subject --subject N`` = *intra-subject*, ``cross-subject --subject N`` =
    *leave-one-subject-out* (train on the other subjects' training trials, test on subject N's test
    trials; each run builds a fresh model).

Units: the release is multivariate-noise-normalised (whitened per session), so ``unit == "a.u."``.
Labels: training concepts ``0 … 1653`` in folder order, then test concepts ``1654 … 1853``; class
names are the folder names without their number (``aircraft carrier``). ``subjects=1,2`` loads a
subset (the 63-channel variant is ~42 GB of float32 for all ten subjects with every training
repetition).

Table columns: ``trial_id`` (``s01-train-03456-r2``, ``s01-test-0123-avg``), ``label``,
``subject``, ``session`` 0 (the release merges the four sessions), ``recording``
(``sub-01/training``), ``image_id`` (``training_images/00001_aardvark/aardvark_01b``),
``split``, ``event`` (image index in its set) and ``repetition`` (−1 for an average).

Cache: the arrays go to ``<cache_dir>/things-eeg2/eeg-<key>.npy`` (float32, memory-mapped on
later loads) with ``trials-<key>.csv`` and ``manifest-<key>.json`` (written last). The key hashes
the loader version, the options and the name, size and mtime of every EEG file and the image
listing; the files' sha256 is recorded on the cold path, and ``eegbench data verify things-eeg2``
recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from eegbench.data import TRIAL_COLUMNS, DatasetInfo, EEGDataset, StimulusSet
from eegbench.datasets import default_cache_dir, default_data_root
from eegbench.datasets.eegnb import sha256_file
from eegbench.files import atomic_path, atomic_write
from eegbench.datasets.common import (
    check_recorded_sha256,
    load_pickled,
    parse_options,
    photo_sources,
    photo_variant,
    read_keyed_cache,
    recorded_sources,
)
from eegbench.errors import ConfigError, DataFormatError, DataNotFoundError

logger = logging.getLogger(__name__)

#: Version of the preprocessing output of :class:`ThingsEEG2`; part of every cache key.
LOADER_VERSION = "things-eeg2-1"
#: variant → (default EEG folder, n_chans, sfreq in Hz, n_times).
VARIANTS: dict[str, tuple[str, int, float, int]] = {
    "17ch-100hz": ("Preprocessed_data_100Hz", 17, 100.0, 100),
    "63ch-250hz": ("Preprocessed_data_250Hz", 63, 250.0, 250),
}
PARTS = {"training": "train", "test": "test"}
#: Images converted to float32 at a time while caching (bounds the extra memory to a few hundred MB).
_CHUNK_IMAGES = 1024
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_KEYS = ("preprocessed_eeg_data", "ch_names", "times")
_HINT = ("THINGS-EEG2 comes from https://osf.io/3jk45/ (preprocessed EEG per subject; training_images and "
         "test_images from the THINGS image set); put it under <data root>/things-eeg2/ or set --data-root / "
         "EEGBENCH_DATA")


@dataclass(frozen=True)
class ThingsOptions:
    """Options of :class:`ThingsEEG2` (``--dataset-option key=value``).

    Parameters
    ----------
    variant : {"17ch-100hz", "63ch-250hz"}
        Official release or NICE's 63-channel re-preprocessing.
    eeg_dir : str
        EEG folder under ``things-eeg2/``; empty: the variant's default.
    subjects : str
        ``"all"`` (every ``sub-NN`` folder) or a comma list such as ``"1,2,5"``.
    train_trials, test_trials : {"single", "average"}
        Every repetition a trial, or their mean.
    val_images : int
        Training images held out for validation (≥ 0; at most a tenth of the training images).
    """

    variant: str = "17ch-100hz"
    eeg_dir: str = ""
    subjects: str = "all"
    train_trials: str = "single"
    test_trials: str = "average"
    val_images: int = 740

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value out of range."""
        if self.variant not in VARIANTS:
            raise ConfigError(f"dataset 'things-eeg2': variant={self.variant!r}; known: {', '.join(VARIANTS)}")
        for key in ("train_trials", "test_trials"):
            if getattr(self, key) not in ("single", "average"):
                raise ConfigError(f"dataset 'things-eeg2': {key}={getattr(self, key)!r}; known: single, average")
        if self.val_images < 0:
            raise ConfigError(f"dataset 'things-eeg2': val_images={self.val_images} must be ≥ 0")
        if self.subjects != "all" and not re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", self.subjects):
            raise ConfigError(f"dataset 'things-eeg2': subjects={self.subjects!r}; use 'all' or a list such as 1,2,5")


def concept_name(folder: str) -> str:
    """``"00001_aircraft_carrier"`` → ``"aircraft carrier"`` (the number and underscores dropped)."""
    return folder.split("_", 1)[1].replace("_", " ") if "_" in folder else folder


def _stat(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"name": str(path), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


class ThingsEEG2:
    """``things-eeg2`` loader (see the module docstring for the files, options and split).

    Parameters
    ----------
    data_root : Path or None
        Folder that contains ``things-eeg2/``; None → :func:`eegbench.datasets.default_data_root`.
    cache_dir : Path or None
        Cache root (``<cache_dir>/things-eeg2/``); None → :func:`eegbench.datasets.default_cache_dir`.
    **options
        :class:`ThingsOptions` fields, as strings or typed values.

    Raises
    ------
    ConfigError
        For an unknown option or a bad value.
    """

    name: ClassVar[str] = "things-eeg2"
    image_size: ClassVar[int] = 256
    citation: ClassVar[str] = (
        "Gifford, A. T., Dwivedi, K., Roig, G., & Cichy, R. M. (2022). A large and rich EEG dataset for modeling "
        "human visual object recognition. NeuroImage, 264, 119754. Images: Hebart, M. N. et al. (2019). THINGS: "
        "A database of 1,854 object concepts and more than 26,000 naturalistic object images. PLOS ONE 14(10). "
        "63-channel variant: Song, Y. et al. (2024). Decoding natural images from EEG for object recognition "
        "(NICE). ICLR."
    )
    licence: ClassVar[str] = ("EEG: CC BY 4.0 (OSF 3jk45); images: THINGS image database terms (academic research "
                              "use only, no redistribution)")

    def __init__(self, data_root: Path | str | None = None, cache_dir: Path | str | None = None,
                 **options: Any) -> None:
        self.options = parse_options(ThingsOptions, self.name, options)
        self.data_root = Path(data_root) if data_root is not None else default_data_root()
        self.cache_root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / self.name
        self.base = self.data_root / "things-eeg2"
        folder, self.n_chans, self.sfreq, self.n_times = VARIANTS[self.options.variant]
        self.eeg_root = self.base / (self.options.eeg_dir or folder)
        self.cache_hit: bool | None = None
        self.manifest: dict[str, Any] | None = None

    # ------------------------------------------------------------------ files
    def subject_ids(self) -> list[int]:
        """The subjects to load: ``subjects=`` or every ``sub-NN`` folder of the EEG folder.

        Raises
        ------
        DataNotFoundError
            If the EEG folder, or a requested subject's folder, is missing.
        """
        if not self.eeg_root.is_dir():
            raise DataNotFoundError(f"{self.eeg_root}: EEG folder is missing (variant {self.options.variant}); "
                                    f"{_HINT}")
        if self.options.subjects == "all":
            ids = sorted(int(m.group(1)) for p in self.eeg_root.iterdir()
                         if p.is_dir() and (m := re.fullmatch(r"sub-(\d+)", p.name)))
            if not ids:
                raise DataNotFoundError(f"{self.eeg_root}: no sub-NN folder; {_HINT}")
            return ids
        ids = sorted({int(s) for s in self.options.subjects.split(",")})
        for s in ids:
            if not self.subject_dir(s).is_dir():
                raise DataNotFoundError(f"{self.subject_dir(s)}: folder of subject {s} is missing; {_HINT}")
        return ids

    def subject_dir(self, subject: int) -> Path:
        """``<eeg folder>/sub-NN``."""
        return self.eeg_root / f"sub-{subject:02d}"

    def eeg_file(self, subject: int, part: str) -> Path:
        """``sub-NN/preprocessed_eeg_{training,test}.npy``."""
        return self.subject_dir(subject) / f"preprocessed_eeg_{part}.npy"

    def required_files(self) -> list[Path]:
        """Every subject's two EEG files and the two image folders."""
        files = [self.base / "training_images", self.base / "test_images"]
        try:
            subjects = self.subject_ids()
        except DataNotFoundError:
            return [self.eeg_root, *files]
        return [self.eeg_file(s, p) for s in subjects for p in PARTS] + files

    def image_listing(self, part: str) -> list[tuple[str, str, Path]]:
        """``(concept folder, image stem, path)`` of every image of ``part``, in event order.

        Raises
        ------
        DataNotFoundError
            If the image folder is missing or holds no image.
        """
        root = self.base / f"{part}_images"
        if not root.is_dir():
            raise DataNotFoundError(f"{root}: image folder is missing; {_HINT}")
        out = []
        for concept in sorted(p for p in root.iterdir() if p.is_dir()):
            for image in sorted(p for p in concept.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                out.append((concept.name, image.stem, image))
        if not out:
            raise DataNotFoundError(f"{root}: no <concept>/<image>.jpg inside; {_HINT}")
        return out

    def read_eeg(self, subject: int, part: str) -> tuple[np.ndarray, list[str], np.ndarray]:
        """One EEG file, checked: ``(data (n_images, n_reps, n_chans, n_times), ch_names, times)``.

        Raises
        ------
        DataNotFoundError, DataFormatError
            Missing or unsafe file; not a dict; a missing key; a data array that is not 4-D float
            with the variant's channel count; ``ch_names`` or ``times`` of the wrong length.
        """
        path = self.eeg_file(subject, part)
        obj = load_pickled(path, hint=_HINT)
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}: expected a dict with keys {', '.join(_KEYS)}, got {type(obj).__name__}")
        missing = [k for k in _KEYS if k not in obj]
        if missing:
            raise DataFormatError(f"{path}: missing key(s) {missing} (has {sorted(map(str, obj))})")
        data = obj["preprocessed_eeg_data"]
        if not isinstance(data, np.ndarray) or data.ndim != 4 or data.dtype.kind != "f":
            what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise DataFormatError(f"{path}: 'preprocessed_eeg_data' is a {what}, expected a float array "
                                  "(n_images, n_repetitions, n_chans, n_times)")
        if data.shape[2] != self.n_chans:
            raise DataFormatError(f"{path}: {data.shape[2]} channels (shape {data.shape}), variant "
                                  f"{self.options.variant} has {self.n_chans}; pick the variant of these files")
        ch_names = [str(c) for c in list(obj["ch_names"])]
        times = np.asarray(obj["times"], dtype=np.float64).reshape(-1)
        if len(ch_names) != data.shape[2]:
            raise DataFormatError(f"{path}: {len(ch_names)} ch_names for {data.shape[2]} channels")
        if len(times) < data.shape[3]:
            raise DataFormatError(f"{path}: {len(times)} times for {data.shape[3]} samples")
        times = times[len(times) - data.shape[3]:]
        if len(times) > 1 and abs(1.0 / float(np.median(np.diff(times))) - self.sfreq) > 0.01 * self.sfreq:
            raise DataFormatError(f"{path}: 'times' step is {float(np.median(np.diff(times))):g} s, variant "
                                  f"{self.options.variant} samples at {self.sfreq:g} Hz")
        return data, ch_names, times

    def _cache_key(self, subjects: list[int], listings: dict[str, list]) -> str:
        files = [_stat(self.eeg_file(s, p)) for s in subjects for p in PARTS]
        images = hashlib.sha256("\n".join(f"{c}/{s}" for part in PARTS for c, s, _ in listings[part])
                                .encode()).hexdigest()
        payload = {"version": LOADER_VERSION, "options": vars(self.options), "subjects": subjects,
                   "files": files, "images": images, "eeg_root": str(self.eeg_root)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    # ------------------------------------------------------------------ table + cache
    def _val_images(self, train_ids: list[str]) -> set[str]:
        n = min(self.options.val_images, len(train_ids) // 10)
        order = sorted(train_ids, key=lambda i: hashlib.sha256(f"0:{i}".encode()).hexdigest())
        return set(order[:n])

    def _rows(self, subject: int, part: str, data: np.ndarray, image_ids: list[str], labels: np.ndarray,
              val: set[str]) -> tuple[pd.DataFrame, bool]:
        n_images, n_reps = data.shape[:2]
        average = getattr(self.options, f"{'train' if part == 'training' else 'test'}_trials") == "average"
        short = PARTS[part]
        if average:
            events, reps = np.arange(n_images), np.full(n_images, -1)
            suffix = ["avg"] * n_images
        else:
            events, reps = np.repeat(np.arange(n_images), n_reps), np.tile(np.arange(n_reps), n_images)
            suffix = [f"r{r}" for r in reps]
        width = 5 if part == "training" else 4
        ids = [image_ids[e] for e in events]
        split = np.array([("val" if i in val else "train") if part == "training" else "test" for i in ids])
        table = pd.DataFrame({
            "trial_id": [f"s{subject:02d}-{short}-{e:0{width}d}-{x}" for e, x in zip(events, suffix)],
            "label": labels[events], "subject": np.full(len(events), subject, dtype=np.int64),
            "session": np.zeros(len(events), dtype=np.int64),
            "recording": f"sub-{subject:02d}/{part}", "image_id": ids, "split": split,
            "event": events.astype(np.int64), "repetition": reps.astype(np.int64),
        })
        return table, average

    def _build(self, key: str, subjects: list[int], listings: dict[str, list]) -> tuple[np.ndarray, pd.DataFrame, dict]:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        concepts = {p: list(dict.fromkeys(c for c, _, _ in listings[p])) for p in PARTS}
        label_of = {("training", c): i for i, c in enumerate(concepts["training"])}
        label_of.update({("test", c): len(concepts["training"]) + i for i, c in enumerate(concepts["test"])})
        image_ids = {p: [f"{p}_images/{c}/{s}" for c, s, _ in listings[p]] for p in PARTS}
        labels = {p: np.array([label_of[(p, c)] for c, _, _ in listings[p]], dtype=np.int64) for p in PARTS}
        val = self._val_images(image_ids["training"])
        # pass 1: shapes and tables (the files are read again in pass 2 so that only one is in memory)
        tables, plans, ch_names, times, sources = [], [], None, None, {}
        for s in tqdm(subjects, desc="things-eeg2: checking files", unit="subject", leave=False, disable=None):
            for part in PARTS:
                data, names, t = self.read_eeg(s, part)
                path = self.eeg_file(s, part)
                if data.shape[0] != len(listings[part]):
                    raise DataFormatError(f"{path}: {data.shape[0]} images but {self.base / f'{part}_images'} holds "
                                          f"{len(listings[part])}; the EEG and image folders do not match")
                if ch_names is None:
                    ch_names, times = names, t
                elif names != ch_names or data.shape[3] != len(times):
                    raise DataFormatError(f"{path}: channels or samples differ from {self.eeg_file(subjects[0], 'training')}")
                table, average = self._rows(s, part, data, image_ids[part], labels[part], val)
                tables.append(table)
                plans.append((s, part, average))
                sources[f"sub-{s:02d}/{part}"] = {**_stat(path), "shape": list(data.shape), "dtype": str(data.dtype)}
                del data
        table = pd.concat(tables, ignore_index=True)
        n_times = len(times)
        root = self.cache_root
        root.mkdir(parents=True, exist_ok=True)
        eeg_file, trials_file = f"eeg-{key[:16]}.npy", f"trials-{key[:16]}.csv"
        with atomic_path(root / eeg_file) as tmp:  # the EEG file appears last, whole
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=(len(table), len(ch_names), n_times))
            row = 0
            for s, part, average in tqdm(plans, desc="things-eeg2: caching", unit="file", leave=False,
                                                   disable=None):
                path = self.eeg_file(s, part)
                data, _, _ = self.read_eeg(s, part)
                n_images, n_reps = data.shape[:2]
                for i0 in range(0, n_images, _CHUNK_IMAGES):  # chunks: no full-size copy of an 8 GB file
                    part_ = data[i0:i0 + _CHUNK_IMAGES]
                    # trials in image-major, repetition-minor order, as the table lists them
                    block = (part_.mean(axis=1) if average else part_.reshape(-1, *part_.shape[2:])).astype(np.float32)
                    if not np.isfinite(block).all():
                        row_, ch, sample = (int(v) for v in np.argwhere(~np.isfinite(block))[0])
                        where = (f"image {i0 + row_}" if average else
                                 f"image {i0 + row_ // n_reps}, repetition {row_ % n_reps}")
                        raise DataFormatError(f"{path}: non-finite EEG value at {where}, channel {ch}, sample {sample}")
                    out[row:row + len(block)] = block
                    row += len(block)
                sources[f"sub-{s:02d}/{part}"]["sha256"] = sha256_file(path)
                del data
            out.flush()
            del out
            atomic_write(root / trials_file, lambda f: f.write(table.to_csv(index=False).encode()))
        manifest = {
            "key": key, "dataset": self.name, "version": LOADER_VERSION, "options": vars(self.options),
            "subjects": subjects, "ch_names": ch_names, "times": [float(x) for x in times],
            "concepts": concepts, "sources": sources, "n_trials": len(table),
            "split_sizes": {p: int((table["split"] == p).sum()) for p in ("train", "val", "test")},
            "eeg_file": eeg_file, "trials_file": trials_file,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_s": round(time.perf_counter() - t0, 2),
        }
        atomic_write(root / f"manifest-{key[:16]}.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        return np.load(root / eeg_file, mmap_mode="r", allow_pickle=False), table, manifest

    def _read_cache(self, key: str) -> tuple[np.ndarray, pd.DataFrame, dict] | None:
        return read_keyed_cache(self.cache_root, key, self.name)

    # ------------------------------------------------------------------ load
    def load(self) -> EEGDataset:
        """Load the dataset (from the memory-mapped cache when valid).

        Returns
        -------
        EEGDataset
            ``eeg`` float32 ``(n_trials, n_chans, n_times)`` in a.u. (whitened), a read-only
            memory map; ``trials`` with the official ``split``; ``info.stimulus_level == "image"``,
            ``info.protocol_metrics`` the retrieval metrics, ``info.test_eeg`` the test choice.

        Raises
        ------
        DataNotFoundError
            A missing EEG folder, subject folder, EEG file or image folder (one line, with where
            the data come from).
        DataFormatError
            An unsafe or corrupt file, missing keys, wrong shapes or channel count, non-finite
            values, or image folders that do not match the EEG.
        """
        from eegbench.metrics.retrieval import RETRIEVAL_METRICS

        subjects = self.subject_ids()
        for s in subjects:
            for part in PARTS:
                if not self.eeg_file(s, part).is_file():
                    raise DataNotFoundError(f"{self.eeg_file(s, part)}: file is missing; {_HINT}")
        listings = {p: self.image_listing(p) for p in PARTS}
        key = self._cache_key(subjects, listings)
        cached = self._read_cache(key)
        self.cache_hit = cached is not None
        if cached is None:
            from eegbench.locks import cache_lock

            with cache_lock(self.cache_root / f"build-{key[:16]}", what=f"the {self.name} cache"):
                cached = self._read_cache(key)  # another process may have built it meanwhile
                eeg, table, manifest = cached if cached is not None else self._build(key, subjects, listings)
        else:
            eeg, table, manifest = cached
        self.manifest = manifest
        paths = {f"{p}_images/{c}/{s}": path for p in PARTS for c, s, path in listings[p]}
        used = dict(zip(table["image_id"], table["label"].astype(int)))
        stimuli = StimulusSet(paths={i: paths[i] for i in used}, labels={i: int(v) for i, v in used.items()})
        concepts = manifest["concepts"]
        names = [concept_name(c) for c in concepts["training"]]
        test_names = [concept_name(c) for c in concepts["test"]]
        shared = sorted(set(names) & set(test_names))
        if shared:
            logger.warning("things-eeg2: %d test concept(s) also name a training concept, e.g. %r: the split is not "
                           "zero-shot for them", len(shared), shared[0])
        times = manifest["times"]
        n_test_reps = int(manifest["sources"][f"sub-{subjects[0]:02d}/test"]["shape"][1])
        test_eeg = (f"mean of {n_test_reps} repetitions" if self.options.test_trials == "average" else
                    "single trial")
        info = DatasetInfo(
            name=self.name, version=LOADER_VERSION, n_chans=int(eeg.shape[1]), n_times=int(eeg.shape[2]),
            sfreq=self.sfreq, ch_names=tuple(manifest["ch_names"]), unit="a.u.",
            class_names=tuple(names + test_names), tmin=round(float(times[0]), 6), image_size=self.image_size,
            citation=self.citation, licence=self.licence, subjects=tuple(subjects), stimulus_level="image",
            description=self.data_card(manifest, test_eeg), protocol_metrics=RETRIEVAL_METRICS, test_eeg=test_eeg,
        )
        n_val = table.loc[table["split"] == "val", "image_id"].nunique()
        source = (f"official: THINGS-EEG2 training/test sets ({len(concepts['training'])} training, "
                  f"{len(concepts['test'])} held-out test concepts, zero-shot); val = {n_val} training images "
                  "by sha256 order")
        columns = [*TRIAL_COLUMNS, "split", "event", "repetition"]
        return EEGDataset(info=info, eeg=eeg, trials=table[columns], stimuli=stimuli, split_source=source)

    def data_card(self, manifest: dict, test_eeg: str) -> str:
        """One paragraph: what was loaded (variant, subjects, sizes, repetitions, split)."""
        src = manifest["sources"]
        first = next(iter(src.values()))
        train_shape = src[f"sub-{manifest['subjects'][0]:02d}/training"]["shape"]
        test_shape = src[f"sub-{manifest['subjects'][0]:02d}/test"]["shape"]
        return (f"THINGS-EEG2 {self.options.variant} from {self.eeg_root} ({first['dtype']} files); subjects "
                f"{', '.join(map(str, manifest['subjects']))}; training {tuple(train_shape)} and test "
                f"{tuple(test_shape)} per subject (images, repetitions, channels, samples); training EEG: "
                f"{'mean of repetitions' if self.options.train_trials == 'average' else 'every repetition'}; "
                f"test EEG: {test_eeg}; zero-shot split: {len(manifest['concepts']['test'])} test concepts "
                f"never seen in training; split sizes {manifest['split_sizes']} trials; retrieval metrics scored "
                "with every run (Method.embed_eeg).")

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
            name, size and mtime is a :class:`DataFormatError`).
        """
        subjects = self.subject_ids()
        recorded = recorded_sources(self.cache_root)
        lines = []
        for s in subjects:
            for part in PARTS:
                path = self.eeg_file(s, part)
                if not path.is_file():
                    raise DataNotFoundError(f"{path}: file is missing; {_HINT}")
                lines.append(check_recorded_sha256(path, recorded.get(f"sub-{s:02d}/{part}")))
        ds = self.load()
        sizes = ds.trials["split"].value_counts().to_dict()
        lines.append(f"{len(ds)} trials, eeg {tuple(ds.eeg.shape)} {ds.eeg.dtype}; subjects {list(ds.info.subjects)}; "
                     + ", ".join(f"{p} {sizes.get(p, 0)}" for p in ("train", "val", "test")))
        lines.append(f"{len(ds.stimuli)} stimulus images present under {self.base}")
        return lines


def write_things_eeg2_files(
    root: Path | str, *, n_subjects: int = 2, n_train_concepts: int = 8, images_per_concept: int = 10,
    train_reps: int = 4, n_test_concepts: int = 8, test_reps: int = 80, variant: str = "17ch-100hz",
    photos: Path | str | None = None, image_px: int = 64, signal: float = 1.0, seed: int = 0,
    container: str = "pickle", dtype: str = "float32",
) -> dict[str, Path]:
    """Write made-up files in the exact THINGS-EEG2 format under ``<root>/things-eeg2/``.

    Folder and file names, dict keys, array ranks and the channel/sample counts of ``variant`` are
    the release's; the numbers of concepts, images and repetitions are parameters (the real
    training file holds 16540 × 4 trials per subject). The EEG is noise plus, when ``signal`` > 0,
    a fixed random linear map of each image's 8 × 8 grayscale thumbnail (the same for every
    subject and repetition), so a method that reads the EEG can retrieve the image. Images: the
    real ImageNet photos under ``photos`` (one per folder, as in ``../shared/data/imagenet-samples``)
    cycled over the concepts, each image a different crop and flip of its photo; solid colours
    when ``photos`` is None.

    Parameters
    ----------
    root : Path
        Data root to write into (creates ``things-eeg2/``).
    n_subjects, n_train_concepts, images_per_concept, train_reps, n_test_concepts, test_reps : int
        Sizes (the release: 10, 1654, 10, 4, 200, 80).
    variant : {"17ch-100hz", "63ch-250hz"}
    photos : Path, optional
        Folder of ``<wnid>/<photo>`` images to build the stimuli from.
    image_px : int
        Edge of the written JPEGs.
    signal : float
        Amplitude of the image-determined response relative to unit-variance noise.
    seed : int
    container : {"pickle", "npy"}
        ``pickle.dump`` of the dict (as the owners' preprocessing writes it) or ``np.save`` of it.
    dtype : str
        dtype of ``preprocessed_eeg_data``.

    Returns
    -------
    dict of str to Path
        ``eeg_dir``, ``training_images``, ``test_images``.
    """
    import pickle

    from PIL import Image

    folder, n_chans, sfreq, n_times = VARIANTS[variant]
    rng = np.random.default_rng(seed)
    base = Path(root) / "things-eeg2"
    sources = photo_sources(photos)
    thumbs = {}
    words = ["aardvark", "abacus", "accordion", "acorn", "air conditioner", "airbag", "aircraft carrier", "airplane",
             "alarm clock", "alligator", "almond", "altar", "aluminum foil", "ambulance", "anchor", "anklet"]
    k = 0
    for part, n_concepts, n_images in (("training", n_train_concepts, images_per_concept), ("test", n_test_concepts, 1)):
        for c in range(n_concepts):
            word = f"{words[c % len(words)]} {c // len(words)}".replace(" 0", "") if part == "training" else \
                f"test {words[c % len(words)]} {c}"
            cname = f"{c + 1:05d}_{word.replace(' ', '_')}"
            d = base / f"{part}_images" / cname
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n_images):
                stem = f"{word.replace(' ', '_')}_{i + 1:02d}{'b' if part == 'training' else 's'}"
                im = photo_variant(sources[k % len(sources)] if sources else None, rng, image_px)
                im.save(d / f"{stem}.jpg", quality=90)
                thumbs[(part, c, i)] = np.asarray(im.convert("L").resize((8, 8), Image.BILINEAR), dtype=np.float64)
                k += 1
    flat = {key: (t.reshape(-1) - t.mean()) / (t.std() + 1e-6) for key, t in thumbs.items()}
    proj = rng.standard_normal((64, n_chans * n_times)) / 8.0
    times = np.round((np.arange(n_times) / sfreq) + (-0.2 if variant == "17ch-100hz" else 0.0), 6)
    ch_names = [f"{'PO' if i % 2 else 'O'}{i + 1}" for i in range(n_chans)]
    for s in range(1, n_subjects + 1):
        d = base / folder / f"sub-{s:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for part, n_concepts, n_images, reps in (("training", n_train_concepts, images_per_concept, train_reps),
                                                 ("test", n_test_concepts, 1, test_reps)):
            keys = [(part, c, i) for c in range(n_concepts) for i in range(n_images)]
            evoked = np.stack([flat[key] @ proj for key in keys]).reshape(len(keys), 1, n_chans, n_times)
            noise = rng.standard_normal((len(keys), reps, n_chans, n_times))
            data = (noise + signal * evoked).astype(dtype)
            obj = {"preprocessed_eeg_data": data, "ch_names": ch_names, "times": times}
            path = d / f"preprocessed_eeg_{part}.npy"
            if container == "npy":
                np.save(path, obj, allow_pickle=True)
            else:
                with open(path, "wb") as fh:
                    pickle.dump(obj, fh, protocol=4)
    return {"eeg_dir": base / folder, "training_images": base / "training_images", "test_images": base / "test_images"}
