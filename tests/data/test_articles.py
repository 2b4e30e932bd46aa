"""ArticleTable: dense indices, auxiliary labels and validation, against hand-computed values.

The tiny dataset's article rows (see tests/conftest.py) are not sorted by id; index = row + 2.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest

from mtnews.data import schema
from mtnews.data.articles import IGNORE, PAD, UNK, load_articles
from mtnews.errors import DataError

# article id -> dense index, written out by hand from the conftest table.
IDX = {107: 2, 101: 3, 110: 4, 103: 5, 102: 6, 108: 7, 104: 8, 106: 9, 109: 10, 105: 11}


@pytest.fixture
def articles_path(tiny_dataset):
    return tiny_dataset() / "articles.parquet"


def test_pad_unk_constants():
    assert (PAD, UNK, IGNORE) == (0, 1, -100)


def test_rows_and_padding(articles_path):
    t = load_articles(articles_path)
    assert len(t) == 12
    assert t.article_ids.tolist() == [-1, -1, 107, 101, 110, 103, 102, 108, 104, 106, 109, 105]
    assert t.titles[:2] == ["", ""]
    assert t.titles[IDX[109]] == "Title of 109"
    assert t.path == articles_path


def test_index_known_unknown_and_shape(articles_path):
    t = load_articles(articles_path)
    ids = np.array([101, 105, 107, 110, 104, 999, 0, -5, 100, 111, 2**31 - 1])
    expected = [IDX[101], IDX[105], IDX[107], IDX[110], IDX[104]] + [UNK] * 6
    assert t.index(ids).tolist() == expected
    # Any shape is kept; every known id maps to its own row.
    grid = np.array(list(IDX)).reshape(2, 5)
    out = t.index(grid)
    assert out.shape == (2, 5)
    assert out.tolist() == [[IDX[i] for i in row] for row in grid.tolist()]
    assert t.index(np.array([], dtype=np.int64)).tolist() == []
    # Never PAD for a real id.
    assert PAD not in t.index(np.arange(90, 130)).tolist()


def test_category_prefers_category_str(articles_path):
    t = load_articles(articles_path)
    # Classes are the sorted distinct names: krimi, news, sport, økonomi.
    assert t.category_names == ["krimi", "news", "sport", "økonomi"]
    assert t.num_categories == 4
    want = {107: 2, 101: 2, 110: 2, 103: 2, 102: 1, 108: 1, 104: IGNORE, 106: 1, 109: 0, 105: 3}
    assert t.category[:2].tolist() == [IGNORE, IGNORE]
    assert {i: int(t.category[IDX[i]]) for i in IDX} == want


def test_category_from_integer_codes_sorts_numerically(articles_path, tmp_path):
    p = tmp_path / "articles.parquet"
    pl.read_parquet(articles_path).drop("category_str").write_parquet(p)
    t = load_articles(p)
    # Codes 2, 118, 140, 142 sorted as numbers, not as strings ("118" < "140" < "142" < "2").
    assert t.category_names == ["2", "118", "140", "142"]
    want = {107: 3, 101: 3, 110: 3, 103: 3, 102: 1, 108: 1, 104: IGNORE, 106: 1, 109: 2, 105: 0}
    assert {i: int(t.category[IDX[i]]) for i in IDX} == want


def test_sentiment_classes_and_unknown_labels(articles_path, tmp_path):
    t = load_articles(articles_path)
    want = {107: 0, 101: 2, 110: 0, 103: 1, 102: 0, 108: 1, 104: IGNORE, 106: 2, 109: 2, 105: 1}
    assert {i: int(t.sentiment[IDX[i]]) for i in IDX} == want
    assert t.sentiment[:2].tolist() == [IGNORE, IGNORE]
    # A label outside Negative/Neutral/Positive is not a class.
    p = tmp_path / "articles.parquet"
    df = pl.read_parquet(articles_path)
    df.with_columns(pl.when(pl.col("article_id") == 101).then(pl.lit("Mixed")).otherwise(pl.col("sentiment_label")).alias("sentiment_label")).write_parquet(p)
    assert load_articles(p).sentiment[IDX[101]] == IGNORE


def _brute_entities(rows: list[list[str] | None], g: int) -> tuple[list[str], np.ndarray]:
    """Top-g groups by occurrence count (ties by name), sorted by name; multi-hot per article row."""
    counts = Counter(e for r in rows if r for e in r if e is not None)
    top = sorted(counts, key=lambda e: (-counts[e], e))[:g]
    names = sorted(top)
    hot = np.zeros((len(rows) + 2, len(names)), dtype=np.float32)
    for i, r in enumerate(rows):
        for e in r or []:
            if e in names:
                hot[i + 2, names.index(e)] = 1.0
    return names, hot


@pytest.mark.parametrize("g", [1, 2, 3, 4, 10])
def test_entity_multi_hot_matches_brute_force(articles_path, g):
    t = load_articles(articles_path, max_entity_groups=g)
    rows = pl.read_parquet(articles_path)["entity_groups"].to_list()
    names, hot = _brute_entities(rows, g)
    assert t.entity_names == names
    assert t.entities.dtype == np.float32
    np.testing.assert_array_equal(t.entities, hot)


def test_entity_hand_values(articles_path):
    t = load_articles(articles_path, max_entity_groups=2)
    # PER occurs 5 times; LOC and ORG tie at 3 and the tie goes to the name, LOC.
    assert t.entity_names == ["LOC", "PER"]
    assert t.entities[IDX[103]].tolist() == [0.0, 1.0]  # [PER, PER] is still one-hot
    assert t.entities[IDX[107]].tolist() == [1.0, 1.0]
    assert t.entities[IDX[109]].tolist() == [0.0, 0.0]
    assert t.entities[IDX[104]].tolist() == [0.0, 0.0]  # null list
    assert t.entities[:2].sum() == 0


@pytest.mark.parametrize("g", [0, 2, 10])
def test_entities_known_separates_null_from_empty(articles_path, g):
    """A null entity_groups (104) is unannotated; an empty list (105) and a list outside the kept groups are
    annotated, with an all-zero target. PAD and UNK are never annotated. Independent of max_entity_groups."""
    t = load_articles(articles_path, max_entity_groups=g)
    assert t.entities_known.dtype == np.bool_ and t.entities_known.shape == (12,)
    assert t.entities_known[:2].tolist() == [False, False]
    assert {i: bool(t.entities_known[IDX[i]]) for i in IDX} == {i: i != 104 for i in IDX}


def test_entities_known_without_the_column(articles_path, tmp_path):
    p = tmp_path / "articles.parquet"
    pl.read_parquet(articles_path).drop("entity_groups").write_parquet(p)
    t = load_articles(p)
    assert t.entities.shape == (12, 0)
    assert not t.entities_known.any()


def test_entity_groups_do_not_depend_on_row_order(articles_path, tmp_path):
    """Regression: ties at the top-G boundary used to be broken by first appearance in the file."""
    df = pl.read_parquet(articles_path)
    ref = load_articles(articles_path, max_entity_groups=2)
    for seed in range(5):
        p = tmp_path / f"shuffled{seed}.parquet"
        df.sample(fraction=1.0, shuffle=True, seed=seed).write_parquet(p)
        t = load_articles(p, max_entity_groups=2)
        assert t.entity_names == ref.entity_names == ["LOC", "PER"]
        for i in IDX:
            np.testing.assert_array_equal(t.entities[t.index([i])[0]], ref.entities[IDX[i]])
            assert t.entities_known[t.index([i])[0]] == ref.entities_known[IDX[i]]


def test_published_time(articles_path):
    t = load_articles(articles_path)
    base = 1672531200 * 10**6  # 2023-01-01T00:00:00 in microseconds
    day = 86400 * 10**6
    assert t.published_us[:2].tolist() == [0, 0]
    assert t.published_us[2:].tolist() == [base + i * day for i in range(10)]


def test_minimal_file_title_only(tmp_path):
    p = tmp_path / "articles.parquet"
    pl.DataFrame({"article_id": [5, 3], "title": ["a", None]}, schema={"article_id": pl.UInt32, "title": pl.String}).write_parquet(p)
    t = load_articles(p)
    assert t.index(np.array([3, 5, 4])).tolist() == [3, 2, UNK]
    assert t.titles == ["", "", "a", ""]
    assert t.category.tolist() == [IGNORE] * 4 and t.category_names == []
    assert t.sentiment.tolist() == [IGNORE] * 4
    assert t.entities.shape == (4, 0) and t.entity_names == []
    assert t.entities_known.tolist() == [False] * 4
    assert t.published_us is None


def test_extra_columns_ignored(articles_path, tmp_path):
    p = tmp_path / "articles.parquet"
    pl.read_parquet(articles_path).with_columns(pl.lit("x").alias("my_extra"), pl.lit(3).alias("other")).write_parquet(p)
    t = load_articles(p)
    assert t.index(np.array(list(IDX))).tolist() == list(IDX.values())


def test_folder_with_glob_characters(tiny_dataset):
    """Regression: polars treated `[...]` in a path as a glob pattern and reported the file unreadable."""
    root = tiny_dataset("data[1]*")
    t = load_articles(root / "articles.parquet")
    assert len(t) == 12


@pytest.mark.parametrize(
    "ids, message",
    [([1, 2, 2, 3], "1 duplicate ids"), ([1, 2, 1, 2], "2 duplicate ids"), ([1, None, 3, None], "2 null values")],
)
def test_bad_article_ids(tmp_path, ids, message):
    p = tmp_path / "articles.parquet"
    pl.DataFrame({"article_id": ids, "title": ["t"] * len(ids)}, schema={"article_id": pl.Int32, "title": pl.String}).write_parquet(p)
    with pytest.raises(DataError) as e:
        load_articles(p)
    msg = str(e.value)
    assert str(p) in msg and "'article_id'" in msg and message in msg


@pytest.mark.parametrize(
    "mutate, column, expectation",
    [
        (lambda df: df.drop("title"), "title", "missing column"),
        (lambda df: df.drop("article_id"), "article_id", "missing column"),
        (lambda df: df.with_columns(pl.col("article_id").cast(pl.String)), "article_id", "expected integer"),
        (lambda df: df.with_columns(pl.col("category").cast(pl.String)), "category", "expected integer"),
        (lambda df: df.with_columns(pl.col("entity_groups").list.join(",")), "entity_groups", "expected list of strings"),
        (lambda df: df.with_columns(pl.lit(1.5).alias("sentiment_label")), "sentiment_label", "expected string"),
    ],
    ids=["no-title", "no-article_id", "article_id-str", "category-str", "entity_groups-str", "sentiment-float"],
)
def test_schema_errors_name_file_and_column(articles_path, tmp_path, mutate, column, expectation):
    p = tmp_path / "articles.parquet"
    mutate(pl.read_parquet(articles_path)).write_parquet(p)
    with pytest.raises(DataError) as e:
        load_articles(p)
    msg = str(e.value)
    assert msg.startswith(str(p)) and f"'{column}'" in msg and expectation in msg
    assert "\n" not in msg


def test_official_dtypes_accepted():
    # The official articles schema must pass the kind checks it is validated with.
    for col, kind in {**schema.REQUIRED_ARTICLES, **schema.OPTIONAL_ARTICLES}.items():
        assert schema._kind_ok(schema.ARTICLES[col], kind), col
