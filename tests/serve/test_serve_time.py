"""Serving with time: impression times and the clock, retrieval from the fresh pool, neighbours, run-time
articles entering the index, live time signals fed by /v1/events, and the hook for time-aware runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from mtnews.data.live_signals import LiveSignals, startup_parts
from mtnews.data.signals import SignalOptions, read_article_times, split_signals
from mtnews.recommender import EPOCH, Recommender, to_us

H = 3_600_000_000


def iso(us: int) -> str:
    return (EPOCH + timedelta(microseconds=int(us))).isoformat() + "Z"


@pytest.fixture(scope="module")
def tc(app):
    with TestClient(app) as c:
        yield c


def fresh_unread(engine, user, t_us, max_age_us):
    """The fresh pool by brute force: published in [t - max_age, t), not in the user's history."""
    a = engine.articles
    read = {h.article_id for h in engine.user_history(user)}
    return {int(a.article_ids[i]) for i in range(2, len(a)) if t_us - max_age_us <= a.published_us[i] < t_us
            and int(a.article_ids[i]) not in read}


# --- the clock and impression times ----------------------------------------------------------------------

def test_the_clock_is_pinned_to_the_last_impression(engine, small_synth, tc):
    last = pl.read_parquet(small_synth / "validation" / "behaviors.parquet")["impression_time"].max()
    assert engine.clock() == to_us(last) and engine.clock_pinned
    known = [int(x) for x in engine.articles.article_ids[2:5]]
    r = tc.post("/v1/rank", json={"candidates": known})
    assert r.json()["impression_time"] == last.isoformat() + "Z"
    r = tc.post("/v1/rank", json={"candidates": known, "impression_time": "2023-05-30T12:00:00+02:00"})
    assert r.json()["impression_time"] == "2023-05-30T10:00:00Z"


def test_an_earlier_impression_time_retrieves_that_time_s_fresh_pool(engine, tc):
    user = engine.users(3, 1)[0]
    t = engine.clock() - 30 * H
    body = tc.post(f"/v1/users/{user}/recommend", json={"impression_time": iso(t)}).json()
    pool = fresh_unread(engine, user, t, engine.max_age_us)
    assert body["candidate_source"] == "index" and {x["article_id"] for x in body["results"]} == pool
    assert pool != fresh_unread(engine, user, engine.clock(), engine.max_age_us)


@pytest.mark.parametrize("bad", ["2023-05-30T12:00:00", "2023-02-30T00:00:00Z", "yesterday", 1685440800, ""])
def test_bad_times_are_one_422(tc, engine, bad):
    user = engine.users(0, 1)[0]
    for path, body in (("/v1/rank", {"candidates": [int(engine.articles.article_ids[2])]}),
                       (f"/v1/users/{user}/recommend", {}), ("/v1/events", {"inview": [1]})):
        r = tc.post(path, json={**body, "impression_time": bad})
        assert r.status_code == 422, (path, r.text)
        assert r.json()["errors"][0]["loc"][-1] == "impression_time"


def test_without_an_index_recommend_ranks_the_freshest_articles_before_the_time(engine):
    plain = Recommender(engine.run, engine.articles, engine.histories, index=False, signals=engine.live,
                        clock=engine.clock())
    user = engine.users(1, 1)[0]
    t = engine.clock() - 50 * H
    r = plain.recommend(user, impression_time=t)
    a = engine.articles
    read = {h.article_id for h in engine.user_history(user)}
    before = [i for i in range(2, len(a)) if a.published_us[i] < t and int(a.article_ids[i]) not in read]
    newest = sorted(before, key=lambda i: -a.published_us[i])[: plain.recent]
    assert r.source == "freshest" and {x.article_id for x in r.items} == {int(a.article_ids[i]) for i in newest}
    assert len(r.items) == plain.recent


# --- neighbours ------------------------------------------------------------------------------------------

