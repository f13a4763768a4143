"""EEG decoding ceiling: how much class information the test EEG of a split holds.

A standard EEG classifier is fitted on the training split and scored on the test split of a
setting, with no image generation involved. Its balanced accuracy tells a reader what an
EEG-to-image method could at best pass on about the class: a method whose generated images are
classified no better than chance, on data whose EEG decodes well above chance, fails to use the EEG.

The classifier is shrinkage LDA on binned epochs, the usual ERP baseline (Blankertz et al. 2011,
"Single-trial analysis and classification of ERP components — a tutorial", NeuroImage 56):
each channel's epoch is averaged in ``n_bins`` consecutive time windows; the features
(``n_chans * n_bins``) are standardised with training statistics; LDA uses the Ledoit-Wolf
shrunk covariance (scikit-learn ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")``).

A second, Riemannian classifier runs where pyriemann is installed and the problem is small enough:
xDAWN-filtered covariances (Rivet et al. 2009; Barachant & Congedo 2014, the ERP covariances of
pyriemann's ``XdawnCovariances``) mapped to the tangent space (``TangentSpace``) and a logistic
regression, the standard ERP pipeline of pyriemann and MOABB. :func:`eeg_decoding` runs both and is
what each run records and each leaderboard shows above its tables.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from eegbench.errors import ConfigError, DataFormatError

__all__ = ["binned_features", "decoding_ceiling", "eeg_decoding", "xdawn_tangent_space"]

CLASSIFIER = "shrinkage-lda-binned"
XDAWN_CLASSIFIER = "xdawn-covariances-tangent-space-logreg"
#: xDAWN spatial filters per class.
XDAWN_FILTERS = 2
#: Largest covariance size (n_classes × filters + n_chans) the xDAWN pipeline is run at: above it
#: (cvpr40: 40 classes, 128 channels) the tangent space has tens of thousands of features.
XDAWN_MAX_DIM = 64


def binned_features(eeg: np.ndarray, n_bins: int) -> np.ndarray:
    """Mean of each channel in ``n_bins`` consecutive time windows.

    Parameters
    ----------
    eeg : numpy.ndarray, shape (n_trials, n_chans, n_times), float
        Epochs in any unit (V for the eeg-notebooks data).
    n_bins : int
        Windows per channel, ``1 <= n_bins <= n_times``; windows differ in length by at most one
        sample (``numpy.array_split``).

    Returns
    -------
    numpy.ndarray, shape (n_trials, n_chans * n_bins), float64
        Channel-major: the bins of channel 0, then channel 1, ...

    Raises
    ------
    DataFormatError
        If ``eeg`` is not 3-D.
    ConfigError
        If ``n_bins`` is out of range.
    """
    x = np.asarray(eeg)
    if x.ndim != 3:
        raise DataFormatError(f"EEG epochs must have shape (n_trials, n_chans, n_times), got {x.shape}")
    if not 1 <= int(n_bins) <= x.shape[2]:
        raise ConfigError(f"n_bins={n_bins} must lie in [1, n_times={x.shape[2]}]")
    bins = [w.mean(axis=2, dtype=np.float64) for w in np.array_split(x, int(n_bins), axis=2)]
    return np.stack(bins, axis=2).reshape(x.shape[0], -1)


def decoding_ceiling(
    train_eeg: np.ndarray,
    train_labels: np.ndarray,
    test_eeg: np.ndarray,
    test_labels: np.ndarray,
    *,
    n_classes: int,
    n_bins: int = 10,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Balanced test accuracy of shrinkage LDA on binned epochs, with a bootstrap interval.

    Parameters
    ----------
    train_eeg, test_eeg : numpy.ndarray, shape (n, n_chans, n_times), float
        Epochs of the training and test split (same unit).
    train_labels, test_labels : numpy.ndarray, shape (n,), int
        Classes in ``[0, n_classes)``.
    n_classes : int
        Number of classes of the dataset.
    n_bins : int
        Time windows per channel (see :func:`binned_features`).
    n_boot : int
        Bootstrap replicates over test trials for the interval.
    level : float
        Confidence level of the percentile interval.
    seed : int
        Seed of ``numpy.random.default_rng`` for the bootstrap.

    Returns
    -------
    dict
        ``classifier`` (``"shrinkage-lda-binned"``), ``balanced_accuracy`` (float; mean recall over
        the classes present in the test labels), ``ci_low``/``ci_high`` (percentile bootstrap over
        test trials), ``accuracy``, ``chance`` (``1 / n_classes``), ``majority_chance`` (share of the
        most frequent test class), ``predicted_distribution`` (share of test trials predicted as
        each class, list of length ``n_classes``), ``n_train``, ``n_test``, ``n_bins``,
        ``n_features``.

    Raises
    ------
    DataFormatError
        For mismatched shapes, non-finite EEG, labels out of range, or fewer than two training
        classes.
    ConfigError
        For a bad ``n_bins`` or ``n_classes < 2``.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    if int(n_classes) < 2:
        raise ConfigError(f"n_classes={n_classes}: decoding needs at least 2 classes")
    y_tr = np.asarray(train_labels).astype(np.int64)
    y_te = np.asarray(test_labels).astype(np.int64)
    x_tr, x_te = binned_features(train_eeg, n_bins), binned_features(test_eeg, n_bins)
    _check_split(x_tr, y_tr, x_te, y_te, n_classes)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std[std == 0] = 1.0
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    lda.fit((x_tr - mean) / std, y_tr)
    pred = lda.predict((x_te - mean) / std).astype(np.int64)
    return {"classifier": CLASSIFIER, **_scores(pred, y_te, n_classes, n_boot=n_boot, level=level, seed=seed),
            "n_train": int(y_tr.size), "n_bins": int(n_bins), "n_features": int(x_tr.shape[1])}


def _check_split(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray, n_classes: int) -> None:
    """Raise :class:`DataFormatError` unless train/test epochs and labels form a usable split.

    ``x_tr``/``x_te`` have one row per trial (any trailing shape, equal between the two); the labels
    are int64 arrays of the matching lengths with values in ``[0, n_classes)``, and the training
    labels hold at least two classes and every test class (a zero-shot split, whose test classes
    never occur in training, has no decoding ceiling).
    """
    if x_tr.shape[0] != y_tr.shape[0] or x_te.shape[0] != y_te.shape[0] or x_tr.shape[1:] != x_te.shape[1:]:
        raise DataFormatError(f"decoding: EEG {x_tr.shape}/{x_te.shape} and labels {y_tr.shape}/{y_te.shape} "
                              "do not match")
    if not (np.isfinite(x_tr).all() and np.isfinite(x_te).all()):
        raise DataFormatError("decoding: EEG contains NaN or infinite values")
    for y, name in ((y_tr, "train"), (y_te, "test")):
        if y.size == 0 or y.min() < 0 or y.max() >= n_classes:
            raise DataFormatError(f"decoding: {name} labels must be non-empty and lie in [0, {n_classes})")
    if np.unique(y_tr).size < 2:
        raise DataFormatError("decoding: the training split holds a single class")
    unseen = np.setdiff1d(np.unique(y_te), np.unique(y_tr))
    if unseen.size:
        raise DataFormatError(f"decoding: {unseen.size} test class(es) have no training trial (a zero-shot split): "
                              "a classifier of the training classes cannot decode them; see the retrieval metrics")


def _scores(pred: np.ndarray, y_te: np.ndarray, n_classes: int, *, n_boot: int, level: float,
            seed: int) -> dict[str, Any]:
    """Balanced accuracy with a percentile bootstrap interval over test trials, and its companions."""
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # a resample may lack a class: recall over the classes it holds
        warnings.simplefilter("ignore", UserWarning)
        value = float(balanced_accuracy_score(y_te, pred))
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, y_te.size, size=(int(n_boot), y_te.size))
        boots = np.array([balanced_accuracy_score(y_te[i], pred[i]) for i in idx])
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boots, [alpha, 1.0 - alpha])
    return {
        "balanced_accuracy": value,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "level": level,
        "accuracy": float(np.mean(pred == y_te)),
        "chance": 1.0 / int(n_classes),
        "majority_chance": float(np.bincount(y_te, minlength=n_classes).max() / y_te.size),
        "predicted_distribution": (np.bincount(pred, minlength=n_classes) / pred.size).tolist(),
        "n_test": int(y_te.size),
    }


def xdawn_tangent_space(
    train_eeg: np.ndarray,
    train_labels: np.ndarray,
    test_eeg: np.ndarray,
    test_labels: np.ndarray,
    *,
    n_classes: int,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Balanced test accuracy of xDAWN covariances + tangent space + logistic regression (pyriemann).

    Parameters
    ----------
    train_eeg, test_eeg : numpy.ndarray, shape (n, n_chans, n_times), float
        Epochs of the training and test split (same unit; scaled to unit overall standard deviation
        with the training statistics before the covariances, which are scale-equivariant).
    train_labels, test_labels : numpy.ndarray, shape (n,), int
    n_classes : int
    n_boot, level, seed
        As :func:`decoding_ceiling`.

    Returns
    -------
    dict
        The keys of :func:`decoding_ceiling` (``classifier`` is ``"xdawn-covariances-tangent-space-logreg"``,
        with ``n_filters``), or ``{"classifier": ..., "skipped": reason}`` when pyriemann is not
        installed or the covariances would exceed :data:`XDAWN_MAX_DIM`.

    Raises
    ------
    DataFormatError
        As :func:`decoding_ceiling`.
    """
    y_tr = np.asarray(train_labels).astype(np.int64)
    y_te = np.asarray(test_labels).astype(np.int64)
    x_tr = np.asarray(train_eeg, dtype=np.float64)
    x_te = np.asarray(test_eeg, dtype=np.float64)
    if x_tr.ndim != 3 or x_te.ndim != 3:
        raise DataFormatError(f"EEG epochs must have shape (n_trials, n_chans, n_times), got {x_tr.shape}/{x_te.shape}")
    n_chans = int(x_tr.shape[1])
    dim = int(n_classes) * XDAWN_FILTERS + n_chans
    if dim > XDAWN_MAX_DIM:
        return {"classifier": XDAWN_CLASSIFIER,
                "skipped": f"covariances of size {dim} ({n_classes} classes × {XDAWN_FILTERS} filters + {n_chans} "
                           f"channels) exceed {XDAWN_MAX_DIM}"}
    try:
        from pyriemann.estimation import XdawnCovariances
        from pyriemann.tangentspace import TangentSpace
    except ImportError:
        return {"classifier": XDAWN_CLASSIFIER, "skipped": "pyriemann is not installed"}
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    _check_split(x_tr, y_tr, x_te, y_te, n_classes)
    scale = float(x_tr.std()) or 1.0  # volts → unit scale: well-conditioned covariances
    pipe = make_pipeline(XdawnCovariances(nfilter=XDAWN_FILTERS, estimator="oas"), TangentSpace(metric="riemann"),
                         LogisticRegression(max_iter=1000))
    pipe.fit(x_tr / scale, y_tr)
    pred = pipe.predict(x_te / scale).astype(np.int64)
    return {"classifier": XDAWN_CLASSIFIER, **_scores(pred, y_te, n_classes, n_boot=n_boot, level=level, seed=seed),
            "n_train": int(y_tr.size), "n_filters": XDAWN_FILTERS}


