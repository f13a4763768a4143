"""Settings and splits.

A *setting* is a registered callable ``(dataset, **options) -> Split``. Built-in settings
(``multi-subject``, ``single-subject``, ``cross-subject``) split at the **recording** level, so no
recording is shared between train and test, and the assignment depends only on the recording ids
and a fixed ``split_seed`` (never on the run seed), so every method and seed sees the same split.

Recording-level rule (datasets without an official split):

1. **Test.** ``multi-subject`` and ``single-subject`` pick the test recordings with
   :func:`assign_recordings` over all (or the subject's) recordings with the 70/10/20 % targets of
   :data:`SPLIT_FRACTIONS` (80/20 % train/test below 5 recordings), exactly as before validation
   became per-subject, so the test trials, and the hash of their ids, are unchanged by that rule;
   the train/val parts of this joint assignment are discarded. ``cross-subject`` tests on every
   trial of the held-out subject.
2. **Validation, per training subject.** The remaining (non-test) recordings are split into
   train/val subject by subject, so every subject with training trials also has validation
   trials (a joint assignment left some subjects out of val: on eegnb-n170 val held subjects 2
   and 3 only). For a subject with ``n`` non-test recordings, ``m = floor(n * 0.125)``
   (:data:`VAL_FRACTION_OF_NON_TEST`; rounded down, so whole recordings never take more than
   12.5 % of a subject's recordings):

   - if ``m >= 1`` (``n >= 8``): the first ``m`` recordings in the order
     ``sha256(split_seed:recording)`` go **whole** to val, the others to train;
   - otherwise (``n <= 7``): a **tail hold-out** — the last ``int(k * 0.125 + 0.5)`` trials (in
     dataset, i.e. recording, order) of each of the subject's ``k``-trial non-test recordings go
     to val, at least 1 and at most ``k - 1`` when ``k >= 2``; a 1-trial recording stays in
     train. If that yields no val trial (every recording has one trial) and ``n >= 2``, the first
     recording in the seeded order goes whole to val. A subject with a single non-test trial has
     no val trial.

   A val trial therefore never comes from a test recording; train and val share a recording only
   through the tail hold-out, where val is the end of the recording.

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
import pandas as pd

from eegbench.data import SPLIT_PARTS, EEGDataset
from eegbench.errors import ConfigError

#: Target fraction of trials per part for recording-level splits (the joint assignment that
#: picks the test recordings).
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}

#: Share of each training subject's non-test recordings (or trials, for the tail hold-out) that
#: goes to validation: val 10 % / (train 70 % + val 10 %) = 0.125, written exactly so that
#: ``int(n * 0.125 + 0.5)`` rounds half up without floating-point error.
VAL_FRACTION_OF_NON_TEST = 0.125


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


def _round_half_up(x: float) -> int:
    """``int(x + 0.5)`` for ``x >= 0``: 0.5 rounds to 1 (Python's ``round`` would give 0)."""
    return int(x + 0.5)


def _tail_size(n_trials: int) -> int:
    """Val trials held out at the end of an ``n_trials``-trial recording by the tail hold-out.

    ``int(n_trials * VAL_FRACTION_OF_NON_TEST + 0.5)``, clipped to ``[1, n_trials - 1]`` when
    ``n_trials >= 2`` (the recording keeps train and val trials) and 0 for a 1-trial recording.
    """
    if n_trials < 2:
        return 0
    return min(max(_round_half_up(n_trials * VAL_FRACTION_OF_NON_TEST), 1), n_trials - 1)


def _train_val_per_subject(trials: pd.DataFrame, seed: int) -> dict[str, list[str]]:
    """Split the non-test trials into train/val subject by subject (module docstring, step 2).

    Parameters
    ----------
    trials : pandas.DataFrame
        Rows of ``EEGDataset.trials`` (columns ``trial_id``, ``subject``, ``recording``) of the
        non-test recordings, in dataset order.
    seed : int
        Split seed of :func:`_stable_order`.

    Returns
    -------
    dict of str to list of str
        ``{"train": [...], "val": [...]}`` trial ids (dataset order within a recording).
    """
    train: list[str] = []
    val: list[str] = []
    for _, sub in trials.groupby("subject", sort=True):
        by_rec = {rec: list(grp["trial_id"]) for rec, grp in sub.groupby("recording", sort=False)}
        recs = _stable_order(list(by_rec), seed)
        n_whole = int(len(recs) * VAL_FRACTION_OF_NON_TEST)  # floor: at most 12.5 % of the recordings
        if 1 <= n_whole < len(recs):  # enough recordings: whole recordings to val
            val += [t for rec in recs[:n_whole] for t in by_rec[rec]]
            train += [t for rec in recs[n_whole:] for t in by_rec[rec]]
            continue
        sub_train, sub_val = [], []  # few recordings: the tail of each one
        for rec in recs:
            ids = by_rec[rec]
            k = len(ids) - _tail_size(len(ids))
            sub_train += ids[:k]
            sub_val += ids[k:]
        if not sub_val and len(recs) >= 2:  # only 1-trial recordings: one of them whole to val
            sub_val = list(by_rec[recs[0]])
            sub_train = [t for rec in recs[1:] for t in by_rec[rec]]
        train += sub_train
        val += sub_val
    return {"train": train, "val": val}


def _split_by_recordings(dataset: EEGDataset, rows: np.ndarray, seed: int) -> dict[str, list[str]]:
    """Recording-level train/val/test ids of ``dataset.trials[rows]`` (module docstring, steps 1-2)."""
    trials = dataset.trials[rows]
    counts = trials.groupby("recording").size().to_dict()
    if len(counts) < 2:
        raise ConfigError(
            f"only {len(counts)} recording(s) available; a recording-level split needs at least 2"
        )
    # test recordings from the joint assignment, as before per-subject validation (below 5
    # recordings there was no recording-level val part: 80/20 % train/test)
    fractions = dict(SPLIT_FRACTIONS) if len(counts) >= 5 else {"train": 0.8, "test": 0.2}
    is_test = trials["recording"].isin(assign_recordings(counts, fractions, seed)["test"]).to_numpy()
    ids = _train_val_per_subject(trials[~is_test], seed)
    ids["test"] = list(trials.loc[is_test, "trial_id"])
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
    """All subjects pooled, split at the recording level; val covers every training subject.

    Test: the whole recordings that :func:`assign_recordings` gives to ``test`` with the
    70/10/20 % targets of :data:`SPLIT_FRACTIONS` over all recordings (80/20 % below 5
    recordings). Train/val: the other recordings, split per subject — the first
    ``int(n * 0.125 + 0.5)`` of a subject's ``n`` non-test recordings (seeded order) whole to val
    when that is between 1 and ``n - 1``, else the last 12.5 % of each of its recordings' trials
    (the tail hold-out; module docstring, step 2).

    With an official split (``dataset.split_source``): its train/val/test parts unchanged
    (``split_seed`` is then unused).

    Parameters
    ----------
    dataset : EEGDataset
        Loaded dataset.
    subject : None
        Must be ``None``.
    split_seed : int
        Seed of the recording order (never the run seed).

    Returns
    -------
    Split
        Trial ids of each part, in dataset order.

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

    Test: the recordings :func:`assign_recordings` gives to ``test`` among the subject's
    recordings (70/10/20 % targets, 80/20 % below 5 recordings). Train/val: the subject's other
    recordings, the first ``int(n * 0.125 + 0.5)`` of ``n`` (seeded order) whole to val when that
    is between 1 and ``n - 1``, else the tail hold-out of 12.5 % of each recording's trials
    (module docstring, step 2).

    With an official split: each official part intersected with ``subject``.

    Parameters
    ----------
    dataset : EEGDataset
        Loaded dataset.
    subject : int
        Subject id (a numeric string is accepted).
    split_seed : int
        Seed of the recording order.

    Returns
    -------
    Split
        Trial ids of each part, in dataset order.

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

    Train/val: each other subject's recordings split per subject as in :func:`multi_subject`
    (none of theirs is a test recording): the first ``int(n * 0.125 + 0.5)`` of its ``n``
    recordings (seeded order) whole to val when that is between 1 and ``n - 1``, else the tail
    hold-out of 12.5 % of each recording's trials (module docstring, step 2).

    With an official split: test = ``subject``'s official-test trials, train/val = the other
    subjects' official train/val trials (subject- and image-disjoint).

    Parameters
    ----------
    dataset : EEGDataset
        Loaded dataset.
    subject : int
        Held-out subject id (a numeric string is accepted).
    split_seed : int
        Seed of the recording order.

    Returns
    -------
    Split
        Trial ids of each part, in dataset order.

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
    ids = _train_val_per_subject(dataset.trials[~test_rows], split_seed)
    ids["test"] = list(dataset.trials[test_rows]["trial_id"])
    return _make(dataset, "cross-subject", {"subject": subject}, ids, split_seed)
