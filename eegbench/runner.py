"""The run pipeline: prepare → backbones → fit → generate → score → record (``result.json``).

Everything a run writes goes to ``runs/.partial-<run_id>/`` first and is renamed to
``runs/<run_id>/`` only when the run succeeded. Bad input fails before any folder exists. A run
that fails or is killed once training has started keeps its partial folder (``run.json``, training
checkpoints in ``train_state/``, the fitted method in ``checkpoint/``, samples) and
``eegbench run --resume <run_id>`` continues it; a run that fails before that leaves nothing.
Only the main process writes files; training runs on every process through the accelerator (the
global batch stays the configured one), generation is sharded over processes when launched with
``torchrun``/``accelerate launch``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import resource
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from eegbench.files import atomic_write
from eegbench.backbones import default_weights_root
from eegbench.datasets import default_cache_dir, default_data_root
from eegbench.datasets.info import make_loader
from eegbench.config import check_sampler
from eegbench.errors import ConfigError, EegbenchError
from eegbench.evaluate import find_inception_weights, resolve_protocol
from eegbench.hostalloc import keep_freed_memory
from eegbench.method import RunContext, apply_overrides, count_parameters
from eegbench.metrics.retrieval import RETRIEVAL_FILE, write_retrieval_embeddings
from eegbench.protocol import EvalProtocol, image_seed
from eegbench.results import (
    SCHEMA_VERSION,
    RunResult,
    environment_info,
    read_samples_manifest,
    recipe_record,
    write_json_atomic,
)
from eegbench.run_config import (  # noqa: F401  (RunConfig, IDENTITY_FIELDS and resume_config: public here too)
    IDENTITY_FIELDS,
    RunConfig,
    config_record,
    partial_dir,
    resume_config,
)

log = logging.getLogger("eegbench.run")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _usage_since(before) -> dict[str, float]:
    """CPU seconds and page faults of this process since ``before`` (a ``getrusage`` result; None: since start)."""
    now = resource.getrusage(resource.RUSAGE_SELF)

    def delta(attr):
        return getattr(now, attr) - (getattr(before, attr) if before is not None else 0)

    return {"cpu_user_s": round(delta("ru_utime"), 2), "cpu_sys_s": round(delta("ru_stime"), 2),
            "minor_faults": int(delta("ru_minflt")), "major_faults": int(delta("ru_majflt"))}


@dataclass
class _Timer:
    """Wall time (s) of each run stage, and its process CPU time and page faults.

    ``durations`` maps stage → wall seconds (``result.json`` ``durations_s``); ``resources`` maps
    stage → ``cpu_user_s``, ``cpu_sys_s`` (process CPU seconds, all threads, from
    ``getrusage(RUSAGE_SELF)``) and ``minor_faults`` / ``major_faults`` (page faults during the
    stage; many minor faults mean large buffers allocated and freed again and again).
    """

    durations: dict[str, float] = field(default_factory=dict)
    resources: dict[str, dict[str, float]] = field(default_factory=dict)

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.r0 = resource.getrusage(resource.RUSAGE_SELF)
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.durations[name] = round(time.perf_counter() - self.t0, 3)
                timer.resources[name] = _usage_since(self.r0)

        return _Ctx()


def resolve_mixed_precision(value: str | None) -> str:
    """``--mixed-precision`` as given, else the launcher's (``accelerate launch --mixed_precision``
    sets ``ACCELERATE_MIXED_PRECISION``), else ``"no"``.

    Raises
    ------
    ConfigError
        For an unknown value, or fp16 without CUDA.
    """
    value = value or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no"
    if value not in MIXED_PRECISION:
        raise ConfigError(f"--mixed-precision {value}: unknown; known: {', '.join(MIXED_PRECISION)}")
    if value == "fp16" and not torch.cuda.is_available():
        raise ConfigError("--mixed-precision fp16 needs a CUDA device; use bf16 or no on CPU")
    return value


def _make_accelerator(mixed_precision: str = "no"):
    """The run's accelerator: CUDA when available; under torchrun/accelerate launch, DDP that
    tolerates parameters a stage's step leaves unused (frozen branches, unused heads).

    accelerate keeps one process-wide state; a second run in the same Python process with another
    mixed precision resets it (its device and process group are kept)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    if AcceleratorState._shared_state and str(AcceleratorState().mixed_precision) != mixed_precision:
        AcceleratorState._reset_state()
    handlers = []
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
    return Accelerator(cpu=not torch.cuda.is_available(), kwargs_handlers=handlers, mixed_precision=mixed_precision)


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


#: The run's stages, in order (functions of this module, each returning its typed result:
#: :class:`Prepared`, :class:`Fitted`, :class:`Samples`, :class:`Scores`, the result dict).
RUN_STEPS = ("prepare", "open_run", "fit", "generate", "score", "record")

#: ``--mixed-precision`` choices (accelerate's names) and the dtype frozen backbones are held in.
MIXED_PRECISION = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _attach_captions(dataset, split, captions_file: str | None) -> dict[str, Any]:
    """Add the ``caption`` column of a captions file to the training and validation trials.

    Test trials get an empty caption: no method reads a test stimulus's caption. Returns what
    the result records (``source`` "file" with path, sha256 and count, or "class template").
    """
    if not captions_file:
        return {"source": "class template"}
    from eegbench.data import load_captions

    trials = dataset.trials
    fit_ids = set(split.train) | set(split.val)
    fit_rows = trials["trial_id"].isin(fit_ids).to_numpy()
    images = sorted(set(trials.loc[fit_rows, "image_id"].astype(str)))
    captions = load_captions(captions_file, images)
    trials["caption"] = [captions.get(str(i), "") if keep else ""
                         for i, keep in zip(trials["image_id"], fit_rows)]
    digest = hashlib.sha256(Path(captions_file).read_bytes()).hexdigest()
    return {"source": "file", "path": str(captions_file), "sha256": digest, "n_images": len(images)}


