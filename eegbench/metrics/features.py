"""Per-image features of the scoring networks, computed once and kept on disk.

Every image-based metric of the protocol is a function of the features one frozen network gives
each image: FID/KID of TF-Inception pool3 features, IS of classifier logits, the probe of
EfficientNet-Lite0 pooled features. :func:`network_features` runs a network over a set of uint8
images once and returns every layer the metrics need; with a cache file it first looks each image
up by the SHA-256 of its pixels and runs the network only on images it has not seen.

Cache files (``safetensors``) hold one network's features of many images:

- the reference images of a split and the training stimuli, under the cache folder
  (``<cache>/fidelity/features/``), so a second method scored against the same split runs no
  reference image through a network again;
- a run's generated images, beside its samples (``runs/<run_id>/features/``), so
  ``eegbench evaluate`` under another protocol that keeps a network (same name and weights)
  reuses its features, for every image or a subset (fewer samples per trial).

A cache entry is keyed by the network's key (name + weights digest, in the file name) and each
image's pixel digest, so stale features cannot be served: a changed image is a new digest, changed
weights a new file. Identical images in one set (test trials that show the same stimulus) are
computed once. Features of a batch can differ from those of the same image in another batch in
the last float bits (CPU kernels are chosen per batch shape); metrics computed from cached
features therefore equal a fresh computation up to float tolerance.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from eegbench.files import atomic_path
from eegbench.errors import ConfigError, DataFormatError

log = logging.getLogger("eegbench.metrics")

__all__ = ["FeatureNetwork", "image_digests", "network_features", "torch_fidelity_network"]

_FORMAT = "eegbench-features-1"


def image_digests(images: torch.Tensor) -> list[str]:
    """SHA-256 of each image's shape and pixels.

    Parameters
    ----------
    images : torch.Tensor, shape (N, 3, H, W), uint8
        Images (any device; read on the CPU).

    Returns
    -------
    list of str
        N hex digests; equal images give equal digests.
    """
    arr = np.ascontiguousarray(images.detach().cpu().numpy())
    head = repr(tuple(arr.shape[1:])).encode()
    return [hashlib.sha256(head + arr[i].tobytes()).hexdigest() for i in range(arr.shape[0])]


@dataclass
class FeatureNetwork:
    """A frozen network that maps uint8 images to named float features.

    Parameters
    ----------
    key : str
        File-name-safe identity of the network, its weights and its preprocessing (e.g.
        ``"inception-v3-tf-fidhelper-w7ff4a85c1fa3"``); features cached under one key are only
        ever reused under the same key.
    layers : tuple of str
        Names of the features ``fn`` returns.
    fn : callable
        uint8 ``(B, 3, H, W)`` RGB images (CPU) → dict of layer name → float ``(B, D)`` tensor;
        it moves the batch to its device and does its own resizing and normalisation.
    batch_size : int
        Images per call of ``fn``.
    name : str
        Human-readable network name for records and progress bars (default: ``key``).
    """

    key: str
    layers: tuple[str, ...]
    fn: Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
    batch_size: int = 32
    name: str = ""

    def __post_init__(self) -> None:
        if int(self.batch_size) < 1:
            raise ConfigError(f"feature network {self.key}: batch_size={self.batch_size} must be >= 1")
        if not self.key or "/" in self.key or os.sep in self.key:
            raise ConfigError(f"feature network key {self.key!r} must be a non-empty file-name-safe string")
        self.name = self.name or self.key


def torch_fidelity_network(name: str, layers: Sequence[str], *, key: str, weights_path: Path | None = None,
                           batch_size: int = 32) -> FeatureNetwork:
    """A torch-fidelity feature extractor as a :class:`FeatureNetwork` (on CUDA when available).

    Parameters
    ----------
    name : str
        Registered torch-fidelity extractor (e.g. ``"inception-v3-tf-fidhelper"``,
        ``"efficientnet-lite0-imagenet"``).
    layers : sequence of str
        Its features to compute (e.g. ``("2048",)`` or ``("1280", "logits_unbiased")``).
    key : str
        Cache key (see :class:`FeatureNetwork`); must name the weights.
    weights_path : Path, optional
        ``feature_extractor_weights_path`` of torch-fidelity.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    FeatureNetwork
    """
    from torch_fidelity.utils import create_feature_extractor

    cuda = torch.cuda.is_available()
    kwargs = {} if weights_path is None else {"feature_extractor_weights_path": str(weights_path)}
    extractor = create_feature_extractor(name, list(layers), cuda=cuda, verbose=False, **kwargs)
    device = torch.device("cuda" if cuda else "cpu")

    def fn(batch: torch.Tensor) -> dict[str, torch.Tensor]:
        out = extractor.convert_features_tuple_to_dict(extractor(batch.to(device)))
        return {k: v.float().cpu() for k, v in out.items()}

    return FeatureNetwork(key=key, layers=tuple(layers), fn=fn, batch_size=batch_size, name=name)


def _check_images(images, role: str) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not torch.is_tensor(images) or images.dtype != torch.uint8:
        raise DataFormatError(
            f"{role} images must be uint8 (N, 3, H, W), got dtype {getattr(images, 'dtype', type(images).__name__)}"
        )
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise DataFormatError(f"{role} images must have shape (N, 3, H, W) with N >= 1, got {tuple(images.shape)}")
    return images.detach().cpu()


def _read_cache(path: Path, network: FeatureNetwork) -> dict[str, dict[str, torch.Tensor]]:
    """digest → layer → (D,) features of a cache file; empty when it is absent or unusable."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:  # one read: metadata and tensors
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        digests = json.loads(meta.get("digests", "[]"))
    except (SafetensorError, OSError, ValueError) as exc:
        log.warning("feature cache %s is unreadable (%s); recomputing", path, exc)
        return {}
    if meta.get("format") != _FORMAT or meta.get("network") != network.key:
        log.warning("feature cache %s belongs to %s, not %s; recomputing", path, meta.get("network"), network.key)
        return {}
    out: dict[str, dict[str, torch.Tensor]] = {}
    for i, d in enumerate(digests):
        row = {k: v[i] for k, v in tensors.items() if v.shape[0] == len(digests)}
        out[d] = row
    return out


