"""`FreshIndex`: maximum-inner-product search over only the articles fresh at each query's time.

MTRec scores a candidate by the dot product of user and news vectors, so the index is faiss inner-product
search. The freshness filter is structural: articles are cut into shards by publication time
(`shard_hours` wide, aligned to the epoch), one faiss index each. A query's window [t - max_age, t)
covers some shards whole, searched with the ANN index, and cuts at most two (the oldest and the newest it
touches); the rows of the cut shards inside the window are scored exactly, from the shards' own stored
vectors (`pool.dense_topk`, the same brute force that checks the index). Shards smaller than
`exact_below` hold no graph at all and are scored exactly with the cut rows. Queries are grouped by the
graph shards they cover, so a batch costs one faiss call per (group, graph shard) and one brute force per
group, never one call per query. Why shards and not one index with a per-query id selector: faiss applies
one selector to a whole batch, and HNSW with a selective filter loses recall (docs/performance.md
measures both).

Read articles: each whole-shard search asks for k plus the most rows any query of the group has excluded
in that shard, so after dropping them at least k remain (up to the ANN's own misses).

Expired articles: `evict(before_us)` drops the shards that ended before it; rows of the oldest kept shard
that are too old simply fall outside every window. `save` writes index.json, rows.parquet and one faiss
file per shard; `load` reads them back without rebuilding any graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtnews.errors import CheckpointError, ConfigError
from mtnews.io import atomic_dir
from mtnews.retrieval.params import IndexParams
from mtnews.retrieval.pool import Exclusions, PoolTable, dense_topk, top_k

INDEX_FORMAT = 1
INDEX_JSON = "index.json"
ROWS = "rows.parquet"


def _faiss():
    import faiss

    return faiss


def _build_shard(vectors: np.ndarray, params: IndexParams):
    faiss = _faiss()
    d = vectors.shape[1]
    if params.kind == "flat" or len(vectors) < params.exact_below:
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params.ef_construction
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _stored_vectors(index) -> np.ndarray:
    """A read-only numpy view of the vectors a flat or HNSW-flat index holds (no copy: one copy in memory)."""
    faiss = _faiss()
    flat = faiss.downcast_index(index.storage) if hasattr(index, "storage") else index
    n, d = flat.ntotal, flat.d
    if n == 0:
        return np.zeros((0, d), dtype=np.float32)
    view = faiss.rev_swig_ptr(flat.get_xb(), n * d).reshape(n, d)
    view.flags.writeable = False
    return view


@dataclass
class Shard:
    number: int  # publication time // shard_us
    start: int  # first row
    index: object  # faiss index over rows [start, start + ntotal), local id = row - start

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def vectors(self) -> np.ndarray:
        return _stored_vectors(self.index)


class FreshIndex:
    """Article rows (`pool`), their shards, and the run fingerprint the vectors came from."""

    def __init__(self, pool: PoolTable, shards: list[Shard], params: IndexParams, dim: int, fingerprint: str):
        self.pool = pool
        self.shards = shards
        self.params = params
        self.dim = dim
        self.fingerprint = fingerprint
        self._bounds = np.array([s.start for s in shards] + [len(pool)], dtype=np.int64)
        self._views = [s.vectors() for s in shards]
        self._graphs = np.array([i for i, s in enumerate(shards) if hasattr(s.index, "hnsw")], dtype=np.int64)

    # --- building -----------------------------------------------------------------------------------
    @classmethod
    def build(cls, article_ids: np.ndarray, published_us: np.ndarray, vectors: np.ndarray, params: IndexParams,
              fingerprint: str = "") -> "FreshIndex":
        """Index `vectors` [n, D] of articles with publication times (0 = none: left out, never fresh)."""
        params = params.validate()
        vectors = np.asarray(vectors, dtype=np.float32)
        pool, order = PoolTable.from_articles(article_ids, published_us)
        number = pool.published_us // params.shard_us
        starts = np.flatnonzero(np.r_[True, np.diff(number) != 0]) if len(pool) else np.zeros(0, dtype=np.int64)
        ends = np.r_[starts[1:], len(pool)]
        shards = []
        for a, b in zip(starts.tolist(), ends.tolist()):
            shards.append(Shard(int(number[a]), a, _build_shard(vectors[order[a:b]], params)))
        return cls(pool, shards, params, vectors.shape[1], fingerprint)

    def __len__(self) -> int:
        return len(self.pool)

    def describe(self) -> str:
        return (f"{len(self)} articles in {len(self.shards)} shards of {self.params.shard_hours:g} h "
                f"({self.params.kind}, {self.dim}-dim)")

    def vectors_of(self, a: int, b: int) -> np.ndarray:
        """The vectors of rows [a, b) as one array (a copy only when the range spans shards)."""
        if b <= a:
            return np.zeros((0, self.dim), dtype=np.float32)
        i, j = int(np.searchsorted(self._bounds, a, "right") - 1), int(np.searchsorted(self._bounds, b - 1, "right") - 1)
        parts = [self._views[s][max(a, self._bounds[s]) - self._bounds[s] : min(b, self._bounds[s + 1]) - self._bounds[s]]
                 for s in range(i, j + 1)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    # --- lifecycle ----------------------------------------------------------------------------------
    def evict(self, before_us: int) -> int:
        """Drop every shard that ended before `before_us`; returns how many articles went."""
        keep = [s for s in self.shards if (s.number + 1) * self.params.shard_us > before_us]
        gone = keep[0].start if keep else len(self.pool)
        if gone == 0:
            return 0
        shards = [Shard(s.number, s.start - gone, s.index) for s in keep]
        self.__init__(self.pool.drop_first(gone), shards, self.params, self.dim, self.fingerprint)
        return gone

    def add(self, article_ids: np.ndarray, published_us: np.ndarray, vectors: np.ndarray) -> int:
        """Index more articles (e.g. ones a server is sent at run time); returns how many were new.

        Ids already indexed and articles without a publication time (0) are skipped. Rows stay in
        publication order, so only the shards that gain articles are rebuilt; the others keep their
        faiss index as is (their rows only shift).
        """
        ids = np.asarray(article_ids, dtype=np.int64)
        pub = np.asarray(published_us, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        _, first = np.unique(ids, return_index=True)
        fresh = np.zeros(len(ids), dtype=bool)
        fresh[first] = True
        fresh &= (self.pool.rows(ids) < 0) & (pub != 0)
        if fresh.any():
            self._rebuild(np.ones(len(self.pool), dtype=bool), ids[fresh], pub[fresh], vectors[fresh])
        return int(fresh.sum())

    def remove(self, article_ids: np.ndarray) -> int:
        """Drop these articles (ids not indexed are ignored); only the shards that lose rows are rebuilt."""
        rows = self.pool.rows(np.asarray(article_ids, dtype=np.int64))
        rows = np.unique(rows[rows >= 0])
        if len(rows):
            keep = np.ones(len(self.pool), dtype=bool)
            keep[rows] = False
            self._rebuild(keep, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                          np.zeros((0, self.dim), dtype=np.float32))
        return int(len(rows))

    def _rebuild(self, keep: np.ndarray, ids: np.ndarray, pub: np.ndarray, vectors: np.ndarray) -> None:
        """The index of the kept rows plus new ones, rebuilding only the shards whose rows change."""
        shard_us = self.params.shard_us
        old_number = self.pool.published_us // shard_us
        touched = set((pub // shard_us).tolist()) | set(old_number[~keep].tolist())
        old = {s.number: (s, self._views[i]) for i, s in enumerate(self.shards)}
        kept = np.flatnonzero(keep)
        all_ids = np.concatenate([self.pool.article_ids[kept], ids])
        pool, order = PoolTable.from_articles(all_ids, np.concatenate([self.pool.published_us[kept], pub]))
        src_all = np.full(len(order), -1, dtype=np.int64)  # each new row's old row, or -1 for an added article
        was = order < len(kept)
        src_all[was] = kept[order[was]]
        number = pool.published_us // shard_us
        starts = np.flatnonzero(np.r_[True, np.diff(number) != 0]) if len(pool) else np.zeros(0, dtype=np.int64)
        ends = np.r_[starts[1:], len(pool)]
        shards = []
        for a, b in zip(starts.tolist(), ends.tolist()):
            n = int(number[a])
            if n in touched:
                # Old rows' vectors come from their shard's stored copy; new ones from `vectors`.
                src = src_all[a:b]
                is_new = src < 0
                rows = np.empty((b - a, self.dim), dtype=np.float32)
                rows[is_new] = vectors[order[a:b][is_new] - len(kept)]
                if (~is_new).any():
                    prev_shard, prev_view = old[n]
                    rows[~is_new] = prev_view[src[~is_new] - prev_shard.start]
                shards.append(Shard(n, a, _build_shard(rows, self.params)))
            else:
                shards.append(Shard(n, a, old[n][0].index))
        self.__init__(pool, shards, self.params, self.dim, self.fingerprint)

    def save(self, folder: str | Path) -> None:
        """Write the index folder atomically: index.json, rows.parquet and shard-<number>.faiss files."""
        faiss = _faiss()
        folder = Path(folder)
        meta = {"format": INDEX_FORMAT, "fingerprint": self.fingerprint, "dim": self.dim, "params": self.params.to_dict(),
                "articles": len(self.pool),
                "shards": [{"number": s.number, "start": s.start, "size": s.size, "file": f"shard-{s.number}.faiss"}
                           for s in self.shards]}
        with atomic_dir(folder) as tmp:
            pl.DataFrame({"article_id": self.pool.article_ids, "published_us": self.pool.published_us}).write_parquet(tmp / ROWS)
            for s, m in zip(self.shards, meta["shards"]):
                faiss.write_index(s.index, str(tmp / m["file"]))
            (tmp / INDEX_JSON).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: str | Path, fingerprint: str | None = None) -> "FreshIndex":
        """Read a saved index; with `fingerprint`, it must have been built from that run's vectors."""
        faiss = _faiss()
        folder = Path(folder)
        path = folder / INDEX_JSON
        if not path.is_file():
            raise CheckpointError(f"{folder}: not a retrieval index (no {INDEX_JSON}); write one with `mtnews embed`")
        try:
            meta = json.loads(path.read_text())
            if meta["format"] != INDEX_FORMAT:
                raise CheckpointError(f"{path}: index format {meta['format']}, this mtnews reads format {INDEX_FORMAT}")
            params = IndexParams.from_dict(meta["params"])
            rows = pl.read_parquet(folder / ROWS)
            pool = PoolTable(rows["article_id"].cast(pl.Int64).to_numpy(), rows["published_us"].cast(pl.Int64).to_numpy())
            shards = []
            for m in meta["shards"]:
                index = faiss.read_index(str(folder / m["file"]))
                if index.ntotal != m["size"] or index.d != meta["dim"]:
                    raise CheckpointError(f"{folder / m['file']}: holds {index.ntotal} vectors of {index.d} dims, "
                                          f"{INDEX_JSON} says {m['size']} of {meta['dim']}")
                shards.append(Shard(int(m["number"]), int(m["start"]), index))
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, ConfigError, pl.exceptions.PolarsError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"{folder}: unreadable retrieval index ({type(e).__name__}: {first})") from None
        if sum(s.size for s in shards) != len(pool) or any(
                a.start + a.size != b.start for a, b in zip(shards, shards[1:])):
            raise CheckpointError(f"{folder}: shards do not tile the {len(pool)} rows of {ROWS}")
        if fingerprint is not None and meta["fingerprint"] != fingerprint:
            raise CheckpointError(f"{path}: built from run fingerprint {meta['fingerprint'][:12]}..., this run's is "
                                  f"{fingerprint[:12]}...; rebuild it with `mtnews embed`")
        return cls(pool, shards, params, int(meta["dim"]), meta["fingerprint"])

    # --- search -------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, times_us: np.ndarray, max_age_us: int, k: int,
               exclude: Exclusions | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores [q, k], rows [q, k]) of each query's best fresh articles, best first; -1 rows pad short pools.

        `exclude` pairs are (query position, row). Rows map to ids with `pool.article_ids`.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(queries)
        out_s = np.full((n, k), -np.inf)
        out_r = np.full((n, k), -1, dtype=np.int64)
        if n == 0 or len(self.pool) == 0:
            return out_s, out_r
        exclude = exclude if exclude is not None else Exclusions.none()
        lo, hi = self.pool.windows(times_us, max_age_us)
        bounds = self._bounds
        first = np.searchsorted(bounds, lo, side="left")  # first shard starting at or after lo
        last = np.searchsorted(bounds, hi, side="right") - 1  # shards first..last-1 lie wholly in the window
        # Only graph shards are searched as shards; every other row of a window (cut shards, small exact
        # shards) is scored by one brute force over the rest of the window. Queries are grouped by the
        # graph shards they cover: with none (the usual fresh pool), all queries form one group.
        a = np.searchsorted(self._graphs, first)
        b = np.maximum(a, np.searchsorted(self._graphs, last))
        keys, group = np.unique(np.stack([a, b], 1), axis=0, return_inverse=True)
        group = group.ravel()
        for g, (ga, gb) in enumerate(keys.tolist()):
            qs = np.flatnonzero(group == g)
            qs = qs[hi[qs] > lo[qs]]
            if len(qs) == 0:
                continue
            inside = self._graphs[ga:gb].tolist()
            parts = [self._search_shard(j, queries, qs, k, exclude) for j in inside]
            edges = [int(lo[qs].min())] + [int(x) for j in inside for x in (bounds[j], bounds[j + 1])] + [int(hi[qs].max())]
            for x, y in zip(edges[::2], edges[1::2]):
                parts.append(self._exact(queries, qs, lo, hi, x, y, k, exclude))
            scores = np.concatenate([p[0] for p in parts], 1)
            rows = np.concatenate([p[1] for p in parts], 1)
            scores = np.where(exclude.contains(qs[:, None], rows), -np.inf, scores)
            out_s[qs], out_r[qs] = top_k(scores, rows, k)
        return out_s, out_r

    def retrieve(self, user_vectors: np.ndarray, now_us: np.ndarray | int, max_age_us: int, k: int,
                 read_ids: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Serving's call: (article ids [q, k], -1 padded; scores) for users at `now_us`, each user's
        `read_ids` (any iterable of article ids, one per user) left out."""
        user_vectors = np.atleast_2d(np.asarray(user_vectors, dtype=np.float32))
        times = np.broadcast_to(np.asarray(now_us, dtype=np.int64), (len(user_vectors),))
        exclude = None
        if read_ids is not None:
            lists = [np.asarray(list(r), dtype=np.int64) for r in read_ids]
            owner = np.repeat(np.arange(len(lists)), [len(r) for r in lists])
            flat = np.concatenate(lists) if lists else np.zeros(0, dtype=np.int64)
            exclude = Exclusions.from_pairs(owner, self.pool.rows(flat))
        scores, rows = self.search(user_vectors, times, max_age_us, k, exclude)
        if len(self.pool) == 0:  # an empty index (everything removed): no row to look an id up for
            return np.full(rows.shape, -1, dtype=np.int64), scores
        return np.where(rows >= 0, self.pool.article_ids[np.maximum(rows, 0)], -1), scores

    def _search_shard(self, j: int, queries: np.ndarray, qs: np.ndarray, k: int, exclude: Exclusions):
        faiss = _faiss()
        shard = self.shards[j]
        a, b = int(self._bounds[j]), int(self._bounds[j + 1])
        extra = int(exclude.count(qs, np.full(len(qs), a), np.full(len(qs), b)).max()) if len(exclude.keys) else 0
        kk = min(k + extra, shard.size)
        if hasattr(shard.index, "hnsw"):
            params = faiss.SearchParametersHNSW(efSearch=max(self.params.ef_search, kk))
            dist, local = shard.index.search(queries[qs], kk, params=params)
        else:
            dist, local = shard.index.search(queries[qs], kk)
        rows = np.where(local >= 0, local + a, -1)
        return np.where(local >= 0, dist.astype(np.float64), -np.inf), rows

    def _exact(self, queries: np.ndarray, qs: np.ndarray, lo: np.ndarray, hi: np.ndarray, a: int, b: int,
               k: int, exclude: Exclusions):
        """Exact top k of rows [a, b) for queries `qs`, each within its own window.

        Shard by shard, on views of each shard's stored vectors (a range spanning shards is never copied),
        and only for the queries whose window reaches into that shard; a running top k merges them.
        """
        best_s = np.full((len(qs), k), -np.inf)
        best_r = np.full((len(qs), k), -1, dtype=np.int64)
        bounds = self._bounds
        j = int(np.searchsorted(bounds, a, side="right") - 1)
        while b > a and j < len(self.shards) and bounds[j] < b:
            x, y, base, view = max(a, int(bounds[j])), min(b, int(bounds[j + 1])), int(bounds[j]), self._views[j]
            lq, hq = np.clip(lo[qs], x, y), np.clip(hi[qs], x, y)
            sub = np.flatnonzero(hq > lq)
            if len(sub):
                s, r = dense_topk(lambda q, u, v: queries[q] @ view[u - base : v - base].T, lq[sub], hq[sub], k,
                                  exclude, ids=qs[sub])
                best_s[sub], best_r[sub] = top_k(np.concatenate([best_s[sub], s], 1),
                                                 np.concatenate([best_r[sub], r], 1), k)
            j += 1
        return best_s, best_r
