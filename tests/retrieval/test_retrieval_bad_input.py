"""`mtnews embed` and `mtnews retrieve` on bad input: one line naming what is wrong, exit 2, no output left."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from mtnews.cli import main


@pytest.fixture
def data(small_synth, tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(small_synth, root)
    return root


def rewrite(path: Path, fn) -> None:
    fn(pl.read_parquet(path)).write_parquet(path)


def no_impression_time(root):
    rewrite(root / "validation" / "behaviors.parquet", lambda df: df.drop("impression_time"))


def no_published_time(root):
    rewrite(root / "articles.parquet", lambda df: df.drop("published_time"))


def null_published_time(root):
    rewrite(root / "articles.parquet", lambda df: df.with_columns(pl.lit(None, pl.Datetime("us")).alias("published_time")))


def published_in_the_future(root):
    rewrite(root / "articles.parquet", lambda df: df.with_columns(pl.lit(datetime(2030, 1, 1)).alias("published_time")))


def check(capsys, argv, out: Path, needles: list[str]) -> None:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("mtnews: error: "), err
    for n in needles:
        assert n in err, (n, err)
    assert not out.exists(), f"{out} was left behind"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")], "a temporary was left behind"


def retrieve(root, out, *extra, run=None):
    return ["retrieve", "--data", root, "--split", "validation", "--json-out", out,
            *(["--run", run, "--device", "cpu"] if run else ["--scorer", "newest"]), *extra]


def embed(root, out, run):
    return ["embed", "--run", run, "--data", root, "--split", "validation", "--out", out, "--device", "cpu"]


@pytest.mark.parametrize("command", ["embed", "retrieve"])
def test_missing_run(data, tmp_path, capsys, command):
    out = tmp_path / "out"
    argv = embed(data, out, tmp_path / "no-run") if command == "embed" else retrieve(data, out, run=tmp_path / "no-run")
    check(capsys, argv, out, [str(tmp_path / "no-run")])


@pytest.mark.parametrize("mutate, needles", [
    (no_impression_time, ["validation/behaviors.parquet", "'impression_time'"]),
    (no_published_time, ["articles.parquet", "'published_time'"]),
])
@pytest.mark.parametrize("scorer", ["model", "newest", "popular-fresh"])
def test_retrieve_split_without_timestamps(data, tmp_path, capsys, trained_run, mutate, needles, scorer):
    mutate(data)
    out = tmp_path / "r.json"
    argv = retrieve(data, out, run=trained_run) if scorer == "model" else retrieve(data, out)[:-2] + ["--scorer", scorer]
    check(capsys, argv, out, needles)


def test_embed_without_publication_times(data, tmp_path, capsys, trained_run):
    no_published_time(data)
    out = tmp_path / "vec"
    check(capsys, embed(data, out, trained_run), out, ["articles.parquet", "'published_time'", "--no-index"])
    assert main([str(a) for a in embed(data, out, trained_run)] + ["--no-index"]) == 0
    assert (out / "users.parquet").is_file() and not (out / "index").exists()


@pytest.mark.parametrize("k", ["0", "-3"])
def test_k_must_be_positive(data, tmp_path, capsys, trained_run, k):
    out = tmp_path / "r.json"
    check(capsys, retrieve(data, out, "--k", k, run=trained_run), out, ["--k", "positive", k])
    check(capsys, retrieve(data, out, "--k", k), out, ["--k"])
    check(capsys, retrieve(data, out, "--max-age-hours", "0"), out, ["--max-age-hours", "> 0"])


@pytest.mark.parametrize("mutate", [published_in_the_future, null_published_time])
def test_empty_pool_everywhere(data, tmp_path, capsys, trained_run, mutate):
    mutate(data)
    out = tmp_path / "r.json"
    check(capsys, retrieve(data, out, run=trained_run), out, ["pool"])
    check(capsys, retrieve(data, out), out, ["pool"])
    vec = tmp_path / "vec"
    if mutate is null_published_time:
        check(capsys, embed(data, vec, trained_run), vec, ["articles.parquet", "null for every article"])


def test_some_empty_pools_are_skipped_and_counted(data, tmp_path, capsys):
    # The validation week's first day has no fresh articles left: it is skipped, the rest is evaluated.
    beh = pl.read_parquet(data / "validation" / "behaviors.parquet")
    first_day = beh["impression_time"].min()
    rewrite(data / "articles.parquet", lambda df: df.filter(
        (pl.col("published_time") < first_day - pl.duration(days=4)) | (pl.col("published_time") > first_day + pl.duration(days=1))))
    from mtnews.retrieval.task import retrieve_split

    res = retrieve_split(data, "validation", scorer="newest", k=10, max_age_hours=72)
    assert res["skipped_empty_pool"] > 0 and res["evaluated"] > 0
    assert res["skipped_empty_pool"] + res["evaluated"] + res["skipped_no_click"] == res["impressions"]


def test_retrieve_index_from_another_run_is_refused(data, tmp_path, capsys, trained_run):
    vec = tmp_path / "vec"
    assert main([str(a) for a in embed(data, vec, trained_run)]) == 0
    meta = vec / "index" / "index.json"
    meta.write_text(meta.read_text().replace('"fingerprint": "', '"fingerprint": "0'))
    out = tmp_path / "r.json"
    check(capsys, retrieve(data, out, "--index", vec / "index", run=trained_run), out, ["index.json", "fingerprint"])
