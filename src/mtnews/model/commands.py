"""`mtnews run info` and `mtnews run upgrade`: look into a run directory, or convert an older one."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="inspect a training run directory, or upgrade one written by an older mtnews")
    verbs = r.add_subparsers(dest="verb", metavar="VERB", required=True)
    i = verbs.add_parser("info", help="print the run's backbone, heads, vocabularies and weights")
    i.add_argument("--run", required=True, help="training run directory")
    i.set_defaults(func=_info)
    u = verbs.add_parser("upgrade", help="write run.json, tokenizer/ and articles.parquet for a run made before "
                                         "runs recorded them")
    u.add_argument("--run", required=True, help="training run directory")
    u.add_argument("--data", required=True, help="the dataset the run was trained on")
    u.set_defaults(func=_upgrade)


def _info(args: argparse.Namespace) -> int:
    import json

    from mtnews.model.run import load_run

    run = load_run(args.run)
    print(json.dumps({"run": str(run.dir), "backbone": run.spec.backbone, "backbone_sha256": run.spec.backbone_sha256,
                      "heads": run.spec.heads, "vocab": run.spec.vocab.to_dict(), "weights": str(run.weights),
                      "articles": len(run.articles) - 2, "history_size": run.history_size,
                      "fingerprint": run.fingerprint()}, indent=2))
    return 0


def _upgrade(args: argparse.Namespace) -> int:
    from mtnews.model.run import upgrade_run

    spec = upgrade_run(args.run, args.data)
    print(f"upgraded {args.run} to run format {spec.format}: heads {spec.heads}")
    return 0
