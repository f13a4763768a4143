"""Tests of the GWIT-style method plugin (``eegbench_methods.gwit``) on tiny backbones and synthetic EEG."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from eegbench_methods.gwit.method import GWIT, GWITConfig
from eegbench_methods.gwit.modeling import (
    EEGCondition,
    EEGConditioningEmbedding,
    EEGFeatNet,
    SubjectLayers,
    embedding_lengths,
    knn_vote,
    triplet_margin_loss,
)

from eegbench._compat import ensure_torchvision
from eegbench.backbones import SmallProfile
from eegbench.backbones.tiny import TinyBackbones
from eegbench.data import DatasetInfo
from eegbench.datasets.synthetic import SyntheticEEG
from eegbench.errors import ConfigError, DataFormatError
from eegbench.method import RunContext, count_parameters

ensure_torchvision()

#: Tiny architecture: 16-sample EEG → hint (8, 2, 2) for the tiny UNet (block_out 8, 2 × 2 latents).
TINY = {"eeg_pad_to": 16, "eeg_embed_channels": 2, "eeg_embed_stages": 3, "classifier_hidden": 16, "classifier_layers": 2,
            "classifier_dim": 16, "classifier_batch_size": 16, "classifier_eval_every": 10, "controlnet_batch_size": 8,
            "controlnet_eval_every": 10, "log_every": 5}


def _nparams(module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True, scope="module")
def _reset_accelerate():
    """A fresh accelerate state for this module (another test file may have set other options), one thread."""
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threading overhead only (and the CI CPU is shared)
    yield
    torch.set_num_threads(threads)
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic EEG (noise 2 µV, so 16 samples decode the class): 2 subjects × 2 recordings × 16 trials of
    4 × 16; 48 train / 16 val."""
    root = tmp_path_factory.mktemp("gwit-data")
    ds = SyntheticEEG(cache_dir=root, n_subjects=2, n_recordings=2, n_trials=16, n_chans=4, n_times=16,
                      image_size=16, noise_uv=2.0).load()
    ids = list(ds.trials["trial_id"])
    return ds, ds.subset(ids[:48]), ds.subset(ids[48:])


@pytest.fixture(scope="module")
def backbones(tmp_path_factory, data):
    ds, train, _ = data
    bb = TinyBackbones(tmp_path_factory.mktemp("gwit-cache"),
                       settings=SmallProfile(image_size=16, context_tokens=6, denoiser_steps=8,
                                             denoiser_batch_size=4, denoiser_lr=1e-3))
    ids = sorted(set(train.trials["image_id"]))
    labels = np.array([train.stimuli.labels[i] for i in ids])
    bb.prepare_denoiser(train.stimuli.load_many(ids, 16), labels, ds.info.class_names, dataset_key="gwit-test")
    return bb


@pytest.fixture(scope="module")
def accelerator(_reset_accelerate):
    from accelerate import Accelerator

    return Accelerator(cpu=True)


def make_method(data, backbones, seed=0, **overrides) -> GWIT:
    torch.manual_seed(seed)
    return GWIT(GWITConfig(**{**TINY, **overrides}), info=data[0].info, backbones=backbones,
                device=torch.device("cpu"))


@pytest.fixture(scope="module")
def fitted(data, backbones, accelerator, tmp_path_factory):
    """A method fitted for 30 classifier + 30 ControlNet steps."""
    _, train, val = data
    method = make_method(data, backbones, classifier_steps=30, controlnet_steps=30, controlnet_lr=2e-3,
                         classifier_lr=3e-3)
    ctx = RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path_factory.mktemp("gwit-run"), progress=False)
    method.fit(train, val, ctx)
    return method, ctx


def gens(n, offset=0):
    return [torch.Generator().manual_seed(offset + i) for i in range(n)]


# ----------------------------------------------------------------------------- modules
def test_embedding_lengths_match_the_paper_stack():
    assert embedding_lengths(512, 3) == [510, 255, 128, 64]
    assert embedding_lengths(256, 5) == [254, 127, 64, 32, 16, 8]


def test_hint_encoder_paper_shape_and_padding():
    """[B, 128, 440] → padded 512 → [B, 2560, 64] → [B, 320, 64, 8] → zero-padded [B, 320, 64, 64]."""
    torch.manual_seed(0)
    emb = EEGConditioningEmbedding(128, 440, n_subject_layers=7, out_channels=320, latent_size=64, pad_to=512,
                                   base_channels=320, n_stages=3)
    out = emb(EEGCondition(torch.randn(1, 128, 440), torch.tensor([4])))
    assert out.shape == (1, 320, 64, 64)
    assert out[..., 8:].abs().sum() == 0  # only the first 8 columns carry features
    assert out[..., :8].abs().sum() > 0


