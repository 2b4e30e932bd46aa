"""RecSys Challenge 2024 submission files: ``predictions.zip`` holding one member ``predictions.txt``.

Each line is ``<impression_id> [r1,r2,...]``: for every in-view article, in the original in-view order,
its rank among the impression's articles (1 = highest score). Equal scores rank by in-view position, the
earlier article first, so ranks are always a permutation of 1..n.

Writes are streamed (the 13.5M-impression test set never sits in memory as text), deterministic (same
input, byte-identical zip) and atomic (on error nothing appears at the target path and temp files are
removed). Impression ids are not required to be unique: the official test set repeats id 0 for its
beyond-accuracy impressions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from types import TracebackType

import numpy as np
import polars as pl
import pyarrow as pa

from mtnews.errors import DataError
from mtnews.evaluate.metrics import (
    ArrayLike,
    Ragged,
    as_ragged,
    descending_order,
    validate_scores,
    within_impression_positions,
)
from mtnews.io import atomic_path

MEMBER = "predictions.txt"
# A fixed timestamp and attributes make the zip depend only on the predictions, not on when it was written.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ZIP_ATTR = 0o644 << 16
_COPY_BLOCK = 1 << 20
# Deflate level 4: on ranked-digit text, level 6 (zlib's default) is ~6x slower for a ~7% smaller zip,
# and level 1 saves little more time than 4 for a ~12% larger zip.
DEFAULT_COMPRESSLEVEL = 4
_LINE_PATTERN = r"^\d+ \[\d+(?:,\d+)*\]$"


class PredictionFileError(DataError, ValueError):
    """A predictions zip is missing, not a zip, or has a malformed line."""


def prediction_ranks(scores: Ragged) -> np.ndarray:
    """Flat 1-based ranks (1 = highest score) in original in-view order; ties ranked by position."""
    s = validate_scores(scores)
    order = descending_order(s, scores.offsets)
    ranks = np.empty(s.size, dtype=np.uint32)
    ranks[order] = within_impression_positions(scores.offsets) + 1
    return ranks


def format_lines(impression_ids: np.ndarray, ranks: Ragged) -> bytes:
    """Render ``<id> [r1,...]\\n`` for every impression as ASCII bytes.

    Polars builds all lines in native code; a Python-level join would cost several seconds per million
    impressions.
    """
    if len(ranks) == 0:
        return b""
    lists = pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(ranks.offsets), pa.array(ranks.flat)))
    lines = pl.DataFrame({"id": impression_ids, "r": lists}).select(
        pl.format("{} [{}]", pl.col("id"), pl.col("r").list.eval(pl.element().cast(pl.String)).list.join(","))
    )
    return (lines.to_series().str.join("\n").item() + "\n").encode("ascii")


def _check_ids(impression_ids: ArrayLike, n_impressions: int) -> np.ndarray:
    ids = np.asarray(impression_ids)
    if ids.ndim != 1:
        raise ValueError(f"impression_ids must be 1-D, got shape {ids.shape}")
    if ids.size != n_impressions:
        raise ValueError(f"got {ids.size} impression_ids for {n_impressions} impressions of scores")
    if ids.size and ids.dtype.kind not in "iu":
        raise ValueError(f"impression_ids must be integers, got dtype {ids.dtype}")
    if ids.size and ids.dtype.kind == "i" and ids.min() < 0:
        raise ValueError(f"impression_ids must be non-negative, got {ids.min()}")
    return ids.astype(np.uint64, copy=False)


class PredictionWriter:
    """Stream predictions into a submission zip, chunk by chunk.

    Use as a context manager::

        with PredictionWriter("predictions.zip") as w:
            for ids, scores, offsets in chunks:
                w.write_chunk(ids, scores, offsets)

    Lines go to a temp text file beside ``path``; on a clean exit it is deflated into a temp zip that is
    renamed over ``path``. On an exception both temp files are deleted and ``path`` is left untouched.
    Zipping from the finished text file (rather than compressing as chunks arrive) keeps the bytes
    independent of how the data was chunked, so a resumed run reproduces the zip exactly.
    """

    def __init__(self, path: str | os.PathLike, compresslevel: int = DEFAULT_COMPRESSLEVEL, *,
                 member: str = MEMBER) -> None:
        if not 0 <= compresslevel <= 9:
            raise ValueError(f"compresslevel must be 0..9, got {compresslevel}")
        self.path = Path(path)
        self.compresslevel = compresslevel
        self.member = member
        self.impressions_written = 0
        self._txt: Path | None = None
        self._fh = None
        self._closed = False

    def __enter__(self) -> PredictionWriter:
        self._open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open(self) -> None:
        if self._fh is not None or self._closed:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".txt.tmp", dir=self.path.parent)
        self._txt = Path(tmp)
        self._fh = os.fdopen(fd, "wb")

    def write_chunk(self, impression_ids: ArrayLike, scores: ArrayLike, offsets: ArrayLike | None = None) -> None:
        """Append whole impressions: scores as flat 1-D + CSR ``offsets``, or one 1-D array per impression."""
        if self._closed:
            raise ValueError(f"PredictionWriter for {self.path} is already closed")
        text, n = render_predictions(impression_ids, scores, offsets)
        self._open()
        self._fh.write(text)
        self.impressions_written += n

    def close(self) -> Path:
        """Finish the zip and move it into place; returns the final path."""
        if self._closed:
            return self.path
        self._open()
        try:
            self._fh.close()
            zip_predictions_text(self._txt, self.path, self.compresslevel, member=self.member)
        finally:
            self._cleanup()
        return self.path

    def abort(self) -> None:
        """Discard everything written so far; ``path`` is not created or changed."""
        if not self._closed:
            self._cleanup()

    def _cleanup(self) -> None:
        self._closed = True
        if self._fh is not None:
            self._fh.close()
        if self._txt is not None:
            self._txt.unlink(missing_ok=True)


def render_predictions(
    impression_ids: ArrayLike, scores: ArrayLike, offsets: ArrayLike | None = None
) -> tuple[bytes, int]:
    """The ``predictions.txt`` lines of whole impressions as ASCII bytes, and how many impressions they hold.

    Every line depends only on its own impression, so the text of a split is the concatenation of its
    chunks' texts however the split was chunked.
    """
    ragged = as_ragged(scores, offsets, "scores")
    ids = _check_ids(impression_ids, len(ragged))
    ranks = Ragged(prediction_ranks(ragged), ragged.offsets)
    return format_lines(ids, ranks), len(ragged)


def zip_predictions_text(txt: str | os.PathLike, path: str | os.PathLike,
                         compresslevel: int = DEFAULT_COMPRESSLEVEL, *, member: str = MEMBER) -> Path:
    """Deflate a finished ``predictions.txt`` into the submission zip at ``path``, atomically.

    The zip's bytes depend only on the text, ``compresslevel`` and the ``member`` name.
    """
    if not 0 <= compresslevel <= 9:
        raise ValueError(f"compresslevel must be 0..9, got {compresslevel}")
    with atomic_path(path, suffix=".zip") as tmp_zip:
        _zip_text(Path(txt), tmp_zip, compresslevel, member)
        with open(tmp_zip, "rb") as fh:  # on disk before the rename makes it visible
            os.fsync(fh.fileno())
    return Path(path)


def _zip_text(txt: Path, zip_path: Path, compresslevel: int, member: str = MEMBER) -> None:
    info = zipfile.ZipInfo(member, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    # ZipFile.open(info, "w") takes the level from the ZipInfo; the attribute became public in 3.13.
    if hasattr(info, "compress_level"):
        info.compress_level = compresslevel
    else:
        info._compresslevel = compresslevel
    info.external_attr = _ZIP_ATTR
    info.create_system = 3  # Unix; the default depends on the platform writing the file.
    # A known size lets zipfile decide on ZIP64 by itself instead of always forcing it.
    info.file_size = txt.stat().st_size
    with zipfile.ZipFile(zip_path, "w") as zf, zf.open(info, "w") as dst, open(txt, "rb") as src:
        shutil.copyfileobj(src, dst, _COPY_BLOCK)


def write_predictions(
    impression_ids: ArrayLike,
    scores: ArrayLike,
    path: str | os.PathLike,
    offsets: ArrayLike | None = None,
    compresslevel: int = DEFAULT_COMPRESSLEVEL,
) -> Path:
    """Write a complete submission zip in one call; see :class:`PredictionWriter` for the guarantees.

    Args:
        impression_ids: one non-negative integer id per impression.
        scores: one 1-D array per impression, or a flat array with ``offsets`` (length n_impressions + 1).
        path: the zip to create, e.g. ``predictions.zip``.
        offsets: CSR offsets for flat ``scores``, else None.
        compresslevel: deflate level; the zip's bytes depend on it, so keep it fixed across resumed runs.

    Raises:
        ValueError: mismatched ids/impressions, empty impressions or non-finite scores.
    """
    with PredictionWriter(path, compresslevel) as writer:
        writer.write_chunk(impression_ids, scores, offsets)
    return Path(path)


def read_predictions(path: str | os.PathLike, *, member: str = MEMBER) -> tuple[np.ndarray, list[np.ndarray]]:
    """Read a submission zip back as (impression ids as uint64, one rank array per impression).

    Raises:
        PredictionFileError: the file is missing or not a zip, lacks ``predictions.txt``, or a line is
            malformed or not a permutation of 1..n (the message names the file and 1-based line).
    """
    path = Path(path)
    data = _read_member(path, member)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PredictionFileError(f"{path}:{line}: non-ASCII byte in {member}") from exc
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if not lines:
        return np.zeros(0, dtype=np.uint64), []
    ser = pl.Series("line", lines, dtype=pl.String)
    ok = ser.str.contains(_LINE_PATTERN).to_numpy()
    if not ok.all():
        _fail_line(path, lines, int(np.flatnonzero(~ok)[0]), "expected '<impression_id> [r1,r2,...]'")
    parts = ser.str.extract_groups(r"^(\d+) \[(.*)\]$")
    ids = parts.struct.field("1").cast(pl.UInt64, strict=False)
    if ids.null_count():
        _fail_line(path, lines, int(ids.is_null().arg_true()[0]), "impression id does not fit in 64 bits")
    lists = parts.struct.field("2").str.split(",").list.eval(pl.element().cast(pl.Int64, strict=False))
    flat = lists.explode().fill_null(0).to_numpy()
    offsets = np.zeros(len(lines) + 1, dtype=np.int64)
    np.cumsum(lists.list.len().to_numpy(), out=offsets[1:])
    _check_permutations(path, lines, flat, offsets)
    return ids.to_numpy(), np.split(flat, offsets[1:-1])


def _read_member(path: Path, member: str) -> bytes:
    if path.is_dir():
        raise PredictionFileError(f"{path}: is a folder, expected a predictions zip file")
    if not path.is_file():
        raise PredictionFileError(f"{path}: predictions file not found")
    try:
        with zipfile.ZipFile(path) as zf:
            if member not in zf.namelist():
                raise PredictionFileError(f"{path}: zip has no member {member!r} (found {zf.namelist()})")
            return zf.read(member)
    # zlib.error: the directory is intact but the deflated member is corrupt.
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error) as exc:
        raise PredictionFileError(f"{path}: not a readable zip file ({exc})") from exc


def _check_permutations(path: Path, lines: list[str], flat: np.ndarray, offsets: np.ndarray) -> None:
    # Sorting each line's ranks ascending must give exactly 1..n; out-of-range or repeated ranks break it.
    order = descending_order(-flat.astype(np.float64), offsets)
    bad = flat[order] != within_impression_positions(offsets) + 1
    if bad.any():
        line = int(np.searchsorted(offsets, np.flatnonzero(bad)[0], side="right") - 1)
        _fail_line(path, lines, line, "ranks are not a permutation of 1..n")


def _fail_line(path: Path, lines: list[str], index: int, why: str) -> None:
    text = lines[index]
    shown = text if len(text) <= 80 else text[:77] + "..."
    raise PredictionFileError(f"{path}:{index + 1}: {why}, got {shown!r}")
