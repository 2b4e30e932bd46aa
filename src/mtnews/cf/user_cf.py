"""User-user CF: a candidate scored by what the user's nearest neighbours clicked before the impression.

    score(u, c, t) = Σ_{v ∈ N_k(u)}  Σ_{clicks of v on c at τ < t}  2^(-(t - τ) / half_life)

N_k(u) are u's k nearest users by inner product of MTRec user vectors (`neighbours.UserNeighbours`). Only
clicks strictly before t count (`ClickLog.before`), so a click at or after the impression can never
change its score. A user without a vector (no history) has no neighbours and scores 0 everywhere.

`UserCF.sparse` is the one kernel: for a block of (neighbour rows, time) queries it gathers every
neighbour click before each query's time and sums the decayed weights per (query, article). The in-view
scorer looks its candidates up in that sparse table (`at`); the pool task scatters it into dense rows of
the fresh pool (`dense`). Queries are cut into blocks of about `pair_budget` gathered clicks, so memory
stays bounded however many impressions or heavy readers there are.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from mtnews.cf.clicks import ClickLog
from mtnews.data.impressions import row_keys

PAIR_BUDGET = 1 << 22


class UserCF:
    def __init__(self, clicks: ClickLog, half_life_us: float, pair_budget: int = PAIR_BUDGET):
        self.clicks = clicks
        self.half_life_us = float(half_life_us)
        self.pair_budget = pair_budget

    def sparse(self, neighbours: np.ndarray, times_us: np.ndarray) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """(first query, end query, keys, scores) per block; keys are `row_keys(query, article_id)` (sorted,
        unique, query numbered from 0 over all of `neighbours`), scores their decayed click sums (> 0)."""
        neighbours = np.asarray(neighbours, dtype=np.int64)
        times_us = np.asarray(times_us, dtype=np.int64)
        q, k = neighbours.shape
        start, stop = self.clicks.before(neighbours, times_us[:, None])
        n = stop - start  # [q, k] clicks of each neighbour before the query's time
        per_query = n.sum(1)
        ends = np.cumsum(per_query)
        a = 0
        while a < q:
            # The block grows while its clicks fit the budget; a single heavier query is a block of its own.
            base = ends[a - 1] if a else 0
            b = max(a + 1, int(np.searchsorted(ends, base + self.pair_budget, side="right")))
            nn, ss = n[a:b].ravel(), start[a:b].ravel()
            total = int(nn.sum())
            if total == 0:
                yield a, b, np.zeros(0, dtype=np.int64), np.zeros(0)
                a = b
                continue
            owner = np.repeat(np.repeat(np.arange(a, b), k), nn)
            at = np.repeat(ss - np.cumsum(nn) + nn, nn) + np.arange(total)
            weight = np.exp2(-(times_us[owner] - self.clicks.times_us[at]) / self.half_life_us)
            keys, inv = np.unique(row_keys(owner, self.clicks.article_ids[at]), return_inverse=True)
            yield a, b, keys, np.bincount(inv.ravel(), weight, minlength=len(keys))
            a = b

    def at(self, neighbours: np.ndarray, times_us: np.ndarray, owner: np.ndarray, article_ids: np.ndarray) -> np.ndarray:
        """Scores of the pairs (query owner[i], article_ids[i]); `owner` is non-decreasing (CSR order)."""
        owner = np.asarray(owner, dtype=np.int64)
        want = row_keys(owner, np.asarray(article_ids, dtype=np.int64))
        out = np.zeros(len(owner))
        for a, b, keys, vals in self.sparse(neighbours, times_us):
            lo, hi = np.searchsorted(owner, [a, b])
            if hi == lo or len(keys) == 0:
                continue
            pos = np.searchsorted(keys, want[lo:hi]).clip(0, len(keys) - 1)
            out[lo:hi] = np.where(keys[pos] == want[lo:hi], vals[pos], 0.0)
        return out

    def dense(self, neighbours: np.ndarray, times_us: np.ndarray, rows_of_ids, a: int, b: int) -> np.ndarray:
        """[q, b - a] scores of pool rows a..b-1 (`rows_of_ids`: article ids -> pool rows, -1 if absent)."""
        out = np.zeros((len(neighbours), b - a))
        for qa, _, keys, vals in self.sparse(neighbours, times_us):
            query = (keys >> np.int64(32)).astype(np.int64)
            ids = (keys & np.int64(0xFFFFFFFF)).astype(np.int64)
            ids = np.where(ids >= 1 << 31, ids - (1 << 32), ids)  # row_keys keeps the id's low 32 bits
            rows = rows_of_ids(ids)
            keep = (rows >= a) & (rows < b)
            out[query[keep], rows[keep] - a] = vals[keep]
        return out