def test_hint_encoder_small_profile_fills_the_latent():
    emb = EEGConditioningEmbedding(4, 180, n_subject_layers=12, out_channels=32, latent_size=8, pad_to=256,
                                   base_channels=8, n_stages=5)
    out = emb(EEGCondition(torch.randn(3, 4, 180) * 1e-5, torch.tensor([1, 2, 11])))
    assert out.shape == (3, 32, 8, 8)
    assert (out.abs().sum((0, 1)) > 0).all()


def test_hint_encoder_rejects_a_stack_that_does_not_fit():
    with pytest.raises(ConfigError, match="eeg_embed_channels"):
        EEGConditioningEmbedding(4, 180, n_subject_layers=2, out_channels=32, latent_size=8, pad_to=256,
                                 base_channels=8, n_stages=3)
    with pytest.raises(ConfigError, match="eeg_pad_to"):
        EEGConditioningEmbedding(4, 300, n_subject_layers=2, out_channels=32, latent_size=8, pad_to=256,
                                 base_channels=8, n_stages=5)


def test_subject_layers_select_by_id_and_fall_back_to_the_trained_mean():
    torch.manual_seed(0)
    layers = SubjectLayers(3, 4)
    assert torch.allclose(layers.weight.std(), torch.tensor(1 / 3**0.5), atol=0.25)
    x = torch.randn(2, 3, 5)
    out = layers(x, torch.tensor([1, 3]))
    expected = torch.stack([layers.weight[1].T @ x[0], layers.weight[3].T @ x[1]])
    assert torch.allclose(out, expected, atol=1e-6)
    layers.mark_seen([1, 2])
    mean = layers.weight[[1, 2]].mean(0)
    # 3 is unseen in training, 9 is out of range, None means unknown: all use the mean of 1 and 2
    for subject in (torch.tensor([3, 9]), None):
        out = layers(x, subject)
        assert torch.allclose(out, torch.einsum("bct,cd->bdt", x, mean), atol=1e-6)
    assert torch.allclose(layers(x, torch.tensor([2, 2])), torch.einsum("bct,cd->bdt", x, layers.weight[2]))


def test_standardize_uses_training_statistics(data, backbones):
    m = make_method(data, backbones)
    st = m.controlnet.embedding.standardize
    st.set_statistics(torch.tensor([1.0, 0, 0, 0]), torch.tensor([2.0, 1, 0, 1]))
    x = torch.zeros(1, 4, 3)
    x[0, 0] = 5.0
    x[0, 2] = 100.0
    z = st(x)
    assert torch.allclose(z[0, 0], torch.full((3,), 2.0))
    assert torch.allclose(z[0, 2], torch.full((3,), 10.0))  # zero std → 1, then clipped at 10


def test_eegfeatnet_features_are_unit_norm_and_paper_size():
    net = EEGFeatNet(128)
    assert _nparams(net) == 544_896  # LSTM 128→128 ×4 layers + Linear 128→128 (≈0.54 M, §6.4)
    f = EEGFeatNet(4, hidden=8, num_layers=2, dim=6)(torch.randn(5, 4, 20))
    assert f.shape == (5, 6)
    assert torch.allclose(f.norm(dim=1), torch.ones(5), atol=1e-5)


def test_triplet_margin_loss():
    feats = torch.nn.functional.normalize(torch.tensor([[1.0, 0], [0.9, 0.1], [-1, 0], [-0.9, -0.1]]), dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    assert float(triplet_margin_loss(feats, labels, 0.2)) == 0.0  # well separated
    swapped = torch.tensor([0, 1, 0, 1])
    assert float(triplet_margin_loss(feats, swapped, 0.2)) > 1.0
    assert float(triplet_margin_loss(feats, torch.zeros(4, dtype=torch.long), 0.2)) == 0.0  # no negatives


def test_knn_vote_leave_one_out_excludes_the_point_itself():
    feats = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [9.0]])
    labels = np.array([0, 0, 0, 1, 1, 0])
    assert knn_vote(feats, labels, 1, query=feats).tolist() == labels.tolist()  # self is its own neighbour
    loo = knn_vote(feats, labels, 1)
    assert loo.tolist() == [0, 0, 0, 1, 1, 1]  # the isolated point takes its nearest *other* point's class


