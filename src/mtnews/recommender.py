"""`mtnews.Recommender`: a trained run as a Python object, and the engine behind `mtnews serve`.

    rec = Recommender.from_run("runs/demo/run")                  # no dataset folder needed
    rec.rank(history=[...], candidates=[...], top_k=10)           # ids, or {"article_id", "title"} items
    rec.encode_articles(titles)                                   # news vectors
    rec.user_vectors(histories)                                   # many users at once
    rec.score(behaviors_frame)                                    # EBNeRD-layout frame -> scores per in-view list

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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable, Mapping, Union

import numpy as np
import polars as pl
import pyarrow as pa
import torch

from mtnews.data.articles import FIRST, IGNORE, PAD, UNK, ArticleTable
from mtnews.data.history import UserHistories, build_histories, left_pad
from mtnews.data.impressions import build_eval_impressions
from mtnews.errors import MtnewsError
from mtnews.model.run import Run, load_run
from mtnews.model.scoring import ArticleVectors, encode_articles, resolve_device
from mtnews.model.tokens import TitleTokens, tokenize_titles

EPOCH = datetime(1970, 1, 1)


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


@dataclass(frozen=True)
class SuppliedArticle:
    article_id: int
    title: str
    category: str | None = None


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


def _supplied(item) -> SuppliedArticle | None:
    if isinstance(item, SuppliedArticle):
        return item
    if isinstance(item, Mapping):
        try:
            return SuppliedArticle(int(item["article_id"]), str(item["title"]), item.get("category"))
        except KeyError as e:
            raise InvalidRequest(f"an article item needs 'article_id' and 'title', this one lacks {e}") from None
    return None


def _article_id(item) -> int:
    s = _supplied(item)
    return s.article_id if s is not None else int(item)


class Recommender:
    """A loaded run with its catalogue encoded; see the module docstring for the calls."""

    def __init__(self, run: Run, articles: ArticleTable | None = None, histories: UserHistories | None = None, *,
                 cache_size: int = 10_000, recent: int = 100, batch_size: int = 256, source: str | None = None):
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

    @classmethod
    def from_run(cls, run_dir: str | Path, data: str | Path | None = None, split: str = "validation", *,
                 device: str = "auto", cache_size: int = 10_000, recent: int = 100) -> "Recommender":
        """Load a run. With `data`, the catalogue is that dataset's articles and `split`'s users are known."""
        from mtnews.data.history import load_histories
        from mtnews.data.layout import split_paths

        run = load_run(run_dir, device=resolve_device(device))
        if data is None:
            return cls(run, cache_size=cache_size, recent=recent)
        paths = split_paths(data, split)
        articles = run.load_dataset_articles(paths.articles)
        histories = load_histories(paths.history, articles, run.history_size)
        rec = cls(run, articles, histories, cache_size=cache_size, recent=recent, source=f"{split}/history.parquet")
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
        return self.model.dim

    def describe(self) -> str:
        users = f"{self.num_users} users from {self.source}" if self.source else "no users loaded"
        return (f"{self.num_articles} articles encoded in {self.encode_seconds:.1f}s ({self.dim}-dim, "
                f"{self.device}); {users}; history size {self.history_size}")

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
        """News vectors [len(titles), D] (float32) for any titles, batched; cached like supplied titles."""
        vecs, _ = self._title_vectors(list(titles))
        return np.zeros((0, self.dim), dtype=np.float32) if vecs is None else vecs.cpu().numpy()

    def user_vectors(self, histories: Iterable[Iterable[Item]], supplied: Iterable[Item] = ()) -> np.ndarray:
        """User vectors [n, D] (float32) for many histories at once (each oldest first, the last H used).

        Items are catalogue ids, or {"article_id", "title"} mappings for articles it lacks.
        """
        local, rows, _ = self._resolve([list(h) for h in histories], supplied)
        matrix = self._history_matrix(rows)
        return local.users(matrix).cpu().numpy()

    def rank(self, history: Iterable[Item], candidates: Iterable[Item], top_k: int | None = None,
             supplied: Iterable[Item] = ()) -> Ranking:
        """Rank `candidates` for a user who clicked `history` (oldest first; the last H are used)."""
        history, candidates = list(history), list(candidates)
        local, (hist, cand), encoded = self._resolve([history, candidates], supplied, trim_first=True)
        users = local.users(self._history_matrix([hist]))
        scores = local.dots(users, np.zeros(len(cand), dtype=np.int64), cand)
        by_id = self._supplied_by_id(list(supplied) + [c for c in candidates if _supplied(c) is not None])

        def ranked(pos: int) -> Ranked:
            aid = _article_id(candidates[pos])
            idx = int(self.articles.index(np.array([aid]))[0])
            if idx >= FIRST:
                info = self._info(idx)
                return Ranked(aid, float(scores[pos]), info.title, info.category)
            s = by_id[aid]
            return Ranked(aid, float(scores[pos]), s.title, s.category)

        return Ranking(self._top(scores, top_k, ranked), len(cand), len(hist), encoded)

    def recommend(self, user_id: int, candidates: list[int] | None = None, top_k: int | None = None) -> Ranking:
        """Rank `candidates` (default: the newest articles the user has not clicked) for a known user."""
        row = self._user_row(user_id)
        hist = row[row != PAD].astype(np.int64)  # may hold UNK: scored as evaluate scores it
        if candidates is None:
            seen = set(hist.tolist())
            pool = self._by_recency[: self.recent + len(hist)]
            cand = np.array([i for i in pool.tolist() if i not in seen][: self.recent], dtype=np.int64)
            cand_ids = self.articles.article_ids[cand]
        else:
            cand_ids = np.asarray(candidates, dtype=np.int64)
            cand = self.articles.index(cand_ids).astype(np.int64)
            unknown = [int(i) for i in dict.fromkeys(cand_ids[cand == UNK].tolist())]
            if unknown:
                raise UnknownArticles(unknown)
        users = self.vectors.users(row[None, :])
        scores = self.vectors.dots(users, np.zeros(len(cand), dtype=np.int64), cand)

        def ranked(pos: int) -> Ranked:
            info = self._info(int(cand[pos]))
            return Ranked(int(cand_ids[pos]), float(scores[pos]), info.title, info.category)

        return Ranking(self._top(scores, top_k, ranked), len(cand), len(hist), 0)

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
        supplied titles had to be encoded).

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
        logit_parts = [torch.full((1, self.dim), float("-inf"), device=self.device)]
        if extra is not None:
            vec_parts.append(extra)
            with torch.no_grad():
                logit_parts.append(self.model.user_encoder.slot_logits(extra))
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
        return local, slots, encoded

    def _title_vectors(self, titles: list[str]) -> tuple[torch.Tensor | None, int]:
        """([len(titles), D] vectors for titles the catalogue lacks, how many had to be encoded)."""
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
