"""Datasets in the MIND layout, written from EBNeRD-layout ones: `mtnews data synth --format mind`.

`write_mind(src, out)` turns an EBNeRD-layout dataset into MIND split folders `train/`, `dev/` (from
validation) and `test/`, each with news.tsv and behaviors.tsv (see `mtnews.data.mind` for the format).
`synthesize_mind(out, ...)` runs the synthetic generator and writes its data this way, so converting the
result back with `convert_mind` gives the generator's impressions, clicks, users, histories and article
texts: same rows, same order. What MIND cannot hold is lost: history timestamps, read times, the oracle
utilities, EBNeRD-only article columns, sub-second times and the test split's beyond-accuracy flags.

Per split, as in MIND:
* behaviors.tsv keeps the behaviors row order; `U<user_id>`, the time as `M/D/YYYY h:mm:ss AM`, the user's
  history.parquet clicks as the history of every impression of that user, and the in-view articles as
  `N<id>-1` (in article_ids_clicked) / `N<id>-0`, or `N<id>` in the test split.
* news.tsv lists the articles the split references (in view, clicked or in a history), sorted by id:
  category = category_str, subcategory = the last of `topics`, abstract = subtitle, and title_entities
  built from entity_groups (Type) and ner_clusters (Label and SurfaceForms, where the two lists align; a
  made-up WikidataId `Q<n>` numbers the distinct names); abstract_entities is `[]`.
Tabs and line breaks inside texts become spaces, since the format has no quoting.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from mtnews.data.layout import available_splits, split_paths
from mtnews.data.mind import MIND_SPLITS
from mtnews.errors import DataError
from mtnews.io import atomic_dir

_MIND_TIME = "%-m/%-d/%Y %-I:%M:%S %p"


def _text(e: pl.Expr) -> pl.Expr:
    return e.cast(pl.String).str.replace_all(r"[\t\r\n]+", " ").fill_null("")


def _col(df: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr:
    """An optional EBNeRD column, or nulls where the articles file lacks it."""
    return pl.col(name) if name in df.columns else pl.lit(None, dtype=dtype).alias(name)


def _joined(offsets: np.ndarray, tokens: pl.Series, sep: str) -> pl.Series:
    lists = pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), tokens.to_arrow()))
    return lists.list.join(sep)


def _lengths(lists: pl.Series) -> np.ndarray:
    out = np.zeros(len(lists) + 1, dtype=np.int64)
    np.cumsum(lists.list.len().fill_null(0).to_numpy(), out=out[1:])
    return out


def _news_tokens(ids: pl.Series, labels: np.ndarray | None = None) -> pl.Series:
    """`N<id>` per id, or `N<id>-<label>` with 0/1 labels."""
    if labels is None:
        return pl.DataFrame({"id": ids}).select(pl.format("N{}", "id")).to_series()
    df = pl.DataFrame({"id": ids, "label": labels.astype(np.int8)})
    return df.select(pl.format("N{}-{}", "id", "label")).to_series()


def _entities(rows: pl.DataFrame) -> pl.Series:
    """title_entities JSON per article row, from entity_groups (Type) and ner_clusters (names)."""
    groups = _col(rows, "entity_groups", pl.List(pl.String)).fill_null([])
    names = _col(rows, "ner_clusters", pl.List(pl.String))
    ents = rows.select(
        _text(pl.col("title")).alias("title"),
        groups.alias("type"),
        # Names only where the lists align; otherwise the entities keep their type and lose their name.
        pl.when(names.list.len() == groups.list.len()).then(names)
        .otherwise(groups.list.eval(pl.element().str.slice(0, 0))).alias("name"),
    )
    offsets = _lengths(ents["type"])
    flat = ents.explode(["type", "name"], empty_as_null=False, keep_nulls=False)
    name = pl.col("name").fill_null("")
    named = name != ""
    found = named & pl.col("title").str.contains(name, literal=True)
    objs = flat.select(pl.struct(
        name.alias("Label"),
        pl.col("type").alias("Type"),
        pl.when(named).then(pl.format("Q{}", name.rank("dense"))).otherwise(pl.lit("")).alias("WikidataId"),
        pl.lit(1.0).alias("Confidence"),
        # MIND offsets count characters; the text before the first occurrence has that many.
        pl.when(found).then(pl.concat_list(pl.col("title").str.split(name).list.first().str.len_chars()
                                           .cast(pl.Int64)))
        .otherwise(pl.lit([], dtype=pl.List(pl.Int64))).alias("OccurrenceOffsets"),
        pl.when(named).then(pl.concat_list(name)).otherwise(pl.lit([], dtype=pl.List(pl.String)))
        .alias("SurfaceForms"),
    ).struct.json_encode().alias("json"))["json"]
    return pl.format("[{}]", _joined(offsets, objs, ", "))


def _news(articles: pl.DataFrame) -> pl.DataFrame:
    """news.tsv rows of every article, sorted by id, with `article_id` to pick each split's rows by."""
    rows = articles.sort("article_id")
    return rows.select(
        pl.col("article_id").cast(pl.Int64),
        pl.format("N{}", pl.col("article_id")).alias("news_id"),
        _text(_col(rows, "category_str", pl.String)).alias("category"),
        _text(_col(rows, "topics", pl.List(pl.String)).list.last()).alias("subcategory"),
        _text(pl.col("title")).alias("title"),
        _text(_col(rows, "subtitle", pl.String)).alias("abstract"),
        _text(_col(rows, "url", pl.String)).alias("url"),
    ).with_columns(title_entities=_entities(rows), abstract_entities=pl.lit("[]"))


