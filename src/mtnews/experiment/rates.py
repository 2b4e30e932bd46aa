"""Each variant's encoder learning rate: a per-variant default, or a small grid chosen on the selection holdout.

LoRA adapters and full fine-tuning want rates orders of magnitude apart (the quick config's LoRA rate, 2e-3,
makes full fine-tuning collapse to AUC 0.5), so one shared `train.lr` would compare a wrong rate, not the
methods. Defaults: a LoRA variant uses the base config's `train.lr`; a variant without LoRA (`no-lora`) uses
FULL_FINETUNE_LR, the usual rate for fully fine-tuning BERT. The experiment section's `lr` mapping
overrides them, per variant name or per group (`lora`, `full`), with one rate or a grid:

    experiment:
      lr: {lora: [1.0e-3, 2.0e-3, 5.0e-3], no-lora: [1.0e-5, 2.0e-5, 5.0e-5]}

A grid trains every rate for every seed; per seed, the run with the best selection-holdout AUC (its
`best_auc`, train's last day; never validation) is the row's run, so the reported validation numbers were
not chosen on. Ties go to the rate listed first.
"""

from __future__ import annotations

import math

from mtnews.config import Config
from mtnews.errors import ConfigError
from mtnews.experiment.variants import ALL_LABELS, ORDER, VARIANTS, variant_delta

FULL_FINETUNE_LR = 2e-5
GROUPS = ("lora", "full")  # every trained variant with LoRA / without LoRA


def parse_rates(spec, where: str) -> dict[str, list[float]]:
    """`experiment.lr` checked: keys are trained variants or a group, values a positive rate or a list of them."""
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: experiment.lr: expected a mapping of variant (or {' / '.join(GROUPS)}) to a "
                          f"rate or a list of rates, got {spec!r}")
    trained = [v for v in ORDER if VARIANTS[v].trained]
    out = {}
    for key, value in spec.items():
        key = str(key)
        if key not in trained and key not in GROUPS:
            raise ConfigError(f"{where}: experiment.lr.{key}: not a trained variant or group; choose from "
                              f"{', '.join([*GROUPS, *trained])}")
        values = value if isinstance(value, list) else [value]
        rates = []
        for v in values:
            try:
                rate = float(v) if not isinstance(v, bool) else math.nan
            except (TypeError, ValueError):
                rate = math.nan
            if not (math.isfinite(rate) and rate > 0):
                raise ConfigError(f"{where}: experiment.lr.{key}: expected positive learning rates, got {v!r}")
            rates.append(rate)
        if not rates or len(set(rates)) != len(rates):
            raise ConfigError(f"{where}: experiment.lr.{key}: expected one rate or a list of distinct rates, "
                              f"got {value!r}")
        out[key] = rates
    return out


def uses_lora(base: Config, name: str, labels: frozenset[str] = ALL_LABELS) -> bool:
    return bool(variant_delta(base, name, labels).get("model.lora.enabled", base.model.lora.enabled))


def variant_rates(base: Config, name: str, rates: dict[str, list[float]] | None = None,
                  labels: frozenset[str] = ALL_LABELS) -> list[float]:
    """The encoder learning rates variant `name` trains at: its own entry, else its group's, else the default."""
    rates = rates or {}
    lora = uses_lora(base, name, labels)
    group = "lora" if lora else "full"
    if name in rates:
        return rates[name]
    if group in rates:
        return rates[group]
    return [base.train.lr if lora else FULL_FINETUNE_LR]


def choose_rates(results: list[dict]) -> list[dict]:
    """The table's results: baselines as they are, and per (variant, seed) the run with the best holdout AUC.

    Each chosen trained result gets `lr_grid`, the rates its variant tried (one rate: no choice was made).
    Order follows `results` (the plan's), keeping the first of a group's runs at its place.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["variant"], r.get("seed")) if r.get("seed") is not None else (r["variant"], id(r)),
                          []).append(r)
    out = []
    for runs in groups.values():
        if runs[0].get("seed") is None:
            out.extend(runs)
            continue
        best = max(runs, key=lambda r: _holdout_auc(r))  # max keeps the first of equal values
        out.append({**best, "lr_grid": [r.get("lr") for r in runs]})
    return out


def _holdout_auc(result: dict) -> float:
    auc = result.get("holdout_auc")
    return -math.inf if auc is None or math.isnan(auc) else float(auc)
