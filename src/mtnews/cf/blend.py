"""The content + CF blend: z(content) + w * z(cf) within each impression.

Both scores are z-scored per impression (mean 0, std 1 over its candidates; an impression where a score
is constant gets 0 for it), so w is a trade-off between two unit-free rankings and one w fits impressions
with 5 or 250 candidates alike. z-scoring, not ranks, keeps the size of a CF lead: one candidate clicked
by many neighbours stands far above the rest, where rank normalisation would flatten it to one step.

w is chosen on the selection holdout (`data.holdout.split_holdout`, the last hours of the train log),
never on the reported split: the grid value with the best holdout AUC, the smallest w on a tie.
"""

from __future__ import annotations

import numpy as np

from mtnews.evaluate.metrics import ranking_metrics

WEIGHT_GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


def zscore(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per-impression z-scores of flat `scores` with CSR `offsets`."""
    scores = np.asarray(scores, dtype=np.float64)
    lengths = np.diff(offsets)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    n = np.maximum(lengths, 1)
    mean = np.bincount(owner, scores, minlength=len(lengths)) / n
    centred = scores - mean[owner]
    std = np.sqrt(np.bincount(owner, centred * centred, minlength=len(lengths)) / n)
    # A constant score (std 0, or round-off around it) carries no ranking: it contributes 0.
    flat = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
    return np.where(flat[owner], 0.0, centred / np.where(flat, 1.0, std)[owner])


def blend(content: np.ndarray, cf: np.ndarray, offsets: np.ndarray, weight: float) -> np.ndarray:
    return zscore(content, offsets) + weight * zscore(cf, offsets)


def fit_weight(content: np.ndarray, cf: np.ndarray, labels: np.ndarray, offsets: np.ndarray,
               grid: tuple[float, ...] = WEIGHT_GRID) -> tuple[float, dict[float, float]]:
    """(the best w of `grid` by AUC, AUC per w) on labelled impressions."""
    zc, zf = zscore(content, offsets), zscore(cf, offsets)
    aucs = {float(w): float(ranking_metrics(labels, zc + w * zf, offsets)["auc"]) for w in grid}
    best = max(aucs.values())
    return min(w for w, a in aucs.items() if a == best), aucs
