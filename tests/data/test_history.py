"""UserHistories: last-H clicks, left padding, users without history, unknown ids; brute force on the real log."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mtnews.data.articles import PAD, UNK, load_articles
from mtnews.data.history import load_histories
from mtnews.errors import DataError

# Tiny dataset article id -> dense index (see tests/conftest.py).
IDX = {107: 2, 101: 3, 110: 4, 103: 5, 102: 6, 108: 7, 104: 8, 106: 9, 109: 10, 105: 11}


@pytest.fixture
def tiny(tiny_dataset):
    root = tiny_dataset()
    return root, load_articles(root / "articles.parquet")


def test_tiny_last_h_left_padded(tiny):
    root, arts = tiny
    h = load_histories(root / "train" / "history.parquet", arts, history_size=3)
    assert h.history_size == 3
    assert h.user_ids.tolist() == [10, 20, 40]
    assert h.matrix.dtype == np.int32
    assert h.matrix.tolist() == [
        [PAD, PAD, PAD],  # row 0: the empty history
        [IDX[104], IDX[105], IDX[106]],  # user 10: last 3 of 6, oldest first
        [PAD, IDX[107], IDX[108]],  # user 20: the null inside the list is dropped
        [PAD, UNK, IDX[103]],  # user 40: 998 is not an article
    ]
    assert h.unknown_ids == 1
    assert h.lengths().tolist() == [0, 3, 2, 2]


def test_tiny_wide_history(tiny):
    root, arts = tiny
    h = load_histories(root / "train" / "history.parquet", arts, history_size=8)
    assert h.matrix[1].tolist() == [PAD, PAD] + [IDX[i] for i in (101, 102, 103, 104, 105, 106)]
    assert h.matrix[2].tolist() == [PAD] * 6 + [IDX[107], IDX[108]]
    assert h.matrix[3].tolist() == [PAD] * 6 + [UNK, IDX[103]]


def test_tiny_history_of_one_drops_unknown_from_count(tiny):
    root, arts = tiny
    h = load_histories(root / "train" / "history.parquet", arts, history_size=1)
    # Only the last click is kept; user 40's unknown 998 is no longer in it.
    assert h.matrix[:, 0].tolist() == [PAD, IDX[106], IDX[108], IDX[103]]
    assert h.unknown_ids == 0


def test_rows_for_users(tiny):
    root, arts = tiny
    h = load_histories(root / "train" / "history.parquet", arts, history_size=3)
    users = np.array([40, 30, 10, 10, 20, 0, 99999, 15])
    assert h.rows(users).tolist() == [3, 0, 1, 1, 2, 0, 0, 0]
    assert (h.matrix[h.rows(np.array([30]))] == PAD).all()


def test_empty_history_file(tmp_path, tiny):
    _, arts = tiny
    p = tmp_path / "history.parquet"
    pl.DataFrame({"user_id": [], "article_id_fixed": []}, schema={"user_id": pl.UInt32, "article_id_fixed": pl.List(pl.Int32)}).write_parquet(p)
    h = load_histories(p, arts, history_size=4)
    assert h.matrix.tolist() == [[PAD] * 4]
    assert h.rows(np.array([1, 2])).tolist() == [0, 0]


def test_null_and_empty_lists(tmp_path, tiny):
    _, arts = tiny
    p = tmp_path / "history.parquet"
    pl.DataFrame(
        {"user_id": [3, 1, 2], "article_id_fixed": [None, [], [None, None, 101]], "extra": ["a", "b", "c"]},
        schema={"user_id": pl.UInt32, "article_id_fixed": pl.List(pl.Int32), "extra": pl.String},
    ).write_parquet(p)
    h = load_histories(p, arts, history_size=2)
    assert h.user_ids.tolist() == [1, 2, 3]
    assert h.matrix.tolist() == [[PAD, PAD], [PAD, PAD], [PAD, IDX[101]], [PAD, PAD]]


def _fixture_reference(root, arts_ids: list[int], history_size: int):
    """Plain-Python expectation: index = position in articles.parquet + 2."""
    pos = {a: i + 2 for i, a in enumerate(arts_ids)}
    hist = pl.read_parquet(root / "train" / "history.parquet").to_dicts()
    rows, unknown = {}, 0
    for r in hist:
        clicks = [a for a in r["article_id_fixed"] if a is not None][-history_size:]
        idx = [pos.get(a, UNK) for a in clicks]
        unknown += sum(1 for a in clicks if a not in pos)
        rows[r["user_id"]] = [PAD] * (history_size - len(idx)) + idx
    return rows, unknown


@pytest.mark.parametrize("history_size", [1, 30, 1000])
def test_real_fixture_brute_force(fixture_dataset, history_size):
    arts_path = fixture_dataset / "articles.parquet"
    arts = load_articles(arts_path)
    h = load_histories(fixture_dataset / "train" / "history.parquet", arts, history_size)
    ref, unknown = _fixture_reference(fixture_dataset, pl.read_parquet(arts_path)["article_id"].to_list(), history_size)
    assert len(ref) == 44
    assert h.matrix.shape == (45, history_size)
    assert h.unknown_ids == unknown == 0
    got_rows = h.rows(np.array(list(ref)))
    assert sorted(got_rows.tolist()) == list(range(1, 45))
    for user, row in zip(ref, got_rows):
        assert h.matrix[row].tolist() == ref[user], user
    # Every behaviors user has a history in the fixture.
    beh_users = pl.read_parquet(fixture_dataset / "train" / "behaviors.parquet")["user_id"].unique().to_numpy()
    assert (h.rows(beh_users) > 0).all()


def test_real_fixture_unknown_ids_counted(fixture_dataset, tmp_path):
    arts_path = fixture_dataset / "articles.parquet"
    full = pl.read_parquet(arts_path)
    # Drop every 7th article: their ids in the kept part of each history become UNK and are counted.
    kept = full.filter(pl.int_range(pl.len()) % 7 != 0)
    p = tmp_path / "articles.parquet"
    kept.write_parquet(p)
    arts = load_articles(p)
    h = load_histories(fixture_dataset / "train" / "history.parquet", arts, 50)
    ref, unknown = _fixture_reference(fixture_dataset, kept["article_id"].to_list(), 50)
    assert unknown > 0
    assert h.unknown_ids == unknown
    assert int((h.matrix == UNK).sum()) == unknown
    for user, row in zip(ref, h.rows(np.array(list(ref)))):
        assert h.matrix[row].tolist() == ref[user]


@pytest.mark.parametrize(
    "users, lists, dtypes, message",
    [
        ([1, 2, 1], [[101], [102], [103]], {}, "column 'user_id' has 1 duplicate users"),
        ([1, None], [[101], [102]], {}, "column 'user_id' has null values"),
        (["1", "2"], [[101], [102]], {"user_id": pl.String}, "column 'user_id' has dtype String, expected integer"),
        ([1, 2], [["101"], ["102"]], {"article_id_fixed": pl.List(pl.String)}, "column 'article_id_fixed' has dtype List(String), expected list of integers"),
    ],
    ids=["duplicate-users", "null-user", "user-str", "ids-str"],
)
def test_history_errors(tmp_path, tiny, users, lists, dtypes, message):
    _, arts = tiny
    p = tmp_path / "history.parquet"
    sch = {"user_id": pl.UInt32, "article_id_fixed": pl.List(pl.Int32), **dtypes}
    pl.DataFrame({"user_id": users, "article_id_fixed": lists}, schema=sch).write_parquet(p)
    with pytest.raises(DataError) as e:
        load_histories(p, arts, 5)
    assert str(e.value).startswith(f"{p}: ") and message in str(e.value)


def test_missing_history_column(tmp_path, tiny):
    _, arts = tiny
    p = tmp_path / "history.parquet"
    pl.DataFrame({"user_id": [1], "article_ids": [[101]]}, schema={"user_id": pl.UInt32, "article_ids": pl.List(pl.Int32)}).write_parquet(p)
    with pytest.raises(DataError, match=r"missing column\(s\) 'article_id_fixed' \(list of integers\)") as e:
        load_histories(p, arts, 5)
    assert str(p) in str(e.value)
