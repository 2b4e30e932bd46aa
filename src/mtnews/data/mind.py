"""MIND (Microsoft News Dataset) read into mtnews's EBNeRD layout, so every command runs on the result.

    mtnews data convert --from mind SRC --out DST        (library: `convert_mind(src, dst)`)

Every command also takes a MIND folder as `--data` directly: `mtnews.data.mind_cache` converts it once
into a cache folder with this same conversion (see there).

SRC holds MIND split folders as downloaded (`MINDsmall_train/`, `MINDsmall_dev/`, `MINDlarge_test/`, any
`MIND<size>_<split>`) or named `train/`, `dev/`, `test/`; or SRC is one such split folder. They become DST's `train/`, `validation/` (from dev)
and `test/`; DST gets `articles.parquet`, `<split>/{behaviors,history}.parquet` in the official dtypes of
`mtnews.data.schema`, and `mind_conversion.json` (the report, which also marks DST as a conversion so a
rerun may replace it).

Each split folder holds two headerless, unquoted, tab-separated files:
  news.tsv       news_id, category, subcategory, title, abstract, url, title_entities, abstract_entities
                 (the entities are JSON lists of objects with Type, WikidataId, SurfaceForms, ...)
  behaviors.tsv  impression_id, user_id, time (`11/15/2019 8:55:22 AM`), history (space-separated news ids),
                 impressions (space-separated `N123-1` clicked / `N456-0` not; the test split has `N123` only)

Mapping, chosen so that it is explicit and invertible:
* Ids: news `N<n>` -> article_id n (Int32), user `U<n>` -> user_id n (UInt32), impression_id as is (UInt32).
  Leading zeros are rejected, so `N07` cannot silently become article 7 next to an `N7`; the MIND id of
  article n is `f"N{n}"` again.
* Articles: the union of the splits' news.tsv, one row per id (the first of train, dev, test; rows that
  disagree across splits are counted as `conflicting_news_ids`). title, category -> category_str,
  abstract -> subtitle, url; title_entities give entity_groups (each entity's Type), ner_clusters (its
  first SurfaceForm, else its Label) and the extra column wikidata_ids; subcategory goes to the extra column
  subcategory_str (EBNeRD's `subcategory` holds integer codes; it stays null). MIND has no sentiment and no
  integer category codes: sentiment_*, category and the other EBNeRD-only columns are null.
* published_time: MIND has none. An article's first in-view time over all converted splits stands in
  (history clicks carry no time); articles never shown in view get null.
* Behaviors keep the file's row order (the MIND scorer matches prediction lines in that order).
  article_ids_inview is every token's id in order; article_ids_clicked the ids labelled 1; the test split
  has no article_ids_clicked (its `is_beyond_accuracy` is null). Columns MIND lacks are null.
* History: MIND repeats it inline on every impression; history.parquet has one row per user and split. A
  user's history is constant in MIND; where it is not, the longest is kept (ties: the earliest line) and the
  user is counted in `users_with_varying_history`. Users with an empty history get no row, as in EBNeRD.
  History clicks have no timestamps, read times or scroll percentages: those lists hold one null per click,
  keeping every `*_fixed` list as long as article_id_fixed.
* MIND times are naive local timestamps; they are stored as they read, without a time zone.

Bad input raises one DataError naming the file, the 1-based line and the expectation: a line with the
wrong number of columns, a malformed id, impression token or time, entity JSON that does not parse.
News ids referenced by behaviors but absent from every news.tsv are counted (`unknown_news_ids`), not
fatal: mtnews maps them to its unknown-article index.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from mtnews.data.schema import ARTICLES, BEHAVIORS, HISTORY, TEST_BEHAVIORS
from mtnews.errors import ConfigError, DataError
from mtnews.io import atomic_dir

NEWS_COLUMNS = ("news_id", "category", "subcategory", "title", "abstract", "url", "title_entities",
                "abstract_entities")
BEHAVIORS_COLUMNS = ("impression_id", "user_id", "time", "history", "impressions")
TIME_FORMAT = "%m/%d/%Y %I:%M:%S %p"
CONVERSION_FILE = "mind_conversion.json"
# mtnews split -> the MIND folder suffix it reads.
MIND_SPLITS = {"train": "train", "validation": "dev", "test": "test"}
# Columns added to articles.parquet beyond the EBNeRD schema (schema.validate ignores extra columns).
EXTRA_ARTICLE_COLUMNS = {"subcategory_str": pl.String, "wikidata_ids": pl.List(pl.String)}

_FOLDER = re.compile(r"^(?:MIND[A-Za-z0-9]*_)?(train|dev|test)$")
_SPLIT_OF_SUFFIX = {v: k for k, v in MIND_SPLITS.items()}
_INT32_MAX = 2**31 - 1
_UINT32_MAX = 2**32 - 1
_NUM = "(?:0|[1-9][0-9]*)"  # [0-9], not \d: Rust's \d also matches non-ASCII digits
_ENTITY = pl.List(pl.Struct({"Label": pl.String, "Type": pl.String, "WikidataId": pl.String,
                             "SurfaceForms": pl.List(pl.String)}))
_SCAN_BLOCK = 1 << 26  # bytes per block when counting columns: bounds the temporaries at any file size


# --- where the splits are ---------------------------------------------------------------------------------

def mind_split_dirs(root: str | Path) -> dict[str, Path]:
    """The MIND split folders under `root`, keyed by mtnews split (train, validation, test), in that order."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: MIND folder not found")
    found: dict[str, list[Path]] = {}
    for p in sorted(root.iterdir()):
        m = _FOLDER.match(p.name)
        if m and p.is_dir():
            found.setdefault(_SPLIT_OF_SUFFIX[m.group(1)], []).append(p)
    for split, dirs in found.items():
        if len(dirs) > 1:
            names = ", ".join(d.name for d in dirs)
            raise DataError(f"{root}: several folders for the {split} split ({names}), expected one; "
                            "convert each MIND size from its own folder")
    return {s: found[s][0] for s in MIND_SPLITS if s in found}


