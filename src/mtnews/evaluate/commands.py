"""`mtnews evaluate` and `mtnews predict`."""

from __future__ import annotations

import argparse
import json

# The names of evaluate/split_scoring.SCORERS, kept here so `mtnews --help` imports no torch.
SCORERS = ("random", "popularity", "oracle", "recency", "trending", "ctr", "cf-user", "cf-als", "mtrec+cf")
FORMATS = ("ebnerd", "mind")  # evaluate/mind_submission.FORMATS


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("evaluate", help="score full in-view lists and print AUC / MRR / nDCG")
    e.add_argument("--data", required=True, help="dataset root folder (EBNeRD, or a MIND folder)")
    e.add_argument("--split", default="validation", choices=("train", "validation", "test"))
    e.add_argument("--scorer", choices=SCORERS, help="a baseline or CF scorer (cf-user and mtrec+cf also need --run)")
    e.add_argument("--run", help="a training run directory to score with")
    e.add_argument("--json-out", help="write the metrics dict as JSON here")
    e.add_argument("--predictions-out", help="also write a submission zip here (RecSys'24, or MIND's on MIND data)")
    e.add_argument("--format", choices=FORMATS, default=None,
                   help="submission format of --predictions-out (default: the dataset's layout)")
    e.add_argument("--chunk", type=int, default=50_000, help="impressions per streamed chunk")
    e.add_argument("--seed", type=int, default=0, help="seed of the random scorer")
    e.add_argument("--signals.window", dest="signals_window", default="past", choices=("past", "split"),
                   help="time baselines: count only events before each impression (past, the default), or "
                        "in-views over the whole split, future included (split, transductive)")
    cf_flags(e)
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


def cf_flags(p: argparse.ArgumentParser) -> None:
    """The `--cf.*` flags of the CF scorers (mtnews.cf.params.CFParams; its defaults are repeated here)."""
    g = p.add_argument_group("cf", "collaborative filtering scorers (cf-user, cf-als, mtrec+cf)")
    g.add_argument("--cf.k", dest="cf_k", type=int, default=50, help="nearest users per user (default: 50)")
    g.add_argument("--cf.half-life-hours", dest="cf_half_life_hours", type=float, default=24.0,
                   help="a neighbour's click this old counts half (default: 24)")
    g.add_argument("--cf.factors", dest="cf_factors", type=int, default=64, help="ALS factors (default: 64)")
    g.add_argument("--cf.iterations", dest="cf_iterations", type=int, default=15, help="ALS iterations (default: 15)")
    g.add_argument("--cf.seed", dest="cf_seed", type=int, default=0, help="ALS seed (default: 0)")
    g.add_argument("--cf.holdout-hours", dest="cf_holdout_hours", type=float, default=24.0,
                   help="mtrec+cf: the blend weight is chosen on the train log's last HOURS (default: 24)")


def cf_params(args: argparse.Namespace):
    from mtnews.cf.params import CFParams

    return CFParams(k=args.cf_k, half_life_hours=args.cf_half_life_hours, factors=args.cf_factors,
                    iterations=args.cf_iterations, seed=args.cf_seed, holdout_hours=args.cf_holdout_hours).validate()


def _evaluate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mtnews.evaluate.split_scoring import score_split
    from mtnews.evaluate.tables import metrics_table
    from mtnews.io import atomic_write_text, check_output_file

    check_output_file(args.json_out, "metrics JSON")
    result = score_split(args.data, args.split, scorer=args.scorer, run=args.run, chunk=args.chunk,
                         predictions_out=args.predictions_out, seed=args.seed, device=args.device, progress=True,
                         prediction_format=args.format, signals={"window": args.signals_window},
                         cf=cf_params(args))
    name = args.scorer or args.run
    if "signals" in result:  # a number of a time baseline always says which mode produced it
        name = f"{name} ({result['signals']['window']} window)"
    console = Console()
    if "auc" in result:
        console.print(metrics_table({name: result}, title=f"{args.data} / {args.split}"))
        if "segments" in result:
            console.print(metrics_table({f"{name}, {seg}": m for seg, m in result["segments"].items()
                                         if m["impressions"]}, title="by history clicks"))
        if "blend" in result.get("cf", {}):
            console.print(f"blend weight {result['cf']['blend']['weight']:g}, chosen on the last "
                          f"{result['cf']['blend']['holdout_hours']:g} h of the train log")
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
