"""Random-weight model folders in the on-disk formats of the published backbones.

The writers here save *randomly initialised* models in exactly the folder layouts that users
download, so tests (``size="tiny"``) and a GPU benchmark (``size="full"``) can load them through
the real user code path — ``diffusers`` / ``transformers`` ``from_pretrained`` and open_clip's
``local-dir:`` schema — without downloading anything. No pretrained weight is read or written:
every tensor comes from the libraries' own initialisers after ``torch.manual_seed(seed)``.

Formats (sources):

* Stable Diffusion (``runwayml/stable-diffusion-v1-5``, ``stabilityai/stable-diffusion-2-1``,
  ``stabilityai/stable-diffusion-2-1-base``): a diffusers pipeline folder as
  ``StableDiffusionPipeline.save_pretrained`` writes it — ``model_index.json`` and the
  sub-folders ``unet/``, ``vae/``, ``text_encoder/`` (``config.json`` +
  ``*.safetensors``), ``tokenizer/`` and ``scheduler/`` (``scheduler_config.json``).
* OpenCLIP ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``: ``open_clip_config.json``
  (``{"model_cfg": ..., "preprocess_cfg": ...}``) and ``open_clip_pytorch_model.bin`` (a
  ``torch.save``-d ``state_dict``), open_clip's ``hf-hub:`` / ``local-dir:`` layout.
* ``openai/clip-vit-large-patch14``: a transformers ``CLIPModel`` folder (``config.json``,
  weights), the CLIP tokenizer files and ``preprocessor_config.json`` (``CLIPImageProcessor``).
* Tokenizers: the CLIP byte-level BPE (``vocab.json`` + ``merges.txt``, 49,408 tokens) rebuilt
  from the merges that ship inside ``open_clip_torch`` (``bpe_simple_vocab_16e6.txt.gz``) with
  the conversion of OpenAI CLIP's ``SimpleTokenizer``.

``size="full"`` uses the published architectures (the configs of
:mod:`eegbench.backbones.paper`, open_clip's bundled ``ViT-H-14.json``); ``size="tiny"`` keeps
the structure and conventions (8× VAE downsampling, 4 latent channels, 77-token context, the
real vocabulary, v-prediction for SD 2.1 768-v) at widths that run on a CPU in milliseconds.

Examples
--------
>>> paths = write_paper_weights(tmp_path, size="tiny")          # doctest: +SKIP
>>> diffusers.StableDiffusionPipeline.from_pretrained(paths["sd15"])  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from eegbench.backbones.paper import (
    _CLIP_MEAN,
    _CLIP_STD,
    PAPER_BASES,
    _import_diffusers,
    _import_transformers,
    _text_config,
    paper_scheduler_config,
    paper_unet_config,
    paper_vae_config,
)
from eegbench.backbones.sd import FOLDERS
from eegbench.backbones.sd import _open_clip as _import_open_clip
from eegbench.errors import ConfigError

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "FOLDERS",  # re-exported from eegbench.backbones.sd
    "SIZES",
    "tiny_clip_vit_large_config",
    "tiny_open_clip_config",
    "tiny_text_config",
    "tiny_unet_config",
    "tiny_vae_config",
    "write_clip_tokenizer",
    "write_clip_vit_large",
    "write_open_clip",
    "write_paper_weights",
    "write_stable_diffusion",
]

#: Model sizes the writers accept.
SIZES = ("tiny", "full")

#: CLIP / OpenCLIP image normalisation (RGB in [0, 1]).
CLIP_MEAN = list(_CLIP_MEAN)
CLIP_STD = list(_CLIP_STD)

_BOS = "<|startoftext|>"
_EOS = "<|endoftext|>"
_CONTEXT = 77
_VOCAB_SIZE = 49408
#: Number of BPE merges CLIP keeps: 49152 − 256 byte tokens − 2 special tokens (OpenAI CLIP).
_N_MERGES = 49152 - 256 - 2


def _check_size(size: str) -> str:
    if size not in SIZES:
        raise ConfigError(f"weights fixture size {size!r} is unknown; known: {', '.join(SIZES)}")
    return size


def _check_base(base: str) -> str:
    if base not in PAPER_BASES:
        raise ConfigError(f"Stable Diffusion base {base!r} is unknown; known: {', '.join(PAPER_BASES)}")
    return base


@contextlib.contextmanager
def _quiet_open_clip_random_init():
    """Drop open_clip's root-logger warnings that a model was initialised without weights."""

    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not ("no CLIP weights found" in message or "No pretrained weights loaded" in message)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _clip_bpe() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The CLIP vocabulary and merges, rebuilt from open_clip's bundled BPE file.

    Same conversion as ``open_clip.tokenizer.SimpleTokenizer`` / OpenAI CLIP: merges are lines
    ``1 : 49152 - 256 - 2 + 1`` of ``bpe_simple_vocab_16e6.txt.gz``; the vocabulary is the 256
    byte-to-unicode characters, the same with ``"</w>"`` appended, one token per merge, then
    ``<|startoftext|>`` and ``<|endoftext|>``.

    Returns
    -------
    vocab : tuple of str, length 49408
        Tokens in id order.
    merges : tuple of (str, str), length 48894
        BPE merges in rank order.
    """
    open_clip = _import_open_clip()
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1:_N_MERGES + 1])
    byte_chars = list(bytes_to_unicode().values())
    vocab = tuple(byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + [_BOS, _EOS])
    if len(vocab) != _VOCAB_SIZE or len(set(vocab)) != _VOCAB_SIZE:  # pragma: no cover - packaging fault
        raise RuntimeError(f"open_clip {open_clip.__version__}: CLIP BPE rebuilt to {len(vocab)} tokens, not 49408")
    return vocab, merges


def write_clip_tokenizer(folder: str | Path, *, pad_token: str):
    """Write the CLIP BPE tokenizer as a transformers ``CLIPTokenizer`` folder.

    Files: ``vocab.json`` (token → id, 49,408 entries) and ``merges.txt`` (``#version: 0.2``
    header, then one ``"a b"`` merge per line) as the published repos have them, plus
    ``tokenizer.json`` and ``tokenizer_config.json`` from ``CLIPTokenizer.save_pretrained``.
    Either ``tokenizer.json`` or ``vocab.json`` + ``merges.txt`` alone loads the same tokenizer.

    Parameters
    ----------
    folder : str or Path
        Destination (created if missing).
    pad_token : str
        ``"<|endoftext|>"`` for SD 1.5 and ``openai/clip-vit-large-patch14``; ``"!"`` (id 0) for
        SD 2.x, whose tokenizer pads as OpenCLIP does (with id 0).

    Returns
    -------
    transformers.CLIPTokenizer
        ``model_max_length`` 77, bos ``<|startoftext|>`` (49406), eos = unk ``<|endoftext|>``
        (49407).

    Notes
    -----
    Ids equal ``open_clip.tokenize`` up to and including the eos token. With ``pad_token="!"``
    the ``"!"`` character becomes a special token and always encodes to id 0 rather than to
    ``"!</w>"`` (256) — the same quirk as the published SD 2.x tokenizer.
    """
    transformers = _import_transformers()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _clip_bpe()
    ids = {token: i for i, token in enumerate(vocab)}
    (folder / "vocab.json").write_text(json.dumps(ids, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    tokenizer = transformers.CLIPTokenizer(
        vocab=ids, merges=list(merges), unk_token=_EOS, bos_token=_BOS, eos_token=_EOS, pad_token=pad_token,
        model_max_length=_CONTEXT,
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Stable Diffusion
# ---------------------------------------------------------------------------------------------


def _tiny_text_width(base: str) -> int:
    return 32 if base == "sd15" else 64


def tiny_vae_config(base: str) -> dict[str, Any]:
    """Tiny ``AutoencoderKL`` config with the SD conventions.

    Four levels (``DownEncoderBlock2D`` / ``UpDecoderBlock2D`` × 4: latents at 1/8 of the image
    edge), widths (8, 16, 16, 16), one ResNet per level, 8 norm groups, 4 latent channels,
    scaling factor 0.18215, ``sample_size`` 768 px for ``sd21`` else 512 px.
    """
    _check_base(base)
    return {**paper_vae_config(base), "block_out_channels": [8, 16, 16, 16], "layers_per_block": 1,
            "norm_num_groups": 8}


def tiny_unet_config(base: str) -> dict[str, Any]:
    """Tiny ``UNet2DConditionModel`` config with the SD conventions.

    4 latent channels in and out; ``sample_size`` 96 latents for ``sd21`` (768 px) else 64
    (512 px); widths (32, 64, 64), one ResNet per block; cross-attention only at the coarsest
    level and in the mid block (``DownBlock2D``, ``DownBlock2D``, ``CrossAttnDownBlock2D`` /
    ``CrossAttnUpBlock2D``, ``UpBlock2D``, ``UpBlock2D``) so 64 × 64 latents stay cheap on a
    CPU; 8 norm groups; ``attention_head_dim`` 8 (diffusers reads it as the head count);
    ``cross_attention_dim`` = tiny text width (32 ``sd15``, 64 ``sd21*``); ``sd21*`` use linear
    projections, ``sd21`` upcasts attention.
    """
    _check_base(base)
    config: dict[str, Any] = {
        "sample_size": 96 if base == "sd21" else 64,
        "in_channels": 4,
        "out_channels": 4,
        "center_input_sample": False,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        "block_out_channels": [32, 64, 64],
        "layers_per_block": 1,
        "act_fn": "silu",
        "norm_num_groups": 8,
        "norm_eps": 1e-5,
        "cross_attention_dim": _tiny_text_width(base),
        "attention_head_dim": 8,
    }
    if base in ("sd21", "sd21-base"):
        config.update(use_linear_projection=True, upcast_attention=base == "sd21")
    return config


def tiny_text_config(base: str) -> dict[str, Any]:
    """Tiny ``transformers.CLIPTextConfig`` keywords.

    Real vocabulary (49,408) and context (77); width 32 (``sd15``, ``quick_gelu`` like CLIP
    ViT-L/14) or 64 (``sd21*``, ``gelu`` like OpenCLIP ViT-H/14), MLP 2 × width, 2 layers,
    4 heads, ``projection_dim`` = width.
    """
    _check_base(base)
    width = _tiny_text_width(base)
    return dict(vocab_size=_VOCAB_SIZE, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=_CONTEXT,
                hidden_act="quick_gelu" if base == "sd15" else "gelu", projection_dim=width)


def write_stable_diffusion(folder: str | Path, base: str, *, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight Stable Diffusion pipeline folder in the diffusers layout.

    Parameters
    ----------
    folder : str or Path
        Destination (created if missing).
    base : {"sd15", "sd21", "sd21-base"}
        Published model whose layout, scheduler and tokenizer to reproduce.
    size : {"tiny", "full"}
        ``"full"``: the published architectures (:func:`~eegbench.backbones.paper.paper_unet_config`,
        :func:`~eegbench.backbones.paper.paper_vae_config`, the CLIP / OpenCLIP text tower;
        1.07 B parameters, ~4.3 GB in float32, for ``sd15``; 1.29 B, ~5.2 GB, for ``sd21*``).
        ``"tiny"``: :func:`tiny_unet_config`, :func:`tiny_vae_config`, :func:`tiny_text_config`
        (17–20 MB).
    seed : int
        ``torch.manual_seed`` applied once before the models are initialised.

    Returns
    -------
    Path
        ``folder``, holding ``model_index.json``, ``unet/``, ``vae/``, ``text_encoder/``
        (``config.json`` + ``model.safetensors`` / ``diffusion_pytorch_model.safetensors``),
        ``tokenizer/`` (:func:`write_clip_tokenizer`; pad ``<|endoftext|>`` for ``sd15``, ``"!"``
        for ``sd21*``) and ``scheduler/`` (``PNDMScheduler`` for ``sd15``, ``DDIMScheduler`` for
        ``sd21*``, from :func:`~eegbench.backbones.paper.paper_scheduler_config`;
        ``prediction_type`` ``v_prediction`` for ``sd21``, ``epsilon`` otherwise). No safety
        checker or feature extractor (``requires_safety_checker=False``).

    Raises
    ------
    ConfigError
        For an unknown ``base`` or ``size``.
    """
    _check_base(base)
    _check_size(size)
    diffusers = _import_diffusers()
    transformers = _import_transformers()
    folder = Path(folder)
    if size == "full":
        unet_config, vae_config, text_config = paper_unet_config(base), paper_vae_config(base), _text_config(base)
    else:
        unet_config, vae_config, text_config = tiny_unet_config(base), tiny_vae_config(base), tiny_text_config(base)
    scheduler_class = diffusers.PNDMScheduler if base == "sd15" else diffusers.DDIMScheduler
    # The published SD 2.x DDIM scheduler_config.json carries the PNDM key skip_prk_steps too;
    # from_config keeps the known keys and ignores the rest.
    scheduler = scheduler_class.from_config(paper_scheduler_config(base))

    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(**unet_config)
    vae = diffusers.AutoencoderKL(**vae_config)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text_config))
    tokenizer_dir = folder / "tokenizer"
    tokenizer = write_clip_tokenizer(tokenizer_dir, pad_token=_EOS if base == "sd15" else "!")
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# ---------------------------------------------------------------------------------------------
# OpenCLIP ViT-H/14
# ---------------------------------------------------------------------------------------------


