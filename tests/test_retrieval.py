"""Zero-shot retrieval metrics (:mod:`eegbench.metrics.retrieval`), the protocol additions of a
dataset, and the embeddings file of a run."""

from __future__ import annotations

import numpy as np
import pytest

from eegbench.data import DatasetInfo
from eegbench.errors import DataFormatError
from eegbench.evaluate import score_images
from eegbench.metrics.retrieval import (
    RETRIEVAL_METRICS,
    class_retrieval,
    image_retrieval,
    kway_retrieval,
    read_retrieval_embeddings,
    write_retrieval_embeddings,
)
from eegbench.protocol import EvalProtocol
from eegbench.runner import dataset_protocol


def _orthonormal(n, d=None):
    """Exactly orthonormal rows (unit vectors), so that every tie below is exact."""
    return np.eye(d or n)[:n]


def test_image_retrieval_is_exact_for_perfect_and_known_permuted_embeddings():
    cand = _orthonormal(6)
    own = np.arange(6)
    assert image_retrieval(cand, cand, own, k=1)["value"] == 1.0
    # every trial points at the next image: top-1 never hits; for top-5 the own image ties with 4
    # others behind that one, so it is in the top 5 with probability 4/5
    shifted = cand[(own + 1) % 6]
    assert image_retrieval(shifted, cand, own, k=1)["value"] == 0.0
    res = image_retrieval(shifted, cand, own, k=5)
    assert res["value"] == pytest.approx(0.8) and res["chance"] == pytest.approx(5 / 6) and res["n_way"] == 6


def test_a_constant_embedding_scores_exactly_chance_not_one():
    cand = _orthonormal(8, 10)
    const = np.ones((8, 10))  # the same similarity to every candidate: ties broken uniformly at random
    assert image_retrieval(const, cand, np.arange(8), k=1)["value"] == pytest.approx(1 / 8)
    flat = np.zeros((8, 10))  # zero vectors: every similarity ties at 0
    assert image_retrieval(flat, cand, np.arange(8), k=1)["value"] == pytest.approx(1 / 8)
    assert image_retrieval(flat, cand, np.arange(8), k=5)["value"] == pytest.approx(5 / 8)


def test_class_retrieval_leaves_out_the_trials_own_image():
    cand = _orthonormal(4)  # classes 0: images 0, 1; class 1: images 2, 3; all orthogonal
    classes = np.array([0, 0, 1, 1])
    own = np.arange(4)
    # the EEG equals the own image: image retrieval is perfect ...
    assert image_retrieval(cand, cand, own, k=1)["value"] == 1.0
    # ... but the class's *other* image is orthogonal to it, as is the other class: a tie, 0.5
    res = class_retrieval(cand, cand, own, classes, k=1)
    assert res["value"] == pytest.approx(0.5) and res["n_way"] == 2 and res["n_trials_scored"] == 4
    # EEG pointing at the class's other image finds the class every time
    other = cand[[1, 0, 3, 2]]
    assert class_retrieval(other, cand, own, classes, k=1)["value"] == 1.0


def test_class_retrieval_is_skipped_with_one_test_image_per_class_and_scores_the_rest():
    cand = _orthonormal(3)
    res = class_retrieval(cand, cand, np.arange(3), np.array([0, 1, 2]), k=1)
    assert res["value"] is None and "single test image" in res["skipped"]
    part = class_retrieval(cand[[1, 0, 2]], cand, np.arange(3), np.array([0, 0, 1]), k=1)
    assert part["n_trials_scored"] == 2 and part["value"] == 1.0  # the lone class-1 trial is not scored


def test_kway_retrieval_is_seeded_exact_for_perfect_and_chance_for_flat_embeddings():
    cand = _orthonormal(10)
    classes = np.arange(10)
    own = np.arange(10)
    for k in (2, 4):
        assert kway_retrieval(cand, cand, own, classes, k=k, n_draws=20, seed=0)["value"] == 1.0
        flat = kway_retrieval(np.zeros((10, 10)), cand, own, classes, k=k, n_draws=20, seed=0)
        assert flat["value"] == pytest.approx(1 / k) and flat["chance"] == pytest.approx(1 / k)
    noisy = cand + np.random.default_rng(1).standard_normal((10, 10))
    a = kway_retrieval(noisy, cand, own, classes, k=4, n_draws=30, seed=3)
    b = kway_retrieval(noisy, cand, own, classes, k=4, n_draws=30, seed=3)
    assert a == b
    # distractors come from other classes only: with two classes a 4-way draw is impossible
    two = kway_retrieval(noisy[:4], cand[:4], own[:4], np.array([0, 0, 1, 1]), k=4, n_draws=5, seed=0)
    assert two["value"] is None and "fewer than 3" in two["skipped"]


