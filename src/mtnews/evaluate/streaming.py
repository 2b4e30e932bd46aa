"""Stream a split through a scorer in chunks of impressions: metrics and/or a predictions.zip.

Peak memory is one chunk plus the scorer's own state (for a model, the article-vector table), so the
13.5M-impression test set streams like a small split. A chunk is `chunk_rows` behaviors rows, cut further
into pieces of at most about `max_candidates` in-view articles: the test set's beyond-accuracy rows show
250 articles each, 25 times a normal row, and would otherwise make their chunks the peak.

Chunk k is always rows [k * chunk_rows, (k + 1) * chunk_rows) of the file, whatever its row groups, so a
resumed `mtnews predict` scores exactly the chunks an uninterrupted run would have.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mtnews.data.articles import ArticleTable
from mtnews.data.behaviors import behavior_batches, behavior_columns, count_behaviors
from mtnews.data.history import UserHistories
from mtnews.data.impressions import EvalImpressions, build_eval_impressions
from mtnews.data.layout import SplitPaths
from mtnews.evaluate.metrics import MetricAccumulator
from mtnews.evaluate.mind_submission import submission_member
from mtnews.evaluate.submission import PredictionWriter

MAX_CANDIDATES = 1 << 19  # in-view articles per scored piece: about one 50k-row chunk of normal impressions


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to trim
        return None


_TRIM = _malloc_trim()


def release_memory() -> None:
    """Give a scored piece's freed memory back to the OS: glibc's heap (numpy, torch) and Arrow's pool.

    Each piece allocates and frees the same few hundred MB of temporaries. glibc keeps freed heap pages
    and raises its mmap threshold as it goes, and Arrow's mimalloc pool keeps its pages too, so without
    this the resident set creeps up chunk after chunk (and each 250-article beyond-accuracy chunk lifts the
    peak a little more); with it the peak stays put. Costs about a millisecond per piece.
    """
    if _TRIM is not None:
        _TRIM(0)
    pa.default_memory_pool().release_unused()


def iter_behavior_chunks(paths: SplitPaths, chunk_rows: int, start_row: int = 0) -> Iterator[pa.Table]:
    """Behaviors rows [start_row, ...) as Arrow tables of exactly `chunk_rows` rows (the last may be shorter).

    Reading starts at the row group holding `start_row`, so resuming late in a large file does not decode
    the rows before it. Tables stay in Arrow (no copy) until `iter_pieces` converts them piece by piece.
    """
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    cols = behavior_columns(paths)
    pf = pq.ParquetFile(paths.behaviors)
    md = pf.metadata
    starts = np.zeros(md.num_row_groups + 1, dtype=np.int64)
    np.cumsum([md.row_group(i).num_rows for i in range(md.num_row_groups)], out=starts[1:])
    if start_row >= starts[-1]:
        return
    first = int(np.searchsorted(starts, start_row, side="right") - 1)
    skip = int(start_row - starts[first])
    buf: list[pa.RecordBatch] = []
    have = 0
    for batch in behavior_batches(paths, cols, chunk_rows, row_groups=range(first, md.num_row_groups)):
        if skip:
            if batch.num_rows <= skip:
                skip -= batch.num_rows
                continue
            batch, skip = batch.slice(skip), 0
        buf.append(batch)
        have += batch.num_rows
        while have >= chunk_rows:
            table = pa.Table.from_batches(buf)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            buf, have = rest.to_batches(), rest.num_rows
    if have:
        yield pa.Table.from_batches(buf)


def piece_bounds(inview_lengths: np.ndarray, max_candidates: int) -> np.ndarray:
    """Row boundaries [0, ..., n] cutting a chunk into pieces of about `max_candidates` candidates.

    A row goes to the piece its first candidate falls in, so a piece holds at most max_candidates plus
    one row's length; every piece has at least one row.
    """
    n = len(inview_lengths)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    start = np.cumsum(inview_lengths) - inview_lengths
    piece = start // max(1, max_candidates)
    cuts = np.flatnonzero(np.diff(piece)) + 1
    return np.concatenate([[0], cuts, [n]]).astype(np.int64)


def iter_pieces(table: pa.Table, articles: ArticleTable, histories: UserHistories,
                max_candidates: int = MAX_CANDIDATES, source: Path | None = None) -> Iterator[EvalImpressions]:
    """The evaluation impressions of one behaviors chunk, piece by piece (see `piece_bounds`).

    Only the piece being scored is converted to polars, so a chunk of 250-article beyond-accuracy rows
    costs its Arrow buffers once, not once per copy.
    """
    lengths = pc.list_value_length(table.column("article_ids_inview")).fill_null(0).to_numpy().astype(np.int64)
    bounds = piece_bounds(lengths, max_candidates)
    for a, b in zip(bounds[:-1], bounds[1:]):
        yield build_eval_impressions(pl.from_arrow(table.slice(int(a), int(b - a))), articles, histories, source)


def run_scorer(
    scorer, paths: SplitPaths, articles: ArticleTable, histories: UserHistories, chunk_rows: int = 50_000,
    predictions_out: str | Path | None = None, progress: bool = False, max_candidates: int = MAX_CANDIDATES,
    prediction_format: str | None = None,
) -> dict:
    """Metrics of `scorer` over the split (and/or a submission zip at `predictions_out`, in
    `prediction_format`: ebnerd or mind, by default the layout the dataset came in)."""
    from tqdm.auto import tqdm

    acc = MetricAccumulator() if paths.labelled else None
    member = submission_member(prediction_format or paths.kind)
    writer = PredictionWriter(predictions_out, member=member) if predictions_out else None
    unknown = impressions = 0
    bar = tqdm(total=count_behaviors(paths), disable=not progress, desc=f"score {paths.split}", unit="imp")
    try:
        if writer:
            writer.__enter__()
        for table in iter_behavior_chunks(paths, chunk_rows):
            for imps in iter_pieces(table, articles, histories, max_candidates, paths.behaviors):
                scores = scorer.score(imps)
                if acc is not None:
                    acc.update(imps.labels, scores, imps.offsets)
                if writer:
                    writer.write_chunk(imps.impression_id, scores, imps.offsets)
                unknown += imps.unknown
                impressions += len(imps)
                bar.update(len(imps))
                release_memory()
    except BaseException:
        if writer:
            writer.abort()
        raise
    finally:
        bar.close()
    if writer:
        writer.close()
    result = acc.result() if acc is not None else {"impressions": impressions}
    result["unknown_candidates"] = unknown
    return result