def _behaviors(paths, labelled: bool) -> tuple[pl.DataFrame, np.ndarray]:
    """behaviors.tsv rows, and every article id the split references."""
    cols = ["impression_id", "user_id", "impression_time", "article_ids_inview"]
    beh = pl.read_parquet(paths.behaviors, columns=cols + (["article_ids_clicked"] if labelled else []))
    hist = pl.read_parquet(paths.history, columns=["user_id", "article_id_fixed"])
    inview = beh["article_ids_inview"].list.drop_nulls()
    if (inview.list.len().fill_null(0) == 0).any():
        i = int((inview.list.len().fill_null(0) == 0).arg_true()[0])
        raise DataError(f"{paths.behaviors}: impression {beh['impression_id'][i]} has no in-view article, "
                        "expected at least one (MIND cannot hold an empty impression)")
    if beh["impression_time"].null_count():
        raise DataError(f"{paths.behaviors}: column 'impression_time' has nulls, expected a time per impression")
    offsets = _lengths(inview)
    ids = inview.explode(empty_as_null=False, keep_nulls=False).cast(pl.Int64)
    if len(ids) and ids.min() < 0:
        raise DataError(f"{paths.behaviors}: negative article id {ids.min()}, expected ids >= 0 (MIND's N<id>)")
    referenced = [ids.to_numpy()]
    label = None
    if labelled:
        clicked = beh["article_ids_clicked"].list.drop_nulls()
        c_off = _lengths(clicked)
        c_ids = clicked.explode(empty_as_null=False, keep_nulls=False).cast(pl.Int64).to_numpy()
        rows = np.repeat(np.arange(beh.height, dtype=np.int64), np.diff(offsets))
        c_rows = np.repeat(np.arange(beh.height, dtype=np.int64), np.diff(c_off))
        label = np.isin((rows << 32) | (ids.to_numpy() & 0xFFFFFFFF), (c_rows << 32) | (c_ids & 0xFFFFFFFF))
        referenced.append(c_ids)
    tokens = _news_tokens(ids, label)
    h = hist.select(pl.col("user_id").cast(pl.Int64), pl.col("article_id_fixed").list.drop_nulls())
    h_ids = h["article_id_fixed"].explode(empty_as_null=False, keep_nulls=False).cast(pl.Int64)
    referenced.append(h_ids.to_numpy())
    h = h.with_columns(history=_joined(_lengths(h["article_id_fixed"]), _news_tokens(h_ids), " ")).select(
        "user_id", "history")
    out = (beh.select(pl.col("impression_id").cast(pl.Int64), pl.col("user_id").cast(pl.Int64),
                      pl.col("impression_time").dt.strftime(_MIND_TIME).alias("time"))
           .with_columns(impressions=_joined(offsets, tokens, " "))
           .join(h, on="user_id", how="left", maintain_order="left")
           .select(pl.col("impression_id").cast(pl.String),
                   pl.format("U{}", pl.col("user_id")).alias("user_id"),
                   "time", pl.col("history").fill_null(""), "impressions"))
    return out, np.unique(np.concatenate(referenced))


def _write_tsv(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_csv(path, separator="\t", include_header=False, quote_style="never", null_value="")


def write_mind(src: str | Path, out: str | Path) -> dict:
    """Write the EBNeRD-layout dataset `src` in the MIND layout at `out` (replaced only once complete)."""
    src, out = Path(src), Path(out)
    splits = available_splits(src)
    if not splits:
        raise DataError(f"{src}: no split found, expected {src}/<train|validation|test>/behaviors.parquet")
    # Once for all splits, so an article's row (its made-up WikidataIds too) is the same in every news.tsv.
    all_news = _news(pl.read_parquet(split_paths(src, splits[0]).articles))
    summary = {}
    with atomic_dir(out) as tmp:
        for split in splits:
            paths = split_paths(src, split)
            behaviors, referenced = _behaviors(paths, paths.labelled)
            news = all_news.filter(pl.col("article_id").is_in(pl.Series(referenced).implode())).drop("article_id")
            folder = tmp / MIND_SPLITS[split]
            _write_tsv(news, folder / "news.tsv")
            _write_tsv(behaviors, folder / "behaviors.tsv")
            summary[split] = {"folder": folder.name, "impressions": behaviors.height, "news": news.height}
    return summary


def synthesize_mind(out: str | Path, **synth_kwargs) -> dict:
    """`synthesize(...)` (same arguments, same data), written in the MIND layout at `out`."""
    from mtnews.data.synth import synthesize

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.ebnerd.", dir=out.parent))
    try:
        summary = synthesize(scratch / "data", **synth_kwargs)
        summary["mind"] = write_mind(scratch / "data", out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return summary
