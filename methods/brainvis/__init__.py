"""BrainVis-style method plugin (registered through the ``eegbench`` entry-point group).

Reference: BrainVis, arXiv 2312.14871; code ``RomGai/BrainVis``. This module only registers the method lazily, so listing methods never imports
torch-heavy code.
"""

from __future__ import annotations

from eegbench import hookimpl


@hookimpl
def eegbench_register_methods(registry):
    """Register ``brainvis`` → :class:`eegbench_methods.brainvis.method.BrainVis`."""
    registry.add(
        "brainvis",
        "eegbench_methods.brainvis.method:BrainVis",
        summary="BrainVis-style: time (latent masked modelling) + frequency encoders, semantic interpolation, cascaded generation (arXiv 2312.14871)",
    )
