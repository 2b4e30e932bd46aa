"""Time signals for every (impression, in-view article): age, trending counts and a smoothed CTR.

The columns of a `SignalTable`, one value per in-view article, for trailing windows w (default 1, 6, 24 h):

* `age_h`: impression_time - published_time, in hours (negative if the log shows it before its
  published_time). NaN when the article has no `published_time` (or is not in articles.parquet);
  `age_known` flags which ages are real, so a missing time is never mistaken for age 0.
* `inviews_{w}h`, `clicks_{w}h`: the article's in-views and clicks in [t - w, t), **strictly before** the
  impression time t; `inviews_all`, `clicks_all`: every event before t. The events (`data.events`) are the
  in-views and clicks of earlier impressions of the train log and of the split itself, and the users'
  history reads with their timestamps (counted as clicks).
* `ctr_{w}h`, `ctr_all`: (clicks + a) / (inviews + a + b), the posterior mean under a Beta(a, b) prior
  with mean `ctr_prior_mean` and strength a + b = `ctr_prior_strength`. History reads have no in-view, so
  this is a smoothed rate, not a probability, and can exceed 1.
* with `aggregates=True`: `total_inviews`, `total_pageviews`, `total_read_time` from articles.parquet
  (NaN where null or absent). They aggregate the **whole data period**, future included, so they leak in
  offline evaluation; off by default.

What an impression can see (the default, `window="past"`): the train log, the history reads and the
split's own earlier impressions. Earlier clicks of the split are past events, not leakage; an impression
never sees its own in-views or clicks (they happen at t, and counts stop strictly before t), nor anything
later. Removing or changing any event at or after t never changes a feature at t (tested). On the test
split only in-views exist, so its click counts come from train and the histories alone; `mask_split_clicks`
drops that share of the scored split's own clicks (1.0 = all, as on test), so that features computed for
training can look like the test split's.

`window="split"` is the transductive mode that RecSys'24 solutions and ebnerd-benchmark's baseline used on
the test set: in-view counts look both ways, [t - w, t + w), and `inviews_all` counts every in-view of the
train log and of the whole split, future and the impression itself included. Click counts stay past-only
(on a labelled split the future clicks are the labels; the test split has none). Off by default, and every
result of the time baselines says which mode produced it.

Cost: events are keyed by (article, time) into one sorted int64 array per kind; a count is the difference
of two `searchsorted` positions. Building is a sort, O(E log E); each query is O(log E); memory is linear
in events plus the queries of one chunk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import polars as pl

from mtnews.data import schema
from mtnews.data.behaviors import behavior_batches, behavior_columns
from mtnews.data.events import HOUR_US, Events, LogPart, collect_events
from mtnews.data.impressions import EvalImpressions
from mtnews.data.layout import SplitPaths, split_paths
from mtnews.errors import ConfigError, DataError

WINDOW_MODES = ("past", "split")
DEFAULT_WINDOWS_H = (1.0, 6.0, 24.0)
AGGREGATE_COLUMNS = ("total_inviews", "total_pageviews", "total_read_time")
SCAN_ROWS = 1 << 17  # behaviors rows per record batch when reading a log's events
CHUNK = 1 << 20  # queries per block when a whole split is computed at once


@dataclass(frozen=True)
class SignalOptions:
    """How signals are computed; every field is validated (a bad value is one ConfigError naming it)."""

    windows_h: tuple[float, ...] = DEFAULT_WINDOWS_H
    window: str = "past"  # "past", or "split" (transductive, see the module docs)
    ctr_prior_mean: float = 0.1  # EBNeRD shows about 10 articles per impression and ~1 is clicked
    ctr_prior_strength: float = 10.0
    mask_split_clicks: float = 0.0  # share of the scored split's own log clicks dropped (1.0 = as on test)
    mask_seed: int = 0
    aggregates: bool = False  # the leaky whole-period columns of articles.parquet
    history_dedupe_h: float = 1.0  # a history read this soon after the same log click is that click

    def __post_init__(self) -> None:
        w = tuple(float(x) for x in self.windows_h)
        object.__setattr__(self, "windows_h", w)
        if not w or any(not math.isfinite(x) or x <= 0 for x in w) or len(set(w)) != len(w):
            raise ConfigError(f"signals.windows_h: expected distinct positive hours, got {list(self.windows_h)}")
        if self.window not in WINDOW_MODES:
            raise ConfigError(f"signals.window: '{self.window}' is not one of {', '.join(WINDOW_MODES)}")
        if not 0 < self.ctr_prior_mean < 1:
            raise ConfigError(f"signals.ctr_prior_mean: must be in (0, 1), got {self.ctr_prior_mean}")
        if not (math.isfinite(self.ctr_prior_strength) and self.ctr_prior_strength > 0):
            raise ConfigError(f"signals.ctr_prior_strength: must be > 0, got {self.ctr_prior_strength}")
        if not 0 <= self.mask_split_clicks <= 1:
            raise ConfigError(f"signals.mask_split_clicks: must be in [0, 1], got {self.mask_split_clicks}")
        if not (math.isfinite(self.history_dedupe_h) and self.history_dedupe_h >= 0):
            raise ConfigError(f"signals.history_dedupe_h: must be >= 0, got {self.history_dedupe_h}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "SignalOptions":
        d = dict(d or {})
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown signals option(s) {', '.join(unknown)}; valid: "
                              f"{', '.join(f.name for f in fields(cls))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    @property
    def window_names(self) -> tuple[str, ...]:
        return tuple(f"{w:g}h" for w in self.windows_h)

    def names(self) -> tuple[str, ...]:
        """Every column a SignalTable holds under these options, in order."""
        out = ["age_h", "age_known"]
        for kind in ("inviews", "clicks", "ctr"):
            out += [f"{kind}_{w}" for w in self.window_names] + [f"{kind}_all"]
        if self.aggregates:
            out += list(AGGREGATE_COLUMNS)
        return tuple(out)


@dataclass
class SignalTable:
    """Signals aligned with flat in-view articles (impression after impression, in in-view order)."""

    columns: dict[str, np.ndarray]  # float64, except age_known (bool)
    window: str  # the mode that produced the counts: "past" or "split"

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def matrix(self, names: tuple[str, ...] | list[str] | None = None, dtype=np.float32) -> np.ndarray:
        """A [T, F] array of the named columns (all by default), e.g. as model inputs."""
        names = list(self.columns) if names is None else list(names)
        return np.stack([self.columns[n].astype(dtype) for n in names], axis=1) if names else np.zeros((len(self), 0))

    def to_frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.columns)


class IdLookup:
    """Positions of integer ids in a sorted unique array: a dense table when the ids span a small range
    (article ids do: a gather is several times faster than a binary search per id), else binary search."""

    DENSE_FACTOR = 8  # a table at most this many times the number of ids (and at least 1M entries allowed)

    def __init__(self, ids: np.ndarray):
        self.ids = np.asarray(ids, dtype=np.int64)  # sorted, unique
        self.table = None
        if len(self.ids):
            self.low = int(self.ids[0])
            width = int(self.ids[-1]) - self.low + 1
            if width <= max(self.DENSE_FACTOR * len(self.ids), 1 << 20):
                self.table = np.full(width, -1, dtype=np.int32)
                self.table[self.ids - self.low] = np.arange(len(self.ids), dtype=np.int32)

    @classmethod
    def of_values(cls, *arrays: np.ndarray) -> "IdLookup":
        """The lookup of the distinct values of `arrays` (sorted)."""
        values = [np.asarray(a, dtype=np.int64) for a in arrays if len(a)]
        if not values:
            return cls(np.zeros(0, dtype=np.int64))
        low = min(int(v.min()) for v in values)
        high = max(int(v.max()) for v in values)
        if high - low + 1 <= max(cls.DENSE_FACTOR * sum(len(v) for v in values), 1 << 20):
            seen = np.zeros(high - low + 1, dtype=bool)
            for v in values:
                seen[v - low] = True
            return cls(np.flatnonzero(seen) + low)
        return cls(np.unique(np.concatenate(values)))

    def __len__(self) -> int:
        return len(self.ids)

    def find(self, values: np.ndarray) -> np.ndarray:
        """The position of each value in `ids`, or -1 where it is absent."""
        v = np.asarray(values, dtype=np.int64)
        if not len(self.ids):
            return np.full(v.shape, -1, dtype=np.int64)
        if self.table is not None:
            rel = v - self.low
            if len(rel) and rel.min() >= 0 and rel.max() < len(self.table):  # e.g. the events' own articles
                return self.table[rel].astype(np.int64)
            inside = (rel >= 0) & (rel < len(self.table))
            return np.where(inside, self.table[np.where(inside, rel, 0)], -1).astype(np.int64)
        pos = np.searchsorted(self.ids, v).clip(0, len(self.ids) - 1)
        return np.where(self.ids[pos] == v, pos, -1).astype(np.int64)


class _Sorted:
    """Events of one kind keyed by (article code, time), sorted; counts are differences of positions."""

    def __init__(self, codes: np.ndarray, times: np.ndarray, t0: int, span: int, n_codes: int):
        keys = codes  # built in place: these arrays are the largest of the whole computation
        keys *= span
        keys += times
        keys -= t0
        keys.sort()
        self.keys = keys
        bounds = np.arange(n_codes + 1, dtype=np.int64) * span
        self.start = np.searchsorted(self.keys, bounds, side="left")

    def before(self, key: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.keys, key, side="left")


class SignalIndex:
    """Trailing-window counts over a fixed set of events, for any (article id, time) queries."""

    def __init__(self, events: Events, options: SignalOptions):
        self.options = options
        self.history_reads = events.history_reads
        self.masked_clicks = events.masked_clicks
        self.n_inviews = len(events.inview_time)
        self.n_clicks = len(events.click_time)
        times = [t for t in (events.inview_time, events.click_time) if len(t)]
        self.lookup = IdLookup.of_values(events.inview_article, events.click_article)
        self.articles = self.lookup.ids
        self.t0 = min(int(t.min()) for t in times) if times else 0
        # Relative times of events lie in [0, span - 2]; queries clip to [0, span - 1], which keeps every
        # count exact (nothing lies outside) and every key inside its article's block.
        self.span = (max(int(t.max()) for t in times) - self.t0 + 2) if times else 2
        if len(self.articles) * self.span >= 2**62:
            raise DataError(f"time signals: {len(self.articles)} articles over {self.span / HOUR_US:.0f} hours "
                            f"do not fit 63-bit (article, microsecond) keys")
        n = len(self.articles)
        self.inviews = _Sorted(self._codes(events.inview_article), events.inview_time, self.t0, self.span, n)
        self.clicks = _Sorted(self._codes(events.click_article), events.click_time, self.t0, self.span, n)

    @classmethod
    def from_parts(cls, parts: list[LogPart], options: SignalOptions | None = None) -> "SignalIndex":
        """The index of in-memory log parts (train and/or the split, `own=True` for the split scored)."""
        options = options or SignalOptions()
        return cls(collect_events(parts, mask=options.mask_split_clicks, mask_seed=options.mask_seed,
                                  history_dedupe_h=options.history_dedupe_h), options)

    def _codes(self, article_ids: np.ndarray) -> np.ndarray:
        """Dense codes of article ids; -1 for an article with no event at all."""
        return self.lookup.find(article_ids)

    def _key(self, code: np.ndarray, t: np.ndarray) -> np.ndarray:
        rel = t - self.t0
        np.clip(rel, 0, self.span - 1, out=rel)
        rel += code * self.span
        return rel

    def counts(self, article_ids: np.ndarray, times: np.ndarray) -> dict[str, np.ndarray]:
        """In-view and click counts per window (and over all time) for each (article id, time in us)."""
        o = self.options
        if len(self.articles) == 0:  # no event at all: every count is 0
            zero = np.zeros(len(np.asarray(article_ids)))
            return {f"{k}_{w}": zero.copy() for k in ("inviews", "clicks") for w in (*o.window_names, "all")}
        code = self._codes(article_ids)
        c = np.maximum(code, 0)
        t = np.asarray(times, dtype=np.int64)
        # Binary searches for needles in ascending order walk the keys once, cache-friendly (about 15x faster
        # than random needles on 10M keys). Every shifted key (t - w, t + w) keeps this order, since the
        # clipping in _key is monotone, so one argsort serves all of them.
        order = np.argsort(self._key(c, t), kind="stable")
        c, t = c[order], t[order]
        known = code[order] >= 0
        out: dict[str, np.ndarray] = {}
        windows = [int(round(w * HOUR_US)) for w in o.windows_h]
        for kind, idx in (("inviews", self.inviews), ("clicks", self.clicks)):
            two_sided = kind == "inviews" and o.window == "split"
            now = idx.before(self._key(c, t))
            for name, w in zip(o.window_names, windows):
                hi = idx.before(self._key(c, t + w)) if two_sided else now
                out[f"{kind}_{name}"] = np.where(known, hi - idx.before(self._key(c, t - w)), 0)
            end = idx.start[c + 1] if two_sided else now
            out[f"{kind}_all"] = np.where(known, end - idx.start[c], 0)
        for name, sorted_counts in out.items():
            back = np.empty(len(order), dtype=np.float64)
            back[order] = sorted_counts
            out[name] = back
        return out


@dataclass
class ArticleTimes:
    """Published times and (optionally) the whole-period aggregates of articles.parquet, by article id."""

    ids: np.ndarray  # int64, sorted
    published: np.ndarray  # int64 us; meaningless where not published_known
    published_known: np.ndarray  # bool
    aggregates: dict[str, np.ndarray] = field(default_factory=dict)  # float64, NaN where null

    def __post_init__(self) -> None:
        self.lookup = IdLookup(self.ids)

    @classmethod
    def from_frame(cls, df: pl.DataFrame) -> "ArticleTimes":
        """From `article_id` and, when present, `published_time` and the aggregate columns."""
        df = df.filter(pl.col("article_id").is_not_null()).unique("article_id", keep="first").sort("article_id")
        pub = (df["published_time"].cast(pl.Datetime("us")).cast(pl.Int64) if "published_time" in df.columns
               else pl.Series([None] * df.height, dtype=pl.Int64))
        aggs = {c: df[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in AGGREGATE_COLUMNS if c in df.columns}
        return cls(df["article_id"].cast(pl.Int64).to_numpy(), pub.fill_null(0).to_numpy(),
                   pub.is_not_null().to_numpy(), aggs)

    def _pos(self, article_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = self.lookup.find(article_ids)
        return np.maximum(pos, 0), pos >= 0

    def age_hours(self, article_ids: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos, found = self._pos(article_ids)
        known = found & self.published_known[pos] if len(self.ids) else found
        age = np.full(len(pos), np.nan)
        age[known] = (np.asarray(times, dtype=np.int64)[known] - self.published[pos[known]]) / HOUR_US
        return age, known

    def aggregate(self, name: str, article_ids: np.ndarray) -> np.ndarray:
        pos, found = self._pos(article_ids)
        values = self.aggregates.get(name)
        if values is None or not len(self.ids):
            return np.full(len(pos), np.nan)
        return np.where(found, values[pos], np.nan)


def compute_signals(index: SignalIndex, articles: ArticleTimes, article_ids: np.ndarray, times: np.ndarray,
                    names: tuple[str, ...] | None = None) -> SignalTable:
    """The signals of flat (article id, impression time in us) pairs; `names` restricts the columns."""
    o = index.options
    names = o.names() if names is None else tuple(names)
    unknown = sorted(set(names) - set(o.names()))
    if unknown:
        raise ConfigError(f"unknown signal(s) {', '.join(unknown)}; available: {', '.join(o.names())}")
    article_ids = np.asarray(article_ids, dtype=np.int64)
    times = np.asarray(times, dtype=np.int64)
    cols: dict[str, np.ndarray] = {}
    if {"age_h", "age_known"} & set(names):
        cols["age_h"], cols["age_known"] = articles.age_hours(article_ids, times)
    if any(n.startswith(("inviews_", "clicks_", "ctr_")) for n in names):
        counts = index.counts(article_ids, times)
        cols.update(counts)
        a = o.ctr_prior_mean * o.ctr_prior_strength
        for w in (*o.window_names, "all"):
            cols[f"ctr_{w}"] = (counts[f"clicks_{w}"] + a) / (counts[f"inviews_{w}"] + o.ctr_prior_strength)
    for c in AGGREGATE_COLUMNS:
        if c in names:
            cols[c] = articles.aggregate(c, article_ids)
    return SignalTable({n: cols[n] for n in names}, o.window)


# --- one split of a dataset ---------------------------------------------------------------------------------

_TIMED_BEHAVIORS = {"impression_time": schema.DATETIME}
_TIMED_HISTORY = {**schema.REQUIRED_HISTORY, "impression_time_fixed": schema.DATETIME_LIST}


def _read_part(paths: SplitPaths, own: bool) -> LogPart:
    """A split's log and history, with the columns time signals need (validated, one error per problem)."""
    cols = behavior_columns(paths)
    schema.validate(paths.behaviors, _TIMED_BEHAVIORS)
    want = [c for c in ("impression_id", "user_id", "article_ids_inview", "article_ids_clicked") if c in cols]
    frames = [pl.from_arrow(b) for b in behavior_batches(paths, [*want, "impression_time"], SCAN_ROWS)]
    behaviors = pl.concat(frames)
    history = None
    if paths.history.exists():
        schema.validate(paths.history, _TIMED_HISTORY)
        history = schema.read_frame(paths.history, ["user_id", "impression_time_fixed", "article_id_fixed"])
    return LogPart(behaviors, history, own, str(paths.behaviors), str(paths.history))


