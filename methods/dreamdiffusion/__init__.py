"""DreamDiffusion-style method plugin (registered through the ``eegbench`` entry-point group).

Reference: DreamDiffusion, arXiv 2306.16934; code ``bbaaii/DreamDiffusion``. This module only registers the method lazily, so listing methods never imports
torch-heavy code.
"""

from __future__ import annotations

from eegbench import hookimpl


@hookimpl
def eegbench_register_methods(registry):
    """Register ``dreamdiffusion`` → :class:`eegbench_methods.dreamdiffusion.method.DreamDiffusion`."""
    registry.add(
        "dreamdiffusion",
        "eegbench_methods.dreamdiffusion.method:DreamDiffusion",
        summary="DreamDiffusion-style: masked-signal-modelling EEG encoder + cross-attention fine-tuned latent diffusion (arXiv 2306.16934)",
    )
