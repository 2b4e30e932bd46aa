"""RecSys'24 submission zip: format, ranks, determinism, streaming, atomicity and error reporting."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from mtnews.errors import DataError
from mtnews.evaluate import PredictionWriter, read_predictions, write_predictions
from mtnews.evaluate.submission import MEMBER, PredictionFileError


def random_scores(seed: int, m: int) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2**32, m, dtype=np.uint64)
    scores = [rng.integers(0, 4, int(rng.integers(1, 40))).astype(np.float32) for _ in range(m)]
    return ids, scores


def flatten(rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    return np.concatenate(rows), offsets


def member_text(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return zf.read(MEMBER).decode("ascii")


def expected_ranks(s: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(-s, kind="stable"), kind="stable") + 1


def test_exact_line_format(tmp_path: Path) -> None:
    path = write_predictions([7, 3, 12], [[0.1, 0.9, 0.3], [2, 2, 1], [5.0]], tmp_path / "predictions.zip")
    assert member_text(path) == "7 [3,1,2]\n3 [1,2,3]\n12 [1]\n"
    with zipfile.ZipFile(path) as zf:
        (info,) = zf.infolist()
    assert info.filename == "predictions.txt"
    assert info.compress_type == zipfile.ZIP_DEFLATED
    assert info.date_time == (1980, 1, 1, 0, 0, 0)


def test_round_trip_both_layouts(tmp_path: Path) -> None:
    ids, scores = random_scores(0, 300)
    flat, offsets = flatten(scores)
    a = write_predictions(ids, scores, tmp_path / "a.zip")
    b = write_predictions(ids, flat, tmp_path / "b.zip", offsets=offsets)
    assert a.read_bytes() == b.read_bytes()
    got_ids, got_ranks = read_predictions(a)
    np.testing.assert_array_equal(got_ids, ids)
    assert len(got_ranks) == len(scores)
    for r, s in zip(got_ranks, scores):
        np.testing.assert_array_equal(r, expected_ranks(s))
        np.testing.assert_array_equal(np.sort(r), np.arange(1, len(s) + 1))


def test_ties_rank_by_in_view_position(tmp_path: Path) -> None:
    path = write_predictions([1], [[0.5, 0.7, 0.5, 0.7, 0.5]], tmp_path / "p.zip")
    assert member_text(path) == "1 [3,1,4,2,5]\n"


def test_same_input_gives_byte_identical_zip_however_chunked(tmp_path: Path) -> None:
    ids, scores = random_scores(1, 500)
    one = write_predictions(ids, scores, tmp_path / "one.zip").read_bytes()
    assert write_predictions(ids, scores, tmp_path / "again.zip").read_bytes() == one
    with PredictionWriter(tmp_path / "chunked.zip") as w:
        for lo, hi in [(0, 1), (1, 1), (1, 250), (250, 500)]:
            flat, offsets = flatten(scores[lo:hi]) if hi > lo else (np.zeros(0), np.zeros(1, np.int64))
            w.write_chunk(ids[lo:hi], flat, offsets)
    assert w.impressions_written == 500
    assert (tmp_path / "chunked.zip").read_bytes() == one


def test_repeated_impression_ids_are_kept(tmp_path: Path) -> None:
    # The official test split repeats id 0 for beyond-accuracy impressions.
    path = write_predictions([0, 0], [[1.0, 2.0], [3.0, 1.0]], tmp_path / "p.zip")
    ids, ranks = read_predictions(path)
    np.testing.assert_array_equal(ids, [0, 0])
    assert [r.tolist() for r in ranks] == [[2, 1], [1, 2]]


def test_empty_submission_round_trips(tmp_path: Path) -> None:
    path = write_predictions(np.zeros(0, np.int64), [], tmp_path / "p.zip")
    ids, ranks = read_predictions(path)
    assert ids.size == 0 and ranks == []


def test_exception_mid_write_leaves_nothing(tmp_path: Path) -> None:
    ids, scores = random_scores(2, 50)
    with pytest.raises(RuntimeError, match="boom"):
        with PredictionWriter(tmp_path / "p.zip") as w:
            w.write_chunk(ids[:25], scores[:25])
            assert any(tmp_path.iterdir())  # the temp text file exists while writing
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_bad_chunk_keeps_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = write_predictions([1], [[0.2, 0.1]], tmp_path / "p.zip")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="non-finite"):
        with PredictionWriter(path) as w:
            w.write_chunk([5], [[0.3, 0.4]])
            w.write_chunk([6], [[np.nan, 0.4]])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zip"]


def test_failure_while_zipping_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_zip(txt: Path, zip_path: Path, compresslevel: int, member: str) -> None:
        zip_path.write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr("mtnews.evaluate.submission._zip_text", broken_zip)
    with pytest.raises(OSError, match="disk full"):
        write_predictions([1], [[0.2, 0.1]], tmp_path / "p.zip")
    assert list(tmp_path.iterdir()) == []


def test_compresslevel_changes_size_not_content(tmp_path: Path) -> None:
    ids, scores = random_scores(4, 2000)
    fast = write_predictions(ids, scores, tmp_path / "fast.zip", compresslevel=1)
    small = write_predictions(ids, scores, tmp_path / "small.zip", compresslevel=9)
    assert fast.stat().st_size > small.stat().st_size
    assert member_text(fast) == member_text(small)
    with pytest.raises(ValueError, match="compresslevel"):
        PredictionWriter(tmp_path / "x.zip", compresslevel=10)


def test_write_after_close_raises(tmp_path: Path) -> None:
    with PredictionWriter(tmp_path / "p.zip") as w:
        w.write_chunk([1], [[0.1]])
    with pytest.raises(ValueError, match="already closed"):
        w.write_chunk([2], [[0.1]])


@pytest.mark.parametrize(
    ("ids", "scores", "offsets", "match"),
    [
        ([1, 2], [[0.1, 0.2]], None, r"got 2 impression_ids for 1 impressions"),
        ([1], [[0.1, np.inf]], None, r"non-finite score inf in impression 0"),
        ([1], [[]], None, r"impression 0 is empty"),
        ([-1], [[0.1]], None, r"non-negative"),
        ([1.5], [[0.1]], None, r"integers"),
        ([[1]], [[0.1]], None, r"1-D"),
        ([1], np.array([0.1, 0.2]), [0, 3], r"offsets must start at 0 and end at 2"),
    ],
)
def test_bad_input_raises_value_error(tmp_path: Path, ids, scores, offsets, match) -> None:
    with pytest.raises(ValueError, match=match):
        write_predictions(ids, scores, tmp_path / "p.zip", offsets=offsets)
    assert list(tmp_path.iterdir()) == []


def write_member(path: Path, text: str, name: str = MEMBER) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(name, text)
    return path


@pytest.mark.parametrize(
    ("text", "line", "why"),
    [
        ("1 [1,2]\n2 [2, 1]\n", 2, "expected '<impression_id> \\[r1,r2,...\\]'"),
        ("1 [1,2]\n2 [2,1]\n3 []\n", 3, "expected"),
        ("1 [1,2]\nabc [1]\n", 2, "expected"),
        ("1 [1,3]\n", 1, "not a permutation"),
        ("1 [1,2]\n2 [1,1]\n", 2, "not a permutation"),
        ("1 [1]\n99999999999999999999999 [1]\n", 2, "64 bits"),
        ("1 [1]\n2 [1]\xe9\n", 2, "non-ASCII"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, text: str, line: int, why: str) -> None:
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(MEMBER, text.encode("latin-1"))
    with pytest.raises(PredictionFileError, match=rf"bad\.zip:{line}: .*{why}"):
        read_predictions(path)


def test_unreadable_files_raise_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_predictions(tmp_path / "missing.zip")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(PredictionFileError, match="junk.zip: not a readable zip"):
        read_predictions(tmp_path / "junk.zip")
    with pytest.raises(PredictionFileError, match="no member 'predictions.txt'"):
        read_predictions(write_member(tmp_path / "other.zip", "1 [1]\n", name="preds.txt"))
    # The error class is also a ValueError, so generic input checks catch it too.
    with pytest.raises(ValueError):
        read_predictions(tmp_path / "missing.zip")


def test_corrupt_member_and_folder_raise_data_errors(tmp_path: Path) -> None:
    """Regression: a zip whose directory is intact but whose deflated member is corrupt raised zlib.error."""
    z = write_predictions(np.arange(200), [np.arange(5, dtype=np.float64)[::-1] for _ in range(200)], tmp_path / "p.zip")
    raw = bytearray(z.read_bytes())
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo(MEMBER)
    # The member's data follow its 30-byte local header, file name and extra field.
    start = info.header_offset + 30 + len(MEMBER.encode()) + len(info.extra)
    raw[start : start + 40] = b"\xff" * 40
    z.write_bytes(bytes(raw))
    with pytest.raises(PredictionFileError, match=r"p\.zip: not a readable zip file"):
        read_predictions(z)
    (tmp_path / "folder.zip").mkdir()
    with pytest.raises(PredictionFileError, match=r"folder\.zip: is a folder, expected a predictions zip file"):
        read_predictions(tmp_path / "folder.zip")
