"""The hourly shape of a behaviors log: impressions per hour, and how often one article is in view per hour.

`time_profile` describes a log by clock hours (impression_time truncated to the hour):

* `impressions_per_hour`: mean, median, p90 and max over every clock hour of the log's span, empty hours
  included; `hour_of_day`: the share of impressions in each hour of the day (0-23), and
  `trough_to_peak`, the quietest hour-of-day's share over the busiest one's (after a 3-hour circular
  moving average, so a small log's noise does not decide it);
* `inview_repeats_per_hour`: for every (article, clock hour) with at least one in-view, how many
  impressions of that hour showed the article: mean, median, p90, max; `repeat_share`: the same count
  divided by the hour's impressions, averaged, which does not grow with traffic the way raw repeats do;
  `articles_per_hour`: the mean number of distinct articles in view per (non-empty) hour.

The numbers for the real EBNeRD fixture and the synthetic default are in docs/time.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from mtnews.data import schema
from mtnews.errors import DataError


def _stats(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"mean": 0.0, "median": 0.0, "p90": 0.0, "max": 0.0}
    return {"mean": float(values.mean()), "median": float(np.median(values)),
            "p90": float(np.quantile(values, 0.9)), "max": float(values.max())}


def time_profile(behaviors: pl.DataFrame, source: str = "behaviors") -> dict:
    """The profile above, of a frame with `impression_time` and `article_ids_inview`."""
    if behaviors.height == 0:
        raise DataError(f"{source}: no impressions to profile")
    if behaviors["impression_time"].null_count():
        raise DataError(f"{source}: column 'impression_time' has null values, expected a time per impression")
    df = behaviors.select(pl.col("impression_time").cast(pl.Datetime("us")).dt.truncate("1h").alias("hour"),
                          pl.col("article_ids_inview").list.drop_nulls().list.unique().alias("article"))
    hour_us = 3_600_000_000
    hours = df["hour"].cast(pl.Int64).to_numpy() // hour_us
    first, last = int(hours.min()), int(hours.max())
    per_hour = np.bincount(hours - first, minlength=last - first + 1)
    of_day = np.bincount(hours % 24, minlength=24).astype(np.float64)
    smooth = (np.roll(of_day, 1) + of_day + np.roll(of_day, -1)) / 3
    shown = df.explode("article").drop_nulls("article").group_by("hour", "article").len("n")
    shown = shown.join(df.group_by("hour").len("impressions"), on="hour")
    n = shown["n"].to_numpy().astype(np.float64)
    return {
        "impressions": behaviors.height,
        "span_hours": last - first + 1,
        "impressions_per_hour": _stats(per_hour.astype(np.float64)),
        "hour_of_day": (of_day / of_day.sum()).round(4).tolist(),
        "trough_to_peak": float(smooth.min() / smooth.max()),
        "inview_repeats_per_hour": _stats(n),
        "repeat_share": float((n / shown["impressions"].to_numpy()).mean()) if len(n) else 0.0,
        "articles_per_hour": float(shown.height / max(1, np.count_nonzero(per_hour))),
    }


def profile_file(path: str | Path) -> dict:
    """`time_profile` of a behaviors.parquet (validated: it needs impression_time and article_ids_inview)."""
    path = Path(path)
    schema.validate(path, {"impression_time": schema.DATETIME, "article_ids_inview": schema.INT_LIST})
    return time_profile(schema.read_frame(path, ["impression_time", "article_ids_inview"]), str(path))