def _check_counts(cfg: RunConfig) -> None:
    """One-line errors for protocol counts that must be ≥ 1 (0 is not "use the default")."""
    for flag, value in (("--n-samples", cfg.n_samples_per_trial), ("--steps", cfg.num_inference_steps),
                        ("--max-test-trials", cfg.max_test_trials)):
        if value is not None and int(value) < 1:
            raise ConfigError(f"{flag} {value}: must be ≥ 1 (leave the flag out for the protocol default)")
    for flag, value in (("--max-steps", cfg.max_steps), ("--generate-batch-size", cfg.generate_batch_size)):
        if value is not None and int(value) < 1:
            raise ConfigError(f"{flag} {value}: must be ≥ 1")
    resolve_mixed_precision(cfg.mixed_precision)
    if cfg.checkpoint_every is not None and int(cfg.checkpoint_every) < 0:
        raise ConfigError(f"--checkpoint-every {cfg.checkpoint_every}: must be ≥ 0 (0: only at the end of each stage)")


def _differences(stored: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"key (run: a, now: b)"`` for every (nested) key whose values differ."""
    out = []
    for key in sorted(set(stored) | set(now)):
        a, b = stored.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key} (run: {a!r}, now: {b!r})")
    return out


def _fingerprint(method, accelerator) -> dict[str, Any]:
    """sha256 of every saved tensor of the fitted method, per process (they must agree under DDP)."""
    import hashlib

    from accelerate.utils import gather_object

    h = hashlib.sha256()
    for cname, module in sorted(method.state_components().items()):
        for key, value in sorted(module.state_dict().items()):
            h.update(f"{cname}.{key}".encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    digests = [h.hexdigest()]
    if accelerator.num_processes > 1:
        digests = gather_object(digests)
    return {"sha256": digests[0], "per_process": digests, "processes_agree": len(set(digests)) == 1}


# ---------------------------------------------------------------------------------------------- stage results
@dataclass
class Control:
    """One EEG control of a run (``result["controls"][key]``): trial ``i`` is generated from the EEG of
    trial ``permutation[i]`` with trial ``i``'s image seeds.

    Attributes
    ----------
    key : str
        ``"shuffled_eeg"`` (within subject) or ``"block_shuffled_eeg"`` (within recording block).
    folder : str
        Its samples folder in the run folder.
    permutation : numpy.ndarray, shape (T,), int64
    within : {"subject", "block"}
    stage : str
        Suffix of its ``durations_s`` entries (``generate_<stage>``, ``metrics_<stage>``).
    """

    key: str
    folder: str
    permutation: np.ndarray
    within: str
    stage: str


@dataclass
class Prepared:
    """Stage 1: a run that passed every check, with its data, split, protocol, folder and backbones.

    :func:`prepare` fills the checked configuration (nothing is written); :func:`open_run` adds the
    accelerator, the partial run folder, the controls and the backbones.
    """

    cfg: RunConfig
    plugins: Any
    method_cls: type
    method_config: Any
    profile: Any  # eegbench.backbones.profiles.BackboneProfile
    settings: Any  # the profile's settings (SmallProfile / PaperSettings)
    protocol: EvalProtocol
    generation: dict[str, Any]
    dataset: Any
    split: Any
    data_root: Path
    weights_root: Path
    cache_dir: Path
    dataset_options: dict[str, str]
    mixed_precision: str
    inception_weights: Path | None
    captions_record: dict[str, Any]
    timer: _Timer
    t_start: float
    # open_run
    accelerator: Any = None
    run_id: str = ""
    runs_dir: Path = Path("runs")
    final_dir: Path | None = None
    work: Path | None = None
    main: bool = True
    progress: bool = False
    config_record: dict[str, Any] = field(default_factory=dict)
    handler: logging.Handler | None = None
    train: Any = None
    val: Any = None
    test: Any = None
    control_reason: str | None = None
    controls: list[Control] = field(default_factory=list)
    backbones: Any = None
    train_images: np.ndarray | None = None
    train_image_labels: np.ndarray | None = None

    def scoring_context(self, retrieval: dict[str, Any] | None, reference: np.ndarray):
        """The run's one :class:`~eegbench.scoring.ScoringContext` (the same builder as ``evaluate``'s)."""
        from eegbench.scoring import ScoringContext

        return ScoringContext.for_run(
            dataset=dataset_record(self.dataset, self.dataset_options), split_sha256=self.split.sha256,
            protocol=self.protocol, reference=reference, labels=self.test.labels,
            trial_ids=list(self.test.trials["trial_id"]), image_ids=list(self.test.trials["image_id"]),
            train_images=self.train_images, train_labels=self.train_image_labels,
            image_embedder=self.profile.scoring_embedder(self.backbones, self.accelerator.device),
            cache_dir=self.cache_dir, features_dir=self.work / "features",
            inception_weights=self.inception_weights, classifier_weights=self.cfg.classifier_weights,
            progress=self.progress, plugins=self.plugins, retrieval=retrieval,
        )


@dataclass
class Fitted:
    """Stage 2: the fitted method (saved in ``checkpoint/``), its training log and fingerprint."""

    method: Any
    ctx: RunContext
    peak_rss_mb: float
    fingerprint: dict[str, Any]


@dataclass
class Samples:
    """Stage 3: the generated images of the run and of each control, and the reference images.

    ``images`` maps ``"samples"`` and each control's key to uint8 (T, S, 3, H, W) in test-trial
    order; ``reference`` is uint8 (T, 3, H, W). Empty on processes other than the main one.
    """

    images: dict[str, np.ndarray]
    reference: np.ndarray | None


@dataclass
class Scores:
    """Stage 4: every protocol metric of the run and its controls, retrieval embeddings, EEG decoding."""

    metrics: dict[str, Any]
    controls: dict[str, Any]
    retrieval: dict[str, Any] | None
    eeg_decoding: dict[str, Any]
    own_classifier: dict[str, Any] | None


def dataset_record(dataset, options: Mapping[str, str]) -> dict[str, Any]:
    """``result["dataset"]``: what a result says about its dataset (also what scoring reads from it)."""
    info = dataset.info
    return {"name": info.name, "version": info.version, "n_chans": info.n_chans, "n_times": info.n_times,
            "sfreq": info.sfreq, "unit": info.unit, "class_names": list(info.class_names), "n_trials": len(dataset),
            "wnids": list(getattr(info, "wnids", ()) or ()),
            "stimulus_level": getattr(info, "stimulus_level", "class"), "options": dict(options),
            **({"data_card": info.description, "licence": info.licence, "split_source": dataset.split_source}
               if getattr(info, "description", "") else {})}


# ---------------------------------------------------------------------------------------------- stages
def prepare(cfg: RunConfig, plugins=None) -> Prepared:
    """Names, options, weights, protocol, data and split, checked; nothing is written.

    Raises
    ------
    EegbenchError
        Unknown names, bad options, missing data or weights (before any data loads where the problem
        is known up front), an empty test split.
    """
    from eegbench.backbones.profiles import get_profile
    from eegbench.plugins import get_plugin_manager

    plugins = plugins or get_plugin_manager()
    timer, t_start = _Timer(), time.perf_counter()
    _check_counts(cfg)
    mixed_precision = resolve_mixed_precision(cfg.mixed_precision)
    check_sampler(cfg.sampler)
    method_cls = plugins.methods.get(cfg.method)
    data_root = Path(cfg.data_root or default_data_root())
    cache_dir = Path(cfg.cache_dir or default_cache_dir())
    dataset_options = {str(k): str(v) for k, v in sorted(cfg.dataset_options.items())}
    loader = make_loader(cfg.dataset, data_root, cache_dir, dataset_options, plugins=plugins)
    setting_fn = plugins.settings.get(cfg.setting)
    profile = get_profile(cfg.profile, plugins)
    method_config = apply_overrides(method_cls.default_config(cfg.profile), cfg.overrides)
    method_config = apply_protocol_to_config(method_config, method_cls.name, sampler=cfg.sampler,
                                             guidance_scale=cfg.guidance_scale)
    weights_root = Path(cfg.weights_root or default_weights_root())
    settings = profile.settings(cfg.backbone_overrides)
    image_size = profile.check(method_cls, weights_root=weights_root, settings=settings)
    # scoring weights are checked before any data is loaded (a bad file fails fast)
    inception_weights = find_inception_weights(cfg.inception_weights)
    defaults = profile.protocol_defaults
    protocol = resolve_protocol(
        EvalProtocol(
            n_samples_per_trial=(defaults["n_samples_per_trial"] if cfg.n_samples_per_trial is None
                                 else int(cfg.n_samples_per_trial)),
            image_size=image_size,
            num_inference_steps=(defaults["num_inference_steps"] if cfg.num_inference_steps is None
                                 else int(cfg.num_inference_steps)),
            sampler=cfg.sampler,
            guidance_scale=None if cfg.guidance_scale is None else float(cfg.guidance_scale),
            max_test_trials=None if cfg.max_test_trials is None else int(cfg.max_test_trials),
            metrics=protocol_metrics(cfg.metrics, plugins),
            seed=cfg.seed,
        ),
        inception_weights=inception_weights, classifier_weights=cfg.classifier_weights,
    )
    generation = generation_record(method_cls, protocol)  # before the data: fails fast
    with timer("load_data"):
        dataset = loader.load()
        split = setting_fn(dataset, subject=cfg.subject)
    protocol = dataset_protocol(protocol, dataset.info, plugins)
    if not split.test:
        raise ConfigError(f"setting {cfg.setting!r} produced an empty test split")
    captions_record = _attach_captions(dataset, split, dataset_options.get("captions"))
    return Prepared(cfg=cfg, plugins=plugins, method_cls=method_cls, method_config=method_config, profile=profile,
                    settings=settings, protocol=protocol, generation=generation, dataset=dataset, split=split,
                    data_root=data_root, weights_root=weights_root, cache_dir=cache_dir,
                    dataset_options=dataset_options, mixed_precision=mixed_precision,
                    inception_weights=inception_weights, captions_record=captions_record, timer=timer,
                    t_start=t_start)


def open_run(p: Prepared) -> Prepared:
    """Create ``runs/.partial-<run_id>/`` (or reopen it for ``--resume``), start the log, choose the
    controls and make the backbones ready (the denoiser pretrained once per dataset and cached).

    Raises
    ------
    ConfigError
        The run folder exists; an interrupted run of that id exists (without ``--resume``); a
        ``--resume`` whose config, protocol or split differ from what this checkout computes.
    """
    from accelerate.utils import broadcast_object_list, set_seed

    cfg = p.cfg
    p.accelerator = _make_accelerator(p.mixed_precision)
    p.main = p.accelerator.is_main_process
    p.progress = cfg.progress and p.main
    set_seed(cfg.seed)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    subject_tag = f"-sub{cfg.subject}" if cfg.subject is not None else ""
    run_id = [cfg.run_id or _safe(f"{cfg.method}_{cfg.dataset}_{cfg.setting}{subject_tag}_seed{cfg.seed}_{stamp}")]
    if p.accelerator.num_processes > 1:
        broadcast_object_list(run_id)
    p.run_id = run_id[0]
    p.runs_dir = Path(cfg.runs_dir)
    p.final_dir = p.runs_dir / p.run_id
    if p.final_dir.exists():
        raise ConfigError(f"run folder {p.final_dir} already exists; pass another --run-id")
    work = partial_dir(p.runs_dir, p.run_id)
    p.config_record = {
        **config_record(cfg),
        "data_root": str(p.data_root), "weights_root": str(p.weights_root), "cache_dir": str(p.cache_dir),
        "method_config": asdict(p.method_config), "backbones": asdict(p.settings),
    }
    identity = {"method_config": asdict(p.method_config), "backbones": asdict(p.settings),
                "protocol_hash": p.protocol.hash(), "split_sha256": p.split.sha256}
    identity = json.loads(json.dumps(identity, default=list))  # as stored (tuples → lists)
    interrupted = (work / "run.json").is_file()
    p.accelerator.wait_for_everyone()  # every process looks before the main one writes
    if cfg.resume:
        record_file = work / "run.json"
        if not record_file.is_file():
            raise ConfigError(f"--resume {p.run_id}: no interrupted run {work}")
        stored = json.loads(record_file.read_text(encoding="utf-8"))
        diffs = _differences({k: stored.get(k) for k in identity}, identity)
        if diffs:
            raise ConfigError(f"--resume {p.run_id}: refused, the run's config/protocol/split differ from "
                              f"what this checkout computes: {'; '.join(diffs)}")
    elif interrupted:
        raise ConfigError(f"{work} holds an interrupted run; continue it with --resume {p.run_id} "
                          f"(or delete that folder to start again)")
    elif p.main:
        if work.exists():  # a folder that never got its run.json holds nothing to keep
            shutil.rmtree(work)
        (work / "samples").mkdir(parents=True)
        (work / "reference").mkdir()
        write_json_atomic(work / "run.json", {"run_id": p.run_id, "run_config": config_record(cfg), **identity})
    p.accelerator.wait_for_everyone()
    p.work = work
    if p.main:
        p.handler = _setup_file_logging(work)
    log.info("run %s%s: method=%s dataset=%s setting=%s split=%s sizes=%s", p.run_id,
             " (resumed)" if cfg.resume else "", cfg.method, cfg.dataset, cfg.setting, p.split.sha256[:12],
             p.split.sizes())
    p.plugins.pm.hook.eegbench_run_start(config=p.config_record, run_dir=work)
    dataset = p.dataset
    p.train, p.val, p.test = (dataset.subset(ids) for ids in (p.split.train, p.split.val, p.split.test))
    if p.protocol.max_test_trials:
        p.test = p.test.subset(list(p.test.trials["trial_id"][: p.protocol.max_test_trials]))
    p.control_reason = control_skip_reason(p.method_cls, p.protocol, len(p.test))
    if p.control_reason is None:
        p.controls.append(Control("shuffled_eeg", SHUFFLED_SAMPLES, control_permutation(p.test.subjects, cfg.seed),
                                  "subject", "shuffled"))
        if "block" in p.test.trials.columns:  # the dataset marks recording blocks
            p.controls.append(Control("block_shuffled_eeg", BLOCK_SHUFFLED_SAMPLES,
                                      block_control_permutation(p.test.subjects, p.test.trials["block"].to_numpy(),
                                                                cfg.seed), "block", "block_shuffled"))
    # the shared backbones of the profile (registered factory); the denoiser is made ready once per dataset
    train_image_ids = sorted(set(p.train.trials["image_id"]))
    p.train_images = dataset.stimuli.load_many(train_image_ids, p.protocol.image_size)
    p.train_image_labels = np.array([dataset.stimuli.labels[i] for i in train_image_ids])
    p.backbones = p.profile.make_backbones(
        p.method_cls, weights_root=p.weights_root, cache_dir=p.cache_dir, settings=p.settings,
        class_names=dataset.info.class_names, device=p.accelerator.device, dtype=MIXED_PRECISION[p.mixed_precision],
        progress=p.progress, train_images=p.train_images, train_labels=p.train_image_labels,
        dataset_key=f"{dataset.info.name}-{dataset.info.version}", accelerator=p.accelerator, timer=p.timer)
    return p


def fit(p: Prepared) -> Fitted:
    """Fit the method (stage checkpoints under ``train_state/``), then save it to ``checkpoint/``;
    a resumed run whose fit finished loads it instead."""
    from accelerate.utils import set_seed

    cfg, work = p.cfg, p.work
    set_seed(cfg.seed)
    method = p.method_cls(p.method_config, info=p.dataset.info, backbones=p.backbones, device=p.accelerator.device)
    ctx = RunContext(accelerator=p.accelerator, seed=cfg.seed, work_dir=work, progress=p.progress, logger=log,
                     checkpoint_dir=work / "train_state", checkpoint_every=cfg.checkpoint_every,
                     max_steps=cfg.max_steps)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    done = work / "checkpoint" / "fit.json"
    with p.timer("fit"):
        if cfg.resume and done.is_file():
            method.load(work / "checkpoint")
            ctx.history[:] = json.loads(done.read_text(encoding="utf-8"))["history"]
            log.info("fit finished before; loaded %s", work / "checkpoint")
        else:
            method.fit(p.train, p.val, ctx)
            if p.main:
                method.save(work / "checkpoint")
                write_json_atomic(done, {"history": ctx.history})
            p.accelerator.wait_for_everyone()
    return Fitted(method=method, ctx=ctx, peak_rss_mb=_peak_rss_mb(), fingerprint=_fingerprint(method, p.accelerator))


def generate(p: Prepared, fitted: Fitted) -> Samples:
    """Samples of every test trial (sharded over processes) and of each control (same model, trials
    and image seeds; EEG permuted), manifests, reference PNGs and the grid."""
    from PIL import Image

    work, protocol, test, info = p.work, p.protocol, p.test, p.dataset.info
    manifests = {}
    with p.timer("generate"):
        manifests["samples"] = _samples(p, fitted, "samples", None)
    for control in p.controls:
        with p.timer(f"generate_{control.stage}"):
            manifests[control.key] = _samples(p, fitted, control.folder, control.permutation)
    if not p.main:
        return Samples(images={}, reference=None)
    test_ids = list(test.trials["trial_id"])
    reference = test.images(protocol.image_size)
    for tid, img in zip(test_ids, reference):
        Image.fromarray(img.transpose(1, 2, 0)).save(work / "reference" / f"{_safe(tid)}.png")
    images = {name: _read_samples(work, manifest) for name, manifest in manifests.items()}  # (T, S, 3, H, W)
    _grid(reference, images["samples"], test.labels, info.class_names, work / "grid.png")
    return Samples(images=images, reference=reference)


def _samples(p: Prepared, fitted: Fitted, folder: str, permutation: np.ndarray | None) -> pd.DataFrame | None:
    """Generate (or, on resume, reuse) one sample folder; the main process writes its manifest.

    ``permutation`` None: each trial's own EEG; else trial ``i`` is generated from the EEG of
    trial ``permutation[i]`` (a control), with trial ``i``'s image seeds.
    """
    work, protocol, test, info = p.work, p.protocol, p.test, p.dataset.info
    manifest_file = work / folder / "manifest.csv"
    if p.cfg.resume and manifest_file.is_file():  # a resumed run reuses samples that were all written
        manifest = read_samples_manifest(manifest_file)
        if all((work / path).is_file() for path in manifest["path"]):
            log.info("samples generated before; reusing %s", manifest_file)
            return manifest
    if p.main:
        (work / folder).mkdir(exist_ok=True)
    p.accelerator.wait_for_everyone()
    gen_paths = _generate(fitted.method, test, protocol, work, p.accelerator, p.progress,
                          steps=p.generation["num_inference_steps"], batch_size=p.cfg.generate_batch_size,
                          folder=folder, eeg_rows=permutation)
    p.accelerator.wait_for_everyone()
    if not p.main:
        return None
    ids = list(test.trials["trial_id"])
    rows = []
    for i, (tid, lab, sub, iid) in enumerate(
            test.trials[["trial_id", "label", "subject", "image_id"]].itertuples(index=False)):
        for k in range(protocol.n_samples_per_trial):
            row = {"trial_id": tid, "sample_index": k, "label": int(lab), "class_name": info.class_names[lab],
                   "subject": int(sub), "image_id": iid, "path": str(gen_paths[tid][k].relative_to(work)),
                   "reference_path": f"reference/{_safe(tid)}.png"}
            if permutation is not None:
                row["eeg_from_trial"] = ids[int(permutation[i])]
            rows.append(row)
    manifest = pd.DataFrame(rows)
    atomic_write(manifest_file, lambda fh: fh.write(manifest.to_csv(index=False).encode()))
    return manifest


def score(p: Prepared, fitted: Fitted, samples: Samples) -> Scores:
    """Every protocol metric of the generated images and of each control's (core-owned; identical for
    every method; one :class:`~eegbench.scoring.ScoringContext`), the EEG decoding ceiling and the
    method's own EEG classifier (main process only)."""
    retrieval = None
    if _needs_embeddings(p.protocol, p.plugins):  # only where a metric reads them (retrieval)
        with p.timer("embed_retrieval"):
            retrieval = _retrieval_embeddings(fitted.method, p.test, p.work, p.accelerator.device,
                                              p.cfg.generate_batch_size)
    context = p.scoring_context(retrieval, samples.reference)
    with p.timer("metrics"):
        metrics = context.score(samples.images["samples"])
    controls: dict[str, Any] = {}
    if "shuffled-eeg" in p.protocol.controls:
        if p.control_reason is not None:
            controls["shuffled_eeg"] = {"skipped": p.control_reason}
        for control in p.controls:
            with p.timer(f"metrics_{control.stage}"):
                scored = context.score(samples.images[control.key], eeg_rows=control.permutation)
            controls[control.key] = {
                **permutation_record(control.permutation, p.test, p.cfg.seed, within=control.within),
                "samples": control.folder, "manifest": f"{control.folder}/manifest.csv", "metrics": scored,
            }
    with p.timer("eeg_decoding"):
        eeg_decoding = _decoding_record(p.train, p.test, p.dataset.info.n_classes)
        own = _own_classifier_record(fitted.method, p.test, p.accelerator.device, p.cfg.generate_batch_size)
    return Scores(metrics=metrics, controls=controls, retrieval=retrieval, eeg_decoding=eeg_decoding,
                  own_classifier=own)


