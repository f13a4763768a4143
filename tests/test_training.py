"""Tests of the one stage trainer (:mod:`eegbench.training`) on toy models, and the config validation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from eegbench._compat import ensure_torchvision
from eegbench.config import GENERATION_SAMPLERS, at_least, in_range, validate_fields
from eegbench.errors import ConfigError
from eegbench.method import apply_overrides
from eegbench.training import CheckpointError, Stage, StageTrainer, get_rng_state, set_rng_state

ensure_torchvision()  # diffusers (EMAModel) needs an importable torchvision


@pytest.fixture(scope="module")
def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=True)


class Toy(nn.Module):
    """A regression net with dropout (global RNG) and a BatchNorm buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def forward(self, x, y):
        noise = 0.01 * torch.randn_like(y)  # the global RNG, as the methods' noise draws
        return {"loss": ((self.net(x).squeeze(-1) - y - noise) ** 2).mean()}


def toy_data(n=40):
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 6, generator=g)
    return x, x @ torch.arange(6.0) / 6


def make_stage(model, *, steps_seen=None, fail_at=None, val=True, keep="best", **kw):
    """A stage with every stateful piece: shuffled loader, dropout, LR schedule + scheduler, clipping,
    a registered generator, validation, and either best-state selection or an EMA."""
    x, y = toy_data()
    gen = torch.Generator().manual_seed(3)

    def step(m, batch):
        if steps_seen is not None:
            steps_seen.append(1)
            if fail_at is not None and len(steps_seen) == fail_at:
                raise KeyboardInterrupt("killed")
        out = m(*batch)
        out["loss"] = out["loss"] + 0.0 * torch.rand((), generator=gen)  # a registered generator
        return out

    from diffusers.training_utils import EMAModel

    return Stage(
        model=model, step=step, data=(x, y), batch_size=8,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
        lr_at=lambda i: 1e-2 * (0.5 + 0.5 * (i % 5) / 5),
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0),
        ema=(lambda p: EMAModel(p, decay=0.9)) if keep == "ema" else None, grad_clip=1.0, log_every=3,
        validate=(lambda m: {"loss": float(m(x[:16], y[:16])["loss"])}) if val else None, eval_every=4,
        select=(lambda row: row["loss"]) if keep == "best" else None, keep=(model,) if keep == "best" else (),
        generators=(gen,), **kw,
    )


def states(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def fresh_model():
    torch.manual_seed(0)
    return Toy()


def train(tmp_path, accelerator, *, steps=23, fail_at=None, history=None, checkpoint_every=5, keep="best"):
    model = fresh_model()
    torch.manual_seed(11)
    trainer = StageTrainer(accelerator=accelerator, modules={"toy": model}, checkpoint_dir=tmp_path,
                           checkpoint_every=checkpoint_every, progress=False, desc="toy",
                           log_metrics=(lambda v, *, stage, step: history.append({"stage": stage, "step": step, **v}))
                           if history is not None else None, history=history)
    seen = []
    outcome = trainer.run_stage("a", steps, lambda: make_stage(model, steps_seen=seen, fail_at=fail_at, keep=keep))
    second = trainer.run_stage("b", 7, lambda: make_stage(model, keep=keep))
    return model, outcome, second, trainer


@pytest.mark.parametrize("keep", ["best", "ema"])
def test_an_interrupted_stage_resumes_to_the_same_weights(tmp_path, accelerator, keep):
    """Killed at step 13 of 23 (last checkpoint at 10), a new trainer continues from step 10 and ends
    with bit-identical weights, losses and log to an uninterrupted run: model, optimiser, LR
    scheduler, EMA or best state, loader position, global RNG and registered generators all resume."""
    ref_hist: list = []
    ref, ref_out, ref_b, _ = train(tmp_path / "ref", accelerator, history=ref_hist, keep=keep)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", accelerator, fail_at=13, history=[], keep=keep)
    pointer = json.loads((tmp_path / "cut" / "a.json").read_text())
    assert pointer["step"] == 10 and not (tmp_path / "cut" / "a.final").exists()
    hist: list = []
    again, out, second, _ = train(tmp_path / "cut", accelerator, history=hist, keep=keep)
    assert out.resumed_from == 10
    assert out.losses == ref_out.losses and out.best_step == ref_out.best_step
    for k, v in states(ref).items():
        assert torch.equal(v, again.state_dict()[k]), k
    strip = [{k: v for k, v in r.items() if k != "steps_per_s"} for r in hist]
    assert strip == [{k: v for k, v in r.items() if k != "steps_per_s"} for r in ref_hist]


def test_finished_stages_are_restored_without_building_them(tmp_path, accelerator):
    ref, _, _, _ = train(tmp_path, accelerator)
    model = fresh_model()
    trainer = StageTrainer(accelerator=accelerator, modules={"toy": model}, checkpoint_dir=tmp_path,
                           progress=False)
    built = []
    out = trainer.run_stage("a", 23, lambda: built.append(1))
    trainer.run_stage("b", 7, lambda: built.append(1))
    assert built == [] and out.restored and out.steps == 23
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in states(ref).items())


