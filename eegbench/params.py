"""Parameter counts of any registered method, built on the meta device (``eegbench params``).

A method is built at a profile without data, weights or a GPU: its backbones are the published
architectures (``paper``: :class:`eegbench.backbones.paper.PaperBackbones` of the method's
``paper_backbone``) or the small profile's architectures (``small``: :class:`SmallMetaBackbones`),
with every parameter on PyTorch's ``meta`` device, and the dataset is described by the facts of
the dataset the profile targets (``paper``: EEG-ImageNet "CVPR40", 128 channels × 440 samples at
1000 Hz, 40 classes, subjects 1–6; ``small``: eeg-notebooks N170, 4 channels × 180 samples at 256 Hz,
2 classes, subjects 1, 2, 3, 10, 11). The counts come from :func:`eegbench.method.count_parameters`,
the same function that fills every run result, so the convention is one for all methods:

* trainable parameters **per training stage and component** (what ``configure_stage(stage)``
  leaves with ``requires_grad``);
* ``trainable_total`` — the union over all stages (a parameter trained in two stages counts
  once);
* ``inference_total`` — every parameter of the components :meth:`Method.generate` uses, frozen
  backbones and the text encoder of prompts used at generation included (convention 2,
  :data:`eegbench.method.INFERENCE_CONVENTION`);
* ``total`` — every unique parameter of every component (frozen backbones included).

Beside them a report carries the figure SYNAPSE's README quotes for the method
(``CVMILab-CUK/synapse @225872a``, ``README.md``) with a one-line note on how it relates
(``research/methods.md`` §7), and — for a method that declares how the quoted figure was counted
(an optional classmethod ``quoted_convention()`` returning ``{"overrides": {...}, "description":
...}``) — the trainable total of the method rebuilt with those overrides.
"""

from __future__ import annotations


import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from eegbench.backbones.paper import SmallMetaBackbones  # noqa: F401  (public here too)
from eegbench.backbones.profiles import cvpr40_facts, n170_facts  # noqa: F401
from eegbench.errors import ConfigError, EegbenchError

__all__ = [
    "CONVENTION",
    "QUOTED",
    "QUOTED_SOURCE",
    "QuotedFigure",
    "SmallMetaBackbones",
    "build_on_meta",
    "dataset_facts",
    "format_reports",
    "parameter_report",
    "parameter_reports",
]

#: Profiles ``eegbench params`` can build.

#: The counting convention, one line (also in ``docs/parameters.md``).
CONVENTION = (
    "trainable = parameters with requires_grad in a training stage (per stage and component); "
    "trainable_total = union over all stages; inference_total = all parameters of the components "
    "generation uses, text encoders of prompts used at generation included; total = all unique parameters, "
    "frozen backbones included"
)

#: Where the quoted figures come from.
QUOTED_SOURCE = "CVMILab-CUK/synapse @225872a README.md"


@dataclass(frozen=True)
class QuotedFigure:
    """A parameter count quoted by SYNAPSE's README for a method.

    Parameters
    ----------
    value : int
        The figure as a number of parameters (152.69M → 152,690,000).
    text : str
        The figure as quoted (``"152.69M"``).
    note : str
        How the figure relates to the code-derived counts (``research/methods.md`` §7).
    """

    value: int
    text: str
    note: str


#: Figures quoted by SYNAPSE's README (:data:`QUOTED_SOURCE`), with notes from ``research/methods.md`` §7.
QUOTED: dict[str, QuotedFigure] = {
    "synapse": QuotedFigure(
        152_690_000, "152.69M",
        "exact under the README's convention: AE without global attention 44,633,648 + Stage-2 trainables "
        "108,052,608 = 152,686,256; 157,512,522 with the released global-attention AE",
    ),
    "dreamdiffusion": QuotedFigure(
        210_000_000, "210M",
        "plausible: MAE encoder + decoder 165,380,096 + SD-1.5 cross-attention, norm2 and time-conditioning "
        "44,974,843 = 210,354,939 (Stage B alone trains 198,464,841); unconfirmed",
    ),
    "brainvis": QuotedFigure(
        195_000_000, "195M",
        "not reproduced: the code's trainable sets give ≈417.5M (time encoder without momentum 153.3M + "
        "frequency encoder 0.2M + AlignNet 264.0M); the convention behind 195M was not found",
    ),
    "gwit": QuotedFigure(
        368_000_000, "368M",
        "not reproduced (−4 %): ControlNet from the SD2.1-base UNet + EEG conditioning embedding = "
        "382,739,968; the convention behind 368M was not found",
    ),
}

