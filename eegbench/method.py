"""The method-plugin interface: :class:`Method` and the :class:`RunContext` handed to ``fit``.

A method plugin turns EEG into images. It declares its trainable pieces through
:meth:`Method.components` and :meth:`Method.configure_stage`, so the *harness* counts trainable and
total parameters per training stage with one convention for every method. Plugins never compute
metrics.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from eegbench.preprocessing import channel_statistics  # noqa: F401  (public here too)
from eegbench.files import write_text_atomic
from eegbench.data import DatasetInfo, EEGDataset
from eegbench.errors import ConfigError, DataFormatError
from eegbench.results import INFERENCE_CONVENTION

if TYPE_CHECKING:
    from accelerate import Accelerator

    from eegbench.backbones import Backbones


@dataclass
class RunContext:
    """What the harness hands to :meth:`Method.fit`.

    Parameters
    ----------
    accelerator : accelerate.Accelerator
        Owns the device, mixed precision and processes; use ``accelerator.prepare`` and
        ``accelerator.backward``.
    seed : int
        Run seed (already applied with ``accelerate.utils.set_seed``).
    work_dir : Path
        Folder for checkpoints and training logs of this run.
    progress : bool
        Whether to show tqdm bars (False on non-main processes or with ``--no-progress``).
    logger : logging.Logger
        Run logger (writes to the run's ``log.txt``).
    history : list of dict
        Every row logged so far (also in ``train_log.jsonl``).
    checkpoint_dir : Path, optional
        Where :class:`~eegbench.training.StageTrainer` keeps training checkpoints (None: no
        checkpoints, no resume).
    checkpoint_every : int, optional
        Step-checkpoint interval of every stage (None: four per stage; 0: stage ends only).
    max_steps : int, optional
        ``--max-steps``: every stage of :meth:`trainer` stops after at most this many optimiser
        steps (a smoke test; such runs never reach a leaderboard). None: the configured budgets.
    """

    accelerator: Accelerator
    seed: int
    work_dir: Path
    progress: bool = True
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("eegbench.run"))
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_dir: Path | None = None
    checkpoint_every: int | None = None
    max_steps: int | None = None

    @property
    def device(self) -> torch.device:
        """Device of the accelerator."""
        return self.accelerator.device

    def log_metrics(self, values: Mapping[str, float], *, stage: str, step: int) -> None:
        """Record training metrics (kept in ``history`` and written to ``train_log.jsonl``)."""
        row = {"stage": stage, "step": int(step), **{k: float(v) for k, v in values.items()}}
        self.history.append(row)
        if self.accelerator.is_main_process:
            with open(self.work_dir / "train_log.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")

    def _rewrite_train_log(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Replace ``train_log.jsonl`` by ``rows`` (the log as of a restored checkpoint)."""
        path = self.work_dir / "train_log.jsonl"
        write_text_atomic(path, "".join(json.dumps(dict(r)) + "\n" for r in rows))

    def trainer(self, method: Method):
        """The run's :class:`~eegbench.training.StageTrainer` for ``method``.

        Bound to the accelerator, ``method.state_components()`` (checkpointed and restored on
        resume), this context's logging and checkpoint settings.

        Parameters
        ----------
        method : Method

        Returns
        -------
        eegbench.training.StageTrainer
        """
        from eegbench.training import StageTrainer

        return StageTrainer(accelerator=self.accelerator, modules=method.state_components(),
                            log_metrics=self.log_metrics, history=self.history, checkpoint_dir=self.checkpoint_dir,
                            checkpoint_every=self.checkpoint_every, progress=self.progress, desc=method.name,
                            logger=self.logger, on_history_restored=self._rewrite_train_log,
                            max_steps=self.max_steps)


def apply_overrides(config: Any, overrides: Mapping[str, str]) -> Any:
    """Return a copy of dataclass ``config`` with string ``overrides`` parsed to the field types.

    Parameters
    ----------
    config : dataclass instance
    overrides : mapping of str to str
        ``{"stage1_steps": "10"}``; values are parsed as JSON when possible, else kept as str.

    Raises
    ------
    ConfigError
        If a key is not a field of the config, or a value cannot be converted.
    """
    names = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for key, raw in overrides.items():
        if key not in names:
            raise ConfigError(f"--set {key}=...: unknown option; known: {', '.join(sorted(names))}")
        current = getattr(config, key)
        try:
            value = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            value = raw
        try:
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError("expected true or false")
            elif isinstance(current, int):
                if isinstance(value, bool) or float(value) != int(value):
                    raise ValueError("expected an integer")
                value = int(value)
            elif isinstance(current, float):
                value = float(value)
            elif isinstance(current, tuple):
                value = tuple(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--set {key}={raw}: {exc}") from None
        changes[key] = value
    return dataclasses.replace(config, **changes)


class Method(abc.ABC):
    """Base class of every EEG-to-image method plugin.

    Subclasses set the class attributes, a ``Config`` dataclass and implement the abstract methods.

    Attributes
    ----------
    name : str
        Registered name (``"synapse"``).
    version : str
        Version of the implementation; recorded in every result.
    paper : str
        Citation/URL of the method's paper and reference repository.
    Config : type
        Dataclass of hyperparameters. :meth:`default_config` returns it per profile.
    stages : tuple of str
        Training stages in order (``("stage1", "stage2")``); :meth:`configure_stage` knows each.
    inference_components : tuple of str
        Names from :meth:`components` that :meth:`generate` uses.
    paper_backbone : str
        Published base model the ``paper`` profile is built on (``"sd15"``, ``"sd21"``,
        ``"sd21-base"``; see :mod:`eegbench.backbones.paper`); empty if the method has no paper profile.
    paper_roles : dict of str to str
        Teachers of the published recipe at the ``paper`` profile: ``{"text_embedder": ...,
        "image_embedder": ...}`` with values ``"sd"`` (the base's own text encoder, the default
        text role), ``"openclip-h14"`` (OpenCLIP ViT-H/14) or ``"clip-l14"`` (CLIP ViT-L/14);
        a method without an image role gets none (:mod:`eegbench.backbones.sd`).
    paper_image_size : int
        Published training / generation resolution in pixels; 0: the base's native resolution.
    role : {"method", "reference"}
        ``"reference"`` for the harness's reference points (``class-prior``, ``oracle-class``):
        the leaderboard shows them in a separate block, never ranked with methods.
    reads_eeg : bool
        False for a method that ignores the EEG: its shuffled-EEG control is not run (it would
        repeat its real generations).
    reads_test_labels : bool
        True only for a reference that reads each test trial's label by design (``oracle-class``):
        :meth:`generate` then gets ``labels=``; the result and the leaderboard say so.
    published_steps : int
        Sampler steps of the method's published evaluation (``research/methods.md`` §2.1); the paper
        profile's protocol generates with them (:data:`eegbench.protocol.PAPER_PROTOCOL`). 0: none.

    Parameters
    ----------
    config : Config
        Resolved hyperparameters.
    info : DatasetInfo
        Description of the dataset (``n_chans``, ``n_times``, ``sfreq``, classes).
    backbones : eegbench.backbones.protocol.BackboneSet
        Shared pretrained pieces of the profile (image autoencoder, denoiser, embedders): the
        small profile's :class:`eegbench.backbones.Backbones` or the paper profile's
        :class:`eegbench.backbones.sd.StableDiffusionBackbones`, same interface.
    device : torch.device
        Device to build modules on.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.1.0"
    paper: ClassVar[str] = ""
    Config: ClassVar[type]
    stages: ClassVar[tuple[str, ...]] = ()
    inference_components: ClassVar[tuple[str, ...]] = ()
    paper_backbone: ClassVar[str] = ""
    paper_roles: ClassVar[dict[str, str]] = {}
    paper_image_size: ClassVar[int] = 0
    role: ClassVar[str] = "method"
    reads_eeg: ClassVar[bool] = True
    reads_test_labels: ClassVar[bool] = False
    published_steps: ClassVar[int] = 0

    def __init__(self, config: Any, *, info: DatasetInfo, backbones: Backbones, device: torch.device) -> None:
        self.config = config
        self.info = info
        self.backbones = backbones
        self.device = torch.device(device)

    @classmethod
    def default_config(cls, profile: str = "small") -> Any:
        """Hyperparameters for a profile (``"small"`` or ``"paper"``).

        Raises
        ------
        ConfigError
            If the method has no defaults for ``profile``.
        """
        if profile != "small":
            raise ConfigError(f"method {cls.name!r} has no {profile!r} profile")
        return cls.Config()

    @classmethod
    def test_config(cls) -> Any:
        """A configuration for conformance tests: the method's structure at toy size and a few steps.

        :func:`eegbench.testing.check_method` fits it on synthetic data with
        :class:`~eegbench.backbones.tiny.TinyBackbones` (16-px images, a 6-token context of width 8),
        so it should train in seconds on a CPU. Override it; the default is the ``small`` profile,
        which is correct but slow.
        """
        return cls.default_config("small")

    @abc.abstractmethod
    def components(self) -> dict[str, nn.Module]:
        """Every module of the method by name (trainable and frozen), for parameter counting."""

    @abc.abstractmethod
    def configure_stage(self, stage: str) -> None:
        """Set ``requires_grad`` for ``stage``: exactly the parameters that stage trains.

        Called by :meth:`fit` and by the harness's parameter counter.
        """

    @abc.abstractmethod
    def fit(self, train: EEGDataset, val: EEGDataset, ctx: RunContext) -> None:
        """Train every stage on ``train``; ``val`` may be used for model selection (never test).

        Run each stage through ``ctx.trainer(self).run_stage(name, steps, build)`` (see
        :mod:`eegbench.training`): the harness then owns the loop, checkpoints and ``--resume``.
        """

    @abc.abstractmethod
    def generate(
        self,
        eeg: torch.Tensor,
        *,
        generators: Sequence[torch.Generator],
        n_samples: int,
        num_inference_steps: int,
        subject: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Generate images from EEG.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float32
            EEG in ``info.unit``.
        generators : sequence of torch.Generator, length batch * n_samples
            One generator per output image (trial-major order), so each image is reproducible
            independently of batch size.
        n_samples : int
            Images per trial.
        num_inference_steps : int
            Sampler steps (from the evaluation protocol).
        subject : torch.Tensor, shape (batch,), int64, optional
            Subject id per trial.

        Returns
        -------
        torch.Tensor, shape (batch, n_samples, 3, H, W), uint8
        """

    def predict_classes(self, eeg: torch.Tensor) -> torch.Tensor | None:
        """The method's own EEG classifier's class per trial, if it has one (GWIT, BrainVis).

        The harness scores it on the test split (``result["method_eeg_classifier"]``), beside the
        EEG decoding ceiling, so a reader sees how much class information the method decodes
        before any image is made.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float32, in ``info.unit``

        Returns
        -------
        torch.Tensor, shape (batch,), int64, or None
            None (the default): the method has no EEG classifier.
        """
        return None

    #: One line saying what :meth:`embed_eeg` returns (recorded with the retrieval metrics).
    embedding_description: ClassVar[str] = ""

    def embed_eeg(self, eeg: torch.Tensor, *, subject: torch.Tensor | None = None) -> torch.Tensor | None:
        """The method's EEG embedding for zero-shot retrieval (optional hook).

        The harness scores the retrieval metrics (:mod:`eegbench.metrics.retrieval`: N-way top-k
        of the test image, of the class from its other images, 2-/4-way) by cosine similarity
        between this embedding of each test trial and :meth:`embed_stimuli` of every distinct test
        image. Both must live in one space: typically the space the method's EEG encoder was
        contrastively aligned to (CLIP image features in NICE, ATM and SYNAPSE). Methods that
        return None (the default) get "not reported" for every retrieval metric.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float32, in ``info.unit``
        subject : torch.Tensor, shape (batch,), int64, optional
            Subject id per trial.

        Returns
        -------
        torch.Tensor, shape (batch, D), float, or None
        """
        return None

    def embed_stimuli(self, dataset: EEGDataset) -> torch.Tensor:
        """Embedding of every distinct stimulus image of ``dataset``, in the space of :meth:`embed_eeg`.

        Default: the profile's frozen image embedder (``backbones.image_embedder``, the CLIP-image
        role: EfficientNet-Lite0 in the small profile, OpenCLIP ViT-H/14 or CLIP ViT-L/14 at the
        paper profile) at its own input size. Override it when :meth:`embed_eeg` maps elsewhere.

        Parameters
        ----------
        dataset : EEGDataset
            The test trials (only their stimulus images are read).

        Returns
        -------
        torch.Tensor, shape (n_unique_images, D), float32
            Rows in sorted ``image_id`` order.
        """
        from eegbench.training import stimulus_features

        embedder = self.backbones.image_embedder
        size = int(getattr(embedder, "image_size", self.info.image_size))
        features, _ = stimulus_features(dataset, embedder, self.device, image_size=size)
        return features

    # ---------------------------------------------------------------- input checks
    def check_eeg(self, eeg: Any, what: str) -> None:
        """Check that ``eeg`` is ``(batch, info.n_chans, info.n_times)``.

        Raises
        ------
        DataFormatError
            Naming the method, ``what`` (the caller) and both shapes.
        """
        shape = tuple(eeg.shape)
        if len(shape) != 3 or shape[1:] != (self.info.n_chans, self.info.n_times):
            raise DataFormatError(
                f"{self.name} {what}: EEG has shape {shape}, expected (batch, {self.info.n_chans}, {self.info.n_times})"
            )

    def check_fit_data(self, train: EEGDataset, val: EEGDataset) -> None:
        """Validate the splits handed to :meth:`fit`: a non-empty training set, EEG shapes of ``info``.

        Raises
        ------
        DataFormatError
            If ``train`` is empty or an EEG shape differs from ``info``.
        """
        if len(train) == 0:
            raise DataFormatError(f"{self.name} fit: the training set is empty")
        self.check_eeg(train.eeg, "fit (train)")
        if len(val):
            self.check_eeg(val.eeg, "fit (val)")

    def check_generate_args(self, eeg: Any, generators: Sequence[Any], n_samples: int,
                            num_inference_steps: int) -> None:
        """Validate the arguments of :meth:`generate`.

        Raises
        ------
        DataFormatError
            If ``eeg`` has the wrong shape.
        ValueError
            If ``n_samples`` or ``num_inference_steps`` is < 1, or there is not one generator per image.
        """
        self.check_eeg(eeg, "generate")
        if n_samples < 1 or num_inference_steps < 1:
            raise ValueError(f"{self.name} generate: n_samples={n_samples} and num_inference_steps="
                             f"{num_inference_steps} must be ≥ 1")
        if len(generators) != eeg.shape[0] * n_samples:
            raise ValueError(f"{self.name} generate: {len(generators)} generators for {eeg.shape[0]} trials × "
                             f"{n_samples} samples; need one per image")

    # ---------------------------------------------------------------- persistence
    def state_components(self) -> dict[str, nn.Module]:
        """Components whose weights :meth:`save` stores (default: all of :meth:`components`)."""
        return self.components()

    def save(self, directory: Path) -> None:
        """Save weights (one safetensors file per component) and ``config.json`` into ``directory``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for cname, module in self.state_components().items():
            state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
            save_file(state, str(directory / f"{cname}.safetensors"))
        cfg = dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else dict(self.config)
        (directory / "config.json").write_text(json.dumps({"method": self.name, "config": cfg}, indent=2))

    def load(self, directory: Path) -> None:
        """Load weights written by :meth:`save` into this instance.

        Raises
        ------
        FileNotFoundError
            If a component file is missing.
        """
        from safetensors.torch import load_file

        directory = Path(directory)
        for cname, module in self.state_components().items():
            path = directory / f"{cname}.safetensors"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing weights of component {cname!r}")
            # safetensors names the CPU "cpu" only (a multi-process CPU run's device is "cpu:<rank>")
            device = "cpu" if self.device.type == "cpu" else str(self.device)
            module.load_state_dict(load_file(str(path), device=device))


def text_component(backbones: Any) -> dict[str, nn.Module]:
    """``{"text_embedder": module}`` for :meth:`Method.components` of a method whose generation uses
    the profile's text encoder (GWIT, BrainVis, the references), or ``{}`` when the backbone set's
    text embedder is not an ``nn.Module`` (a stand-in without parameters to count)."""
    text = getattr(backbones, "text_embedder", None)
    return {"text_embedder": text} if isinstance(text, nn.Module) else {}


def count_parameters(method: Method) -> dict[str, Any]:
    """Trainable and total parameters per stage and component, under one convention.

    For each stage the method's own :meth:`Method.configure_stage` sets ``requires_grad``; a
    parameter counts as trainable in a stage if it requires grad then. ``trainable_total`` sums the
    trainable parameters of all stages (a parameter trained in two stages counts once);
    ``inference_total`` counts the unique parameters of ``inference_components``; ``total`` all
    unique parameters. Shared modules are counted once (by tensor identity).

    Inference convention (:data:`INFERENCE_CONVENTION`, recorded with the counts): every module
    that runs to turn a test trial's EEG into an image counts — EEG encoders and classifiers, the
    denoiser and its adapters, the autoencoder's decoder side (the whole autoencoder module), and
    the text encoder when generation uses text embeddings (GWIT's class prompts, BrainVis's pass-B
    prompts, the references' class prompts), even where those are computed once and cached. A
    method declares them in ``inference_components``; text encoders used only in training
    (SYNAPSE's Stage-1 alignment targets) do not count.

    Returns
    -------
    dict
        ``{"per_stage": {stage: {component: n, "total": n}}, "per_component": {component:
        {"total": n}}, "trainable_total": n, "inference_total": n, "total": n}``.
    """
    comps = method.components()

    def unique(mods):
        seen: dict[int, int] = {}
        for m in mods:
            for p in m.parameters():
                seen[id(p)] = p.numel()
        return seen

    per_stage: dict[str, dict[str, int]] = {}
    trained: dict[int, int] = {}
    saved = {id(p): p.requires_grad for m in comps.values() for p in m.parameters()}
    try:
        for stage in method.stages:
            method.configure_stage(stage)
            row, stage_ids = {}, {}
            for cname, module in comps.items():
                ids = {id(p): p.numel() for p in module.parameters() if p.requires_grad}
                if ids:
                    row[cname] = sum(ids.values())
                stage_ids.update(ids)
            row["total"] = sum(stage_ids.values())
            per_stage[stage] = row
            trained.update(stage_ids)
    finally:
        for m in comps.values():
            for p in m.parameters():
                p.requires_grad_(saved[id(p)])
    inference = unique(comps[c] for c in method.inference_components if c in comps)
    return {
        "per_stage": per_stage,
        "per_component": {c: {"total": sum(unique([m]).values())} for c, m in comps.items()},
        "trainable_total": sum(trained.values()),
        "inference_total": sum(inference.values()),
        "inference_convention": INFERENCE_CONVENTION,
        "total": sum(unique(comps.values()).values()),
    }
