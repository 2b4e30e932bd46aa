"""The timestamped events that time signals count: in-views and clicks of the logs, and history reads.

Sources, for the split S being scored (`signals.split_signals` picks them):

* every in-view of every impression of the train log and of S, at its `impression_time`;
* every click of those impressions (`article_ids_clicked`), at the same time. S's own clicks can be
  masked (dropped at random), so that a model trained with the mask never leans on clicks that the
  unlabelled test split cannot have;
* every read of the users' histories (`article_id_fixed` at `impression_time_fixed`) of train and S.

Two kinds of duplicate are removed, both causally (whether an event at time h counts depends only on
events at or before h, so nothing later can change what is known at h):

* the same read listed by two history files (the same user, article and time): EBNeRD's validation
  history covers the train week, and train's history the weeks before it, so the files overlap;
* a history read that is the trace of a log click: the same user clicked the same article in a log
  impression at most `history_dedupe_h` hours before the read. Validation's history lists the clicks of
  the train log again; counting both would double every train-week click for validation but not for train.

Masking is decided per click by a hash of (impression_id, article_id, seed), not by a random stream, so it
does not depend on row order or on any other event.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from mtnews.errors import DataError

HOUR_US = 3_600_000_000


@dataclass
class LogPart:
    """One split's behaviors and history frames, as read (or built in memory).

    `behaviors` needs `impression_id`, `user_id`, `impression_time`, `article_ids_inview` and, when labelled,
    `article_ids_clicked`; `history` needs `user_id`, `impression_time_fixed`, `article_id_fixed` (or is None).
    `own` marks the split being scored, whose clicks the mask applies to; `name` is used in errors.
    """

    behaviors: pl.DataFrame
    history: pl.DataFrame | None = None
    own: bool = False
    name: str = "behaviors"
    history_name: str = "history"


@dataclass
class Events:
    """Events as flat (article id, time in microseconds) pairs, unsorted: in-views and clicks."""

    inview_article: np.ndarray  # int64
    inview_time: np.ndarray  # int64
    click_article: np.ndarray  # int64
    click_time: np.ndarray  # int64
    history_reads: int = 0  # reads counted (after dedupe), part of the clicks
    masked_clicks: int = 0  # S's own log clicks dropped by the mask


def _as_us(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.Datetime("us")).cast(pl.Int64)


def unit_hash(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per (a, b) pair: splitmix64 of the pair, so it is order-independent."""
    with np.errstate(over="ignore"):
        x = a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= b.astype(np.uint64) + np.uint64((seed * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF)
        for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            x ^= x >> np.uint64(shift)
            x *= np.uint64(mult)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _log_events(part: LogPart) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(in-views: article, t) and (clicks: impression, user, article, t) of one behaviors frame."""
    b = part.behaviors
    if b["impression_time"].null_count():
        raise DataError(f"{part.name}: column 'impression_time' has {b['impression_time'].null_count()} null "
                        f"value(s), expected a time for every impression (time signals need it)")
    base = b.select(
        pl.col("impression_id").cast(pl.Int64),
        pl.col("user_id").cast(pl.Int64),
        _as_us(pl.col("impression_time")).alias("t"),
        pl.col("article_ids_inview"),
        *([pl.col("article_ids_clicked")] if "article_ids_clicked" in b.columns else []),
    )
    inviews = (base.select("t", pl.col("article_ids_inview").alias("article"))
               .explode("article").drop_nulls("article").with_columns(pl.col("article").cast(pl.Int64)))
    if "article_ids_clicked" not in base.columns:
        return inviews, pl.DataFrame(schema={"impression_id": pl.Int64, "user_id": pl.Int64, "article": pl.Int64,
                                             "t": pl.Int64})
    clicks = (base.select("impression_id", "user_id", pl.col("article_ids_clicked").alias("article"), "t")
              .explode("article").drop_nulls("article").with_columns(pl.col("article").cast(pl.Int64)))
    return inviews, clicks


def _history_reads(part: LogPart) -> pl.DataFrame:
    h = part.history
    times, ids = h["impression_time_fixed"], h["article_id_fixed"]
    bad = (times.list.len().fill_null(0) != ids.list.len().fill_null(0)) & times.is_not_null()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{part.history_name}: columns 'impression_time_fixed' and 'article_id_fixed' differ in "
                        f"length for user_id {h['user_id'][i]}, expected one time per history click")
    return (
        h.select(pl.col("user_id").cast(pl.Int64), pl.col("impression_time_fixed").alias("t"),
                 pl.col("article_id_fixed").alias("article"))
        .filter(pl.col("t").is_not_null())
        .explode("t", "article")
        .drop_nulls()
        .select("user_id", pl.col("article").cast(pl.Int64), _as_us(pl.col("t")).alias("t"))
    )


def collect_events(parts: list[LogPart], *, mask: float = 0.0, mask_seed: int = 0,
                   history_dedupe_h: float = 1.0) -> Events:
    """The events of `parts` (the train log and/or the split S), deduplicated and masked as described above."""
    inviews, clicks, reads = [], [], []
    masked = 0
    for part in parts:
        iv, cl = _log_events(part)
        if part.own and mask > 0 and cl.height:
            keep = unit_hash(cl["impression_id"].to_numpy(), cl["article"].to_numpy(), mask_seed) >= mask
            masked += int((~keep).sum())
            cl = cl.filter(pl.Series(keep))
        inviews.append(iv)
        clicks.append(cl.select("user_id", "article", "t"))
        if part.history is not None:
            reads.append(_history_reads(part))
    inview = pl.concat(inviews) if inviews else pl.DataFrame(schema={"t": pl.Int64, "article": pl.Int64})
    click = pl.concat(clicks)
    read = pl.concat(reads).unique() if reads else click.clear()
    if read.height and click.height and history_dedupe_h > 0:
        # A read is a trace of a log click when the same user clicked the same article shortly before it.
        # (user, article) pairs rarely repeat, so an equi-join plus a time filter is small, and faster
        # than an as-of join grouped by the pair.
        tol = int(round(history_dedupe_h * HOUR_US))
        read = read.with_row_index("row")
        traces = (read.join(click.rename({"t": "t_click"}), on=["user_id", "article"], how="inner")
                  .filter(pl.col("t_click").is_between(pl.col("t") - tol, pl.col("t")))
                  .select("row").unique())
        read = read.join(traces, on="row", how="anti").drop("row")
    return Events(
        inview["article"].to_numpy(), inview["t"].to_numpy(),
        np.concatenate([click["article"].to_numpy(), read["article"].to_numpy()]),
        np.concatenate([click["t"].to_numpy(), read["t"].to_numpy()]),
        history_reads=read.height, masked_clicks=masked,
    )
