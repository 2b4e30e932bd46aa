"""`train.selection`: training never sees the holdout (train's last hours), `best/` and early stopping are
chosen on it, and validation is only reported."""

from __future__ import annotations

import csv
import json

import numpy as np
import polars as pl
import pytest

from mtnews.config import load_config
from mtnews.errors import ConfigError
from mtnews.train.loop import Trainer, train


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _cfg(tiny_bert, *extra):
    return load_config(None, ["--model.pretrained", str(tiny_bert), "--train.device", "cpu",
                              "--model.max_title_length", "16", "--data.history_size", "5", "--train.batch_size", "8",
                              "--data.eval_impressions", "30", "--train.checkpoint_every", "100", *extra])


def _evals(run) -> list[dict]:
    with open(run / "eval.csv") as f:
        return list(csv.DictReader(f))


def test_training_samples_come_from_the_fit_part_and_the_holdout_is_the_last_day(small_synth, tiny_bert, tmp_path):
    trainer = Trainer(_cfg(tiny_bert), small_synth, tmp_path / "run", progress=False)
    log = pl.read_parquet(small_synth / "train" / "behaviors.parquet")
    cutoff = log["impression_time"].max() - np.timedelta64(24, "h")
    late = set(log.filter(pl.col("impression_time") >= cutoff)["impression_id"].to_list())
    assert trainer.holdout.cutoff == cutoff and 0 < len(late) < log.height
    trained_on = set(trainer.train_split.train_samples(4, 0).impression_id.tolist())
    assert trained_on and not trained_on & late  # no sample from the holdout's impressions
    scored = set(trainer._validation_impressions("holdout").impression_id.tolist())
    assert scored and scored <= late and len(scored) == 30  # data.eval_impressions caps it


def test_best_is_chosen_on_the_holdout_and_validation_is_only_reported(small_synth, tiny_bert, tmp_path):
    run = tmp_path / "run"
    summary = train(_cfg(tiny_bert, "--train.max_steps", "6", "--train.eval_every", "2", "--train.lr", "1e-3"),
                    small_synth, run, progress=False)
    rows = _evals(run)
    holdout = [r for r in rows if r["split"] == "holdout"]
    assert [int(r["step"]) for r in holdout] == [2, 4, 6]
    assert [(int(r["step"]), r["split"]) for r in rows if r["split"] != "holdout"] == [(6, "validation")]
    best = max(holdout, key=lambda r: float(r["auc"]))  # the first of equal maxima: later ties do not replace it
    step = json.loads((run / "best" / "step.json").read_text())
    assert step["step"] == summary["best_step"] == int(best["step"])
    assert summary["best_auc"] == pytest.approx(float(best["auc"]), abs=1e-12)
    assert summary["final_eval"]["auc"] == pytest.approx(float(rows[-1]["auc"]), abs=1e-12)
    assert summary["selected_on"].startswith("holdout (train, last 24 h, cutoff 2023-")
    assert step["selected_on"] == summary["selected_on"] and "30 impressions scored" in summary["selected_on"]
    assert summary["stopped_early"] is False


def test_validation_curve_scores_validation_at_every_evaluation(small_synth, tiny_bert, tmp_path):
    run = tmp_path / "run"
    train(_cfg(tiny_bert, "--train.max_steps", "4", "--train.eval_every", "2",
               "--train.selection.validation_curve", "true"), small_synth, run, progress=False)
    assert [(int(r["step"]), r["split"]) for r in _evals(run)] == [
        (2, "holdout"), (2, "validation"), (4, "holdout"), (4, "validation")]


def test_early_stopping_after_patience_evaluations_without_a_better_holdout_auc(small_synth, tiny_bert, tmp_path):
    # Rates far below float32 resolution leave the weights unchanged, so the holdout AUC never improves
    # after the first evaluation: patience 2 stops at step 3 (evaluations at 1, 2, 3).
    cfg = _cfg(tiny_bert, "--train.max_steps", "10", "--train.eval_every", "1", "--train.lr", "1e-20",
               "--train.head_lr", "1e-20", "--train.weight_decay", "0", "--train.selection.patience", "2")
    run = tmp_path / "run"
    summary = train(cfg, small_synth, run, progress=False)
    assert summary["steps"] == 3 and summary["stopped_early"] is True and summary["best_step"] == 1
    rows = _evals(run)
    assert [(int(r["step"]), r["split"]) for r in rows] == [
        (1, "holdout"), (2, "holdout"), (3, "holdout"), (3, "validation")]  # validation reported at the stop
    state = json.loads((run / "checkpoints" / "step-3" / "state.json").read_text())
    assert state["stopped"] is True and state["since_best"] == 2 and state["best_step"] == 1
    again = train(cfg, small_synth, run, resume=True, progress=False)  # a stopped run stays stopped
    assert again["steps"] == 3 and again["stopped_early"] is True
    assert len(_evals(run)) == len(rows)


def test_a_train_log_shorter_than_the_holdout_is_one_config_error(tiny_dataset, tiny_bert, tmp_path):
    root = tiny_dataset()  # six impressions, one minute apart
    with pytest.raises(ConfigError, match=r"train.selection.holdout_hours: 24.0 h leaves 0 impressions to train "
                                          r"on and 6 to select on; the train log in .*behaviors.parquet spans 0.1 h"):
        Trainer(_cfg(tiny_bert), root, tmp_path / "run", progress=False)


@pytest.mark.parametrize("key,value,needle", [("holdout_hours", "0", "train.selection.holdout_hours: must be > 0"),
                                              ("patience", "-1", "train.selection.patience: must be >= 0"),
                                              ("patience", "1.5", "train.selection.patience: expected an integer")])
def test_bad_selection_settings_are_one_config_error(key, value, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(None, [f"--train.selection.{key}", value])
