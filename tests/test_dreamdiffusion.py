"""Tests of the DreamDiffusion-style method plugin (``eegbench_methods.dreamdiffusion``) on tiny backbones."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from eegbench_methods.dreamdiffusion.method import DreamDiffusion, DreamDiffusionConfig
from eegbench_methods.dreamdiffusion.modeling import (
    ChannelMapper,
    ClipMapping,
    EEGMAEDecoder,
    EEGMAEEncoder,
    TimeConditioner,
    cosine_schedule,
    masked_patch_loss,
    random_masking,
    sincos_pos_embed_1d,
    transformer_block_parameters,
)

from eegbench._compat import ensure_torchvision
from eegbench.backbones import SmallProfile
from eegbench.backbones.tiny import TinyBackbones
from eegbench.data import DatasetInfo
from eegbench.datasets.synthetic import SyntheticEEG
from eegbench.errors import ConfigError, DataFormatError
from eegbench.method import RunContext, count_parameters

ensure_torchvision()

#: A tiny architecture for fast fits.
TINY = {"embed_dim": 16, "depth": 1, "num_heads": 2, "decoder_dim": 8, "decoder_depth": 1, "decoder_num_heads": 2,
            "mbm_batch_size": 8, "ldm_batch_size": 8, "log_every": 5, "mbm_eval_every": 10, "ldm_eval_every": 10,
            "mbm_warmup_steps": 2, "crop_views": 2}


# ----------------------------------------------------------------------------- fixtures
def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic EEG (32 trials, 4 × 64) split 24 / 8 into train / val."""
    root = tmp_path_factory.mktemp("dd-data")
    ds = SyntheticEEG(cache_dir=root, n_subjects=1, n_recordings=2, n_trials=16, n_chans=4, n_times=64,
                      image_size=16).load()
    ids = list(ds.trials["trial_id"])
    return ds, ds.subset(ids[:24]), ds.subset(ids[24:])


@pytest.fixture(scope="module")
def backbones(tmp_path_factory, data):
    """Tiny backbones with the denoiser pretrained on the training stimuli (6 context tokens)."""
    ds, train, _ = data
    bb = TinyBackbones(tmp_path_factory.mktemp("dd-cache"),
                       settings=SmallProfile(image_size=16, context_tokens=6, denoiser_steps=8,
                                             denoiser_batch_size=4, denoiser_lr=1e-3))
    ids = sorted(set(train.trials["image_id"]))
    labels = np.array([train.stimuli.labels[i] for i in ids])
    bb.prepare_denoiser(train.stimuli.load_many(ids, 16), labels, ds.info.class_names, dataset_key="synthetic-dd")
    return bb


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    _reset_accelerate()
    yield Accelerator(cpu=True)
    _reset_accelerate()


def make_method(data, backbones, seed=0, **overrides) -> DreamDiffusion:
    torch.manual_seed(seed)
    cfg = DreamDiffusionConfig(**{**TINY, **overrides})
    return DreamDiffusion(cfg, info=data[0].info, backbones=backbones, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def fitted(data, backbones, accelerator, tmp_path_factory):
    """A method fitted for 40 + 20 steps, with its run context."""
    _, train, val = data
    method = make_method(data, backbones, mbm_steps=40, ldm_steps=20, mbm_lr=3e-3, ldm_lr=1e-3)
    ctx = RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path_factory.mktemp("dd-run"), progress=False)
    method.fit(train, val, ctx)
    return method, ctx


def gens(n, offset=0):
    return [torch.Generator().manual_seed(offset + i) for i in range(n)]


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- modelling
def test_sincos_position_table():
    table = sincos_pos_embed_1d(8, 5, cls_token=True)
    assert table.shape == (6, 8)
    assert torch.equal(table[0], torch.zeros(8))  # the cls row
    assert torch.allclose(table[1], torch.tensor([0.0] * 4 + [1.0] * 4))  # position 0: sin 0, cos 0
    assert torch.allclose(table[1:, :4] ** 2 + table[1:, 4:] ** 2, torch.ones(5, 4), atol=1e-6)
    assert torch.allclose(table[3, 0], torch.tensor(math.sin(2.0)))
    with pytest.raises(ConfigError, match="even"):
        sincos_pos_embed_1d(7, 3)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.75])