def read_article_times(path: Path) -> ArticleTimes:
    """`article_id`, `published_time` and the aggregate columns of articles.parquet, when present."""
    sch = schema.validate(path, schema.REQUIRED_ARTICLES, {"published_time": schema.DATETIME,
                                                           **{c: schema.NUM for c in AGGREGATE_COLUMNS}})
    cols = ["article_id"] + [c for c in ("published_time", *AGGREGATE_COLUMNS) if c in sch]
    return ArticleTimes.from_frame(schema.read_frame(path, cols))


@dataclass
class SplitSignals:
    """What the signals of one split's impressions need, built once; then computed chunk by chunk.

    Memory: the event index (two int64 per event), one (impression id, time) pair per impression and the
    article table; a chunk's signals cost its own candidates only.
    """

    paths: SplitPaths
    options: SignalOptions
    index: SignalIndex
    articles: ArticleTimes
    impression_ids: np.ndarray  # int64, sorted
    impression_times: np.ndarray  # int64 us, aligned with impression_ids
    sources: tuple[str, ...]  # the split folders whose events are counted

    @classmethod
    def load(cls, root: str | Path, split: str, options: SignalOptions | None = None,
             train_root: str | Path | None = None) -> "SplitSignals":
        """Signals for `root`/`split`, counting train (from `train_root`, default `root`) plus the split.

        Without a train split (the official test set ships alone), only the split's own events and
        history count; `sources` says which were used.
        """
        options = options or SignalOptions()
        paths = split_paths(root, split)
        own = _read_part(paths, own=True)
        parts = [own]
        train_root = Path(root if train_root is None else train_root)
        if split != "train" and (train_root / "train" / "behaviors.parquet").exists():
            parts.insert(0, _read_part(split_paths(train_root, "train"), own=False))
        b = own.behaviors.select(pl.col("impression_id").cast(pl.Int64),
                                 pl.col("impression_time").cast(pl.Datetime("us")).cast(pl.Int64)).sort("impression_id")
        ids = b["impression_id"].to_numpy()
        repeated = np.flatnonzero(ids[1:] == ids[:-1])
        if len(repeated):
            raise DataError(f"{paths.behaviors}: column 'impression_id' repeats {len(repeated)} id(s) (first: "
                            f"{ids[repeated[0]]}), expected unique ids (time signals look impressions up by id)")
        sources = tuple(str(Path(p.name).parent) for p in parts)  # the split folders
        return cls(paths, options, SignalIndex.from_parts(parts, options), read_article_times(paths.articles), ids,
                   b["impression_time"].to_numpy(), sources)

    def times_of(self, impression_ids: np.ndarray) -> np.ndarray:
        """Impression times (us) of impressions of this split; an id it does not have is a DataError."""
        ids = np.asarray(impression_ids, dtype=np.int64)
        pos = np.searchsorted(self.impression_ids, ids).clip(0, max(len(self.impression_ids) - 1, 0))
        found = self.impression_ids[pos] == ids
        if not found.all():
            raise DataError(f"{self.paths.behaviors}: impression_id {ids[~found][0]} is not in this split, "
                            f"expected impressions of the '{self.paths.split}' split")
        return self.impression_times[pos]

    def compute(self, impression_ids: np.ndarray, article_ids: np.ndarray, offsets: np.ndarray,
                names: tuple[str, ...] | None = None) -> SignalTable:
        """Signals of the flat in-view `article_ids` of impressions `impression_ids` (CSR `offsets`)."""
        t = np.repeat(self.times_of(impression_ids), np.diff(offsets))
        return compute_signals(self.index, self.articles, article_ids, t, names)

    def for_impressions(self, imps: EvalImpressions, names: tuple[str, ...] | None = None) -> SignalTable:
        """Signals aligned with a chunk of evaluation impressions (`imps.article_ids`)."""
        return self.compute(imps.impression_id, imps.article_ids, imps.offsets, names)

    def frame(self, names: tuple[str, ...] | None = None) -> pl.DataFrame:
        """Every (impression, in-view article) of the split with its signals, in file order."""
        pieces = []
        for batch in behavior_batches(self.paths, ["impression_id", "article_ids_inview"], SCAN_ROWS):
            df = (pl.from_arrow(batch).with_columns(pl.col("impression_id").cast(pl.Int64))
                  .explode("article_ids_inview").drop_nulls("article_ids_inview")
                  .rename({"article_ids_inview": "article_id"}))
            for s in range(0, df.height, CHUNK):
                part = df.slice(s, CHUNK)
                t = self.times_of(part["impression_id"].to_numpy())
                sig = compute_signals(self.index, self.articles, part["article_id"].to_numpy(), t, names)
                pieces.append(part.hstack(sig.to_frame()))
        return pl.concat(pieces)


def split_signals(root: str | Path, split: str = "validation", options: SignalOptions | dict | None = None,
                  train_root: str | Path | None = None) -> SplitSignals:
    """`SplitSignals.load`, taking the options as a `SignalOptions` or a mapping of its fields."""
    if not isinstance(options, SignalOptions):
        options = SignalOptions.from_dict(options)
    return SplitSignals.load(root, split, options, train_root)
