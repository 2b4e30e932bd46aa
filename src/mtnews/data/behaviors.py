"""Reading behaviors.parquet: validated, only the columns mtnews needs, whole or streamed in row chunks."""

from __future__ import annotations

from typing import Iterator

import polars as pl
import pyarrow.parquet as pq

from mtnews.data import schema
from mtnews.data.layout import SplitPaths
from mtnews.errors import DataError


def behavior_columns(paths: SplitPaths, extra: tuple[str, ...] = ()) -> list[str]:
    required = schema.REQUIRED_BEHAVIORS_LABELLED if paths.labelled else schema.REQUIRED_BEHAVIORS
    sch = schema.validate(paths.behaviors, required)
    cols = list(required)
    for c in ("is_beyond_accuracy", *extra):
        if c in sch and c not in cols:
            cols.append(c)
    return cols


def _check(df: pl.DataFrame, paths: SplitPaths) -> pl.DataFrame:
    for c in ("impression_id", "user_id"):
        if df[c].null_count():
            raise DataError(f"{paths.behaviors}: column '{c}' has null values, expected none")
    return df


def read_behaviors(paths: SplitPaths, extra: tuple[str, ...] = ()) -> pl.DataFrame:
    cols = behavior_columns(paths, extra)
    return _check(schema.read_frame(paths.behaviors, cols), paths)


def iter_behaviors(paths: SplitPaths, chunk_rows: int, extra: tuple[str, ...] = ()) -> Iterator[pl.DataFrame]:
    """Stream behaviors in chunks of rows, so memory does not grow with the number of impressions."""
    cols = behavior_columns(paths, extra)
    pf = pq.ParquetFile(paths.behaviors)
    for batch in pf.iter_batches(batch_size=chunk_rows, columns=cols):
        yield _check(pl.from_arrow(batch), paths)


def count_behaviors(paths: SplitPaths) -> int:
    schema.read_schema(paths.behaviors)
    return pq.ParquetFile(paths.behaviors).metadata.num_rows
