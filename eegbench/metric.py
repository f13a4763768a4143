"""The metric interface: what a protocol metric is, what it needs, and the inputs it is computed from.

Every metric of the evaluation protocol — the core's FID, KID, IS, n-way top-k, probe accuracy and
image-level metrics as much as a third party's — is a :class:`Metric` subclass registered through
the ``eegbench_register_metrics`` hook (``registry.add("key", "package.module:Class", summary=...)``).
The protocol lists the keys it scores (:attr:`eegbench.protocol.EvalProtocol.metrics`);
:class:`eegbench.scoring.ScoringContext` looks each one up in the registry, checks what it needs, and
calls :meth:`Metric.compute` with one shared :class:`eegbench.scoring.ScoringInputs`. The inputs run each scoring
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

from typing import TYPE_CHECKING, Any, ClassVar

from eegbench.errors import PluginError

if TYPE_CHECKING:  # type-only: scoring builds on this module, not the other way round
    from eegbench.scoring import ScoringInputs

__all__ = ["INTERVALS", "NEEDS", "Metric", "get_metric"]

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
