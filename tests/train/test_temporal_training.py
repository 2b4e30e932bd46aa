"""MTRec-T through training and every scoring path, on the tiny BERT and the small synthetic dataset.

* Gradient surgery never touches the branch: after a surgery step its parameters hold exactly the main
  task's gradient (params and representation space; full fine-tuning and LoRA).
* One temporal run (4 steps, checkpoints at 2 and 4) is trained once and then: loads with its signal
  options, scores the validation split through `evaluate --run` exactly as training's validation did, scores
  a frame through `Recommender.score` as evaluate does, resumes exactly from step 2, and predicts the test
  split byte-identically when interrupted and resumed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from mtnews.config import load_config
from mtnews.data.dataset import load_split
from mtnews.data.signals import SplitSignals
from mtnews.model.build import build_model
from mtnews.model.run import RUN_JSON, load_run
from mtnews.model.temporal import signal_options
from mtnews.model.tokens import tokenize_titles
from mtnews.train.batching import BatchBuilder, sample_signals
from mtnews.train.step import GradientEngine

HISTORY = 8


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _args(tiny_bert, *extra) -> list[str]:
    return ["--model.pretrained", str(tiny_bert), "--train.device", "cpu", "--model.max_title_length", "12",
            "--data.history_size", str(HISTORY), "--model.temporal.enabled", "true", *extra]


@pytest.mark.parametrize("mode,space,lora", [("project-both", "params", False), ("pcgrad", "params", True),
                                             ("project-aux", "representation", False)])
def test_surgery_leaves_the_branch_exactly_the_main_task_gradient(small_synth, tiny_bert, mode, space, lora):
    cfg = load_config(None, _args(tiny_bert, "--train.surgery", mode, "--train.surgery_space", space,
                                  "--model.lora.enabled", str(lora).lower(), "--tasks.category", "0.7",
                                  "--tasks.sentiment", "0.4"))
    split = load_split(small_synth, "train", HISTORY)
    torch.manual_seed(0)
    model, tok = build_model(cfg, split.articles.vocab)
    model.eval()
    with torch.no_grad():  # non-zero output and gate weights, so every branch parameter has a gradient
        for p in model.temporal.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    branch = dict(model.temporal.named_parameters())
    assert not {id(p) for p in branch.values()} & {id(p) for p in model.shared_parameters()}
    assert {id(p) for p in branch.values()} <= {id(p) for p in model.head_parameters()["main"]}

    samples = split.train_samples(3, seed=0)
    signals = SplitSignals.load(small_synth, "train", signal_options(cfg.model.temporal, training=True))
    tokens = tokenize_titles(split.articles.titles, tok, 12)
    builder = BatchBuilder(samples, split.histories, split.articles, tokens,
                           signals=sample_signals(signals, samples, split.articles))
    batches = [builder(np.arange(0, 6)), builder(np.arange(6, 12))]

    main = sum(model(b)[1]["main"] / len(batches) for b in batches)
    want = torch.autograd.grad(main, list(branch.values()))
    model.zero_grad(set_to_none=True)
    stats = GradientEngine(model, model, Accelerator(cpu=True), 0).step(batches)
    assert 0.0 <= stats.projected <= 1.0  # the surgery really ran
    for (name, p), g in zip(branch.items(), want):
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-8, msg=name)


@pytest.fixture(scope="module")
def temporal_run(tmp_path_factory, small_synth, tiny_bert) -> tuple[Path, dict]:
    from mtnews.train.loop import train

    out = tmp_path_factory.mktemp("temporal") / "run"
    cfg = load_config(None, _args(tiny_bert, "--train.max_steps", "4", "--train.batch_size", "8",
                                  "--train.checkpoint_every", "2", "--train.eval_every", "0",
                                  "--data.eval_impressions", "0", "--train.surgery", "project-both",
                                  "--model.temporal.lr", "0.01"))
    return out, train(cfg, small_synth, out, progress=False)


def test_a_temporal_run_loads_and_scores_as_training_validated(temporal_run, small_synth, trained_run):
    from mtnews.evaluate.split_scoring import score_split

    out, summary = temporal_run
    run = load_run(out, weights=out / "final" / "model.safetensors")
    assert run.model.temporal is not None
    assert run.signal_options == signal_options(run.cfg.model.temporal)  # scoring: none of the split's clicks hidden
    recorded = json.loads((out / RUN_JSON).read_text())["temporal"]
    assert recorded["names"] == list(run.signal_options.names())
    result = score_split(small_synth, "validation", run=run, chunk=37)
    assert result["auc"] == pytest.approx(summary["final_eval"]["auc"], abs=1e-9)
    assert result["signals"]["window"] == "past" and [Path(s).name for s in result["signals"]["sources"]] == ["train", "validation"]
    # A content-only run (written without run.json's "temporal" entry) loads without the branch.
    assert load_run(trained_run).signal_options is None and load_run(trained_run).model.temporal is None


def test_recommender_score_equals_evaluate_on_the_same_rows(temporal_run, small_synth):
    from mtnews.data.history import load_histories
    from mtnews.data.impressions import build_eval_impressions
    from mtnews.data.layout import split_paths
    from mtnews.evaluate.run_scorer import ModelScorer
    from mtnews.recommender import InvalidRequest, Recommender

    out, _ = temporal_run
    rec = Recommender.from_run(out, data=small_synth, split="validation", device="cpu")
    paths = split_paths(small_synth, "validation")
    frame = pl.read_parquet(paths.behaviors).slice(40, 25)
    got = rec.score(frame)["scores"].explode().to_numpy()

    articles = rec.run.load_dataset_articles(paths.articles)
    histories = load_histories(paths.history, articles, rec.run.history_size)
    scorer = ModelScorer.for_split(rec.run, paths, articles, histories)
    want = scorer.score(build_eval_impressions(frame, articles, histories))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    with pytest.raises(InvalidRequest, match="impression_time"):
        rec.score(frame.drop("impression_time"))
    bare = Recommender.from_run(out, device="cpu")
    with pytest.raises(InvalidRequest, match="signals="):
        bare.score(frame)


def test_exact_resume_with_the_branch(temporal_run, small_synth, tmp_path):
    from mtnews.train.loop import train

    out, _ = temporal_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    for gone in ("checkpoints/step-4", "final", "best", "summary.json"):
        shutil.rmtree(copy / gone, ignore_errors=True) if (copy / gone).is_dir() else (copy / gone).unlink(missing_ok=True)
    train(load_config(copy / "config.yaml"), small_synth, copy, resume=True, progress=False)
    a, b = load_file(out / "final" / "model.safetensors"), load_file(copy / "final" / "model.safetensors")
    assert set(a) == set(b) and any(k.startswith("temporal.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow  # three predictions of the test split: ~8 s on the loaded 2-core box
def test_predict_resumes_byte_identically_with_the_branch(temporal_run, small_synth, tmp_path, monkeypatch):
    from mtnews.evaluate.predict import predict
    from mtnews.evaluate.run_scorer import ModelScorer

    out, _ = temporal_run
    reference = tmp_path / "reference.zip"
    predict(out, small_synth, reference, chunk_rows=50, device="cpu")
    original, calls = ModelScorer.score, {"n": 0}

    def crash_on_third(self, imps):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return original(self, imps)

    monkeypatch.setattr(ModelScorer, "score", crash_on_third)
    target = tmp_path / "p.zip"
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict(out, small_synth, target, chunk_rows=50, device="cpu")
    monkeypatch.undo()
    result = predict(out, small_synth, target, chunk_rows=50, device="cpu", resume="require")
    assert result["resumed_from_row"] == 100
    assert target.read_bytes() == reference.read_bytes()


def test_replaying_the_log_through_the_api_scores_as_evaluate(temporal_run, small_synth):
    """Serve a temporal run whose live counters start without the validation log; for each impression in
    time order, recommend its in-view list at its time, then post its events: the scores equal evaluate's."""
    from datetime import datetime, timezone

    from fastapi.testclient import TestClient

    from mtnews.data.history import load_histories
    from mtnews.data.impressions import build_eval_impressions
    from mtnews.data.layout import split_paths
    from mtnews.data.live_signals import LiveSignals, startup_parts
    from mtnews.data.signals import read_article_times
    from mtnews.evaluate.run_scorer import ModelScorer
    from mtnews.recommender import Recommender
    from mtnews.serve.app import create_app

    out, _ = temporal_run
    run = load_run(out)
    paths = split_paths(small_synth, "validation")
    articles = run.load_dataset_articles(paths.articles)
    histories = load_histories(paths.history, articles, run.history_size)
    live = LiveSignals.from_parts(startup_parts(small_synth, "validation", with_split_log=False), run.signal_options,
                                  read_article_times(paths.articles))
    rec = Recommender(run, articles, histories, signals=live, index=False)
    b = (pl.read_parquet(paths.behaviors).with_row_index("row")
         .with_columns(pl.col("impression_time").cast(pl.Datetime("us")).cast(pl.Int64).alias("t"))
         .sort("t", "row").head(120))  # a time-ordered prefix: every earlier event of the split is replayed
    known = set(histories.user_ids.tolist())

    def iso(us: int) -> str:
        return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat().replace("+00:00", "Z")

    got, rows = [], []
    with TestClient(create_app(rec, max_list=64)) as c:
        for (t,), g in b.group_by("t", maintain_order=True):
            for row, user, inview in zip(g["row"], g["user_id"], g["article_ids_inview"]):
                if user not in known:
                    continue  # the API recommends for users with a history; evaluate's cold users differ
                r = c.post(f"/v1/users/{user}/recommend", json={"candidates": list(inview), "impression_time": iso(t)})
                assert r.status_code == 200, r.text
                by_id = {x["article_id"]: x["score"] for x in r.json()["results"]}
                got.append([by_id[a] for a in inview])
                rows.append(row)
            for inview, clicked in zip(g["article_ids_inview"], g["article_ids_clicked"]):
                r = c.post("/v1/events", json={"inview": list(inview), "clicked": list(clicked), "impression_time": iso(t)})
                assert r.status_code == 200, r.text
    assert len(rows) > 50
    frame = pl.read_parquet(paths.behaviors).with_row_index("row")
    picked = frame.filter(pl.col("row").is_in(rows)).sort(pl.col("row").replace_strict({r: i for i, r in enumerate(rows)}))
    imps = build_eval_impressions(picked.drop("row"), articles, histories)
    want = ModelScorer.for_split(run, paths, articles, histories).score(imps)
    np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-5, atol=1e-5)
