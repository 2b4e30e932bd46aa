"""Reading behaviors.parquet: validated, only the columns mtnews needs, whole or streamed in row chunks."""

from __future__ import annotations

from typing import Iterator

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mtnews.data import schema
from mtnews.data.layout import SplitPaths
from mtnews.errors import DataError

ID_COLUMNS = ("impression_id", "user_id")


def behavior_columns(paths: SplitPaths, extra: tuple[str, ...] = ()) -> list[str]:
    """Validate behaviors.parquet up front and return the columns mtnews reads from it.

    Checked here, once per file: the schema, at least one row, and no negative impression id (the official
    dtype is UInt32, and a submission line cannot hold one). Nulls in the id columns are checked as rows are read.
    """
    required = schema.REQUIRED_BEHAVIORS_LABELLED if paths.labelled else schema.REQUIRED_BEHAVIORS
    sch = schema.validate(paths.behaviors, required, schema.OPTIONAL_BEHAVIORS)
    signed = sch["impression_id"].is_signed_integer()
    # Unsigned ids cannot be negative, so the usual file costs only its footer here.
    rows, low = schema.aggregate(paths.behaviors, pl.len(), pl.col("impression_id").min() if signed else pl.lit(0))
    if rows == 0:
        raise DataError(f"{paths.behaviors}: no rows, expected at least one impression")
    if low is not None and low < 0:
        raise DataError(f"{paths.behaviors}: column 'impression_id' has negative values (min {low}), "
                        f"expected non-negative integers")
    cols = list(required)
    for c in ("is_beyond_accuracy", *extra):
        if c in sch and c not in cols:
            cols.append(c)
    return cols


def _check_null_ids(paths: SplitPaths, null_counts: dict[str, int]) -> None:
    for c, n in null_counts.items():
        if n:
            raise DataError(f"{paths.behaviors}: column '{c}' has null values, expected none")


def read_behaviors(paths: SplitPaths, extra: tuple[str, ...] = ()) -> pl.DataFrame:
    cols = behavior_columns(paths, extra)
    df = schema.read_frame(paths.behaviors, cols)
    _check_null_ids(paths, {c: df[c].null_count() for c in ID_COLUMNS})
    return df


def behavior_batches(paths: SplitPaths, columns: list[str], batch_size: int,
                     row_groups: list[int] | range | None = None) -> Iterator[pa.RecordBatch]:
    """Arrow record batches of `columns` (from `behavior_columns`), checked for null ids among them.

    A data page that fails to decode (the footer was fine, so validation passed) is a DataError naming the file.
    """
    try:
        pf = pq.ParquetFile(paths.behaviors)
        if row_groups is None:
            row_groups = range(pf.metadata.num_row_groups)
        batches = pf.iter_batches(batch_size=batch_size, row_groups=row_groups, columns=columns)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            _check_null_ids(paths, {c: batch.column(c).null_count for c in ID_COLUMNS if c in columns})
            yield batch
    except (OSError, pa.ArrowException) as e:
        raise schema.unreadable(paths.behaviors, e) from None


def iter_behaviors(paths: SplitPaths, chunk_rows: int, extra: tuple[str, ...] = ()) -> Iterator[pl.DataFrame]:
    """Stream behaviors in chunks of rows, so memory does not grow with the number of impressions."""
    for batch in behavior_batches(paths, behavior_columns(paths, extra), chunk_rows):
        yield pl.from_arrow(batch)


def count_behaviors(paths: SplitPaths) -> int:
    """The number of rows, after the same up-front validation as every reader (so it fails as early)."""
    behavior_columns(paths)
    return pq.ParquetFile(paths.behaviors).metadata.num_rows