def eeg_decoding(train_eeg, train_labels, test_eeg, test_labels, *, n_classes: int, n_bins: int = 10,
                 seed: int = 0) -> dict[str, Any]:
    """The EEG decoding ceiling of a split: both standard classifiers, fitted on train, scored on test.

    Parameters
    ----------
    train_eeg, test_eeg : numpy.ndarray, shape (n, n_chans, n_times), float
    train_labels, test_labels : numpy.ndarray, shape (n,), int
    n_classes, n_bins, seed
        As :func:`decoding_ceiling`.

    Returns
    -------
    dict
        ``{"lda": decoding_ceiling(...), "xdawn_ts": xdawn_tangent_space(...), "best": key of the higher
        balanced accuracy}``.
    """
    out = {
        "lda": decoding_ceiling(train_eeg, train_labels, test_eeg, test_labels, n_classes=n_classes, n_bins=n_bins,
                                seed=seed),
        "xdawn_ts": xdawn_tangent_space(train_eeg, train_labels, test_eeg, test_labels, n_classes=n_classes,
                                        seed=seed),
    }
    scored = {k: v["balanced_accuracy"] for k, v in out.items() if "balanced_accuracy" in v}
    out["best"] = max(scored, key=scored.get)
    return out


def ceiling_curve(name: str, key: str, values: list[str], *, options: dict[str, str] | None = None,
                  setting: str = "multi-subject", subject: int | None = None, n_bins: int = 10,
                  data_root=None, cache_dir=None, plugins=None, progress: bool = True) -> pd.DataFrame:
    """The EEG decoding ceiling of a dataset along one loader option (``eegbench data ceiling --sweep``).

    For each value of ``key`` (e.g. ``snr_db`` of ``eegnb-groundtruth``) the dataset is loaded with
    that option, split by ``setting``, and :func:`eeg_decoding` fitted on train and scored on test.

    Parameters
    ----------
    name : str
        Registered dataset name.
    key : str
        The loader option swept.
    values : list of str
        Its values, in the order given (e.g. ``["-inf", "-20", "0"]``).
    options : dict, optional
        Other loader options, the same at every point.
    setting, subject, n_bins
        As for ``eegbench data ceiling``.
    data_root, cache_dir, plugins
        As for :func:`eegbench.datasets.info.make_loader`.
    progress : bool
        Show a tqdm bar over the values.

    Returns
    -------
    pandas.DataFrame
        One row per value: ``value``, ``lda`` and ``xdawn_ts`` balanced accuracy with ``*_low`` /
        ``*_high`` (95 % bootstrap interval over test trials), ``chance``, ``n_train``, ``n_test``.

    Raises
    ------
    ConfigError, PluginError, DataNotFoundError
        For a bad option value, unknown names or missing files (from the loader).
    """
    from tqdm.auto import tqdm

    from eegbench.datasets.info import make_loader
    from eegbench.plugins import get_plugin_manager

    plugins = plugins or get_plugin_manager()
    rows = []
    for value in tqdm(values, desc=f"ceiling vs {key}", unit="value", disable=not progress):
        loader = make_loader(name, data_root, cache_dir, {**(options or {}), key: value}, plugins=plugins)
        dataset = loader.load()
        kwargs = {} if subject is None else {"subject": subject}
        split = plugins.settings.get(setting)(dataset, **kwargs)
        train, test = dataset.subset(split.train), dataset.subset(split.test)
        out = eeg_decoding(train.eeg, train.labels, test.eeg, test.labels, n_classes=dataset.info.n_classes,
                           n_bins=n_bins)
        row: dict[str, Any] = {"value": value}
        for clf in ("lda", "xdawn_ts"):
            d = out.get(clf) or {}
            row[clf] = d.get("balanced_accuracy", np.nan)
            row[f"{clf}_low"] = d.get("ci_low", np.nan)
            row[f"{clf}_high"] = d.get("ci_high", np.nan)
        row.update(chance=1.0 / dataset.info.n_classes, n_train=len(train), n_test=len(test))
        rows.append(row)
    return pd.DataFrame(rows)


def ceiling_curve_markdown(frame: pd.DataFrame, name: str, key: str, setting: str) -> str:
    """Markdown table of :func:`ceiling_curve` (balanced accuracy [95 % interval] per classifier)."""
    def cell(r, clf):
        v = r[clf]
        return "–" if pd.isna(v) else f"{v:.3f} [{r[clf + '_low']:.3f}, {r[clf + '_high']:.3f}]"

    table = pd.DataFrame({
        key: frame["value"].astype(str),
        "Shrinkage LDA (binned)": [cell(r, "lda") for _, r in frame.iterrows()],
        "xDAWN + tangent space": [cell(r, "xdawn_ts") for _, r in frame.iterrows()],
        "Chance": [f"{c:.3f}" for c in frame["chance"]],
        "Train / test trials": [f"{a} / {b}" for a, b in zip(frame["n_train"], frame["n_test"])],
    })
    return (f"# EEG decoding ceiling of {name} ({setting}) against `{key}`\n\n"
            "_Generated by `eegbench data ceiling --sweep`; balanced test accuracy with a 95 % bootstrap interval "
            "over test trials, classifiers fitted on the training split._\n\n"
            + table.to_markdown(index=False, tablefmt="github", disable_numparse=True) + "\n")