def dataset_facts(profile: str):
    """The :class:`~eegbench.data.DatasetInfo` a profile's methods are sized for, without any data.

    Parameters
    ----------
    profile : {"paper", "small"}
        ``paper``: EEG-ImageNet "CVPR40" (128 channels ``E001``–``E128``, 440 samples after the
        20–460 crop, 1000 Hz, 40 ImageNet classes, subjects 1–6, ``research/methods.md`` §1);
        ``small``: eeg-notebooks N170 (Muse TP9, AF7, AF8, TP10, 180 samples, 256 Hz, house/face,
        subjects 1, 2, 3, 10, 11).

    Returns
    -------
    eegbench.data.DatasetInfo

    Raises
    ------
    PluginError
        For an unknown profile.
    """
    from eegbench.backbones.profiles import get_profile

    return get_profile(profile).dataset_facts()


def _method_class(name: str, plugins=None):
    if plugins is None:
        from eegbench.plugins import get_plugin_manager

        plugins = get_plugin_manager()
    return plugins.methods.get(name)


def _backbones_for(method_cls, profile: str, *, weights_root=None, backbone_overrides=None, class_names=()):
    """Meta backbones of a registered profile (:meth:`~eegbench.backbones.profiles.BackboneProfile.meta_backbones`):
    at ``paper``, the local folders' architectures when every needed one is present under
    ``weights_root``, else the published configs embedded in :mod:`eegbench.backbones.paper`."""
    from eegbench.backbones.profiles import get_profile

    return get_profile(profile).meta_backbones(method_cls, weights_root=weights_root,
                                               backbone_overrides=backbone_overrides, class_names=class_names)


def build_on_meta(method_cls, profile: str = "paper", overrides: Mapping[str, Any] | None = None, *,
                  backbones=None, info=None):
    """Build a method at a profile with every parameter on the meta device.

    Parameters
    ----------
    method_cls : type
        A :class:`~eegbench.method.Method` subclass.
    profile : {"paper", "small"}
    overrides : mapping of str to str, optional
        ``--set`` style overrides of the profile's default config.
    backbones : optional
        Pre-built meta backbones (reused between builds); default: built for ``profile``.
    info : DatasetInfo, optional
        Default: :func:`dataset_facts` of ``profile``.

    Returns
    -------
    Method
        Its modules on ``meta``; countable, not runnable.

    Raises
    ------
    ConfigError
        For an unknown profile, a method without that profile, or a bad override.
    """
    from eegbench.method import apply_overrides

    from eegbench.backbones.profiles import get_profile

    get_profile(profile)  # an unknown profile fails here, with close matches
    config = method_cls.default_config(profile)
    if overrides:
        config = apply_overrides(config, {str(k): v for k, v in overrides.items()})
    if hasattr(config, "validate"):
        config.validate()
    backbones = backbones if backbones is not None else _backbones_for(method_cls, profile)
    info = info if info is not None else dataset_facts(profile)
    with torch.device("meta"):
        return method_cls(config, info=info, backbones=backbones, device=torch.device("meta"))


