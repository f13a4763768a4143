"""Core plugin: built-in datasets, settings, metrics and backbones.

Registered by :func:`eegbench.plugins.get_plugin_manager` like any plugin (it can be read as an
example). Methods are *not* here: built-in methods live in ``methods/`` and come in through the
``eegbench`` entry-point group exactly like third-party plugins. Only the two references
(``class-prior``, ``oracle-class``, :mod:`eegbench.references`) are registered here: they belong to
the harness, not to any paper.
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
    registry.add("things-eeg2", "eegbench.datasets.things_eeg2:ThingsEEG2",
                 summary="THINGS-EEG2 official preprocessed release (17 ch, 100 Hz; variant=63ch-250hz), 10 "
                         "subjects, 1654 training + 200 zero-shot test concepts, retrieval metrics")
    registry.add("eeg-imagenet", "eegbench.datasets.eeg_imagenet:EEGImageNet2024",
                 summary="EEG-ImageNet (Zhu et al. 2024): 16 subjects, 40 coarse + 40 fine ImageNet classes, 62 ch, "
                         "1 kHz, owners' 30/20 split per class (granularity=coarse|fine|all)")
    registry.add("eegnb-groundtruth", "eegbench.datasets.groundtruth:GroundTruthEEG",
                 summary="real N170 background EEG + simulated image-determined ERP at --dataset-option snr_db=… "
                         "(positive control; variant=drift: block-design confound)")
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
    # Metric classes (eegbench.metric.Metric); the key is the result key. A third party registers
    # its own the same way and adds it to a run's protocol with --metric NAME.
    mod = "eegbench.metrics.protocol_metrics"
    for key, cls, summary in (
        ("fid", "FID", "Frechet Inception Distance, TF-Inception pool3 via torch-fidelity (lower is better)"),
        ("kid", "KID", "Kernel Inception Distance, TF-Inception pool3 via torch-fidelity (lower is better)"),
        ("is", "IS", "Inception Score via torch-fidelity, 10 splits, generated images only; EfficientNet-Lite0 "
                     "IS (labelled, not comparable) without the standard weights (higher is better)"),
        ("nway_topk", "NWayTopK", "50-way top-1 accuracy vs the classifier's class of the ground-truth image, 50 "
                                  "seeded trials, ImageNet-class datasets only (higher is better)"),
        ("probe_accuracy", "ProbeAccuracy", "class accuracy of generated images by a probe fitted on training "
                                            "stimuli, with balanced accuracy and predicted classes (higher is better)"),
        ("two_way_inception", "TwoWayInception", "2-way identification on TF-Inception pool3 features, image-level "
                                                 "datasets only (chance 0.5, higher is better)"),
        ("two_way_effnet", "TwoWayEfficientNet", "2-way identification on EfficientNet-Lite0 features, image-level "
                                                 "datasets only (chance 0.5, higher is better)"),
        ("ssim", "SSIM", "SSIM with the ground-truth image, grayscale, image-level datasets only (higher is better)"),
        ("pixcorr", "PixCorr", "pixel correlation with the ground-truth image, image-level datasets only "
                               "(higher is better)"),
    ):
        registry.add(key, f"{mod}:{cls}", summary=summary)
    # zero-shot retrieval from the method's EEG embedding (Method.embed_eeg); in the published protocol of
    # things-eeg2 and eeg-imagenet, which add them to every run on those datasets
    mod = "eegbench.metrics.retrieval"
    for key, cls, summary in (
        ("retrieval_top1", "ImageRetrievalTop1", "N-way top-1 retrieval of the trial's own test image among all "
                                                 "test images by cosine similarity (NICE/ATM 200-way; higher is better)"),
        ("retrieval_top5", "ImageRetrievalTop5", "N-way top-5 retrieval of the trial's own test image (higher is better)"),
        ("retrieval_class_top1", "ClassRetrievalTop1", "top-1 retrieval of the trial's class, each test class "
                                                       "represented by its OTHER test images (higher is better)"),
        ("retrieval_class_top5", "ClassRetrievalTop5", "top-5 retrieval of the trial's class from its other test "
                                                       "images (higher is better)"),
        ("retrieval_2way", "Retrieval2Way", "2-way retrieval: own image vs a random image of another class, 50 "
                                            "seeded draws per trial (ATM; chance 0.5, higher is better)"),
        ("retrieval_4way", "Retrieval4Way", "4-way retrieval: own image vs three random images of other classes "
                                            "(ATM; chance 0.25, higher is better)"),
    ):
        registry.add(key, f"{mod}:{cls}", summary=summary)


@hookimpl
def eegbench_register_methods(registry):
    # References, not methods: shown in a separate block of every leaderboard, never ranked.
    registry.add("class-prior", "eegbench.references:ClassPrior",
                 summary="reference: shared denoiser prompted with classes drawn from the training class "
                         "frequencies (ignores the EEG)")
    registry.add("oracle-class", "eegbench.references:OracleClass",
                 summary="reference: shared denoiser prompted with each test trial's TRUE class (reads test "
                         "labels; the ceiling of class metrics)")


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


@hookimpl
def eegbench_register_profiles(registry):
    registry.add("small", "eegbench.backbones.profiles:SmallBackboneProfile",
                 summary="CPU: TAEF2 + a small UNet pretrained once per dataset + EfficientNet-Lite0 + MiniLM")
    registry.add("paper", "eegbench.backbones.profiles:PaperBackboneProfile",
                 summary="published: Stable Diffusion / CLIP from local folders (GPU), 4 samples, published steps")
