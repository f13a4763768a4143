"""GWIT-style method plugin: an EEG ControlNet on a frozen denoiser, prompted by an EEG classifier.

GWIT ("Guess What I Think", arXiv 2410.02780, ICASSP 2025; code ``LuigiSigillo/GWIT @f446378``;
``research/methods.md`` §6) conditions a frozen Stable Diffusion 2.1-base on EEG in two ways:

* a **ControlNet** (a trainable copy of the UNet encoder and mid block with zero-initialised output
  convolutions) whose image hint encoder is replaced by an EEG hint encoder: subject-specific
  channel mixing (``SubjectLayers``), 1-D convolutions and a reshape into the hint feature map
  (:class:`~.modeling.EEGConditioningEmbedding`);
* a **text prompt** ``"image of <class>"`` whose class is *guessed* from the EEG by a frozen
  classifier (EEGStyleGAN-ADA's triplet LSTM ``EEGFeatNet`` + k-NN).

Kept from the paper: the ControlNet built with diffusers ``ControlNetModel.from_unet`` over the
frozen UNet; the hint encoder's structure (padding, subject layers, unpadded k3 conv, stages of
[k3 conv, stride-2 k3 conv] with doubling channels, reshape/permute/zero-pad); training on the
classifier's predicted class (``--caption_from_classifier``) with the prompt replaced by the empty
prompt for half of the samples (``proportion_empty_prompts`` 0.5, issue #12); AdamW with a constant
learning rate and gradient clipping at 1; only the ControlNet (incl. hint encoder and subject
layers) trains in that stage; sampling with UniPC, classifier-free guidance 4.0 and diffusers' guess
mode (ControlNet only on the conditional half of the guidance batch, residuals scaled from 0.1 at
the shallowest block to 1 at the mid block).

Stages of this implementation:

1. ``classifier-fold0`` … ``classifier-fold{k-1}`` — **cross-fitted training prompts**
   (``prompt_folds`` = k, 5 by default). The training trials are split into k folds, by recording
   where possible (scikit-learn ``StratifiedGroupKFold(k, shuffle=True, random_state=seed)`` with
   the recordings as groups, when at least k recordings hold trials of ≥ 2 classes; otherwise
   ``StratifiedKFold`` over trials; k is lowered to the smallest class's size, at least 2, and a
   split where every class has a single trial uses an unstratified ``KFold``). For fold i the
   classifier is reset to its initial weights, trained on the other folds exactly like stage 2
   (same steps, recipe and validation-based selection on ``val``), and each held-out trial gets
   the k-NN class over the in-fold trials' features. These out-of-fold classes are the training
   prompts (buffer ``train_prompt_classes`` of the ``train_prompts`` state component, filled
   fold by fold, so stage checkpoints and ``--resume`` carry them; a restored fold stage's
   guesses are recomputed from its restored weights, the earlier folds' are in the restored
   buffer). With fewer than 2 training trials, or ``caption_from_classifier=False``, no fold
   runs and the prompts are the labels.
2. ``classifier`` — the LSTM feature net, reset to the same initial weights, trained with a
   batch-all triplet margin loss on **all training trials** (the training split only), with a
   scikit-learn k-NN over the training features as the classifier head; the checkpoint with the
   best k-NN accuracy on the validation split is kept. (Upstream ships an externally pretrained
   classifier and a KNN pickle whose fitting split is unknown, §6.1/§9; here nothing sees the
   test split.) This classifier and its k-NN bank of all training trials guess the test (and
   validation) prompts.
3. ``controlnet`` — the v-prediction MSE of the frozen shared UNet with the ControlNet residuals,
   prompted by the out-of-fold classes of stage 1; the checkpoint with the lowest validation loss
   (fixed noise and timesteps) is kept.

Differences from upstream and why:

* Training prompts are **out-of-fold** guesses (stage 1). Upstream guesses the training trials
  with a classifier whose training data are unknown; guessing them with a classifier trained on
  those same trials and labels (even leave-one-out in its k-NN) makes training prompts far more
  accurate than test prompts, so the ControlNet learns to trust the prompt over the EEG.
  Cross-fitting gives training prompts the error rate of unseen trials (``train_prompt_accuracy``
  ≈ the validation k-NN accuracy) at the cost of k more classifier trainings.
* The small profile's shared denoiser is **v-prediction** (targets from ``get_velocity``); GWIT's
  SD2.1-base (the paper profile) is ε-prediction. The loss follows the denoiser's
  ``prediction_type``.
* EEG is z-scored per channel with training-split statistics (the small profile's EEG is in volts;
  CVPR40's ``_std`` files are already standardised, where this is close to a no-op).
* Subject layers: ``max(subject id) + 1`` matrices indexed by the raw id, as upstream's 7 layers
  for CVPR40's ids 1–6. A subject absent from training (``cross-subject``) uses the mean of the
  trained subjects' matrices (upstream has no rule for it).
* Empty prompt: ``empty_context="text"`` encodes ``""`` with the text embedder (SD's empty-prompt
  embedding, paper profile); in the small profile ``"null"`` uses the shared denoiser's null
  context (all zeros), which is what that denoiser was pretrained with as its "empty prompt".

Small profile (defaults) vs paper: the shared small UNet (widths 32/64/64, 8 × 8 latents of 64-px
images, 16 MiniLM tokens × 384) replaces SD2.1-base (CLIP-text role → MiniLM tokens, VAE role →
TAEF2, UNet role → the shared small denoiser). The hint encoder pads 180-sample N170 trials to 256,
uses c0 = 8 and 5 stages: L 254 → 127 → 64 → 32 → 16 → 8 and channels 8 → 256, reshaped to
``[B, 32, 8, 8] → permuted [B, 32, 8, 8]`` (no padding needed) — the same kind of stack as the paper's
``[B, 2560, 64] → [B, 320, 8, 64] → [B, 320, 64, 8] → padded [B, 320, 64, 64]``. Training budgets are
shortened to fit the CPU time limit; the learning rate is 1e-4 (paper 1e-5) to make up for the
shorter run, and the classifier's LSTM is 64 wide with 2 layers (paper 128 × 4).

Cost (measured 2026-11-21 on the shared 2-core CPU, load average 6–8, one torch thread): a
ControlNet step at batch 16 takes 0.33 s (1.46× a SYNAPSE-style stage-2 step of the same UNet,
0.23 s), a classifier step at batch 64 0.93 s; a guess-mode sampling step for 16 images 0.21 s
(1.53× plain guided UNet sampling). The cross-fitted prompts train the classifier
``prompt_folds + 1`` times instead of once: on eegnb-n170 multi-subject (1,529 training trials) the
six 150-step classifier trainings of the small profile took 66 s together (2026-12-02, same CPU,
load average ~1, one torch thread), their out-of-fold training-prompt accuracy 0.496 against a
validation k-NN accuracy of 0.525 (the former leave-one-out prompts: 0.506; N170's class signal is
weak, so the leak was small there).

Parameter counts (paper profile, SD2.1-base config, meta device; ``research/methods.md`` §6.4):
standard ControlNet 364,228,240 (image hint encoder 1,086,480); EEG hint encoder 19,598,208 (subject
layers 114,688 = 7·128·128); GWIT ControlNet 382,739,968, the ``controlnet`` stage's trainable
total. The harness's ``trainable_total`` adds the classifier stage (EEGFeatNet 544,896 for 128
channels), since eegbench trains the classifier instead of loading upstream's: 383,284,864. The
SYNAPSE README's "368 M" for GWIT is not reproduced by either convention (§7).
"""