def _changed_overrides(p: Prepared) -> list[str]:
    """The ``--set`` keys whose value differs from the method's default (a ``--set`` that restates
    a default leaves the recipe at its default)."""
    default = asdict(p.method_cls.default_config(p.cfg.profile))
    resolved = asdict(p.method_config)
    return [k for k in p.cfg.overrides if resolved.get(k) != default.get(k)]


def record(p: Prepared, fitted: Fitted, samples: Samples, scores: Scores) -> dict[str, Any]:
    """Write ``result.json`` (a :class:`~eegbench.results.RunResult`) and move the folder into place
    (main process only); returns the result with ``run_dir``."""
    cfg, method_cls = p.cfg, p.method_cls
    parameters = count_parameters(fitted.method)
    p.timer.durations["total"] = round(time.perf_counter() - p.t_start, 3)
    p.timer.resources["process"] = _usage_since(None)  # the whole process so far, imports included
    env = environment_info(p.accelerator)
    p.plugins.pm.hook.eegbench_update_environment_info(info=env)
    den = p.backbones.denoiser
    names = {c.key: c for c in p.controls}
    shuffled, block = names.get("shuffled_eeg"), names.get("block_shuffled_eeg")
    result = {
        "schema_version": SCHEMA_VERSION,
        "run_id": p.run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": {"name": method_cls.name, "version": method_cls.version, "paper": method_cls.paper,
                   "profile": cfg.profile, "config": asdict(p.method_config),
                   "role": getattr(method_cls, "role", "method"),
                   "reads_eeg": bool(getattr(method_cls, "reads_eeg", True)),
                   "reads_test_labels": bool(getattr(method_cls, "reads_test_labels", False))},
        "dataset": dataset_record(p.dataset, p.dataset_options),
        "split": p.split.to_dict(),
        "protocol": {**p.protocol.to_dict(), "hash": p.protocol.hash()},
        "seed": cfg.seed,
        "metrics": scores.metrics,
        "controls": scores.controls,
        "eeg_decoding": scores.eeg_decoding,
        "method_eeg_classifier": scores.own_classifier,
        "parameters": parameters,
        "durations_s": p.timer.durations,
        "stage_resources": p.timer.resources,
        "peak_memory_mb": {"rss_after_fit": round(fitted.peak_rss_mb, 1), "rss_total": round(_peak_rss_mb(), 1),
                           **({"cuda_max_allocated": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
                              if torch.cuda.is_available() else {})},
        "backbones": {"profile": cfg.profile, **asdict(p.settings),
                      **(p.backbones.describe() if hasattr(p.backbones, "describe") else {}),
                      "denoiser_train_seconds": getattr(den, "train_seconds", None),
                      "denoiser_loaded_from_cache": bool(getattr(den, "loaded_from_cache", False))},
        "captions": p.captions_record,
        "generation": p.generation,
        "recipe": recipe_record(method_config=asdict(p.method_config), overrides=_changed_overrides(p),
                                backbones=asdict(p.settings), backbone_overrides=cfg.backbone_overrides,
                                mixed_precision=p.mixed_precision, processes=int(p.accelerator.num_processes)),
        "retrieval": None if scores.retrieval is None else {
            "embedding": getattr(fitted.method, "embedding_description", "") or f"{method_cls.name}.embed_eeg",
            "dim": int(scores.retrieval["eeg"].shape[1]), "n_candidates": len(scores.retrieval["stimulus_ids"]),
            "file": RETRIEVAL_FILE},
        "max_steps": cfg.max_steps,
        "mixed_precision": p.mixed_precision,
        "training_history": fitted.ctx.history[-50:],
        "fit_fingerprint": fitted.fingerprint,
        "resumed": bool(cfg.resume),
        "processes": int(p.accelerator.num_processes),
        "environment": env,
        "config": p.config_record,
        "artifacts": {"samples": "samples", "manifest": "samples/manifest.csv", "reference": "reference",
                      **({"samples_shuffled": SHUFFLED_SAMPLES, "manifest_shuffled": f"{SHUFFLED_SAMPLES}/manifest.csv"}
                         if shuffled is not None else {}),
                      **({"samples_block_shuffled": BLOCK_SHUFFLED_SAMPLES,
                          "manifest_block_shuffled": f"{BLOCK_SHUFFLED_SAMPLES}/manifest.csv"}
                         if block is not None else {}),
                      **({"retrieval_embeddings": RETRIEVAL_FILE} if scores.retrieval is not None else {}),
                      "grid": "grid.png", "features": "features", "checkpoint": "checkpoint", "log": "log.txt",
                      "train_log": "train_log.jsonl"},
    }
    work = p.work
    RunResult.from_dict(result, source=f"run {p.run_id}").write(work / "result.json")
    shutil.rmtree(work / "train_state", ignore_errors=True)  # the fitted method is in checkpoint/
    _close_log(p)
    os.replace(work, p.final_dir)
    result["run_dir"] = str(p.final_dir)
    p.plugins.pm.hook.eegbench_run_end(result=result, run_dir=p.final_dir)
    return result


