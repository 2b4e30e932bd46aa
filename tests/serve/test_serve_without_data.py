"""`mtnews serve` without --data: the run's own articles are the catalogue and no users are known."""

from __future__ import annotations

import httpx
import polars as pl


def test_a_run_serves_with_no_dataset_folder(trained_run):
    from mtnews.recommender import Recommender
    from mtnews.serve.app import create_app
    from mtnews.serve.server import BackgroundServer

    rec = Recommender.from_run(trained_run, device="cpu")
    ids = pl.read_parquet(trained_run / "articles.parquet")["article_id"].to_list()
    with BackgroundServer(create_app(rec)) as url, httpx.Client(base_url=url, timeout=30) as c:
        health = c.get("/healthz").json()
        assert health["articles"] == len(ids) and health["users"] == 0
        r = c.post("/v1/rank", json={"history": ids[:4], "candidates": ids[4:9], "top_k": 3})
        assert r.status_code == 200, r.text
        want = rec.rank(ids[:4], ids[4:9], top_k=3)
        assert [x["article_id"] for x in r.json()["results"]] == [i.article_id for i in want.items]
        r = c.post("/v1/users/5/recommend", json={})
        assert r.status_code == 404 and "no users are loaded" in r.json()["detail"]
        assert c.get(f"/v1/articles/{ids[0]}").json()["article_id"] == ids[0]
