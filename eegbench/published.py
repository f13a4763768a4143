"""Numbers quoted from the papers and READMEs of the four methods (``research/methods.md`` §7).

They are shown under every leaderboard in a separate, labelled block and are **never** mixed into
the measured table: each comes from different data handling, split, sample count, reference set
and metric code (``research/methods.md`` §2.1), so none is comparable with eegbench's numbers or
with each other. ``None`` means the source does not report the value.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["PUBLISHED", "PublishedResult", "published_frame", "published_markdown"]

#: Title of the block under each leaderboard.
BLOCK_TITLE = "Published numbers (quoted from the papers/READMEs)"
#: The warning printed with the block.
BLOCK_WARNING = (
    "Quoted from the papers/READMEs; different data, split and protocol; **not comparable with the table "
    "above** (nor with each other). FID and IS were computed with different codes, reference sets and "
    "samples per EEG (see *protocol notes*); ACC is 50-way top-1 with ViT-H/14."
)


@dataclass(frozen=True)
class PublishedResult:
    """One quoted result.

    Parameters
    ----------
    method : str
        Method name as eegbench registers it.
    setting : str
        Dataset and setting as quoted (e.g. ``"CVPR40 subject 4"``).
    fid, inception_score, acc : float or None
        Quoted FID (lower is better), IS (higher is better) and 50-way top-1 accuracy (fraction);
        None where the source does not report it.
    params : str
        Parameter count exactly as quoted, with who quoted it; ``"—"`` if not quoted.
    source : str
        Where the number is printed (repository @ commit and file, or paper table).
    protocol_note : str
        How that source computed its numbers (``research/methods.md`` §2.1).
    """

    method: str
    setting: str
    fid: float | None
    inception_score: float | None
    acc: float | None
    params: str
    source: str
    protocol_note: str


_SYNAPSE_NOTE = ("torcheval FID (torchvision Inception, not TF weights), 5 samples/EEG vs 1 GT, trial-level "
                 "re-split (test stimuli seen in training), DDIM 250 steps, CFG 7.5")
_GWIT_NOTE = ("pytorch-fid vs a GT folder with 4 copies per EEG, 4 samples/EEG; own IS (1 split, no ImageNet "
              "normalisation); UniPC 50 steps, CFG 4")
_GWIT_TABLE_NOTE = "numbers of another method as quoted in GWIT's Table I (GWIT's evaluation setting)"

#: The quoted results of ``research/methods.md`` §7.
PUBLISHED: tuple[PublishedResult, ...] = (
    PublishedResult("synapse", "CVPR40 multi-subject", 46.91, None, None, "152.69 M",
                    "CVMILab-CUK/synapse @225872a, README.md", _SYNAPSE_NOTE),
    PublishedResult("gwit", "CVPR40 subject 4", 80.47, 33.32, 0.91, "368 M (SYNAPSE README)",
                    "LuigiSigillo/GWIT @f446378, assets/results_table.png (Table I)", _GWIT_NOTE),
    PublishedResult("gwit", "CVPR40 all subjects", 78.11, 33.87, 0.91, "—",
                    "LuigiSigillo/GWIT @f446378, assets/results_table.png (Table I)", _GWIT_NOTE),
    PublishedResult("gwit", "ThoughtViz", 66.33, 13.76, 0.787, "—",
                    "LuigiSigillo/GWIT @f446378, assets/results_table.png (Table I)", _GWIT_NOTE),
    PublishedResult("brainvis", "CVPR40 subject 4", 121.02, 31.52, 0.49, "195 M (SYNAPSE README)",
                    "GWIT (arXiv 2410.02780) Table I", _GWIT_TABLE_NOTE + "; BrainVis' own IS folder includes GT images"),
    PublishedResult("dreamdiffusion", "CVPR40 subject 4", None, None, 0.45, "210 M (SYNAPSE README)",
                    "GWIT (arXiv 2410.02780) Table I", _GWIT_TABLE_NOTE + "; DreamDiffusion reports no FID"),
)


def _num(v: float | None, decimals: int) -> str:
    return "not reported" if v is None else f"{v:.{decimals}f}"


def published_frame(published=PUBLISHED) -> pd.DataFrame:
    """The quoted results as a display table (one row each, values as strings)."""
    return pd.DataFrame([
        {"Method": p.method, "Dataset / setting (as quoted)": p.setting, "FID ↓ (quoted)": _num(p.fid, 2),
         "IS ↑ (quoted)": _num(p.inception_score, 2), "ACC 50-way top-1 ↑ (quoted)": _num(p.acc, 3),
         "Params (as quoted)": p.params, "Source": p.source, "Protocol notes": p.protocol_note}
        for p in published
    ])


def published_markdown(published=PUBLISHED) -> str:
    """The labelled markdown block shown under each leaderboard."""
    return "\n".join([
        f"## {BLOCK_TITLE}",
        "",
        f"> {BLOCK_WARNING}",
        "",
        published_frame(published).to_markdown(index=False, tablefmt="github", disable_numparse=True),
        "",
    ])
