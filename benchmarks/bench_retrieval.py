"""Benchmark: the retrieval index at 100k and 1M articles, and `mtnews embed` / `retrieve` memory at 1M users.

    .venv/bin/python benchmarks/bench_retrieval.py [--vectors DIR] [--sizes 100000,1000000]
        [--pool-sizes 30000,100000] [--users 100000,1000000 --run RUN --data D]

Vectors: with --vectors (a folder written by `mtnews embed`), article and user vectors are drawn from
Gaussians with the mean and covariance of that export's articles and users, so norms and directions look
like a trained model's (the demo run's MiniLM vectors: D=384, norm 8.47 +- 0.21). Without it, unit-norm
clustered vectors (D=384) stand in.

Sections (each prints a table and the load average):

1. catalogue: N articles published evenly over --days days, the default index (24 h shards; shards under
   `exact_below` are exact), queries at random times with a 72 h window. Build time, the index's memory
   (RSS growth while building), batched queries/s and single-query latency of the index and of the exact
   brute force (`pool.dense_topk`), and the index's recall@100 against it.
2. one pool: N articles in a single HNSW shard (every article fresh): the ANN case proper. Same columns.
   Also a single HNSW over a catalogue searched with a per-query faiss IDSelectorRange for the window
   (the alternative to time shards), at the first pool size.
3. users (with --run and --data): a dataset of U synthetic users (20 clicks each over the data's articles,
   one impression each), then `mtnews embed` and `mtnews retrieve --index` in child processes: wall time
   and peak RSS (GNU time), against the size of all user vectors at once (U x D x 4 bytes).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from benchcommon import load_average, python, run_child  # noqa: E402

from mtnews.retrieval.index import FreshIndex  # noqa: E402
from mtnews.retrieval.params import IndexParams  # noqa: E402
from mtnews.retrieval.pool import dense_topk  # noqa: E402

H = 3_600_000_000
K = 100


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(cmd: list[str], log: Path, env: dict) -> tuple[int, float, float]:
    """(exit status, wall s, peak RSS MiB) of `cmd` run under GNU time.

    Not wait4 from this process: a child forked from a process that already holds gigabytes inherits that
    high-water mark, so ru_maxrss would report this process's peak, not the command's.
    """
    peak = log.with_suffix(".rss")
    rc, wall, _ = run_child(["/usr/bin/time", "-f", "%M", "-o", str(peak), *cmd], log, env)
    return rc, wall, int(peak.read_text().split()[-1]) / 1024 if peak.exists() else float("nan")


def samplers(vectors: str | None, rng: np.random.Generator, d: int = 384):
    if vectors:
        import pyarrow.parquet as pq

        from mtnews.retrieval.export import column_vectors

        def fit(path):
            x = column_vectors(pq.read_table(path, columns=["vector"]).column("vector")).astype(np.float64)
            mu, cov = x.mean(0), np.cov(x.T) + 1e-6 * np.eye(x.shape[1])
            chol = np.linalg.cholesky(cov)
            return lambda n: np.concatenate([(mu + rng.normal(size=(min(n - s, 65536), len(mu))) @ chol.T)
                                             .astype(np.float32) for s in range(0, n, 65536)])

        return fit(Path(vectors) / "articles.parquet"), fit(Path(vectors) / "users.parquet")
    centres = rng.normal(size=(200, d))

    def draw(n):
        x = centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return (x * (1 + 0.025 * rng.normal(size=(n, 1)))).astype(np.float32)

    return draw, draw


def recall(ann: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(e[e >= 0])) / max(1, (e >= 0).sum()) for a, e in zip(ann, exact)]))


def measure(index: FreshIndex, queries: np.ndarray, times: np.ndarray, max_age_us: int, singles: int) -> dict:
    t0 = time.perf_counter()
    _, ann = index.search(queries, times, max_age_us, K)
    ann_s = time.perf_counter() - t0
    lo, hi = index.pool.windows(times, max_age_us)
    t0 = time.perf_counter()
    _, exact = dense_topk(lambda q, a, b: queries[q] @ index.vectors_of(a, b).T, lo, hi, K)
    exact_s = time.perf_counter() - t0
    lat = []
    for i in range(singles):
        t0 = time.perf_counter()
        index.search(queries[i : i + 1], times[i : i + 1], max_age_us, K)
        lat.append(time.perf_counter() - t0)
    return {"qps": len(queries) / ann_s, "exact_qps": len(queries) / exact_s, "p50_ms": 1000 * float(np.median(lat)),
            "recall": recall(ann, exact), "pool": float((hi - lo).mean())}


def build(ids, published, vectors, params) -> tuple[FreshIndex, float, float]:
    before = rss_mib()
    t0 = time.perf_counter()
    index = FreshIndex.build(ids, published, vectors, params)
    return index, time.perf_counter() - t0, rss_mib() - before


def catalogue(console, args, draw_a, draw_u, rng) -> None:
    table = Table("articles", "shards", "mean pool", "build s", "index MiB", "ANN q/s", "exact q/s", "p50 ms (1 query)",
                  "recall@100 vs exact", title=f"1. catalogue over {args.days} days, 24 h shards, 72 h pool")
    for n in args.sizes:
        vectors = draw_a(n)
        published = np.sort(rng.integers(1, args.days * 24 * H, n))
        index, secs, mib = build(np.arange(n), published, vectors, IndexParams())
        del vectors
        times = rng.integers(4 * 24 * H, args.days * 24 * H, args.queries)
        m = measure(index, draw_u(args.queries), times, 72 * H, args.singles)
        table.add_row(f"{n:,}", str(len(index.shards)), f"{m['pool']:,.0f}", f"{secs:.1f}", f"{mib:,.0f}",
                      f"{m['qps']:,.0f}", f"{m['exact_qps']:,.0f}", f"{m['p50_ms']:.2f}", f"{m['recall']:.4f}")
        console.print(f"  catalogue {n:,}: done, load {load_average()}")
        del index
    console.print(table)


def one_pool(console, args, draw_a, draw_u, rng) -> None:
    import faiss

    table = Table("articles", "build s", "index MiB", "ANN q/s", "exact q/s", "p50 ms (1 query)", "recall@100 vs exact",
                  title="2. one pool: every article fresh, one HNSW shard (M=32, efConstruction=200, efSearch=512)")
    params = IndexParams(exact_below=0, shard_hours=24.0 * 365 * 50)
    for n in args.pool_sizes:
        vectors = draw_a(n)
        published = np.full(n, 1, dtype=np.int64)
        index, secs, mib = build(np.arange(n), published, vectors, params)
        m = measure(index, draw_u(args.queries), np.full(args.queries, 2), 10, args.singles)
        table.add_row(f"{n:,}", f"{secs:.1f}", f"{mib:,.0f}", f"{m['qps']:,.0f}", f"{m['exact_qps']:,.0f}",
                      f"{m['p50_ms']:.2f}", f"{m['recall']:.4f}")
        console.print(f"  one pool {n:,}: done, load {load_average()}")
        if n == args.pool_sizes[0]:
            # The alternative to shards: the same graph over a catalogue, each query's window as an id range.
            published = np.sort(rng.integers(1, args.days * 24 * H, n))
            whole = FreshIndex.build(np.arange(n), published, vectors, params)
            q = draw_u(args.queries)
            times = rng.integers(4 * 24 * H, args.days * 24 * H, args.queries)
            lo, hi = whole.pool.windows(times, 72 * H)
            graph = whole.shards[0].index
            t0 = time.perf_counter()
            ann = np.full((len(q), K), -1)
            for i in range(len(q)):
                sel = faiss.IDSelectorRange(int(lo[i]), int(hi[i]))
                _, ann[i] = graph.search(q[i : i + 1], K, params=faiss.SearchParametersHNSW(efSearch=512, sel=sel))
            sel_s = time.perf_counter() - t0
            sharded = FreshIndex.build(np.arange(n), published, vectors, IndexParams())
            t0 = time.perf_counter()
            _, shard_ann = sharded.search(q, times, 72 * H, K)
            shard_s = time.perf_counter() - t0
            _, exact = dense_topk(lambda qq, a, b: q[qq] @ whole.vectors_of(a, b).T, lo, hi, K)
            console.print(f"  {n:,} articles over {args.days} days, 72 h pool (mean {(hi - lo).mean():.0f}): one HNSW + "
                          f"per-query IDSelectorRange {len(q) / sel_s:,.0f} q/s, recall@100 {recall(ann, exact):.4f}; "
                          f"the default index (24 h shards, exact below 50k) {len(q) / shard_s:,.0f} q/s, recall@100 {recall(shard_ann, exact):.4f}")
        del index, vectors
    console.print(table)


def users(console, args) -> None:
    import polars as pl

    from mtnews.data.schema import BEHAVIORS, HISTORY

    table = Table("users", "embed s", "embed peak MiB", "retrieve s", "retrieve peak MiB", "all user vectors MiB",
                  title="3. export and retrieval with many users (child processes, peak RSS from GNU time)")
    work = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}  # this checkout's mtnews
    try:
        arts = pl.read_parquet(Path(args.data) / "articles.parquet")
        ids = arts["article_id"].to_numpy()
        pub = arts["published_time"].cast(pl.Int64).to_numpy()
        t_end = int(pub.max())
        rng = np.random.default_rng(0)
        dim = None
        for u in args.users:
            root = work / f"u{u}"
            (root / "validation").mkdir(parents=True)
            shutil.copyfile(Path(args.data) / "articles.parquet", root / "articles.parquet")
            hist = pl.Series(rng.choice(ids, size=u * 20).astype(np.int32)).reshape((u, 20)).cast(pl.List(pl.Int32))
            pl.DataFrame({"user_id": pl.Series(np.arange(u, dtype=np.uint32)), "article_id_fixed": hist}).select(
                [pl.col(c) if c in ("user_id", "article_id_fixed") else pl.lit(None, HISTORY[c]).alias(c) for c in HISTORY]
            ).write_parquet(root / "validation" / "history.parquet")
            # One impression per user in the data's last 20 days, clicking the newest article published before it.
            times = rng.integers(t_end - 20 * 24 * H, t_end, u)
            order = np.argsort(pub, kind="stable")
            clicked = ids[order][np.searchsorted(pub[order], times) - 1].astype(np.int32)
            beh = pl.DataFrame({"impression_id": np.arange(1, u + 1, dtype=np.uint32), "user_id": np.arange(u, dtype=np.uint32),
                                "impression_time": pl.Series(times).cast(pl.Datetime("us")),
                                "article_ids_clicked": pl.Series(clicked).reshape((u, 1)).cast(pl.List(pl.Int32))})
            beh = beh.with_columns(pl.col("article_ids_clicked").alias("article_ids_inview"))
            beh.select([pl.col(c).cast(BEHAVIORS[c]) if c in beh.columns else pl.lit(None, BEHAVIORS[c]).alias(c)
                        for c in BEHAVIORS]).write_parquet(root / "validation" / "behaviors.parquet")
            out = root / "vectors"
            rc, e_wall, e_rss = child(python() + ["-m", "mtnews", "embed", "--run", args.run, "--data", str(root),
                                                     "--out", str(out), "--device", "cpu"], work / f"embed{u}.log", env)
            if rc != 0:
                raise SystemExit(f"embed failed, see {work / f'embed{u}.log'}: " + (work / f"embed{u}.log").read_text()[-500:])
            if dim is None:
                import json

                dim = json.loads((out / "embed.json").read_text())["dim"]
            rc, r_wall, r_rss = child(python() + ["-m", "mtnews", "retrieve", "--run", args.run, "--data", str(root),
                                                     "--index", str(out / "index"), "--device", "cpu",
                                                     "--json-out", str(root / "r.json")], work / f"retrieve{u}.log", env)
            if rc != 0:
                raise SystemExit("retrieve failed: " + (work / f"retrieve{u}.log").read_text()[-500:])
            table.add_row(f"{u:,}", f"{e_wall:.1f}", f"{e_rss:,.0f}", f"{r_wall:.1f}", f"{r_rss:,.0f}",
                          f"{u * dim * 4 / 2**20:,.0f}")
            console.print(f"  users {u:,}: done, load {load_average()}")
            shutil.rmtree(root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", help="an `mtnews embed` folder whose vector statistics to sample")
    parser.add_argument("--sizes", default="100000,1000000", help="catalogue sizes (section 1); '' to skip")
    parser.add_argument("--pool-sizes", default="30000,100000", help="one-pool sizes (section 2); '' to skip")
    parser.add_argument("--users", default="", help="user counts (section 3, needs --run and --data), e.g. 100000,1000000")
    parser.add_argument("--run", help="a trained run (section 3)")
    parser.add_argument("--data", help="a dataset whose articles section 3 uses")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=100, help="single-query calls timed for the latency")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    split = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    args.sizes, args.pool_sizes, args.users = split(args.sizes), split(args.pool_sizes), split(args.users)
    import faiss

    console = Console(width=160)
    console.print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPU cores; "
                  f"load {load_average()}; vectors: {args.vectors or 'clustered unit-norm, D=384'}")
    rng = np.random.default_rng(args.seed)
    draw_a, draw_u = samplers(args.vectors, rng)
    if args.sizes:
        catalogue(console, args, draw_a, draw_u, rng)
    if args.pool_sizes:
        one_pool(console, args, draw_a, draw_u, rng)
    if args.users:
        if not (args.run and args.data):
            raise SystemExit("--users needs --run and --data")
        users(console, args)
    console.print(f"load {load_average()}; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