# ---------------------------------------------------------------------------------------------- failure
def _close_log(p: Prepared) -> None:
    if p.handler is not None:
        logging.getLogger("eegbench").removeHandler(p.handler)
        p.handler.close()
        p.handler = None


def _resumable(work: Path | None) -> bool:
    """Whether a partial folder holds trained state worth keeping (stage checkpoints or a fit)."""
    if work is None or not work.exists():
        return False
    state = work / "train_state"
    return (work / "checkpoint" / "fit.json").is_file() or (state.is_dir() and any(
        f.name.endswith((".final", ".json")) for f in state.iterdir()))


def _fail(p: Prepared, exc: BaseException) -> None:
    """Keep a partial folder that can be resumed (and say how); remove one that holds nothing."""
    _close_log(p)
    if not p.main or p.work is None or not p.work.exists():
        return
    if _resumable(p.work):
        log.error("run %s failed (%s: %s); trained state kept in %s", p.run_id, type(exc).__name__, exc, p.work)
        print(f"eegbench: run {p.run_id} stopped; its trained state is kept in {p.work}; continue it "
              f"with: eegbench run --resume {p.run_id} --runs-dir {p.runs_dir}", file=sys.stderr)
    elif not p.cfg.resume:
        shutil.rmtree(p.work, ignore_errors=True)


