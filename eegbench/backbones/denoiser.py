"""The shared small denoiser: a class-conditional latent diffusion model pretrained once per dataset.

SYNAPSE and the other methods fine-tune a text-conditioned Stable Diffusion UNet. In the ``small``
profile no SD weights exist, so the harness pretrains a small diffusers ``UNet2DConditionModel``
on the training stimuli, in TAEF2 latent space, conditioned through cross-attention on MiniLM token
states of ``"a photo of a <class name>"`` — the same interface SD offers (latent UNet + text-token
context + scheduler config), at a size that trains on two CPU cores in minutes. Every method of a
run then starts from this one cached model, so comparisons stay fair.

Recipe (SD-2.1-like): DDPM noise schedule with 1000 steps and SD's ``scaled_linear`` betas
(0.00085 → 0.012), ``v_prediction`` targets (Salimans & Ho 2022), 10 % of the conditions replaced
by an all-zero context so classifier-free guidance (Ho & Salimans 2022) with a zero null context
works, latents multiplied by ``1 / std`` of the training latents (as SD's ``scaling_factor``),
random horizontal flips and small random resized crops (pre-encoded views), AdamW with a short
linear warm-up, gradient-norm clipping at 1, and an EMA of the weights (diffusers ``EMAModel``,
warm-up power 3/4) which is what gets saved. Sampling uses DDIM (Song et al. 2021) with
``timestep_spacing="trailing"`` so that the first step starts at the last training timestep
(Lin et al., "Common Diffusion Noise Schedules and Sample Steps are Flawed", WACV 2024).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from eegbench.errors import DataFormatError
from eegbench.locks import cache_lock

#: Bump when the pretraining recipe changes: it is part of the cache key.
CODE_VERSION = "eegbench-denoiser-1"
#: Text prompt the denoiser is conditioned on, per class.
PROMPT_TEMPLATE = "a photo of a {}"
#: Probability that a training condition is replaced by the all-zero null context.
CONDITION_DROPOUT = 0.1
#: Augmented views per stimulus that are encoded once before training (0: as is, 1: flipped,
#: others: random resized crop of 80–100 % of the area, randomly flipped).
AUGMENT_VIEWS = 4
#: Smallest area fraction of a random resized crop.
CROP_MIN_AREA = 0.8
#: Exponential-moving-average warm-up power (diffusers ``EMAModel``; 3/4 suits short runs).
EMA_POWER = 0.75
#: DDPM schedule of the pretraining (SD 2.1's betas, v-prediction).
SCHEDULER_KWARGS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "prediction_type": "v_prediction",
    "clip_sample": False,
    "timestep_spacing": "trailing",
}


def _import_diffusers():
    from eegbench._compat import ensure_torchvision

    ensure_torchvision()  # diffusers imports transformers, which imports torchvision
    import diffusers

    return diffusers


def small_unet_config(latent_channels: int, latent_size: int, cross_attention_dim: int) -> dict[str, Any]:
    """``UNet2DConditionModel`` config of the small-profile denoiser.

    Three resolution levels with widths (32, 64, 64): cross-attention at the two upper levels
    (and in the mid block), one ResNet layer per level, 4 attention heads at every level
    (diffusers' ``attention_head_dim`` is the number of heads), GroupNorm with 8 groups. With
    32 latent channels and a 384-d context this is 1,730,464 parameters; one training step at
    batch 16 on 8 × 8 latents took 0.15–0.26 s on one core of a busy 2-core CPU (measured
    2026-11-21 with other jobs running; less on an idle core).

    Parameters
    ----------
    latent_channels : int
        Input/output channels (the autoencoder's latent channels).
    latent_size : int
        Latent edge length (image size / 8).
    cross_attention_dim : int
        Dimension of the context tokens (the text embedder's ``dim``).

    Returns
    -------
    dict
        Keyword arguments of ``diffusers.UNet2DConditionModel``.
    """
    return {
        "sample_size": int(latent_size),
        "in_channels": int(latent_channels),
        "out_channels": int(latent_channels),
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 1,
        "cross_attention_dim": int(cross_attention_dim),
        "attention_head_dim": 4,
        "norm_num_groups": 8,
    }


def _scheduler_from_config(cls, config: Mapping[str, Any]):
    """``cls.from_config`` with only the keys ``cls`` accepts (no warnings about the others)."""
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return cls.from_config({k: v for k, v in config.items() if k in accepted})


#: Sampler names → (diffusers scheduler class name, extra config). ``plms`` is diffusers' PNDM with
#: ``skip_prk_steps`` (the PLMS sampler of the CompVis LDM code used by DreamDiffusion and BrainVis);
#: ``unipc`` is used by GWIT; ``ddim`` (eta 0) by SYNAPSE.
SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "plms": ("PNDMScheduler", {"skip_prk_steps": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "dpm-solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddpm": ("DDPMScheduler", {}),
}


def make_scheduler(kind: str, scheduler_config: Mapping[str, Any]):
    """Build the diffusers scheduler named ``kind`` from a training scheduler config.

    Parameters
    ----------
    kind : str
        A key of :data:`SAMPLERS`.
    scheduler_config : mapping
        ``DDPMScheduler``-style config (betas, ``num_train_timesteps``, ``prediction_type``, ...).

    Raises
    ------
    ValueError
        For an unknown ``kind`` (the message lists the known ones).
    """
    if kind not in SAMPLERS:
        raise ValueError(f"unknown sampler {kind!r}; known: {', '.join(sorted(SAMPLERS))}")
    diffusers = _import_diffusers()
    cls_name, extra = SAMPLERS[kind]
    return _scheduler_from_config(getattr(diffusers, cls_name), {**dict(scheduler_config), **extra})


def _as_uint8_images(images, what: str) -> torch.Tensor:
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        shape = tuple(getattr(images, "shape", ()))
        dtype = getattr(images, "dtype", type(images).__name__)
        raise DataFormatError(f"{what}: expected uint8 images of shape (n, 3, H, W), got {dtype} {shape}")
    return images


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of float images (B, 3, H, W) to ``size`` × ``size``."""
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def _augmented_view(images: torch.Tensor, view: int, generator: torch.Generator) -> torch.Tensor:
    """View number ``view`` of float images (B, 3, H, W): same shape.

    View 0 is the image, view 1 its mirror; further views crop a random square of
    ``CROP_MIN_AREA``–100 % of the area (uniform in area), placed uniformly, resized back to the
    full size (bilinear, via ``affine_grid``) and mirrored with probability 1/2.
    """
    if view == 0:
        return images
    if view == 1:
        return images.flip(-1)
    n = images.shape[0]
    area = CROP_MIN_AREA + (1 - CROP_MIN_AREA) * torch.rand(n, generator=generator)
    scale = area.sqrt()
    tx = (1 - scale) * (2 * torch.rand(n, generator=generator) - 1)
    ty = (1 - scale) * (2 * torch.rand(n, generator=generator) - 1)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 0, 2] = tx
    theta[:, 1, 1] = scale
    theta[:, 1, 2] = ty
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _module_signature(module: Any) -> dict[str, Any]:
    sig: dict[str, Any] = {"class": f"{type(module).__module__}.{type(module).__qualname__}"}
    for attr in ("latent_channels", "width", "downscale", "dim", "max_length"):
        if hasattr(module, attr):
            sig[attr] = getattr(module, attr)
    return sig


def denoiser_cache_key(
    backbones,
    images: torch.Tensor,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    dataset_key: str,
    seed: int,
    unet_config: Mapping[str, Any],
) -> str:
    """sha256 (hex) identifying a pretraining: inputs, settings, seed, model configs and code version.

    The images enter as the sorted list of (sha256 of the image bytes, label) pairs, so the key does
    not depend on the order of the stimuli.
    """
    pairs = sorted(
        (hashlib.sha256(images[i].contiguous().numpy().tobytes()).hexdigest(), int(labels[i]))
        for i in range(images.shape[0])
    )
    payload = {
        "code_version": CODE_VERSION,
        "dataset_key": str(dataset_key),
        "image_shape": list(images.shape[1:]),
        "images": pairs,
        "class_names": [str(c) for c in class_names],
        "profile": getattr(backbones, "profile", None),
        "settings": dataclasses.asdict(backbones.settings),
        "seed": int(seed),
        "unet_config": dict(unet_config),
        "scheduler": SCHEDULER_KWARGS,
        "augment_views": AUGMENT_VIEWS,
        "vae": _module_signature(backbones.vae),
        "text_embedder": _module_signature(backbones.text_embedder),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class LatentDiffusionDenoiser:
    """Shared part of every denoiser role: schedulers, class contexts and the sampler.

    Subclasses set the attributes of :class:`eegbench.backbones.protocol.Denoiser` (``_unet``,
    ``scheduler_config``, ``latent_channels``, ``latent_size``, ``image_size``, ``class_tokens``,
    ``device``, ...) and implement :meth:`encode_images`, :meth:`decode_latents` and
    :meth:`null_context`. :class:`PretrainedDenoiser` (small profile) and
    :class:`eegbench.backbones.sd.StableDiffusionDenoiser` (paper profile) derive from it.
    """

    @property
    def unet(self):
        """The shared frozen UNet (``_unet``). Do not modify it: use :meth:`new_unet`."""
        return self._unet

    def new_scheduler(self, kind: str = "ddim"):
        """A diffusers scheduler built from :attr:`scheduler_config`.

        Parameters
        ----------
        kind : str
            ``"ddpm"`` for training (``add_noise``, ``get_velocity``), or a sampler name of
            :data:`SAMPLERS` (``"ddim"``, ``"plms"``, ``"unipc"``, ``"dpm-solver++"``).

        Raises
        ------
        ValueError
            For an unknown ``kind``.
        """
        return make_scheduler(kind, self.scheduler_config)


    # ----------------------------------------------------------------- conditions
    def class_context(self, labels) -> torch.Tensor:
        """Text-token context of the class prompts.

        Parameters
        ----------
        labels : torch.Tensor, numpy.ndarray or sequence of int, shape (B,)
            Class indices into :attr:`class_names`.

        Returns
        -------
        torch.Tensor, shape (B, context_tokens, cross_attention_dim), float32, on :attr:`device`

        Raises
        ------
        ValueError
            If a label is outside ``[0, n_classes)``.
        """
        idx = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).long()
        idx = idx.reshape(-1).cpu()
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self.class_names)):
            raise ValueError(f"class_context: labels must be in [0, {len(self.class_names)}), got {idx.tolist()}")
        return self.class_tokens[idx.to(self.class_tokens.device)]

    # ----------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        context: torch.Tensor,
        generators: Sequence[torch.Generator],
        num_inference_steps: int = 25,
        guidance_scale: float = 1.0,
        unet=None,
        extra_context: Mapping[str, Any] | Callable[[torch.Tensor, torch.Tensor], Mapping[str, Any]] | None = None,
        *,
        null_context: torch.Tensor | None = None,
        return_latents: bool = False,
        sampler: str = "ddim",
        init_latents: torch.Tensor | None = None,
        strength: float = 1.0,
    ) -> torch.Tensor:
        """Generate images with a diffusers sampler (DDIM by default) and optional classifier-free guidance.

        Parameters
        ----------
        context : torch.Tensor, shape (B, L, cross_attention_dim), float
            Cross-attention context per image (any token count L, e.g. :meth:`class_context` or a
            method's EEG tokens).
        generators : sequence of torch.Generator, length B
            One generator per image: the initial noise of image i comes from ``generators[i]``
            only (diffusers ``randn_tensor``), so each image is reproducible independently of
            the batch it is generated in.
        num_inference_steps : int
            DDIM steps.
        guidance_scale : float
            Classifier-free guidance weight w: ``v = v_null + w (v_cond − v_null)``; 1 disables
            the unconditional pass.
        unet : diffusers.UNet2DConditionModel, optional
            A method's fine-tuned copy; defaults to the shared pretrained UNet.
        extra_context : mapping or callable, optional
            Extra keyword arguments of every UNet call (e.g. ``cross_attention_kwargs``,
            ``down_block_additional_residuals``). A mapping's tensors (and lists/tuples of tensors)
            whose first dimension is B are repeated for the unconditional half when guidance is
            on. A callable ``f(latent_model_input, t) -> mapping`` is called at every step with the
            UNet's full input batch (2B rows under guidance: conditional first, then unconditional).
        null_context : torch.Tensor, shape (B, L, cross_attention_dim), optional
            Unconditional context for guidance; :meth:`null_context` by default (all zeros for the
            small denoiser, the text encoder's tokens of ``""`` for Stable Diffusion).
        return_latents : bool
            Return the final scaled latents instead of decoded images.
        sampler : str
            A key of :data:`SAMPLERS`: ``"ddim"`` (eta 0), ``"plms"``, ``"unipc"``, ``"dpm-solver++"``.
        init_latents : torch.Tensor, shape (B, latent_channels, latent_size, latent_size), optional
            Image-to-image: start from these scaled latents (:meth:`encode_images`) noised to the
            level given by ``strength`` (as diffusers' img2img pipelines), with the noise of image i
            drawn from ``generators[i]``.
        strength : float
            Fraction in (0, 1] of the ``num_inference_steps`` schedule that is run from
            ``init_latents`` (1 = from pure noise); ignored without ``init_latents``.

        Returns
        -------
        torch.Tensor, shape (B, 3, image_size, image_size), uint8, on :attr:`device`
            (or (B, latent_channels, latent_size, latent_size) float32 latents with ``return_latents``).

        Raises
        ------
        ValueError
            If ``context`` is not (B, L, cross_attention_dim), ``len(generators) != B``, the
            sampler is unknown, or ``strength`` is outside (0, 1].
        """
        from diffusers.utils.torch_utils import randn_tensor

        unet = self._unet if unet is None else unet
        if context.ndim != 3 or context.shape[-1] != unet.config.cross_attention_dim:
            raise ValueError(
                f"sample: context must have shape (B, L, {unet.config.cross_attention_dim}), got {tuple(context.shape)}"
            )
        batch = context.shape[0]
        generators = list(generators)
        if len(generators) != batch:
            raise ValueError(f"sample: {len(generators)} generators for a batch of {batch}")
        if batch == 0:
            return torch.zeros(0, 3, self.image_size, self.image_size, dtype=torch.uint8, device=self.device)
        dtype = unet.dtype
        device = self.device
        scheduler = self.new_scheduler(sampler)
        scheduler.set_timesteps(int(num_inference_steps), device=device)
        shape = (batch, unet.config.in_channels, self.latent_size, self.latent_size)
        noise = randn_tensor(shape, generator=generators, device=device, dtype=torch.float32)
        timesteps = scheduler.timesteps
        if init_latents is None:
            latents = noise * scheduler.init_noise_sigma
        else:
            if not 0.0 < strength <= 1.0:
                raise ValueError(f"sample: strength={strength} must be in (0, 1]")
            if tuple(init_latents.shape) != shape:
                raise ValueError(f"sample: init_latents shape {tuple(init_latents.shape)}, expected {shape}")
            n = int(num_inference_steps)
            start = (n - min(max(int(round(n * strength)), 1), n)) * scheduler.order
            timesteps = scheduler.timesteps[start:]
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(start)
            latents = scheduler.add_noise(init_latents.to(device, torch.float32), noise, timesteps[:1])
        guided = guidance_scale != 1.0
        context = context.to(device, dtype)
        if guided:
            null = self.null_context(batch).to(dtype) if null_context is None else null_context.to(device, dtype)
            if null.shape[0] != batch or null.shape[-1] != context.shape[-1]:
                raise ValueError(f"sample: null_context shape {tuple(null.shape)} does not match context")
            if null.shape[1] != context.shape[1]:  # pad / cut the null to the context's token count
                fixed = torch.zeros_like(context)
                n = min(null.shape[1], context.shape[1])
                fixed[:, :n] = null[:, :n]
                null = fixed
            context = torch.cat([context, null])
        static_extra = None if extra_context is None or callable(extra_context) else dict(extra_context)
        if static_extra is not None and guided:
            static_extra = {k: _repeat_batch(v, batch) for k, v in static_extra.items()}
        for t in timesteps:
            model_in = torch.cat([latents, latents]) if guided else latents
            model_in = scheduler.scale_model_input(model_in, t).to(dtype)
            kwargs = dict(extra_context(model_in, t)) if callable(extra_context) else (static_extra or {})
            out = unet(model_in, t, encoder_hidden_states=context, **kwargs).sample.float()
            if guided:
                cond, uncond = out.chunk(2)
                out = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(out, t, latents).prev_sample
        if return_latents:
            return latents
        return self.decode_latents(latents)




