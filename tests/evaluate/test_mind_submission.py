"""MIND submission zip (`prediction.zip` / `prediction.txt`): format, ranks, streaming, atomicity, reading back."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from mtnews.evaluate.mind_submission import (
    MEMBER,
    MindPredictionWriter,
    read_mind_predictions,
    write_mind_predictions,
    zip_mind_predictions_text,
)
from mtnews.evaluate.submission import PredictionFileError, render_predictions, write_predictions


def member_text(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == [MEMBER]
        return zf.read(MEMBER).decode("ascii")


def brute_force_ranks(scores: np.ndarray) -> list[int]:
    """Rank of each position: 1 + how many score higher, or equal and earlier (no argsort involved)."""
    return [1 + sum(1 for j, t in enumerate(scores) if t > s or (t == s and j < i)) for i, s in enumerate(scores)]


def test_member_name_and_exact_lines(tmp_path):
    path = write_mind_predictions([1, 2, 3], [[0.1, 0.9, 0.3], [2, 2, 1], [5.0]], tmp_path / "prediction.zip")
    assert MEMBER == "prediction.txt"
    assert member_text(path) == "1 [3,1,2]\n2 [1,2,3]\n3 [1]\n"


def test_streamed_round_trip_ranks_match_argsort_and_brute_force(tmp_path):
    rng = np.random.default_rng(0)
    m = 400
    ids = np.arange(1, m + 1, dtype=np.uint64)  # MIND impression ids: 1..N in behaviors.tsv order
    scores = [rng.integers(0, 5, int(rng.integers(1, 30))).astype(np.float64) for _ in range(m)]
    path = tmp_path / "prediction.zip"
    with MindPredictionWriter(path) as w:
        for s in range(0, m, 97):  # chunks that do not divide m
            w.write_chunk(ids[s:s + 97], scores[s:s + 97])
    assert w.impressions_written == m
    got_ids, got_ranks = read_mind_predictions(path)
    np.testing.assert_array_equal(got_ids, ids)
    for r, s in zip(got_ranks, scores):
        np.testing.assert_array_equal(r, np.argsort(np.argsort(-s, kind="stable"), kind="stable") + 1)
        assert r.tolist() == brute_force_ranks(s)
    # One implementation of the lines: the same text as the RecSys'24 writer, under another member name.
    recsys = write_predictions(ids, scores, tmp_path / "predictions.zip")
    with zipfile.ZipFile(recsys) as zf:
        assert zf.read("predictions.txt").decode("ascii") == member_text(path)


def test_flat_scores_with_offsets_give_the_same_bytes(tmp_path):
    scores = [np.array([0.3, 0.1]), np.array([0.5, 0.9, 0.7])]
    a = write_mind_predictions([5, 6], scores, tmp_path / "a.zip")
    b = write_mind_predictions([5, 6], np.concatenate(scores), tmp_path / "b.zip", offsets=[0, 2, 5])
    assert a.read_bytes() == b.read_bytes()


def test_finished_text_is_zipped_like_the_writer(tmp_path):
    ids, scores = [4, 9], [[0.2, 0.8], [0.1, 0.4, 0.3]]
    text, n = render_predictions(ids, scores)
    txt = tmp_path / "prediction.txt.partial"
    txt.write_bytes(text)
    zipped = zip_mind_predictions_text(txt, tmp_path / "z.zip")
    assert n == 2
    assert zipped.read_bytes() == write_mind_predictions(ids, scores, tmp_path / "w.zip").read_bytes()


def test_error_leaves_nothing_behind(tmp_path):
    path = tmp_path / "prediction.zip"
    with pytest.raises(ValueError, match="non-finite"):
        with MindPredictionWriter(path) as w:
            w.write_chunk([1], [[0.3, 0.4]])
            w.write_chunk([2], [[np.nan, 0.4]])
    assert list(tmp_path.iterdir()) == []


def test_reading_checks_member_and_lines(tmp_path):
    recsys = write_predictions([1], [[0.2, 0.1]], tmp_path / "predictions.zip")
    with pytest.raises(PredictionFileError, match="no member 'prediction.txt'"):
        read_mind_predictions(recsys)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(MEMBER, "1 [1,2]\n2 [2,2]\n")
    with pytest.raises(PredictionFileError, match=r"bad\.zip:2: ranks are not a permutation of 1\.\.n"):
        read_mind_predictions(bad)
