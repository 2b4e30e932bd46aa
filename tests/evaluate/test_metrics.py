"""Vectorised ranking metrics vs. independent per-impression references (scikit-learn + brute force)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mtnews.evaluate import MetricAccumulator, ranking_metrics
from mtnews.evaluate.metrics import descending_order

KEYS = ("auc", "mrr", "ndcg@5", "ndcg@10")


def reference_metrics(labels: list[np.ndarray], scores: list[np.ndarray]) -> dict:
    """Plain per-impression loop written straight from the definitions (ties: earlier position first)."""
    per = {k: [] for k in KEYS}
    skipped = 0
    for y, s in zip(labels, scores):
        y = [int(v) for v in y]
        s = [float(v) for v in s]
        if sum(y) == 0 or sum(y) == len(y):
            skipped += 1
            continue
        per["auc"].append(roc_auc_score(y, s))
        ranked = sorted(range(len(y)), key=lambda i: (-s[i], i))
        ranked_y = [y[i] for i in ranked]
        per["mrr"].append(sum(r / (i + 1) for i, r in enumerate(ranked_y)) / sum(y))
        ideal_y = sorted(y, reverse=True)
        for k in (5, 10):
            dcg = sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(ranked_y[:k]))
            idcg = sum((2**r - 1) / math.log2(i + 2) for i, r in enumerate(ideal_y[:k]))
            per[f"ndcg@{k}"].append(dcg / idcg)
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in per.items()}
    out["impressions"] = len(per["auc"])
    out["skipped"] = skipped
    return out


def random_impressions(rng: np.random.Generator, m: int, ties: bool) -> tuple[list, list]:
    labels, scores = [], []
    for _ in range(m):
        n = int(rng.integers(2, 101))
        y = np.zeros(n, dtype=np.int64)
        kind = rng.random()
        if kind < 0.1:
            pass  # no click: must be skipped
        elif kind < 0.15:
            y[:] = 1  # only clicks: must be skipped
        else:
            clicks = int(rng.integers(1, min(n, 6)))
            y[rng.choice(n, clicks, replace=False)] = 1
        s = rng.integers(0, 4, n).astype(np.float64) if ties else rng.normal(size=n)
        labels.append(y)
        scores.append(s)
    return labels, scores


def flatten(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    return (np.concatenate(rows) if rows else np.zeros(0)), offsets


def assert_matches(got: dict, want: dict) -> None:
    assert got["impressions"] == want["impressions"]
    assert got["skipped"] == want["skipped"]
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cases_match_references_in_both_layouts(seed: int, ties: bool) -> None:
    labels, scores = random_impressions(np.random.default_rng(seed), 150, ties)
    want = reference_metrics(labels, scores)
    assert want["skipped"] > 0
    assert_matches(ranking_metrics(labels, scores), want)
    y, off = flatten(labels)
    s, _ = flatten(scores)
    assert_matches(ranking_metrics(y, s, off), want)


def test_short_impressions_and_k_capped_at_length() -> None:
    rng = np.random.default_rng(5)
    labels, scores = [], []
    for n in [2, 3, 4, 5, 6, 9, 10, 11] * 10:
        y = np.zeros(n, dtype=np.int64)
        y[rng.choice(n, int(rng.integers(1, n)), replace=False)] = 1
        labels.append(y)
        scores.append(rng.integers(0, 3, n).astype(float))
    assert_matches(ranking_metrics(labels, scores), reference_metrics(labels, scores))


def test_hand_computed_perfect_ranking() -> None:
    got = ranking_metrics([np.array([0, 1, 0])], [np.array([0.1, 0.9, 0.3])])
    assert got == {"auc": 1.0, "mrr": 1.0, "ndcg@5": 1.0, "ndcg@10": 1.0, "impressions": 1, "skipped": 0}


def test_hand_computed_worst_ranking() -> None:
    got = ranking_metrics([[1, 0, 0]], [[0.1, 0.9, 0.3]])
    assert got["auc"] == 0.0
    assert got["mrr"] == pytest.approx(1 / 3)
    assert got["ndcg@5"] == pytest.approx(1 / math.log2(4))


def test_hand_computed_with_tie() -> None:
    # Clicked item 1 ties with unclicked item 0; clicked item 3 is last.
    # AUC pairs: (1,0) tie = 1/2, (1,2) = 1, (3,0) = 0, (3,2) = 0  ->  1.5 / 4.
    # Ranking with position tie-break: 0, 1, 2, 3 -> clicks at ranks 2 and 4.
    got = ranking_metrics([[0, 1, 0, 1]], [[0.5, 0.5, 0.3, 0.1]])
    assert got["auc"] == pytest.approx(0.375)
    assert got["mrr"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert got["ndcg@5"] == pytest.approx(dcg / idcg)
    assert got["ndcg@10"] == pytest.approx(dcg / idcg)


def test_tie_break_prefers_earlier_position() -> None:
    # Identical scores: the click at position 0 ranks first, at position 2 ranks third.
    assert ranking_metrics([[1, 0, 0]], [[1.0, 1.0, 1.0]])["mrr"] == 1.0
    assert ranking_metrics([[0, 0, 1]], [[1.0, 1.0, 1.0]])["mrr"] == pytest.approx(1 / 3)
    assert ranking_metrics([[0, 0, 1]], [[1.0, 1.0, 1.0]])["auc"] == 0.5


def test_ndcg_cutoff_at_five() -> None:
    # Single click at rank 7: outside the top 5, inside the top 10.
    y = np.zeros(8, dtype=int)
    y[6] = 1
    got = ranking_metrics([y], [-np.arange(8.0)])
    assert got["ndcg@5"] == 0.0
    assert got["ndcg@10"] == pytest.approx(1 / math.log2(8))


def test_single_class_impressions_are_skipped_and_counted() -> None:
    got = ranking_metrics([[0, 0], [1, 1, 1], [0, 1]], [[0.1, 0.2], [0.3, 0.2, 0.1], [0.9, 0.1]])
    assert got["impressions"] == 1
    assert got["skipped"] == 2
    assert got["auc"] == 0.0


def test_all_skipped_gives_nan_not_zero() -> None:
    got = ranking_metrics([[0, 0], [1]], [[0.1, 0.2], [0.3]])
    assert got["impressions"] == 0 and got["skipped"] == 2
    assert all(math.isnan(got[k]) for k in KEYS)


def test_accepts_bool_labels_and_integer_scores() -> None:
    got = ranking_metrics([np.array([False, True, False])], [np.array([1, 3, 2])])
    assert got["auc"] == 1.0


@pytest.mark.parametrize("chunk_sizes", [[1] * 7, [3, 0, 4], [7], [2, 5]])
def test_accumulator_equals_one_shot_exactly(chunk_sizes: list[int]) -> None:
    labels, scores = random_impressions(np.random.default_rng(11), 7, ties=True)
    labels2, scores2 = random_impressions(np.random.default_rng(12), 200, ties=False)
    labels, scores = labels + labels2, scores + scores2
    want = ranking_metrics(labels, scores)
    acc = MetricAccumulator()
    start = 0
    for size in chunk_sizes + [len(labels) - sum(chunk_sizes)]:
        y, off = flatten(labels[start : start + size])
        s, _ = flatten(scores[start : start + size])
        acc.update(y, s, off)
        start += size
    assert acc.impressions_seen == len(labels)
    assert acc.result() == want  # bit-for-bit, not approximately


def test_accumulator_accepts_ragged_chunks_and_empty_result() -> None:
    acc = MetricAccumulator()
    assert acc.result()["impressions"] == 0
    acc.update([[0, 1]], [[0.2, 0.4]])
    acc.update([[1, 0, 0]], [[0.2, 0.4, 0.1]])
    assert acc.result() == ranking_metrics([[0, 1], [1, 0, 0]], [[0.2, 0.4], [0.2, 0.4, 0.1]])


def test_descending_order_matches_lexsort() -> None:
    rng = np.random.default_rng(3)
    lengths = np.concatenate([rng.integers(1, 30, 500), [300, 1, 1]])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    scores = rng.integers(0, 5, offsets[-1]).astype(float)
    imp = np.repeat(np.arange(lengths.size), lengths)
    np.testing.assert_array_equal(descending_order(scores, offsets), np.lexsort((-scores, imp)))


@pytest.mark.parametrize(
    ("labels", "scores", "offsets", "match"),
    [
        ([[0, 1]], [[0.1, 0.2, 0.3]], None, r"impression 0: 2 labels but 3 scores"),
        ([[0, 1], [1, 0]], [[0.1, 0.2]], None, r"labels has 2 impressions but scores has 1"),
        ([[0, 1], []], [[0.1, 0.2], []], None, r"impression 1 is empty"),
        ([[0, 1]], [[0.1, np.nan]], None, r"non-finite score nan in impression 0"),
        ([[0, 1], [1, 0]], [[0.1, 0.2], [np.inf, 0]], None, r"non-finite score inf in impression 1"),
        ([[0, 2]], [[0.1, 0.2]], None, r"binary 0/1, found 2 in impression 0"),
        ([[0, 0.5]], [[0.1, 0.2]], None, r"binary"),
        ([0, 1], [0.1, 0.2], None, r"sequence of 1-D arrays"),
        ([[[0, 1]]], [[[0.1, 0.2]]], None, r"1-D"),
        (np.array([0, 1]), np.array([0.1, 0.2]), [1, 2], r"offsets must start at 0 and end at 2"),
        (np.array([0, 1]), np.array([0.1, 0.2]), [0, 3], r"offsets must start at 0 and end at 2"),
        (np.array([0, 1, 1]), np.array([0.1, 0.2, 0.3]), [0, 2, 1, 3], r"non-decreasing"),
        (np.array([0, 1]), np.array([0.1, 0.2]), [0.0, 2.0], r"integer"),
        (np.array([[0, 1]]), np.array([[0.1, 0.2]]), [0, 2], r"flat 1-D array"),
        (np.array([0, 1]), np.array(["a", "b"]), [0, 2], r"scores: values must be numeric"),
    ],
)
def test_bad_input_raises_clear_value_error(labels, scores, offsets, match) -> None:
    with pytest.raises(ValueError, match=match):
        ranking_metrics(labels, scores, offsets)
