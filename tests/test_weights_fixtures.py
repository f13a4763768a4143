"""The random-weight fixture folders load through the real user code paths (tiny size only)."""

from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from eegbench._compat import ensure_torchvision
from eegbench.backbones import weights_fixtures as wf
from eegbench.errors import ConfigError

ensure_torchvision()

import diffusers  # noqa: E402
import open_clip  # noqa: E402
import transformers  # noqa: E402

SD_BASES = ("sd15", "sd21", "sd21-base")
TEXTS = ["a photo of a dog", ""]
EOS = 49407


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return wf.write_paper_weights(root, size="tiny")


def _upto_eos(ids):
    ids = list(ids)
    return ids[: ids.index(EOS) + 1]


def test_folders_and_names(weights):
    assert list(weights) == list(wf.FOLDERS)
    for key, folder in weights.items():
        assert folder.name == wf.FOLDERS[key]
        assert folder.is_dir()


@pytest.mark.parametrize("base", SD_BASES)
def test_stable_diffusion_folder_loads(weights, base):
    folder = weights[base]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False

    unet = diffusers.UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    vae = diffusers.AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    text = transformers.CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    tok = transformers.CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (folder / "text_encoder" / "model.safetensors").is_file()

    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == ("v_prediction" if base == "sd21" else "epsilon")
    assert sched["_class_name"] == ("PNDMScheduler" if base == "sd15" else "DDIMScheduler")

    width = 32 if base == "sd15" else 64
    assert text.config.hidden_size == width == unet.config.cross_attention_dim
    assert text.config.hidden_act == ("quick_gelu" if base == "sd15" else "gelu")
    assert unet.config.sample_size == (96 if base == "sd21" else 64)
    assert vae.config.sample_size == (768 if base == "sd21" else 512)
    assert unet.config.use_linear_projection is (base != "sd15")
    assert unet.config.upcast_attention is (base == "sd21")
    assert vae.config.scaling_factor == pytest.approx(0.18215)
    assert tok.model_max_length == 77 and len(tok) == 49408
    assert tok.pad_token == ("<|endoftext|>" if base == "sd15" else "!")

    with torch.no_grad():
        latents = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean  # 1/8 of the image edge
        assert latents.shape == (1, 4, 8, 8)
        assert vae.decode(latents).sample.shape == (1, 3, 64, 64)
        ids = tok(TEXTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        context = text(ids).last_hidden_state
        assert context.shape == (2, 77, width)
        out = unet(latents.expand(2, -1, -1, -1), 10, encoder_hidden_states=context).sample
        assert out.shape == (2, 4, 8, 8)


def test_stable_diffusion_pipeline_loads(weights):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(weights["sd21"], local_files_only=True)
    assert isinstance(pipe.scheduler, diffusers.DDIMScheduler)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.vae_scale_factor == 8


@pytest.mark.parametrize("key", ["sd15", "sd21", "clip-l14"])
def test_tokenizer_matches_open_clip(weights, key, tmp_path):
    sub = "" if key == "clip-l14" else "tokenizer"
    folder = weights[key] / sub
    reference = open_clip.tokenize(TEXTS)
    assert torch.equal(reference, open_clip.get_tokenizer("ViT-H-14")(TEXTS))
    # Both the full folder (tokenizer.json) and the vocab.json + merges.txt of the published SD repos.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(folder / name, legacy / name)
    for path in (folder, legacy):
        tok = transformers.CLIPTokenizer.from_pretrained(path, local_files_only=True)
        ids = tok(TEXTS, padding="max_length", max_length=77, truncation=True).input_ids
        for got, ref in zip(ids, reference.tolist()):
            assert len(got) == 77
            assert _upto_eos(got) == _upto_eos(ref)
            assert set(got[len(_upto_eos(got)):]) <= {tok.pad_token_id}
        assert tok.pad_token_id == (0 if key == "sd21" else EOS)


def test_open_clip_local_dir(weights):
    folder = weights["openclip-h14"]
    config = json.loads((folder / "open_clip_config.json").read_text())
    assert config["model_cfg"] == wf.tiny_open_clip_config()
    assert config["preprocess_cfg"]["mean"] == wf.CLIP_MEAN
    name = "local-dir:" + str(folder)
    model, _, preprocess = open_clip.create_model_and_transforms(name)
    saved = torch.load(folder / "open_clip_pytorch_model.bin", weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()
    with torch.no_grad():
        image = model.encode_image(torch.randn(2, 3, 32, 32))
        tokens = tokenizer(TEXTS)
        text = model.encode_text(tokens)
    assert image.shape == (2, 40)
    assert tokens.shape == (2, 77)
    assert text.shape == (2, 40)
    assert torch.isfinite(image).all() and torch.isfinite(text).all()


def test_open_clip_seeded(tmp_path):
    a = torch.load(wf.write_open_clip(tmp_path / "a", seed=1) / "open_clip_pytorch_model.bin", weights_only=True)
    b = torch.load(wf.write_open_clip(tmp_path / "b", seed=1) / "open_clip_pytorch_model.bin", weights_only=True)
    c = torch.load(wf.write_open_clip(tmp_path / "c", seed=2) / "open_clip_pytorch_model.bin", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["visual.conv1.weight"], c["visual.conv1.weight"])


def test_clip_vit_large_folder(weights):
    folder = weights["clip-l14"]
    model = transformers.CLIPModel.from_pretrained(folder, local_files_only=True)
    assert model.config.projection_dim == 24
    assert model.config.text_config.hidden_size == 32  # = tiny sd15 text width
    vision = transformers.CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True)
    processor = transformers.CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    pixels = processor(images=[torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)] * 3,
                       return_tensors="pt").pixel_values
    assert pixels.shape == (3, 3, 32, 32)
    with torch.no_grad():
        embeds = vision(pixel_values=pixels).image_embeds
        ids = transformers.CLIPTokenizer.from_pretrained(folder)(TEXTS, padding=True, return_tensors="pt")
        text = model.get_text_features(**ids)
    assert embeds.shape == (3, 24)
    text = text if isinstance(text, torch.Tensor) else text.pooler_output
    assert text.shape == (2, 24)


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError):
        wf.write_paper_weights(tmp_path, which=["sd3"])
    with pytest.raises(ConfigError):
        wf.write_paper_weights(tmp_path, size="huge")
    with pytest.raises(ConfigError):
        wf.write_stable_diffusion(tmp_path, "sdxl")
    assert wf.write_paper_weights(tmp_path, which=[]) == {}
    assert not any(tmp_path.iterdir())
