"""Backbone profiles as registered factories: everything that differs between ``small`` and ``paper``.

A profile decides which pretrained pieces a run gets (``vae``, ``denoiser``, ``image_embedder``,
``text_embedder``), how they are configured (``--backbone-set``), which weights must exist before
any data loads, the protocol's defaults at that size, and what ``eegbench params`` and
``eegbench weights check`` describe. The runner, ``params`` and ``weights`` look a profile up by
name in the ``profiles`` registry (``eegbench ls profiles``) and call it; none of them branches on
the profile's name. A third party registers another profile through
``eegbench_register_profiles`` exactly like the core registers these two.

- :class:`SmallBackboneProfile` (``small``): TAEF2 autoencoder, a small UNet pretrained once per
  dataset on its training stimuli (cached, shared by every method), EfficientNet-Lite0 image
  features, MiniLM token states (:class:`eegbench.backbones.Backbones`).
- :class:`PaperBackboneProfile` (``paper``): the published Stable Diffusion / CLIP models from local
  diffusers / open_clip / transformers folders (:mod:`eegbench.backbones.sd`), the published
  protocol (4 samples per trial, each method's published sampler steps).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from eegbench.errors import ConfigError

__all__ = ["BackboneProfile", "PaperBackboneProfile", "SmallBackboneProfile", "get_profile"]


class BackboneProfile:
    """Base class of a backbone profile (registered in the ``profiles`` registry).

    Attributes
    ----------
    name : str
        Registry name and ``--profile`` value; also the key of each method's per-profile defaults
        (:meth:`eegbench.method.Method.default_config`).
    protocol_defaults : dict
        ``n_samples_per_trial`` and ``num_inference_steps`` of the protocol at this profile
        (None steps: each method's ``published_steps``).
    published_sizes : bool
        Whether methods run at their published sizes here (``eegbench params`` then shows the
        figures their papers quote beside the counts).
    """

    name: ClassVar[str] = ""
    protocol_defaults: ClassVar[dict[str, Any]] = {}
    published_sizes: ClassVar[bool] = False

    def settings(self, overrides: Mapping[str, str] | None = None) -> Any:
        """The profile's settings dataclass with ``--backbone-set`` overrides applied.

        Raises
        ------
        ConfigError
            For an unknown key or a bad value.
        """
        raise NotImplementedError

    def check(self, method_cls, *, weights_root: Path, settings: Any) -> int:
        """Fail fast, before any data loads, when a needed weight is missing; returns the image size (px).

        Raises
        ------
        WeightsNotFoundError, ConfigError
            Naming the missing file or folder and the flag that sets it.
        """
        raise NotImplementedError

    def make_backbones(self, method_cls, *, weights_root: Path, cache_dir: Path, settings: Any, class_names,
                       device: torch.device, dtype: torch.dtype, progress: bool, train_images, train_labels,
                       dataset_key: str, accelerator, timer):
        """The run's backbones, ready to use (what a method may call; :mod:`eegbench.backbones.protocol`).

        Parameters
        ----------
        method_cls : type
            The method (its ``paper_backbone`` picks the published base model).
        weights_root, cache_dir : Path
        settings : dataclass
            From :meth:`settings`.
        class_names : sequence of str
        device : torch.device
        dtype : torch.dtype
            Frozen backbones are held in this dtype (``--mixed-precision``).
        progress : bool
        train_images : numpy.ndarray, shape (M, 3, H, W), uint8
            Training stimuli (the small profile pretrains its shared denoiser on them).
        train_labels : numpy.ndarray, shape (M,), int
        dataset_key : str
            ``<dataset>-<version>``: part of the shared denoiser's cache key.
        accelerator : accelerate.Accelerator
            The main process prepares first; the others load its cached result.
        timer : callable
            ``timer(stage)`` context manager recording ``durations_s[stage]``.
        """
        raise NotImplementedError

    def scoring_embedder(self, backbones, device: torch.device):
        """The protocol's probe features (EfficientNet-Lite0), whatever the profile's own embedder."""
        from eegbench.backbones.embedders import EfficientNetLite0Features

        return EfficientNetLite0Features.from_package().to(device).eval().requires_grad_(False)

    def meta_backbones(self, method_cls, *, weights_root: Path | None = None,
                       backbone_overrides: Mapping[str, str] | None = None, class_names=()):
        """Backbones on the meta device for parameter counting (``eegbench params``)."""
        raise NotImplementedError

    def dataset_facts(self):
        """The :class:`~eegbench.data.DatasetInfo` this profile's methods are sized for, without data."""
        raise NotImplementedError

    def weight_rows(self, method_classes: Mapping[str, type], *, weights_root: Path,
                    backbone_overrides: Mapping[str, str] | None = None,
                    only_named: bool = False) -> list[dict[str, Any]]:
        """``eegbench weights check`` rows: per method, each weight folder it needs, found or missing."""
        raise NotImplementedError


def get_profile(name: str, plugins=None) -> BackboneProfile:
    """The registered profile ``name``, instantiated.

    Raises
    ------
    PluginError
        For an unknown name (with close matches), or a registered object that is not a
        :class:`BackboneProfile` subclass.
    """
    from eegbench.errors import PluginError
    from eegbench.plugins import get_plugin_manager

    plugins = plugins or get_plugin_manager()
    obj = plugins.profiles.get(name)
    if not (isinstance(obj, type) and issubclass(obj, BackboneProfile)):
        raise PluginError(f"profile {name!r}: registered object {obj!r} is not a BackboneProfile subclass")
    return obj()


class SmallBackboneProfile(BackboneProfile):
    """The CPU profile: TAEF2 + the shared small denoiser + EfficientNet-Lite0 + MiniLM (design.md)."""

    name = "small"
    #: The class :meth:`build` instantiates (default :class:`eegbench.backbones.Backbones`; tests swap in
    #: backbones with a stand-in denoiser).
    backbones_class: ClassVar[type | None] = None

    @property
    def protocol_defaults(self):  # type: ignore[override]
        from eegbench.protocol import EvalProtocol

        return {"n_samples_per_trial": EvalProtocol.n_samples_per_trial,
                "num_inference_steps": EvalProtocol.num_inference_steps}

    def settings(self, overrides=None):
        from eegbench.backbones import SmallProfile
        from eegbench.method import apply_overrides

        return apply_overrides(SmallProfile(), dict(overrides or {}))

    def check(self, method_cls, *, weights_root, settings):
        taef2 = Path(weights_root) / "taef2"
        missing = [str(taef2 / f) for f in ("taef2_encoder.pth", "taef2_decoder.pth") if not (taef2 / f).is_file()]
        if missing:
            from eegbench.errors import WeightsNotFoundError

            raise WeightsNotFoundError(
                f"missing weights {', '.join(missing)}; set --weights-root or EEGBENCH_WEIGHTS to the folder "
                "holding taef2/ (the TAEF2 autoencoder from github.com/madebyollin/taesd)"
            )
        return int(settings.image_size)

    def make_backbones(self, method_cls, *, weights_root, cache_dir, settings, class_names, device, dtype, progress,
                       train_images, train_labels, dataset_key, accelerator, timer):
        from eegbench.backbones import Backbones

        backbones = (self.backbones_class or Backbones)(self.name, weights_root=weights_root, cache_dir=cache_dir,
                                                        device=device, settings=settings, progress=progress)
        with timer("denoiser_pretrain"):
            # the main process pretrains (or loads) first; the others then load its cached copy
            for turn in (True, False):
                if accelerator.is_main_process is turn:
                    backbones.prepare_denoiser(train_images, train_labels, class_names, dataset_key=dataset_key,
                                               seed=0)
                accelerator.wait_for_everyone()
        return backbones

    def scoring_embedder(self, backbones, device):
        return backbones.image_embedder  # the same network, already loaded

    def meta_backbones(self, method_cls, *, weights_root=None, backbone_overrides=None, class_names=()):
        from eegbench.backbones.paper import SmallMetaBackbones

        return SmallMetaBackbones()

    def dataset_facts(self):
        return n170_facts()

    def weight_rows(self, method_classes, *, weights_root, backbone_overrides=None, only_named=False):
        folder = Path(weights_root) / "taef2"
        files = ("taef2_encoder.pth", "taef2_decoder.pth")
        missing = [f for f in files if not (folder / f).is_file()]
        size = sum((folder / f).stat().st_size for f in files if (folder / f).is_file())
        return [{"method": name, "key": "taef2", "role": "vae", "folder": str(folder), "found": not missing,
                 "missing": missing, "bytes": size} for name in method_classes]


class PaperBackboneProfile(BackboneProfile):
    """The published models from local folders (SD 1.5 / 2.1 / 2.1-base, OpenCLIP ViT-H/14, CLIP ViT-L/14)."""

    name = "paper"
    published_sizes = True

    @property
    def protocol_defaults(self):  # type: ignore[override]
        from eegbench.protocol import PAPER_PROTOCOL

        return dict(PAPER_PROTOCOL)

    def settings(self, overrides=None):
        from eegbench.backbones.sd import paper_settings

        return paper_settings(dict(overrides or {}))

    def check(self, method_cls, *, weights_root, settings):
        from eegbench.backbones.sd import paper_backbones_for

        # the weight folders are checked, and the image size read from their configs, before any data loads
        meta = paper_backbones_for(method_cls, weights_root=weights_root, settings=settings, class_names=(),
                                   device="meta")
        return int(meta.image_size)

    def make_backbones(self, method_cls, *, weights_root, cache_dir, settings, class_names, device, dtype, progress,
                       train_images, train_labels, dataset_key, accelerator, timer):
        from eegbench.backbones.sd import paper_backbones_for

        with timer("load_backbones"):
            backbones = paper_backbones_for(method_cls, weights_root=weights_root, settings=settings,
                                            class_names=class_names, device=device, dtype=dtype, progress=progress)
            backbones.prepare_denoiser()
        return backbones

    def meta_backbones(self, method_cls, *, weights_root=None, backbone_overrides=None, class_names=()):
        from eegbench.backbones import default_weights_root
        from eegbench.backbones.paper import PaperBackbones
        from eegbench.backbones.sd import needed_weights, paper_backbones_for, paper_settings

        base = getattr(method_cls, "paper_backbone", "")
        if not base:
            raise ConfigError(f"method {method_cls.name!r} declares no paper_backbone; it has no paper profile")
        root = Path(weights_root) if weights_root is not None else default_weights_root()
        settings = paper_settings(backbone_overrides)
        if all(row["found"] for row in needed_weights(method_cls, weights_root=root, settings=settings)):
            return paper_backbones_for(method_cls, weights_root=root, settings=settings, class_names=class_names,
                                       device="meta")
        return PaperBackbones(base)

    def dataset_facts(self):
        return cvpr40_facts()

    def weight_rows(self, method_classes, *, weights_root, backbone_overrides=None, only_named=False):
        from eegbench.backbones.sd import needed_weights, paper_settings

        settings = paper_settings(backbone_overrides)
        rows = []
        for name, cls in method_classes.items():
            if not getattr(cls, "paper_backbone", "") and not only_named:
                continue  # a plugin without a paper profile
            rows += [{"method": name, **row} for row in needed_weights(cls, weights_root=weights_root,
                                                                          settings=settings)]
        return rows


#: Subjects of EEG-ImageNet (CVPR40) and of the shipped eeg-notebooks N170 recordings.
_CVPR40_SUBJECTS = (1, 2, 3, 4, 5, 6)
_N170_SUBJECTS = (1, 2, 3, 10, 11)


def cvpr40_facts():
    """EEG-ImageNet "CVPR40" facts (the paper profile's sizes; nothing is read)."""
    from eegbench.data import DatasetInfo

    from eegbench.datasets.cvpr40 import CVPR40, LOADER_VERSION, WNID_NAMES

    wnids = tuple(WNID_NAMES)  # class facts only; nothing is read
    return DatasetInfo(
        name=CVPR40.name, version=LOADER_VERSION, n_chans=CVPR40.n_chans,
        n_times=CVPR40.time_high - CVPR40.time_low, sfreq=float(CVPR40.sfreq),
        ch_names=tuple(f"E{i:03d}" for i in range(1, CVPR40.n_chans + 1)), unit="a.u.",
        class_names=tuple(WNID_NAMES[w] for w in wnids), tmin=CVPR40.time_low / CVPR40.sfreq,
        image_size=CVPR40.image_size, citation=CVPR40.citation, licence=CVPR40.licence,
        subjects=_CVPR40_SUBJECTS, wnids=wnids,
    )


def n170_facts():
    """eeg-notebooks N170 facts (the small profile's sizes; nothing is read)."""
    from eegbench.data import DatasetInfo

    from eegbench.datasets.eegnb import LOADER_VERSION, EEGNotebooksN170

    ds = EEGNotebooksN170()  # no file is touched by the constructor
    return DatasetInfo(
        name=ds.name, version=LOADER_VERSION, n_chans=len(ds.ch_names), n_times=int(ds.n_times),
        sfreq=float(ds.sfreq), ch_names=tuple(ds.ch_names), unit="V", class_names=tuple(ds.class_names),
        tmin=float(ds.tmin), image_size=int(ds.image_size), citation=ds.citation, licence=ds.licence,
        subjects=_N170_SUBJECTS,
    )
