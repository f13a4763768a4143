"""``example-eeg-tokens``: the smallest complete EEG-to-image method, as a template for plugins.

EEG ``(batch, n_chans, n_times)`` is standardised per channel (statistics of the training split),
flattened and mapped by one linear layer to ``n_tokens`` context tokens of the denoiser's
``cross_attention_dim``. One training stage fits that encoder together with the cross-attention
projections (``attn2``) of the method's own copy of the shared pretrained UNet, with the diffusion
loss of the shared denoiser's scheduler (ε or v, whatever the backbone predicts). Generation samples
the fine-tuned UNet with the EEG tokens as context.

It is a template, not a published method: it shows every contract the harness relies on (see
``methods/README.md``), and it passes :func:`eegbench.testing.check_method`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from eegbench.config import at_least, greater_than, sampler_field, validate_fields
from eegbench.errors import ConfigError
from eegbench.method import Method
from eegbench.preprocessing import EEGStandardizer, channel_statistics
from eegbench.training import Stage, diffusion_target, stimulus_latents


@dataclass
class EEGTokensConfig:
    """Hyperparameters (every field is checked by :meth:`validate`)."""

    n_tokens: int = at_least(1, 4)
    steps: int = at_least(0, 300)
    batch_size: int = at_least(1, 16)
    lr: float = greater_than(0.0, 1e-3)
    weight_decay: float = at_least(0.0, 0.01)
    grad_clip: float = greater_than(0.0, 1.0)
    sampler: str = sampler_field("ddim")  # the protocol may fix it for every method
    guidance_scale: float = at_least(1.0, 1.0)  # 1: no classifier-free guidance

    def validate(self) -> None:
        validate_fields(self, "example-eeg-tokens")


class EEGTokenEncoder(nn.Module):
    """Standardise, flatten, project: EEG → context tokens.

    Parameters
    ----------
    n_chans, n_times : int
        EEG shape of the dataset.
    n_tokens, dim : int
        Output tokens and their width (the denoiser's ``cross_attention_dim``).

    Shapes
    ------
    ``(batch, n_chans, n_times)`` float32 in the dataset unit (e.g. V) →
    ``(batch, n_tokens, dim)`` float32.
    """

    def __init__(self, n_chans: int, n_times: int, n_tokens: int, dim: int) -> None:
        super().__init__()
        self.n_tokens, self.dim = n_tokens, dim
        self.standardize = EEGStandardizer(n_chans)  # the core's z-scoring; its statistics are saved buffers
        self.proj = nn.Linear(n_chans * n_times, n_tokens * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        x = self.standardize(eeg)
        return self.norm(self.proj(x.flatten(1)).view(len(eeg), self.n_tokens, self.dim))


class Conditioned(nn.Module):
    """Encoder + UNet as one module: what the stage steps (DDP wraps exactly this)."""

    def __init__(self, encoder: EEGTokenEncoder, unet: nn.Module) -> None:
        super().__init__()
        self.encoder, self.unet = encoder, unet

    def forward(self, noisy: torch.Tensor, t: torch.Tensor, eeg: torch.Tensor) -> torch.Tensor:
        return self.unet(noisy, t, encoder_hidden_states=self.encoder(eeg)).sample


class EEGTokens(Method):
    """Linear EEG tokens through the cross-attention of a fine-tuned copy of the shared denoiser.

    Parameters
    ----------
    config : EEGTokensConfig
    info : eegbench.datasets.DatasetInfo
    backbones : eegbench.backbones.protocol.BackboneSet
    device : torch.device
    """

    name = "example-eeg-tokens"
    version = "0.1.0"
    paper = "eegbench example plugin (examples/example_method); not a published method"
    Config = EEGTokensConfig
    stages = ("train",)
    inference_components = ("encoder", "unet", "vae")

    def __init__(self, config, *, info, backbones, device) -> None:
        super().__init__(config, info=info, backbones=backbones, device=device)
        config.validate()
        den = backbones.denoiser
        self.encoder = EEGTokenEncoder(info.n_chans, info.n_times, config.n_tokens,
                                       den.cross_attention_dim).to(self.device)
        self.unet = den.new_unet()  # never train backbones.denoiser.unet itself: it is shared

    @classmethod
    def test_config(cls) -> EEGTokensConfig:
        return EEGTokensConfig(n_tokens=2, steps=4, batch_size=4)

    def components(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "unet": self.unet, "vae": self.backbones.vae}

    def state_components(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "unet": self.unet}  # the VAE is the shared, frozen one

    def _trained(self):
        yield from self.encoder.parameters()
        for name, p in self.unet.named_parameters():
            if ".attn2." in name:
                yield p

    def configure_stage(self, stage: str) -> None:
        if stage not in self.stages:
            raise ConfigError(f"{self.name}: unknown stage {stage!r} (stages: {', '.join(self.stages)})")
        for module in self.components().values():
            module.requires_grad_(False)
        for p in self._trained():
            p.requires_grad_(True)

    def fit(self, train, val, ctx) -> None:
        self.check_fit_data(train, val)
        mean, std = channel_statistics(train.eeg)  # the training split only
        self.encoder.standardize.set_statistics(mean.to(self.device), std.to(self.device))
        ctx.trainer(self).run_stage("train", self.config.steps, lambda: self._stage(train, val))

    def _stage(self, train, val) -> Stage:
        self.configure_stage("train")
        den = self.backbones.denoiser
        scheduler = den.new_scheduler("ddpm")
        eeg = torch.from_numpy(train.eeg).float()
        latents = stimulus_latents(train, den, self.device)
        n_train_t = scheduler.config.num_train_timesteps

        def step(model, batch):
            x, z0 = batch
            noise = torch.randn_like(z0)
            t = torch.randint(0, n_train_t, (len(z0),), device=z0.device)
            pred = model(scheduler.add_noise(z0, noise, t), t, x)
            return {"loss": nn.functional.mse_loss(pred, diffusion_target(scheduler, z0, noise, t, who=self.name))}

        return Stage(model=Conditioned(self.encoder, self.unet), step=step, data=(eeg, latents),
                     batch_size=self.config.batch_size, grad_clip=self.config.grad_clip,
                     optimizer=lambda params: torch.optim.AdamW(params, lr=self.config.lr,
                                                                weight_decay=self.config.weight_decay))

    @torch.no_grad()
    def generate(self, eeg: torch.Tensor, *, generators: Sequence[torch.Generator], n_samples: int,
                 num_inference_steps: int, subject: torch.Tensor | None = None) -> torch.Tensor:
        self.check_generate_args(eeg, generators, n_samples, num_inference_steps)
        self.encoder.eval()
        context = self.encoder(eeg.to(self.device, torch.float32))
        context = context.repeat_interleave(n_samples, dim=0)  # trial-major: generators[b * n_samples + i]
        images = self.backbones.denoiser.sample(
            context, generators, num_inference_steps=num_inference_steps,
            guidance_scale=self.config.guidance_scale, unet=self.unet, sampler=self.config.sampler)
        return images.reshape(len(eeg), n_samples, *images.shape[1:]).cpu()
