"""Training samples, as ebnerd-benchmark's `sampling_strategy_wu2019`.

One sample per (impression, clicked article), in in-view order. Its candidates are the clicked article
(column 0) plus K negatives drawn from the same impression's non-clicked in-view articles: without replacement when the
impression has at least K, with replacement when it has fewer. Impressions without a click, or whose
in-view list is all clicked, yield no sample; both are counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from mtnews.data.articles import ArticleTable
from mtnews.data.history import UserHistories
from mtnews.data.impressions import row_keys


@dataclass
class TrainSamples:
    user_row: np.ndarray  # int32 [N], row in UserHistories.matrix
    candidates: np.ndarray  # int32 [N, 1+K], column 0 is the clicked article
    impression_id: np.ndarray  # int64 [N]
    no_click: int = 0  # impressions dropped for having no click
    no_negative: int = 0  # clicks dropped because every in-view article was clicked

    def __len__(self) -> int:
        return len(self.user_row)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    off = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=off[1:])
    return off


def sample_negatives(
    flat: np.ndarray, offsets: np.ndarray, segment: np.ndarray, k: int, rng: np.random.Generator, chunk: int = 1 << 20
) -> np.ndarray:
    """For each entry of `segment`, draw k items of ragged segment `segment[i]` of `flat`.

    Without replacement where the segment has >= k items (random keys, then the k smallest per segment),
    with replacement otherwise. Chunked so the random keys stay bounded in memory.
    """
    out = np.empty((len(segment), k), dtype=flat.dtype)
    for s in range(0, len(segment), chunk):
        seg = segment[s : s + chunk]
        n = offsets[seg + 1] - offsets[seg]
        pick = (rng.random((len(seg), k)) * n[:, None]).astype(np.int64)
        full = np.flatnonzero(n >= k)
        if len(full):
            nf = n[full]
            starts = _offsets(nf)
            owner = np.repeat(np.arange(len(full)), nf)
            keys = rng.random(int(starts[-1]))
            order = np.lexsort((keys, owner))
            rank = np.arange(len(order)) - starts[owner]  # owner is sorted, so ranks line up with `order`
            within = (order - starts[owner[order]])[rank < k]
            pick[full] = within.reshape(len(full), k)
        out[s : s + chunk] = flat[offsets[seg][:, None] + pick]
    return out


def build_train_samples(
    behaviors: pl.DataFrame, articles: ArticleTable, histories: UserHistories, npratio: int, seed: int
) -> TrainSamples:
    df = behaviors.select(
        pl.col("impression_id").cast(pl.Int64),
        pl.col("user_id").cast(pl.Int64),
        pl.col("article_ids_clicked").list.drop_nulls().list.unique(maintain_order=True).alias("clicked"),
        pl.col("article_ids_inview").list.drop_nulls().list.unique(maintain_order=True).alias("inview"),
    )
    n_click = df["clicked"].list.len().fill_null(0).to_numpy().astype(np.int64)
    n_view = df["inview"].list.len().fill_null(0).to_numpy().astype(np.int64)
    c_ids = df["clicked"].explode().drop_nulls().to_numpy().astype(np.int64)
    v_ids = df["inview"].explode().drop_nulls().to_numpy().astype(np.int64)
    rows = np.arange(df.height)
    c_rows, v_rows = np.repeat(rows, n_click), np.repeat(rows, n_view)
    c_keys, v_keys = row_keys(c_rows, c_ids), row_keys(v_rows, v_ids)
    shown = np.isin(v_keys, c_keys)
    # Clicks and negatives in in-view order, whatever order article_ids_clicked lists the clicks in (MIND
    # cannot hold that order, EBNeRD can), so the same log gives the same samples in either layout.
    # Clicks missing from the in-view list follow, in their own order.
    absent = ~np.isin(c_keys, v_keys)
    order = np.argsort(np.concatenate([v_rows[shown], c_rows[absent]]), kind="stable")
    clicked_flat = np.concatenate([v_ids[shown], c_ids[absent]])[order]
    n_neg = np.bincount(v_rows[~shown], minlength=df.height).astype(np.int64)

    no_click = int((n_click == 0).sum())
    usable = (n_neg > 0).astype(np.int64)
    per_imp = n_click * usable
    no_negative = int((n_click * (1 - usable)).sum())

    imp_of_sample = np.repeat(np.arange(df.height), per_imp)
    keep_click = np.repeat(usable.astype(bool), n_click)
    clicked_idx = articles.index(clicked_flat[keep_click])

    neg_idx = articles.index(v_ids[~shown])
    rng = np.random.default_rng(seed)
    negatives = sample_negatives(neg_idx, _offsets(n_neg), imp_of_sample, npratio, rng)

    candidates = np.concatenate([clicked_idx[:, None], negatives], axis=1).astype(np.int32)
    user_row = histories.rows(df["user_id"].to_numpy())[imp_of_sample]
    return TrainSamples(user_row, candidates, df["impression_id"].to_numpy()[imp_of_sample], no_click, no_negative)
