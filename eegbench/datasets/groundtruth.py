"""``eegnb-groundtruth``: real background EEG plus a simulated, image-determined evoked response.

A positive control for the whole benchmark: the EEG holds exactly the stimulus information that
was put into it, at a signal-to-noise ratio set by an option, so a method that reads the EEG must
beat its shuffled-EEG control once the SNR is high enough, and the EEG decoding ceiling must rise
from chance to near 1 along the SNR.

What is real
    **Background EEG**: every epoch of the ``eegnb-n170`` dataset
    (:class:`eegbench.datasets.eegnb.EEGNotebooksN170`: the eeg-notebooks Muse recordings, TP9,
    AF7, AF8, TP10, 256 Hz, µV → V, MNE band-pass 1–30 Hz, −0.1016 … +0.5977 s, baseline
    corrected), with its subjects, sessions and recordings, its real noise and artefacts. The
    original face/house response of these epochs is unrelated to the newly assigned stimuli.
    **Stimuli**: the 96 real face/house photos of the N170 paradigm (Haxby et al. 2001), classes
    ``("house", "face")``.

What is simulated (``variant=evoked``, the default)
    1. *Trial → image.* Each recording's trials, in recording order, are shown the 96 photos in a
       seeded random order (a new permutation each pass, so every photo is shown about equally
       often and the classes are interleaved: an event-related design).
    2. *Image features.* ``φ(i) ∈ R^K`` (``K = n_features``): the first ``K`` principal
       components of the photos' 32 × 32 grayscale pixels (BICUBIC, centred over the 96 photos),
       each scaled to unit variance over the photos; the sign of each component makes its
       largest-magnitude loading positive.
    3. *Encoding model* (as in linearised encoding-model simulations): a fixed random linear map
       from the features to a spatio-temporal ERP, ``s_i(c, t) = Σ_k φ_k(i) · a_k[c] · w_k(t)``, with
       topographies ``a_k ~ N(0, I_4)`` and waveforms ``w_k(t) = Σ_j b_kj exp(-(t - μ_j)² / 2σ_j²)``
       (``b_kj ~ N(0, 1)``; peaks ``μ = 0.10, 0.17, 0.25, 0.35`` s, widths
       ``σ = 0.02, 0.03, 0.04, 0.06`` s: P1/N170/P2/P3-like components, zero before onset), all
       drawn from ``numpy.random.default_rng([sim_seed, 23])``. The response depends only on the
       image, so class and image identity are both in it.
    4. *Scaling.* ``x = background + g · s_image``, with one gain ``g`` for the whole dataset such that
       ``10 log10(mean(g² s²) / mean(background²)) = snr_db``, the means taken over every trial,
       channel and sample of the epoch (baseline included). ``snr_db=-inf`` adds nothing.

The confound variant (``variant=drift``)
    The block-design artefact Li et al. (2020, IEEE TPAMI, "The perils and pitfalls of block
    design for EEG classification experiments") found in CVPR40: the class can be read from a
    slow drift that follows the recording order, not from the response to the image. Every
    recording is shown in two blocks, the first half of its trials all ``house`` photos, the
    second half all ``face`` photos (a fixed class order, the design flaw), and no evoked response
    is added. Instead each trial gets a slow drift: a per-epoch offset ``g · r · (p - 0.5) · u``,
    where ``p ∈ [0, 1)`` is the trial's position in its recording, ``u`` a fixed common-mode
    topography (``1 + 0.3 N(0, 1)`` per channel), ``r ∈ [0.5, 1.5)`` a per-recording rate, and ``g``
    set for ``snr_db`` as above. Since train and test trials share recordings (the split is by
    image), a decoder that reads the drift "decodes" the class; a control that gives each test
    trial the EEG of another trial of its own block keeps that score, which is how the harness
    flags it (``block_shuffled_eeg`` in ``result.json``).

Blocks
    Both variants mark the two halves of each recording as blocks (``block`` column, e.g.
    ``subject1/session1/x.csv#block0``), so every run on this dataset also scores the
    within-block shuffled-EEG control; in the evoked variant it removes the image information like
    the ordinary shuffled control does.

Split (official, image-disjoint, independent of the options)
    Per class, the photos are ordered by ``sha256("0:" + image_id)``; the first
    ``test_images_per_class`` go to test, the next ``val_images_per_class`` to val, the rest to
    train; every trial follows its photo. Train and test therefore never share a photo but do share
    recordings (as CVPR40's image-disjoint split does).

Everything is computed on load from the cached N170 epochs (seconds); nothing is written besides
the N170 cache.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from eegbench.data import TRIAL_COLUMNS, DatasetInfo, EEGDataset, StimulusSet
from eegbench.datasets.eegnb import EEGNotebooksN170
from eegbench.errors import ConfigError

#: Version of the simulation; part of the dataset's identity (cache keys of the shared denoiser).
GROUNDTRUTH_VERSION = "groundtruth-1"

#: ERP component peaks (s) and widths (s) of the simulated waveforms.
_PEAKS_S = (0.10, 0.17, 0.25, 0.35)
_WIDTHS_S = (0.02, 0.03, 0.04, 0.06)
#: Edge of the grayscale thumbnails the image features are computed from, pixels.
_FEATURE_EDGE = 32
VARIANTS = ("evoked", "drift")


@dataclass(frozen=True)
class GroundTruthOptions:
    """Options of :class:`GroundTruthEEG` (``--dataset-option key=value``).

    Parameters
    ----------
    snr_db : float
        Power of the added signal over the power of the background EEG, in dB (``-inf``: none).
    variant : {"evoked", "drift"}
        ``evoked``: image-determined ERP, interleaved design; ``drift``: block design whose class is
        readable only from a slow drift (the confound).
    n_features : int
        Number of image principal components the ERP is a function of (1 … 32).
    sim_seed : int
        Seed of the trial → image order and of the encoding model.
    test_images_per_class, val_images_per_class : int
        Photos per class held out for test and validation (the rest train).
    """

    snr_db: float = 0.0
    variant: str = "evoked"
    n_features: int = 8
    sim_seed: int = 0
    test_images_per_class: int = 8
    val_images_per_class: int = 4

    @classmethod
    def parse(cls, options: dict[str, Any]) -> GroundTruthOptions:
        """Options from strings (the CLI) or typed values; unknown keys and bad values raise.

        Raises
        ------
        ConfigError
            One line naming the option and what is wrong.
        """
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ConfigError(f"dataset 'eegnb-groundtruth': unknown option(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, raw in options.items():
            kind = known[key].type
            try:
                if kind in ("float", float):
                    values[key] = float(raw)
                elif kind in ("int", int):
                    if isinstance(raw, float) or (isinstance(raw, str) and not raw.strip().lstrip("-").isdigit()):
                        raise ValueError("not an integer")
                    values[key] = int(raw)
                else:
                    values[key] = str(raw)
            except (TypeError, ValueError):
                raise ConfigError(f"dataset 'eegnb-groundtruth': {key}={raw!r} is not a valid {kind}") from None
        opts = cls(**values)
        opts.validate()
        return opts

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value out of range."""
        if math.isnan(self.snr_db) or self.snr_db == math.inf or self.snr_db > 60:
            raise ConfigError(f"dataset 'eegnb-groundtruth': snr_db={self.snr_db} must be a number ≤ 60 or -inf")
        if self.variant not in VARIANTS:
            raise ConfigError(f"dataset 'eegnb-groundtruth': variant={self.variant!r}; known: {', '.join(VARIANTS)}")
        if not 1 <= self.n_features <= 32:
            raise ConfigError(f"dataset 'eegnb-groundtruth': n_features={self.n_features} must lie in [1, 32]")
        if self.test_images_per_class < 2 or self.val_images_per_class < 1:
            raise ConfigError("dataset 'eegnb-groundtruth': test_images_per_class must be ≥ 2 and "
                              "val_images_per_class ≥ 1")


