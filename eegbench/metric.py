"""The metric interface: what a protocol metric is, what it needs, and the inputs it is computed from.

Every metric of the evaluation protocol — the core's FID, KID, IS, n-way top-k, probe accuracy and
image-level metrics as much as a third party's — is a :class:`Metric` subclass registered through
the ``eegbench_register_metrics`` hook (``registry.add("key", "package.module:Class", summary=...)``).
The protocol lists the keys it scores (:attr:`eegbench.protocol.EvalProtocol.metrics`);
:func:`eegbench.evaluate.score_images` looks each one up in the registry, checks what it needs, and
calls :meth:`Metric.compute` with one shared :class:`ScoringInputs`. The inputs run each scoring
network once per image set and cache the features (:mod:`eegbench.metrics.features`), so metrics
that read the same network's features (FID, KID and the Inception 2-way identification; IS, the
probe and the EfficientNet 2-way identification) cost one network pass together.

Each metric's record in ``result.json`` carries its metadata (:meth:`Metric.metadata`: label,
direction, interval kind, decimals, scale), and the leaderboard takes its columns from there, so a
plugin's metric reaches the tables without any change to the core.

Writing a metric plugin::

    from eegbench import hookimpl
    from eegbench.metric import Metric

    class MeanBrightness(Metric):
        key = "mean_brightness"
        label = "Mean brightness"
        higher_is_better = None          # no preferred direction
        needs = ("generated",)

        def compute(self, inputs):
            return {"value": float(inputs.generated.mean() / 255.0)}

    @hookimpl
    def eegbench_register_metrics(registry):
        registry.add("mean_brightness", MeanBrightness, summary="mean pixel value of the generated images")

and score it with ``eegbench run ... --metric mean_brightness`` (or ``eegbench evaluate RUN_DIR
--metric mean_brightness``); runs scored with another metric list have another protocol hash.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from eegbench.errors import ConfigError, PluginError

__all__ = ["NEEDS", "Metric", "ScoringInputs", "get_metric"]

#: What a metric may need, and why it is skipped when that is missing.
NEEDS: dict[str, str] = {
    "generated": "no generated images",
    "reference": "no ground-truth images",
    "labels": "no test labels",
    "training_stimuli": "training stimuli not available (the probe is fitted on them)",
    "imagenet_classes": "dataset classes are not ImageNet classes (no WNIDs); see probe_accuracy",
    "image_level_stimuli": "the dataset's stimuli are class-level (the same few images recur across trials); "
                           "image-level metrics need one stimulus image per trial (e.g. cvpr40)",
    "test_classes_in_training": "zero-shot split: the test classes are not among the training classes, so a "
                                "classifier fitted on the training stimuli cannot name them",
    "eeg_embeddings": "not reported: the method exposes no EEG embedding for retrieval (Method.embed_eeg)",
}

#: Interval kinds a record can declare (``Metric.interval``).
INTERVALS = ("runs", "trials")


class Metric:
    """Base class of every protocol metric.

    Subclasses set the class attributes and implement :meth:`compute`.

    Attributes
    ----------
    key : str
        Result key (``result["metrics"][key]``) and registry name.
    label : str
        Column title on the leaderboard (honest about what it is: e.g. an IS from another network
        says so); :meth:`title` may refine it from the protocol.
    higher_is_better : bool or None
        Direction; None when neither is better (shown without an arrow, never tested for "better").
    needs : tuple of str
        Keys of :data:`NEEDS`; a metric whose needs are not met is recorded as skipped with the reason.
    interval : {"runs", "trials"}
        ``"trials"``: the record carries per-trial values (``per_trial_correct`` /
        ``per_trial_total`` counts, or ``per_trial`` values) and the leaderboard's interval is a
        bootstrap over test trials; ``"runs"``: a Student-t interval over seeds.
    decimals : int
        Decimals shown on the leaderboard.
    scale : float
        Factor applied before display (KID is shown ×10³).
    version : str
        Version of the implementation (bump it when a value changes); part of the protocol hash
        through :meth:`metadata`.
    """

    key: ClassVar[str] = ""
    label: ClassVar[str] = ""
    higher_is_better: ClassVar[bool | None] = None
    needs: ClassVar[tuple[str, ...]] = ("generated",)
    interval: ClassVar[str] = "runs"
    decimals: ClassVar[int] = 3
    scale: ClassVar[float] = 1.0
    version: ClassVar[str] = "1"

    def title(self, inputs: ScoringInputs) -> str:
        """The label recorded for this run (default :attr:`label`)."""
        return self.label

    def compute(self, inputs: ScoringInputs) -> dict[str, Any]:
        """The metric of one set of generated images.

        Parameters
        ----------
        inputs : ScoringInputs

        Returns
        -------
        dict
            At least ``value`` (float); anything else JSON-ready (details, per-trial values).
        """
        raise NotImplementedError

    @classmethod
    def metadata(cls) -> dict[str, Any]:
        """The record fields the leaderboard reads: ``label``, ``higher_is_better``, ``interval``,
        ``decimals``, ``scale``, ``metric_version``."""
        return {"label": cls.label, "higher_is_better": cls.higher_is_better, "interval": cls.interval,
                "decimals": int(cls.decimals), "scale": float(cls.scale), "metric_version": cls.version}

    @classmethod
    def check_declaration(cls) -> None:
        """Raise :class:`~eegbench.errors.PluginError` for a badly declared metric class."""
        who = f"metric {cls.__module__}.{cls.__qualname__}"
        if not cls.key or not cls.label:
            raise PluginError(f"{who}: key and label must be set")
        unknown = sorted(set(cls.needs) - set(NEEDS))
        if unknown:
            raise PluginError(f"{who}: unknown needs {unknown}; known: {', '.join(NEEDS)}")
        if cls.interval not in INTERVALS:
            raise PluginError(f"{who}: interval {cls.interval!r} must be one of {INTERVALS}")


def get_metric(plugins, key: str) -> Metric:
    """An instance of the metric registered as ``key``.

    Raises
    ------
    PluginError
        Unknown key (with close matches), or a registered object that is not a :class:`Metric`
        subclass or whose ``key`` differs from its registry name.
    """
    obj = plugins.metrics.get(key)
    if not (isinstance(obj, type) and issubclass(obj, Metric)):
        raise PluginError(f"metric {key!r}: registered object {obj!r} is not an eegbench.metric.Metric subclass")
    obj.check_declaration()
    if obj.key != key:
        raise PluginError(f"metric {key!r}: its class declares key {obj.key!r}; register it under that key")
    return obj()


@dataclass
class ScoringInputs:
    """Everything a metric may read for one set of generated images, with shared feature passes.

    Parameters
    ----------
    generated : numpy.ndarray, shape (T, S, 3, H, W), uint8
        S generated images per test trial.
    reference : numpy.ndarray, shape (T, 3, H, W), uint8
        The ground-truth image of each test trial.
    protocol : EvalProtocol
        Resolved protocol.
    labels : numpy.ndarray, shape (T,), int
        Dataset label of each test trial.
    trial_ids : list of str, length T
    image_ids : list of str, length T
        Stimulus image id of each test trial (trials showing the same image share it).
    n_classes : int
    wnids : tuple of str
        ImageNet WNIDs of the classes (empty for other datasets).
    stimulus_level : {"class", "image"}
        ``"image"`` when each trial has its own stimulus image (cvpr40).
    train_images : numpy.ndarray, shape (M, 3, H, W), uint8, optional
        Training stimuli (the probe's training set).
    train_labels : numpy.ndarray, shape (M,), int, optional
    image_embedder : callable, optional
        The protocol's frozen probe features (EfficientNet-Lite0 pooled, 1280-d).
    cache_dir : Path
        Metric cache (reference and training feature files).
    reference_cache_name : str, optional
        Name of the reference set's feature files; None caches nothing.
    generated_cache_dir : Path, optional
        Folder of the generated images' feature files (a run's ``features/``).
    inception_weights, classifier_weights : Path, optional
    classifier : callable, optional
        Pre-loaded n-way classifier.
    progress : bool
    eeg_embeddings : numpy.ndarray, shape (T, D), float32, optional
        The method's EEG embedding of each test trial (:meth:`eegbench.method.Method.embed_eeg`;
        for a control, the embedding of the trial's donor EEG); None when the method has none.
    stimulus_embeddings : numpy.ndarray, shape (N, D), float32, optional
        The method's embedding of each distinct test stimulus image
        (:meth:`eegbench.method.Method.embed_stimuli`), the retrieval candidates.
    stimulus_ids : list of str, length N
        ``image_id`` of each row of ``stimulus_embeddings``.
    """

    generated: np.ndarray
    reference: np.ndarray
    protocol: Any
    labels: np.ndarray
    trial_ids: list[str]
    n_classes: int
    image_ids: list[str] = field(default_factory=list)
    wnids: tuple[str, ...] = ()
    stimulus_level: str = "class"
    train_images: np.ndarray | None = None
    train_labels: np.ndarray | None = None
    image_embedder: Any = None
    cache_dir: Path = Path(".")
    reference_cache_name: str | None = None
    generated_cache_dir: Path | None = None
    inception_weights: Path | None = None
    classifier_weights: Path | None = None
    classifier: Any = None
    progress: bool = True
    eeg_embeddings: np.ndarray | None = None
    stimulus_embeddings: np.ndarray | None = None
    stimulus_ids: list[str] = field(default_factory=list)
    _memo: dict[str, Any] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ what is available
    def missing(self, needs: Sequence[str]) -> str | None:
        """The skip reason of the first unmet need, or None when every need is met."""
        have = {
            "generated": self.generated is not None and len(self.generated) > 0,
            "reference": self.reference is not None and len(self.reference) > 0,
            "labels": self.labels is not None,
            "training_stimuli": self.train_images is not None and self.image_embedder is not None,
            "imagenet_classes": bool(self.wnids),
            "image_level_stimuli": self.stimulus_level == "image",
            "test_classes_in_training": self.train_labels is None or self.labels is None or bool(
                set(np.asarray(self.labels).tolist()) <= set(np.asarray(self.train_labels).tolist())),
            "eeg_embeddings": self.eeg_embeddings is not None and self.stimulus_embeddings is not None
                              and len(self.stimulus_ids) > 0,
        }
        for need in needs:
            if not have.get(need, False):
                return NEEDS[need]
        return None

    @property
    def n_samples(self) -> int:
        """Generated images per trial (S)."""
        return int(self.generated.shape[1])

    def memo(self, name: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` computed once per inputs object (shared by the metrics that need it)."""
        if name not in self._memo:
            self._memo[name] = fn()
        return self._memo[name]

    def flat_generated(self) -> torch.Tensor:
        """The generated images as one uint8 tensor, shape (T * S, 3, H, W), trial-major."""
        def make():
            g = self.generated
            return torch.from_numpy(np.ascontiguousarray(g.reshape(g.shape[0] * g.shape[1], *g.shape[2:])))
        return self.memo("flat_generated", make)

    def _images(self, role: str) -> torch.Tensor:
        if role == "generated":
            return self.flat_generated()
        if role == "reference":
            return torch.from_numpy(np.ascontiguousarray(self.reference))
        if role == "training":
            if self.train_images is None:
                raise ConfigError("training stimuli are not available")
            return torch.from_numpy(np.ascontiguousarray(self.train_images))
        raise ConfigError(f"unknown image role {role!r}: generated, reference or training")

    # ------------------------------------------------------------------ scoring networks
    def network(self, name: str):
        """A scoring network and the layer its metrics read.

        Parameters
        ----------
        name : {"fid", "is", "probe"}
            ``"fid"``: TF-Inception pool3 of the protocol's FID extractor (layer ``"2048"``; also
            the IS logits when FID and IS both use the standard Inception). ``"is"``: the IS
            network (``logits_unbiased``; EfficientNet-Lite0 also returns its pooled ``"1280"``
            features). ``"probe"``: the probe's image features — the IS network's ``"1280"``
            when it is the very network of ``image_embedder`` (same weights digest), else
            ``image_embedder`` itself.

        Returns
        -------
        (FeatureNetwork, str, str or None)
            The network, the layer its named role reads, and its weights digest.
        """
        return self.memo(f"network:{name}", lambda: self._make_network(name))

    def _one_inception(self) -> bool:
        from eegbench.metrics import isc

        p = self.protocol
        return (p.fid_feature_extractor == isc.STANDARD_IS_EXTRACTOR
                and p.is_feature_extractor == isc.STANDARD_IS_EXTRACTOR)

    def _make_network(self, name: str):
        from eegbench.metrics import fidelity, isc
        from eegbench.metrics.features import FeatureNetwork

        p = self.protocol
        batch = 64 if torch.cuda.is_available() else 8  # small CPU batches reuse activation buffers
        if name == "fid":
            weights = self.inception_weights if p.fid_feature_extractor == isc.STANDARD_IS_EXTRACTOR else None
            net, layer, sha = fidelity.fid_network(
                p.fid_feature_extractor, weights, batch_size=batch,
                layers=("2048", "logits_unbiased") if self._one_inception() else None)
            return net, layer, sha
        if name == "is":
            if self._one_inception():
                net, _, sha = self.network("fid")
                return net, "logits_unbiased", sha
            weights = self.inception_weights if p.is_feature_extractor == isc.STANDARD_IS_EXTRACTOR else None
            effnet = p.is_feature_extractor == isc.EFFNET_IS_EXTRACTOR
            net, sha = isc.is_network(p.is_feature_extractor, weights,
                                      layers=("logits_unbiased", "1280") if effnet else None)
            return net, "logits_unbiased", sha
        if name == "probe":
            emb = self.image_embedder
            if emb is None:
                raise ConfigError("the probe's image embedder is not available")
            sha = getattr(emb, "weights_sha256", None)
            if p.is_feature_extractor == isc.EFFNET_IS_EXTRACTOR and not self._one_inception():
                net, _, is_sha = self.network("is")
                if sha is not None and sha == is_sha:
                    return net, "1280", sha  # the IS pass already gives these features
            key = f"probe-{type(emb).__name__}-w{sha[:12]}" if sha else "probe"
            net = FeatureNetwork(key=key, layers=("features",), batch_size=64,
                                 fn=lambda b: {"features": emb(b).float().cpu()})
            return net, "features", sha
        raise ConfigError(f"unknown scoring network {name!r}: fid, is or probe")

    def features(self, name: str, role: str, layer: str | None = None) -> torch.Tensor:
        """Features of one image set through one scoring network, computed once and cached.

        Parameters
        ----------
        name : {"fid", "is", "probe"}
            See :meth:`network`.
        role : {"generated", "reference", "training"}
            Generated images (``(T * S, D)``, trial-major), ground-truth images (``(T, D)``) or
            training stimuli (``(M, D)``).
        layer : str, optional
            Another layer of the network than the role's default.

        Returns
        -------
        torch.Tensor, float32
        """
        from eegbench.metrics import fidelity
        from eegbench.metrics.features import network_features

        net, default_layer, sha = self.network(name)
        cacheable = name != "probe" or sha is not None

        def compute():
            file = None
            if cacheable and role == "generated" and self.generated_cache_dir is not None:
                file = Path(self.generated_cache_dir) / f"{net.key}.safetensors"
            elif cacheable and role != "generated" and self.reference_cache_name is not None:
                suffix = "-train" if role == "training" else ""
                file = fidelity.reference_cache_file(self.cache_dir, self.reference_cache_name + suffix, net.key)
            return network_features(net, self._images(role), cache_file=file, role=role, progress=self.progress)

        # one pass per (network object, role): two names sharing a network share the pass
        out = self.memo(f"features:{net.key}:{role}", compute)
        return out[layer or default_layer]

    def n_way_classifier(self):
        """The n-way ImageNet classifier (loaded once)."""
        from eegbench.metrics import nway

        def load():
            if self.classifier is not None:
                return self.classifier
            return nway.load_classifier(self.classifier_weights, image_embedder=self.image_embedder)
        return self.memo("n_way_classifier", load)