from __future__ import annotations

import copy
import warnings
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
    one_of,
    sampler_field,
    template_field,
    validate_fields,
)
from eegbench.data import DatasetInfo, EEGDataset
from eegbench.errors import ConfigError
from eegbench.method import Method, RunContext, channel_statistics, text_component as _text_component
from eegbench.training import Stage, diffusion_target, fixed_noise, stimulus_latents

from .modeling import (
    EEGConditioningEmbedding,
    EEGFeatNet,
    GWITControlNet,
    OutOfFoldPrompts,
    knn_vote,
    triplet_margin_loss,
)

__all__ = ["GWIT", "GWITConfig"]



@dataclass
class GWITConfig:
    """Hyperparameters of :class:`GWIT` (defaults: the ``small`` profile).

    Upstream values (``research/methods.md`` §6) are in brackets where the small profile differs.

    Parameters
    ----------
    prompt_template : str
        Prompt of the guessed class, formatted with its class name ("image of {}").
    empty_context : str
        Context that replaces a dropped prompt and serves as the unconditional branch of guidance:
        ``"text"`` = the text embedder's tokens of ``""`` (SD's empty prompt) or ``"null"`` = the
        shared denoiser's null context (zeros, its pretraining's empty condition) ["text"].
    eeg_pad_to : int
        Time length the EEG is zero-padded to [512].
    eeg_embed_channels : int
        Channels c0 of the hint encoder's first convolution [320]; 0 = the UNet's first block
        width (``block_out_channels[0]``, 320 for SD 2.1-base), the ``paper`` value.
    eeg_embed_stages : int
        Channel-doubling stages of the hint encoder [3].
    eeg_clip : float
        Clamp of the z-scored EEG in standard deviations (10); 0 disables.
    classifier_hidden : int
        LSTM hidden size of the EEG classifier [128]; 64 here: a 4-layer, 128-wide LSTM over 180
        time steps costs ~8× more per step on the CPU.
    classifier_layers : int
        LSTM layers [4].
    classifier_dim : int
        Feature dimension [128].
    classifier_pooling : {"last", "mean"}
        What the classifier's features are read from: the LSTM's final hidden state [``"last"``,
        upstream] or its outputs averaged over time (``"mean"``; see
        :class:`~.modeling.EEGFeatNet`: with ``"last"`` the small-profile classifier collapses even on
        EEG whose class decodes at 0.995, ``--set classifier_pooling=mean`` makes it learn).
    classifier_steps : int
        Optimiser steps of the classifier stage [not published; EEGStyleGAN-ADA trains for epochs].
    classifier_batch_size : int
        Batch size of the classifier stage.
    classifier_lr : float
        Adam(W) learning rate of the classifier stage.
    triplet_margin : float
        Margin of the triplet loss.
    knn_k : int
        Neighbours of the k-NN head (scikit-learn's default 5; upstream's pickle setting unknown).
    classifier_eval_every : int
        Validation interval (steps) of the classifier; the best validation k-NN accuracy is kept.
    prompt_folds : int
        Folds k (≥ 2) of the cross-fitted training prompts: k extra classifier trainings, each on
        (k − 1)/k of the training trials, guess the held-out trials (module docstring, stage 1);
        lowered to the smallest class's trial count (at least 2) [not in upstream; 5].
    controlnet_steps : int
        Optimiser steps of the ControlNet stage [20,000: the released multi-subject checkpoint].
    controlnet_batch_size : int
        Batch size of the ControlNet stage [8].
    controlnet_lr : float
        AdamW learning rate, constant schedule [1e-5].
    weight_decay : float
        AdamW weight decay (1e-2, diffusers' training-script default).
    grad_clip : float
        Gradient-norm clip (1.0).
    proportion_empty_prompts : float
        Probability of replacing a training prompt by the empty context (0.5).
    caption_from_classifier : bool
        Train with the classifier's guessed class (True, GWIT ``--caption_from_classifier``);
        False trains with the true class.
    controlnet_eval_every : int
        Interval (steps) of the validation loss (fixed noise/timesteps); the best is kept.
    sampler : str
        Sampler of :data:`eegbench.backbones.denoiser.SAMPLERS` ("unipc").
    guidance_scale : float
        Classifier-free guidance scale (4.0).
    guess_mode : bool
        diffusers ControlNet guess mode at sampling (True).
    conditioning_scale : float
        ``controlnet_conditioning_scale`` (1.0).
    log_every : int
        Interval (steps) of training-loss logging.
    gradient_checkpointing : bool
        Recompute the trainable ControlNet's activations in the backward pass (diffusers
        ``enable_gradient_checkpointing``): less GPU memory, ~30 % more time [False, as diffusers' train_controlnet.py default].
    """

    prompt_template: str = template_field("image of {}")
    empty_context: str = one_of(("null", "text"), "null")
    eeg_pad_to: int = at_least(1, 256)
    eeg_embed_channels: int = at_least(0, 8)
    eeg_embed_stages: int = at_least(0, 5)
    eeg_clip: float = at_least(0.0, 10.0)
    classifier_hidden: int = at_least(1, 64)
    classifier_layers: int = at_least(1, 2)
    classifier_dim: int = at_least(1, 64)
    classifier_pooling: str = one_of(("last", "mean"), "last")
    classifier_steps: int = at_least(0, 150)
    classifier_batch_size: int = at_least(1, 64)
    classifier_lr: float = greater_than(0.0, 1e-3)
    triplet_margin: float = at_least(0.0, 0.2)
    knn_k: int = at_least(1, 5)
    classifier_eval_every: int = at_least(1, 50)
    prompt_folds: int = at_least(2, 5)
    controlnet_steps: int = at_least(0, 1000)
    controlnet_batch_size: int = at_least(1, 16)
    controlnet_lr: float = greater_than(0.0, 1e-4)
    weight_decay: float = at_least(0.0, 1e-2)
    grad_clip: float = at_least(0.0, 1.0)
    proportion_empty_prompts: float = in_range(0.0, 1.0, 0.5)
    caption_from_classifier: bool = True
    controlnet_eval_every: int = at_least(1, 250)
    sampler: str = sampler_field("unipc")
    guidance_scale: float = at_least(1.0, 4.0)
    guess_mode: bool = True
    conditioning_scale: float = at_least(0.0, 1.0)
    log_every: int = at_least(1, 50)
    gradient_checkpointing: bool = False

    def validate(self) -> None:
        """Check value ranges.

        Raises
        ------
        ConfigError
            Naming the first offending option.
        """
        validate_fields(self, "gwit")


