"""Tests of the BrainVis-style method plugin (``eegbench_methods.brainvis``) on tiny backbones and synthetic EEG."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from eegbench_methods.brainvis.method import BrainVis, BrainVisConfig, _PretrainModel
from eegbench_methods.brainvis.modeling import (
    AlignNet,
    EEGStandardizer,
    FreqEncoder,
    ScaledResidual,
    TimeEncoder,
    Tokenizer,
    TransformerBlock,
    alignment_losses,
    amplitude_spectrum,
)

from eegbench._compat import ensure_torchvision
from eegbench.backbones import SmallProfile
from eegbench.backbones.tiny import TinyBackbones
from eegbench.data import DatasetInfo
from eegbench.datasets.synthetic import SyntheticEEG
from eegbench.errors import ConfigError, DataFormatError
from eegbench.method import RunContext, count_parameters

ensure_torchvision()

#: A tiny architecture for fast fits (the tiny backbones have an 8-d context of 6 tokens here).
TINY = {"d_model": 16, "n_layers": 1, "n_heads": 2, "reg_layers": 1, "vocab_size": 8, "freq_hidden": 8,
        "align_hidden": 32, "align_bottleneck": 16, "dropout": 0.0, "log_every": 5, "eval_every": 10,
        "freq_batch_size": 8, "pretrain_batch_size": 8, "finetune_batch_size": 8, "fusion_batch_size": 8,
        "align_batch_size": 8}
STEPS = {"freq_steps": 20, "pretrain_steps": 20, "finetune_steps": 20, "fusion_steps": 20, "align_steps": 20,
         "freq_lr": 3e-3, "pretrain_lr": 3e-3, "finetune_lr": 3e-3, "fusion_lr": 3e-3, "align_lr": 3e-3}


def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the LSTM and the small transformers are latency-bound, and on a shared
    2-core machine two spinning threads made an LSTM step ~50x slower (measured 4.1 s vs 0.08 s)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic EEG (32 trials, 4 × 64) split 24 / 8 into train / val."""
    root = tmp_path_factory.mktemp("brainvis-data")
    ds = SyntheticEEG(cache_dir=root, n_subjects=1, n_recordings=2, n_trials=16, n_chans=4, n_times=64,
                      image_size=16).load()
    ids = list(ds.trials["trial_id"])
    return ds, ds.subset(ids[:24]), ds.subset(ids[24:])


@pytest.fixture(scope="module")
def backbones(tmp_path_factory, data):
    """Tiny backbones with the denoiser pretrained on the training stimuli (6-token context)."""
    ds, train, _ = data
    bb = TinyBackbones(tmp_path_factory.mktemp("brainvis-cache"),
                       settings=SmallProfile(image_size=16, context_tokens=6, denoiser_steps=8,
                                             denoiser_batch_size=4, denoiser_lr=1e-3))
    ids = sorted(set(train.trials["image_id"]))
    labels = np.array([train.stimuli.labels[i] for i in ids])
    bb.prepare_denoiser(train.stimuli.load_many(ids, 16), labels, ds.info.class_names, dataset_key="synthetic-test")
    return bb


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    _reset_accelerate()
    acc = Accelerator(cpu=True)
    yield acc
    _reset_accelerate()


def make_method(data, backbones, seed=0, **overrides) -> BrainVis:
    torch.manual_seed(seed)
    cfg = BrainVisConfig(**{**TINY, **overrides})
    return BrainVis(cfg, info=data[0].info, backbones=backbones, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def fitted(data, backbones, accelerator, tmp_path_factory):
    """A method fitted for 20 steps per stage, with its run context."""
    _, train, val = data
    method = make_method(data, backbones, **STEPS)
    ctx = RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path_factory.mktemp("brainvis-run"), progress=False)
    method.fit(train, val, ctx)
    return method, ctx


def gens(n, offset=0):
    return [torch.Generator().manual_seed(offset + i) for i in range(n)]


