"""BrainVis modules: time encoder (latent masked modelling), frequency encoder, fusion and AlignNet.

Own re-implementation of the modules of BrainVis (arXiv 2312.14871; reference repository
``RomGai/BrainVis @129b8c2``, ``model/BrainVisModels.py``, ``model/layers.py``, ``loss.py``;
``research/methods.md`` §5.1). The time encoder follows TimeMAE: a strided ``Conv1d`` cuts the EEG
into tokens of ``patch_size`` samples, a learned position embedding is added and transformer layers
with ReZero-like scaled residuals ``LayerNorm(x + dropout(a · sublayer(x)))`` (``a`` learnable,
initialised at 1e-8) encode them.

With 128 channels × 440 samples, ``d_model`` 1024, 8 layers, 16 heads, a 4-layer regressor, a
660-code tokenizer, 40 classes and an LSTM width of 128 the modules here have the upstream parameter
counts (``research/methods.md`` §5.3): encoder layers 100,769,808 (the momentum encoder the same),
regressor 50,384,904, tokenizer 676,500, :class:`FreqEncoder` 153,768, fusion head 46,120 and
:class:`AlignNet` 263,954,176.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eegbench.errors import ConfigError
from eegbench.preprocessing import EEGStandardizer
from eegbench.training import fp32_recurrent

__all__ = [
    "AlignNet",
    "CrossAttentionBlock",
    "EEGStandardizer",
    "FreqEncoder",
    "MaskRegressor",
    "ScaledResidual",
    "TimeEncoder",
    "Tokenizer",
    "TransformerBlock",
    "TransformerStack",
    "alignment_losses",
    "amplitude_spectrum",
    "n_tokens_of",
]


def n_tokens_of(n_times: int, patch_size: int) -> int:
    """Number of time tokens of a ``Conv1d(kernel=stride=patch_size)`` over ``n_times`` samples.

    Raises
    ------
    ConfigError
        If ``n_times < patch_size`` (no token at all).
    """
    if patch_size < 1 or n_times < patch_size:
        raise ConfigError(f"brainvis: patch_size={patch_size} must be in [1, n_times={n_times}]")
    return n_times // patch_size


class ScaledResidual(nn.Module):
    """``LayerNorm(x + dropout(a · y))`` with a learnable scalar ``a`` (TimeMAE's ``SublayerConnection``).

    Parameters
    ----------
    d_model : int
    dropout : float
    res_init : float
        Initial value of ``a`` (1e-8 upstream, ``enable_res_parameter=1``).
    """

    def __init__(self, d_model: int, dropout: float, res_init: float = 1e-8) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.a = nn.Parameter(torch.tensor(float(res_init)))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Combine the block input ``x`` and the sub-layer output ``y`` (same shape (B, L, d))."""
        return self.norm(x + self.dropout(self.a * y))


def _feed_forward(d_model: int, d_ffn: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, d_ffn), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ffn, d_model))


class TransformerBlock(nn.Module):
    """Self-attention + FFN (GELU, width ``d_ffn``), each with a :class:`ScaledResidual`.

    Multi-head attention is ``torch.nn.MultiheadAttention`` (query/key/value projections with bias
    and an output projection: 4·d² + 4·d parameters, as upstream's attention).

    Parameters
    ----------
    d_model, n_heads, d_ffn : int
    dropout : float
    res_init : float

    Raises
    ------
    ConfigError
        If ``n_heads`` does not divide ``d_model``.
    """

    def __init__(self, d_model: int, n_heads: int, d_ffn: int, dropout: float, res_init: float = 1e-8) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"brainvis: n_heads={n_heads} must divide d_model={d_model}")
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.ffn = _feed_forward(d_model, d_ffn, dropout)
        self.res1 = ScaledResidual(d_model, dropout, res_init)
        self.res2 = ScaledResidual(d_model, dropout, res_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d) → (B, L, d)."""
        x = self.res1(x, self.attn(x, x, x, need_weights=False)[0])
        return self.res2(x, self.ffn(x))


class CrossAttentionBlock(TransformerBlock):
    """Cross-attention (queries from ``query``, keys/values from ``memory``) + FFN, scaled residuals.

    Upstream's ``CrossAttnTRMBlock``: the same parameters as :class:`TransformerBlock`.
    """

    def forward(self, memory: torch.Tensor, query: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """``memory`` (B, Lv, d), ``query`` (B, Lq, d) → (B, Lq, d)."""
        x = self.res1(query, self.attn(query, memory, memory, need_weights=False)[0])
        return self.res2(x, self.ffn(x))


class TransformerStack(nn.Module):
    """``n_layers`` :class:`TransformerBlock` s (the encoder; also its momentum copy).

    Parameters
    ----------
    d_model, n_heads, n_layers : int
    dropout, res_init : float
        FFN width is ``4 · d_model``.
    """

    def __init__(self, d_model: int, n_heads: int, n_layers: int, dropout: float, res_init: float = 1e-8) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [TransformerBlock(d_model, n_heads, 4 * d_model, dropout, res_init) for _ in range(n_layers)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, d) → (B, L, d)."""
        for layer in self.layers:
            x = layer(x)
        return x


