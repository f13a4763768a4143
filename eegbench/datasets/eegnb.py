"""EEG Notebooks visual-paradigm recordings (Muse headset), starting with ``eegnb-n170``.

Data: the raw Muse CSV recordings shipped with NeuroTechX *eeg-notebooks* v0.1
(https://github.com/NeuroTechX/eeg-notebooks_v0.1 @ 5ee39e4f, BSD-3-Clause), laid out as::

    <data_root>/eeg-notebooks/data/visual/<paradigm>/subject<S>/session<K>/<name>.csv[.csv]

with columns ``timestamps,TP9,AF7,AF8,TP10,Right AUX,<marker>``. The four EEG channels are in µV at
256 Hz; ``Right AUX`` is an auxiliary input (not EEG) and is ignored. The marker column holds a
non-zero code on the sample where a stimulus appeared and 0 elsewhere.

Preprocessing (MNE, https://mne.tools): µV → V, :class:`mne.io.RawArray` with ``ch_types="eeg"``,
zero-phase FIR band-pass ``l_freq``–``h_freq`` Hz with MNE's default design (``raw.filter``),
events from the marker onsets, :class:`mne.Epochs` on a fixed sample grid (``tmin_samples`` samples
relative to onset, ``n_times`` samples long, so every trial has exactly ``n_times`` samples),
baseline-corrected on the pre-stimulus interval ``(None, 0)``, no rejection. Epochs whose window
falls off either end of a recording are dropped by MNE and counted nowhere else.

The recordings log the *class* of each event, not which photo was shown; every trial is mapped to
one photo of its class by hashing its ``trial_id``: ``photos[int(sha256(trial_id), 16) % len(photos)]``
over that class's photos sorted by ``image_id``. The mapping is deterministic and independent of
the order of loading, but it is a convention: image-level metrics on these datasets compare against
*a* stimulus of the right class, not necessarily the one that was on screen.

Byte-identical recordings (in the shipped data ``subject3/session1`` and ``subject3/session2``
hold one same file) are detected by the sha256 of the file bytes and counted once: the first in
natural path order (subject, session, file name) is kept, the others are logged and dropped.

Epoched arrays are cached under ``<cache_dir>/<name>/``: ``eeg-<key>.npz`` (float32 EEG),
``trials-<key>.csv`` (the trial table without ``image_id``) and ``manifest.json`` (loader version,
preprocessing parameters, sha256 of every source file, dropped duplicates). The key is a sha256 of
the version, the parameters and the source hashes, so a changed, added or removed CSV invalidates
the cache. Every file is written to a temporary name and moved into place with :func:`os.replace`;
the manifest is written last, so a reader never sees a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from eegbench.files import atomic_write
from eegbench.data import TRIAL_COLUMNS, DatasetInfo, EEGDataset, StimulusSet
from eegbench.datasets import default_cache_dir, default_data_root
from eegbench.errors import ConfigError, DataFormatError, DataNotFoundError

logger = logging.getLogger(__name__)

#: Version of the preprocessing output of :class:`EEGNotebooksVisual`; part of every cache key.
LOADER_VERSION = "eegnb-visual-1"

_MICROVOLT = 1e-6
_SUBJECT_RE = re.compile(r"^subject(\d+)$")
_SESSION_RE = re.compile(r"^session(\d+)$")
#: Cached table columns (``image_id`` is derived at load time from ``trial_id``).
_CACHED_COLUMNS = ("trial_id", "label", "subject", "session", "recording")
_HINT = (
    "set --data-root or EEGBENCH_DATA to the folder that contains eeg-notebooks/ "
    "(e.g. ../shared/data beside the checkout)"
)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex string)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _show(value: Any) -> str:
    """A CSV cell for an error message: numbers as written (``nan``, ``-inf``), anything else quoted."""
    return str(value) if isinstance(value, (float, np.floating, int, np.integer)) else repr(value)


def _recording_stem(name: str) -> str:
    """File name without its (possibly doubled) ``.csv`` suffixes: ``a.csv.csv`` → ``a``."""
    while name.lower().endswith(".csv"):
        name = name[:-4]
    return name


class EEGNotebooksVisual:
    """Base loader for the eeg-notebooks visual paradigms (Muse, 4 channels, 256 Hz).

    A paradigm is a subclass that sets the class attributes below; e.g. the P300 cats/dogs data
    is ``paradigm = "P300"``, ``marker_columns = ("Marker", "Marker0")``,
    ``marker_classes = {1: "dog", 2: "cat"}`` and ``stimuli = {"dog": (<cats_dogs folder>,
    "nontarget-*.jpg"), "cat": (<cats_dogs folder>, "target-*.jpg")}``.

    Parameters
    ----------
    data_root : Path or None
        Folder that contains ``eeg-notebooks/``; ``None`` → :func:`eegbench.datasets.default_data_root`
        (``$EEGBENCH_DATA``, else ``../shared/data`` beside the checkout).
    cache_dir : Path or None
        Root of the preprocessing cache; the dataset uses ``<cache_dir>/<name>/``. ``None`` →
        :func:`eegbench.datasets.default_cache_dir` (``$EEGBENCH_CACHE``, else ``~/.cache/eegbench``).
    **options
        None are accepted (the loader signature is shared by all datasets).

    Raises
    ------
    ConfigError
        If any option is given.

    Attributes
    ----------
    recordings : list of Path
        After :meth:`load`: the unique recording CSVs, in natural order (some may yield no epochs).
    duplicates : list of (Path, Path)
        After :meth:`load`: ``(dropped, kept)`` pairs of byte-identical recordings.
    cache_hit : bool or None
        After :meth:`load`: whether the epochs came from the cache.
    """

    #: Registered dataset name.
    name: ClassVar[str] = ""
    #: Folder under ``eeg-notebooks/data/visual/``.
    paradigm: ClassVar[str] = ""
    #: Accepted names of the marker column, first match wins.
    marker_columns: ClassVar[tuple[str, ...]] = ("Marker0", "Marker")
    #: Marker code → class name; ``label`` is the rank of the code (so ``class_names`` follow code order).
    marker_classes: ClassVar[Mapping[int, str]] = {}
    #: Class name → (folder relative to ``eeg-notebooks/``, glob pattern of its stimulus photos).
    stimuli: ClassVar[Mapping[str, tuple[str, str]]] = {}
    #: EEG channels (Muse 2016 montage); other columns are ignored.
    ch_names: ClassVar[tuple[str, ...]] = ("TP9", "AF7", "AF8", "TP10")
    #: Sampling frequency of the Muse headset, Hz.
    sfreq: ClassVar[float] = 256.0
    #: Band-pass edges in Hz (MNE FIR defaults: zero-phase, Hamming window, automatic length).
    l_freq: ClassVar[float] = 1.0
    h_freq: ClassVar[float] = 30.0
    #: Epoch start relative to stimulus onset, in samples (-26 / 256 Hz = -0.1016 s).
    tmin_samples: ClassVar[int] = -26
    #: Samples per epoch (180 / 256 Hz = 0.703 s: -0.1016 s … +0.5977 s inclusive).
    n_times: ClassVar[int] = 180
    #: Edge length of the stimuli as served (photos are resized from their native size).
    image_size: ClassVar[int] = 256
    citation: ClassVar[str] = ""
    licence: ClassVar[str] = ""

    def __init__(self, data_root: Path | str | None = None, cache_dir: Path | str | None = None,
                 **options: Any) -> None:
        if options:
            raise ConfigError(f"dataset {self.name!r} takes no options (got {sorted(options)})")
        self.data_root = Path(data_root) if data_root is not None else default_data_root()
        self.cache_root = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / self.name
        self.recordings: list[Path] = []
        self.duplicates: list[tuple[Path, Path]] = []
        self.cache_hit: bool | None = None

    # ------------------------------------------------------------------ layout
    @property
    def tmin(self) -> float:
        """Epoch start relative to stimulus onset, s."""
        return self.tmin_samples / self.sfreq

    @property
    def tmax(self) -> float:
        """Epoch end (inclusive) relative to stimulus onset, s."""
        return (self.tmin_samples + self.n_times - 1) / self.sfreq

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names in label order (ascending marker code)."""
        return tuple(self.marker_classes[m] for m in sorted(self.marker_classes))

    @property
    def recordings_dir(self) -> Path:
        """``<data_root>/eeg-notebooks/data/visual/<paradigm>``."""
        return self.data_root / "eeg-notebooks" / "data" / "visual" / self.paradigm

    def stimulus_dirs(self) -> dict[str, Path]:
        """Stimulus folder per class name."""
        return {c: self.data_root / "eeg-notebooks" / folder for c, (folder, _) in self.stimuli.items()}

    def required_files(self) -> list[Path]:
        """The recording glob and the stimulus folders this dataset needs (for error messages).

        Returns
        -------
        list of Path
            ``<recordings_dir>/subject*/session*/*.csv`` followed by one folder per class.
        """
        dirs = list(dict.fromkeys(self.stimulus_dirs().values()))
        return [self.recordings_dir / "subject*" / "session*" / "*.csv", *dirs]

    def _find_recordings(self) -> list[Path]:
        """Recording CSVs in natural order (subject, session, name); raises if anything is missing."""
        missing: list[Path] = []
        if not self.data_root.is_dir():
            missing = [self.data_root]
        else:
            if not self.recordings_dir.is_dir():
                missing.append(self.recordings_dir)
            missing += [d for d in dict.fromkeys(self.stimulus_dirs().values()) if not d.is_dir()]
        files: list[Path] = []
        if not missing:
            files = [p for p in self.recordings_dir.glob("subject*/session*/*.csv") if p.is_file()]
            if not files:
                missing.append(self.required_files()[0])
        if missing:
            raise DataNotFoundError(
                f"dataset {self.name!r}: missing {', '.join(str(p) for p in missing)}; {_HINT}"
            )
        return sorted(files, key=self._natural_key)

    def _natural_key(self, path: Path) -> tuple[int, int, str]:
        subject, session = self._subject_session(path)
        return subject, session, path.name

    def _subject_session(self, path: Path) -> tuple[int, int]:
        ms = _SUBJECT_RE.match(path.parent.parent.name)
        mk = _SESSION_RE.match(path.parent.name)
        if not (ms and mk):
            raise DataFormatError(
                f"{path}: expected the folder layout subject<N>/session<K>/<file>.csv"
            )
        return int(ms.group(1)), int(mk.group(1))

    def _stimulus_set(self) -> tuple[StimulusSet, dict[str, list[str]]]:
        """Stimulus photos; returns the set and the sorted image ids per class name."""
        paths: dict[str, Path] = {}
        labels: dict[str, int] = {}
        per_class: dict[str, list[str]] = {}
        for label, cls in enumerate(self.class_names):
            folder, pattern = self.stimuli[cls]
            directory = self.data_root / "eeg-notebooks" / folder
            found = sorted(p for p in directory.glob(pattern) if p.is_file())
            if not found:
                raise DataNotFoundError(
                    f"dataset {self.name!r}: no stimulus images {directory / pattern} for class {cls!r}; {_HINT}"
                )
            ids = []
            for p in found:
                image_id = f"{cls}/{p.stem}"
                paths[image_id] = p
                labels[image_id] = label
                ids.append(image_id)
            per_class[cls] = sorted(ids)
        return StimulusSet(paths=paths, labels=labels), per_class

    # ------------------------------------------------------------------ parsing
    def read_recording(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Read one recording CSV.

        Parameters
        ----------
        path : Path
            A Muse CSV with the columns :attr:`ch_names` and one of :attr:`marker_columns`.

        Returns
        -------
        eeg : numpy.ndarray, shape (n_chans, n_samples), dtype float64
            EEG in V (the file holds µV).
        markers : numpy.ndarray, shape (n_samples,), dtype int64
            Marker code per sample (0 = no event).

        Raises
        ------
        DataFormatError
            If the file is empty or unparsable, lacks a channel or the marker column, has no rows,
            or holds a non-numeric, missing or non-finite value (or a non-integer marker).
        """
        try:
            frame = pd.read_csv(path, low_memory=False)
        except pd.errors.EmptyDataError:
            raise DataFormatError(f"{path}: empty file, expected a Muse CSV with a header row") from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
            raise DataFormatError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        marker_col = next((c for c in self.marker_columns if c in frame.columns), None)
        missing = [c for c in self.ch_names if c not in frame.columns]
        if marker_col is None:
            missing.append(" or ".join(self.marker_columns))
        if missing:
            raise DataFormatError(
                f"{path}: missing column(s) {missing} (has {list(frame.columns)})"
            )
        if len(frame) == 0:
            raise DataFormatError(f"{path}: header only, no samples")
        columns = [*self.ch_names, marker_col]
        values = np.empty((len(frame), len(columns)), dtype=np.float64)
        for j, col in enumerate(columns):
            raw = frame[col]
            num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isfinite(num)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise DataFormatError(
                    f"{path}: column {col!r} line {row + 2}: value {_show(raw.iloc[row])} is not a finite number"
                )
            values[:, j] = num
        markers = values[:, -1]
        if not np.array_equal(markers, np.round(markers)):
            row = int(np.flatnonzero(markers != np.round(markers))[0])
            raise DataFormatError(f"{path}: column {marker_col!r} line {row + 2}: marker is not an integer")
        return values[:, :-1].T * _MICROVOLT, markers.astype(np.int64)

    def events_from_markers(self, markers: np.ndarray) -> np.ndarray:
        """MNE events array from a marker column.

        An event starts on every sample whose code is non-zero and differs from the previous
        sample's; codes not in :attr:`marker_classes` are ignored (and logged).

        Parameters
        ----------
        markers : numpy.ndarray, shape (n_samples,), dtype int64

        Returns
        -------
        events : numpy.ndarray, shape (n_events, 3), dtype int64
            ``[sample, 0, code]`` rows, as :func:`mne.find_events` returns.
        """
        prev = np.concatenate([[0], markers[:-1]])
        onsets = np.flatnonzero((markers != 0) & (markers != prev))
        codes = markers[onsets]
        known = np.isin(codes, list(self.marker_classes))
        if not known.all():
            logger.warning("%s: ignoring %d events with unknown marker codes %s",
                           self.name, int((~known).sum()), sorted(set(codes[~known].tolist())))
        onsets, codes = onsets[known], codes[known]
        return np.column_stack([onsets, np.zeros_like(onsets), codes]).astype(np.int64)

    def epoch_recording(self, eeg: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Band-pass and epoch one recording with MNE.

        Parameters
        ----------
        eeg : numpy.ndarray, shape (n_chans, n_samples), dtype float64
            Continuous EEG in V.
        events : numpy.ndarray, shape (n_events, 3), dtype int64
            From :meth:`events_from_markers`.

        Returns
        -------
        epochs : numpy.ndarray, shape (n_kept, n_chans, n_times), dtype float32
            Baseline-corrected epochs in V.
        kept : numpy.ndarray, shape (n_kept,), dtype int64
            Row of ``events`` of each kept epoch (epochs running off the recording are dropped).
        """
        import mne

        empty = np.zeros((0, len(self.ch_names), self.n_times), np.float32), np.zeros(0, np.int64)
        if len(events) == 0:
            return empty
        info = mne.create_info(list(self.ch_names), self.sfreq, ch_types="eeg", verbose="error")
        raw = mne.io.RawArray(eeg, info, verbose="error")
        raw.filter(self.l_freq, self.h_freq, verbose="error")
        present = {self.marker_classes[c]: int(c) for c in sorted(set(events[:, 2].tolist()))}
        epochs = mne.Epochs(
            raw, events, event_id=present, tmin=self.tmin, tmax=self.tmax, baseline=(None, 0),
            preload=True, reject=None, flat=None, detrend=None, on_missing="ignore", verbose="error",
        )
        if len(epochs) == 0:
            return empty
        data = epochs.get_data(copy=False)
        if data.shape[-1] != self.n_times:  # guards the sample-grid arithmetic above
            raise RuntimeError(f"MNE returned {data.shape[-1]} samples per epoch, expected {self.n_times}")
        return data.astype(np.float32), np.asarray(epochs.selection, dtype=np.int64)

    # ------------------------------------------------------------------ cache
    def _params(self) -> dict[str, Any]:
        return {
            "paradigm": self.paradigm,
            "ch_names": list(self.ch_names),
            "sfreq": self.sfreq,
            "marker_classes": {str(k): v for k, v in sorted(self.marker_classes.items())},
            "l_freq": self.l_freq,
            "h_freq": self.h_freq,
            "tmin_samples": self.tmin_samples,
            "n_times": self.n_times,
        }

    def _cache_key(self, sources: Mapping[str, str]) -> str:
        payload = {"version": LOADER_VERSION, "params": self._params(), "sources": dict(sorted(sources.items()))}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def _read_cache(self, key: str) -> tuple[np.ndarray, pd.DataFrame] | None:
        manifest_path = self.cache_root / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("key") != key:
                return None
            with np.load(self.cache_root / manifest["eeg_file"], allow_pickle=False) as npz:
                if str(npz["key"]) != key:
                    return None
                eeg = npz["eeg"]
            table = pd.read_csv(self.cache_root / manifest["trials_file"],
                                dtype={"trial_id": str, "recording": str}, keep_default_na=False)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, pd.errors.ParserError,
                pd.errors.EmptyDataError) as exc:
            if manifest_path.exists():
                logger.warning("%s: ignoring unreadable cache in %s (%s)", self.name, self.cache_root, exc)
            return None
        if len(table) != len(eeg) or list(table.columns) != list(_CACHED_COLUMNS):
            logger.warning("%s: ignoring inconsistent cache in %s", self.name, self.cache_root)
            return None
        return eeg, _normalise_table(table)

    def _write_cache(self, key: str, sources: Mapping[str, str], eeg: np.ndarray, table: pd.DataFrame) -> None:
        root = self.cache_root
        eeg_file, trials_file = f"eeg-{key[:16]}.npz", f"trials-{key[:16]}.csv"
        atomic_write(root / eeg_file, lambda f: np.savez(f, eeg=eeg, key=np.array(key)))
        atomic_write(root / trials_file,
                      lambda f: f.write(table[list(_CACHED_COLUMNS)].to_csv(index=False).encode()))
        manifest = {
            "key": key,
            "dataset": self.name,
            "version": LOADER_VERSION,
            "params": self._params(),
            "sources": dict(sorted(sources.items())),
            "dropped_duplicates": {str(d.relative_to(self.recordings_dir)): str(k.relative_to(self.recordings_dir))
                                   for d, k in self.duplicates},
            "n_trials": int(len(eeg)),
            "eeg_file": eeg_file,
            "trials_file": trials_file,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write(root / "manifest.json", lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        for old in [*root.glob("eeg-*.npz"), *root.glob("trials-*.csv")]:
            if old.name not in (eeg_file, trials_file):
                old.unlink(missing_ok=True)

    # ------------------------------------------------------------------ load
    def _epoch_all(self, files: list[Path]) -> tuple[np.ndarray, pd.DataFrame]:
        from tqdm.auto import tqdm

        chunks, rows = [], []
        for path in tqdm(files, desc=f"{self.name}: epoching", unit="file", leave=False, disable=None):
            subject, session = self._subject_session(path)
            rel = path.relative_to(self.recordings_dir).as_posix()
            eeg, markers = self.read_recording(path)
            events = self.events_from_markers(markers)
            data, kept = self.epoch_recording(eeg, events)
            labels = {code: i for i, code in enumerate(sorted(self.marker_classes))}
            stem = _recording_stem(path.name)
            for k in kept:
                rows.append({
                    "trial_id": f"s{subject:02d}/ses{session}/{stem}/e{int(k):04d}",
                    "label": labels[int(events[k, 2])],
                    "subject": subject,
                    "session": session,
                    "recording": rel,
                })
            chunks.append(data)
            logger.info("%s: %s: %d events, %d epochs", self.name, rel, len(events), len(kept))
        eeg = np.concatenate(chunks) if chunks else np.zeros((0, len(self.ch_names), self.n_times), np.float32)
        table = pd.DataFrame(rows, columns=list(_CACHED_COLUMNS))
        return eeg, _normalise_table(table)

    def load(self) -> EEGDataset:
        """Load (from the cache when valid) the epoched dataset.

        Returns
        -------
        EEGDataset
            ``eeg`` float32 ``(n_trials, 4, n_times)`` in V, trials in natural recording order then
            onset order; ``trial_id`` = ``s<SS>/ses<K>/<file stem>/e<event index in file>``;
            ``recording`` = CSV path relative to :attr:`recordings_dir`.

        Raises
        ------
        DataNotFoundError
            If the data root, the recordings or the stimulus folders are missing.
        DataFormatError
            If a CSV is empty, unparsable, lacks a required column or holds a non-numeric value,
            or the folders do not follow ``subject<N>/session<K>``.
        """
        files = self._find_recordings()
        stimuli, photos = self._stimulus_set()
        sources: dict[str, str] = {}
        first_of: dict[str, Path] = {}
        unique: list[Path] = []
        self.duplicates = []
        for path in files:
            digest = sha256_file(path)
            if digest in first_of:
                self.duplicates.append((path, first_of[digest]))
                logger.info("%s: dropping %s, byte-identical to %s", self.name, path, first_of[digest])
                continue
            first_of[digest] = path
            unique.append(path)
            sources[path.relative_to(self.recordings_dir).as_posix()] = digest
        self.recordings = unique
        key = self._cache_key(sources)
        cached = self._read_cache(key)
        self.cache_hit = cached is not None
        if cached is not None:
            eeg, table = cached
            logger.info("%s: loaded %d trials from cache %s", self.name, len(eeg), self.cache_root)
        else:
            eeg, table = self._epoch_all(unique)
            try:
                self._write_cache(key, sources, eeg, table)
            except OSError as exc:  # a read-only cache must not stop a run
                logger.warning("%s: could not write cache in %s (%s)", self.name, self.cache_root, exc)
        names = self.class_names
        table["image_id"] = [self._image_for(t, names[lab], photos)
                             for t, lab in zip(table["trial_id"], table["label"])]
        info = DatasetInfo(
            name=self.name, version=LOADER_VERSION, n_chans=len(self.ch_names), n_times=self.n_times,
            sfreq=float(self.sfreq), ch_names=tuple(self.ch_names), unit="V", class_names=self.class_names,
            tmin=self.tmin, image_size=self.image_size, citation=self.citation, licence=self.licence,
            subjects=tuple(sorted(int(s) for s in table["subject"].unique())),
        )
        return EEGDataset(info=info, eeg=eeg, trials=table[list(TRIAL_COLUMNS)], stimuli=stimuli)

    def verify(self) -> list[str]:
        """Check the files: presence, sha256 against the cache manifest (if any), parsing and shapes.

        Returns
        -------
        list of str
            One line per check that passed.

        Raises
        ------
        DataNotFoundError, DataFormatError
            On the first failed check. A recording whose sha256 differs from the one the cache
            manifest recorded is not an error (the cache is rebuilt); it is reported as changed.
        """
        files = self._find_recordings()
        recorded: dict[str, str] = {}
        try:
            recorded = json.loads((self.cache_root / "manifest.json").read_text()).get("sources", {})
        except (OSError, ValueError):
            pass
        digests = {p.relative_to(self.recordings_dir).as_posix(): sha256_file(p) for p in files}
        same = sum(1 for k, d in digests.items() if recorded.get(k) == d)
        changed = sorted(k for k, d in digests.items() if k in recorded and recorded[k] != d)
        lines = [f"{len(files)} recording CSVs under {self.recordings_dir}; sha256 of {same} match the cache "
                 f"manifest, {len(changed)} changed{' (' + ', '.join(changed[:3]) + ')' if changed else ''}, "
                 f"{len(digests) - same - len(changed)} not recorded yet"]
        ds = self.load()
        lines.append(f"{len(ds)} trials, eeg {tuple(ds.eeg.shape)} {ds.eeg.dtype} in {ds.info.unit}, "
                     f"{len(self.recordings)} unique recordings, {len(self.duplicates)} byte-identical duplicate(s) "
                     "counted once")
        for image_id in ds.stimuli.image_ids:
            ds.stimuli.load(image_id, 32)
        lines.append(f"{len(ds.stimuli)} stimulus images decode")
        return lines

    @staticmethod
    def _image_for(trial_id: str, cls: str, photos: Mapping[str, list[str]]) -> str:
        """The photo of ``cls`` assigned to ``trial_id`` (sha256 of the id into the sorted photo list)."""
        options = photos[cls]
        return options[int(hashlib.sha256(trial_id.encode()).hexdigest(), 16) % len(options)]


def _normalise_table(table: pd.DataFrame) -> pd.DataFrame:
    """Fixed dtypes so a fresh and a cached table compare equal."""
    out = pd.DataFrame({
        "trial_id": table["trial_id"].astype(str),
        "label": table["label"].astype(np.int64),
        "subject": table["subject"].astype(np.int64),
        "session": table["session"].astype(np.int64),
        "recording": table["recording"].astype(str),
    })
    return out.reset_index(drop=True)


class EEGNotebooksN170(EEGNotebooksVisual):
    """``eegnb-n170``: faces vs houses (N170 paradigm), Muse TP9/AF7/AF8/TP10, 256 Hz.

    Classes ``("house", "face")``: marker 1 = house (label 0), marker 2 = face (label 1). Epochs
    −0.1016 … +0.5977 s (180 samples), band-pass 1–30 Hz, in V. Stimuli: the 48 face and 48 house
    greyscale photos (400 × 400, served at 256 × 256 RGB) of Haxby et al. (2001).

    Shipped data (eeg-notebooks v0.1): 19 CSVs from subjects 1, 2, 3, 10 and 11; one is a
    byte-identical copy (dropped), and three subject-10 runs hold a single marker on their first
    sample, which no epoch window fits, so they contribute no trials.

    Parameters
    ----------
    data_root : Path or None
        Folder that contains ``eeg-notebooks/`` (``--data-root`` / ``$EEGBENCH_DATA``).
    cache_dir : Path or None
        Root of the preprocessing cache.

    Raises
    ------
    DataNotFoundError, DataFormatError
        From :meth:`load`, see there.
    """

    name = "eegnb-n170"
    paradigm = "N170"
    marker_columns = ("Marker0",)
    marker_classes = {1: "house", 2: "face"}
    stimuli = {
        "house": ("notebooks/stimulus_presentation/stim/face_house/houses", "*.jpg"),
        "face": ("notebooks/stimulus_presentation/stim/face_house/faces", "*.jpg"),
    }
    citation = (
        "EEG: NeuroTechX eeg-notebooks v0.1, N170 faces/houses Muse recordings, "
        "https://github.com/NeuroTechX/eeg-notebooks_v0.1 (commit 5ee39e4). Stimuli: Haxby, J. V., "
        "Gobbini, M. I., Furey, M. L., Ishai, A., Schouten, J. L., & Pietrini, P. (2001). Distributed and "
        "overlapping representations of faces and objects in ventral temporal cortex. Science, 293, 2425-2430."
    )
    licence = "EEG: BSD-3-Clause; stimuli: CC BY-SA 3.0"


class EEGNotebooksP300(EEGNotebooksVisual):
    """``eegnb-p300``: cats vs dogs visual oddball (P300 paradigm), Muse TP9/AF7/AF8/TP10, 256 Hz.

    Classes ``("dog", "cat")``: marker 1 = dog, non-target (label 0); marker 2 = cat, target
    (label 1). The marker column is ``Marker`` in the 2017 runs (subject 1, subject 2 session 1)
    and ``Marker0`` in the 2018 runs (checked on the shipped files: 21 and 24 of the 45 CSVs);
    both hold the same codes, so either is accepted. The classes are
    unbalanced by design (targets are the rare oddball, about 1 in 6). Same MNE pipeline as
    ``eegnb-n170`` (band-pass 1–30 Hz, −0.1016 … +0.5977 s, 180 samples, in V). Stimuli: the
    4 cat (``target-*.jpg``) and 4 dog (``nontarget-*.jpg``) photos (640 px, CC0), served at
    256 × 256 RGB.

    Parameters
    ----------
    data_root : Path or None
        Folder that contains ``eeg-notebooks/`` (``--data-root`` / ``$EEGBENCH_DATA``).
    cache_dir : Path or None
        Root of the preprocessing cache.

    Raises
    ------
    DataNotFoundError, DataFormatError
        From :meth:`load`, see there.
    """

    name = "eegnb-p300"
    paradigm = "P300"
    marker_columns = ("Marker", "Marker0")
    marker_classes = {1: "dog", 2: "cat"}
    stimuli = {
        "dog": ("notebooks/stimulus_presentation/stim/cats_dogs", "nontarget-*.jpg"),
        "cat": ("notebooks/stimulus_presentation/stim/cats_dogs", "target-*.jpg"),
    }
    citation = (
        "EEG: NeuroTechX eeg-notebooks v0.1, P300 cats/dogs visual oddball Muse recordings, "
        "https://github.com/NeuroTechX/eeg-notebooks_v0.1 (commit 5ee39e4). Stimuli: the cats_dogs photos "
        "shipped with eeg-notebooks (CC0)."
    )
    licence = "EEG: BSD-3-Clause; stimuli: CC0"
