"""``synthetic``: class-dependent EEG-like signals with procedural stimulus images.

For fast tests and for plugin authors: no files are needed, everything follows from the options
and the seed. Each class ``k`` has a carrier frequency ``f_k = base_freq + k * freq_step`` (Hz), a
stimulus colour (hue ``k / n_classes``) and a shape; a trial of class ``k`` is ::

    x[c, t] = g_s[c] * A * w(t) * sin(2π f_k t + φ_k + ψ_c) + 1/f-ish background + white noise

with ``A = signal_uv`` µV, a Hann window ``w`` over the epoch, a per-class phase ``φ_k``, a
per-channel phase ``ψ_c``, a per-subject channel gain ``g_s`` drawn once, background noise
``noise_uv`` µV, all converted to V. The class is therefore decodable from the power at ``f_k``.

Images are ``image_size`` × ``image_size`` RGB PNGs: class ``k``'s shape (circle, square,
triangle, diamond, cross, ring, cycling) in its colour, at a random position and size over a
random light-grey background, ``images_per_class`` per class. They are written once under
``<cache_dir>/synthetic/<options-hash>/images/`` (temporary file + :func:`os.replace`), since
:class:`~eegbench.data.StimulusSet` serves images from paths.
"""

from __future__ import annotations

import colorsys
import difflib
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from eegbench.files import atomic_write
from eegbench.data import DatasetInfo, EEGDataset, StimulusSet
from eegbench.datasets import default_cache_dir
from eegbench.errors import ConfigError

#: Version of the generator; part of the image cache key.
SYNTHETIC_VERSION = "synthetic-1"

_SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")


