"""Evaluation impressions: ragged in-view lists, per-impression labels, test split, slicing and chunking."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mtnews.data import schema
from mtnews.data.articles import UNK, load_articles
from mtnews.data.behaviors import count_behaviors, iter_behaviors, read_behaviors
from mtnews.data.dataset import load_split
from mtnews.data.history import load_histories
from mtnews.data.impressions import EvalImpressions, build_eval_impressions
from mtnews.data.layout import split_paths
from mtnews.errors import DataError

# Tiny dataset article id -> dense index (see tests/conftest.py).
IDX = {107: 2, 101: 3, 110: 4, 103: 5, 102: 6, 108: 7, 104: 8, 106: 9, 109: 10, 105: 11}


def test_tiny_validation(tiny_dataset):
    ev = load_split(tiny_dataset(), "validation", history_size=3).eval_impressions()
    assert len(ev) == 2
    assert ev.impression_id.tolist() == [11, 12]
    assert ev.user_row.tolist() == [1, 0]  # user 50 has no validation history
    assert ev.offsets.tolist() == [0, 3, 5]
    assert ev.article_ids.tolist() == [101, 102, 103, 104, 105]
    assert ev.candidates.tolist() == [IDX[101], IDX[102], IDX[103], IDX[104], IDX[105]]
    assert ev.labels.dtype == np.int8
    assert ev.labels.tolist() == [0, 0, 1, 0, 1]
    assert ev.beyond_accuracy is None
    assert ev.unknown == 0


def test_tiny_train(tiny_dataset):
    ev = load_split(tiny_dataset(), "train", history_size=3).eval_impressions()
    assert ev.impression_id.tolist() == [1, 2, 3, 4, 5, 6]
    assert ev.user_row.tolist() == [1, 1, 2, 0, 2, 0]
    # imp 6's in-view list [101, 102, null] loses its null
    assert ev.offsets.tolist() == [0, 5, 8, 10, 12, 15, 17]
    assert ev.article_ids.tolist() == [101, 102, 103, 104, 105, 103, 106, 101, 104, 107, 108, 109, 110, 999, 101, 101, 102]
    assert ev.labels.tolist() == [0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0, 1, 0]
    assert ev.candidates[13] == UNK and ev.unknown == 1


def _frame(rows):
    cols = ("impression_id", "user_id", "article_ids_inview", "article_ids_clicked")
    return pl.DataFrame({c: [r[i] for r in rows] for i, c in enumerate(cols)}, schema={c: schema.BEHAVIORS[c] for c in cols})


def test_labels_are_per_impression(tiny_dataset):
    root = tiny_dataset()
    arts = load_articles(root / "articles.parquet")
    hist = load_histories(root / "train" / "history.parquet", arts, 2)
    b = _frame(
        [
            (1, 10, [101, 102], [102]),
            (2, 10, [102, 101], [101]),  # the same ids, the other one clicked
            (3, 10, [-5, 101, 2**31 - 1], [-5, 2**31 - 1, 555]),  # extreme ids; 555 clicked but not in view
            (5, 10, [101], None),
        ]
    )
    ev = build_eval_impressions(b, arts, hist)
    assert ev.offsets.tolist() == [0, 2, 4, 7, 8]
    assert ev.labels.tolist() == [0, 1, 0, 1, 1, 0, 1, 0]
    assert ev.candidates.tolist() == [IDX[101], IDX[102], IDX[102], IDX[101], UNK, IDX[101], UNK, IDX[101]]


def test_impression_without_inview_articles_is_a_data_error(tiny_dataset):
    """It could be neither ranked by the metrics nor written to a submission line."""
    root = tiny_dataset()
    arts = load_articles(root / "articles.parquet")
    hist = load_histories(root / "train" / "history.parquet", arts, 2)
    b = _frame([(1, 10, [101], [101]), (4, 10, [], []), (7, 10, [None], []), (9, 10, [102], [])])
    with pytest.raises(DataError) as e:
        build_eval_impressions(b, arts, hist, source=root / "x.parquet")
    assert str(e.value) == (f"{root / 'x.parquet'}: column 'article_ids_inview' is empty or null in 2 row(s) "
                            f"(first: impression_id 4), expected at least one in-view article per impression")


def test_tiny_test_split(tiny_dataset):
    root = tiny_dataset(with_test=True)
    split = load_split(root, "test", history_size=2)
    assert "article_ids_clicked" not in split.behaviors.columns
    ev = split.eval_impressions()
    assert ev.labels is None
    assert ev.beyond_accuracy.tolist() == [False, True, False]  # null read as False
    assert ev.impression_id.tolist() == [21, 22, 23]
    assert ev.user_row.tolist() == [1, 0, 1]
    assert ev.offsets.tolist() == [0, 3, 6, 7]
    assert ev.article_ids.tolist() == [101, 102, 103, 104, 105, 106, 107]
    part = ev.slice(1, 3)
    assert part.labels is None and part.beyond_accuracy.tolist() == [True, False]


def _reference(root):
    arts_ids = pl.read_parquet(root / "articles.parquet")["article_id"].to_list()
    pos = {a: i + 2 for i, a in enumerate(arts_ids)}
    hist_users = sorted(pl.read_parquet(root / "train" / "history.parquet")["user_id"].to_list())
    rows = pl.read_parquet(root / "train" / "behaviors.parquet").to_dicts()
    return pos, hist_users, rows


def _assert_matches(ev: EvalImpressions, rows, pos, hist_users):
    assert len(ev) == len(rows)
    assert ev.offsets[0] == 0 and ev.offsets[-1] == len(ev.candidates) == len(ev.labels) == len(ev.article_ids)
    for i, r in enumerate(rows):
        a, b = ev.offsets[i], ev.offsets[i + 1]
        inview = [x for x in r["article_ids_inview"] if x is not None]
        assert ev.impression_id[i] == r["impression_id"]
        assert ev.user_row[i] == (hist_users.index(r["user_id"]) + 1 if r["user_id"] in hist_users else 0)
        assert ev.article_ids[a:b].tolist() == inview
        assert ev.candidates[a:b].tolist() == [pos.get(x, UNK) for x in inview]
        assert ev.labels[a:b].tolist() == [int(x in r["article_ids_clicked"]) for x in inview]


def test_real_fixture_brute_force(fixture_dataset):
    pos, hist_users, rows = _reference(fixture_dataset)
    ev = load_split(fixture_dataset, "train", history_size=4).eval_impressions()
    assert len(ev) == 1046
    assert int(ev.labels.sum()) == 1047
    _assert_matches(ev, rows, pos, hist_users)


def test_real_fixture_unknown_ids(fixture_dataset, tmp_path):
    # Leave out the articles whose id is odd: those candidates become UNK.
    p = fixture_dataset / "articles.parquet"
    pl.read_parquet(p).filter(pl.col("article_id") % 2 == 0).write_parquet(p)
    pos, hist_users, rows = _reference(fixture_dataset)
    ev = load_split(fixture_dataset, "train", history_size=4).eval_impressions()
    expected_unknown = sum(1 for r in rows for x in r["article_ids_inview"] if x % 2)
    assert expected_unknown > 0 and ev.unknown == expected_unknown
    _assert_matches(ev, rows, pos, hist_users)


@pytest.mark.parametrize("size", [1, 7, 500, 1046, 5000])
def test_chunks_reassemble_the_whole(fixture_dataset, size):
    ev = load_split(fixture_dataset, "train", history_size=4).eval_impressions()
    parts = list(ev.chunks(size))
    assert len(parts) == -(-1046 // size)
    assert [len(p) for p in parts[:-1]] == [size] * (len(parts) - 1)
    for p in parts:
        assert p.offsets[0] == 0 and p.offsets[-1] == len(p.candidates)
    np.testing.assert_array_equal(np.concatenate([p.impression_id for p in parts]), ev.impression_id)
    np.testing.assert_array_equal(np.concatenate([p.user_row for p in parts]), ev.user_row)
    np.testing.assert_array_equal(np.concatenate([p.candidates for p in parts]), ev.candidates)
    np.testing.assert_array_equal(np.concatenate([p.labels for p in parts]), ev.labels)
    np.testing.assert_array_equal(np.concatenate([p.article_ids for p in parts]), ev.article_ids)
    lengths = np.concatenate([np.diff(p.offsets) for p in parts])
    np.testing.assert_array_equal(lengths, np.diff(ev.offsets))


def test_slice_matches_rows(fixture_dataset):
    pos, hist_users, rows = _reference(fixture_dataset)
    ev = load_split(fixture_dataset, "train", history_size=4).eval_impressions()
    _assert_matches(ev.slice(100, 163), rows[100:163], pos, hist_users)
    _assert_matches(ev.slice(1045, 1046), rows[1045:], pos, hist_users)
    empty = ev.slice(10, 10)
    assert len(empty) == 0 and empty.offsets.tolist() == [0] and len(empty.candidates) == 0


def test_streamed_behaviors_match_whole(fixture_dataset):
    paths = split_paths(fixture_dataset, "train")
    whole = read_behaviors(paths)
    assert whole.columns == ["impression_id", "user_id", "article_ids_inview", "article_ids_clicked"]
    chunks = list(iter_behaviors(paths, chunk_rows=300))
    assert [c.height for c in chunks] == [300, 300, 300, 146]
    assert pl.concat(chunks).equals(whole)
    assert count_behaviors(paths) == 1046