def run(cfg: RunConfig, *, plugins=None) -> dict[str, Any]:
    """Train, generate and score one method on one dataset/setting; write the run folder.

    The run is a pipeline of typed stage results, shared by a fresh run and ``cfg.resume``::

        prepare → Prepared → open_run → fit → Fitted → generate → Samples → score → Scores → record → result

    Training checkpoints go to ``runs/.partial-<run_id>/train_state/``; a run that fails or is
    killed after training started keeps its partial folder, and ``eegbench run --resume <run_id>``
    continues it (finished stages skipped, the current stage from its last checkpoint, a finished
    fit loaded, finished samples reused) with the same results as an uninterrupted run.

    Parameters
    ----------
    cfg : RunConfig
    plugins : eegbench.plugins.PluginSet, optional
        Pre-built plugin set (default: :func:`eegbench.plugins.get_plugin_manager`).

    Returns
    -------
    dict
        The result as written to ``runs/<run_id>/result.json`` (empty on non-main processes).

    Raises
    ------
    EegbenchError
        For unknown names, bad options, missing data or weights — before any folder is created when
        the problem is known up front; for a ``--resume`` whose run differs from this checkout's
        config, protocol or split.
    """
    if not torch.cuda.is_available():
        keep_freed_memory()  # CPU run: reuse freed activation buffers instead of faulting pages in again
    prepared = prepare(cfg, plugins)  # bad input fails here, before anything is written
    try:
        open_run(prepared)
        fitted = fit(prepared)
        samples = generate(prepared, fitted)
        prepared.accelerator.wait_for_everyone()
        if not prepared.main:
            _close_log(prepared)
            return {}
        return record(prepared, fitted, samples, score(prepared, fitted, samples))
    except BaseException as exc:
        _fail(prepared, exc)
        raise