class TimeEncoder(nn.Module):
    """Token embedding + position + transformer encoder (BrainVis/TimeMAE time branch).

    Parameters
    ----------
    n_chans, n_times : int
        EEG shape.
    d_model, n_heads, n_layers, patch_size : int
        ``Conv1d(n_chans → d_model, kernel = stride = patch_size)`` gives ``n_times // patch_size``
        tokens.
    dropout, res_init : float

    Attributes
    ----------
    n_tokens : int
    """

    def __init__(self, n_chans: int, n_times: int, *, d_model: int, n_heads: int, n_layers: int,
                 patch_size: int = 4, dropout: float = 0.2, res_init: float = 1e-8) -> None:
        super().__init__()
        self.n_tokens = n_tokens_of(n_times, patch_size)
        self.d_model = int(d_model)
        self.input_projection = nn.Conv1d(n_chans, d_model, kernel_size=patch_size, stride=patch_size)
        self.position = nn.Embedding(self.n_tokens, d_model)
        self.encoder = TransformerStack(d_model, n_heads, n_layers, dropout, res_init)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised EEG (B, n_chans, n_times) → tokens (B, n_tokens, d_model), without positions."""
        return self.input_projection(z).transpose(1, 2)

    def positions(self) -> torch.Tensor:
        """Position embeddings, shape (n_tokens, d_model)."""
        return self.position.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Encode standardised EEG.

        Parameters
        ----------
        z : torch.Tensor, shape (batch, n_chans, n_times), float32

        Returns
        -------
        torch.Tensor, shape (batch, n_tokens, d_model), float32
        """
        return self.encoder(self.project(z) + self.positions())

    def pooled(self, z: torch.Tensor) -> torch.Tensor:
        """Mean over tokens of :meth:`forward`: (batch, d_model)."""
        return self.forward(z).mean(dim=1)


class MaskRegressor(nn.Module):
    """Learned mask token + cross-attention regressor (predicts masked-token representations).

    Parameters
    ----------
    d_model, n_heads, n_layers : int
    dropout, res_init : float
    """

    def __init__(self, d_model: int, n_heads: int, n_layers: int, dropout: float, res_init: float = 1e-8) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.randn(d_model))
        self.layers = nn.ModuleList(
            [CrossAttentionBlock(d_model, n_heads, 4 * d_model, dropout, res_init) for _ in range(n_layers)]
        )

    def forward(self, rep_visible: torch.Tensor, mask_positions: torch.Tensor) -> torch.Tensor:
        """Predict representations of masked tokens.

        Parameters
        ----------
        rep_visible : torch.Tensor, shape (B, n_visible, d_model)
            Encoder output of the visible tokens.
        mask_positions : torch.Tensor, shape (n_masked, d_model)
            Position embeddings of the masked tokens.

        Returns
        -------
        torch.Tensor, shape (B, n_masked, d_model)
        """
        query = (self.mask_token + mask_positions).expand(rep_visible.shape[0], -1, -1)
        for layer in self.layers:
            query = layer(rep_visible, query)
        return query


