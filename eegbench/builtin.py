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
    registry.add("eegnb-p300", "eegbench.datasets.eegnb:EEGNotebooksP300",
                 summary="Muse 4-channel P300 oddball cats (target) vs dogs, 5 subjects, 256 Hz (eeg-notebooks)")
    registry.add("cvpr40", "eegbench.datasets.cvpr40:CVPR40",
                 summary="EEG-ImageNet 40 classes, 128 ch, 1 kHz, perceivelab .pth, official image-disjoint split 0")
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
    registry.add("is", "eegbench.metrics.isc:compute_is",
                 summary="Inception Score via torch-fidelity, 10 splits, generated images only; EfficientNet-Lite0 "
                         "IS (labelled, not comparable) without the standard weights (higher is better)")
    registry.add("nway-topk", "eegbench.metrics.nway:n_way_top_k_images",
                 summary="50-way top-1 accuracy vs the classifier's class of the ground-truth image, 50 seeded "
                         "trials, ImageNet-class datasets only (higher is better)")


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
    for key, what in (("sd15", "paper: Stable Diffusion 1.5 diffusers folder <root>/stable-diffusion-v1-5 (UNet, VAE, "
                                "text encoder; DreamDiffusion, BrainVis)"),
                       ("sd21", "paper: Stable Diffusion 2.1 (768-v) diffusers folder <root>/stable-diffusion-2-1 "
                                "(SYNAPSE)"),
                       ("sd21-base", "paper: Stable Diffusion 2.1-base diffusers folder "
                                     "<root>/stable-diffusion-2-1-base (GWIT)"),
                       ("openclip-h14", "paper: OpenCLIP ViT-H/14 local-dir <root>/CLIP-ViT-H-14-laion2B-s32B-b79K "
                                        "(SYNAPSE's text and image teacher)"),
                       ("clip-l14", "paper: CLIP ViT-L/14 transformers folder <root>/clip-vit-large-patch14 "
                                    "(DreamDiffusion image, BrainVis text teacher)")):
        registry.add(key, "eegbench.backbones.sd:StableDiffusionBackbones", summary=what)
