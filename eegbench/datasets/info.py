"""``eegbench data info`` and ``eegbench data verify``: what a dataset holds, and whether its files are sound.

Both work on any registered dataset loader (a class ``(data_root, cache_dir=..., **options)`` with
``load()``); a loader with a ``verify()`` method (the built-in ones) adds file-level checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from eegbench.data import EEGDataset
from eegbench.errors import ConfigError


def dataset_label(name: str, options: dict[str, Any] | None = None) -> str:
    """The name under which runs of dataset ``name`` loaded with ``options`` are grouped.

    Parameters
    ----------
    name : str
        Registered dataset name, e.g. ``"cvpr40"``.
    options : dict or None
        Loader options of the run (``eegbench run --dataset-option``).

    Returns
    -------
    str
        ``name`` when there are no options, else ``name[key=value,...]`` with sorted keys, e.g.
        ``cvpr40[eeg_file=eeg_14_70_std.pth]``. Runs whose labels differ read different data and
        never share a leaderboard.
    """
    if not options:
        return name
    return f"{name}[{','.join(f'{k}={v}' for k, v in sorted(options.items()))}]"


#: ``--dataset-option`` keys the harness reads itself (never passed to a loader).
HARNESS_OPTIONS = ("captions",)


def make_loader(name: str, data_root: Path | None = None, cache_dir: Path | None = None,
                options: dict[str, Any] | None = None, plugins=None):
    """Instantiate the registered dataset loader ``name``.

    Parameters
    ----------
    name : str
        Registered dataset name.
    data_root, cache_dir : Path or None
        As for ``eegbench run`` (``None`` → the defaults; the cache goes to ``<cache_dir>/datasets``
        like a run's).
    options : dict or None
        Loader options (e.g. ``{"eeg_file": "eeg_14_70_std.pth"}`` for ``cvpr40``).
    plugins : PluginManager or None
        Defaults to :func:`eegbench.plugins.get_plugin_manager`.

    Raises
    ------
    PluginError
        If ``name`` is not registered.
    ConfigError
        If the loader rejects an option.
    """
    from eegbench.datasets import default_cache_dir, default_data_root
    from eegbench.plugins import get_plugin_manager

    plugins = plugins or get_plugin_manager()
    cls = plugins.datasets.get(name)
    cache = Path(cache_dir or default_cache_dir()) / "datasets"
    # harness options (``captions=FILE``: per-image captions, read by the runner) are not the loader's
    options = {k: v for k, v in (options or {}).items() if k not in HARNESS_OPTIONS}
    try:
        return cls(Path(data_root or default_data_root()), cache_dir=cache, **options)
    except TypeError as exc:
        raise ConfigError(f"dataset {name!r}: bad option(s) {sorted(options or {})} ({exc})") from None


#: Datasets with more classes than this get a per-part class count instead of one row per class.
MAX_LISTED_CLASSES = 100


def _table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False)


def describe(dataset: EEGDataset, setting: str = "multi-subject", plugins=None) -> str:
    """Markdown summary: shape, units, licence, citation and trials per subject / class / split part.

    Parameters
    ----------
    dataset : EEGDataset
        A loaded dataset.
    setting : str
        Registered setting whose split is counted (``multi-subject``, which needs no subject).
    plugins : PluginManager or None
        Defaults to :func:`eegbench.plugins.get_plugin_manager`.

    Returns
    -------
    str
        Markdown text.
    """
    from eegbench.plugins import get_plugin_manager

    info = dataset.info
    plugins = plugins or get_plugin_manager()
    split = plugins.settings.get(setting)(dataset)
    part_of = {t: p for p in ("train", "val", "test") for t in getattr(split, p)}
    t = dataset.trials.assign(part=[part_of.get(x, "unused") for x in dataset.trials["trial_id"]])
    t["class"] = [info.class_names[i] for i in t["label"]]
    by_subject = pd.crosstab(t["subject"], t["part"]).reindex(columns=["train", "val", "test", "unused"],
                                                                fill_value=0)
    by_subject["total"] = by_subject.sum(axis=1)
    by_class = pd.crosstab(t["class"], t["part"]).reindex(index=list(dict.fromkeys(info.class_names)),
                                                          columns=["train", "val", "test", "unused"], fill_value=0)
    by_class["total"] = by_class.sum(axis=1)
    by_class = by_class.fillna(0).astype(int)
    lines = [
        f"# {info.name} (loader version {info.version})",
        "",
        f"- trials: {len(dataset)}; recordings: {t['recording'].nunique()}; stimulus images: {len(dataset.stimuli)}",
        (f"- eeg: float32 (n_trials, n_chans={info.n_chans}, n_times={info.n_times}), sfreq {info.sfreq:g} Hz, "
         f"epoch {info.tmin:+.4f} … {info.tmin + (info.n_times - 1) / info.sfreq:+.4f} s, unit {info.unit}"),
        f"- channels: {', '.join(info.ch_names) if info.n_chans <= 16 else ', '.join(info.ch_names[:4]) + ', …'}",
        (f"- classes ({info.n_classes}): {', '.join(info.class_names)}" if info.n_classes <= MAX_LISTED_CLASSES else
         f"- classes ({info.n_classes}): {', '.join(info.class_names[:10])}, … {info.class_names[-1]}"),
        *([f"- WNIDs: {', '.join(info.wnids)}"] if info.wnids else []),
        f"- subjects: {', '.join(map(str, info.subjects))}",
        f"- split ({setting}): {split.source}; sizes {split.sizes()}; sha256 {split.sha256}",
        f"- licence: {info.licence}",
        f"- citation: {info.citation}",
        *([f"- data card: {info.description}"] if getattr(info, "description", "") else []),
        "",
        "## Trials per subject and split part",
        "",
        _table(by_subject.reset_index()),
        "",
    ]
    if info.n_classes <= MAX_LISTED_CLASSES:
        lines += ["## Trials per class and split part", "", _table(by_class.rename_axis("class").reset_index())]
    else:  # thousands of concepts (things-eeg2): classes per part instead of one row per class
        present = by_class[["train", "val", "test"]] > 0
        unseen = int((present["test"] & ~present["train"]).sum())
        summary = pd.DataFrame({"part": ["train", "val", "test"],
                                "classes": [int(present[p].sum()) for p in ("train", "val", "test")],
                                "trials": [int(by_class[p].sum()) for p in ("train", "val", "test")]})
        lines += ["## Classes per split part", "", _table(summary), "",
                  f"{unseen} test class(es) have no training trial (zero-shot)."]
    return "\n".join(lines)


def verify(loader) -> list[str]:
    """Run the loader's file checks (``loader.verify()`` if it has one, else a full load).

    Returns
    -------
    list of str
        One line per passed check.

    Raises
    ------
    EegbenchError
        The first failed check (missing file, bad content, wrong shape).
    """
    if hasattr(loader, "verify"):
        return list(loader.verify())
    ds = loader.load()
    return [f"{len(ds)} trials, eeg {tuple(ds.eeg.shape)} {ds.eeg.dtype} in {ds.info.unit}"]
