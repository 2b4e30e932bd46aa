"""`mtnews train`."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train",
        help="train MTRec (dotted overrides such as --train.lr 1e-4 follow the options)",
        description="Train MTRec. Any config key can be overridden as --section.key VALUE, e.g. "
        "--train.surgery pcgrad --model.lora.enabled false --tasks.category 0.",
    )
    t.add_argument("--data", required=True, help="dataset root folder (train/ and validation/ inside)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--config", help="YAML config file (configs/demo.yaml, configs/ebnerd_small.yaml, ...)")
    t.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_train, accepts_overrides=True)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def _given_keys(args: argparse.Namespace) -> set[str]:
    """The dotted keys the user set on this command line (overrides and --config file)."""
    import yaml

    from mtnews.config import parse_overrides

    keys = set(_flatten(parse_overrides(args.overrides or [])))
    if args.config and Path(args.config).is_file():
        keys |= set(_flatten(yaml.safe_load(Path(args.config).read_text()) or {}))
    return keys


def _check_same_config(saved, given, keys: set[str], path) -> None:
    """Exact resume replays the run's own config; silently dropping a value the user set would mislead."""
    from mtnews.errors import ConfigError

    a, b = _flatten(saved.to_dict()), _flatten(given.to_dict())
    changed = [f"{k} ({a[k]!r} -> {b[k]!r})" for k in sorted(keys & set(a)) if a[k] != b[k]]
    if changed:
        raise ConfigError(f"{path}: --resume continues the run with its saved config, but these differ: "
                          f"{', '.join(changed)}; start a new --out to change them")


def _train(args: argparse.Namespace) -> int:
    import json

    from accelerate import PartialState

    from mtnews.config import load_config
    from mtnews.train.loop import train

    cfg = load_config(args.config, args.overrides)
    saved = Path(args.out) / "config.yaml"
    if args.resume and saved.is_file() and (args.config or args.overrides):
        _check_same_config(load_config(saved), cfg, _given_keys(args), saved)
    summary = train(cfg, args.data, args.out, resume=args.resume, progress=not args.no_progress)
    # Under torchrun / accelerate launch every rank returns the same summary; print it once.
    if PartialState().is_main_process:
        print(json.dumps(summary, indent=2, default=float))
    return 0
