"""The k nearest users of each user in user-embedding space: faiss, inner product (MTRec scores by dot).

Candidates are the users with a history (history.parquet rows with at least one known click): their
history precedes every impression of the split, so a neighbour always has history before the impression.
A user is never its own neighbour. Below `exact_below` users the index is exact (IndexFlatIP), above it
IndexHNSWFlat, the choice retrieval's article shards make.
"""

from __future__ import annotations

import numpy as np

from mtnews.cf.params import CFParams

QUERY_BLOCK = 65_536


class UserNeighbours:
    def __init__(self, rows: np.ndarray, vectors: np.ndarray, params: CFParams):
        """`rows`: the history rows of `vectors` [n, D] (the candidate neighbours)."""
        import faiss

        self.params = params.validate()
        self.rows = np.asarray(rows, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        d = vectors.shape[1]
        if len(vectors) < params.exact_below:
            self.index = faiss.IndexFlatIP(d)
        else:
            self.index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = max(params.ef_search, params.k + 1)
        self.index.add(vectors)
        n_rows = int(self.rows.max()) + 1 if len(self.rows) else 1
        self.position = np.full(n_rows, -1, dtype=np.int64)
        self.position[self.rows] = np.arange(len(self.rows))

    def __len__(self) -> int:
        return len(self.rows)

    def of_rows(self, query_rows: np.ndarray) -> np.ndarray:
        """Neighbours [q, k] of users given by history row (their own stored vectors as queries); a row
        without a vector (0, or a history whose clicks are all unknown) gets none."""
        query_rows = np.asarray(query_rows, dtype=np.int64)
        uniq, inv = np.unique(query_rows, return_inverse=True)
        pos = np.where(uniq < len(self.position), self.position[np.minimum(uniq, len(self.position) - 1)], -1)
        has = pos >= 0
        found = np.zeros((len(uniq), self.params.k), dtype=np.int64)
        if has.any():
            vectors = self.index.reconstruct_batch(pos[has])
            found[has] = self.search(vectors, uniq[has])
        return found[inv.ravel()]

    def search(self, queries: np.ndarray, query_rows: np.ndarray) -> np.ndarray:
        """History rows [q, k] of each query's k nearest users, best first, the query's own row left out;
        0 pads (fewer candidates than k, or a query without a vector: `query_rows` 0)."""
        k = self.params.k
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        query_rows = np.asarray(query_rows, dtype=np.int64)
        out = np.zeros((len(queries), k), dtype=np.int64)
        kk = min(k + 1, len(self.rows))
        if kk == 0:
            return out
        for s in range(0, len(queries), QUERY_BLOCK):
            _, local = self.index.search(queries[s : s + QUERY_BLOCK], kk)
            found = np.where(local >= 0, self.rows[np.maximum(local, 0)], 0)
            found[found == query_rows[s : s + QUERY_BLOCK, None]] = 0
            # Drop the self match (and pads) and keep the first k of what is left, order preserved.
            order = np.argsort(found == 0, axis=1, kind="stable")[:, :k]
            got = np.take_along_axis(found, order, 1)
            out[s : s + len(got), : got.shape[1]] = got
        out[query_rows == 0] = 0
        return out
