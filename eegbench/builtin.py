"""Core plugin: built-in datasets, settings, metrics and backbones.

Registered by :func:`eegbench.plugins.get_plugin_manager` like any plugin (it can be read as an
example). Methods are *not* here: built-in methods live in ``methods/`` and come in through the
``eegbench`` entry-point group exactly like third-party plugins.
"""

from __future__ import annotations

from eegbench import hookimpl


@hookimpl
def eegbench_register_datasets(registry):
    registry.add("eegnb-n170", "eegbench.datasets.eegnb:EEGNotebooksN170",
                 summary="Muse 4-channel N170 faces vs houses, 5 subjects, 256 Hz (eeg-notebooks)")
    registry.add("synthetic", "eegbench.datasets.synthetic:SyntheticEEG",
                 summary="class-dependent synthetic EEG + procedural images, for tests and plugin authors")


@hookimpl
def eegbench_register_settings(registry):
    registry.add("multi-subject", "eegbench.splits:multi_subject",
                 summary="all subjects pooled; whole recordings to train/val/test")
    registry.add("single-subject", "eegbench.splits:single_subject",
                 summary="one subject (--subject N); whole recordings to train/val/test")
    registry.add("cross-subject", "eegbench.splits:cross_subject",
                 summary="leave one subject out (--subject N is the test subject)")


@hookimpl
def eegbench_register_metrics(registry):
    registry.add("fid", "eegbench.metrics.fidelity:compute_fid_kid",
                 summary="Frechet Inception Distance, TF-Inception pool3 via torch-fidelity (lower is better)")
    registry.add("kid", "eegbench.metrics.fidelity:compute_fid_kid",
                 summary="Kernel Inception Distance, TF-Inception pool3 via torch-fidelity (lower is better)")
    registry.add("probe-accuracy", "eegbench.metrics.probe:probe_accuracy_images",
                 summary="class accuracy of generated images by a probe fitted on training stimuli (higher is better)")


@hookimpl
def eegbench_register_backbones(registry):
    registry.add("taef2", "eegbench.backbones.taef2:TAEF2",
                 summary="vae: TAESD-family tiny autoencoder, FLUX.2 variant, 32-ch latents at 1/8")
    registry.add("small-unet", "eegbench.backbones.denoiser:prepare_denoiser",
                 summary="denoiser: small UNet2DConditionModel pretrained once per dataset on its stimuli")
    registry.add("efficientnet-lite0", "eegbench.backbones.embedders:EfficientNetLite0Features",
                 summary="image_embedder: ImageNet EfficientNet-Lite0 pooled features (1280-d)")
    registry.add("minilm", "eegbench.backbones.embedders:MiniLMTokens",
                 summary="text_embedder: all-MiniLM-L6-v2 token states (384-d)")
