"""`mtnews retrieve`: every impression of a split as a whole-pool retrieval query.

For an impression of user u at time t the pool is every article published in [t - max_age, t) that u's
history.parquet does not list; the scorer retrieves the top k of it, and the metrics (`metrics`) compare
them with the impression's clicks. This is not the in-view re-rank of `mtnews evaluate`: the in-view list
is ignored.

Scorers: `model` searches the run's `FreshIndex` (built in memory, or loaded from `mtnews embed`'s DIR/index)
with the user vectors `Recommender` computes, and also runs the exact brute force over the same pools to
report how much of it the ANN recovers and the queries per second of both; `newest` and `popular-fresh`
(`baselines`) search the same pools exactly, and so do the CF scorers `cf-user`, `cf-als` and `mtrec+cf`
(`mtnews.cf.pool`).

Memory: behaviors stream in chunks; what lives for the whole split is the article vectors and index, the
history matrix, and each user's read articles that are still fresh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtnews.cf.params import CFParams
from mtnews.cf.pool import PoolCF
from mtnews.data import schema
from mtnews.data.articles import FIRST
from mtnews.data.behaviors import behavior_batches, behavior_columns
from mtnews.data.history import read_history
from mtnews.data.layout import SplitPaths, split_paths
from mtnews.errors import ConfigError, DataError
from mtnews.evaluate.streaming import release_memory
from mtnews.retrieval.baselines import NewestScorer, PopularFreshScorer
from mtnews.retrieval.index import FreshIndex
from mtnews.retrieval.metrics import RetrievalAccumulator, report_ks
from mtnews.retrieval.params import IndexParams
from mtnews.retrieval.pool import Exclusions, PoolTable, dense_topk

SCORERS = ("model", "popular-fresh", "newest", "cf-user", "cf-als", "mtrec+cf")
NEEDS_RUN = ("model", "cf-user", "mtrec+cf")
HOUR_US = 3_600_000_000


@dataclass
class ReadSets:
    """Each history user's read articles as pool rows (CSR over the sorted user ids), and their click counts."""

    user_ids: np.ndarray  # int64, sorted
    offsets: np.ndarray  # int64 [U + 1]
    rows: np.ndarray  # int32, pool rows (articles outside the pool are left out)
    lengths: np.ndarray  # int64 [U]: non-null clicks in history.parquet

    @classmethod
    def from_history(cls, path: Path, pool: PoolTable, block: int = 1 << 17) -> "ReadSets":
        """Built `block` users at a time, so the exploded clicks of 1M users never exist at once."""
        df = read_history(path).select(pl.col("user_id").cast(pl.Int64),
                                       pl.col("article_id_fixed").cast(pl.List(pl.Int64)).list.drop_nulls()).sort("user_id")
        lengths = df["article_id_fixed"].list.len().fill_null(0).to_numpy().astype(np.int64)
        counts = np.zeros(len(lengths), dtype=np.int64)
        kept = []
        for s in range(0, df.height, block):
            rows = pool.rows(df["article_id_fixed"][s : s + block].explode().drop_nulls().to_numpy())
            keep = rows >= 0
            counts[s : s + block] = np.bincount(np.repeat(np.arange(len(lengths[s : s + block])), lengths[s : s + block])[keep],
                                                minlength=len(lengths[s : s + block]))
            kept.append(rows[keep].astype(np.int32))  # pool rows fit int32; keeps the fresh reads small
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        rows = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int32)
        return cls(df["user_id"].to_numpy(), offsets, rows, lengths)

    def positions(self, user_ids: np.ndarray) -> np.ndarray:
        """Index into user_ids, -1 for users without a history."""
        if len(self.user_ids) == 0:
            return np.full(len(user_ids), -1, dtype=np.int64)
        pos = np.searchsorted(self.user_ids, user_ids).clip(0, len(self.user_ids) - 1)
        return np.where(self.user_ids[pos] == user_ids, pos, -1)

    def exclusions(self, user_ids: np.ndarray) -> tuple[Exclusions, np.ndarray]:
        """(Exclusions keyed by query position, history length per query) for one block of impressions."""
        pos = self.positions(np.asarray(user_ids, dtype=np.int64))
        has = pos >= 0
        start = np.where(has, self.offsets[np.maximum(pos, 0)], 0)
        n = np.where(has, self.offsets[np.maximum(pos, 0) + 1] - start, 0)
        query = np.repeat(np.arange(len(pos)), n)
        at = np.repeat(start - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
        return Exclusions.from_pairs(query, self.rows[at]), np.where(has, self.lengths[np.maximum(pos, 0)], 0)


def _check(k: int, max_age_hours: float, scorer: str, run) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ConfigError(f"--k must be a positive integer, got {k!r}")
    if not max_age_hours > 0:
        raise ConfigError(f"--max-age-hours must be > 0, got {max_age_hours}")
    if scorer not in SCORERS:
        raise ConfigError(f"unknown scorer '{scorer}', expected one of {', '.join(SCORERS)}")
    if scorer in NEEDS_RUN and run is None:
        raise ConfigError(f"--scorer {scorer} needs --run (a trained run directory)")
    if scorer not in NEEDS_RUN and run is not None:
        raise ConfigError(f"--scorer {scorer} takes no --run")


def _timed_columns(paths: SplitPaths) -> list[str]:
    if not paths.labelled:
        raise ConfigError("the test split has no clicks to retrieve against; use train or validation")
    cols = behavior_columns(paths)
    schema.validate(paths.behaviors, {"impression_time": schema.DATETIME})
    nulls, = schema.aggregate(paths.behaviors, pl.col("impression_time").null_count())
    if nulls:
        raise DataError(f"{paths.behaviors}: column 'impression_time' has {nulls} null values, expected a time for "
                        f"every impression (each one's fresh pool depends on it)")
    check_published(paths.articles)
    return cols + ["impression_time"]


def check_published(path: Path) -> None:
    """articles.parquet has publication times, and not all null (before anything is loaded or encoded)."""
    try:
        schema.validate(path, {"published_time": schema.DATETIME})
    except DataError as e:
        raise DataError(f"{e}; fresh pools need publication times") from None
    n, nulls = schema.aggregate(path, pl.len(), pl.col("published_time").null_count())
    if n == nulls:
        raise DataError(f"{path}: column 'published_time' is null for every article, so every pool is empty")


def _published(articles, path: Path) -> np.ndarray:
    if articles.published_us is None:
        raise DataError(f"{path}: missing column 'published_time' (datetime); fresh pools need publication times")
    published = articles.published_us[FIRST:]
    if not (published != 0).any():
        raise DataError(f"{path}: column 'published_time' is null for every article, so every pool is empty")
    return published


def _check_some_pool(paths: SplitPaths, pool: PoolTable, max_age_us: int, max_age_hours: float) -> None:
    """Fail before any work (or progress bar) when no impression has a single fresh article."""
    for batch in behavior_batches(paths, ["impression_time"], 1 << 20):
        t = batch.column(0).cast("timestamp[us]").cast("int64").to_numpy()
        lo, hi = pool.windows(t, max_age_us)
        if (hi > lo).any():
            return
    raise DataError(f"{paths.articles}: no article was published in the {max_age_hours:g} hours before any impression "
                    f"of {paths.behaviors}, so every pool is empty")


def retrieve_split(data: str | Path, split: str = "validation", *, run: str | Path | None = None,
                   scorer: str = "model", k: int = 100, max_age_hours: float = 72.0,
                   params: IndexParams = IndexParams(), index_dir: str | Path | None = None, chunk: int = 50_000,
                   exact_check: bool = True, device: str = "auto", progress: bool = False,
                   cf: CFParams | None = None) -> dict:
    """Whole-pool retrieval metrics of one scorer over a split (see the module docstring); `cf` sets the
    parameters of the CF scorers (`mtnews.cf.pool`)."""
    _check(k, max_age_hours, scorer, run)
    cf = (cf or CFParams()).validate()
    if chunk <= 0:
        raise ConfigError(f"--chunk must be a positive integer, got {chunk}")
    params = params.validate()
    paths = split_paths(data, split)
    cols = _timed_columns(paths)
    max_age_us = int(round(max_age_hours * HOUR_US))
    first_time, = schema.aggregate(paths.behaviors, pl.col("impression_time").cast(pl.Datetime("us")).cast(pl.Int64).min())

    result: dict = {"scorer": scorer, "split": split, "k": k, "max_age_hours": max_age_hours}
    index = rec = baseline = pool_cf = None
    if scorer == "model":
        from mtnews.recommender import Recommender

        rec = Recommender.from_run(run, data, split, device=device, cache_size=0, index=False, seed_signals=False)
        published = _published(rec.articles, paths.articles)
        fingerprint = rec.run.fingerprint()
        start = time.perf_counter()
        if index_dir is not None:
            index = FreshIndex.load(index_dir, fingerprint)
            if index.dim != rec.dim:
                raise DataError(f"{index_dir}: {index.dim}-dim vectors, the run's are {rec.dim}-dim")
        else:
            index = FreshIndex.build(rec.articles.article_ids[FIRST:], published, rec.vectors.vectors[FIRST:].cpu().numpy(),
                                     params, fingerprint)
        result["index_seconds"] = time.perf_counter() - start
        result["index_loaded"] = index_dir is not None
        # No pool of this split reaches further back than its first impression's.
        result["evicted"] = index.evict(first_time - max_age_us)
        result["index"] = {"articles": len(index), "shards": len(index.shards), **index.params.to_dict()}
        result["fingerprint"] = fingerprint
        pool = index.pool
    else:
        from mtnews.data.articles import load_articles

        articles = load_articles(paths.articles)
        pool, _ = PoolTable.from_articles(articles.article_ids[FIRST:], _published(articles, paths.articles))
        if scorer in ("cf-user", "cf-als", "mtrec+cf"):
            from mtnews.model.run import load_run
            from mtnews.model.scoring import resolve_device

            loaded = load_run(run, device=resolve_device(device)) if run is not None else None
            pool_cf = PoolCF.build(scorer, data, paths, pool, cf, loaded)
            result["cf"] = {"params": cf.to_dict(), **pool_cf.describe()}
        else:
            baseline = NewestScorer() if scorer == "newest" else PopularFreshScorer.from_split(paths, pool)
    _check_some_pool(paths, pool, max_age_us, max_age_hours)
    reads = ReadSets.from_history(paths.history, pool)

    ks = report_ks(k)
    acc = RetrievalAccumulator(ks)
    agree = np.zeros(len(ks))
    timing = {"ann": 0.0, "exact": 0.0}
    impressions = 0
    from tqdm.auto import tqdm

    bar = tqdm(total=schema.aggregate(paths.behaviors, pl.len())[0], disable=not progress, desc=f"retrieve {split}",
               unit="imp")
    for batch in behavior_batches(paths, cols, chunk):
        df = pl.from_arrow(batch).select(
            pl.col("user_id").cast(pl.Int64), pl.col("impression_time").cast(pl.Datetime("us")).cast(pl.Int64),
            pl.col("article_ids_clicked").cast(pl.List(pl.Int64)).list.drop_nulls().list.unique())
        impressions += df.height
        bar.update(df.height)
        n_clicked = df["article_ids_clicked"].list.len().fill_null(0).to_numpy().astype(np.int64)
        times = df["impression_time"].to_numpy()
        lo, hi = pool.windows(times, max_age_us)
        excl, hist_len = reads.exclusions(df["user_id"].to_numpy())
        sizes = hi - lo - excl.count(np.arange(df.height), lo, hi)
        has_click, has_pool = n_clicked > 0, sizes > 0
        acc.skip(empty_pool=int((has_click & ~has_pool).sum()), no_click=int((~has_click).sum()))
        keep = np.flatnonzero(has_click & has_pool)
        if len(keep) == 0:
            continue
        # Re-key everything to the kept impressions' positions 0..len(keep)-1.
        sub = df[keep]
        excl, _ = reads.exclusions(sub["user_id"].to_numpy())
        times, lo, hi = times[keep], lo[keep], hi[keep]
        clicked_ids = sub["article_ids_clicked"].explode().to_numpy()
        owner = np.repeat(np.arange(len(keep)), n_clicked[keep])
        crow = pool.rows(clicked_ids)
        in_pool = (crow >= lo[owner]) & (crow < hi[owner]) & ~excl.contains(owner, crow)
        clicked = Exclusions.from_pairs(owner[in_pool], crow[in_pool])  # a set of (query, row) pairs
        n_in_pool = np.bincount(owner[in_pool], minlength=len(keep))

        if scorer == "model":
            users = rec.vectors.users(rec.histories.matrix[rec.histories.rows(sub["user_id"].to_numpy())]).cpu().numpy()
            t0 = time.perf_counter()
            _, rows = index.search(users, times, max_age_us, k, excl)
            timing["ann"] += time.perf_counter() - t0
            if exact_check:
                t0 = time.perf_counter()
                _, exact = dense_topk(lambda q, a, b: users[q] @ index.vectors_of(a, b).T, lo, hi, k, excl)
                timing["exact"] += time.perf_counter() - t0
                agree += _overlap(rows, exact, ks)
        else:
            t0 = time.perf_counter()
            block = (pool_cf.for_batch(sub["user_id"].to_numpy(), times, lo, hi) if pool_cf is not None
                     else baseline.for_times(times))
            _, rows = dense_topk(block, lo, hi, k, excl)
            timing["exact"] += time.perf_counter() - t0
        hits = clicked.contains(np.arange(len(keep))[:, None], rows)
        acc.update(hits, n_clicked[keep], n_in_pool, sizes[keep], hist_len[keep])
        release_memory()
    bar.close()

    out = acc.result()
    if out["evaluated"] == 0:
        raise DataError(f"{paths.behaviors}: no impression has both a click and a non-empty pool of articles published "
                        f"in the {max_age_hours:g} hours before it ({out['skipped_empty_pool']} with an empty pool, "
                        f"{out['skipped_no_click']} without a click); nothing to evaluate")
    result.update(impressions=impressions, **out)
    n = out["evaluated"]
    if scorer == "model":
        result["qps_ann"] = n / timing["ann"] if timing["ann"] else None
        if exact_check:
            result["qps_exact"] = n / timing["exact"] if timing["exact"] else None
            result.update({f"ann_vs_exact@{K}": float(agree[i] / n) for i, K in enumerate(ks)})
    else:
        result["qps_exact"] = n / timing["exact"] if timing["exact"] else None
        if scorer == "popular-fresh":
            result["popularity_clicks"] = baseline.events
    return result


def _overlap(ann: np.ndarray, exact: np.ndarray, ks: list[int]) -> np.ndarray:
    """Summed over queries, per K: |ANN top K ∩ exact top K| / |exact top K| (exact top K is non-empty)."""
    q = np.arange(len(ann))[:, None]
    out = np.zeros(len(ks))
    for i, K in enumerate(ks):
        e = exact[:, :K]
        truth = Exclusions.from_pairs(np.broadcast_to(q, e.shape).ravel(), e.ravel())
        found = truth.contains(q, ann[:, :K]).sum(1)
        out[i] = (found / np.maximum((e >= 0).sum(1), 1)).sum()
    return out