class GroundTruthEEG:
    """Loader of ``eegnb-groundtruth`` (see the module docstring for exactly what is simulated).

    Parameters
    ----------
    data_root : Path or None
        Folder that contains ``eeg-notebooks/`` (``--data-root`` / ``$EEGBENCH_DATA``).
    cache_dir : Path or None
        Root of the preprocessing cache (the N170 epochs are cached there as for ``eegnb-n170``).
    **options
        :class:`GroundTruthOptions` fields, as strings or typed values.

    Raises
    ------
    ConfigError
        For an unknown option or a bad value.
    """

    name: ClassVar[str] = "eegnb-groundtruth"
    citation: ClassVar[str] = (
        "Background EEG and stimuli: see eegnb-n170 (NeuroTechX eeg-notebooks v0.1; Haxby et al. 2001). "
        "Simulated evoked responses: eegbench (this loader). Confound variant after Li, R. et al. (2020). The "
        "perils and pitfalls of block design for EEG classification experiments. IEEE TPAMI 43(1), 316-333."
    )
    licence: ClassVar[str] = "EEG: BSD-3-Clause (background); stimuli: CC BY-SA 3.0"

    def __init__(self, data_root: Path | str | None = None, cache_dir: Path | str | None = None,
                 **options: Any) -> None:
        self.options = GroundTruthOptions.parse(options)
        self.background = EEGNotebooksN170(data_root, cache_dir)

    def required_files(self) -> list[Path]:
        """The N170 recordings and stimulus folders (see :class:`EEGNotebooksN170`)."""
        return self.background.required_files()

    # ------------------------------------------------------------------ simulation pieces
    @staticmethod
    def image_features(stimuli: StimulusSet, image_ids: list[str], n_features: int) -> np.ndarray:
        """Unit-variance principal components of the photos' 32 × 32 grayscale pixels.

        Parameters
        ----------
        stimuli : StimulusSet
        image_ids : list of str
            The photos, in row order.
        n_features : int
            Components kept.

        Returns
        -------
        numpy.ndarray, shape (len(image_ids), n_features), float64
        """
        gray = np.stack([stimuli.load(i, _FEATURE_EDGE).astype(np.float64).mean(axis=0).ravel()
                         for i in image_ids])
        gray -= gray.mean(axis=0, keepdims=True)
        u, s, vt = np.linalg.svd(gray, full_matrices=False)
        k = min(n_features, len(s))
        scores = u[:, :k] * s[:k]
        signs = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
        scores = scores * signs
        return scores / scores.std(axis=0, keepdims=True)

    @staticmethod
    def encoding_model(n_features: int, n_chans: int, times: np.ndarray, seed: int) -> np.ndarray:
        """The fixed random linear map from image features to an ERP.

        Parameters
        ----------
        n_features, n_chans : int
        times : numpy.ndarray, shape (n_times,)
            Sample times relative to stimulus onset, s.
        seed : int
            ``sim_seed``.

        Returns
        -------
        numpy.ndarray, shape (n_features, n_chans, n_times), float64
            ``erp = np.einsum("ik,kct->ict", features, model)``.
        """
        rng = np.random.default_rng([int(seed), 23])
        topo = rng.standard_normal((n_features, n_chans))
        coef = rng.standard_normal((n_features, len(_PEAKS_S)))
        bumps = np.stack([np.exp(-((times - mu) ** 2) / (2 * sd**2)) for mu, sd in zip(_PEAKS_S, _WIDTHS_S)])
        waves = coef @ bumps  # (K, n_times)
        return topo[:, :, None] * waves[:, None, :]

    # ------------------------------------------------------------------ load
    def load(self) -> EEGDataset:
        """Background epochs + the simulated signal (see the module docstring).

        Returns
        -------
        EEGDataset
            ``eeg`` float32 ``(n_trials, 4, 180)`` in V; the trial table has the ``eegnb-n170`` trial
            ids, subjects, sessions and recordings, the assigned ``image_id`` and its ``label``, a
            ``block`` column (recording halves) and the official image-disjoint ``split``.

        Raises
        ------
        DataNotFoundError, DataFormatError
            From the N170 loader (missing or malformed recordings or stimuli).
        """
        opts = self.options
        bg = self.background.load()
        info0 = bg.info
        stimuli = bg.stimuli
        ids_by_class = [sorted(i for i in stimuli.image_ids if stimuli.labels[i] == k)
                        for k in range(info0.n_classes)]
        all_ids = stimuli.image_ids
        rng = np.random.default_rng([int(opts.sim_seed), 11])
        table = bg.trials[["trial_id", "subject", "session", "recording"]].copy()
        recordings = table["recording"].to_numpy()
        image_of = np.empty(len(table), dtype=object)
        block_of = np.empty(len(table), dtype=object)
        position = np.zeros(len(table))
        for rec in dict.fromkeys(recordings):  # recording order as loaded; trials in onset order
            rows = np.flatnonzero(recordings == rec)
            n = len(rows)
            half = (np.arange(n) >= n / 2).astype(int)
            block_of[rows] = [f"{rec}#block{b}" for b in half]
            position[rows] = np.arange(n) / n
            if opts.variant == "evoked":
                passes = -(-n // len(all_ids))
                order = np.concatenate([rng.permutation(len(all_ids)) for _ in range(passes)])[:n]
                image_of[rows] = [all_ids[j] for j in order]
            else:  # block design, fixed class order: first half class 0, second half class 1
                for b in (0, 1):
                    sel = rows[half == b]
                    pool = ids_by_class[b % len(ids_by_class)]
                    passes = -(-len(sel) // len(pool))
                    order = np.concatenate([rng.permutation(len(pool)) for _ in range(passes)])[:len(sel)]
                    image_of[sel] = [pool[j] for j in order]
        table["image_id"] = image_of.astype(str)
        table["label"] = [stimuli.labels[i] for i in table["image_id"]]
        table["block"] = block_of.astype(str)
        table["split"] = table["image_id"].map(self.image_split(ids_by_class))

        signal = self._signal(bg, table, position, stimuli, all_ids)
        eeg = bg.eeg.astype(np.float64)
        gain = self.gain(eeg, signal, opts.snr_db)
        eeg = (eeg + gain * signal).astype(np.float32) if gain else bg.eeg.copy()
        info = DatasetInfo(
            name=self.name, version=GROUNDTRUTH_VERSION, n_chans=info0.n_chans, n_times=info0.n_times,
            sfreq=info0.sfreq, ch_names=info0.ch_names, unit="V", class_names=info0.class_names, tmin=info0.tmin,
            image_size=info0.image_size, citation=self.citation, licence=self.licence, subjects=info0.subjects,
            stimulus_level="image", description=self.data_card(gain, eeg),
        )
        source = (f"eegnb-groundtruth image-disjoint split: per class, photos ordered by sha256('0:'+image_id); "
                  f"{opts.test_images_per_class} test, {opts.val_images_per_class} val, rest train")
        return EEGDataset(info=info, eeg=eeg, trials=table[[*TRIAL_COLUMNS, "block", "split"]], stimuli=stimuli,
                          split_source=source)

    def image_split(self, ids_by_class: list[list[str]]) -> dict[str, str]:
        """Official part of every photo (see *Split* in the module docstring)."""
        opts = self.options
        part: dict[str, str] = {}
        for ids in ids_by_class:
            if len(ids) < opts.test_images_per_class + opts.val_images_per_class + 1:
                raise ConfigError(f"dataset 'eegnb-groundtruth': a class has {len(ids)} photos, fewer than "
                                  f"test_images_per_class + val_images_per_class + 1")
            ordered = sorted(ids, key=lambda i: hashlib.sha256(f"0:{i}".encode()).hexdigest())
            for j, image_id in enumerate(ordered):
                part[image_id] = ("test" if j < opts.test_images_per_class else
                                  "val" if j < opts.test_images_per_class + opts.val_images_per_class else "train")
        return part

    def _signal(self, bg: EEGDataset, table: pd.DataFrame, position: np.ndarray, stimuli: StimulusSet,
                all_ids: list[str]) -> np.ndarray:
        """The unscaled added signal per trial, float64 ``(n_trials, n_chans, n_times)``."""
        opts, info = self.options, bg.info
        if opts.variant == "evoked":
            times = info.tmin + np.arange(info.n_times) / info.sfreq
            model = self.encoding_model(opts.n_features, info.n_chans, times, opts.sim_seed)
            erp = np.einsum("ik,kct->ict", self.image_features(stimuli, all_ids, opts.n_features), model)
            index = pd.Index(all_ids).get_indexer(table["image_id"])
            return erp[index]
        rng = np.random.default_rng([int(opts.sim_seed), 29])
        topo = 1.0 + 0.3 * rng.standard_normal(info.n_chans)
        recs = list(dict.fromkeys(table["recording"]))
        rate = dict(zip(recs, rng.uniform(0.5, 1.5, len(recs))))
        level = np.array([rate[r] for r in table["recording"]]) * (position - 0.5)
        return np.broadcast_to(level[:, None, None] * topo[None, :, None],
                               (len(table), info.n_chans, info.n_times)).copy()

    @staticmethod
    def gain(background: np.ndarray, signal: np.ndarray, snr_db: float) -> float:
        """Gain ``g`` with ``10 log10(mean((g·signal)²) / mean(background²)) = snr_db`` (0 for ``-inf``).

        Parameters
        ----------
        background, signal : numpy.ndarray, shape (n_trials, n_chans, n_times)
        snr_db : float

        Returns
        -------
        float
        """
        if snr_db == -math.inf:
            return 0.0
        p_signal = float(np.mean(np.square(signal)))
        p_background = float(np.mean(np.square(background)))
        return math.sqrt(p_background * 10 ** (snr_db / 10) / p_signal)

    def data_card(self, gain: float, eeg: np.ndarray) -> str:
        """What was simulated, in words and numbers (shown by ``eegbench data info``)."""
        o = self.options
        what = (f"evoked response = fixed random linear map (sim_seed {o.sim_seed}) from the first {o.n_features} "
                "principal components of each photo's 32x32 grayscale pixels to 4-channel ERP waveforms with peaks at "
                "0.10/0.17/0.25/0.35 s; interleaved design (photos in a new random order each pass)"
                if o.variant == "evoked" else
                "no evoked response; block design (first half of each recording house, second half face) with a "
                "slow drift (per-trial common-mode offset growing linearly with the position in the recording): "
                "the class is readable only from the recording order")
        return (f"SIMULATED on real background EEG (every eegnb-n170 epoch, in V). variant={o.variant}: {what}. "
                f"SNR {o.snr_db:g} dB = 10 log10(mean added-signal power / mean background power) over all trials, "
                f"channels and samples (gain {gain:.4g}). Blocks: halves of each recording. Split: image-disjoint, "
                f"{o.test_images_per_class} test + {o.val_images_per_class} val photos per class; train and test "
                "share recordings.")

    def verify(self) -> list[str]:
        """The N170 file checks, then a full load of the simulated dataset.

        Returns
        -------
        list of str
            One line per check that passed.

        Raises
        ------
        DataNotFoundError, DataFormatError
            On the first failed check.
        """
        lines = self.background.verify()
        ds = self.load()
        lines.append(f"{len(ds)} simulated trials, eeg {tuple(ds.eeg.shape)} {ds.eeg.dtype} in V, "
                     f"variant {self.options.variant}, snr_db {self.options.snr_db:g}")
        return lines
