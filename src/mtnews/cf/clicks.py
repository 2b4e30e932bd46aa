"""The timed click log CF reads: who clicked which article when, and each impression's time and user.

For a split S the log is S's history.parquet (`article_id_fixed` at `impression_time_fixed`, all before
S's impressions) plus the clicks of S's own impressions at their `impression_time`, as a live system would
have them. Nothing here decides what is "past": the scorers ask for clicks strictly before a time
(`ClickLog.before`), so a click at or after an impression's time can never reach its score. Exact
duplicates (same user, article and time) are kept once.

Clicks are keyed by history row (`UserHistories.rows`): a neighbour needs a user vector, and only users
with a history.parquet row have one, so clicks of other users are left out of the log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from mtnews.data import schema
from mtnews.data.behaviors import behavior_batches
from mtnews.data.history import UserHistories
from mtnews.data.layout import SplitPaths
from mtnews.errors import DataError

SCAN_ROWS = 1 << 17
_US = pl.Datetime("us")


def history_clicks(paths: SplitPaths) -> pl.DataFrame:
    """user_id, article_id, time_us of every timed history read of the split."""
    schema.validate(paths.history, {"impression_time_fixed": schema.DATETIME_LIST, "article_id_fixed": schema.INT_LIST})
    h = schema.read_frame(paths.history, ["user_id", "impression_time_fixed", "article_id_fixed"])
    h = h.select(pl.col("user_id").cast(pl.Int64),
                 pl.col("impression_time_fixed").cast(pl.List(_US)).cast(pl.List(pl.Int64)).alias("time_us"),
                 pl.col("article_id_fixed").cast(pl.List(pl.Int64)).alias("article_id"))
    if not (h["time_us"].list.len() == h["article_id"].list.len()).fill_null(True).all():
        raise DataError(f"{paths.history}: 'impression_time_fixed' and 'article_id_fixed' differ in length in some "
                        f"rows, expected one time per click")
    return h.explode(["time_us", "article_id"]).drop_nulls().select("user_id", "article_id", "time_us")


def log_clicks(paths: SplitPaths, behaviors: pl.DataFrame | None = None) -> pl.DataFrame:
    """user_id, article_id, time_us of every click of the split's impressions (or of `behaviors` rows)."""
    def frame(df: pl.DataFrame) -> pl.DataFrame:
        return (df.select(pl.col("user_id").cast(pl.Int64), pl.col("impression_time").cast(_US).cast(pl.Int64).alias("time_us"),
                          pl.col("article_ids_clicked").cast(pl.List(pl.Int64)).alias("article_id"))
                .explode("article_id").drop_nulls().select("user_id", "article_id", "time_us"))

    if behaviors is not None:
        return frame(behaviors)
    parts = [frame(pl.from_arrow(b)) for b in
             behavior_batches(paths, ["user_id", "impression_time", "article_ids_clicked"], SCAN_ROWS)]
    return pl.concat(parts) if parts else pl.DataFrame(schema={"user_id": pl.Int64, "article_id": pl.Int64,
                                                               "time_us": pl.Int64})


@dataclass
class ClickLog:
    """Clicks sorted by (history row, time): row r's clicks are [starts[r], starts[r + 1])."""

    rows: np.ndarray  # int64 [E], history rows (>= 1)
    article_ids: np.ndarray  # int64 [E]
    times_us: np.ndarray  # int64 [E]
    n_rows: int  # history rows + 1 (row 0, the empty history, never clicks)

    def __post_init__(self) -> None:
        self.times = np.unique(self.times_us)
        self.span = len(self.times) + 1
        # One sorted key per click: row * span + rank of its time, so "row r's clicks before t" is one search.
        self.keys = self.rows * self.span + np.searchsorted(self.times, self.times_us)
        self.starts = np.searchsorted(self.keys, np.arange(self.n_rows + 1, dtype=np.int64) * self.span)

    @classmethod
    def from_frame(cls, df: pl.DataFrame, histories: UserHistories) -> "ClickLog":
        """From user_id, article_id, time_us; users without a history row are dropped."""
        df = df.unique()
        rows = histories.rows(df["user_id"].to_numpy()).astype(np.int64)
        keep = rows > 0
        rows, ids, times = rows[keep], df["article_id"].to_numpy()[keep], df["time_us"].to_numpy()[keep]
        order = np.lexsort((ids, times, rows))
        return cls(rows[order], ids[order].astype(np.int64), times[order].astype(np.int64), histories.matrix.shape[0])

    @classmethod
    def for_split(cls, paths: SplitPaths, histories: UserHistories) -> "ClickLog":
        parts = [history_clicks(paths)] + ([log_clicks(paths)] if paths.labelled else [])  # test has no clicks
        return cls.from_frame(pl.concat(parts), histories)

    def __len__(self) -> int:
        return len(self.rows)

    def before(self, rows: np.ndarray, times_us: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[start, stop) of each row's clicks strictly before its time (both broadcast, int64)."""
        rows = np.asarray(rows, dtype=np.int64)
        rank = np.searchsorted(self.times, np.asarray(times_us, dtype=np.int64), side="left")
        return self.starts[rows], np.searchsorted(self.keys, rows * self.span + rank)


@dataclass
class ImpressionTimes:
    """impression_id -> (impression_time in us, user_id) for a split, for scorers that need either."""

    ids: np.ndarray  # int64, sorted unique
    times_us: np.ndarray  # int64
    user_ids: np.ndarray  # int64

    @classmethod
    def for_split(cls, paths: SplitPaths, behaviors: pl.DataFrame | None = None) -> "ImpressionTimes":
        schema.validate(paths.behaviors, {"impression_time": schema.DATETIME})
        if behaviors is None:
            behaviors = pl.concat([pl.from_arrow(b) for b in behavior_batches(
                paths, ["impression_id", "user_id", "impression_time"], SCAN_ROWS)])
        df = behaviors.select(pl.col("impression_id").cast(pl.Int64), pl.col("user_id").cast(pl.Int64),
                              pl.col("impression_time").cast(_US).cast(pl.Int64)).sort("impression_id")
        nulls = df["impression_time"].null_count()
        if nulls:
            raise DataError(f"{paths.behaviors}: column 'impression_time' has {nulls} null values, expected a time "
                            f"for every impression (CF counts only clicks before it)")
        ids = df["impression_id"].to_numpy()
        if len(ids) > 1 and (np.diff(ids) == 0).any():
            raise DataError(f"{paths.behaviors}: column 'impression_id' has duplicate values, expected unique ids")
        return cls(ids, df["impression_time"].to_numpy(), df["user_id"].to_numpy())

    def find(self, impression_ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.ids, np.asarray(impression_ids, dtype=np.int64)).clip(0, max(len(self.ids) - 1, 0))
        if len(self.ids) == 0 or not (self.ids[pos] == impression_ids).all():
            raise DataError("impressions scored that the split's behaviors do not list")
        return pos
