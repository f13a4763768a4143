"""Image-level reconstruction metrics: 2-way identification, PixCorr and SSIM.

These are the low- and high-level image metrics of the fMRI/EEG reconstruction papers, which score
each generated image against the ground-truth image of *its own* trial (unlike FID/KID/IS, which
compare distributions):

2-way identification (:func:`two_way_identification`)
    Ozcelik & VanRullen, "Natural scene reconstruction from fMRI signals using generative latent
    diffusion" (Brain-Diffuser), Scientific Reports 13, 15666 (2023), after Lin et al. 2022 / Takagi
    & Nishimoto 2023; code as in MindEye (Scotti et al., "Reconstructing the Mind's Eye: fMRI-to-Image
    with Contrastive Learning and Diffusion Priors", NeurIPS 2023, ``src/utils.py``
    ``two_way_identification``). A generated image's features (of a frozen network: Inception-v3
    pool, AlexNet layers, CLIP, ...) are Pearson-correlated with the features of every ground-truth
    image; for each *other* ground truth it wins when it correlates more with its own. Its score is
    the fraction of wins (chance 0.5, perfect 1.0). The features are computed elsewhere
    (:func:`eegbench.metrics.features.network_features`).
PixCorr (:func:`pixcorr`)
    Pearson correlation of the flattened pixel vectors of a generated image and its ground truth
    (Brain-Diffuser; MindEye's ``PixCorr`` at 425 px for NSD). Here both image sets are already at
    the protocol's size.
SSIM (:func:`ssim`)
    Structural similarity (Wang et al., IEEE TIP 13(4), 2004) of the grayscale images, exactly
    MindEye's call: ``skimage.color.rgb2gray`` of ``[0, 1]`` float images, then
    ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0)``.

Every function takes several generated images (samples) per test trial and reports the mean over
trials of the mean over that trial's samples, with the per-trial means.

Differences from the MindEye code, both documented in results: in the 2-way identification a tie
(exactly equal correlations) counts 0.5 instead of 0 (so an uninformative image scores the chance
level), and trials that show the same stimulus as the trial being scored are not counted as
"other" trials (``reference_groups``; NSD's test set has unique images, EEG test sets repeat them).
A correlation with a constant vector (a flat image, all-equal features) is undefined; it is taken
as 0 here, where numpy would return NaN.
"""

from __future__ import annotations

import numpy as np
import torch

from eegbench.errors import DataFormatError

__all__ = ["pixcorr", "ssim", "two_way_identification"]

#: Rows of the (generated × reference) correlation matrix computed at once (bounds memory).
_CHUNK_ROWS = 1024
#: Side of skimage's 11-tap Gaussian SSIM window (sigma 1.5, truncate 3.5): the smallest image side.
_SSIM_MIN_SIDE = 11


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _standardise(x: np.ndarray) -> np.ndarray:
    """Rows centred and scaled to unit norm (float64), so that a dot product is a Pearson r.

    Constant rows (all values equal) become zero rows: their correlation with anything is 0.
    """
    x = x.astype(np.float64, copy=True)
    x -= x.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    constant = (np.ptp(x, axis=-1, keepdims=True) == 0) | (norm == 0)
    return np.where(constant, 0.0, x / np.where(constant, 1.0, norm))


def _group_codes(reference_groups, n_trials: int) -> np.ndarray:
    if reference_groups is None:
        return np.arange(n_trials)
    if isinstance(reference_groups, (str, bytes)):
        raise DataFormatError("reference_groups must be a sequence of one id per trial, not a string")
    groups = list(_numpy(reference_groups).tolist() if isinstance(reference_groups, np.ndarray)
                  or torch.is_tensor(reference_groups) else reference_groups)
    if len(groups) != n_trials:
        raise DataFormatError(f"reference_groups must hold one id per trial ({n_trials}), got {len(groups)}")
    codes: dict = {}
    try:
        return np.array([codes.setdefault(g, len(codes)) for g in groups], dtype=np.int64)
    except TypeError as exc:
        raise DataFormatError(f"reference_groups must hold hashable ids (image ids, digests): {exc}") from exc


