"""The HTTP API against a real uvicorn server: scores equal `mtnews evaluate`'s, and bad input is a 4xx."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest

# Served and evaluated article vectors come from different encoding batches (all articles vs. the split's),
# so they agree to float32 rounding, not bit for bit; scores are ~30 in magnitude here.
RTOL = 2e-6


@pytest.fixture(scope="module")
def reference(served_run, small_synth, engine):
    """Validation impressions and `mtnews evaluate --run`'s scores for them (ModelScorer)."""
    from mtnews.data.impressions import build_eval_impressions
    from mtnews.data.layout import split_paths
    from mtnews.evaluate.run_scorer import ModelScorer
    from mtnews.model.run import load_run

    paths = split_paths(small_synth, "validation")
    beh = pl.read_parquet(paths.behaviors)
    imps = build_eval_impressions(beh, engine.articles, engine.histories)
    scorer = ModelScorer.for_split(load_run(served_run), paths, engine.articles, engine.histories)
    return beh["user_id"].cast(pl.Int64).to_numpy(), imps, scorer.score(imps)


def _check_against(results: list[dict], cand_ids: np.ndarray, ref: np.ndarray) -> None:
    served = {r["article_id"]: r["score"] for r in results}
    assert sorted(served) == sorted(cand_ids.tolist())
    np.testing.assert_allclose([served[int(c)] for c in cand_ids], ref, rtol=RTOL, atol=0)
    # The served order is the reference order up to float32 rounding: never a real inversion.
    ref_of = dict(zip(cand_ids.tolist(), ref.tolist()))
    in_order = np.array([ref_of[r["article_id"]] for r in results])
    assert np.all(np.diff(in_order) <= RTOL * np.abs(in_order[1:])), "served order disagrees with evaluate"
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))


def test_scores_equal_evaluate_for_known_users(client, reference):
    users, imps, ref = reference
    known = np.flatnonzero(imps.user_row > 0)[:40]
    assert len(known) >= 20
    for i in known:
        a, b = imps.offsets[i], imps.offsets[i + 1]
        cands = imps.article_ids[a:b]
        r = client.post(f"/v1/users/{users[i]}/recommend", json={"candidates": cands.tolist()})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["candidates"] == len(cands) and body["default_candidates"] is False
        _check_against(body["results"], cands, ref[a:b])


def test_rank_with_explicit_history_equals_recommend(client, reference, engine):
    users, imps, ref = reference
    for i in np.flatnonzero(imps.user_row > 0)[:10]:
        a, b = imps.offsets[i], imps.offsets[i + 1]
        cands = imps.article_ids[a:b].tolist()
        history = [h["article_id"] for h in client.get(f"/v1/users/{users[i]}").json()["history"]]
        assert None not in history  # the synthetic dataset knows every clicked article
        via_user = client.post(f"/v1/users/{users[i]}/recommend", json={"candidates": cands}).json()
        via_rank = client.post("/v1/rank", json={"history": history, "candidates": cands}).json()
        assert via_rank["results"] == via_user["results"]  # the same computation, bit for bit
        assert via_rank["history_used"] == via_user["history_used"] == len(history)
        _check_against(via_rank["results"], np.array(cands), ref[a:b])


def test_only_the_last_history_size_clicks_count(client, engine):
    h = engine.history_size
    ids = [int(x) for x in engine.articles.article_ids[2 : 2 + h + 7]]
    cands = [int(x) for x in engine.articles.article_ids[-5:]]
    long = client.post("/v1/rank", json={"history": ids, "candidates": cands}).json()
    last = client.post("/v1/rank", json={"history": ids[-h:], "candidates": cands}).json()
    assert long["history_used"] == h and long["results"] == last["results"]


def test_empty_history_is_the_cold_start_user_of_evaluate(client, reference):
    users, imps, ref = reference
    cold = np.flatnonzero(imps.user_row == 0)
    if not len(cold):
        pytest.skip("no validation user without a history in this synthetic dataset")
    i = cold[0]
    a, b = imps.offsets[i], imps.offsets[i + 1]
    cands = imps.article_ids[a:b]
    assert client.post(f"/v1/users/{users[i]}/recommend").status_code == 404
    r = client.post("/v1/rank", json={"history": [], "candidates": cands.tolist()})
    assert r.status_code == 200, r.text
    _check_against(r.json()["results"], cands, ref[a:b])


