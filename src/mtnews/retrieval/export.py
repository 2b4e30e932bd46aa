"""`mtnews embed`: a run's news and user vectors as parquet files, plus the retrieval index beside them.

    DIR/articles.parquet   article_id, vector (fixed-size float32 list), published_time
    DIR/users.parquet      user_id, vector, history_length (clicks in history.parquet; the vector uses the last
                           data.history_size of them)
    DIR/index/             FreshIndex over the articles that have a published_time (unless index=False)
    DIR/embed.json         fingerprint, run, data, split, counts and index parameters

Each parquet file carries the run's fingerprint as key-value metadata (`mtnews.fingerprint`). The vectors
are the ones `Recommender` computes (`encode_articles`, `user_vectors`): the catalogue is the dataset's
articles file and the users are the split's history.parquet, encoded through the same kernel.

Memory: users are encoded and written `chunk` at a time, one row group each, so 1M users cost one chunk
of vectors at a time plus the history matrix (U x H int32) that every scorer holds. Everything is written
into a temporary folder that replaces DIR only when complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mtnews.data.articles import FIRST
from mtnews.data.layout import split_paths
from mtnews.errors import ConfigError, DataError, MtnewsError
from mtnews.evaluate.streaming import release_memory
from mtnews.io import atomic_dir
from mtnews.recommender import Recommender
from mtnews.retrieval.index import FreshIndex
from mtnews.retrieval.params import IndexParams
from mtnews.retrieval.task import check_published

ARTICLES = "articles.parquet"
USERS = "users.parquet"
INDEX = "index"
MANIFEST = "embed.json"
FINGERPRINT_KEY = b"mtnews.fingerprint"
USER_CHUNK = 65_536


def vector_column(vectors: np.ndarray) -> pa.FixedSizeListArray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])


def column_vectors(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """[n, D] float32 from a fixed-size-list column (the inverse of `vector_column`)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    d = arr.type.list_size
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, d)


def history_lengths(path: Path, user_ids: np.ndarray) -> np.ndarray:
    """Non-null clicks per user in history.parquet, aligned with the sorted `user_ids` of UserHistories."""
    df = (pl.scan_parquet(path, glob=False)
          .select(pl.col("user_id").cast(pl.Int64), pl.col("article_id_fixed").list.drop_nulls().list.len().alias("n"))
          .collect().sort("user_id"))
    got = df["user_id"].to_numpy()
    if not np.array_equal(got, user_ids):
        raise DataError(f"{path}: user ids changed while being read")
    return df["n"].fill_null(0).cast(pl.Int32).to_numpy()


def check_out_dir(out: Path) -> None:
    """DIR is replaced whole, so it must be new, empty, or an earlier export: never someone's other folder."""
    if out.exists() and not out.is_dir():
        raise MtnewsError(f"{out}: is a file, expected a folder for the exported vectors")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise MtnewsError(f"{out}: folder is not empty and holds no {MANIFEST}; give a new folder or an earlier export")


def export_embeddings(run: str | Path, data: str | Path, split: str, out: str | Path, *, index: bool = True,
                      params: IndexParams = IndexParams(), chunk: int = USER_CHUNK, device: str = "auto",
                      rec: Recommender | None = None) -> dict:
    """Write DIR (see the module docstring) and return its manifest."""
    if chunk <= 0:
        raise ConfigError(f"--chunk must be a positive integer, got {chunk}")
    params = params.validate()
    out = Path(out)
    check_out_dir(out)
    paths = split_paths(data, split)
    if index:
        try:
            check_published(paths.articles)
        except DataError as e:
            raise DataError(f"{e} (the retrieval index partitions by it); export without an index with --no-index") from None
    rec = rec if rec is not None else Recommender.from_run(run, data, split, device=device, cache_size=0,
                                                             index=False, seed_signals=False)
    articles = rec.articles
    fingerprint = rec.run.fingerprint()
    meta = {FINGERPRINT_KEY: fingerprint.encode(), b"mtnews.run": str(rec.run.dir).encode(),
            b"mtnews.split": split.encode()}
    dim = rec.dim
    art_vectors = rec.vectors.vectors[FIRST:].cpu().numpy()
    ids = articles.article_ids[FIRST:]
    published = articles.published_us[FIRST:] if articles.published_us is not None else np.zeros(len(ids), np.int64)
    users = rec.histories
    lengths = history_lengths(paths.history, users.user_ids)

    with atomic_dir(out) as tmp:
        vec_type = pa.list_(pa.float32(), dim)
        art_schema = pa.schema([("article_id", pa.int64()), ("vector", vec_type), ("published_time", pa.timestamp("us"))],
                               metadata=meta)
        with pq.ParquetWriter(tmp / ARTICLES, art_schema) as w:
            for s in range(0, len(ids), chunk):
                pub = published[s : s + chunk]
                w.write_table(pa.table([pa.array(ids[s : s + chunk]), vector_column(art_vectors[s : s + chunk]),
                                        pa.array(pub, mask=pub == 0).cast(pa.timestamp("us"))], schema=art_schema))
        user_schema = pa.schema([("user_id", pa.int64()), ("vector", vec_type), ("history_length", pa.int32())],
                                metadata=meta)
        with pq.ParquetWriter(tmp / USERS, user_schema) as w:
            for s in range(0, len(users.user_ids), chunk):
                e = min(s + chunk, len(users.user_ids))
                vecs = rec.vectors.users(users.matrix[1 + s : 1 + e]).cpu().numpy()
                w.write_table(pa.table([pa.array(users.user_ids[s:e]), vector_column(vecs), pa.array(lengths[s:e])],
                                       schema=user_schema))
                del vecs
                release_memory()
        manifest = {"fingerprint": fingerprint, "run": str(rec.run.dir), "data": str(data), "split": split,
                    "dim": dim, "articles": int(len(ids)), "users": int(len(users.user_ids)),
                    "history_size": rec.history_size, "index": None}
        if index:
            fresh = FreshIndex.build(ids, published, art_vectors, params, fingerprint)
            fresh.save(tmp / INDEX)
            manifest["index"] = {"articles": len(fresh), "shards": len(fresh.shards), "params": params.to_dict()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def read_vectors(path: str | Path, fingerprint: str | None = None) -> tuple[pa.Table, str]:
    """An exported articles.parquet or users.parquet and its fingerprint (checked against `fingerprint`)."""
    path = Path(path)
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    md = pf.schema_arrow.metadata or {}
    got = md.get(FINGERPRINT_KEY)
    if got is None:
        raise DataError(f"{path}: no '{FINGERPRINT_KEY.decode()}' metadata; expected a file written by `mtnews embed`")
    if fingerprint is not None and got.decode() != fingerprint:
        raise DataError(f"{path}: vectors of run fingerprint {got.decode()[:12]}..., expected {fingerprint[:12]}...")
    return pf.read(), got.decode()
