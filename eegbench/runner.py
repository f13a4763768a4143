"""The run pipeline: data → split → shared backbones → fit → generate → score → ``result.json``.

Everything a run writes goes to ``runs/.partial-<run_id>/`` first and is renamed to
``runs/<run_id>/`` only when the run succeeded, so a failed run leaves nothing half-written.
Only the main process writes files; generation is sharded over processes when launched with
``torchrun``/``accelerate launch``.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from eegbench.backbones import Backbones, SmallProfile, default_weights_root
from eegbench.datasets import default_cache_dir, default_data_root
from eegbench.datasets.info import make_loader
from eegbench.errors import ConfigError, EegbenchError
from eegbench.evaluate import find_inception_weights, reference_cache_name, resolve_protocol, score_images
from eegbench.method import RunContext, apply_overrides, count_parameters
from eegbench.protocol import EvalProtocol, image_seed
from eegbench.results import SCHEMA_VERSION, environment_info, write_json_atomic

log = logging.getLogger("eegbench.run")


@dataclass
class RunConfig:
    """Everything that defines one run (the CLI fills it).

    Parameters
    ----------
    method, dataset, setting : str
        Registered names.
    subject : int, optional
        Subject for ``single-subject`` / ``cross-subject``.
    dataset_options : dict of str to str
        ``--dataset-option key=value`` options of the dataset loader (e.g. ``eeg_file=eeg_14_70_std.pth``
        for ``cvpr40``); recorded in the result, and runs with other options get their own leaderboard.
    profile : str
        ``"small"`` (CPU-friendly backbones) or ``"paper"``.
    seed : int
        Run seed: training, sampling noise and metric RNGs.
    data_root, weights_root, cache_dir, runs_dir : Path, optional
        Roots; defaults from ``EEGBENCH_DATA`` / ``EEGBENCH_WEIGHTS`` / ``EEGBENCH_CACHE`` / ``runs``.
    overrides : dict of str to str
        ``--set key=value`` method hyperparameter overrides.
    backbone_overrides : dict of str to str
        ``--backbone-set key=value`` overrides of :class:`~eegbench.backbones.SmallProfile`.
    n_samples_per_trial, num_inference_steps : int, optional
        Protocol overrides.
    max_test_trials : int, optional
        Score only the first N test trials (quick checks; recorded in the protocol, so such runs
        never mix with full runs on a leaderboard).
    sampler : str, optional
        Protocol sampler for every method (overrides the method config field ``sampler``); None =
        the method's own published choice.
    guidance_scale : float, optional
        Protocol classifier-free guidance scale (overrides the method config field
        ``guidance_scale``); None = the method's own choice.
    inception_weights : Path, optional
        torch-fidelity's standard ``weights-inception-2015-12-05-6726825d.pth`` (standard FID
        network + standard IS); default: the torch hub cache copy if present, else fid-helper's
        network for FID/KID and EfficientNet-Lite0 for an honestly labelled IS.
    classifier_weights : Path, optional
        torchvision ViT-H/14 state dict for the n-way top-k accuracy (the papers' classifier);
        default EfficientNet-Lite0.
    progress : bool
        Show tqdm progress bars.
    run_id : str, optional
        Folder name under ``runs_dir``; default ``<method>_<dataset>_<setting>_seed<seed>_<UTC time>``.
    """

    method: str = "synapse"
    dataset: str = "eegnb-n170"
    setting: str = "multi-subject"
    subject: int | None = None
    dataset_options: dict[str, str] = field(default_factory=dict)
    profile: str = "small"
    seed: int = 0
    data_root: Path | None = None
    weights_root: Path | None = None
    cache_dir: Path | None = None
    runs_dir: Path = Path("runs")
    overrides: dict[str, str] = field(default_factory=dict)
    backbone_overrides: dict[str, str] = field(default_factory=dict)
    n_samples_per_trial: int | None = None
    num_inference_steps: int | None = None
    max_test_trials: int | None = None
    sampler: str | None = None
    guidance_scale: float | None = None
    inception_weights: Path | None = None
    classifier_weights: Path | None = None
    progress: bool = True
    run_id: str | None = None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class _Timer:
    durations: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.durations[name] = round(time.perf_counter() - self.t0, 3)

        return _Ctx()


def _make_accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def _setup_file_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "log.txt", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("eegbench")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _grid(reference: np.ndarray, generated: np.ndarray, labels: np.ndarray, class_names, path: Path,
          rows_per_class: int = 4) -> None:
    """Grid PNG: one row per shown test trial, ground-truth stimulus first, then its samples."""
    from diffusers.utils import make_image_grid
    from PIL import Image, ImageDraw

    picks = []
    for c in range(len(class_names)):
        idx = np.flatnonzero(labels == c)[:rows_per_class]
        picks.extend(idx.tolist())
    n_cols = 1 + generated.shape[1]
    size = reference.shape[-1]
    tiles = []
    for i in picks:
        gt = Image.fromarray(reference[i].transpose(1, 2, 0))
        ImageDraw.Draw(gt).text((2, 1), str(class_names[labels[i]]), fill=(255, 0, 0))
        tiles.append(gt)
        tiles.extend(Image.fromarray(g.transpose(1, 2, 0)) for g in generated[i])
    grid = make_image_grid(tiles, rows=len(picks), cols=n_cols)
    if size < 128:
        grid = grid.resize((grid.width * 2, grid.height * 2), Image.NEAREST)
    grid.save(path)


def run(cfg: RunConfig, *, plugins=None) -> dict[str, Any]:
    """Train, generate and score one method on one dataset/setting; write the run folder.

    Parameters
    ----------
    cfg : RunConfig
    plugins : eegbench.plugins.PluginSet, optional
        Pre-built plugin set (default: :func:`eegbench.plugins.get_plugin_manager`).

    Returns
    -------
    dict
        The result as written to ``runs/<run_id>/result.json``.

    Raises
    ------
    EegbenchError
        For unknown names, bad options, missing data or weights — before any folder is created when
        the problem is known up front.
    """
    from accelerate.utils import broadcast_object_list, set_seed

    from eegbench.plugins import get_plugin_manager

    timer = _Timer()
    t_start = time.perf_counter()
    plugins = plugins or get_plugin_manager()
    method_cls = plugins.methods.get(cfg.method)
    data_root = Path(cfg.data_root or default_data_root())
    cache_dir = Path(cfg.cache_dir or default_cache_dir())
    dataset_options = {str(k): str(v) for k, v in sorted(cfg.dataset_options.items())}
    loader = make_loader(cfg.dataset, data_root, cache_dir, dataset_options, plugins=plugins)  # name and options
    setting_fn = plugins.settings.get(cfg.setting)
    method_config = apply_overrides(method_cls.default_config(cfg.profile), cfg.overrides)
    method_config = apply_protocol_to_config(method_config, method_cls.name, sampler=cfg.sampler,
                                             guidance_scale=cfg.guidance_scale)
    profile = apply_overrides(SmallProfile(), cfg.backbone_overrides)
    weights_root = Path(cfg.weights_root or default_weights_root())
    taef2 = weights_root / "taef2"
    missing = [str(taef2 / f) for f in ("taef2_encoder.pth", "taef2_decoder.pth") if not (taef2 / f).is_file()]
    if missing:
        from eegbench.errors import WeightsNotFoundError

        raise WeightsNotFoundError(
            f"missing weights {', '.join(missing)}; set --weights-root or EEGBENCH_WEIGHTS to the folder "
            "holding taef2/ (the TAEF2 autoencoder from github.com/madebyollin/taesd)"
        )

    # scoring weights are checked before any data is loaded (a bad file fails fast)
    inception_weights = find_inception_weights(cfg.inception_weights)
    protocol = resolve_protocol(
        EvalProtocol(
            n_samples_per_trial=cfg.n_samples_per_trial or EvalProtocol.n_samples_per_trial,
            image_size=profile.image_size,
            num_inference_steps=cfg.num_inference_steps or EvalProtocol.num_inference_steps,
            sampler=cfg.sampler,
            guidance_scale=None if cfg.guidance_scale is None else float(cfg.guidance_scale),
            max_test_trials=int(cfg.max_test_trials) if cfg.max_test_trials else None,
            seed=cfg.seed,
        ),
        inception_weights=inception_weights, classifier_weights=cfg.classifier_weights,
    )
    with timer("load_data"):
        dataset = loader.load()
        split = setting_fn(dataset, subject=cfg.subject)
    if not split.test:
        raise ConfigError(f"setting {cfg.setting!r} produced an empty test split")

    accelerator = _make_accelerator()
    main = accelerator.is_main_process
    progress = cfg.progress and main
    set_seed(cfg.seed)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    subject_tag = f"-sub{cfg.subject}" if cfg.subject is not None else ""
    run_id = [cfg.run_id or _safe(f"{cfg.method}_{cfg.dataset}_{cfg.setting}{subject_tag}_seed{cfg.seed}_{stamp}")]
    if accelerator.num_processes > 1:
        broadcast_object_list(run_id)
    run_id = run_id[0]
    runs_dir = Path(cfg.runs_dir)
    final_dir = runs_dir / run_id
    if final_dir.exists():
        raise ConfigError(f"run folder {final_dir} already exists; pass another --run-id")
    work = runs_dir / f".partial-{run_id}"
    handler = None
    try:
        if main:
            if work.exists():
                shutil.rmtree(work)
            (work / "samples").mkdir(parents=True)
            (work / "reference").mkdir()
            handler = _setup_file_logging(work)
        accelerator.wait_for_everyone()
        log.info("run %s: method=%s dataset=%s setting=%s split=%s sizes=%s", run_id, cfg.method, cfg.dataset,
                 cfg.setting, split.sha256[:12], split.sizes())
        config_record = {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "data_root": str(data_root), "weights_root": str(weights_root), "cache_dir": str(cache_dir),
            "method_config": asdict(method_config), "backbones": asdict(profile),
        }
        plugins.pm.hook.eegbench_run_start(config=config_record, run_dir=work)

        train, val, test = (dataset.subset(ids) for ids in (split.train, split.val, split.test))
        if protocol.max_test_trials:
            test = test.subset(list(test.trials["trial_id"][: protocol.max_test_trials]))

        # ---- shared backbones (cached; the same for every method) ----
        backbones = Backbones(cfg.profile, weights_root=weights_root, cache_dir=cache_dir,
                              device=accelerator.device, settings=profile, progress=progress)
        train_image_ids = sorted(set(train.trials["image_id"]))
        train_images = dataset.stimuli.load_many(train_image_ids, profile.image_size)
        train_image_labels = np.array([dataset.stimuli.labels[i] for i in train_image_ids])
        with timer("denoiser_pretrain"):
            # the main process pretrains (or loads) first; the others then load its cached copy
            for turn in (True, False):
                if main is turn:
                    backbones.prepare_denoiser(train_images, train_image_labels, dataset.info.class_names,
                                               dataset_key=f"{dataset.info.name}-{dataset.info.version}", seed=0)
                accelerator.wait_for_everyone()

        # ---- fit ----
        set_seed(cfg.seed)
        method = method_cls(method_config, info=dataset.info, backbones=backbones, device=accelerator.device)
        ctx = RunContext(accelerator=accelerator, seed=cfg.seed, work_dir=work,
                         progress=progress, logger=log)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with timer("fit"):
            method.fit(train, val, ctx)
        peak_fit = _peak_rss_mb()
        if main:
            method.save(work / "checkpoint")

        # ---- generate (sharded over processes) ----
        with timer("generate"):
            gen_paths = _generate(method, test, protocol, work, accelerator, progress)
        accelerator.wait_for_everyone()
        if not main:
            return {}

        test_ids = list(test.trials["trial_id"])
        ref_images = test.images(protocol.image_size)
        ref_paths = []
        from PIL import Image

        for tid, img in zip(test_ids, ref_images):
            p = work / "reference" / f"{_safe(tid)}.png"
            Image.fromarray(img.transpose(1, 2, 0)).save(p)
            ref_paths.append(p)
        manifest = pd.DataFrame(
            [
                {"trial_id": tid, "sample_index": k, "label": int(lab), "class_name": dataset.info.class_names[lab],
                 "subject": int(sub), "image_id": iid, "path": str(gen_paths[tid][k].relative_to(work)),
                 "reference_path": str(ref_paths[i].relative_to(work))}
                for i, (tid, lab, sub, iid) in enumerate(
                    test.trials[["trial_id", "label", "subject", "image_id"]].itertuples(index=False))
                for k in range(protocol.n_samples_per_trial)
            ]
        )
        manifest.to_csv(work / "samples" / "manifest.csv", index=False)
        generated = np.stack([
            np.stack([np.asarray(Image.open(work / p).convert("RGB")).transpose(2, 0, 1) for p in grp["path"]])
            for _, grp in manifest.groupby("trial_id", sort=False)
        ])  # (n_test, n_samples, 3, H, W)
        _grid(ref_images, generated, test.labels, dataset.info.class_names, work / "grid.png")

        # ---- score ----
        with timer("metrics"):
            metrics = _score(generated, ref_images, test, train_images, train_image_labels, dataset, split,
                             protocol, backbones, cache_dir, progress, inception_weights=inception_weights,
                             classifier_weights=cfg.classifier_weights, dataset_options=dataset_options)
        parameters = count_parameters(method)
        timer.durations["total"] = round(time.perf_counter() - t_start, 3)
        env = environment_info(accelerator)
        plugins.pm.hook.eegbench_update_environment_info(info=env)
        result = {
            "schema_version": SCHEMA_VERSION,
            "run_id": run_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "method": {"name": method_cls.name, "version": method_cls.version, "paper": method_cls.paper,
                       "profile": cfg.profile, "config": asdict(method_config)},
            "dataset": {"name": dataset.info.name, "version": dataset.info.version,
                        "n_chans": dataset.info.n_chans, "n_times": dataset.info.n_times,
                        "sfreq": dataset.info.sfreq, "unit": dataset.info.unit,
                        "class_names": list(dataset.info.class_names), "n_trials": len(dataset),
                        "wnids": list(getattr(dataset.info, "wnids", ()) or ()),
                        "options": dataset_options},
            "split": split.to_dict(),
            "protocol": {**protocol.to_dict(), "hash": protocol.hash()},
            "seed": cfg.seed,
            "metrics": metrics,
            "parameters": parameters,
            "durations_s": timer.durations,
            "peak_memory_mb": {"rss_after_fit": round(peak_fit, 1), "rss_total": round(_peak_rss_mb(), 1),
                               **({"cuda_max_allocated": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
                                  if torch.cuda.is_available() else {})},
            "backbones": {"profile": cfg.profile, **asdict(profile),
                          "denoiser_train_seconds": getattr(backbones.denoiser, "train_seconds", None)},
            "training_history": ctx.history[-50:],
            "environment": env,
            "config": config_record,
            "artifacts": {"samples": "samples", "manifest": "samples/manifest.csv", "reference": "reference",
                          "grid": "grid.png", "checkpoint": "checkpoint", "log": "log.txt",
                          "train_log": "train_log.jsonl"},
        }
        write_json_atomic(work / "result.json", result)
        if handler is not None:
            logging.getLogger("eegbench").removeHandler(handler)
            handler.close()
            handler = None
        os.replace(work, final_dir)
        result["run_dir"] = str(final_dir)
        plugins.pm.hook.eegbench_run_end(result=result, run_dir=final_dir)
        return result
    except BaseException:
        if handler is not None:
            logging.getLogger("eegbench").removeHandler(handler)
            handler.close()
        if main and work.exists():
            shutil.rmtree(work, ignore_errors=True)
        raise


def _generate(method, test, protocol: EvalProtocol, work: Path, accelerator, progress: bool,
              batch_size: int = 16) -> dict[str, list[Path]]:
    """Generate ``n_samples_per_trial`` PNGs per test trial; returns trial id → sample paths."""
    from PIL import Image

    n = protocol.n_samples_per_trial
    ids = list(test.trials["trial_id"])
    paths = {tid: [work / "samples" / f"{_safe(tid)}_{k}.png" for k in range(n)] for tid in ids}
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = np.arange(len(ids))[rank::world]
    device = accelerator.device
    bar = tqdm(total=len(mine) * n, desc="generate", unit="img", disable=not progress)
    for start in range(0, len(mine), batch_size):
        rows = mine[start : start + batch_size]
        eeg = torch.from_numpy(test.eeg[rows]).to(device)
        subject = torch.from_numpy(test.subjects[rows]).to(device)
        gens = [torch.Generator(device=device).manual_seed(image_seed(protocol.seed, ids[r], k))
                for r in rows for k in range(n)]
        with torch.no_grad():
            images = method.generate(eeg, generators=gens, n_samples=n,
                                     num_inference_steps=protocol.num_inference_steps, subject=subject)
        expected = (len(rows), n, 3, protocol.image_size, protocol.image_size)
        if tuple(images.shape) != expected or images.dtype != torch.uint8:
            raise EegbenchError(
                f"method {method.name!r}: generate() returned {images.dtype} {tuple(images.shape)}, "
                f"expected torch.uint8 {expected}"
            )
        arr = images.cpu().numpy()
        for j, r in enumerate(rows):
            for k in range(n):
                Image.fromarray(arr[j, k].transpose(1, 2, 0)).save(paths[ids[r]][k])
        bar.update(len(rows) * n)
    bar.close()
    return paths


def apply_protocol_to_config(config: Any, method_name: str, *, sampler: str | None = None,
                             guidance_scale: float | None = None) -> Any:
    """Override a method config's ``sampler`` / ``guidance_scale`` fields with protocol values.

    Parameters
    ----------
    config : dataclass instance
        The method's resolved config.
    method_name : str
        For error messages.
    sampler : str, optional
        Protocol sampler; None keeps the method's own.
    guidance_scale : float, optional
        Protocol guidance scale; None keeps the method's own.

    Returns
    -------
    dataclass instance
        A copy with the fields replaced (validated by the config's ``validate()`` if it has one).

    Raises
    ------
    ConfigError
        If the method config has no such field, or the value fails validation.
    """
    import dataclasses

    changes = {k: v for k, v in (("sampler", sampler), ("guidance_scale", guidance_scale)) if v is not None}
    if not changes:
        return config
    names = {f.name for f in dataclasses.fields(config)}
    for key, value in changes.items():
        if key not in names:
            raise ConfigError(
                f"the protocol sets {key}={value!r} but method {method_name!r} has no {key!r} config "
                f"field; drop --{key.replace('_', '-')} or add the field to the method's Config"
            )
    if "guidance_scale" in changes:
        changes["guidance_scale"] = float(changes["guidance_scale"])
    new = dataclasses.replace(config, **changes)
    if hasattr(new, "validate"):
        new.validate()
    return new


def _score(generated, ref_images, test, train_images, train_labels, dataset, split, protocol, backbones,
           cache_dir: Path, progress: bool, *, inception_weights: Path | None = None,
           classifier_weights: Path | None = None, dataset_options: dict[str, str] | None = None) -> dict[str, Any]:
    """Every protocol metric (:func:`eegbench.evaluate.score_images`) of one run's images."""
    return score_images(
        generated, ref_images, protocol=protocol, labels=test.labels,
        trial_ids=list(test.trials["trial_id"]), n_classes=dataset.info.n_classes,
        wnids=tuple(getattr(dataset.info, "wnids", ()) or ()), train_images=train_images, train_labels=train_labels,
        image_embedder=backbones.image_embedder, cache_dir=cache_dir / "fidelity",
        reference_cache_name=reference_cache_name(dataset.info.name, dataset.info.version, dataset_options,
                                                  split.sha256, len(ref_images), protocol.image_size),
        inception_weights=inception_weights, classifier_weights=classifier_weights, progress=progress,
    )