# ----------------------------------------------------------------------------- controlnet
def test_controlnet_is_a_copy_of_the_unet_encoder_with_zero_outputs(data, backbones):
    m = make_method(data, backbones)
    net, unet = m.controlnet.net, backbones.denoiser.unet
    for a, b in zip(net.down_blocks.state_dict().values(), unet.down_blocks.state_dict().values()):
        assert torch.equal(a, b)
    assert all(float(p.abs().sum()) == 0 for p in net.controlnet_down_blocks.parameters())
    assert float(sum(p.abs().sum() for p in net.controlnet_mid_block.parameters())) == 0
    assert isinstance(net.controlnet_cond_embedding, EEGConditioningEmbedding)
    # the shared UNet is untouched and frozen
    assert all(not p.requires_grad for p in unet.parameters())
    assert next(iter(net.down_blocks.parameters())).data_ptr() != next(iter(unet.down_blocks.parameters())).data_ptr()


def test_guess_mode_scales_residuals_like_diffusers(data, backbones):
    m = make_method(data, backbones)
    for p in m.controlnet.net.controlnet_down_blocks.parameters():
        torch.nn.init.normal_(p)
    for p in m.controlnet.net.controlnet_mid_block.parameters():
        torch.nn.init.normal_(p)
    den = backbones.denoiser
    x = torch.randn(2, den.latent_channels, den.latent_size, den.latent_size)
    ctx = den.class_context([0, 1])
    eeg = torch.randn(2, 4, 16)
    plain_down, plain_mid = m.controlnet(x, torch.tensor(10), ctx, eeg, torch.tensor([1, 2]))
    guess_down, guess_mid = m.controlnet(x, torch.tensor(10), ctx, eeg, torch.tensor([1, 2]), guess_mode=True)
    scales = torch.logspace(-1, 0, len(plain_down) + 1)
    for p, g, s in zip(plain_down, guess_down, scales):
        assert torch.allclose(g, p * s, atol=1e-6)
    assert torch.allclose(guess_mid, plain_mid, atol=1e-6)


def test_configure_stage_sets_exactly_the_trained_parameters(data, backbones):
    m = make_method(data, backbones)
    m.configure_stage("classifier")
    assert all(p.requires_grad for p in m.eeg_classifier.parameters())
    assert not any(p.requires_grad for p in m.controlnet.parameters())
    m.configure_stage("controlnet")
    names = {n for n, p in m.controlnet.named_parameters() if p.requires_grad}
    assert names == {n for n, _ in m.controlnet.named_parameters()}
    assert any("controlnet_cond_embedding.subject_layers" in n for n in names)
    assert not any(p.requires_grad for p in m.eeg_classifier.parameters())
    for name in ("unet", "vae"):
        assert not any(p.requires_grad for p in m.components()[name].parameters())
    m.configure_stage("inference")
    assert not any(p.requires_grad for mod in m.components().values() for p in mod.parameters())
    with pytest.raises(ConfigError, match="unknown stage"):
        m.configure_stage("stage9")
    counts = count_parameters(m)
    assert counts["per_stage"]["controlnet"]["total"] == _nparams(m.controlnet)
    assert counts["per_stage"]["classifier"]["total"] == _nparams(m.eeg_classifier)
    assert counts["trainable_total"] == _nparams(m.controlnet) + _nparams(m.eeg_classifier)


# ----------------------------------------------------------------------------- training
def test_fit_logs_both_stages_and_controlnet_loss_decreases(data, backbones, accelerator, tmp_path):
    _, train, val = data
    m = make_method(data, backbones, classifier_steps=10, controlnet_steps=60, controlnet_lr=3e-3,
                    proportion_empty_prompts=0.0, controlnet_eval_every=60, log_every=20)
    ctx = RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False)
    m.fit(train, val, ctx)
    rows = [r for r in ctx.history if r["stage"] == "controlnet" and "loss" in r]
    assert len(rows) == 3 and all(np.isfinite(r["loss"]) for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert any(r["stage"] == "classifier" and "val_knn_accuracy" in r for r in ctx.history)
    assert (tmp_path / "train_log.jsonl").is_file()


def test_classifier_learns_class_dependent_eeg(data, backbones, accelerator, tmp_path):
    """The synthetic EEG is class-dependent: the triplet LSTM + k-NN must beat chance on val."""
    _, train, val = data
    m = make_method(data, backbones, classifier_steps=40, controlnet_steps=0, classifier_lr=3e-3,
                    classifier_eval_every=20)
    ctx = RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False)
    m.fit(train, val, ctx)
    accs = [r["val_knn_accuracy"] for r in ctx.history if "val_knn_accuracy" in r]
    assert max(accs) >= 0.9
    pred = m.predict_classes(torch.from_numpy(val.eeg))
    assert float((pred.numpy() == val.labels).mean()) == pytest.approx(max(accs))  # the best checkpoint is kept
    assert m.eeg_classifier.bank_features.shape == (len(train), 16)


