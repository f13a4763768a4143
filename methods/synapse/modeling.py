"""SYNAPSE Stage 1: the hybrid (CNN + transformer) EEG autoencoder and its losses.

Re-implementation (own code) of the CLIP-aligned EEG autoencoder of SYNAPSE
(arXiv 2511.17547; reference repository ``CVMILab-CUK/synapse @225872a``, ``src/models/eeg_AE.py``,
``src/libs/blocks.py``, ``src/libs/layers.py``, ``src/libs/losses.py``, ``src/libs/metric.py``), in
the configuration of the released encoder (``src/Make Prtrained Encoder.ipynb``: ``skip_mode='down'``,
``down_mode='linear'``, ``up_mode='linear'``, ``pos_mode='trunc'``, ``global_attn=True``).

Axis convention (as upstream): a trial ``(n_chans, n_times)`` is transposed to ``(n_times, n_chans)``
so that the *time samples are the Conv1d channel axis* and the *electrodes are the sequence axis*.
"Temporal" blocks (:class:`ResnetBlock1d`) are 1×1 convolutions that mix the time-feature axis;
"spatial" blocks (:class:`TransformerBlock1d`) attend across the electrode-derived sequence. Every
sequence length is computed from ``n_chans`` and the strides, never hard-coded, so a 4-electrode
Muse headset and the 128-electrode EEG-ImageNet cap build with the same code.

With ``dims=(64, 128, 256, 512, 1024)``, ``down_strides=(2, 4, 4, 4)``, ``n_layer=2``, ``n_head=64``,
``agg_hidden=1024``, 77 tokens of width 1024 and 440×128 input, the encoder has 27,590,878 and the
decoder 21,869,036 parameters, the counts of the upstream modules (``research/methods.md`` §3.2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from eegbench.errors import ConfigError
from eegbench.preprocessing import EEGStandardizer

__all__ = [
    "AlignmentHeads",
    "EEGAttention1d",
    "ResnetBlock1d",
    "SynapseEEGDecoder",
    "SynapseEEGEncoder",
    "TransformerBlock1d",
    "clip_contrastive_loss",
    "sequence_lengths",
    "soft_signal_dice",
    "stage1_losses",
    "token_alignment_losses",
]


class Pointwise1d(nn.Module):
    """1×1 convolution on ``(batch, channels, length)``, computed as a matrix product.

    Same parameters as ``nn.Conv1d(in_channels, out_channels, 1)`` (weight stored as
    ``(out_channels, in_channels)``), but much faster on CPU for the short sequences here
    (oneDNN's convolution has a large per-call overhead).

    Parameters
    ----------
    in_channels, out_channels : int
    bias : bool
    """

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        layer = nn.Linear(in_channels, out_channels, bias=bias)  # reuse nn.Linear's initialisation
        self.weight = layer.weight
        self.bias = layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(batch, in_channels, L)`` → ``(batch, out_channels, L)``."""
        return F.linear(x.transpose(1, 2), self.weight, self.bias).transpose(1, 2)


def _group_count(channels: int, groups: int) -> int:
    """Largest divisor of ``channels`` that is ≤ ``groups`` (GroupNorm needs groups | channels)."""
    return math.gcd(int(channels), int(groups))


def sequence_lengths(n_chans: int, down_strides: Sequence[int]) -> list[int]:
    """Electrode-axis length of every encoder stage.

    Stage 0 works on the ``n_chans`` electrodes; after stage ``k`` a Linear over the sequence axis
    maps ``L_k`` to ``max(1, ceil(L_k / down_strides[k]))``. Upstream's schedule for 128 electrodes,
    ``128 → 64 → 16 → 4 → 1``, is ``down_strides=(2, 4, 4, 4)``.

    Parameters
    ----------
    n_chans : int
        Number of electrodes.
    down_strides : sequence of int
        One stride per down-sampling (``len(dims) - 1`` of them).

    Returns
    -------
    list of int
        ``len(down_strides) + 1`` sequence lengths.
    """
    lengths = [int(n_chans)]
    for stride in down_strides:
        lengths.append(max(1, math.ceil(lengths[-1] / int(stride))))
    return lengths


class ResnetBlock1d(nn.Module):
    """SYNAPSE "temporal" residual block on ``(batch, channels, length)``.

    GroupNorm → SiLU → 1×1 conv → GroupNorm → SiLU → Dropout → 1×1 conv, plus a 1×1-conv shortcut
    (always present upstream, ``shortcut=True``). Convolutions have no bias, as upstream's
    ``Conv1dLayer`` default. Source: ``src/libs/blocks.py: ResnetBlock``.

    Parameters
    ----------
    in_channels, out_channels : int
    groups : int
        Upper bound on GroupNorm groups; the largest divisor of the channel count ≤ ``groups`` is used.
    dropout : float
    eps : float
        GroupNorm epsilon (1e-6 upstream).
    """

    def __init__(self, in_channels: int, out_channels: int, *, groups: int = 32, dropout: float = 0.0,
                 eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_group_count(in_channels, groups), in_channels, eps=eps)
        self.conv1 = Pointwise1d(in_channels, out_channels, bias=False)
        self.norm2 = nn.GroupNorm(_group_count(out_channels, groups), out_channels, eps=eps)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = Pointwise1d(out_channels, out_channels, bias=False)
        self.shortcut = Pointwise1d(in_channels, out_channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(batch, in_channels, L)`` → ``(batch, out_channels, L)``."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class EEGAttention1d(nn.Module):
    """Multi-head attention over the sequence axis of ``(batch, channels, length)``.

    Q/K/V/out are bias-free 1×1 convolutions; heads split the channel axis (``channels / n_head``
    features per head) and attention runs across the ``length`` positions. As upstream
    (``src/libs/layers.py: EEGAttention1dLayer``) the scores are **not** scaled by 1/√d.

    Parameters
    ----------
    channels : int
    n_head : int
        Must divide ``channels``.

    Raises
    ------
    ConfigError
        If ``n_head`` does not divide ``channels``.
    """

    def __init__(self, channels: int, n_head: int) -> None:
        super().__init__()
        if channels % n_head:
            raise ConfigError(f"synapse: n_head={n_head} does not divide the block width {channels}")
        self.n_head = int(n_head)
        self.to_q = Pointwise1d(channels, channels, bias=False)
        self.to_k = Pointwise1d(channels, channels, bias=False)
        self.to_v = Pointwise1d(channels, channels, bias=False)
        self.to_out = Pointwise1d(channels, channels, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, c, length = x.shape
        return x.reshape(b, self.n_head, c // self.n_head, length).transpose(-1, -2)  # (B, H, L, e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(batch, channels, L)`` → ``(batch, channels, L)``."""
        b, c, length = x.shape
        q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(x)), self._heads(self.to_v(x))
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # unscaled scores, as upstream
        return self.to_out(out.transpose(-1, -2).reshape(b, c, length))


class TransformerBlock1d(nn.Module):
    """SYNAPSE "spatial" transformer block on ``(batch, channels, length)``.

    ``x ← LN1(x)``; ``h = LN2(x + Dropout(MHA(x)))``; ``out = h + Dropout(FFN(h))`` with LayerNorms
    over the whole ``[channels, length]`` plane and an FFN of 1×1 convs (``channels → dff`` with
    GELU and dropout, ``dff → channels``, with bias). Source: ``src/libs/blocks.py:
    TransformerBlock`` and ``PositionWiseConv1dLayer``.

    Parameters
    ----------
    channels : int
    length : int
        Sequence length (the LayerNorm's second dimension).
    n_head : int
    dff : int
        FFN hidden width.
    dropout : float
    eps : float
    """

    def __init__(self, channels: int, length: int, *, n_head: int, dff: int, dropout: float = 0.0,
                 eps: float = 1e-6) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm([channels, length], eps=eps)
        self.attn = EEGAttention1d(channels, n_head)
        self.dropout1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm([channels, length], eps=eps)
        self.ffn = nn.Sequential(
            Pointwise1d(channels, dff), nn.GELU(), nn.Dropout(dropout), Pointwise1d(dff, channels)
        )
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(batch, channels, length)`` → same shape."""
        x = self.norm1(x)
        h = self.norm2(x + self.dropout1(self.attn(x)))
        return h + self.dropout2(self.ffn(h))


class _Stage(nn.Module):
    """``n_layer`` residual blocks (``in → out``, then ``out → out``), a learned positional
    embedding (trunc-normal, std 0.02) added before a transformer block."""

    def __init__(self, in_ch: int, out_ch: int, length: int, *, n_layer: int, n_head: int, dff_factor: int,
                 groups: int, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [ResnetBlock1d(in_ch if i == 0 else out_ch, out_ch, groups=groups, dropout=dropout) for i in range(n_layer)]
        )
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, out_ch, length), std=0.02))
        self.attn = TransformerBlock1d(out_ch, length, n_head=n_head, dff=out_ch * dff_factor, dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.attn(x + self.pos_embed)


def _validate_arch(n_chans: int, n_times: int, dims: Sequence[int], down_strides: Sequence[int],
                   n_layer: int, n_head: int, n_tokens: int, latent_dim: int) -> None:
    if n_chans < 1 or n_times < 1:
        raise ConfigError(f"synapse: EEG shape ({n_chans}, {n_times}) must be positive")
    if len(dims) < 2:
        raise ConfigError(f"synapse: dims={tuple(dims)} needs at least two stages")
    if len(down_strides) != len(dims) - 1:
        raise ConfigError(
            f"synapse: down_strides={tuple(down_strides)} must have len(dims) - 1 = {len(dims) - 1} entries"
        )
    if any(int(s) < 1 for s in down_strides):
        raise ConfigError(f"synapse: down_strides={tuple(down_strides)} must be ≥ 1")
    if n_layer < 1:
        raise ConfigError(f"synapse: n_layer={n_layer} must be ≥ 1")
    for width in (*dims, latent_dim):
        if int(width) % int(n_head):
            raise ConfigError(f"synapse: n_head={n_head} does not divide width {width} (dims={tuple(dims)}, "
                              f"latent dim {latent_dim})")
    if n_tokens < 1:
        raise ConfigError(f"synapse: n_tokens={n_tokens} must be ≥ 1")


class SynapseEEGEncoder(nn.Module):
    """SYNAPSE Stage-1 EEG encoder: EEG trial → token latent ``(n_tokens, latent_dim)``.

    Per-channel z-scoring (:class:`~eegbench.preprocessing.EEGStandardizer` ``standardize``, statistics
    in the input unit set from the training EEG with :meth:`set_normalization`, optionally clamped
    to ±``clip``) → transpose to
    ``(n_times, n_chans)`` → in-conv ``n_times → dims[0]`` (k=1) → per stage: residual blocks +
    positional embedding + transformer, a 1×1 skip projection to ``latent_dim``, a Linear
    down-sampling over the electrode axis → out-conv ``dims[-1] → latent_dim`` → skip aggregation
    (all skips and the out-conv output concatenated along the sequence axis, then
    Linear(ΣL → agg_hidden) → ReLU → Linear → ReLU → Linear(→ n_tokens) over that axis) →
    optional global transformer over the ``n_tokens`` positions → ``(batch, n_tokens, latent_dim)``.

    Source: ``CVMILab-CUK/synapse @225872a``, ``src/models/eeg_AE.py: eeg_encoder`` with
    ``skip_mode='down'``, ``down_mode='linear'``, ``pos_mode='trunc'``. As upstream, the global block's
    FFN width is ``n_tokens * dff_factor`` (154 for 77 tokens).

    Parameters
    ----------
    n_chans, n_times : int
        EEG shape of one trial.
    n_tokens : int
        Latent tokens (77 upstream = OpenCLIP context; the denoiser's context length here).
    latent_dim : int
        Token width (1024 upstream = SD 2.x cross-attention width).
    dims : sequence of int
        Block widths per stage.
    down_strides : sequence of int
        Electrode-axis down-sampling per stage transition (see :func:`sequence_lengths`).
    n_layer, n_head, dff_factor, groups : int
    dropout : float
    agg_hidden : int
        Hidden width of the skip-aggregation MLP (1024 upstream).
    global_attn : bool
        Whether to apply the global transformer block over the token latent (True for the
        released encoder).
    clip : float
        Clamp of the z-scored EEG (0 disables).

    Raises
    ------
    ConfigError
        For inconsistent dimensions (head count not dividing a width, wrong number of strides).
    """

    def __init__(self, n_chans: int, n_times: int, *, n_tokens: int, latent_dim: int,
                 dims: Sequence[int] = (64, 128, 256, 512, 1024), down_strides: Sequence[int] = (2, 4, 4, 4),
                 n_layer: int = 2, n_head: int = 64, dff_factor: int = 2, groups: int = 32,
                 dropout: float = 0.5, agg_hidden: int = 1024, global_attn: bool = True, clip: float = 0.0) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        _validate_arch(n_chans, n_times, dims, down_strides, n_layer, n_head, n_tokens, latent_dim)
        self.n_chans, self.n_times = int(n_chans), int(n_times)
        self.n_tokens, self.latent_dim = int(n_tokens), int(latent_dim)
        self.clip = float(clip)
        self.lengths = sequence_lengths(n_chans, down_strides)
        self.standardize = EEGStandardizer(n_chans, self.clip, min_std=1e-12)

        self.in_conv = Pointwise1d(n_times, dims[0])
        stage_kw = dict(n_layer=n_layer, n_head=n_head, dff_factor=dff_factor, groups=groups, dropout=dropout)
        self.stages = nn.ModuleList(
            [_Stage(dims[max(i - 1, 0)], dims[i], self.lengths[i], **stage_kw) for i in range(len(dims))]
        )
        self.skips = nn.ModuleList([Pointwise1d(d, latent_dim, bias=False) for d in dims])
        downs: list[nn.Module] = [
            nn.Linear(self.lengths[i], self.lengths[i + 1], bias=False) for i in range(len(dims) - 1)
        ]
        downs.append(nn.Identity())
        self.downs = nn.ModuleList(downs)
        self.out_conv = Pointwise1d(dims[-1], latent_dim)
        total_len = sum(self.lengths) + self.lengths[-1]
        self.skip_agg = nn.Sequential(
            nn.Linear(total_len, agg_hidden, bias=False), nn.ReLU(),
            nn.Linear(agg_hidden, agg_hidden, bias=False), nn.ReLU(),
            nn.Linear(agg_hidden, n_tokens, bias=False),
        )
        self.global_attn = (
            TransformerBlock1d(latent_dim, n_tokens, n_head=n_head, dff=n_tokens * dff_factor, dropout=dropout)
            if global_attn else None
        )

    @torch.no_grad()
    def set_normalization(self, mean: torch.Tensor, std: torch.Tensor, *, min_std: float = 1e-12) -> None:
        """Store per-channel z-scoring statistics.

        Parameters
        ----------
        mean, std : torch.Tensor, shape (n_chans,)
            Per-channel mean and standard deviation of the training EEG, in the input unit (V).
        min_std : float
            Floor of ``std`` (a flat channel would otherwise divide by zero).
        """
        self.standardize.min_std = float(min_std)
        self.standardize.set_statistics(mean, std)

    def normalize(self, eeg: torch.Tensor) -> torch.Tensor:
        """Z-score raw EEG: ``(batch, n_chans, n_times)`` in V → same shape, dimensionless."""
        return self.standardize(eeg)

    def encode_normalized(self, z: torch.Tensor) -> torch.Tensor:
        """Encode z-scored EEG ``(batch, n_chans, n_times)`` → ``(batch, n_tokens, latent_dim)``."""
        h = self.in_conv(z.transpose(1, 2))  # (B, n_times, n_chans) -> (B, dims[0], n_chans)
        skips = []
        for stage, skip, down in zip(self.stages, self.skips, self.downs):
            h = stage(h)
            skips.append(skip(h))
            h = down(h)
        skips.append(self.out_conv(h))
        h = self.skip_agg(torch.cat(skips, dim=2))  # (B, latent_dim, n_tokens)
        if self.global_attn is not None:
            h = self.global_attn(h)
        return h.transpose(1, 2)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        """Encode raw EEG.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float
            EEG in the unit of the normalisation statistics (V).

        Returns
        -------
        torch.Tensor, shape (batch, n_tokens, latent_dim), float
        """
        return self.encode_normalized(self.normalize(eeg))


class SynapseEEGDecoder(nn.Module):
    """SYNAPSE Stage-1 EEG decoder: token latent → z-scored EEG trial.

    Mirror of :class:`SynapseEEGEncoder` without encoder skips (``skip_mode='down'``): in-conv
    ``latent_dim → dims[-1]`` on ``(latent_dim, n_tokens)``; stages from the widest to the
    narrowest, each (residual blocks, positional embedding, transformer) followed by a Linear
    up-sampling over the sequence axis; sequence lengths ``n_tokens → L_{K-2} → … → L_0 = n_chans``
    (77 → 4 → 16 → 64 → 128 upstream); out-conv ``dims[0] → n_times``; transposed back.
    Source: ``src/models/eeg_AE.py: eeg_decoder`` with ``up_mode='linear'``.

    Parameters
    ----------
    Same as :class:`SynapseEEGEncoder` (without ``agg_hidden``, ``global_attn`` and ``clip``).

    Raises
    ------
    ConfigError
        For inconsistent dimensions.
    """

    def __init__(self, n_chans: int, n_times: int, *, n_tokens: int, latent_dim: int,
                 dims: Sequence[int] = (64, 128, 256, 512, 1024), down_strides: Sequence[int] = (2, 4, 4, 4),
                 n_layer: int = 2, n_head: int = 64, dff_factor: int = 2, groups: int = 32,
                 dropout: float = 0.5) -> None:
        super().__init__()
        dims = [int(d) for d in dims]
        _validate_arch(n_chans, n_times, dims, down_strides, n_layer, n_head, n_tokens, latent_dim)
        self.n_chans, self.n_times = int(n_chans), int(n_times)
        enc_lengths = sequence_lengths(n_chans, down_strides)
        self.lengths = [int(n_tokens)] + enc_lengths[-2::-1]  # n_tokens, L_{K-2}, ..., L_0
        widths = dims[::-1]
        self.in_conv = Pointwise1d(latent_dim, widths[0])
        stage_kw = dict(n_layer=n_layer, n_head=n_head, dff_factor=dff_factor, groups=groups, dropout=dropout)
        self.stages = nn.ModuleList(
            [_Stage(widths[max(i - 1, 0)], widths[i], self.lengths[i], **stage_kw) for i in range(len(widths))]
        )
        ups: list[nn.Module] = [
            nn.Linear(self.lengths[i], self.lengths[i + 1], bias=False) for i in range(len(widths) - 1)
        ]
        ups.append(nn.Identity())
        self.ups = nn.ModuleList(ups)
        self.out_conv = Pointwise1d(widths[-1], n_times)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Decode.

        Parameters
        ----------
        latent : torch.Tensor, shape (batch, n_tokens, latent_dim)

        Returns
        -------
        torch.Tensor, shape (batch, n_chans, n_times)
            Reconstruction of the z-scored EEG.
        """
        h = self.in_conv(latent.transpose(1, 2))
        for stage, up in zip(self.stages, self.ups):
            h = up(stage(h))
        return self.out_conv(h).transpose(1, 2)


class AlignmentHeads(nn.Module):
    """Trainable pieces of the Stage-1 contrastive loss.

    Upstream contrasts the latent token-mean directly with the OpenCLIP ViT-H-14 image embedding,
    which lives in the same 1024-d space the latent is aligned to through the text tokens. With
    backbones whose image and text spaces differ (here EfficientNet-Lite0 features vs MiniLM
    tokens) a learned linear projection ``latent_dim → image_dim`` is inserted — a deviation from
    upstream, used only when the widths differ. The CLIP logit scale is learnable, initialised at
    ``log(1/0.07)`` (2.6592 upstream) and clamped to ``log(100)`` as in CLIP. Upstream builds its
    optimiser over the autoencoder's parameters only, so its logit scale stays at the initial value
    (``research/methods.md`` §3.3); ``learn_logit_scale=False`` reproduces that (the scale is then a
    buffer, not a parameter).

    Parameters
    ----------
    latent_dim : int
    image_dim : int
    logit_scale_init : float
    learn_logit_scale : bool
        Whether the logit scale is a trainable parameter (True) or a constant buffer (False,
        upstream's effective behaviour).
    """

    def __init__(self, latent_dim: int, image_dim: int, *, logit_scale_init: float = math.log(1 / 0.07),
                 learn_logit_scale: bool = True) -> None:
        super().__init__()
        self.image_proj: nn.Module = (
            nn.Linear(latent_dim, image_dim) if int(latent_dim) != int(image_dim) else nn.Identity()
        )
        if learn_logit_scale:
            self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        else:
            self.register_buffer("logit_scale", torch.tensor(float(logit_scale_init)))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """``pooled``: ``(batch, latent_dim)`` → ``(batch, image_dim)``."""
        return self.image_proj(pooled)


def soft_signal_dice(x: torch.Tensor, y: torch.Tensor, *, alpha: float = 100.0, eps: float = 1e-6) -> torch.Tensor:
    """Soft Signal Dice similarity coefficient (SDSC) of two signals.

    ``gate = sigmoid(alpha·x·y)`` (soft sign agreement, treated as a constant as upstream computes it
    under ``no_grad``); ``inter = min(|x|·gate, |y|·gate)``; ``dice = (2·Σinter + eps) /
    (Σ(|x|+|y|) + eps)`` over all elements. Source: ``src/libs/metric.py: SoftSignalDice``
    (``sep=False``, as ``SignalDiceLoss(False)`` in the Stage-1 trainer).

    Parameters
    ----------
    x, y : torch.Tensor, same shape
    alpha : float
        Sharpness of the sign gate (100 upstream).
    eps : float

    Returns
    -------
    torch.Tensor, scalar
        1 for identical signals, near 0 for sign-flipped ones.
    """
    ax, ay = x.abs(), y.abs()
    with torch.no_grad():
        gate = torch.sigmoid(x * y * alpha)
    inter = torch.minimum(ax * gate, ay * gate)
    return (2 * inter.sum() + eps) / ((ax + ay).sum() + eps)


def clip_contrastive_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor, *,
                          eps: float = 1e-8) -> torch.Tensor:
    """CLIP-style symmetric cross-entropy between paired rows of ``a`` and ``b``.

    Parameters
    ----------
    a, b : torch.Tensor, shape (batch, dim)
        Paired embeddings (row ``i`` of ``a`` matches row ``i`` of ``b``); L2-normalised here.
    logit_scale : torch.Tensor, scalar
        Log temperature; clamped to ``log(100)``.
    eps : float

    Returns
    -------
    torch.Tensor, scalar
        Mean of the a→b and b→a cross-entropies. Source: ``src/libs/losses.py: ContrastiveLoss``.
    """
    a = a / (a.norm(dim=-1, keepdim=True) + eps)
    b = b / (b.norm(dim=-1, keepdim=True) + eps)
    logits = a @ b.t() * logit_scale.clamp(max=math.log(100.0)).exp()
    target = torch.arange(len(a), device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def token_alignment_losses(latent: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Alignment of the EEG token latent to frozen text-token states.

    Parameters
    ----------
    latent, text : torch.Tensor, shape (batch, n_tokens, dim)

    Returns
    -------
    mse : torch.Tensor, scalar
        ``MSE(latent, text)`` ("align" upstream).
    cos : torch.Tensor, scalar
        ``1 − cosine`` taken along the **token axis** for each of the ``dim`` channels and averaged
        over batch × dim, as upstream's ``nn.CosineSimilarity(dim=1)``.
    """
    mse = F.mse_loss(latent, text)
    cos = (1 - F.cosine_similarity(latent, text, dim=1)).mean()
    return mse, cos


def stage1_losses(latent: torch.Tensor, rec: torch.Tensor, target: torch.Tensor, image_feat: torch.Tensor,
                  text_tokens: torch.Tensor, heads: AlignmentHeads, *,
                  sdsc_alpha: float = 100.0) -> dict[str, torch.Tensor]:
    """All Stage-1 loss terms of SYNAPSE (unweighted).

    Parameters
    ----------
    latent : torch.Tensor, shape (batch, n_tokens, dim)
    rec, target : torch.Tensor, shape (batch, n_chans, n_times)
        Reconstruction and z-scored input EEG.
    image_feat : torch.Tensor, shape (batch, image_dim)
        Frozen image embedding of each trial's stimulus.
    text_tokens : torch.Tensor, shape (batch, n_tokens, dim)
        Frozen text-token states of each trial's caption.
    heads : AlignmentHeads
    sdsc_alpha : float

    Returns
    -------
    dict of str to scalar torch.Tensor
        ``rec`` (MSE), ``sdsc`` (1 − soft signal dice), ``sim`` (contrastive), ``cos`` and ``align``.
    """
    latent, rec = latent.float(), rec.float()
    align, cos = token_alignment_losses(latent, text_tokens.float())
    return {
        "rec": F.mse_loss(rec, target.float()),
        "sdsc": 1 - soft_signal_dice(rec, target.float(), alpha=sdsc_alpha),
        "sim": clip_contrastive_loss(heads(latent.mean(dim=1)).float(), image_feat.float(), heads.logit_scale),
        "cos": cos,
        "align": align,
    }
