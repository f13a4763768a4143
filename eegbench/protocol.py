"""The evaluation protocol: one frozen object holding every scoring choice.

Its :meth:`EvalProtocol.hash` goes into every result; ``eegbench compare`` never puts runs with
different protocol hashes in one table.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EvalProtocol:
    """Every choice that affects a score.

    Parameters
    ----------
    n_samples_per_trial : int
        Generated images per test trial.
    image_size : int
        Edge length in pixels of generated and reference images.
    num_inference_steps : int
        Sampler steps every method uses.
    reference : str
        Reference set for FID/KID: ``"one-gt-per-test-trial"`` (the stimulus of each test trial once).
    fid_feature_extractor : str
        torch-fidelity feature extractor name (TF-Inception 2015-12-05 pool3 weights).
    kid_subset_size : int
        Upper bound of KID subset size (clipped to the number of images).
    probe : str
        Classifier for class accuracy: ``"logreg-efficientnet-lite0"`` = logistic regression on frozen
        EfficientNet-Lite0 features of the training stimuli.
    max_test_trials : int, optional
        Score only the first N test trials (quick checks); None scores the whole test split.
    seed : int
        Seed of sampling noise (per image: derived from seed, trial id and sample index) and metric RNGs.
    """

    n_samples_per_trial: int = 2
    image_size: int = 64
    num_inference_steps: int = 20
    reference: str = "one-gt-per-test-trial"
    fid_feature_extractor: str = "inception-v3-tf-fidhelper"
    kid_subset_size: int = 1000
    probe: str = "logreg-efficientnet-lite0"
    max_test_trials: int | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        """JSON-ready dict of every field."""
        return asdict(self)

    def hash(self) -> str:
        """sha256 (hex, first 16 chars) of the canonical JSON of every set field except ``seed``.

        The seed is left out so runs with different seeds aggregate into one leaderboard row.
        """
        d = {k: v for k, v in self.to_dict().items() if v is not None}  # unset options keep old hashes
        d.pop("seed")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def image_seed(seed: int, trial_id: str, sample_index: int) -> int:
    """Seed of one generated image, independent of batch size and process count.

    Returns
    -------
    int
        A 63-bit integer from ``sha256(f"{seed}:{trial_id}:{sample_index}")``.
    """
    digest = hashlib.sha256(f"{seed}:{trial_id}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
