"""The classical CF baseline: `implicit`'s alternating least squares on the clicks known before a split.

Training clicks for split S: S's history.parquet (it precedes S) and, when S is not train, train's
history.parquet and train's log clicks (train precedes validation and test). One matrix cell per distinct
(user, article), its value the number of clicks (implicit's confidence). The model is fitted once, before S,
so it is past-only by construction; it cannot know articles first clicked during S.

Unknown users or articles (not in the training matrix) score 0, the value of "no evidence": ALS dot
products of known pairs spread on both sides of it. Fresh articles are mostly unknown, which is what
limits ALS on news; the report says how many candidates were known.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mtnews.cf.clicks import history_clicks, log_clicks
from mtnews.cf.params import CFParams
from mtnews.data.layout import SplitPaths, split_paths
from mtnews.errors import DataError


def als_training_clicks(data, paths: SplitPaths) -> pl.DataFrame:
    parts = [history_clicks(paths)]
    if paths.split != "train":
        train = split_paths(data, "train")
        parts += [history_clicks(train), log_clicks(train)]
    return pl.concat(parts)


class AlsModel:
    def __init__(self, user_ids: np.ndarray, article_ids: np.ndarray, user_factors: np.ndarray,
                 item_factors: np.ndarray):
        self.user_ids, self.article_ids = user_ids, article_ids  # sorted unique int64
        self.user_factors, self.item_factors = user_factors, item_factors

    @classmethod
    def fit(cls, clicks: pl.DataFrame, params: CFParams, source: str = "clicks") -> "AlsModel":
        """Fit on a frame of user_id, article_id (one row per click)."""
        from implicit.als import AlternatingLeastSquares
        from scipy.sparse import csr_matrix

        params = params.validate()
        if clicks.height == 0:
            raise DataError(f"{source}: no clicks to fit ALS on")
        cells = clicks.group_by("user_id", "article_id").len()
        users = np.unique(cells["user_id"].to_numpy())
        items = np.unique(cells["article_id"].to_numpy())
        u = np.searchsorted(users, cells["user_id"].to_numpy())
        i = np.searchsorted(items, cells["article_id"].to_numpy())
        matrix = csr_matrix((cells["len"].to_numpy().astype(np.float32), (u, i)), shape=(len(users), len(items)))
        from threadpoolctl import threadpool_limits

        # implicit parallelises over users itself; a threaded BLAS underneath it only contends (its own warning).
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(factors=params.factors, regularization=params.regularization,
                                            iterations=params.iterations, random_state=params.seed)
            model.fit(matrix, show_progress=False)
        return cls(users, items, np.asarray(model.user_factors), np.asarray(model.item_factors))

    def _pos(self, table: np.ndarray, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if len(table) == 0:
            return np.full(ids.shape, -1)
        pos = np.searchsorted(table, ids).clip(0, len(table) - 1)
        return np.where(table[pos] == ids, pos, -1)

    def user_rows(self, user_ids: np.ndarray) -> np.ndarray:
        return self._pos(self.user_ids, user_ids)

    def item_rows(self, article_ids: np.ndarray) -> np.ndarray:
        return self._pos(self.article_ids, article_ids)

    def score(self, user_ids: np.ndarray, article_ids: np.ndarray) -> np.ndarray:
        """Elementwise user · item for the pairs; 0 where either is unknown."""
        u, i = self.user_rows(user_ids), self.item_rows(article_ids)
        ok = (u >= 0) & (i >= 0)
        out = np.zeros(len(u))
        out[ok] = np.einsum("ij,ij->i", self.user_factors[u[ok]], self.item_factors[i[ok]])
        return out
