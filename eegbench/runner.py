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
from eegbench.backbones import Backbones, SmallProfile, default_weights_root
from eegbench.datasets import default_cache_dir, default_data_root
from eegbench.datasets.info import make_loader
from eegbench.config import check_sampler
from eegbench.errors import ConfigError, EegbenchError
from eegbench.evaluate import find_inception_weights, reference_cache_name, resolve_protocol, score_images
from eegbench.hostalloc import keep_freed_memory
from eegbench.method import RunContext, apply_overrides, count_parameters
from eegbench.metrics.retrieval import RETRIEVAL_FILE, write_retrieval_embeddings
from eegbench.protocol import PAPER_PROTOCOL, EvalProtocol, image_seed
from eegbench.results import SCHEMA_VERSION, RunResult, environment_info, recipe_record, write_json_atomic
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


#: The run's steps, in order (methods of ``_Run``; ``durations_s`` times load_data,
#: denoiser_pretrain, fit, generate, metrics and the total).
RUN_STEPS = ("prepare", "open_folder", "backbones", "fit", "generate", "score", "record")

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


def _check_taef2(weights_root: Path) -> None:
    """Fail fast if the small profile's TAEF2 weights are missing."""
    taef2 = weights_root / "taef2"
    missing = [str(taef2 / f) for f in ("taef2_encoder.pth", "taef2_decoder.pth") if not (taef2 / f).is_file()]
    if missing:
        from eegbench.errors import WeightsNotFoundError

        raise WeightsNotFoundError(
            f"missing weights {', '.join(missing)}; set --weights-root or EEGBENCH_WEIGHTS to the folder "
            "holding taef2/ (the TAEF2 autoencoder from github.com/madebyollin/taesd)"
        )


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