def test_training_prompts_come_from_the_classifier(data, backbones, accelerator, tmp_path, monkeypatch):
    _, train, val = data
    m = make_method(data, backbones, classifier_steps=0, controlnet_steps=1, proportion_empty_prompts=0.0)
    seen = []
    real = m._diffusion_loss

    def spy(model, scheduler, latents, context, *rest):
        seen.append(context.detach().clone())
        return real(model, scheduler, latents, context, *rest)

    monkeypatch.setattr(m, "_diffusion_loss", spy)
    monkeypatch.setattr(m, "_training_prompt_classes", lambda ds: np.zeros(len(ds), dtype=np.int64))
    m.fit(train, val.subset([]), RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False))
    assert torch.allclose(seen[0], m.prompt_tokens()[0].expand_as(seen[0]))


def test_training_prompts_are_out_of_fold(data, backbones, accelerator, tmp_path, monkeypatch):
    """Each training trial's prompt class comes from a classifier that never trained on it (stage 1)."""
    _, train, val = data
    # 3 training recordings, both classes in each: 3 recording-disjoint folds
    m = make_method(data, backbones, classifier_steps=6, classifier_eval_every=3, controlnet_steps=1,
                    prompt_folds=3)
    built, predicted = [], []
    real_stage, real_predict = m._classifier_stage, m._fold_predictions

    def stage_spy(part, val_, seed):
        built.append((list(part.trials["trial_id"]), m.eeg_classifier.fc.weight.detach().clone()))
        return real_stage(part, val_, seed)

    def predict_spy(fit_part, held_part):
        out = real_predict(fit_part, held_part)
        predicted.append((list(fit_part.trials["trial_id"]), list(held_part.trials["trial_id"]), out.copy()))
        return out

    monkeypatch.setattr(m, "_classifier_stage", stage_spy)
    monkeypatch.setattr(m, "_fold_predictions", predict_spy)
    ctx = RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False)
    m.fit(train, val, ctx)

    ids = list(train.trials["trial_id"])
    position = {t: i for i, t in enumerate(ids)}
    recording = dict(zip(ids, train.trials["recording"]))
    assert len(built) == 4 and len(predicted) == 3  # 3 fold stages, then the main classifier stage
    assert built[-1][0] == ids  # the test-time classifier trains on every training trial
    assert all(torch.equal(w, built[0][1]) for _, w in built)  # every training starts from the same weights
    held_all = [t for _, held, _ in predicted for t in held]
    assert sorted(held_all) == sorted(ids)  # every training trial is predicted exactly once
    classes = m.train_prompts.classes()
    for (trained, _), (fit_ids, held, pred) in zip(built[:3], predicted):
        assert trained == fit_ids  # the fold's classifier trained on these trials (and validated on val)
        assert not set(trained) & set(held)  # ... never on the trials it predicts
        assert not {recording[t] for t in trained} & {recording[t] for t in held}  # nor on their recordings
        assert classes[[position[t] for t in held]].tolist() == pred.tolist()
    assert (m._training_prompt_classes(train) == classes).all()
    row = next(r for r in ctx.history if "train_prompt_accuracy" in r)
    assert row["train_prompt_accuracy"] == pytest.approx(float((classes == train.labels).mean()))
    assert row["prompt_folds"] == 3 and row["prompt_folds_by_recording"] == 1
    stages = {r["stage"] for r in ctx.history}
    assert {"classifier-fold0", "classifier-fold1", "classifier-fold2", "classifier", "controlnet"} <= stages
    # validation selects every fold's checkpoint as in the main stage
    assert all(any(r["stage"] == f"classifier-fold{i}" and "val_knn_accuracy" in r for r in ctx.history)
               for i in range(3))


def test_caption_from_labels_runs_no_fold(data, backbones, accelerator, tmp_path):
    _, train, val = data
    m = make_method(data, backbones, classifier_steps=2, controlnet_steps=1, caption_from_classifier=False)
    ctx = RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False)
    m.fit(train, val, ctx)
    assert not any(r["stage"].startswith("classifier-fold") for r in ctx.history)
    assert (m._training_prompt_classes(train) == train.labels).all()
    row = next(r for r in ctx.history if "train_prompt_accuracy" in r)
    assert row["train_prompt_accuracy"] == 1.0 and row["prompt_folds"] == 0


