"""Per-variant learning rates: defaults, the experiment's `lr` settings, and a grid chosen on the holdout.

The grid test runs `mtnews experiment` end to end with a fake trainer (it writes a run directory whose
summary.json holds a holdout AUC from a table) and a fake validation scorer whose AUCs prefer *other* rates,
so a choice made on validation, or on the first or last rate, would pick another run than the holdout's best.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from mtnews.cli import main
from mtnews.config import load_config
from mtnews.errors import ConfigError
from mtnews.experiment.rates import FULL_FINETUNE_LR, choose_rates, parse_rates, variant_rates
from mtnews.experiment.runner import plan_runs
from mtnews.experiment.variants import ORDER, VARIANTS

QUICK = Path(__file__).resolve().parents[2] / "configs" / "experiment_quick.yaml"
FULL = QUICK.with_name("experiment_full.yaml")

# (variant, seed, lr) -> (holdout AUC the fake trainer reports, validation AUC the fake scorer reports)
AUCS = {
    ("mtrec", 42, 2e-3): (0.61, 0.70),
    ("no-lora", 42, 1e-5): (0.55, 0.80),  # validation's favourite, not the holdout's
    ("no-lora", 42, 2e-5): (0.60, 0.50),
    ("no-lora", 42, 5e-5): (0.58, 0.60),
    ("mtrec", 43, 2e-3): (0.62, 0.71),
    ("no-lora", 43, 1e-5): (0.57, 0.52),
    ("no-lora", 43, 2e-5): (0.56, 0.53),
    ("no-lora", 43, 5e-5): (0.59, 0.51),  # seed 43 picks another rate than seed 42
}


def _variant(cfg) -> str:
    return "mtrec" if cfg.model.lora.enabled else "no-lora"


@pytest.fixture
def fakes(monkeypatch):
    trained = []

    def fake_train(cfg, data, out, resume=False, progress=True, given=None):
        out = Path(out)
        (out / "final").mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(cfg.to_yaml())
        key = (_variant(cfg), cfg.train.seed, cfg.train.lr)
        trained.append(key)
        (out / "summary.json").write_text(json.dumps({"best_auc": AUCS[key][0], "selected_on": "holdout (fake)"}))

    class FakeEvaluator:
        def __init__(self, data, device):
            pass

        def __call__(self, spec):
            auc = AUCS[(spec.variant, spec.seed, spec.lr)][1] if spec.trained else 0.5
            return {"auc": auc, "mrr": auc / 2, "ndcg@5": auc / 3, "ndcg@10": auc / 4, "impressions": 10}

    monkeypatch.setattr("mtnews.train.loop.train", fake_train)
    monkeypatch.setattr("mtnews.experiment.runner.Evaluator", FakeEvaluator)
    return trained


@pytest.mark.filterwarnings("ignore:No artists with labels")  # the fake runs log no gradient cosines to plot
def test_the_grid_picks_the_rate_with_the_best_holdout_auc_and_rows_carry_their_rate(fakes, small_synth, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"experiment": {"seeds": 2, "variants": "random,mtrec,no-lora",
                                                     "lr": {"full": [1e-5, 2e-5, 5e-5]}},
                                      "train": {"lr": 2e-3, "device": "cpu"}}))
    out = tmp_path / "exp"
    assert main(["experiment", "--data", str(small_synth), "--out", str(out), "--config", str(config)]) == 0
    assert sorted(fakes) == sorted(AUCS)  # every rate of the grid trained once per seed
    assert (out / "runs" / "no-lora" / "lr-2e-05" / "seed-42" / "final").is_dir()
    assert (out / "runs" / "mtrec" / "seed-42" / "final").is_dir()  # one rate: the usual layout

    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 + len(AUCS)  # random plus every trained run, chosen or not
    chosen = {(r["variant"], int(r["seed"])): float(r["lr"]) for r in rows if r["seed"] and r["selected"] == "True"}
    assert chosen == {("mtrec", 42): 2e-3, ("mtrec", 43): 2e-3, ("no-lora", 42): 2e-5, ("no-lora", 43): 5e-5}
    for r in rows:
        if r["seed"]:
            holdout, validation = AUCS[(r["variant"], int(r["seed"]), float(r["lr"]))]
            assert float(r["holdout_auc"]) == holdout and float(r["auc"]) == validation

    report = (out / "report.md").read_text()
    # Table 1 averages the chosen runs (no-lora: 0.50 and 0.51 on validation) and names their rates.
    assert "| no-lora | 2 | 2e-05, 5e-05 (of 1e-05, 2e-05, 5e-05) | 0.5050 ± 0.0071 |" in report
    assert "| **mtrec** | 2 | 0.002 | 0.7050 ± 0.0071 |" in report
    assert "| no-lora | 42 | 1e-05 | 0.5500 | 0.8000 | no |" in report  # the grid table, validation for reference
    assert "| no-lora | 43 | 5e-05 | 0.5900 | 0.5100 | **yes** |" in report


def test_choose_rates_keeps_the_first_of_equal_holdout_aucs_and_passes_baselines_through():
    results = [{"variant": "random", "seed": None, "metrics": {}},
               {"variant": "no-lora", "seed": 1, "lr": 1e-5, "holdout_auc": 0.6},
               {"variant": "no-lora", "seed": 1, "lr": 2e-5, "holdout_auc": 0.6},
               {"variant": "no-lora", "seed": 1, "lr": 5e-5, "holdout_auc": float("nan")}]
    got = choose_rates(results)
    assert [(r["variant"], r.get("lr")) for r in got] == [("random", None), ("no-lora", 1e-5)]
    assert got[1]["lr_grid"] == [1e-5, 2e-5, 5e-5]


def test_full_finetuning_variants_default_to_their_own_rate(tmp_path):
    from mtnews.experiment.settings import load_experiment_config

    base, settings = load_experiment_config(str(QUICK), [])
    assert not settings["lr"]  # the quick config uses the per-variant defaults
    runs = plan_runs(tmp_path, base, [v for v in ORDER if v not in ("oracle", "+subcat")], 1)
    rates = {r.variant: r.cfg.train.lr for r in runs if r.trained}
    assert rates.pop("no-lora") == FULL_FINETUNE_LR == 2e-5
    trained = [v for v in ORDER if v not in ('oracle', '+subcat', 'no-lora') and VARIANTS[v].trained]
    assert set(rates.values()) == {base.train.lr} and sorted(rates) == sorted(trained)  # LoRA: the base rate
    assert all(r.dir.parent.name == r.variant for r in runs if r.trained)  # no grid: runs/<variant>/seed-<s>
    # A variant without LoRA is full fine-tuning whatever its name: the group default follows the config.
    assert variant_rates(base, "no-lora", {"lora": [1e-3]}) == [FULL_FINETUNE_LR]
    assert variant_rates(base, "no-lora", {"full": [3e-5], "no-lora": [4e-5]}) == [4e-5]  # the variant's own wins
    assert variant_rates(base, "pcgrad", {"lora": [1e-3, 3e-3]}) == [1e-3, 3e-3]


@pytest.mark.parametrize("spec,needle", [
    ([1e-5], "expected a mapping"),
    ({"no-such": 1e-5}, "experiment.lr.no-such: not a trained variant or group"),
    ({"random": 1e-5}, "experiment.lr.random: not a trained variant"),
    ({"mtrec": -1e-3}, "experiment.lr.mtrec: expected positive learning rates"),
    ({"mtrec": "fast"}, "expected positive learning rates, got 'fast'"),
    ({"mtrec": []}, "expected one rate or a list of distinct rates"),
    ({"mtrec": [1e-3, 1e-3]}, "expected one rate or a list of distinct rates"),
])
def test_bad_lr_settings_are_one_config_error(spec, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_rates(spec, "exp.yaml")


def test_a_stage_rate_that_would_override_the_variants_is_refused(tmp_path):
    base = load_config(None, {"train": {"lr": 2e-3, "stages": [{"steps": 2, "lr": 1e-3}]}})
    with pytest.raises(ConfigError, match=r"train.stages\[0\].lr: 0.001 would replace variant no-lora's"):
        plan_runs(tmp_path, base, ["no-lora"], 1)


def test_the_full_config_grids_every_trained_variant_and_loads():
    from mtnews.experiment.settings import load_experiment_config

    base, settings = load_experiment_config(str(FULL), [])
    for v in ORDER:
        if VARIANTS[v].trained:
            assert len(variant_rates(base, v, settings["lr"])) >= 2, v