class _Run:
    """One run as named steps (:data:`RUN_STEPS`), shared by a fresh run and ``--resume``."""

    def __init__(self, cfg: RunConfig, plugins) -> None:
        from eegbench.plugins import get_plugin_manager

        self.cfg = cfg
        self.plugins = plugins or get_plugin_manager()
        self.timer = _Timer()
        self.t_start = time.perf_counter()
        self.handler: logging.Handler | None = None
        self.work: Path | None = None
        self.main = True

    # ------------------------------------------------------------------ prepare
    def prepare(self) -> None:
        """Names, options, weights, protocol, data and split; nothing is written yet."""
        cfg, plugins = self.cfg, self.plugins
        _check_counts(cfg)
        self.mixed_precision = resolve_mixed_precision(cfg.mixed_precision)
        check_sampler(cfg.sampler)
        self.method_cls = plugins.methods.get(cfg.method)
        self.data_root = Path(cfg.data_root or default_data_root())
        self.cache_dir = Path(cfg.cache_dir or default_cache_dir())
        self.dataset_options = {str(k): str(v) for k, v in sorted(cfg.dataset_options.items())}
        loader = make_loader(cfg.dataset, self.data_root, self.cache_dir, self.dataset_options, plugins=plugins)
        setting_fn = plugins.settings.get(cfg.setting)
        method_config = apply_overrides(self.method_cls.default_config(cfg.profile), cfg.overrides)
        self.method_config = apply_protocol_to_config(method_config, self.method_cls.name, sampler=cfg.sampler,
                                                      guidance_scale=cfg.guidance_scale)
        self.weights_root = Path(cfg.weights_root or default_weights_root())
        if cfg.profile == "paper":
            # the weight folders are checked, and the image size read from their configs, before any data loads
            from eegbench.backbones.sd import paper_settings, paper_backbones_for

            self.profile = paper_settings(cfg.backbone_overrides)
            self.paper_meta = paper_backbones_for(self.method_cls, weights_root=self.weights_root,
                                                  settings=self.profile, class_names=(), device="meta")
            image_size = self.paper_meta.image_size
        elif cfg.profile == "small":
            self.profile = apply_overrides(SmallProfile(), cfg.backbone_overrides)
            image_size = self.profile.image_size
            _check_taef2(self.weights_root)
        else:
            raise ConfigError(f"--profile {cfg.profile}: unknown; known: small, paper")
        # scoring weights are checked before any data is loaded (a bad file fails fast)
        self.inception_weights = find_inception_weights(cfg.inception_weights)
        defaults = PAPER_PROTOCOL if cfg.profile == "paper" else {
            "n_samples_per_trial": EvalProtocol.n_samples_per_trial,
            "num_inference_steps": EvalProtocol.num_inference_steps}
        self.protocol = resolve_protocol(
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
            inception_weights=self.inception_weights, classifier_weights=cfg.classifier_weights,
        )
        self.generation = generation_record(self.method_cls, self.protocol)  # before the data: fails fast
        with self.timer("load_data"):
            self.dataset = loader.load()
            self.split = setting_fn(self.dataset, subject=cfg.subject)
        self.protocol = dataset_protocol(self.protocol, self.dataset.info, plugins)
        if not self.split.test:
            raise ConfigError(f"setting {cfg.setting!r} produced an empty test split")
        self.captions_record = _attach_captions(self.dataset, self.split, self.dataset_options.get("captions"))

    # ------------------------------------------------------------------ the run folder
    def open_folder(self) -> None:
        """Create ``runs/.partial-<run_id>/`` (or reopen it for ``--resume``) and start the log."""
        from accelerate.utils import broadcast_object_list, set_seed

        cfg = self.cfg
        self.accelerator = _make_accelerator(self.mixed_precision)
        self.main = self.accelerator.is_main_process
        self.progress = cfg.progress and self.main
        set_seed(cfg.seed)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        subject_tag = f"-sub{cfg.subject}" if cfg.subject is not None else ""
        run_id = [cfg.run_id or _safe(f"{cfg.method}_{cfg.dataset}_{cfg.setting}{subject_tag}_seed{cfg.seed}_{stamp}")]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(run_id)
        self.run_id = run_id[0]
        self.runs_dir = Path(cfg.runs_dir)
        self.final_dir = self.runs_dir / self.run_id
        if self.final_dir.exists():
            raise ConfigError(f"run folder {self.final_dir} already exists; pass another --run-id")
        work = partial_dir(self.runs_dir, self.run_id)
        self.config_record = {
            **config_record(cfg),
            "data_root": str(self.data_root), "weights_root": str(self.weights_root),
            "cache_dir": str(self.cache_dir),
            "method_config": asdict(self.method_config), "backbones": asdict(self.profile),
        }
        identity = {"method_config": asdict(self.method_config), "backbones": asdict(self.profile),
                    "protocol_hash": self.protocol.hash(), "split_sha256": self.split.sha256}
        identity = json.loads(json.dumps(identity, default=list))  # as stored (tuples → lists)
        interrupted = (work / "run.json").is_file()
        self.accelerator.wait_for_everyone()  # every process looks before the main one writes
        if cfg.resume:
            record_file = work / "run.json"
            if not record_file.is_file():
                raise ConfigError(f"--resume {self.run_id}: no interrupted run {work}")
            stored = json.loads(record_file.read_text(encoding="utf-8"))
            diffs = _differences({k: stored.get(k) for k in identity}, identity)
            if diffs:
                raise ConfigError(f"--resume {self.run_id}: refused, the run's config/protocol/split differ from "
                                  f"what this checkout computes: {'; '.join(diffs)}")
        elif interrupted:
            raise ConfigError(f"{work} holds an interrupted run; continue it with --resume {self.run_id} "
                              f"(or delete that folder to start again)")
        elif self.main:
            if work.exists():  # a folder that never got its run.json holds nothing to keep
                shutil.rmtree(work)
            (work / "samples").mkdir(parents=True)
            (work / "reference").mkdir()
            write_json_atomic(work / "run.json", {"run_id": self.run_id, "run_config": config_record(cfg),
                                                  **identity})
        self.accelerator.wait_for_everyone()
        self.work = work
        if self.main:
            self.handler = _setup_file_logging(work)
        log.info("run %s%s: method=%s dataset=%s setting=%s split=%s sizes=%s", self.run_id,
                 " (resumed)" if cfg.resume else "", cfg.method, cfg.dataset, cfg.setting, self.split.sha256[:12],
                 self.split.sizes())
        self.plugins.pm.hook.eegbench_run_start(config=self.config_record, run_dir=work)
        dataset = self.dataset
        self.train, self.val, self.test = (dataset.subset(ids) for ids in (self.split.train, self.split.val,
                                                                            self.split.test))
        if self.protocol.max_test_trials:
            self.test = self.test.subset(list(self.test.trials["trial_id"][: self.protocol.max_test_trials]))
        self.permutation = self.block_permutation = None
        self.control_reason = control_skip_reason(self.method_cls, self.protocol, len(self.test))
        if self.control_reason is None:
            self.permutation = control_permutation(self.test.subjects, cfg.seed)
            if "block" in self.test.trials.columns:  # the dataset marks recording blocks
                self.block_permutation = block_control_permutation(self.test.subjects,
                                                                   self.test.trials["block"].to_numpy(), cfg.seed)

    # ------------------------------------------------------------------ steps
    def backbones(self) -> None:
        """Shared backbones; the denoiser is pretrained once per dataset and cached (file-locked)."""
        dataset, profile = self.dataset, self.profile
        train_image_ids = sorted(set(self.train.trials["image_id"]))
        self.train_images = dataset.stimuli.load_many(train_image_ids, self.protocol.image_size)
        self.train_image_labels = np.array([dataset.stimuli.labels[i] for i in train_image_ids])
        if self.cfg.profile == "paper":
            from eegbench.backbones.sd import paper_backbones_for

            with self.timer("load_backbones"):
                self.bb = paper_backbones_for(self.method_cls, weights_root=self.weights_root, settings=profile,
                                              class_names=dataset.info.class_names, device=self.accelerator.device,
                                              dtype=MIXED_PRECISION[self.mixed_precision], progress=self.progress)
                self.bb.prepare_denoiser()
            return
        self.bb = Backbones(self.cfg.profile, weights_root=self.weights_root, cache_dir=self.cache_dir,
                            device=self.accelerator.device, settings=profile, progress=self.progress)
        with self.timer("denoiser_pretrain"):
            # the main process pretrains (or loads) first; the others then load its cached copy
            for turn in (True, False):
                if self.main is turn:
                    self.bb.prepare_denoiser(self.train_images, self.train_image_labels, dataset.info.class_names,
                                             dataset_key=f"{dataset.info.name}-{dataset.info.version}", seed=0)
                self.accelerator.wait_for_everyone()

    def fit(self) -> None:
        """Fit the method (stage checkpoints under ``train_state/``), then save it to ``checkpoint/``."""
        from accelerate.utils import set_seed

        cfg, work = self.cfg, self.work
        set_seed(cfg.seed)
        self.method = self.method_cls(self.method_config, info=self.dataset.info, backbones=self.bb,
                                      device=self.accelerator.device)
        self.ctx = RunContext(accelerator=self.accelerator, seed=cfg.seed, work_dir=work, progress=self.progress,
                              logger=log, checkpoint_dir=work / "train_state", checkpoint_every=cfg.checkpoint_every,
                              max_steps=cfg.max_steps)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        done = work / "checkpoint" / "fit.json"
        with self.timer("fit"):
            if cfg.resume and done.is_file():
                self.method.load(work / "checkpoint")
                self.ctx.history[:] = json.loads(done.read_text(encoding="utf-8"))["history"]
                log.info("fit finished before; loaded %s", work / "checkpoint")
            else:
                self.method.fit(self.train, self.val, self.ctx)
                if self.main:
                    self.method.save(work / "checkpoint")
                    write_json_atomic(done, {"history": self.ctx.history})
                self.accelerator.wait_for_everyone()
        self.peak_fit = _peak_rss_mb()
        self.fit_fingerprint = _fingerprint(self.method, self.accelerator)


    def generate(self) -> None:
        """Samples of every test trial (sharded over processes), manifest, references, grid; then the
        shuffled-EEG control's samples (same model, trials and image seeds; EEG permuted within subject)."""
        from PIL import Image

        work, protocol, test, info = self.work, self.protocol, self.test, self.dataset.info
        with self.timer("generate"):
            manifest = self._samples("samples", None)
        if self.control_reason is None:
            with self.timer("generate_shuffled"):
                self.shuffled_manifest = self._samples(SHUFFLED_SAMPLES, self.permutation)
        if self.block_permutation is not None:
            with self.timer("generate_block_shuffled"):
                self.block_manifest = self._samples(BLOCK_SHUFFLED_SAMPLES, self.block_permutation)
        if not self.main:
            return
        test_ids = list(test.trials["trial_id"])
        self.ref_images = test.images(protocol.image_size)
        for tid, img in zip(test_ids, self.ref_images):
            Image.fromarray(img.transpose(1, 2, 0)).save(work / "reference" / f"{_safe(tid)}.png")
        self.generated = _read_samples(work, manifest)  # (n_test, n_samples, 3, H, W)
        _grid(self.ref_images, self.generated, test.labels, info.class_names, work / "grid.png")
        if self.control_reason is None:
            self.generated_shuffled = _read_samples(work, self.shuffled_manifest)
        if self.block_permutation is not None:
            self.generated_block_shuffled = _read_samples(work, self.block_manifest)

    def _samples(self, folder: str, permutation: np.ndarray | None) -> pd.DataFrame | None:
        """Generate (or, on resume, reuse) one sample folder; the main process writes its manifest.

        ``permutation`` None: each trial's own EEG; else trial ``i`` is generated from the EEG of
        trial ``permutation[i]`` (the shuffled-EEG control), with trial ``i``'s image seeds.
        """
        work, protocol, test, info = self.work, self.protocol, self.test, self.dataset.info
        manifest_file = work / folder / "manifest.csv"
        if self.cfg.resume and manifest_file.is_file():  # a resumed run reuses samples that were all written
            manifest = pd.read_csv(manifest_file, dtype={"trial_id": str})
            if all((work / p).is_file() for p in manifest["path"]):
                log.info("samples generated before; reusing %s", manifest_file)
                return manifest
        if self.main:
            (work / folder).mkdir(exist_ok=True)
        self.accelerator.wait_for_everyone()
        gen_paths = _generate(self.method, test, protocol, work, self.accelerator, self.progress,
                              steps=self.generation["num_inference_steps"],
                              batch_size=self.cfg.generate_batch_size, folder=folder, eeg_rows=permutation)
        self.accelerator.wait_for_everyone()
        if not self.main:
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

    def score(self) -> None:
        """Every protocol metric of the generated images (core-owned; identical for every method), the
        same for the shuffled-EEG control, the EEG decoding ceiling and the method's own EEG classifier."""
        kwargs = dict(inception_weights=self.inception_weights, classifier_weights=self.cfg.classifier_weights,
                      dataset_options=self.dataset_options, features_dir=self.work / "features",
                      plugins=self.plugins)

        self.retrieval = None
        if _needs_embeddings(self.protocol, self.plugins):  # only where a metric reads them (retrieval)
            with self.timer("embed_retrieval"):
                self.retrieval = _retrieval_embeddings(self.method, self.test, self.work, self.accelerator.device,
                                                       self.cfg.generate_batch_size)

        def score_of(images, permutation=None):
            return _score(images, self.ref_images, self.test, self.train_images, self.train_image_labels,
                          self.dataset, self.split, self.protocol, self._scoring_embedder(), self.cache_dir,
                          self.progress, retrieval=self.retrieval, eeg_rows=permutation, **kwargs)

        with self.timer("metrics"):
            self.metrics = score_of(self.generated)
        self.controls: dict[str, Any] = {}
        if "shuffled-eeg" in self.protocol.controls:
            if self.control_reason is not None:
                self.controls["shuffled_eeg"] = {"skipped": self.control_reason}
            else:
                with self.timer("metrics_shuffled"):
                    shuffled = score_of(self.generated_shuffled, self.permutation)
                self.controls["shuffled_eeg"] = {
                    **permutation_record(self.permutation, self.test, self.cfg.seed),
                    "samples": SHUFFLED_SAMPLES, "manifest": f"{SHUFFLED_SAMPLES}/manifest.csv", "metrics": shuffled,
                }
            if self.block_permutation is not None:
                with self.timer("metrics_block_shuffled"):
                    within = score_of(self.generated_block_shuffled, self.block_permutation)
                self.controls["block_shuffled_eeg"] = {
                    **permutation_record(self.block_permutation, self.test, self.cfg.seed, within="block"),
                    "samples": BLOCK_SHUFFLED_SAMPLES, "manifest": f"{BLOCK_SHUFFLED_SAMPLES}/manifest.csv",
                    "metrics": within,
                }
        with self.timer("eeg_decoding"):
            self.eeg_decoding = _decoding_record(self.train, self.test, self.dataset.info.n_classes)
            self.own_classifier = _own_classifier_record(self.method, self.test, self.accelerator.device,
                                                         self.cfg.generate_batch_size)

    def _changed_overrides(self) -> list[str]:
        """The ``--set`` keys whose value differs from the method's default (a ``--set`` that restates
        a default leaves the recipe at its default)."""
        default = asdict(self.method_cls.default_config(self.cfg.profile))
        resolved = asdict(self.method_config)
        return [k for k in self.cfg.overrides if resolved.get(k) != default.get(k)]

    def _scoring_embedder(self):
        """The protocol's image features (EfficientNet-Lite0) for the probe, whatever the profile."""
        if self.cfg.profile == "small":
            return self.bb.image_embedder  # the same network, already loaded
        from eegbench.backbones.embedders import EfficientNetLite0Features

        return EfficientNetLite0Features.from_package().to(self.accelerator.device).eval().requires_grad_(False)

    def record(self) -> dict[str, Any]:
        """Write ``result.json`` and move the folder into place (main process only)."""
        cfg, dataset, method_cls = self.cfg, self.dataset, self.method_cls
        parameters = count_parameters(self.method)
        self.timer.durations["total"] = round(time.perf_counter() - self.t_start, 3)
        self.timer.resources["process"] = _usage_since(None)  # the whole process so far, imports included
        env = environment_info(self.accelerator)
        self.plugins.pm.hook.eegbench_update_environment_info(info=env)
        den = self.bb.denoiser
        result = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "method": {"name": method_cls.name, "version": method_cls.version, "paper": method_cls.paper,
                       "profile": cfg.profile, "config": asdict(self.method_config),
                       "role": getattr(method_cls, "role", "method"),
                       "reads_eeg": bool(getattr(method_cls, "reads_eeg", True)),
                       "reads_test_labels": bool(getattr(method_cls, "reads_test_labels", False))},
            "dataset": {"name": dataset.info.name, "version": dataset.info.version,
                        "n_chans": dataset.info.n_chans, "n_times": dataset.info.n_times,
                        "sfreq": dataset.info.sfreq, "unit": dataset.info.unit,
                        "class_names": list(dataset.info.class_names), "n_trials": len(dataset),
                        "wnids": list(getattr(dataset.info, "wnids", ()) or ()),
                        "stimulus_level": getattr(dataset.info, "stimulus_level", "class"),
                        "options": self.dataset_options,
                        **({"data_card": dataset.info.description, "licence": dataset.info.licence,
                            "split_source": dataset.split_source}
                           if getattr(dataset.info, "description", "") else {})},
            "split": self.split.to_dict(),
            "protocol": {**self.protocol.to_dict(), "hash": self.protocol.hash()},
            "seed": cfg.seed,
            "metrics": self.metrics,
            "controls": self.controls,
            "eeg_decoding": self.eeg_decoding,
            "method_eeg_classifier": self.own_classifier,
            "parameters": parameters,
            "durations_s": self.timer.durations,
            "stage_resources": self.timer.resources,
            "peak_memory_mb": {"rss_after_fit": round(self.peak_fit, 1), "rss_total": round(_peak_rss_mb(), 1),
                               **({"cuda_max_allocated": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
                                  if torch.cuda.is_available() else {})},
            "backbones": {"profile": cfg.profile, **asdict(self.profile),
                          **(self.bb.describe() if hasattr(self.bb, "describe") else {}),
                          "denoiser_train_seconds": getattr(den, "train_seconds", None),
                          "denoiser_loaded_from_cache": bool(getattr(den, "loaded_from_cache", False))},
            "captions": self.captions_record,
            "generation": self.generation,
            "recipe": recipe_record(method_config=asdict(self.method_config), overrides=self._changed_overrides(),
                                    backbones=asdict(self.profile), backbone_overrides=cfg.backbone_overrides,
                                    mixed_precision=self.mixed_precision,
                                    processes=int(self.accelerator.num_processes)),
            "retrieval": None if self.retrieval is None else {
                "embedding": getattr(self.method, "embedding_description", "") or f"{method_cls.name}.embed_eeg",
                "dim": int(self.retrieval["eeg"].shape[1]), "n_candidates": len(self.retrieval["stimulus_ids"]),
                "file": RETRIEVAL_FILE},
            "max_steps": cfg.max_steps,
            "mixed_precision": self.mixed_precision,
            "training_history": self.ctx.history[-50:],
            "fit_fingerprint": self.fit_fingerprint,
            "resumed": bool(cfg.resume),
            "processes": int(self.accelerator.num_processes),
            "environment": env,
            "config": self.config_record,
            "artifacts": {"samples": "samples", "manifest": "samples/manifest.csv", "reference": "reference",
                          **({"samples_shuffled": SHUFFLED_SAMPLES,
                              "manifest_shuffled": f"{SHUFFLED_SAMPLES}/manifest.csv"}
                             if self.control_reason is None else {}),
                          **({"samples_block_shuffled": BLOCK_SHUFFLED_SAMPLES,
                              "manifest_block_shuffled": f"{BLOCK_SHUFFLED_SAMPLES}/manifest.csv"}
                             if self.block_permutation is not None else {}),
                          **({"retrieval_embeddings": RETRIEVAL_FILE} if self.retrieval is not None else {}),
                          "grid": "grid.png", "features": "features", "checkpoint": "checkpoint", "log": "log.txt",
                          "train_log": "train_log.jsonl"},
        }
        work = self.work
        RunResult.from_dict(result, source=f"run {self.run_id}").write(work / "result.json")
        shutil.rmtree(work / "train_state", ignore_errors=True)  # the fitted method is in checkpoint/
        self._close_log()
        os.replace(work, self.final_dir)
        result["run_dir"] = str(self.final_dir)
        self.plugins.pm.hook.eegbench_run_end(result=result, run_dir=self.final_dir)
        return result

    # ------------------------------------------------------------------ failure
    def _close_log(self) -> None:
        if self.handler is not None:
            logging.getLogger("eegbench").removeHandler(self.handler)
            self.handler.close()
            self.handler = None

    def resumable(self) -> bool:
        """Whether the partial folder holds trained state worth keeping (stage checkpoints or a fit)."""
        work = self.work
        if work is None or not work.exists():
            return False
        state = work / "train_state"
        return (work / "checkpoint" / "fit.json").is_file() or (state.is_dir() and any(
            p.name.endswith((".final", ".json")) for p in state.iterdir()))

    def fail(self, exc: BaseException) -> None:
        """Keep a partial folder that can be resumed (and say how); remove one that holds nothing."""
        self._close_log()
        if not self.main or self.work is None or not self.work.exists():
            return
        if self.resumable():
            log.error("run %s failed (%s: %s); trained state kept in %s", self.run_id, type(exc).__name__, exc,
                      self.work)
            print(f"eegbench: run {self.run_id} stopped; its trained state is kept in {self.work}; continue it "
                  f"with: eegbench run --resume {self.run_id} --runs-dir {self.runs_dir}", file=sys.stderr)
        elif not self.cfg.resume:
            shutil.rmtree(self.work, ignore_errors=True)