def _generate(method, test, protocol: EvalProtocol, work: Path, accelerator, progress: bool,
              batch_size: int = 16, *, folder: str = "samples", eeg_rows: np.ndarray | None = None,
              steps: int | None = None) -> dict[str, list[Path]]:
    """Generate ``n_samples_per_trial`` PNGs per test trial into ``work/folder``; returns trial id → paths.

    Trial ``i`` is generated from the EEG (and subject) of trial ``eeg_rows[i]`` when given (the
    shuffled-EEG control), always with trial ``i``'s image seeds; a method that reads the test
    labels by design (``reads_test_labels``, the ``oracle-class`` reference) gets trial ``i``'s label.
    """
    from PIL import Image

    n = protocol.n_samples_per_trial
    ids = list(test.trials["trial_id"])
    paths = {tid: [work / folder / f"{_safe(tid)}_{k}.png" for k in range(n)] for tid in ids}
    source = np.arange(len(ids)) if eeg_rows is None else np.asarray(eeg_rows)
    label_kwarg = bool(getattr(method, "reads_test_labels", False))
    rank, world = accelerator.process_index, accelerator.num_processes
    mine = np.arange(len(ids))[rank::world]
    device = accelerator.device
    bar = tqdm(total=len(mine) * n, desc="generate" if eeg_rows is None else "generate (shuffled EEG)", unit="img",
               disable=not progress)
    for start in range(0, len(mine), batch_size):
        rows = mine[start : start + batch_size]
        eeg = torch.from_numpy(test.eeg[source[rows]]).to(device)
        subject = torch.from_numpy(test.subjects[source[rows]]).to(device)
        extra = {"labels": torch.from_numpy(test.labels[rows]).to(device)} if label_kwarg else {}
        gens = [torch.Generator(device=device).manual_seed(image_seed(protocol.seed, ids[r], k))
                for r in rows for k in range(n)]
        with torch.no_grad(), accelerator.autocast():  # --mixed-precision: frozen fp16/bf16 parts + fp32 copies
            images = method.generate(eeg, generators=gens, n_samples=n,
                                     num_inference_steps=int(steps or protocol.num_inference_steps),
                                     subject=subject, **extra)
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


def _needs_embeddings(protocol: EvalProtocol, plugins) -> bool:
    """Whether a metric of the protocol reads the method's EEG embeddings (``needs`` ``eeg_embeddings``)."""
    from eegbench.metric import get_metric

    return any("eeg_embeddings" in get_metric(plugins, key).needs for key in protocol.metrics)