def two_way_identification(generated_features, reference_features, *, reference_groups=None) -> dict:
    """2-way identification accuracy of generated images in a feature space (Brain-Diffuser, MindEye).

    For generated image ``s`` of trial ``t``, let ``r(t, j)`` be the Pearson correlation of its
    features with the reference (ground-truth) features of trial ``j``. Each trial ``j`` whose
    group differs from that of ``t`` is one comparison: won if ``r(t, t) > r(t, j)``, half won if
    equal. The image's score is its fraction of won comparisons; a trial's score the mean over its
    images; the value the mean over trials. Chance level is 0.5; a generated image equal to its
    ground truth scores 1 (against references not equal to it).

    Protocol of Ozcelik & VanRullen (Scientific Reports 2023, "Brain-Diffuser") as coded in MindEye
    (Scotti et al., NeurIPS 2023, ``two_way_identification``: ``np.corrcoef`` of real and generated
    features, wins ``r < diag(r)``, mean count over ``N - 1``), with two documented changes: ties
    count 0.5 (MindEye: 0), and trials of the same stimulus are excluded (MindEye: test images are
    unique).

    Parameters
    ----------
    generated_features : numpy.ndarray or torch.Tensor, shape (T, S, D), float
        Features of the S generated images of each of T test trials (any unit; flattened network
        activations).
    reference_features : numpy.ndarray or torch.Tensor, shape (T, D), float
        Features of the ground-truth image of each trial, from the same network.
    reference_groups : sequence of hashable, length T, optional
        Stimulus id of each trial (image id, SHA-256 of the reference image): trials with the same id
        as ``t`` are not counted as other trials of ``t``. Default: every trial its own stimulus.

    Returns
    -------
    dict
        ``value`` (float in [0, 1], higher is better), ``per_trial`` (list of float, length T: mean
        score of the trial's S images), ``n_trials`` (T), ``n_comparisons`` (int: generated images ×
        other trials, summed over trials).

    Raises
    ------
    DataFormatError
        If the arrays are not numeric of shapes (T, S, D) and (T, D) with T, S, D >= 1, contain NaN
        or infinite values, if ``reference_groups`` does not hold T hashable ids, or if there are
        fewer than 2 distinct groups (no trial has another to be compared with).
    """
    gen = _numpy(generated_features)
    ref = _numpy(reference_features)
    for name, a, nd in (("generated_features", gen, 3), ("reference_features", ref, 2)):
        if a.ndim != nd or 0 in a.shape:
            want = "(T, S, D)" if nd == 3 else "(T, D)"
            raise DataFormatError(f"2-way identification: {name} must have a non-empty shape {want}, got {a.shape}")
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise DataFormatError(f"2-way identification: {name} must be numeric, got dtype {a.dtype}")
        if not np.isfinite(a).all():
            raise DataFormatError(f"2-way identification: {name} contains NaN or infinite values")
    t, s, d = gen.shape
    if ref.shape != (t, d):
        raise DataFormatError(
            f"2-way identification: reference_features must have shape (T, D) = ({t}, {d}) to match "
            f"generated_features {gen.shape}, got {ref.shape}"
        )
    codes = _group_codes(reference_groups, t)
    if np.unique(codes).size < 2:
        raise DataFormatError(
            "2-way identification needs at least 2 distinct stimuli (reference_groups), got "
            f"{np.unique(codes).size} among {t} trials"
        )

    # Identical reference vectors share one column, so they give bitwise-equal correlations (ties).
    ref_unique, ref_col = np.unique(_standardise(ref), axis=0, return_inverse=True)
    ref_col = ref_col.reshape(-1)
    g = _standardise(gen.reshape(t * s, d))
    trial_of_row = np.repeat(np.arange(t), s)
    other = codes[None, :] != codes[:, None]  # (T, T): j counts for t
    n_other = other.sum(axis=1)  # >= 1 for every trial (>= 2 groups)
    scores = np.empty(t * s, dtype=np.float64)
    for start in range(0, t * s, _CHUNK_ROWS):
        rows = slice(start, min(start + _CHUNK_ROWS, t * s))
        r = (g[rows] @ ref_unique.T)[:, ref_col]  # (rows, T): r[i, j] = corr(generated i, reference j)
        tr = trial_of_row[rows]
        own = r[np.arange(r.shape[0]), tr][:, None]
        won = (own > r).astype(np.float64) + 0.5 * (own == r)
        scores[rows] = (won * other[tr]).sum(axis=1) / n_other[tr]
    per_trial = scores.reshape(t, s).mean(axis=1)
    return {
        "value": float(per_trial.mean()),
        "per_trial": [float(v) for v in per_trial],
        "n_trials": int(t),
        "n_comparisons": int(s * n_other.sum()),
    }


def _image_pairs(generated, reference, metric: str) -> tuple[np.ndarray, np.ndarray]:
    gen = _numpy(generated)
    ref = _numpy(reference)
    if gen.dtype != np.uint8 or ref.dtype != np.uint8:
        raise DataFormatError(f"{metric}: images must be uint8, got generated {gen.dtype}, reference {ref.dtype}")
    if gen.ndim != 5 or gen.shape[2] != 3 or 0 in gen.shape:
        raise DataFormatError(f"{metric}: generated images must have shape (T, S, 3, H, W), got {gen.shape}")
    if ref.ndim != 4 or ref.shape[1] != 3 or 0 in ref.shape:
        raise DataFormatError(f"{metric}: reference images must have shape (T, 3, H, W), got {ref.shape}")
    if gen.shape[0] != ref.shape[0]:
        raise DataFormatError(
            f"{metric}: {gen.shape[0]} trials of generated images but {ref.shape[0]} reference images"
        )
    if gen.shape[-2:] != ref.shape[-2:]:
        raise DataFormatError(
            f"{metric}: generated images are {gen.shape[-2]}x{gen.shape[-1]} px but reference images "
            f"{ref.shape[-2]}x{ref.shape[-1]} px; resize both to the protocol's image size first"
        )
    return gen, ref


