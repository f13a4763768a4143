"""Scoring under the evaluation protocol: one scoring context per run, the same for ``run`` and ``evaluate``.

:class:`ScoringContext` holds everything that scoring a set of generated images needs except the
images (protocol, reference images, labels, trial and image ids, training stimuli for the probe,
feature caches, scoring weights, the method's stimulus embeddings, the metric registry). It is
built in one place per caller — :meth:`eegbench.runner.Prepared.scoring_context` for a run,
:func:`eegbench.evaluate.evaluate_run` for a re-scoring — and scores the run's images and each
control's images with :meth:`ScoringContext.score`, one keyword-only entry point (as
torch-fidelity's ``calculate_metrics``). Within one context each scoring network is loaded once,
the reference and training-stimulus features are read or computed once, and every image set's
features go through one cached pass per network (:class:`ScoringInputs`).

Each metric is a :class:`eegbench.metric.Metric` from the registry; :class:`ScoringInputs` is
what its :meth:`~eegbench.metric.Metric.compute` reads.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eegbench.errors import ConfigError, EegbenchError
from eegbench.metric import NEEDS, get_metric
from eegbench.metrics import fidelity, isc, nway
from eegbench.metrics.features import FeatureNetwork, network_features
from eegbench.protocol import EvalProtocol

__all__ = ["FEATURE_BATCH", "ScoringContext", "ScoringInputs", "reference_cache_name", "score_images"]

#: Images per TF-Inception forward pass. Its features do not depend on the batch (tested), so the
#: batch is chosen for speed alone: on a 2-core CPU small batches keep every activation buffer small
#: enough to be reused (:mod:`eegbench.hostalloc`); 8 images per pass scored 96 images in 13–14 s
#: where 4 or 16 took 14–16 s.
FEATURE_BATCH = 64 if torch.cuda.is_available() else 8


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def reference_cache_name(dataset: str, version: str, options: dict[str, Any] | None, split_sha256: str,
                         n_reference: int, image_size: int) -> str:
    """File-safe name of the cached reference-image statistics of one dataset/split/size.

    Parameters
    ----------
    dataset, version : str
        Dataset name and loader version.
    options : dict or None
        The run's dataset loader options (part of the name when given, since they can change the images).
    split_sha256 : str
        Split hash (first 16 hex digits are used).
    n_reference : int
        Number of reference images.
    image_size : int
        Image edge length, pixels.

    Returns
    -------
    str
        e.g. ``eegnb-n170-1-39643a9a3683a05c-583-64px-ref``; the same inputs give the same name in
        ``eegbench run`` and ``eegbench evaluate``.
    """
    from eegbench.datasets.info import dataset_label

    return _safe(f"{dataset_label(dataset, options)}-{version}-{split_sha256[:16]}-{n_reference}-{image_size}px-ref")


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
    shared: dict[str, Any] = field(default_factory=dict, repr=False)
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

    def memo(self, name: str, fn: Callable[[], Any], *, shared: bool = False) -> Any:
        """``fn()`` computed once per inputs object (shared by the metrics that need it).

        ``shared=True``: once per :class:`ScoringContext` — for what does not depend on the generated
        images (scoring networks, the n-way classifier, reference and training-stimulus features),
        so scoring a run and its controls loads each network and reads each cache once.
        """
        store = self.shared if shared else self._memo
        if name not in store:
            store[name] = fn()
        return store[name]

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
        return self.memo(f"network:{name}", lambda: self._make_network(name), shared=True)

    def _one_inception(self) -> bool:
        p = self.protocol
        return (p.fid_feature_extractor == isc.STANDARD_IS_EXTRACTOR
                and p.is_feature_extractor == isc.STANDARD_IS_EXTRACTOR)

    def _make_network(self, name: str):
        p = self.protocol
        batch = FEATURE_BATCH
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
        out = self.memo(f"features:{net.key}:{role}", compute, shared=role != "generated")
        return out[layer or default_layer]

    def n_way_classifier(self):
        """The n-way ImageNet classifier (loaded once)."""
        def load():
            if self.classifier is not None:
                return self.classifier
            return nway.load_classifier(self.classifier_weights, image_embedder=self.image_embedder)
        return self.memo("n_way_classifier", load, shared=True)


@dataclass
class ScoringContext:
    """What scoring needs besides the generated images: built once per run or evaluation.

    The fields are those of :class:`ScoringInputs` without ``generated`` (see there);
    ``eeg_embeddings`` are the method's embeddings of each trial's **own** EEG, and a control's
    permutation picks its rows (:meth:`score` ``eeg_rows``). ``plugins`` is the registry the
    protocol's metrics are looked up in (default :func:`eegbench.plugins.get_plugin_manager`).

    Raises
    ------
    PluginError
        At construction, for a protocol metric that is not registered or not a
        :class:`~eegbench.metric.Metric` (before any image is scored).
    """

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
    plugins: Any = None
    skip_reasons: dict[str, str] = field(default_factory=dict)
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        from eegbench.plugins import get_plugin_manager

        self.plugins = self.plugins or get_plugin_manager()
        self.labels = np.asarray(self.labels)
        self.trial_ids = [str(t) for t in self.trial_ids]
        self.image_ids = [str(i) for i in self.image_ids] if self.image_ids is not None else []
        self.wnids = tuple(self.wnids or ())
        self.stimulus_ids = [str(i) for i in self.stimulus_ids] if self.stimulus_ids is not None else []
        self.cache_dir = Path(self.cache_dir)
        self.metrics = [get_metric(self.plugins, key) for key in self.protocol.metrics]  # unknown names fail first

    @classmethod
    def for_run(cls, *, dataset: dict[str, Any], split_sha256: str, protocol, reference: np.ndarray, labels,
                trial_ids: Sequence[str], image_ids: Sequence[str], train_images: np.ndarray | None,
                train_labels: np.ndarray | None, image_embedder, cache_dir: Path, features_dir: Path,
                inception_weights: Path | None = None, classifier_weights: Path | None = None, classifier=None,
                progress: bool = True, plugins=None, retrieval: dict[str, Any] | None = None,
                skip_reasons: dict[str, str] | None = None) -> ScoringContext:
        """The scoring context of one run, built the same way by ``eegbench run`` and ``eegbench evaluate``.

        Parameters
        ----------
        dataset : dict
            The result's ``dataset`` record (:func:`eegbench.runner.dataset_record`: name, version,
            options, class names, WNIDs, stimulus level).
        split_sha256 : str
            The split hash (names the cached reference features).
        protocol : EvalProtocol
            Resolved protocol.
        reference : numpy.ndarray, shape (T, 3, H, W), uint8
            The ground-truth image of each test trial.
        labels, trial_ids, image_ids
            Of the test trials, length T.
        train_images, train_labels
            The training stimuli (the probe), or None when unavailable (then ``skip_reasons`` may
            say why).
        image_embedder : callable
            The probe's frozen features (EfficientNet-Lite0).
        cache_dir : Path
            The metric cache root (reference and training features under ``cache_dir/fidelity``).
        features_dir : Path
            The run's ``features/`` folder (generated-image features).
        inception_weights, classifier_weights, classifier, progress, plugins
            See :class:`ScoringInputs`.
        retrieval : dict, optional
            The method's embeddings: ``eeg`` (T, D), ``stimuli`` (N, D), ``stimulus_ids``.
        skip_reasons : dict, optional
            Need → reason, replacing :data:`~eegbench.metric.NEEDS`' generic text.
        """
        return cls(
            reference=reference, protocol=protocol, labels=labels, trial_ids=list(trial_ids),
            image_ids=list(image_ids), n_classes=len(dataset["class_names"]), wnids=tuple(dataset.get("wnids") or ()),
            stimulus_level=dataset.get("stimulus_level") or "class", train_images=train_images,
            train_labels=train_labels, image_embedder=image_embedder, cache_dir=Path(cache_dir) / "fidelity",
            reference_cache_name=reference_cache_name(dataset["name"], dataset.get("version", ""),
                                                      dataset.get("options"), split_sha256, len(reference),
                                                      int(protocol.image_size)),
            generated_cache_dir=features_dir, inception_weights=inception_weights,
            classifier_weights=classifier_weights, classifier=classifier, progress=progress, plugins=plugins,
            skip_reasons=dict(skip_reasons or {}),
            **({} if retrieval is None else {"eeg_embeddings": retrieval["eeg"],
                                             "stimulus_embeddings": retrieval["stimuli"],
                                             "stimulus_ids": retrieval["stimulus_ids"]}),
        )

    def inputs(self, generated: np.ndarray, *, eeg_rows: np.ndarray | None = None) -> ScoringInputs:
        """The :class:`ScoringInputs` of one image set (sharing this context's networks and features).

        Parameters
        ----------
        generated : numpy.ndarray, shape (T, S, 3, H, W), uint8
        eeg_rows : numpy.ndarray, shape (T,), int, optional
            A control's permutation: trial ``i`` was generated from the EEG of trial ``eeg_rows[i]``
            (its EEG embedding is that trial's).
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(ScoringInputs)
                  if f.name not in ("generated", "shared", "_memo")}
        if self.eeg_embeddings is not None and eeg_rows is not None:
            values["eeg_embeddings"] = self.eeg_embeddings[np.asarray(eeg_rows)]
        return ScoringInputs(generated=generated, shared=self._shared, **values)

    def score(self, generated: np.ndarray, *, eeg_rows: np.ndarray | None = None) -> dict[str, Any]:
        """Every metric of the protocol (``protocol.metrics``) for one set of generated images.

        A metric whose needs are not met is recorded with ``value`` None and the ``skipped``
        reason (:data:`eegbench.metric.NEEDS`, or this context's ``skip_reasons`` for a need that
        is missing for a known cause).

        Parameters
        ----------
        generated : numpy.ndarray, shape (T, S, 3, H, W), uint8
            S generated images per test trial, in ``trial_ids`` order.
        eeg_rows : numpy.ndarray, shape (T,), int, optional
            See :meth:`inputs`.

        Returns
        -------
        dict
            Metric key → dict with ``value``, the metric's metadata (``label``, ``higher_is_better``,
            ``interval``, ``decimals``, ``scale``) and details; skipped metrics have ``value`` None
            and a ``skipped`` reason.

        Raises
        ------
        EegbenchError
            A metric's ``compute()`` returned no ``value``.
        """
        inputs = self.inputs(generated, eeg_rows=eeg_rows)
        metrics: dict[str, Any] = {}
        for metric in self.metrics:
            meta = {**metric.metadata(), "label": metric.title(inputs)}
            reason = inputs.missing(metric.needs)
            if reason is not None:
                for need, why in self.skip_reasons.items():
                    if reason == NEEDS[need]:
                        reason = why
                metrics[metric.key] = {"value": None, **meta, "skipped": reason}
                continue
            record = dict(metric.compute(inputs))
            if "value" not in record:
                raise EegbenchError(f"metric {metric.key!r}: compute() returned no 'value'")
            metrics[metric.key] = {**meta, **record}
        return metrics


def score_images(
    generated: np.ndarray,
    reference: np.ndarray,
    *,
    protocol: EvalProtocol,
    labels: np.ndarray,
    trial_ids,
    n_classes: int,
    wnids=(),
    train_images: np.ndarray | None = None,
    train_labels: np.ndarray | None = None,
    image_embedder=None,
    cache_dir: Path,
    reference_cache_name: str | None,
    inception_weights: Path | None = None,
    classifier=None,
    classifier_weights: Path | None = None,
    progress: bool = True,
    generated_cache_dir: Path | None = None,
    image_ids=None,
    stimulus_level: str = "class",
    plugins=None,
    eeg_embeddings: np.ndarray | None = None,
    stimulus_embeddings: np.ndarray | None = None,
    stimulus_ids=None,
) -> dict[str, Any]:
    """Every metric of the protocol (``protocol.metrics``, looked up in the metric registry) for one
    set of generated and reference images.

    Each metric is a :class:`eegbench.metric.Metric` registered through ``eegbench_register_metrics``
    (the core's own in :mod:`eegbench.metrics.protocol_metrics`). A metric whose needs are not met
    (no WNIDs, no training stimuli, class-level stimuli) is recorded with ``value`` None and the
    ``skipped`` reason. Each scoring network runs once over each distinct image
    (:class:`ScoringInputs`): TF-Inception for FID/KID and the Inception 2-way
    identification, EfficientNet-Lite0 for the IS logits, the probe and the EfficientNet 2-way
    identification. Reference and training-stimulus features are cached under ``cache_dir``;
    generated-image features under ``generated_cache_dir`` when given.

    Parameters
    ----------
    generated : numpy.ndarray, shape (T, S, 3, H, W), uint8
        S generated images per test trial.
    reference : numpy.ndarray, shape (T, 3, H, W), uint8
        One ground-truth image per test trial (the FID/KID reference set; the n-way true class).
    protocol : EvalProtocol
        Resolved protocol (:func:`resolve_protocol`).
    labels : numpy.ndarray, shape (T,), int
        Dataset label of each test trial.
    trial_ids : sequence of str, length T
    n_classes : int
        Number of dataset classes.
    wnids : sequence of str
        ImageNet WNIDs of the classes; empty → the n-way accuracy is skipped (reason recorded).
    train_images : numpy.ndarray, shape (M, 3, H, W), uint8, optional
        Training stimuli for the probe; None → probe skipped (reason recorded).
    train_labels : numpy.ndarray, shape (M,), int, optional
    image_embedder : callable, optional
        Frozen features for the probe (EfficientNet-Lite0 per ``protocol.probe``).
    cache_dir : Path
        Metrics cache (feature files of the reference images and training stimuli, ``features/``).
    reference_cache_name : str or None
        Name of the reference set's feature files (dataset, split hash and image size); the
        training stimuli use it with ``-train``. None: nothing is cached.
    inception_weights : Path, optional
        torch-fidelity's standard Inception weights (FID/KID + standard IS).
    classifier : callable, optional
        n-way classifier (uint8 → ImageNet logits); default from ``classifier_weights`` / EfficientNet-Lite0.
    classifier_weights : Path, optional
        Local ViT-H/14 weights.
    progress : bool
    generated_cache_dir : Path, optional
        Folder for the feature files of the generated images (a run's ``features/``).
    image_ids : sequence of str, length T, optional
        Stimulus image id of each test trial (the 2-way identification never counts a trial that
        shows the same image as another trial); default: each trial its own image.
    stimulus_level : {"class", "image"}
        ``"image"`` when each trial has its own stimulus (``DatasetInfo.stimulus_level``):
        image-level metrics apply.
    plugins : eegbench.plugins.PluginSet, optional
        Where the metrics are looked up (default :func:`eegbench.plugins.get_plugin_manager`).
    eeg_embeddings : numpy.ndarray, shape (T, D), float32, optional
        The method's EEG embedding of each test trial (retrieval metrics; None: "not reported").
    stimulus_embeddings : numpy.ndarray, shape (N, D), float32, optional
        The method's embedding of each distinct test image (the retrieval candidates).
    stimulus_ids : sequence of str, length N, optional
        ``image_id`` of each row of ``stimulus_embeddings``.

    Returns
    -------
    dict
        Metric key → dict with ``value``, the metric's metadata (``label``, ``higher_is_better``,
        ``interval``, ``decimals``, ``scale``) and details; skipped metrics have ``value`` None and
        a ``skipped`` reason.

    Raises
    ------
    PluginError
        For a protocol metric that is not registered or not a :class:`~eegbench.metric.Metric`.
    """
    context = ScoringContext(
        reference=reference, protocol=protocol, labels=np.asarray(labels),
        trial_ids=[str(t) for t in trial_ids], n_classes=int(n_classes),
        image_ids=[str(i) for i in image_ids] if image_ids is not None else [],
        wnids=tuple(wnids or ()), stimulus_level=stimulus_level, train_images=train_images,
        train_labels=train_labels, image_embedder=image_embedder,
        cache_dir=Path(cache_dir), reference_cache_name=reference_cache_name,
        generated_cache_dir=generated_cache_dir, inception_weights=inception_weights,
        classifier_weights=classifier_weights, classifier=classifier, progress=progress,
        eeg_embeddings=eeg_embeddings, stimulus_embeddings=stimulus_embeddings,
        stimulus_ids=[str(i) for i in stimulus_ids] if stimulus_ids is not None else [], plugins=plugins,
    )
    return context.score(generated)
