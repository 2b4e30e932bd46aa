"""An experiment's settings: the base config plus its `experiment:` section, and the invocation log."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from mtnews.config import Config, load_config, merge_dicts, parse_overrides, read_yaml_mapping
from mtnews.errors import ConfigError
from mtnews.experiment.rates import parse_rates
from mtnews.io import atomic_write_text

DEFAULT_SEEDS = 3
EXPERIMENT_KEYS = {"seeds", "variants", "lr"}


def load_experiment_config(path: str | None, overrides: list[str]) -> tuple[Config, dict]:
    """(base Config, experiment settings) from a YAML whose optional `experiment:` section holds
    `seeds` (an integer), `variants` (a comma-separated string or a list of names) and `lr` (per-variant
    learning rates or grids, `mtnews.experiment.rates`; returned parsed); every other key is the training
    config, as for `mtnews train`."""
    if path is None:
        return load_config(None, overrides), {}
    p = Path(path)
    data = read_yaml_mapping(p)
    settings = data.pop("experiment", None) or {}
    if not isinstance(settings, dict) or set(settings) - EXPERIMENT_KEYS:
        raise ConfigError(f"{p}: `experiment:` may only hold {', '.join(sorted(EXPERIMENT_KEYS))}")
    seeds = settings.get("seeds")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int)):
        raise ConfigError(f"{p}: experiment.seeds: expected an integer, got {seeds!r}")
    variants = settings.get("variants")
    if variants is not None and not (isinstance(variants, str) or
                                     (isinstance(variants, list) and all(isinstance(v, str) for v in variants))):
        raise ConfigError(f"{p}: experiment.variants: expected a comma-separated string or a list of names, "
                          f"got {variants!r}")
    settings = {**settings, "lr": parse_rates(settings.get("lr"), str(p))}
    try:
        cfg = load_config(None, merge_dicts(data, parse_overrides(overrides)) if overrides else data)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None
    return cfg, settings


def record_invocation(out: Path, seconds: float, runs_done: int, report_only: bool, load: tuple) -> list[dict]:
    """Append this invocation to EXP_DIR/invocations.json, so the report's total wall time covers resumes."""
    path = out / "invocations.json"
    log = json.loads(path.read_text()) if path.is_file() else []
    log.append({"finished": datetime.now().isoformat(timespec="seconds"), "seconds": round(seconds, 1),
                "runs_done": runs_done, "report_only": report_only, "load": [round(x, 2) for x in load]})
    atomic_write_text(path, json.dumps(log, indent=2))
    return log
