"""The backbone interface: what a method plugin may call on ``backbones``, whatever the profile.

A method receives one object with four roles (``design.md``, "A backbone Protocol"):

* ``vae`` — the frozen image autoencoder, an ``nn.Module`` (counted, never called directly by
  methods: images go through ``denoiser.encode_images`` / ``decode_latents``);
* ``denoiser`` — :class:`Denoiser`: the frozen UNet, copies to fine-tune, schedulers, the latent
  codec, class / null contexts and one sampler;
* ``text_embedder`` — :class:`TextEmbedder`: text → token states (the CLIP-text role);
* ``image_embedder`` — :class:`ImageEmbedder`: uint8 images → one embedding per image (the
  CLIP-image role).

Two implementations exist: the ``small`` profile (:class:`eegbench.backbones.Backbones`: TAEF2,
the shared small denoiser pretrained per dataset, EfficientNet-Lite0, MiniLM) and the ``paper``
profile (:class:`eegbench.backbones.sd.StableDiffusionBackbones`: a diffusers Stable Diffusion
folder, OpenCLIP ViT-H/14 and CLIP ViT-L/14 folders). The meta-device builds used by ``eegbench
params`` implement the same attributes. Methods use only what is declared here;
:func:`check_backbones` (run by :func:`eegbench.testing.check_method`) verifies an object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from eegbench.errors import ConfigError

__all__ = ["BackboneSet", "Denoiser", "ImageEmbedder", "TextEmbedder", "check_backbones"]


@runtime_checkable
class TextEmbedder(Protocol):
    """Text → token states (CLIP-text role).

    Attributes
    ----------
    dim : int
        Token width.
    max_length : int
        Tokens per text (``encode`` pads / truncates to it).
    """

    dim: int
    max_length: int

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states of ``texts``.

        Returns
        -------
        tokens : torch.Tensor, shape (B, max_length, dim), float32
        attention_mask : torch.Tensor, shape (B, max_length), int64
        """
        ...


