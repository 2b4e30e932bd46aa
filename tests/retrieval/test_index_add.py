"""Articles added to a built FreshIndex are searched as if the index had been built with them."""

from __future__ import annotations

import numpy as np
import pytest

from mtnews.retrieval.index import FreshIndex
from mtnews.retrieval.params import IndexParams

H = 3_600_000_000


@pytest.mark.parametrize("exact_below", [0, 10_000])  # graph shards (rebuilt when touched), or exact ones
def test_added_articles_are_found_as_if_built_with_them(exact_below):
    rng = np.random.default_rng(1)
    n, d = 400, 8
    ids = rng.permutation(np.arange(1000, 1000 + n)).astype(np.int64)
    pub = rng.integers(1, 6 * H, n).astype(np.int64)
    pub[::37] = 0  # no publication time: never indexed
    vecs = rng.normal(size=(n, d)).astype(np.float32)
    params = IndexParams(kind="hnsw", shard_hours=1.0, exact_below=exact_below)
    built = FreshIndex.build(ids, pub, vecs, params)
    first = np.flatnonzero(pub < 4 * H)  # shards 4 and 5 are new, shards 0-3 gain rows
    later = np.setdiff1d(np.arange(n), first[::2])
    grown = FreshIndex.build(ids[first[::2]], pub[first[::2]], vecs[first[::2]], params)
    untouched = {s.number: s.index for s in grown.shards}
    assert grown.add(ids[later], pub[later], vecs[later]) == int((pub[later] != 0).sum())
    assert grown.add(ids[:5], pub[:5], vecs[:5]) == 0  # already there
    assert len(grown) == len(built)
    np.testing.assert_array_equal(grown.pool.article_ids, built.pool.article_ids)
    np.testing.assert_array_equal(grown.vectors_of(0, len(grown)), built.vectors_of(0, len(built)))
    assert all(untouched.get(s.number) is not s.index for s in grown.shards)  # every shard gained rows here
    q = rng.normal(size=(20, d)).astype(np.float32)
    t = rng.integers(2 * H, 7 * H, 20)
    a, sa = grown.retrieve(q, t, 3 * H, 10)
    b, sb = built.retrieve(q, t, 3 * H, 10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(sa, sb, rtol=1e-6)


def test_shards_without_new_articles_keep_their_faiss_index():
    rng = np.random.default_rng(2)
    ids = np.arange(1, 41, dtype=np.int64)
    pub = np.repeat(np.arange(1, 5) * H + 1, 10).astype(np.int64)
    vecs = rng.normal(size=(40, 4)).astype(np.float32)
    index = FreshIndex.build(ids[:30], pub[:30], vecs[:30], IndexParams(shard_hours=1.0))
    before = {s.number: s.index for s in index.shards}
    assert index.add(np.array([100, 41]), np.array([4 * H + 5, 0]), rng.normal(size=(2, 4))) == 1
    after = {s.number: s.index for s in index.shards}
    assert [after[n] is before[n] for n in (1, 2, 3)] == [True, True, True] and 4 in after and 4 not in before
    got, _ = index.retrieve(vecs[0], 5 * H, 2 * H, 40)  # the window [3 h, 5 h): shard 3 and the new article
    assert sorted(i for i in got[0].tolist() if i >= 0) == list(range(21, 31)) + [100]


def test_removed_articles_are_gone_as_if_never_added():
    rng = np.random.default_rng(3)
    n, d = 300, 8
    ids = np.arange(500, 500 + n, dtype=np.int64)
    pub = rng.integers(1, 5 * H, n).astype(np.int64)
    vecs = rng.normal(size=(n, d)).astype(np.float32)
    params = IndexParams(shard_hours=1.0, exact_below=0)
    index = FreshIndex.build(ids, pub, vecs, params)
    gone = rng.choice(ids, 80, replace=False)
    before = {s.number: s.index for s in index.shards}
    assert index.remove(np.r_[gone, 1, 2]) == 80 and index.remove(gone[:3]) == 0
    keep = ~np.isin(ids, gone)
    ref = FreshIndex.build(ids[keep], pub[keep], vecs[keep], params)
    np.testing.assert_array_equal(index.pool.article_ids, ref.pool.article_ids)
    np.testing.assert_array_equal(index.vectors_of(0, len(index)), ref.vectors_of(0, len(ref)))
    q = rng.normal(size=(10, d)).astype(np.float32)
    t = rng.integers(2 * H, 6 * H, 10)
    np.testing.assert_array_equal(index.retrieve(q, t, 3 * H, 20)[0], ref.retrieve(q, t, 3 * H, 20)[0])
    # Only the shard that loses a row is rebuilt; removing everything leaves an empty index.
    mid = {s.number: s.index for s in index.shards}
    assert index.remove(index.pool.article_ids[(index.pool.published_us // H) == 2][:1]) == 1
    after = {s.number: s.index for s in index.shards}
    assert [after[k] is mid[k] for k in sorted(mid)] == [k != 2 for k in sorted(mid)]
    assert set(before) == set(mid)
    assert index.remove(ids) == len(ref) - 1 and len(index) == 0 and index.shards == []
    assert (index.retrieve(q, t, 3 * H, 5)[0] == -1).all()