def test_cross_fitting_folds_shrink_on_tiny_data(data, backbones, accelerator, tmp_path):
    ds, train, val = data
    m = make_method(data, backbones, prompt_folds=5)
    folds, grouped = m.cross_fitting_folds(train, 0)  # 3 recordings < 5 folds: trial-level, stratified
    assert len(folds) == 5 and not grouped
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(train)))
    for held in folds:
        assert sorted(np.bincount(train.labels[held]).tolist()) in ([4, 5], [5, 5], [4, 4], [5, 4])
    assert [f.tolist() for f in m.cross_fitting_folds(train, 0)[0]] == [f.tolist() for f in folds]  # seeded
    assert [f.tolist() for f in m.cross_fitting_folds(train, 1)[0]] != [f.tolist() for f in folds]
    lab = train.labels
    ones = list(train.trials["trial_id"][lab == 1])
    zeros = list(train.trials["trial_id"][lab == 0])
    few = train.subset(zeros[:6] + ones[:2])  # the smallest class has 2 trials: 2 folds
    assert len(m.cross_fitting_folds(few, 0)[0]) == 2
    single = train.subset(zeros[:5] + ones[:1])  # a 1-trial class: still 2 folds, no error
    assert len(m.cross_fitting_folds(single, 0)[0]) == 2
    pair = train.subset(zeros[:1] + ones[:1])  # every class a single trial: unstratified
    assert sorted(len(f) for f in m.cross_fitting_folds(pair, 0)[0]) == [1, 1]
    # a fit on 3 training trials cross-fits without error; on 1 trial the prompts are the labels
    m = make_method(data, backbones, classifier_steps=2, controlnet_steps=1, controlnet_batch_size=2)
    tiny = train.subset(zeros[:2] + ones[:1])
    m.fit(tiny, val, RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False))
    assert (m.train_prompts.classes() >= 0).all() and m.train_prompts.classes().shape == (3,)
    m = make_method(data, backbones, classifier_steps=1, controlnet_steps=1)
    one = train.subset(zeros[:1])
    (tmp_path / "one").mkdir()
    m.fit(one, val, RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path / "one", progress=False))
    assert (m._training_prompt_classes(one) == one.labels).all()


def test_resume_after_a_finished_fold_gives_the_same_prompts(data, backbones, accelerator, tmp_path):
    """A run restarted after fold 0 finished restores it and reaches the uninterrupted prompts and weights."""
    import shutil

    _, train, val = data
    kw = dict(classifier_steps=6, classifier_eval_every=3, controlnet_steps=2, prompt_folds=2)

    def run(work):
        work.mkdir(exist_ok=True)
        m = make_method(data, backbones, **kw)
        built = []
        real = m._classifier_stage
        m._classifier_stage = lambda part, v, seed: built.append(len(part)) or real(part, v, seed)
        ctx = RunContext(accelerator=accelerator, seed=0, work_dir=work, progress=False,
                         checkpoint_dir=tmp_path / "ckpt", checkpoint_every=0)
        m.fit(train, val, ctx)
        return m, built

    first, built = run(tmp_path / "a")
    # 3 recordings in 2 recording-disjoint folds: fold trainings on 1 and 2 recordings, then all
    assert sorted(built[:2]) == [16, 32] and built[2:] == [48]
    fold1 = built[1]
    finals = sorted(p.name for p in (tmp_path / "ckpt").glob("*.final"))
    assert finals == ["classifier-fold0.final", "classifier-fold1.final", "classifier.final", "controlnet.final"]
    state = torch.load(tmp_path / "ckpt" / "classifier-fold1.final" / "state.pt", weights_only=True)
    saved = state["modules"]["train_prompts"]["train_prompt_classes"]
    held0 = first.cross_fitting_folds(train, 0)[0][0]
    assert (saved[held0] == first.train_prompts.train_prompt_classes[held0]).all()  # fold 0's guesses
    assert (saved >= 0).sum() == len(held0)  # fold 1's are made after its stage ends
    for name in finals[1:]:  # as if killed right after fold 0
        shutil.rmtree(tmp_path / "ckpt" / name)
    again, built = run(tmp_path / "b")
    assert built == [fold1, 48]  # fold 0 restored, not retrained
    assert torch.equal(again.train_prompts.train_prompt_classes, first.train_prompts.train_prompt_classes)
    for a, b in zip(first.eeg_classifier.state_dict().values(), again.eeg_classifier.state_dict().values()):
        assert torch.equal(a, b)
    full, built = run(tmp_path / "c")  # everything restored
    assert built == []
    assert torch.equal(full.train_prompts.train_prompt_classes, first.train_prompts.train_prompt_classes)