class PretrainedDenoiser(LatentDiffusionDenoiser):
    """The pretrained shared denoiser with its autoencoder, class prompts and a generic sampler.

    Built by :func:`prepare_denoiser` (``Backbones.prepare_denoiser``); not meant to be constructed
    by hand.

    Attributes
    ----------
    scheduler_config : dict
        Config of the training ``DDPMScheduler`` plus ``set_alpha_to_one=False`` for DDIM (as SD's
        stored configs); build any diffusers scheduler from it with
        ``DDIMScheduler.from_config(scheduler_config)`` etc. (:meth:`new_scheduler` drops the keys a
        scheduler class does not take, which avoids diffusers' "not expected" warning).
    prediction_type : str
        ``"v_prediction"``.
    cross_attention_dim : int
        Dimension of context tokens (the text embedder's ``dim``; 384 for MiniLM).
    context_tokens : int
        Tokens per class context (the text embedder's ``max_length``).
    latent_channels : int
    latent_size : int
        Latent edge length, ``image_size // 8``.
    scaling_factor : float
        Latents seen by the UNet are ``vae.encode(x) * scaling_factor`` (1 / std of the training latents).
    image_size : int
        Edge length in pixels of encoded / decoded images.
    class_names : tuple of str
    class_prompts : tuple of str
        ``"a photo of a <class name>"`` per class.
    class_tokens : torch.Tensor, shape (n_classes, context_tokens, cross_attention_dim), float32
        Text tokens of the class prompts, on :attr:`device`.
    train_seconds : float
        Wall time of the pretraining in s (encoding the stimuli plus the optimisation), as measured
        when it ran (also when loaded from the cache).
    final_loss : float
        Mean v-prediction MSE over the last 50 training steps.
    loaded_from_cache : bool
        True if this object was loaded from the cache instead of being trained now.
    directory : Path
        Cache folder (``unet/`` as diffusers ``save_pretrained`` output, ``denoiser.json``).
    key : str
        Cache key (sha256 hex).
    device : torch.device
    """

    def __init__(
        self,
        *,
        unet,
        vae,
        text_embedder,
        meta: Mapping[str, Any],
        directory: Path,
        device: torch.device,
        loaded_from_cache: bool,
    ) -> None:
        self._unet = unet.to(device).eval().requires_grad_(False)
        self.vae = vae
        self.text_embedder = text_embedder
        self.device = torch.device(device)
        self.directory = Path(directory)
        self.loaded_from_cache = loaded_from_cache
        self.meta = dict(meta)
        self.key: str = meta["key"]
        self.scheduler_config: dict[str, Any] = dict(meta["scheduler_config"])
        self.prediction_type: str = self.scheduler_config["prediction_type"]
        self.scaling_factor = float(meta["scaling_factor"])
        self.image_size = int(meta["image_size"])
        self.latent_channels = int(unet.config.in_channels)
        self.latent_size = int(unet.config.sample_size)
        self.cross_attention_dim = int(unet.config.cross_attention_dim)
        self.context_tokens = int(meta["context_tokens"])
        self.class_names = tuple(meta["class_names"])
        self.class_prompts = tuple(PROMPT_TEMPLATE.format(c) for c in self.class_names)
        self.train_seconds = float(meta["train_seconds"])
        self.final_loss = float(meta["final_loss"])
        tokens, _ = text_embedder.encode(list(self.class_prompts))
        self.class_tokens = tokens.to(self.device, torch.float32)

    # ----------------------------------------------------------------- models
    def new_unet(self):
        """A fresh copy of the pretrained UNet for a method to fine-tune.

        Returns
        -------
        diffusers.UNet2DConditionModel
            On :attr:`device`, eval mode, every parameter with ``requires_grad=False`` (a method
            enables the parts it trains).
        """
        return copy.deepcopy(self._unet).to(self.device).eval().requires_grad_(False)

    # ----------------------------------------------------------------- images
    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Encode uint8 images to scaled latents.

        Parameters
        ----------
        images : torch.Tensor or numpy.ndarray, shape (B, 3, H, W), uint8
            Resized (antialiased bilinear) to :attr:`image_size` if needed.

        Returns
        -------
        torch.Tensor, shape (B, latent_channels, latent_size, latent_size), float32, on :attr:`device`
            ``vae.encode(images / 255) * scaling_factor``.

        Raises
        ------
        DataFormatError
            If ``images`` is not uint8 of shape (B, 3, H, W).
        """
        x = _as_uint8_images(images, "PretrainedDenoiser.encode_images").to(self.device, torch.float32) / 255.0
        x = _resize(x, self.image_size)
        return self.vae.encode(x) * self.scaling_factor

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode scaled latents to uint8 images.

        Parameters
        ----------
        latents : torch.Tensor, shape (B, latent_channels, h, w), float

        Returns
        -------
        torch.Tensor, shape (B, 3, 8h, 8w), uint8, on the device of ``latents``
        """
        x = self.vae.decode(latents.to(self.device, torch.float32) / self.scaling_factor)
        return (x * 255.0).round().clamp(0, 255).to(torch.uint8).to(latents.device)

    def null_context(self, batch: int) -> torch.Tensor:
        """The all-zero null context used for classifier-free guidance.

        Returns
        -------
        torch.Tensor, shape (batch, context_tokens, cross_attention_dim), float32 zeros, on :attr:`device`
        """
        return torch.zeros(batch, self.context_tokens, self.cross_attention_dim, device=self.device)


