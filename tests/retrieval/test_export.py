"""`mtnews embed`: the exported vectors are the Python API's, tagged with the run, streamed in row groups."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from mtnews.cli import main
from mtnews.recommender import Recommender
from mtnews.retrieval.export import column_vectors, read_vectors
from mtnews.retrieval.index import FreshIndex


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_run, small_synth):
    out = tmp_path_factory.mktemp("embed") / "vectors"
    assert main(["embed", "--run", str(trained_run), "--data", str(small_synth), "--split", "validation",
                 "--out", str(out), "--chunk", "64", "--device", "cpu"]) == 0
    return out


@pytest.fixture(scope="module")
def rec(trained_run, small_synth):
    return Recommender.from_run(trained_run, small_synth, "validation", device="cpu")


def test_articles_equal_encode_articles_and_carry_the_fingerprint(exported, rec, small_synth):
    table, fp = read_vectors(exported / "articles.parquet", rec.run.fingerprint())
    assert fp == rec.run.fingerprint()
    src = pl.read_parquet(small_synth / "articles.parquet")
    assert table.column("article_id").to_pylist() == src["article_id"].to_list()
    assert table.schema.field("vector").type.list_size == rec.dim
    got = column_vectors(table.column("vector"))
    want = rec.encode_articles(src["title"].to_list())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    pub = table.column("published_time").cast("int64").to_numpy()
    assert (pub == src["published_time"].cast(pl.Int64).to_numpy()).all()


def test_users_equal_user_vectors_and_stream_in_row_groups(exported, rec, small_synth):
    pf = pq.ParquetFile(exported / "users.parquet")
    hist = pl.read_parquet(small_synth / "validation" / "history.parquet").sort("user_id")
    assert pf.metadata.num_row_groups == -(-hist.height // 64) > 1  # one row group per chunk of 64 users
    table, fp = read_vectors(exported / "users.parquet")
    assert fp == rec.run.fingerprint()
    assert table.column("user_id").to_pylist() == hist["user_id"].to_list()
    assert table.column("history_length").to_pylist() == hist["article_id_fixed"].list.len().to_list()
    want = rec.user_vectors(hist["article_id_fixed"].to_list())
    np.testing.assert_allclose(column_vectors(table.column("vector")), want, rtol=1e-5, atol=1e-6)


def test_the_index_beside_the_vectors_reloads_with_the_run_fingerprint(exported, rec, small_synth):
    index = FreshIndex.load(exported / "index", rec.run.fingerprint())
    src = pl.read_parquet(small_synth / "articles.parquet")
    assert len(index) == src["published_time"].is_not_null().sum()
    table, _ = read_vectors(exported / "articles.parquet")
    vecs = column_vectors(table.column("vector"))
    rows = index.pool.rows(table.column("article_id").to_numpy())
    np.testing.assert_array_equal(index.vectors_of(0, len(index))[rows], vecs)


def test_out_must_be_new_empty_or_an_earlier_export(exported, trained_run, small_synth, tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    rc = main(["embed", "--run", str(trained_run), "--data", str(small_synth), "--out", str(foreign)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1 and "not empty" in err
    assert (foreign / "notes.txt").read_text() == "keep me"