def tiny_open_clip_config() -> dict[str, Any]:
    """Tiny open_clip ``model_cfg`` shaped like ``ViT-H-14``.

    ``embed_dim`` 40; vision: 32 px images, patch 8 (4 × 4 patches), 1 layer, width 32, head
    width 16 (2 heads); text: real vocabulary (49,408) and context (77), width 64, 4 heads,
    2 layers.
    """
    return {
        "embed_dim": 40,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": _CONTEXT, "vocab_size": _VOCAB_SIZE, "width": 64, "heads": 4, "layers": 2},
    }


def write_open_clip(folder: str | Path, *, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight OpenCLIP model in open_clip's ``local-dir:`` / ``hf-hub:`` layout.

    Parameters
    ----------
    folder : str or Path
        Destination (created if missing). Any existing checkpoint there is replaced.
    size : {"tiny", "full"}
        ``"full"``: open_clip's bundled ``ViT-H-14`` config (``embed_dim`` 1024; vision 224 px,
        patch 14, 32 layers, width 1280, head width 80; text width 1024, 16 heads, 24 layers;
        ~986 M parameters, ~3.9 GB). ``"tiny"``: :func:`tiny_open_clip_config`.
    seed : int
        ``torch.manual_seed`` applied before the model is initialised.

    Returns
    -------
    Path
        ``folder``, holding ``open_clip_config.json`` (``{"model_cfg": ..., "preprocess_cfg":
        {"mean", "std", "interpolation": "bicubic", "resize_mode": "shortest"}}``) and
        ``open_clip_pytorch_model.bin`` (``torch.save`` of the model ``state_dict``). Load with
        ``open_clip.create_model_and_transforms("local-dir:" + str(folder))``.

    Raises
    ------
    ConfigError
        For an unknown ``size``.
    """
    _check_size(size)
    open_clip = _import_open_clip()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = open_clip.get_model_config("ViT-H-14") if size == "full" else tiny_open_clip_config()
    if model_cfg is None:  # pragma: no cover - packaging fault
        raise RuntimeError(f"open_clip {open_clip.__version__} has no bundled ViT-H-14 config")
    config = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD, "interpolation": "bicubic",
                           "resize_mode": "shortest"},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    weights = folder / "open_clip_pytorch_model.bin"
    weights.unlink(missing_ok=True)
    torch.manual_seed(seed)
    # Built through the same local-dir path that loads it (load_weights=False: random init).
    with _quiet_open_clip_random_init():
        model = open_clip.create_model("local-dir:" + str(folder), load_weights=False)
    torch.save(model.state_dict(), weights)
    return folder


# ---------------------------------------------------------------------------------------------
# OpenAI CLIP ViT-L/14 (transformers)
# ---------------------------------------------------------------------------------------------


def tiny_clip_vit_large_config() -> dict[str, Any]:
    """Tiny ``transformers.CLIPConfig`` keywords shaped like ``openai/clip-vit-large-patch14``.

    Text: width 32 (= the tiny ``sd15`` text width), MLP 64, 2 layers, 4 heads, real vocabulary
    and context; vision: 32 px, patch 8, width 32, MLP 64, 2 layers, 4 heads; both
    ``quick_gelu``; ``projection_dim`` 24.
    """
    return {
        "text_config": dict(vocab_size=_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=_CONTEXT, hidden_act="quick_gelu",
                            projection_dim=24),
        "vision_config": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8, hidden_act="quick_gelu", projection_dim=24),
        "projection_dim": 24,
    }


def _full_clip_vit_large_config() -> dict[str, Any]:
    # openai/clip-vit-large-patch14 config.json (the text tower is _text_config("sd15")).
    return {
        "text_config": _text_config("sd15"),
        "vision_config": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=224, patch_size=14, hidden_act="quick_gelu",
                              projection_dim=768),
        "projection_dim": 768,
    }


def write_clip_vit_large(folder: str | Path, *, size: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight transformers ``CLIPModel`` folder like ``openai/clip-vit-large-patch14``.

    Parameters
    ----------
    folder : str or Path
        Destination (created if missing).
    size : {"tiny", "full"}
        ``"full"``: text width 768 / MLP 3072 / 12 layers / 12 heads, vision 224 px, patch 14,
        width 1024 / MLP 4096 / 24 layers / 16 heads, ``quick_gelu``, ``projection_dim`` 768
        (~428 M parameters, ~1.7 GB). ``"tiny"``: :func:`tiny_clip_vit_large_config`.
    seed : int
        ``torch.manual_seed`` applied before the model is initialised.

    Returns
    -------
    Path
        ``folder``, holding ``config.json`` + ``model.safetensors`` (``CLIPModel``), the tokenizer
        files (:func:`write_clip_tokenizer`, pad ``<|endoftext|>``) and
        ``preprocessor_config.json`` (``CLIPImageProcessor``: resize shortest edge and centre
        crop to 224 px (full) or 32 px (tiny), bicubic, CLIP mean / std). Loads with
        ``CLIPModel`` / ``CLIPVisionModelWithProjection`` / ``CLIPProcessor.from_pretrained``.

    Raises
    ------
    ConfigError
        For an unknown ``size``.
    """
    _check_size(size)
    transformers = _import_transformers()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = _full_clip_vit_large_config() if size == "full" else tiny_clip_vit_large_config()
    config = transformers.CLIPConfig(**cfg)
    torch.manual_seed(seed)
    model = transformers.CLIPModel(config)
    model.save_pretrained(folder)
    write_clip_tokenizer(folder, pad_token=_EOS)
    edge = int(cfg["vision_config"]["image_size"])
    processor = transformers.CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": edge}, resample=3, do_center_crop=True,
        crop_size={"height": edge, "width": edge}, do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=CLIP_MEAN, image_std=CLIP_STD, do_convert_rgb=True,
    )
    processor.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------------------------