def n_params(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


# ----------------------------------------------------------------------------- modules
@pytest.mark.parametrize("n_chans,n_times,patch,tokens", [(4, 180, 4, 45), (128, 440, 4, 110), (3, 33, 4, 8),
                                                           (1, 10, 5, 2)])
def test_time_encoder_shapes(n_chans, n_times, patch, tokens):
    enc = TimeEncoder(n_chans, n_times, d_model=8, n_heads=2, n_layers=2, patch_size=patch)
    z = torch.randn(3, n_chans, n_times)
    assert enc.n_tokens == tokens
    assert enc.project(z).shape == (3, tokens, 8)
    assert enc(z).shape == (3, tokens, 8) and enc.pooled(z).shape == (3, 8)


def test_time_encoder_rejects_epochs_shorter_than_a_patch():
    with pytest.raises(ConfigError, match="patch_size"):
        TimeEncoder(4, 3, d_model=8, n_heads=2, n_layers=1, patch_size=4)
    with pytest.raises(ConfigError, match="n_heads"):
        TransformerBlock(10, 4, 40, 0.0)


def test_scaled_residual_starts_as_layernorm_of_the_input():
    res = ScaledResidual(6, dropout=0.0)
    assert res.a.item() == pytest.approx(1e-8)
    x, y = torch.randn(2, 3, 6), 100 * torch.randn(2, 3, 6)
    assert torch.allclose(res(x, y), torch.nn.functional.layer_norm(x, (6,)), atol=1e-4)
    with torch.no_grad():
        res.a.fill_(1.0)
    assert torch.allclose(res(x, y), torch.nn.functional.layer_norm(x + y, (6,)), atol=1e-5)
    # at initialisation a whole block is (almost) the identity up to the two LayerNorms
    block = TransformerBlock(6, 2, 24, 0.0).eval()
    ln = torch.nn.functional.layer_norm
    assert torch.allclose(block(x), ln(ln(x, (6,)), (6,)), atol=1e-4)


def test_amplitude_spectrum_bins():
    n_times, sfreq = 64, 128.0
    t = torch.arange(n_times) / sfreq
    x = torch.stack([torch.sin(2 * math.pi * 10 * t), torch.cos(2 * math.pi * 30 * t)])[None]  # 10 Hz, 30 Hz
    spec = amplitude_spectrum(x)
    assert spec.shape == (1, 2, n_times // 2)
    # bin k (index k - 1) is k · sfreq / n_times = 2k Hz
    assert spec[0, 0].argmax().item() + 1 == 5 and spec[0, 1].argmax().item() + 1 == 15
    # orthonormal: a unit sinusoid has amplitude sqrt(n_times) / 2 in its bin
    assert spec[0, 0, 4].item() == pytest.approx(math.sqrt(n_times) / 2, rel=1e-4)
    # no DC bin: a constant offset does not change the spectrum
    assert torch.allclose(amplitude_spectrum(x + 3.0), spec, atol=1e-4)


def test_freq_encoder_shapes_and_feature_is_nonnegative():
    enc = FreqEncoder(n_chans=5, hidden=7, n_classes=3)
    logits, feats = enc(torch.randn(4, 5, 50))
    assert logits.shape == (4, 3) and feats.shape == (4, 7) and (feats >= 0).all()
    assert n_params(enc) == 4 * 7 * (5 + 7) + 8 * 7 + 7 * 7 + 7 + 7 * 3 + 3


def test_alignnet_shapes_and_residual_path():
    net = AlignNet(in_dim=10, hidden=12, bottleneck=6, context_tokens=3, context_dim=5)
    x = torch.randn(2, 10)
    assert net(x).shape == (2, 3, 5)
    # the output depends on fc1's activations through the skip connections even if fc2..fc5 are zero
    with torch.no_grad():
        for fc in (net.fc2, net.fc3, net.fc4, net.fc5):
            fc.weight.zero_()
            fc.bias.zero_()
    h1 = torch.tanh(net.fc1(x))
    expected = net.out(torch.tanh(torch.tanh(h1))).reshape(2, 3, 5)
    assert torch.allclose(net(x), expected, atol=1e-6)


def test_alignment_losses():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(3, 4, 5, generator=g)
    mse, cos = alignment_losses(t, t)
    assert mse.item() == pytest.approx(0.0, abs=1e-7) and cos.item() == pytest.approx(0.0, abs=1e-6)
    mse, cos = alignment_losses(-t, t)
    assert cos.item() == pytest.approx(2.0, abs=1e-6) and mse.item() == pytest.approx((4 * t ** 2).mean().item())
    _, cos = alignment_losses(2.5 * t, t)  # cosine is scale-free
    assert cos.item() == pytest.approx(0.0, abs=1e-6)


def test_tokenizer_codes():
    tok = Tokenizer(4, 6)
    x = torch.randn(2, 5, 4)
    assert torch.equal(tok.codes(x, gumbel=False), tok(x).argmax(-1))
    a = tok.codes(x, torch.Generator().manual_seed(1))
    b = tok.codes(x, torch.Generator().manual_seed(1))
    assert a.shape == (2, 5) and a.dtype == torch.int64 and torch.equal(a, b)
    # Gumbel-max samples softmax(logits): the empirical code frequencies follow it
    with torch.no_grad():
        tok.center.weight.zero_()
        tok.center.bias.copy_(torch.log(torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.03125, 0.03125])))
    codes = tok.codes(torch.zeros(20000, 4), torch.Generator().manual_seed(0))
    freq = torch.bincount(codes, minlength=6).float() / 20000
    assert torch.allclose(freq, torch.softmax(tok.center.bias, 0), atol=0.015)