class Tokenizer(nn.Module):
    """Linear code book ``d_model → vocab_size``; discrete targets by Gumbel-max (or argmax).

    Parameters
    ----------
    d_model, vocab_size : int
    """

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__()
        self.center = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Code logits, (..., d_model) → (..., vocab_size)."""
        return self.center(x)

    @torch.no_grad()
    def codes(self, x: torch.Tensor, generator: torch.Generator | None = None, gumbel: bool = True) -> torch.Tensor:
        """Discrete codes, (..., d_model) → int64 (...).

        With ``gumbel`` the code is ``argmax(logits + Gumbel noise)`` — a sample of
        ``softmax(logits)``, what upstream's ``argmax(F.gumbel_softmax(logits))`` computes — with the
        noise drawn from ``generator`` (CPU) for reproducibility; else the plain argmax.
        """
        logits = self.center(x).float()
        if gumbel:
            u = torch.rand(logits.shape, generator=generator).to(logits.device)
            logits = logits - torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))
        return logits.argmax(dim=-1)


class FreqEncoder(nn.Module):
    """Frequency branch: |FFT| per channel → LSTM over frequency bins → Linear + ReLU → classifier.

    Parameters
    ----------
    n_chans : int
        LSTM input size (one feature per EEG channel).
    hidden : int
        LSTM width and feature size (128 upstream).
    n_classes : int

    Notes
    -----
    The spectrum is ``|rfft(z)|`` over time with ``norm="ortho"``, bins ``1 .. n_times // 2``
    (upstream: ``np.abs(np.fft.fft(x))[1 : 440 // 2 + 1]``, the same bins). ``"ortho"`` divides by
    √n_times so that the LSTM inputs are O(1) for any epoch length; upstream's unnormalised FFT
    differs only by that constant factor.
    """

    def __init__(self, n_chans: int, hidden: int, n_classes: int) -> None:
        super().__init__()
        self.hidden = int(hidden)
        self.lstm = nn.LSTM(n_chans, hidden, num_layers=1, batch_first=True)
        self.output = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify standardised EEG from its amplitude spectrum.

        Parameters
        ----------
        z : torch.Tensor, shape (batch, n_chans, n_times), float32

        Returns
        -------
        logits : torch.Tensor, shape (batch, n_classes)
        features : torch.Tensor, shape (batch, hidden)
            ``ReLU(output(h_last))``, the features the fusion head and AlignNet use.
        """
        spec = amplitude_spectrum(z).transpose(1, 2)  # (B, n_bins, n_chans)
        out, _ = fp32_recurrent(self.lstm, spec)
        features = F.relu(self.output(out[:, -1]))
        return self.classifier(features), features


def amplitude_spectrum(z: torch.Tensor) -> torch.Tensor:
    """``|rfft(z)|`` (orthonormal) along time without the DC bin.

    Parameters
    ----------
    z : torch.Tensor, shape (batch, n_chans, n_times), float

    Returns
    -------
    torch.Tensor, shape (batch, n_chans, n_times // 2), float32
        Bin k is frequency ``k · sfreq / n_times`` Hz, k = 1 .. n_times // 2.
    """
    return torch.fft.rfft(z.float(), dim=-1, norm="ortho")[..., 1 : z.shape[-1] // 2 + 1].abs()


class AlignNet(nn.Module):
    """"Semantic interpolation" MLP: EEG features + class logits → text-token context.

    ``in → hidden → bottleneck → hidden (+res) → bottleneck (+res) → hidden (+res) → out`` with tanh
    after every layer but the last (upstream: 1192 → 4096 → 1024 → 4096 → 1024 → 4096 → 77·768).

    Parameters
    ----------
    in_dim : int
        ``d_model + freq hidden + n_classes``.
    hidden, bottleneck : int
        Wide and narrow widths (``4 · d_model`` and ``d_model`` upstream).
    context_tokens, context_dim : int
        Output is reshaped to ``(context_tokens, context_dim)`` (77 × 768 for SD 1.5).
    """

    def __init__(self, in_dim: int, hidden: int, bottleneck: int, context_tokens: int, context_dim: int) -> None:
        super().__init__()
        self.context_tokens, self.context_dim = int(context_tokens), int(context_dim)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, bottleneck)
        self.fc3 = nn.Linear(bottleneck, hidden)
        self.fc4 = nn.Linear(hidden, bottleneck)
        self.fc5 = nn.Linear(bottleneck, hidden)
        self.out = nn.Linear(hidden, context_tokens * context_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_dim) → (B, context_tokens, context_dim)."""
        h1 = torch.tanh(self.fc1(x))
        b1 = torch.tanh(self.fc2(h1))
        h2 = torch.tanh(self.fc3(b1) + h1)
        b2 = torch.tanh(self.fc4(h2) + b1)
        h3 = torch.tanh(self.fc5(b2) + h2)
        return self.out(h3).reshape(-1, self.context_tokens, self.context_dim)


def alignment_losses(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE and cosine-embedding loss (target +1) of a predicted context against text tokens.

    Parameters
    ----------
    pred, target : torch.Tensor, shape (B, L, D)

    Returns
    -------
    mse, cos : torch.Tensor, scalars
        ``mean((pred − target)²)`` and ``mean_b (1 − cos(pred_b, target_b))`` with each trial's
        whole ``L · D`` context as one vector (upstream's ``nn.CosineEmbeddingLoss`` on the
        flattened 77·768 output).
    """
    mse = F.mse_loss(pred.float(), target.float())
    ones = torch.ones(pred.shape[0], device=pred.device)
    cos = F.cosine_embedding_loss(pred.flatten(1).float(), target.flatten(1).float(), ones)
    return mse, cos
