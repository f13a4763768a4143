"""SYNAPSE method plugin (registered through the ``eegbench`` entry-point group).

Reference: SYNAPSE, arXiv 2511.17547; code ``CVMILab-CUK/synapse``. This module only registers the
method lazily, so listing methods never imports torch-heavy code.
"""

from __future__ import annotations

from eegbench import hookimpl


@hookimpl
def eegbench_register_methods(registry):
    """Register ``synapse`` → :class:`eegbench_methods.synapse.method.Synapse`."""
    registry.add(
        "synapse",
        "eegbench_methods.synapse.method:Synapse",
        summary="SYNAPSE: CLIP-aligned hybrid EEG autoencoder + IP-adapter latent diffusion (arXiv 2511.17547)",
    )