def static_training_memory_gib(counts: Mapping[str, Any], *, shared_frozen: int = 0, frozen_bytes: int = 2) -> float:
    """Lower bound of a method's GPU memory while training, from parameter counts alone (GiB).

    For each stage: its trainable parameters in fp32 with fp32 gradients and the two AdamW moment
    buffers (16 bytes each); the shared frozen backbones (``shared_frozen`` parameters: VAE,
    shared UNet, embedders listed as components) in the compute dtype (``frozen_bytes``, 2 for
    fp16 / bf16 under ``--mixed-precision``); every other parameter — the method's own modules
    and fine-tuned copies, frozen in that stage — in fp32 (4 bytes); the largest stage.
    Activations, EMA copies, encoders that are not components, the CUDA context and allocator
    fragmentation come on top (they depend on batch, resolution and gradient checkpointing).

    Parameters
    ----------
    counts : mapping
        :func:`eegbench.method.count_parameters` output (``per_stage``, ``total``).
    shared_frozen : int
        Parameters of the components that are shared frozen backbones.
    frozen_bytes : int
        Bytes per shared frozen parameter.

    Returns
    -------
    float
        GiB, rounded to 0.1.
    """
    total = int(counts["total"])
    stages = [int(row["total"]) for row in counts["per_stage"].values()] or [0]
    peak = max(n * 16 + shared_frozen * frozen_bytes + (total - n - shared_frozen) * 4 for n in stages)
    return round(peak / 2**30, 1)


def _shared_frozen_parameters(method, backbones, counts: Mapping[str, Any]) -> int:
    """Parameters of ``method``'s components that are the backbones' shared frozen modules."""
    shared = set()
    for role in ("vae", "image_embedder", "text_embedder"):
        try:
            shared.add(id(getattr(backbones, role)))
        except EegbenchError:  # a role the method does not declare
            pass
    shared.add(id(backbones.denoiser.unet))
    return sum(int(counts["per_component"][name]["total"]) for name, module in method.components().items()
               if id(module) in shared)


