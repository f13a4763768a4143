"""Paper-profile backbones from local folders: Stable Diffusion (diffusers), OpenCLIP and CLIP.

The folders are the ones a Hugging Face hub download or ``save_pretrained`` leaves, named after
the model repositories, under the weights root (every path can be replaced with
``--backbone-set KEY=PATH``):

============================  ==========================================  ===================
key (``--backbone-set``)      folder under ``<weights root>``             format
============================  ==========================================  ===================
``sd21``                      ``stable-diffusion-2-1/``                   diffusers pipeline
``sd21-base``                 ``stable-diffusion-2-1-base/``              diffusers pipeline
``sd15``                      ``stable-diffusion-v1-5/``                  diffusers pipeline
``openclip-h14``              ``CLIP-ViT-H-14-laion2B-s32B-b79K/``        open_clip local-dir
``clip-l14``                  ``clip-vit-large-patch14/``                 transformers CLIPModel
============================  ==========================================  ===================

Everything is loaded with ``local_files_only=True`` (diffusers / transformers) or open_clip's
``local-dir:`` schema; nothing is downloaded. :func:`check_folder` names the first missing file.

Stable Diffusion conventions (diffusers ``StableDiffusionPipeline``; Rombach et al. 2022):
images enter the ``AutoencoderKL`` in [-1, 1]; latents are ``latent_dist`` means ×
``vae.config.scaling_factor``; the latent edge is the image edge / 2^(VAE levels − 1) (8); the
text context is the text encoder's ``last_hidden_state`` of tokens padded to 77 (SD 2.x folders
store the OpenCLIP text tower without its last layer, which gives the penultimate-layer context);
the null context of classifier-free guidance is the encoding of ``""``; the training target is ε
or v from the folder's ``scheduler_config.json``.

The teachers of the published recipes (``research/methods.md`` §3–6) are further roles:
``openclip-h14`` final-layer text tokens + ``ln_final`` (77 × 1024) and image embeddings (1024)
for SYNAPSE, the ``clip-l14`` image embedding (768) for DreamDiffusion and its text tokens
(77 × 768) for BrainVis.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from eegbench.backbones.denoiser import PROMPT_TEMPLATE, LatentDiffusionDenoiser, _as_uint8_images
from eegbench.backbones.paper import _CLIP_MEAN, _CLIP_STD, _empty, clip_pixels
from eegbench.backbones.paper import _import_diffusers as _diffusers
from eegbench.backbones.paper import _import_transformers as _transformers
from eegbench.errors import ConfigError, WeightsNotFoundError

__all__ = [
    "FOLDERS",
    "PaperSettings",
    "StableDiffusionBackbones",
    "StableDiffusionDenoiser",
    "check_folder",
    "folder_kind",
    "needed_weights",
    "paper_backbones_for",
    "paper_settings",
    "required_files",
]

#: Folder name under the weights root of every paper-profile weight set, by key.
FOLDERS = {
    "sd21": "stable-diffusion-2-1",
    "sd21-base": "stable-diffusion-2-1-base",
    "sd15": "stable-diffusion-v1-5",
    "openclip-h14": "CLIP-ViT-H-14-laion2B-s32B-b79K",
    "clip-l14": "clip-vit-large-patch14",
}

#: Where each weight set comes from (shown when a folder is missing).
SOURCES = {
    "sd21": "huggingface.co/stabilityai/stable-diffusion-2-1",
    "sd21-base": "huggingface.co/stabilityai/stable-diffusion-2-1-base",
    "sd15": "huggingface.co/runwayml/stable-diffusion-v1-5",
    "openclip-h14": "huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
    "clip-l14": "huggingface.co/openai/clip-vit-large-patch14",
}

_SD_FILES = (
    ("model_index.json",),
    ("unet/config.json",),
    ("unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.bin"),
    ("vae/config.json",),
    ("vae/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.bin"),
    ("text_encoder/config.json",),
    ("text_encoder/model.safetensors", "text_encoder/pytorch_model.bin"),
    ("tokenizer/vocab.json",),
    ("tokenizer/merges.txt",),
    # the pad token lives here ("!" for SD 2.x); without it the tokenizer silently pads with <|endoftext|>
    ("tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json"),
    ("scheduler/scheduler_config.json",),
)
_OPENCLIP_FILES = (
    ("open_clip_config.json",),
    ("open_clip_pytorch_model.bin", "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
     "open_clip_pytorch_model.pth"),
)
_CLIP_FILES = (
    ("config.json",),
    ("model.safetensors", "pytorch_model.bin"),
    ("vocab.json",),
    ("merges.txt",),
    ("tokenizer_config.json", "special_tokens_map.json"),
)



def folder_kind(key: str) -> str:
    """``"diffusers"``, ``"open_clip"`` or ``"transformers"`` for a key of :data:`FOLDERS`."""
    if key not in FOLDERS:
        raise ConfigError(f"weights key {key!r} is unknown; known: {', '.join(FOLDERS)}")
    return {"openclip-h14": "open_clip", "clip-l14": "transformers"}.get(key, "diffusers")


def required_files(key: str) -> tuple[tuple[str, ...], ...]:
    """Files a folder must hold, each as a tuple of accepted alternatives (relative paths)."""
    return {"diffusers": _SD_FILES, "open_clip": _OPENCLIP_FILES, "transformers": _CLIP_FILES}[folder_kind(key)]


def missing_files(key: str, folder: Path) -> list[str]:
    """Required files absent from ``folder`` (the first alternative named), or ``[folder]`` if it is absent."""
    folder = Path(folder)
    if not folder.is_dir():
        return [str(folder)]
    return [alts[0] for alts in required_files(key) if not any((folder / a).is_file() for a in alts)]


def check_folder(key: str, folder: Path) -> Path:
    """Fail fast if a weight folder is absent or partial.

    Parameters
    ----------
    key : str
        A key of :data:`FOLDERS`.
    folder : Path

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    WeightsNotFoundError
        One line naming the folder, the (first) missing file, the flag that sets the folder and
        where the weights come from.
    """
    missing = missing_files(key, folder)
    if not missing:
        return Path(folder)
    where = f"(--weights-root, or --backbone-set {key}=PATH; from {SOURCES[key]})"
    if missing == [str(folder)]:
        raise WeightsNotFoundError(f"missing weights folder {folder} for {key} {where}")
    raise WeightsNotFoundError(f"weights folder {folder} for {key} lacks {missing[0]}"
                               + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "") + f" {where}")


def folder_size(folder: Path) -> int:
    """Total bytes of the files under ``folder`` (0 if absent)."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@dataclass(frozen=True)
