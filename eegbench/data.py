"""Core data types: :class:`DatasetInfo`, :class:`StimulusSet` and :class:`EEGDataset`.

A dataset is held in memory as one float32 array of trials plus a pandas table with one row per
trial. Shapes follow MNE/braindecode naming: ``(n_trials, n_chans, n_times)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from eegbench.errors import DataFormatError, DataNotFoundError

#: Columns every :attr:`EEGDataset.trials` table has.
TRIAL_COLUMNS = ("trial_id", "label", "subject", "session", "recording", "image_id")
#: Values of the optional ``split`` column of a dataset that ships an official split
#: (``""`` = the trial is in none of the official parts).
SPLIT_PARTS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a dataset.

    Parameters
    ----------
    name : str
        Registered dataset name, e.g. ``"eegnb-n170"``.
    version : str
        Version of the loader's output; bump it when preprocessing changes (part of cache keys).
    n_chans : int
        Number of EEG channels.
    n_times : int
        Number of time samples per trial.
    sfreq : float
        Sampling frequency in Hz.
    ch_names : tuple of str
        Channel names, length ``n_chans``.
    unit : str
        Unit of the EEG values: ``"V"`` (SI, as MNE) or ``"a.u."`` for normalised data.
    class_names : tuple of str
        Human-readable class names; ``label`` indexes this tuple.
    tmin : float
        Start of the epoch relative to stimulus onset, in s.
    image_size : int
        Edge length in pixels of the (square) stimulus images as served by default.
    citation : str
        How to cite the data.
    licence : str
        Licence of the EEG data and of the stimulus images.
    subjects : tuple of int
        Every subject id of the dataset (sorted), so a method can size per-subject layers before
        it sees data; empty if unknown.
    wnids : tuple of str
        ImageNet WordNet ids of the classes (``wnids[label]``) for datasets whose classes are
        ImageNet classes (``cvpr40``); empty otherwise. Enables ImageNet-classifier metrics.
    stimulus_level : {"class", "image"}
        ``"image"`` when each trial's ``image_id`` is the photo that was on screen (image-level
        metrics apply); ``"class"`` when it is only a photo of the trial's class.
    description : str
        Data card: what the data are and, for simulated data, exactly what was simulated (shown by
        ``eegbench data info``); empty for datasets described by their citation alone.
    protocol_metrics : tuple of str
        Metric keys of the dataset's published protocol that every run on it scores besides the
        default ones (``things-eeg2``: the zero-shot retrieval metrics); empty for most datasets.
    test_eeg : str
        How each test trial's EEG was formed when the dataset offers a choice (``"mean of 80
        repetitions"``, ``"single trial"``); recorded in the protocol and its hash. Empty: no
        choice.
    """

    name: str
    version: str
    n_chans: int
    n_times: int
    sfreq: float
    ch_names: tuple[str, ...]
    unit: str
    class_names: tuple[str, ...]
    tmin: float = 0.0
    image_size: int = 256
    citation: str = ""
    licence: str = ""
    subjects: tuple[int, ...] = ()
    wnids: tuple[str, ...] = ()
    stimulus_level: str = "class"
    description: str = ""
    protocol_metrics: tuple[str, ...] = ()
    test_eeg: str = ""

    @property
    def n_classes(self) -> int:
        """Number of classes (``len(class_names)``)."""
        return len(self.class_names)


