"""`mtnews evaluate` and `mtnews predict`."""

from __future__ import annotations

import argparse
import json

SCORERS = ("random", "popularity", "oracle")


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="score full in-view lists and print AUC / MRR / nDCG")
    e.add_argument("--data", required=True, help="dataset root folder")
    e.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    who = e.add_mutually_exclusive_group()
    who.add_argument("--scorer", choices=SCORERS, help="a baseline scorer")
    who.add_argument("--run", help="a training run directory to score with")
    e.add_argument("--json-out", help="write the metrics dict as JSON here")
    e.add_argument("--predictions-out", help="also write a RecSys'24 predictions.zip here")
    e.add_argument("--chunk", type=int, default=50_000, help="impressions per streamed chunk")
    e.add_argument("--seed", type=int, default=0, help="seed of the random scorer")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    e.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="write a RecSys'24 predictions.zip with a trained run")
    p.add_argument("--run", required=True, help="training run directory")
    p.add_argument("--data", required=True, help="dataset root folder")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--out", required=True, help="predictions.zip to write")
    p.add_argument("--chunk", type=int, default=50_000,
                   help="impressions per streamed chunk; progress is saved after each one")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    again = p.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue the unfinished run in OUT.partial/ (fail if there is none); "
                            "without this flag a matching one is continued anyway")
    again.add_argument("--fresh", action="store_true", help="discard OUT.partial/ and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_predict)


def make_scorer(name: str | None, run: str | None, paths, articles, histories, seed: int = 0, device: str = "auto"):
    from mtnews.evaluate.scorers import OracleScorer, PopularityScorer, RandomScorer

    if run:
        from mtnews.evaluate.model_scorers import ModelScorer

        return ModelScorer(run, paths, articles, histories, device)
    if name == "random":
        return RandomScorer(seed)
    if name == "popularity":
        return PopularityScorer(paths.root)
    return OracleScorer(paths)


def run_history_size(run: str | None) -> int:
    """The run's data.history_size (histories must be built with it); 30 for the baselines."""
    if not run:
        return 30  # baselines ignore histories
    from pathlib import Path

    from mtnews.config import load_config
    from mtnews.errors import CheckpointError

    cfg_path = Path(run) / "config.yaml"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run}: not a run directory (no config.yaml)")
    return load_config(cfg_path).data.history_size


def score(args: argparse.Namespace, predictions_out: str | None) -> dict:
    from mtnews.data.articles import load_articles
    from mtnews.data.history import load_histories
    from mtnews.data.layout import split_paths
    from mtnews.errors import ConfigError
    from mtnews.evaluate.runner import run_scorer

    if args.chunk <= 0:
        raise ConfigError(f"--chunk must be a positive integer, got {args.chunk}")
    paths = split_paths(args.data, args.split)
    articles = load_articles(paths.articles)
    histories = load_histories(paths.history, articles, run_history_size(args.run))
    scorer = make_scorer(getattr(args, "scorer", None), args.run, paths, articles, histories,
                         getattr(args, "seed", 0), args.device)
    return run_scorer(scorer, paths, articles, histories, args.chunk, predictions_out, progress=True)


def _evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mtnews.errors import ConfigError
    from mtnews.evaluate.report import metrics_table
    from mtnews.io import atomic_write_text

    if not args.scorer and not args.run:
        raise ConfigError("evaluate needs --scorer random|popularity|oracle or --run RUN_DIR")
    if args.split == "test" and not args.predictions_out:
        raise ConfigError("the test split has no clicks to evaluate; add --predictions-out to write predictions")
    result = score(args, args.predictions_out)
    name = args.run or args.scorer
    console = Console()
    if "auc" in result:
        console.print(metrics_table({name: result}, title=f"{args.data} / {args.split}"))
        if result.get("skipped"):
            console.print(f"{result['skipped']} impressions without a click or without a non-click were skipped")
    if result.get("unknown_candidates"):
        console.print(f"{result['unknown_candidates']} in-view articles are missing from articles.parquet")
    if args.predictions_out:
        console.print(f"wrote {args.predictions_out}")
    if args.json_out:
        atomic_write_text(args.json_out, json.dumps(result, indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from mtnews.evaluate.predict import predict

    resume = "require" if args.resume else "never" if args.fresh else "auto"
    result = predict(args.run, args.data, args.out, split=args.split, chunk_rows=args.chunk, device=args.device,
                     resume=resume, progress=not args.no_progress)
    note = f", resumed at row {result['resumed_from_row']:,}" if result["resumed_from_row"] else ""
    print(f"wrote {args.out}: {result['impressions']} impressions{note}")
    if result["unknown_candidates"]:
        print(f"{result['unknown_candidates']} in-view articles are missing from articles.parquet")
    return 0
