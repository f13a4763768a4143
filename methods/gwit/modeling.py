"""Modules of the GWIT-style method: EEG ControlNet hint encoder and the triplet-LSTM EEG classifier.

Sources (``research/methods.md`` §6): GWIT, arXiv 2410.02780, ``LuigiSigillo/GWIT @f446378``
(``controlnet_conditioning_eeg.py``, the patched diffusers ``controlnet.py``), and EEGStyleGAN-ADA's
``EEG2Feat/Triplet_LSTM`` ``EEGFeatNet`` (the frozen EEG classifier GWIT prompts with). Written from
the descriptions in the dossier; no upstream code is copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from eegbench.errors import ConfigError
from eegbench.preprocessing import EEGStandardizer
from eegbench.training import fp32_recurrent

__all__ = [
    "EEGCondition",
    "EEGConditioningEmbedding",
    "EEGFeatNet",
    "GWITControlNet",
    "OutOfFoldPrompts",
    "SubjectLayers",
    "embedding_lengths",
    "knn_vote",
    "triplet_margin_loss",
]


class SubjectLayers(nn.Module):
    """One learned ``n_chans × n_chans`` channel-mixing matrix per subject id.

    ``out[b, d, t] = Σ_c x[b, c, t] · W[subject[b], c, d]``, with W initialised ``randn / √n_chans``
    (GWIT ``controlnet_conditioning_eeg.py``, after brainmagick's subject layers). Upstream builds
    ``n_subjects = 7`` layers for CVPR40's ids 1–6 and indexes them by the raw id (layer 0 unused);
    this module does the same: ``n_layers = max(subject id) + 1``.

    A subject not seen in training (the held-out subject of ``cross-subject``, an id out of range,
    or ``subject=None``) uses the mean of the matrices of the subjects seen in training (the
    ``seen`` buffer, set by :meth:`mark_seen`); before any training every in-range id counts as
    seen.

    Parameters
    ----------
    n_chans : int
    n_layers : int
        Number of matrices (``max(subject id) + 1``).
    """

    def __init__(self, n_chans: int, n_layers: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_layers, n_chans, n_chans) / n_chans**0.5)
        self.register_buffer("seen", torch.ones(n_layers, dtype=torch.bool))

    @torch.no_grad()
    def mark_seen(self, subjects: Sequence[int]) -> None:
        """Record which subject ids the training split holds (the others get the mean matrix)."""
        self.seen.zero_()
        for s in subjects:
            if 0 <= int(s) < self.seen.numel():
                self.seen[int(s)] = True

    def matrices(self, subject: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Mixing matrix per trial, float (batch, n_chans, n_chans).

        Parameters
        ----------
        subject : torch.Tensor, shape (batch,), int64, or None
            Subject id per trial.
        batch : int
        """
        n_layers = self.weight.shape[0]
        seen = self.seen if bool(self.seen.any()) else torch.ones_like(self.seen)
        mean = self.weight[seen].mean(0)
        if subject is None:
            return mean.expand(batch, -1, -1)
        subject = subject.to(self.weight.device).long().reshape(-1)
        inside = (subject >= 0) & (subject < n_layers)
        idx = subject.clamp(0, n_layers - 1)
        known = inside & seen[idx]
        return torch.where(known[:, None, None], self.weight[idx], mean.expand(len(idx), -1, -1))

    def forward(self, eeg: torch.Tensor, subject: torch.Tensor | None) -> torch.Tensor:
        """Mix channels: (B, n_chans, n_times) → (B, n_chans, n_times), float."""
        w = self.matrices(subject, eeg.shape[0]).to(eeg.dtype)
        return torch.einsum("bct,bcd->bdt", eeg, w)


def embedding_lengths(pad_to: int, n_stages: int) -> list[int]:
    """Time lengths through the hint encoder: after the unpadded k3 conv, then after each stride-2 conv.

    ``embedding_lengths(512, 3) == [510, 255, 128, 64]`` (GWIT's published stack).
    """
    lengths = [pad_to - 2]
    for _ in range(n_stages):
        lengths.append((lengths[-1] - 1) // 2 + 1)
    return lengths


class EEGCondition(NamedTuple):
    """What the ControlNet's hint encoder receives: EEG and subject ids (passed through diffusers untouched)."""

    eeg: torch.Tensor
    subject: torch.Tensor | None


class EEGConditioningEmbedding(nn.Module):
    """GWIT's EEG hint encoder, replacing ControlNet's image ``controlnet_cond_embedding``.

    Steps (GWIT ``controlnet_conditioning_eeg.py``, ``research/methods.md`` §6.1):

    1. standardise (train statistics, see :class:`~eegbench.preprocessing.EEGStandardizer`) and zero-pad the time axis on the
       right to ``pad_to`` samples (paper 512);
    2. :class:`SubjectLayers` channel mixing;
    3. ``Conv1d(n_chans → c0, k3, no padding)`` + SiLU;
    4. ``n_stages`` × [``Conv1d(c → c, k3, p1)`` + SiLU, ``Conv1d(c → 2c, k3, p1, stride 2)`` + SiLU];
    5. reshape ``(B, c0·2^S, L) → (B, C, c0·2^S / C, L)`` with ``C = out_channels``, swap the last two
       axes to ``(B, C, L, c0·2^S / C)`` and zero-pad both to ``latent_size``.

    Paper: c0 = 320, 3 stages, L 510 → 255 → 128 → 64, ``[B, 2560, 64] → [B, 320, 8, 64] →
    [B, 320, 64, 8] → [B, 320, 64, 64]``; 19,598,208 parameters for 128 channels and 7 subject
    layers. As upstream, there is no zero-initialised output convolution (the ControlNet's own zero
    convolutions keep the residuals at zero at initialisation).

    Parameters
    ----------
    n_chans, n_times : int
        EEG shape.
    n_subject_layers : int
        Subject matrices (``max(subject id) + 1``).
    out_channels : int
        ControlNet ``block_out_channels[0]`` (paper 320).
    latent_size : int
        Latent edge length (paper 64).
    pad_to : int
        Padded time length (≥ ``n_times``).
    base_channels : int
        c0 (paper 320).
    n_stages : int
        Channel-doubling stages (paper 3).
    clip : float
        Clamp of the z-scored EEG in standard deviations (0 disables).

    Raises
    ------
    ConfigError
        If the stack's output does not fit ``(out_channels, latent_size, latent_size)``.
    """

    def __init__(self, n_chans: int, n_times: int, *, n_subject_layers: int, out_channels: int, latent_size: int,
                 pad_to: int, base_channels: int, n_stages: int, clip: float = 10.0) -> None:
        super().__init__()
        if pad_to < n_times:
            raise ConfigError(f"gwit: eeg_pad_to={pad_to} is shorter than the EEG (n_times={n_times})")
        if pad_to < 3:
            raise ConfigError(f"gwit: eeg_pad_to={pad_to} must be ≥ 3")
        final_channels = base_channels * 2**n_stages
        lengths = embedding_lengths(pad_to, n_stages)
        rows, rem = divmod(final_channels, out_channels)
        if rem or rows > latent_size or lengths[-1] > latent_size:
            raise ConfigError(
                f"gwit: the EEG hint encoder ends at (channels {final_channels}, time {lengths[-1]}) = "
                f"eeg_embed_channels={base_channels}·2^eeg_embed_stages={n_stages}, eeg_pad_to={pad_to}; it must "
                f"reshape into ({out_channels}, ≤{latent_size}, ≤{latent_size}): channels a multiple of "
                f"{out_channels} with at most {latent_size} rows, time ≤ {latent_size}"
            )
        self.n_chans, self.n_times, self.pad_to = int(n_chans), int(n_times), int(pad_to)
        self.out_channels, self.latent_size = int(out_channels), int(latent_size)
        self.lengths = lengths
        self.standardize = EEGStandardizer(n_chans, clip)
        self.subject_layers = SubjectLayers(n_chans, n_subject_layers)
        self.conv_in = nn.Conv1d(n_chans, base_channels, kernel_size=3)
        blocks: list[nn.Module] = []
        c = base_channels
        for _ in range(n_stages):
            blocks.append(nn.Conv1d(c, c, kernel_size=3, padding=1))
            blocks.append(nn.Conv1d(c, 2 * c, kernel_size=3, padding=1, stride=2))
            c *= 2
        self.blocks = nn.ModuleList(blocks)

    def forward(self, condition: EEGCondition | torch.Tensor) -> torch.Tensor:
        """Hint features.

        Parameters
        ----------
        condition : EEGCondition or torch.Tensor
            ``EEGCondition(eeg (B, n_chans, n_times) float in the dataset unit, subject (B,) int64
            or None)``; a bare tensor means ``subject=None`` (mean subject matrix).

        Returns
        -------
        torch.Tensor, shape (B, out_channels, latent_size, latent_size), float
        """
        eeg, subject = (condition.eeg, condition.subject) if isinstance(condition, EEGCondition) else (condition, None)
        dtype = self.conv_in.weight.dtype
        x = self.standardize(eeg).to(dtype)
        x = F.pad(x, (0, self.pad_to - x.shape[-1]))
        x = self.subject_layers(x, subject)
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        b, c, length = x.shape
        x = x.reshape(b, self.out_channels, c // self.out_channels, length).transpose(2, 3)
        return F.pad(x, (0, self.latent_size - x.shape[-1], 0, self.latent_size - x.shape[-2]))


class GWITControlNet(nn.Module):
    """A diffusers ``ControlNetModel`` copied from the denoiser UNet, with the EEG hint encoder.

    Built by ``ControlNetModel.from_unet(unet)`` (a trainable copy of the UNet's ``conv_in``, time
    embedding, down blocks and mid block, plus zero-initialised 1×1 output convolutions); its image
    hint encoder ``controlnet_cond_embedding`` is replaced by :class:`EEGConditioningEmbedding`
    (GWIT ``ControlNetModel.from_unet(unet, n_subjects=7)``). Works on the meta device (no weight
    values are read when ``unet`` is on meta).

    Parameters
    ----------
    unet : diffusers.UNet2DConditionModel
        The (frozen, shared) denoiser UNet; only read.
    embedding : EEGConditioningEmbedding

    Attributes
    ----------
    net : diffusers.ControlNetModel
    """

    def __init__(self, unet: nn.Module, embedding: EEGConditioningEmbedding) -> None:
        super().__init__()
        from diffusers import ControlNetModel

        on_meta = any(p.is_meta for p in unet.parameters())
        device = next(unet.parameters()).device
        with torch.device(device):
            # the standard hint encoder is built by diffusers and immediately replaced; keep it tiny
            net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16,),
                                            load_weights_from_unet=not on_meta)
        net.controlnet_cond_embedding = embedding
        self.net = net

    @property
    def embedding(self) -> EEGConditioningEmbedding:
        """The EEG hint encoder (incl. subject layers)."""
        return self.net.controlnet_cond_embedding

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, eeg: torch.Tensor,
                subject: torch.Tensor | None = None, *, guess_mode: bool = False,
                conditioning_scale: float = 1.0) -> tuple[list[torch.Tensor], torch.Tensor]:
        """ControlNet residuals for the frozen UNet.

        Parameters
        ----------
        sample : torch.Tensor, shape (B, latent_channels, latent_size, latent_size)
            Noisy (scheduler-scaled) latents.
        timestep : torch.Tensor or int
            Diffusion timestep(s).
        context : torch.Tensor, shape (B, L, cross_attention_dim)
            Text-token context (the prompt, or the empty context).
        eeg : torch.Tensor, shape (B, n_chans, n_times), float
            EEG in the dataset unit.
        subject : torch.Tensor, shape (B,), int64, optional
        guess_mode : bool
            diffusers' guess mode: residuals scaled by ``logspace(-1, 0)`` from the shallowest
            (×0.1) to the mid block (×1).
        conditioning_scale : float

        Returns
        -------
        down : list of torch.Tensor
            ``down_block_additional_residuals`` of the UNet.
        mid : torch.Tensor
            ``mid_block_additional_residual``.
        """
        out = self.net(sample, timestep, encoder_hidden_states=context, controlnet_cond=EEGCondition(eeg, subject),
                       conditioning_scale=conditioning_scale, guess_mode=guess_mode, return_dict=False)
        return list(out[0]), out[1]


