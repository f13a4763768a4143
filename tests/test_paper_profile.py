"""The ``paper`` profile on CPU: tiny random-weight models saved in the users' on-disk formats
(diffusers pipeline folders, open_clip local-dir, transformers CLIPModel), loaded through exactly
the user's path, and ``eegbench run --profile paper --max-steps 2`` end to end for every method
on cvpr40-format files."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from eegbench.backbones.protocol import check_backbones
from eegbench.backbones.sd import FOLDERS, StableDiffusionBackbones, paper_backbones_for
from eegbench.backbones.weights_fixtures import write_paper_weights
from eegbench.cli import main
from eegbench.data import load_captions
from eegbench.datasets.cvpr40 import write_synthetic_files
from eegbench.errors import ConfigError, DataFormatError, DataNotFoundError
from eegbench.params import parameter_report
from eegbench.plugins import get_plugin_manager

from conftest import DATA_ROOT

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PHOTOS = DATA_ROOT / "imagenet-samples"

#: CPU-sized batches (the counts do not depend on them; the published batches take minutes per step here).
SMALL_BATCHES = {
    "synapse": ["stage1_batch_size=4", "stage2_batch_size=4", "stage2_accumulation=2"],
    "dreamdiffusion": ["mbm_batch_size=4", "ldm_batch_size=2"],
    "brainvis": [f"{s}_batch_size=4" for s in ("freq", "pretrain", "finetune", "fusion", "align")],
    "gwit": ["classifier_batch_size=4", "controlnet_batch_size=2"],
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """All five weight folders, tiny, in the standard layout."""
    root = tmp_path_factory.mktemp("paper-weights")
    write_paper_weights(root)
    return root


@pytest.fixture(scope="module")
def cvpr40(tmp_path_factory):
    """cvpr40-format files: 6 subjects × 40 classes × 2 images (train / test), the real ImageNet photo
    of each class (``../shared/data/imagenet-samples``) as every image of that class when present."""
    root = tmp_path_factory.mktemp("paper-cvpr40")
    write_synthetic_files(root, n_subjects=6, n_classes=40, images_per_class=2, n_out_of_filter=0,
                          fractions=(0.5, 0.0), image_px=64, lengths=(460, 470))
    if PHOTOS.is_dir():
        for folder in (root / "eeg-imagenet" / "images").iterdir():
            photo = next((PHOTOS / folder.name).glob("*.JPEG"), None)
            if photo is not None:
                for image in folder.glob("*.JPEG"):
                    shutil.copyfile(photo, image)
    return root


def _one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("eegbench: error: ") and "\n" not in err, err
    return err


# ---------------------------------------------------------------------------- weights check
def test_weights_check_empty_root_lists_every_missing_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["weights", "check", "--profile", "paper", "--weights-root", str(empty)]) == 2
    out = capsys.readouterr().out
    for name in FOLDERS.values():
        assert f"{empty / name}" in out
    assert out.count("MISSING folder") == 7  # synapse 2, dreamdiffusion 2, brainvis 2, gwit 1 rows


def test_weights_check_names_a_removed_file(weights, tmp_path, capsys):
    assert main(["weights", "check", "--weights-root", str(weights)]) == 0
    assert "MISSING" not in capsys.readouterr().out
    broken = tmp_path / "w"
    shutil.copytree(weights / FOLDERS["sd15"], broken / FOLDERS["sd15"])
    (broken / FOLDERS["sd15"] / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    assert main(["weights", "check", "--method", "dreamdiffusion", "--weights-root", str(broken)]) == 2
    out = capsys.readouterr().out
    assert "MISSING vae/diffusion_pytorch_model.safetensors" in out
    assert "clip-vit-large-patch14" in out and "MISSING folder" in out


def test_run_with_a_partial_folder_fails_before_loading_data(weights, tmp_path, capsys):
    broken = tmp_path / "w"
    shutil.copytree(weights, broken)
    (broken / FOLDERS["sd21-base"] / "tokenizer" / "merges.txt").unlink()
    code = main(["run", "--method", "gwit", "--profile", "paper", "--dataset", "cvpr40",
                 "--data-root", str(tmp_path / "no-data"), "--weights-root", str(broken),
                 "--runs-dir", str(tmp_path / "runs"), "--max-steps", "2"])
    assert code == 2
    err = _one_line(capsys)
    assert "stable-diffusion-2-1-base" in err and "tokenizer/merges.txt" in err and "--backbone-set sd21-base" in err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- SD conventions
def _sd(weights, method="gwit", **kw):
    cls = get_plugin_manager().methods.get(method)
    return paper_backbones_for(cls, weights_root=weights, class_names=("dog", "cat"), **kw)


def test_sd_conventions_image_range_latent_size_null_context(weights, monkeypatch):
    bb = _sd(weights)
    check_backbones(bb, roles=("vae", "denoiser", "text_embedder"))
    den = bb.denoiser
    assert bb.image_size == 512 and den.latent_size == 64 and den.scaling_factor == pytest.approx(0.18215)
    assert den.prediction_type == "epsilon" and den.context_tokens == 77
    seen = []
    encode = den.vae.encode
    monkeypatch.setattr(den.vae, "encode", lambda x: (seen.append(x), encode(x))[1])
    white = torch.full((1, 3, 64, 64), 255, dtype=torch.uint8)
    black = torch.zeros((1, 3, 64, 64), dtype=torch.uint8)
    latents = den.encode_images(torch.cat([white, black]))
    assert latents.shape == (2, 4, 64, 64) and latents.dtype == torch.float32
    assert seen[0].shape[-1] == 512  # resized to the protocol's image size
    assert seen[0][0].min().item() == pytest.approx(1.0) and seen[0][1].max().item() == pytest.approx(-1.0)
    # encoded in another batch here: equal up to float (GEMM blocking may depend on the batch size)
    empty, _ = den.text_embedder.encode([""])
    torch.testing.assert_close(den.null_context(3), empty.expand(3, -1, -1), rtol=1e-5, atol=1e-5)
    prompt, _ = den.text_embedder.encode(["a photo of a cat"])
    torch.testing.assert_close(den.class_context([1]), prompt, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(den.null_context(1), prompt, atol=1e-3)  # the null is not a class prompt
    images = den.sample(den.class_context([0]), [torch.Generator().manual_seed(0)], num_inference_steps=2,
                        guidance_scale=2.0)
    assert images.shape == (1, 3, 512, 512) and images.dtype == torch.uint8


def test_prediction_type_comes_from_the_scheduler_config(weights):
    synapse = get_plugin_manager().methods.get("synapse")
    bb = paper_backbones_for(synapse, weights_root=weights, class_names=("dog",))
    assert bb.denoiser.prediction_type == "v_prediction"  # SD 2.1 (768-v)
    assert bb.image_size == 512  # SYNAPSE's published resolution, not the 768 px native one
    assert paper_backbones_for(synapse, weights_root=weights, class_names=("dog",),
                               settings=None).denoiser.latent_size == 64


def test_teacher_roles_of_the_published_recipes(weights):
    methods = get_plugin_manager().methods
    syn = paper_backbones_for(methods.get("synapse"), weights_root=weights, class_names=("dog",))
    tokens, mask = syn.text_embedder.encode(["a dog", "a photo of a cat"])
    assert tokens.shape == (2, 77, 64) and mask.shape == (2, 77) and mask[0].sum() == 4  # sot a dog eot
    assert syn.image_embedder(torch.zeros(2, 3, 40, 40, dtype=torch.uint8)).shape == (2, 40)  # OpenCLIP embed
    dd = paper_backbones_for(methods.get("dreamdiffusion"), weights_root=weights, class_names=("dog",))
    assert dd.image_embedder(torch.zeros(2, 3, 40, 40, dtype=torch.uint8)).shape == (2, 24)  # CLIP-L projection
    bv = paper_backbones_for(methods.get("brainvis"), weights_root=weights, class_names=("dog",))
    assert bv.text_embedder.encode(["dog"])[0].shape == (1, 77, 32)  # CLIP-L text = SD 1.5 context
    for bb in (syn, dd, bv):
        check_backbones(bb, roles=("vae", "denoiser", "text_embedder"))


def test_frozen_modules_in_the_compute_dtype_and_fine_tuned_copy_in_float32(weights):
    bb = _sd(weights, dtype=torch.bfloat16)
    assert bb.denoiser.unet.dtype == torch.bfloat16 and bb.vae.dtype == torch.bfloat16
    copy = bb.denoiser.new_unet()
    assert copy.dtype == torch.float32 and not any(p.requires_grad for p in copy.parameters())
    assert bb.denoiser.encode_images(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).dtype == torch.float32


def test_meta_build_reads_configs_only(weights, tmp_path):
    root = tmp_path / "configs-only"
    shutil.copytree(weights, root)
    bb = _sd(root, device="meta")
    assert isinstance(bb, StableDiffusionBackbones)
    assert next(bb.denoiser.unet.parameters()).device.type == "meta"
    assert sum(p.numel() for p in bb.vae.parameters()) > 0


# ---------------------------------------------------------------------------- captions
def test_captions_file_errors_name_the_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="captions file"):
        load_captions(tmp_path / "none.csv", ["a"])
    bad = tmp_path / "c.csv"
    bad.write_text("image,text\na,b\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="missing column"):
        load_captions(bad, ["a"])
    bad.write_text("image_id,caption\na,x\na,y\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="more than once"):
        load_captions(bad, ["a"])
    bad.write_text("image_id,caption\na,x\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match="1 image"):
        load_captions(bad, ["a", "b"])
    assert load_captions(bad, ["a"]) == {"a": "x"}


# ---------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.e2e) for m in ("synapse", "dreamdiffusion",
                                                                                      "brainvis")] + ["gwit"])
def test_paper_run_end_to_end_with_max_steps(method, weights, cvpr40, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["run", "--method", method, "--profile", "paper", "--dataset", "cvpr40", "--data-root", str(cvpr40),
            "--weights-root", str(weights), "--max-steps", "2", "--max-test-trials", "4", "--n-samples", "1",
            "--steps", "2", "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
            "--checkpoint-every", "0"]
    for item in SMALL_BATCHES[method]:
        args += ["--set", item]
    captions = None
    if method in ("synapse", "brainvis"):  # per-image captions from a file
        captions = tmp_path / "captions.csv"
        images = sorted(p.stem for p in (cvpr40 / "eeg-imagenet" / "images").rglob("*.JPEG"))
        captions.write_text("image_id,caption\n" + "".join(f"{i},a photo number {n}\n" for n, i in enumerate(images)),
                            encoding="utf-8")
        args += ["--dataset-option", f"captions={captions}"]
    assert main(args) == 0, capsys.readouterr().err
    (run_dir,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["protocol"]["image_size"] == 512
    assert result["max_steps"] == 2 and result["backbones"]["profile"] == "paper"
    cls = get_plugin_manager().methods.get(method)
    assert result["backbones"]["base"] == cls.paper_backbone
    assert set(result["backbones"]["folders"]) == {cls.paper_backbone, *[k for k in cls.paper_roles.values()]}
    assert result["captions"]["source"] == ("file" if captions else "class template")
    report = parameter_report(method, profile="paper", weights_root=weights)
    assert report["backbone_source"] == "local folders"
    for key in ("trainable_total", "inference_total", "total", "per_stage"):
        assert result["parameters"][key] == report[key], key
    for stage in cls.stages:  # every stage ran exactly the capped number of steps
        steps = [row["step"] for row in result["training_history"] if row.get("stage") == stage]
        assert not steps or max(steps) <= 2
    sample = next((run_dir / "samples").glob("*.png"))
    from PIL import Image

    assert Image.open(sample).size == (512, 512)
    if captions:  # re-scoring reloads the dataset: the harness's captions option is not the loader's
        assert main(["evaluate", str(run_dir), "--no-progress"]) == 0, capsys.readouterr().err
        (rescored,) = run_dir.glob("evaluations/*/result.json")
        rescored = json.loads(rescored.read_text(encoding="utf-8"))
        assert rescored["metrics"]["probe_accuracy"]["value"] is not None
    # a --max-steps run never reaches a leaderboard
    assert main(["compare", str(runs), "--out", str(tmp_path / "reports")]) == 2
    assert "smoke-test" in capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(Image.open(sample)).shape, (512, 512, 3))


@pytest.mark.e2e  # the longest end-to-end runs: `python -m pytest -m e2e` (CI runs them)
@pytest.mark.slow
def test_mixed_precision_bf16_holds_frozen_backbones_in_bf16(weights, cvpr40, tmp_path, capsys):
    """bf16 autocast works on CPU: the same path as fp16 on CUDA (frozen bf16 UNet/VAE/text encoder,
    fp32 ControlNet under autocast in training, validation and generation)."""
    runs = tmp_path / "runs"
    args = ["run", "--method", "gwit", "--profile", "paper", "--dataset", "cvpr40", "--data-root", str(cvpr40),
            "--weights-root", str(weights), "--max-steps", "2", "--max-test-trials", "2", "--n-samples", "1",
            "--steps", "2", "--runs-dir", str(runs), "--cache-dir", str(tmp_path / "cache"), "--no-progress",
            "--checkpoint-every", "0", "--mixed-precision", "bf16", "--generate-batch-size", "1"]
    for item in SMALL_BATCHES["gwit"]:
        args += ["--set", item]
    assert main(args) == 0, capsys.readouterr().err
    (run_dir,) = [p for p in runs.iterdir() if not p.name.startswith(".")]
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    assert result["mixed_precision"] == "bf16" and result["backbones"]["dtype"] == "torch.bfloat16"
    assert len(list((run_dir / "samples").glob("*.png"))) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed with CUDA")
def test_fp16_without_cuda_is_a_one_line_error(tmp_path, capsys):
    assert main(["run", "--mixed-precision", "fp16", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "fp16 needs a CUDA device" in _one_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_every_backbone_implementation_passes_the_interface_check():
    from eegbench.backbones.paper import PaperBackbones
    from eegbench.params import SmallMetaBackbones

    for base in ("sd15", "sd21", "sd21-base"):
        check_backbones(PaperBackbones(base))
    check_backbones(SmallMetaBackbones())


def test_interface_check_names_what_is_missing():
    from eegbench.errors import ConfigError

    class Incomplete:
        profile, device, image_size = "paper", torch.device("cpu"), 64
        vae = text_embedder = image_embedder = torch.nn.Identity()
        denoiser = object()

    with pytest.raises(ConfigError, match="denoiser object lacks unet"):
        check_backbones(Incomplete())


def test_sd_tokenizer_config_is_required(weights, tmp_path):
    from eegbench.backbones.sd import check_folder
    from eegbench.errors import WeightsNotFoundError

    folder = tmp_path / FOLDERS["sd21"]
    shutil.copytree(weights / FOLDERS["sd21"], folder)
    (folder / "tokenizer" / "tokenizer_config.json").unlink()
    (folder / "tokenizer" / "special_tokens_map.json").unlink(missing_ok=True)
    with pytest.raises(WeightsNotFoundError, match="tokenizer/tokenizer_config.json"):
        check_folder("sd21", folder)


def test_shared_unet_loads_only_when_used_and_controlnet_starts_from_fp32(weights):
    from eegbench.datasets.cvpr40 import WNID_NAMES
    from eegbench.params import dataset_facts

    methods = get_plugin_manager().methods
    info = dataset_facts("paper")
    syn_cls = methods.get("synapse")
    syn_bb = paper_backbones_for(syn_cls, weights_root=weights, class_names=tuple(WNID_NAMES.values())[:40])
    syn_cls(syn_cls.default_config("paper"), info=info, backbones=syn_bb, device=torch.device("cpu"))
    assert syn_bb.denoiser._unet_module is None  # SYNAPSE fine-tunes its own copy only
    gwit_cls = methods.get("gwit")
    bb = paper_backbones_for(gwit_cls, weights_root=weights, class_names=("dog",), dtype=torch.bfloat16)
    gwit = gwit_cls(gwit_cls.default_config("paper"), info=info, backbones=bb, device=torch.device("cpu"))
    fp32 = bb.denoiser.new_unet()
    assert gwit.controlnet.net.conv_in.weight.dtype == torch.float32
    assert torch.equal(gwit.controlnet.net.conv_in.weight, fp32.conv_in.weight)  # not bf16-rounded
    assert bb.denoiser.unet.conv_in.weight.dtype == torch.bfloat16


# ---------------------------------------------------------------------------- the paper protocol
@pytest.mark.parametrize("method, steps", [("synapse", 250), ("gwit", 50)])
def test_paper_profile_protocol_is_four_samples_and_each_methods_published_steps(method, steps, weights, cvpr40,
                                                                                   tmp_path):
    from eegbench.protocol import EvalProtocol
    from eegbench.runner import RunConfig, generation_record, prepare

    cfg = RunConfig(method=method, profile="paper", dataset="cvpr40", data_root=cvpr40, weights_root=weights,
                    cache_dir=tmp_path / "cache", runs_dir=tmp_path / "runs")
    run = prepare(cfg)
    assert run.protocol.n_samples_per_trial == 4 and run.protocol.num_inference_steps is None
    assert run.generation == {"num_inference_steps": steps, "source": "published"}
    assert run.protocol.hash() != EvalProtocol().hash()  # never mixed with the small profile's 20 steps / 2 samples
    given = prepare(RunConfig(**{**cfg.__dict__, "num_inference_steps": 7, "n_samples_per_trial": 1}))
    assert given.generation == {"num_inference_steps": 7, "source": "protocol"}
    reference = get_plugin_manager().methods.get("class-prior")
    with pytest.raises(ConfigError, match="declares no published_steps; pass --steps N"):
        generation_record(reference, run.protocol)
    assert not (tmp_path / "runs").exists()
