"""The `mtnews` command. Each area registers its own subcommands; this file only wires them up.

User errors (`MtnewsError`) print one line on stderr and exit 2, with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mtnews import __version__
from mtnews.errors import MtnewsError

# Modules exposing `register(subparsers)`. Imports inside handlers stay lazy so `mtnews --help` is fast.
COMMAND_MODULES = [
    "mtnews.data.commands",
    "mtnews.evaluate.commands",
    "mtnews.model.commands",
    "mtnews.train.commands",
    "mtnews.experiment.commands",
    "mtnews.serve.commands",
    "mtnews.retrieval.commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mtnews", description="Multi-task BERT news recommendation on EBNeRD.")
    parser.add_argument("--version", action="version", version=f"mtnews {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "accepts_overrides", False):
        args.overrides = extra
    try:
        rc = func(args)
    except MtnewsError as e:
        print(f"mtnews: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mtnews: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)
