"""Built-in method plugins of eegbench (SYNAPSE and the baselines).

Each sub-package is registered through the ``eegbench`` entry-point group exactly as a third-party
plugin would be (see ``pyproject.toml``).
"""
