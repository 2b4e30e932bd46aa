"""Exact ranking metrics (AUC, MRR, nDCG@5, nDCG@10) over ragged impressions, vectorised with numpy.

Definitions follow ebnerd-benchmark's ``MetricEvaluator``: each metric is computed per impression and
the results are averaged with equal weight per impression.

* AUC: scikit-learn ``roc_auc_score`` semantics, i.e. a (clicked, not clicked) pair scores 1 when the
  clicked item has the higher score and 1/2 on a tie. Computed as the Mann-Whitney U statistic from
  tie-averaged ranks.
* MRR: items ordered by descending score; ``sum(y / rank) / sum(y)``.
* nDCG@k: gain ``2**y - 1``, discount ``log2(rank + 1)``, ``k`` capped at the list length, divided by the
  DCG of the ideal ordering.

Ties in MRR and nDCG are broken by in-view position: among equal scores the item shown earlier ranks
higher. (ebnerd-benchmark's ``np.argsort(s)[::-1]`` leaves tie order to the sort algorithm; a fixed rule
makes results reproducible.) AUC needs no tie-break because tied pairs count 1/2.

Impressions whose labels are all 0 or all 1 have no defined AUC; they are excluded from every metric
and counted under ``"skipped"`` so that all four metrics average over the same impressions.

Labels must be binary (0/1), so the gain of a clicked item is exactly 1 and the ideal DCG depends only
on the number of clicks.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

NDCG_KS = (5, 10)
METRIC_NAMES = ("auc", "mrr", *(f"ndcg@{k}" for k in NDCG_KS))

ArrayLike = np.ndarray | Sequence


class Ragged(NamedTuple):
    """Flat values of many variable-length rows plus CSR ``offsets`` (row ``i`` is ``flat[offsets[i]:offsets[i+1]]``)."""

    flat: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return self.offsets.size - 1


def as_ragged(values: ArrayLike, offsets: ArrayLike | None, name: str) -> Ragged:
    """Normalise a sequence of 1-D arrays, or a flat 1-D array plus ``offsets``, to a :class:`Ragged`.

    Raises ValueError when the structure is malformed (non-1-D rows, bad offsets, empty rows).
    """
    if offsets is None:
        flat, offs = _concat_rows(values, name)
    else:
        flat = np.asarray(values)
        if flat.ndim != 1:
            raise ValueError(f"{name}: with offsets, expected a flat 1-D array, got shape {flat.shape}")
        offs = _check_offsets(offsets, flat.size, name)
    lengths = np.diff(offs)
    if lengths.size and lengths.min() == 0:
        first = int(np.flatnonzero(lengths == 0)[0])
        raise ValueError(f"{name}: impression {first} is empty; every impression needs at least one item")
    return Ragged(flat, offs)


def _concat_rows(rows: ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    except TypeError as exc:
        raise ValueError(
            f"{name}: expected a sequence of 1-D arrays (one per impression); pass offsets=... for a flat array"
        ) from exc
    offs = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offs[1:])
    if lengths.size == 0:
        return np.zeros(0), offs
    try:
        flat = np.concatenate(rows)
    except ValueError as exc:
        raise ValueError(f"{name}: every impression must be a 1-D array ({exc})") from exc
    if flat.ndim != 1 or flat.size != offs[-1]:
        raise ValueError(f"{name}: every impression must be a 1-D array, got rows of shape {np.shape(rows[0])}")
    return flat, offs


def _check_offsets(offsets: ArrayLike, n: int, name: str) -> np.ndarray:
    offs = np.asarray(offsets)
    if offs.ndim != 1 or offs.size == 0 or offs.dtype.kind not in "iu":
        raise ValueError(f"{name}: offsets must be a non-empty 1-D integer array of length n_impressions + 1")
    offs = offs.astype(np.int64, copy=False)
    if offs[0] != 0 or offs[-1] != n:
        raise ValueError(f"{name}: offsets must start at 0 and end at {n} (the flat length), got {offs[0]}..{offs[-1]}")
    if np.any(offs[1:] < offs[:-1]):
        raise ValueError(f"{name}: offsets must be non-decreasing")
    return offs


def validate_scores(scores: Ragged, name: str = "scores") -> np.ndarray:
    """Return the scores as float64, raising ValueError if any is NaN or infinite."""
    try:
        s = scores.flat.astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: values must be numeric ({exc})") from exc
    bad = ~np.isfinite(s)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        imp = int(np.searchsorted(scores.offsets, i, side="right") - 1)
        raise ValueError(f"{name}: non-finite score {s[i]} in impression {imp}")
    return s


def descending_order(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Permutation that sorts every impression by descending score while keeping it in its own slice.

    Within an impression, equal scores keep their in-view order (stable). The result ``o`` satisfies:
    ``o[offsets[i]:offsets[i+1]]`` lists impression ``i``'s flat indices from best to worst.

    One global lexsort over tens of millions of items is several times slower than sorting short rows, so
    impressions are grouped by length and each group is sorted as a 2-D block; the Python loop runs once
    per distinct length, not per impression.
    """
    lengths = np.diff(offsets)
    order = np.empty(scores.size, dtype=np.int64)
    if lengths.size == 0:
        return order
    # uint16 keys let numpy use radix sort for the grouping when no impression is very long.
    key = lengths.astype(np.uint16) if lengths.max() < 2**16 else lengths
    by_len = np.argsort(key, kind="stable")
    sorted_len = lengths[by_len]
    bounds = np.concatenate(([0], np.flatnonzero(np.diff(sorted_len)) + 1, [by_len.size]))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        group = by_len[lo:hi]
        width = int(sorted_len[lo])
        rows = offsets[group][:, None] + np.arange(width)
        if width == 1:
            order[rows] = rows
            continue
        within = np.argsort(-scores[rows], axis=1, kind="stable")
        order[rows] = np.take_along_axis(rows, within, axis=1)
    return order