def test_standardizer():
    norm = EEGStandardizer(2, clip=3.0)
    norm.set_statistics(torch.tensor([1e-5, -1e-5]), torch.tensor([2e-5, 1e-5]))
    x = torch.tensor([[[1e-5, 3e-5], [-1e-5, 1.0]]])
    z = norm(x)
    assert torch.allclose(z[0, 0], torch.tensor([0.0, 1.0]), atol=1e-5) and z[0, 1, 1].item() == 3.0


# ----------------------------------------------------------------------------- stages
def test_pretrain_masks_75_percent_and_predicts_only_masked_tokens(data, backbones):
    method = make_method(data, backbones)
    c = method.config
    gen = torch.Generator().manual_seed(0)
    model = _PretrainModel(method.eeg_norm, method.time_encoder, method.momentum_encoder, method.mask_regressor,
                           method.tokenizer, c, gen).eval()
    seen = {}
    hooks = [method.time_encoder.encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("visible", i[0])),
             method.momentum_encoder.register_forward_hook(lambda m, i, o: seen.__setitem__("masked", i[0])),
             method.mask_regressor.register_forward_hook(lambda m, i, o: seen.__setitem__("pred", o))]
    eeg = torch.from_numpy(data[1].eeg[:5])
    out = model(eeg)
    for h in hooks:
        h.remove()
    n_tokens = method.time_encoder.n_tokens  # 64 / 4 = 16
    n_masked = int(0.75 * n_tokens)
    assert seen["visible"].shape == (5, n_tokens - n_masked, c.d_model)
    assert seen["masked"].shape == (5, n_masked, c.d_model) and seen["pred"].shape == (5, n_masked, c.d_model)
    # visible and masked tokens partition the positioned tokens
    with torch.no_grad():
        full = method.time_encoder.project(method.eeg_norm(eeg)) + method.time_encoder.positions()

    def positions_of(rows):
        return [int((full[0] - r).abs().sum(-1).argmin()) for r in rows[0]]

    vis, msk = positions_of(seen["visible"]), positions_of(seen["masked"])
    assert sorted(vis + msk) == list(range(n_tokens))
    # loss = alpha · MSE(prediction, momentum targets of the masked tokens) + beta · CE
    target = method.momentum_encoder(seen["masked"])
    assert out["mse"].item() == pytest.approx(torch.nn.functional.mse_loss(seen["pred"], target).item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(c.alpha * out["mse"].item() + c.beta * out["ce"].item(), rel=1e-5)


def test_momentum_update_is_an_ema(data, backbones):
    method = make_method(data, backbones, momentum=0.9)
    with torch.no_grad():
        for p in method.time_encoder.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in method.momentum_encoder.parameters()]
    online = [p.clone() for p in method.time_encoder.encoder.parameters()]
    method._momentum_update()
    for b, o, m in zip(before, online, method.momentum_encoder.parameters()):
        assert torch.allclose(m, 0.9 * b + 0.1 * o, atol=1e-6)