def mind_folders(path: str | Path) -> dict[str, Path] | None:
    """The MIND split folders that `path` names, keyed by mtnews split, or None if it does not look like MIND.

    `path` looks like MIND when it has no articles.parquet (an EBNeRD root, whose `train/` would match too)
    and either holds split folders with a news.tsv or behaviors.tsv (a MIND root, as downloaded), or holds
    such a file itself (one split folder, whose name says the split: `MINDsmall_dev/`, `dev/`, ...).
    Whether every file is there is checked by the conversion, so a half-copied MIND folder is one clear
    error there rather than an EBNeRD error about parquet files it never had.
    """
    path = Path(path)
    try:
        if not path.is_dir() or (path / "articles.parquet").exists():
            return None
        if any(_FOLDER.match(p.name) and _has_tsv(p) for p in path.iterdir()):
            return mind_split_dirs(path)
        if not _has_tsv(path):
            return None
    except OSError:
        return None
    m = _FOLDER.match(path.resolve().name)
    if not m:
        raise DataError(f"{path}: holds MIND files (news.tsv, behaviors.tsv) but its name says no split; "
                        "expected a split folder named MIND<size>_train, _dev or _test, or train, dev or test, "
                        "or a folder holding such split folders")
    return {_SPLIT_OF_SUFFIX[m.group(1)]: path}


def _has_tsv(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "news.tsv").exists() or (folder / "behaviors.tsv").exists())


def is_mind_root(path: str | Path) -> bool:
    """Whether `path` holds at least one MIND split folder with news.tsv and behaviors.tsv. Never raises."""
    try:
        path = Path(path)
        return path.is_dir() and any(
            _FOLDER.match(p.name) and (p / "news.tsv").is_file() and (p / "behaviors.tsv").is_file()
            for p in path.iterdir()
        )
    except OSError:
        return False


# --- reading the files ------------------------------------------------------------------------------------

def _fields_per_line(path: Path) -> np.ndarray:
    """Tab-separated fields on each line, from one vectorised scan of the bytes (a final newline ends no line)."""
    size = path.stat().st_size
    if size == 0:
        return np.zeros(0, dtype=np.int64)
    data = np.memmap(path, dtype=np.uint8, mode="r")
    newlines, tabs = [], []
    for s in range(0, size, _SCAN_BLOCK):
        block = data[s:s + _SCAN_BLOCK]
        newlines.append(np.flatnonzero(block == 10) + s)
        tabs.append(np.flatnonzero(block == 9) + s)
    last = int(data[-1])
    del data
    ends = np.concatenate(newlines)
    if last != 10:
        ends = np.append(ends, size)
    before = np.searchsorted(np.concatenate(tabs), ends)
    return np.diff(before, prepend=0) + 1


