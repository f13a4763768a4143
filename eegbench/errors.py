"""Exception types of eegbench.

Every error that a user can fix (missing data, bad flag, corrupt file) derives from
:class:`EegbenchError`; the CLI prints its message as one line and exits with status 2.
"""

from __future__ import annotations


class EegbenchError(Exception):
    """Base class for errors caused by user input; the CLI exits with status 2."""


class DataNotFoundError(EegbenchError):
    """Required data files are missing under the data root."""


class DataFormatError(EegbenchError):
    """A data file exists but its content is not what the loader expects."""


class WeightsNotFoundError(EegbenchError):
    """A required weights file is missing under the weights root."""


class ConfigError(EegbenchError):
    """A configuration value (CLI flag, ``--set`` override, setting option) is invalid."""


class PluginError(EegbenchError):
    """A plugin could not be loaded, or a registered name is unknown or clashes."""
