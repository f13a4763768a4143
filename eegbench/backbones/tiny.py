"""Tiny, randomly initialised backbones for unit tests and plugin conformance checks.

:class:`TinyBackbones` has the public surface of :class:`eegbench.backbones.Backbones` (``vae``,
``image_embedder``, ``text_embedder``, ``prepare_denoiser``, ``denoiser``, ``image_size``, ``device``,
``settings``, ``progress``, ``profile``) but needs no weights file: 16-pixel images, a 4-channel
2 × 2 latent from a narrow TAEF2-design autoencoder, an 8-d hashed-word text embedder and a 16-d
conv image embedder, all seeded. The denoiser goes through the real
:func:`eegbench.backbones.denoiser.prepare_denoiser` / :class:`PretrainedDenoiser` code with a
tiny UNet and a few steps, so method plugins exercise the same sampling path as with the small
profile, in about a second on a CPU.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from eegbench.backbones import Backbones, SmallProfile
from eegbench.backbones.embedders import check_uint8_images
from eegbench.backbones.taef2 import TAEF2

#: Default settings of the tiny profile (16 px images, 4 context tokens, 8 pretraining steps).
TINY_SETTINGS = SmallProfile(image_size=16, context_tokens=4, denoiser_steps=8, denoiser_batch_size=4, denoiser_lr=1e-3)


class HashTextEmbedder(nn.Module):
    """Text embedder that maps each lower-cased word to a fixed pseudo-random vector.

    Same interface as :class:`eegbench.backbones.embedders.MiniLMTokens`. Word ``w`` gets the
    standard-normal vector drawn from a generator seeded with ``sha256(f"{seed}:{w}")``, so equal
    words give equal vectors and texts sharing words are similar.

    Parameters
    ----------
    dim : int
        Token dimension.
    max_length : int
        Context length of :meth:`encode` (tokens; longer texts are truncated).
    seed : int
        Seed mixed into every word's hash.

    Attributes
    ----------
    dim, max_length : int
    """

    def __init__(self, dim: int = 8, max_length: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.dim = int(dim)
        self.max_length = int(max_length)
        self.seed = int(seed)
        # a buffer so that .to(device) moves the outputs and `device` is defined
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    @property
    def device(self) -> torch.device:
        """Device the outputs are returned on."""
        return self._anchor.device

    def _word(self, word: str) -> torch.Tensor:
        digest = hashlib.sha256(f"{self.seed}:{word}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        return torch.randn(self.dim, generator=gen)

    @staticmethod
    def _words(text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError("HashTextEmbedder: expected a list of str")
        return re.findall(r"\w+", text.lower())

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Word vectors padded with zeros to :attr:`max_length`.

        Returns
        -------
        tokens : torch.Tensor, shape (B, max_length, dim), float32
        attention_mask : torch.Tensor, shape (B, max_length), int64
        """
        if isinstance(texts, str):
            raise TypeError("HashTextEmbedder: expected a list of str")
        tokens = torch.zeros(len(texts), self.max_length, self.dim)
        mask = torch.zeros(len(texts), self.max_length, dtype=torch.int64)
        for i, text in enumerate(texts):
            for j, word in enumerate(self._words(text)[: self.max_length]):
                tokens[i, j] = self._word(word)
                mask[i, j] = 1
        return tokens.to(self.device), mask.to(self.device)

    def encode_pooled(self, texts: Sequence[str]) -> torch.Tensor:
        """Mean of all word vectors, L2-normalised.

        Returns
        -------
        torch.Tensor, shape (B, dim), float32
        """
        if isinstance(texts, str):
            raise TypeError("HashTextEmbedder: expected a list of str")
        rows = []
        for text in texts:
            words = self._words(text)
            vec = torch.stack([self._word(w) for w in words]).mean(0) if words else torch.zeros(self.dim)
            rows.append(F.normalize(vec, dim=0))
        out = torch.stack(rows) if rows else torch.zeros(0, self.dim)
        return out.to(self.device)

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`encode`."""
        return self.encode(texts)


class TinyImageEmbedder(nn.Module):
    """A fixed random conv net standing in for the image embedder (16-d features, 10 logits).

    Same interface as :class:`eegbench.backbones.embedders.EfficientNetLite0Features`: images are
    resized to 32 × 32, scaled to [-1, 1], passed through two stride-2 3 × 3 convolutions with
    ReLU and global-average pooled.

    Attributes
    ----------
    dim : int
        Feature dimension, 16.
    num_classes : int
        10.
    image_size : int
        32.
    """

    dim = 16
    num_classes = 10
    image_size = 32

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, self.dim, 3, stride=2, padding=1), nn.ReLU()
        )
        self.classifier = nn.Linear(self.dim, self.num_classes)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → float32 (B, 3, 32, 32) in [-1, 1].

        Raises
        ------
        ValueError
            If ``images`` is not a uint8 (B, 3, H, W) tensor.
        """
        check_uint8_images(images, "TinyImageEmbedder")
        x = images.to(self.classifier.weight.device, torch.float32) / 127.5 - 1.0
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True)
        return x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features, float32 (B, 16), of uint8 images (B, 3, H, W)."""
        return self.features(self.preprocess(images)).mean((-2, -1))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits, float32 (B, 10), of uint8 images (B, 3, H, W)."""
        return self.classifier(self.forward(images))


class TinyBackbones(Backbones):
    """Backbones of the ``tiny`` profile: random, seeded, weight-free; for tests and conformance checks.

    Parameters
    ----------
    cache_dir : Path
        Where the tiny pretrained denoiser is cached (``cache_dir/denoiser/<key>``).
    device : torch.device or str
    seed : int
        Seed of the random autoencoder, image embedder and word vectors.
    settings : SmallProfile, optional
        Defaults to :data:`TINY_SETTINGS` (16 px, 4 context tokens, 8 pretraining steps of batch 4).
    progress : bool
        Show tqdm bars during the denoiser pretraining.

    Attributes
    ----------
    profile : str
        ``"tiny"``.
    vae : TAEF2
        ``TAEF2(latent_channels=4, width=8)``, random, frozen.
    image_embedder : TinyImageEmbedder
    text_embedder : HashTextEmbedder
        ``dim=8``, ``max_length=settings.context_tokens``.
    unet_config : dict
        Config of the tiny ``UNet2DConditionModel`` (two levels, widths 8/16) that
        :func:`~eegbench.backbones.denoiser.prepare_denoiser` trains.
    weights_root : None
        No weights are read.
    """

    profile = "tiny"
    weights_root = None

    def __init__(
        self,
        cache_dir: Path | str,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
        settings: SmallProfile | None = None,
        progress: bool = False,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.device = torch.device(device)
        self.settings = settings or TINY_SETTINGS
        self.progress = progress
        self.seed = int(seed)
        self._denoiser: Any = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            vae = TAEF2(latent_channels=4, width=8)
            image_embedder = TinyImageEmbedder()
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.image_embedder = image_embedder.to(self.device).eval().requires_grad_(False)
        self.text_embedder = HashTextEmbedder(dim=8, max_length=self.settings.context_tokens, seed=self.seed).to(
            self.device
        )
        latent_size = self.settings.image_size // self.vae.downscale
        self.unet_config: dict[str, Any] = {
            "sample_size": latent_size,
            "in_channels": self.vae.latent_channels,
            "out_channels": self.vae.latent_channels,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "block_out_channels": [8, 16],
            "layers_per_block": 1,
            "cross_attention_dim": self.text_embedder.dim,
            "attention_head_dim": 2,
            "norm_num_groups": 4,
        }
