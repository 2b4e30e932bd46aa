"""`mtnews data check` and up-front validation: every broken input is one clear DataError / one stderr line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from mtnews.cli import main
from mtnews.data.check import check_dataset
from mtnews.data.dataset import load_split
from mtnews.data.layout import split_paths
from mtnews.errors import DataError

# The vendored real EBNeRD file (tests/fixtures/ebnerd/README.md), big enough to truncate and corrupt mid-data.
REAL_BEHAVIORS = Path(__file__).resolve().parents[1] / "fixtures" / "ebnerd" / "behaviors.parquet"
PY = sys.executable


def _rewrite(path: Path, fn) -> None:
    fn(pl.read_parquet(path)).write_parquet(path)


def _bytes_of_real_file() -> bytes:
    return REAL_BEHAVIORS.read_bytes()


def _truncate(root: Path) -> None:
    raw = _bytes_of_real_file()
    (root / "train" / "behaviors.parquet").write_bytes(raw[: len(raw) // 2])


def _corrupt_page(root: Path) -> None:
    # Footer intact (schema reads fine), a data page overwritten: fails only when the rows are read.
    raw = bytearray(_bytes_of_real_file())
    raw[2000 : len(raw) // 2] = b"\x55" * (len(raw) // 2 - 2000)
    (root / "train" / "behaviors.parquet").write_bytes(bytes(raw))


def _unlink(rel: str):
    return lambda root: (root / rel).unlink()


def _mutate(rel: str, fn):
    return lambda root: _rewrite(root / rel, fn)


TB, TH, VB, VH, A = "train/behaviors.parquet", "train/history.parquet", "validation/behaviors.parquet", "validation/history.parquet", "articles.parquet"

# (id, mutation of the tiny dataset root, file the message must name, substrings it must contain)
BROKEN = [
    ("missing-articles", _unlink(A), A, ["file not found"]),
    ("missing-train-behaviors", _unlink(TB), TB, ["file not found"]),
    ("missing-validation-history", _unlink(VH), VH, ["file not found"]),
    ("deleted-inview", _mutate(TB, lambda d: d.drop("article_ids_inview")), TB, ["missing column", "'article_ids_inview' (list of integers)"]),
    ("deleted-clicked", _mutate(VB, lambda d: d.drop("article_ids_clicked")), VB, ["missing column", "'article_ids_clicked'"]),
    ("deleted-user", _mutate(TH, lambda d: d.drop("user_id")), TH, ["missing column", "'user_id' (integer)"]),
    ("deleted-title", _mutate(A, lambda d: d.drop("title")), A, ["missing column", "'title' (string)"]),
    (
        "inview-as-string",
        _mutate(TB, lambda d: d.with_columns(pl.col("article_ids_inview").list.eval(pl.element().cast(pl.String)).list.join(","))),
        TB,
        ["column 'article_ids_inview' has dtype String, expected list of integers"],
    ),
    (
        "clicked-as-float-list",
        _mutate(VB, lambda d: d.with_columns(pl.col("article_ids_clicked").cast(pl.List(pl.Float64)))),
        VB,
        ["column 'article_ids_clicked'", "expected list of integers"],
    ),
    ("user-as-string", _mutate(TB, lambda d: d.with_columns(pl.col("user_id").cast(pl.String))), TB, ["column 'user_id' has dtype String, expected integer"]),
    ("history-user-as-string", _mutate(VH, lambda d: d.with_columns(pl.col("user_id").cast(pl.String))), VH, ["column 'user_id'", "expected integer"]),
    ("history-ids-as-strings", _mutate(TH, lambda d: d.with_columns(pl.col("article_id_fixed").cast(pl.List(pl.String)))), TH, ["column 'article_id_fixed'", "expected list of integers"]),
    ("article-id-as-string", _mutate(A, lambda d: d.with_columns(pl.col("article_id").cast(pl.String))), A, ["column 'article_id'", "expected integer"]),
    ("empty-file", lambda root: (root / TB).write_bytes(b""), TB, ["empty (0 bytes)"]),
    ("not-parquet", lambda root: (root / VH).write_text("user_id,article_id_fixed\n1,2\n"), VH, ["not a readable parquet file"]),
    ("truncated", _truncate, TB, ["not a readable parquet file"]),
    ("corrupt-page", _corrupt_page, TB, ["not a readable parquet file"]),
    ("zero-row-behaviors", _mutate(VB, lambda d: d.head(0)), VB, ["no rows"]),
    ("zero-row-articles", _mutate(A, lambda d: d.head(0)), A, ["no articles"]),
    ("null-user", _mutate(TB, lambda d: d.with_columns(pl.when(pl.col("impression_id") == 3).then(None).otherwise(pl.col("user_id")).alias("user_id"))), TB, ["column 'user_id' has null values"]),
    ("duplicate-history-user", _mutate(TH, lambda d: pl.concat([d, d.head(1)])), TH, ["column 'user_id' has 1 duplicate users"]),
    ("duplicate-article", _mutate(A, lambda d: pl.concat([d, d.tail(2)])), A, ["column 'article_id' has 2 duplicate ids"]),
    ("null-article-id", _mutate(A, lambda d: d.with_columns(pl.when(pl.col("article_id") == 104).then(None).otherwise(pl.col("article_id")).alias("article_id"))), A, ["column 'article_id' has 1 null values"]),
]


@pytest.mark.parametrize("mutate, rel, expect", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_dataset_is_one_clear_error(tiny_dataset, capsys, mutate, rel, expect):
    root = tiny_dataset()
    mutate(root)
    with pytest.raises(DataError) as e:
        check_dataset(root)
    msg = str(e.value)
    assert msg.startswith(f"{root / rel}: "), msg
    for s in expect:
        assert s in msg, msg
    assert "\n" not in msg

    # The CLI prints exactly that, as one line on stderr, and exits 2.
    capsys.readouterr()
    assert main(["data", "check", "--data", str(root)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"mtnews: error: {msg}\n"


@pytest.mark.parametrize(
    "rel, expect",
    [
        ("does/not/exist", "dataset folder not found"),
        ("empty", "no split found"),
    ],
)
def test_missing_or_empty_folder(tmp_path, capsys, rel, expect):
    (tmp_path / "empty").mkdir()
    root = tmp_path / rel
    with pytest.raises(DataError, match=expect) as e:
        check_dataset(root)
    assert str(e.value).startswith(f"{root}: ")
    assert main(["data", "check", "--data", str(root)]) == 2
    assert capsys.readouterr().err == f"mtnews: error: {e.value}\n"


def test_split_names_and_folders(tiny_dataset):
    root = tiny_dataset()
    with pytest.raises(DataError, match=r"^unknown split 'dev', expected one of train, validation, test$"):
        split_paths(root, "dev")
    with pytest.raises(DataError, match=r"unknown split 'Train'"):
        load_split(root, "Train")
    with pytest.raises(DataError) as e:
        load_split(root, "test")
    assert str(e.value) == f"{root / 'test'}: split folder not found (this dataset has: train, validation)"
    with pytest.raises(DataError, match="dataset folder not found"):
        load_split(root / "nope", "train")


def test_subprocess_error_has_no_traceback(tiny_dataset):
    root = tiny_dataset()
    _truncate(root)
    r = subprocess.run([PY, "-m", "mtnews", "data", "check", "--data", str(root)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"mtnews: error: {root / TB}: not a readable parquet file")
    assert "Traceback" not in r.stderr


def test_tiny_report_hand_computed(tiny_dataset):
    root = tiny_dataset(with_test=True)
    r = check_dataset(root)
    assert r["articles"] == 10 and r["categories"] == 4
    assert list(r["splits"]) == ["train", "validation", "test"]
    assert r["splits"]["train"] == {
        "impressions": 6,
        "users": 3,
        "users_without_history": 1,  # user 30, who has two impressions, counts once
        "inview_length": {"min": 2, "median": 2.5, "mean": 2.83, "max": 5},  # [5, 3, 2, 2, 3, 2] (a null dropped)
        "history_length": {"min": 2, "median": 2.0, "mean": 3.33, "max": 6},  # [6, 2, 2] (a null dropped)
        "empty_inview": 0,
        "without_click": 1,
        "unknown_article_ids": 2,  # 999 in view, 998 in a history
    }
    v = r["splits"]["validation"]
    assert (v["impressions"], v["users"], v["users_without_history"], v["without_click"], v["unknown_article_ids"]) == (2, 2, 1, 0, 0)
    t = r["splits"]["test"]
    assert (t["impressions"], t["users"], t["users_without_history"], t["unknown_article_ids"]) == (3, 2, 1, 0)
    assert "without_click" not in t


def test_extra_columns_and_null_optional_columns(tiny_dataset):
    root = tiny_dataset()
    before = check_dataset(root)
    b = pl.read_parquet(root / TB)
    # The tiny files already leave optional columns null (gender, the behaviors' article_id, ...).
    assert b["gender"].null_count() == b.height and b["article_id"].null_count() == b.height
    extra = lambda d: d.with_columns(pl.lit("x").alias("my_extra"), pl.lit([1, 2]).alias("my_list"))  # noqa: E731
    for rel in (A, TB, TH, VB, VH):
        _rewrite(root / rel, extra)
    assert check_dataset(root) == before
    split = load_split(root, "train", history_size=3)
    assert "my_extra" not in split.behaviors.columns
    assert len(split.train_samples(2, 0)) == 5


def test_dataset_path_with_glob_characters(tiny_dataset):
    """Regression: `[...]` or `*` in the dataset path made every file 'not a readable parquet file'."""
    root = tiny_dataset("ebnerd[small]*")
    assert check_dataset(root)["splits"]["train"]["impressions"] == 6


def test_real_fixture_passes(fixture_dataset, capsys):
    r = check_dataset(fixture_dataset)
    t = r["splits"]["train"]
    assert list(r["splits"]) == ["train"]
    assert r["articles"] == 3376
    assert (t["impressions"], t["users"], t["unknown_article_ids"], t["users_without_history"], t["without_click"]) == (1046, 38, 0, 0, 0)
    assert t["inview_length"]["min"] == 4 and t["inview_length"]["max"] == 81
    assert t["history_length"]["min"] == 5 and t["history_length"]["max"] == 700

    assert main(["data", "check", "--data", str(fixture_dataset)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert "1046" in out and "38" in out and "dataset OK" in out


def test_real_fixture_unknown_ids_reported(fixture_dataset, capsys):
    beh = pl.read_parquet(fixture_dataset / TB)
    hist = pl.read_parquet(fixture_dataset / TH)
    inview_only = set(beh["article_ids_inview"].explode().to_list()) - set(hist["article_id_fixed"].explode().to_list())
    history_only = set(hist["article_id_fixed"].explode().to_list()) - set(beh["article_ids_inview"].explode().to_list())
    dropped = sorted(inview_only)[:3] + sorted(history_only)[:4]
    assert len(dropped) == 7
    _rewrite(fixture_dataset / A, lambda d: d.filter(~pl.col("article_id").is_in(dropped)))

    assert main(["data", "check", "--data", str(fixture_dataset), "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["articles"] == 3376 - 7
    assert report["splits"]["train"]["unknown_article_ids"] == 7
    assert report["splits"]["train"]["impressions"] == 1046 and report["splits"]["train"]["users"] == 38


def test_subprocess_json(fixture_dataset):
    env = {**os.environ, "COLUMNS": "200"}
    r = subprocess.run([PY, "-m", "mtnews", "data", "check", "--data", str(fixture_dataset), "--json"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["root"] == str(fixture_dataset)
    assert report["splits"]["train"]["impressions"] == 1046
    assert report["splits"]["train"]["users"] == 38


def test_split_without_behaviors_is_not_skipped(tiny_dataset):
    """Regression: a split folder without behaviors.parquet used to be skipped silently and the check passed."""
    root = tiny_dataset()
    shutil.rmtree(root / "validation")
    (root / "validation").mkdir()
    with pytest.raises(DataError, match="validation/behaviors.parquet: file not found"):
        check_dataset(root)
