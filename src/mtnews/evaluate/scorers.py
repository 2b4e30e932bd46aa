"""Scorers for the full in-view lists: random, popularity, oracle, the time baselines, and a trained model.

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
from mtnews.data.signals import SignalOptions, SplitSignals


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


# The lowest finite score: an article without a published time ranks below every dated one.
UNDATED = -np.finfo(np.float64).max


class TimeScorer:
    """The time baselines, each one reading of `data.signals` (past-only unless `options.window` is "split").

    * `recency`: newest first, -age_h (articles without a published time last).
    * `trending`: the article's in-views in each trailing window, summed, so an in-view of the last hour
      counts once per window that holds it (with 1/6/24 h, three times; one 20 hours ago, once). In-views
      exist on every split, the unlabelled test split too, so it scores test as it scores validation;
      under `window="split"` the windows look both ways (the transductive baseline).
    * `ctr`: the Beta-smoothed click-through rate over the longest trailing window.

    Everything the split needs (its event index, impression times, published times) is built once; each
    chunk then costs its own candidates only.
    """

    NAMES = ("recency", "trending", "ctr")

    def __init__(self, name: str, paths: SplitPaths, options: SignalOptions | None = None):
        if name not in self.NAMES:
            raise ValueError(name)
        self.name = name
        self.signals = SplitSignals.load(paths.root, paths.split, options)
        o = self.signals.options
        if name == "recency":
            self.columns = ("age_h", "age_known")
        elif name == "trending":
            self.columns = tuple(f"inviews_{w}" for w in o.window_names)
        else:
            longest = o.window_names[int(np.argmax(o.windows_h))]
            self.columns = (f"ctr_{longest}",)
        self.undated = 0

    @property
    def description(self) -> dict:
        """What produced the numbers: the signal mode and options, and the splits whose events counted."""
        o = self.signals.options
        return {"window": o.window, "options": o.to_dict(), "sources": list(self.signals.sources)}

    def score(self, imps: EvalImpressions) -> np.ndarray:
        table = self.signals.for_impressions(imps, self.columns)
        if self.name == "recency":
            known = table["age_known"]
            self.undated += int((~known).sum())
            return np.where(known, -np.nan_to_num(table["age_h"]), UNDATED)
        return np.sum([table[c] for c in self.columns], axis=0)