class PaperSettings:
    """Settings of the ``paper`` profile (``--backbone-set key=value``).

    Parameters
    ----------
    sd21, sd21_base, sd15, openclip_h14, clip_l14 : str
        Folder of each weight set; empty: ``<weights root>/<FOLDERS[key]>``. On the command line
        the keys are written as in :data:`FOLDERS` (``sd21-base``, ``openclip-h14``, ...) or with
        underscores.
    image_size : int
        Training / generation edge length in pixels; 0: the method's published resolution
        (``paper_image_size``) or else the UNet's native one (``sample_size`` × 8).
    encode_batch_size : int
        Images / texts per forward pass of the frozen encoders (VAE encoder, embedders).
    """

    sd21: str = ""
    sd21_base: str = ""
    sd15: str = ""
    openclip_h14: str = ""
    clip_l14: str = ""
    image_size: int = 0
    encode_batch_size: int = 8

    def folder(self, key: str, weights_root: Path) -> Path:
        """Folder of weight set ``key``: the override or ``<weights_root>/<FOLDERS[key]>``."""
        value = getattr(self, key.replace("-", "_"))
        return Path(value) if value else Path(weights_root) / FOLDERS[key]


def _open_clip():
    from eegbench._compat import ensure_torchvision

    ensure_torchvision()
    import open_clip

    return open_clip


@contextlib.contextmanager
def _quiet_loading():
    """Silence transformers' load report while a tower is read from a whole-CLIPModel folder (its
    other tower's weights are "unexpected" by design) and its per-file progress bar; restored after."""
    tf = _transformers().utils.logging
    level, bars = tf.get_verbosity(), tf.is_progress_bar_enabled()
    tf.set_verbosity_error()
    tf.disable_progress_bar()
    try:
        yield
    finally:
        tf.set_verbosity(level)
        if bars:
            tf.enable_progress_bar()