def test_configure_stage_trains_exactly_the_stage_modules(data, backbones):
    method = make_method(data, backbones)
    comps = method.components()

    def trainable(stage):
        method.configure_stage(stage)
        return {f"{c}.{n}" for c, m in comps.items() for n, p in m.named_parameters() if p.requires_grad}

    def names(*cs):
        return {f"{c}.{n}" for c in cs for n, _ in comps[c].named_parameters()}

    assert trainable("freq") == names("freq_encoder")
    assert trainable("time_pretrain") == names("time_encoder", "mask_regressor", "tokenizer")
    assert trainable("time_finetune") == names("time_encoder", "time_classifier")
    assert trainable("fusion") == names("time_encoder", "fusion_head", "freq_encoder") - {
        "freq_encoder.classifier.weight", "freq_encoder.classifier.bias"}
    assert trainable("align") == names("align_net")
    assert trainable("inference") == set()
    method.config.fusion_train_encoders = False
    assert trainable("fusion") == names("fusion_head")
    with pytest.raises(ConfigError, match="unknown stage"):
        method.configure_stage("stage9")


def test_fit_losses_finite_and_decreasing(fitted):
    method, ctx = fitted
    rows = {s: [r for r in ctx.history if r["stage"] == s and "loss" in r] for s in BrainVis.stages}
    assert all(len(rows[s]) == 4 for s in BrainVis.stages)
    assert all(math.isfinite(r[k]) for s in rows for r in rows[s] for k in r if k != "stage")
    for s in ("freq", "time_pretrain", "align"):
        assert rows[s][-1]["loss"] < rows[s][0]["loss"], s
    val = {s: [r for r in ctx.history if r["stage"] == s and "val_loss" in r] for s in BrainVis.stages}
    assert all(len(val[s]) == 2 for s in BrainVis.stages)
    assert all("val_acc" in val[s][0] for s in ("freq", "time_finetune", "fusion"))
    assert not any(p.requires_grad for m in method.components().values() for p in m.parameters())
    # the momentum encoder followed the encoder, but lags it
    enc = torch.cat([p.flatten() for p in method.time_encoder.encoder.parameters()])
    mom = torch.cat([p.flatten() for p in method.momentum_encoder.parameters()])
    assert not torch.equal(enc, mom) and (enc - mom).abs().max() < 0.5


def test_fusion_classifies_decodable_eeg(backbones, accelerator, tmp_path):
    """Positive control: on synthetic EEG whose class is decodable, the fusion head (the predicted
    class of the cascade) classifies held-out trials far above chance (0.5), and AlignNet's context is
    nearer its own class's target than the other class's."""
    ds = SyntheticEEG(cache_dir=tmp_path, n_subjects=2, n_recordings=2, n_trials=24, n_chans=4, n_times=64,
                      image_size=16).load()
    ids = list(ds.trials["trial_id"])
    train, val = ds.subset(ids[:72]), ds.subset(ids[72:])
    method = make_method((ds, train, val), backbones, freq_steps=60, pretrain_steps=20, finetune_steps=60,
                         fusion_steps=40, align_steps=80, freq_lr=3e-3, pretrain_lr=3e-3, finetune_lr=3e-3,
                         fusion_lr=3e-3, align_lr=3e-3)
    method.fit(train, val, RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False))
    eeg = torch.from_numpy(val.eeg)
    assert (method.classify(eeg).argmax(1).numpy() == val.labels).mean() >= 0.75
    context, predicted = method.eeg_context(eeg)
    class_tok, caption_tok = method.text_targets()
    target = (class_tok + caption_tok) / 2  # the interpolation the two losses pull toward
    nearest = ((context[:, None] - target[None]) ** 2).mean(dim=(2, 3)).argmin(1)
    assert (nearest.numpy() == val.labels).mean() >= 0.75
    assert torch.equal(predicted, method.classify(eeg).argmax(1))


