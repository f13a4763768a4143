"""DreamDiffusion-style method plugin: masked-signal-modelling EEG encoder + fine-tuned latent diffusion.

DreamDiffusion (Bai et al., arXiv 2306.16934; reference code ``bbaaii/DreamDiffusion @8e14797``;
``research/methods.md`` §4) generates images from EEG in two stages:

* **Stage A, ``"mbm"``** (masked signal modelling): a ViT masked autoencoder over EEG time patches
  (:mod:`.modeling`: ``Conv1d`` patch embedding over all channels, fixed 1-D sin-cos position
  embedding with a cls token, timm ``Block`` layers, MAE decoder) learns to reconstruct randomly
  masked patches; loss = MSE on the masked patches only. AdamW (β 0.9, 0.95), weight decay 0.05
  on weights only (timm ``add_weight_decay`` rule), linear warm-up then half-cycle cosine per
  step, gradient-norm clip 0.8.
* **Stage B, ``"ldm"``**: the conditioning model — the MAE encoder over all tokens (no masking,
  no cls token) → channel mapper (token-axis ``Conv1d`` stack, tokens → tokens/2 →
  ``context_tokens``) → dim mapper ``Linear(dim → cross_attention_dim)`` — gives the UNet's
  cross-attention context; a time-conditioning projection of that context
  (``Conv1d(context_tokens → /2 → 1)`` + ``Linear(cross_attention_dim → time-embedding dim)``) is
  added to the UNet's timestep embedding; a CLIP alignment loss ``1 − cos`` between a pooled
  projection of the pre-mapper encoder latent and the frozen image embedding of the trial's
  stimulus is added (weight 1) to the diffusion loss. Trained: the whole conditioning model, the
  time-conditioning projection, and the UNet's cross-attention (``attn2``) and transformer-block
  ``norm2`` parameters. Stimulus images get upstream's augmentation: with probability 0.5 a random
  crop of (1 − 0.2) of the edge, resized back.
* **Sampling**: PLMS (diffusers ``PNDMScheduler`` with ``skip_prk_steps``), no classifier-free
  guidance, the EEG context and the time conditioning as in training.

How the time conditioning enters the UNet: this method's UNet copy gets diffusers' *identity*
class embedding (``class_embed_type="identity"``, no parameters), and the projection's output is
passed as ``class_labels``; diffusers then adds it to the timestep embedding
(``emb = emb + class_emb``), which is exactly upstream's ``emb = emb + time_embed_condtion(context)``.

Kept from the paper: both stages and their losses, the architecture and its wiring, the optimisers,
the MBM schedule, the trainable set, the crop augmentation, the sampler and guidance.

Scaled down in ``small`` (see :class:`DreamDiffusionConfig` for each value): encoder width 128 and
depth 4 (1024 / 24), decoder 64 / 2 (512 / 8), 4 heads (16), mask ratio 0.5 (0.1), the native
N170 length of 180 samples (180 = 45 patches of 4; upstream resamples to 512), and short budgets
(1,500 + 1,500 steps instead of 500 + 500 epochs) with larger learning rates.

Backbone roles in the ``small`` profile: CLIP ViT-L/14 image embeddings → EfficientNet-Lite0
pooled features (1280-d); the CLIP-text-shaped context 77 × 768 → the shared denoiser's context
(``context_tokens`` × ``cross_attention_dim``, 16 × 384 with MiniLM); SD-1.5 → the shared small
pretrained UNet (a fine-tuned copy) and the TAEF2 autoencoder. The shared small denoiser predicts
``v`` (SD-1.5 predicts ε), so the diffusion target is the scheduler's velocity
(``DDPMScheduler.get_velocity``); with an ε-prediction denoiser it is the noise.

Departures from upstream, and upstream bugs fixed:

* **No model selection on the test split.** Upstream's validation loader is the test split and
  ``checkpoint_best.pth`` is chosen by the top-1 accuracy of images generated from it. Here the
  Stage-B checkpoint is the one with the lowest diffusion loss on the validation split at fixed
  noise and timesteps; the Stage-A checkpoint likewise by the masked-reconstruction loss on the
  validation split with fixed masks.
* **Stage-A data.** Upstream pretrains on an unreleased external EEG collection ("MOABB", ~120k
  samples; issues #9/#34/#38). Here Stage A sees the training split's EEG only.
* **EEG scaling.** Upstream divides the pretraining EEG by 10 and feeds the (already
  standardised) CVPR40 EEG as is in Stage B. Here both stages see the same per-channel z-score
  with training-split statistics, clamped at ±``eeg_clip`` standard deviations.
* **Trainable set by module type.** Upstream's name filter ``attn2|norm2`` also catches the VAE's
  ResNet ``norm2`` and the CLIP vision tower's ``layer_norm2`` (and so trains them by accident);
  only the transformer blocks' ``norm2`` (CompVis's meaning) is trained here.
* **No EMA.** Upstream samples with an EMA (decay 0.9999) of the UNet-side weights; with the short
  small-profile budgets that EMA would barely move from the initial weights, so the best-validation
  weights are used directly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eegbench._compat import ensure_torchvision
from eegbench.config import (
    at_least,
    greater_than,
    in_range,
    sampler_field,
    validate_fields,
)
from eegbench.data import DatasetInfo, EEGDataset
from eegbench.errors import ConfigError
from eegbench.method import Method, RunContext, channel_statistics
from eegbench.training import Stage, diffusion_target, fixed_noise, stimulus_features

from .modeling import (
    ChannelMapper,
    ClipMapping,
    EEGMAEDecoder,
    EEGMAEEncoder,
    TimeConditioner,
    cosine_schedule,
    masked_patch_loss,
    time_embedding_dim,
    transformer_block_parameters,
)

__all__ = ["DreamDiffusion", "DreamDiffusionConfig"]


@dataclass
class DreamDiffusionConfig:
    """Hyperparameters of :class:`DreamDiffusion` (defaults: the ``small`` profile).

    Upstream values (``bbaaii/DreamDiffusion @8e14797``, ``code/config.py``; ``research/methods.md``
    §4) are in brackets where the small profile differs; ``default_config("paper")`` uses them.

    Parameters
    ----------
    time_len : int
        Samples the EEG is linearly resampled to before patching; 0 = ``n_times`` rounded up to a
        multiple of ``patch_size`` (180 on N170) [512].
    patch_size : int
        Samples per time patch (4).
    embed_dim : int
        Encoder token width [1024].
    depth : int
        Encoder blocks [24].
    num_heads : int
        Encoder heads [16].
    mlp_ratio : float
        MLP width factor of every block (1.0).
    decoder_dim : int
        MAE decoder width [512].
    decoder_depth : int
        MAE decoder blocks [8].
    decoder_num_heads : int
        MAE decoder heads [16].
    mask_ratio : float
        Fraction of patches masked in Stage A [0.1, ``Config_MBM_EEG``; the paper's own value is
        unverified]. 0.5 here: a patch of 4 samples at 256 Hz spans 16 ms of band-passed
        4-channel EEG, so with 10 % masking nearly every masked patch has visible neighbours on
        both sides and linear interpolation solves the task; MAE's 0.75 leaves too little of a
        4-channel trial to reconstruct from.
    eeg_clip : float
        Clamp of the z-scored EEG in standard deviations (guards against artefacts of hundreds of
        µV in the raw Muse recordings); 0 disables [no clamp].
    mbm_steps, mbm_batch_size : int
        Stage-A optimiser steps and batch size [500 epochs ≈ 40,000 steps on CVPR40's 7,959
        training trials; batch 100]. 1,500 × 32 here: ~27 passes over N170's 1,795 training
        trials.
    mbm_lr, mbm_min_lr : float
        Stage-A peak and final learning rate [2.5e-4, 0].
    mbm_weight_decay : float
        Stage-A AdamW decay on weight matrices (0.05).
    mbm_warmup_steps : int
        Linear warm-up steps of Stage A [40 epochs ≈ 3,200 steps].
    mbm_grad_clip : float
        Stage-A gradient-norm clip (0.8).
    mbm_eval_every : int
        Stage-A validation interval in steps (fixed masks; the best checkpoint is kept).
    ldm_steps, ldm_batch_size : int
        Stage-B optimiser steps and batch size [500 epochs ≈ 159,500 steps on 7,959 trials;
        batch 25].
    ldm_lr : float
        Stage-B AdamW learning rate [5.3e-5].
    ldm_weight_decay : float
        Stage-B AdamW decay (0.01, PyTorch's default that upstream uses).
    ldm_grad_clip : float
        Stage-B gradient-norm clip (0.5, upstream's Lightning ``gradient_clip_val``).
    clip_weight : float
        Weight of the CLIP alignment loss (1.0).
    crop_ratio : float
        Edge fraction cut by the random-crop augmentation (0.2: 512 → 410 px).
    crop_prob : float
        Probability of the crop augmentation (0.5).
    crop_views : int
        Cropped views per stimulus encoded once before Stage B (the autoencoder is too costly to
        run per step); a crop step picks one of them at random.
    ldm_eval_every : int
        Stage-B validation interval in steps (diffusion loss at fixed noise and timesteps; the
        best checkpoint is kept).
    val_trials : int
        At most this many validation trials are used by the validation losses.
    sampler : str
        Sampler of :meth:`DreamDiffusion.generate`, a key of
        ``eegbench.backbones.denoiser.SAMPLERS`` (``"plms"``, upstream's ``PLMSSampler``).
    guidance_scale : float
        Classifier-free guidance scale (1.0 = none, as upstream).
    log_every : int
        Interval (steps) of training-loss logging.
    gradient_checkpointing : bool
        Recompute the trainable UNet copy's activations in the backward pass (diffusers
        ``enable_gradient_checkpointing``): less GPU memory, ~30 % more time [False: upstream trains in fp32 without it].
    """

    time_len: int = at_least(0, 0)
    patch_size: int = at_least(1, 4)
    embed_dim: int = at_least(1, 128)
    depth: int = at_least(1, 4)
    num_heads: int = at_least(1, 4)
    mlp_ratio: float = greater_than(0.0, 1.0)
    decoder_dim: int = at_least(1, 64)
    decoder_depth: int = at_least(1, 2)
    decoder_num_heads: int = at_least(1, 4)
    mask_ratio: float = in_range(0.0, 1.0, 0.5, low_open=True, high_open=True)
    eeg_clip: float = at_least(0.0, 10.0)
    mbm_steps: int = at_least(0, 1500)
    mbm_batch_size: int = at_least(1, 32)
    mbm_lr: float = greater_than(0.0, 1e-3)
    mbm_min_lr: float = at_least(0.0, 0.0)
    mbm_weight_decay: float = at_least(0.0, 0.05)
    mbm_warmup_steps: int = at_least(0, 100)
    mbm_grad_clip: float = at_least(0.0, 0.8)
    mbm_eval_every: int = at_least(1, 250)
    ldm_steps: int = at_least(0, 1500)
    ldm_batch_size: int = at_least(1, 16)
    ldm_lr: float = greater_than(0.0, 1e-4)
    ldm_weight_decay: float = at_least(0.0, 0.01)
    ldm_grad_clip: float = at_least(0.0, 0.5)
    clip_weight: float = at_least(0.0, 1.0)
    crop_ratio: float = in_range(0.0, 1.0, 0.2, high_open=True)
    crop_prob: float = in_range(0.0, 1.0, 0.5)
    crop_views: int = at_least(0, 4)
    ldm_eval_every: int = at_least(1, 250)
    val_trials: int = at_least(1, 256)
    sampler: str = sampler_field("plms")
    guidance_scale: float = at_least(1.0, 1.0)
    log_every: int = at_least(1, 50)
    gradient_checkpointing: bool = False

    def validate(self) -> None:
        """Check value ranges.

        Raises
        ------
        ConfigError
            Naming the first offending option.
        """
        validate_fields(self, "dreamdiffusion")
        if self.time_len and self.time_len % self.patch_size:
            raise ConfigError(f"dreamdiffusion: time_len={self.time_len} must be a multiple of "
                              f"patch_size={self.patch_size}")
        if self.embed_dim % self.num_heads or self.embed_dim % 2:
            raise ConfigError(f"dreamdiffusion: embed_dim={self.embed_dim} must be even and divisible by "
                              f"num_heads={self.num_heads}")
        if self.decoder_dim % self.decoder_num_heads or self.decoder_dim % 2:
            raise ConfigError(f"dreamdiffusion: decoder_dim={self.decoder_dim} must be even and divisible by "
                              f"decoder_num_heads={self.decoder_num_heads}")


#: The ``paper`` profile (``code/config.py``: ``Config_MBM_EEG``, ``Config_Generative_Model``;
#: epochs converted to steps for CVPR40's 7,959 training trials of the official split).
PAPER_CONFIG = {
    "time_len": 512, "patch_size": 4, "embed_dim": 1024, "depth": 24, "num_heads": 16, "mlp_ratio": 1.0,
    "decoder_dim": 512, "decoder_depth": 8, "decoder_num_heads": 16, "mask_ratio": 0.1, "eeg_clip": 0.0,
    "mbm_steps": 40_000, "mbm_batch_size": 100, "mbm_lr": 2.5e-4, "mbm_min_lr": 0.0, "mbm_weight_decay": 0.05,
    "mbm_warmup_steps": 3_200, "mbm_grad_clip": 0.8, "mbm_eval_every": 800,
    "ldm_steps": 159_500, "ldm_batch_size": 25, "ldm_lr": 5.3e-5, "ldm_weight_decay": 0.01, "ldm_grad_clip": 0.5,
    "clip_weight": 1.0, "crop_ratio": 0.2, "crop_prob": 0.5, "crop_views": 4, "ldm_eval_every": 638,
    "val_trials": 256, "sampler": "plms", "guidance_scale": 1.0, "log_every": 50,
}


class _MBMModel(nn.Module):
    """Stage-A wrapper (one module for ``accelerator.prepare``): masked-patch loss of preprocessed EEG."""

    def __init__(self, encoder: EEGMAEEncoder, decoder: EEGMAEDecoder, mask_ratio: float) -> None:
        super().__init__()
        self.encoder, self.decoder, self.mask_ratio = encoder, decoder, float(mask_ratio)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        latent, mask, ids_restore = self.encoder.forward_masked(x, self.mask_ratio, generator)
        pred = self.decoder(latent, ids_restore)
        return masked_patch_loss(pred, self.encoder.patchify(x), mask)


class _Conditioner(nn.Module):
    """The conditioning path: EEG → (context, time conditioning, pre-mapper latent)."""

    def __init__(self, encoder, channel_mapper, dim_mapper, time_cond) -> None:
        super().__init__()
        self.encoder, self.channel_mapper, self.dim_mapper, self.time_cond = (
            encoder, channel_mapper, dim_mapper, time_cond)

    def forward(self, eeg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent = self.encoder(eeg)
        context = self.dim_mapper(self.channel_mapper(latent))
        return context, self.time_cond(context), latent


class _LDMModel(nn.Module):
    """Stage-B wrapper: UNet prediction with the EEG context and time conditioning, plus the CLIP loss."""

    def __init__(self, conditioner: _Conditioner, clip_mapping: ClipMapping, unet: nn.Module) -> None:
        super().__init__()
        self.conditioner, self.clip_mapping, self.unet = conditioner, clip_mapping, unet

    def forward(self, eeg, noisy, timesteps, image_features):
        context, tcond, latent = self.conditioner(eeg)
        pred = self.unet(noisy, timesteps, encoder_hidden_states=context, class_labels=tcond).sample
        return pred, self.clip_mapping.loss(latent, image_features)


class DreamDiffusion(Method):
    """DreamDiffusion: masked-signal-modelling EEG encoder + cross-attention fine-tuned latent diffusion.

    Parameter counts at the ``paper`` profile (SD-1.5 backbones on the meta device; derived
    figures of ``research/methods.md`` §4.2 and §7 in brackets): MAE encoder + decoder
    165,380,096 [165,380,096]; UNet ``attn2`` 43,962,560 [same], transformer ``norm2`` 24,960
    [same], time conditioning 987,323 [same], channel mapper 13,261, dim mapper 787,200 and CLIP
    mapping 787,329 [same]; the "210 M" SYNAPSE-README convention (MAE encoder + decoder + ``attn2``
    + ``norm2`` + time conditioning) 210,354,939 [same]. Differences: the encoder here has
    151,901,184 parameters against upstream's ``eeg_encoder`` 151,902,208 — upstream's class also
    holds a 1,024-d ``mask_token`` that is never loaded nor used; and Stage B trains
    198,462,793 parameters against upstream's 198,464,841, because neither that dead
    ``mask_token`` nor the cls token (Stage B does not use it, so it would get no gradient) is
    marked trainable here. As upstream, Stage B does train the sin-cos position table that is fixed
    in Stage A (upstream forces ``requires_grad`` on every conditioning-model parameter).

    Parameters
    ----------
    config : DreamDiffusionConfig
    info : DatasetInfo
        ``n_chans`` and ``n_times`` size the encoder.
    backbones : eegbench.backbones.Backbones
        Needs a prepared denoiser (its ``context_tokens`` × ``cross_attention_dim`` is the context
        shape), an ``image_embedder`` (CLIP-image role, ``.dim``) and the ``vae``. On the meta
        device (``PaperBackbones``) only modules are built.
    device : torch.device

    Raises
    ------
    ConfigError
        For invalid hyperparameters.
    """

    name = "dreamdiffusion"
    version = "0.1.0"
    paper = ("DreamDiffusion (Bai et al.), arXiv 2306.16934 (https://arxiv.org/abs/2306.16934); reference code "
             "https://github.com/bbaaii/DreamDiffusion @8e14797")
    paper_backbone: ClassVar[str] = "sd15"
    #: Sampler steps of the published evaluation: PLMS, 250 steps (``research/methods.md`` §2.1).
    published_steps = 250
    #: The CLIP loss targets CLIP ViT-L/14 ``image_embeds`` (768; §4.3).
    paper_roles: ClassVar[dict[str, str]] = {"image_embedder": "clip-l14"}
    Config = DreamDiffusionConfig
    stages = ("mbm", "ldm")
    inference_components = ("mae_encoder", "channel_mapper", "dim_mapper", "time_cond", "unet", "vae")

    def __init__(self, config: DreamDiffusionConfig, *, info: DatasetInfo, backbones: Any,
                 device: torch.device) -> None:
        super().__init__(config, info=info, backbones=backbones, device=device)
        config.validate()
        ensure_torchvision()
        den = backbones.denoiser
        self.context_tokens = int(den.context_tokens)
        self.context_dim = int(den.cross_attention_dim)
        c = config
        time_len = c.time_len or int(math.ceil(info.n_times / c.patch_size) * c.patch_size)
        build_device = torch.device("meta") if self.device.type == "meta" else torch.device("cpu")
        with build_device:
            self.mae_encoder = EEGMAEEncoder(info.n_chans, time_len, c.patch_size, c.embed_dim, c.depth, c.num_heads,
                                             c.mlp_ratio, clip=c.eeg_clip)
            n_tokens = self.mae_encoder.num_patches
            self.mae_decoder = EEGMAEDecoder(info.n_chans, c.patch_size, n_tokens, c.embed_dim, c.decoder_dim,
                                             c.decoder_depth, c.decoder_num_heads, c.mlp_ratio)
            self.channel_mapper = ChannelMapper(n_tokens, self.context_tokens)
            self.dim_mapper = nn.Linear(c.embed_dim, self.context_dim)
            self.clip_mapping = ClipMapping(n_tokens, c.embed_dim, int(backbones.image_embedder.dim))
        self.unet = den.new_unet()
        if c.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        # identity class embedding: the time conditioning passed as ``class_labels`` is added to
        # the timestep embedding (no parameters, so state dicts are unchanged)
        self.unet.register_to_config(class_embed_type="identity")
        self.unet.class_embedding = nn.Identity()
        with build_device:
            self.time_cond = TimeConditioner(self.context_tokens, self.context_dim, time_embedding_dim(self.unet))
        for module in self._own_modules():
            module.to(self.device)
        self.configure_stage("inference")

    def _own_modules(self) -> tuple[nn.Module, ...]:
        return (self.mae_encoder, self.mae_decoder, self.channel_mapper, self.dim_mapper, self.clip_mapping,
                self.time_cond, self.unet)

    # ------------------------------------------------------------------ interface
    @classmethod
    def default_config(cls, profile: str = "small") -> DreamDiffusionConfig:
        """Hyperparameters for ``"small"`` (CPU minutes) or ``"paper"`` (published sizes and recipe).

        Raises
        ------
        ConfigError
            For another profile.
        """
        if profile == "small":
            return DreamDiffusionConfig()
        if profile == "paper":
            return DreamDiffusionConfig(**PAPER_CONFIG)
        raise ConfigError(f"dreamdiffusion: unknown profile {profile!r}; known: small, paper")

    @classmethod
    def test_config(cls) -> DreamDiffusionConfig:
        """Toy-size configuration for conformance tests (width 16, one block, 10 + 10 steps)."""
        return DreamDiffusionConfig(embed_dim=16, depth=1, num_heads=2, decoder_dim=8, decoder_depth=1,
                                    decoder_num_heads=2, mbm_batch_size=8, ldm_batch_size=8, log_every=5,
                                    mbm_eval_every=5, ldm_eval_every=5, mbm_warmup_steps=2, crop_views=2,
                                    mbm_steps=10, ldm_steps=10, mbm_lr=3e-3, ldm_lr=1e-3)

    def components(self) -> dict[str, nn.Module]:
        """Every module by name: MAE encoder/decoder, mappers, CLIP mapping, time conditioning,
        the UNet copy, and the frozen shared VAE and image embedder (the CLIP-loss target)."""
        return {
            "mae_encoder": self.mae_encoder,
            "mae_decoder": self.mae_decoder,
            "channel_mapper": self.channel_mapper,
            "dim_mapper": self.dim_mapper,
            "clip_mapping": self.clip_mapping,
            "time_cond": self.time_cond,
            "unet": self.unet,
            "vae": self.backbones.vae,
            "image_embedder": self.backbones.image_embedder,
        }

    def state_components(self) -> dict[str, nn.Module]:
        """What :meth:`save` stores: everything but the frozen, shared VAE and image embedder."""
        return {k: v for k, v in self.components().items() if k not in ("vae", "image_embedder")}

    def configure_stage(self, stage: str) -> None:
        """Set ``requires_grad`` for ``stage``.

        ``mbm``: MAE encoder and decoder except their fixed sin-cos position tables. ``ldm``: the
        conditioning model (encoder including its position table, as upstream, but not the unused
        cls token; channel and dim mapper; CLIP mapping), the time conditioning, and the UNet's
        transformer-block ``attn2`` and ``norm2``. ``inference``: nothing.

        Raises
        ------
        ConfigError
            For an unknown stage.
        """
        if stage not in (*self.stages, "inference"):
            raise ConfigError(f"dreamdiffusion: unknown stage {stage!r}; known: {', '.join(self.stages)}")
        for module in self.components().values():
            module.requires_grad_(False)
        if stage == "mbm":
            self.mae_encoder.requires_grad_(True)
            self.mae_decoder.requires_grad_(True)
            self.mae_encoder.pos_embed.requires_grad_(False)
            self.mae_decoder.decoder_pos_embed.requires_grad_(False)
        elif stage == "ldm":
            for module in (self.mae_encoder, self.channel_mapper, self.dim_mapper, self.clip_mapping, self.time_cond):
                module.requires_grad_(True)
            self.mae_encoder.cls_token.requires_grad_(False)
            for param in transformer_block_parameters(self.unet).values():
                param.requires_grad_(True)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _eeg_tensor(dataset: EEGDataset) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(dataset.eeg)).float()

    def _val_subset(self, val: EEGDataset) -> EEGDataset:
        ids = list(val.trials["trial_id"])
        if len(ids) <= self.config.val_trials:
            return val
        keep = np.linspace(0, len(ids) - 1, self.config.val_trials).round().astype(int)
        return val.subset([ids[i] for i in keep])

    # ------------------------------------------------------------------ training
    def fit(self, train: EEGDataset, val: EEGDataset, ctx: RunContext) -> None:
        """Stage A (masked signal modelling) then Stage B (latent-diffusion fine-tuning) on ``train``.

        ``val`` selects the checkpoint of each stage (never the test split). Both stages run
        through the harness's :class:`~eegbench.training.StageTrainer`.

        Parameters
        ----------
        train, val : EEGDataset
            EEG in ``info.unit`` (V); ``val`` may be empty (then the last weights are kept).
        ctx : RunContext

        Raises
        ------
        DataFormatError
            If the EEG shape differs from ``info`` or the training set is empty.
        """
        self.check_fit_data(train, val)
        mean, std = channel_statistics(train.eeg)
        self.mae_encoder.set_normalization(mean, std)
        trainer = ctx.trainer(self)
        trainer.run_stage("mbm", self.config.mbm_steps, lambda: self._mbm_stage(train, val, ctx.seed))
        trainer.run_stage("ldm", self.config.ldm_steps, lambda: self._ldm_stage(train, val, ctx.seed))
        self.configure_stage("inference")
        for module in self._own_modules():
            module.eval()

    def _preprocessed(self, dataset: EEGDataset) -> torch.Tensor:
        with torch.no_grad():
            eeg = self._eeg_tensor(dataset)
            return torch.cat([self.mae_encoder.preprocess(eeg[i:i + 1024].to(self.device)).cpu()
                              for i in range(0, len(eeg), 1024)]) if len(eeg) else eeg

    @torch.no_grad()
    def _mbm_validation(self, model: nn.Module, x: torch.Tensor, seed: int, device) -> float:
        gen = torch.Generator().manual_seed(seed)
        total, n = 0.0, 0
        bs = self.config.mbm_batch_size
        for start in range(0, len(x), bs):
            batch = x[start:start + bs].to(device)
            total += float(model(batch, generator=gen)) * len(batch)
            n += len(batch)
        return total / max(n, 1)

    def _mbm_stage(self, train: EEGDataset, val: EEGDataset, seed: int) -> Stage:
        """Stage A: masked signal modelling of the EEG MAE (AdamW β = (0.9, 0.95), cosine LR with warm-up)."""
        c = self.config
        self.configure_stage("mbm")
        x_train = self._preprocessed(train)
        x_val = self._preprocessed(self._val_subset(val)) if len(val) else None
        model = _MBMModel(self.mae_encoder, self.mae_decoder, c.mask_ratio)
        decay, no_decay = [], []
        for pname, p in model.named_parameters():
            if p.requires_grad:
                # timm ``add_weight_decay``: no decay for biases and 1-D parameters (norms)
                (no_decay if p.ndim <= 1 or pname.endswith(".bias") else decay).append(p)
        validate = None
        if x_val is not None and len(x_val):
            validate = lambda m: {"loss": self._mbm_validation(m, x_val, seed, self.device)}  # noqa: E731
        return Stage(
            model=model, step=lambda m, batch: {"loss": m(batch[0])}, data=(x_train,),
            batch_size=min(c.mbm_batch_size, len(train)),
            params=[{"params": decay, "weight_decay": c.mbm_weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            optimizer=lambda groups: torch.optim.AdamW(groups, lr=c.mbm_lr, betas=(0.9, 0.95)),
            lr_at=lambda i: cosine_schedule(i, c.mbm_steps, c.mbm_warmup_steps, c.mbm_lr, c.mbm_min_lr),
            grad_clip=c.mbm_grad_clip, log_every=c.log_every,
            validate=validate, eval_every=c.mbm_eval_every, select=lambda row: row["loss"],
            keep=(self.mae_encoder, self.mae_decoder),
        )

    # ------------------------------------------------------------------ stage B data
    @torch.no_grad()
    def _view_latents(self, dataset: EEGDataset, unique: list[str], n_crops: int, seed: int) -> torch.Tensor:
        """Scaled VAE latents (n_img, 1 + n_crops, c, h, w) of each stimulus and its random crops.

        View 0 is the image; view k ≥ 1 is a random square crop of ``(1 − crop_ratio)`` of the
        edge at a uniform position, resized back (upstream: Resize 512 → RandomCrop 410 → Resize 512).
        """
        den = self.backbones.denoiser
        size = int(den.image_size)
        crop = max(round(size * (1.0 - self.config.crop_ratio)), 1)
        gen = torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, len(unique), 64):
            imgs = torch.from_numpy(dataset.stimuli.load_many(unique[start:start + 64], size))
            views = [den.encode_images(imgs.to(self.device)).float().cpu()]
            for _ in range(n_crops):
                crops = []
                for img in imgs:
                    top = int(torch.randint(0, size - crop + 1, (1,), generator=gen))
                    left = int(torch.randint(0, size - crop + 1, (1,), generator=gen))
                    patch = img[None, :, top:top + crop, left:left + crop].float()
                    patch = F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False,
                                          antialias=True)
                    crops.append(patch.round().clamp(0, 255).to(torch.uint8))
                views.append(den.encode_images(torch.cat(crops).to(self.device)).float().cpu())
            out.append(torch.stack(views, dim=1))
        return torch.cat(out)

    def _ldm_tensors(self, dataset: EEGDataset, n_crops: int, seed: int):
        """EEG (n, C, T), image index per trial (n,), features (n_img, D), latents (n_img, V, c, h, w)."""
        embedder = self.backbones.image_embedder
        size = int(getattr(embedder, "image_size", self.info.image_size))
        feats, index = stimulus_features(dataset, embedder, self.device, image_size=size)
        unique = sorted(set(dataset.trials["image_id"]))
        return (self._eeg_tensor(dataset), torch.from_numpy(index), feats,
                self._view_latents(dataset, unique, n_crops, seed))

    def _noise_scheduler(self):
        """Training scheduler (DDPM) from the denoiser's scheduler config."""
        return self.backbones.denoiser.new_scheduler("ddpm")

    @staticmethod
    def _target(scheduler, latents, noise, timesteps) -> torch.Tensor:
        return diffusion_target(scheduler, latents, noise, timesteps, who="dreamdiffusion")

    def _ldm_losses(self, model, scheduler, eeg, latents, feats, noise, timesteps):
        noisy = scheduler.add_noise(latents, noise, timesteps)
        pred, clip_loss = model(eeg, noisy, timesteps, feats)
        target = self._target(scheduler, latents, noise, timesteps)
        return F.mse_loss(pred.float(), target.float()), clip_loss

    @torch.no_grad()
    def _ldm_validation(self, model, scheduler, batch, device) -> tuple[float, float]:
        eeg, lat, feats, noise, ts = batch
        sums, n = [0.0, 0.0], 0
        bs = self.config.ldm_batch_size
        for s in range(0, len(eeg), bs):
            parts = [x[s:s + bs].to(device) for x in (eeg, lat, feats, noise, ts)]
            diff, clip = self._ldm_losses(model, scheduler, *parts)
            sums[0] += float(diff) * len(parts[0])
            sums[1] += float(clip) * len(parts[0])
            n += len(parts[0])
        return sums[0] / max(n, 1), sums[1] / max(n, 1)

    def _ldm_stage(self, train: EEGDataset, val: EEGDataset, seed: int) -> Stage:
        """Stage B: the conditioning model, CLIP mapping and UNet attn2/norm2 on the diffusion + CLIP loss."""
        c = self.config
        self.configure_stage("inference")
        n_crops = c.crop_views if c.crop_prob > 0 and c.crop_ratio > 0 else 0
        eeg, index, feats, latents = self._ldm_tensors(train, n_crops, seed)
        scheduler = self._noise_scheduler()
        n_train_steps = int(scheduler.config.num_train_timesteps)
        validate = None
        if len(val):
            sub = self._val_subset(val)
            veeg, vindex, vfeats, vlat = self._ldm_tensors(sub, 0, seed)
            vl = vlat[vindex, 0]
            vn, vts = fixed_noise(vl.shape, n_train_steps, seed)
            val_batch = (veeg, vl, vfeats[vindex], vn, vts)

            def validate_losses(m):
                vdiff, vclip = self._ldm_validation(m, scheduler, val_batch, self.device)
                return {"diffusion": vdiff, "clip": vclip}
            validate = validate_losses
        self.configure_stage("ldm")
        conditioner = _Conditioner(self.mae_encoder, self.channel_mapper, self.dim_mapper, self.time_cond)
        feats_dev, latents_dev = feats.to(self.device), latents.to(self.device)
        n_views = latents.shape[1]

        def step(m, batch):
            x, idx = batch
            b = len(idx)
            view = torch.zeros(b, dtype=torch.int64, device=idx.device)
            if n_views > 1:
                crop = torch.rand(b, device=idx.device) < c.crop_prob
                view = torch.where(crop, torch.randint(1, n_views, (b,), device=idx.device), view)
            lat = latents_dev[idx.to(self.device), view.to(self.device)]
            noise = torch.randn_like(lat)
            t = torch.randint(0, n_train_steps, (b,), device=lat.device)
            diff, clip = self._ldm_losses(m, scheduler, x, lat, feats_dev[idx.to(self.device)], noise, t)
            return {"loss": diff + c.clip_weight * clip, "diffusion": diff, "clip": clip}

        return Stage(
            model=_LDMModel(conditioner, self.clip_mapping, self.unet), step=step, data=(eeg, index),
            batch_size=min(c.ldm_batch_size, len(train)),
            optimizer=lambda p: torch.optim.AdamW(p, lr=c.ldm_lr, weight_decay=c.ldm_weight_decay),
            grad_clip=c.ldm_grad_clip, log_every=c.log_every,
            validate=validate, eval_every=c.ldm_eval_every, select=lambda row: row["diffusion"],
        )

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def encode_eeg(self, eeg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention context and time conditioning of raw EEG.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float, in ``info.unit`` (V)

        Returns
        -------
        context : torch.Tensor, shape (batch, context_tokens, cross_attention_dim), float32
        time_cond : torch.Tensor, shape (batch, time-embedding dim), float32
            Added to the UNet's timestep embedding.

        Raises
        ------
        DataFormatError
            If ``eeg`` has the wrong shape.
        """
        self.check_eeg(eeg, "encode_eeg")
        for module in (self.mae_encoder, self.channel_mapper, self.dim_mapper, self.time_cond):
            module.eval()
        context = self.dim_mapper(self.channel_mapper(self.mae_encoder(eeg.to(self.device, torch.float32))))
        return context, self.time_cond(context)

    embedding_description = ("MAE encoder latent through the CLIP mapping: the vector Stage B's alignment loss "
                             "(1 − cos) pulls towards the image embedder's features")

    @torch.no_grad()
    def embed_eeg(self, eeg: torch.Tensor, *, subject: torch.Tensor | None = None) -> torch.Tensor:
        """EEG embedding for retrieval: ``clip_mapping(mae_encoder(eeg))``, the image-aligned vector.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float, in ``info.unit`` (V)
        subject : torch.Tensor, optional
            Unused.

        Returns
        -------
        torch.Tensor, shape (batch, image_dim), float32
        """
        self.check_eeg(eeg, "embed_eeg")
        self.mae_encoder.eval()
        self.clip_mapping.eval()
        return self.clip_mapping(self.mae_encoder(eeg.to(self.device, torch.float32))).float()

    @torch.no_grad()
    def generate(self, eeg: torch.Tensor, *, generators: Sequence[torch.Generator], n_samples: int,
                 num_inference_steps: int, subject: torch.Tensor | None = None) -> torch.Tensor:
        """Generate images from EEG with the configured sampler (PLMS), without guidance by default.

        Sampling is the shared :meth:`PretrainedDenoiser.sample` with this method's UNet copy, the
        EEG context, and the time conditioning passed as the UNet's ``class_labels`` (identity
        class embedding, added to the timestep embedding). With ``guidance_scale > 1`` the
        unconditional branch uses the all-zero context and its time conditioning.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float
            EEG in ``info.unit`` (V).
        generators : sequence of torch.Generator, length batch * n_samples
            Trial-major order; image i of trial b takes all its randomness from
            ``generators[b * n_samples + i]``.
        n_samples : int
            Images per trial.
        num_inference_steps : int
            Sampler steps.
        subject : torch.Tensor, optional
            Unused (the method is subject-agnostic).

        Returns
        -------
        torch.Tensor, shape (batch, n_samples, 3, H, W), uint8
            ``H = W = backbones.denoiser.image_size``.

        Raises
        ------
        DataFormatError
            If ``eeg`` has the wrong shape.
        ValueError
            If the number of generators is not ``batch * n_samples`` or a count is < 1.
        """
        self.check_generate_args(eeg, generators, n_samples, num_inference_steps)
        batch = eeg.shape[0]
        den = self.backbones.denoiser
        self.unet.eval()
        context, tcond = self.encode_eeg(eeg)
        context = context.repeat_interleave(n_samples, dim=0)
        tcond = tcond.repeat_interleave(n_samples, dim=0)
        guidance = float(self.config.guidance_scale)
        null = None
        if guidance != 1.0:
            null = torch.zeros_like(context)
            tcond = torch.cat([tcond, self.time_cond(null)])  # conditional rows first, as sample() expects
        images = den.sample(context, list(generators), num_inference_steps=num_inference_steps,
                            guidance_scale=guidance, unet=self.unet, extra_context={"class_labels": tcond},
                            null_context=null, sampler=self.config.sampler)
        return images.reshape(batch, n_samples, *images.shape[1:])