def test_best_validation_state_is_kept(tmp_path, accelerator):
    """The weights after the stage are those of the evaluation with the lowest key (never the last)."""
    model = fresh_model()
    scripted = iter([3.0, 1.0, 2.0, 4.0, 5.0])
    snapshots = []

    def validate(m):
        snapshots.append(states(model))
        return {"loss": next(scripted)}

    stage = dataclasses.replace(make_stage(model), validate=validate, eval_every=5)
    out = StageTrainer(accelerator=accelerator, progress=False).run_stage("a", 20, lambda: stage)
    assert len(snapshots) == 4 and out.best_step == 10 and out.best == 1.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in snapshots[1].items())


def test_accumulation_gives_the_gradient_of_the_whole_batch(accelerator):
    """Two micro-batches of 4 then one optimiser step equal one batch of 8 (same trials, same order)."""
    x, y = toy_data()

    def run(accumulation):
        torch.manual_seed(0)
        model = nn.Linear(6, 1)
        grads = []
        stage = Stage(model=model, data=(x, y), batch_size=8, accumulation=accumulation,
                      step=lambda m, b: {"loss": ((m(b[0]).squeeze(-1) - b[1]) ** 2).mean()},
                      optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                      after_step=lambda: grads.append(model.weight.detach().clone()))
        torch.manual_seed(5)
        StageTrainer(accelerator=accelerator, progress=False).run_stage("a", 3, lambda: stage)
        return grads

    for a, b in zip(run(1), run(2)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_bad_budgets_and_batches_are_config_errors(accelerator):
    trainer = StageTrainer(accelerator=accelerator, progress=False)
    with pytest.raises(ConfigError, match="steps=-1"):
        trainer.run_stage("a", -1, lambda: None)
    assert trainer.run_stage("a", 0, lambda: pytest.fail("built")).steps == 0
    stage = dataclasses.replace(make_stage(fresh_model()), batch_size=8, accumulation=3)
    with pytest.raises(ConfigError, match="not divisible"):
        trainer.run_stage("a", 2, lambda: stage)
    frozen = fresh_model().requires_grad_(False)
    with pytest.raises(ConfigError, match="trains no parameter"):
        trainer.run_stage("a", 2, lambda: make_stage(frozen))
    both = dataclasses.replace(make_stage(fresh_model()), ema=lambda p: None)
    with pytest.raises(ConfigError, match="either its EMA or its best"):
        trainer.run_stage("a", 2, lambda: both)
    outside = dataclasses.replace(make_stage(fresh_model()), params=list(nn.Linear(2, 2).parameters()))
    with pytest.raises(ConfigError, match="outside Stage.model"):
        trainer.run_stage("a", 2, lambda: outside)


def test_a_damaged_or_foreign_checkpoint_is_a_clear_error(tmp_path, accelerator):
    train(tmp_path, accelerator)
    other = nn.Linear(2, 2)
    trainer = StageTrainer(accelerator=accelerator, modules={"toy": other}, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="does not match the checkpoint"):
        trainer.run_stage("a", 23, lambda: None)
    (tmp_path / "a.final" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        StageTrainer(accelerator=accelerator, modules={"toy": fresh_model()}, checkpoint_dir=tmp_path,
                     progress=False).run_stage("a", 23, lambda: None)


def test_rng_state_round_trip_through_weights_only_load(tmp_path):
    import random

    import numpy as np

    g = torch.Generator().manual_seed(1)
    torch.save(get_rng_state([g]), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.rand(2), random.random(), torch.rand(2, generator=g))
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), [g])
    again = (torch.rand(3), np.random.rand(2), random.random(), torch.rand(2, generator=g))
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2] and torch.equal(expected[3], again[3])


# ----------------------------------------------------------------------------- config validation
@dataclasses.dataclass
class _Cfg:
    steps: int = at_least(0, 10)
    p: float = in_range(0.0, 1.0, 0.5, high_open=True)


def test_field_metadata_validation_names_field_value_and_rule():
    validate_fields(_Cfg(), "toy")
    with pytest.raises(ConfigError, match=r"toy: steps=-1 must be ≥ 0"):
        validate_fields(_Cfg(steps=-1), "toy")
    with pytest.raises(ConfigError, match=r"toy: p=1.0 must be in \[0, 1\)"):
        validate_fields(_Cfg(p=1.0), "toy")


@pytest.mark.parametrize("name", ["synapse", "dreamdiffusion", "brainvis", "gwit"])
def test_every_method_accepts_the_same_samplers(name):
    from eegbench.plugins import get_plugin_manager

    cls = get_plugin_manager().methods.get(name)
    for sampler in GENERATION_SAMPLERS:
        apply_overrides(cls.default_config(), {"sampler": sampler}).validate()
    bad = apply_overrides(cls.default_config(), {"sampler": "ddpm"})
    with pytest.raises(ConfigError, match=rf"{name}: sampler='ddpm' is unknown; known: ddim, dpm-solver\+\+, plms, unipc"):
        bad.validate()
    with pytest.raises(ConfigError, match="must be ≥ 0"):
        steps_field = next(f.name for f in dataclasses.fields(cls.Config) if f.name.endswith("_steps"))
        apply_overrides(cls.default_config(), {steps_field: "-3"}).validate()
