"""Probe-classifier accuracy of generated images, for datasets whose classes are not ImageNet classes.

The n-way top-k accuracy of the EEG-to-image papers (``research/methods.md`` §2.2) scores a
generated image with an ImageNet classifier against the ImageNet class that classifier assigns
to the ground-truth image. For datasets like ``eegnb-n170`` (faces vs houses) or ``eegnb-p300``
(cats vs dogs) the classes are the dataset's own, so eegbench fits a *linear probe* instead:

1. frozen image features of the **training** stimuli (the caller's ``feature_fn``, e.g. the
   profile's image embedder) are standardised (``sklearn.preprocessing.StandardScaler``) and a
   multinomial logistic regression (``sklearn.linear_model.LogisticRegression``, L2, ``C=1``,
   lbfgs, fixed ``random_state``) is fitted on them with the dataset labels;
2. the probe predicts a class for each generated image; accuracy is the fraction of generated
   images whose prediction equals the label of the trial they were generated from.

This is the standard linear-evaluation protocol of representation learning (e.g. Kornblith et al.,
CVPR 2019, "Do Better ImageNet Models Transfer Better?"), applied to generated images. Test
stimuli never enter the probe's fit, so an image-disjoint split stays image-disjoint.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import torch

from eegbench.errors import ConfigError, DataFormatError

__all__ = ["extract_features", "fit_probe", "probe_accuracy", "probe_accuracy_images"]


def _features(x, name: str) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataFormatError(f"{name} must be a non-empty 2-D array (N, D), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise DataFormatError(f"{name} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise DataFormatError(f"{name} contains NaN or infinite values")
    return x


def _labels(y, n: int, n_classes: int, name: str) -> np.ndarray:
    if torch.is_tensor(y):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.shape != (n,):
        raise DataFormatError(f"{name} must have shape ({n},), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise DataFormatError(f"{name} must lie in [0, {n_classes}), got values in [{y.min()}, {y.max()}]")
    return y.astype(np.int64, copy=False)


def fit_probe(train_features, train_labels, *, n_classes: int, seed: int = 0, max_iter: int = 2000):
    """Fit the standardised logistic-regression probe.

    Parameters
    ----------
    train_features : numpy.ndarray or torch.Tensor, shape (N, D), float
        Frozen image features of the training stimuli.
    train_labels : numpy.ndarray or torch.Tensor, shape (N,), int
        Class of each training stimulus, in ``[0, n_classes)``.
    n_classes : int
        Number of classes of the dataset (>= 2).
    seed : int
        ``random_state`` of the logistic regression.
    max_iter : int
        lbfgs iteration limit.

    Returns
    -------
    sklearn.pipeline.Pipeline
        ``StandardScaler`` → ``LogisticRegression``, fitted.

    Raises
    ------
    ConfigError
        If ``n_classes < 2``.
    DataFormatError
        For badly shaped, non-finite or out-of-range inputs, or fewer than two distinct classes
        among the training labels.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if int(n_classes) < 2:
        raise ConfigError(f"n_classes={n_classes}: a probe needs at least 2 classes")
    x = _features(train_features, "train_features")
    y = _labels(train_labels, x.shape[0], n_classes, "train_labels")
    if np.unique(y).size < 2:
        raise DataFormatError(f"train_labels hold a single class ({y[0]}); the probe needs at least 2")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, random_state=seed))
    probe.fit(x, y)
    return probe


