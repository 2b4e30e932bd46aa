"""recall@K / nDCG@K of whole-pool retrieval, against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mtnews.retrieval.metrics import RetrievalAccumulator, per_impression, report_ks, segment_of


def test_hand_computed_recall_and_ndcg():
    # Impression 0: 2 clicks, hits at ranks 1 and 3 (0-based 0, 2). Impression 1: 3 clicks (one out of the
    # pool), one hit at rank 2. Impression 2: a click retrieved nowhere.
    hits = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
    n_clicked = np.array([2, 3, 1])
    got = per_impression(hits, n_clicked, [2, 4])
    d = [1 / math.log2(r + 2) for r in range(4)]
    assert got["recall@2"].tolist() == pytest.approx([0.5, 1 / 3, 0.0])
    assert got["recall@4"].tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert got["ndcg@2"].tolist() == pytest.approx([d[0] / (d[0] + d[1]), d[1] / (d[0] + d[1]), 0.0])
    assert got["ndcg@4"].tolist() == pytest.approx([(d[0] + d[2]) / (d[0] + d[1]), d[1] / (d[0] + d[1] + d[2]), 0.0])


def test_accumulator_segments_skips_and_out_of_pool():
    acc = RetrievalAccumulator([1, 2])
    acc.skip(empty_pool=2, no_click=1)
    acc.update(np.array([[1, 0], [0, 0], [0, 1]], dtype=bool), np.array([1, 2, 1]), n_in_pool=np.array([1, 0, 1]),
               pool_sizes=np.array([10, 20, 30]), history_length=np.array([0, 3, 7]))
    r = acc.result()
    assert r["evaluated"] == 3 and r["skipped_empty_pool"] == 2 and r["skipped_no_click"] == 1
    assert r["out_of_pool"] == pytest.approx(2 / 4) and r["mean_pool_size"] == pytest.approx(20)
    assert r["recall@1"] == pytest.approx(1 / 3) and r["recall@2"] == pytest.approx(2 / 3)
    assert r["segments"]["cold"]["recall@1"] == 1.0 and r["segments"]["1-4"]["recall@2"] == 0.0
    assert r["segments"]["5+"]["ndcg@2"] == pytest.approx(1 / math.log2(3))
    assert [s["impressions"] for s in r["segments"].values()] == [1, 1, 1]


def test_reported_ks_and_segments():
    assert report_ks(100) == [10, 50, 100] and report_ks(20) == [10, 20] and report_ks(5) == [5]
    assert report_ks(200) == [10, 50, 100, 200]
    assert segment_of(np.array([0, 1, 4, 5, 90])).tolist() == [0, 1, 1, 2, 2]