def _utf8_error_line(path: Path) -> int | None:
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return raw.count(b"\n", 0, e.start) + 1
    return None


def read_tsv(path: str | Path, columns: tuple[str, ...]) -> pl.DataFrame:
    """A headerless, unquoted TSV as string columns `columns`, plus `line` (1-based); every line is checked."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    expect = f"{len(columns)} tab-separated columns ({', '.join(columns)})"
    fields = _fields_per_line(path)
    if len(fields) == 0:
        raise DataError(f"{path}: file is empty, expected lines of {expect}")
    bad = np.flatnonzero(fields != len(columns))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"{path}:{i + 1}: {fields[i]} column(s), expected {expect}")
    try:
        df = pl.read_csv(path, separator="\t", has_header=False, quote_char=None,
                         schema={c: pl.String for c in columns}, glob=False)
    except Exception as e:  # polars raises several types; the one we can locate is bad UTF-8
        line = _utf8_error_line(path)
        if line is not None:
            raise DataError(f"{path}:{line}: not valid UTF-8 text, expected UTF-8") from None
        raise DataError(f"{path}: not a readable tab-separated file ({_first_line(e)})") from None
    if df.height != len(fields):
        raise DataError(f"{path}: read {df.height} rows from {len(fields)} lines, expected one row per line")
    return df.with_columns(pl.int_range(1, df.height + 1, dtype=pl.Int64).alias("line"))


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(path: Path, line: int, column: str, value, expect: str) -> None:
    hint = " (MIND files have no header line)" if line == 1 and value == column else ""
    raise DataError(f"{path}:{line}: column '{column}' is {_shown(value)}, expected {expect}{hint}")


def _ids(values: pl.Series, lines: pl.Series, prefix: str, max_value: int, path: Path, column: str) -> pl.Series:
    """`<prefix><n>` strings -> n as Int64; a malformed or out-of-range id is a DataError at its line."""
    n = values.str.slice(len(prefix)).cast(pl.Int64, strict=False)
    ok = values.str.contains(f"^{prefix}{_NUM}$").fill_null(False) & n.is_not_null() & (n <= max_value)
    if not ok.all():
        i = int((~ok).arg_true()[0])
        _fail(path, int(lines[i]), column, values[i],
              f"{prefix}<number> without leading zeros, at most {prefix}{max_value}" + (
                  f" (e.g. {prefix}12345)" if prefix else ""))
    return n


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def _lists(offsets: np.ndarray, values: pa.Array) -> pl.Series:
    return pl.from_arrow(pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values))


def _tokens(strings: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """Space-separated tokens of each string, flat, and the CSR offsets of each row (null = no tokens)."""
    return _list_parts(strings.str.split(" "))


def _row_of(offsets: np.ndarray, flat_index: int) -> int:
    return int(np.searchsorted(offsets, flat_index, side="right") - 1)


def _check_token_rows(df: pl.DataFrame, path: Path, column: str, token: str, expect: str,
                      allow_empty: bool) -> None:
    """Validate whole rows with one regex each; only a failing row is looked at token by token."""
    one = f"{token}(?: {token})*"
    ok = df[column].str.contains(f"^(?:{one})?$" if allow_empty else f"^{one}$")
    ok = ok.fill_null(allow_empty)
    if ok.all():
        return
    i = int((~ok).arg_true()[0])
    line, value = int(df["line"][i]), df[column][i]
    if value is None:
        raise DataError(f"{path}:{line}: column '{column}' is empty, expected {expect}")
    bad = next(t for t in value.split(" ") if not re.fullmatch(token, t))  # one row, on the error path
    raise DataError(f"{path}:{line}: column '{column}' has token {_shown(bad)}, expected {expect}")


def _decode_entities(values: pl.Series, lines: pl.Series, path: Path, column: str) -> pl.Series:
    expect = "a JSON list of entity objects, each with a string 'Type'"
    try:
        decoded = values.str.json_decode(_ENTITY)
    except Exception:
        # polars fails the whole column; bisect for the first bad row (about 2 n rows decoded in all).
        lo, hi = 0, len(values)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            try:
                values[lo:mid].str.json_decode(_ENTITY)
                lo = mid
            except Exception:
                hi = mid
        try:  # one value, for a message that says where in it the JSON breaks
            json.loads(values[lo])
            why = "valid JSON of another shape"
        except ValueError as e:
            why = str(e)
        raise DataError(f"{path}:{int(lines[lo])}: column '{column}' does not parse as {expect} ({why}), "
                        f"got {_shown(values[lo])}") from None
    flat, offsets = _list_parts(decoded)
    missing = flat.struct.field("Type").is_null()
    if missing.any():
        i = _row_of(offsets, int(missing.arg_true()[0]))
        _fail(path, int(lines[i]), column, values[i], expect)
    return decoded


def _list_parts(lists: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """The elements of every list, flat, and the CSR offsets of each row (null = empty)."""
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    return lists.explode(empty_as_null=False, keep_nulls=False), _offsets(lengths)


def read_news(path: str | Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """One news.tsv as (article rows in EBNeRD columns plus the extras, the raw string rows for comparisons)."""
    path = Path(path)
    raw = read_tsv(path, NEWS_COLUMNS)
    ids = _ids(raw["news_id"], raw["line"], "N", _INT32_MAX, path, "news_id")
    title_entities = _decode_entities(raw["title_entities"], raw["line"], path, "title_entities")
    _decode_entities(raw["abstract_entities"], raw["line"], path, "abstract_entities")
    ent = pl.element().struct
    articles = pl.DataFrame({"article_id": ids.cast(pl.Int32), "e": title_entities}).with_columns(
        raw["title"].alias("title"),
        raw["abstract"].alias("subtitle"),
        raw["url"].alias("url"),
        pl.col("e").list.eval(ent.field("Type")).alias("entity_groups"),
        pl.col("e").list.eval(pl.coalesce(ent.field("SurfaceForms").list.first(), ent.field("Label")))
        .alias("ner_clusters"),
        raw["category"].alias("category_str"),
        raw["subcategory"].alias("subcategory_str"),
        pl.col("e").list.eval(ent.field("WikidataId")).alias("wikidata_ids"),
    ).drop("e")
    repeated = ~articles["article_id"].is_first_distinct()
    if repeated.any():
        i = int(repeated.arg_true()[0])
        _fail(path, int(raw["line"][i]), "news_id", raw["news_id"][i], "each news id once per news.tsv")
    return articles, raw.drop("line")


def read_mind_behaviors(path: str | Path, labelled: bool) -> dict:
    """One behaviors.tsv parsed and validated: the EBNeRD behaviors frame, the per-user history frame, and
    what the report and the article times need (flat in-view ids with their times, referenced ids)."""
    path = Path(path)
    df = read_tsv(path, BEHAVIORS_COLUMNS)
    lines = df["line"]
    imp = _ids(df["impression_id"], lines, "", _UINT32_MAX, path, "impression_id")
    users = _ids(df["user_id"], lines, "U", _UINT32_MAX, path, "user_id")
    times = df["time"].str.strptime(pl.Datetime("us"), TIME_FORMAT, strict=False)
    if times.null_count():
        i = int(times.is_null().arg_true()[0])
        _fail(path, int(lines[i]), "time", df["time"][i],
              "a time like '11/15/2019 8:55:22 AM' (M/D/YYYY h:mm:ss AM|PM)")

    news = f"N{_NUM}"
    if labelled:
        _check_token_rows(df, path, "impressions", f"{news}-[01]", "space-separated N<id>-1 (clicked) or "
                          "N<id>-0 (not clicked) tokens", allow_empty=False)
    else:
        _check_token_rows(df, path, "impressions", news, "space-separated N<id> tokens (the test split has "
                          "no click labels)", allow_empty=False)
    _check_token_rows(df, path, "history", news, "space-separated N<id> tokens or nothing", allow_empty=True)

    flat, offsets = _tokens(df["impressions"])
    inview = (flat.str.head(-2) if labelled else flat).str.slice(1).cast(pl.Int64, strict=False)
    _check_range(inview, offsets, df, path, "impressions")
    inview_np = inview.to_numpy()
    cols: dict[str, pl.Series] = {
        "impression_id": imp.cast(pl.UInt32),
        "impression_time": times,
        "article_ids_inview": _lists(offsets, pa.array(inview_np, pa.int32())),
        "user_id": users.cast(pl.UInt32),
    }
    clicks = 0
    if labelled:
        clicked = flat.str.ends_with("-1").to_numpy()
        click_counts = np.concatenate([[0], np.cumsum(clicked)])[offsets]
        cols["article_ids_clicked"] = _lists(click_counts, pa.array(inview_np[clicked], pa.int32()))
        clicks = int(clicked.sum())
    behaviors = _in_schema(pl.DataFrame(cols), BEHAVIORS if labelled else TEST_BEHAVIORS)

    history, varying = _history(df, users, path)
    shown_at = np.repeat(times.cast(pl.Int64).to_numpy(), np.diff(offsets))
    first_shown = (pl.DataFrame({"article_id": inview_np, "t": shown_at})
                   .group_by("article_id").agg(pl.col("t").min()))
    referenced = np.unique(np.concatenate([inview_np, history["article_id_fixed"].explode().to_numpy()]))
    stats = {"impressions": behaviors.height, "users": int(users.n_unique()), "history_users": history.height,
             "users_with_varying_history": varying, "inview_articles": len(inview_np)}
    if labelled:
        stats["clicks"] = clicks
    return {"behaviors": behaviors, "history": history, "first_shown": first_shown, "referenced": referenced,
            "stats": stats}


def _check_range(ids: pl.Series, offsets: np.ndarray, df: pl.DataFrame, path: Path, column: str) -> None:
    ok = ids.is_not_null() & (ids <= _INT32_MAX)
    if not ok.all():
        i = _row_of(offsets, int((~ok).arg_true()[0]))
        raise DataError(f"{path}:{int(df['line'][i])}: column '{column}' has a news id above "
                        f"N{_INT32_MAX}, expected ids that fit EBNeRD's Int32 article_id")


def _history(df: pl.DataFrame, users: pl.Series, path: Path) -> tuple[pl.DataFrame, int]:
    """One history per user: each distinct (user, history) pair parsed once, the longest kept."""
    pairs = (pl.DataFrame({"user_id": users, "history": df["history"], "line": df["line"]})
             .unique(["user_id", "history"], keep="first", maintain_order=True))
    varying = int((pairs.group_by("user_id").len()["len"] > 1).sum())
    flat, offsets = _tokens(pairs["history"])
    ids = flat.str.slice(1).cast(pl.Int64, strict=False)
    _check_range(ids, offsets, pairs, path, "history")
    lengths = np.diff(offsets)
    chosen = (pairs.select("user_id", "line")
              .with_columns(n=pl.Series(lengths), h=_lists(offsets, pa.array(ids.to_numpy(), pa.int32())))
              .filter(pl.col("n") > 0)
              .sort(["user_id", "n", "line"], descending=[False, True, False])
              .unique("user_id", keep="first", maintain_order=True))
    n = chosen["n"].to_numpy()
    hist_offsets = _offsets(n)
    total = int(hist_offsets[-1])
    history = pl.DataFrame({
        "user_id": chosen["user_id"].cast(pl.UInt32),
        "impression_time_fixed": _lists(hist_offsets, pa.nulls(total, pa.timestamp("us"))),
        "scroll_percentage_fixed": _lists(hist_offsets, pa.nulls(total, pa.float32())),
        "article_id_fixed": chosen["h"],
        "read_time_fixed": _lists(hist_offsets, pa.nulls(total, pa.float32())),
    })
    return history.cast(HISTORY).select(list(HISTORY)), varying


def _in_schema(df: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Every column of `schema` in its order and dtype; columns `df` lacks are null."""
    return df.select([pl.col(c).cast(t) if c in df.columns else pl.lit(None, dtype=t).alias(c)
                      for c, t in schema.items()])


