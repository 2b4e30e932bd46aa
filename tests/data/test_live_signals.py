"""Live signals: replaying a split's log event by event gives exactly the features SplitSignals computes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mtnews.data.events import HOUR_US
from mtnews.data.live_signals import BeforeHorizon, LiveSignals, startup_parts
from mtnews.data.signals import SignalOptions, read_article_times, split_signals
from mtnews.errors import ConfigError


def replay_groups(root, split):
    """The split's impressions grouped by time, in time order: (time us, in-view ids, clicked ids, rows)."""
    b = pl.read_parquet(root / split / "behaviors.parquet").with_row_index("row").with_columns(
        pl.col("impression_time").cast(pl.Datetime("us")).cast(pl.Int64).alias("t"))
    return b.sort("t", "row")


def replay(live: LiveSignals, b: pl.DataFrame, names) -> pl.DataFrame:
    """Query each impression's in-views at its time, then record its events (ties: all queried first)."""
    out = []
    for (t,), g in b.group_by("t", maintain_order=True):
        inview = g.select("row", "impression_id", "article_ids_inview").explode("article_ids_inview").drop_nulls()
        sig = live.features(inview["article_ids_inview"].to_numpy(), t, names)
        out.append(inview.hstack(sig.to_frame()))
        iv = g["article_ids_inview"].explode().drop_nulls().to_numpy()
        cl = g["article_ids_clicked"].explode().drop_nulls().to_numpy()
        live.record(iv, np.full(len(iv), t), cl, np.full(len(cl), t))
    return pl.concat(out).sort("row", maintain_order=True)


@pytest.mark.parametrize("tail_max", [4096, 50])  # 50: the tail merges many times during the replay
def test_replaying_the_validation_log_equals_split_signals(small_synth, tail_max):
    o = SignalOptions()
    want = split_signals(small_synth, "validation", o).frame()
    live = LiveSignals.from_parts(startup_parts(small_synth, "validation", with_split_log=False), o,
                                  read_article_times(small_synth / "articles.parquet"), tail_max=tail_max)
    got = replay(live, replay_groups(small_synth, "validation"), o.names())
    assert got.height == want.height
    assert got["article_ids_inview"].to_list() == want["article_id"].to_list()
    for name in o.names():
        np.testing.assert_array_equal(got[name].to_numpy(), want[name].to_numpy(), err_msg=name)
    assert (want["clicks_all"].to_numpy() > 0).any() and (want["inviews_1h"].to_numpy() > 0).any()


def test_seeding_with_the_split_log_equals_split_signals_at_the_end(small_synth):
    """A restart: the counters recovered from the start-up logs answer as SplitSignals does after them.

    Every article is asked for, including ones with no event for over 30 days: those are forgotten by
    default, so this keeps them for 60."""
    o = SignalOptions(windows_h=(2.0, 48.0))
    live = LiveSignals.from_parts(startup_parts(small_synth, "validation"), o,
                                  read_article_times(small_synth / "articles.parquet"), forget_h=60 * 24.0)
    s = split_signals(small_synth, "validation", o)
    ids = s.articles.ids
    t = int(s.impression_times.max()) + HOUR_US
    from mtnews.data.signals import compute_signals

    want = compute_signals(s.index, s.articles, ids, np.full(len(ids), t))
    got = live.features(ids, t)
    for name in o.names():
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_windows_expire_and_memory_is_bounded_by_live_articles():
    o = SignalOptions(windows_h=(1.0,))
    live = LiveSignals(o, lateness_h=0.0, forget_h=3.0, tail_max=3)
    h = HOUR_US
    live.record([1, 1, 2], [0, h // 2, h // 2], [1], [h // 2])
    live.record([3], [3 * h])
    live.compact()  # events before 2 h fold into the totals
    assert live.kept_events == 1 and live.live_articles == 3
    f = live.features(np.array([1, 2, 3]), 3 * h + 1)
    assert f["inviews_1h"].tolist() == [0, 0, 1] and f["inviews_all"].tolist() == [2, 1, 1]
    assert f["clicks_all"].tolist() == [1, 0, 0]
    with pytest.raises(BeforeHorizon):
        live.features(np.array([1]), 2 * h)  # its 1 h window reaches before the kept events
    live.record([3, 3, 3, 3], [6 * h] * 4)  # over tail_max: merges; 1 and 2 have had nothing for over 3 h
    assert live.live_articles == 1 and live.kept_events == 4
    assert live.features(np.array([1, 3]), 6 * h + 1)["inviews_all"].tolist() == [0, 5]


def test_hand_computed_ctr_and_age():
    from mtnews.data.signals import ArticleTimes

    o = SignalOptions(windows_h=(1.0,), ctr_prior_mean=0.2, ctr_prior_strength=5.0)
    arts = ArticleTimes(np.array([7]), np.array([0]), np.array([True]))
    live = LiveSignals(o, arts)
    live.add_articles(np.array([8, 7]), np.array([HOUR_US, 5]))  # 7 keeps its known time
    live.record([7, 7, 8], [10, 20, 30], [7], [20])
    f = live.features(np.array([7, 8, 9]), 2 * HOUR_US)
    assert f["age_h"][:2].tolist() == [2.0, 1.0] and np.isnan(f["age_h"][2])
    assert f["age_known"].tolist() == [True, True, False]
    assert f["ctr_all"].tolist() == [(1 + 1.0) / (2 + 5.0), (0 + 1.0) / (1 + 5.0), 1.0 / 5.0]
    assert f["inviews_1h"].tolist() == [0, 0, 0]  # all events lie more than 1 h before


def test_transductive_mode_has_no_live_form():
    with pytest.raises(ConfigError, match="past events only"):
        LiveSignals(SignalOptions(window="split"))


def test_the_journal_replays_what_was_recorded_and_skips_a_torn_last_line(tmp_path):
    from mtnews.data.live_signals import EventJournal
    from mtnews.errors import DataError

    j = EventJournal(tmp_path / "events.jsonl")
    assert [len(x) for x in j.read()] == [0, 0, 0, 0]
    j.append(5, np.array([1, 2]), np.array([2]))
    j.append(9, np.array([3]), np.array([], dtype=np.int64))
    with open(j.path, "a") as f:
        f.write('{"t": 11, "inview": [4]')  # a crash mid-write
    iv_a, iv_t, cl_a, cl_t = j.read()
    assert iv_a.tolist() == [1, 2, 3] and iv_t.tolist() == [5, 5, 9] and (cl_a.tolist(), cl_t.tolist()) == ([2], [5])
    (tmp_path / "bad.jsonl").write_text('{"t": 1, "inview": [1], "clicked": []}\n{"t": "x", "inview": [], "clicked": []}\n')
    with pytest.raises(DataError, match=r"bad.jsonl: line 2 is not an event record"):
        EventJournal(tmp_path / "bad.jsonl").read()
