"""Modules of the DreamDiffusion-style method: the EEG masked autoencoder and the conditioning heads.

Architecture facts from DreamDiffusion (arXiv 2306.16934; ``bbaaii/DreamDiffusion @8e14797``,
``code/sc_mbm/mae_for_eeg.py``, ``code/dc_ldm/ldm_for_eeg.py``,
``code/dc_ldm/modules/diffusionmodules/openaimodel.py``; summarised in ``research/methods.md`` §4).
The code here is written from those descriptions, not copied.

* :class:`EEGMAEEncoder` — a ViT over time patches: ``Conv1d(n_chans → dim, kernel = stride =
  patch_size)`` turns ``(n_chans, time_len)`` EEG into ``time_len / patch_size`` tokens that span
  every channel; a fixed 1-D sin-cos position embedding (with a row for the cls token), timm
  ``Block`` transformer layers and a final LayerNorm.
* :class:`EEGMAEDecoder` — the MAE decoder: ``Linear(dim → decoder_dim)``, a learned mask token,
  its own fixed sin-cos position embedding, transformer blocks and ``Linear(decoder_dim →
  n_chans · patch_size)``.
* :func:`random_masking` / :func:`masked_patch_loss` — per-sample random masking by shuffling and
  the MSE on masked patches only (per-patch mean, then mean over masked patches).
* :class:`ChannelMapper`, :class:`ClipMapping`, :class:`TimeConditioner` — the Stage-B heads:
  token-axis ``Conv1d`` stacks mapping the encoder's tokens to the denoiser's context length, the
  pooled projection onto the image-embedding space used by the CLIP alignment loss, and the
  projection of the context onto the UNet's timestep-embedding space.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from eegbench.errors import ConfigError, DataFormatError
from eegbench.preprocessing import EEGStandardizer

__all__ = [
    "ChannelMapper",
    "ClipMapping",
    "EEGMAEDecoder",
    "EEGMAEEncoder",
    "TimeConditioner",
    "masked_patch_loss",
    "random_masking",
    "sincos_pos_embed_1d",
    "transformer_block_parameters",
]


def sincos_pos_embed_1d(dim: int, length: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 1-D sine-cosine position embedding (Vaswani et al. 2017, as used by MAE).

    Position ``p`` gets ``[sin(p ω_0), …, sin(p ω_{D/2−1}), cos(p ω_0), …, cos(p ω_{D/2−1})]``
    with ``ω_i = 10000^(−2i/D)``; with ``cls_token`` an all-zero row is prepended for the cls
    token (``research/methods.md`` §4.1: "fixed 1-D sin-cos, with cls token").

    Parameters
    ----------
    dim : int
        Embedding dimension D (even).
    length : int
        Number of positions.
    cls_token : bool
        Prepend a zero row.

    Returns
    -------
    torch.Tensor, shape (length + cls_token, dim), float32, on the CPU

    Raises
    ------
    ConfigError
        If ``dim`` is odd.
    """
    if dim % 2:
        raise ConfigError(f"dreamdiffusion: position-embedding dim {dim} must be even")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * omega[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=torch.float64), table])
    return table.float()


def _block(dim: int, heads: int, mlp_ratio: float) -> nn.Module:
    from eegbench._compat import ensure_torchvision

    ensure_torchvision()  # timm imports torchvision
    from timm.models.vision_transformer import Block

    return Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm)


