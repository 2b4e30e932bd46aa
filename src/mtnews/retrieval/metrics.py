"""Whole-pool retrieval metrics, per impression, averaged with equal weight per impression.

For an impression with clicked set C (its distinct clicked article ids, known or not) and retrieved list
R (best first):

    recall@K = |R[:K] ∩ C| / |C|
    nDCG@K   = Σ_{j < K, R[j] ∈ C} 1 / log2(j + 2)  /  Σ_{j < min(K, |C|)} 1 / log2(j + 2)

A clicked article outside the impression's pool (too old, published after the impression, without a
publication time, unknown, or already read) can never be retrieved: it is a miss, and the ideal DCG still
counts it. `out_of_pool` is the share of clicked articles outside their pool.

Impressions are reported overall and per history segment (clicks in history.parquet): `cold` (0), `1-4`
and `5+`.
"""

from __future__ import annotations

import numpy as np

SEGMENTS = (("cold", 0, 1), ("1-4", 1, 5), ("5+", 5, None))
DEFAULT_KS = (10, 50, 100)


def report_ks(k: int) -> list[int]:
    """The K of recall@K / nDCG@K reported for a search of depth k: 10, 50, 100 up to k, and k itself."""
    return sorted({K for K in DEFAULT_KS if K <= k} | {k})


def segment_of(history_length: np.ndarray) -> np.ndarray:
    seg = np.zeros(len(history_length), dtype=np.int64)
    for i, (_, lo, _) in enumerate(SEGMENTS):
        seg[np.asarray(history_length) >= lo] = i
    return seg


def per_impression(hits: np.ndarray, n_clicked: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """recall@K and ndcg@K per impression from hits [q, k] (result j is a click) and |C| [q] (all > 0)."""
    hits = np.asarray(hits, dtype=np.float64)
    n_clicked = np.asarray(n_clicked, dtype=np.int64)
    disc = 1.0 / np.log2(np.arange(hits.shape[1]) + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])
    out = {}
    for K in ks:
        out[f"recall@{K}"] = hits[:, :K].sum(1) / n_clicked
        out[f"ndcg@{K}"] = (hits[:, :K] * disc[:K]).sum(1) / ideal[np.minimum(n_clicked, K)]
    return out


class RetrievalAccumulator:
    """Sums of the per-impression metrics, overall and per segment, plus pool and skip counts."""

    def __init__(self, ks: list[int]):
        self.ks = ks
        self.names = [f"{m}@{K}" for K in ks for m in ("recall", "ndcg")]
        self.sums = np.zeros((len(SEGMENTS), len(self.names)))
        self.counts = np.zeros(len(SEGMENTS), dtype=np.int64)
        self.clicks = self.out_of_pool = self.pool_total = 0
        self.empty_pool = self.no_click = 0

    def skip(self, empty_pool: int = 0, no_click: int = 0) -> None:
        self.empty_pool += int(empty_pool)
        self.no_click += int(no_click)

    def update(self, hits: np.ndarray, n_clicked: np.ndarray, n_in_pool: np.ndarray, pool_sizes: np.ndarray,
               history_length: np.ndarray) -> None:
        """One block of evaluated impressions (non-empty pool, at least one click)."""
        if len(n_clicked) == 0:
            return
        vals = per_impression(hits, n_clicked, self.ks)
        seg = segment_of(history_length)
        mat = np.stack([vals[n] for n in self.names], 1)
        for i in range(len(SEGMENTS)):
            self.sums[i] += mat[seg == i].sum(0)
        self.counts += np.bincount(seg, minlength=len(SEGMENTS))
        self.clicks += int(n_clicked.sum())
        self.out_of_pool += int((n_clicked - n_in_pool).sum())
        self.pool_total += int(pool_sizes.sum())

    def result(self) -> dict:
        n = int(self.counts.sum())
        out: dict = {"evaluated": n, "skipped_empty_pool": self.empty_pool, "skipped_no_click": self.no_click,
                     "clicks": self.clicks, "out_of_pool": self.out_of_pool / self.clicks if self.clicks else 0.0,
                     "mean_pool_size": self.pool_total / n if n else 0.0}
        total = self.sums.sum(0)
        out.update({name: float(total[j] / n) if n else 0.0 for j, name in enumerate(self.names)})
        out["segments"] = {
            label: {"impressions": int(self.counts[i]),
                    **{name: float(self.sums[i, j] / self.counts[i]) if self.counts[i] else None
                       for j, name in enumerate(self.names)}}
            for i, (label, _, _) in enumerate(SEGMENTS)
        }
        return out
