"""`mtnews evaluate` and `mtnews predict`."""

from __future__ import annotations

import argparse
import json

# The names of evaluate/split_scoring.BASELINES, kept here so `mtnews --help` imports no torch.
SCORERS = ("random", "popularity", "oracle", "recency", "trending", "ctr")
FORMATS = ("ebnerd", "mind")  # evaluate/mind_submission.FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="score full in-view lists and print AUC / MRR / nDCG")
    e.add_argument("--data", required=True, help="dataset root folder (EBNeRD, or a MIND folder)")
    e.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    who = e.add_mutually_exclusive_group()
    who.add_argument("--scorer", choices=SCORERS, help="a baseline scorer")
    who.add_argument("--run", help="a training run directory to score with")
    e.add_argument("--json-out", help="write the metrics dict as JSON here")
    e.add_argument("--predictions-out", help="also write a submission zip here (RecSys'24, or MIND's on MIND data)")
    e.add_argument("--format", choices=FORMATS, default=None,
                   help="submission format of --predictions-out (default: the dataset's layout)")
    e.add_argument("--chunk", type=int, default=50_000, help="impressions per streamed chunk")
    e.add_argument("--seed", type=int, default=0, help="seed of the random scorer")
    e.add_argument("--signals.window", dest="signals_window", default="past", choices=("past", "split"),
                   help="time baselines: count only events before each impression (past, the default), or "
                        "in-views over the whole split, future included (split, transductive)")
    e.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    e.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="write a submission zip (RecSys'24, or MIND's on MIND data) with a trained run")
    p.add_argument("--run", required=True, help="training run directory")
    p.add_argument("--data", required=True, help="dataset root folder (EBNeRD, or a MIND folder)")
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--out", required=True, help="zip to write (predictions.zip; MIND's leaderboard calls it prediction.zip)")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="ebnerd: predictions.txt inside the zip (RecSys'24); mind: prediction.txt (MIND "
                        "leaderboard); default: the dataset's layout")
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


def _evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mtnews.evaluate.split_scoring import score_split
    from mtnews.evaluate.tables import metrics_table
    from mtnews.io import atomic_write_text, check_output_file

    check_output_file(args.json_out, "metrics JSON")
    result = score_split(args.data, args.split, scorer=args.scorer, run=args.run, chunk=args.chunk,
                         predictions_out=args.predictions_out, seed=args.seed, device=args.device, progress=True,
                         prediction_format=args.format, signals={"window": args.signals_window})
    name = args.run or args.scorer
    if "signals" in result:  # a number of a time baseline always says which mode produced it
        name = f"{name} ({result['signals']['window']} window)"
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
                     resume=resume, progress=not args.no_progress, format=args.format)
    note = f", resumed at row {result['resumed_from_row']:,}" if result["resumed_from_row"] else ""
    print(f"wrote {args.out} ({result['format']} format): {result['impressions']} impressions{note}")
    if result["unknown_candidates"]:
        print(f"{result['unknown_candidates']} in-view articles are missing from articles.parquet")
    return 0
