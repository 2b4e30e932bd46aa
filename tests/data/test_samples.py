"""wu2019 training samples: positives, negatives from the same impression, counts, seeding and uniformity."""

from __future__ import annotations

from collections import Counter
from itertools import permutations

import numpy as np
import polars as pl
import pytest

from mtnews.data import schema
from mtnews.data.articles import UNK, load_articles
from mtnews.data.dataset import load_split
from mtnews.data.history import load_histories
from mtnews.data.samples import build_train_samples, sample_negatives

# Tiny dataset article id -> dense index (see tests/conftest.py).
IDX = {107: 2, 101: 3, 110: 4, 103: 5, 102: 6, 108: 7, 104: 8, 106: 9, 109: 10, 105: 11}


def behaviors(rows: list[tuple]) -> pl.DataFrame:
    """(impression_id, user_id, inview, clicked) rows, with the official dtypes."""
    return pl.DataFrame(
        {
            "impression_id": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "article_ids_inview": [r[2] for r in rows],
            "article_ids_clicked": [r[3] for r in rows],
        },
        schema={c: schema.BEHAVIORS[c] for c in ("impression_id", "user_id", "article_ids_inview", "article_ids_clicked")},
    )


@pytest.fixture
def tiny(tiny_dataset):
    root = tiny_dataset()
    arts = load_articles(root / "articles.parquet")
    return root, arts, load_histories(root / "train" / "history.parquet", arts, 4)


def test_tiny_hand_computed(tiny_dataset):
    split = load_split(tiny_dataset(), "train", history_size=4)
    s = split.train_samples(npratio=2, seed=0)
    assert len(s) == 5
    assert s.impression_id.tolist() == [1, 2, 2, 5, 6]
    # history rows: user 10 -> 1, user 20 -> 2, user 30 (no history) -> 0
    assert s.user_row.tolist() == [1, 1, 1, 2, 0]
    assert s.candidates.shape == (5, 3) and s.candidates.dtype == np.int32
    assert s.candidates[:, 0].tolist() == [IDX[102], IDX[106], IDX[101], IDX[110], IDX[101]]
    neg = s.candidates[:, 1:].tolist()
    # imp 1: 2 distinct of {101, 103, 104, 105}
    assert len(set(neg[0])) == 2 and set(neg[0]) <= {IDX[101], IDX[103], IDX[104], IDX[105]}
    # imp 2: only 103 is not clicked, drawn with replacement for both clicks
    assert neg[1] == neg[2] == [IDX[103], IDX[103]]
    # imp 5: exactly {999 (unknown), 101}, in some order
    assert sorted(neg[3]) == sorted([UNK, IDX[101]])
    # imp 6: the null in the in-view list is not a candidate
    assert neg[4] == [IDX[102], IDX[102]]
    assert s.no_click == 1  # imp 3
    assert s.no_negative == 2  # both clicks of imp 4, whose in-view list is all clicked


def test_samples_follow_in_view_order_not_click_list_order(tiny):
    """MIND keeps no click order (only in-view labels), so the samples must not depend on it."""
    _, arts, hist = tiny
    a = behaviors([(1, 10, [105, 101, 103, 102, 104], [102, 101]), (2, 20, [106, 107], [999, 107])])
    b = behaviors([(1, 10, [105, 101, 103, 102, 104], [101, 102]), (2, 20, [106, 107], [107, 999])])
    sa = build_train_samples(a, arts, hist, npratio=2, seed=3)
    sb = build_train_samples(b, arts, hist, npratio=2, seed=3)
    np.testing.assert_array_equal(sa.candidates, sb.candidates)
    # In-view order (101 before 102); 999 is clicked but not in view, so it comes after imp 2's 107.
    assert sa.candidates[:, 0].tolist() == [IDX[101], IDX[102], IDX[107], UNK]
    assert set(sa.candidates[0, 1:].tolist()) <= {IDX[105], IDX[103], IDX[104]}


def test_duplicates_in_lists(tiny):
    _, arts, hist = tiny
    b = behaviors([(1, 10, [101, 103, 103, 102, 102], [102, 102])])
    for seed in range(20):
        s = build_train_samples(b, arts, hist, npratio=2, seed=seed)
        assert len(s) == 1  # the repeated click is one click
        assert s.candidates[0, 0] == IDX[102]
        # Two distinct non-clicked articles exist, so both are drawn once each.
        assert sorted(s.candidates[0, 1:].tolist()) == sorted([IDX[101], IDX[103]])


def test_no_usable_impressions(tiny):
    _, arts, hist = tiny
    b = behaviors([(1, 10, [101, 102], []), (2, 10, [101], [101]), (3, 20, [101, 102], None)])
    s = build_train_samples(b, arts, hist, npratio=3, seed=0)
    assert len(s) == 0 and s.candidates.shape == (0, 4)
    assert s.no_click == 2
    assert s.no_negative == 1


def _reference(root, arts_ids):
    """Per impression, in order: (impression_id, user_id, clicked ids in in-view order, set of negative indices)."""
    pos = {a: i + 2 for i, a in enumerate(arts_ids)}
    out = []
    for r in pl.read_parquet(root / "train" / "behaviors.parquet").to_dicts():
        clicks = list(dict.fromkeys(a for a in r["article_ids_clicked"] if a is not None))
        inview = list(dict.fromkeys(a for a in r["article_ids_inview"] if a is not None))
        clicked = [a for a in inview if a in clicks] + [a for a in clicks if a not in inview]
        negs = {pos.get(a, UNK) for a in r["article_ids_inview"] if a is not None and a not in clicked}
        out.append((r["impression_id"], r["user_id"], [pos.get(a, UNK) for a in clicked], negs))
    return out


