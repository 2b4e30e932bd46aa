"""Benchmark: reading and converting MIND-format data (`mtnews data convert --from mind`) at MIND-small size.

    .venv/bin/python benchmarks/bench_mind_read.py [--impressions 157000] [--news 65000] [--users 50000]
        [--repeat 2] [--keep DIR]

Data: one synthetic MIND train split shaped like MINDsmall_train (156,965 impressions, 50k users; the
union of MIND-small's news is 65,238 rows): in-view lengths lognormal with median 24 and mean 37 (2..299),
history lengths median 19 and mean 33 (0..558, 2% empty), one click per impression (two for 10%),
news ids drawn from N1..N130000 as in MIND, and article texts and entities from mtnews's synthetic
article generator. It is built as an EBNeRD-layout dataset and written to MIND TSVs with
`mtnews.data.mind_synth.write_mind`; neither step is timed against the target.

Timed: `convert_mind` in a fresh child process per repeat (its phases from the report: reading news.tsv,
reading behaviors.tsv and writing the split, the articles), plus the child's wall time with interpreter
start and imports, and its peak RSS (wait4). The target is <= 15 s for the conversion on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchcommon import load_average, run_child  # noqa: E402


def _lognormal_lengths(rng, n: int, median: float, mean: float, lo: int, hi: int) -> np.ndarray:
    sigma = np.sqrt(2 * np.log(mean / median))
    return np.clip(np.round(rng.lognormal(np.log(median), sigma, n)), lo, hi).astype(np.int64)


def build_ebnerd(out: Path, impressions: int, news: int, users: int, seed: int = 0) -> dict:
    import polars as pl
    import pyarrow as pa

    from mtnews.data.synth_articles import build_articles

    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(np.arange(1, 130_001), news, replace=False)).astype(np.int32)
    pub = np.datetime64("2019-11-01T00:00:00", "us").astype(np.int64) + rng.integers(0, 14 * 86_400, news) * 1_000_000
    articles, _, _ = build_articles(rng, ids, pub, np.ones(news, np.int64), np.ones(news, np.int64))

    def lists(lengths: np.ndarray, values: np.ndarray, dtype) -> pl.Series:
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, dtype)))

    n_view = _lognormal_lengths(rng, impressions, 24, 37, 2, 299)
    inview = ids[rng.integers(0, news, int(n_view.sum()))]
    # One click per impression at a random position, a second (the next position) for 10%.
    starts = np.concatenate([[0], np.cumsum(n_view)[:-1]])
    first = starts + (rng.random(impressions) * n_view).astype(np.int64)
    second = starts + (first - starts + 1) % n_view
    two = rng.random(impressions) < 0.1
    pos = np.stack([first, second], 1)[np.stack([np.ones(impressions, bool), two], 1)]  # row-major: in order
    n_click = 1 + two.astype(np.int64)

    user_ids = np.sort(rng.choice(np.arange(1, 95_000), users, replace=False)).astype(np.uint32)
    user = user_ids[rng.integers(0, users, impressions)]
    t0 = np.datetime64("2019-11-09T00:00:00", "us").astype(np.int64)
    times = np.sort(t0 + rng.integers(0, 5 * 86_400, impressions) * 1_000_000)
    behaviors = pl.DataFrame({
        "impression_id": np.arange(1, impressions + 1, dtype=np.uint32),
        "user_id": user,
        "impression_time": pl.Series(times).cast(pl.Datetime("us")),
        "article_ids_inview": lists(n_view, inview, pa.int32()),
        "article_ids_clicked": lists(n_click, inview[pos], pa.int32()),
    })
    n_hist = _lognormal_lengths(rng, users, 19, 33, 1, 558) * (rng.random(users) >= 0.02)
    history = pl.DataFrame({
        "user_id": user_ids,
        "article_id_fixed": lists(n_hist, ids[rng.integers(0, news, int(n_hist.sum()))], pa.int32()),
    })
    (out / "train").mkdir(parents=True, exist_ok=True)
    articles.write_parquet(out / "articles.parquet")
    behaviors.write_parquet(out / "train" / "behaviors.parquet")
    history.write_parquet(out / "train" / "history.parquet")
    return {"impressions": impressions, "news": news, "users": users, "inview_mean": float(n_view.mean()),
            "history_mean": float(n_hist.mean())}


def child(src: Path, dst: Path, result: Path) -> None:
    from mtnews.data.mind import convert_mind

    t0 = time.perf_counter()
    report = convert_mind(src, dst)
    report["convert_s"] = time.perf_counter() - t0
    result.write_text(json.dumps(report))


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impressions", type=int, default=157_000)
    parser.add_argument("--news", type=int, default=65_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=2, help="conversions, each in a fresh process")
    parser.add_argument("--keep", help="write the data here instead of a temp folder, and keep it")
    parser.add_argument("--child", nargs=3, metavar=("SRC", "DST", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*(Path(p) for p in args.child))
        return

    from mtnews.data.mind_synth import write_mind

    console = Console(width=150)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        shape = build_ebnerd(base / "ebnerd", args.impressions, args.news, args.users)
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        write_mind(base / "ebnerd", base / "mind")
        write_s = time.perf_counter() - t
        sizes = {f: (base / "mind" / "train" / f).stat().st_size / 2**20 for f in ("news.tsv", "behaviors.tsv")}
        console.print(f"data: {shape['impressions']:,} impressions, {shape['news']:,} news, {shape['users']:,} users; "
                      f"in-view mean {shape['inview_mean']:.1f}, history mean {shape['history_mean']:.1f}; "
                      f"news.tsv {sizes['news.tsv']:.1f} MiB, behaviors.tsv {sizes['behaviors.tsv']:.1f} MiB "
                      f"(built in {build_s:.1f} s, written as MIND in {write_s:.1f} s)")
        runs = []
        for k in range(args.repeat):
            res = base / f"convert-{k}.json"
            cmd = [sys.executable, __file__, "--child", str(base / "mind"), str(base / f"out-{k}"), str(res)]
            rc, wall, rss = run_child(cmd, log=base / f"convert-{k}.log")
            if rc != 0:
                console.print(f"[red]conversion failed (exit {rc})[/]")
                console.print((base / f"convert-{k}.log").read_text()[-3000:])
                sys.exit(1)
            r = json.loads(res.read_text())
            r.update(wall=wall, rss=rss, load=load_average())
            runs.append(r)
            shutil.rmtree(base / f"out-{k}", ignore_errors=True)

    table = Table(title="MIND -> EBNeRD conversion, one MIND-small-sized train split")
    for c in ("run", "read news.tsv", "behaviors + history + write", "articles", "convert total",
              "child wall (with imports)", "peak RSS", "load average after"):
        table.add_column(c, justify="right")
    for k, r in enumerate(runs):
        s = r["seconds"]
        table.add_row(str(k + 1), f"{s['news']:.2f} s", f"{s['train']:.2f} s", f"{s['articles']:.2f} s",
                      f"{r['convert_s']:.2f} s", f"{r['wall']:.2f} s", f"{r['rss']:,.0f} MiB", r["load"])
    console.print(table)
    best = min(r["convert_s"] for r in runs)
    console.print(f"best conversion {best:.2f} s (target <= 15 s on 2 cores); "
                  f"load average before {load_before}, after {load_average()}")


if __name__ == "__main__":
    main()
