"""SYNAPSE Stage 2: decoupled (IP-Adapter) cross-attention and the "EEG adaptation" head, on diffusers' pieces.

SYNAPSE (arXiv 2511.17547; ``CVMILab-CUK/synapse @225872a``, ``src/models/eeg_LDM2.py`` and
``src/models/attention_processor.py``) conditions a v-prediction UNet on the frozen encoder's token
latent ``(n_tokens, dim)`` directly through the cross-attention, plus ``num_tokens`` (4) extra
tokens made by an adaptation head from the token mean: ``Linear(dim → num_tokens·dim)`` →
reshape → ``LayerNorm(dim)`` — diffusers' :class:`~diffusers.models.embeddings.ImageProjection`
applied to the mean token. Every cross-attention layer (``attn2``) gets its own key/value
projections for the extra tokens (``to_k_ip``/``to_v_ip``, initialised as copies of the layer's
``to_k``/``to_v``); its output is ``attn(q, EEG tokens) + scale · attn(q, extra tokens)``
(decoupled cross-attention of IP-Adapter, Ye et al. 2023, arXiv 2308.06721) — diffusers'
:class:`~diffusers.models.attention_processor.IPAdapterAttnProcessor2_0`.

The processors hold the trainable IP weights. They are kept in one :class:`EEGIPAdapter` module and
attached to the UNet's ``attn2`` layers without becoming UNet submodules, so the UNet's parameters
and the adapter's stay disjoint (parameter counts per component, saving and loading stay clean).
"""

from __future__ import annotations

import torch
from torch import nn

from eegbench._compat import ensure_torchvision
from eegbench.errors import ConfigError

ensure_torchvision()  # diffusers' model imports pull transformers → torchvision
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0  # noqa: E402
from diffusers.models.embeddings import ImageProjection  # noqa: E402

__all__ = ["DecoupledCrossAttnProcessor", "EEGAdaptationHead", "EEGIPAdapter", "cross_attention_layers"]


