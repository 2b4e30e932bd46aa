from datetime import datetime, timedelta

import polars as pl
import pytest

from mtnews.data.holdout import split_holdout
from mtnews.errors import ConfigError, DataError


def _log(hours):
    t0 = datetime(2023, 5, 1)
    return pl.DataFrame({"impression_id": list(range(len(hours))),
                         "impression_time": [t0 + timedelta(hours=h) for h in hours]})


def test_last_hours_are_the_holdout_and_the_boundary_belongs_to_it():
    parts = split_holdout(_log([0, 10, 25, 26, 49, 50]), hours=24)
    # latest is 50 h, so the cutoff is 26 h: 26 is held out (>=), 25 trains
    assert parts.fit["impression_id"].to_list() == [0, 1, 2]
    assert parts.holdout["impression_id"].to_list() == [3, 4, 5]
    assert parts.cutoff == datetime(2023, 5, 1) + timedelta(hours=26)


def test_unordered_rows_split_by_time_not_position():
    parts = split_holdout(_log([50, 0, 30, 10]), hours=24)
    assert sorted(parts.holdout["impression_id"].to_list()) == [0, 2]
    assert sorted(parts.fit["impression_id"].to_list()) == [1, 3]


@pytest.mark.parametrize("hours", [0, -1])
def test_non_positive_hours_refused(hours):
    with pytest.raises(ConfigError, match="holdout_hours"):
        split_holdout(_log([0, 1]), hours=hours)


def test_holdout_that_swallows_the_log_is_refused():
    with pytest.raises(ConfigError, match="spans 2.0 h"):
        split_holdout(_log([0, 1, 2]), hours=5)


def test_missing_or_null_times_are_named():
    with pytest.raises(DataError, match="impression_time.*missing"):
        split_holdout(pl.DataFrame({"impression_id": [1]}), hours=1, source="train/behaviors.parquet")
    log = _log([0, 1]).with_columns(pl.Series("impression_time", [None, datetime(2023, 5, 1)]))
    with pytest.raises(DataError, match="1 null"):
        split_holdout(log, hours=1)
