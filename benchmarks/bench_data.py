"""Benchmark: the data layer at growing sizes: synthesize, load, build training samples and eval impressions.

    .venv/bin/python benchmarks/bench_data.py [--sizes 100000,1000000,5000000] [--keep DIR]

Size N is the number of *training* impressions: `synthesize(users=N/5, articles=max(1500, N/50))` writes
N train and 0.4 N validation impressions (the defaults of 5 and 2 impressions per user), with histories
for every user of each split. Then, in a second process, the train and validation splits are loaded
(articles, histories, behaviors), wu2019 training samples are built from train (npratio 4) and full
in-view evaluation impressions from validation.

Each stage runs in its own child process, so its peak RSS is its own (read with wait4, not a process-wide
high-water mark); times are wall seconds of the child, imports included.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchcommon import load_average, machine, run_child


def worker_synth(out: Path, n: int) -> dict:
    from mtnews.data.synth import synthesize

    t0 = time.perf_counter()
    summary = synthesize(out, users=max(1, n // 5), articles=max(1500, n // 50), seed=0)
    return {"synth_s": time.perf_counter() - t0, "train": summary["train"]["impressions"],
            "validation": summary["validation"]["impressions"], "users": summary["users"],
            "articles": summary["articles"]}


def worker_build(out: Path) -> dict:
    from mtnews.data.articles import load_articles
    from mtnews.data.dataset import load_split
    from mtnews.data.layout import split_paths

    t0 = time.perf_counter()
    articles = load_articles(split_paths(out, "train").articles)
    train = load_split(out, "train", 30, articles)
    val = load_split(out, "validation", 30, articles)
    t1 = time.perf_counter()
    samples = train.train_samples(npratio=4, seed=0)
    t2 = time.perf_counter()
    imps = val.eval_impressions()
    t3 = time.perf_counter()
    return {"load_s": t1 - t0, "samples_s": t2 - t1, "impressions_s": t3 - t2, "samples": len(samples),
            "eval_impressions": len(imps), "eval_candidates": int(imps.offsets[-1])}


def child(stage: str, out: Path, n: int, result: Path) -> None:
    r = worker_synth(out, n) if stage == "synth" else worker_build(out)
    result.write_text(json.dumps(r))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000,5000000", help="training impressions, comma list")
    parser.add_argument("--keep", help="write the datasets here instead of a temp folder, and keep them")
    parser.add_argument("--child", nargs=4, metavar=("STAGE", "OUT", "N", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stage, out, n, result = args.child
        child(stage, Path(out), int(n), Path(result))
        return
    console = Console(width=160)
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        for n in (int(s) for s in args.sizes.split(",")):
            out = base / f"synth-{n}"
            r: dict = {"n": n}
            for stage in ("synth", "build"):
                res = base / f"{stage}-{n}.json"
                cmd = [sys.executable, __file__, "--child", stage, str(out), str(n), str(res)]
                rc, wall, rss = run_child(cmd, log=base / f"{stage}-{n}.log")
                if rc != 0:
                    console.print(f"[red]{stage} at {n:,} failed (exit {rc}); see {base / f'{stage}-{n}.log'}[/]")
                    console.print((base / f"{stage}-{n}.log").read_text()[-3000:])
                    return
                r.update(json.loads(res.read_text()))
                r[f"{stage}_wall"], r[f"{stage}_rss"] = wall, rss
            r["load"] = load_average()
            console.print(f"  {n:>10,}: synth {r['synth_wall']:.1f} s ({r['synth_rss']:,.0f} MiB), load+build "
                          f"{r['build_wall']:.1f} s ({r['build_rss']:,.0f} MiB); load average {r['load']}")
            rows.append(r)
            if not args.keep:
                shutil.rmtree(out, ignore_errors=True)

    table = Table(title="data layer: synthesize, load, build training samples and evaluation impressions")
    cols = ("train imp.", "val imp.", "users / articles", "synthesize", "load", "train samples", "eval impressions",
            "total wall", "peak RSS synth", "peak RSS load+build", "s per 100k train imp.")
    for c in cols:
        table.add_column(c, justify="right")
    for r in rows:
        total = r["synth_wall"] + r["build_wall"]
        table.add_row(f"{r['train']:,}", f"{r['validation']:,}", f"{r['users']:,} / {r['articles']:,}",
                      f"{r['synth_s']:.1f} s", f"{r['load_s']:.1f} s",
                      f"{r['samples_s']:.1f} s ({r['samples']:,})",
                      f"{r['impressions_s']:.1f} s ({r['eval_impressions']:,})", f"{total:.1f} s",
                      f"{r['synth_rss']:,.0f} MiB", f"{r['build_rss']:,.0f} MiB", f"{total / r['n'] * 1e5:.2f} s")
    console.print(table)
    console.print("stage times are measured inside the children; 'total wall' adds both children's wall time, "
                  "interpreter start and imports included")
    console.print(f"machine: {machine()}; load average before {load_before}, after {load_average()}")


if __name__ == "__main__":
    main()