def _attr(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


class EEGAdaptationHead(ImageProjection):
    """SYNAPSE "EEG adaptation": token latent → ``num_tokens`` extra context tokens.

    ``mean over tokens`` → diffusers' ``ImageProjection`` (``Linear(dim, num_tokens·dim)`` → reshape
    ``(num_tokens, dim)`` → ``LayerNorm(dim)``; ``src/models/eeg_LDM2.py: ip_adaption_modules``).

    Parameters
    ----------
    dim : int
        Token width (the UNet's cross-attention width).
    num_tokens : int
        Extra tokens (4 upstream).

    Raises
    ------
    ConfigError
        For ``num_tokens < 1``.
    """

    def __init__(self, dim: int, num_tokens: int = 4) -> None:
        if num_tokens < 1:
            raise ConfigError(f"synapse: ip_tokens={num_tokens} must be ≥ 1")
        super().__init__(image_embed_dim=dim, cross_attention_dim=dim, num_image_text_embeds=num_tokens)
        self.dim, self.num_tokens = int(dim), int(num_tokens)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens``: ``(batch, n_tokens, dim)`` float → extra tokens ``(batch, num_tokens, dim)``."""
        return super().forward(tokens.mean(dim=1))


class DecoupledCrossAttnProcessor(IPAdapterAttnProcessor2_0):
    """diffusers' IP-Adapter attention processor for one ``attn2`` layer, fed one concatenated context.

    The context's last ``num_tokens`` tokens are the extra (IP) tokens, attended through
    ``to_k_ip[0]``/``to_v_ip[0]`` (initialised as copies of the layer's ``to_k``/``to_v``); the
    others through the layer's own ``to_k``/``to_v``. Output before ``to_out``:
    ``SDPA(q, K, V) + scale · SDPA(q, K_ip, V_ip)``. The context is split here and handed to diffusers
    as its ``(encoder_hidden_states, [ip_hidden_states])`` pair, so the UNet, classifier-free
    guidance and the samplers keep passing one tensor.

    Parameters
    ----------
    attn : diffusers.models.attention_processor.Attention
        The layer whose ``to_k``/``to_v`` weights are copied.
    num_tokens : int
    scale : float
        Weight of the extra-token branch (1.0 upstream).
    """

    def __init__(self, attn, num_tokens: int, scale: float = 1.0) -> None:
        unsupported = [name for name in ("to_k.bias", "to_v.bias", "norm_q", "norm_k")
                       if _attr(attn, name) is not None]
        if unsupported:  # diffusers' processor has no bias on to_k_ip/to_v_ip and applies no q/k norm
            raise ConfigError(f"synapse: the IP-Adapter processor does not support attention layers with "
                              f"{', '.join(unsupported)}")
        super().__init__(hidden_size=attn.to_k.out_features, cross_attention_dim=attn.to_k.in_features,
                         num_tokens=(int(num_tokens),), scale=float(scale))
        with torch.no_grad():
            self.to_k_ip[0].weight.copy_(attn.to_k.weight)
            self.to_v_ip[0].weight.copy_(attn.to_v.weight)
        self.to(device=attn.to_k.weight.device, dtype=attn.to_k.weight.dtype)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **kwargs) -> torch.Tensor:
        """Apply the attention layer ``attn`` (a diffusers ``Attention``).

        Parameters
        ----------
        attn : diffusers.models.attention_processor.Attention
        hidden_states : torch.Tensor, shape (batch, seq, channels) or (batch, channels, h, w)
        encoder_hidden_states : torch.Tensor, shape (batch, n_ctx + num_tokens, cross_dim), optional
        attention_mask : torch.Tensor, optional
            Mask over the first ``n_ctx`` context tokens.
        temb : torch.Tensor, optional

        Returns
        -------
        torch.Tensor, same shape as ``hidden_states``

        Raises
        ------
        ValueError
            If the context has no more than ``num_tokens`` tokens.
        """
        if encoder_hidden_states is None:  # no context: plain attention (diffusers' processor needs one)
            return AttnProcessor2_0()(attn, hidden_states, None, attention_mask, temb)
        if not isinstance(encoder_hidden_states, tuple):
            n = self.num_tokens[0]
            if encoder_hidden_states.shape[1] <= n:
                raise ValueError(f"decoupled cross-attention: context has {encoder_hidden_states.shape[1]} tokens, "
                                 f"needs more than the {n} extra tokens")
            encoder_hidden_states = (encoder_hidden_states[:, :-n], [encoder_hidden_states[:, -n:]])
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


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
        self.kv = nn.ModuleDict()  # one diffusers IP-Adapter processor (its to_k_ip/to_v_ip) per attn2 layer
        for name, attn in layers.items():
            if attn.to_k.in_features != dim:
                raise ConfigError(f"synapse: {name} attends to {attn.to_k.in_features}-d context, expected {dim}")
            self.kv[name.replace(".", "__")] = DecoupledCrossAttnProcessor(attn, num_tokens, scale)
        self.num_tokens = int(num_tokens)
        self.scale = float(scale)

    def install(self, unet: nn.Module) -> None:
        """Set this adapter's :class:`DecoupledCrossAttnProcessor` on every ``attn2`` layer of ``unet``.

        The processors stay submodules of the adapter only (``Attention.set_processor`` would make
        them UNet submodules too, mixing the adapter's parameters into the UNet's).

        Raises
        ------
        ConfigError
            If ``unet``'s cross-attention layers differ from the ones the adapter was built for.
        """
        layers = cross_attention_layers(unet)
        if list(layers) != self.layer_names:
            raise ConfigError("synapse: UNet cross-attention layers do not match the IP adapter")
        for name, attn in layers.items():
            attn._modules.pop("processor", None)
            object.__setattr__(attn, "processor", self.kv[name.replace(".", "__")])

    def set_scale(self, unet: nn.Module, scale: float) -> None:
        """Change the IP branch weight of the processors installed on ``unet``."""
        self.scale = float(scale)
        for processor in self.kv.values():
            processor.scale = [self.scale]

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
