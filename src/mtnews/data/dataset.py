"""One split of an EBNeRD dataset, loaded and indexed: the entry point for training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from mtnews.data.articles import ArticleTable, load_articles
from mtnews.data.behaviors import read_behaviors
from mtnews.data.history import UserHistories, load_histories
from mtnews.data.impressions import EvalImpressions, build_eval_impressions
from mtnews.data.layout import SplitPaths, split_paths
from mtnews.data.samples import TrainSamples, build_train_samples


@dataclass
class Split:
    paths: SplitPaths
    articles: ArticleTable
    histories: UserHistories
    behaviors: pl.DataFrame

    def train_samples(self, npratio: int, seed: int) -> TrainSamples:
        return build_train_samples(self.behaviors, self.articles, self.histories, npratio, seed)

    def eval_impressions(self) -> EvalImpressions:
        return build_eval_impressions(self.behaviors, self.articles, self.histories, self.paths.behaviors)


def load_split(
    root: str | Path, split: str, history_size: int = 30, articles: ArticleTable | None = None,
    extra: tuple[str, ...] = (),
) -> Split:
    """Validate and load one split. Pass `articles` to share one article table across splits, and `extra`
    for optional behaviors columns to keep when present (e.g. `impression_time`)."""
    paths = split_paths(root, split)
    articles = articles if articles is not None else load_articles(paths.articles)
    histories = load_histories(paths.history, articles, history_size)
    return Split(paths, articles, histories, read_behaviors(paths, extra))
