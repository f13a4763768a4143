"""BrainVis-style method plugin: time + frequency EEG encoders, semantic interpolation, cascaded generation.

BrainVis (arXiv 2312.14871; reference repository ``RomGai/BrainVis @129b8c2``; ``research/methods.md``
§5) trains, in order:

1. ``freq`` — a frequency encoder: |FFT| of every channel, an LSTM over the frequency bins, a
   Linear + ReLU feature and a classifier (cross-entropy).
2. ``time_pretrain`` — a TimeMAE-style time encoder by *latent masked modelling*: 75 % of the
   patch tokens are masked; the visible ones go through the encoder, a momentum encoder (EMA 0.99,
   no gradients) encodes the masked ones as targets, a cross-attention regressor predicts them from
   learned mask tokens + positions, and a linear tokenizer gives discrete targets (Gumbel-max
   codes of the projected tokens). Loss ``4.0 · MSE(rep) + 2.0 · CE(code, label smoothing 0.2)``.
3. ``time_finetune`` — a classifier head on the mean-pooled tokens; the encoder is fine-tuned too.
4. ``fusion`` — a ``Linear(d_model + hidden → n_classes)`` on concat(time, frequency features):
   BrainVis's EEG classifier, whose argmax is the *predicted class*.
5. ``align`` — AlignNet maps concat(features, logits) through a tanh MLP with residuals to a
   ``(context_tokens, cross_attention_dim)`` context, trained with MSE + cosine-embedding loss
   against the text tokens of the class-name prompt *and* of a caption, summed (the prediction is
   pulled toward their interpolation).

Generation is cascaded (``cascade_diffusion.py``): (A) the frozen denoiser samples from the
AlignNet context (PLMS, no guidance); (B) each stage-A image is re-noised to ``strength`` 0.85 and
denoised with the text context of the *predicted* class prompt under classifier-free guidance 7.5
(diffusers img2img semantics). Both passes use the protocol's step count and take all their noise
from the image's own generator.

Kept from upstream: every module and loss above with its structure, ReZero-like residual scalars
initialised at 1e-8, mask ratio, momentum, loss weights and label smoothing, the optimisers
(Adam for ``freq`` and ``time_finetune``, AdamW otherwise), what each stage trains (``fusion``
fine-tunes the time encoder, the frequency encoder's LSTM + feature layer and the fusion head,
because upstream's optimiser holds the whole ``TimeFreqEncoder``), the cascade and its strength /
guidance, the sampler (PLMS) and the SD-1.5 base model of the ``paper`` profile.

Deliberate differences (bugs or leakage fixed, ``research/methods.md`` §2.3, §5.1):

* Model selection uses the validation split only: best validation accuracy for ``freq``,
  ``time_finetune`` and ``fusion`` (ties: lower validation cross-entropy), lowest validation
  alignment loss for ``align``; ``time_pretrain`` keeps its last weights (upstream also continues
  from a fixed epoch). Upstream selects on the *test* loader everywhere, and for ``align`` keeps
  the checkpoint whose test cosine loss is *highest* (``tecosine > eval_cosine``).
* Training uses the train split only; upstream's "train = train + val" and its export step where
  a logistic-regression probe replaces the network's class predictions when it scores higher on
  test are not reproduced. The predicted class is always the fusion head's argmax.
* ``align`` trains AlignNet only, on frozen encoders whose outputs (eval mode, no dropout) are
  computed once per trial. Upstream's optimiser also fine-tunes the
  encoders inside AlignNet while taking class predictions from the earlier fusion checkpoint, which
  amounts to two diverging copies of the encoders; one copy is kept here (its inference path is
  the one ``research/methods.md`` §5.3 counts).
* The fine-tuning L1 penalty (3e-6 in the paper) is computed but never added to the loss upstream
  (``loss = ...computeft(batch)#+l1``); ``finetune_l1`` defaults to 0 and can switch it on.
* EEG is z-scored per channel with training statistics (upstream reads a pre-standardised file);
  the spectrum is orthonormal (a constant factor √n_times from upstream's).
* N170/P300 have no per-trial captions (upstream: BLIP-2 captions of the stimulus): the caption
  target is a template with the class name (``"a photo of a {}"``) distinct from the class-name
  prompt (``"{}"``), so the two targets differ as upstream's do.

``small`` profile roles: SD 1.5 → the shared small UNet (frozen, never modified) + TAEF2; CLIP-text
``last_hidden_state`` (77 × 768) → MiniLM token states (``context_tokens`` × 384, 16 × 384); no
CLIP-image role is used (as upstream). Sizes are scaled down (d_model 128, 2 layers, a 2-layer
regressor, 64 codes, LSTM width 64, AlignNet 512/128) and the stage budgets fit the CPU time limit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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
from eegbench.method import Method, RunContext, channel_statistics, text_component as _text_component
from eegbench.training import Stage

from .modeling import (
    AlignNet,
    EEGStandardizer,
    FreqEncoder,
    MaskRegressor,
    TimeEncoder,
    Tokenizer,
    TransformerStack,
    alignment_losses,
    n_tokens_of,
)

__all__ = ["BrainVis", "BrainVisConfig"]

#: Steps per epoch of the paper recipe: 7,959 EEG-ImageNet training trials at batch 128.
_PAPER_STEPS_PER_EPOCH = 63


@dataclass
class BrainVisConfig:
    """Hyperparameters of :class:`BrainVis` (defaults: the ``small`` profile).

    Upstream values (``research/methods.md`` §5.1, ``RomGai/BrainVis @129b8c2``) are given in
    brackets where the small profile differs; step budgets of the ``paper`` profile are upstream's
    epochs × 63 steps (7,959 training trials at batch 128).

    Small budget: on the 1,795 N170 multi-subject training trials (4 × 180) the defaults are about
    21 / 11 / 7 / 14 epochs of ``time_pretrain`` / ``time_finetune`` / ``fusion`` / ``align``; one
    step at batch 64 cost 0.02 / 0.30 / 0.22 / 0.25 / ≈ 0.04 s of single-thread CPU time for
    ``freq`` / ``time_pretrain`` / ``time_finetune`` / ``fusion`` / ``align`` (2026-11-21, shared
    2-core machine at load ≈ 9), ≈ 330 s for the whole fit.

    Parameters
    ----------
    d_model : int
        Width of the time tokens [1024].
    n_layers : int
        Transformer layers of the time encoder (and of its momentum copy) [8].
    n_heads : int
        Attention heads; must divide ``d_model`` [16].
    patch_size : int
        Samples per time token (Conv1d kernel = stride) (4).
    dropout : float
        Dropout of attention, FFN and residual branches (0.2).
    res_init : float
        Initial value of the learnable residual scalars (1e-8).
    mask_ratio : float
        Fraction of tokens masked in ``time_pretrain`` (0.75).
    momentum : float
        EMA decay of the momentum encoder (0.99).
    reg_layers : int
        Cross-attention layers of the regressor [4].
    vocab_size : int
        Codes of the tokenizer [660].
    tokenizer_gumbel : bool
        Draw codes by Gumbel-max (True, as upstream's ``gumbel_softmax``); False takes the argmax.
    alpha, beta : float
        Weights of the representation MSE (4.0) and of the code cross-entropy (2.0).
    label_smoothing : float
        Label smoothing of the code cross-entropy (0.2).
    freq_hidden : int
        LSTM width and frequency-feature size [128].
    align_hidden, align_bottleneck : int
        AlignNet widths [4096, 1024 = 4·d_model, d_model].
    eeg_clip : float
        Clamp of the z-scored EEG in standard deviations; 0 disables.
    class_prompt_template : str
        Class-name prompt, first alignment target ("{}": the name alone, as upstream's label prompt).
    caption_template : str
        Stand-in caption, second alignment target (upstream: a BLIP-2 caption of the stimulus).
    freq_steps, freq_batch_size : int
        Frequency-encoder training [1000 epochs = 63,000 steps, batch 128].
    freq_lr : float
        Adam learning rate of ``freq`` (1e-3).
    pretrain_steps, pretrain_batch_size : int
        Latent masked modelling [500 epochs, batch 128].
    pretrain_lr : float
        AdamW learning rate of ``time_pretrain`` [5e-4]; 1e-3 here for the short budget.
    finetune_steps, finetune_batch_size : int
        Time-encoder fine-tuning [80 epochs: upstream continues from the epoch-80 checkpoint].
    finetune_lr : float
        Adam learning rate of ``time_finetune`` [5e-4]; 3e-4 here.
    finetune_l1 : float
        L1 penalty on the time encoder + head in ``time_finetune`` (0: computed but not added
        upstream; the paper states 3e-6).
    fusion_steps, fusion_batch_size : int
        Fusion fine-tuning [50 epochs].
    fusion_lr : float
        AdamW learning rate of ``fusion`` [5e-4]; 3e-4 here.
    fusion_train_encoders : bool
        Fine-tune the time encoder and the frequency encoder's LSTM + feature layer in ``fusion``
        (True, as upstream's optimiser over the whole ``TimeFreqEncoder``); False trains the head only.
    align_steps, align_batch_size : int
        AlignNet training [500 epochs].
    align_lr : float
        AdamW learning rate of ``align`` (5e-4).
    weight_decay : float
        AdamW weight decay (0.01, torch's default that upstream uses).
    grad_clip : float
        Gradient-norm clip of every stage [none]; 0 disables.
    eval_every : int
        Validation interval in steps of every stage (upstream evaluates every epoch or three).
    sampler : str
        Sampler of both cascade passes (``"plms"``).
    guidance_scale : float
        Classifier-free guidance of the image-to-image pass (7.5); the first pass has none.
    img2img_strength : float
        Fraction of the schedule re-run in the image-to-image pass (0.85).
    log_every : int
        Interval (steps) of training-loss logging.
    cpu_threads : int
        Intra-op threads (``torch.set_num_threads``) while :meth:`BrainVis.fit` and
        :meth:`BrainVis.generate` run on CPU, restored afterwards; 0 (default, as every method)
        leaves the process setting, so timings stay comparable across methods. The small models here are latency-bound: on the shared 2-core machine (load ≈ 9,
        2026-11-21) one step at batch 64 took 2.8 s (``freq``, a 90-step LSTM) and 3.8 s
        (``time_pretrain``) with two threads, 0.04 s and 0.6–0.9 s with one. No effect on GPU.
    """

    d_model: int = at_least(1, 128)
    n_layers: int = at_least(1, 2)
    n_heads: int = at_least(1, 4)
    patch_size: int = at_least(1, 4)
    dropout: float = in_range(0.0, 1.0, 0.2, high_open=True)
    res_init: float = 1e-8
    mask_ratio: float = in_range(0.0, 1.0, 0.75, low_open=True, high_open=True)
    momentum: float = in_range(0.0, 1.0, 0.99, high_open=True)
    reg_layers: int = at_least(1, 2)
    vocab_size: int = at_least(1, 64)
    tokenizer_gumbel: bool = True
    alpha: float = at_least(0.0, 4.0)
    beta: float = at_least(0.0, 2.0)
    label_smoothing: float = in_range(0.0, 1.0, 0.2, high_open=True)
    freq_hidden: int = at_least(1, 64)
    align_hidden: int = at_least(1, 512)
    align_bottleneck: int = at_least(1, 128)
    eeg_clip: float = at_least(0.0, 10.0)
    class_prompt_template: str = template_field("{}")
    caption_template: str = template_field("a photo of a {}")
    freq_steps: int = at_least(0, 600)
    freq_batch_size: int = at_least(1, 64)
    freq_lr: float = greater_than(0.0, 1e-3)
    pretrain_steps: int = at_least(0, 600)
    pretrain_batch_size: int = at_least(1, 64)
    pretrain_lr: float = greater_than(0.0, 1e-3)
    finetune_steps: int = at_least(0, 300)
    finetune_batch_size: int = at_least(1, 64)
    finetune_lr: float = greater_than(0.0, 3e-4)
    finetune_l1: float = at_least(0.0, 0.0)
    fusion_steps: int = at_least(0, 200)
    fusion_batch_size: int = at_least(1, 64)
    fusion_lr: float = greater_than(0.0, 3e-4)
    fusion_train_encoders: bool = True
    align_steps: int = at_least(0, 400)
    align_batch_size: int = at_least(1, 64)
    align_lr: float = greater_than(0.0, 5e-4)
    weight_decay: float = at_least(0.0, 0.01)
    grad_clip: float = at_least(0.0, 1.0)
    eval_every: int = at_least(1, 100)
    sampler: str = sampler_field("plms")
    guidance_scale: float = at_least(1.0, 7.5)
    img2img_strength: float = in_range(0.0, 1.0, 0.85, low_open=True)
    log_every: int = at_least(1, 50)
    cpu_threads: int = at_least(0, 0)

    def validate(self) -> None:
        """Check value ranges.

        Raises
        ------
        ConfigError
            Naming the first offending option.
        """
        validate_fields(self, "brainvis")
        if self.d_model % self.n_heads:
            raise ConfigError(f"brainvis: n_heads={self.n_heads} must divide d_model={self.d_model}")
        if self.class_prompt_template == self.caption_template:
            raise ConfigError("brainvis: class_prompt_template and caption_template must differ "
                              "(they are the two targets of the semantic interpolation)")


# ----------------------------------------------------------------------------- stage wrappers
class _FreqModel(nn.Module):
    def __init__(self, norm: EEGStandardizer, freq: FreqEncoder) -> None:
        super().__init__()
        self.norm, self.freq = norm, freq

    def forward(self, eeg: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits, _ = self.freq(self.norm(eeg))
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class _PretrainModel(nn.Module):
    """Latent masked modelling (TimeMAE / BrainVis ``pretrain_forward``)."""

    def __init__(self, norm, time_encoder: TimeEncoder, momentum: TransformerStack, regressor: MaskRegressor,
                 tokenizer: Tokenizer, config: BrainVisConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.norm, self.time_encoder, self.regressor, self.tokenizer = norm, time_encoder, regressor, tokenizer
        self._momentum = [momentum]  # not a submodule: no gradients, not wrapped by DDP
        self.config = config
        self.generator = generator
        self.n_masked = max(1, min(int(config.mask_ratio * time_encoder.n_tokens), time_encoder.n_tokens - 1))

    def forward(self, eeg: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.config
        x = self.time_encoder.project(self.norm(eeg))  # (B, L, d)
        n = x.shape[1]
        codes = self.tokenizer.codes(x.detach(), self.generator, gumbel=c.tokenizer_gumbel)  # (B, L)
        x = x + self.time_encoder.positions()
        order = torch.randperm(n, generator=self.generator).to(x.device)
        visible_idx, masked_idx = order[: n - self.n_masked], order[n - self.n_masked:]
        rep_visible = self.time_encoder.encoder(x[:, visible_idx])
        with torch.no_grad():
            rep_masked = self._momentum[0](x[:, masked_idx].detach())
        pred = self.regressor(rep_visible, self.time_encoder.positions()[masked_idx])
        mse = F.mse_loss(pred, rep_masked)
        logits = self.tokenizer(pred)
        target = codes[:, masked_idx]
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                             label_smoothing=c.label_smoothing)
        hits = (logits.argmax(-1) == target).float().mean()
        return {"loss": c.alpha * mse + c.beta * ce, "mse": mse, "ce": ce, "code_acc": hits}


class _FinetuneModel(nn.Module):
    def __init__(self, norm, time_encoder: TimeEncoder, head: nn.Linear, l1: float) -> None:
        super().__init__()
        self.norm, self.time_encoder, self.head, self.l1 = norm, time_encoder, head, l1

    def forward(self, eeg: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.head(self.time_encoder.pooled(self.norm(eeg)))
        ce = F.cross_entropy(logits, labels)
        loss = ce
        if self.l1 > 0 and self.training:
            loss = ce + self.l1 * sum(p.abs().sum() for p in self.parameters() if p.requires_grad)
        return {"loss": loss, "ce": ce, "logits": logits}


class _FusionModel(nn.Module):
    def __init__(self, norm, time_encoder: TimeEncoder, freq: FreqEncoder, head: nn.Linear) -> None:
        super().__init__()
        self.norm, self.time_encoder, self.freq, self.head = norm, time_encoder, freq, head

    def features(self, eeg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.norm(eeg)
        _, freq_feat = self.freq(z)
        feats = torch.cat([self.time_encoder.pooled(z), freq_feat], dim=1)
        return feats, self.head(feats)

    def forward(self, eeg: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        _, logits = self.features(eeg)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class _AlignModel(nn.Module):
    """AlignNet on precomputed inputs concat(time features, frequency features, fusion logits)."""

    def __init__(self, align: AlignNet) -> None:
        super().__init__()
        self.align = align

    def forward(self, inputs: torch.Tensor, class_tokens: torch.Tensor, caption_tokens: torch.Tensor):
        pred = self.align(inputs)
        mse_c, cos_c = alignment_losses(pred, class_tokens)
        mse_p, cos_p = alignment_losses(pred, caption_tokens)
        return {"loss": mse_c + cos_c + mse_p + cos_p, "mse_class": mse_c, "cos_class": cos_c,
                "mse_caption": mse_p, "cos_caption": cos_p}


# ----------------------------------------------------------------------------- the method
class BrainVis(Method):
    """BrainVis: time/frequency EEG encoders, AlignNet context and cascaded generation.

    Components (names of :meth:`components`): ``eeg_norm`` (z-scoring buffers, no parameters),
    ``time_encoder`` (input projection + positions + encoder layers), ``momentum_encoder``,
    ``mask_regressor`` (mask token + regressor), ``tokenizer``, ``time_classifier``,
    ``freq_encoder``, ``fusion_head``, ``align_net``, and the shared, frozen ``unet`` and ``vae``.

    Parameter counts at the ``paper`` profile (CVPR40: 128 × 440, 40 classes, SD 1.5 context
    77 × 768; ``research/methods.md`` §5.3), as the harness counts them:

    * time branch (encoder, momentum encoder, mask regressor, tokenizer, classifier):
      253,280,996 — upstream's ``TimeEncoder`` total 254,085,757 also holds a ``ChannelMapping``
      (Conv1d 110→93→77, 17,561) and a ``Linear(1024 → 768)`` (787,200) of a "CLIP-tune" mode that
      no BrainVis stage uses; they are not built here (difference 804,761). Likewise "without
      momentum" is 152,511,188 here vs 153,315,949.
    * ``freq_encoder`` 153,768; ``fusion_head`` 46,120; ``align_net`` 263,954,176 (its last
      Linear 242,280,192).
    * inference path without the shared SD modules (time encoder, frequency encoder, fusion head,
      AlignNet): 365,561,824, as §5.3.
    * ``trainable_total`` (union over stages): 416,665,252 (methods.md §7's ≈ 417.5 M plus the
      unused heads above). The SYNAPSE README's "195 M" matches no convention (§5.3, §7).

    Parameters
    ----------
    config : BrainVisConfig
    info : DatasetInfo
        ``n_chans``, ``n_times`` size the encoders; ``class_names`` make the prompts.
    backbones : eegbench.backbones.Backbones, TinyBackbones or PaperBackbones
        Needs a prepared denoiser; its ``context_tokens`` × ``cross_attention_dim`` is the AlignNet
        output shape. On the meta device (paper profile) only modules are built.
    device : torch.device

    Raises
    ------
    ConfigError
        For invalid hyperparameters or an epoch shorter than two patches.
    """

    name = "brainvis"
    version = "0.1.0"
    paper = ("BrainVis, arXiv 2312.14871 (ICASSP 2025; https://arxiv.org/abs/2312.14871); reference code "
             "https://github.com/RomGai/BrainVis @129b8c2")
    Config = BrainVisConfig
    stages = ("freq", "time_pretrain", "time_finetune", "fusion", "align")
    inference_components = ("eeg_norm", "time_encoder", "freq_encoder", "fusion_head", "align_net", "unet", "vae",
                            "text_embedder")
    paper_backbone: ClassVar[str] = "sd15"
    #: Sampler steps of the published evaluation: PLMS, 50 steps (stage A) (``research/methods.md`` §2.1).
    published_steps = 50
    #: AlignNet targets CLIP ViT-L/14 text tokens of class names and captions (77 × 768; §5).
    paper_roles: ClassVar[dict[str, str]] = {"text_embedder": "clip-l14"}

    def __init__(self, config: BrainVisConfig, *, info: DatasetInfo, backbones: Any, device: torch.device) -> None:
        super().__init__(config, info=info, backbones=backbones, device=device)
        config.validate()
        c = config
        if n_tokens_of(info.n_times, c.patch_size) < 2:
            raise ConfigError(f"brainvis: patch_size={c.patch_size} leaves fewer than 2 time tokens of "
                              f"n_times={info.n_times}; masked modelling needs a visible and a masked token")
        den = backbones.denoiser
        self.context_tokens = int(den.context_tokens)
        self.context_dim = int(den.cross_attention_dim)
        n_classes = info.n_classes
        with torch.device(self.device):
            self.eeg_norm = EEGStandardizer(info.n_chans, clip=c.eeg_clip)
            self.time_encoder = TimeEncoder(info.n_chans, info.n_times, d_model=c.d_model, n_heads=c.n_heads,
                                            n_layers=c.n_layers, patch_size=c.patch_size, dropout=c.dropout,
                                            res_init=c.res_init)
            self.momentum_encoder = TransformerStack(c.d_model, c.n_heads, c.n_layers, c.dropout, c.res_init)
            self.mask_regressor = MaskRegressor(c.d_model, c.n_heads, c.reg_layers, c.dropout, c.res_init)
            self.tokenizer = Tokenizer(c.d_model, c.vocab_size)
            self.time_classifier = nn.Linear(c.d_model, n_classes)
            self.freq_encoder = FreqEncoder(info.n_chans, c.freq_hidden, n_classes)
            self.fusion_head = nn.Linear(c.d_model + c.freq_hidden, n_classes)
            self.align_net = AlignNet(c.d_model + c.freq_hidden + n_classes, c.align_hidden, c.align_bottleneck,
                                      self.context_tokens, self.context_dim)
        if self.device.type != "meta":
            self.momentum_encoder.load_state_dict(self.time_encoder.encoder.state_dict())
        self.unet = den.unet  # the shared, frozen denoiser: BrainVis never fine-tunes SD
        self.configure_stage("inference")

    # ------------------------------------------------------------------ interface
    @classmethod
    def default_config(cls, profile: str = "small") -> BrainVisConfig:
        """Hyperparameters for ``"small"`` or ``"paper"`` (published sizes and recipe).

        Raises
        ------
        ConfigError
            For another profile.
        """
        if profile == "small":
            return BrainVisConfig()
        if profile == "paper":
            e = _PAPER_STEPS_PER_EPOCH
            return BrainVisConfig(
                d_model=1024, n_layers=8, n_heads=16, reg_layers=4, vocab_size=660, freq_hidden=128,
                align_hidden=4096, align_bottleneck=1024,
                freq_steps=1000 * e, freq_batch_size=128, pretrain_steps=500 * e, pretrain_batch_size=128,
                pretrain_lr=5e-4, finetune_steps=80 * e, finetune_batch_size=128, finetune_lr=5e-4,
                fusion_steps=50 * e, fusion_batch_size=128, fusion_lr=5e-4, align_steps=500 * e,
                align_batch_size=128, align_lr=5e-4, grad_clip=0.0, eval_every=e,
            )
        raise ConfigError(f"brainvis: unknown profile {profile!r}; known: small, paper")

    @classmethod
    def test_config(cls) -> BrainVisConfig:
        """Toy-size configuration for conformance tests (width 16, one layer, 5 steps per stage)."""
        return BrainVisConfig(d_model=16, n_layers=1, n_heads=2, reg_layers=1, vocab_size=8, freq_hidden=8,
                              align_hidden=32, align_bottleneck=16, dropout=0.0, log_every=5, eval_every=5,
                              freq_batch_size=8, pretrain_batch_size=8, finetune_batch_size=8, fusion_batch_size=8,
                              align_batch_size=8, freq_steps=5, pretrain_steps=5, finetune_steps=5, fusion_steps=5,
                              align_steps=5)

    def components(self) -> dict[str, nn.Module]:
        """Every module by name (see the class docstring); ``unet`` and ``vae`` are the shared ones."""
        return {
            "eeg_norm": self.eeg_norm,
            "time_encoder": self.time_encoder,
            "momentum_encoder": self.momentum_encoder,
            "mask_regressor": self.mask_regressor,
            "tokenizer": self.tokenizer,
            "time_classifier": self.time_classifier,
            "freq_encoder": self.freq_encoder,
            "fusion_head": self.fusion_head,
            "align_net": self.align_net,
            "unet": self.unet,
            "vae": self.backbones.vae,
            **_text_component(self.backbones),  # frozen; embeds the class prompts of pass B
        }

    def state_components(self) -> dict[str, nn.Module]:
        """What :meth:`save` stores: everything but the shared, frozen UNet and VAE."""
        return {k: v for k, v in self.components().items() if k not in ("unet", "vae")}

    def configure_stage(self, stage: str) -> None:
        """Set ``requires_grad`` for ``stage`` (exactly the parameters it trains).

        * ``freq``: the frequency encoder (LSTM, feature layer, its classifier).
        * ``time_pretrain``: time encoder, mask token + regressor, tokenizer (the momentum encoder
          is an EMA, never trained by gradients).
        * ``time_finetune``: time encoder and its classifier.
        * ``fusion``: fusion head, plus (``fusion_train_encoders``) the time encoder and the
          frequency encoder's LSTM + feature layer — the modules on the fusion head's input path.
        * ``align``: AlignNet.
        * ``inference``: nothing.

        Raises
        ------
        ConfigError
            For an unknown stage.
        """
        if stage not in (*self.stages, "inference"):
            raise ConfigError(f"brainvis: unknown stage {stage!r}; known: {', '.join(self.stages)}")
        for module in self.components().values():
            module.requires_grad_(False)
        if stage == "freq":
            self.freq_encoder.requires_grad_(True)
        elif stage == "time_pretrain":
            for module in (self.time_encoder, self.mask_regressor, self.tokenizer):
                module.requires_grad_(True)
        elif stage == "time_finetune":
            self.time_encoder.requires_grad_(True)
            self.time_classifier.requires_grad_(True)
        elif stage == "fusion":
            self.fusion_head.requires_grad_(True)
            if self.config.fusion_train_encoders:
                self.time_encoder.requires_grad_(True)
                self.freq_encoder.lstm.requires_grad_(True)
                self.freq_encoder.output.requires_grad_(True)
        elif stage == "align":
            self.align_net.requires_grad_(True)

    # ------------------------------------------------------------------ helpers
    def _modules(self) -> list[nn.Module]:
        return [m for k, m in self.components().items() if k not in ("unet", "vae")]

    @torch.no_grad()
    def text_targets(self, dataset: EEGDataset | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Alignment targets: tokens of the class-name prompt and of the caption.

        Parameters
        ----------
        dataset : EEGDataset, optional
            With a dataset, one row per trial: its class prompt and its stimulus caption (the
            run's captions file, else ``caption_template`` of its class). Without, one row per
            class (class prompt, class caption template).

        Returns
        -------
        class_tokens, caption_tokens : torch.Tensor, shape (n, context_tokens, context_dim), float32, CPU
            ``n`` = trials of ``dataset``, or classes.

        Raises
        ------
        ConfigError
            If the text embedder's token shape differs from the denoiser's context.
        """
        names = list(self.info.class_names)
        if dataset is None:
            class_texts, class_index = [self.config.class_prompt_template.format(n) for n in names], None
            cap_texts, cap_index = [self.config.caption_template.format(n) for n in names], None
        else:
            class_texts, class_index = [self.config.class_prompt_template.format(n) for n in names], dataset.labels
            cap_texts, cap_index = dataset.caption_texts(self.config.caption_template)
        out = []
        for texts, index in ((class_texts, class_index), (cap_texts, cap_index)):
            tokens, _ = self.backbones.text_embedder.encode(texts)
            tokens = tokens.float().cpu()
            if tokens.shape[1:] != (self.context_tokens, self.context_dim):
                raise ConfigError(f"brainvis: text tokens have shape {tuple(tokens.shape[1:])}, the denoiser "
                                  f"context is ({self.context_tokens}, {self.context_dim})")
            out.append(tokens if index is None else tokens[torch.tensor(np.asarray(index), dtype=torch.long)])
        return out[0], out[1]

    @contextlib.contextmanager
    def _cpu_threads(self):
        """``config.cpu_threads`` intra-op threads on CPU for the duration of the block, restored after."""
        saved = torch.get_num_threads()
        n = int(self.config.cpu_threads)
        limit = n > 0 and self.device.type == "cpu" and saved != n
        if limit:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if limit:
                torch.set_num_threads(saved)

    def _fusion_model(self) -> _FusionModel:
        return _FusionModel(self.eeg_norm, self.time_encoder, self.freq_encoder, self.fusion_head)

    def _optimizer(self, kind: str, params, lr: float):
        if kind == "adam":
            return torch.optim.Adam(params, lr=lr, foreach=True)
        return torch.optim.AdamW(params, lr=lr, weight_decay=self.config.weight_decay, foreach=True)

    @torch.no_grad()
    def _evaluate(self, model: nn.Module, tensors: Sequence[torch.Tensor], batch_size: int) -> dict[str, float]:
        """Mean of every scalar loss term over ``tensors``, plus ``acc`` where the model returns logits."""
        was_training = model.training
        model.eval()
        sums: dict[str, float] = {}
        correct, n = 0, len(tensors[0])
        for start in range(0, n, batch_size):
            batch = [t[start:start + batch_size].to(self.device) for t in tensors]
            out = model(*batch)
            for k, v in out.items():
                if k == "logits":
                    correct += int((v.argmax(-1) == batch[1]).sum())
                elif v.ndim == 0:
                    sums[k] = sums.get(k, 0.0) + float(v) * len(batch[0])
        model.train(was_training)
        row = {k: v / max(n, 1) for k, v in sums.items()}
        if "logits" in out:
            row["acc"] = correct / max(n, 1)
        return row

    def _run_stage(self, trainer, stage: str, model: nn.Module, tensors: Sequence[torch.Tensor],
                   val_tensors: Sequence[torch.Tensor] | None, *, steps: int, batch_size: int, lr: float,
                   optimizer: str, select: Callable[[dict[str, float]], tuple] | None,
                   keep: Sequence[nn.Module], after_step: Callable[[], None] | None = None,
                   generators: Sequence[torch.Generator] = ()) -> None:
        """One stage through the harness's :class:`~eegbench.training.StageTrainer`.

        ``select`` maps a validation row to a key (smaller is better); the modules in ``keep`` are
        restored to the best evaluation's weights at the end. Without ``select`` (or validation
        data) the last weights are kept. The stage runs with ``config.cpu_threads`` intra-op
        threads on the CPU.
        """
        c = self.config

        def build() -> Stage:
            self.configure_stage(stage)
            bs = min(batch_size, len(tensors[0]))
            validate = None
            if val_tensors is not None:
                validate = lambda m: self._evaluate(model, val_tensors, bs)  # noqa: E731
            return Stage(
                model=model, step=lambda m, batch: m(*batch), data=tensors, batch_size=bs,
                optimizer=lambda p: self._optimizer(optimizer, p, lr), grad_clip=c.grad_clip, log_every=c.log_every,
                after_step=after_step, validate=validate, eval_every=c.eval_every, select=select, keep=keep,
                generators=generators,
            )

        with self._cpu_threads():
            trainer.run_stage(stage, steps, build)

    @staticmethod
    def _by_accuracy(row: dict[str, float]) -> tuple:
        return (-row["acc"], row["loss"])

    # ------------------------------------------------------------------ training
    def fit(self, train: EEGDataset, val: EEGDataset, ctx: RunContext) -> None:
        """Train the five stages on ``train``; ``val`` (never test) selects checkpoints.

        Each stage runs through the harness's :class:`~eegbench.training.StageTrainer`, with
        ``config.cpu_threads`` intra-op threads on CPU (restored afterwards).

        Parameters
        ----------
        train, val : EEGDataset
            EEG in ``info.unit`` (V); ``val`` may be empty (then the last weights are kept).
        ctx : RunContext

        Raises
        ------
        DataFormatError
            If the training set is empty or an EEG shape differs from ``info``.
        """
        self.check_fit_data(train, val)
        c = self.config
        mean, std = channel_statistics(train.eeg)
        self.eeg_norm.set_statistics(mean, std)
        generator = torch.Generator().manual_seed(int(ctx.seed))
        trainer = ctx.trainer(self)

        def tensors(ds: EEGDataset) -> tuple[torch.Tensor, torch.Tensor]:
            return (torch.from_numpy(np.ascontiguousarray(ds.eeg)).float(),
                    torch.from_numpy(np.array(ds.labels, dtype=np.int64)))

        tr = tensors(train)
        va = tensors(val) if len(val) else None

        # 1. frequency encoder
        self._run_stage(trainer, "freq", _FreqModel(self.eeg_norm, self.freq_encoder), tr, va, steps=c.freq_steps,
                        batch_size=c.freq_batch_size, lr=c.freq_lr, optimizer="adam", select=self._by_accuracy,
                        keep=[self.freq_encoder])
        # 2. latent masked modelling (momentum encoder starts as a copy of the encoder)
        self.momentum_encoder.load_state_dict(self.time_encoder.encoder.state_dict())
        pre = _PretrainModel(self.eeg_norm, self.time_encoder, self.momentum_encoder, self.mask_regressor,
                             self.tokenizer, c, generator)
        self._run_stage(trainer, "time_pretrain", pre, tr[:1], va[:1] if va is not None else None,
                        steps=c.pretrain_steps, batch_size=c.pretrain_batch_size, lr=c.pretrain_lr,
                        optimizer="adamw", select=None, keep=[], after_step=self._momentum_update,
                        generators=(generator,))
        # 3. time-encoder fine-tuning
        ft = _FinetuneModel(self.eeg_norm, self.time_encoder, self.time_classifier, c.finetune_l1)
        self._run_stage(trainer, "time_finetune", ft, tr, va, steps=c.finetune_steps,
                        batch_size=c.finetune_batch_size, lr=c.finetune_lr, optimizer="adam",
                        select=self._by_accuracy, keep=[self.time_encoder, self.time_classifier])
        # 4. time-frequency fusion
        self._run_stage(trainer, "fusion", self._fusion_model(), tr, va, steps=c.fusion_steps,
                        batch_size=c.fusion_batch_size, lr=c.fusion_lr, optimizer="adamw", select=self._by_accuracy,
                        keep=[self.time_encoder, self.freq_encoder, self.fusion_head])
        # 5. semantic interpolation (AlignNet) on frozen encoders: their outputs are computed once
        with self._cpu_threads():
            x_tr = self.align_inputs(tr[0]).cpu()
            x_va = self.align_inputs(va[0]).cpu() if va is not None else None
        self._run_stage(trainer, "align", _AlignModel(self.align_net), (x_tr, *self.text_targets(train)),
                        (x_va, *self.text_targets(val)) if va is not None else None,
                        steps=c.align_steps, batch_size=c.align_batch_size, lr=c.align_lr, optimizer="adamw",
                        select=lambda row: (row["loss"],), keep=[self.align_net])
        self.configure_stage("inference")
        for module in self._modules():
            module.eval()

    @torch.no_grad()
    def _momentum_update(self) -> None:
        m = self.config.momentum
        for p_m, p in zip(self.momentum_encoder.parameters(), self.time_encoder.encoder.parameters()):
            p_m.mul_(m).add_(p.detach(), alpha=1.0 - m)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def classify(self, eeg: torch.Tensor) -> torch.Tensor:
        """Fusion-head logits (BrainVis's EEG classifier).

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float, in ``info.unit`` (V)

        Returns
        -------
        torch.Tensor, shape (batch, n_classes), float32

        Raises
        ------
        DataFormatError
            If ``eeg`` has the wrong shape.
        """
        self.check_eeg(eeg, "classify")
        model = self._fusion_model().eval()
        with self._cpu_threads():
            return model.features(eeg.to(self.device, torch.float32))[1]

    @torch.no_grad()
    def predict_classes(self, eeg: torch.Tensor) -> torch.Tensor:
        """BrainVis's predicted class per trial: the argmax of :meth:`classify`.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float, in ``info.unit``

        Returns
        -------
        torch.Tensor, shape (batch,), int64
        """
        return self.classify(eeg).argmax(dim=1)

    @torch.no_grad()
    def align_inputs(self, eeg: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """AlignNet input of each trial: concat(time features, frequency features, fusion logits).

        The encoders and the fusion head run in eval mode (they are frozen in ``align``).

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float, in V
        batch_size : int
            Trials per forward pass.

        Returns
        -------
        torch.Tensor, shape (batch, d_model + freq_hidden + n_classes), float32, on :attr:`device`
        """
        model = self._fusion_model()
        was_training = [m.training for m in (self.time_encoder, self.freq_encoder, self.fusion_head)]
        model.eval()
        out = []
        for start in range(0, eeg.shape[0], batch_size):
            feats, logits = model.features(eeg[start:start + batch_size].to(self.device, torch.float32))
            out.append(torch.cat([feats, logits], dim=1))
        for m, flag in zip((self.time_encoder, self.freq_encoder, self.fusion_head), was_training):
            m.train(flag)
        return torch.cat(out) if out else torch.zeros(0, self.align_net.fc1.in_features, device=self.device)

    @torch.no_grad()
    def eeg_context(self, eeg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """AlignNet context and predicted class of each trial.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float, in V

        Returns
        -------
        context : torch.Tensor, shape (batch, context_tokens, context_dim), float32
        predicted : torch.Tensor, shape (batch,), int64
            Argmax of the fusion head.
        """
        self.check_eeg(eeg, "eeg_context")
        with self._cpu_threads():
            inputs = self.align_inputs(eeg)
            self.align_net.eval()
            logits = inputs[:, -self.info.n_classes:]
            return self.align_net(inputs), logits.argmax(dim=1)

    @torch.no_grad()
    def generate(self, eeg: torch.Tensor, *, generators: Sequence[torch.Generator], n_samples: int,
                 num_inference_steps: int, subject: torch.Tensor | None = None) -> torch.Tensor:
        """Cascaded generation: AlignNet-conditioned sampling, then img2img with the predicted class prompt.

        Pass A samples with the AlignNet context and no guidance; pass B encodes each pass-A image,
        noises it to ``img2img_strength`` and denoises it conditioned on the shared denoiser's
        class prompt of the *predicted* class with classifier-free guidance ``guidance_scale``.
        Both passes use ``config.sampler`` with ``num_inference_steps`` and draw their noise from
        the image's own generator (pass A first), so every image depends only on its trial and
        its generator. On CPU it runs with ``config.cpu_threads`` intra-op threads.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float, in ``info.unit`` (V)
        generators : sequence of torch.Generator, length batch * n_samples
            Trial-major order.
        n_samples : int
        num_inference_steps : int
        subject : torch.Tensor, optional
            Unused (BrainVis's multi-subject model is subject-agnostic).

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
        with self._cpu_threads():
            return self._cascade(eeg, list(generators), n_samples, num_inference_steps)

    def _cascade(self, eeg: torch.Tensor, gens: list[torch.Generator], n_samples: int,
                 num_inference_steps: int) -> torch.Tensor:
        batch = eeg.shape[0]
        den, c = self.backbones.denoiser, self.config
        context, predicted = self.eeg_context(eeg)
        context = context.repeat_interleave(n_samples, dim=0)
        stage_a = den.sample(context, gens, num_inference_steps=num_inference_steps, guidance_scale=1.0,
                             unet=self.unet, sampler=c.sampler)
        prompt = den.class_context(predicted.cpu()).repeat_interleave(n_samples, dim=0)
        images = den.sample(prompt, gens, num_inference_steps=num_inference_steps, guidance_scale=c.guidance_scale,
                            unet=self.unet, sampler=c.sampler, init_latents=den.encode_images(stage_a),
                            strength=c.img2img_strength)
        return images.reshape(batch, n_samples, *images.shape[1:])