def test_text_dropout_uses_the_empty_context(data, backbones, accelerator, tmp_path, monkeypatch):
    _, train, val = data
    m = make_method(data, backbones, classifier_steps=0, controlnet_steps=1, proportion_empty_prompts=1.0)
    seen = []
    real = m._diffusion_loss
    monkeypatch.setattr(m, "_diffusion_loss", lambda model, s, lat, ctx_, *r: seen.append(ctx_) or real(
        model, s, lat, ctx_, *r))
    m.fit(train, val.subset([]), RunContext(accelerator=accelerator, seed=0, work_dir=tmp_path, progress=False))
    assert torch.equal(seen[0], torch.zeros_like(seen[0]))  # the small profile's empty context = the null context
    m2 = make_method(data, backbones, empty_context="text")
    text_empty, _ = backbones.text_embedder.encode([""])
    assert torch.allclose(m2.empty_tokens(2), text_empty.expand(2, -1, -1))


def test_v_prediction_target(data, backbones):
    m = make_method(data, backbones)
    sched = backbones.denoiser.new_scheduler("ddpm")
    lat, noise = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)
    t = torch.tensor([10, 900])
    captured = {}

    def model(noisy, timesteps, context, eeg, subject):
        captured["noisy"] = noisy
        return sched.get_velocity(lat, noise, t)

    loss = m._diffusion_loss(model, sched, lat, None, None, None, noise, t)
    assert float(loss) == 0.0
    assert torch.allclose(captured["noisy"], sched.add_noise(lat, noise, t))


# ----------------------------------------------------------------------------- generation
def test_generate_shape_dtype_and_seeding(fitted, data):
    method, _ = fitted
    val = data[2]
    eeg = torch.from_numpy(val.eeg[:3])
    subj = torch.from_numpy(val.subjects[:3])
    out = method.generate(eeg, generators=gens(6), n_samples=2, num_inference_steps=3, subject=subj)
    assert out.shape == (3, 2, 3, 16, 16) and out.dtype == torch.uint8
    again = method.generate(eeg, generators=gens(6), n_samples=2, num_inference_steps=3, subject=subj)
    assert torch.equal(out, again)
    # image (trial 1, sample 0) is the same when trial 1 is generated alone with the same generator
    alone = method.generate(eeg[1:2], generators=gens(2, offset=2), n_samples=2, num_inference_steps=3,
                            subject=subj[1:2])
    assert torch.equal(alone[0], out[1])
    other = method.generate(eeg, generators=gens(6, offset=100), n_samples=2, num_inference_steps=3, subject=subj)
    assert not torch.equal(out, other)


