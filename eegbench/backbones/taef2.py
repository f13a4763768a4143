"""TAEF2: the tiny autoencoder of the TAESD family for the FLUX.2 latent space.

Architecture facts (from ``madebyollin/taesd`` @ 5cccb12dc72074a4be35680c3b108548a7c69978, README and
``taesd.py``; MIT licence): a stack of 3×3 Conv+ReLU residual blocks at width 64. The encoder maps an
RGB image in [0, 1] to a 32-channel latent at 1/8 resolution through three stride-2 convolutions;
the decoder soft-clamps the latent to ±3 (``3·tanh(z/3)``) and mirrors the encoder with nearest
2× upsampling. The FLUX.2 variant ("flux_2") adds, to the blocks at the latent resolution (last
three encoder blocks, first three decoder blocks), a pre-residual branch
``x + Conv1x1(ReLU(GroupNorm(4, Conv1x1(x, 4·64))))``. The weights are state dicts of the
encoder / decoder ``nn.Sequential`` (keys ``0.weight``, ``1.conv.0.weight``, ``11.pool.1.weight``,
…), stored in float16 and loaded here into float32 modules.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from eegbench.errors import DataFormatError, WeightsNotFoundError

ENCODER_FILE = "taef2_encoder.pth"
DECODER_FILE = "taef2_decoder.pth"


def _conv3(n_in: int, n_out: int, *, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, kernel_size=3, stride=stride, padding=1, bias=bias)


class _SoftClamp(nn.Module):
    """``limit · tanh(x / limit)``: keeps decoder inputs in (-limit, limit)."""

    def __init__(self, limit: float = 3.0) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / self.limit) * self.limit


class _ResBlock(nn.Module):
    """Three 3×3 convolutions with ReLUs, a (1×1 or identity) skip, ReLU after the sum.

    With ``group_norm=True`` a pre-residual 1×1 → GroupNorm(4) → ReLU → 1×1 branch (the "flux_2"
    mid-block normalisation) is added to the input first.
    """

    def __init__(self, n_in: int, n_out: int, *, group_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv3(n_in, n_out), nn.ReLU(), _conv3(n_out, n_out), nn.ReLU(), _conv3(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool: nn.Module | None = None
        if group_norm:
            hidden = 4 * n_in
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, hidden, 1, bias=False),
                nn.GroupNorm(4, hidden),
                nn.ReLU(),
                nn.Conv2d(hidden, n_in, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def _encoder(latent_channels: int, width: int) -> nn.Sequential:
    w = width
    layers: list[nn.Module] = [_conv3(3, w), _ResBlock(w, w)]
    for stage in range(3):
        layers.append(_conv3(w, w, stride=2, bias=False))
        layers += [_ResBlock(w, w, group_norm=stage == 2) for _ in range(3)]
    layers.append(_conv3(w, latent_channels))
    return nn.Sequential(*layers)


def _decoder(latent_channels: int, width: int) -> nn.Sequential:
    w = width
    layers: list[nn.Module] = [_SoftClamp(3.0), _conv3(latent_channels, w), nn.ReLU()]
    for stage in range(3):
        layers += [_ResBlock(w, w, group_norm=stage == 0) for _ in range(3)]
        layers += [nn.Upsample(scale_factor=2), _conv3(w, w, bias=False)]
    layers += [_ResBlock(w, w), _conv3(w, 3)]
    return nn.Sequential(*layers)


class TAEF2(nn.Module):
    """Tiny autoencoder (TAESD family, FLUX.2 variant): RGB in [0, 1] ↔ latent at 1/8 resolution.

    Source: Ollin Boer Bohan, "TAESD" (``github.com/madebyollin/taesd`` @ 5cccb12d, MIT licence),
    ``taef2_*`` weights distilled from the FLUX.2 VAE. The pretrained network has ``width=64`` and
    ``latent_channels=32`` (1,338,528 encoder + 1,338,499 decoder parameters). Other sizes build a
    randomly initialised network of the same design (used by the ``tiny`` test backbones).

    Parameters
    ----------
    latent_channels : int
        Channels of the latent (32 for the pretrained TAEF2).
    width : int
        Channels of every hidden layer (64 for the pretrained TAEF2).

    Attributes
    ----------
    latent_channels : int
    downscale : int
        Spatial reduction factor, 8.
    encoder, decoder : torch.nn.Sequential
    """

    downscale = 8

    def __init__(self, latent_channels: int = 32, width: int = 64) -> None:
        super().__init__()
        self.latent_channels = int(latent_channels)
        self.width = int(width)
        self.encoder = _encoder(self.latent_channels, self.width)
        self.decoder = _decoder(self.latent_channels, self.width)

    @classmethod
    def from_dir(cls, path: Path | str) -> TAEF2:
        """Load the pretrained TAEF2 from ``path/taef2_encoder.pth`` and ``path/taef2_decoder.pth``.

        Parameters
        ----------
        path : Path
            Folder holding the two state dicts (normally ``<weights root>/taef2``).

        Returns
        -------
        TAEF2
            In float32, on the CPU, in training mode (call ``.eval()``).

        Raises
        ------
        WeightsNotFoundError
            If a file is missing (the message names it, ``--weights-root`` and ``EEGBENCH_WEIGHTS``).
        DataFormatError
            If a file is not a TAEF2 state dict (missing, unexpected or mis-shaped keys).
        """
        path = Path(path)
        model = cls()
        for name, part in ((ENCODER_FILE, model.encoder), (DECODER_FILE, model.decoder)):
            file = path / name
            if not file.is_file():
                raise WeightsNotFoundError(
                    f"TAEF2 weights file {file} not found: pass --weights-root (or set EEGBENCH_WEIGHTS) "
                    f"to a folder holding taef2/{ENCODER_FILE} and taef2/{DECODER_FILE} "
                    "(from github.com/madebyollin/taesd)"
                )
            try:
                state = torch.load(file, map_location="cpu", weights_only=True)
                part.load_state_dict(state, strict=True)
            except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise DataFormatError(f"{file}: not a TAEF2 state dict ({first})") from exc
        return model

    def _check(self, x: torch.Tensor, channels: int, what: str) -> None:
        if x.ndim != 4 or x.shape[1] != channels:
            raise ValueError(f"TAEF2.{what}: expected a (B, {channels}, H, W) tensor, got shape {tuple(x.shape)}")
        if not torch.is_floating_point(x):
            raise ValueError(f"TAEF2.{what}: expected a float tensor, got {x.dtype}")

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode images to latents.

        Parameters
        ----------
        images : torch.Tensor, shape (B, 3, H, W), float, values in [0, 1]
            H and W multiples of 8.

        Returns
        -------
        torch.Tensor, shape (B, latent_channels, H/8, W/8), float
            Raw (unscaled) latents, roughly within ±3.

        Raises
        ------
        ValueError
            For a wrong shape or dtype, or a size that is not a multiple of 8.
        """
        self._check(images, 3, "encode")
        if images.shape[-1] % self.downscale or images.shape[-2] % self.downscale:
            raise ValueError(f"TAEF2.encode: image size {tuple(images.shape[-2:])} is not a multiple of 8")
        return self.encoder(images)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode latents to images.

        Parameters
        ----------
        latents : torch.Tensor, shape (B, latent_channels, h, w), float

        Returns
        -------
        torch.Tensor, shape (B, 3, 8h, 8w), float, clamped to [0, 1]
        """
        self._check(latents, self.latent_channels, "decode")
        return self.decoder(latents).clamp(0.0, 1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Round trip ``decode(encode(images))``; shapes as :meth:`encode` input."""
        return self.decode(self.encode(images))
