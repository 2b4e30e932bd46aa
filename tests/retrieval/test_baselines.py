"""The baselines' scores: past-only click counts and recency, against hand-counted cases."""

from __future__ import annotations

import numpy as np

from mtnews.retrieval.baselines import NewestScorer, PopularFreshScorer
from mtnews.retrieval.pool import Exclusions, PoolTable, dense_topk


def test_popular_fresh_counts_only_clicks_strictly_before_the_impression():
    # Clicks (row, time): row 0 at 5, 10; row 1 at 10, 10, 20; row 2 never; row -1 (not in the pool) ignored.
    s = PopularFreshScorer(np.array([0, 0, 1, 1, 1, -1]), np.array([5, 10, 10, 10, 20, 1]), n_rows=3)
    assert s.events == 5
    counts = s.counts(np.array([[0, 1, 2]]), np.array([[1], [10], [11], [21]]))
    assert counts.tolist() == [[0, 0, 0], [1, 0, 0], [2, 2, 0], [2, 3, 0]]
    block = s.for_times(np.array([10, 11, 21]))(np.array([0, 1, 2]), 0, 3)
    # Ties (row 0 vs 1 at time 11) go to the newer row; the fraction never outweighs one click.
    assert np.argsort(-block, 1)[:, 0].tolist() == [0, 1, 1]


def test_newest_and_popular_rank_the_same_fresh_pool():
    pool = PoolTable(np.array([10, 11, 12, 13]), np.array([1, 2, 3, 4]))
    lo, hi = pool.windows(np.array([4, 5]), 3)  # rows [0, 3) and [1, 4)
    excl = Exclusions.from_pairs(np.array([1]), np.array([3]))  # query 1 has read row 3
    _, newest = dense_topk(NewestScorer().for_times(np.array([4, 5])), lo, hi, 2, excl)
    assert newest.tolist() == [[2, 1], [2, 1]]
    pop = PopularFreshScorer(np.array([0, 0, 1]), np.array([2, 3, 3]), n_rows=4)
    _, top = dense_topk(pop.for_times(np.array([4, 5])), lo, hi, 3, excl)
    assert top.tolist() == [[0, 1, 2], [1, 2, -1]]
