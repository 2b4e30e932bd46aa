"""The EBNeRD file schemas (final public release) and up-front validation.

`FULL` lists every official column with its official dtype; the synthetic generator writes exactly these.
`REQUIRED` lists the columns mtnews reads, with the *kind* of dtype it accepts, so that real files with
slightly different integer widths still load while a string where a list of ids belongs is rejected.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from mtnews.errors import DataError

BEHAVIORS: dict[str, pl.DataType] = {
    "impression_id": pl.UInt32,
    "article_id": pl.Int32,
    "impression_time": pl.Datetime("us"),
    "read_time": pl.Float32,
    "scroll_percentage": pl.Float32,
    "device_type": pl.Int8,
    "article_ids_inview": pl.List(pl.Int32),
    "article_ids_clicked": pl.List(pl.Int32),
    "user_id": pl.UInt32,
    "is_sso_user": pl.Boolean,
    "gender": pl.Int8,
    "postcode": pl.Int8,
    "age": pl.Int8,
    "is_subscriber": pl.Boolean,
    "session_id": pl.UInt32,
    "next_read_time": pl.Float32,
    "next_scroll_percentage": pl.Float32,
}

# The test split has no clicks and flags the shared beyond-accuracy impressions.
TEST_BEHAVIORS: dict[str, pl.DataType] = {
    **{k: v for k, v in BEHAVIORS.items() if k not in ("article_ids_clicked", "next_read_time", "next_scroll_percentage")},
    "is_beyond_accuracy": pl.Boolean,
}

HISTORY: dict[str, pl.DataType] = {
    "user_id": pl.UInt32,
    "impression_time_fixed": pl.List(pl.Datetime("us")),
    "scroll_percentage_fixed": pl.List(pl.Float32),
    "article_id_fixed": pl.List(pl.Int32),
    "read_time_fixed": pl.List(pl.Float32),
}

ARTICLES: dict[str, pl.DataType] = {
    "article_id": pl.Int32,
    "title": pl.String,
    "subtitle": pl.String,
    "last_modified_time": pl.Datetime("us"),
    "premium": pl.Boolean,
    "body": pl.String,
    "published_time": pl.Datetime("us"),
    "image_ids": pl.List(pl.Int64),
    "article_type": pl.String,
    "url": pl.String,
    "ner_clusters": pl.List(pl.String),
    "entity_groups": pl.List(pl.String),
    "topics": pl.List(pl.String),
    "category": pl.Int16,
    "subcategory": pl.List(pl.Int16),
    "category_str": pl.String,
    "total_inviews": pl.Int32,
    "total_pageviews": pl.Int32,
    "total_read_time": pl.Float32,
    "sentiment_score": pl.Float32,
    "sentiment_label": pl.String,
}

SENTIMENT_LABELS = ("Negative", "Neutral", "Positive")

# Kinds of dtype accepted for the columns mtnews reads.
INT = "integer"
INT_LIST = "list of integers"
STR = "string"
STR_LIST = "list of strings"
NUM = "number"
NUM_LIST = "list of numbers"
BOOL = "boolean"
DATETIME = "datetime"
DATETIME_LIST = "list of datetimes"

REQUIRED_BEHAVIORS = {"impression_id": INT, "user_id": INT, "article_ids_inview": INT_LIST}
REQUIRED_BEHAVIORS_LABELLED = {**REQUIRED_BEHAVIORS, "article_ids_clicked": INT_LIST}
# Read when present: the test split flags its shared beyond-accuracy impressions.
OPTIONAL_BEHAVIORS = {"is_beyond_accuracy": BOOL}
REQUIRED_HISTORY = {"user_id": INT, "article_id_fixed": INT_LIST}
# What `mtnews data synth-articles` reads besides the required columns, when present.
REFERENCES_BEHAVIORS = {"article_ids_clicked": INT_LIST, "article_id": INT, "impression_time": DATETIME}
REFERENCES_HISTORY = {"impression_time_fixed": DATETIME_LIST}
# `<split>/oracle.parquet` of a synthetic dataset: the true utility of every in-view article, in in-view order.
REQUIRED_ORACLE = {"impression_id": INT, "utility": NUM_LIST}
REQUIRED_ARTICLES = {"article_id": INT, "title": STR}
# Read when present (the auxiliary-task labels); a wrong dtype is still an error.
OPTIONAL_ARTICLES = {
    "category": INT,
    "category_str": STR,
    "sentiment_label": STR,
    "entity_groups": STR_LIST,
    "published_time": DATETIME,
}
# Read when present, though not EBNeRD columns: MIND's subcategory name (EBNeRD's `subcategory` holds integer
# codes), which `mtnews.data.mind` writes as an extra column; the labels of the subcategory task.
EXTRA_ARTICLES = {"subcategory_str": STR}


def _kind_ok(dtype: pl.DataType, kind: str) -> bool:
    if kind == INT:
        return dtype.is_integer()
    if kind == NUM:
        return dtype.is_numeric()
    if kind == BOOL:
        return dtype == pl.Boolean
    if kind == STR:
        return dtype in (pl.String, pl.Categorical) or isinstance(dtype, (pl.Categorical, pl.Enum))
    if kind == DATETIME:
        return isinstance(dtype, pl.Datetime) or dtype == pl.Date
    if kind in _LIST_OF:
        return isinstance(dtype, (pl.List, pl.Array)) and _kind_ok(dtype.inner, _LIST_OF[kind])
    raise ValueError(kind)


_LIST_OF = {INT_LIST: INT, STR_LIST: STR, NUM_LIST: NUM, DATETIME_LIST: DATETIME}


def read_schema(path: Path) -> pl.Schema:
    """Read a parquet file's schema, turning every way it can be broken into one DataError."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected a parquet file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty (0 bytes), expected a parquet file")
    try:
        # glob=False: a folder named like `data[1]` is a path, not a pattern.
        return pl.scan_parquet(path, glob=False).collect_schema()
    except Exception as e:  # polars raises several types for truncated or non-parquet files
        raise unreadable(path, e) from None


def unreadable(path: Path, e: BaseException) -> DataError:
    """The DataError for a file whose bytes are not valid parquet (bad footer or corrupt data page)."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return DataError(f"{path}: not a readable parquet file ({first})")


def read_frame(path: Path, columns: list[str]) -> pl.DataFrame:
    """Read `columns` of a parquet file whose schema was validated; a corrupt data page is a DataError too."""
    try:
        return pl.read_parquet(path, columns=columns, glob=False)
    except Exception as e:
        raise unreadable(path, e) from None


def aggregate(path: Path, *exprs: pl.Expr) -> tuple:
    """One row of aggregates over a parquet file whose schema was validated, reading only the columns they use."""
    try:
        return pl.scan_parquet(path, glob=False).select(*exprs).collect().row(0)
    except Exception as e:
        raise unreadable(path, e) from None


def validate(path: Path, required: dict[str, str], optional: dict[str, str] | None = None) -> pl.Schema:
    """Check `path` has every required column with an acceptable dtype; return its schema."""
    schema = read_schema(path)
    missing = [c for c in required if c not in schema]
    if missing:
        exp = ", ".join(f"'{c}' ({required[c]})" for c in missing)
        raise DataError(f"{path}: missing column(s) {exp}")
    for col, kind in {**required, **(optional or {})}.items():
        if col in schema and not _kind_ok(schema[col], kind):
            raise DataError(f"{path}: column '{col}' has dtype {schema[col]}, expected {kind}")
    return schema
