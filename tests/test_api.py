"""The public Python API: the README's example runs as written, and the calls agree with the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import mtnews
from mtnews.cli import main
from mtnews.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def _readme_api_block() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_as_written(trained_run, small_synth, tmp_path, monkeypatch, capsys):
    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "run").symlink_to(trained_run)
    (tmp_path / "runs" / "demo" / "data").symlink_to(small_synth)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_readme_api_block(), str(README), "exec"), scope)
    rec, ranking, users, scored, metrics = (scope[k] for k in ("rec", "ranking", "users", "scored", "metrics"))
    assert len(ranking.items) == 3 and ranking.candidates == 11 and ranking.encoded_titles == 1
    assert scope["vectors"].shape == (2, rec.dim) and users.shape == (3, rec.dim)
    np.testing.assert_allclose(users[2], rec.model.user_encoder.empty_user.detach().numpy())  # [] = no history
    behaviors = pl.read_parquet(small_synth / "validation" / "behaviors.parquet")
    assert scored["scores"].list.len().to_list() == behaviors["article_ids_inview"].list.drop_nulls().list.len().to_list()
    # The same numbers as the CLI's evaluate.
    assert main(["evaluate", "--run", str(trained_run), "--data", str(small_synth), "--json-out", "m.json"]) == 0
    assert json.loads(Path("m.json").read_text()) == metrics
    assert "AUC" in capsys.readouterr().out


def test_rank_scores_equal_the_score_of_a_behaviors_frame(trained_run, small_synth):
    rec = mtnews.Recommender.from_run(trained_run, small_synth, "validation", device="cpu")
    behaviors = pl.read_parquet(small_synth / "validation" / "behaviors.parquet").head(30)
    scored = rec.score(behaviors)  # histories of the loaded validation users
    for row in scored.iter_rows(named=True):
        hist = [h.article_id for h in rec.user_history(row["user_id"])] if row["user_id"] in set(rec.users(0, 10**6)) else []
        cands = [a for a in row["article_ids_inview"] if a is not None]
        r = rec.rank(hist, cands)
        by_id = {i.article_id: i.score for i in r.items}
        np.testing.assert_allclose([by_id[a] for a in cands], row["scores"], rtol=1e-6)


def test_user_vectors_are_one_batch_equal_to_one_at_a_time(trained_run):
    rec = mtnews.Recommender.from_run(trained_run, device="cpu")
    known = pl.read_parquet(trained_run / "articles.parquet")["article_id"].to_list()
    histories = [known[i : i + k] for i, k in zip(range(0, 60, 6), range(0, 30, 3))]
    together = rec.user_vectors(histories)
    alone = np.stack([rec.user_vectors([h])[0] for h in histories])
    np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-7)
    with pytest.raises(mtnews.recommender.UnknownArticles) as e:
        rec.user_vectors([[known[0], 987654321]])
    assert e.value.ids == [987654321]


def test_fit_validates_like_the_cli_and_trains(tiny_bert, small_synth, tmp_path):
    with pytest.raises(ConfigError, match="train.lr"):
        mtnews.fit({"train": {"lr": -1}}, data=small_synth, out=tmp_path / "bad")
    with pytest.raises(ConfigError, match="unknown config key"):
        mtnews.fit(None, data=small_synth, out=tmp_path / "bad", overrides=["--train.nope", "1"])
    over = {"model": {"pretrained": str(tiny_bert)}, "train": {"max_steps": 2, "eval_every": 0, "device": "cpu"}}
    summary = mtnews.fit(None, data=small_synth, out=tmp_path / "run", overrides=over)
    assert summary["steps"] == 2 and (tmp_path / "run" / "run.json").is_file()
    with pytest.raises(ConfigError, match="differ"):  # resume refuses a changed value, as `mtnews train` does
        mtnews.fit(None, data=small_synth, out=tmp_path / "run", resume=True,
                   overrides={**over, "train": {**over["train"], "lr": 1e-3}})
    base = mtnews.score_split(small_synth, "validation", scorer="popularity")
    assert set(base) >= {"auc", "mrr", "ndcg@5", "ndcg@10", "impressions"}
    with pytest.raises(ConfigError, match="exactly one"):
        mtnews.score_split(small_synth, "validation")


def test_public_names():
    assert sorted(mtnews.__all__) == ["Recommender", "Run", "fit", "load_run", "predict", "score_split", "upgrade_run"]
    for name in mtnews.__all__:
        assert getattr(mtnews, name) is not None
    with pytest.raises(AttributeError):
        mtnews.no_such_name  # noqa: B018


def test_a_label_interest_run_ranks_by_one_dot_product_in_its_ranking_space(tiny_bert, small_synth, tmp_path):
    """model.interest: rank, score and the exported vectors agree, supplied titles included."""
    from mtnews.config import load_config
    from mtnews.train.loop import train

    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--train.max_steps", "3", "--train.eval_every", "0",
                             "--train.device", "cpu", "--data.history_size", "8",
                             "--model.interest", "[category, sentiment]"])
    train(cfg, small_synth, tmp_path / "run", progress=False)
    rec = mtnews.Recommender.from_run(tmp_path / "run", small_synth, "validation", device="cpu")
    assert rec.dim == rec.model.dim + rec.model.interest.width
    arts = pl.read_parquet(small_synth / "articles.parquet").head(12)
    ids, titles = arts["article_id"].to_list(), arts["title"].to_list()
    supplied = {"article_id": 987654321, "title": "A title the catalogue has never seen"}
    r = rec.rank(ids[:6], [*ids[6:], supplied])
    user = rec.user_vectors([ids[:6]])[0]
    items = rec.encode_articles([*titles[6:], supplied["title"]])
    by_id = {i.article_id: i.score for i in r.items}
    np.testing.assert_allclose([by_id[a] for a in [*ids[6:], supplied["article_id"]]], items @ user, rtol=1e-5, atol=1e-5)
    behaviors = pl.read_parquet(small_synth / "validation" / "behaviors.parquet").head(5)
    for row in rec.score(behaviors).iter_rows(named=True):
        hist = [h.article_id for h in rec.user_history(row["user_id"])] if row["user_id"] in set(rec.users(0, 10**6)) else []
        cands = [a for a in row["article_ids_inview"] if a is not None]
        got = {i.article_id: i.score for i in rec.rank(hist, cands).items}
        np.testing.assert_allclose([got[a] for a in cands], row["scores"], rtol=1e-6)
