"""`time_profile` on a hand-made log, and its errors."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest

from mtnews.data.time_profile import profile_file, time_profile
from mtnews.errors import DataError


def log(rows) -> pl.DataFrame:
    return pl.DataFrame({"impression_time": [r[0] for r in rows], "article_ids_inview": [r[1] for r in rows]},
                        schema={"impression_time": pl.Datetime("us"), "article_ids_inview": pl.List(pl.Int32)})


def test_hand_computed_profile():
    # Hour 08: three impressions; hour 09: none; hour 10: one. Article 1 is in view 3 times at 08, once at 10.
    p = time_profile(log([
        (datetime(2023, 5, 1, 8, 5), [1, 2]),
        (datetime(2023, 5, 1, 8, 30), [1, 3, None]),
        (datetime(2023, 5, 1, 8, 59), [1, 1]),  # a repeat inside one list counts once
        (datetime(2023, 5, 1, 10, 0), [1]),
    ]))
    assert p["impressions"] == 4 and p["span_hours"] == 3
    assert p["impressions_per_hour"] == {"mean": 4 / 3, "median": 1.0, "p90": pytest.approx(2.6), "max": 3.0}
    # (article, hour) pairs: (1, 08) 3, (2, 08) 1, (3, 08) 1, (1, 10) 1
    assert p["inview_repeats_per_hour"]["mean"] == 1.5 and p["inview_repeats_per_hour"]["max"] == 3.0
    assert p["repeat_share"] == pytest.approx((3 / 3 + 1 / 3 + 1 / 3 + 1 / 1) / 4)
    assert p["articles_per_hour"] == 2.0  # 3 distinct at 08, 1 at 10, over the 2 non-empty hours
    assert p["hour_of_day"][8] == 0.75 and p["hour_of_day"][10] == 0.25 and sum(p["hour_of_day"]) == 1
    assert p["trough_to_peak"] == 0.0  # most hours of the day never see an impression


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="no impressions"):
        time_profile(log([]))
    path = tmp_path / "behaviors.parquet"
    pl.DataFrame({"article_ids_inview": [[1]]}).write_parquet(path)
    with pytest.raises(DataError, match=r"behaviors\.parquet.*'impression_time'"):
        profile_file(path)
