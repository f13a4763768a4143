"""Evaluation protocol hashing and per-image seeds."""

from dataclasses import replace

from eegbench.protocol import EvalProtocol, image_seed


def test_protocol_hash_stable_and_ignores_seed():
    p = EvalProtocol()
    assert p.hash() == EvalProtocol().hash()
    assert replace(p, seed=5).hash() == p.hash()
    assert replace(p, num_inference_steps=50).hash() != p.hash()
    assert replace(p, n_samples_per_trial=4).hash() != p.hash()
    assert replace(p, max_test_trials=16).hash() != p.hash()  # quick runs never share a table


def test_image_seed_depends_on_seed_trial_and_sample_only():
    a = image_seed(0, "s01/r1/e0001", 0)
    assert a == image_seed(0, "s01/r1/e0001", 0)
    assert len({a, image_seed(1, "s01/r1/e0001", 0), image_seed(0, "s01/r1/e0002", 0),
                image_seed(0, "s01/r1/e0001", 1)}) == 4
    assert 0 <= a < 2**63


# ---- every scoring choice is a field; overrides of sampler / guidance ----------------------------

import dataclasses

import pytest

from eegbench.errors import ConfigError
from eegbench.protocol import protocol_differences
from eegbench.runner import apply_protocol_to_config


def test_protocol_holds_every_scoring_choice_with_paper_defaults():
    p = EvalProtocol()
    assert (p.n_way, p.n_way_trials, p.top_k, p.is_splits) == (50, 50, 1, 10)
    assert p.reference == "one-gt-per-test-trial"
    assert p.sampler is None and p.guidance_scale is None  # None = each method's published choice
    for name in ("n_samples_per_trial", "image_size", "num_inference_steps", "sampler", "guidance_scale",
                 "fid_feature_extractor", "inception_weights_sha256", "kid_subset_size", "is_feature_extractor",
                 "is_splits", "classifier", "classifier_weights_sha256", "n_way", "n_way_trials", "top_k", "seed"):
        assert name in p.to_dict()


@pytest.mark.parametrize("field,value", [
    ("sampler", "ddim"), ("guidance_scale", 7.5), ("n_way", 40), ("n_way_trials", 40), ("top_k", 5),
    ("is_splits", 1), ("classifier", "vit_h_14"), ("classifier_weights_sha256", "ab" * 32),
    ("inception_weights_sha256", "cd" * 32), ("fid_feature_extractor", "inception-v3-compat"),
    ("is_feature_extractor", "inception-v3-compat"), ("kid_subset_size", 100),
])
def test_every_scoring_field_changes_the_hash(field, value):
    p = EvalProtocol()
    assert dataclasses.replace(p, **{field: value}).hash() != p.hash()


def test_hash_is_deterministic_across_round_trips():
    p = EvalProtocol(sampler="ddim", guidance_scale=7.5, seed=3)
    again = EvalProtocol.from_dict({**p.to_dict(), "hash": p.hash()})
    assert again == p and again.hash() == p.hash()
    assert EvalProtocol(guidance_scale=7.5).hash() == EvalProtocol(guidance_scale=7.50).hash()
    assert len(p.hash()) == 16 and int(p.hash(), 16) >= 0


def test_protocol_differences_name_the_fields():
    a = EvalProtocol().to_dict()
    b = EvalProtocol(n_way=40, sampler="ddim", seed=9).to_dict()
    diffs = protocol_differences(a, b)
    assert [d.split(":")[0] for d in diffs] == ["n_way", "sampler"]  # seed is not a difference
    assert protocol_differences(a, dict(a)) == []


@dataclasses.dataclass
class _Cfg:
    sampler: str = "plms"
    guidance_scale: float = 3.0
    steps: int = 10

    def validate(self):
        if self.guidance_scale < 1:
            raise ConfigError(f"guidance_scale={self.guidance_scale} must be ≥ 1")


@dataclasses.dataclass
class _NoSampler:
    guidance_scale: float = 3.0


def test_protocol_overrides_sampler_and_guidance_of_the_method_config():
    cfg = _Cfg()
    assert apply_protocol_to_config(cfg, "m") is cfg  # None = the method's own choice
    new = apply_protocol_to_config(cfg, "m", sampler="ddim", guidance_scale=7.5)
    assert (new.sampler, new.guidance_scale, new.steps) == ("ddim", 7.5, 10)
    assert cfg.sampler == "plms"  # the original is untouched
    with pytest.raises(ConfigError, match="guidance_scale=0.5"):
        apply_protocol_to_config(cfg, "m", guidance_scale=0.5)


def test_protocol_sampler_on_a_method_without_the_field_is_a_config_error():
    with pytest.raises(ConfigError, match="method 'nos' has no 'sampler'"):
        apply_protocol_to_config(_NoSampler(), "nos", sampler="ddim")
    assert apply_protocol_to_config(_NoSampler(), "nos", guidance_scale=2).guidance_scale == 2.0
