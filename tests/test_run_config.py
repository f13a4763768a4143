"""RunConfig is declared once: flags, help defaults, identity, sweep ids and resume rules come from its fields."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from eegbench.errors import ConfigError
from eegbench.run_config import (
    IDENTITY_FIELDS,
    RUN_ID_FIELDS,
    RunConfig,
    add_run_arguments,
    config_from_args,
    config_from_record,
    config_record,
    option_of,
    resume_config,
    stated_fields,
)


def _parser(sweep: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser, sweep=sweep)
    return parser


def test_every_field_but_resume_has_a_flag_and_the_defaults_come_from_the_dataclass():
    parser = _parser()
    flags = {a.dest: a for a in parser._actions if a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert set(flags) == fields - {"resume"}
    assert config_from_args(parser.parse_args([])) == RunConfig()  # nothing stated: the dataclass defaults
    assert "(default: 16)" in flags["generate_batch_size"].help and "(default: synapse)" in flags["method"].help


def test_only_stated_flags_are_given_and_converted_to_field_types():
    args = _parser().parse_args(["--seed", "3", "--set", "a=1", "--set", "b=x", "--metric", "m1", "--no-progress",
                                 "--data-root", "/d", "--guidance-scale", "2.5"])
    stated = stated_fields(args)
    assert stated == {"seed": 3, "overrides": {"a": "1", "b": "x"}, "metrics": ("m1",), "progress": False,
                      "data_root": Path("/d"), "guidance_scale": 2.5}
    cfg = config_from_args(args)
    assert cfg.seed == 3 and cfg.method == "synapse" and cfg.generate_batch_size == 16


def test_identity_and_sweep_id_fields_follow_the_declarations():
    assert "seed" in IDENTITY_FIELDS and "overrides" in IDENTITY_FIELDS and "inception_weights" in IDENTITY_FIELDS
    assert not {"progress", "checkpoint_every", "generate_batch_size", "data_root", "runs_dir"} & set(IDENTITY_FIELDS)
    not_in_id = set(f.name for f in dataclasses.fields(RunConfig)) - set(RUN_ID_FIELDS)
    assert not_in_id == {"data_root", "weights_root", "cache_dir", "runs_dir", "inception_weights",
                         "classifier_weights", "progress", "run_id", "checkpoint_every", "resume",
                         "generate_batch_size"}
    assert option_of("seed").sweep == "list" and option_of("run_id").sweep == "omit"


def test_sweep_flags_take_lists_and_have_no_run_id():
    args = _parser(sweep=True).parse_args(["--method", "synapse,gwit", "--seed", "0-2"])
    assert args.method == "synapse,gwit" and args.seed == "0-2"
    with pytest.raises(SystemExit):
        _parser(sweep=True).parse_args(["--run-id", "x"])


def test_a_stored_record_reads_back_with_its_types():
    cfg = RunConfig(seed=2, data_root=Path("/d"), metrics=("a",), overrides={"k": "v"})
    back = config_from_record(json.loads(json.dumps(config_record(cfg), default=list)))
    assert back == cfg and isinstance(back.data_root, Path) and back.metrics == ("a",)


def test_resume_matches_identity_fields_replaces_paths_and_updates_session_options(tmp_path):
    stored = RunConfig(seed=1, overrides={"k": "v"}, data_root=Path("/old"), runs_dir=tmp_path, run_id="r")
    work = tmp_path / ".partial-r"
    work.mkdir()
    (work / "run.json").write_text(json.dumps({"run_config": config_record(stored)}, default=list))
    cfg = resume_config("r", tmp_path, {"seed": 1, "data_root": Path("/new"), "generate_batch_size": 4,
                                        "progress": False})
    assert cfg.resume and cfg.seed == 1 and cfg.data_root == Path("/new") and cfg.generate_batch_size == 4
    assert cfg.progress is False and cfg.overrides == {"k": "v"}
    with pytest.raises(ConfigError, match=r"seed \(run: 1, given: 2\)"):
        resume_config("r", tmp_path, {"seed": 2})