# --- conversion -------------------------------------------------------------------------------------------

def _check_out(src: Path, dst: Path, dirs: dict[str, Path]) -> None:
    s, d = src.resolve(), dst.resolve()
    if d == s or s.is_relative_to(d):
        raise ConfigError(f"{dst}: the output folder must not be the MIND folder or a folder holding it")
    if any(d.is_relative_to(f.resolve()) for f in dirs.values()):
        raise ConfigError(f"{dst}: the output folder must not be inside a MIND split folder")
    if dst.exists():
        if not dst.is_dir():
            raise ConfigError(f"{dst}: exists and is not a folder, expected a new folder for the conversion")
        if any(dst.iterdir()) and not (dst / CONVERSION_FILE).is_file():
            raise ConfigError(f"{dst}: folder is not empty and holds no earlier conversion ({CONVERSION_FILE}); "
                              "choose a new or empty folder")


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(path)


def convert_mind(src: str | Path, dst: str | Path, splits: list[str] | None = None) -> dict:
    """Convert the MIND dataset in `src` to the EBNeRD layout in `dst` (replaced only once complete).

    `splits` limits the conversion to some of train, validation, test (default: every split in `src`).
    Returns the report (also written to `dst/mind_conversion.json`, there without the timings).
    """
    src, dst = Path(src), Path(dst)
    t0 = time.perf_counter()
    dirs = mind_folders(src) or mind_split_dirs(src)
    if splits is not None:
        unknown = [s for s in splits if s not in MIND_SPLITS]
        if unknown:
            raise ConfigError(f"unknown split(s) {', '.join(unknown)}, expected train, validation or test")
        missing = [s for s in splits if s not in dirs]
        if missing:
            raise DataError(f"{src}: no MIND folder for split(s) {', '.join(missing)} "
                            f"(expected e.g. MINDsmall_{MIND_SPLITS[missing[0]]}/ or {MIND_SPLITS[missing[0]]}/)")
        dirs = {s: d for s, d in dirs.items() if s in splits}
    if not dirs:
        raise DataError(f"{src}: no MIND split folder, expected MIND<size>_train/, _dev/, _test/ "
                        "or train/, dev/, test/ holding news.tsv and behaviors.tsv")
    for d in dirs.values():
        for name in ("news.tsv", "behaviors.tsv"):
            if not (d / name).is_file():
                raise DataError(f"{d / name}: file not found, expected a MIND split folder with news.tsv "
                                "and behaviors.tsv")
    _check_out(src, dst, dirs)
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    news = [read_news(d / "news.tsv") for d in dirs.values()]
    raw = pl.concat([r for _, r in news]).unique()
    conflicting = int((raw.group_by("news_id").len()["len"] > 1).sum())
    articles = pl.concat([a for a, _ in news]).unique("article_id", keep="first", maintain_order=True)
    known = np.sort(articles["article_id"].to_numpy().astype(np.int64))
    seconds["news"] = time.perf_counter() - t

    report: dict = {"format": "mind", "source": str(src), "out": str(dst), "splits": {}}
    first_shown, referenced = [], []
    with atomic_dir(dst) as tmp:
        for split, folder in dirs.items():
            t = time.perf_counter()
            part = read_mind_behaviors(folder / "behaviors.tsv", labelled=split != "test")
            _write_parquet(part["behaviors"], tmp / split / "behaviors.parquet")
            _write_parquet(part["history"], tmp / split / "history.parquet")
            first_shown.append(part["first_shown"])
            referenced.append(part["referenced"])
            unknown_ids = int((~np.isin(part["referenced"], known, assume_unique=True)).sum())
            report["splits"][split] = {"folder": folder.name, **part["stats"], "unknown_news_ids": unknown_ids}
            seconds[split] = time.perf_counter() - t

        t = time.perf_counter()
        shown = pl.concat(first_shown).group_by("article_id").agg(pl.col("t").min())
        articles = (articles.join(shown.select(pl.col("article_id").cast(pl.Int32),
                                               pl.col("t").cast(pl.Datetime("us")).alias("published_time")),
                                  on="article_id", how="left")
                    .sort("article_id"))
        out = _in_schema(articles, {**ARTICLES, **EXTRA_ARTICLE_COLUMNS})
        _write_parquet(out, tmp / "articles.parquet")
        report.update({
            "articles": out.height,
            "articles_without_published_time": int(out["published_time"].null_count()),
            "conflicting_news_ids": conflicting,
            "unknown_news_ids": int((~np.isin(np.unique(np.concatenate(referenced)), known,
                                              assume_unique=True)).sum()),
        })
        (tmp / CONVERSION_FILE).write_text(json.dumps(report, indent=2) + "\n")
        seconds["articles"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return {**report, "seconds": {k: round(v, 3) for k, v in seconds.items()}}