def test_selection_keeps_the_best_validation_checkpoint(data, backbones, accelerator, tmp_path, monkeypatch):
    """The time-finetune weights after fit are those of its evaluation with the best validation accuracy."""
    _, train, val = data
    method = make_method(data, backbones, freq_steps=0, pretrain_steps=0, finetune_steps=20, fusion_steps=0,
                         align_steps=0, eval_every=5, finetune_lr=3e-3)
    scripted = iter([(0.5, 1.0), (0.9, 2.0), (0.9, 1.5), (0.6, 0.1)])  # (acc, loss): best = third
    snapshots = []

    def fake_evaluate(model, tensors, batch_size):
        snapshots.append({k: v.clone() for k, v in method.time_classifier.state_dict().items()})
        acc, loss = next(scripted)
        return {"loss": loss, "acc": acc}

    monkeypatch.setattr(method, "_evaluate", fake_evaluate)
    method.fit(train, val, RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False))
    assert len(snapshots) == 4
    final = method.time_classifier.state_dict()
    assert all(torch.equal(final[k], snapshots[2][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[3][k]) for k in final)


def test_text_targets_differ_and_match_the_context(fitted):
    method, _ = fitted
    class_tok, caption_tok = method.text_targets()
    shape = (method.info.n_classes, method.context_tokens, method.context_dim)
    assert class_tok.shape == shape and caption_tok.shape == shape
    assert not torch.equal(class_tok, caption_tok)


# ----------------------------------------------------------------------------- generation
def test_generate_shape_dtype_and_seeding(fitted, data):
    method, _ = fitted
    eeg = torch.from_numpy(data[2].eeg[:3])
    a = method.generate(eeg, generators=gens(6), n_samples=2, num_inference_steps=3)
    size = method.backbones.denoiser.image_size
    assert a.shape == (3, 2, 3, size, size) and a.dtype == torch.uint8
    assert torch.equal(a, method.generate(eeg, generators=gens(6), n_samples=2, num_inference_steps=3))
    assert not torch.equal(a, method.generate(eeg, generators=gens(6, offset=100), n_samples=2, num_inference_steps=3))
    single = method.generate(eeg[1:2], generators=gens(2, offset=2), n_samples=2, num_inference_steps=3)
    assert torch.equal(single[0], a[1])


def test_generate_is_a_cascade_with_the_predicted_class_prompt(fitted, data, monkeypatch):
    method, _ = fitted
    den = method.backbones.denoiser
    calls = []
    real_sample = den.sample

    def spy(context, generators, **kw):
        calls.append({"context": context.clone(), **kw})
        out = real_sample(context, generators, **kw)
        calls[-1]["out"] = out
        return out

    monkeypatch.setattr(den, "sample", spy)
    eeg = torch.from_numpy(data[2].eeg[:2])
    images = method.generate(eeg, generators=gens(4), n_samples=2, num_inference_steps=4)
    assert len(calls) == 2
    a, b = calls
    context, predicted = method.eeg_context(eeg)
    assert torch.allclose(a["context"], context.repeat_interleave(2, 0))
    assert a["guidance_scale"] == 1.0 and a.get("init_latents") is None and a["sampler"] == "plms"
    assert a["unet"] is den.unet
    assert torch.equal(b["context"], den.class_context(predicted).repeat_interleave(2, 0))
    assert b["guidance_scale"] == 7.5 and b["strength"] == 0.85 and b["sampler"] == "plms"
    assert torch.allclose(b["init_latents"], den.encode_images(a["out"]))
    assert a["num_inference_steps"] == b["num_inference_steps"] == 4
    assert torch.equal(images.reshape(-1, *images.shape[2:]), b["out"])


def test_generate_rejects_bad_input(fitted):
    method, _ = fitted
    with pytest.raises(DataFormatError, match="shape"):
        method.generate(torch.zeros(2, 3, 64), generators=gens(2), n_samples=1, num_inference_steps=2)
    with pytest.raises(ValueError, match="generators"):
        method.generate(torch.zeros(2, 4, 64), generators=gens(3), n_samples=2, num_inference_steps=2)


def test_save_load_round_trip(fitted, data, backbones, tmp_path):
    method, _ = fitted
    method.save(tmp_path / "model")
    assert not (tmp_path / "model" / "vae.safetensors").exists()
    assert not (tmp_path / "model" / "unet.safetensors").exists()
    other = make_method(data, backbones, seed=123)
    eeg = torch.from_numpy(data[2].eeg[:2])
    before = other.eeg_context(eeg)[0]
    other.load(tmp_path / "model")
    assert torch.equal(other.eeg_norm.std, method.eeg_norm.std)
    ours = method.generate(eeg, generators=gens(2), n_samples=1, num_inference_steps=3)
    theirs = other.generate(eeg, generators=gens(2), n_samples=1, num_inference_steps=3)
    assert torch.equal(ours, theirs)
    assert torch.equal(other.eeg_context(eeg)[0], method.eeg_context(eeg)[0])
    assert not torch.equal(before, method.eeg_context(eeg)[0])


# ----------------------------------------------------------------------------- counts and config
def test_small_counts_follow_the_stages(fitted):
    method, _ = fitted
    counts = count_parameters(method)
    comps = method.components()
    assert set(counts["per_stage"]) == set(BrainVis.stages)
    assert counts["per_stage"]["align"]["total"] == n_params(comps["align_net"])
    assert "momentum_encoder" not in counts["per_stage"]["time_pretrain"]
    assert counts["inference_total"] == n_params(*(comps[c] for c in BrainVis.inference_components))


def test_paper_profile_counts_on_meta():
    """Paper sizes (CVPR40 128 × 440, 40 classes, SD 1.5) reproduce research/methods.md §5.3."""
    from eegbench.backbones.paper import PaperBackbones

    info = DatasetInfo(name="cvpr40", version="test", n_chans=128, n_times=440, sfreq=1000.0,
                       ch_names=tuple(f"E{i}" for i in range(128)), unit="a.u.",
                       class_names=tuple(f"class{i}" for i in range(40)), subjects=tuple(range(1, 7)))
    bb = PaperBackbones("sd15")
    method = BrainVis(BrainVis.default_config("paper"), info=info, backbones=bb, device=torch.device("meta"))
    comps = method.components()
    assert comps["time_encoder"].input_projection.weight.device.type == "meta"
    assert n_params(comps["momentum_encoder"]) == 100_769_808
    assert n_params(comps["mask_regressor"]) - 1024 == 50_384_904  # regressor layers + the mask token
    assert n_params(comps["tokenizer"]) == 676_500
    time_branch = n_params(*(comps[c] for c in ("time_encoder", "momentum_encoder", "mask_regressor", "tokenizer",
                                                 "time_classifier")))
    # upstream's TimeEncoder also holds an unused ChannelMapping(110 → 93 → 77) and Linear(1024 → 768)
    unused = (110 * 93 + 93) + (93 * 77 + 77) + (1024 * 768 + 768)
    assert time_branch + unused == 254_085_757
    assert time_branch - n_params(comps["momentum_encoder"]) + unused == 153_315_949
    assert n_params(comps["freq_encoder"]) == 153_768
    assert n_params(comps["fusion_head"]) == 46_120
    assert n_params(comps["align_net"]) == 263_954_176
    assert n_params(comps["align_net"].out) == 242_280_192
    assert comps["align_net"].out.out_features == 77 * 768
    own_inference = [c for c in BrainVis.inference_components if c not in ("unet", "vae", "text_embedder")]
    assert n_params(*(comps[c] for c in own_inference)) == 365_561_824
    counts = count_parameters(method)
    assert counts["trainable_total"] == 416_665_252
    assert counts["per_stage"]["freq"]["total"] == 153_768
    assert counts["per_stage"]["align"]["total"] == 263_954_176
    # generation also runs the CLIP ViT-L/14 text tower (the class prompts of pass B): convention 2
    assert n_params(comps["text_embedder"]) == 123_060_480
    assert counts["inference_total"] == (365_561_824 + n_params(comps["unet"]) + n_params(comps["vae"])
                                         + 123_060_480)
    assert n_params(comps["unet"]) == 859_520_964


def test_default_configs_and_validation():
    small, paper = BrainVis.default_config("small"), BrainVis.default_config("paper")
    small.validate()
    paper.validate()
    assert (paper.d_model, paper.n_layers, paper.n_heads, paper.vocab_size, paper.reg_layers) == (1024, 8, 16, 660, 4)
    assert small.sampler == paper.sampler == "plms" and BrainVis.paper_backbone == "sd15"
    with pytest.raises(ConfigError, match="profile"):
        BrainVis.default_config("huge")
    with pytest.raises(ConfigError, match="patch_size"):
        info = DatasetInfo(name="x", version="1", n_chans=2, n_times=7, sfreq=100.0, ch_names=("a", "b"), unit="V",
                           class_names=("p", "q"))
        BrainVis(BrainVisConfig(patch_size=4), info=info, backbones=None, device=torch.device("cpu"))
    bad = [("n_heads", 3, "n_heads"), ("mask_ratio", 1.0, "mask_ratio"), ("sampler", "euler", "sampler"),
           ("guidance_scale", 0.5, "guidance_scale"), ("img2img_strength", 0.0, "img2img_strength"),
           ("caption_template", "x", "caption_template"), ("caption_template", "{}", "differ"),
           ("align_steps", -1, "align_steps"), ("momentum", 1.0, "momentum"), ("freq_lr", 0.0, "freq_lr"),
           ("cpu_threads", -1, "cpu_threads")]
    for field, value, match in bad:
        cfg = BrainVisConfig(**{field: value})
        with pytest.raises(ConfigError, match=match):
            cfg.validate()


def test_fit_and_generate_run_with_cpu_threads_and_restore_it(data, backbones, accelerator, tmp_path, monkeypatch):
    """Every stage and generation run with ``cpu_threads`` intra-op threads; the setting is restored."""
    _, train, val = data
    method = make_method(data, backbones, **{**STEPS, "freq_steps": 2, "pretrain_steps": 2, "finetune_steps": 2,
                                             "fusion_steps": 2, "align_steps": 2, "cpu_threads": 1})
    seen = {}
    from eegbench.training import StageTrainer

    real_train, real_cascade = StageTrainer._train, method._cascade

    def spy(self, stage, *args, **kwargs):
        seen[stage] = torch.get_num_threads()
        return real_train(self, stage, *args, **kwargs)

    def spy_cascade(*args, **kwargs):
        seen["generate"] = torch.get_num_threads()
        return real_cascade(*args, **kwargs)

    monkeypatch.setattr(StageTrainer, "_train", spy)
    monkeypatch.setattr(method, "_cascade", spy_cascade)
    torch.set_num_threads(2)
    try:
        method.fit(train, val, RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False))
        assert torch.get_num_threads() == 2
        method.generate(torch.from_numpy(val.eeg[:1]), generators=gens(1), n_samples=1, num_inference_steps=2)
        assert torch.get_num_threads() == 2
        method.config.cpu_threads = 0  # leave the process setting alone
        method.generate(torch.from_numpy(val.eeg[:1]), generators=gens(1), n_samples=1, num_inference_steps=2)
    finally:
        torch.set_num_threads(1)
    assert seen == {"freq": 1, "time_pretrain": 1, "time_finetune": 1, "fusion": 1, "align": 1, "generate": 2}
