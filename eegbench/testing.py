"""Conformance checks for method plugins, on synthetic data and tiny backbones (CPU, seconds).

A plugin author checks a method with::

    from eegbench.testing import check_method
    report = check_method(MyMethod, tmp_path)      # raises AssertionError naming the broken rule

or uses the pieces (:func:`make_kit`, :func:`check_declaration`, ...) in their own pytest tests.
eegbench runs the same checks on every registered method (``tests/test_conformance.py``).

What is checked (the contract of :class:`eegbench.method.Method`):

1. declaration — name, version, paper, a ``Config`` dataclass, stages, inference components,
   ``default_config("small")`` validates and an unknown profile raises :class:`ConfigError`;
2. construction — the method builds on :class:`~eegbench.backbones.tiny.TinyBackbones` from
   :meth:`Method.test_config`; every inference component is a component; every stage trains
   something; ``configure_stage`` rejects an unknown stage; the harness can count parameters;
3. fit — a few steps on the synthetic training split, with the validation split, leaves the
   shared pretrained UNet untouched and records finite training metrics;
4. generate — uint8 ``(batch, n_samples, 3, H, W)``, reproducible from the per-image generators,
   each image independent of the batch it is generated in; wrong EEG shape → DataFormatError;
5. persistence — ``save`` then ``load`` into a fresh instance reproduces the generated images.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eegbench.backbones import SmallProfile
from eegbench.data import EEGDataset
from eegbench.errors import ConfigError, DataFormatError
from eegbench.method import Method, RunContext, count_parameters

#: Settings of the tiny backbones used by the checks: 16-px images and a 6-token context (so that
#: the class word of ``"a photo of a c0-circle"`` is part of the class prompt's tokens).
TINY_PROFILE = SmallProfile(image_size=16, context_tokens=6, denoiser_steps=8, denoiser_batch_size=4,
                            denoiser_lr=1e-3)


@dataclass
class ConformanceKit:
    """Synthetic data, tiny backbones and an accelerator shared by the checks.

    Attributes
    ----------
    dataset : EEGDataset
        Synthetic EEG, float32 ``(n_trials, n_chans, n_times)`` in V, with procedural images.
    train, val, test : EEGDataset
        A recording-level split of ``dataset`` (subject 0 trains, subjects 1 and 2 validate and test).
    backbones : eegbench.backbones.tiny.TinyBackbones
        With the denoiser pretrained on the training stimuli.
    accelerator : accelerate.Accelerator
        CPU accelerator.
    work_dir : Path
    """

    dataset: EEGDataset
    train: EEGDataset
    val: EEGDataset
    test: EEGDataset
    backbones: Any
    accelerator: Any
    work_dir: Path


@dataclass
class ConformanceReport:
    """What :func:`check_method` verified, with the figures it saw.

    Attributes
    ----------
    method : str
    passed : list of str
        Names of the checks that passed, in order.
    parameters : dict
        :func:`eegbench.method.count_parameters` of the tiny instance.
    """

    method: str
    passed: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


def make_kit(work_dir: str | Path, *, n_chans: int = 4, n_times: int = 32, seed: int = 0) -> ConformanceKit:
    """Build synthetic data (3 subjects × 2 recordings × 8 trials, 2 classes) and tiny backbones.

    Parameters
    ----------
    work_dir : path
        Folder for the synthetic images, the denoiser cache and run outputs.
    n_chans, n_times : int
        EEG shape per trial.
    seed : int
        Seed of the denoiser pretraining.

    Returns
    -------
    ConformanceKit
    """
    from accelerate import Accelerator

    from eegbench.backbones.tiny import TinyBackbones
    from eegbench.datasets.synthetic import SyntheticEEG

    work_dir = Path(work_dir)
    ds = SyntheticEEG(cache_dir=work_dir / "data", n_subjects=3, n_recordings=2, n_trials=8, n_chans=n_chans,
                      n_times=n_times, image_size=16).load()
    subj = ds.trials["subject"].to_numpy()
    ids = ds.trials["trial_id"].to_numpy()
    first, second, third = sorted(set(int(s) for s in subj))
    train = ds.subset(list(ids[subj == first]))
    val = ds.subset(list(ids[subj == second]))
    test = ds.subset(list(ids[subj == third]))
    bb = TinyBackbones(work_dir / "cache", settings=TINY_PROFILE)
    image_ids = sorted(set(train.trials["image_id"]))
    labels = np.array([train.stimuli.labels[i] for i in image_ids])
    bb.prepare_denoiser(train.stimuli.load_many(image_ids, TINY_PROFILE.image_size), labels,
                        ds.info.class_names, dataset_key="conformance", seed=seed)
    return ConformanceKit(dataset=ds, train=train, val=val, test=test, backbones=bb,
                          accelerator=Accelerator(cpu=True), work_dir=work_dir)


def _generators(n: int, offset: int = 0) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(1000 + offset + i) for i in range(n)]


def check_declaration(method_cls: type[Method]) -> None:
    """Class-level contract: attributes, config dataclass, profiles.

    Raises
    ------
    AssertionError
        Naming the first broken rule.
    """
    name = method_cls.__name__
    assert issubclass(method_cls, Method), f"{name} does not subclass eegbench.method.Method"
    for attr in ("name", "version", "paper"):
        assert isinstance(getattr(method_cls, attr, None), str) and getattr(method_cls, attr), \
            f"{name}.{attr} must be a non-empty str"
    assert dataclasses.is_dataclass(method_cls.Config), f"{name}.Config must be a dataclass"
    assert method_cls.stages or getattr(method_cls, "role", "method") == "reference", \
        f"{name}.stages is empty (only a harness reference may train nothing)"
    assert method_cls.inference_components, f"{name}.inference_components is empty"
    small = method_cls.default_config("small")
    assert isinstance(small, method_cls.Config), f"{name}.default_config('small') is not a {name}.Config"
    if hasattr(small, "validate"):
        small.validate()
    try:
        method_cls.default_config("no-such-profile")
    except ConfigError:
        pass
    else:
        raise AssertionError(f"{name}.default_config('no-such-profile') must raise ConfigError")
    cfg = method_cls.test_config()
    assert isinstance(cfg, method_cls.Config), f"{name}.test_config() is not a {name}.Config"


def build(method_cls: type[Method], kit: ConformanceKit, config: Any = None, *, seed: int = 0) -> Method:
    """Construct ``method_cls`` on the kit's tiny backbones (``config`` defaults to ``test_config()``)."""
    torch.manual_seed(seed)
    config = method_cls.test_config() if config is None else config
    return method_cls(config, info=kit.dataset.info, backbones=kit.backbones, device=torch.device("cpu"))


