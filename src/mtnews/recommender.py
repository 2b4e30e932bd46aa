"""`mtnews.Recommender`: a trained run as a Python object, and the engine behind `mtnews serve`.

    rec = Recommender.from_run("runs/demo/run")                  # no dataset folder needed
    rec.rank(history=[...], candidates=[...], top_k=10)           # ids, or {"article_id", "title"} items
    rec.encode_articles(titles)                                   # news vectors
    rec.user_vectors(histories)                                   # many users at once
    rec.score(behaviors_frame)                                    # EBNeRD-layout frame -> scores per in-view list
    rec.recommend(user_id)                                        # retrieval from the fresh pool, then re-rank
    rec.similar_users(user_id, k=10); rec.similar_articles(article_id, k=10)
    rec.record_events(inview=[...], clicked=[...], impression_time=t)   # live time signals
    rec.signals(article_ids, impression_time=t)                   # their SignalTable

Time: `rank` and `recommend` take an optional `impression_time` (a datetime, naive as the dataset's own
times, or aware and then converted to UTC; default: the recommender's clock, `now` unless pinned, e.g.
to the loaded log's last impression with `clock="last-impression"`). `recommend` without candidates
retrieves the `recent` best articles of the fresh pool (published in [t - max_age, t), the user's reads
left out) from a `retrieval.FreshIndex`, then re-ranks them with the full model; without an index (no
publication times) it ranks the freshest articles published before t. Articles supplied with titles at
run time enter the index and the catalogue of `similar_articles`, published at their `published_time`
or, without one, at the request's impression time.

Time signals: `signals` is a `data.live_signals.LiveSignals`, seeded from the dataset's logs at start-up
and fed by `record_events`. When the run is time-aware (`run.signal_options` is set), every score gets the
candidates' signals at the request's impression time (`ArticleVectors.dots(..., signals=...)`).

Every score goes through `model.scoring.ArticleVectors`, the kernel `mtnews evaluate` uses, so a ranking
here equals evaluate's for the same user and in-view list. The catalogue (every article's vector and slot
logits) is encoded once at start-up: the run's own articles, or a dataset's articles file when given.
Titles of articles the catalogue lacks are encoded on the fly (in one sorted batch, under the model lock,
kept in a bounded LRU cache); everything else is table lookups on read-only tensors, safe from any thread.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable, Mapping, Union

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from mtnews.data.articles import FIRST, IGNORE, PAD, UNK, ArticleTable
from mtnews.data.history import UserHistories, build_histories, left_pad
from mtnews.data.impressions import build_eval_impressions
from mtnews.data.live_signals import BeforeHorizon, EventJournal, LiveSignals
from mtnews.data.signals import ArticleTimes, SignalOptions, SignalTable
from mtnews.errors import ConfigError, DataError, MtnewsError
from mtnews.model.run import Run, load_run
from mtnews.model.scoring import ArticleVectors, encode_articles, resolve_device
from mtnews.model.tokens import TitleTokens, tokenize_titles
from mtnews.retrieval.index import FreshIndex
from mtnews.retrieval.params import IndexParams

EPOCH = datetime(1970, 1, 1)
HOUR_US = 3_600_000_000
DEFAULT_MAX_AGE_HOURS = 72.0
CLOCKS = ("now", "last-impression")


class RequestError(MtnewsError):
    """A request the recommender cannot answer because of what the caller sent (a 4xx over HTTP)."""


class UnknownArticles(RequestError):
    def __init__(self, ids: list[int]):
        self.ids = ids
        shown = ", ".join(map(str, ids[:20])) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
        super().__init__(f"unknown article ids: {shown}; supply their titles to rank them anyway")


class UnknownUser(RequestError):
    def __init__(self, user_id: int, source: str):
        self.user_id = user_id
        super().__init__(f"user {user_id} is not in {source}; rank with an explicit history instead"
                         if source else f"user {user_id} is unknown: no users are loaded (give a dataset, "
                                        f"`--data`); rank with an explicit history instead")


class InvalidRequest(RequestError):
    """Well-typed but inconsistent input, e.g. one article id supplied twice with different titles."""


class InvalidTime(RequestError):
    """An impression time the recommender cannot answer for (e.g. before what the live counters keep)."""


def to_us(value: datetime | int) -> int:
    """Microseconds since the epoch: an int as is; a naive datetime as the dataset's clock; an aware one in UTC."""
    if isinstance(value, datetime):
        offset = value.utcoffset()
        naive = value.replace(tzinfo=None)
        # Integer arithmetic: no datetime overflow for year 1 or 9999 with any offset.
        us = (naive - EPOCH) // timedelta(microseconds=1)
        return int(us - (offset // timedelta(microseconds=1) if offset is not None else 0))
    return int(value)


def now_us() -> int:
    return to_us(datetime.now(timezone.utc))


@dataclass(frozen=True)
class ArticleInfo:
    article_id: int | None  # None for a history click whose article is missing from the catalogue
    title: str
    category: str | None
    published_time: datetime | None = None


@dataclass(frozen=True)
class Ranked:
    article_id: int
    score: float
    title: str
    category: str | None


@dataclass(frozen=True)
class Ranking:
    items: list[Ranked]  # best first, cut to top_k
    candidates: int  # how many candidates were scored
    history_used: int  # clicks the user vector was built from (at most data.history_size)
    encoded_titles: int  # supplied titles encoded for this call (cache misses)
    impression_time: datetime | None = None  # the time the ranking is for
    source: str = "candidates"  # "candidates" (given), "index" (retrieved from the fresh pool) or "freshest"


@dataclass(frozen=True)
class SuppliedArticle:
    article_id: int
    title: str
    category: str | None = None
    published_time: datetime | None = None  # default: the impression time of the request that brings it


@dataclass(frozen=True)
class Neighbour:
    id: int  # a user id or an article id
    similarity: float  # cosine of the two vectors


@dataclass
class _Added:
    """An article the catalogue lacks, supplied at run time: its fields, publication time and vector."""

    article: SuppliedArticle
    published_us: int
    vector: np.ndarray


Item = Union[int, Mapping, SuppliedArticle]


class VectorCache:
    """A bounded, thread-safe LRU map from title text to its news vector (a title fully determines it)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._data: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, count: bool = True) -> torch.Tensor | None:
        with self._lock:
            vec = self._data.get(key)
            if vec is not None:
                self._data.move_to_end(key)
            if count:
                if vec is None:
                    self.misses += 1
                else:
                    self.hits += 1
            return vec

    def put(self, key: str, vec: torch.Tensor) -> None:
        if self.capacity <= 0:
            return
        with self._lock:
            self._data[key] = vec
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)
                self.evictions += 1


def _datetime(us: int) -> datetime | None:
    return EPOCH + timedelta(microseconds=int(us)) if us else None


def utc_datetime(t: datetime | int | None) -> datetime | None:
    """A naive time of the dataset's clock (or microseconds) as an aware UTC datetime, for answers that carry
    their zone; None outside datetime's years 1..9999."""
    if isinstance(t, (int, np.integer)):
        t = _datetime_of(int(t))
    return None if t is None else t.replace(tzinfo=timezone.utc)


def _datetime_of(us: int) -> datetime | None:
    """A naive datetime (the dataset's clock) for microseconds, None outside datetime's years 1..9999."""
    try:
        return EPOCH + timedelta(microseconds=int(us))
    except OverflowError:
        return None


def _supplied(item) -> SuppliedArticle | None:
    if isinstance(item, SuppliedArticle):
        return item
    if isinstance(item, Mapping):
        try:
            return SuppliedArticle(int(item["article_id"]), str(item["title"]), item.get("category"),
                                   item.get("published_time"))
        except KeyError as e:
            raise InvalidRequest(f"an article item needs 'article_id' and 'title', this one lacks {e}") from None
    return None


def _article_id(item) -> int:
    s = _supplied(item)
    return s.article_id if s is not None else int(item)


class Recommender:
    """A loaded run with its catalogue encoded; see the module docstring for the calls."""

    def __init__(self, run: Run, articles: ArticleTable | None = None, histories: UserHistories | None = None, *,
                 cache_size: int = 10_000, recent: int = 100, batch_size: int = 256, source: str | None = None,
                 signals: LiveSignals | None = None, index: FreshIndex | bool = True,
                 index_params: IndexParams = IndexParams(), max_age_hours: float = DEFAULT_MAX_AGE_HOURS,
                 clock: Callable[[], int] | datetime | int | None = None, journal: EventJournal | None = None,
                 max_added: int = 100_000):
        self.run = run
        self.model = run.model.eval()
        self.cfg = run.cfg
        self.tokenizer = run.tokenizer
        self.articles = articles if articles is not None else run.articles
        self.history_size = run.history_size
        if histories is not None and histories.history_size != self.history_size:
            raise ValueError("histories must be built with the run's data.history_size")
        self.histories = histories if histories is not None else UserHistories(
            np.zeros(0, dtype=np.int64), np.zeros((1, self.history_size), dtype=np.int32))
        self.source = source if source is not None else ("" if histories is None else "history.parquet")
        self.device = next(self.model.parameters()).device
        self.batch_size = batch_size
        self.recent = recent
        self.cache = VectorCache(cache_size)
        self._model_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self.encoded_on_the_fly = 0

        start = time.perf_counter()
        # Every row from UNK on: UNK is the empty title, which is what `mtnews evaluate` uses for clicks and
        # candidates missing from the articles file, so such users and lists score identically here.
        tokens = tokenize_titles(self.articles.titles, self.tokenizer, self.cfg.model.max_title_length)
        self.vectors = ArticleVectors.build(self.model, tokens, np.arange(UNK, len(self.articles)), self.device,
                                            batch_size)
        self.encode_seconds = time.perf_counter() - start

        # Default candidates of `recommend`: newest first (ties by file order); without published_time,
        # the file's last rows stand in for the newest.
        real = np.arange(FIRST, len(self.articles))
        if self.articles.published_us is not None:
            self._by_recency = real[np.argsort(-self.articles.published_us[FIRST:], kind="stable")]
        else:
            self._by_recency = real[::-1].copy()

        if not max_age_hours > 0:
            raise ConfigError(f"max_age_hours must be > 0, got {max_age_hours}")
        self.max_age_us = int(round(max_age_hours * HOUR_US))
        self.set_clock(clock)
        # A time-aware run (the MTRec-T branch) names the signals its scores take; others take none.
        self.signal_options: SignalOptions | None = getattr(run, "signal_options", None)
        if signals is None:
            signals = LiveSignals(self.signal_options or SignalOptions(), self._article_times())
        elif self.signal_options is not None and signals.options != self.signal_options:
            raise ConfigError("the live signals' options differ from the run's signal_options")
        self.live = signals
        self.journal = journal
        if journal is not None:  # events posted before a restart, after the logs the counters start from
            self.live.record(*journal.read())
        self.added: OrderedDict[int, _Added] = OrderedDict()
        if max_added < 0:
            raise ConfigError(f"max_added must be >= 0, got {max_added}")
        self.max_added = max_added  # run-time articles kept (the earliest published go first)
        self._added_lock = threading.RLock()
        self._users_normed: torch.Tensor | None = None
        self._articles_normed: torch.Tensor | None = None
        if isinstance(index, FreshIndex):
            self.index: FreshIndex | None = index
        elif index and self.articles.published_us is not None and (self.articles.published_us[FIRST:] != 0).any():
            self.index = FreshIndex.build(self.articles.article_ids[FIRST:], self.articles.published_us[FIRST:],
                                          self.vectors.vectors[FIRST:].cpu().numpy(), index_params,
                                          run.fingerprint())
        else:
            self.index = None

    @classmethod
    def from_run(cls, run_dir: str | Path, data: str | Path | None = None, split: str = "validation", *,
                 device: str = "auto", cache_size: int = 10_000, recent: int = 100, clock: str | datetime = "now",
                 index: str | Path | bool = True, index_params: IndexParams = IndexParams(),
                 max_age_hours: float = DEFAULT_MAX_AGE_HOURS, seed_signals: bool = True,
                 events_log: str | Path | None = None) -> "Recommender":
        """Load a run. With `data`, the catalogue is that dataset's articles and `split`'s users are known.

        `clock`: "now", "last-impression" (the split's last impression_time: for historical data, where
        "now" makes every article years old) or a fixed datetime. `index`: True builds the fresh-pool index
        in memory (when the articles have publication times), a folder loads one written by `mtnews embed`
        (DIR or DIR/index; it must come from this run), False serves without one. With `seed_signals`, the
        live time signals start from the train log and `split`'s log and histories (`mtnews evaluate`'s
        sources), so a restart recovers them; `events_log` (a JSON-lines `EventJournal`) keeps the events
        recorded since and replays them at the next start.
        """
        from mtnews.data.history import load_histories
        from mtnews.data.layout import split_paths
        from mtnews.data.live_signals import startup_parts
        from mtnews.data.signals import read_article_times

        if isinstance(clock, str) and clock not in CLOCKS:
            raise ConfigError(f"--clock: '{clock}' is not one of {', '.join(CLOCKS)} (or an ISO date and time)")
        if clock == "last-impression" and data is None:
            raise ConfigError("--clock last-impression needs a dataset (--data) whose log gives the last impression")
        run = load_run(run_dir, device=resolve_device(device))
        loaded = index
        if isinstance(index, (str, Path)):
            folder = Path(index)
            loaded = FreshIndex.load(folder / "index" if (folder / "index").is_dir() else folder, run.fingerprint())
        kwargs = dict(cache_size=cache_size, recent=recent, index=loaded, index_params=index_params,
                      max_age_hours=max_age_hours, journal=EventJournal(events_log) if events_log else None)
        if data is None:
            return cls(run, clock=None if clock == "now" else clock, **kwargs)
        paths = split_paths(data, split)
        if clock == "last-impression":
            clock = last_impression_us(paths.behaviors)
        articles = run.load_dataset_articles(paths.articles)
        histories = load_histories(paths.history, articles, run.history_size)
        signals = None
        options = getattr(run, "signal_options", None) or SignalOptions()
        if seed_signals and paths.behaviors.exists():
            try:
                signals = LiveSignals.from_parts(startup_parts(data, split), options, read_article_times(paths.articles))
            except DataError:
                if getattr(run, "signal_options", None) is not None:
                    raise  # a time-aware run cannot score without its signals
                signals = None  # a log without times (e.g. MIND) serves content-only scores as before
        rec = cls(run, articles, histories, source=f"{split}/history.parquet", signals=signals,
                  clock=None if clock == "now" else clock, **kwargs)
        rec.signal_split = (data, split)  # where MTRec-T's `score` counts its time signals
        return rec

    # --- lookups ------------------------------------------------------------------------------------
    @property
    def num_articles(self) -> int:
        return len(self.articles) - FIRST

    @property
    def num_users(self) -> int:
        return len(self.histories.user_ids)

    @property
    def dim(self) -> int:
        """Width of article and user vectors: the model's ranking space (`MTRec.ranking_dim`)."""
        return self.model.ranking_dim

    def describe(self) -> str:
        users = f"{self.num_users} users from {self.source}" if self.source else "no users loaded"
        index = self.index.describe() if self.index is not None else "none (recommend ranks the freshest articles)"
        clock = f"pinned to {_datetime_of(self.clock())}" if self.clock_pinned else "now (UTC)"
        return (f"{self.num_articles} articles encoded in {self.encode_seconds:.1f}s ({self.dim}-dim, "
                f"{self.device}); {users}; history size {self.history_size}\nfresh-pool index: {index}; clock: "
                f"{clock}; live time signals: {self.live.recorded} events from the start-up logs")

    def _info(self, idx: int) -> ArticleInfo:
        a = self.articles
        if idx < FIRST:
            return ArticleInfo(None, "", None)
        cat = int(a.category[idx])
        published = _datetime(a.published_us[idx]) if a.published_us is not None else None
        return ArticleInfo(int(a.article_ids[idx]), a.titles[idx], a.category_names[cat] if cat != IGNORE else None,
                           published)

    def article(self, article_id: int) -> ArticleInfo | None:
        idx = int(self.articles.index(np.array([article_id]))[0])
        return self._info(idx) if idx >= FIRST else None

    def users(self, offset: int, limit: int) -> list[int]:
        return [int(u) for u in self.histories.user_ids[offset : offset + limit]]

    # --- the clock ----------------------------------------------------------------------------------
    def set_clock(self, clock: Callable[[], int] | datetime | int | None) -> None:
        """The default impression time: None = now (UTC), a datetime or microseconds pins it, or a callable."""
        if clock is None:
            self.clock = now_us
        elif callable(clock):
            self.clock = clock
        else:
            pinned = to_us(clock)
            self.clock = lambda: pinned
        self.clock_pinned = clock is not None and not callable(clock)

    def impression_us(self, impression_time: datetime | int | None = None) -> int:
        return self.clock() if impression_time is None else to_us(impression_time)

    def _article_times(self) -> ArticleTimes:
        a = self.articles
        ids = a.article_ids[FIRST:].astype(np.int64)
        pub = a.published_us[FIRST:].astype(np.int64) if a.published_us is not None else np.zeros(len(ids), np.int64)
        order = np.argsort(ids, kind="stable")
        return ArticleTimes(ids[order], pub[order], pub[order] != 0)

    def _user_row(self, user_id: int) -> np.ndarray:
        row = int(self.histories.rows(np.array([user_id]))[0])
        if row == 0:
            raise UnknownUser(user_id, self.source)
        return self.histories.matrix[row]

    def user_history(self, user_id: int) -> list[ArticleInfo]:
        """The clicks the model sees for this user, oldest first (unknown articles have no id)."""
        row = self._user_row(user_id)
        return [self._info(int(i)) for i in row[row != PAD]]

    # --- vectors ------------------------------------------------------------------------------------
    def encode_articles(self, titles: list[str]) -> np.ndarray:
        """Ranking vectors [len(titles), dim] (float32) for any titles, batched; cached like supplied titles."""
        vecs, _ = self._title_vectors(list(titles))
        return np.zeros((0, self.dim), dtype=np.float32) if vecs is None else vecs.cpu().numpy()

    def user_vectors(self, histories: Iterable[Iterable[Item]], supplied: Iterable[Item] = ()) -> np.ndarray:
        """User vectors [n, dim] (float32) for many histories at once (each oldest first, the last H used).

        Items are catalogue ids, or {"article_id", "title"} mappings for articles it lacks.
        """
        local, rows, _, _ = self._resolve([list(h) for h in histories], supplied)
        matrix = self._history_matrix(rows)
        return local.users(matrix).cpu().numpy()

    def rank(self, history: Iterable[Item], candidates: Iterable[Item], top_k: int | None = None,
             supplied: Iterable[Item] = (), impression_time: datetime | int | None = None) -> Ranking:
        """Rank `candidates` for a user who clicked `history` (oldest first; the last H are used).

        Supplied articles (titles for ids the catalogue lacks) that the call uses enter the fresh-pool
        index and `similar_articles`, published at their `published_time` or else at the impression time.
        """
        t = self.impression_us(impression_time)
        history, candidates, supplied = list(history), list(candidates), list(supplied)
        local, (hist, cand), encoded, (extra_ids, extra) = self._resolve([history, candidates], supplied,
                                                                          trim_first=True)
        users = local.users(self._history_matrix([hist]))
        cand_ids = np.array([_article_id(c) for c in candidates], dtype=np.int64)
        scores = self._dots(local, users, cand, cand_ids, t)
        by_id = self._supplied_by_id(supplied + [i for lst in (history, candidates) for i in lst
                                                 if _supplied(i) is not None])
        self._remember([by_id[a] for a in extra_ids], extra, t)

        def ranked(pos: int) -> Ranked:
            aid = int(cand_ids[pos])
            idx = int(self.articles.index(np.array([aid]))[0])
            if idx >= FIRST:
                info = self._info(idx)
                return Ranked(aid, float(scores[pos]), info.title, info.category)
            s = by_id[aid]
            return Ranked(aid, float(scores[pos]), s.title, s.category)

        return Ranking(self._top(scores, top_k, ranked), len(cand), len(hist), encoded, _datetime_of(t))

    def recommend(self, user_id: int, candidates: list[int] | None = None, top_k: int | None = None,
                  impression_time: datetime | int | None = None) -> Ranking:
        """Rank `candidates` for a known user; without them, retrieve from the fresh pool and re-rank.

        The fresh pool is every article published in [t - max_age, t) that the user has not read; the
        index returns its `recent` best by the user vector, which the full model then scores (the one
        kernel, with the time signals of a time-aware run). Without an index, the candidates are the
        `recent` freshest unread articles published before t.
        """
        t = self.impression_us(impression_time)
        row = self._user_row(user_id)
        hist = row[row != PAD].astype(np.int64)  # may hold UNK: scored as evaluate scores it
        users = self.vectors.users(row[None, :])
        if candidates is None:
            if self.index is not None:
                read = self.articles.article_ids[hist[hist >= FIRST]]
                with self._added_lock:
                    found, _ = self.index.retrieve(users.cpu().numpy(), t, self.max_age_us, self.recent, [read])
                cand_ids, source = found[0][found[0] >= 0], "index"
            else:
                cand_ids, source = self._freshest(t, hist), "freshest"
        else:
            cand_ids, source = np.asarray(candidates, dtype=np.int64), "candidates"
        table, slots = self._candidate_table(cand_ids)
        scores = self._dots(table, users, slots, cand_ids, t)

        def ranked(pos: int) -> Ranked:
            info = self._any_info(int(cand_ids[pos]))
            return Ranked(int(cand_ids[pos]), float(scores[pos]), info.title, info.category)

        return Ranking(self._top(scores, top_k, ranked), len(cand_ids), len(hist), 0, _datetime_of(t), source)

    # --- neighbours ---------------------------------------------------------------------------------
    def similar_users(self, user_id: int, k: int = 10) -> list[Neighbour]:
        """The k users nearest to this one by user vector (cosine), among the loaded users with a history."""
        self._user_row(user_id)  # an unknown user is UnknownUser
        r = int(self.histories.rows(np.array([user_id]))[0]) - 1
        normed, has = self._user_table()
        sims = (normed @ normed[r]).double().cpu().numpy()
        sims[~has] = -np.inf
        sims[r] = -np.inf
        return self._neighbours(sims, self.histories.user_ids, k)

    def similar_articles(self, article_id: int, k: int = 10) -> list[Neighbour]:
        """The k articles nearest to this one by news vector (cosine): the catalogue and articles added since."""
        ids, normed = self._article_table()
        pos = np.flatnonzero(ids == article_id)
        if len(pos) == 0:
            raise UnknownArticles([int(article_id)])
        sims = (normed @ normed[int(pos[0])]).double().cpu().numpy()
        sims[int(pos[0])] = -np.inf
        return self._neighbours(sims, ids, k)

    def any_article(self, article_id: int) -> ArticleInfo | None:
        """A catalogue article, or one added at run time (None if neither)."""
        info = self.article(article_id)
        if info is None and article_id in self.added:
            info = self._any_info(article_id)
        return info

    # --- time signals -------------------------------------------------------------------------------
    def record_events(self, inview: Iterable[int] = (), clicked: Iterable[int] = (),
                      impression_time: datetime | int | None = None) -> int:
        """Count one impression's in-views and clicks at its time in the live signals; returns the events taken."""
        t = self.impression_us(impression_time)
        if t > self.clock():
            # A future event would move the counters' window past every request the server answers.
            raise InvalidTime(f"events at {_datetime_of(t)} are after the server's clock ({_datetime_of(self.clock())})")
        iv = np.asarray(list(inview), dtype=np.int64)
        cl = np.asarray(list(clicked), dtype=np.int64)
        n = self.live.record(iv, np.full(len(iv), t), cl, np.full(len(cl), t))
        if self.journal is not None and n:
            self.journal.append(t, iv, cl)
        return n

    def signals(self, article_ids: Iterable[int], impression_time: datetime | int | None = None,
                names: tuple[str, ...] | None = None) -> SignalTable:
        """The time signals (a `SignalTable`, columns as `mtnews evaluate` computes them) at the impression time."""
        t = self.impression_us(impression_time)
        try:
            return self.live.features(np.asarray(list(article_ids), dtype=np.int64), t, names)
        except BeforeHorizon as e:
            raise InvalidTime(f"impression_time {_datetime_of(e.t_us)} is too far back: the live time signals are "
                              f"exact from {_datetime_of(e.horizon_us)} on") from None

    def evict(self, before: datetime | int) -> int:
        """Drop from the index the shards that ended before `before`, and the run-time articles published
        before it; returns how many index rows went."""
        b = to_us(before)
        with self._added_lock:
            gone = self.index.evict(b) if self.index is not None else 0
            for a in [a for a, x in self.added.items() if x.published_us < b]:
                del self.added[a]
            self._articles_normed = None
        return gone

    def score(self, behaviors: pl.DataFrame, signals: np.ndarray | None = None) -> pl.DataFrame:
        """`behaviors` with a `scores` column: one float per in-view article, in in-view order.

        The frame is in EBNeRD behaviors layout (`user_id`, `article_ids_inview`). Histories come from an
        `article_id_fixed` column of the frame when it has one, else from the users loaded with the run.
        In-view ids the catalogue lacks score as the empty title, as in `mtnews evaluate`; null in-view
        entries are dropped, as evaluate drops them.

        A run with MTRec-T's branch needs each in-view article's time signals: `signals` (float32
        [in-view articles, F], columns `run.signal_options.names()`), or, for a Recommender loaded with a
        dataset, an `impression_time` column: the signals are then counted from that dataset's train and
        split events before each impression, as `mtnews evaluate` counts them.
        """
        for c in ("user_id", "article_ids_inview"):
            if c not in behaviors.columns:
                raise InvalidRequest(f"behaviors frame: column '{c}' is missing, expected the EBNeRD behaviors layout")
        frame = behaviors.select(
            pl.int_range(pl.len(), dtype=pl.Int64).alias("impression_id"),
            pl.col("user_id").cast(pl.Int64), "article_ids_inview")
        histories = self.histories
        if "article_id_fixed" in behaviors.columns:
            # One history per row: the row number stands in for the user.
            per_row = pl.DataFrame({"user_id": frame["impression_id"], "article_id_fixed": behaviors["article_id_fixed"]})
            histories = build_histories(per_row, self.articles, self.history_size)
            frame = frame.with_columns(pl.col("impression_id").alias("user_id"))
        imps = build_eval_impressions(frame, self.articles, histories)
        if self.model.temporal is not None and signals is None:
            signals = self._frame_signals(behaviors, imps)
        flat = self.vectors.score(histories, imps, signals=signals)
        scores = pa.LargeListArray.from_arrays(pa.array(imps.offsets, type=pa.int64()), pa.array(flat))
        return behaviors.with_columns(pl.from_arrow(scores).cast(pl.List(pl.Float64)).alias("scores"))

    # --- internals ----------------------------------------------------------------------------------
    signal_split: tuple | None = None  # (dataset, split) of `from_run(data=...)`: MTRec-T's event source
    _split_signals = None

    def _frame_signals(self, behaviors: pl.DataFrame, imps) -> np.ndarray:
        """MTRec-T's signals for `score`'s in-view articles at each row's impression_time."""
        from mtnews.data.signals import SplitSignals, compute_signals

        names = self.model.temporal.names
        if self.signal_split is None or "impression_time" not in behaviors.columns:
            raise InvalidRequest("this run has the time-aware branch (model.temporal): pass signals= (one row per "
                                 f"in-view article, columns {', '.join(names)}), or load the Recommender with a "
                                 "dataset (from_run(data=...)) and give the frame an impression_time column")
        if self._split_signals is None:
            self._split_signals = SplitSignals.load(*self.signal_split, self.run.signal_options)
        times = behaviors["impression_time"].cast(pl.Datetime("us")).cast(pl.Int64)
        if times.null_count():
            raise InvalidRequest("behaviors frame: column 'impression_time' has nulls, expected a time per row")
        t = np.repeat(times.to_numpy(), np.diff(imps.offsets))
        split = self._split_signals
        return compute_signals(split.index, split.articles, imps.article_ids, t, names).matrix(names)

    @staticmethod
    def _top(scores: np.ndarray, top_k: int | None, ranked) -> list[Ranked]:
        order = np.argsort(-scores, kind="stable")  # ties keep the candidates' order
        if top_k is not None:
            order = order[:top_k]
        return [ranked(int(p)) for p in order]

    @staticmethod
    def _supplied_by_id(items: list) -> dict[int, SuppliedArticle]:
        by_id: dict[int, SuppliedArticle] = {}
        for item in items:
            s = _supplied(item)
            if s is None:
                continue
            prev = by_id.get(s.article_id)
            if prev is not None and (prev.title != s.title or prev.category != s.category):
                raise InvalidRequest(f"article {s.article_id} is supplied twice with different fields")
            by_id[s.article_id] = s
        return by_id

    def _history_matrix(self, rows: list[np.ndarray]) -> np.ndarray:
        """Left-padded [n, H] slot matrix of the last H slots of each row, as UserHistories lays them out."""
        tails = [r[-self.history_size :] if self.history_size else r[:0] for r in rows]
        lengths = np.array([len(t) for t in tails], dtype=np.int64)
        flat = np.concatenate(tails) if tails else np.zeros(0, dtype=np.int64)
        return left_pad(flat, lengths, self.history_size)

    def _resolve(self, lists: list[list], supplied: Iterable[Item], trim_first: bool = False):
        """(a small ArticleVectors over just the articles involved, each list as slots into it, how many
        supplied titles had to be encoded, (the supplied ids used, their vectors)).

        Catalogue ids keep their vectors; ids the catalogue lacks need a supplied title (in `supplied` or
        as a mapping item), encoded on the fly. With `trim_first`, only the last H items of the first list
        (a history) are looked at, as UserHistories keeps them; every id is still checked.
        """
        by_id = self._supplied_by_id(list(supplied) + [i for lst in lists for i in lst])
        ids = [np.array([_article_id(i) for i in lst], dtype=np.int64) for lst in lists]
        idx = [self.articles.index(a).astype(np.int64) for a in ids]
        everything = np.concatenate(ids + [np.zeros(0, dtype=np.int64)])
        missing = everything[np.concatenate(idx + [np.zeros(0, dtype=np.int64)]) == UNK]
        unknown = [int(i) for i in dict.fromkeys(missing.tolist()) if int(i) not in by_id]
        if unknown:
            raise UnknownArticles(unknown)
        if trim_first and lists:
            keep = max(0, len(ids[0]) - self.history_size)
            ids[0], idx[0] = ids[0][keep:], idx[0][keep:]
        used = np.concatenate([a[i == UNK] for a, i in zip(ids, idx)] + [np.zeros(0, dtype=np.int64)])
        extra_ids = list(dict.fromkeys(int(i) for i in used.tolist()))
        extra, encoded = self._title_vectors([by_id[a].title for a in extra_ids])

        # Local rows: 0 = PAD, then the supplied titles, then the catalogue rows involved.
        known = np.unique(np.concatenate([i[i != UNK] for i in idx] + [np.zeros(0, dtype=np.int64)]))
        base = 1 + len(extra_ids)
        vec_parts = [torch.zeros(1, self.dim, device=self.device)]
        logit_parts = [torch.full((1, self.model.dim), float("-inf"), device=self.device)]
        if extra is not None:
            vec_parts.append(extra)
            with torch.no_grad():
                logit_parts.append(self.model.user_encoder.slot_logits(extra[:, : self.model.dim]))
        sel = torch.from_numpy(known).to(self.device)
        vec_parts.append(self.vectors.vectors[sel])
        logit_parts.append(self.vectors.logits[sel])
        local = ArticleVectors(self.model, torch.cat(vec_parts), torch.cat(logit_parts))

        extra_arr = np.array(extra_ids, dtype=np.int64)
        order = np.argsort(extra_arr)
        slots = []
        for a, i in zip(ids, idx):
            s = base + np.searchsorted(known, i)
            unk = i == UNK
            if unk.any():
                s[unk] = 1 + order[np.searchsorted(extra_arr[order], a[unk])]
            slots.append(s.astype(np.int64))
        return local, slots, encoded, (extra_ids, extra)

    def _dots(self, table: ArticleVectors, users: torch.Tensor, slots: np.ndarray, article_ids: np.ndarray,
              t: int) -> np.ndarray:
        """The one kernel's scores of one user's candidates; a time-aware run also gets their signals at t."""
        owner = np.zeros(len(slots), dtype=np.int64)
        if self.signal_options is None:
            return table.dots(users, owner, slots)
        names = self.signal_options.names()
        features = self.signals(article_ids, t, names).matrix(names)
        return table.dots(users, owner, slots, signals=features)

    def _remember(self, articles: list[SuppliedArticle], vectors: torch.Tensor | None, t: int) -> None:
        """Run-time articles enter the index, the live signals' ages and `similar_articles`."""
        with self._added_lock:
            new = [(k, a) for k, a in enumerate(articles) if a.article_id not in self.added]
            if not new:
                return
            vecs = vectors[[k for k, _ in new]].cpu().numpy()
            ids = np.array([a.article_id for _, a in new], dtype=np.int64)
            pub = np.array([to_us(a.published_time) if a.published_time is not None else t for _, a in new],
                           dtype=np.int64)
            for (_, a), p, v in zip(new, pub.tolist(), vecs):
                self.added[a.article_id] = _Added(a, p, v)
            self.live.add_articles(ids, pub)
            if self.index is not None:
                self.index.add(ids, pub, vecs)
            over = len(self.added) - self.max_added
            if over > 0:
                gone = sorted(self.added, key=lambda a: (self.added[a].published_us, a))[:over]
                for a in gone:
                    del self.added[a]
                if self.index is not None:
                    self.index.remove(np.array(gone, dtype=np.int64))
            self._articles_normed = None

    def _any_info(self, article_id: int) -> ArticleInfo:
        idx = int(self.articles.index(np.array([article_id]))[0])
        if idx >= FIRST:
            return self._info(idx)
        a = self.added[article_id]
        return ArticleInfo(article_id, a.article.title, a.article.category, _datetime_of(a.published_us))

    def _candidate_table(self, cand_ids: np.ndarray) -> tuple[ArticleVectors, np.ndarray]:
        """(an ArticleVectors holding the candidates, their slots): catalogue rows, or run-time articles."""
        idx = self.articles.index(cand_ids).astype(np.int64)
        missing = idx == UNK
        if not missing.any():
            return self.vectors, idx
        with self._added_lock:
            unknown = [int(i) for i in dict.fromkeys(cand_ids[missing].tolist()) if int(i) not in self.added]
            if unknown:
                raise UnknownArticles(unknown)
            extra = [self.added[int(i)].vector for i in cand_ids[missing].tolist()]
        vecs = self.vectors.vectors[torch.from_numpy(np.maximum(idx, 0)).to(self.device)].clone()
        vecs[torch.from_numpy(missing).to(self.device)] = torch.from_numpy(np.stack(extra)).to(vecs)
        table = torch.cat([torch.zeros(1, self.dim, device=self.device, dtype=vecs.dtype), vecs])
        # dots reads only the vectors; the logits (for user vectors) are never used on this table.
        return ArticleVectors(self.model, table, torch.zeros_like(table)), np.arange(1, len(cand_ids) + 1)

    def _freshest(self, t: int, hist: np.ndarray) -> np.ndarray:
        """Ids of the `recent` newest catalogue articles published before t that the user has not read."""
        order = self._by_recency
        if self.articles.published_us is not None:
            neg = -self.articles.published_us[order]  # ascending; unknown times (0) sort last
            order = order[np.searchsorted(neg, -t, side="right"):]
        seen = set(hist.tolist())
        pool = order[: self.recent + len(hist)]
        cand = np.array([i for i in pool.tolist() if i not in seen][: self.recent], dtype=np.int64)
        return self.articles.article_ids[cand].astype(np.int64)

    def _user_table(self) -> tuple[torch.Tensor, np.ndarray]:
        """Unit user vectors of every loaded user [U, D] (computed once), and which users have a history."""
        with self._added_lock:
            if self._users_normed is None:
                m = self.histories.matrix[1:]
                u = self.vectors.users(m)
                self._users_normed = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
                self._users_have = (m != PAD).any(axis=1)
            return self._users_normed, self._users_have

    def _article_table(self) -> tuple[np.ndarray, torch.Tensor]:
        """(article ids, unit news vectors): the catalogue, then the run-time articles (rebuilt when they change)."""
        with self._added_lock:
            if self._articles_normed is None:
                ids = self.articles.article_ids[FIRST:].astype(np.int64)
                v = self.vectors.vectors[FIRST:]
                if self.added:
                    ids = np.concatenate([ids, np.array(list(self.added), dtype=np.int64)])
                    v = torch.cat([v, torch.from_numpy(np.stack([a.vector for a in self.added.values()])).to(v)])
                self._articles_normed = (ids, v / v.norm(dim=1, keepdim=True).clamp_min(1e-12))
            return self._articles_normed

    @staticmethod
    def _neighbours(sims: np.ndarray, ids: np.ndarray, k: int) -> list[Neighbour]:
        order = np.argsort(-sims, kind="stable")[:k]  # ties: the lower position first
        return [Neighbour(int(ids[i]), float(sims[i])) for i in order if np.isfinite(sims[i])]

    def _title_vectors(self, titles: list[str]) -> tuple[torch.Tensor | None, int]:
        """([len(titles), dim] ranking vectors for titles the catalogue lacks, how many had to be encoded)."""
        if not titles:
            return None, 0
        found = {t: v for t in dict.fromkeys(titles) if (v := self.cache.get(t)) is not None}
        todo = [t for t in dict.fromkeys(titles) if t not in found]
        encoded = 0
        if todo:
            with self._model_lock:
                # A concurrent call may have encoded some of these while this one waited for the lock.
                for t in todo:
                    if (v := self.cache.get(t, count=False)) is not None:
                        found[t] = v
                todo = [t for t in todo if t not in found]
                if todo:
                    # Row 0 of a token table is padding, which encode_articles skips: titles go from 1.
                    tokens = _tokenize(self.tokenizer, [""] + todo, self.cfg.model.max_title_length)
                    vecs = encode_articles(self.model, tokens, np.arange(1, len(todo) + 1), self.device,
                                           self.batch_size)
                    with torch.no_grad():
                        vecs = self.model.ranking_vectors(vecs)  # [r_c ; π_c] with model.interest
                    for k, t in enumerate(todo, start=1):
                        found[t] = vecs[k]
                        self.cache.put(t, vecs[k])
                    encoded = len(todo)
            with self._counter_lock:
                self.encoded_on_the_fly += encoded
        return torch.stack([found[t] for t in titles]), encoded

    def stats(self) -> dict[str, float]:
        return {
            "articles": self.num_articles,
            "users": self.num_users,
            "cache_entries": len(self.cache),
            "cache_capacity": self.cache.capacity,
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "cache_evictions": self.cache.evictions,
            "encoded_on_the_fly": self.encoded_on_the_fly,
            "startup_encode_seconds": self.encode_seconds,
            "index_articles": len(self.index) if self.index is not None else 0,
            "added_articles": len(self.added),
            "signal_events_recorded": self.live.recorded,
            "signal_events_kept": self.live.kept_events,
            "signal_live_articles": self.live.live_articles,
        }


def _tokenize(tokenizer, titles: list[str], max_len: int) -> TitleTokens:
    """Token ids for titles supplied at run time, with exactly the settings of `tokenize_titles`.

    Not that function itself: it keys its disk cache by hashing a sample of the sorted vocabulary, a cost
    worth paying once at start-up but not on every request, and one-off titles do not belong on disk.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = tokenizer(titles, truncation=True, max_length=max_len, padding="max_length",
                    return_attention_mask=True, return_tensors="np")
    return TitleTokens(enc["input_ids"].astype(np.int32), enc["attention_mask"].sum(axis=1).astype(np.int32), pad_id)


def last_impression_us(behaviors: Path) -> int:
    """The latest impression_time of a behaviors file (microseconds), for `clock="last-impression"`."""
    from mtnews.data import schema

    if not Path(behaviors).exists():
        raise DataError(f"{behaviors}: no such file; --clock last-impression needs the split's log")
    schema.validate(behaviors, {"impression_time": schema.DATETIME})
    last, = schema.aggregate(behaviors, pl.col("impression_time").cast(pl.Datetime("us")).cast(pl.Int64).max())
    if last is None:
        raise DataError(f"{behaviors}: column 'impression_time' is null everywhere; --clock last-impression needs a time")
    return int(last)
