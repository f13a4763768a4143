"""Zero-shot retrieval metrics: which test image (or class) an EEG embedding points to.

The protocol of the THINGS-EEG2 decoding papers (NICE: Song et al., "Decoding natural images from
EEG for object recognition", ICLR 2024, ``eeyhsong/NICE-EEG``; ATM: Li et al., "Visual decoding and
reconstruction via EEG embeddings with guided diffusion", NeurIPS 2024,
``dongyangli-del/EEG_Image_decode``): a method maps each test trial's EEG into the space of a
frozen image encoder (CLIP there; here whatever :meth:`eegbench.method.Method.embed_stimuli`
returns), every distinct test image is embedded once, and the EEG embedding is compared with the
image embeddings by cosine similarity (NICE and ATM take the dot product of L2-normalised
features; their logit scale does not change a ranking).

Three readings, each its own metric so that a table never mixes them:

N-way top-k, image level (:func:`image_retrieval`)
    Candidates: the ``N`` distinct test images (200 on THINGS-EEG2, one per held-out concept).
    A trial is correct when its own image is among the ``k`` most similar. NICE's and ATM's
    "200-way top-1 / top-5".
N-way top-k, class level with other images (:func:`class_retrieval`)
    Candidates: one per test class, the mean of the normalised embeddings of that class's test
    images, **leaving out the trial's own image** for its own class. A trial is correct when its
    class is among the ``k`` best. This asks whether the EEG names the category rather than the
    picture; it needs at least two test images in a class (EEG-ImageNet; not THINGS-EEG2, whose
    test concepts have one image each, where the two readings of "200-way" coincide).
k-way (2-way, 4-way; :func:`kway_retrieval`)
    ATM's protocol: the trial's own image plus ``k - 1`` distractor images drawn at random from the
    test images of other classes; correct when the own image is the most similar. ATM draws once
    per trial; here ``n_draws`` seeded draws per trial are averaged (same expectation, less
    variance).

Ties: a trial whose own candidate ties with ``t`` others and is beaten by ``g`` gets the
probability that a uniformly random order of the tied candidates puts it in the top ``k``:
``clip(k - g, 0, t + 1) / (t + 1)``. A constant embedding therefore scores chance, never 1.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eegbench.files import atomic_path
from eegbench.errors import DataFormatError
from eegbench.metric import Metric
from eegbench.scoring import ScoringInputs

__all__ = ["RETRIEVAL_FILE", "RETRIEVAL_METRICS", "ClassRetrievalTop1", "ClassRetrievalTop5", "ImageRetrievalTop1",
           "ImageRetrievalTop5", "Retrieval2Way", "Retrieval4Way", "class_retrieval", "image_retrieval",
           "kway_retrieval", "read_retrieval_embeddings", "write_retrieval_embeddings"]

#: Registry keys of the retrieval metrics, in table order (a dataset's published protocol lists them).
RETRIEVAL_METRICS = ("retrieval_top1", "retrieval_top5", "retrieval_class_top1", "retrieval_class_top5",
                     "retrieval_2way", "retrieval_4way")


def _unit(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataFormatError(f"retrieval: {what} must be a non-empty (n, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataFormatError(f"retrieval: {what} contains NaN or infinite values")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _hit_probability(sims: np.ndarray, own: np.ndarray, k: int, valid: np.ndarray | None = None) -> np.ndarray:
    """P(own candidate in the top ``k``) per row, ties broken uniformly at random.

    ``sims`` (T, N); ``own`` (T,) column of the correct candidate; ``valid`` (T, N) bool marks the
    candidates that take part (default all).
    """
    rows = np.arange(len(sims))
    target = sims[rows, own][:, None]
    part = np.ones_like(sims, dtype=bool) if valid is None else valid
    greater = ((sims > target) & part).sum(axis=1)
    ties = ((sims == target) & part).sum(axis=1) - 1  # others that tie with the own candidate
    return np.clip(k - greater, 0, ties + 1) / (ties + 1)


def _check(eeg: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    e, c = _unit(eeg, "EEG embeddings"), _unit(candidates, "stimulus embeddings")
    if e.shape[1] != c.shape[1]:
        raise DataFormatError(f"retrieval: EEG embeddings have width {e.shape[1]} but stimulus embeddings "
                              f"{c.shape[1]}; Method.embed_eeg and embed_stimuli must map into one space")
    return e, c


def image_retrieval(eeg: np.ndarray, candidates: np.ndarray, own: np.ndarray, *, k: int) -> dict[str, Any]:
    """N-way top-k retrieval of each trial's own image among all candidate images.

    Parameters
    ----------
    eeg : numpy.ndarray, shape (T, D), float
        EEG embedding per test trial.
    candidates : numpy.ndarray, shape (N, D), float
        Embedding per distinct test image.
    own : numpy.ndarray, shape (T,), int
        Row of ``candidates`` that is each trial's own image.
    k : int
        Top-k.

    Returns
    -------
    dict
        ``value`` (mean of ``per_trial``), ``per_trial`` (probability of a hit per trial),
        ``chance`` (``min(k, N) / N``), ``n_way`` (N), ``k``.

    Raises
    ------
    DataFormatError
        For empty, non-finite or mismatched arrays, or an ``own`` index out of range.
    """
    e, c = _check(eeg, candidates)
    own = np.asarray(own, dtype=np.int64)
    if own.shape != (len(e),) or (own < 0).any() or (own >= len(c)).any():
        raise DataFormatError(f"retrieval: own-image index must be (T,) = ({len(e)},) in [0, {len(c)})")
    hit = _hit_probability(e @ c.T, own, k)
    n = len(c)
    return {"value": float(hit.mean()), "per_trial": hit.tolist(), "chance": min(k, n) / n, "n_way": n, "k": k}


def class_retrieval(eeg: np.ndarray, candidates: np.ndarray, own: np.ndarray, candidate_classes: np.ndarray,
                    *, k: int) -> dict[str, Any]:
    """N-way top-k retrieval of each trial's class from the class's *other* test images.

    Parameters
    ----------
    eeg : numpy.ndarray, shape (T, D), float
    candidates : numpy.ndarray, shape (N, D), float
        Embedding per distinct test image.
    own : numpy.ndarray, shape (T,), int
        Row of ``candidates`` that is each trial's own image.
    candidate_classes : numpy.ndarray, shape (N,), int
        Class of each candidate image.
    k : int

    Returns
    -------
    dict
        ``value``, ``per_trial`` (NaN-free: trials whose class has a single test image are left
        out), ``trial_index`` (rows of ``eeg`` that were scored), ``chance`` (``k / C``), ``n_way``
        (C, the number of test classes), ``k``, ``n_trials_scored``; or ``value`` None with a
        ``skipped`` reason when no class has two test images.
    """
    e, c = _check(eeg, candidates)
    own = np.asarray(own, dtype=np.int64)
    cls_of = np.asarray(candidate_classes, dtype=np.int64)
    classes, col = np.unique(cls_of, return_inverse=True)
    sums = np.zeros((len(classes), c.shape[1]))
    np.add.at(sums, col, c)
    counts = np.bincount(col, minlength=len(classes))
    own_col = col[own]
    scored = np.flatnonzero(counts[own_col] >= 2)
    if len(scored) == 0:
        return {"value": None, "skipped": "every test class has a single test image (e.g. THINGS-EEG2): the "
                                          "class can only be retrieved through the trial's own image"}
    sims = e[scored] @ _unit(sums, "class sums").T  # (T', C): classes as whole
    rest = sums[own_col[scored]] - c[own[scored]]  # own class without the trial's own image
    sims[np.arange(len(scored)), own_col[scored]] = np.einsum("td,td->t", e[scored], _unit(rest, "class rest"))
    hit = _hit_probability(sims, own_col[scored], k)
    n = len(classes)
    return {"value": float(hit.mean()), "per_trial": hit.tolist(), "trial_index": scored.tolist(),
            "chance": min(k, n) / n, "n_way": n, "k": k, "n_trials_scored": int(len(scored))}


def kway_retrieval(eeg: np.ndarray, candidates: np.ndarray, own: np.ndarray, candidate_classes: np.ndarray,
                   *, k: int, n_draws: int, seed: int) -> dict[str, Any]:
    """k-way top-1 retrieval: own image vs ``k - 1`` random images of other classes (ATM's protocol).

    Parameters
    ----------
    eeg, candidates, own, candidate_classes
        As :func:`class_retrieval`.
    k : int
        Candidates per draw (2 or 4 in the papers).
    n_draws : int
        Seeded distractor draws per trial (``numpy.random.default_rng([seed, k])``).
    seed : int

    Returns
    -------
    dict
        ``value``, ``per_trial`` (mean hit probability over the draws), ``chance`` (1/k), ``n_way``
        (k), ``n_draws``; or ``value`` None with ``skipped`` when some trial has fewer than
        ``k - 1`` images of other classes.
    """
    e, c = _check(eeg, candidates)
    own = np.asarray(own, dtype=np.int64)
    cls_of = np.asarray(candidate_classes, dtype=np.int64)
    sims = e @ c.T
    rng = np.random.default_rng([int(seed), int(k)])
    per_trial = np.empty(len(e))
    trial_classes = cls_of[own]
    for cls in np.unique(trial_classes):  # trials of one class share their pool of distractors
        rows = np.flatnonzero(trial_classes == cls)
        pool = np.flatnonzero(cls_of != cls)
        if len(pool) < k - 1:
            return {"value": None, "skipped": f"fewer than {k - 1} test images of other classes"}
        picks = _distinct_positions(rng, len(pool), (len(rows), n_draws), k - 1)  # (r, D, k-1) into pool
        distractor = sims[rows[:, None, None], pool[picks]]
        target = sims[rows, own[rows]][:, None, None]
        greater, ties = (distractor > target).sum(-1), (distractor == target).sum(-1)
        per_trial[rows] = (np.clip(1 - greater, 0, ties + 1) / (ties + 1)).mean(axis=1)
    return {"value": float(per_trial.mean()), "per_trial": per_trial.tolist(), "chance": 1.0 / k, "n_way": k,
            "n_draws": int(n_draws)}


def _distinct_positions(rng: np.random.Generator, n: int, shape: tuple[int, ...], m: int) -> np.ndarray:
    """``m`` distinct uniform positions in ``[0, n)`` per cell of ``shape`` (without replacement).

    The ``j``-th pick is uniform over the ``n - j`` positions not taken yet: a uniform integer in
    ``[0, n - j)`` stepped past the earlier picks in ascending order.
    """
    picks = np.empty((*shape, m), dtype=np.int64)
    for j in range(m):
        x = rng.integers(0, n - j, size=shape)
        for taken in np.moveaxis(np.sort(picks[..., :j], axis=-1), -1, 0):
            x += x >= taken
        picks[..., j] = x
    return picks


# ---------------------------------------------------------------------------------------- run files
#: File of the method's retrieval embeddings in a run folder (:meth:`eegbench.method.Method.embed_eeg`).
RETRIEVAL_FILE = "retrieval/embeddings.safetensors"


def write_retrieval_embeddings(path: Path, eeg: np.ndarray, stimuli: np.ndarray, *, trial_ids: Sequence[str],
                               stimulus_ids: Sequence[str], description: str = "") -> None:
    """Write a run's retrieval embeddings atomically (safetensors; ids in the metadata).

    Parameters
    ----------
    path : Path
        Target file (its folder is created).
    eeg : numpy.ndarray, shape (T, D), float32
        EEG embedding per test trial, rows in ``trial_ids`` order.
    stimuli : numpy.ndarray, shape (N, D), float32
        Embedding per distinct test image, rows in ``stimulus_ids`` order.
    trial_ids, stimulus_ids : sequence of str
    description : str
        What the embedding is (:attr:`eegbench.method.Method.embedding_description`).
    """
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file({"eeg": np.ascontiguousarray(eeg, dtype=np.float32),
                   "stimuli": np.ascontiguousarray(stimuli, dtype=np.float32)}, str(tmp),
                  metadata={"stimulus_ids": json.dumps(list(map(str, stimulus_ids))),
                            "trial_ids": json.dumps(list(map(str, trial_ids))), "description": description})


def read_retrieval_embeddings(path: Path, trial_ids: Sequence[str]) -> dict[str, Any]:
    """Read a run's :data:`RETRIEVAL_FILE`, with the EEG rows in the order of ``trial_ids``.

    Raises
    ------
    DataFormatError
        If the file is unreadable or lacks a trial of ``trial_ids``.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            eeg, stimuli = fh.get_tensor("eeg"), fh.get_tensor("stimuli")
        ids = json.loads(meta["stimulus_ids"])
        stored = json.loads(meta["trial_ids"])
    except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as exc:
        raise DataFormatError(f"{path}: unreadable retrieval embeddings ({exc})") from None
    pos = {t: i for i, t in enumerate(stored)}
    missing = [t for t in trial_ids if t not in pos]
    if missing:
        raise DataFormatError(f"{path}: no EEG embedding of trial {missing[0]!r}")
    return {"eeg": eeg[[pos[t] for t in trial_ids]], "stimuli": stimuli, "stimulus_ids": ids}


# ---------------------------------------------------------------------------------------- metric plugins
def _candidates(inputs: ScoringInputs) -> tuple[np.ndarray, np.ndarray]:
    """Row of each trial's own image among the stimulus embeddings, and each candidate's class."""
    def make():
        pos = {iid: j for j, iid in enumerate(inputs.stimulus_ids)}
        missing = [i for i in inputs.image_ids if i not in pos]
        if missing:
            raise DataFormatError(f"retrieval: test image {missing[0]!r} has no stimulus embedding")
        own = np.array([pos[i] for i in inputs.image_ids], dtype=np.int64)
        classes = np.full(len(inputs.stimulus_ids), -1, dtype=np.int64)
        classes[own] = np.asarray(inputs.labels, dtype=np.int64)
        return own, classes
    return inputs.memo("retrieval_candidates", make)


class _Retrieval(Metric):
    """Base of the retrieval metrics: per-trial hit probabilities, bootstrap interval over trials."""

    higher_is_better = True
    needs = ("eeg_embeddings", "labels")
    interval = "trials"
    #: ``"image"``, ``"class"`` or ``"kway"``; and k.
    reading = "image"
    k = 1

    def _n_way(self, inputs: ScoringInputs) -> int | None:
        """Candidates per trial: k, the distinct test images, or the test classes (from the test set
        alone, so a method without embeddings gets the same column title)."""
        if self.reading == "kway":
            return self.k
        if self.reading == "image":
            return len(set(inputs.image_ids)) or None
        return len(np.unique(np.asarray(inputs.labels))) if inputs.labels is not None else None

    def title(self, inputs: ScoringInputs) -> str:
        """``"200-way top-1 retrieval (image)"`` etc., with the number of candidates of this test set."""
        n = self._n_way(inputs)
        return self.label.replace("N-way", f"{n}-way") if n else self.label

    def compute(self, inputs: ScoringInputs) -> dict[str, Any]:
        from eegbench.metrics.protocol_metrics import trial_ids_sha256

        own, classes = _candidates(inputs)
        eeg, cand = inputs.eeg_embeddings, inputs.stimulus_embeddings
        if self.reading == "image":
            res = image_retrieval(eeg, cand, own, k=self.k)
        elif self.reading == "class":
            res = class_retrieval(eeg, cand, own, classes, k=self.k)
        else:
            res = kway_retrieval(eeg, cand, own, classes, k=self.k, n_draws=int(inputs.protocol.n_way_trials),
                                 seed=int(inputs.protocol.seed))
        if res.get("value") is None:
            return res
        ids = list(inputs.trial_ids)
        if "trial_index" in res:
            ids = [ids[i] for i in res.pop("trial_index")]
        return {**res, "reading": self.reading, "similarity": "cosine", "n_trials": len(ids),
                "trial_ids_sha256": trial_ids_sha256(ids), **({"trial_ids": ids} if len(ids) != len(
                    inputs.trial_ids) else {})}


class ImageRetrievalTop1(_Retrieval):
    """N-way top-1 retrieval of the trial's own test image from its EEG embedding (NICE/ATM "200-way")."""

    key = "retrieval_top1"
    label = "N-way top-1 retrieval (image)"


class ImageRetrievalTop5(_Retrieval):
    """N-way top-5 retrieval of the trial's own test image from its EEG embedding."""

    key = "retrieval_top5"
    label = "N-way top-5 retrieval (image)"
    k = 5


class ClassRetrievalTop1(_Retrieval):
    """Top-1 retrieval of the trial's class among the test classes, each represented by its other test images."""

    key = "retrieval_class_top1"
    label = "N-way top-1 retrieval (class, other images)"
    reading = "class"


class ClassRetrievalTop5(_Retrieval):
    """Top-5 retrieval of the trial's class among the test classes, each represented by its other test images."""

    key = "retrieval_class_top5"
    label = "N-way top-5 retrieval (class, other images)"
    reading = "class"
    k = 5


class Retrieval2Way(_Retrieval):
    """2-way retrieval: own image vs one random test image of another class (ATM), 50 seeded draws per trial."""

    key = "retrieval_2way"
    label = "2-way retrieval (image)"
    reading = "kway"
    k = 2


class Retrieval4Way(_Retrieval):
    """4-way retrieval: own image vs three random test images of other classes (ATM), 50 seeded draws per trial."""

    key = "retrieval_4way"
    label = "4-way retrieval (image)"
    reading = "kway"
    k = 4
