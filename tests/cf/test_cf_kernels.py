"""CF kernels against independent references: brute-force neighbours and decayed click sums, the past-only
property, ALS on a toy matrix, the blend weight on a hand case."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from mtnews.cf.als import AlsModel
from mtnews.cf.blend import fit_weight, zscore
from mtnews.cf.clicks import ClickLog
from mtnews.cf.neighbours import UserNeighbours
from mtnews.cf.params import CFParams
from mtnews.cf.user_cf import UserCF
from mtnews.data.history import UserHistories
from mtnews.errors import ConfigError

HOUR = 3_600_000_000


def histories(n_users: int) -> UserHistories:
    """n_users history rows (1..n), each with one dummy click so that every row has a vector."""
    matrix = np.zeros((n_users + 1, 2), dtype=np.int32)
    matrix[1:, -1] = 2
    return UserHistories(np.arange(100, 100 + n_users, dtype=np.int64), matrix)


def click_frame(clicks: list[tuple[int, int, float]]) -> pl.DataFrame:
    """(user id, article id, hours) -> the ClickLog input frame."""
    return pl.DataFrame({"user_id": [c[0] for c in clicks], "article_id": [c[1] for c in clicks],
                         "time_us": [int(c[2] * HOUR) for c in clicks]}, schema={"user_id": pl.Int64,
                                                                                 "article_id": pl.Int64, "time_us": pl.Int64})


def brute_force(vectors, query_rows, times_us, articles, clicks, k, half_life_h):
    """Python reference: k nearest other users by dot product, then Σ 2^(-(t - τ)/h) over their clicks at τ < t."""
    out = []
    for row, t, a in zip(query_rows, times_us, articles):
        sims = [(float(vectors[row - 1] @ vectors[v - 1]), v) for v in range(1, len(vectors) + 1) if v != row]
        sims.sort(key=lambda x: -x[0])
        near = {v for _, v in sims[:k]}
        out.append(sum(2.0 ** (-(t - int(h * HOUR)) / (half_life_h * HOUR)) for u, art, h in clicks
                       if u - 99 in near and art == a and int(h * HOUR) < t))
    return np.array(out)


def test_hand_case():
    # Users 1..4 (ids 100..103); 1 and 2 point the same way, 3 is close, 4 opposite. k = 2: neighbours of 1 are 2, 3.
    vecs = np.array([[1.0, 0.0], [0.9, 0.1], [0.6, 0.4], [-1.0, 0.0]], dtype=np.float32)
    clicks = [(101, 7, 0.0), (101, 7, 10.0), (102, 7, 5.0), (103, 7, 9.0), (101, 8, 30.0), (100, 7, 1.0)]
    log = ClickLog.from_frame(click_frame(clicks), histories(4))
    cf = UserCF(log, 10 * HOUR)
    nb = UserNeighbours(np.arange(1, 5), vecs, CFParams(k=2))
    neighbours = nb.of_rows(np.array([1]))
    assert neighbours.tolist() == [[2, 3]]
    t = np.array([20 * HOUR])
    got = cf.at(neighbours, t, np.array([0, 0, 0]), np.array([7, 8, 9]))
    # Article 7: user 2 at 0 h and 10 h, user 3 at 5 h (user 4's is not a neighbour, user 1's own click never counts).
    assert got[0] == pytest.approx(2 ** -2 + 2 ** -1 + 2 ** -1.5)
    assert got[1] == 0.0  # user 2 clicked 8 only at 30 h, after the impression
    assert got[2] == 0.0


def test_matches_brute_force_and_pool_view():
    rng = np.random.default_rng(3)
    n, d, k = 40, 6, 5
    vecs = rng.normal(size=(n, d)).astype(np.float32)
    clicks = [(100 + int(u), int(a), float(h)) for u, a, h in
              zip(rng.integers(0, n, 600), rng.integers(1, 15, 600), rng.uniform(0, 100, 600))]
    log = ClickLog.from_frame(click_frame(clicks), histories(n))
    nb = UserNeighbours(np.arange(1, n + 1), vecs, CFParams(k=k))
    q = 30
    rows = rng.integers(1, n + 1, q)
    times = (rng.uniform(0, 110, q) * HOUR).astype(np.int64)
    lengths = rng.integers(1, 6, q)
    owner = np.repeat(np.arange(q), lengths)
    cands = rng.integers(1, 15, len(owner))
    neighbours = nb.of_rows(rows)
    want = brute_force(vecs, rows[owner], times[owner], cands, clicks, k, 12.0)
    for budget in (1 << 22, 7):  # one block, and many tiny ones
        got = UserCF(log, 12 * HOUR, pair_budget=budget).at(neighbours, times, owner, cands)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    # The pool view scatters the same sums: rows are article ids 1..14 at rows 0..13.
    dense = UserCF(log, 12 * HOUR).dense(neighbours, times, lambda ids: ids - 1, 0, 14)
    np.testing.assert_allclose(dense[owner, cands - 1], want, rtol=1e-12, atol=1e-15)


def test_past_only():
    """Removing every click at or after t never changes a score at t; a click exactly at t never counts."""
    rng = np.random.default_rng(5)
    n = 25
    vecs = rng.normal(size=(n, 4)).astype(np.float32)
    clicks = [(100 + int(u), int(a), float(h)) for u, a, h in
              zip(rng.integers(0, n, 400), rng.integers(1, 10, 400), rng.integers(0, 50, 400))]
    frame = click_frame(clicks)
    nb = UserNeighbours(np.arange(1, n + 1), vecs, CFParams(k=4))
    full = UserCF(ClickLog.from_frame(frame, histories(n)), 6 * HOUR)
    for hours in (3, 17, 17.5, 40):
        t = int(hours * HOUR)
        rows = np.arange(1, n + 1)
        owner = np.repeat(np.arange(n), 9)
        cands = np.tile(np.arange(1, 10), n)
        neighbours = nb.of_rows(rows)
        times = np.full(n, t)
        past = UserCF(ClickLog.from_frame(frame.filter(pl.col("time_us") < t), histories(n)), 6 * HOUR)
        a, b = full.at(neighbours, times, owner, cands), past.at(neighbours, times, owner, cands)
        np.testing.assert_array_equal(a, b)
        assert a.any()


def test_neighbours_exclude_self_and_pad():
    vecs = np.eye(3, dtype=np.float32)
    nb = UserNeighbours(np.array([1, 2, 3]), vecs, CFParams(k=5))
    got = nb.of_rows(np.array([2, 0, 9]))
    assert sorted(got[0][got[0] > 0].tolist()) == [1, 3] and (got[0][2:] == 0).all()
    assert (got[1:] == 0).all()  # the empty history and a row without a vector have no neighbours


def test_als_ranks_the_co_clicked_item_first():
    # Users 0-5 read items 10 and 11 together; users 6-9 read 12 and 13 together; user 20 read only 10.
    pairs = [(u, a) for u in range(6) for a in (10, 11)] + [(u, a) for u in range(6, 10) for a in (12, 13)] + [(20, 10)]
    frame = pl.DataFrame({"user_id": [p[0] for p in pairs], "article_id": [p[1] for p in pairs]})
    for seed in (0, 1, 2):
        model = AlsModel.fit(frame, CFParams(factors=4, iterations=20, regularization=0.01, seed=seed))
        scores = model.score(np.full(3, 20), np.array([11, 12, 13]))
        assert scores.argmax() == 0, scores
    assert model.score(np.array([999, 20]), np.array([11, 999])).tolist() == [0.0, 0.0]  # unknown: 0


def test_blend_weight_hand_case():
    # Impression 1: content wrong (clicked scores lowest), CF right. Impression 2: content right, CF wrong.
    labels = np.array([1, 0, 0, 1, 0, 0])
    content = np.array([0.0, 1, 2, 2, 1, 0])
    cf = np.array([10.0, 0, 0, 0, 0, 10])
    offsets = np.array([0, 3, 6])
    w, aucs = fit_weight(content, cf, labels, offsets, grid=(0.0, 1.0, 10.0))
    # By hand: w=0 -> AUCs (0, 1); w=1 -> (0.5, 1); w=10 -> (1, 0.5): 0.5, 0.75, 0.75; the tie goes to the smaller w.
    assert aucs == pytest.approx({0.0: 0.5, 1.0: 0.75, 10.0: 0.75})
    assert w == 1.0
    z = zscore(np.array([3.0, 3.0, 1.0, 2.0, 3.0]), np.array([0, 2, 5]))
    np.testing.assert_allclose(z, [0, 0, -np.sqrt(1.5), 0, np.sqrt(1.5)])


@pytest.mark.parametrize("field, value", [("k", 0), ("k", -2), ("half_life_hours", 0.0), ("factors", 0),
                                          ("holdout_hours", -1.0)])
def test_bad_params(field, value):
    with pytest.raises(ConfigError, match=field.replace("_", "-")):
        CFParams(**{field: value}).validate()


def test_pool_blend_is_the_in_view_blend_over_each_window():
    """mtrec+cf on the pool z-scores within each query's window exactly as the in-view blend does."""
    from mtnews.cf.blend import blend
    from mtnews.cf.pool import TIE, PoolCF

    rng = np.random.default_rng(0)
    n_users, n_pool = 12, 20
    vecs = rng.normal(size=(n_users, 3)).astype(np.float32)
    clicks = [(100 + int(u), int(a), float(h)) for u, a, h in
              zip(rng.integers(0, n_users, 200), rng.integers(0, n_pool, 200), rng.uniform(0, 40, 200))]
    hist = histories(n_users)
    log = ClickLog.from_frame(click_frame(clicks), hist)
    items = rng.normal(size=(n_pool, 3))

    class Content:
        """Stands in for ArticleVectors: the queried users' vectors are vecs[row - 1] (rows set below)."""

        def users(self, matrix):
            import torch

            assert len(matrix) == len(self.rows)
            return torch.from_numpy(vecs[self.rows - 1])

    from mtnews.cf.scorers import UserCFScorer
    user = UserCFScorer(UserCF(log, 6 * HOUR), UserNeighbours(np.arange(1, n_users + 1), vecs, CFParams(k=3)), None)
    content = Content()
    pool = PoolCF("mtrec+cf", n_pool, lambda ids: ids, user=user, histories=hist, content=content, items=items,
                  blend={"weight": 0.7})
    uids = np.array([100, 105, 111])
    content.rows = hist.rows(uids)
    times = np.array([10, 25, 41]) * HOUR
    lo, hi = np.array([0, 4, 9]), np.array([12, 20, 15])
    got = pool.for_batch(uids, times, lo, hi)(np.arange(3), 0, n_pool)
    for q in range(3):
        rows = np.arange(lo[q], hi[q])
        nb = user.neighbours.of_rows(content.rows[q : q + 1])
        cf = user.cf.at(nb, times[q : q + 1], np.zeros(len(rows), dtype=np.int64), rows)
        want = blend(items[rows] @ vecs[content.rows[q] - 1], cf, np.array([0, len(rows)]), 0.7)
        np.testing.assert_allclose(got[q, rows] - TIE * (rows + 1) / (n_pool + 2), want, atol=1e-9)
        assert np.isneginf(np.delete(got[q], rows)).all()


def test_hnsw_neighbours_match_exact_on_a_small_set():
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(300, 8)).astype(np.float32)
    rows = np.arange(1, 301)
    exact = UserNeighbours(rows, vecs, CFParams(k=10)).of_rows(rows)
    hnsw = UserNeighbours(rows, vecs, CFParams(k=10, exact_below=0))
    assert type(hnsw.index).__name__ == "IndexHNSWFlat"
    got = hnsw.of_rows(rows)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)]) >= 0.99
