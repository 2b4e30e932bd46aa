"""`mtnews demo`: the main job end to end on the embedded MiniLM, on CPU.

synthesize a dataset -> train MTRec (LoRA, both auxiliary tasks, gradient surgery) -> evaluate on the
validation split beside the random, popularity and oracle baselines -> save the training curve.
Every stage is skipped when its output already exists, so a second `make demo` resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="synthesize, train, evaluate against baselines, plot (the `make demo` job)")
    d.add_argument("--out", default="runs/demo", help="output folder (data/, run/, results.json, training_curve.png)")
    d.add_argument("--config", default=None, help="training config (default: configs/demo.yaml when present)")
    d.add_argument("--users", type=int, default=2000)
    d.add_argument("--articles", type=int, default=1500)
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_demo, accepts_overrides=True)


def _demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mtnews.config import load_config
    from mtnews.data.articles import load_articles
    from mtnews.data.check import check_dataset
    from mtnews.data.history import load_histories
    from mtnews.data.layout import split_paths
    from mtnews.data.synth import synthesize
    from mtnews.evaluate.commands import make_scorer
    from mtnews.evaluate.report import metrics_table
    from mtnews.evaluate.runner import run_scorer
    from mtnews.io import atomic_write_text
    from mtnews.plots import plot_training_curve
    from mtnews.train.checkpoint import checkpoint_dirs
    from mtnews.train.loop import train

    console = Console(soft_wrap=True)  # long paths stay on one line in logs
    out = Path(args.out)
    data, run = out / "data", out / "run"
    config = args.config or ("configs/demo.yaml" if Path("configs/demo.yaml").is_file() else None)
    cfg = load_config(config, args.overrides)

    if not (data / "validation" / "behaviors.parquet").exists():
        console.rule("1/4 synthesize")
        synthesize(data, users=args.users, articles=args.articles, seed=args.seed)
    report = check_dataset(data)
    console.print(f"dataset {data}: {report['articles']} articles, "
                  + ", ".join(f"{s} {r['impressions']} impressions" for s, r in report["splits"].items()))

    console.rule("2/4 train")
    if (run / "final").exists():
        console.print(f"{run} already trained; delete it to retrain")
    else:
        summary = train(cfg, data, run, resume=bool(run.exists() and checkpoint_dirs(run)))
        console.print(f"trained {summary['steps']} steps in {summary['seconds']} s")

    console.rule("3/4 evaluate (validation, full in-view lists)")
    paths = split_paths(data, "validation")
    articles = load_articles(paths.articles)
    rows = {}
    for name in ("random", "popularity", "oracle"):
        hist = load_histories(paths.history, articles, cfg.data.history_size)
        rows[name] = run_scorer(make_scorer(name, None, paths, articles, hist), paths, articles, hist)
    hist = load_histories(paths.history, articles, load_config(run / "config.yaml").data.history_size)
    rows["mtrec (this run)"] = run_scorer(make_scorer(None, str(run), paths, articles, hist), paths, articles, hist)
    console.print(metrics_table(rows, title="validation"))
    pop, oracle, model = rows["popularity"]["auc"], rows["oracle"]["auc"], rows["mtrec (this run)"]["auc"]
    gap = (model - pop) / (oracle - pop) if oracle > pop else float("nan")
    console.print(f"MTRec closes {gap:.0%} of the AUC gap between popularity and the oracle.")
    atomic_write_text(out / "results.json", json.dumps({"validation": rows, "gap_closed": gap}, indent=2))

    console.rule("4/4 plot")
    png = plot_training_curve(run, out / "training_curve.png", title="MTRec demo (MiniLM + LoRA, CPU)")
    console.print(f"wrote {png} and {out / 'results.json'}")
    return 0