def parameter_report(name: str, *, profile: str = "paper", overrides: Mapping[str, str] | None = None,
                     plugins=None, method_cls=None, weights_root=None,
                     backbone_overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parameter counts of one registered method at a profile, built on the meta device.

    Parameters
    ----------
    name : str
        Registered method name.
    profile : {"paper", "small"}
    overrides : mapping of str to str, optional
        ``--set`` overrides.
    plugins : eegbench.plugins.PluginSet, optional
        Default: a fresh plugin manager.
    method_cls : type, optional
        Use this class instead of looking ``name`` up.
    weights_root : Path, optional
        ``paper``: count the architectures of the local weight folders (configs only, no weight
        is read) when every folder the method needs is present; otherwise, and by default when
        they are absent, the published configs.
    backbone_overrides : mapping of str to str, optional
        ``--backbone-set`` folder overrides (paper).

    Returns
    -------
    dict
        ``method``, ``profile``, ``backbone`` (paper base model or ``"small"``), ``dataset``,
        ``overrides``, ``per_stage`` ({stage: {component: n, "total": n}}), ``per_component``,
        ``trainable_total``, ``inference_total``, ``total`` (as
        :func:`eegbench.method.count_parameters`), ``quoted`` (``{"value", "text", "source",
        "note"}`` at the paper profile for a method SYNAPSE's README quotes, else None) and
        ``quoted_convention`` (``{"description", "overrides", "trainable_total"}`` when the method
        declares one, else None).

    Raises
    ------
    PluginError
        Unknown method (with close matches).
    ConfigError
        Unknown profile, no such profile for the method, or a bad override.
    """
    from eegbench.backbones.profiles import get_profile
    from eegbench.method import count_parameters

    method_cls = method_cls if method_cls is not None else _method_class(name, plugins)
    overrides = dict(overrides or {})
    info = dataset_facts(profile)
    backbones = _backbones_for(method_cls, profile, weights_root=weights_root,
                               backbone_overrides=backbone_overrides, class_names=info.class_names)
    method = build_on_meta(method_cls, profile, overrides, backbones=backbones, info=info)
    counts = count_parameters(method)
    report: dict[str, Any] = {
        "method": name,
        "profile": profile,
        "backbone": getattr(backbones, "base", None) or profile,
        "backbone_source": ("local folders" if hasattr(backbones, "folders") else
                            "published configs" if hasattr(backbones, "base") else f"{profile} profile"),
        "dataset": f"{info.name}: {info.n_chans} ch × {info.n_times} samples, {info.sfreq:g} Hz, "
                   f"{len(info.class_names)} classes",
        "overrides": overrides,
        **counts,
        "static_training_memory_gib": static_training_memory_gib(
            counts, shared_frozen=_shared_frozen_parameters(method, backbones, counts)),
        "quoted": None,
        "quoted_convention": None,
    }
    quoted = QUOTED.get(name)
    if quoted is not None and get_profile(profile).published_sizes:  # quoted figures are of the published size
        report["quoted"] = {"value": quoted.value, "text": quoted.text, "source": QUOTED_SOURCE, "note": quoted.note}
    convention = getattr(method_cls, "quoted_convention", None)
    if callable(convention):
        spec = convention()
        conv_overrides = {**overrides, **{str(k): str(v) for k, v in spec.get("overrides", {}).items()}}
        conv_counts = count_parameters(
            build_on_meta(method_cls, profile, conv_overrides, backbones=backbones, info=info)
        )
        report["quoted_convention"] = {
            "description": str(spec.get("description", "")),
            "overrides": dict(spec.get("overrides", {})),
            "trainable_total": conv_counts["trainable_total"],
            "per_stage": {s: row["total"] for s, row in conv_counts["per_stage"].items()},
        }
    return report


def parameter_reports(names: Sequence[str] | None = None, *, profile: str = "paper",
                      overrides: Mapping[str, str] | None = None, plugins=None,
                      skip_unbuildable: bool = False, weights_root=None,
                      backbone_overrides: Mapping[str, str] | None = None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Reports of several methods (default: every registered method, in name order).

    Parameters
    ----------
    names : sequence of str, optional
    profile : {"paper", "small"}
    overrides : mapping of str to str, optional
        Applied to every method.
    plugins : eegbench.plugins.PluginSet, optional
    skip_unbuildable : bool
        Leave out (instead of raising) a method whose plugin cannot be imported or built at
        ``profile``; the reason is returned.

    Returns
    -------
    reports : list of dict
        :func:`parameter_report` of each built method.
    skipped : dict of str to str
        Method name → one-line reason, for the methods left out.

    Notes
    -----
    ``weights_root`` and ``backbone_overrides`` are passed to :func:`parameter_report`.
    """
    if plugins is None:
        from eegbench.plugins import get_plugin_manager

        plugins = get_plugin_manager()
    from eegbench.backbones.profiles import get_profile

    get_profile(profile, plugins)  # an unknown profile fails here, with close matches
    names = list(names) if names is not None else sorted(plugins.methods.names())
    reports, skipped = [], {}
    for name in names:
        try:
            reports.append(parameter_report(name, profile=profile, overrides=overrides, plugins=plugins,
                                            weights_root=weights_root, backbone_overrides=backbone_overrides))
        except Exception as exc:  # a broken plugin must not hide the others
            if not skip_unbuildable:
                raise
            kind = "" if isinstance(exc, EegbenchError) else f"{type(exc).__name__}: "
            skipped[name] = f"{kind}{exc}".splitlines()[0] if str(exc) else type(exc).__name__
    return reports, skipped


# --------------------------------------------------------------------------- formatting
def _n(value: int | None) -> str:
    return "—" if value is None else f"{int(value):,}"


def _stage_summary(report: Mapping[str, Any]) -> str:
    return "; ".join(f"{stage} {_n(row['total'])}" for stage, row in report["per_stage"].items()) or "—"


def _detail_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for stage, row in report["per_stage"].items():
        for comp, n in row.items():
            if comp != "total":
                rows.append([stage, comp, _n(n)])
        rows.append([stage, "(stage total)", _n(row["total"])])
    return rows


def _component_rows(report: Mapping[str, Any]) -> list[list[str]]:
    return [[comp, _n(row["total"])] for comp, row in report["per_component"].items()]


def _text(reports: Sequence[Mapping[str, Any]]) -> str:
    from tabulate import tabulate

    blocks = []
    for r in reports:
        lines = [f"{r['method']} — profile {r['profile']} (backbone {r['backbone']}; {r['dataset']})"]
        if r["overrides"]:
            lines.append("overrides: " + ", ".join(f"{k}={v}" for k, v in r["overrides"].items()))
        lines.append(tabulate(_detail_rows(r), headers=["stage", "component", "trainable"],
                              tablefmt="simple", colalign=("left", "left", "right")))
        lines.append(tabulate(_component_rows(r), headers=["component", "parameters"], tablefmt="simple",
                              colalign=("left", "right")))
        summary = [["trainable_total (all stages)", _n(r["trainable_total"])],
                   ["inference_total", _n(r["inference_total"])],
                   ["total", _n(r["total"])],
                   ["static training memory, GiB (fp32 trainable + grads + AdamW, fp16 shared backbones, "
                    "fp32 own modules; activations excluded)", f"{r['static_training_memory_gib']:.1f}"]]
        conv = r.get("quoted_convention")
        if conv:
            summary.append([f"quoted convention: {conv['description']}", _n(conv["trainable_total"])])
        lines.append(tabulate(summary, tablefmt="plain", colalign=("left", "right")))
        q = r.get("quoted")
        if q:
            lines.append(f"quoted by {q['source']}: {q['text']} — {q['note']}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _markdown(reports: Sequence[Mapping[str, Any]]) -> str:
    from tabulate import tabulate

    header = ["method", "profile", "base", "trainable per stage", "trainable_total", "inference_total", "total",
              "static train mem. GiB", "quoted convention", "quoted (SYNAPSE README)"]
    rows = []
    for r in reports:
        conv = r.get("quoted_convention")
        q = r.get("quoted")
        rows.append([
            r["method"], r["profile"], r["backbone"], _stage_summary(r), _n(r["trainable_total"]),
            _n(r["inference_total"]), _n(r["total"]), f"{r['static_training_memory_gib']:.1f}",
            f"{_n(conv['trainable_total'])} ({conv['description']})" if conv else "—",
            q["text"] if q else "—",
        ])
    parts = [tabulate(rows, headers=header, tablefmt="github",
                      colalign=("left", "left", "left", "left", "right", "right", "right", "right", "left",
                                "right"))]
    for r in reports:
        parts.append(f"#### {r['method']} ({r['profile']}, {r['backbone']})")
        parts.append(tabulate(_detail_rows(r), headers=["stage", "component", "trainable"], tablefmt="github",
                              colalign=("left", "left", "right")))
        parts.append(tabulate(_component_rows(r), headers=["component", "parameters"], tablefmt="github",
                              colalign=("left", "right")))
    return "\n\n".join(parts)


def format_reports(reports: Sequence[Mapping[str, Any]], fmt: str = "text") -> str:
    """Render reports of :func:`parameter_report`.

    Parameters
    ----------
    reports : sequence of dict
    fmt : {"text", "markdown", "json"}
        ``text``: per method a stage × component table, component totals and the totals;
        ``markdown``: one summary table (a row per method) followed by per-method tables
        (``docs/parameters.md`` embeds it); ``json``: ``{"convention", "quoted_source",
        "reports"}``.

    Returns
    -------
    str
        Without a trailing newline.

    Raises
    ------
    ConfigError
        For an unknown format.
    """
    if fmt == "json":
        return json.dumps({"convention": CONVENTION, "quoted_source": QUOTED_SOURCE, "reports": list(reports)},
                          indent=2)
    if fmt == "text":
        return _text(reports)
    if fmt == "markdown":
        return _markdown(reports)
    raise ConfigError(f"--format {fmt}: unknown format; known: text, markdown, json")
