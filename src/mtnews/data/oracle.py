"""`<split>/oracle.parquet` of a synthetic dataset: the generator's true utility of every in-view article.

Checked against the split's behaviors when loaded, so an oracle of another split, or one with missing,
repeated, misaligned or non-finite rows, is one DataError before anything is scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtnews.data import schema
from mtnews.data.behaviors import behavior_batches, behavior_columns
from mtnews.data.layout import SplitPaths
from mtnews.errors import DataError

SCAN_ROWS = 1 << 17  # behaviors rows per record batch when matching the oracle to its split


@dataclass
class Oracle:
    paths: SplitPaths
    ids: np.ndarray  # int64 [R], sorted and unique
    offsets: np.ndarray  # int64 [R+1] into `flat`
    flat: np.ndarray  # float64, every row's utilities in in-view order

    @property
    def path(self) -> Path:
        return self.paths.oracle

    def rows(self, impression_ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """The oracle rows of the split's impressions, checking each exists and has `lengths` utilities."""
        ids = np.asarray(impression_ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids).clip(0, max(len(self.ids) - 1, 0))
        found = self.ids[pos] == ids if len(self.ids) else np.zeros(len(ids), dtype=bool)
        behaviors = self.paths.behaviors
        if len(ids) and not found.any():
            raise DataError(f"{self.path}: impression ids do not match {behaviors} (none of its impressions has an "
                            f"oracle row), expected the oracle of the '{self.paths.split}' split")
        if not found.all():
            missing = np.unique(ids[~found])
            raise DataError(f"{self.path}: {len(missing)} of the {len(np.unique(ids))} impressions in {behaviors} have "
                            f"no oracle row (first: impression_id {missing[0]}), expected one row per impression")
        have = self.offsets[pos + 1] - self.offsets[pos]
        bad = np.flatnonzero(have != lengths)
        if len(bad):
            i = bad[0]
            raise DataError(f"{self.path}: column 'utility' is not aligned with article_ids_inview of {behaviors}: "
                            f"impression_id {ids[i]} has {have[i]} utilities, expected {lengths[i]} (one per in-view "
                            f"article)")
        return pos

    def utilities(self, impression_ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Flat utilities for impressions whose in-view lists have the CSR `offsets`, in the same order."""
        n = np.diff(offsets)
        pos = self.rows(impression_ids, n)
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
    oracle = Oracle(paths, ids, offsets, flat)
    oracle.rows(*_split_lengths(paths))
    return oracle


def _split_lengths(paths: SplitPaths) -> tuple[np.ndarray, np.ndarray]:
    """Impression ids and in-view lengths (nulls dropped, as scored) of the split, two integers per row."""
    cols = [c for c in behavior_columns(paths) if c in ("impression_id", "article_ids_inview")]
    ids, lengths = [], []
    for batch in behavior_batches(paths, cols, SCAN_ROWS):
        df = pl.from_arrow(batch)
        ids.append(df["impression_id"].cast(pl.Int64).to_numpy())
        lengths.append(df["article_ids_inview"].list.drop_nulls().list.len().fill_null(0).to_numpy())
    return np.concatenate(ids), np.concatenate(lengths).astype(np.int64)