@pytest.mark.parametrize("k", [1, 4, 8])
def test_real_fixture_every_sample(fixture_dataset, k):
    split = load_split(fixture_dataset, "train", history_size=10)
    s = split.train_samples(npratio=k, seed=123)
    ref = _reference(fixture_dataset, pl.read_parquet(fixture_dataset / "articles.parquet")["article_id"].to_list())
    hist_users = sorted(pl.read_parquet(fixture_dataset / "train" / "history.parquet")["user_id"].to_list())
    expected_n = sum(len(c) for _, _, c, negs in ref if negs)
    assert len(s) == expected_n == 1047
    assert s.no_click == 0 and s.no_negative == 0
    assert s.candidates.shape == (expected_n, 1 + k)
    i = 0
    with_replacement = 0
    for imp, user, clicked, negs in ref:
        for c in clicked:
            assert s.impression_id[i] == imp
            assert s.user_row[i] == hist_users.index(user) + 1
            assert s.candidates[i, 0] == c
            drawn = s.candidates[i, 1:].tolist()
            assert set(drawn) <= negs, (imp, drawn, negs)
            if len(negs) >= k:
                assert len(set(drawn)) == k, (imp, drawn)
            else:
                with_replacement += 1
            i += 1
    assert i == len(s)
    if k == 8:
        assert with_replacement > 0  # the fixture has in-view lists shorter than 9


def test_seeded_reproducible_and_seed_dependent(fixture_dataset):
    split = load_split(fixture_dataset, "train", history_size=5)
    a = split.train_samples(npratio=4, seed=7)
    b = split.train_samples(npratio=4, seed=7)
    c = split.train_samples(npratio=4, seed=8)
    np.testing.assert_array_equal(a.candidates, b.candidates)
    np.testing.assert_array_equal(a.user_row, b.user_row)
    assert not np.array_equal(a.candidates, c.candidates)
    # Only the draws change with the seed.
    np.testing.assert_array_equal(a.candidates[:, 0], c.candidates[:, 0])
    np.testing.assert_array_equal(a.impression_id, c.impression_id)
    # Most impressions have several possible draws, so many rows differ, not just a few.
    assert (a.candidates != c.candidates).any(axis=1).mean() > 0.5


def _chi2(counts: Counter, cells: list, total: int) -> float:
    exp = total / len(cells)
    assert set(counts) <= set(cells), set(counts) - set(cells)
    return sum((counts.get(x, 0) - exp) ** 2 / exp for x in cells)


def test_uniform_without_replacement(tiny):
    """5 negatives, K=2: each of the 20 ordered pairs is equally likely (chi-square, df=19)."""
    _, arts, hist = tiny
    b = behaviors([(i, 10, [101, 102, 103, 104, 105, 106], [101]) for i in range(400)])
    pairs: Counter = Counter()
    for seed in range(10):
        s = build_train_samples(b, arts, hist, npratio=2, seed=seed)
        pairs.update(map(tuple, s.candidates[:, 1:].tolist()))
    negs = [IDX[a] for a in (102, 103, 104, 105, 106)]
    cells = list(permutations(negs, 2))
    # p = 0.001 critical value for 19 degrees of freedom is 43.8
    assert _chi2(pairs, cells, 4000) < 43.8


def test_uniform_with_replacement(tiny):
    """3 negatives, K=5: each slot is uniform over the 3 (chi-square per slot, df=2 each, 10 in all)."""
    _, arts, hist = tiny
    b = behaviors([(i, 10, [101, 102, 103, 104], [101]) for i in range(300)])
    draws = np.concatenate([build_train_samples(b, arts, hist, npratio=5, seed=seed).candidates[:, 1:] for seed in range(10)])
    negs = [IDX[a] for a in (102, 103, 104)]
    stat = sum(_chi2(Counter(draws[:, j].tolist()), negs, len(draws)) for j in range(5))
    # p = 0.001 critical value for 10 degrees of freedom is 29.6
    assert stat < 29.6
    # Slots are independent: P(all 3 appear in 5 draws) = 1 - 3*(2/3)^5 + 3*(1/3)^5 = 0.617 (sd 0.009 here).
    all_three = np.mean([len(set(r)) == 3 for r in draws.tolist()])
    assert abs(all_three - 0.617) < 0.04


@pytest.mark.parametrize("chunk", [1, 3, 1 << 20])
def test_sample_negatives_chunks(chunk):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, size=40)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.arange(offsets[-1], dtype=np.int32) + 1000  # distinct values, so membership is unambiguous
    segment = rng.integers(0, 40, size=200)
    k = 4
    out = sample_negatives(flat, offsets, segment, k, np.random.default_rng(1), chunk=chunk)
    assert out.shape == (200, k)
    for row, seg in zip(out.tolist(), segment.tolist()):
        allowed = set(range(1000 + offsets[seg], 1000 + offsets[seg + 1]))
        assert set(row) <= allowed
        if len(allowed) >= k:
            assert len(set(row)) == k
