"""The selection holdout: the last hours of the train log, kept out of training for every choice made on data.

Checkpoint selection, early stopping and any fitted blend or stacking weight are chosen on it, so the
validation split is only ever reported, never selected on (ebnerd-benchmark's reproduction scripts hold
out train's last day the same way). Impressions at or after `last - hours` form the holdout; the rest fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import polars as pl

from mtnews.errors import ConfigError, DataError


@dataclass(frozen=True)
class HoldoutSplit:
    fit: pl.DataFrame
    holdout: pl.DataFrame
    cutoff: object  # the first holdout instant (a datetime), reported in run summaries


def split_holdout(behaviors: pl.DataFrame, hours: float, source: str = "behaviors") -> HoldoutSplit:
    """Cut `behaviors` by `impression_time`: rows at or after (latest - hours) are the holdout.

    Both parts must be non-empty: a holdout that swallows the whole log (or none of it) is a config error,
    not a silent fallback to selecting on validation.
    """
    if hours <= 0:
        raise ConfigError(f"train.selection.holdout_hours: expected a positive number of hours, got {hours}")
    if "impression_time" not in behaviors.columns:
        raise DataError(f"{source}: field 'impression_time' is needed for the selection holdout; it is missing")
    times = behaviors["impression_time"]
    if times.null_count():
        raise DataError(f"{source}: field 'impression_time' has {times.null_count()} null values; the selection "
                        "holdout needs a time for every impression")
    cutoff = times.max() - timedelta(hours=hours)
    late = pl.col("impression_time") >= cutoff
    fit, holdout = behaviors.filter(~late), behaviors.filter(late)
    if fit.height == 0 or holdout.height == 0:
        span = (times.max() - times.min()).total_seconds() / 3600
        raise ConfigError(f"train.selection.holdout_hours: {hours} h leaves {fit.height} impressions to train on and "
                          f"{holdout.height} to select on; the train log in {source} spans {span:.1f} h")
    return HoldoutSplit(fit, holdout, cutoff)
