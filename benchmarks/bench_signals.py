"""Benchmark: time signals for every (impression, in-view article) of a large split, on this machine.

    .venv/bin/python benchmarks/bench_signals.py [--impressions 1000000] [--inview 10] [--train 1000000]
                                                 [--users 100000] [--reads 20] [--articles 50000] [--keep DIR]

Writes a dataset in the EBNeRD layout with numpy (no click model: the data only has to be large and
shaped like a news log): `--train` train and `--impressions` validation impressions of `--inview` in-view
articles each, drawn from the articles published in the last two days, one click each, over one week
each; and a history of `--reads` timestamped reads for every one of `--users` users in each split. Then:

* `load`: `SplitSignals.load` for validation: read both logs and histories, deduplicate and index the
  events, read the impression and published times;
* `compute`: every signal of every (impression, in-view article) of validation, in blocks of 2^20
  (`compute_signals`, the path the streaming scorers and `SplitSignals.frame` use), results discarded.

The target is 1M impressions x 10 in view in at most 30 s on the 2-core development machine. Prints a
table with wall and CPU seconds per stage, the peak RSS and the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from benchcommon import load_average

HOUR = 3_600_000_000
START = int(np.datetime64("2023-05-18T07:00:00", "us").astype(np.int64))


def _lists(values: np.ndarray, width: int, dtype) -> pl.Series:
    offsets = np.arange(0, len(values) + 1, width, dtype=np.int64)
    return pl.Series(pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values)))).cast(pl.List(dtype))


def write_split(root: Path, name: str, week: int, n: int, inview: int, users: int, reads: int,
                pub: np.ndarray, ids: np.ndarray, rng: np.random.Generator, first_id: int) -> None:
    start = START + week * 7 * 24 * HOUR
    t = np.sort(start + rng.integers(0, 7 * 24 * 3600, n) * 1_000_000)
    hi = np.searchsorted(pub, t)
    lo = np.searchsorted(pub, t - 48 * HOUR)
    shown = lo[:, None] + (rng.random((n, inview)) * (hi - lo)[:, None]).astype(np.int64)
    shown = np.clip(shown, 0, len(ids) - 1)
    flat = ids[shown.ravel()]
    behaviors = pl.DataFrame({
        "impression_id": pl.Series(first_id + np.arange(n), dtype=pl.UInt32),
        "impression_time": pl.Series(t).cast(pl.Datetime("us")),
        "article_ids_inview": _lists(flat, inview, pl.Int32),
        "article_ids_clicked": _lists(ids[shown[:, 0]], 1, pl.Int32),
        "user_id": pl.Series(rng.integers(0, users, n), dtype=pl.UInt32),
    })
    (root / name).mkdir(parents=True)
    behaviors.write_parquet(root / name / "behaviors.parquet")
    e = users * reads
    rt = np.sort((start - 21 * 24 * HOUR + rng.integers(0, 21 * 24 * 3600, (users, reads)) * 1_000_000), axis=1)
    art = ids[np.clip(np.searchsorted(pub, rt.ravel()) - 1 - rng.integers(0, 200, e), 0, len(ids) - 1)]
    pl.DataFrame({
        "user_id": pl.Series(np.arange(users), dtype=pl.UInt32),
        "impression_time_fixed": _lists(rt.ravel(), reads, pl.Datetime("us")),
        "article_id_fixed": _lists(art, reads, pl.Int32),
    }).write_parquet(root / name / "history.parquet")


def make_dataset(root: Path, args) -> None:
    rng = np.random.default_rng(0)
    first = START - 30 * 24 * HOUR
    pub = np.sort(first + rng.integers(0, 44 * 24 * 3600, args.articles) * 1_000_000)
    ids = (9_000_000 + np.arange(args.articles)).astype(np.int32)
    root.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"article_id": ids, "title": ["t"] * len(ids),
                  "published_time": pl.Series(pub).cast(pl.Datetime("us"))}).write_parquet(root / "articles.parquet")
    write_split(root, "train", 0, args.train, args.inview, args.users, args.reads, pub, ids, rng, 1)
    write_split(root, "validation", 1, args.impressions, args.inview, args.users, args.reads, pub, ids, rng,
                args.train + 1)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impressions", type=int, default=1_000_000)
    ap.add_argument("--inview", type=int, default=10)
    ap.add_argument("--train", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--reads", type=int, default=20)
    ap.add_argument("--articles", type=int, default=50_000)
    ap.add_argument("--keep", help="write the dataset here and keep it (default: a temporary folder)")
    args = ap.parse_args()

    from mtnews.data.signals import CHUNK, SplitSignals, compute_signals

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-signals-"))
    before = load_average()
    try:
        t0 = time.perf_counter()
        if not (tmp / "validation" / "behaviors.parquet").exists():
            make_dataset(tmp, args)
        write_s = time.perf_counter() - t0

        rows = []
        w0, c0 = time.perf_counter(), cpu()
        signals = SplitSignals.load(tmp, "validation")
        rows.append(("load (read, dedupe, index)", time.perf_counter() - w0, cpu() - c0))

        b = pl.read_parquet(tmp / "validation" / "behaviors.parquet", columns=["impression_id", "article_ids_inview"])
        impression = np.repeat(b["impression_id"].cast(pl.Int64).to_numpy(), args.inview)
        article = b["article_ids_inview"].explode().cast(pl.Int64).to_numpy()
        del b
        w0, c0 = time.perf_counter(), cpu()
        for s in range(0, len(article), CHUNK):
            t = signals.times_of(impression[s:s + CHUNK])
            compute_signals(signals.index, signals.articles, article[s:s + CHUNK], t)
        rows.append((f"compute ({len(signals.options.names())} signals x {len(article):,} pairs)",
                     time.perf_counter() - w0, cpu() - c0))
        after = load_average()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    table = Table(title=f"time signals: {args.impressions:,} validation x {args.inview} in view, {args.train:,} train, "
                        f"{args.users:,} users x {args.reads} reads per split")
    table.add_column("stage")
    table.add_column("wall s", justify="right")
    table.add_column("CPU s", justify="right")
    for name, wall, c in rows:
        table.add_row(name, f"{wall:.2f}", f"{c:.2f}")
    table.add_row("[bold]total[/]", f"[bold]{sum(r[1] for r in rows):.2f}[/]", f"{sum(r[2] for r in rows):.2f}")
    console = Console()
    console.print(table)
    idx = signals.index
    console.print(f"events: {idx.n_inviews:,} in-views, {idx.n_clicks:,} clicks ({idx.history_reads:,} history reads); "
                  f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB; "
                  f"dataset written in {write_s:.1f} s (not counted)")
    console.print(f"{os.cpu_count()} CPU cores; load average before {before}, after {after}")


if __name__ == "__main__":
    main()