def run(cfg: RunConfig, *, plugins=None) -> dict[str, Any]:
    """Train, generate and score one method on one dataset/setting; write the run folder.

    The run is a sequence of named steps (:data:`RUN_STEPS`: prepare → backbones → fit → generate →
    score → record) shared by a fresh run and ``cfg.resume``. Training checkpoints go to
    ``runs/.partial-<run_id>/train_state/``; a run that fails or is killed after training started
    keeps its partial folder, and ``eegbench run --resume <run_id>`` continues it (finished stages
    skipped, the current stage from its last checkpoint, a finished fit loaded, finished samples
    reused) with the same results as an uninterrupted run.

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
    r = _Run(cfg, plugins)
    r.prepare()  # bad input fails here, before anything is written
    try:
        for step in RUN_STEPS[1:-2]:  # open_folder, backbones, fit, generate
            getattr(r, step)()
        r.accelerator.wait_for_everyone()
        if not r.main:
            r._close_log()
            return {}
        r.score()
        return r.record()
    except BaseException as exc:
        r.fail(exc)
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


def _score(generated, ref_images, test, train_images, train_labels, dataset, split, protocol, image_embedder,
           cache_dir: Path, progress: bool, *, inception_weights: Path | None = None,
           classifier_weights: Path | None = None, dataset_options: dict[str, str] | None = None,
           features_dir: Path | None = None, plugins=None, retrieval: dict[str, Any] | None = None,
           eeg_rows: np.ndarray | None = None) -> dict[str, Any]:
    """Every protocol metric (:func:`eegbench.evaluate.score_images`) of one run's images.

    ``retrieval`` holds the method's embeddings (:func:`_retrieval_embeddings`); with ``eeg_rows``
    (a control's permutation) trial ``i`` gets the EEG embedding of trial ``eeg_rows[i]``.
    """
    eeg_emb = stim_emb = stim_ids = None
    if retrieval is not None:
        eeg_emb = retrieval["eeg"] if eeg_rows is None else retrieval["eeg"][np.asarray(eeg_rows)]
        stim_emb, stim_ids = retrieval["stimuli"], retrieval["stimulus_ids"]
    return score_images(
        generated, ref_images, protocol=protocol, labels=test.labels,
        trial_ids=list(test.trials["trial_id"]), n_classes=dataset.info.n_classes,
        wnids=tuple(getattr(dataset.info, "wnids", ()) or ()), train_images=train_images, train_labels=train_labels,
        image_embedder=image_embedder, cache_dir=cache_dir / "fidelity",
        reference_cache_name=reference_cache_name(dataset.info.name, dataset.info.version, dataset_options,
                                                  split.sha256, len(ref_images), protocol.image_size),
        inception_weights=inception_weights, classifier_weights=classifier_weights, progress=progress,
        generated_cache_dir=features_dir, image_ids=list(test.trials["image_id"]),
        stimulus_level=getattr(dataset.info, "stimulus_level", "class"), plugins=plugins,
        eeg_embeddings=eeg_emb, stimulus_embeddings=stim_emb, stimulus_ids=stim_ids,
    )


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
