"""An example eegbench method plugin: registration only (the method lives in :mod:`.method`).

Registering by ``"module:Class"`` string keeps ``eegbench ls methods`` from importing torch.
"""

from __future__ import annotations

from eegbench import hookimpl


@hookimpl
def eegbench_register_methods(registry):
    """Register ``example-eeg-tokens`` → :class:`eegbench_example_method.method.EEGTokens`."""
    registry.add(
        "example-eeg-tokens",
        "eegbench_example_method.method:EEGTokens",
        summary="example plugin: linear EEG tokens → the denoiser's cross-attention (fine-tunes attn2)",
    )