def test_bad_embeddings_are_one_line_errors():
    cand = _orthonormal(4)
    with pytest.raises(DataFormatError, match="width"):
        image_retrieval(np.ones((4, 3)), cand, np.arange(4), k=1)
    with pytest.raises(DataFormatError, match="NaN"):
        image_retrieval(np.full((4, 4), np.nan), cand, np.arange(4), k=1)
    with pytest.raises(DataFormatError, match="own-image index"):
        image_retrieval(cand, cand, np.array([0, 1, 2, 9]), k=1)


def _score(eeg_embeddings, stimulus_embeddings, image_ids, labels, stimulus_ids):
    t = len(image_ids)
    generated = np.zeros((t, 1, 3, 16, 16), dtype=np.uint8)
    protocol = EvalProtocol(image_size=16, metrics=RETRIEVAL_METRICS, n_way_trials=10)
    return score_images(generated, generated[:, 0], protocol=protocol, labels=np.asarray(labels),
                        trial_ids=[f"t{i}" for i in range(t)], n_classes=int(max(labels)) + 1, cache_dir="/nonexistent",
                        reference_cache_name=None, image_ids=image_ids, stimulus_level="image", progress=False,
                        eeg_embeddings=eeg_embeddings, stimulus_embeddings=stimulus_embeddings,
                        stimulus_ids=stimulus_ids)


def test_scoring_titles_the_candidates_and_reports_methods_without_embeddings():
    cand = _orthonormal(5)
    ids = ["b", "a", "c", "e", "d"]  # trials in another order than the sorted stimulus ids
    rows = [1, 0, 2, 4, 3]
    metrics = _score(cand[rows], cand, ids, [0, 1, 2, 3, 4], ["a", "b", "c", "d", "e"])
    assert metrics["retrieval_top1"]["value"] == 1.0
    assert metrics["retrieval_top1"]["label"] == "5-way top-1 retrieval (image)"
    assert metrics["retrieval_4way"]["label"] == "4-way retrieval (image)" and metrics["retrieval_4way"]["value"] == 1.0
    assert "single test image" in metrics["retrieval_class_top1"]["skipped"]
    assert len(metrics["retrieval_top5"]["per_trial"]) == 5 and metrics["retrieval_top5"]["interval"] == "trials"
    none = _score(None, None, ids, [0, 1, 2, 3, 4], [])
    for key in RETRIEVAL_METRICS:
        assert none[key]["value"] is None and none[key]["skipped"].startswith("not reported")
    assert none["retrieval_top1"]["label"] == "5-way top-1 retrieval (image)"  # same column as a method with one


def test_dataset_protocol_adds_metrics_and_test_eeg_and_leaves_other_datasets_unchanged():
    base = EvalProtocol()
    plain = DatasetInfo(name="x", version="1", n_chans=1, n_times=2, sfreq=1.0, ch_names=("a",), unit="V",
                        class_names=("c",))
    assert dataset_protocol(base, plain) is base
    things = DatasetInfo(name="y", version="1", n_chans=1, n_times=2, sfreq=1.0, ch_names=("a",), unit="a.u.",
                         class_names=("c",), protocol_metrics=RETRIEVAL_METRICS, test_eeg="mean of 80 repetitions")
    p = dataset_protocol(base, things)
    assert p.metrics == base.metrics + RETRIEVAL_METRICS and p.test_eeg == "mean of 80 repetitions"
    single = dataset_protocol(base, DatasetInfo(**{**things.__dict__, "test_eeg": "single trial"}))
    assert p.hash() != single.hash() != base.hash()
    assert dataset_protocol(p, things) == p  # applying it twice adds nothing


def test_embeddings_file_round_trip_reorders_trials(tmp_path):
    eeg = np.arange(12, dtype=np.float32).reshape(4, 3)
    stim = np.ones((2, 3), dtype=np.float32)
    path = tmp_path / "retrieval" / "embeddings.safetensors"
    write_retrieval_embeddings(path, eeg, stim, trial_ids=["a", "b", "c", "d"], stimulus_ids=["x", "y"])
    back = read_retrieval_embeddings(path, ["c", "a"])
    assert np.array_equal(back["eeg"], eeg[[2, 0]]) and back["stimulus_ids"] == ["x", "y"]
    with pytest.raises(DataFormatError, match="no EEG embedding of trial 'z'"):
        read_retrieval_embeddings(path, ["z"])
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
    with pytest.raises(DataFormatError, match="unreadable"):
        read_retrieval_embeddings(tmp_path / "bad.safetensors", ["a"])


def test_kway_distractors_are_distinct_and_uniform():
    from eegbench.metrics.retrieval import _distinct_positions

    picks = _distinct_positions(np.random.default_rng(0), 5, (4000, 5), 3)
    assert picks.shape == (4000, 5, 3) and picks.min() == 0 and picks.max() == 4
    assert all(len(set(row)) == 3 for row in picks.reshape(-1, 3))
    share = np.bincount(picks.reshape(-1), minlength=5) / picks.reshape(-1, 3).shape[0]
    np.testing.assert_allclose(share, 3 / 5, atol=0.02)  # each position in 3 of 5 draws (σ ≈ 0.003)
