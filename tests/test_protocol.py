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