class _ControlledUNet(nn.Module):
    """Training wrapper: ControlNet residuals into the frozen UNet (one module for ``accelerate.prepare``)."""

    def __init__(self, controlnet: GWITControlNet, unet: nn.Module) -> None:
        super().__init__()
        self.controlnet, self.unet = controlnet, unet

    def forward(self, noisy, timesteps, context, eeg, subject):
        down, mid = self.controlnet(noisy, timesteps, context, eeg, subject)
        return self.unet(noisy, timesteps, encoder_hidden_states=context, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid).sample


class GWIT(Method):
    """GWIT: EEG ControlNet over a frozen denoiser, prompted by an EEG classifier's guess.

    See the module docstring for the recipe, the small-profile mapping and the parameter counts.

    Parameters
    ----------
    config : GWITConfig
    info : DatasetInfo
        ``n_chans``/``n_times`` size the hint encoder and classifier; ``subjects`` the subject layers;
        ``class_names`` the prompts.
    backbones : eegbench.backbones.Backbones or a paper-profile equivalent
        Needs a prepared ``denoiser`` (``unet``, ``latent_size``, ``scheduler_config``, ...), ``vae``
        and ``text_embedder``. Construction only builds modules (works on the meta device).
    device : torch.device

    Raises
    ------
    ConfigError
        For invalid hyperparameters or a hint encoder that does not fit the UNet's first block.
    """

    name = "gwit"
    version = "0.1.0"
    paper = ("GWIT (Guess What I Think), arXiv 2410.02780 (https://arxiv.org/abs/2410.02780); reference code "
             "https://github.com/LuigiSigillo/GWIT @f446378")
    paper_backbone: ClassVar[str] = "sd21-base"
    #: Sampler steps of the published evaluation: UniPC, 50 steps (``generate_controlnet.py``) (``research/methods.md`` §2.1).
    published_steps = 50
    Config = GWITConfig
    stages = ("classifier", "controlnet")
    inference_components = ("controlnet", "unet", "vae", "eeg_classifier", "text_embedder")

    def __init__(self, config: GWITConfig, *, info: DatasetInfo, backbones: Any, device: torch.device) -> None:
        super().__init__(config, info=info, backbones=backbones, device=device)
        config.validate()
        ensure_torchvision()
        den = backbones.denoiser
        unet = den.unet
        n_layers = max((int(s) for s in info.subjects), default=0) + 1
        build = torch.device("meta") if str(getattr(backbones, "device", device)) == "meta" else self.device
        with torch.device(build):
            embedding = EEGConditioningEmbedding(
                info.n_chans, info.n_times, n_subject_layers=n_layers,
                out_channels=int(unet.config.block_out_channels[0]), latent_size=int(den.latent_size),
                pad_to=config.eeg_pad_to,
                base_channels=config.eeg_embed_channels or int(unet.config.block_out_channels[0]),
                n_stages=config.eeg_embed_stages, clip=config.eeg_clip)
            self.eeg_classifier = EEGFeatNet(info.n_chans, hidden=config.classifier_hidden,
                                             num_layers=config.classifier_layers, dim=config.classifier_dim,
                                             clip=config.eeg_clip, pooling=config.classifier_pooling)
        # the trainable ControlNet starts from fp32 weights even when the frozen UNet is held in fp16/bf16
        source = unet if unet.dtype == torch.float32 else den.new_unet()
        self.controlnet = GWITControlNet(source, embedding)
        del source
        self.train_prompts = OutOfFoldPrompts()
        if config.gradient_checkpointing:
            self.controlnet.net.enable_gradient_checkpointing()
        if build.type != "meta":
            self.controlnet.to(self.device)
            self.eeg_classifier.to(self.device)
            self.train_prompts.to(self.device)
        self._prompt_fold_info: dict[str, float] = {}  # what fit logs about the folds (with train_prompt_accuracy)
        self._prompt_cache: torch.Tensor | None = None
        self.configure_stage("inference")

    # ------------------------------------------------------------------ interface
    @classmethod
    def default_config(cls, profile: str = "small") -> GWITConfig:
        """Hyperparameters for ``profile``: ``"small"`` (CPU budget) or ``"paper"`` (published recipe).

        Raises
        ------
        ConfigError
            For an unknown profile.
        """
        if profile == "small":
            return GWITConfig()
        if profile == "paper":
            return GWITConfig(empty_context="text", eeg_pad_to=512, eeg_embed_channels=0, eeg_embed_stages=3,
                              classifier_hidden=128, classifier_layers=4, classifier_dim=128,
                              classifier_steps=5000, classifier_batch_size=256, classifier_eval_every=500,
                              controlnet_steps=20000, controlnet_batch_size=8, controlnet_lr=1e-5,
                              controlnet_eval_every=1000, log_every=100)
        raise ConfigError(f"gwit: unknown profile {profile!r}; known: small, paper")

    @classmethod
    def test_config(cls) -> GWITConfig:
        """Toy-size configuration for conformance tests (32-sample EEG, 10 + 10 steps, 2 prompt folds)."""
        return GWITConfig(eeg_pad_to=32, eeg_embed_channels=1, eeg_embed_stages=4, classifier_hidden=16,
                          classifier_layers=2, classifier_dim=16, classifier_batch_size=16, classifier_eval_every=5,
                          controlnet_batch_size=8, controlnet_eval_every=5, log_every=5, classifier_steps=10,
                          controlnet_steps=10, prompt_folds=2)

    def components(self) -> dict[str, nn.Module]:
        """Every module: ControlNet (incl. EEG hint encoder), frozen shared UNet, VAE, EEG classifier and
        the frozen text encoder that embeds the class prompts used at generation."""
        return {
            "controlnet": self.controlnet,
            "unet": self.backbones.denoiser.unet,
            "vae": self.backbones.vae,
            "eeg_classifier": self.eeg_classifier,
            **_text_component(self.backbones),
        }

    def state_components(self) -> dict[str, nn.Module]:
        """What :meth:`save` stores: the ControlNet, the classifier and the out-of-fold training prompts.

        Not the shared UNet / VAE. ``train_prompts`` (:class:`~.modeling.OutOfFoldPrompts`, no
        parameters) is saved and checkpointed so that a resumed fit keeps the cross-fitted
        prompts; it is not a component (nothing of it runs at inference).
        """
        return {"controlnet": self.controlnet, "eeg_classifier": self.eeg_classifier,
                "train_prompts": self.train_prompts}

    def configure_stage(self, stage: str) -> None:
        """Set ``requires_grad`` for ``stage``.

        ``classifier``: the LSTM feature net. ``controlnet``: the whole ControlNet (copied encoder,
        mid block, zero convolutions, EEG hint encoder and subject layers). ``inference``: nothing.
        The shared UNet and VAE never train.

        Raises
        ------
        ConfigError
            For an unknown stage.
        """
        if stage not in (*self.stages, "inference"):
            raise ConfigError(f"gwit: unknown stage {stage!r}; known: {', '.join(self.stages)}")
        for module in self.components().values():
            module.requires_grad_(False)
        if stage == "classifier":
            self.eeg_classifier.requires_grad_(True)
        elif stage == "controlnet":
            self.controlnet.requires_grad_(True)

    # ------------------------------------------------------------------ helpers
    def prompt_tokens(self) -> torch.Tensor:
        """Text tokens of every class prompt ``prompt_template.format(class)``.

        Returns
        -------
        torch.Tensor, shape (n_classes, context_tokens, cross_attention_dim), float32, on the device
        """
        if self._prompt_cache is None:
            prompts = [self.config.prompt_template.format(c) for c in self.info.class_names]
            tokens, _ = self.backbones.text_embedder.encode(prompts)
            den = self.backbones.denoiser
            if tokens.shape[-1] != den.cross_attention_dim:
                raise ConfigError(f"gwit: text tokens are {tokens.shape[-1]}-d, the denoiser's context is "
                                  f"{den.cross_attention_dim}-d")
            self._prompt_cache = tokens.float().to(self.device)
        return self._prompt_cache

    def empty_tokens(self, batch: int) -> torch.Tensor:
        """The empty-prompt context (see ``empty_context``), float32 (batch, context_tokens, dim)."""
        den = self.backbones.denoiser
        if self.config.empty_context == "null":
            return den.null_context(batch).to(self.device)
        tokens, _ = self.backbones.text_embedder.encode([""])
        return tokens.float().to(self.device).expand(batch, -1, -1).clone()

    @torch.no_grad()
    def predict_classes(self, eeg: torch.Tensor) -> torch.Tensor:
        """The classifier's guess per trial (k-NN over training features).

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float, in ``info.unit``

        Returns
        -------
        torch.Tensor, shape (batch,), int64

        Raises
        ------
        DataFormatError
            If ``eeg`` has the wrong shape.
        """
        self.check_eeg(eeg, "predict_classes")
        self.eeg_classifier.eval()
        return self.eeg_classifier.predict(eeg.to(self.device, torch.float32), self.config.knn_k,
                                           self.info.n_classes)

    @torch.no_grad()
    def _features(self, eeg: np.ndarray) -> torch.Tensor:
        self.eeg_classifier.eval()
        x = torch.from_numpy(np.ascontiguousarray(eeg)).float()
        return torch.cat([self.eeg_classifier(x[i:i + 256].to(self.device)).float().cpu()
                          for i in range(0, len(x), 256)])

    # ------------------------------------------------------------------ training
    def fit(self, train: EEGDataset, val: EEGDataset, ctx: RunContext) -> None:
        """Cross-fit the training prompts, train the classifier, then the ControlNet, on ``train``.

        ``val`` selects every classifier checkpoint and the ControlNet's. Every stage
        (``classifier-fold{i}``, ``classifier``, ``controlnet``; module docstring) runs through the
        harness's :class:`~eegbench.training.StageTrainer`; each classifier training starts from
        the same initial weights.

        Parameters
        ----------
        train, val : EEGDataset
            EEG in ``info.unit``; ``val`` may be empty (then the last weights are kept).
        ctx : RunContext

        Raises
        ------
        DataFormatError
            If the EEG shape differs from ``info`` or the training set is empty.
        """
        self.check_fit_data(train, val)
        mean, std = channel_statistics(train.eeg)
        self.controlnet.embedding.standardize.set_statistics(mean, std)
        self.eeg_classifier.standardize.set_statistics(mean, std)
        self.controlnet.embedding.subject_layers.mark_seen(sorted({int(s) for s in train.subjects}))
        trainer = ctx.trainer(self)
        initial = copy.deepcopy(self.eeg_classifier.state_dict())  # every classifier training starts here
        self._prompt_fold_info = {"prompt_folds": 0.0}  # no fold: the prompts are the labels
        if self.config.caption_from_classifier and len(train) >= 2:
            self._cross_fit_prompts(train, val, trainer, ctx.seed, initial)
        self.eeg_classifier.load_state_dict(initial)
        trainer.run_stage("classifier", self.config.classifier_steps,
                          lambda: self._classifier_stage(train, val, ctx.seed))
        self.configure_stage("inference")
        self.eeg_classifier.set_bank(self._features(train.eeg), torch.from_numpy(train.labels.copy()))
        self.eeg_classifier.eval()
        trainer.run_stage("controlnet", self.config.controlnet_steps,
                          lambda: self._controlnet_stage(train, val, ctx))
        self.configure_stage("inference")
        self.controlnet.eval()
        self.eeg_classifier.eval()

    def _classifier_stage(self, train: EEGDataset, val: EEGDataset, seed: int) -> Stage:
        """The triplet-loss LSTM feature net; the best validation k-NN accuracy is kept."""
        c = self.config
        self.configure_stage("classifier")
        eeg = torch.from_numpy(np.ascontiguousarray(train.eeg)).float()
        labels = torch.from_numpy(train.labels.copy())
        validate = (lambda m: {"knn_accuracy": self._knn_accuracy(train, val)}) if len(val) else None  # noqa: E731
        return Stage(
            model=self.eeg_classifier, data=(eeg, labels), batch_size=min(c.classifier_batch_size, len(train)),
            step=lambda m, batch: {"loss": triplet_margin_loss(m(batch[0]), batch[1], c.triplet_margin)},
            optimizer=lambda p: torch.optim.AdamW(p, lr=c.classifier_lr, weight_decay=0.0),
            loader_generator=torch.Generator().manual_seed(seed),
            grad_clip=c.grad_clip, log_every=c.log_every,
            validate=validate, eval_every=c.classifier_eval_every, select=lambda row: -row["knn_accuracy"],
            keep=(self.eeg_classifier,),
        )

    def cross_fitting_folds(self, train: EEGDataset, seed: int) -> tuple[list[np.ndarray], bool]:
        """Held-out trials of each cross-fitting fold (module docstring, stage 1).

        ``k = max(2, min(prompt_folds, smallest class count))``. Folds group the trials by
        recording (``StratifiedGroupKFold``) when at least k recordings hold trials of ≥ 2
        classes and every fold then holds out and keeps trials; otherwise ``StratifiedKFold``
        over trials, or ``KFold`` when no class has k trials (every class a single trial).

        Parameters
        ----------
        train : EEGDataset
            Training split, at least 2 trials.
        seed : int
            ``random_state`` of the fold shuffling (the run seed).

        Returns
        -------
        folds : list of numpy.ndarray, each shape (M_i,), int64
            Positions (into ``train``) of each fold's held-out trials, sorted; together every
            position exactly once.
        grouped : bool
            Whether the folds are recording-disjoint.
        """
        from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold

        labels = np.asarray(train.labels, dtype=np.int64)
        counts = np.bincount(labels)
        counts = counts[counts > 0]
        k = max(2, min(int(self.config.prompt_folds), int(counts.min())))
        rows = np.zeros((len(labels), 1))
        recordings = train.trials["recording"].astype(str).to_numpy()
        classes_per_recording = train.trials.groupby("recording")["label"].nunique()
        with warnings.catch_warnings():  # a class with fewer than k trials only warns
            warnings.filterwarnings("ignore", message=".*least populated class.*", category=UserWarning)
            if int((classes_per_recording >= 2).sum()) >= k:
                folds = [np.sort(held) for _, held in StratifiedGroupKFold(
                    n_splits=k, shuffle=True, random_state=seed).split(rows, labels, recordings)]
                if all(0 < len(held) < len(labels) for held in folds):
                    return folds, True
            splitter = (StratifiedKFold(n_splits=k, shuffle=True, random_state=seed) if counts.max() >= k
                        else KFold(n_splits=k, shuffle=True, random_state=seed))
            return [np.sort(held) for _, held in splitter.split(rows, labels)], False

    def _cross_fit_prompts(self, train: EEGDataset, val: EEGDataset, trainer, seed: int,
                           initial: dict[str, torch.Tensor]) -> None:
        """Stage 1: guess every training trial with a classifier trained without its fold.

        Fills ``self.train_prompts`` fold by fold. A fold stage restored on resume brings back the
        buffer as of its end (the earlier folds' guesses); its own guesses are recomputed from its
        restored weights, which are the weights that made them.

        Parameters
        ----------
        train, val : EEGDataset
        trainer : eegbench.training.StageTrainer
        seed : int
            Run seed (fold shuffling and each fold's batch order).
        initial : dict of str to torch.Tensor
            ``eeg_classifier.state_dict()`` before any training; every fold starts from it.
        """
        folds, grouped = self.cross_fitting_folds(train, seed)
        self._prompt_fold_info = {"prompt_folds": float(len(folds)), "prompt_folds_by_recording": float(grouped)}
        self.train_prompts.reset(len(train))
        ids = train.trials["trial_id"].to_numpy()
        for i, held in enumerate(folds):
            keep = np.setdiff1d(np.arange(len(train)), held)
            fit_part, held_part = train.subset(list(ids[keep])), train.subset(list(ids[held]))
            self.eeg_classifier.load_state_dict(initial)
            trainer.run_stage(f"classifier-fold{i}", self.config.classifier_steps,
                              lambda part=fit_part: self._classifier_stage(part, val, seed))
            self.configure_stage("inference")
            self.train_prompts.fill(held, self._fold_predictions(fit_part, held_part))

    def _fold_predictions(self, fit_part: EEGDataset, held_part: EEGDataset) -> np.ndarray:
        """k-NN class, int64 (len(held_part),), of the held-out trials over the in-fold trials' features."""
        ftr, fte = self._features(fit_part.eeg).numpy(), self._features(held_part.eeg).numpy()
        return knn_vote(ftr, fit_part.labels, self.config.knn_k, query=fte)

    def _knn_accuracy(self, train: EEGDataset, val: EEGDataset) -> float:
        """k-NN accuracy on ``val`` with the current features of ``train`` as the reference set."""
        ftr, fva = self._features(train.eeg).numpy(), self._features(val.eeg).numpy()
        pred = knn_vote(ftr, train.labels, self.config.knn_k, query=fva)
        return float((pred == val.labels).mean())

    def _latents(self, dataset: EEGDataset) -> torch.Tensor:
        """Scaled VAE latents of each trial's stimulus, float32 (n_trials, C, h, w) on the CPU."""
        return stimulus_latents(dataset, self.backbones.denoiser, self.device)

    def _training_prompt_classes(self, train: EEGDataset) -> np.ndarray:
        """Class whose prompt each training trial gets: its out-of-fold guess (stage 1), or the label.

        Returns
        -------
        numpy.ndarray, shape (len(train),), int64

        Raises
        ------
        RuntimeError
            If the stored out-of-fold classes do not cover ``train`` (a checkpoint of another split).
        """
        if not self.config.caption_from_classifier or len(train) < 2:
            return train.labels.copy()
        classes = self.train_prompts.classes()
        if classes.shape != (len(train),) or (classes < 0).any():
            raise RuntimeError(f"gwit: out-of-fold training prompts cover {int((classes >= 0).sum())} of "
                               f"{len(train)} training trials; the cross-fitting stages did not run for this split")
        return classes

    def _diffusion_loss(self, model: nn.Module, scheduler, latents, context, eeg, subject, noise, timesteps):
        noisy = scheduler.add_noise(latents, noise, timesteps)
        target = diffusion_target(scheduler, latents, noise, timesteps, who="gwit")
        pred = model(noisy, timesteps, context, eeg, subject)
        return F.mse_loss(pred.float(), target.float())

    def _controlnet_stage(self, train: EEGDataset, val: EEGDataset, ctx: RunContext) -> Stage:
        """The EEG ControlNet on the frozen shared UNet, prompted by the classifier's guesses (50 % empty)."""
        c = self.config
        den = self.backbones.denoiser
        scheduler = den.new_scheduler("ddpm")
        n_train_t = int(scheduler.config.num_train_timesteps)
        prompts = self.prompt_tokens().cpu()
        empty = self.empty_tokens(1).cpu()[0]
        classes = torch.from_numpy(self._training_prompt_classes(train))
        guess_acc = float((classes.numpy() == train.labels).mean())
        ctx.log_metrics({"train_prompt_accuracy": guess_acc, **self._prompt_fold_info}, stage="controlnet", step=0)
        eeg = torch.from_numpy(np.ascontiguousarray(train.eeg)).float()
        subj = torch.from_numpy(train.subjects.copy())
        latents = self._latents(train)
        validate = None
        if len(val):
            n_val = min(len(val), 64)
            sub = val.subset(list(val.trials["trial_id"])[:n_val])
            veeg = torch.from_numpy(np.ascontiguousarray(sub.eeg)).float()
            vcls = self.predict_classes(veeg).cpu()
            vlat = self._latents(sub)
            vn, vt = fixed_noise(vlat.shape, n_train_t, ctx.seed)
            val_batch = (vlat, prompts[vcls], veeg, torch.from_numpy(sub.subjects.copy()), vn, vt)

            def validate_loss(m):
                vl, vc, ve, vs, vn_, vt_ = (v.to(self.device) for v in val_batch)
                return {"loss": float(self._diffusion_loss(m, scheduler, vl, vc, ve, vs, vn_, vt_))}
            validate = validate_loss
        self.configure_stage("controlnet")
        noise_gen = torch.Generator().manual_seed(ctx.seed + 2)

        def step(m, batch):
            x, s, cls, lat = batch
            b = len(lat)
            drop = torch.rand(b, generator=noise_gen) < c.proportion_empty_prompts
            context = torch.where(drop[:, None, None], empty.expand(b, -1, -1), prompts[cls.cpu()]).to(lat.device)
            noise = torch.randn(lat.shape, generator=noise_gen).to(lat.device)
            t = torch.randint(0, n_train_t, (b,), generator=noise_gen).to(lat.device)
            return {"loss": self._diffusion_loss(m, scheduler, lat, context, x, s, noise, t)}

        return Stage(
            model=_ControlledUNet(self.controlnet, den.unet), step=step, data=(eeg, subj, classes, latents),
            batch_size=min(c.controlnet_batch_size, len(train)),
            params=[p for p in self.controlnet.parameters() if p.requires_grad],
            optimizer=lambda p: torch.optim.AdamW(p, lr=c.controlnet_lr, betas=(0.9, 0.999),
                                                  weight_decay=c.weight_decay, foreach=True),
            loader_generator=torch.Generator().manual_seed(ctx.seed + 1), generators=(noise_gen,),
            eval_modules=(den.unet,), grad_clip=c.grad_clip, log_every=c.log_every,
            validate=validate, eval_every=c.controlnet_eval_every, select=lambda row: row["loss"],
            keep=(self.controlnet,),
        )

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, eeg: torch.Tensor, *, generators: Sequence[torch.Generator], n_samples: int,
                 num_inference_steps: int, subject: torch.Tensor | None = None) -> torch.Tensor:
        """Generate images: guessed-class prompt + EEG ControlNet, guess mode, classifier-free guidance.

        The frozen shared UNet samples with the configured sampler (UniPC) from the prompt of the
        classifier's guessed class; the unconditional branch uses the empty context. In guess mode
        (diffusers semantics) the ControlNet runs only on the conditional half of the guidance
        batch, its residuals scaled by ``logspace(-1, 0)`` per block, and the unconditional half
        gets zero residuals.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float
            EEG in ``info.unit``.
        generators : sequence of torch.Generator, length batch * n_samples
            Trial-major order; image i of trial b takes its noise from ``generators[b * n_samples + i]``.
        n_samples : int
            Images per trial.
        num_inference_steps : int
            Sampler steps.
        subject : torch.Tensor, shape (batch,), int64, optional
            Subject ids; None or an id absent from training uses the mean subject matrix.

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
        self.controlnet.eval()
        eeg = eeg.to(self.device, torch.float32)
        classes = self.predict_classes(eeg)
        rows = batch * n_samples
        context = self.prompt_tokens()[classes].repeat_interleave(n_samples, dim=0)
        eeg_rep = eeg.repeat_interleave(n_samples, dim=0)
        subj = None if subject is None else subject.to(self.device).long().reshape(-1).repeat_interleave(n_samples)
        guidance = float(self.config.guidance_scale)
        guess, scale = bool(self.config.guess_mode), float(self.config.conditioning_scale)
        null = self.empty_tokens(rows) if guidance != 1.0 else None
        full_context = context if null is None else torch.cat([context, null])
        full_eeg = eeg_rep if null is None else torch.cat([eeg_rep, eeg_rep])
        full_subj = None if subj is None or null is None else torch.cat([subj, subj])

        net_dtype, unet_dtype = self.controlnet.net.dtype, den.unet.dtype

        def residuals(model_in: torch.Tensor, t: torch.Tensor) -> dict[str, Any]:
            down, mid = _residuals(model_in.to(net_dtype), t)
            # a frozen fp16/bf16 UNet takes residuals in its own dtype (the ControlNet trains in fp32)
            return {"down_block_additional_residuals": [d.to(unet_dtype) for d in down],
                    "mid_block_additional_residual": mid.to(unet_dtype)}

        def _residuals(model_in: torch.Tensor, t: torch.Tensor):
            if null is not None and guess:  # ControlNet on the conditional half only
                down, mid = self.controlnet(model_in[:rows], t, context, eeg_rep, subj, guess_mode=True,
                                            conditioning_scale=scale)
                down = [torch.cat([d, torch.zeros_like(d)]) for d in down]
                mid = torch.cat([mid, torch.zeros_like(mid)])
            else:
                s = subj if null is None else full_subj
                down, mid = self.controlnet(model_in, t, full_context, full_eeg if null is not None else eeg_rep, s,
                                            guess_mode=guess, conditioning_scale=scale)
            return down, mid

        images = den.sample(context, list(generators), num_inference_steps=num_inference_steps,
                            guidance_scale=guidance, extra_context=residuals, null_context=null,
                            sampler=self.config.sampler)
        return images.reshape(batch, n_samples, *images.shape[1:])
