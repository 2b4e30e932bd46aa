"""Non-personal baselines for the whole-pool task: the newest fresh articles, and the most clicked so far.

Both are score functions over pool rows (`pool.ScoreBlock`) searched exactly by `pool.dense_topk`, so they
rank the same pool as the model: fresh, published before the impression, not read by the user.

`popular-fresh` counts clicks strictly before each impression's time, so it never sees the future: the
split's history.parquet reads (timed by `impression_time_fixed`; the history precedes the split's
impressions) and the clicks of the split's own earlier impressions, as a live system would have them.
Ties (most fresh articles have no clicks yet) go to the newer article.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mtnews.data import schema
from mtnews.data.behaviors import behavior_batches
from mtnews.data.layout import SplitPaths
from mtnews.errors import DataError
from mtnews.retrieval.pool import PoolTable, ScoreBlock

SCAN_ROWS = 1 << 17


class NewestScorer:
    name = "newest"

    def for_times(self, times_us: np.ndarray) -> ScoreBlock:
        def score_block(q: np.ndarray, a: int, b: int) -> np.ndarray:
            # Rows are in publication order, so the row number is the recency rank.
            return np.broadcast_to(np.arange(a, b, dtype=np.float64), (len(q), b - a))

        return score_block


class PopularFreshScorer:
    """Past-only click counts per pool row; see the module docstring for where the clicks come from."""

    name = "popular-fresh"

    def __init__(self, rows: np.ndarray, times_us: np.ndarray, n_rows: int):
        keep = rows >= 0
        rows, times = rows[keep].astype(np.int64), times_us[keep].astype(np.int64)
        self.times = np.unique(times)
        self.span = len(self.times) + 1
        # One sorted key per click: row * span + rank of its time, so "clicks on r before t" is two searches.
        self.keys = np.sort(rows * self.span + np.searchsorted(self.times, times))
        self.n_rows = n_rows
        self.events = len(self.keys)

    @classmethod
    def from_split(cls, paths: SplitPaths, pool: PoolTable) -> "PopularFreshScorer":
        rows, times = [], []
        hist = schema.read_schema(paths.history)
        if "impression_time_fixed" in hist:
            schema.validate(paths.history, {"impression_time_fixed": schema.DATETIME_LIST})
            h = schema.read_frame(paths.history, ["impression_time_fixed", "article_id_fixed"])
            h = h.select(pl.col("impression_time_fixed").cast(pl.List(pl.Datetime("us"))).cast(pl.List(pl.Int64)),
                         pl.col("article_id_fixed").cast(pl.List(pl.Int64)))
            if not (h["impression_time_fixed"].list.len() == h["article_id_fixed"].list.len()).fill_null(True).all():
                raise DataError(f"{paths.history}: 'impression_time_fixed' and 'article_id_fixed' differ in length in "
                                f"some rows, expected one time per click")
            ex = h.explode(["impression_time_fixed", "article_id_fixed"]).drop_nulls()
            rows.append(pool.rows(ex["article_id_fixed"].to_numpy()))
            times.append(ex["impression_time_fixed"].to_numpy())
        for batch in behavior_batches(paths, ["impression_time", "article_ids_clicked"], SCAN_ROWS):
            ex = pl.from_arrow(batch).select(pl.col("impression_time").cast(pl.Datetime("us")).cast(pl.Int64),
                                             pl.col("article_ids_clicked").cast(pl.List(pl.Int64)))
            ex = ex.explode("article_ids_clicked").drop_nulls()
            rows.append(pool.rows(ex["article_ids_clicked"].to_numpy()))
            times.append(ex["impression_time"].to_numpy())
        return cls(np.concatenate(rows or [np.zeros(0, np.int64)]), np.concatenate(times or [np.zeros(0, np.int64)]),
                   len(pool))

    def counts(self, rows: np.ndarray, times_us: np.ndarray) -> np.ndarray:
        """Clicks on each row strictly before each time (both broadcast)."""
        base = np.asarray(rows, dtype=np.int64) * self.span
        before = np.searchsorted(self.times, np.asarray(times_us, dtype=np.int64), side="left")
        return np.searchsorted(self.keys, base + before) - np.searchsorted(self.keys, base)

    def for_times(self, times_us: np.ndarray) -> ScoreBlock:
        def score_block(q: np.ndarray, a: int, b: int) -> np.ndarray:
            rows = np.arange(a, b, dtype=np.int64)[None, :]
            return self.counts(rows, times_us[q][:, None]) + (rows + 1) / (self.n_rows + 2)

        return score_block
