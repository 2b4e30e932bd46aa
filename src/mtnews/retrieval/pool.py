"""The fresh pool: articles in publication order, each impression's window of rows, and exact search over it.

Rows are articles sorted by `published_time` (ties by id), so "published in [t - max_age, t)" is one
contiguous row range [lo, hi) per impression, found by two binary searches. Articles the user has read are
`Exclusions`: (query, row) pairs, packed into sorted int64 keys so that membership is a vectorised search.

`dense_topk` is the exact brute force: for a block of impressions sorted by time it scores the union of
their windows at once, masks every row outside an impression's own window or read by its user, and keeps
the top k. It checks the ANN index (`FreshIndex`) and runs the baselines, which are score functions over
the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

BLOCK_ELEMENTS = 1 << 22  # scores per dense block (32 MB in float64)
_SHIFT = np.int64(32)


@dataclass
class PoolTable:
    """Article ids and publication times (int64 microseconds), ascending by time; row r is the r-th."""

    article_ids: np.ndarray  # int64 [N]
    published_us: np.ndarray  # int64 [N], non-decreasing

    @classmethod
    def from_articles(cls, article_ids: np.ndarray, published_us: np.ndarray) -> tuple["PoolTable", np.ndarray]:
        """The table of the articles that have a publication time (0 = none), and the order that sorts them."""
        article_ids = np.asarray(article_ids, dtype=np.int64)
        published_us = np.asarray(published_us, dtype=np.int64)
        keep = np.flatnonzero(published_us != 0)
        order = keep[np.lexsort((article_ids[keep], published_us[keep]))]
        return cls(article_ids[order], published_us[order]), order

    def __len__(self) -> int:
        return len(self.article_ids)

    def __post_init__(self) -> None:
        self._by_id = np.argsort(self.article_ids, kind="stable")
        self._sorted_ids = self.article_ids[self._by_id]

    def rows(self, article_ids: np.ndarray) -> np.ndarray:
        """Rows of `article_ids` (int64), -1 for ids the table lacks."""
        ids = np.asarray(article_ids, dtype=np.int64)
        if len(self._sorted_ids) == 0:
            return np.full(ids.shape, -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted_ids, ids).clip(0, len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[pos] == ids, self._by_id[pos], -1).astype(np.int64)

    def windows(self, times_us: np.ndarray, max_age_us: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ranges [lo, hi): articles published in [t - max_age, t), strictly before each impression."""
        t = np.asarray(times_us, dtype=np.int64)
        return (np.searchsorted(self.published_us, t - max_age_us, side="left").astype(np.int64),
                np.searchsorted(self.published_us, t, side="left").astype(np.int64))

    def older_than(self, before_us: int) -> int:
        """How many leading rows were published before `before_us`."""
        return int(np.searchsorted(self.published_us, before_us, side="left"))

    def drop_first(self, n: int) -> "PoolTable":
        return PoolTable(self.article_ids[n:], self.published_us[n:])


def pack(query: np.ndarray, row: np.ndarray) -> np.ndarray:
    return (np.asarray(query, dtype=np.int64) << _SHIFT) | np.asarray(row, dtype=np.int64)


@dataclass
class Exclusions:
    """(query, row) pairs to leave out of the results, e.g. every article each user has read."""

    keys: np.ndarray  # int64, sorted unique: query << 32 | row

    @classmethod
    def none(cls) -> "Exclusions":
        return cls(np.zeros(0, dtype=np.int64))

    @classmethod
    def from_pairs(cls, query: np.ndarray, row: np.ndarray) -> "Exclusions":
        row = np.asarray(row, dtype=np.int64)
        ok = row >= 0
        return cls(np.unique(pack(np.asarray(query)[ok], row[ok])))

    @classmethod
    def from_lists(cls, offsets: np.ndarray, rows: np.ndarray) -> "Exclusions":
        """From CSR lists: query q leaves out rows[offsets[q]:offsets[q + 1]]."""
        query = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
        return cls.from_pairs(query, rows)

    def contains(self, query: np.ndarray, row: np.ndarray) -> np.ndarray:
        """Elementwise membership of (query, row), broadcast; negative rows are never members."""
        row = np.asarray(row, dtype=np.int64)
        if len(self.keys) == 0:
            return np.zeros(np.broadcast(np.asarray(query), row).shape, dtype=bool)
        key = pack(query, np.maximum(row, 0))
        pos = np.searchsorted(self.keys, key).clip(0, len(self.keys) - 1)
        return (self.keys[pos] == key) & (row >= 0)

    def count(self, query: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Per query, how many of its excluded rows fall in [lo, hi)."""
        return (np.searchsorted(self.keys, pack(query, hi)) - np.searchsorted(self.keys, pack(query, lo))).astype(np.int64)


def top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best (score, row) of each line, best first; -inf scores are dropped (row -1, score -inf).

    Ties go to the lower row; `rows` is broadcast against `scores`.
    """
    rows = np.broadcast_to(rows, scores.shape)
    n, c = scores.shape
    if c > k:
        # argpartition then a stable sort of just the kept k: O(c) per line instead of O(c log c).
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        s, r = np.take_along_axis(scores, part, 1), np.take_along_axis(rows, part, 1)
    else:
        s, r = scores, rows
    order = np.lexsort((r, -s), axis=1)
    s, r = np.take_along_axis(s, order, 1), np.take_along_axis(r, order, 1)
    if s.shape[1] < k:
        s = np.concatenate([s, np.full((n, k - s.shape[1]), -np.inf, dtype=s.dtype)], 1)
        r = np.concatenate([r, np.full((n, k - r.shape[1]), -1, dtype=r.dtype)], 1)
    r = np.where(np.isneginf(s), -1, r)
    return s, r.astype(np.int64)


# score_block(queries, a, b) -> [len(queries), b - a] scores of rows a..b-1 for those query positions.
ScoreBlock = Callable[[np.ndarray, int, int], np.ndarray]


def dense_topk(score_block: ScoreBlock, lo: np.ndarray, hi: np.ndarray, k: int, exclude: Exclusions | None = None,
               ids: np.ndarray | None = None, elements: int = BLOCK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows in each query's window [lo, hi) minus its exclusions: (scores [q, k], rows [q, k]).

    `ids` are the queries' positions as `score_block` and `exclude` know them (default 0..q-1). Queries are
    taken in window order, in blocks whose union of windows times block size stays near `elements`, so
    memory is bounded whatever the number of queries and articles.
    """
    n = len(lo)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    out_s = np.full((n, k), -np.inf)
    out_r = np.full((n, k), -1, dtype=np.int64)
    order = np.lexsort((hi, lo))
    width = int((hi - lo).max()) if n else 0
    step = max(1, elements // max(1, 2 * width))
    s = 0
    while s < n:
        e = min(n, s + step)
        while e - s > 1 and (int(hi[order[s:e]].max()) - int(lo[order[s]])) * (e - s) > elements:
            e = s + (e - s) // 2
        q = order[s:e]
        a, b = int(lo[q].min()), int(hi[q].max())
        if b > a:
            rows = np.arange(a, b, dtype=np.int64)
            scores = np.asarray(score_block(ids[q], a, b), dtype=np.float64)
            keep = (rows[None, :] >= lo[q, None]) & (rows[None, :] < hi[q, None])
            if exclude is not None and len(exclude.keys):
                keep &= ~exclude.contains(ids[q][:, None], rows[None, :])
            scores = np.where(keep, scores, -np.inf)
            out_s[q], out_r[q] = top_k(scores, rows[None, :], k)
        s = e
    return out_s, out_r