def within_impression_positions(offsets: np.ndarray) -> np.ndarray:
    """0-based position of every flat element inside its impression."""
    lengths = np.diff(offsets)
    return np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)


class ImpressionMetrics(NamedTuple):
    """Per-impression metric values for the impressions that were scored (rows follow METRIC_NAMES)."""

    values: np.ndarray  # shape (len(METRIC_NAMES), n_scored), float64
    skipped: int


def impression_metrics(labels: Ragged, scores: Ragged) -> ImpressionMetrics:
    """Compute every metric for every impression with both a click and a non-click.

    ``labels`` and ``scores`` must share offsets. Returns the per-impression values (in impression order)
    and the number of single-class impressions that were skipped.
    """
    clicked, s, offs = _validate_pair(labels, scores)
    m = offs.size - 1
    if m == 0:
        return ImpressionMetrics(np.zeros((len(METRIC_NAMES), 0)), 0)
    lengths = np.diff(offs)
    starts = offs[:-1]

    order = descending_order(s, offs)
    s_o = s[order]
    # Every metric is a sum over clicked items only, so after sorting just the clicks (~1 in 8 items) are
    # followed: their sorted flat index, impression and 0-based descending position.
    hit = np.flatnonzero(clicked[order])
    imp = np.searchsorted(offs, hit, side="right") - 1
    pos = hit - offs[imp]

    clicks = np.bincount(imp, minlength=m)
    scored = (clicks > 0) & (clicks < lengths)
    c = clicks[scored].astype(np.float64)
    non = lengths[scored] - c

    # Tie runs: maximal stretches of equal score inside one impression of the sorted layout. A click's
    # tie-averaged descending position is the midpoint of its run.
    new_run = np.empty(s_o.size, dtype=bool)
    new_run[0] = True
    np.not_equal(s_o[1:], s_o[:-1], out=new_run[1:])
    new_run[starts] = True
    run_starts = np.flatnonzero(new_run)
    run = np.searchsorted(run_starts, hit, side="right") - 1
    last_run = run + 1 == run_starts.size
    run_stop = np.where(last_run, s_o.size, run_starts[np.minimum(run + 1, run_starts.size - 1)])
    mid = (run_starts[run] + run_stop - 1) * 0.5 - offs[imp]
    # Ascending 1-based average rank = L - midpoint; Mann-Whitney U = rank sum of clicks - c(c+1)/2.
    rank_sum = np.bincount(imp, weights=lengths[imp] - mid, minlength=m)[scored]
    auc = (rank_sum - c * (c + 1) * 0.5) / (c * non)

    mrr = np.bincount(imp, weights=1.0 / (pos + 1.0), minlength=m)[scored] / c

    # Division (not a precomputed reciprocal) matches the reference's gains / log2(rank + 1) bit for bit.
    log_disc = np.log2(np.arange(2, int(lengths.max()) + 2, dtype=np.float64))
    gain = 1.0 / log_disc[pos]
    values = [auc, mrr]
    for k in NDCG_KS:
        dcg = np.bincount(imp, weights=np.where(pos < k, gain, 0.0), minlength=m)[scored]
        ideal_prefix = np.concatenate(([0.0], np.cumsum(1.0 / log_disc[:k])))
        ideal = ideal_prefix[np.minimum(clicks[scored], min(k, log_disc.size))]
        values.append(dcg / ideal)
    return ImpressionMetrics(np.vstack(values), int(m - np.count_nonzero(scored)))