def _write_cache(path: Path, network: FeatureNetwork, rows: Mapping[str, Mapping[str, torch.Tensor]]) -> None:
    from safetensors.torch import save_file

    digests = sorted(rows)
    layers = sorted(set.intersection(*(set(r) for r in rows.values()))) if rows else []
    tensors = {k: torch.stack([rows[d][k] for d in digests]).contiguous() for k in layers}
    meta = {"format": _FORMAT, "network": network.key, "digests": json.dumps(digests)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def network_features(network: FeatureNetwork, images, *, cache_file: Path | None = None, role: str = "images",
                     progress: bool = True) -> dict[str, torch.Tensor]:
    """Features of every image, computed once per distinct image and cached in ``cache_file``.

    Parameters
    ----------
    network : FeatureNetwork
        The scoring network.
    images : torch.Tensor or numpy.ndarray, shape (N, 3, H, W), uint8
        RGB images.
    cache_file : Path, optional
        A ``.safetensors`` file of this network's features (created or extended; written to a
        temporary name and moved into place under a file lock). None: nothing is cached.
    role : str
        What the images are, for the progress bar and errors (``"generated"``, ``"reference"``).
    progress : bool
        Show a tqdm bar over the images that go through the network.

    Returns
    -------
    dict of str to torch.Tensor
        Layer name → float32 ``(N, D)`` features, in the order of ``images``.

    Raises
    ------
    DataFormatError
        For images that are not uint8 ``(N, 3, H, W)``, or a network that returns other shapes.
    """
    images = _check_images(images, role)
    digests = image_digests(images)
    first: dict[str, int] = {}
    for i, d in enumerate(digests):
        first.setdefault(d, i)

    def compute(known: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
        todo = [i for d, i in first.items() if d not in known or any(k not in known[d] for k in network.layers)]
        rows: dict[str, dict[str, torch.Tensor]] = {}
        if not todo:
            return rows
        bs = int(network.batch_size)
        with torch.inference_mode(), tqdm(total=len(todo), desc=f"{network.name} ({role})",
                                          unit="img", disable=not progress, leave=False) as bar:
            for start in range(0, len(todo), bs):
                idx = todo[start : start + bs]
                out = network.fn(images[idx])
                for name in network.layers:
                    v = out.get(name) if isinstance(out, Mapping) else None
                    if not torch.is_tensor(v) or v.dim() != 2 or v.shape[0] != len(idx) or not v.is_floating_point():
                        raise DataFormatError(
                            f"feature network {network.key}: layer {name!r} must be float ({len(idx)}, D), got "
                            f"{tuple(v.shape) if torch.is_tensor(v) else type(v).__name__}"
                        )
                for j, i in enumerate(idx):
                    rows[digests[i]] = {name: out[name][j].detach().to(torch.float32).cpu().clone()
                                        for name in network.layers}
                bar.update(len(idx))
        return rows

    if cache_file is None:
        rows = compute({})
    else:
        from eegbench.locks import cache_lock

        cache_file = Path(cache_file)
        known = _read_cache(cache_file, network)
        rows = compute(known)
        if rows:
            try:
                with cache_lock(cache_file, what=f"{network.key} features"):
                    merged = {**_read_cache(cache_file, network), **rows}  # another process may have added some
                    _write_cache(cache_file, network, merged)
            except OSError as exc:
                log.warning("cannot write feature cache %s (%s); going on without it", cache_file, exc)
        rows = {**known, **rows}
    return {name: torch.stack([rows[d][name] for d in digests]) for name in network.layers}
