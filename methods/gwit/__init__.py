"""GWIT-style method plugin (registered through the ``eegbench`` entry-point group).

Reference: GWIT (Guess What I Think), arXiv 2410.02780; code ``LuigiSigillo/GWIT``. This module only registers the method lazily, so listing methods never imports
torch-heavy code.
"""

from __future__ import annotations

from eegbench import hookimpl


@hookimpl
def eegbench_register_methods(registry):
    """Register ``gwit`` → :class:`eegbench_methods.gwit.method.GWIT`."""
    registry.add(
        "gwit",
        "eegbench_methods.gwit.method:GWIT",
        summary="GWIT-style: ControlNet with an EEG hint encoder + class prompt from an EEG classifier, guess mode (arXiv 2410.02780)",
    )
