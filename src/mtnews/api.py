"""The Python API: training and evaluation with the same validation as the CLI.

    import mtnews
    summary = mtnews.fit("configs/demo.yaml", data="runs/demo/data", out="runs/me")
    metrics = mtnews.score_split("runs/demo/data", "validation", run="runs/me")
    rec = mtnews.Recommender.from_run("runs/me")

Named so as not to shadow the `mtnews.train` and `mtnews.evaluate` packages.
"""

from __future__ import annotations

from pathlib import Path

from mtnews.config import Config, given_keys, load_config
from mtnews.evaluate.predict import predict
from mtnews.evaluate.split_scoring import score_split
from mtnews.model.run import Run, load_run, upgrade_run
from mtnews.recommender import Recommender
from mtnews.train.loop import train


def fit(config: Config | str | Path | dict | None = None, *, data: str | Path, out: str | Path,
        overrides: list[str] | dict | None = None, resume: bool = False, progress: bool = False) -> dict:
    """Train MTRec on `data` into the run directory `out`; returns the training summary.

    `config` is a Config, a YAML path, a dict of sections, or None for the defaults; `overrides` are
    dotted keys (`{"train": {"lr": 1e-4}}` or `["--train.lr", "1e-4"]`), as on the command line.
    """
    if isinstance(config, Config):
        config = config.to_dict()
    if isinstance(config, dict):
        merged = _merged(config, overrides)
        cfg, keys = load_config(None, merged), given_keys(None, merged)
    else:
        cfg, keys = load_config(config, overrides), given_keys(config, overrides)
    return train(cfg, data, out, resume=resume, progress=progress, given=keys)


def _merged(base: dict, overrides: list[str] | dict | None) -> dict:
    from mtnews.config import merge_dicts, parse_overrides

    if not overrides:
        return base
    return merge_dicts(base, overrides if isinstance(overrides, dict) else parse_overrides(overrides))


__all__ = ["Recommender", "Run", "fit", "load_run", "predict", "score_split", "upgrade_run"]