def _result(per_trial: np.ndarray) -> dict:
    return {
        "value": float(per_trial.mean()),
        "per_trial": [float(v) for v in per_trial],
        "n_trials": int(per_trial.shape[0]),
    }


def pixcorr(generated, reference) -> dict:
    """Pixel correlation of each generated image with its ground truth (Brain-Diffuser, MindEye).

    Pearson correlation between the flattened ``3·H·W`` pixel vectors of a generated image and the
    reference image of its trial (Ozcelik & VanRullen, Scientific Reports 2023; Scotti et al.,
    NeurIPS 2023, ``PixCorr``; the papers first resize both to a common size, here both must
    already be at the protocol's size). Pearson's r is invariant to the pixel scale, so uint8 and
    ``[0, 1]`` floats give the same value. A flat (constant) image correlates 0 with anything.

    Parameters
    ----------
    generated : numpy.ndarray or torch.Tensor, shape (T, S, 3, H, W), uint8
        S generated RGB images of each of T trials.
    reference : numpy.ndarray or torch.Tensor, shape (T, 3, H, W), uint8
        Ground-truth RGB image of each trial.

    Returns
    -------
    dict
        ``value`` (float in [-1, 1]: mean over trials of the mean r over the trial's images; higher
        is better), ``per_trial`` (list of float, length T), ``n_trials`` (T).

    Raises
    ------
    DataFormatError
        If the images are not uint8 of shapes (T, S, 3, H, W) and (T, 3, H, W) with the same T, H
        and W.
    """
    gen, ref = _image_pairs(generated, reference, "PixCorr")
    t, s = gen.shape[:2]
    per_trial = np.empty(t, dtype=np.float64)
    for i in range(t):  # one trial at a time: S × 3HW float64 is small, T × S × 3HW may not be
        g = _standardise(gen[i].reshape(s, -1))
        r = _standardise(ref[i].reshape(1, -1))
        per_trial[i] = float(np.clip(g @ r[0], -1.0, 1.0).mean())  # |r| <= 1 despite rounding
    return _result(per_trial)


def ssim(generated, reference) -> dict:
    """Grayscale SSIM of each generated image with its ground truth (MindEye's protocol).

    Both images are converted to ``[0, 1]`` floats (``/ 255``) and to grayscale with
    ``skimage.color.rgb2gray`` (ITU-R BT.709 luma: ``0.2125 R + 0.7154 G + 0.0721 B``), then
    compared with ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0)``: the mean SSIM (Wang et al., IEEE TIP 2004) over
    11 × 11 Gaussian windows, as in MindEye (Scotti et al., NeurIPS 2023) and Brain-Diffuser
    (Ozcelik & VanRullen, Scientific Reports 2023).

    Parameters
    ----------
    generated : numpy.ndarray or torch.Tensor, shape (T, S, 3, H, W), uint8
        S generated RGB images of each of T trials.
    reference : numpy.ndarray or torch.Tensor, shape (T, 3, H, W), uint8
        Ground-truth RGB image of each trial.

    Returns
    -------
    dict
        ``value`` (float, at most 1: mean over trials of the mean SSIM over the trial's images;
        higher is better), ``per_trial`` (list of float, length T), ``n_trials`` (T).

    Raises
    ------
    DataFormatError
        If the images are not uint8 of shapes (T, S, 3, H, W) and (T, 3, H, W) with the same T, H
        and W, or smaller than 11 × 11 px (the Gaussian window).
    """
    from skimage.color import rgb2gray
    from skimage.metrics import structural_similarity

    gen, ref = _image_pairs(generated, reference, "SSIM")
    if min(gen.shape[-2:]) < _SSIM_MIN_SIDE:
        raise DataFormatError(
            f"SSIM: images of {gen.shape[-2]}x{gen.shape[-1]} px are smaller than the "
            f"{_SSIM_MIN_SIDE}x{_SSIM_MIN_SIDE} Gaussian window"
        )

    def gray(img: np.ndarray) -> np.ndarray:  # (3, H, W) uint8 -> (H, W) float64 in [0, 1]
        return rgb2gray(np.moveaxis(img, 0, -1).astype(np.float64) / 255.0)

    t, s = gen.shape[:2]
    per_trial = np.empty(t, dtype=np.float64)
    for i in range(t):
        im = gray(ref[i])
        per_trial[i] = np.mean([
            structural_similarity(gray(gen[i, k]), im, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False, data_range=1.0)
            for k in range(s)
        ])
    return _result(per_trial)
