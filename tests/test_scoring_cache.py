"""Scoring runs each network once per distinct image and keeps the features (eegbench.metrics.features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eegbench.errors import ConfigError, DataFormatError
from eegbench.evaluate import score_images
from eegbench.metrics.features import FeatureNetwork, image_digests, network_features
from eegbench.protocol import EvalProtocol

TINY = {"fid_feature_extractor": "eegbench-tiny-test", "is_feature_extractor": "eegbench-tiny-test-logits"}


def images(n: int, seed: int, size: int = 32) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=gen)
    return (F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False) * 255).round().to(
        torch.uint8).numpy()


class Counting:
    """A feature function that counts the images it sees."""

    def __init__(self):
        self.seen = 0

    def __call__(self, batch):
        self.seen += len(batch)
        return {"mean": batch.float().mean(dim=(2, 3)), "max": batch.float().amax(dim=(2, 3))}


def test_digests_are_per_image_content():
    x = torch.from_numpy(images(3, seed=0))
    d = image_digests(torch.cat([x, x[:1]]))
    assert len(set(d)) == 3 and d[0] == d[3] and all(len(h) == 64 for h in d)
    assert image_digests(x[:, :, :16, :16])[0] != d[0]  # shape is part of the digest


def test_network_features_cache_round_trip(tmp_path):
    fn = Counting()
    net = FeatureNetwork(key="count-w0", layers=("mean", "max"), fn=fn, batch_size=2)
    x = images(5, seed=1)
    first = network_features(net, x, cache_file=tmp_path / "f.safetensors", progress=False)
    assert fn.seen == 5 and first["mean"].shape == (5, 3) and first["max"].dtype == torch.float32
    again = network_features(net, x[[4, 0, 0]], cache_file=tmp_path / "f.safetensors", progress=False)
    assert fn.seen == 5  # every image was cached
    torch.testing.assert_close(again["mean"], first["mean"][[4, 0, 0]], rtol=0, atol=0)
    other = FeatureNetwork(key="count-w1", layers=("mean", "max"), fn=fn)
    network_features(other, x, cache_file=tmp_path / "f.safetensors", progress=False)
    assert fn.seen == 10  # a file of another network is not served


def test_network_features_errors():
    with pytest.raises(ConfigError, match="file-name-safe"):
        FeatureNetwork(key="a/b", layers=("f",), fn=lambda b: {"f": b})
    with pytest.raises(ConfigError, match="batch_size"):
        FeatureNetwork(key="k", layers=("f",), fn=lambda b: {"f": b}, batch_size=0)
    net = FeatureNetwork(key="bad", layers=("f",), fn=lambda b: {"f": b.float()})  # 4-D, not (B, D)
    with pytest.raises(DataFormatError, match="layer 'f' must be float"):
        network_features(net, images(2, seed=0), progress=False)
    with pytest.raises(DataFormatError, match="uint8"):
        network_features(net, images(2, seed=0).astype(np.float32), progress=False)


def _score(gen, ref, train, cache, gen_cache, protocol, embedder):
    t = len(ref)
    return score_images(gen.reshape(t, 2, *gen.shape[1:]), ref, protocol=protocol, labels=np.arange(t) % 2,
                        trial_ids=[f"t{i}" for i in range(t)], n_classes=2, train_images=train,
                        train_labels=np.arange(len(train)) % 2, image_embedder=embedder, cache_dir=cache,
                        reference_cache_name="set", progress=False, generated_cache_dir=gen_cache)


def test_one_efficientnet_pass_gives_the_is_logits_and_the_probe_features(tmp_path, monkeypatch):
    from eegbench.backbones.embedders import EfficientNetLite0Features

    embedder = EfficientNetLite0Features.from_package().eval().requires_grad_(False)
    gen, distinct, train = images(12, seed=2), images(3, seed=3), images(4, seed=4)
    ref = distinct[[0, 1, 2, 0, 1, 2]]
    with torch.no_grad():
        direct = {name: embedder(torch.from_numpy(x)) for name, x in (("gen", gen), ("ref", ref), ("train", train))}
    seen = []
    original = EfficientNetLite0Features.forward
    monkeypatch.setattr(EfficientNetLite0Features, "forward", lambda self, x: seen.append(len(x)) or original(self, x))
    protocol = EvalProtocol(n_samples_per_trial=2, image_size=32, fid_feature_extractor="eegbench-tiny-test",
                            is_feature_extractor="efficientnet-lite0-imagenet")
    features = {}
    import eegbench.metrics.probe as probe_mod

    original_probe = probe_mod.probe_accuracy

    def spy(train_f, train_l, gen_f, *args, reference_features=None, **kw):
        features.update(gen=gen_f, ref=reference_features, train=train_f)
        return original_probe(train_f, train_l, gen_f, *args, reference_features=reference_features, **kw)

    monkeypatch.setattr(probe_mod, "probe_accuracy", spy)
    metrics = _score(gen, ref, train, tmp_path / "cache", tmp_path / "run" / "features", protocol, embedder)
    assert sum(seen) == 12 + 3 + 4  # generated once (IS and probe), each distinct reference image once, train
    for name in ("gen", "ref", "train"):
        torch.testing.assert_close(torch.from_numpy(features[name]), direct[name].float(), rtol=1e-4, atol=1e-5)
    assert metrics["is"]["value"] >= 1.0 and metrics["probe_accuracy"]["n"] == 12


def test_second_scoring_runs_no_network_and_gives_the_same_numbers(tmp_path, monkeypatch):
    from eegbench.metrics.fidelity import TinyTestFeatureExtractor
    from eegbench.metrics.isc import TinyTestLogits

    gen, ref, train = images(8, seed=5), images(4, seed=6), images(4, seed=7)
    protocol = EvalProtocol(n_samples_per_trial=2, image_size=32, **TINY)
    embed = Counting()

    class Embedder:  # names its weights, so its features are cached too
        weights_sha256 = "ab" * 32

        def __call__(self, b):
            return embed(b)["mean"]

    embedder = Embedder()

    first = _score(gen, ref, train, tmp_path / "cache", tmp_path / "run" / "features", protocol, embedder)
    assert sorted(p.name.split("-w")[0] for p in (tmp_path / "run" / "features").glob("*.safetensors")) == [
        "eegbench-tiny-test", "eegbench-tiny-test-logits", "probe-Embedder"]
    assert embed.seen == 8 + 4 + 4
    seen = []
    for cls in (TinyTestFeatureExtractor, TinyTestLogits):
        original = cls.forward
        monkeypatch.setattr(cls, "forward", lambda self, x, original=original: seen.append(len(x)) or original(self, x))
    second = _score(gen, ref, train, tmp_path / "cache", tmp_path / "run" / "features", protocol, embedder)
    assert seen == [] and embed.seen == 8 + 4 + 4
    for key in ("fid", "kid", "is", "probe_accuracy"):
        assert second[key]["value"] == first[key]["value"], key


def test_tf_inception_features_do_not_depend_on_the_batch_size():
    """The scoring batch (``eegbench.scoring.FEATURE_BATCH``) is a speed choice only: the FID network's
    pool3 features of an image do not depend on the batch it is computed in (the per-image feature
    cache relies on it). Bit-equal on the machines measured; compared to float rounding here, since
    convolution kernels may pick another algorithm for another batch size on another CPU."""
    from eegbench.metrics import fidelity
    from eegbench.scoring import FEATURE_BATCH

    x = torch.from_numpy(images(FEATURE_BATCH + 3, seed=4, size=64))
    out = {}
    for batch in (5, FEATURE_BATCH):
        net, layer, _ = fidelity.fid_network(fidelity.FIDHELPER_EXTRACTOR, None, batch_size=batch)
        out[batch] = network_features(net, x, progress=False)[layer]
    assert out[5].shape == (len(x), 2048)
    torch.testing.assert_close(out[5], out[FEATURE_BATCH], rtol=1e-4, atol=1e-5)
