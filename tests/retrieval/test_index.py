"""The fresh pool, the exact brute force and the time-sharded ANN index, against per-query references."""

from __future__ import annotations

import numpy as np
import pytest

from mtnews.errors import CheckpointError
from mtnews.retrieval import index as index_module
from mtnews.retrieval.index import FreshIndex
from mtnews.retrieval.params import IndexParams
from mtnews.retrieval.pool import Exclusions, PoolTable, dense_topk, top_k

H = 3_600_000_000  # an hour in microseconds


def clustered(rng, n, d, centers=60):
    """Vectors like a trained model's news vectors: clustered directions, norms within a few percent
    (the demo run's are 8.47 +- 0.21), so inner product is close to cosine."""
    c = rng.normal(size=(centers, d))
    x = c[rng.integers(0, centers, n)] + rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (x * (1 + 0.025 * rng.normal(size=(n, 1)))).astype(np.float32)


def reference(vectors, published, ids, q, t, max_age, k, read):
    """One query at a time, in plain Python: the pool, its exact scores and the best k ids."""
    out = []
    for u, tq, r in zip(q, t, read):
        pool = [i for i in range(len(ids)) if published[i] != 0 and tq - max_age <= published[i] < tq
                and ids[i] not in r]
        pool.sort(key=lambda i: -float(vectors[i] @ u))
        out.append([int(ids[i]) for i in pool[:k]])
    return out


@pytest.fixture(scope="module")
def catalogue():
    rng = np.random.default_rng(0)
    n, d = 600, 16
    published = rng.integers(0, 20 * 24, n).astype(np.int64) * H + 1
    published[:5] = 0  # no publication time: never fresh
    published[5:9] = 10 * 24 * H  # exactly on a shard boundary
    ids = rng.permutation(10 * n)[:n].astype(np.int64) + 1000
    return ids, published, clustered(rng, n, d)


def queries(rng, ids, n=60, d=16):
    t = rng.integers(0, 22 * 24, n).astype(np.int64) * H + rng.integers(0, H, n)
    t[:3] = 10 * 24 * H  # the boundary articles are published exactly now: not yet in the pool
    t[3:6] = 10 * 24 * H + 72 * H  # ... and exactly max_age ago: still in
    read = [set(rng.choice(ids, 40, replace=False).tolist()) for _ in range(n)]
    return rng.normal(size=(n, d)).astype(np.float32), t, read


def exclusions(pool, read):
    q = np.repeat(np.arange(len(read)), [len(r) for r in read])
    return Exclusions.from_pairs(q, pool.rows(np.array([i for r in read for i in r], dtype=np.int64)))


@pytest.mark.parametrize("shard_hours", [24.0, 5.0, 1000.0])
def test_flat_index_and_dense_search_equal_the_per_query_reference(catalogue, shard_hours):
    ids, published, vectors = catalogue
    rng = np.random.default_rng(1)
    q, t, read = queries(rng, ids)
    want = reference(vectors, published, ids, q, t, 72 * H, 25, read)
    index = FreshIndex.build(ids, published, vectors, IndexParams(kind="flat", shard_hours=shard_hours))
    excl = exclusions(index.pool, read)
    _, rows = index.search(q, t, 72 * H, 25, excl)
    got = [[int(index.pool.article_ids[r]) for r in row if r >= 0] for row in rows]
    assert got == want
    lo, hi = index.pool.windows(t, 72 * H)
    _, dense = dense_topk(lambda qq, a, b: q[qq] @ index.vectors_of(a, b).T, lo, hi, 25, excl, elements=500)
    assert [[int(index.pool.article_ids[r]) for r in row if r >= 0] for row in dense] == want
    assert any(0 < len(w) < 25 for w in want) and any(len(w) == 25 for w in want)  # short pools are padded with -1


def test_hnsw_recall_against_exact_at_the_default_parameters():
    rng = np.random.default_rng(2)
    n, d, k = 10_000, 32, 100
    published = np.sort(rng.integers(1, 10 * 24 * H, n))
    vectors = clustered(rng, n, d)
    index = FreshIndex.build(np.arange(n), published, vectors, IndexParams(shard_hours=24 * 5, exact_below=0))
    q = clustered(rng, 200, d)
    t = np.full(200, 10 * 24 * H)
    _, ann = index.search(q, t, 10 * 24 * H, k)
    lo, hi = index.pool.windows(t, 10 * 24 * H)
    _, exact = dense_topk(lambda qq, a, b: q[qq] @ index.vectors_of(a, b).T, lo, hi, k)
    assert len(index.shards) == 2 and (exact >= 0).all()
    recall = np.mean([len(set(a) & set(e)) / k for a, e in zip(ann, exact)])
    assert recall >= 0.99, recall


