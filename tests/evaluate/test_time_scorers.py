"""The time baselines (recency, trending, ctr): their scores, streaming, modes in results, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from mtnews.cli import main
from mtnews.data.articles import load_articles
from mtnews.data.dataset import load_split
from mtnews.data.layout import split_paths
from mtnews.data.signals import SignalOptions, split_signals
from mtnews.evaluate.commands import SCORERS
from mtnews.evaluate.scorers import UNDATED, TimeScorer
from mtnews.evaluate.split_scoring import BASELINES, SCORERS as LIBRARY_SCORERS, score_split
from mtnews.evaluate.submission import read_predictions


@pytest.fixture(scope="module")
def val(small_synth):
    return load_split(small_synth, "validation", 10, load_articles(small_synth / "articles.parquet")).eval_impressions()


def test_cli_choices_are_the_library_baselines():
    assert SCORERS == LIBRARY_SCORERS
    assert set(BASELINES) <= set(SCORERS)
    assert set(TimeScorer.NAMES) <= set(BASELINES)


def test_scores_are_the_documented_reading_of_the_signals(small_synth, val):
    frame = split_signals(small_synth, "validation").frame()
    paths = split_paths(small_synth, "validation")
    assert frame["article_id"].to_list() == val.article_ids.tolist()
    recency = TimeScorer("recency", paths).score(val)
    expected = np.where(frame["age_known"].to_numpy(), -frame["age_h"].fill_nan(0).to_numpy(), UNDATED)
    np.testing.assert_array_equal(recency, expected)
    trending = TimeScorer("trending", paths).score(val)
    np.testing.assert_array_equal(trending, (frame["inviews_1h"] + frame["inviews_6h"] + frame["inviews_24h"]).to_numpy())
    ctr = TimeScorer("ctr", paths, SignalOptions(windows_h=(48.0, 2.0))).score(val)
    longest = split_signals(small_synth, "validation", {"windows_h": (48.0, 2.0)}).frame()["ctr_48h"]
    np.testing.assert_array_equal(ctr, longest.to_numpy())


@pytest.mark.parametrize("scorer", TimeScorer.NAMES)
def test_streaming_in_small_chunks_changes_nothing(small_synth, scorer):
    whole = score_split(small_synth, "validation", scorer=scorer)
    chunked = score_split(small_synth, "validation", scorer=scorer, chunk=37)
    assert whole == chunked
    assert whole["signals"]["window"] == "past"
    assert [p.rsplit("/", 1)[-1] for p in whole["signals"]["sources"]] == ["train", "validation"]


def test_time_baselines_see_the_time_effect(small_synth):
    auc = {s: score_split(small_synth, "validation", scorer=s)["auc"] for s in ("random", "oracle", *TimeScorer.NAMES)}
    best = max(auc[s] for s in TimeScorer.NAMES)
    assert best > 0.57 and auc["recency"] > 0.54
    assert auc["oracle"] > best + 0.2


def test_results_say_which_mode_produced_them(small_synth, tmp_path, capsys):
    out = tmp_path / "split.json"
    assert main(["evaluate", "--data", str(small_synth), "--scorer", "trending", "--signals.window", "split",
                 "--json-out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "trending (split window)" in table
    split = json.loads(out.read_text())
    past = score_split(small_synth, "validation", scorer="trending")
    assert split["signals"]["window"] == "split" and split["signals"]["options"]["window"] == "split"
    assert split["auc"] != past["auc"]  # in-views both ways, the future included
    # ctr's clicks stay past-only in split mode, but its in-view denominators look ahead.
    assert score_split(small_synth, "validation", scorer="ctr", signals={"window": "split"})["auc"] != \
        score_split(small_synth, "validation", scorer="ctr")["auc"]


def test_recency_counts_undated_candidates(fixture_dataset):
    result = score_split(fixture_dataset, "train", scorer="recency")
    inview = pl.read_parquet(fixture_dataset / "train" / "behaviors.parquet")["article_ids_inview"]
    assert result["signals"]["undated_candidates"] == inview.list.len().sum()
    assert result["auc"] == 0.5  # no article has a published time: all tie


def test_time_baselines_write_test_predictions(small_synth, tmp_path):
    z = tmp_path / "p.zip"
    result = score_split(small_synth, "test", scorer="trending", predictions_out=z)
    ids, ranks = read_predictions(z)
    behaviors = pl.read_parquet(small_synth / "test" / "behaviors.parquet")
    assert np.array_equal(ids, behaviors["impression_id"].to_numpy())
    assert [len(r) for r in ranks] == behaviors["article_ids_inview"].list.len().to_list()
    assert result["signals"]["sources"][-1].endswith("test")


def test_bad_signal_options_exit_2(small_synth, capsys):
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--data", str(small_synth), "--scorer", "ctr", "--signals.window", "later"])
    assert e.value.code == 2
    from mtnews.errors import ConfigError

    with pytest.raises(ConfigError, match="signals.mask_split_clicks"):
        score_split(small_synth, "validation", scorer="ctr", signals={"mask_split_clicks": 2})