def check_construction(method: Method) -> dict[str, Any]:
    """Backbone interface, components, stages and parameter counting.

    Returns
    -------
    dict
        :func:`eegbench.method.count_parameters` of ``method``.

    Raises
    ------
    AssertionError
    """
    from eegbench.backbones.protocol import check_backbones

    name = method.name
    try:  # the backbones the method was built on implement the documented interface
        check_backbones(method.backbones)
    except ConfigError as exc:
        raise AssertionError(f"{name}: {exc}") from None
    comps = method.components()
    assert comps and all(isinstance(m, torch.nn.Module) for m in comps.values()), \
        f"{name}.components() must map names to nn.Module"
    missing = set(method.inference_components) - set(comps)
    assert not missing, f"{name}: inference_components {sorted(missing)} are not in components()"
    counts = count_parameters(method)
    for stage in method.stages:
        assert counts["per_stage"][stage]["total"] > 0, f"{name}: stage {stage!r} trains no parameter"
    low = 0 if not method.stages else 1  # a reference (no stage) trains nothing
    assert low <= counts["trainable_total"] <= counts["total"], f"{name}: implausible parameter counts {counts}"
    assert 0 < counts["inference_total"] <= counts["total"], f"{name}: implausible inference count {counts}"
    try:
        method.configure_stage("no-such-stage")
    except ConfigError:
        pass
    else:
        raise AssertionError(f"{name}.configure_stage('no-such-stage') must raise ConfigError")
    return counts


