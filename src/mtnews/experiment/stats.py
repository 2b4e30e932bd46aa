"""Per-variant mean ± std over seeds, and which differences to `mtrec` exceed the seed-to-seed noise.

std is the sample standard deviation (ddof=1) over a variant's seeds; with one seed it is undefined (nan).

Noise rule: a variant differs from mtrec on a metric when |mean_v - mean_mtrec| > 2 * sqrt(sd_v^2 + sd_mtrec^2).
sqrt(sd_v^2 + sd_mtrec^2) is the standard deviation of the difference between *one* run of each, so the
rule asks for a gap larger than two single-run noise widths. It is deliberately stricter than a t-test on
the means (which would divide by sqrt(n)): with 2-3 seeds the std itself is very uncertain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mtnews.evaluate.metrics import METRIC_NAMES
from mtnews.experiment.variants import ORDER

METRICS = METRIC_NAMES
REFERENCE = "mtrec"
SEED_CLAIM_AUC = 0.003  # the poster: ablation deltas of ~0.3 AUC points are within noise


def mean_std(values) -> tuple[float, float]:
    x = np.asarray(list(values), dtype=float)
    if len(x) == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else math.nan


@dataclass
class Row:
    variant: str
    n: int
    mean: dict[str, float]
    std: dict[str, float]
    sec_per_step: float = math.nan
    samples_per_s: float = math.nan
    seconds: float = math.nan  # mean wall seconds of a run (train + evaluation)
    trained: bool = True


def aggregate(results: list[dict]) -> list[Row]:
    """One row per variant in table order, from result.json dicts."""
    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["variant"], []).append(r)
    rows = []
    for name in [v for v in ORDER if v in by]:
        rs = by[name]
        mean, std = {}, {}
        for m in METRICS:
            mean[m], std[m] = mean_std(r["metrics"][m] for r in rs)
        trained = rs[0].get("seed") is not None
        timing = {}
        if trained:
            timing = {"sec_per_step": mean_std(r["sec_per_step"] for r in rs)[0],
                      "samples_per_s": mean_std(r["samples_per_s"] for r in rs)[0]}
        rows.append(Row(name, len(rs), mean, std, seconds=mean_std(r["seconds"] for r in rs)[0],
                        trained=trained, **timing))
    return rows


@dataclass
class Difference:
    variant: str
    metric: str
    delta: float  # mean_v - mean_mtrec
    threshold: float  # 2 * sqrt(sd_v^2 + sd_mtrec^2); nan when a std is undefined
    exceeds: bool | None  # None: not decidable (fewer than two seeds on a side)


def differences(rows: list[Row], reference: str = REFERENCE) -> list[Difference]:
    """Every trained variant vs the reference, per metric."""
    ref = next((r for r in rows if r.variant == reference), None)
    if ref is None:
        return []
    out = []
    for row in rows:
        if row.variant == reference or not row.trained:
            continue
        for m in METRICS:
            delta = row.mean[m] - ref.mean[m]
            threshold = 2 * math.sqrt(row.std[m] ** 2 + ref.std[m] ** 2)
            exceeds = None if math.isnan(threshold) else abs(delta) > threshold
            out.append(Difference(row.variant, m, delta, threshold, exceeds))
    return out


def pooled_auc_std(rows: list[Row]) -> float:
    """Seed-to-seed AUC std pooled over the trained variants (root mean of their variances)."""
    var = [r.std["auc"] ** 2 for r in rows if r.trained and not math.isnan(r.std["auc"])]
    return math.sqrt(sum(var) / len(var)) if var else math.nan