def probe_accuracy(
    train_features,
    train_labels,
    gen_features,
    gen_labels,
    *,
    n_classes: int,
    seed: int = 0,
    gen_trial_ids=None,
    reference_features=None,
    reference_labels=None,
) -> dict:
    """Class accuracy of generated images under a probe fitted on training-stimulus features.

    Parameters
    ----------
    train_features : array-like, shape (N, D), float
        Frozen image features of the training stimuli.
    train_labels : array-like, shape (N,), int
        Their classes, in ``[0, n_classes)``.
    gen_features : array-like, shape (M, D), float
        Features of the generated images (same extractor).
    gen_labels : array-like, shape (M,), int
        Label of the trial each generated image was generated from.
    n_classes : int
        Number of classes of the dataset.
    seed : int
        ``random_state`` of the logistic regression.
    gen_trial_ids : array-like, shape (M,), optional
        Trial of each generated image (several samples per trial share an id). When given,
        ``accuracy_std`` is the sample standard deviation (``ddof=1``) over trials of the
        per-trial mean accuracy; otherwise it is the binomial standard error
        ``sqrt(a (1 - a) / M)`` of the overall accuracy ``a``.
    reference_features : array-like, shape (K, D), optional
        Features of the ground-truth images of the test trials, to report the probe's accuracy on
        them (``reference_accuracy``: a ceiling for generated images).
    reference_labels : array-like, shape (K,), optional
        Their labels; required with ``reference_features``.

    Returns
    -------
    dict
        ``accuracy`` (float, higher is better), ``accuracy_std`` (float), ``accuracy_std_kind``
        (``"std_over_trials"`` or ``"binomial_se"``), ``chance`` (``1 / n_classes``),
        ``majority_chance`` (share of the most frequent class among ``gen_labels``: the accuracy
        of always predicting that class), ``n`` (M), ``n_trials`` (int or None),
        ``probe_train_accuracy`` (accuracy on the training features), ``reference_accuracy``
        (float, or None when no reference features are given), ``per_trial_correct`` and
        ``per_trial_total`` (lists of int, one entry per trial in order of first appearance in
        ``gen_trial_ids``, or per image without them: correctly classified samples and samples, the
        unit a bootstrap over test trials resamples), ``balanced_accuracy`` (mean over the classes
        present in ``gen_labels`` of the share of their images classified correctly: a method whose
        images all look like one class scores chance here) and ``predicted_distribution`` (list of
        float, length ``n_classes``: share of generated images the probe assigns to each class).

    Raises
    ------
    ConfigError
        If ``n_classes < 2``, or only one of ``reference_features``/``reference_labels`` is given.
    DataFormatError
        For badly shaped, non-finite or out-of-range inputs, feature dimensions that differ, or a
        single training class.
    """
    if int(n_classes) < 2:
        raise ConfigError(f"n_classes={n_classes}: a probe needs at least 2 classes")
    if (reference_features is None) != (reference_labels is None):
        raise ConfigError("reference_features and reference_labels must be given together")
    x_train = _features(train_features, "train_features")
    y_train = _labels(train_labels, x_train.shape[0], n_classes, "train_labels")
    x_gen = _features(gen_features, "gen_features")
    y_gen = _labels(gen_labels, x_gen.shape[0], n_classes, "gen_labels")
    if x_gen.shape[1] != x_train.shape[1]:
        raise DataFormatError(
            f"gen_features have {x_gen.shape[1]} dimensions but train_features have {x_train.shape[1]}"
        )
    from sklearn.metrics import balanced_accuracy_score

    probe = fit_probe(x_train, y_train, n_classes=n_classes, seed=seed)
    predicted = probe.predict(x_gen).astype(np.int64)
    correct = (predicted == y_gen).astype(np.float64)
    accuracy = float(correct.mean())
    m = correct.size

    n_trials = None
    per_trial_correct = [int(v) for v in correct]
    per_trial_total = [1] * m
    if gen_trial_ids is not None:
        trial_ids = np.asarray(gen_trial_ids.detach().cpu() if torch.is_tensor(gen_trial_ids) else gen_trial_ids)
        if trial_ids.shape != (m,):
            raise DataFormatError(f"gen_trial_ids must have shape ({m},), got {trial_ids.shape}")
        _, first, inverse = np.unique(trial_ids, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")  # trials in order of first appearance
        counts = np.bincount(inverse)
        hits = np.bincount(inverse, weights=correct)
        per_trial = hits / counts
        per_trial_correct = [int(v) for v in hits[order]]
        per_trial_total = [int(v) for v in counts[order]]
        n_trials = int(per_trial.size)
        accuracy_std = float(per_trial.std(ddof=1)) if n_trials > 1 else 0.0
        std_kind = "std_over_trials"
    else:
        accuracy_std = float(np.sqrt(accuracy * (1.0 - accuracy) / m))
        std_kind = "binomial_se"

    with warnings.catch_warnings():  # predictions of classes absent from gen_labels: recall over present ones
        warnings.simplefilter("ignore", UserWarning)
        balanced = float(balanced_accuracy_score(y_gen, predicted))

    reference_accuracy = None
    if reference_features is not None:
        x_ref = _features(reference_features, "reference_features")
        y_ref = _labels(reference_labels, x_ref.shape[0], n_classes, "reference_labels")
        if x_ref.shape[1] != x_train.shape[1]:
            raise DataFormatError(
                f"reference_features have {x_ref.shape[1]} dimensions but train_features have {x_train.shape[1]}"
            )
        reference_accuracy = float((probe.predict(x_ref) == y_ref).mean())

    return {
        "accuracy": accuracy,
        "accuracy_std": accuracy_std,
        "accuracy_std_kind": std_kind,
        "chance": 1.0 / int(n_classes),
        "majority_chance": float(np.bincount(y_gen, minlength=n_classes).max() / m),
        "n": int(m),
        "n_trials": n_trials,
        "probe_train_accuracy": float((probe.predict(x_train) == y_train).mean()),
        "reference_accuracy": reference_accuracy,
        "per_trial_correct": per_trial_correct,
        "per_trial_total": per_trial_total,
        "balanced_accuracy": balanced,
        "predicted_distribution": (np.bincount(predicted, minlength=int(n_classes)) / m).tolist(),
    }


def extract_features(
    feature_fn: Callable[[torch.Tensor], torch.Tensor], images, *, batch_size: int = 64
) -> np.ndarray:
    """Run ``feature_fn`` over uint8 images in batches, without gradients.

    Parameters
    ----------
    feature_fn : callable
        Maps a uint8 tensor ``(B, 3, H, W)`` (RGB, 0–255) to float features ``(B, D)``; it does
        its own resizing and normalisation, and moves the batch to its device.
    images : torch.Tensor or numpy.ndarray, shape (N, 3, H, W), uint8
        Images.
    batch_size : int
        Images per call of ``feature_fn``.

    Returns
    -------
    numpy.ndarray, shape (N, D), float32

    Raises
    ------
    ConfigError
        If ``batch_size < 1``.
    DataFormatError
        If ``images`` is not uint8 ``(N, 3, H, W)`` with N >= 1, or ``feature_fn`` returns
        something other than a floating tensor of shape ``(B, D)``.
    """
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not torch.is_tensor(images) or images.dtype != torch.uint8:
        raise DataFormatError(
            f"images must be uint8 (N, 3, H, W), got dtype {getattr(images, 'dtype', type(images).__name__)}"
        )
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise DataFormatError(f"images must have shape (N, 3, H, W) with N >= 1, got {tuple(images.shape)}")
    out = []
    with torch.no_grad():
        for start in range(0, images.shape[0], int(batch_size)):
            batch = images[start : start + int(batch_size)]
            feats = feature_fn(batch)
            if (
                not torch.is_tensor(feats)
                or not feats.is_floating_point()
                or feats.dim() != 2
                or feats.shape[0] != batch.shape[0]
            ):
                raise DataFormatError(
                    f"feature_fn must return float features of shape ({batch.shape[0]}, D), got "
                    f"{tuple(feats.shape) if torch.is_tensor(feats) else type(feats).__name__}"
                )
            out.append(feats.detach().float().cpu().numpy())
    return np.concatenate(out, axis=0)


def probe_accuracy_images(
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    train_images,
    train_labels,
    gen_images,
    gen_labels,
    n_classes: int,
    seed: int = 0,
    batch_size: int = 64,
    *,
    gen_trial_ids=None,
    reference_images=None,
    reference_labels=None,
) -> dict:
    """:func:`probe_accuracy` on images: extract features with ``feature_fn``, then fit and score.

    Parameters
    ----------
    feature_fn : callable
        uint8 ``(B, 3, H, W)`` → float ``(B, D)`` (see :func:`extract_features`).
    train_images : torch.Tensor or numpy.ndarray, shape (N, 3, H, W), uint8
        Training stimuli.
    train_labels : array-like, shape (N,), int
        Their classes.
    gen_images : torch.Tensor or numpy.ndarray, shape (M, 3, H', W'), uint8
        Generated images (their size may differ from the stimuli's; ``feature_fn`` must cope).
    gen_labels : array-like, shape (M,), int
        Label of each generated image's trial.
    n_classes : int
        Number of classes.
    seed : int
        ``random_state`` of the probe.
    batch_size : int
        Images per ``feature_fn`` call.
    gen_trial_ids : array-like, shape (M,), optional
        Trial of each generated image (see :func:`probe_accuracy`).
    reference_images : torch.Tensor or numpy.ndarray, shape (K, 3, H, W), uint8, optional
        Ground-truth images of the test trials (for ``reference_accuracy``).
    reference_labels : array-like, shape (K,), optional
        Their labels.

    Returns
    -------
    dict
        As :func:`probe_accuracy`.

    Raises
    ------
    ConfigError, DataFormatError
        As :func:`extract_features` and :func:`probe_accuracy`.
    """
    train_features = extract_features(feature_fn, train_images, batch_size=batch_size)
    gen_features = extract_features(feature_fn, gen_images, batch_size=batch_size)
    reference_features = None
    if reference_images is not None:
        reference_features = extract_features(feature_fn, reference_images, batch_size=batch_size)
    return probe_accuracy(
        train_features,
        train_labels,
        gen_features,
        gen_labels,
        n_classes=n_classes,
        seed=seed,
        gen_trial_ids=gen_trial_ids,
        reference_features=reference_features,
        reference_labels=reference_labels,
    )
