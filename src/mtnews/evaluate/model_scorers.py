"""A trained run as a streaming scorer: encode every article the split needs once, then score chunks."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from mtnews.data.articles import ArticleTable
from mtnews.data.history import UserHistories
from mtnews.data.impressions import EvalImpressions
from mtnews.data.layout import SplitPaths
from mtnews.evaluate.model_scorer import encode_articles, score_impressions
from mtnews.model.build import load_run
from mtnews.model.tokens import tokenize_titles


def split_article_indices(paths: SplitPaths, articles: ArticleTable, histories: UserHistories) -> np.ndarray:
    """Every article index a split's impressions can touch: in-view lists and the users' histories."""
    df = pl.scan_parquet(paths.behaviors).select("user_id", "article_ids_inview")
    inview = df.select(pl.col("article_ids_inview").explode().drop_nulls().unique()).collect().to_series().to_numpy()
    users = df.select(pl.col("user_id").unique()).collect().to_series().cast(pl.Int64).to_numpy()
    rows = histories.rows(users)
    return np.unique(np.concatenate([articles.index(inview), histories.matrix[rows].ravel()]))


class ModelScorer:
    name = "model"

    def __init__(self, run_dir, paths: SplitPaths, articles: ArticleTable, histories: UserHistories,
                 device: str = "auto", batch_size: int = 256):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.model, self.cfg, tokenizer = load_run(run_dir, articles)
        self.model.to(self.device)
        if self.cfg.data.history_size != histories.history_size:
            raise ValueError("histories must be built with the run's data.history_size")
        self.histories = histories
        tokens = tokenize_titles(articles.titles, tokenizer, self.cfg.model.max_title_length)
        self.table = encode_articles(self.model, tokens, split_article_indices(paths, articles, histories),
                                     self.device, batch_size)

    def score(self, imps: EvalImpressions) -> np.ndarray:
        return score_impressions(self.model, self.table, self.histories, imps)