def _retrieval_embeddings(method, test, work: Path, device, batch_size: int) -> dict[str, Any] | None:
    """The method's EEG embedding of every test trial and its embedding of every distinct test image.

    Written to ``work/RETRIEVAL_FILE`` (``eeg`` (T, D) and ``stimuli`` (N, D) float32, the
    stimulus ids in the file's metadata) so that ``eegbench evaluate`` can re-score them.

    Returns
    -------
    dict or None
        ``eeg``, ``stimuli`` (numpy float32), ``stimulus_ids`` (list of str); None when the method
        has no :meth:`~eegbench.method.Method.embed_eeg`.
    """
    rows = []
    for start in range(0, len(test), max(1, batch_size)):
        eeg = torch.from_numpy(np.ascontiguousarray(test.eeg[start:start + batch_size])).to(device)
        subject = torch.from_numpy(np.array(test.subjects[start:start + batch_size])).to(device)
        with torch.no_grad():
            out = method.embed_eeg(eeg, subject=subject)
        if out is None:
            return None
        rows.append(torch.as_tensor(out).detach().float().cpu().numpy())
    eeg_emb = np.concatenate(rows)
    with torch.no_grad():
        stimuli = torch.as_tensor(method.embed_stimuli(test)).detach().float().cpu().numpy()
    ids = sorted(set(test.trials["image_id"]))
    if eeg_emb.shape[0] != len(test) or stimuli.shape[0] != len(ids) or eeg_emb.shape[1:] != stimuli.shape[1:] \
            or eeg_emb.ndim != 2:
        raise EegbenchError(f"method {method.name!r}: embed_eeg gave {eeg_emb.shape} for {len(test)} trials and "
                            f"embed_stimuli {stimuli.shape} for {len(ids)} images; expected (T, D) and (N, D)")
    write_retrieval_embeddings(work / RETRIEVAL_FILE, eeg_emb, stimuli, trial_ids=list(test.trials["trial_id"]),
                               stimulus_ids=ids, description=getattr(method, "embedding_description", "") or "")
    return {"eeg": eeg_emb, "stimuli": stimuli, "stimulus_ids": ids}


#: Folder of the shuffled-EEG control's samples in a run folder.
SHUFFLED_SAMPLES = "samples_shuffled"
#: Folder of the within-block shuffled-EEG control's samples (datasets with a ``block`` column).
BLOCK_SHUFFLED_SAMPLES = "samples_block_shuffled"


def generation_record(method_cls, protocol: EvalProtocol) -> dict[str, Any]:
    """The sampler steps a run generates with: the protocol's, or the method's published ones.

    Parameters
    ----------
    method_cls : type
        The method class (``published_steps``: its paper's number of sampler steps).
    protocol : EvalProtocol
        ``num_inference_steps`` None means "each method's published steps" (the paper profile).

    Returns
    -------
    dict
        ``num_inference_steps`` (int) and ``source`` (``"protocol"`` or ``"published"``).

    Raises
    ------
    ConfigError
        The protocol leaves the steps to the method and the method declares none.
    """
    if protocol.num_inference_steps is not None:
        return {"num_inference_steps": int(protocol.num_inference_steps), "source": "protocol"}
    steps = int(getattr(method_cls, "published_steps", 0) or 0)
    if steps < 1:
        raise ConfigError(f"method {method_cls.name!r} declares no published_steps; pass --steps N")
    return {"num_inference_steps": steps, "source": "published"}


def dataset_protocol(protocol: EvalProtocol, info, plugins=None) -> EvalProtocol:
    """``protocol`` with the dataset's published-protocol metrics and its test-EEG choice added.

    Parameters
    ----------
    protocol : EvalProtocol
    info : DatasetInfo
        ``protocol_metrics`` (appended after the protocol's own, in order, each once) and
        ``test_eeg`` (recorded, hashed).
    plugins : eegbench.plugins.PluginSet, optional
        Where the added metrics are checked (unknown keys fail here).

    Returns
    -------
    EvalProtocol
        Unchanged for a dataset that declares neither (same hash as before).
    """
    extra = tuple(m for m in getattr(info, "protocol_metrics", ()) if m not in protocol.metrics)
    test_eeg = getattr(info, "test_eeg", "") or None
    if not extra and test_eeg is None:
        return protocol
    if extra:
        from eegbench.metric import get_metric
        from eegbench.plugins import get_plugin_manager

        plugins = plugins or get_plugin_manager()
        for key in extra:
            get_metric(plugins, key)
    return dataclasses.replace(protocol, metrics=protocol.metrics + extra, test_eeg=test_eeg)


def protocol_metrics(extra: Sequence[str] = (), plugins=None) -> tuple[str, ...]:
    """The protocol's metric list (:data:`eegbench.protocol.DEFAULT_METRICS`) plus ``extra`` (``--metric``).

    Raises
    ------
    PluginError
        For a metric name that is not registered (with close matches).
    """
    from eegbench.metric import get_metric
    from eegbench.protocol import DEFAULT_METRICS

    keys = list(DEFAULT_METRICS)
    for key in extra:
        if key not in keys:
            keys.append(str(key))
    if plugins is not None:
        for key in keys:
            get_metric(plugins, key)  # unknown names fail before anything is loaded
    return tuple(keys)


def control_skip_reason(method_cls, protocol: EvalProtocol, n_test: int) -> str | None:
    """Why a run scores no shuffled-EEG control, or None when it does.

    A method that does not read the EEG (``reads_eeg = False``: the ``class-prior`` and
    ``oracle-class`` references) would generate the very same images from shuffled EEG.
    """
    if "shuffled-eeg" not in protocol.controls:
        return "not in the protocol's controls"
    if not getattr(method_cls, "reads_eeg", True):
        return (f"method {method_cls.name!r} does not read the EEG: its images from shuffled EEG are its images "
                "from the real EEG")
    if n_test < 2:
        return "fewer than 2 test trials"
    return None


