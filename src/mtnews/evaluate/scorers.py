"""Scorers for the full in-view lists: random, popularity, oracle, and a trained model.

Each takes a chunk of `EvalImpressions` and returns flat scores aligned with its candidates, so the
same streaming runner, metrics and submission writer serve every one of them.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mtnews.data.behaviors import read_behaviors
from mtnews.data.impressions import EvalImpressions
from mtnews.data.layout import SplitPaths, split_paths
from mtnews.data.oracle import load_oracle


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
        self.oracle = load_oracle(paths)  # validated against the split's behaviors before anything is scored
        self.path = self.oracle.path

    def score(self, imps: EvalImpressions) -> np.ndarray:
        return self.oracle.utilities(imps.impression_id, imps.offsets)
