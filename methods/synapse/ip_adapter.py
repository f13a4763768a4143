"""SYNAPSE Stage 2: decoupled (IP-Adapter-style) cross-attention and the "EEG adaptation" head.

SYNAPSE (arXiv 2511.17547; ``CVMILab-CUK/synapse @225872a``, ``src/models/eeg_LDM2.py`` and
``src/models/attention_processor.py``) conditions a v-prediction UNet on the frozen encoder's token
latent ``(n_tokens, dim)`` directly through the cross-attention, plus ``num_tokens`` (4) extra
tokens made by an adaptation head from the token mean: ``Linear(dim → num_tokens·dim)`` →
reshape → ``LayerNorm(dim)``. Every cross-attention layer (``attn2``) gets its own key/value
projections for the extra tokens (``to_k_ip``/``to_v_ip``, initialised as copies of the layer's
``to_k``/``to_v``); its output is ``attn(q, EEG tokens) + scale · attn(q, extra tokens)``
(decoupled cross-attention of IP-Adapter, Ye et al. 2023, arXiv 2308.06721).

Own implementation of the diffusers attention-processor call interface
(``processor(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None)``).
The processors are plain callables, not ``nn.Module``s: the trainable IP weights live in one
:class:`EEGIPAdapter` module, so the UNet's parameters and the adapter's stay disjoint (parameter
counts per component, saving and loading stay clean).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from eegbench._compat import ensure_torchvision
from eegbench.errors import ConfigError

__all__ = ["DecoupledCrossAttnProcessor", "EEGAdaptationHead", "EEGIPAdapter", "IPKeyValue", "cross_attention_layers"]


class EEGAdaptationHead(nn.Module):
    """SYNAPSE "EEG adaptation": token latent → ``num_tokens`` extra context tokens.

    ``mean over tokens → Linear(dim, num_tokens·dim) → reshape (num_tokens, dim) → LayerNorm(dim)``
    (``src/models/eeg_LDM2.py: ip_adaption_modules``).

    Parameters
    ----------
    dim : int
        Token width (the UNet's cross-attention width).
    num_tokens : int
        Extra tokens (4 upstream).
    """

    def __init__(self, dim: int, num_tokens: int = 4) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ConfigError(f"synapse: ip_tokens={num_tokens} must be ≥ 1")
        self.dim, self.num_tokens = int(dim), int(num_tokens)
        self.proj = nn.Linear(dim, num_tokens * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens``: ``(batch, n_tokens, dim)`` → extra tokens ``(batch, num_tokens, dim)``."""
        pooled = tokens.mean(dim=1)
        return self.norm(self.proj(pooled).reshape(-1, self.num_tokens, self.dim))


class IPKeyValue(nn.Module):
    """Key/value projections of one cross-attention layer for the extra tokens.

    Parameters
    ----------
    to_k, to_v : nn.Linear
        The layer's own projections; their weights (and biases, if any) are copied.
    """

    def __init__(self, to_k: nn.Linear, to_v: nn.Linear) -> None:
        super().__init__()
        self.to_k_ip = nn.Linear(to_k.in_features, to_k.out_features, bias=to_k.bias is not None)
        self.to_v_ip = nn.Linear(to_v.in_features, to_v.out_features, bias=to_v.bias is not None)
        with torch.no_grad():
            self.to_k_ip.load_state_dict(to_k.state_dict())
            self.to_v_ip.load_state_dict(to_v.state_dict())
        self.to(device=to_k.weight.device, dtype=to_k.weight.dtype)


class DecoupledCrossAttnProcessor:
    """Decoupled cross-attention processor (diffusers ``Attention`` processor interface).

    The context's last ``num_tokens`` tokens are the extra (IP) tokens, attended through
    ``kv.to_k_ip``/``kv.to_v_ip``; the others through the layer's ``to_k``/``to_v``. Output before
    ``to_out``: ``SDPA(q, K, V) + scale · SDPA(q, K_ip, V_ip)``. An attention mask, if given,
    applies to the EEG tokens only (as diffusers' IP-Adapter processor). Without a context
    (self-attention) the processor computes plain attention.

    Parameters
    ----------
    kv : IPKeyValue
    num_tokens : int
    scale : float
        Weight of the extra-token branch (1.0 upstream).
    """

    def __init__(self, kv: IPKeyValue, num_tokens: int, scale: float = 1.0) -> None:
        self.kv = kv
        self.num_tokens = int(num_tokens)
        self.scale = float(scale)

    @staticmethod
    def _attend(attn, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        b = query.shape[0]
        head_dim = key.shape[-1] // attn.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, -1, attn.heads, head_dim).transpose(1, 2)

        q, k, v = split(query), split(key), split(value)
        if attn.norm_q is not None:
            q = attn.norm_q(q)
        if attn.norm_k is not None:
            k = attn.norm_k(k)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=0.0, is_causal=False)
        return out.transpose(1, 2).reshape(b, -1, attn.heads * head_dim).to(query.dtype)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the attention layer ``attn`` (a diffusers ``Attention``).

        Parameters
        ----------
        attn : diffusers.models.attention_processor.Attention
        hidden_states : torch.Tensor, shape (batch, seq, channels) or (batch, channels, h, w)
        encoder_hidden_states : torch.Tensor, shape (batch, n_ctx + num_tokens, cross_dim), optional
        attention_mask : torch.Tensor, optional
            Mask over the first ``n_ctx`` context tokens.
        temb : torch.Tensor, optional
            Time embedding (for spatially-normed attention layers).

        Returns
        -------
        torch.Tensor, same shape as ``hidden_states``

        Raises
        ------
        ValueError
            If the context has no more than ``num_tokens`` tokens.
        """
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)

        if encoder_hidden_states is None:
            ctx, ip_ctx = hidden_states, None
        else:
            if encoder_hidden_states.shape[1] <= self.num_tokens:
                raise ValueError(
                    f"decoupled cross-attention: context has {encoder_hidden_states.shape[1]} tokens, "
                    f"needs more than the {self.num_tokens} extra tokens"
                )
            ctx = encoder_hidden_states[:, : -self.num_tokens]
            ip_ctx = encoder_hidden_states[:, -self.num_tokens:]
            if attn.norm_cross:
                ctx = attn.norm_encoder_hidden_states(ctx)

        mask = None
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, ctx.shape[1], batch)
            mask = mask.view(batch, attn.heads, -1, mask.shape[-1])

        out = self._attend(attn, query, attn.to_k(ctx), attn.to_v(ctx), mask)
        if ip_ctx is not None and self.scale != 0.0:
            ip_out = self._attend(attn, query, self.kv.to_k_ip(ip_ctx), self.kv.to_v_ip(ip_ctx), None)
            out = out + self.scale * ip_out

        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def cross_attention_layers(unet: nn.Module) -> dict[str, nn.Module]:
    """The cross-attention (``attn2``) layers of a diffusers UNet, by module name.

    Parameters
    ----------
    unet : diffusers.UNet2DConditionModel

    Returns
    -------
    dict of str to diffusers.models.attention_processor.Attention
        In ``named_modules`` order; e.g. ``"down_blocks.0.attentions.0.transformer_blocks.0.attn2"``.
    """
    ensure_torchvision()  # diffusers' model imports pull transformers → torchvision
    from diffusers.models.attention_processor import Attention

    return {
        name: module
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and name.split(".")[-1] == "attn2" and module.is_cross_attention
    }


class EEGIPAdapter(nn.Module):
    """All trainable Stage-2 additions of SYNAPSE: adaptation head + per-layer IP key/values.

    Parameters
    ----------
    unet : diffusers.UNet2DConditionModel
        The UNet whose ``attn2`` layers get IP key/values (copied from their ``to_k``/``to_v``).
    dim : int
        Context width (the UNet's ``cross_attention_dim``).
    num_tokens : int
        Extra tokens (4 upstream).
    scale : float
        IP branch weight.

    Raises
    ------
    ConfigError
        If the UNet has no cross-attention layer, or their context width is not ``dim``.
    """

    def __init__(self, unet: nn.Module, dim: int, *, num_tokens: int = 4, scale: float = 1.0) -> None:
        super().__init__()
        layers = cross_attention_layers(unet)
        if not layers:
            raise ConfigError("synapse: the denoiser UNet has no cross-attention (attn2) layer")
        self.head = EEGAdaptationHead(dim, num_tokens)
        self.layer_names = list(layers)
        self.kv = nn.ModuleDict()
        for name, attn in layers.items():
            if attn.to_k.in_features != dim:
                raise ConfigError(f"synapse: {name} attends to {attn.to_k.in_features}-d context, expected {dim}")
            self.kv[name.replace(".", "__")] = IPKeyValue(attn.to_k, attn.to_v)
        self.num_tokens = int(num_tokens)
        self.scale = float(scale)

    def install(self, unet: nn.Module) -> None:
        """Set a :class:`DecoupledCrossAttnProcessor` on every ``attn2`` layer of ``unet``.

        Raises
        ------
        ConfigError
            If ``unet``'s cross-attention layers differ from the ones the adapter was built for.
        """
        layers = cross_attention_layers(unet)
        if list(layers) != self.layer_names:
            raise ConfigError("synapse: UNet cross-attention layers do not match the IP adapter")
        for name, attn in layers.items():
            kv = self.kv[name.replace(".", "__")]
            attn.set_processor(DecoupledCrossAttnProcessor(kv, self.num_tokens, self.scale))

    def set_scale(self, unet: nn.Module, scale: float) -> None:
        """Change the IP branch weight of the processors installed on ``unet``."""
        self.scale = float(scale)
        for attn in cross_attention_layers(unet).values():
            if isinstance(attn.processor, DecoupledCrossAttnProcessor):
                attn.processor.scale = self.scale

    def context(self, eeg_tokens: torch.Tensor) -> torch.Tensor:
        """UNet context: EEG tokens followed by the head's extra tokens.

        Parameters
        ----------
        eeg_tokens : torch.Tensor, shape (batch, n_tokens, dim)

        Returns
        -------
        torch.Tensor, shape (batch, n_tokens + num_tokens, dim)
        """
        return torch.cat([eeg_tokens, self.head(eeg_tokens).to(eeg_tokens.dtype)], dim=1)
