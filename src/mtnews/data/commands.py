"""`mtnews data synth | synth-articles | convert | check`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="synthesize, convert (from MIND) and check EBNeRD-format datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    s = dsub.add_parser("synth", help="write a synthetic dataset in the EBNeRD layout (or MIND's, with --format mind)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--users", type=int, default=2000)
    s.add_argument("--articles", type=int, default=1500)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--with-testset", action="store_true", help="also write the test layout (no clicks)")
    s.add_argument("--test-impressions", type=int, default=None, help="number of test impressions")
    s.add_argument("--time-effect", type=float, default=None, metavar="X",
                   help="strength of freshness, latent buzz and the day cycle in the click model, 0 to 5; "
                        "0 is the content-only model (default: 1, moderate)")
    s.add_argument("--format", choices=("ebnerd", "mind"), default="ebnerd",
                   help="file layout: EBNeRD parquet files, or MIND's train/, dev/, test/ TSV folders "
                        "(the same data; `data convert --from mind` reads it back)")
    s.set_defaults(func=_synth)

    a = dsub.add_parser("synth-articles", help="synthesize articles.parquet for the ids of an existing log")
    a.add_argument("--log", required=True, help="folder with behaviors/history parquet files")
    a.add_argument("--out", required=True, help="articles.parquet to write")
    a.add_argument("--seed", type=int, default=0)
    a.set_defaults(func=_synth_articles)

    v = dsub.add_parser("convert", help="convert a MIND dataset to the EBNeRD layout that every command reads")
    v.add_argument("--from", dest="source_format", required=True, choices=("mind",), help="layout of SRC")
    v.add_argument("src", metavar="SRC",
                   help="MIND folder holding MIND<size>_train/, _dev/, _test/ (as downloaded) or train/, dev/, test/")
    v.add_argument("--out", required=True, help="output folder (new, empty, or an earlier conversion)")
    v.add_argument("--split", action="append", choices=("train", "validation", "test"),
                   help="convert only this split (repeatable; validation reads dev); default: all in SRC")
    v.set_defaults(func=_convert)

    c = dsub.add_parser("check", help="validate a dataset and print a summary")
    c.add_argument("--data", required=True, help="dataset root folder (EBNeRD, or a MIND folder)")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=_check)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _positive(name: str, value: int | None) -> None:
    from mtnews.errors import ConfigError

    if value is not None and value <= 0:
        raise ConfigError(f"--{name} must be a positive integer, got {value}")


def _synth(args: argparse.Namespace) -> int:
    from rich.console import Console

    if args.format == "mind":
        from mtnews.data.mind_synth import synthesize_mind as synthesize
    else:
        from mtnews.data.synth import synthesize

    for name in ("users", "articles", "test_impressions"):
        _positive(name.replace("_", "-"), getattr(args, name))
    time = {} if args.time_effect is None else {"time_effect": args.time_effect}
    summary = synthesize(
        args.out,
        users=args.users,
        articles=args.articles,
        seed=args.seed,
        with_testset=args.with_testset,
        test_impressions=args.test_impressions,
        **time,
    )
    Console().print(f"wrote {args.out}: {summary}")
    return 0


def _synth_articles(args: argparse.Namespace) -> int:
    from mtnews.data.synth_articles import synthesize_articles

    n = synthesize_articles(args.log, args.out, seed=args.seed)
    print(f"wrote {args.out}: {n} articles")
    return 0


def _convert(args: argparse.Namespace) -> int:
    import json

    from mtnews.data.mind import convert_mind

    report = convert_mind(args.src, args.out, splits=args.split)
    print(json.dumps(report, indent=2))
    return 0


def _check(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from mtnews.data.check import check_dataset

    report = check_dataset(args.data)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    console = Console()
    console.print(f"[bold]{report['root']}[/]: {report['articles']} articles, {report['categories']} categories")
    if report["format"] == "mind":
        console.print(f"MIND layout, read through its EBNeRD-layout conversion {report['converted']}; "
                      f"{report['subcategories']} subcategories; labels for {', '.join(report['labelled_tasks'])}")
    splits = report["splits"]
    table = Table("", *splits.keys())

    def fmt(st: dict) -> str:
        return f"{st['min']} / {st['median']:g} / {st['mean']:g} / {st['max']}"

    rows = [
        ("impressions", lambda r: str(r["impressions"])),
        ("users", lambda r: str(r["users"])),
        ("users without history", lambda r: str(r["users_without_history"])),
        ("in-view length min/median/mean/max", lambda r: fmt(r["inview_length"])),
        ("history length min/median/mean/max", lambda r: fmt(r["history_length"])),
        ("unknown article ids", lambda r: str(r["unknown_article_ids"])),
        ("impressions without click", lambda r: str(r.get("without_click", "-"))),
        ("impressions with empty in-view", lambda r: str(r["empty_inview"])),
    ]
    for name, get in rows:
        table.add_row(name, *(get(r) for r in splits.values()))
    console.print(table)
    console.print("[green]dataset OK[/]")
    return 0