def test_generate_applies_controlnet_only_to_the_conditional_half(fitted, data, monkeypatch):
    method, _ = fitted
    calls = []
    real = method.controlnet.forward

    def spy(sample, t, context, eeg, subject=None, **kw):
        calls.append((sample.shape[0], kw.get("guess_mode")))
        return real(sample, t, context, eeg, subject, **kw)

    monkeypatch.setattr(method.controlnet, "forward", spy)
    unet_rows = []
    den = method.backbones.denoiser
    real_unet_forward = den.unet.forward

    def unet_spy(sample, t, encoder_hidden_states=None, **kw):
        down = kw["down_block_additional_residuals"]
        unet_rows.append((sample.shape[0], float(down[0][sample.shape[0] // 2:].abs().sum())))
        return real_unet_forward(sample, t, encoder_hidden_states=encoder_hidden_states, **kw)

    monkeypatch.setattr(den.unet, "forward", unet_spy)
    method.generate(torch.from_numpy(data[2].eeg[:2]), generators=gens(2), n_samples=1, num_inference_steps=2)
    assert calls == [(2, True)] * 2  # 2 steps, ControlNet on the 2 conditional rows only
    assert all(rows == 4 and uncond == 0.0 for rows, uncond in unet_rows)  # zero residuals for the null half


def test_generate_rejects_bad_input(fitted):
    method, _ = fitted
    with pytest.raises(DataFormatError, match="expected"):
        method.generate(torch.zeros(2, 3, 16), generators=gens(2), n_samples=1, num_inference_steps=2)
    with pytest.raises(ValueError, match="generators"):
        method.generate(torch.zeros(2, 4, 16), generators=gens(3), n_samples=1, num_inference_steps=2)


def test_save_load_round_trip(fitted, data, backbones, tmp_path):
    method, _ = fitted
    method.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.safetensors")) == [
        "controlnet.safetensors", "eeg_classifier.safetensors", "train_prompts.safetensors"]
    fresh = make_method(data, backbones, seed=123)
    assert fresh.train_prompts.train_prompt_classes.shape == (0,)
    fresh.load(tmp_path / "ckpt")
    for a, b in zip(method.controlnet.state_dict().values(), fresh.controlnet.state_dict().values()):
        assert torch.equal(a, b)
    assert torch.equal(fresh.eeg_classifier.bank_labels, method.eeg_classifier.bank_labels)
    # the out-of-fold training prompts travel with the weights (size taken from the file)
    assert method.train_prompts.train_prompt_classes.shape == (48,)
    assert torch.equal(fresh.train_prompts.train_prompt_classes, method.train_prompts.train_prompt_classes)
    eeg = torch.from_numpy(data[2].eeg[:2])
    subj = torch.from_numpy(data[2].subjects[:2])
    a = method.generate(eeg, generators=gens(2), n_samples=1, num_inference_steps=2, subject=subj)
    b = fresh.generate(eeg, generators=gens(2), n_samples=1, num_inference_steps=2, subject=subj)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- config and profiles
def test_default_config_profiles():
    small, paper = GWIT.default_config("small"), GWIT.default_config("paper")
    small.validate()
    paper.validate()
    # eeg_embed_channels 0 = the UNet's first block width: 320 for SD 2.1-base (the published value)
    assert (paper.eeg_pad_to, paper.eeg_embed_channels, paper.eeg_embed_stages) == (512, 0, 3)
    assert paper.controlnet_lr == 1e-5 and paper.controlnet_batch_size == 8
    assert (paper.classifier_hidden, paper.classifier_layers, paper.classifier_dim) == (128, 4, 128)
    for cfg in (small, paper):
        assert cfg.sampler == "unipc" and cfg.guidance_scale == 4.0 and cfg.guess_mode
        assert cfg.proportion_empty_prompts == 0.5 and cfg.caption_from_classifier
        assert cfg.prompt_template == "image of {}"
    assert GWIT.paper_backbone == "sd21-base"
    with pytest.raises(ConfigError, match="profile"):
        GWIT.default_config("huge")


@pytest.mark.parametrize("field,value,match", [
    ("proportion_empty_prompts", 1.5, "proportion_empty_prompts"),
    ("sampler", "euler", "sampler"),
    ("guidance_scale", 0.5, "guidance_scale"),
    ("empty_context", "zeros", "empty_context"),
    ("prompt_template", "image", "prompt_template"),
    ("knn_k", 0, "knn_k"),
    ("controlnet_steps", -1, "controlnet_steps"),
    ("controlnet_lr", 0.0, "controlnet_lr"),
])
def test_config_validation_errors(field, value, match):
    with pytest.raises(ConfigError, match=match):
        GWITConfig(**{field: value}).validate()


def test_small_defaults_fit_the_small_denoiser(tmp_path):
    """The small profile's hint encoder reshapes N170's 4 × 180 EEG into the shared UNet's (32, 8, 8)."""
    cfg = GWIT.default_config("small")
    emb = EEGConditioningEmbedding(4, 180, n_subject_layers=12, out_channels=32, latent_size=8, pad_to=cfg.eeg_pad_to,
                                   base_channels=cfg.eeg_embed_channels, n_stages=cfg.eeg_embed_stages)
    assert emb(torch.randn(2, 4, 180)).shape == (2, 32, 8, 8)


# ----------------------------------------------------------------------------- paper-profile counts
SD21_BASE_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    "block_out_channels": [320, 640, 1280, 1280], "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
    "use_linear_projection": True,
}


def _paper_backbones():
    """A stand-in with PaperBackbones' surface for SD2.1-base on the meta device."""
    import accelerate
    from diffusers import UNet2DConditionModel

    with accelerate.init_empty_weights():
        unet = UNet2DConditionModel(**SD21_BASE_UNET)
        vae = torch.nn.Linear(1, 1)
    den = types.SimpleNamespace(unet=unet, latent_size=64, latent_channels=4, context_tokens=77,
                                cross_attention_dim=1024, prediction_type="epsilon", scheduler_config={},
                                new_unet=lambda: unet)
    text = types.SimpleNamespace(dim=1024, max_length=77)
    return types.SimpleNamespace(profile="paper", device=torch.device("meta"), image_size=512, vae=vae,
                                 denoiser=den, text_embedder=text, image_embedder=types.SimpleNamespace(dim=1024))


CVPR40 = DatasetInfo(name="cvpr40", version="t", n_chans=128, n_times=440, sfreq=1000.0,
                     ch_names=tuple(f"e{i}" for i in range(128)), unit="a.u.",
                     class_names=tuple(f"c{i}" for i in range(40)), subjects=(1, 2, 3, 4, 5, 6))


def test_paper_profile_counts_on_meta():
    """research/methods.md §6.4: standard ControlNet 364,228,240 (hint 1,086,480); EEG hint encoder
    19,598,208 (subject layers 114,688); GWIT ControlNet 382,739,968."""
    from diffusers import ControlNetModel

    bb = _paper_backbones()
    assert _nparams(bb.denoiser.unet) == 865_910_724
    with torch.device("meta"):
        standard = ControlNetModel.from_unet(bb.denoiser.unet, load_weights_from_unet=False)
    assert _nparams(standard) == 364_228_240
    assert _nparams(standard.controlnet_cond_embedding) == 1_086_480
    m = GWIT(GWIT.default_config("paper"), info=CVPR40, backbones=bb, device=torch.device("meta"))
    assert _nparams(m.controlnet.embedding) == 19_598_208
    assert _nparams(m.controlnet.embedding.subject_layers) == 114_688
    counts = count_parameters(m)
    assert counts["per_stage"]["controlnet"]["total"] == 382_739_968
    assert counts["per_stage"]["classifier"]["total"] == 544_896
    assert counts["trainable_total"] == 382_739_968 + 544_896
    assert counts["per_component"]["unet"]["total"] == 865_910_724
    assert all(p.is_meta for p in m.controlnet.parameters())


def test_paper_backbones_module_when_available():
    """With the shared ``eegbench.backbones.paper`` module, the same counts come out of PaperBackbones."""
    paper = pytest.importorskip("eegbench.backbones.paper")
    bb = paper.PaperBackbones("sd21-base", device="meta")
    m = GWIT(GWIT.default_config("paper"), info=CVPR40, backbones=bb, device=torch.device("meta"))
    assert count_parameters(m)["per_stage"]["controlnet"]["total"] == 382_739_968


def _feature_net_knn(pooling: str, steps: int = 150) -> float:
    """Validation k-NN accuracy of a small-profile-size EEGFeatNet after ``steps`` triplet steps on
    ``eegnb-groundtruth`` at 0 dB (real background EEG; the class decodes at 0.995 with LDA)."""
    from conftest import DATA_ROOT
    from eegbench.datasets.groundtruth import GroundTruthEEG
    from eegbench.method import channel_statistics
    from eegbench.splits import multi_subject

    ds = GroundTruthEEG(DATA_ROOT, None, snr_db="0").load()
    split = multi_subject(ds)
    train, val = ds.subset(split.train), ds.subset(split.val)
    mean, std = channel_statistics(train.eeg)
    torch.manual_seed(0)
    net = EEGFeatNet(4, hidden=64, num_layers=2, dim=64, pooling=pooling)
    net.standardize.set_statistics(torch.as_tensor(mean).float(), torch.as_tensor(std).float())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)
    x, y = torch.from_numpy(train.eeg).float(), torch.from_numpy(train.labels)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = triplet_margin_loss(net(x[idx]), y[idx], 0.2)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
    with torch.no_grad():
        f, fv = net(x).numpy(), net(torch.from_numpy(val.eeg).float()).numpy()
    return float((knn_vote(f, train.labels, 5, query=fv) == val.labels).mean())


def test_eegfeatnet_pooling_over_time_learns_where_the_final_state_collapses():
    from conftest import DATA_ROOT

    if not (DATA_ROOT / "eeg-notebooks" / "data" / "visual" / "N170").is_dir():
        pytest.skip(f"eeg-notebooks N170 data absent under {DATA_ROOT} (set EEGBENCH_DATA)")
    # measured here: mean pooling 0.99, final state 0.47 (its triplet loss stays at the margin)
    assert _feature_net_knn("mean") >= 0.85
    assert _feature_net_knn("last") <= 0.7
    with pytest.raises(ValueError, match="pooling"):
        EEGFeatNet(4, pooling="max")
    with pytest.raises(ConfigError, match="classifier_pooling"):
        GWITConfig(classifier_pooling="max").validate()
