"""The core's protocol metrics as :class:`eegbench.metric.Metric` plugins.

Registered by :mod:`eegbench.builtin` through ``eegbench_register_metrics`` exactly like a third
party's metrics, and scored by :func:`eegbench.evaluate.score_images` from the protocol's list
(:data:`eegbench.protocol.DEFAULT_METRICS`):

- ``fid``, ``kid`` — torch-fidelity formulas on TF-Inception pool3 (:mod:`eegbench.metrics.fidelity`);
- ``is`` — Inception Score, 10 splits, generated images only (:mod:`eegbench.metrics.isc`; labelled
  honestly when computed from EfficientNet-Lite0 logits);
- ``nway_topk`` — 50-way top-1 accuracy (:mod:`eegbench.metrics.nway`), ImageNet-class datasets;
- ``probe_accuracy`` — class accuracy of a probe fitted on the training stimuli
  (:mod:`eegbench.metrics.probe`), with balanced accuracy and the predicted-class distribution;
- ``two_way_inception``, ``two_way_effnet``, ``ssim``, ``pixcorr`` — image-level reconstruction
  metrics (:mod:`eegbench.metrics.image_level`) for datasets with one stimulus per trial.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from eegbench.metric import Metric
from eegbench.scoring import ScoringInputs

__all__ = ["FID", "IS", "KID", "NWayTopK", "PixCorr", "ProbeAccuracy", "SSIM", "TwoWayEfficientNet",
           "TwoWayInception", "trial_ids_sha256"]


def trial_ids_sha256(trial_ids) -> str:
    """sha256 of the test trial ids in order: per-trial lists of two runs line up when equal."""
    return hashlib.sha256("\n".join(str(t) for t in trial_ids).encode()).hexdigest()


def _fid_kid(inputs: ScoringInputs) -> dict[str, Any]:
    from eegbench.metrics import fidelity

    def compute():
        gen = inputs.features("fid", "generated")
        ref = inputs.features("fid", "reference")
        p = inputs.protocol
        return fidelity.fid_kid_from_features(gen, ref, seed=p.seed,
                                              kid_subset_size=min(p.kid_subset_size, len(gen), len(ref)))
    return inputs.memo("fid_kid", compute)


class FID(Metric):
    """Fréchet Inception Distance (Heusel et al. 2017), torch-fidelity's formula on TF-Inception pool3
    features: generated images vs one ground-truth image per test trial."""

    key = "fid"
    label = "FID"
    higher_is_better = False
    needs = ("generated", "reference")
    decimals = 2

    def compute(self, inputs: ScoringInputs) -> dict[str, Any]:
        fk = _fid_kid(inputs)
        net, _, sha = inputs.network("fid")
        return {"value": fk["fid"], "n_gen": fk["n_gen"], "n_ref": fk["n_ref"], "feature_extractor": net.name,
                "weights_sha256": sha}


class KID(Metric):
    """Kernel Inception Distance (Bińkowski et al. 2018): torch-fidelity's unbiased MMD² with the
    cubic polynomial kernel over 100 seeded subsets, on the FID features."""

    key = "kid"
    label = "KID ×10³"
    higher_is_better = False
    needs = ("generated", "reference")
    decimals = 2
    scale = 1e3

    def compute(self, inputs: ScoringInputs) -> dict[str, Any]:
        fk = _fid_kid(inputs)
        net, _, _ = inputs.network("fid")
        return {"value": fk["kid_mean"], "std": fk["kid_std"], "std_kind": "kid_subsets",
                "subset_size": fk["kid_subset_size"], "n_gen": fk["n_gen"], "n_ref": fk["n_ref"],
                "feature_extractor": net.name}


class IS(Metric):
    """Inception Score (Salimans et al. 2016) of the generated images, torch-fidelity's formula, 10
    splits. Computed from EfficientNet-Lite0 logits when the standard Inception weights are not
    given, and then labelled as not comparable to a published IS."""

    key = "is"
    label = "IS"
    higher_is_better = True
    needs = ("generated",)
    decimals = 2

    def title(self, inputs: ScoringInputs) -> str:
        from eegbench.metrics import isc

        return isc.IS_LABELS[inputs.protocol.is_feature_extractor]

    def compute(self, inputs: ScoringInputs) -> dict[str, Any]:
        from eegbench.metrics import isc

        p = inputs.protocol
        logits = inputs.features("is", "generated")
        mean, std, used = isc.is_from_logits(logits, splits=p.is_splits, seed=p.seed)
        _, _, sha = inputs.network("is")
        rec = isc.is_record(p.is_feature_extractor, mean, std, used, len(logits), sha)
        rec["variant"] = rec.pop("key")
        rec.pop("label", None)
        return {**rec, "std_kind": "is_splits"}


class NWayTopK(Metric):
    """n-way top-k accuracy (50-way top-1 over 50 seeded draws; ``research/methods.md`` §2.2): an
    ImageNet classifier's logits of a generated image, restricted to the class of its ground-truth
    image and n − 1 random other classes."""

    key = "nway_topk"
    label = "n-way top-k acc."
    higher_is_better = True
    needs = ("generated", "reference", "imagenet_classes")
    interval = "trials"

    def title(self, inputs: ScoringInputs) -> str:
        p = inputs.protocol
        return f"{p.n_way}-way top-{p.top_k} acc. ({p.classifier})"

    def compute(self, inputs: ScoringInputs) -> dict[str, Any]:
        from eegbench.metrics import nway

        p = inputs.protocol
        classifier = inputs.n_way_classifier()
        acc = nway.n_way_top_k_images(
            classifier, inputs.generated, inputs.reference, n_way=p.n_way, top_k=p.top_k,
            n_trials=p.n_way_trials, seed=p.seed, reference_labels=inputs.labels, wnids=inputs.wnids,
            progress=inputs.progress,
        )
        return {**acc, "trial_ids_sha256": trial_ids_sha256(inputs.trial_ids),
                "classifier": getattr(classifier, "name", p.classifier),
                "classifier_weights_sha256": getattr(classifier, "weights_sha256", p.classifier_weights_sha256)}


class ProbeAccuracy(Metric):
    """Class accuracy of the generated images under a logistic-regression probe fitted on frozen
    EfficientNet-Lite0 features of the training stimuli, with balanced accuracy, majority-class
    chance and the predicted-class distribution (a collapse onto one class shows there)."""

    key = "probe_accuracy"
    label = "Class acc. (probe)"
    higher_is_better = True
    needs = ("generated", "reference", "labels", "training_stimuli", "test_classes_in_training")
    interval = "trials"

    def compute(self, inputs: ScoringInputs) -> dict[str, Any]:
        from eegbench.metrics.features import image_digests
        from eegbench.metrics.probe import probe_accuracy

        s = inputs.n_samples
        f_gen = inputs.features("probe", "generated")
        f_ref = inputs.features("probe", "reference")
        f_train = inputs.features("probe", "training")
        labels = np.asarray(inputs.labels)
        probe = probe_accuracy(
            f_train.numpy(), np.asarray(inputs.train_labels), f_gen.numpy(), np.repeat(labels, s),
            n_classes=inputs.n_classes, seed=inputs.protocol.seed, reference_features=f_ref.numpy(),
            reference_labels=labels, gen_trial_ids=np.repeat(np.asarray(list(inputs.trial_ids)), s),
        )
        in_training = inputs.memo("reference_in_probe_training", lambda: bool(
            set(image_digests(inputs._images("reference"))) <= set(image_digests(inputs._images("training")))))
        return {
            "value": probe["accuracy"], "std": probe.get("accuracy_std"), "std_kind": probe.get("accuracy_std_kind"),
            "chance": probe["chance"], "majority_chance": probe.get("majority_chance"),
            "reference_accuracy": probe.get("reference_accuracy"),
            "probe_train_accuracy": probe.get("probe_train_accuracy"), "n": probe["n"],
            "classifier": inputs.protocol.probe, "n_trials": probe.get("n_trials"),
            "per_trial_correct": probe["per_trial_correct"], "per_trial_total": probe["per_trial_total"],
            "trial_ids_sha256": trial_ids_sha256(inputs.trial_ids),
            "balanced_accuracy": probe["balanced_accuracy"], "predicted_distribution": probe["predicted_distribution"],
            # the probe is fitted on the training stimuli; where the test trials show those same images
            # (eegnb-*), its accuracy on them is a fit, not a ceiling
            "reference_in_probe_training": in_training,
        }


class _TwoWay(Metric):
    """2-way identification (MindEye, Scotti et al. 2023; Ozcelik & VanRullen 2023): the share of
    other test trials whose ground-truth features correlate less with a generated image's features
    than its own ground truth's do; chance 0.5. Trials showing the same stimulus image are not
    counted as others."""

    higher_is_better = True
    needs = ("generated", "reference", "image_level_stimuli")
    interval = "trials"
    network = ""

    def compute(self, inputs: ScoringInputs) -> dict[str, Any]:
        from eegbench.metrics.image_level import two_way_identification

        t, s = inputs.generated.shape[:2]
        gen = inputs.features(self.network, "generated").numpy().reshape(t, s, -1)
        ref = inputs.features(self.network, "reference").numpy()
        groups = list(inputs.image_ids) if inputs.image_ids else None
        net, _, sha = inputs.network(self.network)
        res = two_way_identification(gen, ref, reference_groups=groups)
        return {**res, "chance": 0.5, "feature_extractor": net.name, "weights_sha256": sha,
                "trial_ids_sha256": trial_ids_sha256(inputs.trial_ids)}


class TwoWayInception(_TwoWay):
    __doc__ = _TwoWay.__doc__ + " Features: TF-Inception pool3 (2048-d, the FID features)."
    key = "two_way_inception"
    label = "2-way id. (Inception pool3)"
    network = "fid"


class TwoWayEfficientNet(_TwoWay):
    __doc__ = _TwoWay.__doc__ + " Features: EfficientNet-Lite0 pooled (1280-d, the probe features)."
    key = "two_way_effnet"
    label = "2-way id. (EfficientNet-Lite0)"
    needs = ("generated", "reference", "image_level_stimuli", "training_stimuli")
    network = "probe"


class _PixelMetric(Metric):
    """A per-trial comparison of each generated image with its trial's ground truth at the protocol
    size; subclasses name the function of :mod:`eegbench.metrics.image_level` that computes it."""

    higher_is_better = True
    needs = ("generated", "reference", "image_level_stimuli")
    interval = "trials"
    #: Name of the function in :mod:`eegbench.metrics.image_level`: ``(generated, reference) -> dict``.
    function = ""

    def compute(self, inputs: ScoringInputs) -> dict[str, Any]:
        from eegbench.metrics import image_level

        score = getattr(image_level, self.function)(inputs.generated, inputs.reference)
        return {**score, "trial_ids_sha256": trial_ids_sha256(inputs.trial_ids)}


class SSIM(_PixelMetric):
    """Structural similarity (Wang et al. 2004) of each generated image with its ground truth, on
    grayscale images at the protocol size (scikit-image, Gaussian weights σ = 1.5, as MindEye)."""

    key = "ssim"
    label = "SSIM"
    function = "ssim"


class PixCorr(_PixelMetric):
    """Pixel correlation: Pearson correlation of the flattened RGB pixels of each generated image
    and its ground truth at the protocol size (MindEye's PixCorr)."""

    key = "pixcorr"
    label = "PixCorr"
    function = "pixcorr"
