"""Does a method use the EEG? The shuffled-EEG control, the references and the decoding ceiling, end to end.

The runs go through :func:`eegbench.runner.run` on the ``synthetic`` dataset. The shared denoiser is
replaced by a stand-in that renders the training stimulus of the prompted class (plus seeded noise),
so the class a method passes on is exactly what the probe sees, in seconds: the test is about the
harness's controls, not about a denoiser's quality. A test-local method decodes the class from the
EEG with shrinkage LDA and prompts that denoiser; ``class-prior`` and ``oracle-class`` are the real
built-in references.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from conftest import WEIGHTS_ROOT
from eegbench import hookimpl
from eegbench.backbones import Backbones
from eegbench.method import Method

pytestmark = pytest.mark.skipif(not (WEIGHTS_ROOT / "taef2" / "taef2_encoder.pth").is_file(),
                                reason=f"TAEF2 weights absent under {WEIGHTS_ROOT} (set EEGBENCH_WEIGHTS)")


class RenderingDenoiser:
    """Stand-in shared denoiser: the first training stimulus of the prompted class, plus seeded noise."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, class_names) -> None:
        self.class_names = tuple(class_names)
        n = len(self.class_names)
        self.prototypes = torch.stack([torch.from_numpy(images[np.flatnonzero(labels == c)[0]]) for c in range(n)])
        self.class_tokens = torch.eye(n)[:, None, :]  # (n_classes, 1 token, n_classes)
        self.unet = nn.Linear(1, 1)  # something to count; never called
        self.image_size = int(images.shape[-1])

    def class_context(self, labels) -> torch.Tensor:
        return self.class_tokens[torch.as_tensor(np.asarray(labels)).long().reshape(-1)]

    def sample(self, context, generators, num_inference_steps=1, guidance_scale=1.0, **_):
        classes = context[:, 0].argmax(-1)
        out = [(self.prototypes[c].float() + 1.0 * torch.randn(self.prototypes[c].shape, generator=g)).clamp(0, 255)
               for c, g in zip(classes.tolist(), generators)]
        return torch.stack(out).to(torch.uint8)


class RenderingBackbones(Backbones):
    """The small profile's backbones with :class:`RenderingDenoiser` as the shared denoiser."""

    def prepare_denoiser(self, images, labels, class_names, *, dataset_key, seed=0):
        self._denoiser = RenderingDenoiser(np.asarray(images), np.asarray(labels), class_names)
        return self._denoiser


@dataclass
class LDAConfig:
    n_bins: int = 8


class LDAPrompt(Method):
    """Decode the class from the EEG with shrinkage LDA, prompt the shared denoiser with it."""

    name = "lda-prompt"
    paper = "test method"
    Config = LDAConfig
    stages = ("fit",)
    inference_components = ("unet",)

    def components(self):
        return {"unet": self.backbones.denoiser.unet}

    def state_components(self):
        return {}

    def configure_stage(self, stage):
        self.backbones.denoiser.unet.requires_grad_(False)

    def fit(self, train, val, ctx):
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        from eegbench.decoding import binned_features

        x = binned_features(train.eeg, self.config.n_bins)
        self.scale = x.std(axis=0) + 1e-30
        self.lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(x / self.scale, train.labels)

    def predict_classes(self, eeg):
        from eegbench.decoding import binned_features

        x = binned_features(eeg.cpu().numpy(), self.config.n_bins) / self.scale
        return torch.from_numpy(self.lda.predict(x).astype(np.int64))

    def generate(self, eeg, *, generators, n_samples, num_inference_steps, subject=None):
        den = self.backbones.denoiser
        classes = self.predict_classes(eeg)
        images = den.sample(den.class_context(classes.repeat_interleave(n_samples)), list(generators))
        return images.reshape(len(eeg), n_samples, *images.shape[1:])


class _Plugin:
    @staticmethod
    @hookimpl
    def eegbench_register_methods(registry):
        registry.add("lda-prompt", LDAPrompt, summary="test: LDA-decoded class prompt")


