"""Evaluation impressions: each user's history plus the *full* in-view list, ragged as flat + offsets.

Metrics are computed per impression over this list, never over pools of mixed users.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl

from mtnews.data.articles import UNK, ArticleTable
from mtnews.data.history import UserHistories
from mtnews.errors import DataError


@dataclass
class EvalImpressions:
    impression_id: np.ndarray  # int64 [M]
    user_row: np.ndarray  # int32 [M]
    offsets: np.ndarray  # int64 [M+1]
    candidates: np.ndarray  # int32 [T], article indices in in-view order
    labels: np.ndarray | None  # int8 [T], 1 = clicked; None for the unlabelled test split
    article_ids: np.ndarray  # int64 [T], the raw ids (for the API, the oracle and unknown counts)
    beyond_accuracy: np.ndarray | None = None  # bool [M], test split only

    def __len__(self) -> int:
        return len(self.impression_id)

    @property
    def unknown(self) -> int:
        return int((self.candidates == UNK).sum())

    def slice(self, start: int, stop: int) -> "EvalImpressions":
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        return EvalImpressions(
            self.impression_id[start:stop],
            self.user_row[start:stop],
            self.offsets[start : stop + 1] - a,
            self.candidates[a:b],
            None if self.labels is None else self.labels[a:b],
            self.article_ids[a:b],
            None if self.beyond_accuracy is None else self.beyond_accuracy[start:stop],
        )

    def chunks(self, size: int) -> Iterator["EvalImpressions"]:
        for s in range(0, len(self), size):
            yield self.slice(s, min(s + size, len(self)))


def row_keys(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """One int64 key per (row, article id): ids are i32 in EBNeRD, so the pair packs losslessly."""
    return (rows.astype(np.int64) << 32) | (ids.astype(np.int64) & 0xFFFFFFFF)


def build_eval_impressions(
    behaviors: pl.DataFrame, articles: ArticleTable, histories: UserHistories, source: str | Path | None = None
) -> EvalImpressions:
    """The impressions of `behaviors` rows; `source` is the file they came from, named in errors.

    Every impression needs at least one in-view article: it could be neither ranked nor written to a
    submission otherwise.
    """
    df = behaviors.with_columns(pl.col("article_ids_inview").list.drop_nulls().alias("inview"))
    lengths = df["inview"].list.len().fill_null(0).to_numpy().astype(np.int64)
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise DataError(f"{source or 'behaviors.parquet'}: column 'article_ids_inview' is empty or null in "
                        f"{len(empty)} row(s) (first: impression_id {df['impression_id'][int(empty[0])]}), "
                        f"expected at least one in-view article per impression")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = df["inview"].explode().drop_nulls().to_numpy().astype(np.int64)
    labels = None
    if "article_ids_clicked" in df.columns:
        clicked = df["article_ids_clicked"].list.drop_nulls()
        c_len = clicked.list.len().fill_null(0).to_numpy()
        c_ids = clicked.explode().drop_nulls().to_numpy()
        rows = np.repeat(np.arange(df.height), lengths)
        c_rows = np.repeat(np.arange(df.height), c_len)
        labels = np.isin(row_keys(rows, ids), row_keys(c_rows, c_ids)).astype(np.int8)
    beyond = df["is_beyond_accuracy"].fill_null(False).to_numpy() if "is_beyond_accuracy" in df.columns else None
    return EvalImpressions(
        df["impression_id"].cast(pl.Int64).to_numpy(),
        histories.rows(df["user_id"].cast(pl.Int64).to_numpy()),
        offsets,
        articles.index(ids),
        labels,
        ids,
        beyond,
    )
