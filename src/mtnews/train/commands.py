"""`mtnews train`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train",
        help="train MTRec (dotted overrides such as --train.lr 1e-4 follow the options)",
        description="Train MTRec. Any config key can be overridden as --section.key VALUE, e.g. "
        "--train.surgery pcgrad --model.lora.enabled false --tasks.category 0.",
    )
    t.add_argument("--data", required=True, help="dataset root folder (train/ and validation/ inside), or a MIND folder")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--config", help="YAML config file (configs/demo.yaml, configs/ebnerd_small.yaml, ...)")
    t.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_train, accepts_overrides=True)


def _train(args: argparse.Namespace) -> int:
    import json

    from accelerate import PartialState

    from mtnews.config import given_keys, load_config
    from mtnews.train.loop import train

    cfg = load_config(args.config, args.overrides)
    summary = train(cfg, args.data, args.out, resume=args.resume, progress=not args.no_progress,
                    given=given_keys(args.config, args.overrides))
    # Under torchrun / accelerate launch every rank returns the same summary; print it once.
    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2, default=float))
    return 0