@dataclass
class StimulusSet:
    """Stimulus images addressed by ``image_id``.

    Parameters
    ----------
    paths : dict of str to Path
        Image file per ``image_id``.
    labels : dict of str to int
        Class label per ``image_id``.
    """

    paths: dict[str, Path]
    labels: dict[str, int]
    _cache: dict[tuple[str, int], np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def image_ids(self) -> list[str]:
        """All image ids, sorted."""
        return sorted(self.paths)

    def load(self, image_id: str, size: int) -> np.ndarray:
        """Load one stimulus as RGB, resized to ``size`` × ``size``.

        The image is centre-cropped to a square, then resized with PIL's bicubic filter.

        Parameters
        ----------
        image_id : str
            Key into :attr:`paths`.
        size : int
            Output edge length in pixels.

        Returns
        -------
        image : numpy.ndarray, shape (3, size, size), dtype uint8

        Raises
        ------
        DataNotFoundError
            If the image file is missing.
        DataFormatError
            If the file cannot be decoded as an image.
        """
        key = (image_id, int(size))
        if key not in self._cache:
            from PIL import Image, UnidentifiedImageError

            path = self.paths[image_id]
            if not path.is_file():
                raise DataNotFoundError(f"{path}: stimulus image for image_id {image_id!r} is missing")
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    w, h = im.size
                    s = min(w, h)
                    left, top = (w - s) // 2, (h - s) // 2
                    im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.BICUBIC)
                    arr = np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()
            except (UnidentifiedImageError, OSError) as exc:
                raise DataFormatError(f"{path}: cannot decode stimulus image ({exc})") from exc
            self._cache[key] = arr
        return self._cache[key]

    def load_many(self, image_ids: Sequence[str], size: int) -> np.ndarray:
        """Load several stimuli; returns uint8 array of shape ``(len(image_ids), 3, size, size)``."""
        if len(image_ids) == 0:
            return np.zeros((0, 3, size, size), dtype=np.uint8)
        return np.stack([self.load(i, size) for i in image_ids])


@dataclass
class EEGDataset:
    """EEG trials with their stimulus images, in memory.

    Parameters
    ----------
    info : DatasetInfo
        Static description (channels, sfreq, classes, ...).
    eeg : numpy.ndarray, shape (n_trials, n_chans, n_times), dtype float32
        EEG in ``info.unit``.
    trials : pandas.DataFrame
        One row per trial with columns :data:`TRIAL_COLUMNS`: ``trial_id`` (unique str), ``label``
        (int, indexes ``info.class_names``), ``subject`` (int), ``session`` (int), ``recording``
        (str, the file or block the trial came from) and ``image_id`` (str, key into ``stimuli``);
        optionally ``split`` (see ``split_source``). Extra columns are kept.
    stimuli : StimulusSet
        The stimulus images.
    split_source : str
        Non-empty when the dataset ships an official split (e.g. ``cvpr40``'s
        ``block_splits_by_image_all.pth`` split 0): then ``trials`` also has a ``split`` column
        holding ``"train"``, ``"val"``, ``"test"`` or ``""`` (in no part) per trial, and the
        built-in settings (:mod:`eegbench.splits`) use it instead of a recording-level split.
        The string says where the split came from (file, split number, sha256) and goes into the
        split hash.

    Raises
    ------
    DataFormatError
        If shapes or columns are inconsistent, or the ``split`` column and ``split_source``
        disagree. (Loaders check the EEG for NaN/inf while reading, so a memory-mapped array is not
        scanned again here.)
    """

    info: DatasetInfo
    eeg: np.ndarray
    trials: pd.DataFrame
    stimuli: StimulusSet
    split_source: str = ""

    def __post_init__(self) -> None:
        missing = [c for c in TRIAL_COLUMNS if c not in self.trials.columns]
        if missing:
            raise DataFormatError(f"dataset {self.info.name!r}: trial table lacks columns {missing}")
        if self.eeg.ndim != 3 or self.eeg.shape[1:] != (self.info.n_chans, self.info.n_times):
            raise DataFormatError(
                f"dataset {self.info.name!r}: eeg has shape {self.eeg.shape}, expected "
                f"(n_trials, {self.info.n_chans}, {self.info.n_times})"
            )
        if len(self.trials) != len(self.eeg):
            raise DataFormatError(
                f"dataset {self.info.name!r}: {len(self.eeg)} EEG trials but {len(self.trials)} table rows"
            )
        if not self.trials["trial_id"].is_unique:
            raise DataFormatError(f"dataset {self.info.name!r}: trial_id values are not unique")
        has_split = "split" in self.trials.columns
        if bool(self.split_source) != has_split:
            raise DataFormatError(
                f"dataset {self.info.name!r}: an official split needs both a 'split' column and a split_source"
            )
        if has_split:
            bad = sorted(set(self.trials["split"]) - {*SPLIT_PARTS, ""})
            if bad:
                raise DataFormatError(f"dataset {self.info.name!r}: unknown split part(s) {bad[:3]}")
        self.trials = self.trials.reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.trials)

    @property
    def labels(self) -> np.ndarray:
        """Class label per trial, int64 array of shape ``(n_trials,)``."""
        return self.trials["label"].to_numpy(dtype=np.int64)

    @property
    def subjects(self) -> np.ndarray:
        """Subject id per trial, int64 array of shape ``(n_trials,)``."""
        return self.trials["subject"].to_numpy(dtype=np.int64)

    def caption_texts(self, template: str = "a photo of a {}") -> tuple[list[str], np.ndarray]:
        """Caption of each trial's stimulus, as unique texts and an index per trial.

        Per-image captions when the trial table has a ``caption`` column (a captions file given
        with ``--dataset-option captions=FILE``, see :func:`load_captions`), else
        ``template.format(class name)`` per class.

        Parameters
        ----------
        template : str
            Class template used without per-image captions.

        Returns
        -------
        texts : list of str
            Unique caption texts.
        index : numpy.ndarray, shape (n_trials,), int64
            ``texts[index[i]]`` is trial i's caption.
        """
        if "caption" in self.trials.columns:
            codes, uniques = pd.factorize(self.trials["caption"].astype(str), sort=True)
            return [str(u) for u in uniques], codes.astype(np.int64)
        return [template.format(c) for c in self.info.class_names], self.labels.copy()

    def subset(self, trial_ids: Sequence[str]) -> EEGDataset:
        """Return the trials with the given ids, in the given order.

        Raises
        ------
        KeyError
            If an id is not in the dataset.
        """
        index = pd.Index(self.trials["trial_id"])
        pos = index.get_indexer(list(trial_ids))
        if (pos < 0).any():
            bad = [t for t, p in zip(trial_ids, pos) if p < 0][:3]
            raise KeyError(f"trial ids not in dataset {self.info.name!r}: {bad}")
        return EEGDataset(self.info, self.eeg[pos], self.trials.iloc[pos].copy(), self.stimuli,
                          split_source=self.split_source)

    def images(self, size: int | None = None) -> np.ndarray:
        """Stimulus image of every trial, uint8 array of shape ``(n_trials, 3, size, size)``."""
        return self.stimuli.load_many(list(self.trials["image_id"]), size or self.info.image_size)