def _freeze(module: nn.Module) -> nn.Module:
    return module.eval().requires_grad_(False)


def _chunks(n: int, size: int):
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + max(1, size)))


class HFTextTokens(nn.Module):
    """Token states of a transformers ``CLIPTextModel`` (SD's text encoder, or CLIP ViT-L/14 text).

    Parameters
    ----------
    model : transformers.CLIPTextModel
        Frozen.
    tokenizer : transformers.CLIPTokenizer or None
        None on the meta device (count only).
    batch_size : int
        Texts per forward pass.

    Attributes
    ----------
    dim : int
        ``hidden_size`` (768 for CLIP ViT-L/14 and SD 1.5; 1024 for SD 2.x).
    max_length : int
        77 (``max_position_embeddings``).
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 8) -> None:
        super().__init__()
        self.model = _freeze(model)
        self.tokenizer = tokenizer
        self.dim = int(model.config.hidden_size)
        self.max_length = int(model.config.max_position_embeddings)
        self.batch_size = int(batch_size)

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``last_hidden_state`` of ``texts`` padded / truncated to :attr:`max_length`.

        Returns
        -------
        tokens : torch.Tensor, shape (B, max_length, dim), float32, on :attr:`device`
        attention_mask : torch.Tensor, shape (B, max_length), int64

        Raises
        ------
        ConfigError
            On the meta device (architecture only) or for a non-string text.
        """
        texts = _check_texts(texts, "text_embedder")
        if self.tokenizer is None or self.device.type == "meta":
            raise ConfigError("text_embedder.encode: built on the meta device (no weights)")
        batch = self.tokenizer(texts, padding="max_length", max_length=self.max_length, truncation=True,
                               return_tensors="pt")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        out = []
        for part in _chunks(len(texts), self.batch_size):
            out.append(self.model(input_ids=ids[part].to(self.device)).last_hidden_state.float())
        tokens = torch.cat(out) if out else torch.zeros(0, self.max_length, self.dim, device=self.device)
        return tokens, mask.long()

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`encode`."""
        return self.encode(texts)


def _check_texts(texts: Sequence[str], who: str) -> list[str]:
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise ConfigError(f"{who}.encode: texts must be strings, got {type(bad[0]).__name__}")
    return texts


class HFImageEmbeds(nn.Module):
    """Projected image embeddings of a transformers CLIP vision tower (CLIP ViT-L/14: 768).

    Parameters
    ----------
    model : transformers.CLIPVisionModelWithProjection
        Frozen.
    batch_size : int
        Images per forward pass.

    Attributes
    ----------
    dim : int
        ``projection_dim``.
    image_size : int
        Input edge in pixels (224 for ViT-L/14).
    """

    def __init__(self, model, *, batch_size: int = 8) -> None:
        super().__init__()
        self.model = _freeze(model)
        self.dim = int(model.config.projection_dim)
        self.image_size = int(model.config.image_size)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, H, W) → ``image_embeds`` (B, dim) float32 (bicubic resize, CLIP mean/std)."""
        from eegbench.backbones.embedders import check_uint8_images

        check_uint8_images(images, "image_embedder")
        p = next(self.model.parameters())
        out = [self.model(pixel_values=clip_pixels(images[s], self.image_size, _CLIP_MEAN, _CLIP_STD, p.device,
                                                    p.dtype)).image_embeds.float()
               for s in _chunks(len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.dim, device=p.device)


class OpenCLIPTextTokens(nn.Module):
    """Final-layer token states (+ ``ln_final``) of an OpenCLIP text tower (ViT-H/14: 77 × 1024).

    The SYNAPSE alignment target (``research/methods.md`` §3.3: token embedding + positional
    embedding → text transformer → ``ln_final``, no pooling, no projection).

    Parameters
    ----------
    model : open_clip.CLIP
        Frozen; only its text tower is used.
    tokenizer : callable or None
        ``open_clip.get_tokenizer`` result; None on the meta device.
    batch_size : int
    """

    def __init__(self, model, tokenizer, *, batch_size: int = 8) -> None:
        super().__init__()
        self.model = _freeze(model)
        self.tokenizer = tokenizer
        self.dim = int(model.transformer.width)
        self.max_length = int(model.context_length)
        self.batch_size = int(batch_size)

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.model.token_embedding.weight.device

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states of ``texts``.

        Returns
        -------
        tokens : torch.Tensor, shape (B, 77, dim), float32
        attention_mask : torch.Tensor, shape (B, 77), int64
            1 up to and including the end-of-text token.

        Raises
        ------
        ConfigError
            On the meta device or for a non-string text.
        """
        texts = _check_texts(texts, "text_embedder")
        if self.tokenizer is None or self.device.type == "meta":
            raise ConfigError("text_embedder.encode: built on the meta device (no weights)")
        ids = self.tokenizer(texts).to(self.device)
        m = self.model
        out = []
        for part in _chunks(len(texts), self.batch_size):
            x = m.token_embedding(ids[part]) + m.positional_embedding.to(m.token_embedding.weight.dtype)
            mask = m.attn_mask if m.attn_mask is None or m.attn_mask.dtype == torch.bool else m.attn_mask.to(x.dtype)
            x = m.transformer(x, attn_mask=mask)
            out.append(m.ln_final(x).float())
        eot = ids.argmax(dim=-1)  # the end-of-text token has the largest id
        mask = (torch.arange(ids.shape[1], device=ids.device)[None] <= eot[:, None]).long()
        tokens = torch.cat(out) if out else torch.zeros(0, self.max_length, self.dim, device=self.device)
        return tokens, mask.cpu()

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`encode`."""
        return self.encode(texts)


class OpenCLIPImageEmbeds(nn.Module):
    """Image embeddings of an OpenCLIP model (``encode_image``; ViT-H/14: 1024), unnormalised.

    Parameters
    ----------
    model : open_clip.CLIP
        Frozen; only its vision tower is counted (:attr:`visual`).
    mean, std : tuple of float
        The folder's ``preprocess_cfg`` normalisation.
    batch_size : int
    """

    def __init__(self, model, *, mean=_CLIP_MEAN, std=_CLIP_STD, batch_size: int = 8) -> None:
        super().__init__()
        self.visual = _freeze(model.visual)
        self.dim = int(model.visual.output_dim)
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size = int(batch_size)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, H, W) → embeddings (B, dim) float32 (bicubic resize, the folder's mean/std)."""
        from eegbench.backbones.embedders import check_uint8_images

        check_uint8_images(images, "image_embedder")
        p = next(self.visual.parameters())
        out = [self.visual(clip_pixels(images[s], self.image_size, self.mean, self.std, p.device, p.dtype)).float()
               for s in _chunks(len(images), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.dim, device=p.device)


class StableDiffusionDenoiser(LatentDiffusionDenoiser):
    """The denoiser role of the paper profile: a Stable Diffusion UNet, VAE, text encoder and scheduler.

    Parameters
    ----------
    folder : Path
        The diffusers pipeline folder.
    unet : diffusers.UNet2DConditionModel or callable
        Frozen shared UNet (compute dtype), or a function that loads it on first use of
        :attr:`unet` (methods that only fine-tune their own copy never hold the shared one).
    unet_config : mapping
        The UNet's config (``in_channels``, ``cross_attention_dim``, ...).
    vae : diffusers.AutoencoderKL
        Frozen (compute dtype).
    text_embedder : HFTextTokens
        SD's own text encoder (class and null contexts).
    scheduler_config : dict
        The folder's ``scheduler/scheduler_config.json``.
    image_size : int
        Edge length in pixels of encoded and generated images (a multiple of the VAE downscale).
    class_names : sequence of str
        Class prompts are ``"a photo of a <class name>"``.
    device : torch.device
    encode_batch_size : int

    Attributes
    ----------
    latent_size : int
        ``image_size // vae_scale_factor``.
    prediction_type : str
        From the scheduler config (``epsilon`` for SD 1.5 and 2.1-base, ``v_prediction`` for 2.1).
    """

    def __init__(self, *, folder: Path, unet, unet_config: Mapping[str, Any], vae, text_embedder: HFTextTokens,
                 scheduler_config: Mapping[str, Any], image_size: int, class_names: Sequence[str],
                 device: torch.device, encode_batch_size: int = 8) -> None:
        self.folder = Path(folder)
        self._unet_source = unet
        self._unet_module = None if callable(unet) and not isinstance(unet, nn.Module) else _freeze(unet)
        self.vae = _freeze(vae)
        self.text_embedder = text_embedder
        self.device = torch.device(device)
        self.scheduler_config = dict(scheduler_config)
        self.scheduler_config.setdefault("prediction_type", "epsilon")
        self.prediction_type = str(self.scheduler_config["prediction_type"])
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.image_size = int(image_size)
        if self.image_size % self.vae_scale_factor:
            raise ConfigError(f"image_size {image_size} is not a multiple of the VAE downscale {self.vae_scale_factor}")
        self.latent_size = self.image_size // self.vae_scale_factor
        self.latent_channels = int(unet_config["in_channels"])
        self.cross_attention_dim = int(unet_config["cross_attention_dim"])
        self.context_tokens = int(text_embedder.max_length)
        self.encode_batch_size = int(encode_batch_size)
        self.class_names = tuple(class_names)
        self.class_prompts = tuple(PROMPT_TEMPLATE.format(c) for c in self.class_names)
        if self.device.type != "meta":
            if text_embedder.dim != self.cross_attention_dim:
                raise ConfigError(f"{folder}: text encoder width {text_embedder.dim} ≠ UNet cross_attention_dim "
                                  f"{self.cross_attention_dim}")
            tokens, _ = text_embedder.encode(list(self.class_prompts) + [""])
            self.class_tokens = tokens[:-1].to(self.device, torch.float32)
            self._null = tokens[-1:].to(self.device, torch.float32)
        else:
            self.class_tokens = torch.zeros(len(self.class_names), self.context_tokens, self.cross_attention_dim,
                                            device="meta")
            self._null = torch.zeros(1, self.context_tokens, self.cross_attention_dim, device="meta")

    @property
    def _unet(self):
        if self._unet_module is None:
            self._unet_module = _freeze(self._unet_source())
        return self._unet_module  # the shared UNet (``unet``) is loaded on first use

    def new_unet(self):
        """A separate float32 copy of the UNet, read again from the folder, for a method to fine-tune.

        Returns
        -------
        diffusers.UNet2DConditionModel
            float32 weights (the master copy under mixed precision), eval mode, every parameter
            ``requires_grad=False``, on :attr:`device`.
        """
        if self.device.type == "meta":
            return copy.deepcopy(self._unet)
        diffusers = _diffusers()
        with _quiet_loading():
            unet = diffusers.UNet2DConditionModel.from_pretrained(self.folder, subfolder="unet",
                                                                  local_files_only=True, torch_dtype=torch.float32)
        return _freeze(unet.to(self.device))

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images → scaled latents (``latent_dist`` mean × ``scaling_factor``).

        Parameters
        ----------
        images : torch.Tensor or numpy.ndarray, shape (B, 3, H, W), uint8
            Resized (antialiased bilinear) to :attr:`image_size`, mapped to [-1, 1].

        Returns
        -------
        torch.Tensor, shape (B, latent_channels, latent_size, latent_size), float32, on :attr:`device`
        """
        from eegbench.backbones.denoiser import _resize

        x = _as_uint8_images(images, "StableDiffusionDenoiser.encode_images")
        out = []
        for part in _chunks(len(x), self.encode_batch_size):
            xb = _resize(x[part].to(self.device, torch.float32) / 255.0, self.image_size) * 2.0 - 1.0
            dist = self.vae.encode(xb.to(self.vae.dtype)).latent_dist
            out.append(dist.mean.float() * self.scaling_factor)
        if not out:
            return torch.zeros(0, self.latent_channels, self.latent_size, self.latent_size, device=self.device)
        return torch.cat(out)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, C, h, w) → uint8 images (B, 3, 8h, 8w) on the device of ``latents``."""
        out = []
        for part in _chunks(len(latents), self.encode_batch_size):
            z = latents[part].to(self.device, self.vae.dtype) / self.scaling_factor
            x = self.vae.decode(z).sample.float()
            out.append(((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8))
        return torch.cat(out).to(latents.device)

    def null_context(self, batch: int) -> torch.Tensor:
        """The text encoder's tokens of ``""``, shape (batch, 77, cross_attention_dim), float32."""
        return self._null.expand(batch, -1, -1).clone()


def native_image_size(folder: Path) -> int:
    """UNet ``sample_size`` × VAE downscale of a diffusers folder, from its config files only."""
    try:
        unet = json.loads((Path(folder) / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((Path(folder) / "vae" / "config.json").read_text(encoding="utf-8"))
        return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsNotFoundError(f"{folder}: cannot read unet/vae config.json ({exc})") from None


class StableDiffusionBackbones:
    """The ``paper`` profile: backbone roles read from local Stable Diffusion / CLIP folders.

    Implements :class:`eegbench.backbones.protocol.BackboneSet`. Every role is built lazily on
    first access and frozen; with ``device="meta"`` the modules are built from the folders'
    config files only (no weight is read), which is how ``eegbench params`` counts them.

    Parameters
    ----------
    base : {"sd15", "sd21", "sd21-base"}
        The method's published base model.
    folders : mapping of str to Path
        Folder of each key of :data:`FOLDERS` the method may use.
    class_names : sequence of str
        Classes of the dataset (class prompts of the denoiser).
    roles : mapping of str to str
        ``text_embedder`` and ``image_embedder`` → ``"sd"`` (SD's own text encoder, the
        default text role), ``"openclip-h14"`` or ``"clip-l14"``; no image role by default.
    image_size : int
        Training / generation edge in pixels.
    device : torch.device
    dtype : torch.dtype
        Compute dtype of every frozen module (float16 / bfloat16 under mixed precision).
    encode_batch_size : int

    Raises
    ------
    WeightsNotFoundError
        On construction, for a missing or partial folder of the base or of a role.
    """

    profile = "paper"

    def __init__(self, base: str, *, folders: Mapping[str, Path], class_names: Sequence[str],
                 roles: Mapping[str, str], image_size: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, encode_batch_size: int = 8, progress: bool = False) -> None:
        from eegbench.backbones.paper import PAPER_BASES

        if base not in PAPER_BASES:
            raise ConfigError(f"paper backbone {base!r} is unknown; known: {', '.join(PAPER_BASES)}")
        self.base = base
        self.roles = {"text_embedder": "sd", "image_embedder": "", **dict(roles)}
        self.folders = {k: Path(v) for k, v in folders.items()}
        self.class_names = tuple(class_names)
        self.device = torch.device(device)
        self.meta = self.device.type == "meta"
        self.dtype = dtype
        self.encode_batch_size = int(encode_batch_size)
        self.progress = progress
        self._image_size = int(image_size)
        for key in self.needed():
            if key not in self.folders:
                raise ConfigError(f"paper backbones: no folder given for {key}")
            if not self.meta:
                check_folder(key, self.folders[key])

    def needed(self) -> list[str]:
        """Keys of :data:`FOLDERS` this set reads: the base, then the teacher roles."""
        keys = [self.base]
        for role in ("text_embedder", "image_embedder"):
            key = self.roles[role]
            if key not in ("sd", "") and key not in keys:
                keys.append(key)
        return keys

    @property
    def image_size(self) -> int:
        """Edge length in pixels of the images the methods train on and generate."""
        return self._image_size

    # ------------------------------------------------------------------ loading
    def _load(self, cls, folder: Path, subfolder: str | None = None):
        kwargs = {"subfolder": subfolder} if subfolder else {}
        if self.meta:
            config = cls.load_config(folder, local_files_only=True, **kwargs) if hasattr(cls, "load_config") else None
            if config is not None:
                return _freeze(_empty(lambda: cls.from_config(config)))
            cfg = cls.config_class.from_pretrained(folder, local_files_only=True, **kwargs)
            return _freeze(_empty(lambda: cls(cfg)))
        with _quiet_loading():
            model = cls.from_pretrained(folder, local_files_only=True, torch_dtype=self.dtype, **kwargs)
        return _freeze(model.to(self.device))

    @cached_property
    def _sd_text(self) -> HFTextTokens:
        transformers = _transformers()
        folder = self.folders[self.base]
        model = self._load(transformers.CLIPTextModel, folder, "text_encoder")
        tok = None if self.meta else transformers.CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer",
                                                                                local_files_only=True)
        return HFTextTokens(model, tok, batch_size=self.encode_batch_size)

    @cached_property
    def vae(self):
        """The SD ``AutoencoderKL`` (frozen, compute dtype)."""
        return self._load(_diffusers().AutoencoderKL, self.folders[self.base], "vae")

    @cached_property
    def denoiser(self) -> StableDiffusionDenoiser:
        """The :class:`StableDiffusionDenoiser` of the base folder."""
        diffusers = _diffusers()
        folder = self.folders[self.base]
        unet_config = diffusers.UNet2DConditionModel.load_config(folder, subfolder="unet", local_files_only=True)
        sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
        sched = {k: v for k, v in sched.items() if not k.startswith("_")}
        load_unet = lambda: self._load(diffusers.UNet2DConditionModel, folder, "unet")  # noqa: E731
        return StableDiffusionDenoiser(folder=folder, unet=load_unet, unet_config=unet_config, vae=self.vae, text_embedder=self._sd_text,
                                       scheduler_config=sched, image_size=self.image_size,
                                       class_names=self.class_names, device=self.device,
                                       encode_batch_size=self.encode_batch_size)

    @cached_property
    def _open_clip(self):
        open_clip = _open_clip()
        folder = self.folders["openclip-h14"]
        cfg = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))
        pre = cfg.get("preprocess_cfg", {})
        if self.meta:
            model = _empty(lambda: open_clip.model.CLIP(**cfg["model_cfg"]))
            return _freeze(model), None, pre
        model = open_clip.create_model(f"local-dir:{folder}", device=self.device)
        model = _freeze(model.to(self.device, self.dtype))
        return model, open_clip.get_tokenizer(f"local-dir:{folder}"), pre

    def _embedder(self, role: str):
        key = self.roles[role]
        if not key:
            raise ConfigError(f"paper backbones: the method declares no {role} (paper_roles)")
        if key == "sd":
            if role == "image_embedder":
                raise ConfigError("paper backbones: Stable Diffusion has no image embedder; name a CLIP folder")
            return self._sd_text
        if key == "openclip-h14":
            model, tok, pre = self._open_clip
            if role == "text_embedder":
                return OpenCLIPTextTokens(model, tok, batch_size=self.encode_batch_size)
            return OpenCLIPImageEmbeds(model, mean=pre.get("mean", _CLIP_MEAN), std=pre.get("std", _CLIP_STD),
                                       batch_size=self.encode_batch_size)
        if key == "clip-l14":
            folder, transformers = self.folders["clip-l14"], _transformers()
            if role == "text_embedder":
                model = self._load(transformers.CLIPTextModel, folder)
                tok = None if self.meta else transformers.CLIPTokenizer.from_pretrained(folder, local_files_only=True)
                return HFTextTokens(model, tok, batch_size=self.encode_batch_size)
            return HFImageEmbeds(self._load(transformers.CLIPVisionModelWithProjection, folder),
                                 batch_size=self.encode_batch_size)
        raise ConfigError(f"paper backbones: {role} source {key!r} is unknown; known: sd, openclip-h14, clip-l14")

    @cached_property
    def text_embedder(self):
        """The text role named by ``roles["text_embedder"]`` (SD's encoder, OpenCLIP or CLIP tokens)."""
        return self._embedder("text_embedder")

    @cached_property
    def image_embedder(self):
        """The image role named by ``roles["image_embedder"]`` (OpenCLIP or CLIP image embeddings)."""
        return self._embedder("image_embedder")

    def prepare_denoiser(self, *args, **kwargs):
        """Nothing to prepare: the published UNet is used as is. Returns :attr:`denoiser`."""
        return self.denoiser

    def describe(self) -> dict[str, Any]:
        """What the result records: base, folders (resolved), roles, image size, dtype."""
        return {"profile": "paper", "base": self.base, "image_size": self.image_size, "dtype": str(self.dtype),
                "roles": dict(self.roles), "folders": {k: str(self.folders[k]) for k in self.needed()}}


def method_paper_spec(method_cls) -> tuple[str, dict[str, str], int]:
    """``(base, roles, published image size or 0)`` a method class declares for the paper profile.

    Raises
    ------
    ConfigError
        If the method declares no ``paper_backbone``.
    """
    base = getattr(method_cls, "paper_backbone", "")
    if not base:
        raise ConfigError(f"method {getattr(method_cls, 'name', method_cls)!r} declares no paper_backbone; "
                          "it has no paper profile")
    roles = dict(getattr(method_cls, "paper_roles", {}) or {})
    return base, roles, int(getattr(method_cls, "paper_image_size", 0) or 0)


def paper_settings(overrides: Mapping[str, str] | None = None) -> PaperSettings:
    """:class:`PaperSettings` with ``--backbone-set`` overrides (keys as in :data:`FOLDERS` or with ``_``).

    Raises
    ------
    ConfigError
        For an unknown key or a value of the wrong type.
    """
    from eegbench.method import apply_overrides

    return apply_overrides(PaperSettings(), {str(k).replace("-", "_"): v for k, v in (overrides or {}).items()})


def paper_backbones_for(method_cls, *, weights_root: Path, settings: PaperSettings | None = None,
                        class_names: Sequence[str], device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32, progress: bool = False) -> StableDiffusionBackbones:
    """Check a method's paper weight folders and build its backbones from them.

    Parameters
    ----------
    method_cls : type
        Declares ``paper_backbone``, optionally ``paper_roles`` and ``paper_image_size``.
    weights_root : Path
    settings : PaperSettings, optional
        Folder overrides, image size, encoding batch size.
    class_names : sequence of str
    device, dtype :
        Where and in which dtype the frozen modules live; ``"meta"`` builds them from the
        config files only (nothing is read but configs; every needed folder is still checked).

    Returns
    -------
    StableDiffusionBackbones

    Raises
    ------
    WeightsNotFoundError
        For a missing or partial folder (one line naming it, the missing file and the flag).
    ConfigError
        For an image size that is not a positive multiple of 8.
    """
    settings = settings or PaperSettings()
    base, roles, published = method_paper_spec(method_cls)
    folders = {key: settings.folder(key, weights_root) for key in FOLDERS}
    probe = StableDiffusionBackbones(base, folders=folders, class_names=class_names, roles=roles, image_size=8,
                                     device="meta")
    for key in probe.needed():
        check_folder(key, folders[key])
    image_size = int(settings.image_size or published or native_image_size(folders[base]))
    if image_size <= 0 or image_size % 8:
        raise ConfigError(f"--backbone-set image_size={image_size}: must be a positive multiple of 8")
    return StableDiffusionBackbones(base, folders=folders, class_names=class_names, roles=roles,
                                    image_size=image_size, device=device, dtype=dtype,
                                    encode_batch_size=settings.encode_batch_size, progress=progress)


def needed_weights(method_cls, *, weights_root: Path, settings: PaperSettings | None = None) -> list[dict[str, Any]]:
    """What a method's paper profile reads, found or missing, with sizes (``eegbench weights check``).

    Returns
    -------
    list of dict
        One per folder: ``key``, ``role`` (what uses it), ``folder``, ``found`` (bool),
        ``missing`` (files), ``bytes``.
    """
    settings = settings or PaperSettings()
    base, roles, _ = method_paper_spec(method_cls)
    full = {"text_embedder": "sd", **roles}
    uses = {base: ["vae", "denoiser"] + [r for r, k in full.items() if k == "sd"]}
    for role, key in full.items():
        if key not in ("sd", ""):
            uses.setdefault(key, []).append(role)
    rows = []
    for key, what in uses.items():
        folder = settings.folder(key, weights_root)
        missing = missing_files(key, folder)
        rows.append({"key": key, "role": ", ".join(what), "folder": str(folder), "found": not missing,
                     "missing": missing, "bytes": folder_size(folder)})
    return rows