def test_read_articles_never_come_back_and_do_not_shorten_the_list(catalogue):
    ids, published, vectors = catalogue
    index = FreshIndex.build(ids, published, vectors, IndexParams(shard_hours=24, exact_below=0))
    rng = np.random.default_rng(3)
    q = rng.normal(size=(20, 16)).astype(np.float32)
    t = np.full(20, 15 * 24 * H)
    _, first = index.search(q, t, 72 * H, 10)
    # Exclude each query's own top 10: the next 10 must appear instead, and none of the first.
    excl = Exclusions.from_pairs(np.repeat(np.arange(20), 10), first.ravel())
    _, second = index.search(q, t, 72 * H, 10, excl)
    lo, hi = index.pool.windows(t, 72 * H)
    _, exact = dense_topk(lambda qq, a, b: q[qq] @ index.vectors_of(a, b).T, lo, hi, 20)
    assert not excl.contains(np.arange(20)[:, None], second).any()
    assert (second >= 0).all()
    np.testing.assert_array_equal(np.sort(second, 1), np.sort(exact[:, 10:], 1))


def test_save_load_reloads_without_a_rebuild(catalogue, tmp_path, monkeypatch):
    ids, published, vectors = catalogue
    index = FreshIndex.build(ids, published, vectors, IndexParams(shard_hours=48, exact_below=50), fingerprint="f" * 64)
    q, t, read = queries(np.random.default_rng(4), ids)
    before = index.search(q, t, 72 * H, 30)
    index.save(tmp_path / "ix")

    def no_build(*a, **k):
        raise AssertionError("load rebuilt a shard")

    monkeypatch.setattr(index_module, "_build_shard", no_build)
    again = FreshIndex.load(tmp_path / "ix", fingerprint="f" * 64)
    after = again.search(q, t, 72 * H, 30)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_allclose(before[0], after[0])
    with pytest.raises(CheckpointError, match="fingerprint"):
        FreshIndex.load(tmp_path / "ix", fingerprint="0" * 64)
    shard = next((tmp_path / "ix").glob("shard-*.faiss"))
    shard.write_bytes(b"not a faiss index")
    with pytest.raises(CheckpointError, match="unreadable retrieval index"):
        FreshIndex.load(tmp_path / "ix")
    with pytest.raises(CheckpointError, match="not a retrieval index"):
        FreshIndex.load(tmp_path)


def test_evict_drops_expired_shards_and_keeps_every_fresh_answer(catalogue, tmp_path):
    ids, published, vectors = catalogue
    index = FreshIndex.build(ids, published, vectors, IndexParams(shard_hours=24))
    q, t, _ = queries(np.random.default_rng(5), ids)
    keep = t >= 12 * 24 * H
    _, before = index.search(q[keep], t[keep], 72 * H, 20)
    before_ids = np.where(before >= 0, index.pool.article_ids[before], -1)
    gone = index.evict(9 * 24 * H)
    assert gone == int(((published != 0) & (published < 9 * 24 * H)).sum())
    assert index.pool.published_us.min() >= 9 * 24 * H
    index.save(tmp_path / "ix")
    again = FreshIndex.load(tmp_path / "ix")
    assert len(again) == len(index) and len(again.shards) == len(index.shards)
    _, after = again.search(q[keep], t[keep], 72 * H, 20)
    np.testing.assert_array_equal(np.where(after >= 0, again.pool.article_ids[after], -1), before_ids)
    assert index.evict(9 * 24 * H) == 0


def test_window_and_top_k_edges():
    pool = PoolTable(np.array([5, 6, 7, 8]), np.array([10, 20, 20, 30]))
    lo, hi = pool.windows(np.array([20, 21, 31, 5]), 10)
    assert lo.tolist() == [0, 1, 3, 0] and hi.tolist() == [1, 3, 4, 0]
    assert pool.rows(np.array([7, 9, 5])).tolist() == [2, -1, 0]
    s, r = top_k(np.array([[1.0, -np.inf, 3.0, 3.0]]), np.array([[0, 1, 2, 3]]), 3)
    assert r.tolist() == [[2, 3, 0]] and s.tolist() == [[3.0, 3.0, 1.0]]
    s, r = top_k(np.array([[-np.inf, 2.0]]), np.array([[4, 5]]), 3)
    assert r.tolist() == [[5, -1, -1]]


def test_retrieve_by_ids_for_serving(catalogue):
    ids, published, vectors = catalogue
    index = FreshIndex.build(ids, published, vectors, IndexParams(shard_hours=24))
    q, t, read = queries(np.random.default_rng(6), ids, n=8)
    got, scores = index.retrieve(q, t, 72 * H, 15, read_ids=read)
    want = reference(vectors, published, ids, q, t, 72 * H, 15, read)
    assert [[int(i) for i in row if i >= 0] for row in got] == want
    one, _ = index.retrieve(q[0], int(t[0]), 72 * H, 15, read_ids=[read[0]])
    np.testing.assert_array_equal(one[0], got[0])
