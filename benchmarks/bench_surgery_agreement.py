"""How often, and how strongly, parameter-space and representation-space surgery agree on conflicts.

For each batch of the demo data it takes, with one forward pass:
  params space:          g_main, g_aux over the shared encoder parameters -> combined g_P
  representation space:  per-article-vector gradients, projected row-wise, backpropagated -> combined g_R
and prints: whether params space sees a conflict (g_main . g_aux < 0), the share of article vectors that
conflict in representation space, cos(g_P, g_R), and the cosine of the two *corrections* (g - (g_main +
g_aux)), which isolates what each surgery changed.

    python benchmarks/bench_surgery_agreement.py --data runs/demo/data --run runs/demo/run --batches 30
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mtnews.config import load_config
from mtnews.data.articles import load_articles
from mtnews.data.dataset import load_split
from mtnews.model.build import build_model
from mtnews.model.run import load_run
from mtnews.model.mtrec import task_weights
from mtnews.model.tokens import tokenize_titles
from mtnews.train import surgery
from mtnews.train.batching import BatchBuilder


def flat(grads, params) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return surgery.cosine(a, b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", help="a trained run (its weights and config); default: a fresh model from --config")
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--mode", default="project-both", choices=("project-both", "project-aux"))
    ap.add_argument("--batches", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    articles = None
    if args.run:
        run = load_run(args.run)
        model, cfg, tok = run.model, run.cfg, run.tokenizer
        articles = run.load_dataset_articles(f"{args.data}/articles.parquet")
    else:
        cfg = load_config(args.config)
        articles = load_articles(f"{args.data}/articles.parquet", max_entity_groups=cfg.model.ner_groups)
        model, tok = build_model(cfg, articles.vocab)
    model.train()
    split = load_split(args.data, "train", cfg.data.history_size, articles)
    samples = split.train_samples(cfg.data.npratio, args.seed)
    build = BatchBuilder(samples, split.histories, articles, tokenize_titles(articles.titles, tok, cfg.model.max_title_length))
    order = np.random.default_rng(args.seed).permutation(len(samples))
    shared = model.shared_parameters()
    w = task_weights(cfg)
    rows = []
    t0 = time.perf_counter()
    for b in range(args.batches):
        batch = build(order[b * cfg.train.batch_size : (b + 1) * cfg.train.batch_size])
        news, losses = model(batch)
        aux = sum(w[k] * v for k, v in losses.items() if k != "main")
        gm = flat(torch.autograd.grad(losses["main"], shared, retain_graph=True, allow_unused=True), shared)
        ga = flat(torch.autograd.grad(aux, shared, retain_graph=True, allow_unused=True), shared)
        g_sum = gm + ga
        g_p, conflict = surgery.combine(gm, ga, args.mode)
        vm, va = torch.autograd.grad(losses["main"], news, retain_graph=True)[0], torch.autograd.grad(aux, news, retain_graph=True)[0]
        v_comb, row_conflict = surgery.combine_rows(vm, va, args.mode)
        g_r = flat(torch.autograd.grad(news, shared, grad_outputs=v_comb, allow_unused=True), shared)
        corr_p, corr_r = g_p - g_sum, g_r - g_sum
        rows.append((cos(gm, ga), conflict, float(row_conflict.float().mean()), cos(g_p, g_r),
                     cos(corr_p, corr_r) if conflict and corr_r.norm() > 0 else float("nan")))
    r = np.array(rows, dtype=float)
    both = ~np.isnan(r[:, 4])
    print(f"{args.batches} batches of {cfg.train.batch_size}, mode {args.mode}, "
          f"{'run ' + args.run if args.run else 'fresh model'}; {time.perf_counter() - t0:.0f} s")
    print("| measure | value |\n|---|---|")
    print(f"| mean cos(g_main, g_aux), params space | {r[:, 0].mean():+.3f} |")
    print(f"| batches with a conflict in params space | {int(r[:, 1].sum())} / {len(r)} |")
    print(f"| mean share of conflicting article vectors (representation space) | {r[:, 2].mean():.2f} |")
    print(f"| same verdict (params conflict <-> most article vectors conflict) | {np.mean(r[:, 1] == (r[:, 2] > 0.5)):.2f} |")
    print(f"| mean cos(g_params, g_representation), combined gradients | {r[:, 3].mean():.3f} (min {r[:, 3].min():.3f}) |")
    if both.any():
        print(f"| mean cos of the two corrections, on params-conflict batches | {r[both, 4].mean():+.3f} ({both.sum()} batches) |")


if __name__ == "__main__":
    main()