# All of them
# ---------------------------------------------------------------------------------------------


def write_paper_weights(root: str | Path, *, size: str = "tiny", which: Iterable[str] | None = None,
                        seed: int = 0) -> dict[str, Path]:
    """Write the random-weight folders of :data:`FOLDERS` under ``root``.

    Parameters
    ----------
    root : str or Path
        Weights root; each model goes to ``root / FOLDERS[key]``.
    size : {"tiny", "full"}
        Passed to every writer. ``"full"`` needs about 20 GB of disk (float32) and RAM for the
        largest model (~5.2 GB).
    which : iterable of str, optional
        Keys of :data:`FOLDERS` to write (default: all of them).
    seed : int
        Seed passed to every writer.

    Returns
    -------
    dict of str to Path
        Written key → folder, in :data:`FOLDERS` order.

    Raises
    ------
    ConfigError
        For an unknown key in ``which`` or an unknown ``size``.
    """
    _check_size(size)
    keys = list(FOLDERS) if which is None else list(which)
    unknown = [k for k in keys if k not in FOLDERS]
    if unknown:
        raise ConfigError(f"unknown weights folder key(s) {', '.join(map(repr, unknown))}; known: {', '.join(FOLDERS)}")
    root = Path(root)
    paths: dict[str, Path] = {}
    for key in FOLDERS:
        if key not in keys:
            continue
        folder = root / FOLDERS[key]
        if key in PAPER_BASES:
            write_stable_diffusion(folder, key, size=size, seed=seed)
        elif key == "openclip-h14":
            write_open_clip(folder, size=size, seed=seed)
        else:
            write_clip_vit_large(folder, size=size, seed=seed)
        paths[key] = folder
    return paths