def test_random_masking_keeps_the_right_tokens(ratio):
    x = torch.arange(2 * 20, dtype=torch.float32).reshape(2, 20, 1).expand(2, 20, 3).contiguous()
    kept, mask, ids_restore = random_masking(x, ratio, torch.Generator().manual_seed(0))
    n_keep = int(20 * (1 - ratio))
    assert kept.shape == (2, n_keep, 3)
    assert mask.shape == (2, 20) and torch.all(mask.sum(1) == 20 - n_keep)
    for b in range(2):
        visible = set(kept[b, :, 0].long().tolist())
        assert visible == set(x[b, mask[b] == 0, 0].long().tolist())  # mask 0 ⇔ kept
    # ids_restore undoes the shuffle: kept tokens + anything at the masked slots → original order
    shuffled = torch.cat([kept, torch.full((2, 20 - n_keep, 3), -1.0)], dim=1)
    restored = torch.gather(shuffled, 1, ids_restore[:, :, None].expand(-1, -1, 3))
    assert torch.equal(restored[mask == 0], x[mask == 0])
    assert torch.all(restored[mask == 1] == -1)
    # per-sample masks differ
    assert not torch.equal(mask[0], mask[1])


def test_masked_patch_loss_counts_only_masked_patches():
    target = torch.zeros(2, 4, 3)
    pred = torch.zeros(2, 4, 3)
    mask = torch.tensor([[1.0, 0, 0, 1], [0, 1, 0, 0]])
    pred[mask == 0] = 100.0  # errors on visible patches must not count
    assert float(masked_patch_loss(pred, target, mask)) == 0.0
    pred[0, 0] = torch.tensor([1.0, 2.0, 3.0])  # per-patch mean 14/3
    pred[1, 1] = 3.0  # per-patch mean 9
    assert math.isclose(float(masked_patch_loss(pred, target, mask)), (14 / 3 + 0 + 9) / 3, rel_tol=1e-6)
    assert float(masked_patch_loss(pred, target, torch.zeros(2, 4))) == 0.0


