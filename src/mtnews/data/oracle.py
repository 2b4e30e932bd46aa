"""`<split>/oracle.parquet` of a synthetic dataset: the generator's true utility of every in-view article.

Checked against the split's behaviors when loaded, so an oracle of another split, or one with missing,
repeated or non-finite rows, is one DataError before anything is scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtnews.data import schema
from mtnews.data.behaviors import behavior_columns
from mtnews.data.layout import SplitPaths
from mtnews.errors import DataError


@dataclass
class Oracle:
    path: Path
    ids: np.ndarray  # int64 [R], sorted and unique
    offsets: np.ndarray  # int64 [R+1] into `flat`
    flat: np.ndarray  # float64, every row's utilities in in-view order

    def utilities(self, impression_ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Flat utilities for impressions whose in-view lists have the CSR `offsets`, in the same order."""
        impression_ids = np.asarray(impression_ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, impression_ids).clip(0, max(len(self.ids) - 1, 0))
        found = self.ids[pos] == impression_ids if len(self.ids) else np.zeros(len(pos), dtype=bool)
        if not found.all():
            first = impression_ids[np.flatnonzero(~found)[0]]
            raise DataError(f"{self.path}: no oracle row for impression_id {first}, expected one per impression")
        n = np.diff(offsets)
        have = self.offsets[pos + 1] - self.offsets[pos]
        bad = np.flatnonzero(have != n)
        if len(bad):
            i = bad[0]
            raise DataError(f"{self.path}: column 'utility' is not aligned with article_ids_inview: impression_id "
                            f"{impression_ids[i]} has {have[i]} utilities, expected {n[i]} (one per in-view article)")
        start = np.repeat(self.offsets[pos], n)
        within = np.arange(int(n.sum())) - np.repeat(offsets[:-1], n)
        return self.flat[start + within]


def load_oracle(paths: SplitPaths) -> Oracle:
    path = paths.oracle
    if not path.exists():
        raise DataError(f"{path}: oracle file not found (only synthetic datasets from `mtnews data synth` have one)")
    schema.validate(path, schema.REQUIRED_ORACLE)
    df = schema.read_frame(path, ["impression_id", "utility"])
    if df["impression_id"].null_count():
        raise DataError(f"{path}: column 'impression_id' has null values, expected none")
    df = df.sort("impression_id")
    ids = df["impression_id"].cast(pl.Int64).to_numpy()
    repeated = np.flatnonzero(ids[1:] == ids[:-1])
    if len(repeated):
        raise DataError(f"{path}: column 'impression_id' repeats {len(repeated)} id(s) (first: {ids[repeated[0]]}), "
                        f"expected one row per impression")
    lengths = df["utility"].list.len().fill_null(0).to_numpy().astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # Exactly the list elements: an empty or null list contributes nothing, so `offsets` index `flat`.
    values = df["utility"].explode(empty_as_null=False, keep_nulls=False)
    nulls = df["utility"].null_count() + values.null_count()
    if nulls:
        raise DataError(f"{path}: column 'utility' has {nulls} null value(s), expected a number per in-view article")
    flat = values.cast(pl.Float64).to_numpy()
    finite = np.isfinite(flat)
    if not finite.all():
        raise DataError(f"{path}: column 'utility' has {int((~finite).sum())} nan or infinite value(s), "
                        f"expected finite numbers")
    _check_covers(path, ids, paths)
    return Oracle(path, ids, offsets, flat)


def _check_covers(path: Path, ids: np.ndarray, paths: SplitPaths) -> None:
    """Every impression of the split must have its row; an oracle of another split has none of them."""
    behavior_columns(paths)
    wanted = np.unique(schema.read_frame(paths.behaviors, ["impression_id"])["impression_id"].drop_nulls()
                       .cast(pl.Int64).to_numpy())
    missing = wanted[~np.isin(wanted, ids)]
    if len(missing) == len(wanted):
        raise DataError(f"{path}: impression ids do not match {paths.behaviors} (none of its {len(wanted)} "
                        f"impressions has an oracle row), expected the oracle of the '{paths.split}' split")
    if len(missing):
        raise DataError(f"{path}: {len(missing)} of the {len(wanted)} impressions in {paths.behaviors} have no "
                        f"oracle row (first: impression_id {missing[0]}), expected one row per impression")