def load_captions(path: Path | str, image_ids: Sequence[str]) -> dict[str, str]:
    """Read a captions file: CSV with columns ``image_id,caption`` (one row per stimulus image).

    Parameters
    ----------
    path : Path
        The CSV file (UTF-8, header row ``image_id,caption``).
    image_ids : sequence of str
        Stimuli that must have a caption (the training and validation images; captions of test
        images are never read by a method).

    Returns
    -------
    dict of str to str
        ``image_id`` → caption, for the ids in ``image_ids``.

    Raises
    ------
    DataNotFoundError
        If the file does not exist.
    DataFormatError
        One line naming the file: unreadable CSV, missing columns, an empty caption, a duplicated
        ``image_id``, or images without a caption (count and first ids).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"captions file {path} not found (--dataset-option captions=FILE)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise DataFormatError(f"captions file {path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in ("image_id", "caption") if c not in table.columns]
    if missing:
        raise DataFormatError(f"captions file {path}: missing column(s) {', '.join(missing)} (expected image_id,caption)")
    table["image_id"] = table["image_id"].str.strip()
    table["caption"] = table["caption"].str.strip()
    dup = table["image_id"][table["image_id"].duplicated()]
    if len(dup):
        raise DataFormatError(f"captions file {path}: image_id {dup.iloc[0]!r} appears more than once")
    empty = table["image_id"][table["caption"] == ""]
    if len(empty):
        raise DataFormatError(f"captions file {path}: empty caption for image_id {empty.iloc[0]!r}")
    captions = dict(zip(table["image_id"], table["caption"]))
    lacking = sorted({str(i) for i in image_ids} - set(captions))
    if lacking:
        raise DataFormatError(f"captions file {path}: {len(lacking)} image(s) have no caption, e.g. "
                              f"{', '.join(lacking[:3])}")
    return {str(i): captions[str(i)] for i in image_ids}
