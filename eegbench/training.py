"""One stage trainer for every training stage of every method and for the shared denoiser.

A method declares each training stage as a :class:`Stage` — the module to train, a step function
that returns its losses, the batches, the optimiser recipe and how validation selects the kept
weights — and hands it to :meth:`StageTrainer.run_stage`. The trainer owns the loop: step budget,
learning-rate schedule, gradient accumulation, gradient clipping, mixed precision and processes
(through :class:`accelerate.Accelerator`), EMA, logging, periodic validation on the validation split,
best-state selection (validation only, never test), checkpoints and resume.

Checkpoints
-----------
Every ``checkpoint_every`` optimiser steps the full training state goes into
``<checkpoint_dir>/<stage>.step<N>/state.pt`` (every module of the method, optimiser, LR scheduler,
EMA, GradScaler, best-so-far weights, every random-number generator of every process, the position
in the epoch) and a pointer
``<stage>.json`` is replaced atomically; when a stage ends, its final weights and RNG state go into
``<stage>.final/`` and the step checkpoints are removed. A resumed run skips a stage with a ``.final``
folder (restoring its weights and RNG state) and continues a stage with a step checkpoint at the
step after it, so that a resumed run gives the same weights as an uninterrupted one with the same
seed on the same machine and the same number of processes. Checkpoints are written by the main
process only (the other processes' RNG states are gathered to it) and read with
``torch.load(weights_only=True)``. (``accelerator.save_state`` is not used: it reloads custom
objects with ``weights_only=False`` and ignores a failure to restore the RNG states, which would
silently break the bit-identical resume.)

Batches
-------
``Stage.data`` tensors are served by a shuffled ``DataLoader`` (``drop_last=True``) prepared by the
accelerator, epoch after epoch. The global batch is ``Stage.batch_size`` whatever the number of
processes and the accumulation: each process loads ``batch_size / (processes × accumulation)``
trials per micro-step.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from eegbench.files import write_text_atomic
from eegbench.errors import ConfigError, EegbenchError

__all__ = [
    "fp32_recurrent",
    "Stage",
    "StageOutcome",
    "StageTrainer",
    "CheckpointError",
    "diffusion_target",
    "fixed_noise",
    "stimulus_latents",
    "stimulus_features",
    "get_rng_state",
    "set_rng_state",
]

log = logging.getLogger("eegbench.training")

StepFn = Callable[[nn.Module, Any], Mapping[str, torch.Tensor]]


class CheckpointError(EegbenchError):
    """A checkpoint cannot be read or does not belong to this run."""


@dataclass
class Stage:
    """What a method declares for one training stage (the loop is :class:`StageTrainer`'s).

    Parameters
    ----------
    model : torch.nn.Module
        The module whose forward the step function calls; prepared by the accelerator (DDP across
        processes, mixed-precision autocast) unless ``distributed`` is False.
    step : callable ``(model, batch) -> dict of str to torch.Tensor``
        One forward pass on a micro-batch. Must return ``"loss"`` (a scalar to minimise); every
        other 0-d tensor is averaged over ``log_every`` steps and logged. ``model`` is the prepared
        module; ``batch`` is a sequence of the ``data`` tensors' rows on the device, or None
        without ``data`` (the step then draws its batch itself, from ``generators``).
    data : sequence of torch.Tensor, optional
        Tensors of equal length (dim 0 = trials) served in shuffled batches with ``drop_last``.
    batch_size : int
        Global batch size (all processes, all accumulation micro-steps together).
    optimizer : callable ``(params) -> torch.optim.Optimizer``
        Builds the optimiser from ``params``.
    params : list, optional
        Parameters or param groups for ``optimizer``; default: the parameters of ``model`` that
        require grad when the stage starts (set them with ``Method.configure_stage``). They must
        be parameters of ``model`` (under DDP only those have their gradients averaged).
    lr_at : callable ``(step_index) -> float``, optional
        Absolute learning rate of every param group before optimiser step ``step_index`` (0-based);
        stateless, so it resumes from the step alone.
    scheduler : callable ``(optimizer) -> torch.optim.lr_scheduler.LRScheduler``, optional
        A scheduler stepped once per optimiser step (checkpointed).
    grad_clip : float
        Max gradient norm (0 disables).
    accumulation : int
        Micro-steps per optimiser step (gradient accumulation).
    ema : callable ``(params) -> diffusers.training_utils.EMAModel``, optional
        EMA of the trained parameters: stepped after each optimiser step, swapped in for
        validation, copied into the model at the end. Not combinable with ``select``.
    after_step : callable ``() -> None``, optional
        Called after each optimiser step (e.g. a momentum-encoder update).
    validate : callable ``(model) -> dict of str to float``, optional
        Validation on the validation split (the model is in eval mode and gradients are off);
        logged with a ``val_`` prefix every ``eval_every`` steps and at the last step.
    eval_every : int
        Validation interval in optimiser steps (0: at the last step only).
    select : callable ``(row) -> float or tuple``, optional
        Maps a validation row to a key, smaller is better; the weights of the best evaluation are
        restored at the end of the stage (ties keep the earlier one).
    keep : sequence of torch.nn.Module, optional
        Modules whose full state (parameters and buffers) is kept for ``select``; default: the
        trained parameters only.
    log_every : int
        Interval of logged training metrics.
    loader_generator : torch.Generator, optional
        Generator of the shuffled ``DataLoader`` (default: the global RNG).
    generators : sequence of torch.Generator
        Other generators the step function draws from; checkpointed with the RNG states. Create
        them in the stage's ``build`` (a generator that outlives its stage is not restored when a
        finished stage is skipped on resume).
    eval_modules : sequence of torch.nn.Module
        Frozen modules inside ``model`` kept in eval mode while it trains.
    distributed : bool
        Prepare ``model`` and the optimiser with the accelerator (False: plain PyTorch on the
        trainer's device, one process).
    """

    model: nn.Module
    step: StepFn
    optimizer: Callable[[Any], torch.optim.Optimizer]
    data: Sequence[torch.Tensor] | None = None
    batch_size: int = 1
    params: list | None = None
    lr_at: Callable[[int], float] | None = None
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None
    grad_clip: float = 0.0
    accumulation: int = 1
    ema: Callable[[list], Any] | None = None
    after_step: Callable[[], None] | None = None
    validate: Callable[[nn.Module], Mapping[str, float]] | None = None
    eval_every: int = 0
    select: Callable[[Mapping[str, float]], Any] | None = None
    keep: Sequence[nn.Module] = ()
    log_every: int = 50
    loader_generator: torch.Generator | None = None
    generators: Sequence[torch.Generator] = ()
    eval_modules: Sequence[nn.Module] = ()
    distributed: bool = True


@dataclass
class StageOutcome:
    """What a finished (or skipped) stage reports.

    Attributes
    ----------
    name : str
    steps : int
        Optimiser steps of the stage.
    losses : list of float
        Training loss of every optimiser step (empty for a stage restored from its checkpoint).
    best : float or tuple or None
        Selection key of the kept validation state.
    best_step : int or None
    seconds : float
        Wall time of the training loop.
    restored : bool
        True when the stage was finished before and restored from its ``.final`` checkpoint.
    resumed_from : int
        Step of the checkpoint the stage continued from (0: started fresh).
    """

    name: str
    steps: int
    losses: list[float] = field(default_factory=list)
    best: Any = None
    best_step: int | None = None
    seconds: float = 0.0
    restored: bool = False
    resumed_from: int = 0


# ------------------------------------------------------------------------------- RNG states
def fp32_recurrent(module: nn.Module, x: torch.Tensor):
    """Run a recurrent module (``nn.LSTM`` / ``nn.GRU``) in float32, outside any autocast region.

    Under ``--mixed-precision bf16`` on a CPU, autocast sends LSTMs to oneDNN's bf16 kernel, which
    CPUs without AVX512-BF16 (e.g. many AMD EPYC) refuse ("could not create a primitive descriptor
    for the LSTM forward propagation primitive"). Recurrent layers are small; running them in float32
    keeps runs portable. Outside autocast (full precision) nothing changes.

    Parameters
    ----------
    module : nn.Module
        The recurrent layer (float32 weights).
    x : torch.Tensor, shape (batch, time, features)

    Returns
    -------
    The module's output for ``x.float()``.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        return module(x.float())


def get_rng_state(generators: Sequence[torch.Generator] = ()) -> dict[str, Any]:
    """Every RNG state as tensors and plain lists (``torch.load(weights_only=True)``-safe).

    Parameters
    ----------
    generators : sequence of torch.Generator
        Extra generators to include, in order.

    Returns
    -------
    dict
        ``torch`` (uint8 tensor), ``cuda`` (list of uint8 tensors), ``numpy`` (list: name, the
        MT19937 key as an int64 tensor, pos, has_gauss, cached_gaussian), ``python`` (list), ``generators`` (list of
        uint8 tensors).
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "generators": [g.get_state() for g in generators],
    }


def set_rng_state(state: Mapping[str, Any], generators: Sequence[torch.Generator] = ()) -> None:
    """Restore what :func:`get_rng_state` returned.

    Raises
    ------
    CheckpointError
        If the number of generators differs from the saved one.
    """
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state.get("generators", [])
    if len(saved) != len(generators):
        raise CheckpointError(f"checkpoint holds {len(saved)} generator states, the stage has {len(generators)}")
    for g, s in zip(generators, saved):
        g.set_state(s)


# ------------------------------------------------------------------------------- batches
class _Batches:
    """Shuffled batches of a DataLoader, epoch after epoch, with a resumable position."""

    def __init__(self, loader, source_generator: torch.Generator | None) -> None:
        self.loader = loader
        self.generator = source_generator
        self.epoch_start: dict[str, Any] | None = None
        self.consumed = 0
        self._it = None

    def _epoch_rng(self) -> dict[str, Any]:
        return {"torch": torch.get_rng_state(),
                "generator": self.generator.get_state() if self.generator is not None else None}

    def _new_epoch(self) -> None:
        self.epoch_start = self._epoch_rng()
        self.consumed = 0
        self._it = iter(self.loader)

    def next(self):
        if self._it is None:
            self._new_epoch()
        try:
            batch = next(self._it)
        except StopIteration:
            self._new_epoch()
            try:
                batch = next(self._it)
            except StopIteration:
                raise ConfigError("the training data yields no full batch (fewer trials than the batch size)") from None
        self.consumed += 1
        return batch

    def state(self) -> dict[str, Any] | None:
        if self.epoch_start is None:
            return None
        return {"epoch_start": self.epoch_start, "consumed": self.consumed}

    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Re-create the epoch in progress and skip its consumed batches (the caller restores RNGs after)."""
        if state is None:
            return
        torch.set_rng_state(state["epoch_start"]["torch"])
        if self.generator is not None and state["epoch_start"]["generator"] is not None:
            self.generator.set_state(state["epoch_start"]["generator"])
        self.epoch_start = state["epoch_start"]
        self._it = iter(self.loader)
        for _ in range(int(state["consumed"])):
            next(self._it)
        self.consumed = int(state["consumed"])


# ------------------------------------------------------------------------------- file helpers
def _module_states(modules: Mapping[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    # written to disk at once by ``torch.save``: no copy needed
    return {name: {k: v.detach().cpu() for k, v in m.state_dict().items()} for name, m in modules.items()}


def _load_module_states(modules: Mapping[str, nn.Module], states: Mapping[str, Any], where: Path) -> None:
    missing = sorted(set(modules) - set(states))
    if missing:
        raise CheckpointError(f"{where}: no saved state for module(s) {', '.join(missing)}")
    for name, module in modules.items():
        try:
            module.load_state_dict(states[name])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"{where}: module {name!r} does not match the checkpoint ({first})") from None


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file is missing") from None
    except Exception as exc:  # unpickling errors of a damaged file
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {first})") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint file ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a checkpoint record")
    return data


# ------------------------------------------------------------------------------- trainer
class StageTrainer:
    """Runs :class:`Stage` s: the one training loop of eegbench.

    Parameters
    ----------
    accelerator : accelerate.Accelerator, optional
        Device, processes and mixed precision. None: plain PyTorch on ``device``, one process
        (used for the shared denoiser, which the main process pretrains alone).
    device : torch.device, optional
        Device when ``accelerator`` is None.
    modules : mapping of str to torch.nn.Module
        Every module whose state defines the trained method (``Method.state_components()``):
        checkpointed, and restored when a finished stage is skipped on resume.
    log_metrics : callable ``(values, *, stage, step) -> None``, optional
        Where training and validation rows go (``RunContext.log_metrics``).
    history : list of dict, optional
        The logged rows so far (``RunContext.history``); checkpointed and restored with the state.
    checkpoint_dir : Path, optional
        Where checkpoints go; None disables checkpoints and resume.
    checkpoint_every : int, optional
        Interval of step checkpoints; None = four per stage; 0 = only at the end of each stage.
    progress : bool
        Show tqdm bars.
    desc : str
        Prefix of progress-bar labels and log lines (the method name).
    logger : logging.Logger, optional
    on_history_restored : callable ``(rows) -> None``, optional
        Called with the restored training log when a checkpoint is loaded (the run rewrites its
        ``train_log.jsonl``).
    max_steps : int, optional
        Cap on the optimiser steps of every stage (``--max-steps``); None: no cap.

    Raises
    ------
    ConfigError
        For ``checkpoint_every < 0`` or ``max_steps < 1``.
    """

    def __init__(self, *, accelerator=None, device: torch.device | str | None = None,
                 modules: Mapping[str, nn.Module] | None = None,
                 log_metrics: Callable[..., None] | None = None, history: list[dict[str, Any]] | None = None,
                 checkpoint_dir: Path | None = None, checkpoint_every: int | None = None, progress: bool = True,
                 desc: str = "", logger: logging.Logger | None = None,
                 on_history_restored: Callable[[list[dict[str, Any]]], None] | None = None,
                 max_steps: int | None = None) -> None:
        self.accelerator = accelerator
        self.device = torch.device(accelerator.device if accelerator is not None else (device or "cpu"))
        self.modules = dict(modules or {})
        self._log_metrics = log_metrics
        self.history = history if history is not None else []
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        if checkpoint_every is not None and int(checkpoint_every) < 0:
            raise ConfigError(f"checkpoint_every={checkpoint_every} must be ≥ 0")
        self.checkpoint_every = checkpoint_every
        self.progress = progress
        self.desc = desc
        self.logger = logger or log
        self.on_history_restored = on_history_restored
        if max_steps is not None and int(max_steps) < 1:
            raise ConfigError(f"max_steps={max_steps} must be ≥ 1")
        self.max_steps = None if max_steps is None else int(max_steps)

    # ------------------------------------------------------------------ process helpers
    @property
    def is_main(self) -> bool:
        return self.accelerator is None or self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return 1 if self.accelerator is None else int(self.accelerator.num_processes)

    def _barrier(self) -> None:
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            self.accelerator.wait_for_everyone()

    def _log(self, values: Mapping[str, float], stage: str, step: int) -> None:
        if self._log_metrics is not None:
            self._log_metrics(values, stage=stage, step=step)

    # ------------------------------------------------------------------ checkpoint paths
    def _final_dir(self, name: str) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / f"{name}.final"

    def _pointer(self, name: str) -> Path | None:
        return None if self.checkpoint_dir is None else self.checkpoint_dir / f"{name}.json"

    def finished(self, name: str) -> bool:
        """Whether stage ``name`` has a final checkpoint (it is skipped on resume)."""
        d = self._final_dir(name)
        return d is not None and (d / "meta.json").is_file()

    # ------------------------------------------------------------------ public entry
    def run_stage(self, name: str, steps: int, build: Callable[[], Stage]) -> StageOutcome:
        """Train stage ``name`` for ``steps`` optimiser steps, or restore it if it finished before.

        Parameters
        ----------
        name : str
            Stage name (a ``Method.stages`` entry, or ``"denoiser"``).
        steps : int
            Optimiser steps; 0 skips the stage (``build`` is not called).
        build : callable ``() -> Stage``
            Builds the stage (its tensors, model wrapper, recipe); not called when the stage is
            skipped or restored.

        Returns
        -------
        StageOutcome

        Raises
        ------
        ConfigError
            For a negative step count, a batch size that the processes × accumulation do not
            divide, or data without a full batch.
        CheckpointError
            If a checkpoint exists but does not fit the method's modules.
        """
        steps = int(steps)
        if steps < 0:
            raise ConfigError(f"{self.desc} {name}: steps={steps} must be ≥ 0")
        if steps == 0:
            return StageOutcome(name=name, steps=0)
        if self.max_steps is not None and steps > self.max_steps:
            self.logger.info("%s %s: %d steps capped at --max-steps %d", self.desc, name, steps, self.max_steps)
            steps = self.max_steps
        if self.finished(name):
            return self._restore_final(name)
        return self._train(name, steps, build())

    # ------------------------------------------------------------------ the loop
    def _train(self, name: str, steps: int, st: Stage) -> StageOutcome:
        acc = self.accelerator
        accumulation = int(st.accumulation)
        if accumulation < 1:
            raise ConfigError(f"{self.desc} {name}: accumulation={accumulation} must be ≥ 1")
        params = st.params if st.params is not None else [p for p in st.model.parameters() if p.requires_grad]
        flat_params = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
        if not flat_params:
            raise ConfigError(f"{self.desc} {name}: the stage trains no parameter (check configure_stage)")
        inside = {id(p) for p in st.model.parameters()}
        if any(id(p) not in inside for p in flat_params):
            raise ConfigError(f"{self.desc} {name}: Stage.params holds parameters outside Stage.model; wrap every "
                              "trained module in the stage's model (under DDP only its gradients are averaged)")
        if st.ema is not None and st.select is not None:
            raise ConfigError(f"{self.desc} {name}: a stage keeps either its EMA or its best validation state, "
                              "not both (set ema or select)")
        optimizer = st.optimizer(params)
        scheduler = st.scheduler(optimizer) if st.scheduler is not None else None
        batches = None
        model = st.model
        if st.data is not None:
            per = int(st.batch_size) // (self.world * accumulation) if st.distributed else int(st.batch_size) // accumulation
            if per < 1 or per * (self.world if st.distributed else 1) * accumulation != int(st.batch_size):
                raise ConfigError(
                    f"{self.desc} {name}: batch size {st.batch_size} is not divisible by "
                    f"{self.world if st.distributed else 1} process(es) × {accumulation} accumulation step(s)"
                )
            loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*st.data), batch_size=per, shuffle=True,
                                                 drop_last=True, generator=st.loader_generator)
        if acc is not None and st.distributed:
            if st.data is not None:
                model, optimizer, loader = acc.prepare(model, optimizer, loader)
            else:
                model, optimizer = acc.prepare(model, optimizer)
        if st.data is not None:
            # with several processes accelerate gives the sampler its own generator: track that one
            from accelerate.data_loader import get_sampler

            shuffle_gen = st.loader_generator or getattr(get_sampler(loader), "generator", None)
            batches = _Batches(loader, shuffle_gen)
        ema = st.ema(flat_params) if st.ema is not None else None
        model.train()
        for m in st.eval_modules:
            m.eval()

        best_key, best_state, best_step = None, None, None
        window: dict[str, list[float]] = {}
        losses: list[float] = []
        start_step = 0
        elapsed_before = 0.0
        pointer = self._pointer(name)
        if pointer is not None and pointer.is_file():
            ck = self._load_step_checkpoint(name, pointer)
            try:
                optimizer.load_state_dict(ck["state"]["optimizer"])
                if scheduler is not None and ck["state"].get("scheduler") is not None:
                    scheduler.load_state_dict(ck["state"]["scheduler"])
                if ema is not None and ck["state"].get("ema") is not None:
                    ema.load_state_dict(ck["state"]["ema"])
                    ema.to(self.device)
                best_state = ck["state"].get("best")
                meta = ck["meta"]
                best_key = _from_json_key(meta.get("best_key"))
                best_step = meta.get("best_step")
                window = {k: list(v) for k, v in meta.get("window", {}).items()}
                losses = list(meta.get("losses", []))
                start_step = int(meta["step"])
                elapsed_before = float(meta.get("seconds", 0.0))
                if batches is not None:
                    batches.restore(ck["state"].get("loader"))
                self._restore_rng(ck["state"], self._all_generators(st, batches), ck["dir"])
                if self._scaler() is not None and ck["state"].get("scaler") is not None:
                    self._scaler().load_state_dict(ck["state"]["scaler"])
            except (KeyError, ValueError, RuntimeError, TypeError) as exc:
                first = (str(exc).strip().splitlines() or [""])[0]
                raise CheckpointError(f"{ck['dir']}: does not fit this stage ({type(exc).__name__}: {first})") from None
            self.logger.info("%s %s: resumed at step %d from %s", self.desc, name, start_step, ck["dir"])

        every = self._interval(steps)
        t0 = time.perf_counter() - elapsed_before
        label = f"{self.desc} {name}".strip()
        bar = tqdm(range(start_step + 1, steps + 1), desc=label, disable=not self.progress,
                   initial=start_step, total=steps)
        for step in bar:
            if st.lr_at is not None:
                lr = float(st.lr_at(step - 1))
                for group in optimizer.param_groups:
                    group["lr"] = lr
            out = self._optimizer_step(st, model, optimizer, batches, flat_params, accumulation)
            if scheduler is not None:
                scheduler.step()
            if ema is not None:
                ema.step(flat_params)
            if st.after_step is not None:
                st.after_step()
            for k, v in out.items():
                window.setdefault(k, []).append(v)
            losses.append(out["loss"])
            if step % max(int(st.log_every), 1) == 0 or step == steps:
                row = {k: float(np.mean(v)) for k, v in window.items()}
                if st.lr_at is not None:
                    row["lr"] = float(optimizer.param_groups[0]["lr"])
                row["steps_per_s"] = (step - start_step) / max(time.perf_counter() - t0 - elapsed_before, 1e-9)
                self._log(row, name, step)
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                window = {}
            if st.validate is not None and (step == steps or (st.eval_every > 0 and step % int(st.eval_every) == 0)):
                vrow = self._validate(st, model, ema, flat_params)
                self._log({f"val_{k}": v for k, v in vrow.items()}, name, step)
                if st.select is not None:
                    key = st.select(vrow)
                    if best_key is None or key < best_key:
                        best_key, best_step = key, step
                        best_state = self._snapshot_best(st, flat_params)
                        self.logger.info("%s %s: step %d %s (best)", self.desc, name, step,
                                         ", ".join(f"val {k} {v:.4f}" for k, v in vrow.items()))
            if every and step % every == 0 and step < steps:
                self._save_step_checkpoint(name, step, optimizer, scheduler, ema, best_state, best_key, best_step,
                                           window, losses, batches, st, time.perf_counter() - t0)
        bar.close()
        if best_state is not None:
            self._restore_best(st, flat_params, best_state)
        if ema is not None:
            ema.copy_to(flat_params)
        seconds = time.perf_counter() - t0
        if acc is not None and st.distributed:
            acc.unwrap_model(model, keep_fp32_wrapper=False)  # undo the mixed-precision forward patch
            acc.free_memory()
        outcome = StageOutcome(name=name, steps=steps, losses=losses, best=best_key, best_step=best_step,
                               seconds=seconds, resumed_from=start_step)
        self.logger.info("%s %s: %d steps in %.1f s%s", self.desc, name, steps, seconds,
                         "" if best_key is None else f", best {best_key} at step {best_step}")
        self._save_final(name, outcome)
        return outcome

    def _optimizer_step(self, st: Stage, model, optimizer, batches, params, accumulation: int) -> dict[str, float]:
        acc = self.accelerator
        use_acc = acc is not None and st.distributed
        sums: dict[str, float] = {}
        for micro in range(accumulation):
            batch = None
            if batches is not None:
                batch = batches.next()
                if not use_acc:
                    batch = tuple(t.to(self.device) for t in batch)
            last = micro == accumulation - 1
            ctx = acc.no_sync(model) if (use_acc and not last and acc.num_processes > 1) else contextlib.nullcontext()
            with ctx:
                out = st.step(model, batch)
                loss = out["loss"]
                if accumulation > 1:
                    loss = loss / accumulation
                if use_acc:
                    acc.backward(loss)
                else:
                    loss.backward()
            for k, v in out.items():
                if isinstance(v, torch.Tensor) and v.ndim == 0:
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) / accumulation
        if st.grad_clip > 0:
            if use_acc:
                if acc.sync_gradients:
                    acc.clip_grad_norm_(params, st.grad_clip)
            else:
                torch.nn.utils.clip_grad_norm_(params, st.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return sums

    @torch.no_grad()
    def _validate(self, st: Stage, model, ema, params) -> dict[str, float]:
        if ema is not None:
            ema.store(params)
            ema.copy_to(params)
        model.eval()
        autocast = (self.accelerator.autocast() if self.accelerator is not None and st.distributed
                    else contextlib.nullcontext())  # validation runs in the training's precision
        try:
            with autocast:
                row = {k: float(v) for k, v in st.validate(model).items()}
        finally:
            model.train()
            for m in st.eval_modules:
                m.eval()
            if ema is not None:
                ema.restore(params)
        return row

    @staticmethod
    def _snapshot_best(st: Stage, params) -> dict[str, Any]:
        if st.keep:
            return {"modules": [copy.deepcopy(m.state_dict()) for m in st.keep]}
        return {"params": [p.detach().clone() for p in params]}

    @staticmethod
    def _restore_best(st: Stage, params, best: Mapping[str, Any]) -> None:
        if "modules" in best:
            for m, state in zip(st.keep, best["modules"]):
                m.load_state_dict(state)
        else:
            with torch.no_grad():
                for p, saved in zip(params, best["params"]):
                    p.copy_(saved.to(p.device))

    def _interval(self, steps: int) -> int:
        if self.checkpoint_dir is None:
            return 0
        if self.checkpoint_every is None:
            return max(math.ceil(steps / 4), 1)
        return int(self.checkpoint_every)

    @staticmethod
    def _all_generators(st: Stage, batches: _Batches | None) -> list[torch.Generator]:
        gens = list(st.generators)
        if batches is not None and batches.generator is not None:
            gens.append(batches.generator)
        return gens

    def _scaler(self):
        return getattr(self.accelerator, "scaler", None) if self.accelerator is not None else None

    def _gathered_rng(self, generators: Sequence[torch.Generator]) -> list[dict[str, Any]]:
        """Every process's RNG states (collective: all processes call it), rank order."""
        state = get_rng_state(generators)
        if self.world > 1:
            from accelerate.utils import gather_object

            return gather_object([state])
        return [state]

    def _restore_rng(self, state: Mapping[str, Any], generators: Sequence[torch.Generator], where) -> None:
        per_process = state["rng"]
        if len(per_process) != self.world:
            raise CheckpointError(f"{where}: written by {len(per_process)} process(es), this run has {self.world}; "
                                  "resume with the same number of processes")
        rank = 0 if self.accelerator is None else int(self.accelerator.process_index)
        set_rng_state(per_process[rank], generators)

    # ------------------------------------------------------------------ checkpoint I/O
    def _save_step_checkpoint(self, name, step, optimizer, scheduler, ema, best_state, best_key, best_step, window,
                              losses, batches, st: Stage, seconds: float) -> None:
        rng = self._gathered_rng(self._all_generators(st, batches))
        if self.is_main:
            scaler = self._scaler()
            state = {
                "modules": _module_states(self.modules),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "ema": ema.state_dict() if ema is not None else None,
                "best": best_state,
                "rng": rng,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "loader": batches.state() if batches is not None else None,
            }
            meta = {"stage": name, "step": step, "best_key": _to_json_key(best_key), "best_step": best_step,
                    "window": window, "losses": losses, "seconds": seconds, "history": self.history}
            target = self.checkpoint_dir / f"{name}.step{step}"
            self._write_dir(target, state, meta)
            pointer = self._pointer(name)
            previous = _read_json(pointer).get("dir") if pointer.is_file() else None
            write_text_atomic(pointer, json.dumps({"stage": name, "step": step, "dir": target.name}))
            if previous and previous != target.name:
                shutil.rmtree(self.checkpoint_dir / previous, ignore_errors=True)
        self._barrier()

    def _save_final(self, name: str, outcome: StageOutcome) -> None:
        if self.checkpoint_dir is None:
            return
        rng = self._gathered_rng(())
        if self.is_main:
            state = {"modules": _module_states(self.modules), "rng": rng}
            meta = {"stage": name, "steps": outcome.steps, "best_key": _to_json_key(outcome.best),
                    "best_step": outcome.best_step, "seconds": outcome.seconds, "history": self.history}
            self._write_dir(self._final_dir(name), state, meta)
            pointer = self._pointer(name)
            if pointer.is_file():
                previous = _read_json(pointer).get("dir")
                pointer.unlink()
                if previous:
                    shutil.rmtree(self.checkpoint_dir / previous, ignore_errors=True)
        self._barrier()

    def _write_dir(self, target: Path, state: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_dir / f".tmp-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        tmp.mkdir()
        try:
            torch.save(state, tmp / "state.pt")
            (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            if target.exists():
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _load_step_checkpoint(self, name: str, pointer: Path) -> dict[str, Any]:
        info = _read_json(pointer)
        if not isinstance(info.get("dir"), str):
            raise CheckpointError(f"{pointer}: names no checkpoint folder")
        directory = self.checkpoint_dir / info["dir"]
        state = _torch_load(directory / "state.pt")
        meta = _read_json(directory / "meta.json")
        _load_module_states(self.modules, state["modules"], directory)
        self._restore_history(meta.get("history", []))
        return {"state": state, "meta": meta, "dir": directory}

    def _restore_final(self, name: str) -> StageOutcome:
        directory = self._final_dir(name)
        state = _torch_load(directory / "state.pt")
        meta = _read_json(directory / "meta.json")
        _load_module_states(self.modules, state["modules"], directory)
        self._restore_rng(state, (), directory)
        self._restore_history(meta.get("history", []))
        self.logger.info("%s %s: finished before; restored from %s", self.desc, name, directory)
        if not isinstance(meta.get("steps"), int):
            raise CheckpointError(f"{directory / 'meta.json'}: no step count")
        return StageOutcome(name=name, steps=int(meta["steps"]), best=_from_json_key(meta.get("best_key")),
                            best_step=meta.get("best_step"), seconds=float(meta.get("seconds", 0.0)), restored=True)

    def _restore_history(self, rows: list[dict[str, Any]]) -> None:
        self.history[:] = rows
        if self.on_history_restored is not None and self.is_main:
            self.on_history_restored(rows)


def _to_json_key(key: Any) -> Any:
    if key is None:
        return None
    return list(key) if isinstance(key, tuple) else float(key)


def _from_json_key(key: Any) -> Any:
    if key is None:
        return None
    return tuple(key) if isinstance(key, list) else float(key)


# ------------------------------------------------------------------------------- diffusion pieces
def diffusion_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                     *, who: str = "") -> torch.Tensor:
    """The regression target of a diffusers noise scheduler: ε, or the velocity for v-prediction.

    Parameters
    ----------
    scheduler : diffusers.DDPMScheduler (or any scheduler with ``config.prediction_type``)
    latents, noise : torch.Tensor, shape (batch, c, h, w), float
        Clean latents and the noise added to them.
    timesteps : torch.Tensor, shape (batch,), int64
    who : str
        Name for the error message.

    Returns
    -------
    torch.Tensor, shape (batch, c, h, w)

    Raises
    ------
    ConfigError
        For a ``prediction_type`` other than ``"epsilon"`` and ``"v_prediction"``.
    """
    ptype = scheduler.config.prediction_type
    if ptype == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    if ptype == "epsilon":
        return noise
    raise ConfigError(f"{who or 'diffusion'}: unsupported denoiser prediction_type {ptype!r}")


def fixed_noise(shape: Sequence[int], num_train_timesteps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed noise and timesteps of a validation batch, from their own generator.

    Parameters
    ----------
    shape : sequence of int
        Latent shape ``(n, c, h, w)``.
    num_train_timesteps : int
        Timesteps are uniform in ``[0, num_train_timesteps)``.
    seed : int

    Returns
    -------
    noise : torch.Tensor, shape ``shape``, float32
    timesteps : torch.Tensor, shape (n,), int64
    """
    g = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(tuple(shape), generator=g)
    return noise, torch.randint(0, int(num_train_timesteps), (int(shape[0]),), generator=g)


@torch.no_grad()
def stimulus_latents(dataset, denoiser, device, *, chunk: int = 64) -> torch.Tensor:
    """Scaled VAE latents of each trial's stimulus (each unique image encoded once).

    Parameters
    ----------
    dataset : eegbench.data.EEGDataset
        Trials with ``image_id`` and their ``stimuli``.
    denoiser : eegbench.backbones.denoiser.PretrainedDenoiser
        Its ``image_size`` and ``encode_images`` (uint8 → scaled latents).
    device : torch.device

    Returns
    -------
    torch.Tensor, shape (n_trials, c, h, w), float32, on the CPU
    """
    ids = list(dataset.trials["image_id"])
    unique = sorted(set(ids))
    lat = []
    for start in range(0, len(unique), chunk):
        imgs = torch.from_numpy(dataset.stimuli.load_many(unique[start:start + chunk], denoiser.image_size))
        lat.append(denoiser.encode_images(imgs.to(device)).float().cpu())
    latents = torch.cat(lat)
    pos = {k: i for i, k in enumerate(unique)}
    return latents[torch.tensor([pos[i] for i in ids], dtype=torch.int64)]


@torch.no_grad()
def stimulus_features(dataset, embedder, device, *, image_size: int, chunk: int = 64) -> tuple[torch.Tensor, np.ndarray]:
    """Frozen image embeddings of the unique stimuli of ``dataset`` and the index of each trial's.

    Parameters
    ----------
    dataset : eegbench.data.EEGDataset
    embedder : callable ``uint8 (n, 3, H, W) -> (n, dim)``
        The profile's image embedder (CLIP-image role).
    device : torch.device
    image_size : int
        Side the stimuli are loaded at.

    Returns
    -------
    features : torch.Tensor, shape (n_unique, dim), float32, on the CPU
        In sorted ``image_id`` order.
    index : numpy.ndarray, shape (n_trials,), int64
        Row of ``features`` of each trial.
    """
    ids = list(dataset.trials["image_id"])
    unique = sorted(set(ids))
    pos = {k: i for i, k in enumerate(unique)}
    feats = []
    for start in range(0, len(unique), chunk):
        imgs = torch.from_numpy(dataset.stimuli.load_many(unique[start:start + chunk], image_size)).to(device)
        feats.append(embedder(imgs).float().cpu())
    return torch.cat(feats), np.array([pos[i] for i in ids], dtype=np.int64)