def check_fit(method: Method, kit: ConformanceKit) -> RunContext:
    """Fit on the kit's training split; the shared UNet must stay untouched.

    Raises
    ------
    AssertionError
    """
    shared = {k: v.detach().clone() for k, v in kit.backbones.denoiser.unet.state_dict().items()}
    work = Path(tempfile.mkdtemp(prefix=f"fit-{method.name}-", dir=kit.work_dir))
    ctx = RunContext(accelerator=kit.accelerator, seed=0, work_dir=work, progress=False)
    method.fit(kit.train, kit.val, ctx)
    after = kit.backbones.denoiser.unet.state_dict()
    changed = [k for k, v in shared.items() if not torch.equal(v, after[k])]
    assert not changed, f"{method.name}.fit modified the shared pretrained UNet ({changed[:3]} ...): use new_unet()"
    values = [v for row in ctx.history for k, v in row.items() if k not in ("stage", "step")]
    assert values, f"{method.name}.fit logged no training metric (use ctx.log_metrics)"
    assert all(math.isfinite(v) for v in values), f"{method.name}.fit logged a non-finite metric"
    return ctx


def check_generate(method: Method, kit: ConformanceKit, *, n_samples: int = 2, steps: int = 3) -> torch.Tensor:
    """Output shape/dtype, seeding, batch independence, bad input.

    Returns
    -------
    torch.Tensor, shape (3, n_samples, 3, H, W), uint8
        The images generated for the first three test trials.

    Raises
    ------
    AssertionError
    """
    name = method.name
    eeg = torch.from_numpy(kit.test.eeg[:3])
    subject = torch.tensor(kit.test.trials["subject"].to_numpy()[:3], dtype=torch.int64)
    kw = _label_kwargs(method, kit.test.labels[:3])
    size = kit.backbones.image_size
    a = method.generate(eeg, generators=_generators(3 * n_samples), n_samples=n_samples,
                        num_inference_steps=steps, subject=subject, **kw)
    assert isinstance(a, torch.Tensor) and a.dtype == torch.uint8, f"{name}.generate must return a uint8 tensor"
    assert tuple(a.shape) == (3, n_samples, 3, size, size), \
        f"{name}.generate returned shape {tuple(a.shape)}, expected {(3, n_samples, 3, size, size)}"
    b = method.generate(eeg, generators=_generators(3 * n_samples), n_samples=n_samples,
                        num_inference_steps=steps, subject=subject, **kw)
    assert torch.equal(a, b), f"{name}.generate is not reproducible from its generators"
    c = method.generate(eeg, generators=_generators(3 * n_samples, offset=500), n_samples=n_samples,
                        num_inference_steps=steps, subject=subject, **kw)
    assert not torch.equal(a, c), f"{name}.generate ignores its generators"
    single = method.generate(eeg[1:2], generators=_generators(n_samples, offset=n_samples), n_samples=n_samples,
                             num_inference_steps=steps, subject=subject[1:2],
                             **_label_kwargs(method, kit.test.labels[1:2]))
    assert torch.equal(single[0], a[1]), \
        f"{name}.generate: an image depends on the other trials of its batch (use generators[b * n_samples + i])"
    bad = torch.zeros(2, eeg.shape[1] + 1, eeg.shape[2])
    try:
        method.generate(bad, generators=_generators(2), n_samples=1, num_inference_steps=steps,
                        subject=subject[:2], **_label_kwargs(method, kit.test.labels[:2]))
    except DataFormatError:
        pass
    else:
        raise AssertionError(f"{name}.generate accepted EEG of shape {tuple(bad.shape)} (expected DataFormatError)")
    return a


