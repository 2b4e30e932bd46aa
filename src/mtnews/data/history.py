"""Per-user click histories as one left-padded index matrix.

A history belongs to the user, not to the impression (EBNeRD fixes it before the split's period), so we
store U rows of H indices and let every sample point at its user's row: memory is O(U*H), not O(N*H).
Row 0 is the empty history, used for users that history.parquet does not list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtnews.data import schema
from mtnews.data.articles import PAD, UNK, ArticleTable
from mtnews.errors import DataError


@dataclass
class UserHistories:
    user_ids: np.ndarray  # int64 [U], sorted; row i+1 of `matrix` belongs to user_ids[i]
    matrix: np.ndarray  # int32 [U+1, H], left-padded with PAD; row 0 is empty
    unknown_ids: int = 0  # history clicks whose article is missing from the articles file

    @property
    def history_size(self) -> int:
        return self.matrix.shape[1]

    def rows(self, user_ids: np.ndarray) -> np.ndarray:
        """Matrix rows for `user_ids`; users without a history get row 0 (the empty history)."""
        user_ids = np.asarray(user_ids, dtype=np.int64)
        if len(self.user_ids) == 0:
            return np.zeros(user_ids.shape, dtype=np.int32)
        pos = np.searchsorted(self.user_ids, user_ids).clip(0, len(self.user_ids) - 1)
        return np.where(self.user_ids[pos] == user_ids, pos + 1, 0).astype(np.int32)

    def lengths(self) -> np.ndarray:
        return (self.matrix != PAD).sum(axis=1)


def left_pad(flat: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Place ragged rows (each already at most `width` long) right-aligned in a PAD-filled matrix."""
    out = np.full((len(lengths), width), PAD, dtype=np.int32)
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    row = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(len(flat)) - starts[:-1][row]
    out[row, width - lengths[row] + pos] = flat
    return out


def read_history(path: str | Path) -> pl.DataFrame:
    """Validated `user_id`, `article_id_fixed` of history.parquet: one row per user, no null users."""
    path = Path(path)
    schema.validate(path, schema.REQUIRED_HISTORY)
    df = schema.read_frame(path, ["user_id", "article_id_fixed"])
    if df["user_id"].null_count():
        raise DataError(f"{path}: column 'user_id' has null values, expected none")
    dup = df.height - df["user_id"].n_unique()
    if dup:
        raise DataError(f"{path}: column 'user_id' has {dup} duplicate users, expected one row per user")
    return df


def load_histories(path: str | Path, articles: ArticleTable, history_size: int) -> UserHistories:
    return build_histories(read_history(path), articles, history_size)


def build_histories(df: pl.DataFrame, articles: ArticleTable, history_size: int) -> UserHistories:
    """UserHistories from a frame of `user_id` (unique) and `article_id_fixed` (clicked ids, oldest first)."""
    # The list is in time order, so the last H clicks are the most recent ones.
    df = df.select(
        pl.col("user_id").cast(pl.Int64),
        pl.col("article_id_fixed").list.drop_nulls().list.tail(history_size).alias("h"),
    ).sort("user_id")
    lengths = df["h"].list.len().fill_null(0).to_numpy().astype(np.int64)
    flat_ids = df["h"].explode().drop_nulls().to_numpy()
    flat = articles.index(flat_ids)
    matrix = np.vstack([np.full((1, history_size), PAD, dtype=np.int32), left_pad(flat, lengths, history_size)])
    return UserHistories(df["user_id"].to_numpy(), matrix, int((flat == UNK).sum()))