def _runs(tmp_path, monkeypatch, methods, **dataset_options):
    from eegbench.backbones.profiles import SmallBackboneProfile
    from eegbench.plugins import get_plugin_manager
    from eegbench.runner import RunConfig, run

    monkeypatch.setattr(SmallBackboneProfile, "backbones_class", RenderingBackbones)
    plugins = get_plugin_manager(extra_plugins=[_Plugin])
    options = {"n_trials": "32", **{k: str(v) for k, v in dataset_options.items()}}
    out = {}
    for method in methods:
        out[method] = run(RunConfig(method=method, dataset="synthetic", dataset_options=options,
                                    weights_root=WEIGHTS_ROOT, cache_dir=tmp_path / "cache",
                                    runs_dir=tmp_path / "runs", run_id=method, n_samples_per_trial=2,
                                    num_inference_steps=1, progress=False), plugins=plugins)
    return out


def _board(tmp_path):
    from eegbench.reports import compare
    from eegbench.results import load_results

    compare(load_results([tmp_path / "runs"]), tmp_path / "reports", protocol_hash=None, results_dir=tmp_path / "reports" / "results",
            formats=("markdown", "json"), figures=False)
    (path,) = (tmp_path / "reports").glob("leaderboard-synthetic*.json")
    board = json.loads(path.read_text())
    cells = {(c["method"], c["metric"]): c for c in board["cells"] if c["subject"] in ("", None)}
    (md,) = (tmp_path / "reports").glob("leaderboard-synthetic*.md")
    return cells, md.read_text(), board


@pytest.mark.e2e  # the longest end-to-end runs: `python -m pytest -m e2e` (CI runs them)
@pytest.mark.slow
def test_strong_class_signal_beats_its_shuffled_control_and_the_class_prior_and_stays_under_the_oracle(
        tmp_path, monkeypatch):
    res = _runs(tmp_path, monkeypatch, ["lda-prompt", "class-prior", "oracle-class"])
    acc = {m: r["metrics"]["probe_accuracy"]["value"] for m, r in res.items()}
    shuffled = res["lda-prompt"]["controls"]["shuffled_eeg"]
    acc_shuffled = shuffled["metrics"]["probe_accuracy"]["value"]
    assert acc["lda-prompt"] >= 0.9  # the EEG decodes (ceiling ≈ 1) and the method passes the class on
    assert acc_shuffled <= 0.75 and acc["class-prior"] <= 0.75
    assert acc["lda-prompt"] <= acc["oracle-class"] + 0.02
    # the permutation is within subject and no trial keeps its own EEG
    assert shuffled["n_own_eeg"] == 0 and shuffled["n_trials"] == len(res["lda-prompt"]["metrics"]["probe_accuracy"]
                                                                      ["per_trial_correct"])
    # references read no EEG: no shuffled control; the oracle is flagged as reading the test labels
    assert "skipped" in res["class-prior"]["controls"]["shuffled_eeg"]
    assert res["oracle-class"]["method"]["reads_test_labels"] is True
    assert res["class-prior"]["method"]["role"] == res["oracle-class"]["method"]["role"] == "reference"
    # the decoding ceiling and the method's own classifier are recorded
    assert res["lda-prompt"]["eeg_decoding"]["lda"]["balanced_accuracy"] >= 0.9
    assert res["lda-prompt"]["method_eeg_classifier"]["balanced_accuracy"] >= 0.9

    cells, md, board = _board(tmp_path)
    delta = cells[("lda-prompt", "probe_accuracy@delta")]
    assert delta["ci_low"] > 0 and delta["mean"] == pytest.approx(acc["lda-prompt"] - acc_shuffled)
    assert board["references"] == ["class-prior", "oracle-class"]
    assert "### References (not ranked)" in md and "EEG decoding ceiling" in md
    assert "## Does the method use the EEG?" in md
    # references are never ranked: no pairwise test involves them
    assert all("oracle-class" not in (p["a"], p["b"]) for p in board["pairs"])
    main_table = md.split("### References")[0]
    assert "| oracle-class" not in main_table and "| lda-prompt" in main_table


@pytest.mark.slow
def test_pure_noise_eeg_has_a_delta_within_its_interval_of_zero(tmp_path, monkeypatch):
    res = _runs(tmp_path, monkeypatch, ["lda-prompt"], signal_uv=0.0)
    assert res["lda-prompt"]["eeg_decoding"]["lda"]["ci_low"] <= 0.5 <= res["lda-prompt"]["eeg_decoding"]["lda"][
        "ci_high"]
    cells, _, _ = _board(tmp_path)
    delta = cells[("lda-prompt", "probe_accuracy@delta")]
    assert delta["ci_low"] <= 0.0 <= delta["ci_high"]