class EEGFeatNet(nn.Module):
    """EEGStyleGAN-ADA's triplet LSTM feature net (GWIT's EEG classifier), with a k-NN head.

    ``LSTM(n_chans → hidden, num_layers, batch_first)`` over time, the last layer's final hidden
    state → ``Linear(hidden → dim)`` → L2 normalisation (EEGStyleGAN-ADA ``EEG2Feat/Triplet_LSTM``
    ``EEGFeatNet``: 128 channels, hidden 128, 4 layers, 128-d; ≈ 0.54 M parameters). Classes come from
    a k-nearest-neighbour vote over the L2-normalised features of the training trials, which are
    stored as buffers (``bank_features``, ``bank_labels``) so that they are saved with the module.

    Parameters
    ----------
    n_chans : int
    hidden : int
        LSTM hidden size (128).
    num_layers : int
        LSTM layers (4).
    dim : int
        Feature dimension (128).
    clip : float
        Clamp of the z-scored EEG (standard deviations; 0 disables).
    pooling : {"last", "mean"}
        ``"last"`` (upstream): the last layer's final hidden state; ``"mean"``: the last layer's outputs
        averaged over time. On ``eegnb-groundtruth`` at 0 dB (decoding ceiling 0.995) the ``"last"``
        features collapse to one point in the small profile's budget (triplet loss stuck at its margin,
        validation k-NN at chance), while ``"mean"`` reaches a validation k-NN accuracy near 1 within
        150 steps (``tests/test_gwit.py``).
    """

    def __init__(self, n_chans: int, *, hidden: int = 128, num_layers: int = 4, dim: int = 128,
                 clip: float = 10.0, pooling: str = "last") -> None:
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"EEGFeatNet: pooling={pooling!r}; expected 'last' or 'mean'")
        self.pooling = pooling
        self.standardize = EEGStandardizer(n_chans, clip)
        self.lstm = nn.LSTM(n_chans, hidden, num_layers=num_layers, batch_first=True)
        self.fc = nn.Linear(hidden, dim)
        self.register_buffer("bank_features", torch.zeros(0, dim))
        self.register_buffer("bank_labels", torch.zeros(0, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the k-NN bank's size depends on the training split: take the stored size
        for name in ("bank_features", "bank_labels"):
            key = prefix + name
            if key in state_dict:
                current = getattr(self, name)
                setattr(self, name, torch.empty_like(current, device=current.device).resize_(state_dict[key].shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        """L2-normalised features, float32 (B, dim), of EEG (B, n_chans, n_times) in the dataset unit."""
        x = self.standardize(eeg).transpose(1, 2)  # (B, n_times, n_chans)
        out, (h, _) = fp32_recurrent(self.lstm, x)
        pooled = out.mean(dim=1) if self.pooling == "mean" else h[-1]
        return F.normalize(self.fc(pooled), dim=-1)

    @torch.no_grad()
    def set_bank(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Store the k-NN reference set: features float (N, dim), labels int64 (N,)."""
        self.bank_features = features.detach().to(self.fc.weight.device, torch.float32).clone()
        self.bank_labels = labels.detach().to(self.fc.weight.device, torch.long).clone()

    @torch.no_grad()
    def predict(self, eeg: torch.Tensor, k: int, n_classes: int, batch_size: int = 256) -> torch.Tensor:
        """k-NN class of each trial (scikit-learn ``KNeighborsClassifier``, uniform weights).

        Parameters
        ----------
        eeg : torch.Tensor, shape (B, n_chans, n_times), float
        k : int
            Neighbours (clipped to the bank size).
        n_classes : int

        Returns
        -------
        torch.Tensor, shape (B,), int64, on the EEG's device

        Raises
        ------
        RuntimeError
            If the bank is empty (the classifier was not fitted).
        """
        if self.bank_features.shape[0] == 0:
            raise RuntimeError("gwit: the EEG classifier has no k-NN reference set; fit the method first")
        from sklearn.neighbors import KNeighborsClassifier

        feats = torch.cat([self(eeg[i:i + batch_size]) for i in range(0, len(eeg), batch_size)]) if len(eeg) else \
            torch.zeros(0, self.fc.out_features, device=eeg.device)
        if len(eeg) == 0:
            return torch.zeros(0, dtype=torch.long, device=eeg.device)
        bank = self.bank_features.cpu().numpy()
        labels = self.bank_labels.cpu().numpy()
        knn = KNeighborsClassifier(n_neighbors=min(int(k), len(bank)))
        knn.fit(bank, labels)
        pred = knn.predict(feats.float().cpu().numpy())
        return torch.from_numpy(np.asarray(pred, dtype=np.int64)).clamp(0, n_classes - 1).to(eeg.device)


class OutOfFoldPrompts(nn.Module):
    """The cross-fitted (out-of-fold) prompt class of every training trial, as a saved buffer.

    GWIT trains its ControlNet on the prompt of the class its EEG classifier guesses. Guessing a
    training trial with a classifier trained on that very trial gives prompts far more accurate
    than at test time; the method therefore guesses each training trial with a classifier that
    was trained on the other folds only, and keeps the guesses here, so that they travel with the
    stage checkpoints (``--resume``) and with :meth:`~eegbench.method.Method.save`.

    Attributes
    ----------
    train_prompt_classes : torch.Tensor, shape (n_train,), int64
        Guessed class per training trial in training-split order; ``-1`` = not predicted yet
        (its fold has not run). Empty before the first fit (or with fewer than 2 trials).
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("train_prompt_classes", torch.zeros(0, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the number of training trials depends on the split: take the stored size
        key = prefix + "train_prompt_classes"
        if key in state_dict:
            current = self.train_prompt_classes
            self.train_prompt_classes = torch.empty_like(current, device=current.device).resize_(state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def reset(self, n_train: int) -> None:
        """Start a fit of ``n_train`` trials: every class ``-1`` (not predicted)."""
        self.train_prompt_classes = torch.full((int(n_train),), -1, dtype=torch.long,
                                               device=self.train_prompt_classes.device)

    @torch.no_grad()
    def fill(self, rows: np.ndarray, classes: np.ndarray) -> None:
        """Store the predictions of one held-out fold.

        Parameters
        ----------
        rows : numpy.ndarray, shape (M,), int
            Positions of the held-out trials in the training split.
        classes : numpy.ndarray, shape (M,), int
            Their predicted classes.
        """
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.train_prompt_classes.device)
        values = torch.as_tensor(np.asarray(classes, dtype=np.int64), device=self.train_prompt_classes.device)
        self.train_prompt_classes[index] = values

    def classes(self) -> np.ndarray:
        """The stored classes, int64 numpy array (n_train,) (``-1`` where not predicted)."""
        return self.train_prompt_classes.cpu().numpy().astype(np.int64)


def knn_vote(features: np.ndarray, labels: np.ndarray, k: int, query: np.ndarray | None = None) -> np.ndarray:
    """k-NN prediction with scikit-learn; ``query=None`` predicts every reference point leave-one-out.

    Parameters
    ----------
    features : numpy.ndarray, shape (N, dim), float
        Reference features.
    labels : numpy.ndarray, shape (N,), int
    k : int
        Neighbours (clipped to what is available).
    query : numpy.ndarray, shape (M, dim), optional
        Points to classify; None: each reference point from its k nearest *other* points.

    Returns
    -------
    numpy.ndarray, shape (M,) or (N,), int64
        Majority class (ties → the smallest label, as scikit-learn).
    """
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels, dtype=np.int64)
    n_ref = len(features)
    k = max(1, min(int(k), n_ref - (1 if query is None else 0)))
    nn_index = NearestNeighbors(n_neighbors=k).fit(features)
    _, idx = nn_index.kneighbors(None if query is None else query)
    votes = labels[idx]
    n_classes = int(labels.max()) + 1 if n_ref else 1
    counts = np.stack([(votes == c).sum(1) for c in range(n_classes)], axis=1)
    return counts.argmax(1).astype(np.int64)


def triplet_margin_loss(features: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch-all triplet margin loss on L2-normalised features, averaged over the active triplets.

    Every in-batch triplet (anchor a, positive p ≠ a with a's label, negative n with another label)
    contributes ``max(0, d(a, p) − d(a, n) + margin)`` with Euclidean distance; the mean is taken over
    the triplets with a non-zero loss (pytorch-metric-learning's ``TripletMarginLoss`` with its
    default ``AvgNonZeroReducer``, the loss family EEGStyleGAN-ADA's triplet LSTM is trained with;
    Schroff et al. 2015). Returns 0 when no triplet exists or none is active.

    Parameters
    ----------
    features : torch.Tensor, shape (B, dim), float
    labels : torch.Tensor, shape (B,), int64
    margin : float

    Returns
    -------
    torch.Tensor, scalar
    """
    f = features.float()
    sq = (f[:, None, :] - f[None, :, :]).pow(2).sum(-1)
    dist = sq.clamp_min(1e-12).sqrt()  # clamp: finite gradients at zero distance
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    valid = (same & ~eye)[:, :, None] & (~same)[:, None, :]  # (a, p, n)
    if not bool(valid.any()):
        return features.sum() * 0.0
    loss = F.relu(dist[:, :, None] - dist[:, None, :] + margin)[valid]
    active = loss > 0
    if not bool(active.any()):
        return features.sum() * 0.0
    return loss[active].mean()