def test_similar_users_are_the_nearest_by_cosine_among_users_with_history(engine, tc):
    users = engine.histories.user_ids
    m = engine.histories.matrix[1:]
    vecs = engine.vectors.users(m).numpy().astype(np.float64)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    has = (m != 0).any(axis=1)
    me = 5
    sims = vecs @ vecs[me]
    others = [i for i in np.argsort(-sims) if i != me and has[i]]
    r = tc.get(f"/v1/users/{users[me]}/similar-users", params={"k": 7})
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    pos = {int(u): i for i, u in enumerate(users)}
    mine = [pos[x["user_id"]] for x in got]
    assert [x["rank"] for x in got] == list(range(1, 8)) and me not in mine and has[mine].all()
    # The tiny model's user vectors lie close together, so near-ties may swap: compare the similarities.
    np.testing.assert_allclose([x["similarity"] for x in got], sims[mine], atol=1e-5)
    np.testing.assert_allclose(sims[mine], sims[others[:7]], atol=1e-5)
    assert tc.get("/v1/users/1/similar-users").status_code == 404
    assert tc.get(f"/v1/users/{users[me]}/similar-users", params={"k": 0}).status_code == 422


def test_similar_articles_are_the_nearest_by_cosine(engine, tc):
    v = engine.vectors.vectors[2:].numpy().astype(np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = engine.articles.article_ids[2:]
    q = 10
    sims = v @ v[q]
    ref = [i for i in np.argsort(-sims) if i != q][:5]
    got = tc.get(f"/v1/articles/{ids[q]}/similar", params={"k": 5}).json()["results"]
    pos = {int(a): i for i, a in enumerate(ids)}
    mine = [pos[x["article_id"]] for x in got]
    assert q not in mine and got[0]["title"] == engine.article(got[0]["article_id"]).title
    # Near-ties of the tiny model may swap: compare the similarities, which must be the top 5.
    np.testing.assert_allclose([x["similarity"] for x in got], sims[mine], atol=1e-5)
    np.testing.assert_allclose(sims[mine], sims[ref], atol=1e-5)
    r = tc.get("/v1/articles/7/similar")
    assert r.status_code == 404 and r.json()["unknown_ids"] == [7]
    assert tc.get(f"/v1/articles/{ids[q]}/similar", params={"k": 10_000}).status_code == 422


@pytest.fixture
def own_engine(engine):
    """An engine of its own (index, signals), for tests that add articles: the shared one stays as loaded."""
    return Recommender(engine.run, engine.articles, engine.histories, clock=engine.clock(), source=engine.source,
                       signals=LiveSignals(engine.live.options, engine.live.articles))


def test_articles_supplied_at_run_time_enter_the_index_and_the_neighbours(own_engine):
    from mtnews.serve.app import create_app

    engine = own_engine
    with TestClient(create_app(engine)) as tc:
        supplied_then_recommended(engine, tc)


def supplied_then_recommended(engine, tc):
    user = engine.users(2, 1)[0]
    t = engine.clock()
    new_id = 9_000_001
    title = "a brand new article about the weather and football"
    r = tc.post("/v1/rank", json={"candidates": [new_id], "impression_time": iso(t - 2 * H),
                                  "articles": [{"article_id": new_id, "title": title}]})
    assert r.status_code == 200, r.text
    assert engine.index.pool.rows(np.array([new_id]))[0] >= 0  # published at that request's time
    body = tc.post(f"/v1/users/{user}/recommend", json={"impression_time": iso(t)}).json()
    got = {x["article_id"] for x in body["results"]}
    assert got == fresh_unread(engine, user, t, engine.max_age_us) | {new_id}
    # Published 2 h before t: not in the pool of a time before that.
    early = tc.post(f"/v1/users/{user}/recommend", json={"impression_time": iso(t - 3 * H)}).json()
    assert new_id not in {x["article_id"] for x in early["results"]}
    looked_up = tc.get(f"/v1/articles/{new_id}").json()
    assert looked_up["title"] == title and looked_up["published_time"] == iso(t - 2 * H)[:-1]
    # Its vector is the title's: the same as encoding the title, and it has neighbours.
    near = tc.get(f"/v1/articles/{new_id}/similar", params={"k": 3}).json()["results"]
    assert len(near) == 3 and new_id not in {x["article_id"] for x in near}
    score = next(x["score"] for x in body["results"] if x["article_id"] == new_id)
    explicit = engine.rank([h.article_id for h in engine.user_history(user) if h.article_id is not None][-engine.history_size:],
                           [{"article_id": new_id, "title": title}])
    np.testing.assert_allclose(score, explicit.items[0].score, rtol=1e-5)


# --- live time signals -----------------------------------------------------------------------------------

def test_replaying_the_log_through_events_gives_split_signals(engine, small_synth):
    """Start-up logs without the split's own impressions; then each impression, in time order, is asked
    for its signals before its events are posted: exactly what SplitSignals computes for the split."""
    from mtnews.serve.app import create_app

    o = SignalOptions()
    live = LiveSignals.from_parts(startup_parts(small_synth, "validation", with_split_log=False), o,
                                  read_article_times(small_synth / "articles.parquet"))
    rec = Recommender(engine.run, engine.articles, engine.histories, signals=live, index=False)
    b = (pl.read_parquet(small_synth / "validation" / "behaviors.parquet").with_row_index("row")
         .with_columns(pl.col("impression_time").cast(pl.Datetime("us")).cast(pl.Int64).alias("t")).sort("t", "row"))
    got: dict[int, dict] = {}
    with TestClient(create_app(rec, max_list=64)) as c:
        for (t,), g in b.group_by("t", maintain_order=True):
            for row, inview in zip(g["row"], g["article_ids_inview"]):
                ids = [int(a) for a in inview if a is not None]
                r = c.post("/v1/signals", json={"article_ids": ids, "impression_time": iso(t)})
                assert r.status_code == 200, r.text
                got[row] = r.json()["columns"]
            for inview, clicked in zip(g["article_ids_inview"], g["article_ids_clicked"]):
                r = c.post("/v1/events", json={"inview": [int(a) for a in inview if a is not None],
                                               "clicked": [int(a) for a in clicked], "impression_time": iso(t)})
                assert r.status_code == 200 and r.json()["recorded"] == len(inview) + len(clicked)
    want = split_signals(small_synth, "validation", o).frame()
    for name in o.names():
        mine = np.array([np.nan if v is None else v for row in range(b.height) for v in got[row][name]])
        np.testing.assert_array_equal(mine, want[name].to_numpy().astype(float), err_msg=name)


def test_a_time_too_far_back_for_the_live_counters_is_one_409(tc, engine):
    old = engine.live.horizon - H
    r = tc.post("/v1/signals", json={"article_ids": [1], "impression_time": iso(old)})
    assert r.status_code == 409 and "too far back" in r.json()["detail"]
    r = tc.post("/v1/events", json={"inview": [1], "impression_time": iso(engine.clock() + H)})
    assert r.status_code == 409 and "after the server's clock" in r.json()["detail"]
    before = engine.live.recorded
    r = tc.post("/v1/events", json={"inview": [1, 2], "clicked": [2]})  # at the clock: counted
    assert r.status_code == 200 and r.json()["recorded"] == 3 and engine.live.recorded == before + 3
    assert r.json()["impression_time"] == iso(engine.clock())


class TimeAwareRun:
    """Stands in for a run of the MTRec-T branch: the same run, with `signal_options` set."""

    def __init__(self, run, options):
        self._run, self.signal_options = run, options

    def __getattr__(self, name):
        return getattr(self._run, name)


def test_a_time_aware_run_gets_the_candidates_live_signals(engine, small_synth, monkeypatch):
    from mtnews.model.scoring import ArticleVectors

    o = SignalOptions(windows_h=(1.0, 12.0))
    live = LiveSignals.from_parts(startup_parts(small_synth, "validation"), o,
                                  read_article_times(small_synth / "articles.parquet"))
    rec = Recommender(TimeAwareRun(engine.run, o), engine.articles, engine.histories, signals=live,
                      clock=engine.clock())
    seen = []
    plain = ArticleVectors.dots

    def dots(self, users, owner, candidates, dot_block=None, *, signals=None):
        seen.append(signals)
        return plain(self, users, owner, candidates, dot_block)

    monkeypatch.setattr(ArticleVectors, "dots", dots)
    user = engine.users(0, 1)[0]
    t = engine.clock() + H
    r = rec.recommend(user, impression_time=t)
    ids = np.array([x.article_id for x in r.items])
    want = live.features(ids, t).matrix(o.names())
    got = seen[-1]
    assert got.shape == (len(ids), len(o.names())) and got.dtype == np.float32 and len(ids) > 5
    # Rows come in retrieval order, the items in score order: compare them as sets of rows.
    np.testing.assert_array_equal(got[np.lexsort(got.T[::-1])], want[np.lexsort(want.T[::-1])])
    assert (want[:, list(o.names()).index("inviews_all")] > 0).any()
    cands = [int(a) for a in engine.articles.article_ids[2:7]]
    rec.rank([], cands, impression_time=t)
    np.testing.assert_array_equal(seen[-1], live.features(np.array(cands), t).matrix(o.names()))
    with pytest.raises(Exception, match="too far back"):
        rec.rank([], cands, impression_time=live.horizon - 1)
    with pytest.raises(Exception, match="differ from the run's signal_options"):
        Recommender(TimeAwareRun(engine.run, o), engine.articles, engine.histories, signals=engine.live, index=False)


def test_bad_clock_and_max_age_are_one_line_exit_2(served_run, small_synth, capsys):
    from mtnews.cli import main

    for args, says in ((["--clock", "yesterday"], "--clock: 'yesterday' is not now, last-impression"),
                       (["--clock", "last-impression"], "--clock last-impression needs a dataset"),
                       (["--max-age-hours", "0"], "--max-age-hours must be > 0")):
        data = [] if args[1] == "last-impression" else ["--data", str(small_synth)]
        assert main(["serve", "--run", str(served_run), *data, "--port", "0", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mtnews: error: ") and says in err and "\n" not in err, err


def test_a_pinned_rfc3339_clock(served_run):
    rec = Recommender.from_run(served_run, clock=datetime(2023, 5, 30, 12, tzinfo=timezone(timedelta(hours=2))),
                               device="cpu")
    assert rec.clock() == to_us(datetime(2023, 5, 30, 10)) and rec.num_users == 0
    assert rec.live.recorded == 0  # no logs given: counters start empty


def test_events_posted_before_a_restart_are_recovered_from_the_journal(engine, tmp_path):
    from mtnews.data.live_signals import EventJournal

    def fresh():
        return Recommender(engine.run, engine.articles, engine.histories, index=False, clock=engine.clock(),
                           signals=LiveSignals(engine.live.options, engine.live.articles),
                           journal=EventJournal(tmp_path / "events.jsonl"))

    first = fresh()
    ids = [int(a) for a in engine.articles.article_ids[2:6]]
    t = engine.clock()
    first.record_events(ids, ids[:1], impression_time=t - 2 * H)
    first.record_events(ids[1:], [], impression_time=t - H // 2)
    before = first.signals(ids, t).matrix()
    again = fresh()  # the restart
    np.testing.assert_array_equal(again.signals(ids, t).matrix(), before)
    assert again.signals(ids, t)["inviews_1h"].tolist() == [0, 1, 1, 1]


def test_the_schema_declares_the_new_routes_bounds_and_errors(tc, app):
    spec = tc.get("/openapi.json").json()
    max_list = app.state.max_list
    for path in ("/v1/users/{user_id}/similar-users", "/v1/articles/{article_id}/similar"):
        op = spec["paths"][path]["get"]
        k = next(p for p in op["parameters"] if p["name"] == "k")["schema"]
        assert (k["minimum"], k["maximum"], k["default"]) == (1, max_list, 10)
        assert {"404", "422"} <= set(op["responses"])
    schemas = spec["components"]["schemas"]
    for name, field in (("EventsRequest", "inview"), ("EventsRequest", "clicked"), ("SignalsRequest", "article_ids")):
        assert schemas[name]["properties"][field]["maxItems"] == max_list
    for name in ("RankRequest", "RecommendRequest", "EventsRequest", "SignalsRequest"):
        t = next(s for s in schemas[name]["properties"]["impression_time"]["anyOf"] if s.get("type") == "string")
        assert t["format"] == "date-time"
    assert "409" in spec["paths"]["/v1/signals"]["post"]["responses"]
    assert "409" in spec["paths"]["/v1/events"]["post"]["responses"]


def test_run_time_articles_are_bounded_the_earliest_published_leave_first(own_engine):
    from mtnews.recommender import UnknownArticles

    rec = own_engine
    rec.max_added = 2
    t = rec.clock()
    n0 = len(rec.index)
    for k, hours in enumerate((3, 1, 2)):
        rec.rank([], [{"article_id": 8_000_000 + k, "title": f"run-time article {k}",
                       "published_time": EPOCH + timedelta(microseconds=t - hours * H)}])
    assert sorted(rec.added) == [8_000_001, 8_000_002] and len(rec.index) == n0 + 2
    assert rec.index.pool.rows(np.array([8_000_000]))[0] == -1
    with pytest.raises(UnknownArticles):
        rec.similar_articles(8_000_000)
    assert len(rec.similar_articles(8_000_001, k=400)) == rec.num_articles + 1