def _repeat_batch(value: Any, batch: int) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return torch.cat([value, value])
    if isinstance(value, (list, tuple)):
        return type(value)(_repeat_batch(v, batch) for v in value)
    return value


# --------------------------------------------------------------------------------- pretraining
def _pretrain(
    backbones,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_tokens: torch.Tensor,
    unet_config: Mapping[str, Any],
    *,
    seed: int,
):
    """Encode augmented views and train the UNet; returns (ema unet, meta dict without key/paths)."""
    from tqdm.auto import tqdm

    diffusers = _import_diffusers()
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    settings = backbones.settings
    device = torch.device(backbones.device)
    vae = backbones.vae
    progress = bool(getattr(backbones, "progress", True))
    generator = torch.Generator().manual_seed(int(seed))
    t0 = time.perf_counter()

    # 1. pre-encode augmented views (the autoencoder costs far more than a UNet step), view-major
    chunk = 32
    starts = [(v, i) for v in range(AUGMENT_VIEWS) for i in range(0, images.shape[0], chunk)]
    encoded = []
    with torch.no_grad():
        for view, start in tqdm(starts, desc="denoiser: encode stimuli", disable=not progress, leave=False):
            x = _resize(images[start : start + chunk].to(device, torch.float32) / 255.0, backbones.image_size)
            encoded.append(vae.encode(_augmented_view(x, view, generator)).float().cpu())
    latents = torch.cat(encoded)
    view_labels = labels.repeat(AUGMENT_VIEWS)
    scaling_factor = float(1.0 / latents.std().clamp_min(1e-6))
    latents = (latents * scaling_factor).to(device)
    encode_seconds = time.perf_counter() - t0

    # 2. train (through the harness's one stage loop; the main process pretrains alone)
    from eegbench.training import Stage, StageTrainer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        unet = diffusers.UNet2DConditionModel(**unet_config)
    unet.to(device).train()
    noise_scheduler = diffusers.DDPMScheduler(**SCHEDULER_KWARGS)
    steps, batch = int(settings.denoiser_steps), int(settings.denoiser_batch_size)
    class_tokens = class_tokens.to(device)
    n = latents.shape[0]
    n_timesteps = int(noise_scheduler.config.num_train_timesteps)

    def adamw(params):
        try:  # the fused kernel is ~5x faster than the per-tensor loop on the CPU
            return torch.optim.AdamW(params, lr=float(settings.denoiser_lr), weight_decay=1e-2, fused=True)
        except (RuntimeError, ValueError):
            return torch.optim.AdamW(params, lr=float(settings.denoiser_lr), weight_decay=1e-2)

    def step(model, _batch):
        # batches with replacement, noise, timesteps and condition dropout all from ``generator``
        idx = torch.randint(n, (batch,), generator=generator)
        x0 = latents[idx.to(device)]
        noise = torch.randn(x0.shape, generator=generator).to(device)
        t = torch.randint(n_timesteps, (batch,), generator=generator).to(device)
        drop = (torch.rand(batch, generator=generator) < CONDITION_DROPOUT).to(device)
        context = class_tokens[view_labels[idx].to(device)]
        context = torch.where(drop[:, None, None], torch.zeros_like(context), context)
        noisy = noise_scheduler.add_noise(x0, noise, t)
        target = noise_scheduler.get_velocity(x0, noise, t)
        pred = model(noisy, t, encoder_hidden_states=context).sample
        return {"loss": F.mse_loss(pred.float(), target.float())}

    stage = Stage(
        model=unet, step=step, optimizer=adamw, grad_clip=1.0, generators=(generator,), log_every=25,
        scheduler=lambda opt: get_scheduler("constant_with_warmup", opt, num_warmup_steps=min(100, max(steps // 10, 1)),
                                            num_training_steps=steps),
        ema=lambda params: EMAModel(params, decay=0.9999, use_ema_warmup=True, power=EMA_POWER, foreach=True),
        distributed=False,
    )
    trainer = StageTrainer(device=device, progress=progress, desc="denoiser:")
    losses = trainer.run_stage("pretrain", steps, lambda: stage).losses
    unet.eval().requires_grad_(False)
    train_seconds = time.perf_counter() - t0
    tail = losses[-50:]
    meta = {
        # SD's stored scheduler configs carry DDIM's ``set_alpha_to_one=False`` too
        "scheduler_config": {
            **{k: v for k, v in dict(noise_scheduler.config).items() if not k.startswith("_")},
            "set_alpha_to_one": False,
        },
        "scaling_factor": scaling_factor,
        "train_seconds": train_seconds,
        "encode_seconds": encode_seconds,
        "final_loss": float(np.mean(tail)) if tail else float("nan"),
        "loss_every_50": [float(np.mean(losses[i : i + 50])) for i in range(0, len(losses), 50)],
        "n_training_latents": int(n),
    }
    return unet, meta


def prepare_denoiser(backbones, images, labels, class_names, *, dataset_key: str, seed: int = 0) -> PretrainedDenoiser:
    """Pretrain the shared denoiser on stimulus images, or load it from the cache.

    Called by ``Backbones.prepare_denoiser``; see the module docstring for the recipe. The cache
    folder is ``backbones.cache_dir / "denoiser" / <key[:24]>`` with the EMA UNet
    (``unet/``, diffusers ``save_pretrained``, safetensors) and ``denoiser.json`` (scheduler config,
    scaling factor, image size, context tokens, class names, timings, losses and the key inputs). It
    is written to a temporary folder and renamed into place, so readers never see half a cache.

    Parameters
    ----------
    backbones : eegbench.backbones.Backbones or eegbench.backbones.tiny.TinyBackbones
        Supplies ``vae``, ``text_embedder``, ``settings`` (steps, batch size, lr), ``image_size``,
        ``device``, ``cache_dir``, ``progress`` and optionally ``unet_config`` (defaults to
        :func:`small_unet_config`).
    images : numpy.ndarray or torch.Tensor, shape (n_images, 3, H, W), uint8
        Training stimuli (resized to ``backbones.image_size`` if needed).
    labels : array-like of int, shape (n_images,)
        Class of each image, indexing ``class_names``.
    class_names : sequence of str
        Class names; the condition of class c is the text tokens of ``"a photo of a <c>"``.
    dataset_key : str
        Dataset name + version (part of the cache key).
    seed : int
        Seed of the UNet initialisation, augmentation, batches, noise and condition dropout.

    Returns
    -------
    PretrainedDenoiser

    Raises
    ------
    DataFormatError
        If the images are not uint8 (n, 3, H, W), are empty, or the labels do not match them or
        ``class_names``.
    """
    images = _as_uint8_images(images, f"prepare_denoiser({dataset_key})").cpu()
    labels_np = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64).reshape(-1)
    class_names = [str(c) for c in class_names]
    if images.shape[0] == 0:
        raise DataFormatError(f"prepare_denoiser({dataset_key}): no training images")
    if labels_np.shape[0] != images.shape[0]:
        raise DataFormatError(
            f"prepare_denoiser({dataset_key}): {images.shape[0]} images but {labels_np.shape[0]} labels"
        )
    if not class_names or labels_np.min() < 0 or labels_np.max() >= len(class_names):
        raise DataFormatError(
            f"prepare_denoiser({dataset_key}): labels must index the {len(class_names)} class names, "
            f"got range [{labels_np.min()}, {labels_np.max()}]"
        )
    diffusers = _import_diffusers()

    vae, text = backbones.vae, backbones.text_embedder
    image_size = int(backbones.image_size)
    down = int(getattr(vae, "downscale", 8))
    if image_size % down:
        raise DataFormatError(f"prepare_denoiser: image size {image_size} is not a multiple of {down}")
    unet_config = getattr(backbones, "unet_config", None) or small_unet_config(
        vae.latent_channels, image_size // down, text.dim
    )
    key = denoiser_cache_key(
        backbones, images, labels_np, class_names, dataset_key=dataset_key, seed=seed, unet_config=unet_config
    )
    root = Path(backbones.cache_dir) / "denoiser"
    final = root / key[:24]
    device = torch.device(backbones.device)

    def load(directory: Path) -> PretrainedDenoiser | None:
        meta_file = directory / "denoiser.json"
        if not (meta_file.is_file() and (directory / "unet" / "config.json").is_file()):
            return None
        try:
            meta = json.loads(meta_file.read_text())
            if meta.get("key") != key:
                return None
            unet = diffusers.UNet2DConditionModel.from_pretrained(str(directory / "unet"), local_files_only=True)
        except (OSError, ValueError, RuntimeError):  # damaged cache: retrain
            return None
        return PretrainedDenoiser(
            unet=unet, vae=vae, text_embedder=text, meta=meta, directory=directory, device=device, loaded_from_cache=True
        )

    def _load_or_train() -> PretrainedDenoiser:
        cached = load(final)
        if cached is not None:
            return cached
        if final.exists():  # complete folders only appear by rename, so this one was damaged by hand
            shutil.rmtree(final, ignore_errors=True)

        prompts = [PROMPT_TEMPLATE.format(c) for c in class_names]
        class_tokens, _ = text.encode(prompts)
        unet, meta = _pretrain(
            backbones, images, torch.from_numpy(labels_np), class_tokens.float(), unet_config, seed=seed
        )
        meta.update(
            {
                "key": key,
                "code_version": CODE_VERSION,
                "dataset_key": str(dataset_key),
                "seed": int(seed),
                "n_images": int(images.shape[0]),
                "class_names": class_names,
                "image_size": image_size,
                "context_tokens": int(class_tokens.shape[1]),
                "settings": dataclasses.asdict(backbones.settings),
                "profile": getattr(backbones, "profile", None),
                "unet_config": dict(unet_config),
                "augment_views": AUGMENT_VIEWS,
                "condition_dropout": CONDITION_DROPOUT,
                "prompt_template": PROMPT_TEMPLATE,
                "n_parameters": int(sum(p.numel() for p in unet.parameters())),
            }
        )
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-{key[:24]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            unet.save_pretrained(str(tmp / "unet"), safe_serialization=True)
            (tmp / "denoiser.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            try:
                os.rename(tmp, final)
            except OSError:
                if load(final) is None:  # not a concurrent writer's finished copy: a real failure
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return PretrainedDenoiser(
            unet=unet, vae=vae, text_embedder=text, meta=meta, directory=final, device=device, loaded_from_cache=False
        )

    with cache_lock(final, what="the shared denoiser"):  # one process trains it; the others wait and load it
        return _load_or_train()

