"""CF on the whole-pool task (`mtnews retrieve --scorer cf-user|cf-als|mtrec+cf`): score functions over pool rows.

Each `for_batch(user_ids, times_us, lo, hi)` returns a `retrieval.pool.ScoreBlock` (q positions, rows a..b-1 ->
[q, b - a] scores) that `dense_topk` searches exactly, like the retrieval baselines. cf-user scores a row by
the neighbours' decayed clicks before the impression (`UserCF.dense`, the in-view kernel's sparse table
scattered into the block); cf-als by user · item factors (0 for an article or user ALS never saw). Ties
(most fresh articles have no neighbour click yet) go to the newer article, through a tie-break below 1e-6:
a cf-user click on a fresh article (< 72 h old at the default half-life of 24 h) weighs at least 1/8.

mtrec+cf blends as the in-view blend does (`blend.zscore`), each query's z-scores taken over its own window
of rows [lo, hi), with the weight the in-view blend chose on the selection holdout (`scorers.fit_blend`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mtnews.cf.als import AlsModel, als_training_clicks
from mtnews.cf.blend import zscore
from mtnews.cf.params import CFParams
from mtnews.cf.scorers import UserCFScorer, fit_blend, run_vectors
from mtnews.data.history import load_histories
from mtnews.data.layout import SplitPaths
from mtnews.model.run import Run

TIE = 1e-6


class PoolCF:
    def __init__(self, kind: str, n_rows: int, rows_of_ids: Callable[[np.ndarray], np.ndarray], *, user=None,
                 histories=None, als: AlsModel | None = None, pool_ids: np.ndarray | None = None,
                 content=None, items: np.ndarray | None = None, blend: dict | None = None):
        self.kind, self.n_rows, self.rows_of_ids = kind, n_rows, rows_of_ids
        self.user, self.histories, self.als = user, histories, als
        self.content, self.blend = content, blend  # mtrec+cf: the run's ArticleVectors, the fitted blend
        if items is not None:
            self.items = items
        if als is not None:
            item = als.item_rows(pool_ids)
            self.items = np.where((item >= 0)[:, None], als.item_factors[np.maximum(item, 0)], 0.0)

    @classmethod
    def build(cls, kind: str, data, paths: SplitPaths, pool, params: CFParams, run: Run | None = None) -> "PoolCF":
        params = params.validate()
        if kind == "cf-als":
            model = AlsModel.fit(als_training_clicks(data, paths), params, str(paths.history))
            return cls(kind, len(pool), pool.rows, als=model, pool_ids=pool.article_ids)
        articles = run.load_dataset_articles(paths.articles)
        histories = load_histories(paths.history, articles, run.history_size)
        vectors = run_vectors(run, articles)
        user = UserCFScorer.for_split(vectors, paths, histories, params)
        if kind == "cf-user":
            return cls(kind, len(pool), pool.rows, user=user, histories=histories)
        items = vectors.vectors[articles.index(pool.article_ids)].cpu().numpy()
        return cls(kind, len(pool), pool.rows, user=user, histories=histories, content=vectors, items=items,
                   blend=fit_blend(run, data, params, paths, articles, vectors))

    def describe(self) -> dict:
        if self.blend is not None:
            return {"neighbour_users": len(self.user.neighbours), "clicks": len(self.user.cf.clicks),
                    "blend": self.blend}
        if self.als is not None:
            return {"als_users": len(self.als.user_ids), "als_articles": len(self.als.article_ids)}
        return {"neighbour_users": len(self.user.neighbours), "clicks": len(self.user.cf.clicks)}

    def for_batch(self, user_ids: np.ndarray, times_us: np.ndarray, lo: np.ndarray, hi: np.ndarray):
        if self.blend is not None:
            rows = self.histories.rows(user_ids)
            users = self.content.users(self.histories.matrix[rows]).cpu().numpy()
            neighbours = self.user.neighbours.of_rows(rows)
            w = self.blend["weight"]

            def score_block(q, a, b):
                inside = (np.arange(a, b)[None, :] >= lo[q, None]) & (np.arange(a, b)[None, :] < hi[q, None])
                offsets = np.concatenate([[0], np.cumsum(inside.sum(1))])
                cf = self.user.cf.dense(neighbours[q], times_us[q], self.rows_of_ids, a, b)
                out = np.full(inside.shape, -np.inf)  # rows outside a query's window are masked by dense_topk anyway
                out[inside] = (zscore((users[q] @ self.items[a:b].T)[inside], offsets)
                               + w * zscore(cf[inside], offsets))
                return out + self._tie(a, b)
        elif self.als is not None:
            u = self.als.user_rows(user_ids)
            users = np.where((u >= 0)[:, None], self.als.user_factors[np.maximum(u, 0)], 0.0)

            def score_block(q, a, b):
                return users[q] @ self.items[a:b].T + self._tie(a, b)
        else:
            neighbours = self.user.neighbours.of_rows(self.histories.rows(user_ids))

            def score_block(q, a, b):
                return self.user.cf.dense(neighbours[q], times_us[q], self.rows_of_ids, a, b) + self._tie(a, b)
        return score_block

    def _tie(self, a: int, b: int) -> np.ndarray:
        return TIE * (np.arange(a, b) + 1) / (self.n_rows + 2)
