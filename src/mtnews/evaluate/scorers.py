"""Scorers for the full in-view lists: random, popularity, oracle, and a trained model.

Each takes a chunk of `EvalImpressions` and returns flat scores aligned with its candidates, so the
same streaming runner, metrics and submission writer serve every one of them.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mtnews.data import schema
from mtnews.data.behaviors import read_behaviors
from mtnews.data.impressions import EvalImpressions
from mtnews.data.layout import SplitPaths, split_paths
from mtnews.errors import DataError


class RandomScorer:
    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def score(self, imps: EvalImpressions) -> np.ndarray:
        return self.rng.random(len(imps.candidates))


class PopularityScorer:
    """Click counts from the *train* split only; counting the evaluated split would leak its labels."""

    name = "popularity"

    def __init__(self, root):
        paths = split_paths(root, "train")
        clicked = read_behaviors(paths)["article_ids_clicked"].explode().drop_nulls()
        counts = clicked.value_counts().sort(clicked.name)
        self.ids = counts[clicked.name].cast(pl.Int64).to_numpy()
        self.counts = counts["count"].cast(pl.Float64).to_numpy()

    def score(self, imps: EvalImpressions) -> np.ndarray:
        if len(self.ids) == 0:
            return np.zeros(len(imps.article_ids))
        pos = np.searchsorted(self.ids, imps.article_ids).clip(0, len(self.ids) - 1)
        return np.where(self.ids[pos] == imps.article_ids, self.counts[pos], 0.0)


class OracleScorer:
    """The generator's true utilities (`<split>/oracle.parquet`): the best achievable ranking."""

    name = "oracle"

    def __init__(self, paths: SplitPaths):
        path = paths.oracle
        if not path.exists():
            raise DataError(f"{path}: oracle file not found (only synthetic datasets from `mtnews data synth` have one)")
        schema.validate(path, {"impression_id": schema.INT})
        df = pl.read_parquet(path, columns=["impression_id", "utility"]).sort("impression_id")
        self.ids = df["impression_id"].cast(pl.Int64).to_numpy()
        lengths = df["utility"].list.len().fill_null(0).to_numpy()
        self.offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.flat = df["utility"].explode().cast(pl.Float64).to_numpy()
        self.path = path

    def score(self, imps: EvalImpressions) -> np.ndarray:
        pos = np.searchsorted(self.ids, imps.impression_id).clip(0, max(len(self.ids) - 1, 0))
        if len(self.ids) == 0 or not np.array_equal(self.ids[pos], imps.impression_id):
            raise DataError(f"{self.path}: some impressions of the split have no oracle row")
        n = np.diff(imps.offsets)
        if not np.array_equal(self.offsets[pos + 1] - self.offsets[pos], n):
            raise DataError(f"{self.path}: utility lists are not aligned with article_ids_inview")
        start = np.repeat(self.offsets[pos], n)
        within = np.arange(len(imps.candidates)) - np.repeat(imps.offsets[:-1], n)
        return self.flat[start + within]
