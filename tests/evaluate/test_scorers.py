"""Baseline scorers and `mtnews evaluate` through the CLI, on synthetic data with a known oracle."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from mtnews.cli import main
from mtnews.data.articles import load_articles
from mtnews.data.dataset import load_split
from mtnews.data.layout import split_paths
from mtnews.errors import DataError
from mtnews.evaluate.scorers import OracleScorer, PopularityScorer
from mtnews.evaluate.submission import read_predictions


@pytest.fixture(scope="module")
def val(small_synth):
    articles = load_articles(small_synth / "articles.parquet")
    return load_split(small_synth, "validation", 10, articles).eval_impressions()


def evaluate(capsys, *args) -> tuple[int, str]:
    rc = main(["evaluate", *args])
    return rc, capsys.readouterr().err


def test_baseline_ordering_oracle_popularity_random(small_synth, tmp_path, capsys):
    out = {}
    for scorer in ("random", "popularity", "oracle"):
        rc, err = evaluate(capsys, "--data", str(small_synth), "--scorer", scorer, "--json-out", str(tmp_path / f"{scorer}.json"))
        assert rc == 0, err
        out[scorer] = json.loads((tmp_path / f"{scorer}.json").read_text())
    assert out["oracle"]["auc"] > out["popularity"]["auc"] > out["random"]["auc"] - 0.02
    assert abs(out["random"]["auc"] - 0.5) < 0.05
    assert {"auc", "mrr", "ndcg@5", "ndcg@10", "impressions", "skipped"} <= set(out["oracle"])


def test_popularity_counts_train_clicks_only(small_synth, val):
    """Brute force: the score of each candidate is its click count in train/behaviors.parquet."""
    train = pl.read_parquet(small_synth / "train" / "behaviors.parquet")
    counts: dict[int, int] = {}
    for clicked in train["article_ids_clicked"].to_list():
        for a in clicked:
            counts[a] = counts.get(a, 0) + 1
    scores = PopularityScorer(small_synth).score(val)
    assert np.array_equal(scores, [counts.get(int(a), 0) for a in val.article_ids])


def test_oracle_is_the_generator_utility_in_inview_order(small_synth, val):
    oracle = pl.read_parquet(small_synth / "validation" / "oracle.parquet")
    by_id = dict(zip(oracle["impression_id"].to_list(), oracle["utility"].to_list()))
    scores = OracleScorer(split_paths(small_synth, "validation")).score(val)
    expected = np.concatenate([by_id[int(i)] for i in val.impression_id])
    assert np.array_equal(scores, expected)
    # And the per-impression AUC of those scores equals scikit-learn's.
    o = val.offsets
    aucs = [roc_auc_score(val.labels[o[i]:o[i + 1]], scores[o[i]:o[i + 1]]) for i in range(len(val))
            if 0 < val.labels[o[i]:o[i + 1]].sum() < o[i + 1] - o[i]]
    from mtnews.evaluate.metrics import ranking_metrics

    assert ranking_metrics(val.labels, scores, offsets=o)["auc"] == pytest.approx(np.mean(aucs), abs=1e-12)


def test_misaligned_oracle_is_a_clear_error(small_synth, tmp_path, val):
    bad = tmp_path / "validation"
    bad.mkdir()
    oracle = pl.read_parquet(small_synth / "validation" / "oracle.parquet")
    oracle.with_columns(pl.col("utility").list.head(2)).write_parquet(bad / "oracle.parquet")
    paths = split_paths(small_synth, "validation")
    bad_paths = type(paths)(**{**paths.__dict__, "oracle": bad / "oracle.parquet"})
    # Checked against the split's in-view lists when loaded, before anything is scored.
    with pytest.raises(DataError, match="not aligned"):
        OracleScorer(bad_paths)
    # And per scored chunk, for impressions that the oracle was not checked against.
    oracle = OracleScorer(paths)
    short = val.slice(0, 3)
    short.offsets = short.offsets.copy()
    short.offsets[1:] += 1
    with pytest.raises(DataError, match="not aligned"):
        oracle.score(short)


def test_oracle_missing_exits_2_with_one_line(fixture_dataset, capsys):
    rc, err = evaluate(capsys, "--data", str(fixture_dataset), "--split", "train", "--scorer", "oracle")
    assert rc == 2 and err.count("\n") == 1 and "oracle.parquet" in err


def test_popularity_predictions_on_the_test_layout(small_synth, tmp_path, capsys):
    z = tmp_path / "predictions.zip"
    rc, err = evaluate(capsys, "--data", str(small_synth), "--split", "test", "--scorer", "popularity", "--predictions-out", str(z))
    assert rc == 0, err
    ids, ranks = read_predictions(z)
    behaviors = pl.read_parquet(small_synth / "test" / "behaviors.parquet")
    assert np.array_equal(ids, behaviors["impression_id"].to_numpy())
    assert [len(r) for r in ranks] == behaviors["article_ids_inview"].list.len().to_list()


def test_test_split_without_predictions_out_is_refused(small_synth, capsys):
    rc, err = evaluate(capsys, "--data", str(small_synth), "--split", "test", "--scorer", "popularity")
    assert rc == 2 and "no clicks" in err