def _init_linear_and_norm(module: nn.Module) -> None:
    """MAE initialisation: xavier-uniform Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def random_masking(
    tokens: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by shuffling (He et al. 2022, MAE).

    Each sample keeps ``int(L · (1 − mask_ratio))`` tokens chosen uniformly at random (the ones
    with the smallest of L uniform noise values).

    Parameters
    ----------
    tokens : torch.Tensor, shape (B, L, D), float
    mask_ratio : float
        Fraction of tokens to remove, in [0, 1).
    generator : torch.Generator, optional
        Source of the noise (on the CPU); the global RNG of ``tokens``' device otherwise.

    Returns
    -------
    kept : torch.Tensor, shape (B, L_keep, D)
        Visible tokens, in shuffled order.
    mask : torch.Tensor, shape (B, L), float32
        1 for removed (masked) tokens, 0 for kept ones, in the original order.
    ids_restore : torch.Tensor, shape (B, L), int64
        Index that puts shuffled positions back in order.
    """
    b, length, d = tokens.shape
    keep = int(length * (1.0 - mask_ratio))
    if generator is None:
        noise = torch.rand(b, length, device=tokens.device)
    else:
        noise = torch.rand(b, length, generator=generator).to(tokens.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    kept = torch.gather(tokens, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
    mask = torch.ones(b, length, device=tokens.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


def masked_patch_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE on masked patches only: mean over each patch's values, then mean over masked patches.

    Parameters
    ----------
    pred, target : torch.Tensor, shape (B, L, P), float
        Predicted and true patches (P = n_chans · patch_size).
    mask : torch.Tensor, shape (B, L), float
        1 marks a masked patch.

    Returns
    -------
    torch.Tensor, scalar float32
        0 if no patch is masked.
    """
    per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
    total = mask.sum()
    if float(total) == 0.0:
        return (per_patch * mask).sum()
    return (per_patch * mask).sum() / total


class EEGMAEEncoder(nn.Module):
    """ViT encoder of the EEG masked autoencoder (DreamDiffusion Stage A; ``MAEforEEG`` / ``eeg_encoder``).

    Input EEG is z-scored per channel with training statistics (:meth:`set_normalization`),
    clamped to ±``clip`` standard deviations, linearly resampled to ``time_len`` samples (as
    upstream's ``interp1d`` to 512, ``align_corners`` semantics) and cut into
    ``time_len / patch_size`` time patches spanning all channels.

    Parameters
    ----------
    n_chans : int
        EEG channels (128 on CVPR40).
    time_len : int
        Samples after resampling; a multiple of ``patch_size`` (512 upstream).
    patch_size : int
        Samples per patch (4).
    dim : int
        Token width (1024).
    depth : int
        Transformer blocks (24).
    num_heads : int
        Attention heads (16).
    mlp_ratio : float
        MLP width factor of the blocks (1.0).
    clip : float
        Clamp of the z-scored EEG in standard deviations; 0 disables.

    Attributes
    ----------
    num_patches : int
        ``time_len // patch_size``.
    pos_embed : nn.Parameter, shape (1, num_patches + 1, dim)
        Fixed sin-cos table (row 0 for the cls token); a parameter with ``requires_grad=False``
        as upstream, so the parameter counts match the published module.
    standardize : eegbench.preprocessing.EEGStandardizer
        Per-channel z-scoring with the training statistics (buffers ``mean``/``std`` in V; 0 and 1
        until :meth:`set_normalization`).

    Raises
    ------
    ConfigError
        If ``time_len`` is not a positive multiple of ``patch_size``, or ``dim`` is not divisible by
        ``num_heads``.
    """

    def __init__(self, n_chans: int, time_len: int, patch_size: int, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float = 1.0, clip: float = 0.0) -> None:
        super().__init__()
        if patch_size < 1 or time_len < patch_size or time_len % patch_size:
            raise ConfigError(f"dreamdiffusion: time_len={time_len} must be a positive multiple of "
                              f"patch_size={patch_size}")
        if dim % num_heads:
            raise ConfigError(f"dreamdiffusion: embed dim {dim} is not divisible by {num_heads} heads")
        self.n_chans, self.time_len, self.patch_size, self.dim = int(n_chans), int(time_len), int(patch_size), int(dim)
        self.num_patches = self.time_len // self.patch_size
        self.clip = float(clip)
        self.patch_embed = nn.Conv1d(n_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, dim), requires_grad=False)
        self.blocks = nn.ModuleList([_block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.standardize = EEGStandardizer(n_chans, clip)
        self._init_weights()

    def _init_weights(self) -> None:
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed_1d(self.dim, self.num_patches)[None].to(self.pos_embed.device))
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        self.blocks.apply(_init_linear_and_norm)
        _init_linear_and_norm(self.norm)

    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store per-channel mean and standard deviation (V), shape (n_chans,); std is floored at 1e-12."""
        self.standardize.set_statistics(mean, std)

    def preprocess(self, eeg: torch.Tensor) -> torch.Tensor:
        """Z-score, clamp and resample raw EEG.

        Parameters
        ----------
        eeg : torch.Tensor, shape (B, n_chans, n_times), float, in V

        Returns
        -------
        torch.Tensor, shape (B, n_chans, time_len), float32

        Raises
        ------
        DataFormatError
            If the channel count differs from ``n_chans``.
        """
        if eeg.ndim != 3 or eeg.shape[1] != self.n_chans:
            raise DataFormatError(f"dreamdiffusion encoder: EEG shape {tuple(eeg.shape)}, expected "
                                  f"(batch, {self.n_chans}, n_times)")
        x = self.standardize(eeg)
        if x.shape[-1] != self.time_len:
            x = F.interpolate(x, size=self.time_len, mode="linear", align_corners=True)
        return x

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """Cut preprocessed EEG into reconstruction targets.

        Parameters
        ----------
        x : torch.Tensor, shape (B, n_chans, time_len)

        Returns
        -------
        torch.Tensor, shape (B, num_patches, patch_size · n_chans)
            Patch l holds samples ``l·p … l·p + p − 1`` of every channel, time-major (upstream's
            ``patchify`` of the transposed signal).
        """
        b = x.shape[0]
        return x.transpose(1, 2).reshape(b, self.num_patches, self.patch_size * self.n_chans)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens plus position embedding, shape (B, num_patches, dim), of preprocessed EEG."""
        return self.patch_embed(x).transpose(1, 2) + self.pos_embed[:, 1:, :]

    def forward_masked(self, x: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None):
        """Stage-A encoder pass: mask tokens, prepend the cls token, run the blocks.

        Parameters
        ----------
        x : torch.Tensor, shape (B, n_chans, time_len), float
            Preprocessed EEG (:meth:`preprocess`).
        mask_ratio : float
        generator : torch.Generator, optional
            Source of the masking noise (fixed masks for validation).

        Returns
        -------
        latent : torch.Tensor, shape (B, 1 + L_keep, dim)
            cls token first.
        mask : torch.Tensor, shape (B, num_patches)
        ids_restore : torch.Tensor, shape (B, num_patches), int64
        """
        tokens, mask, ids_restore = random_masking(self.embed(x), mask_ratio, generator)
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(tokens.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1)
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h), mask, ids_restore

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        """Stage-B / inference pass over all patch tokens (no masking, no cls token, as upstream's
        ``eeg_encoder`` with ``global_pool=False``).

        Parameters
        ----------
        eeg : torch.Tensor, shape (B, n_chans, n_times), float, in V

        Returns
        -------
        torch.Tensor, shape (B, num_patches, dim)
        """
        h = self.embed(self.preprocess(eeg))
        for blk in self.blocks:
            h = blk(h)
        return self.norm(h)


class EEGMAEDecoder(nn.Module):
    """Decoder of the EEG masked autoencoder (``MAEforEEG`` decoder).

    Parameters
    ----------
    n_chans, patch_size, num_patches : int
        As the encoder; the output patch has ``n_chans · patch_size`` values.
    encoder_dim : int
        Encoder token width (1024).
    dim : int
        Decoder width (512).
    depth : int
        Decoder blocks (8).
    num_heads : int
        Decoder heads (16).
    mlp_ratio : float
        MLP width factor (1.0).

    Raises
    ------
    ConfigError
        If ``dim`` is not divisible by ``num_heads``.
    """

    def __init__(self, n_chans: int, patch_size: int, num_patches: int, encoder_dim: int, dim: int, depth: int,
                 num_heads: int, mlp_ratio: float = 1.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"dreamdiffusion: decoder dim {dim} is not divisible by {num_heads} heads")
        self.num_patches, self.dim = int(num_patches), int(dim)
        self.decoder_embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList([_block(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.decoder_norm = nn.LayerNorm(dim)
        self.decoder_pred = nn.Linear(dim, n_chans * patch_size)
        with torch.no_grad():
            table = sincos_pos_embed_1d(dim, self.num_patches)[None]
            self.decoder_pos_embed.copy_(table.to(self.decoder_pos_embed.device))
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(_init_linear_and_norm)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Reconstruct every patch from the visible tokens.

        Parameters
        ----------
        latent : torch.Tensor, shape (B, 1 + L_keep, encoder_dim)
            Output of :meth:`EEGMAEEncoder.forward_masked` (cls first).
        ids_restore : torch.Tensor, shape (B, num_patches), int64

        Returns
        -------
        torch.Tensor, shape (B, num_patches, n_chans · patch_size)
        """
        h = self.decoder_embed(latent)
        b, n_vis, d = h.shape
        fill = self.mask_token.expand(b, self.num_patches + 1 - n_vis, d)
        seq = torch.cat([h[:, 1:], fill], dim=1)
        seq = torch.gather(seq, 1, ids_restore[:, :, None].expand(-1, -1, d))
        h = torch.cat([h[:, :1], seq], dim=1) + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            h = blk(h)
        return self.decoder_pred(self.decoder_norm(h))[:, 1:]


class ChannelMapper(nn.Sequential):
    """Token-axis mapping of the encoder's tokens to the context length (upstream ``channel_mapper``).

    ``Conv1d(n_tokens → n_tokens // 2, k=1)`` then ``Conv1d(n_tokens // 2 → context_tokens, k=1)``,
    applied with the token axis as channels (128 → 64 → 77 upstream: 13,261 parameters).

    Input (B, n_tokens, dim) → output (B, context_tokens, dim).
    """

    def __init__(self, n_tokens: int, context_tokens: int) -> None:
        hidden = max(int(n_tokens) // 2, 1)
        super().__init__(nn.Conv1d(n_tokens, hidden, 1), nn.Conv1d(hidden, context_tokens, 1))


class ClipMapping(nn.Module):
    """Projection of the encoder latent onto the image-embedding space (upstream ``mapping``).

    ``Conv1d(n_tokens → 1, k=1)`` pools the tokens, ``Linear(dim → image_dim)`` projects
    (128 tokens, 1024 → 768 upstream: 787,329 parameters).

    Parameters
    ----------
    n_tokens, dim, image_dim : int
    """

    def __init__(self, n_tokens: int, dim: int, image_dim: int) -> None:
        super().__init__()
        self.pool = nn.Conv1d(n_tokens, 1, 1)
        self.fc = nn.Linear(dim, image_dim)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, n_tokens, dim) float → (B, image_dim) float."""
        return self.fc(self.pool(latent).squeeze(1))

    def loss(self, latent: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """CLIP alignment loss ``1 − mean cosine(mapping(latent), image_features)``.

        Parameters
        ----------
        latent : torch.Tensor, shape (B, n_tokens, dim)
        image_features : torch.Tensor, shape (B, image_dim)

        Returns
        -------
        torch.Tensor, scalar
        """
        return 1.0 - F.cosine_similarity(self(latent).float(), image_features.float(), dim=-1).mean()


class TimeConditioner(nn.Sequential):
    """Projection of the context onto the UNet's timestep-embedding space (upstream ``time_embed_condtion``).

    ``Conv1d(context_tokens → context_tokens // 2, k=1)`` → ``Conv1d(· → 1, k=1)`` over the token
    axis, then ``Linear(context_dim → time_embed_dim)`` (77 → 38 → 1 tokens, 768 → 1280 upstream:
    987,323 parameters). Its output, shape (B, time_embed_dim), is added to the timestep embedding.
    """

    def __init__(self, context_tokens: int, context_dim: int, time_embed_dim: int) -> None:
        hidden = max(int(context_tokens) // 2, 1)
        super().__init__(nn.Conv1d(context_tokens, hidden, 1), nn.Conv1d(hidden, 1, 1),
                         nn.Linear(context_dim, time_embed_dim))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        """(B, context_tokens, context_dim) → (B, time_embed_dim)."""
        return super().forward(context).squeeze(1)


def transformer_block_parameters(unet: nn.Module) -> dict[str, nn.Parameter]:
    """UNet parameters Stage B fine-tunes: cross-attention ``attn2`` and the transformer blocks' ``norm2``.

    Upstream selects parameters whose name contains ``attn2`` or ``norm2`` in the CompVis UNet,
    where only the transformer blocks' LayerNorm before cross-attention is called ``norm2``. In
    diffusers the ResNet blocks have a ``norm2`` too, so selection here goes by module type:
    ``attn2`` and ``norm2`` of every ``BasicTransformerBlock`` (SD-1.5: 43,962,560 + 24,960).

    Parameters
    ----------
    unet : diffusers.UNet2DConditionModel

    Returns
    -------
    dict of str to nn.Parameter
        Keyed by the parameter's name in ``unet``.
    """
    from diffusers.models.attention import BasicTransformerBlock

    out: dict[str, nn.Parameter] = {}
    for mname, module in unet.named_modules():
        if isinstance(module, BasicTransformerBlock):
            for sub in ("attn2", "norm2"):
                child = getattr(module, sub, None)
                if child is None:
                    continue
                for pname, p in child.named_parameters():
                    out[f"{mname}.{sub}.{pname}"] = p
    return out


def time_embedding_dim(unet: nn.Module) -> int:
    """Width of a diffusers UNet's timestep embedding (``time_embedding.linear_2.out_features``)."""
    return int(unet.time_embedding.linear_2.out_features)


def cosine_schedule(step: int, total: int, warmup: int, base_lr: float, min_lr: float = 0.0) -> float:
    """Linear warm-up then half-cycle cosine decay (MAE's per-iteration schedule).

    Parameters
    ----------
    step : int
        Current step, counted from 0.
    total, warmup : int
        Total and warm-up steps.
    base_lr, min_lr : float

    Returns
    -------
    float
        Learning rate at ``step``.
    """
    if warmup > 0 and step < warmup:
        return base_lr * step / warmup
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
