"""Paper-scale backbones on the meta device, SYNAPSE's published parameter counts and ``eegbench params``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from eegbench_methods.synapse.method import Synapse, SynapseConfig

from eegbench._compat import ensure_torchvision
from eegbench.backbones.paper import PaperBackbones, paper_scheduler_config
from eegbench.cli import main
from eegbench.errors import ConfigError
from eegbench.method import count_parameters
from eegbench.params import (
    QUOTED,
    SmallMetaBackbones,
    build_on_meta,
    dataset_facts,
    format_reports,
    parameter_report,
)

ensure_torchvision()

DOCS = Path(__file__).resolve().parents[1] / "docs" / "parameters.md"


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- paper backbones
@pytest.fixture(scope="module")
def sd21():
    return PaperBackbones("sd21")


#: (base, UNet, text encoder, image tower, image-embedding dim, cross-attention dim, latent size, prediction type)
PUBLISHED = [
    ("sd15", 859_520_964, 123_060_480, 303_966_208, 768, 768, 64, "epsilon"),
    ("sd21", 865_910_724, 340_387_840, 632_076_800, 1024, 1024, 96, "v_prediction"),
    ("sd21-base", 865_910_724, 340_387_840, 632_076_800, 1024, 1024, 64, "epsilon"),
]


@pytest.mark.parametrize("base, unet, text, image, img_dim, ctx_dim, latent, ptype", PUBLISHED)
def test_paper_backbones_have_published_sizes(base, unet, text, image, img_dim, ctx_dim, latent, ptype):
    bb = PaperBackbones(base)
    den = bb.denoiser
    assert bb.profile == "paper" and bb.device.type == "meta" and bb.image_size == 512
    assert n_params(bb.vae) == 83_653_863
    assert n_params(den.unet) == unet
    assert n_params(bb.text_embedder) == text
    assert bb.text_embedder.dim == ctx_dim and bb.text_embedder.max_length == 77
    assert bb.image_embedder.dim == img_dim and n_params(bb.image_embedder) == image
    assert (den.cross_attention_dim, den.context_tokens, den.latent_channels, den.latent_size) == (ctx_dim, 77, 4,
                                                                                                   latent)
    assert den.prediction_type == ptype == den.scheduler_config["prediction_type"]
    cfg = den.scheduler_config
    assert (cfg["beta_schedule"], cfg["beta_start"], cfg["beta_end"], cfg["num_train_timesteps"]) == (
        "scaled_linear", 0.00085, 0.012, 1000)
    for module in (bb.vae, den.unet, bb.text_embedder, bb.image_embedder):
        params = list(module.parameters())
        assert all(p.device.type == "meta" for p in params)
        assert not any(p.requires_grad for p in params)


def test_paper_unet_architecture_facts(sd21):
    unet = sd21.denoiser.unet
    assert tuple(unet.config.block_out_channels) == (320, 640, 1280, 1280)
    assert tuple(unet.config.attention_head_dim) == (5, 10, 20, 20)
    assert unet.config.use_linear_projection and unet.config.cross_attention_dim == 1024
    attn2 = sum(p.numel() for k, p in unet.named_parameters() if "attn2" in k)
    assert attn2 == 50_352_320
    sd15 = PaperBackbones("sd15").denoiser.unet
    assert sd15.config.attention_head_dim == 8 and not sd15.config.use_linear_projection
    assert sum(p.numel() for k, p in sd15.named_parameters() if "attn2" in k) == 43_962_560


def test_new_unet_is_a_separate_frozen_copy(sd21):
    den = sd21.denoiser
    copy = den.new_unet()
    assert copy is not den.unet
    assert not set(map(id, copy.parameters())) & set(map(id, den.unet.parameters()))
    assert n_params(copy) == n_params(den.unet)
    assert not any(p.requires_grad for p in copy.parameters())


def test_paper_backbones_refuse_what_needs_weights(sd21):
    with pytest.raises(ConfigError, match="architecture-only"):
        sd21.prepare_denoiser(None, None, None, dataset_key="x")
    with pytest.raises(ConfigError, match="architecture-only"):
        sd21.denoiser.sample(torch.zeros(1, 77, 1024), [torch.Generator()])
    with pytest.raises(ConfigError, match="architecture-only"):
        sd21.text_embedder.encode(["a photo of a dog"])
    with pytest.raises(ConfigError, match="architecture-only"):
        sd21.image_embedder(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    assert sd21.denoiser.null_context(2).shape == (2, 77, 1024)
    with pytest.raises(ConfigError, match="sd3"):
        PaperBackbones("sd3")
    with pytest.raises(ConfigError, match="meta"):
        PaperBackbones("sd15", device="cpu")


def test_paper_scheduler_builds_samplers():
    sched = PaperBackbones("sd21-base").denoiser.new_scheduler("ddim")
    assert type(sched).__name__ == "DDIMScheduler"
    assert sched.config.prediction_type == "epsilon"
    assert paper_scheduler_config("sd21")["prediction_type"] == "v_prediction"


# ----------------------------------------------------------------------------- SYNAPSE at paper size
@pytest.fixture(scope="module")
def synapse_counts(sd21):
    info = dataset_facts("paper")
    released = build_on_meta(Synapse, "paper", backbones=sd21, info=info)
    readme = build_on_meta(Synapse, "paper", {"global_attn": "false"}, backbones=sd21, info=info)
    return released, count_parameters(released), count_parameters(readme)


def test_synapse_paper_config_is_the_published_recipe():
    cfg = Synapse.default_config("paper")
    assert cfg.dims == (64, 128, 256, 512, 1024) and cfg.down_strides == (2, 4, 4, 4)
    assert (cfg.n_layer, cfg.n_head, cfg.dropout, cfg.agg_hidden, cfg.global_attn) == (2, 64, 0.5, 1024, True)
    assert (cfg.stage1_lr, cfg.stage1_batch_size, cfg.stage2_lr, cfg.stage2_batch_size) == (1e-4, 32, 2e-5, 32)
    assert (cfg.guidance_scale, cfg.sampler, cfg.learn_logit_scale) == (7.5, "ddim", False)
    assert Synapse.paper_backbone == "sd21"
    assert Synapse.default_config("small") == SynapseConfig()
    with pytest.raises(ConfigError, match="huge"):
        Synapse.default_config("huge")


def test_synapse_sampler_is_validated():
    with pytest.raises(ConfigError, match="sampler='euler'"):
        SynapseConfig(sampler="euler").validate()
    SynapseConfig(sampler="plms").validate()


def test_synapse_paper_stage_counts(synapse_counts):
    method, released, _ = synapse_counts
    assert released["per_stage"]["stage1"]["total"] == 49_459_914
    assert released["per_stage"]["stage1"]["eeg_encoder"] == 27_590_878
    assert released["per_stage"]["stage1"]["eeg_decoder"] == 21_869_036
    assert "align_heads" not in released["per_stage"]["stage1"]  # no projection, constant logit scale
    assert released["per_stage"]["stage2"]["total"] == 108_052_608
    unet = dict(method.unet.named_parameters())
    groups = {key: sum(p.numel() for k, p in unet.items() if key in k) for key in ("attn2", "time", "norm2")}
    assert groups == {"attn2": 50_352_320, "time": 27_875_520, "norm2": 65_280}
    head = n_params(method.ip_adapter.head)
    assert head == 4_200_448
    assert n_params(method.ip_adapter) - head == 25_559_040
    assert released["per_component"]["unet"]["total"] == 865_910_724
    assert released["per_component"]["vae"]["total"] == 83_653_863


def test_synapse_paper_totals(synapse_counts):
    _, released, readme = synapse_counts
    assert released["trainable_total"] == 157_512_522
    assert readme["per_stage"]["stage1"]["total"] == 44_633_648
    assert readme["trainable_total"] == 152_686_256


def test_synapse_generate_passes_the_sampler(tmp_path):
    from eegbench.backbones import SmallProfile
    from eegbench.backbones.tiny import TinyBackbones
    from eegbench.datasets.synthetic import SyntheticEEG

    ds = SyntheticEEG(cache_dir=tmp_path, n_subjects=1, n_recordings=1, n_trials=8, n_chans=4, n_times=32,
                      image_size=16).load()
    bb = TinyBackbones(tmp_path / "cache", settings=SmallProfile(image_size=16, context_tokens=6, denoiser_steps=2,
                                                                 denoiser_batch_size=4, denoiser_lr=1e-3))
    ids = sorted(set(ds.trials["image_id"]))
    bb.prepare_denoiser(ds.stimuli.load_many(ids, 16), np.array([ds.stimuli.labels[i] for i in ids]),
                        ds.info.class_names, dataset_key="params-test")
    cfg = SynapseConfig(dims=(8, 16), down_strides=(2,), n_head=2, agg_hidden=16, sampler="plms")
    method = Synapse(cfg, info=ds.info, backbones=bb, device=torch.device("cpu"))
    seen = {}
    real_sample = bb.denoiser.sample

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_sample(*args, **kwargs)

    bb.denoiser.sample = spy
    out = method.generate(torch.from_numpy(ds.eeg[:1]), generators=[torch.Generator().manual_seed(0)],
                          n_samples=1, num_inference_steps=2)
    assert seen["sampler"] == "plms"
    assert out.shape == (1, 1, 3, 16, 16) and out.dtype == torch.uint8


# ----------------------------------------------------------------------------- reports
def test_parameter_report_synapse_paper():
    report = parameter_report("synapse", profile="paper")
    assert report["backbone"] == "sd21"
    assert report["trainable_total"] == 157_512_522
    assert report["quoted_convention"]["trainable_total"] == 152_686_256
    assert report["quoted_convention"]["per_stage"] == {"stage1": 44_633_648, "stage2": 108_052_608}
    assert report["quoted"]["text"] == "152.69M"
    assert abs(report["quoted_convention"]["trainable_total"] - report["quoted"]["value"]) < 5_000
    assert report["inference_total"] == 27_590_878 + 865_910_724 + 29_759_488 + 83_653_863
    assert set(QUOTED) == {"synapse", "dreamdiffusion", "brainvis", "gwit"}


def test_small_meta_backbones_have_small_profile_sizes():
    bb = SmallMetaBackbones()
    assert n_params(bb.vae) == 2_677_027
    assert n_params(bb.denoiser.unet) == 1_730_464
    assert n_params(bb.text_embedder) == 22_713_216
    assert n_params(bb.image_embedder) == 4_652_008
    assert (bb.denoiser.cross_attention_dim, bb.denoiser.context_tokens, bb.denoiser.latent_size) == (384, 16, 8)
    assert bb.image_embedder.dim == 1280
    info = dataset_facts("small")
    assert (info.n_chans, info.n_times, info.sfreq, len(info.class_names), info.subjects) == (
        4, 180, 256.0, 2, (1, 2, 3, 10, 11))
    paper = dataset_facts("paper")
    assert (paper.n_chans, paper.n_times, paper.sfreq, len(paper.class_names), paper.subjects) == (
        128, 440, 1000.0, 40, (1, 2, 3, 4, 5, 6))


def test_small_report_counts_the_small_architecture():
    report = parameter_report("synapse", profile="small")
    assert report["backbone"] == "small" and report["quoted"] is None
    assert report["per_component"]["unet"]["total"] == 1_730_464
    assert report["per_component"]["vae"]["total"] == 2_677_027
    assert report["trainable_total"] == sum(row["total"] for row in report["per_stage"].values())


def test_overrides_change_the_build():
    report = parameter_report("synapse", profile="paper", overrides={"global_attn": "false"})
    assert report["trainable_total"] == 152_686_256
    with pytest.raises(ConfigError, match="nope"):
        parameter_report("synapse", profile="paper", overrides={"nope": "1"})


def test_format_rejects_unknown_format():
    with pytest.raises(ConfigError, match="yaml"):
        format_reports([], "yaml")


# ----------------------------------------------------------------------------- CLI
def test_cli_params_text(capsys):
    assert main(["params", "--method", "synapse", "--profile", "paper"]) == 0
    out = capsys.readouterr().out
    assert "157,512,522" in out and "152,686,256" in out and "152.69M" in out
    assert re.search(r"stage1\s+eeg_encoder\s+27,590,878", out)


def test_cli_params_json(capsys):
    assert main(["params", "--method", "synapse", "--format", "json", "--set", "global_attn=false"]) == 0
    data = json.loads(capsys.readouterr().out)
    (report,) = data["reports"]
    assert report["trainable_total"] == 152_686_256
    assert report["per_stage"]["stage2"]["total"] == 108_052_608
    assert "requires_grad" in data["convention"]


def test_cli_params_errors_exit_2(capsys):
    assert main(["params", "--method", "synapsee"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "synapsee" in err and "Did you mean: synapse" in err
    assert main(["params", "--method", "synapse", "--set", "n_head=-1"]) == 2
    assert "n_head=-1" in capsys.readouterr().err
    assert main(["params", "--method", "synapse", "--profile", "huge"]) == 2  # profiles come from the registry
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "huge" in err and "paper" in err and "small" in err


# ----------------------------------------------------------------------------- docs never drift
def test_docs_table_is_the_commands_output(capsys):
    text = DOCS.read_text(encoding="utf-8")
    match = re.search(r"<!-- BEGIN GENERATED by `(eegbench [^`]+)` -->\n(.*?)\n<!-- END GENERATED -->", text, re.DOTALL)
    assert match, f"{DOCS}: generated block markers not found"
    command, committed = match[1], match[2]
    assert main(command.split()[1:]) == 0
    assert committed.strip() == capsys.readouterr().out.strip(), (
        f"{DOCS} is stale: regenerate the block with `{command}`")


def test_inference_counts_the_text_encoder_generation_uses():
    gwit = parameter_report("gwit", profile="paper")
    assert gwit["per_component"]["text_embedder"]["total"] == 340_387_840  # OpenCLIP ViT-H/14 text tower
    assert gwit["inference_total"] == 1_332_849_451 + 340_387_840
    synapse = parameter_report("synapse", profile="paper")  # its text encoder only makes training targets
    assert "text_embedder" not in synapse["per_component"]
