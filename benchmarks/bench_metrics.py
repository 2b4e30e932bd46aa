"""Benchmark: vectorised ranking metrics vs. a per-impression scikit-learn loop, plus submission I/O.

    .venv/bin/python benchmarks/bench_metrics.py [--impressions 1000000] [--loop-impressions 50000]

The loop (roc_auc_score + numpy MRR/nDCG per impression, as ebnerd-benchmark does it) is run on the
first --loop-impressions impressions and its time extrapolated linearly to the full set; the two are
compared per impression on that subset.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from mtnews.evaluate import ranking_metrics, read_predictions, write_predictions
from mtnews.evaluate.metrics import Ragged, impression_metrics


def synthetic(m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Impressions of 5-15 items, one click plus a second for half of them, scores with some ties."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 16, m)
    offsets = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    labels = np.zeros(offsets[-1], dtype=np.int8)
    first = (rng.random(m) * lengths).astype(np.int64)
    labels[offsets[:-1] + first] = 1
    # A shift in 1..L-1 modulo L never lands on the first click.
    second = (first + 1 + (rng.random(m) * (lengths - 1)).astype(np.int64)) % lengths
    two = rng.random(m) < 0.5
    labels[(offsets[:-1] + second)[two]] = 1
    # Two decimals make equal scores inside an impression common enough to exercise tie handling.
    scores = np.round(rng.random(offsets[-1]), 2)
    return labels, scores, offsets


def loop_metrics(labels: np.ndarray, scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Straightforward per-impression reference; ties ranked by position like the vectorised code."""
    rows = []
    for lo, hi in zip(offsets[:-1], offsets[1:]):
        y, s = labels[lo:hi], scores[lo:hi]
        auc = roc_auc_score(y, s)
        ranked = y[np.argsort(-s, kind="stable")]
        mrr = np.sum(ranked / (np.arange(ranked.size) + 1)) / np.sum(y)
        ideal = np.sort(y)[::-1]
        ndcg = []
        for k in (5, 10):
            disc = np.log2(np.arange(min(k, y.size)) + 2)
            ndcg.append(np.sum((2.0 ** ranked[:k] - 1) / disc) / np.sum((2.0 ** ideal[:k] - 1) / disc))
        rows.append((auc, mrr, *ndcg))
    return np.array(rows).T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impressions", type=int, default=1_000_000)
    parser.add_argument("--loop-impressions", type=int, default=50_000, help="subset for the slow loop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-write", action="store_true", help="skip the submission write/read timing")
    args = parser.parse_args()
    console = Console()

    labels, scores, offsets = synthetic(args.impressions, args.seed)
    m = args.impressions
    console.print(f"{m:,} impressions, {labels.size:,} items, mean length {labels.size / m:.1f}")

    # CPU time is reported beside wall time because the benchmark often shares its cores with other jobs.
    t0, c0 = time.perf_counter(), time.process_time()
    result = ranking_metrics(labels, scores, offsets)
    t_vec, c_vec = time.perf_counter() - t0, time.process_time() - c0

    sub = min(args.loop_impressions, m)
    sub_off = offsets[: sub + 1]
    t0, c0 = time.perf_counter(), time.process_time()
    loop_vals = loop_metrics(labels, scores, sub_off)
    t_loop_sub, c_loop_sub = time.perf_counter() - t0, time.process_time() - c0
    t_loop = t_loop_sub * m / sub
    n_sub = sub_off[-1]
    vec_vals = impression_metrics(
        Ragged(labels[:n_sub], sub_off), Ragged(scores[:n_sub], sub_off)
    ).values
    max_diff = float(np.max(np.abs(vec_vals - loop_vals)))

    loop_label = "measured" if sub == m else f"extrapolated from {sub:,}"
    c_loop = c_loop_sub * m / sub
    load = os.getloadavg()[0]
    table = Table(title=f"ranking metrics, {m:,} impressions (load average {load:.1f}, {os.cpu_count()} CPUs)")
    table.add_column("measure")
    table.add_column("wall", justify="right")
    table.add_column("CPU", justify="right")
    table.add_row("vectorised ranking_metrics", f"{t_vec:.2f} s", f"{c_vec:.2f} s")
    table.add_row(
        f"per-impression sklearn loop ({loop_label}; {t_loop_sub:.1f} s wall measured)",
        f"{t_loop:.1f} s",
        f"{c_loop:.1f} s",
    )
    table.add_row("speed-up", f"{t_loop / t_vec:,.0f}x", f"{c_loop / c_vec:,.0f}x")
    table.add_row(f"max |vectorised - loop| over {sub:,} impressions", f"{max_diff:.2e}", "")
    for name in ("auc", "mrr", "ndcg@5", "ndcg@10"):
        table.add_row(name, f"{result[name]:.6f}", "")
    table.add_row("impressions / skipped", f"{result['impressions']:,} / {result['skipped']:,}", "")

    if not args.skip_write:
        ids = np.arange(m, dtype=np.int64) + 500_000_000
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "predictions.zip"
            t0, c0 = time.perf_counter(), time.process_time()
            write_predictions(ids, scores, path, offsets=offsets)
            t_write, c_write = time.perf_counter() - t0, time.process_time() - c0
            t0, c0 = time.perf_counter(), time.process_time()
            read_predictions(path)
            t_read, c_read = time.perf_counter() - t0, time.process_time() - c0
            size = path.stat().st_size
        table.add_row(
            f"write_predictions (rank + format + zip, {size / 2**20:.1f} MiB)", f"{t_write:.2f} s", f"{c_write:.2f} s"
        )
        table.add_row("read_predictions (parse + validate)", f"{t_read:.2f} s", f"{c_read:.2f} s")
    console.print(table)


if __name__ == "__main__":
    main()
