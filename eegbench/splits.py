"""Settings and splits.

A *setting* is a registered callable ``(dataset, **options) -> Split``. Built-in settings
(``multi-subject``, ``single-subject``, ``cross-subject``) split at the **recording** level, so no
recording is shared between train and test, and the assignment depends only on the recording ids
and a fixed ``split_seed`` (never on the run seed), so every method and seed sees the same split.

A dataset that ships an **official split** (``EEGDataset.split_source`` non-empty, a ``split``
column in its table; e.g. ``cvpr40``'s image-disjoint ``block_splits_by_image_all.pth`` split 0)
is never re-split (``research/methods.md`` §2.3, §3.6: a random trial-level re-split puts one
stimulus image in train and test). The settings then derive from the official parts:

- ``multi-subject``: the official train/val/test parts as they are;
- ``single-subject``: each official part intersected with ``subject == s`` (not the 0–999
  ``block_splits_by_image_single`` indexing that DreamDiffusion, BrainVis and GWIT apply to the
  subject-filtered list);
- ``cross-subject``: test = subject ``s``'s official-test trials; train/val = the other subjects'
  official train/val trials. Both the subject and the images are held out (using all of subject
  ``s``'s trials as test would show test images to the model through the other subjects' trials).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eegbench.data import SPLIT_PARTS, EEGDataset
from eegbench.errors import ConfigError

#: Target fraction of trials per part for recording-level splits.
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


@dataclass(frozen=True)
class Split:
    """Train/validation/test trial ids of one setting.

    Parameters
    ----------
    setting : str
        Registered setting name, e.g. ``"multi-subject"``.
    options : dict
        Setting options, e.g. ``{"subject": 3}``.
    train, val, test : tuple of str
        Trial ids (``EEGDataset.trials["trial_id"]``) of each part.
    source : str
        How the split was made (``"recording-level, split_seed=0"``, an official split file, ...).
    """

    setting: str
    options: Mapping[str, Any]
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    source: str = ""
    dataset: str = ""
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha256", split_hash(self))

    def sizes(self) -> dict[str, int]:
        """Number of trials per part."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (sizes and hash, not the id lists)."""
        return {
            "setting": self.setting,
            "options": dict(self.options),
            "source": self.source,
            "dataset": self.dataset,
            "sizes": self.sizes(),
            "sha256": self.sha256,
        }