def control_permutation(subjects: np.ndarray, seed: int) -> np.ndarray:
    """Donor trial of each test trial for the shuffled-EEG control, permuted within subject.

    Within each subject the trials are put in a seeded random order and each trial takes the EEG
    of the next one in that order (the last takes the first's): a uniformly random single cycle,
    so no trial keeps its own EEG when its subject has two or more test trials, and every trial's
    EEG is used exactly once. Subject-specific layers therefore see their own subject's EEG.

    Parameters
    ----------
    subjects : numpy.ndarray, shape (T,), int
        Subject of each test trial.
    seed : int
        Run seed (``numpy.random.default_rng([seed, 7919])``: a stream of its own).

    Returns
    -------
    numpy.ndarray, shape (T,), int64
        ``perm[i]`` = index of the trial whose EEG trial ``i`` is generated from.
    """
    subjects = np.asarray(subjects)
    rng = np.random.default_rng([int(seed), 7919])
    perm = np.arange(len(subjects), dtype=np.int64)
    for subject in sorted(set(subjects.tolist())):
        _single_cycle(perm, np.flatnonzero(subjects == subject), rng)
    return perm


def _single_cycle(perm: np.ndarray, idx: np.ndarray, rng: np.random.Generator) -> None:
    """Make the trials ``idx`` one seeded random cycle of donors in ``perm`` (in place)."""
    order = idx[rng.permutation(len(idx))]
    perm[order] = np.roll(order, -1)


def block_control_permutation(subjects: np.ndarray, blocks: np.ndarray, seed: int) -> np.ndarray:
    """Donor trial of each test trial for the within-block shuffled-EEG control.

    The test for a recording-order shortcut (Li et al. 2020, "The perils and pitfalls of block
    design for EEG classification experiments", IEEE TPAMI): each test trial is generated from the
    EEG of another test trial of the **same recording block** (same subject, same ``block``), so
    whatever the EEG holds about the block (slow drift, electrode state, the time in the session)
    is kept while the response to the trial's own image is removed. A method whose score survives
    this control but not the ordinary shuffled-EEG control reads the block, not the stimulus.

    Within each (subject, block) group of two or more test trials the donors form one seeded
    random cycle (as :func:`control_permutation`); trials alone in their block are pooled per
    subject and cycled among themselves, and a subject's only such trial keeps its own EEG
    (counted in ``n_own_eeg`` of :func:`permutation_record`).

    Parameters
    ----------
    subjects : numpy.ndarray, shape (T,), int
        Subject of each test trial.
    blocks : numpy.ndarray, shape (T,), str
        Recording block of each test trial (the dataset's ``block`` column).
    seed : int
        Run seed (``numpy.random.default_rng([seed, 7927])``: a stream of its own).

    Returns
    -------
    numpy.ndarray, shape (T,), int64
        ``perm[i]`` = index of the trial whose EEG trial ``i`` is generated from.
    """
    subjects = np.asarray(subjects)
    blocks = np.asarray(blocks).astype(str)
    rng = np.random.default_rng([int(seed), 7927])
    perm = np.arange(len(subjects), dtype=np.int64)
    keys = [f"{s}\x00{b}" for s, b in zip(subjects.tolist(), blocks.tolist())]
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    singles: dict[Any, list[int]] = {}
    for key in sorted(groups):
        idx = np.asarray(groups[key])
        if len(idx) == 1:
            singles.setdefault(subjects[idx[0]].item(), []).append(int(idx[0]))
        else:
            _single_cycle(perm, idx, rng)
    for subject in sorted(singles):
        _single_cycle(perm, np.asarray(singles[subject]), rng)
    return perm


def permutation_record(perm: np.ndarray, test, seed: int, within: str = "subject") -> dict[str, Any]:
    """What ``result.json`` says about a control's permutation (``within``: "subject" or "block")."""
    labels = np.asarray(test.labels)
    what = ("within subject, one seeded random cycle per subject" if within == "subject" else
            "within recording block (same subject and block), one seeded random cycle per block")
    extra = {}
    if within == "block":
        image_ids = test.trials["image_id"].to_numpy()
        extra = {"same_image_fraction": float(np.mean(image_ids[perm] == image_ids)) if len(perm) else None}
    return {"permutation": what, "seed": int(seed), **extra,
            "permutation_sha256": hashlib.sha256(np.asarray(perm, dtype=np.int64).tobytes()).hexdigest(),
            "n_trials": int(len(perm)), "n_own_eeg": int(np.sum(perm == np.arange(len(perm)))),
            "same_class_fraction": float(np.mean(labels[perm] == labels)) if len(perm) else None}


def _read_samples(work: Path, manifest: pd.DataFrame) -> np.ndarray:
    """The PNGs of a manifest as uint8 (n_trials, n_samples, 3, H, W), in manifest trial order."""
    from PIL import Image

    return np.stack([
        np.stack([np.asarray(Image.open(work / p).convert("RGB")).transpose(2, 0, 1) for p in grp["path"]])
        for _, grp in manifest.groupby("trial_id", sort=False)
    ])


def _decoding_record(train, test, n_classes: int) -> dict[str, Any]:
    """The split's EEG decoding ceiling (:func:`eegbench.decoding.eeg_decoding`), or why there is none."""
    from eegbench.decoding import eeg_decoding

    try:
        return eeg_decoding(train.eeg, train.labels, test.eeg, test.labels, n_classes=n_classes)
    except EegbenchError as exc:
        return {"skipped": str(exc)}


def _own_classifier_record(method, test, device, batch_size: int) -> dict[str, Any] | None:
    """Test accuracy of the method's own EEG classifier (``Method.predict_classes``), if it has one."""
    from sklearn.metrics import balanced_accuracy_score

    preds = []
    for start in range(0, len(test), max(1, batch_size)):
        eeg = torch.from_numpy(test.eeg[start:start + batch_size]).to(device)
        with torch.no_grad():
            out = method.predict_classes(eeg)
        if out is None:
            return None
        preds.append(torch.as_tensor(out).reshape(-1).cpu().numpy())
    pred = np.concatenate(preds).astype(np.int64)
    labels = np.asarray(test.labels).astype(np.int64)
    if pred.shape != labels.shape:
        raise EegbenchError(f"method {method.name!r}: predict_classes returned {pred.shape[0]} classes for "
                            f"{labels.shape[0]} trials")
    return {"what": getattr(method, "classifier_description", "") or f"{method.name}'s own EEG classifier",
            "accuracy": float(np.mean(pred == labels)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, pred)), "n_trials": int(len(labels)),
            "predicted_distribution": (np.bincount(pred, minlength=method.info.n_classes) / len(pred)).tolist()}
