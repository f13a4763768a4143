"""EEG input standardisation shared by every method: training-split statistics and one z-scoring module.

The datasets hold EEG in physical units (V for the eeg-notebooks recordings, ~1e-5), so every
method z-scores each channel with the mean and standard deviation of the **training** split
(:func:`channel_statistics`) before its encoder, through :class:`EEGStandardizer`. One module,
one rule for a flat channel (its standard deviation is taken as 1, so it stays at 0), and the
statistics saved with the method (buffers, not parameters).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["EEGStandardizer", "channel_statistics"]


def channel_statistics(eeg: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation over trials and time (float64 accumulation).

    Plugins compute them on the training split only, for input standardisation.

    Parameters
    ----------
    eeg : numpy.ndarray, shape (n_trials, n_chans, n_times), float32
        EEG in its dataset unit (V for the eeg-notebooks data).

    Returns
    -------
    mean, std : torch.Tensor, shape (n_chans,), float32
        In the EEG's unit; ``std`` is the population standard deviation (``ddof=0``).
    """
    # one channel at a time: the float64 temporaries stay n_chans times smaller than the whole array
    mean = np.array([eeg[:, c].mean(dtype=np.float64) for c in range(eeg.shape[1])])
    std = np.array([eeg[:, c].std(dtype=np.float64) for c in range(eeg.shape[1])])
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


class EEGStandardizer(nn.Module):
    """Per-channel z-scoring with training-split statistics, optionally clamped at ``±clip``.

    ``z = clamp((eeg - mean) / std, -clip, clip)``. A channel whose standard deviation is not
    above ``min_std`` (flat: a disconnected electrode) gets ``std = 1``, so it maps to ~0 instead
    of being blown up. The statistics are buffers ``mean`` and ``std``, shape (n_chans,), saved
    with the module; they are 0 and 1 (identity) until :meth:`set_statistics`.

    Parameters
    ----------
    n_chans : int
        Number of EEG channels.
    clip : float
        Clamp of the z-scored values in standard deviations; 0 disables.
    min_std : float
        Standard deviations at or below this count as flat (in the EEG's unit).
    """

    def __init__(self, n_chans: int, clip: float = 0.0, *, min_std: float = 1e-12) -> None:
        super().__init__()
        self.n_chans = int(n_chans)
        self.clip = float(clip)
        self.min_std = float(min_std)
        self.register_buffer("mean", torch.zeros(self.n_chans))
        self.register_buffer("std", torch.ones(self.n_chans))

    @torch.no_grad()
    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store per-channel statistics (:func:`channel_statistics` of the training EEG).

        Parameters
        ----------
        mean, std : torch.Tensor, shape (n_chans,) (or any shape with n_chans elements), float
            In the EEG's unit (V).
        """
        mean = torch.as_tensor(mean).reshape(self.n_chans)
        std = torch.as_tensor(std).reshape(self.n_chans)
        self.mean.copy_(mean.to(self.mean))
        self.std.copy_(torch.where(std > self.min_std, std, torch.ones_like(std)).to(self.std))

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        """Standardise EEG.

        Parameters
        ----------
        eeg : torch.Tensor, shape (batch, n_chans, n_times), float, in the EEG's unit (V)

        Returns
        -------
        torch.Tensor, shape (batch, n_chans, n_times), the buffers' dtype (float32), dimensionless
        """
        z = (eeg.to(self.mean.dtype) - self.mean[:, None]) / self.std[:, None]
        return z.clamp(-self.clip, self.clip) if self.clip > 0 else z

    def extra_repr(self) -> str:
        return f"n_chans={self.n_chans}, clip={self.clip:g}"