@dataclass(frozen=True)
class SyntheticOptions:
    """Options of :class:`SyntheticEEG` (all overridable as keyword arguments).

    Parameters
    ----------
    n_subjects : int
        Number of subjects (ids 1 … n_subjects).
    n_recordings : int
        Recordings per subject (each its own session, ids 1 … n_recordings).
    n_trials : int
        Trials per recording (classes balanced within a recording, order shuffled).
    n_chans : int
        EEG channels.
    n_times : int
        Samples per trial.
    sfreq : float
        Sampling frequency, Hz.
    n_classes : int
        Number of classes (≥ 2).
    images_per_class : int
        Stimulus images per class.
    image_size : int
        Edge length of the generated images, pixels.
    base_freq, freq_step : float
        Carrier of class ``k`` is ``base_freq + k * freq_step`` Hz; must stay below 0.4 × sfreq.
    signal_uv, noise_uv : float
        Carrier amplitude (0: pure-noise EEG, no class signal) and white-noise standard deviation, µV.
    seed : int
        Seed of everything random (signals, trial order, images, image assignment).
    """

    n_subjects: int = 3
    n_recordings: int = 3
    n_trials: int = 16
    n_chans: int = 4
    n_times: int = 64
    sfreq: float = 128.0
    n_classes: int = 2
    images_per_class: int = 4
    image_size: int = 64
    base_freq: float = 6.0
    freq_step: float = 5.0
    signal_uv: float = 10.0
    noise_uv: float = 10.0
    seed: int = 0

    @classmethod
    def from_kwargs(cls, **options: Any) -> SyntheticOptions:
        """Build from keyword arguments, coercing numbers given as strings.

        Raises
        ------
        ConfigError
            On an unknown option name, a value of the wrong type, or an out-of-range value.
        """
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in options.items():
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"synthetic: unknown option {key!r}{hint}; options: {sorted(known)}")
            kind = int if known[key].type in ("int", int) else float
            try:
                if isinstance(value, bool) or (kind is int and float(value) != int(float(value))):
                    raise ValueError
                values[key] = kind(float(value)) if kind is int else kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"synthetic: option {key}={value!r} is not a valid {kind.__name__}") from None
        opts = cls(**values)
        opts._validate()
        return opts

    def _validate(self) -> None:
        minimum = {"n_subjects": 1, "n_recordings": 1, "n_trials": 1, "n_chans": 1, "n_times": 8,
                   "n_classes": 2, "images_per_class": 1, "image_size": 8}
        for key, low in minimum.items():
            if getattr(self, key) < low:
                raise ConfigError(f"synthetic: option {key}={getattr(self, key)} must be >= {low}")
        for key in ("sfreq", "base_freq"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"synthetic: option {key}={getattr(self, key)} must be > 0")
        if not self.signal_uv >= 0:  # 0: pure-noise EEG, the null case of the controls
            raise ConfigError(f"synthetic: option signal_uv={self.signal_uv} must be >= 0")
        if self.freq_step <= 0 or self.noise_uv < 0:
            raise ConfigError("synthetic: freq_step must be > 0 and noise_uv >= 0")
        top = self.base_freq + (self.n_classes - 1) * self.freq_step
        if top >= 0.4 * self.sfreq:
            raise ConfigError(
                f"synthetic: class {self.n_classes - 1} carrier {top:g} Hz must be < 0.4 × sfreq "
                f"({0.4 * self.sfreq:g} Hz); lower n_classes/base_freq/freq_step or raise sfreq"
            )

    def key(self) -> str:
        """sha256 (hex, 16 chars) of the generator version and the options."""
        payload = json.dumps({"version": SYNTHETIC_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class SyntheticEEG:
    """``synthetic`` dataset: learnable class-dependent signals and procedural images.

    Parameters
    ----------
    data_root : Path or None
        Unused (no input files); accepted so every dataset has the same constructor.
    cache_dir : Path or None
        Root under which the images are written (``<cache_dir>/synthetic/<key>/images``);
        ``None`` → :func:`eegbench.datasets.default_cache_dir`.
    **options
        Fields of :class:`SyntheticOptions` (``n_subjects=3, n_recordings=3, n_trials=16,
        n_chans=4, n_times=64, sfreq=128.0, n_classes=2, images_per_class=4, image_size=64, seed=0``, ...).

    Raises
    ------
    ConfigError
        On an unknown or invalid option.
    """

    name: ClassVar[str] = "synthetic"

    def __init__(self, data_root: Path | str | None = None, cache_dir: Path | str | None = None,
                 **options: Any) -> None:
        self.options = SyntheticOptions.from_kwargs(**options)
        self.cache_root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / self.name

    def required_files(self) -> list[Path]:
        """No input files are needed: returns ``[]``."""
        return []

    @property
    def class_names(self) -> tuple[str, ...]:
        """``c<k>-<shape>`` per class."""
        return tuple(f"c{k}-{_SHAPES[k % len(_SHAPES)]}" for k in range(self.options.n_classes))

    def class_freqs(self) -> np.ndarray:
        """Carrier frequency per class, Hz, float64 array of shape ``(n_classes,)``."""
        o = self.options
        return o.base_freq + o.freq_step * np.arange(o.n_classes)

    def load(self) -> EEGDataset:
        """Generate the dataset (deterministic for the options and seed).

        Returns
        -------
        EEGDataset
            ``eeg`` float32 ``(n_subjects * n_recordings * n_trials, n_chans, n_times)`` in V (~1e-5);
            ``trial_id`` = ``s<SS>/r<RR>/t<TTTT>``; ``recording`` = ``subject<S>/rec<R>``;
            ``session`` = recording index; ``image_id`` = ``c<k>/img<NN>``.

        Raises
        ------
        OSError
            If the images cannot be written under the cache directory.
        """
        o = self.options
        rng = np.random.default_rng(o.seed)
        stimuli, per_class = self._images(np.random.default_rng([o.seed, 1]))
        t = np.arange(o.n_times) / o.sfreq
        window = np.hanning(o.n_times + 2)[1:-1]
        freqs = self.class_freqs()
        class_phase = rng.uniform(0, 2 * np.pi, o.n_classes)
        chan_phase = rng.uniform(-np.pi / 4, np.pi / 4, o.n_chans)
        templates = np.stack([  # (n_classes, n_chans, n_times), µV
            o.signal_uv * window * np.sin(2 * np.pi * f * t[None, :] + p + chan_phase[:, None])
            for f, p in zip(freqs, class_phase)
        ])
        eeg, rows = [], []
        for s in range(1, o.n_subjects + 1):
            gain = rng.uniform(0.7, 1.3, o.n_chans)[:, None]
            for r in range(1, o.n_recordings + 1):
                labels = rng.permutation(np.arange(o.n_trials) % o.n_classes)
                noise = rng.normal(0.0, o.noise_uv, (o.n_trials, o.n_chans, o.n_times))
                drift = np.cumsum(rng.normal(0.0, o.noise_uv / np.sqrt(o.n_times), noise.shape), axis=-1)
                background = noise + drift - drift.mean(axis=-1, keepdims=True)
                eeg.append((gain * templates[labels] + background) * 1e-6)
                for i, lab in enumerate(labels):
                    tid = f"s{s:02d}/r{r:02d}/t{i:04d}"
                    choice = per_class[int(lab)][int(rng.integers(len(per_class[int(lab)])))]
                    rows.append((tid, int(lab), s, r, f"subject{s}/rec{r}", choice))
        trials = pd.DataFrame(rows, columns=["trial_id", "label", "subject", "session", "recording", "image_id"])
        trials = trials.astype({"label": np.int64, "subject": np.int64, "session": np.int64})
        info = DatasetInfo(
            name=self.name, version=SYNTHETIC_VERSION, n_chans=o.n_chans, n_times=o.n_times,
            sfreq=float(o.sfreq), ch_names=tuple(f"ch{c:02d}" for c in range(o.n_chans)), unit="V",
            class_names=self.class_names, tmin=0.0, image_size=o.image_size,
            citation="Synthetic data generated by eegbench (eegbench.datasets.synthetic).",
            licence="generated data: CC0-1.0",
            subjects=tuple(sorted(int(s) for s in trials["subject"].unique())),
        )
        return EEGDataset(info=info, eeg=np.concatenate(eeg).astype(np.float32), trials=trials, stimuli=stimuli)

    def _images(self, rng: np.random.Generator) -> tuple[StimulusSet, list[list[str]]]:
        """Write (once) and index the stimulus PNGs."""
        from PIL import Image, ImageDraw

        o = self.options
        folder = self.cache_root / o.key() / "images"
        folder.mkdir(parents=True, exist_ok=True)
        paths, labels, per_class = {}, {}, []
        size = o.image_size
        for k in range(o.n_classes):
            colour = tuple(int(255 * v) for v in colorsys.hsv_to_rgb(k / o.n_classes, 0.85, 0.9))
            shape = _SHAPES[k % len(_SHAPES)]
            ids = []
            for i in range(o.images_per_class):
                image_id = f"c{k}/img{i:02d}"
                # drawn parameters are consumed even when the file exists, so outputs do not depend on the cache
                grey = int(rng.integers(200, 246))
                radius = float(rng.uniform(0.18, 0.32)) * size
                cx, cy = (float(v) for v in rng.uniform(radius, size - radius, 2))
                path = folder / f"c{k}_img{i:02d}.png"
                if not path.is_file():
                    im = Image.new("RGB", (size, size), (grey, grey, grey))
                    _draw_shape(ImageDraw.Draw(im), shape, cx, cy, radius, colour)
                    _atomic_save(im, path)
                paths[image_id] = path
                labels[image_id] = k
                ids.append(image_id)
            per_class.append(ids)
        return StimulusSet(paths=paths, labels=labels), per_class


def _draw_shape(draw, shape: str, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle((cx - 0.8 * r, cy - 0.8 * r, cx + 0.8 * r, cy + 0.8 * r), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + 0.87 * r, cy + 0.5 * r), (cx - 0.87 * r, cy + 0.5 * r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    elif shape == "cross":
        w = 0.3 * r
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    else:  # ring
        draw.ellipse(box, outline=colour, width=max(2, int(0.3 * r)))


def _atomic_save(image, path: Path) -> None:
    atomic_write(path, lambda f: image.save(f, format="PNG"))
