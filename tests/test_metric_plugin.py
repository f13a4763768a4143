"""Metrics are plugins: a third party's metric is registered, scored from the protocol's list, and reaches
the leaderboard with the label and direction stored in the results; the core's own go the same way."""

from __future__ import annotations

import json

import numpy as np
import pytest

from eegbench import hookimpl
from eegbench.errors import PluginError
from eegbench.metric import Metric
from eegbench.protocol import DEFAULT_METRICS, EvalProtocol


class MeanBrightness(Metric):
    """Mean pixel value of the generated images, in [0, 1] (a third party's metric)."""

    key = "mean_brightness"
    label = "Mean brightness (plugin)"
    higher_is_better = None
    needs = ("generated",)
    decimals = 4

    def compute(self, inputs):
        return {"value": float(inputs.generated.mean() / 255.0), "n_images": int(inputs.flat_generated().shape[0])}


class NeedsWNIDs(Metric):
    key = "needs_wnids"
    label = "Needs WNIDs"
    higher_is_better = True
    needs = ("generated", "imagenet_classes")

    def compute(self, inputs):  # never called without WNIDs
        raise AssertionError("computed although its needs are not met")


class WrongKey(Metric):
    key = "something_else"
    label = "Wrong key"


class _Plugin:
    @staticmethod
    @hookimpl
    def eegbench_register_metrics(registry):
        registry.add("mean_brightness", MeanBrightness, summary="mean pixel value of the generated images")
        registry.add("needs_wnids", NeedsWNIDs, summary="test: needs ImageNet classes")
        registry.add("wrong_key", WrongKey, summary="test: declares another key")
        registry.add("not_a_metric", "json:dumps", summary="test: not a Metric")


@pytest.fixture
def plugins():
    from eegbench.plugins import get_plugin_manager

    return get_plugin_manager(extra_plugins=[_Plugin])


def _tiny_score(plugins, metrics, tmp_path):
    from eegbench.evaluate import score_images
    from eegbench.metrics import fidelity, isc

    rng = np.random.default_rng(0)
    gen = rng.integers(0, 256, (6, 2, 3, 16, 16), dtype=np.uint8)
    ref = rng.integers(0, 256, (6, 3, 16, 16), dtype=np.uint8)
    protocol = EvalProtocol(image_size=16, fid_feature_extractor=fidelity.TINY_TEST_EXTRACTOR,
                            is_feature_extractor=isc.TINY_LOGITS_EXTRACTOR, metrics=metrics)
    out = score_images(gen, ref, protocol=protocol, labels=np.arange(6) % 2, trial_ids=[f"t{i}" for i in range(6)],
                       n_classes=2, cache_dir=tmp_path, reference_cache_name=None, progress=False, plugins=plugins)
    return out, gen


def test_core_protocol_metrics_are_registered_like_any_plugin_and_listed(plugins, capsys):
    from eegbench.cli import main
    from eegbench.metric import get_metric

    for key in DEFAULT_METRICS:
        assert plugins.metrics.entry(key).plugin == "eegbench.builtin"
        assert isinstance(get_metric(plugins, key), Metric)
    assert main(["ls", "metrics"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert set(DEFAULT_METRICS) <= listed


def test_scoring_runs_exactly_the_protocols_metric_list_from_the_registry(plugins, tmp_path):
    out, gen = _tiny_score(plugins, ("fid", "mean_brightness", "needs_wnids"), tmp_path)
    assert list(out) == ["fid", "mean_brightness", "needs_wnids"]  # nothing else, in the protocol's order
    rec = out["mean_brightness"]
    assert rec["value"] == pytest.approx(gen.mean() / 255.0) and rec["n_images"] == 12
    assert rec["label"] == "Mean brightness (plugin)" and rec["higher_is_better"] is None and rec["decimals"] == 4
    assert out["needs_wnids"]["value"] is None and "WNID" in out["needs_wnids"]["skipped"]


def test_unknown_or_badly_declared_metrics_fail_with_a_clear_error(plugins, tmp_path):
    with pytest.raises(PluginError, match="unknown metric 'mean_brigthness'.*mean_brightness"):
        _tiny_score(plugins, ("mean_brigthness",), tmp_path)
    with pytest.raises(PluginError, match="declares key 'something_else'"):
        _tiny_score(plugins, ("wrong_key",), tmp_path)
    with pytest.raises(PluginError, match="not an eegbench.metric.Metric subclass"):
        _tiny_score(plugins, ("not_a_metric",), tmp_path)


def test_protocol_metric_list_is_hashed_and_extended_by_metric_flag(plugins):
    from eegbench.runner import protocol_metrics

    extended = protocol_metrics(["mean_brightness"], plugins)
    assert extended == (*DEFAULT_METRICS, "mean_brightness")
    assert EvalProtocol(metrics=extended).hash() != EvalProtocol().hash()
    assert EvalProtocol.from_dict(json.loads(json.dumps(EvalProtocol(metrics=extended).to_dict()))) == \
        EvalProtocol(metrics=extended)
    with pytest.raises(PluginError, match="unknown metric"):
        protocol_metrics(["nope"], plugins)


def test_leaderboard_takes_a_plugin_metrics_label_and_direction_from_the_results(tmp_path):
    from test_compare import result, write_run

    from eegbench.reports import compare
    from eegbench.results import load_results

    runs = tmp_path / "runs"
    for method, base in (("alpha", 0.2), ("beta", 0.6)):
        for seed in range(3):
            r = result(method, seed)
            r["metrics"]["mean_brightness"] = {"value": base + 0.01 * seed, "label": "Mean brightness (plugin)",
                                               "higher_is_better": None, "interval": "runs", "decimals": 4,
                                               "scale": 100.0}
            write_run(runs, r, images=False)
    compare(load_results([runs]), tmp_path / "reports", formats=("markdown", "json"), figures=False)
    md = next((tmp_path / "reports").glob("leaderboard-*.md")).read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    assert "Mean brightness (plugin) |" in header or "Mean brightness (plugin)  " in header  # no arrow: no direction
    assert "Mean brightness (plugin) ↑" not in md and "Mean brightness (plugin) ↓" not in md
    assert "20.0000" in md or "21.0000" in md  # the stored scale and decimals
    board = json.loads(next((tmp_path / "reports").glob("leaderboard-*.json")).read_text())
    spec = {m["key"]: m for m in board["metrics"]}["mean_brightness"]
    assert spec["label"] == "Mean brightness (plugin)" and spec["higher_is_better"] is None
    # no direction: a pair is compared but neither is called better
    pairs = [p for p in board["pairs"] if p["metric"] == "mean_brightness"]
    assert pairs and all(p["better"] is None for p in pairs)