@runtime_checkable
class ImageEmbedder(Protocol):
    """uint8 images → one embedding per image (CLIP-image role).

    Attributes
    ----------
    dim : int
        Embedding width.
    """

    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings of uint8 images (B, 3, H, W) → float32 (B, dim)."""
        ...


@runtime_checkable
class Denoiser(Protocol):
    """The denoiser role: a frozen conditional UNet, its latent codec, contexts and a sampler.

    Attributes
    ----------
    unet : diffusers.UNet2DConditionModel
        Shared and frozen; a method that fine-tunes calls :meth:`new_unet`.
    vae : torch.nn.Module
    text_embedder : TextEmbedder
        The encoder whose tokens the UNet was trained on (class and null contexts).
    scheduler_config : dict
        Training scheduler config (betas, ``prediction_type``).
    prediction_type : str
        ``"epsilon"`` or ``"v_prediction"``.
    cross_attention_dim : int
        Width of context tokens.
    context_tokens : int
        Tokens of a class / null context.
    latent_channels, latent_size : int
        Latent shape ``(latent_channels, latent_size, latent_size)`` = image size / VAE downscale.
    image_size : int
        Edge length in pixels of encoded and generated images.
    scaling_factor : float
        UNet latents = VAE latents × ``scaling_factor``.
    device : torch.device
    """

    unet: Any
    vae: Any
    text_embedder: Any
    scheduler_config: dict
    prediction_type: str
    cross_attention_dim: int
    context_tokens: int
    latent_channels: int
    latent_size: int
    image_size: int
    scaling_factor: float
    device: torch.device

    def new_unet(self) -> Any:
        """A separate, frozen copy of the UNet (float32 weights) for a method to fine-tune."""
        ...

    def new_scheduler(self, kind: str = "ddim") -> Any:
        """A diffusers scheduler: ``"ddpm"`` (training) or a sampler name."""
        ...

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → scaled latents (B, latent_channels, latent_size, latent_size) float32."""
        ...

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents → uint8 images (B, 3, image_size, image_size)."""
        ...

    def class_context(self, labels: Any) -> torch.Tensor:
        """Text context of class prompts: (B,) ints → (B, context_tokens, cross_attention_dim) float32."""
        ...

    def null_context(self, batch: int) -> torch.Tensor:
        """Unconditional context for guidance: (batch, context_tokens, cross_attention_dim) float32."""
        ...

    def sample(self, context: torch.Tensor, generators: Sequence[torch.Generator], num_inference_steps: int = 25,
               guidance_scale: float = 1.0, unet: Any = None,
               extra_context: Mapping[str, Any] | Callable[..., Mapping[str, Any]] | None = None, *,
               null_context: torch.Tensor | None = None, return_latents: bool = False, sampler: str = "ddim",
               init_latents: torch.Tensor | None = None, strength: float = 1.0) -> torch.Tensor:
        """Images from contexts with a diffusers sampler and optional classifier-free guidance.

        Parameters
        ----------
        context : torch.Tensor, shape (B, L, cross_attention_dim), float
        generators : sequence of torch.Generator, length B
            Image ``i``'s noise comes from ``generators[i]`` only (reproducible whatever the batch).
        num_inference_steps : int
        guidance_scale : float
            ``v = v_null + w (v_cond − v_null)``; 1 disables the unconditional pass.
        unet : diffusers.UNet2DConditionModel, optional
            A method's fine-tuned copy (default: the shared UNet).
        extra_context : mapping or callable, optional
            Extra UNet keywords (``class_labels``, ControlNet residuals, ...), or ``f(latent_input, t)``
            returning them at every step.
        null_context : torch.Tensor, shape (B, L, cross_attention_dim), optional
            Unconditional context (default :meth:`null_context`).
        return_latents : bool
            Return the final scaled latents instead of images.
        sampler : str
            ``"ddim"``, ``"plms"``, ``"unipc"`` or ``"dpm-solver++"``.
        init_latents : torch.Tensor, shape (B, latent_channels, latent_size, latent_size), optional
            Image-to-image from these scaled latents, noised to ``strength``.
        strength : float
            Fraction in (0, 1] of the schedule run from ``init_latents``.

        Returns
        -------
        torch.Tensor, shape (B, 3, image_size, image_size), uint8
            (or float32 latents with ``return_latents``).
        """
        ...


@runtime_checkable
class BackboneSet(Protocol):
    """Everything a method receives as ``backbones``.

    Attributes
    ----------
    profile : str
        ``"small"`` or ``"paper"``.
    device : torch.device
    image_size : int
        Edge length in pixels of training and generated images.
    vae : torch.nn.Module
    denoiser : Denoiser
    text_embedder : TextEmbedder
    image_embedder : ImageEmbedder
    """

    profile: str
    device: torch.device
    image_size: int
    vae: Any
    denoiser: Any
    text_embedder: Any
    image_embedder: Any


_DENOISER_ATTRS = ("unet", "vae", "text_embedder", "scheduler_config", "prediction_type", "cross_attention_dim",
                   "context_tokens", "latent_channels", "latent_size", "image_size", "scaling_factor", "device",
                   "new_unet", "new_scheduler", "encode_images", "decode_latents", "class_context", "null_context",
                   "sample")


def check_backbones(backbones: Any, *, roles: Sequence[str] = ("vae", "denoiser", "text_embedder",
                                                                "image_embedder")) -> None:
    """Check that ``backbones`` implements :class:`BackboneSet` for the given roles.

    Parameters
    ----------
    backbones : object
        A prepared backbone set (the small denoiser must have been prepared).
    roles : sequence of str
        Roles to check (each role is built on access; a method checks the roles it uses).

    Raises
    ------
    ConfigError
        Naming the first missing attribute or role (a role that cannot be built says why), or a
        size that disagrees (denoiser image size ≠ the set's image size).
    """
    import inspect

    who = type(backbones).__name__
    for attr in ("profile", "device", "image_size"):
        if not hasattr(backbones, attr):
            raise ConfigError(f"backbones {who}: missing attribute {attr!r}")
    for role in roles:
        try:
            value = getattr(backbones, role, None)
        except ConfigError as exc:
            raise ConfigError(f"backbones {who}: role {role!r} cannot be built ({exc})") from None
        if value is None:
            raise ConfigError(f"backbones {who}: missing role {role!r}")
    if "denoiser" in roles:
        den = backbones.denoiser
        # looked up statically: a lazily loaded shared UNet is not loaded by the check
        missing = []
        for a in _DENOISER_ATTRS:
            try:
                inspect.getattr_static(den, a)
            except AttributeError:
                missing.append(a)
        if missing:
            raise ConfigError(f"backbones {who}: denoiser {type(den).__name__} lacks {', '.join(missing)}")
        if int(den.image_size) != int(backbones.image_size):
            raise ConfigError(f"backbones {who}: denoiser image_size {den.image_size} ≠ image_size "
                              f"{backbones.image_size}")
        if den.prediction_type not in ("epsilon", "v_prediction"):
            raise ConfigError(f"backbones {who}: prediction_type {den.prediction_type!r} is not epsilon or "
                              "v_prediction")
        if not isinstance(den.text_embedder, TextEmbedder):
            raise ConfigError(f"backbones {who}: denoiser.text_embedder lacks encode/dim/max_length")
    if "text_embedder" in roles and not isinstance(backbones.text_embedder, TextEmbedder):
        raise ConfigError(f"backbones {who}: text_embedder lacks encode/dim/max_length")
    if "image_embedder" in roles and not isinstance(backbones.image_embedder, ImageEmbedder):
        raise ConfigError(f"backbones {who}: image_embedder is not callable with a dim")
