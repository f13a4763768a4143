"""Core-owned metrics, identical for every method.

- :mod:`eegbench.metrics.fidelity` — FID and KID through torch-fidelity on TF-Inception pool3
  features (:func:`compute_fid_kid`); registers the ``"inception-v3-tf-fidhelper"`` and
  ``"eegbench-tiny-test"`` feature extractors with torch-fidelity when imported.
- :mod:`eegbench.metrics.isc` — Inception Score through torch-fidelity (:func:`compute_is`): the
  standard IS with torch-fidelity's Inception weights, else an EfficientNet-Lite0 IS labelled as such;
  registers the ``"efficientnet-lite0-imagenet"`` and ``"eegbench-tiny-test-logits"`` extractors.
- :mod:`eegbench.metrics.nway` — the papers' n-way top-k accuracy, seeded, with its std
  (:func:`n_way_top_k_accuracy`, :func:`n_way_top_k_images`), ViT-H/14 or EfficientNet-Lite0.
- :mod:`eegbench.metrics.probe` — linear-probe class accuracy of generated images for datasets
  outside ImageNet's classes (:func:`probe_accuracy`, :func:`probe_accuracy_images`).
- :mod:`eegbench.metrics.image_level` — image-level reconstruction metrics for datasets with one
  stimulus per trial: 2-way identification on network features (:func:`two_way_identification`),
  SSIM (:func:`ssim`) and PixCorr (:func:`pixcorr`).
- :mod:`eegbench.metrics.features` — each scoring network once per distinct image, with per-image
  feature caches keyed by network and pixel digest (:func:`network_features`, :class:`FeatureNetwork`).
- :mod:`eegbench.metrics.protocol_metrics` — all of the above as :class:`eegbench.metric.Metric`
  plugins, registered by the core through ``eegbench_register_metrics``.

Names are resolved lazily, so ``import eegbench.metrics`` does not import torch-fidelity.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "compute_fid_kid": "eegbench.metrics.fidelity",
    "fid_kid_from_features": "eegbench.metrics.fidelity",
    "FeatureNetwork": "eegbench.metrics.features",
    "network_features": "eegbench.metrics.features",
    "register_feature_extractors": "eegbench.metrics.fidelity",
    "FIDHELPER_EXTRACTOR": "eegbench.metrics.fidelity",
    "TINY_TEST_EXTRACTOR": "eegbench.metrics.fidelity",
    "compute_is": "eegbench.metrics.isc",
    "is_from_logits": "eegbench.metrics.isc",
    "inception_score_numpy": "eegbench.metrics.isc",
    "n_way_top_k_accuracy": "eegbench.metrics.nway",
    "n_way_top_k_images": "eegbench.metrics.nway",
    "load_classifier": "eegbench.metrics.nway",
    "probe_accuracy": "eegbench.metrics.probe",
    "probe_accuracy_images": "eegbench.metrics.probe",
    "extract_features": "eegbench.metrics.probe",
    "two_way_identification": "eegbench.metrics.image_level",
    "ssim": "eegbench.metrics.image_level",
    "pixcorr": "eegbench.metrics.image_level",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'eegbench.metrics' has no attribute {name!r}")
