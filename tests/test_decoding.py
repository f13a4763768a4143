"""EEG decoding ceiling: shrinkage LDA on binned epochs, balanced accuracy with a bootstrap interval."""

from __future__ import annotations

import numpy as np
import pytest

from eegbench.decoding import XDAWN_MAX_DIM, binned_features, decoding_ceiling, eeg_decoding, xdawn_tangent_space
from eegbench.errors import ConfigError, DataFormatError


def epochs(n, signal, seed):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 4, 64)) * 1e-5  # volts
    x[:, 1, 20:40] += signal * 1e-5 * (2 * y[:, None] - 1)  # class-dependent deflection on one channel
    return x.astype(np.float32), y


def test_binned_features_average_consecutive_windows():
    x = np.arange(2 * 3 * 6, dtype=np.float32).reshape(2, 3, 6)
    f = binned_features(x, 3)
    assert f.shape == (2, 9) and f.dtype == np.float64
    np.testing.assert_allclose(f[0, :3], [0.5, 2.5, 4.5])  # channel 0: (0+1)/2, (2+3)/2, (4+5)/2
    with pytest.raises(ConfigError, match="n_bins=7"):
        binned_features(x, 7)
    with pytest.raises(DataFormatError, match="n_trials, n_chans, n_times"):
        binned_features(x[0], 2)


def test_strong_class_signal_decodes_far_above_chance():
    (xtr, ytr), (xte, yte) = epochs(200, 1.0, 0), epochs(200, 1.0, 1)
    out = decoding_ceiling(xtr, ytr, xte, yte, n_classes=2)
    assert out["balanced_accuracy"] > 0.9 and out["ci_low"] > 0.8 and out["ci_high"] <= 1.0
    assert out["chance"] == 0.5 and out["n_test"] == 200 and out["n_features"] == 40
    assert sum(out["predicted_distribution"]) == pytest.approx(1.0)


def test_pure_noise_stays_at_chance_within_its_interval():
    (xtr, ytr), (xte, yte) = epochs(300, 0.0, 2), epochs(300, 0.0, 3)
    out = decoding_ceiling(xtr, ytr, xte, yte, n_classes=2)
    assert out["ci_low"] < 0.5 < out["ci_high"] and abs(out["balanced_accuracy"] - 0.5) < 0.1
    assert out == decoding_ceiling(xtr, ytr, xte, yte, n_classes=2)  # seeded


def test_decoding_rejects_bad_labels():
    (xtr, ytr), (xte, yte) = epochs(20, 1.0, 0), epochs(20, 1.0, 1)
    with pytest.raises(DataFormatError, match="single class"):
        decoding_ceiling(xtr, np.zeros_like(ytr), xte, yte, n_classes=2)
    with pytest.raises(DataFormatError, match=r"lie in \[0, 2\)"):
        decoding_ceiling(xtr, ytr, xte, yte + 5, n_classes=2)


def test_cli_prints_the_ceiling_of_a_split(tmp_path, capsys):
    import json

    from eegbench.cli import main

    assert main(["data", "ceiling", "synthetic", "--cache-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"]["setting"] == "multi-subject" and out["lda"]["classifier"] == "shrinkage-lda-binned"
    assert out["lda"]["balanced_accuracy"] > out["lda"]["chance"]  # the synthetic EEG carries its class
    assert out["xdawn_ts"]["balanced_accuracy"] > out["xdawn_ts"]["chance"] and out["best"] in ("lda", "xdawn_ts")
    assert main(["data", "ceiling", "synthetic", "--cache-dir", str(tmp_path), "--n-bins", "0"]) == 2


def test_xdawn_tangent_space_decodes_a_strong_signal_and_stays_at_chance_on_noise():
    (xtr, ytr), (xte, yte) = epochs(200, 1.0, 0), epochs(200, 1.0, 1)
    out = xdawn_tangent_space(xtr, ytr, xte, yte, n_classes=2)
    assert out["classifier"] == "xdawn-covariances-tangent-space-logreg" and out["balanced_accuracy"] > 0.9
    (ntr, nytr), (nte, nyte) = epochs(300, 0.0, 2), epochs(300, 0.0, 3)
    noise = xdawn_tangent_space(ntr, nytr, nte, nyte, n_classes=2)
    assert noise["ci_low"] < 0.5 < noise["ci_high"]
    both = eeg_decoding(xtr, ytr, xte, yte, n_classes=2)
    assert both["lda"] == decoding_ceiling(xtr, ytr, xte, yte, n_classes=2) and both["xdawn_ts"] == out


def test_xdawn_is_skipped_with_the_reason_when_the_covariances_are_too_large():
    (xtr, ytr), (xte, yte) = epochs(20, 1.0, 0), epochs(20, 1.0, 1)
    out = xdawn_tangent_space(xtr, ytr, xte, yte, n_classes=XDAWN_MAX_DIM)
    assert "balanced_accuracy" not in out and "exceed" in out["skipped"]
    assert eeg_decoding(xtr, ytr, xte, yte, n_classes=2)["best"] in ("lda", "xdawn_ts")


def test_a_zero_shot_split_has_no_ceiling():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 2, 16))
    with pytest.raises(DataFormatError, match="2 test class\\(es\\) have no training trial \\(a zero-shot split\\)"):
        eeg_decoding(x[:20], np.repeat([0, 1], 10), x[20:], np.repeat([2, 3], 10), n_classes=4)
