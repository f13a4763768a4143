"""Reference points of every leaderboard: what the shared denoiser gives without the EEG, and with the truth.

Both references sample the profile's shared pretrained denoiser (the class-conditional model every
small-profile method builds on, :mod:`eegbench.backbones.denoiser`) with a class prompt and no EEG:

- ``class-prior`` ignores the EEG: each test trial gets a class drawn from the training split's
  class frequencies. A method that does no better than this passes on no class information from
  the EEG; what it scores comes from the class prior and the image prior of the denoiser (the
  class-prior critique of CVPR40 results, Li et al. 2020, "The perils and pitfalls of block design
  for EEG classification experiments", IEEE TPAMI 43).
- ``oracle-class`` reads each test trial's **true label** (``reads_test_labels``): the ceiling of
  class metrics for a method that decodes the class perfectly and draws it with this denoiser. It
  reads test labels by design; its result says so, and the leaderboard shows both references in a
  separate block, never ranked with methods.

They are registered by the core plugin (:mod:`eegbench.builtin`) through
``eegbench_register_methods``, like any method plugin, and run with ``eegbench run --method
class-prior`` / ``--method oracle-class``. Neither reads the EEG, so their runs score no shuffled-EEG
control. They have no training stage: :meth:`fit` only counts the training classes.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from eegbench.config import at_least, sampler_field, validate_fields
from eegbench.errors import ConfigError
from eegbench.method import Method, text_component as _text_component

__all__ = ["ClassPrior", "OracleClass", "ReferenceConfig"]


@dataclass
class ReferenceConfig:
    """Sampling of a reference (the protocol may fix ``sampler`` and ``guidance_scale`` for everyone).

    Parameters
    ----------
    sampler : str
        diffusers sampler of the shared denoiser (``"ddim"``).
    guidance_scale : float
        Classifier-free guidance weight with the denoiser's null context (3.0, as the small
        profile's SYNAPSE).
    """

    sampler: str = sampler_field("ddim")
    guidance_scale: float = at_least(1.0, 3.0)

    def validate(self) -> None:
        validate_fields(self, "reference")


class _ClassCounts(nn.Module):
    """Training-class counts as a buffer (saved with the method's checkpoint)."""

    def __init__(self, n_classes: int) -> None:
        super().__init__()
        self.register_buffer("counts", torch.zeros(n_classes, dtype=torch.float32))


class _SharedDenoiserReference(Method):
    """A class prompt through the shared denoiser; subclasses choose the class of each trial."""

    version = "1.0.0"
    paper = "eegbench reference (no EEG)"
    Config = ReferenceConfig
    stages = ()
    inference_components = ("unet", "vae", "text_embedder")
    role = "reference"
    reads_eeg = False

    def __init__(self, config: ReferenceConfig, *, info, backbones, device: torch.device) -> None:
        super().__init__(config, info=info, backbones=backbones, device=device)
        config.validate()
        self.class_counts = _ClassCounts(info.n_classes).to(self.device)

    @classmethod
    def default_config(cls, profile: str = "small") -> ReferenceConfig:
        """The sampling defaults (small profile).

        Raises
        ------
        ConfigError
            For another profile (the references sample the small profile's shared denoiser).
        """
        if profile != "small":
            raise ConfigError(f"method {cls.name!r} has no {profile!r} profile (it samples the small profile's "
                              "shared denoiser)")
        return ReferenceConfig()

    @classmethod
    def test_config(cls) -> ReferenceConfig:
        """The defaults: a reference has nothing to train."""
        return ReferenceConfig()

    def components(self) -> dict[str, nn.Module]:
        """The shared denoiser's UNet, the autoencoder and the text encoder of the class prompts (frozen),
        and the class counts."""
        return {"unet": self.backbones.denoiser.unet, "vae": self.backbones.vae,
                **_text_component(self.backbones), "class_counts": self.class_counts}

    def state_components(self) -> dict[str, nn.Module]:
        """Only the training-class counts: the denoiser is the shared one."""
        return {"class_counts": self.class_counts}

    def configure_stage(self, stage: str) -> None:
        """Nothing trains; only ``"inference"`` is known.

        Raises
        ------
        ConfigError
            For any other stage.
        """
        if stage != "inference":
            raise ConfigError(f"{self.name}: unknown stage {stage!r}; a reference has no training stage")
        for module in self.components().values():
            module.requires_grad_(False)

    def fit(self, train, val, ctx) -> None:
        """Count the training classes (nothing is trained).

        Parameters
        ----------
        train, val : EEGDataset
            Only ``train.labels`` is read.
        ctx : RunContext
        """
        counts = torch.bincount(torch.tensor(np.asarray(train.labels), dtype=torch.long), minlength=self.info.n_classes)
        self.class_counts.counts.copy_(counts.float().to(self.class_counts.counts.device))
        ctx.log_metrics({"n_train_trials": float(counts.sum()),
                         "majority_class_share": float(counts.max() / counts.sum().clamp_min(1))}, stage="fit", step=0)

    def trial_classes(self, batch: int, generators: Sequence[torch.Generator], n_samples: int,
                      labels: torch.Tensor | None) -> torch.Tensor:
        """The class of each trial, shape (batch,), int64."""
        raise NotImplementedError

    @torch.no_grad()
    def generate(self, eeg: torch.Tensor, *, generators: Sequence[torch.Generator], n_samples: int,
                 num_inference_steps: int, subject: torch.Tensor | None = None,
                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """Sample the shared denoiser with the class prompt of each trial's class.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float32
            Checked for shape only; never read.
        generators : sequence of torch.Generator, length batch * n_samples
        n_samples, num_inference_steps : int
        subject : torch.Tensor, optional
            Unused.
        labels : torch.Tensor, shape (batch,), int64, optional
            The test trials' true classes (only ``oracle-class`` reads them).

        Returns
        -------
        torch.Tensor, shape (batch, n_samples, 3, H, W), uint8
        """
        self.check_generate_args(eeg, generators, n_samples, num_inference_steps)
        batch = eeg.shape[0]
        den = self.backbones.denoiser
        classes = self.trial_classes(batch, generators, n_samples, labels).reshape(-1).long()
        context = den.class_context(classes.repeat_interleave(n_samples).cpu())
        images = den.sample(context, list(generators), num_inference_steps=num_inference_steps,
                            guidance_scale=float(self.config.guidance_scale), sampler=self.config.sampler)
        return images.reshape(batch, n_samples, *images.shape[1:])


class ClassPrior(_SharedDenoiserReference):
    """``class-prior``: the shared denoiser prompted with classes drawn from the training class frequencies.

    The class of trial ``j`` is drawn from a CPU generator seeded from the initial seed of the
    trial's first image generator (the harness derives it from the run seed and the trial id), so
    the draw does not depend on the batch and leaves the sampling noise untouched.
    """

    name = "class-prior"

    def trial_classes(self, batch, generators, n_samples, labels):
        counts = self.class_counts.counts.detach().cpu().double()
        if float(counts.sum()) <= 0:
            raise ConfigError("class-prior: fit() was not called (no training class counts)")
        probs = counts / counts.sum()
        out = []
        for j in range(batch):
            seed = (int(generators[j * n_samples].initial_seed()) ^ zlib.crc32(b"class-prior")) & ((1 << 63) - 1)
            g = torch.Generator().manual_seed(seed)
            out.append(int(torch.multinomial(probs, 1, generator=g)))
        return torch.tensor(out, dtype=torch.long)


class OracleClass(_SharedDenoiserReference):
    """``oracle-class``: the shared denoiser prompted with each test trial's true class.

    Reads the test labels by design (``reads_test_labels``): the ceiling of class metrics with this
    denoiser, never a method.
    """

    name = "oracle-class"
    reads_test_labels = True

    def trial_classes(self, batch, generators, n_samples, labels):
        if labels is None:
            raise ConfigError("oracle-class: generate() needs labels= (the harness passes the test labels to "
                              "methods with reads_test_labels)")
        labels = torch.as_tensor(labels).reshape(-1).long().cpu()
        if labels.numel() != batch:
            raise ConfigError(f"oracle-class: {labels.numel()} labels for a batch of {batch}")
        return labels