@pytest.mark.parametrize("n_chans,n_times,time_len", [(4, 64, 64), (4, 180, 180), (3, 50, 64), (128, 440, 512)])
def test_autoencoder_shapes_and_patch_layout(n_chans, n_times, time_len):
    enc = EEGMAEEncoder(n_chans, time_len, 4, 16, 1, 2)
    dec = EEGMAEDecoder(n_chans, 4, time_len // 4, 16, 8, 1, 2)
    eeg = torch.randn(2, n_chans, n_times) * 1e-5
    x = enc.preprocess(eeg)
    assert x.shape == (2, n_chans, time_len)
    patches = enc.patchify(x)
    assert patches.shape == (2, time_len // 4, 4 * n_chans)
    # patch l holds samples 4l..4l+3 of every channel, time-major
    assert torch.equal(patches[1, 2, :n_chans], x[1, :, 8])
    assert torch.equal(patches[1, 2, n_chans:2 * n_chans], x[1, :, 9])
    latent, _mask, ids_restore = enc.forward_masked(x, 0.5)
    assert latent.shape == (2, 1 + (time_len // 4) // 2, 16)
    assert dec(latent, ids_restore).shape == patches.shape
    assert enc(eeg).shape == (2, time_len // 4, 16)
    assert float(enc.pos_embed[0, 0].abs().sum()) == 0.0 and not enc.pos_embed.requires_grad
    with pytest.raises(DataFormatError, match="expected"):
        enc(torch.randn(2, n_chans + 1, n_times))


def test_preprocess_zscores_clamps_and_resamples_linearly():
    enc = EEGMAEEncoder(2, 8, 4, 8, 1, 2, clip=3.0)
    enc.set_normalization(torch.tensor([1e-5, -1e-5]), torch.tensor([2e-5, 1e-5]))
    ramp = torch.linspace(0, 1, 5)
    eeg = torch.stack([1e-5 + 2e-5 * ramp, -1e-5 + 1e-5 * 2 * ramp])[None]
    x = enc.preprocess(eeg)
    assert torch.allclose(x[0, 0], torch.linspace(0, 1, 8), atol=1e-5)  # linear ramp stays linear, ends kept
    assert torch.allclose(x[0, 1], torch.linspace(0, 2, 8), atol=1e-5)
    spike = torch.full((1, 2, 5), 1.0)
    assert float(enc.preprocess(spike).abs().max()) == 3.0


def test_upstream_module_sizes():
    """The heads at upstream sizes (research/methods.md §4.2)."""
    assert n_params(ChannelMapper(128, 77)) == 13_261
    assert n_params(ClipMapping(128, 1024, 768)) == 787_329
    assert n_params(TimeConditioner(77, 768, 1280)) == 987_323
    assert ChannelMapper(45, 16)(torch.randn(3, 45, 10)).shape == (3, 16, 10)
    assert TimeConditioner(16, 12, 20)(torch.randn(3, 16, 12)).shape == (3, 20)
    clip = ClipMapping(45, 10, 7)
    latent = torch.randn(3, 45, 10)
    with torch.no_grad():
        assert clip(latent).shape == (3, 7)
        assert float(clip.loss(latent, clip(latent))) == pytest.approx(0.0, abs=1e-6)
        assert float(clip.loss(latent, -clip(latent))) == pytest.approx(2.0, abs=1e-6)


def test_cosine_schedule():
    assert cosine_schedule(0, 100, 10, 1.0) == 0.0
    assert cosine_schedule(5, 100, 10, 1.0) == 0.5
    assert cosine_schedule(10, 100, 10, 1.0) == 1.0
    assert cosine_schedule(55, 100, 10, 1.0, 0.1) == pytest.approx(0.55)
    assert cosine_schedule(100, 100, 10, 1.0) == pytest.approx(0.0)


def test_transformer_block_parameters_skip_resnet_norm2(backbones):
    unet = backbones.denoiser.new_unet()
    picked = transformer_block_parameters(unet)
    assert picked and all(".attn2." in n or ".norm2." in n for n in picked)
    assert any(".norm2." in n for n in picked) and any(".attn2." in n for n in picked)
    resnet_norm2 = [n for n, _ in unet.named_parameters() if "resnets" in n and "norm2" in n]
    assert resnet_norm2 and not set(resnet_norm2) & set(picked)
    assert set(picked) == {n for n, _ in unet.named_parameters() if "attn2" in n or ("transformer_blocks" in n
                                                                                     and ".norm2." in n)}


# ----------------------------------------------------------------------------- method
def test_default_config_profiles_and_validation():
    small, paper = DreamDiffusion.default_config("small"), DreamDiffusion.default_config("paper")
    assert isinstance(small, DreamDiffusionConfig) and small.sampler == "plms" and small.guidance_scale == 1.0
    assert (paper.embed_dim, paper.depth, paper.num_heads, paper.mlp_ratio) == (1024, 24, 16, 1.0)
    assert (paper.decoder_dim, paper.decoder_depth, paper.mask_ratio, paper.time_len) == (512, 8, 0.1, 512)
    assert (paper.ldm_lr, paper.ldm_batch_size, paper.mbm_lr) == (5.3e-5, 25, 2.5e-4)
    with pytest.raises(ConfigError, match="profile"):
        DreamDiffusion.default_config("huge")
    for bad, match in [({"mask_ratio": 1.0}, "mask_ratio"), ({"mask_ratio": 0.0}, "mask_ratio"),
                       ({"embed_dim": 30, "num_heads": 4}, "embed_dim"), ({"time_len": 50}, "time_len"),
                       ({"sampler": "euler"}, "sampler"), ({"guidance_scale": 0.5}, "guidance_scale"),
                       ({"crop_prob": 1.5}, "crop_prob"), ({"ldm_lr": 0.0}, "ldm_lr"),
                       ({"depth": 0}, "depth"), ({"ldm_steps": -1}, "ldm_steps")]:
        with pytest.raises(ConfigError, match=match):
            DreamDiffusionConfig(**bad).validate()


def test_configure_stage_sets_exactly_the_trained_parameters(data, backbones):
    method = make_method(data, backbones)
    comps = method.components()
    assert set(comps) == {"mae_encoder", "mae_decoder", "channel_mapper", "dim_mapper", "clip_mapping",
                          "time_cond", "unet", "vae", "image_embedder"}

    def trainable():
        return {(c, n) for c, m in comps.items() for n, p in m.named_parameters() if p.requires_grad}

    def every(*names):
        return {(c, n) for c in names for n, _ in comps[c].named_parameters()}

    method.configure_stage("mbm")
    assert trainable() == every("mae_encoder", "mae_decoder") - {("mae_encoder", "pos_embed"),
                                                                 ("mae_decoder", "decoder_pos_embed")}
    method.configure_stage("ldm")
    expected = every("mae_encoder", "channel_mapper", "dim_mapper", "clip_mapping", "time_cond")
    expected -= {("mae_encoder", "cls_token")}
    expected |= {("unet", n) for n in transformer_block_parameters(comps["unet"])}
    assert trainable() == expected
    assert not any(c == "unet" and ("attn1" in n or "resnets" in n or "time_embedding" in n) for c, n in expected)
    method.configure_stage("inference")
    assert trainable() == set()
    with pytest.raises(ConfigError, match="unknown stage"):
        method.configure_stage("stage3")

    counts = count_parameters(method)
    picked = transformer_block_parameters(comps["unet"]).values()
    assert counts["per_stage"]["ldm"]["unet"] == sum(p.numel() for p in picked)
    assert counts["inference_total"] == sum(n_params(comps[c]) for c in DreamDiffusion.inference_components)


def test_time_conditioning_is_added_to_the_timestep_embedding(data, backbones):
    """The UNet copy with the identity class embedding equals the shared UNet whose timestep
    embedding gets the time conditioning added (upstream's ``emb = emb + time_embed_condtion(c)``)."""
    method = make_method(data, backbones)
    den = backbones.denoiser
    shared = den.unet
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, den.latent_channels, den.latent_size, den.latent_size, generator=g)
    ctx = torch.randn(3, den.context_tokens, den.cross_attention_dim, generator=g)
    t = torch.tensor([10, 500, 900])
    tdim = method.time_cond[-1].out_features
    add = torch.randn(3, tdim, generator=g)
    handle = shared.time_embedding.register_forward_hook(lambda m, i, out: out + add)
    try:
        with torch.no_grad():
            expected = shared(x, t, encoder_hidden_states=ctx).sample
    finally:
        handle.remove()
    with torch.no_grad():
        got = method.unet(x, t, encoder_hidden_states=ctx, class_labels=add).sample
        plain = method.unet(x, t, encoder_hidden_states=ctx, class_labels=torch.zeros_like(add)).sample
        base = shared(x, t, encoder_hidden_states=ctx).sample
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(plain, base, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-3)
    assert shared.class_embedding is None and shared.config.class_embed_type is None  # shared UNet untouched
    assert method.unet.config.class_embed_type == "identity"


def test_fit_losses_finite_and_mbm_decreasing(fitted, data):
    method, ctx = fitted
    mbm = [r for r in ctx.history if r["stage"] == "mbm" and "loss" in r]
    ldm = [r for r in ctx.history if r["stage"] == "ldm" and "loss" in r]
    assert len(mbm) == 8 and len(ldm) == 4
    assert all(math.isfinite(r[k]) for r in ldm for k in ("loss", "diffusion", "clip"))
    assert all(math.isfinite(r["loss"]) for r in mbm)
    assert mbm[-1]["loss"] < mbm[0]["loss"]
    for r in ldm:
        assert r["loss"] == pytest.approx(r["diffusion"] + r["clip"], rel=1e-5)
    assert [r["step"] for r in ctx.history if "val_loss" in r] == [10, 20, 30, 40]
    assert [r["step"] for r in ctx.history if "val_diffusion" in r] == [10, 20]
    # normalisation from the training split only
    mean = torch.from_numpy(data[1].eeg.astype(np.float64).mean(axis=(0, 2))).float()
    assert torch.allclose(method.mae_encoder.standardize.mean, mean, rtol=1e-4, atol=1e-12)


def test_ldm_loss_decreases_on_a_tiny_problem(data, backbones, accelerator, tmp_path):
    """Stage B alone (no MBM) on 24 trials: the training loss goes down."""
    _, train, val = data
    method = make_method(data, backbones, mbm_steps=0, ldm_steps=60, ldm_lr=3e-3, log_every=20, ldm_eval_every=60,
                         crop_prob=0.0)
    ctx = RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False)
    method.fit(train, val, ctx)
    rows = [r for r in ctx.history if r["stage"] == "ldm" and "loss" in r]
    assert rows[-1]["clip"] < rows[0]["clip"]
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_ldm_keeps_the_best_validation_checkpoint(data, backbones, accelerator, tmp_path, monkeypatch):
    _, train, val = data
    method = make_method(data, backbones, mbm_steps=0, ldm_steps=30, ldm_lr=1e-2, ldm_eval_every=10)
    scores = iter([0.9, 0.3, 0.8])
    snapshots = []

    def fake_validation(self, model, scheduler, batch, device):
        snapshots.append(method.dim_mapper.weight.detach().clone())
        return next(scores), 0.0

    monkeypatch.setattr(DreamDiffusion, "_ldm_validation", fake_validation)
    method.fit(train, val, RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False))
    assert len(snapshots) == 3
    assert not torch.equal(snapshots[1], snapshots[2])
    assert torch.equal(method.dim_mapper.weight, snapshots[1])


def test_generate_shape_dtype_and_seeding(fitted, data):
    method, _ = fitted
    eeg = torch.from_numpy(data[2].eeg[:3])
    out = method.generate(eeg, generators=gens(6), n_samples=2, num_inference_steps=3)
    size = method.backbones.denoiser.image_size
    assert out.shape == (3, 2, 3, size, size) and out.dtype == torch.uint8
    again = method.generate(eeg, generators=gens(6), n_samples=2, num_inference_steps=3)
    assert torch.equal(out, again)
    alone = method.generate(eeg[1:2], generators=gens(2, offset=2), n_samples=2, num_inference_steps=3)
    assert torch.equal(out[1], alone[0])  # independent of the batch it is generated in
    assert not torch.equal(out[0, 0], out[0, 1])


def test_generate_uses_the_eeg_and_the_time_conditioning(fitted, data, monkeypatch):
    method, _ = fitted
    den = method.backbones.denoiser
    seen = {}
    original = type(den).sample

    def spy(self, context, generators, **kwargs):
        seen.update(kwargs, context=context)
        return original(self, context, generators, **kwargs)

    monkeypatch.setattr(type(den), "sample", spy)
    eeg = torch.from_numpy(data[2].eeg[:2])
    method.generate(eeg, generators=gens(2), n_samples=1, num_inference_steps=2)
    context, tcond = method.encode_eeg(eeg)
    assert seen["sampler"] == "plms" and seen["guidance_scale"] == 1.0 and seen["unet"] is method.unet
    assert torch.allclose(seen["context"], context)
    assert torch.allclose(seen["extra_context"]["class_labels"], tcond)


def test_generate_rejects_bad_input(fitted):
    method, _ = fitted
    with pytest.raises(DataFormatError, match="expected"):
        method.generate(torch.zeros(1, 5, 64), generators=gens(1), n_samples=1, num_inference_steps=2)
    with pytest.raises(ValueError, match="generators"):
        method.generate(torch.zeros(2, 4, 64), generators=gens(3), n_samples=2, num_inference_steps=2)
    with pytest.raises(DataFormatError, match="empty"):
        method.fit(_EmptyDataset(), _EmptyDataset(), None)


class _EmptyDataset:
    """Stands in for an EEGDataset without trials."""

    eeg = np.zeros((0, 4, 64), np.float32)

    def __len__(self):
        return 0


def test_save_load_round_trip(fitted, data, backbones, tmp_path):
    method, _ = fitted
    method.save(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {
        *(f"{c}.safetensors" for c in method.state_components()), "config.json"}
    assert "vae" not in method.state_components() and "image_embedder" not in method.state_components()
    fresh = make_method(data, backbones, seed=123, mbm_steps=40, ldm_steps=20, mbm_lr=3e-3, ldm_lr=1e-3)
    fresh.load(tmp_path / "ckpt")
    eeg = torch.from_numpy(data[2].eeg[:2])
    a = method.generate(eeg, generators=gens(2), n_samples=1, num_inference_steps=2)
    b = fresh.generate(eeg, generators=gens(2), n_samples=1, num_inference_steps=2)
    assert torch.equal(a, b)
    assert torch.equal(fresh.mae_encoder.standardize.std, method.mae_encoder.standardize.std)


# ----------------------------------------------------------------------------- paper profile
CVPR40 = DatasetInfo(name="cvpr40", version="test", n_chans=128, n_times=440, sfreq=1000.0,
                     ch_names=tuple(f"ch{i}" for i in range(128)), unit="a.u.",
                     class_names=tuple(f"class{i}" for i in range(40)), subjects=(1, 2, 3, 4, 5, 6))


def test_paper_profile_parameter_counts_on_meta():
    """SD-1.5 backbones on the meta device reproduce the derived counts of research/methods.md §4.2/§7."""
    from eegbench.backbones.paper import PaperBackbones

    bb = PaperBackbones("sd15", device="meta")
    method = DreamDiffusion(DreamDiffusion.default_config("paper"), info=CVPR40, backbones=bb,
                            device=torch.device("meta"))
    assert method.paper_backbone == "sd15"
    counts = count_parameters(method)
    comp = {k: v["total"] for k, v in counts["per_component"].items()}
    unet = method.unet
    attn2 = sum(p.numel() for n, p in transformer_block_parameters(unet).items() if ".attn2." in n)
    norm2 = sum(p.numel() for n, p in transformer_block_parameters(unet).items() if ".norm2." in n)
    assert comp["unet"] == 859_520_964
    assert (attn2, norm2) == (43_962_560, 24_960)
    assert comp["mae_encoder"] + comp["mae_decoder"] == 165_380_096
    assert comp["mae_encoder"] == 151_902_208 - 1_024  # upstream's eeg_encoder also holds an unused mask_token
    assert (comp["channel_mapper"], comp["dim_mapper"], comp["clip_mapping"]) == (13_261, 787_200, 787_329)
    assert comp["time_cond"] == 987_323
    cond_model = comp["mae_encoder"] + comp["channel_mapper"] + comp["dim_mapper"] + comp["clip_mapping"]
    assert cond_model == 153_489_998 - 1_024
    # Stage B: upstream 198,464,841 minus its never-used cls and mask tokens (2 × 1,024)
    assert counts["per_stage"]["ldm"]["total"] == 198_464_841 - 2_048
    assert counts["per_stage"]["ldm"]["unet"] == 43_962_560 + 24_960
    # Stage A trains the MAE without its fixed sin-cos tables (129 × 1024 + 129 × 512)
    assert counts["per_stage"]["mbm"]["total"] == 165_380_096 - 129 * 1536
    # the SYNAPSE-README convention behind "210 M": MAE enc+dec + attn2 + norm2 + time conditioning
    assert comp["mae_encoder"] + comp["mae_decoder"] + attn2 + norm2 + comp["time_cond"] == 210_354_939
    x = method.mae_encoder.num_patches
    assert x == 128 and method.context_tokens == 77 and method.context_dim == 768