def _validate_pair(labels: Ragged, scores: Ragged) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(labels) != len(scores):
        raise ValueError(f"labels has {len(labels)} impressions but scores has {len(scores)}")
    if not np.array_equal(labels.offsets, scores.offsets):
        diff = np.flatnonzero(labels.lengths != scores.lengths)
        first = int(diff[0]) if diff.size else 0
        raise ValueError(
            f"impression {first}: {labels.lengths[first]} labels but {scores.lengths[first]} scores"
        )
    y = labels.flat
    if y.dtype.kind not in "biuf":
        raise ValueError(f"labels: values must be 0 or 1, got dtype {y.dtype}")
    if y.dtype.kind != "b":
        bad = (y != 0) & (y != 1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            imp = int(np.searchsorted(labels.offsets, i, side="right") - 1)
            raise ValueError(f"labels: must be binary 0/1, found {y[i].item()!r} in impression {imp}")
        y = y != 0
    return y, validate_scores(scores), labels.offsets


def summarise(values: np.ndarray, skipped: int) -> dict:
    """Average per-impression values (rows in METRIC_NAMES order) into the result dict.

    With no scored impressions the metric means are NaN (undefined), never 0.
    """
    n = values.shape[1]
    out: dict = {}
    for name, row in zip(METRIC_NAMES, values):
        out[name] = float(np.mean(row)) if n else float("nan")
    out["impressions"] = int(n)
    out["skipped"] = int(skipped)
    return out


def ranking_metrics(labels: ArrayLike, scores: ArrayLike, offsets: ArrayLike | None = None) -> dict:
    """AUC, MRR, nDCG@5 and nDCG@10 averaged over impressions.

    Args:
        labels: binary click labels, either one 1-D array per impression or (with ``offsets``) one flat array.
        scores: model scores in the same layout; must be finite.
        offsets: CSR offsets of length n_impressions + 1 for the flat layout, else None.

    Returns:
        ``{"auc", "mrr", "ndcg@5", "ndcg@10"}`` as floats, ``"impressions"`` (how many were averaged) and
        ``"skipped"`` (impressions with only clicks or no click, excluded from every metric). With no
        scored impressions the four means are NaN.

    Ties: AUC counts a tied (clicked, not clicked) pair as 1/2; MRR and nDCG rank equal scores by in-view
    position, the earlier item first.

    Raises:
        ValueError: mismatched lengths, empty impressions, non-binary labels or non-finite scores.
    """
    res = impression_metrics(as_ragged(labels, offsets, "labels"), as_ragged(scores, offsets, "scores"))
    return summarise(res.values, res.skipped)


class MetricAccumulator:
    """Streaming version of :func:`ranking_metrics`: feed chunks with :meth:`update`, read :meth:`result`.

    Stores the per-impression values (4 floats per scored impression) so that the final averages are
    bit-for-bit the same as one call over all impressions, however the data was chunked.
    """

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._skipped = 0

    def update(self, labels: ArrayLike, scores: ArrayLike, offsets: ArrayLike | None = None) -> None:
        """Add a chunk of whole impressions, in either input layout accepted by :func:`ranking_metrics`."""
        res = impression_metrics(as_ragged(labels, offsets, "labels"), as_ragged(scores, offsets, "scores"))
        self._chunks.append(res.values)
        self._skipped += res.skipped

    @property
    def impressions_seen(self) -> int:
        """Impressions added so far, scored or skipped."""
        return sum(c.shape[1] for c in self._chunks) + self._skipped

    def result(self) -> dict:
        """The same dict :func:`ranking_metrics` would return for all chunks concatenated."""
        if self._chunks:
            values = np.concatenate(self._chunks, axis=1)
        else:
            values = np.zeros((len(METRIC_NAMES), 0))
        return summarise(values, self._skipped)
