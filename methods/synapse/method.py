"""SYNAPSE, the reference method plugin of eegbench.

SYNAPSE (arXiv 2511.17547; reference repository ``CVMILab-CUK/synapse @225872a``) generates images
from EEG in two stages (``research/methods.md`` §3):

1. **Stage 1** trains a hybrid CNN/transformer EEG autoencoder (:mod:`.modeling`) whose token latent
   ``(n_tokens, dim)`` is aligned to the frozen text-token states of a caption of the stimulus
   (MSE + cosine along the token axis) and, through its token mean, contrasted CLIP-style with the
   frozen image embedding of the stimulus; the reconstruction is trained with MSE + (1 − soft
   signal dice). Loss weights are the constant 0.5 each that upstream effectively uses.
2. **Stage 2** freezes the encoder and fine-tunes the denoiser UNet's cross-attention, time and
   ``norm2`` parameters plus decoupled IP-Adapter key/values fed by an "EEG adaptation" head
   (:mod:`.ip_adapter`), with a v-prediction MSE, min-SNR weighting (γ = 0.5), 10 % zeroed
   conditions for classifier-free guidance and an EMA of the trained parameters.

Generation: DDIM (the ``sampler`` option) with classifier-free guidance against the zero condition.

Profiles: ``small`` (defaults of :class:`SynapseConfig`) and ``paper`` (the published sizes and
recipe, built on Stable Diffusion 2.1 — :attr:`Synapse.paper_backbone`; see
:meth:`Synapse.default_config`).

Backbone roles in the ``small`` profile: the text tokens come from all-MiniLM-L6-v2 (16 × 384,
standing in for OpenCLIP ViT-H/14 text tokens 77 × 1024), the image embedding from
EfficientNet-Lite0 (1280-d, standing in for the OpenCLIP image embedding), the UNet is the small
denoiser pretrained on the dataset's stimuli with the same text tokens, the VAE is TAEF2.

Fixes of upstream bugs (on by default, ``research/methods.md`` §0.6, §3.3, §3.7): every trial is
aligned to its *own* caption (upstream aligns a whole batch to the caption of its first sample), and
training images enter the VAE in its proper range (upstream shifts them by −0.5). The caption here is
the class prompt ``"a photo of a <class name>"`` (no captioner is available offline), the same prompt
the small denoiser was pretrained with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
    template_field,
    validate_fields,
)
from eegbench.data import DatasetInfo, EEGDataset
from eegbench.errors import ConfigError
from eegbench.method import Method, RunContext, channel_statistics
from eegbench.training import Stage, diffusion_target, fixed_noise, stimulus_features, stimulus_latents

from .ip_adapter import EEGIPAdapter
from .modeling import AlignmentHeads, SynapseEEGDecoder, SynapseEEGEncoder, stage1_losses

__all__ = ["Synapse", "SynapseConfig", "STAGE2_TRAINABLE_KEYS"]

#: Substrings of UNet parameter names that Stage 2 fine-tunes (``src/models/eeg_LDM2.py``).
STAGE2_TRAINABLE_KEYS = ("attn2", "time", "norm2")

_LOSS_TERMS = ("rec", "sdsc", "sim", "cos", "align")


@dataclass
class SynapseConfig:
    """Hyperparameters of :class:`Synapse` (defaults: the ``small`` profile).

    Upstream values (``research/methods.md`` §3) are given in brackets where the small profile
    differs.

    Parameters
    ----------
    dims : tuple of int
        Widths of the autoencoder stages [(64, 128, 256, 512, 1024)].
    down_strides : tuple of int
        Electrode-axis down-sampling per stage transition, ``len(dims) - 1`` values
        [(2, 4, 4, 4): 128 → 64 → 16 → 4 → 1 electrodes-derived positions].
    n_layer : int
        Residual blocks per stage (2).
    n_head : int
        Attention heads; must divide every width and the latent dim [64].
    dff_factor : int
        FFN width factor of the transformer blocks (2).
    groups : int
        Upper bound on GroupNorm groups (32); the largest divisor of each width is used.
    dropout : float
        Dropout of residual and transformer blocks [0.5]; 0.1 here, since the short small-profile
        runs converge more slowly with 0.5 (alignment loss 0.09 vs 0.04 after 600 steps on N170)
        with no better validation loss.
    agg_hidden : int
        Hidden width of the skip-aggregation MLP [1024].
    global_attn : bool
        Global transformer block over the token latent (True, as the released encoder).
    eeg_clip : float
        Clamp (in standard deviations) of the per-channel z-scored EEG; 0 disables. Guards the
        autoencoder against rare artefacts of hundreds of µV in raw recordings.
    caption_template : str
        Caption of a trial, formatted with its class name.
    stage1_steps, stage1_batch_size : int
        Optimiser steps and batch size of Stage 1 [batch 32].
    stage1_lr, stage1_weight_decay : float
        AdamW settings of Stage 1 [lr 1e-4, decay 0.01 (torch default)].
    w_rec, w_sdsc, w_sim, w_cos, w_align : float
        Loss weights (0.5 each: upstream's automatic weighting is never optimised, §3.3).
    sdsc_alpha : float
        Sign-gate sharpness of the soft signal dice (100).
    stage1_eval_every : int
        Validation interval of Stage 1 in steps; the checkpoint with the lowest validation loss is
        kept (validation split only, never test).
    ip_tokens : int
        Extra tokens of the EEG adaptation head (4).
    ip_scale : float
        Weight of the decoupled IP attention branch (1.0).
    stage2_steps, stage2_batch_size : int
        Optimiser steps and (effective) batch size of Stage 2 [32 = batch 8 × 4 accumulation].
    stage2_accumulation : int
        Gradient-accumulation steps of Stage 2: micro-batches of ``stage2_batch_size /
        stage2_accumulation`` per optimiser step [4].
    stage2_lr, stage2_weight_decay : float
        AdamW settings of Stage 2 [lr 2e-5].
    cond_drop_prob : float
        Probability of replacing a trial's whole EEG condition by zeros (0.1).
    snr_gamma : float
        Min-SNR γ (0.5); 0 disables the weighting.
    use_ema : bool
        Keep an EMA of the Stage-2 trainable parameters and use it for sampling (True).
    ema_decay : float
        EMA decay (diffusers ``EMAModel`` default 0.9999, with its ``(1+n)/(10+n)`` warm-up).
    stage2_eval_every : int
        Interval (steps) of the logged Stage-2 validation loss (fixed noise and timesteps).
    grad_clip : float
        Gradient-norm clip of both stages (1.0).
    guidance_scale : float
        Classifier-free guidance scale at generation [7.5]; 3.0 here (the small denoiser's samples
        stay clean at 3 and class-faithful with caption conditions).
    sampler : str
        Sampler at generation, a key of :data:`eegbench.backbones.denoiser.SAMPLERS` ["ddim", eta 0].
    learn_logit_scale : bool
        Whether the contrastive logit scale is trained [False: upstream's optimiser never sees it,
        §3.3]; True here.
    log_every : int
        Interval (steps) of training-loss logging.
    gradient_checkpointing : bool
        Recompute the trainable UNet copy's activations in the backward pass (diffusers
        ``enable_gradient_checkpointing``): less GPU memory, ~30 % more time [True, upstream's accelerate recipe].
    """

    dims: tuple[int, ...] = (32, 64, 128)
    down_strides: tuple[int, ...] = (2, 2)
    n_layer: int = at_least(1, 2)
    n_head: int = at_least(1, 8)
    dff_factor: int = at_least(1, 2)
    groups: int = at_least(1, 32)
    dropout: float = in_range(0.0, 1.0, 0.1, high_open=True)
    agg_hidden: int = at_least(1, 256)
    global_attn: bool = True
    eeg_clip: float = 10.0
    caption_template: str = template_field("a photo of a {}")
    stage1_steps: int = at_least(0, 1000)
    stage1_batch_size: int = at_least(1, 32)
    stage1_lr: float = greater_than(0.0, 5e-4)
    stage1_weight_decay: float = at_least(0.0, 0.01)
    w_rec: float = 0.5
    w_sdsc: float = 0.5
    w_sim: float = 0.5
    w_cos: float = 0.5
    w_align: float = 0.5
    sdsc_alpha: float = 100.0
    stage1_eval_every: int = at_least(1, 250)
    ip_tokens: int = at_least(1, 4)
    ip_scale: float = 1.0
    stage2_steps: int = at_least(0, 1500)
    stage2_batch_size: int = at_least(1, 16)
    stage2_accumulation: int = at_least(1, 1)
    stage2_lr: float = greater_than(0.0, 1e-4)
    stage2_weight_decay: float = at_least(0.0, 0.01)
    cond_drop_prob: float = in_range(0.0, 1.0, 0.1)
    snr_gamma: float = at_least(0.0, 0.5)
    use_ema: bool = True
    ema_decay: float = in_range(0.0, 1.0, 0.9999, low_open=True, high_open=True)
    stage2_eval_every: int = at_least(1, 500)
    grad_clip: float = at_least(0.0, 1.0)
    guidance_scale: float = at_least(1.0, 3.0)
    sampler: str = sampler_field("ddim")
    learn_logit_scale: bool = True
    log_every: int = at_least(1, 50)
    gradient_checkpointing: bool = False

    def validate(self) -> None:
        """Check value ranges.

        Raises
        ------
        ConfigError
            Naming the first offending option.
        """
        validate_fields(self, "synapse")


class _Stage1Model(nn.Module):
    """Training wrapper of Stage 1 (so ``accelerator.prepare`` wraps one module)."""

    def __init__(self, encoder: SynapseEEGEncoder, decoder: SynapseEEGDecoder, heads: AlignmentHeads,
                 sdsc_alpha: float) -> None:
        super().__init__()
        self.encoder, self.decoder, self.heads = encoder, decoder, heads
        self.sdsc_alpha = sdsc_alpha

    def forward(self, eeg: torch.Tensor, image_feat: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.encoder.normalize(eeg)
        latent = self.encoder.encode_normalized(z)
        rec = self.decoder(latent)
        return stage1_losses(latent, rec, z, image_feat, text, self.heads, sdsc_alpha=self.sdsc_alpha)


class _Stage2Model(nn.Module):
    """Training wrapper of Stage 2: UNet + IP adapter, conditioned on EEG tokens."""

    def __init__(self, unet: nn.Module, ip_adapter: EEGIPAdapter) -> None:
        super().__init__()
        self.unet, self.ip_adapter = unet, ip_adapter

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, eeg_tokens: torch.Tensor) -> torch.Tensor:
        context = self.ip_adapter.context(eeg_tokens)
        return self.unet(noisy, timesteps, encoder_hidden_states=context).sample


class Synapse(Method):
    """SYNAPSE: CLIP-aligned EEG autoencoder + IP-adapted latent diffusion.

    Parameters
    ----------
    config : SynapseConfig
    info : DatasetInfo
        ``n_chans`` and ``n_times`` size the autoencoder; ``class_names`` make the captions.
    backbones : eegbench.backbones.Backbones
        Must have a prepared denoiser (``backbones.prepare_denoiser``); its context length and
        width set the latent's ``n_tokens`` and ``dim``.
    device : torch.device

    Raises
    ------
    ConfigError
        For invalid hyperparameters, or a text embedder whose token shape differs from the
        denoiser's context.
    """

    name = "synapse"
    version = "0.1.0"
    paper = ("SYNAPSE, arXiv 2511.17547 (https://arxiv.org/abs/2511.17547); reference code "
             "https://github.com/CVMILab-CUK/synapse @225872a")
    Config = SynapseConfig
    stages = ("stage1", "stage2")
    inference_components = ("eeg_encoder", "unet", "ip_adapter", "vae")
    paper_backbone = "sd21"
    #: Sampler steps of the published evaluation: DDIM, 250 steps (``gen_images.py``) (``research/methods.md`` §2.1).
    published_steps = 250
    #: SYNAPSE aligns to OpenCLIP ViT-H/14 final-layer text tokens and image embeddings (§3.3).
    paper_roles = {"text_embedder": "openclip-h14", "image_embedder": "openclip-h14"}
    #: SD 2.1 (768-v) is trained and sampled at 512 × 512 (§3.4).
    paper_image_size = 512

    def __init__(self, config: SynapseConfig, *, info: DatasetInfo, backbones: Any, device: torch.device) -> None:
        super().__init__(config, info=info, backbones=backbones, device=device)
        config.validate()
        den = backbones.denoiser
        self.n_tokens = int(den.context_tokens)
        self.latent_dim = int(den.cross_attention_dim)
        arch = dict(n_tokens=self.n_tokens, latent_dim=self.latent_dim, dims=tuple(config.dims),
                    down_strides=tuple(config.down_strides), n_layer=config.n_layer, n_head=config.n_head,
                    dff_factor=config.dff_factor, groups=config.groups, dropout=config.dropout)
        self.eeg_encoder = SynapseEEGEncoder(info.n_chans, info.n_times, agg_hidden=config.agg_hidden,
                                             global_attn=config.global_attn, clip=config.eeg_clip, **arch)
        self.eeg_decoder = SynapseEEGDecoder(info.n_chans, info.n_times, **arch)
        self.align_heads = AlignmentHeads(self.latent_dim, int(backbones.image_embedder.dim),
                                          learn_logit_scale=config.learn_logit_scale)
        self.unet = den.new_unet()
        if config.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.ip_adapter = EEGIPAdapter(self.unet, self.latent_dim, num_tokens=config.ip_tokens, scale=config.ip_scale)
        self.ip_adapter.install(self.unet)
        for module in (self.eeg_encoder, self.eeg_decoder, self.align_heads, self.unet, self.ip_adapter):
            module.to(self.device)
        self.configure_stage("inference")

    # ------------------------------------------------------------------ interface
    @classmethod
    def default_config(cls, profile: str = "small") -> SynapseConfig:
        """Hyperparameters for ``profile``.

        ``"small"``: the :class:`SynapseConfig` defaults. ``"paper"``: the published sizes and
        recipe (``research/methods.md`` §3.2–3.5, ``CVMILab-CUK/synapse @225872a``): autoencoder
        widths (64, 128, 256, 512, 1024) with electrode-axis lengths 128 → 64 → 16 → 4 → 1, 2
        residual blocks per stage, 64 heads, dropout 0.5, skip-aggregation width 1024, global
        attention (the released encoder), no EEG clamp, a constant contrastive logit scale;
        Stage 1 AdamW lr 1e-4, batch 32, 69,000 steps (released multi-subject encoder
        ``EEGEncoder_BLIP2_69000``), validation every 1,000 steps; Stage 2 AdamW lr 2e-5, batch 32
        (8 × 4 gradient accumulation upstream), 13,000 steps (released ``checkpoint-13000``), 10 %
        zeroed conditions, min-SNR γ 0.5, EMA; DDIM with guidance 7.5. The token latent is
        77 × 1024, set by the SD 2.1 context (:attr:`paper_backbone`).

        Raises
        ------
        ConfigError
            For a profile other than ``"small"`` and ``"paper"``.
        """
        if profile == "small":
            return SynapseConfig()
        if profile == "paper":
            return SynapseConfig(
                dims=(64, 128, 256, 512, 1024), down_strides=(2, 4, 4, 4), n_layer=2, n_head=64, dff_factor=2,
                groups=32, dropout=0.5, agg_hidden=1024, global_attn=True, eeg_clip=0.0,
                stage1_steps=69_000, stage1_batch_size=32, stage1_lr=1e-4, stage1_weight_decay=0.01,
                stage1_eval_every=1000, ip_tokens=4, ip_scale=1.0, stage2_steps=13_000, stage2_batch_size=32, stage2_accumulation=4,
                stage2_lr=2e-5, stage2_weight_decay=0.01, cond_drop_prob=0.1, snr_gamma=0.5, use_ema=True,
                ema_decay=0.9999, stage2_eval_every=1000, grad_clip=1.0, guidance_scale=7.5, sampler="ddim",
                learn_logit_scale=False, log_every=100, gradient_checkpointing=True,
            )
        raise ConfigError(f"synapse: profile {profile!r} is unknown; known: small, paper")

    @classmethod
    def quoted_convention(cls) -> dict[str, Any]:
        """How SYNAPSE's README counts its "152.69M" parameters, for ``eegbench params``.

        The README's figure is Stage-1 autoencoder (encoder + decoder) + Stage-2 trainables with
        the autoencoder built **without** its global-attention block: 44,633,648 + 108,052,608 =
        152,686,256 (``research/methods.md`` §3.4). The released encoder has the block
        (157,512,522 under the same sum).

        Returns
        -------
        dict
            ``overrides``: config overrides (``--set`` style strings) that rebuild the method the
            way the quoted figure was counted; ``description``: one line.
        """
        return {
            "overrides": {"global_attn": "false"},
            "description": "Stage-1 AE without global attention + Stage-2 trainables (README convention)",
        }

    @classmethod
    def test_config(cls) -> SynapseConfig:
        """Toy-size configuration for conformance tests (2 stages of 10 steps, widths 8/16)."""
        return SynapseConfig(dims=(8, 16), down_strides=(2,), n_head=2, agg_hidden=16, dropout=0.0,
                             stage1_steps=10, stage2_steps=10, stage1_batch_size=8, stage2_batch_size=8,
                             stage1_eval_every=5, stage2_eval_every=5, log_every=5, stage1_lr=3e-3, stage2_lr=1e-3)

    def components(self) -> dict[str, nn.Module]:
        """Every module by name: EEG autoencoder, contrastive heads, UNet copy, IP adapter, VAE."""
        return {
            "eeg_encoder": self.eeg_encoder,
            "eeg_decoder": self.eeg_decoder,
            "align_heads": self.align_heads,
            "unet": self.unet,
            "ip_adapter": self.ip_adapter,
            "vae": self.backbones.vae,
        }

    def state_components(self) -> dict[str, nn.Module]:
        """What :meth:`save` stores: everything but the frozen, shared VAE."""
        return {k: v for k, v in self.components().items() if k != "vae"}

    def configure_stage(self, stage: str) -> None:
        """Set ``requires_grad`` for ``stage``.

        ``stage1``: encoder, decoder and contrastive heads. ``stage2``: UNet parameters whose name
        contains ``attn2``, ``time`` or ``norm2``, and the whole IP adapter. ``inference``: nothing.

        Raises
        ------
        ConfigError
            For an unknown stage.
        """
        if stage not in (*self.stages, "inference"):
            raise ConfigError(f"synapse: unknown stage {stage!r}; known: {', '.join(self.stages)}")
        for module in self.components().values():
            module.requires_grad_(False)
        if stage == "stage1":
            for module in (self.eeg_encoder, self.eeg_decoder, self.align_heads):
                module.requires_grad_(True)
        elif stage == "stage2":
            for pname, param in self.unet.named_parameters():
                if any(key in pname for key in STAGE2_TRAINABLE_KEYS):
                    param.requires_grad_(True)
            self.ip_adapter.requires_grad_(True)

    # ------------------------------------------------------------------ helpers
    def _image_features(self, dataset: EEGDataset) -> tuple[torch.Tensor, np.ndarray]:
        """Frozen image embeddings of the unique stimuli; returns (features (n_img, dim), index per trial)."""
        embedder = self.backbones.image_embedder
        size = int(getattr(embedder, "image_size", self.info.image_size))
        return stimulus_features(dataset, embedder, self.device, image_size=size)

    @torch.no_grad()
    def _caption_tokens(self, dataset: EEGDataset) -> tuple[torch.Tensor, np.ndarray]:
        """Frozen text tokens of the captions: (unique tokens (n, n_tokens, dim), index per trial).

        Per-image captions when the run was given a captions file, else ``caption_template`` of
        each class (:meth:`eegbench.data.EEGDataset.caption_texts`).
        """
        texts, index = dataset.caption_texts(self.config.caption_template)
        tokens, _ = self.backbones.text_embedder.encode(texts)
        tokens = tokens.float().cpu()
        if tokens.shape[1:] != (self.n_tokens, self.latent_dim):
            raise ConfigError(
                f"synapse: text tokens have shape {tuple(tokens.shape[1:])}, the denoiser context is "
                f"({self.n_tokens}, {self.latent_dim})"
            )
        return tokens, index

    def _stage1_tensors(self, dataset: EEGDataset) -> tuple[torch.Tensor, ...]:
        feats, index = self._image_features(dataset)
        tokens, caption_index = self._caption_tokens(dataset)
        return (torch.from_numpy(np.ascontiguousarray(dataset.eeg)).float(), feats[index],
                tokens[torch.tensor(np.asarray(caption_index), dtype=torch.long)])

    def _loss_total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.config
        weights = {"rec": c.w_rec, "sdsc": c.w_sdsc, "sim": c.w_sim, "cos": c.w_cos, "align": c.w_align}
        return sum(weights[k] * losses[k] for k in _LOSS_TERMS)

    # ------------------------------------------------------------------ training
    def fit(self, train: EEGDataset, val: EEGDataset, ctx: RunContext) -> None:
        """Train Stage 1 then Stage 2 on ``train``; ``val`` selects the Stage-1 checkpoint.

        Both stages run through the harness's :class:`~eegbench.training.StageTrainer` (one loop,
        checkpoints, resume).

        Parameters
        ----------
        train, val : EEGDataset
            EEG in ``info.unit`` (V); ``val`` may be empty (then the last Stage-1 weights are kept).
        ctx : RunContext

        Raises
        ------
        DataFormatError
            If the EEG shape differs from ``info`` or the training set is empty.
        """
        self.check_fit_data(train, val)
        mean, std = channel_statistics(train.eeg)
        self.eeg_encoder.set_normalization(mean, std)
        trainer = ctx.trainer(self)
        trainer.run_stage("stage1", self.config.stage1_steps, lambda: self._stage1(train, val))
        trainer.run_stage("stage2", self.config.stage2_steps, lambda: self._stage2(train, val, ctx.seed))
        self.configure_stage("inference")
        for module in (self.eeg_encoder, self.eeg_decoder, self.align_heads, self.unet, self.ip_adapter):
            module.eval()

    @torch.no_grad()
    def _stage1_validation(self, model: nn.Module, tensors: tuple[torch.Tensor, ...], device) -> dict[str, float]:
        sums = dict.fromkeys((*_LOSS_TERMS, "loss"), 0.0)
        n, used = len(tensors[0]), 0
        bs = self.config.stage1_batch_size
        for start in range(0, n, bs):
            batch = [t[start:start + bs].to(device) for t in tensors]
            if len(batch[0]) < 2:  # a contrastive loss needs at least two pairs
                continue
            losses = model(*batch)
            total = self._loss_total(losses)
            for k in _LOSS_TERMS:
                sums[k] += float(losses[k]) * len(batch[0])
            sums["loss"] += float(total) * len(batch[0])
            used += len(batch[0])
        return {k: v / max(used, 1) for k, v in sums.items()}

    def _stage1(self, train: EEGDataset, val: EEGDataset) -> Stage:
        """Stage 1: the hybrid autoencoder aligned to the frozen text tokens and image embedding."""
        c = self.config
        self.configure_stage("stage1")
        train_t = self._stage1_tensors(train)
        val_t = self._stage1_tensors(val) if len(val) >= 2 else None
        model = _Stage1Model(self.eeg_encoder, self.eeg_decoder, self.align_heads, c.sdsc_alpha)

        def step(m, batch):
            losses = m(*batch)
            return {**{k: losses[k] for k in _LOSS_TERMS}, "loss": self._loss_total(losses)}

        return Stage(
            model=model, step=step, data=train_t, batch_size=min(c.stage1_batch_size, len(train)),
            optimizer=lambda p: torch.optim.AdamW(p, lr=c.stage1_lr, betas=(0.9, 0.999),
                                                  weight_decay=c.stage1_weight_decay, foreach=True),
            grad_clip=c.grad_clip, log_every=c.log_every,
            validate=(lambda m: self._stage1_validation(m, val_t, self.device)) if val_t is not None else None,
            eval_every=c.stage1_eval_every, select=lambda row: row["loss"],
            keep=(self.eeg_encoder, self.eeg_decoder, self.align_heads),
        )

    @torch.no_grad()
    def _stage2_tensors(self, dataset: EEGDataset) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen EEG tokens per trial (batch, n_tokens, dim) and scaled VAE latents of its stimulus."""
        self.eeg_encoder.eval()
        eeg = torch.from_numpy(np.ascontiguousarray(dataset.eeg)).float()
        tokens = torch.cat([self.eeg_encoder(eeg[i:i + 256].to(self.device)).float().cpu()
                            for i in range(0, len(eeg), 256)])
        return tokens, stimulus_latents(dataset, self.backbones.denoiser, self.device)

    def _noise_scheduler(self):
        """Training scheduler (DDPM) from the denoiser's scheduler config."""
        return self.backbones.denoiser.new_scheduler("ddpm")

    def _diffusion_loss(self, model: nn.Module, scheduler, latents: torch.Tensor, tokens: torch.Tensor,
                        noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Min-SNR-weighted MSE against the scheduler's target (velocity for v-prediction)."""
        ensure_torchvision()
        from diffusers.training_utils import compute_snr

        noisy = scheduler.add_noise(latents, noise, timesteps)
        ptype = scheduler.config.prediction_type
        target = diffusion_target(scheduler, latents, noise, timesteps, who="synapse")
        pred = model(noisy, timesteps, tokens)
        mse = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        gamma = self.config.snr_gamma
        if gamma > 0:
            snr = compute_snr(scheduler, timesteps).float()
            weight = torch.clamp(snr, max=gamma)
            # min-SNR-γ (Hang et al. 2023) expressed for the predicted quantity (diffusers convention)
            weight = weight / (snr + 1) if ptype == "v_prediction" else weight / snr
            mse = mse * weight
        return mse.mean()

    def _stage2(self, train: EEGDataset, val: EEGDataset, seed: int) -> Stage:
        """Stage 2: UNet attn2/time/norm2 + IP adapter on frozen EEG tokens (v-prediction, min-SNR, EMA)."""
        ensure_torchvision()
        from diffusers.training_utils import EMAModel

        c = self.config
        self.configure_stage("inference")
        tokens, latents = self._stage2_tensors(train)
        scheduler = self._noise_scheduler()
        n_train_steps = int(scheduler.config.num_train_timesteps)
        validate = None
        if len(val):
            n_val = min(len(val), 64)
            vt, vl = self._stage2_tensors(val.subset(list(val.trials["trial_id"])[:n_val]))
            vn, vts = fixed_noise(vl.shape, n_train_steps, seed)

            def validate_loss(m):
                dev = self.device
                return {"loss": float(self._diffusion_loss(m, scheduler, vl.to(dev), vt.to(dev), vn.to(dev),
                                                           vts.to(dev)))}
            validate = validate_loss
        self.configure_stage("stage2")

        def step(m, batch):
            tok, lat = batch
            if c.cond_drop_prob > 0:
                keep = (torch.rand(len(tok), device=tok.device) >= c.cond_drop_prob).to(tok.dtype)
                tok = tok * keep[:, None, None]
            noise = torch.randn_like(lat)
            t = torch.randint(0, n_train_steps, (len(lat),), device=lat.device)
            return {"loss": self._diffusion_loss(m, scheduler, lat, tok, noise, t)}

        return Stage(
            model=_Stage2Model(self.unet, self.ip_adapter), step=step, data=(tokens, latents),
            batch_size=min(c.stage2_batch_size, len(train)), accumulation=c.stage2_accumulation,
            optimizer=lambda p: torch.optim.AdamW(p, lr=c.stage2_lr, betas=(0.9, 0.999),
                                                  weight_decay=c.stage2_weight_decay, foreach=True),
            grad_clip=c.grad_clip, log_every=c.log_every,
            ema=(lambda p: EMAModel(p, decay=c.ema_decay)) if c.use_ema else None,
            validate=validate, eval_every=c.stage2_eval_every,
        )

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def encode_eeg(self, eeg: torch.Tensor) -> torch.Tensor:
        """Frozen-encoder tokens of raw EEG.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float, in ``info.unit`` (V)

        Returns
        -------
        torch.Tensor, shape (batch, n_tokens, dim), float32
        """
        self.check_eeg(eeg, "encode_eeg")
        self.eeg_encoder.eval()
        return self.eeg_encoder(eeg.to(self.device, torch.float32))

    embedding_description = ("Stage-1 latent, mean over tokens, through the alignment head: the space contrasted "
                             "with the image embedder's features by the Stage-1 CLIP loss")

    @torch.no_grad()
    def embed_eeg(self, eeg: torch.Tensor, *, subject: torch.Tensor | None = None) -> torch.Tensor:
        """EEG embedding for retrieval: the token-mean of the Stage-1 latent through the alignment head.

        This is the vector the Stage-1 contrastive loss (``sim``) pulls towards the image
        embedder's features of the trial's stimulus, so it is compared with
        :meth:`~eegbench.method.Method.embed_stimuli` (the same image embedder).

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float, in ``info.unit`` (V)
        subject : torch.Tensor, optional
            Unused (SYNAPSE is subject-agnostic).

        Returns
        -------
        torch.Tensor, shape (batch, image_dim), float32
        """
        self.align_heads.eval()
        return self.align_heads(self.encode_eeg(eeg).mean(dim=1)).float()

    @torch.no_grad()
    def generate(self, eeg: torch.Tensor, *, generators: Sequence[torch.Generator], n_samples: int,
                 num_inference_steps: int, subject: torch.Tensor | None = None) -> torch.Tensor:
        """Generate images from EEG with the configured sampler (DDIM) and classifier-free guidance.

        The condition is the EEG tokens plus the adaptation head's extra tokens; the unconditional
        branch uses all-zero EEG tokens (and the head's tokens of zeros), as upstream's pipeline.
        Sampling is the shared :meth:`PretrainedDenoiser.sample` (the ``sampler`` option built from
        the denoiser's scheduler config; DDIM with ``eta = 0`` by default, as upstream; initial latents from ``diffusers.utils.torch_utils.randn_tensor`` with
        one generator per image), run with this method's UNet copy, so each image depends only on
        its trial and its generator.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float
            EEG in ``info.unit`` (V).
        generators : sequence of torch.Generator, length batch * n_samples
            Trial-major order (trial 0's samples first).
        n_samples : int
            Images per trial.
        num_inference_steps : int
            Sampler steps.
        subject : torch.Tensor, optional
            Unused (SYNAPSE is subject-agnostic).

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
        self.ip_adapter.eval()
        tokens = self.encode_eeg(eeg).repeat_interleave(n_samples, dim=0)
        guidance = float(self.config.guidance_scale)
        context = self.ip_adapter.context(tokens)
        null = self.ip_adapter.context(torch.zeros_like(tokens)) if guidance > 1.0 else None
        images = den.sample(context, list(generators), num_inference_steps=num_inference_steps,
                            guidance_scale=guidance, unet=self.unet, null_context=null,
                            sampler=self.config.sampler)
        return images.reshape(batch, n_samples, *images.shape[1:])