def fresh_unread(engine, user, t_us, max_age_us):
    """The fresh pool by brute force: published in [t - max_age, t), not in the user's history."""
    a = engine.articles
    read = {h.article_id for h in engine.user_history(user)}
    return {int(a.article_ids[i]) for i in range(2, len(a)) if t_us - max_age_us <= a.published_us[i] < t_us
            and int(a.article_ids[i]) not in read}


def test_top_k_and_default_candidates(client, engine):
    user = engine.users(0, 1)[0]
    r = client.post(f"/v1/users/{user}/recommend", json={"top_k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    pool = fresh_unread(engine, user, engine.clock(), engine.max_age_us)
    assert 5 < len(pool) < engine.recent  # the whole fresh pool is retrieved, then re-ranked
    assert body["default_candidates"] is True and body["candidate_source"] == "index"
    assert body["candidates"] == len(pool)
    assert len(body["results"]) == 5
    scores = [x["score"] for x in body["results"]]
    assert scores == sorted(scores, reverse=True)
    # No body at all is the same request as an empty JSON object.
    full = client.post(f"/v1/users/{user}/recommend").json()
    assert full["results"][:5] == body["results"] and {x["article_id"] for x in full["results"]} == pool
    # The re-rank is the one kernel: the same scores as ranking the pool as explicit candidates.
    # (Tied scores keep the candidates' order, so the explicit list is given in the retrieved order.)
    shuffled = client.post(f"/v1/users/{user}/recommend", json={"candidates": sorted(pool)}).json()
    assert {x["article_id"]: x["score"] for x in shuffled["results"]} == {x["article_id"]: x["score"] for x in full["results"]}
    explicit = client.post(f"/v1/users/{user}/recommend",
                           json={"candidates": [x["article_id"] for x in full["results"]]}).json()
    assert explicit["results"] == full["results"] and explicit["candidate_source"] == "candidates"


def test_unknown_ids_are_404_and_listed(client, engine):
    known = [int(x) for x in engine.articles.article_ids[2:5]]
    r = client.post("/v1/rank", json={"history": [known[0], 11, 12, 11], "candidates": [known[1], 13, 11]})
    assert r.status_code == 404
    body = r.json()
    assert body["unknown_ids"] == [11, 12, 13]
    assert "unknown article ids: 11, 12, 13" in body["detail"]
    user = engine.users(0, 1)[0]
    r = client.post(f"/v1/users/{user}/recommend", json={"candidates": [known[0], 99]})
    assert r.status_code == 404 and r.json()["unknown_ids"] == [99]
    assert set(r.json()) == {"detail", "unknown_ids"}


def test_integral_floats_are_the_integers_they_equal(client, engine):
    # JSON (and JSON Schema's "integer") does not tell 2.0 from 2, so neither does the server.
    known = [int(x) for x in engine.articles.article_ids[2:5]]
    as_ints = client.post("/v1/rank", json={"history": [known[0]], "candidates": known[1:], "top_k": 1})
    floats = {"history": [float(known[0])], "candidates": [float(k) for k in known[1:]], "top_k": 1.0}
    as_floats = client.post("/v1/rank", json=floats)
    assert as_floats.status_code == 200, as_floats.text
    assert as_floats.json() == as_ints.json()
    r = client.post("/v1/rank", json={"candidates": [11.0]})
    assert r.status_code == 404 and r.json()["unknown_ids"] == [11]


def test_supplied_titles_are_encoded_once_and_scored_like_dataset_articles(client, engine):
    a = engine.articles
    known = [int(x) for x in a.article_ids[2:12]]
    twin_title = a.titles[3]  # article known[1]'s title under a new id must score like known[1]
    new = [{"article_id": 900_000_001, "title": twin_title},
           {"article_id": 900_000_002, "title": "Fresh storm warning for Copenhagen this weekend",
            "category_str": "weather"},
           {"article_id": 900_000_003, "title": "A clicked article the dataset never saw"}]
    req = {"history": known[:5] + [900_000_003], "candidates": [known[1], 900_000_001, 900_000_002],
           "articles": new}
    first = client.post("/v1/rank", json=req)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["encoded_titles"] == 3 and body["history_used"] == 6
    by_id = {r["article_id"]: r for r in body["results"]}
    np.testing.assert_allclose(by_id[900_000_001]["score"], by_id[known[1]]["score"], rtol=RTOL)
    assert by_id[900_000_002]["category"] == "weather"
    assert by_id[900_000_002]["title"] == new[1]["title"]

    again = client.post("/v1/rank", json=req).json()
    assert again["encoded_titles"] == 0, "the second request must hit the title cache"
    assert again["results"] == body["results"]

    # A supplied entry for an id the dataset knows is ignored: the dataset's title is used.
    r = client.post("/v1/rank", json={"candidates": [known[0]],
                                      "articles": [{"article_id": known[0], "title": "something else"}]})
    assert r.json()["results"][0]["title"] == a.titles[2]
    # One id supplied twice with different titles is contradictory.
    r = client.post("/v1/rank", json={"candidates": [7], "articles": [{"article_id": 7, "title": "x"},
                                                                      {"article_id": 7, "title": "y"}]})
    assert r.status_code == 409 and "supplied twice" in r.json()["detail"]


def test_title_cache_is_bounded(client, app, engine):
    n = app.state.max_list
    cap = engine.cache.capacity
    evictions = engine.cache.evictions
    titles = [f"Bounded cache probe number {i}" for i in range(cap + 30)]
    for s in range(0, len(titles), n):
        chunk = titles[s : s + n]
        arts = [{"article_id": 800_000_000 + s + k, "title": t} for k, t in enumerate(chunk)]
        r = client.post("/v1/rank", json={"candidates": [x["article_id"] for x in arts], "articles": arts})
        assert r.status_code == 200, r.text
    assert len(engine.cache) == cap
    assert engine.cache.evictions - evictions >= 30
    assert re.search(r"^mtnews_title_cache_evictions_total [1-9]", client.get("/metrics").text, re.M)


# Bodies as functions of the list limit n, so they follow the served app's --max-list.
INVALID_RANK_BODIES = [
    (lambda n: {"candidates": []}, "candidates: List should have at least 1 item"),
    (lambda n: {"candidates": list(range(n + 1))}, "candidates: List should have at most {n} items"),
    (lambda n: {"history": list(range(n + 1)), "candidates": [1]}, "history: List should have at most {n} items"),
    (lambda n: {"candidates": [1], "articles": [{"article_id": i, "title": "t"} for i in range(n + 1)]},
     "articles: List should have at most {n} items"),
    (lambda n: {"candidates": [1], "top_k": 0}, "top_k: Input should be greater than or equal to 1"),
    (lambda n: {"candidates": [1], "top_k": n + 1}, "top_k: Input should be less than or equal to {n}"),
    (lambda n: {"candidates": ["9500001"]}, "candidates.0: Input should be a valid integer"),
    (lambda n: {"candidates": [1.5]}, "candidates.0: Input should be a valid integer"),
    (lambda n: {"candidates": [1], "top_k": 2.5}, "top_k: Input should be a valid integer"),
    (lambda n: {"candidates": [True]}, "candidates.0: Input should be a valid integer"),
    (lambda n: {"candidates": [-1]}, "candidates.0: Input should be greater than or equal to 0"),
    (lambda n: {"candidates": [2**70]}, "candidates.0: Input should be less than or equal to"),
    (lambda n: {"candidates": [2**53]}, "candidates.0: Input should be less than or equal to 9007199254740991"),
    (lambda n: {"candidates": "1,2"}, "candidates: Input should be a valid list"),
    (lambda n: {"candidates": [1], "candidate": [2]}, "candidate: Extra inputs are not permitted"),
    (lambda n: {"history": [1]}, "candidates: Field required"),
    (lambda n: {"candidates": [1], "articles": [{"article_id": 1, "title": ""}]},
     "articles.0.title: String should have at least 1 character"),
    (lambda n: {"candidates": [1], "articles": [{"article_id": 1}]}, "articles.0.title: Field required"),
    (lambda n: [1, 2], "body: Input should be a valid dictionary"),
]


@pytest.mark.parametrize("make_body, fragment", INVALID_RANK_BODIES)
def test_invalid_rank_requests_are_422_with_a_clear_message(client, app, make_body, fragment):
    n = app.state.max_list
    r = client.post("/v1/rank", json=make_body(n))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("invalid request: ") and fragment.format(n=n) in detail, detail
    assert r.json()["errors"], "the structured errors come along with the message"


def test_malformed_json_wrong_media_type_and_methods(client, engine):
    r = client.post("/v1/rank", content=b'{"candidates": [1,', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"].startswith("malformed JSON body")
    r = client.post("/v1/rank", content=b"\xff\xfe\x00garbage", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = client.post("/v1/rank", content=b'{"candidates": [1]}', headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    user = engine.users(0, 1)[0]
    r = client.post(f"/v1/users/{user}/recommend", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = client.get("/v1/rank")
    assert r.status_code == 405 and "not allowed" in r.json()["detail"]
    r = client.get("/v1/nothing-here")
    assert r.status_code == 404 and "no such endpoint" in r.json()["detail"]


def test_bodies_over_the_limit_are_413(client, app):
    limit = app.state.max_body_bytes
    big = {"candidates": [1], "history": [], "pad": "x" * limit}
    r = client.post("/v1/rank", json=big)
    assert r.status_code == 413 and f"limit of {limit} bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit must cut the stream itself
        for _ in range(limit // 1024 + 2):
            yield b" " * 1024

    r = client.post("/v1/rank", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_lookups_and_health(client, engine):
    page = client.get("/v1/users", params={"limit": 5, "offset": 2}).json()
    assert page["users"] == engine.users(2, 5) and page["total"] == engine.num_users
    assert client.get("/v1/users", params={"limit": 0}).status_code == 422
    assert client.get("/v1/users", params={"limit": "many"}).status_code == 422

    user = page["users"][0]
    u = client.get(f"/v1/users/{user}").json()
    assert u["history_size"] == engine.history_size and 0 < len(u["history"]) <= engine.history_size
    r = client.get("/v1/users/1")
    assert r.status_code == 404 and "user 1 is not in validation/history.parquet" in r.json()["detail"]
    assert r.json()["user_id"] == 1
    assert client.post("/v1/users/1/recommend").status_code == 404

    aid = int(engine.articles.article_ids[2])
    art = client.get(f"/v1/articles/{aid}").json()
    assert art["article_id"] == aid and art["title"] == engine.articles.titles[2] and art["published_time"]
    assert client.get("/v1/articles/5").status_code == 404
    assert client.get("/v1/articles/abc").status_code == 422
    assert client.get(f"/v1/articles/{2**64}").status_code == 422

    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["articles"] == engine.num_articles and h["users"] == engine.num_users
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = client.get("/openapi.json").json()
    assert {"/v1/rank", "/v1/users/{user_id}/recommend", "/v1/articles/{article_id}", "/healthz",
            "/metrics"} <= set(spec["paths"])
    assert client.get("/").headers["content-type"].startswith("text/html")


def test_metrics_are_prometheus_text(client):
    client.post("/v1/rank", json={"candidates": []})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert re.search(r'^mtnews_http_requests_total\{route="/v1/rank",method="POST",status="422"\} [1-9]\d*$',
                     text, re.M)
    assert re.search(r'^mtnews_http_request_duration_seconds_bucket\{route="/v1/rank",le="\+Inf"\} \d+$', text, re.M)
    assert "# TYPE mtnews_http_request_duration_seconds histogram" in text
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), line
    # Raw paths never become labels: only route templates and "unmatched".
    client.get("/v1/articles/123456789")
    client.get("/random/path/abc")
    text = client.get("/metrics").text
    assert "123456789" not in text and "/random/path" not in text and 'route="unmatched"' in text