def split_hash(split: Split) -> str:
    """sha256 of the dataset name, source, setting, options and sorted trial ids of each part (hex)."""
    payload = {
        "dataset": split.dataset,
        "source": split.source,
        "setting": split.setting,
        "options": {k: split.options[k] for k in sorted(split.options)},
        "train": sorted(split.train),
        "val": sorted(split.val),
        "test": sorted(split.test),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _stable_order(keys: Sequence[str], seed: int) -> list[str]:
    return sorted(keys, key=lambda k: hashlib.sha256(f"{seed}:{k}".encode()).hexdigest())


def assign_recordings(
    counts: Mapping[str, int], fractions: Mapping[str, float], seed: int = 0
) -> dict[str, list[str]]:
    """Assign whole recordings to split parts so each part gets close to its trial fraction.

    Recordings are visited in an order fixed by ``sha256(seed:recording)``; each goes to the part
    whose trial count is furthest below its target. The first recordings seed ``test`` and ``val``
    before ``train`` so small subjects still get a test recording.

    Parameters
    ----------
    counts : mapping of str to int
        Number of trials per recording id.
    fractions : mapping of str to float
        Target fraction per part name (summing to 1).
    seed : int
        Split seed.

    Returns
    -------
    dict of str to list of str
        Recording ids per part (every part key present, possibly empty).
    """
    total = sum(counts.values())
    parts: dict[str, list[str]] = {p: [] for p in fractions}
    got = dict.fromkeys(fractions, 0)
    for rec in _stable_order(list(counts), seed):
        deficit = {p: fractions[p] * total - got[p] for p in fractions}
        # smallest parts first while still empty, then the largest deficit
        empty = [p for p in ("test", "train", "val") if p in parts and not parts[p] and fractions[p] > 0]
        part = empty[0] if empty else max(deficit, key=lambda p: (deficit[p], fractions[p]))
        parts[part].append(rec)
        got[part] += counts[rec]
    return parts


def _val_from_train_tail(dataset: EEGDataset, train_ids: list[str], fraction: float) -> tuple[list, list]:
    """Hold out the last ``fraction`` of each training recording's trials as validation."""
    t = dataset.trials.set_index("trial_id").loc[train_ids]
    train, val = [], []
    for _, grp in t.groupby("recording", sort=True):
        ids = list(grp.index)
        n_val = int(round(len(ids) * fraction))
        train += ids[: len(ids) - n_val]
        val += ids[len(ids) - n_val :]
    return train, val


def _split_by_recordings(dataset: EEGDataset, rows: np.ndarray, seed: int) -> dict[str, list[str]]:
    trials = dataset.trials[rows]
    counts = trials.groupby("recording").size().to_dict()
    if len(counts) < 2:
        raise ConfigError(
            f"only {len(counts)} recording(s) available; a recording-level split needs at least 2"
        )
    # below 5 recordings a recording-level val part would starve train: val is then a tail hold-out
    fractions = dict(SPLIT_FRACTIONS) if len(counts) >= 5 else {"train": 0.8, "test": 0.2}
    parts = assign_recordings(counts, fractions, seed)
    ids = {p: list(trials[trials["recording"].isin(parts.get(p, []))]["trial_id"]) for p in SPLIT_FRACTIONS}
    if not ids["val"]:
        ids["train"], ids["val"] = _val_from_train_tail(dataset, ids["train"], SPLIT_FRACTIONS["val"])
    return ids


def _check_subject(dataset: EEGDataset, subject: int | None, setting: str) -> int:
    if subject is None:
        raise ConfigError(f"setting {setting!r} needs --subject N")
    subjects = sorted(set(int(s) for s in dataset.subjects))
    try:  # "3" (from a CLI/config string) is fine; 3.5, True or "abc" are not
        if isinstance(subject, bool) or float(subject) != int(float(subject)):
            raise ValueError
        subject = int(float(subject))
    except (TypeError, ValueError):
        raise ConfigError(f"--subject {subject!r}: not an integer subject id (subjects: {subjects})") from None
    if subject not in subjects:
        raise ConfigError(f"--subject {subject}: not in dataset {dataset.info.name!r} (subjects: {subjects})")
    return int(subject)


def _make(dataset: EEGDataset, setting: str, options: dict, ids: Mapping[str, list[str]], seed: int) -> Split:
    order = {t: i for i, t in enumerate(dataset.trials["trial_id"])}
    sort = lambda xs: tuple(sorted(xs, key=order.__getitem__))  # noqa: E731 - dataset order
    return Split(setting, options, sort(ids["train"]), sort(ids["val"]), sort(ids["test"]),
                 source=f"recording-level, split_seed={seed}", dataset=dataset.info.name)


def _official(dataset: EEGDataset, setting: str, options: dict, rows: Mapping[str, np.ndarray]) -> Split:
    """Split from the dataset's official parts, restricted per part by boolean ``rows`` masks."""
    t = dataset.trials
    ids = {p: list(t.loc[(t["split"] == p).to_numpy() & rows[p], "trial_id"]) for p in SPLIT_PARTS}
    return Split(setting, options, tuple(ids["train"]), tuple(ids["val"]), tuple(ids["test"]),
                 source=dataset.split_source, dataset=dataset.info.name)


def multi_subject(dataset: EEGDataset, *, subject: int | None = None, split_seed: int = 0) -> Split:
    """All subjects pooled; whole recordings go to train/val/test (70/10/20 % of trials).

    With an official split (``dataset.split_source``): its train/val/test parts unchanged
    (``split_seed`` is then unused).

    Raises
    ------
    ConfigError
        If ``subject`` is given (it has no meaning here) or there are fewer than 2 recordings.
    """
    if subject is not None:
        raise ConfigError("setting 'multi-subject' takes no --subject")
    if dataset.split_source:
        every = np.ones(len(dataset), dtype=bool)
        return _official(dataset, "multi-subject", {}, dict.fromkeys(SPLIT_PARTS, every))
    ids = _split_by_recordings(dataset, np.ones(len(dataset), dtype=bool), split_seed)
    return _make(dataset, "multi-subject", {}, ids, split_seed)


def single_subject(dataset: EEGDataset, *, subject: int | None = None, split_seed: int = 0) -> Split:
    """One subject's recordings only, split at the recording level.

    With an official split: each official part intersected with ``subject``.

    Raises
    ------
    ConfigError
        If ``subject`` is missing/unknown or that subject has fewer than 2 recordings.
    """
    subject = _check_subject(dataset, subject, "single-subject")
    if dataset.split_source:
        mine = dataset.subjects == subject
        return _official(dataset, "single-subject", {"subject": subject}, dict.fromkeys(SPLIT_PARTS, mine))
    try:
        ids = _split_by_recordings(dataset, dataset.subjects == subject, split_seed)
    except ConfigError as exc:
        raise ConfigError(f"single-subject --subject {subject}: {exc}") from None
    return _make(dataset, "single-subject", {"subject": subject}, ids, split_seed)


def cross_subject(dataset: EEGDataset, *, subject: int | None = None, split_seed: int = 0) -> Split:
    """Leave one subject out: test = every trial of ``subject``; train/val from the others.

    With an official split: test = ``subject``'s official-test trials, train/val = the other
    subjects' official train/val trials (subject- and image-disjoint).

    Raises
    ------
    ConfigError
        If ``subject`` is missing/unknown or only one subject exists.
    """
    subject = _check_subject(dataset, subject, "cross-subject")
    test_rows = dataset.subjects == subject
    if test_rows.all():
        raise ConfigError("cross-subject needs at least two subjects")
    if dataset.split_source:
        return _official(dataset, "cross-subject", {"subject": subject},
                         {"train": ~test_rows, "val": ~test_rows, "test": test_rows})
    rest = dataset.trials[~test_rows]
    counts = rest.groupby("recording").size().to_dict()
    parts = assign_recordings(counts, {"train": 0.875, "val": 0.125}, split_seed) if len(counts) >= 2 \
        else {"train": list(counts), "val": []}
    ids = {p: list(rest[rest["recording"].isin(parts[p])]["trial_id"]) for p in ("train", "val")}
    if not ids["val"]:
        ids["train"], ids["val"] = _val_from_train_tail(dataset, ids["train"], SPLIT_FRACTIONS["val"])
    ids["test"] = list(dataset.trials[test_rows]["trial_id"])
    return _make(dataset, "cross-subject", {"subject": subject}, ids, split_seed)