def check_embeddings(method: Method, kit: ConformanceKit) -> bool:
    """The optional retrieval hook: :meth:`Method.embed_eeg` and :meth:`Method.embed_stimuli`.

    A method whose ``embed_eeg`` returns None has no retrieval embedding (nothing to check).
    Otherwise the EEG embedding must be float ``(batch, D)``, finite, reproducible and independent
    of the other trials of its batch, and ``embed_stimuli`` must give one ``D``-wide row per
    distinct test image.

    Returns
    -------
    bool
        Whether the method exposes retrieval embeddings.

    Raises
    ------
    AssertionError
    """
    name = method.name
    eeg = torch.from_numpy(np.array(kit.test.eeg[:3]))
    subject = torch.tensor(kit.test.trials["subject"].to_numpy()[:3], dtype=torch.int64)
    a = method.embed_eeg(eeg, subject=subject)
    if a is None:
        return False
    assert isinstance(a, torch.Tensor) and a.is_floating_point() and a.ndim == 2 and a.shape[0] == 3, \
        f"{name}.embed_eeg must return a float tensor (batch, D), got {getattr(a, 'shape', type(a))}"
    assert torch.isfinite(a).all(), f"{name}.embed_eeg returned non-finite values"
    assert torch.equal(a, method.embed_eeg(eeg, subject=subject)), f"{name}.embed_eeg is not reproducible"
    one = method.embed_eeg(eeg[1:2], subject=subject[1:2])
    assert torch.allclose(one[0], a[1], atol=1e-5), f"{name}.embed_eeg: an embedding depends on the rest of its batch"
    stim = method.embed_stimuli(kit.test)
    n_images = kit.test.trials["image_id"].nunique()
    assert tuple(stim.shape) == (n_images, a.shape[1]), \
        f"{name}.embed_stimuli returned {tuple(stim.shape)}, expected ({n_images}, {a.shape[1]})"
    return True


def _label_kwargs(method: Method, labels) -> dict[str, Any]:
    """``labels=`` for a method that reads the test labels by design (the ``oracle-class`` reference)."""
    if not getattr(method, "reads_test_labels", False):
        return {}
    return {"labels": torch.tensor(np.array(labels), dtype=torch.int64)}


def check_save_load(method_cls: type[Method], method: Method, kit: ConformanceKit, *, steps: int = 3) -> None:
    """``save`` → ``load`` into a fresh instance (different init seed) reproduces the images.

    Raises
    ------
    AssertionError
    """
    directory = Path(tempfile.mkdtemp(prefix=f"ckpt-{method.name}-", dir=kit.work_dir))
    method.save(directory)
    other = build(method_cls, kit, method.config, seed=12345)
    other.load(directory)
    eeg = torch.from_numpy(kit.test.eeg[:2])
    subject = torch.tensor(kit.test.trials["subject"].to_numpy()[:2], dtype=torch.int64)
    kw = _label_kwargs(method, kit.test.labels[:2])
    ours = method.generate(eeg, generators=_generators(2), n_samples=1, num_inference_steps=steps, subject=subject,
                           **kw)
    theirs = other.generate(eeg, generators=_generators(2), n_samples=1, num_inference_steps=steps, subject=subject,
                            **kw)
    assert torch.equal(ours, theirs), f"{method.name}: a saved and reloaded model generates different images"


def check_method(method_cls: type[Method], work_dir: str | Path, *, kit: ConformanceKit | None = None,
                 config: Any = None) -> ConformanceReport:
    """Run every conformance check on ``method_cls``.

    Parameters
    ----------
    method_cls : type
        A :class:`eegbench.method.Method` subclass.
    work_dir : path
        Scratch folder.
    kit : ConformanceKit, optional
        Reuse data and backbones (built by :func:`make_kit` otherwise).
    config : Config, optional
        Defaults to ``method_cls.test_config()``.

    Returns
    -------
    ConformanceReport

    Raises
    ------
    AssertionError
        Naming the first broken rule.
    """
    kit = kit or make_kit(work_dir)
    report = ConformanceReport(method=getattr(method_cls, "name", method_cls.__name__))
    check_declaration(method_cls)
    report.passed.append("declaration")
    method = build(method_cls, kit, config)
    report.parameters = check_construction(method)
    report.passed.append("construction")
    check_fit(method, kit)
    report.passed.append("fit")
    check_generate(method, kit)
    report.passed.append("generate")
    if check_embeddings(method, kit):
        report.passed.append("embeddings")
    check_save_load(method_cls, method, kit)
    report.passed.append("save_load")
    return report
