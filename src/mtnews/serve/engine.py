"""The serving engine: a trained run, every article's vector in memory, and a thread-safe scoring path.

Scores are computed exactly the way `mtnews evaluate --run` computes them: article vectors come from
`encode_articles` (the same batching and dtype rules), and each request is scored by `score_impressions`
on a one-user, one-impression problem, so the user vector goes through `model.user_encoder` on a
left-padded row of the last `data.history_size` clicks, just like a row of `UserHistories.matrix`.

Requests only gather rows of the precomputed table into a small per-request table; the model itself runs
under one lock (torch modules and fast tokenizers are not safe to drive from several threads at once), and
titles supplied with a request are encoded in one sorted batch and kept in a bounded LRU cache.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import torch

from mtnews.data.articles import FIRST, IGNORE, PAD, UNK, ArticleTable
from mtnews.data.history import UserHistories
from mtnews.data.impressions import EvalImpressions
from mtnews.errors import MtnewsError
from mtnews.evaluate.model_scorer import encode_articles, score_impressions
from mtnews.model.tokens import TitleTokens, tokenize_titles

EPOCH = datetime(1970, 1, 1)


class ServeError(MtnewsError):
    """A request the engine cannot answer because of what the client sent (mapped to a 4xx)."""


class UnknownArticles(ServeError):
    def __init__(self, ids: list[int]):
        self.ids = ids
        shown = ", ".join(map(str, ids[:20])) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
        super().__init__(f"unknown article ids: {shown}; supply their titles in 'articles' to rank them anyway")


class UnknownUser(ServeError):
    def __init__(self, user_id: int, source: str):
        self.user_id = user_id
        super().__init__(f"user {user_id} is not in {source}; use POST /v1/rank with an explicit history instead")


class InvalidRequest(ServeError):
    """Well-typed but inconsistent input, e.g. one article id supplied twice with different titles."""


@dataclass(frozen=True)
class ArticleInfo:
    article_id: int | None  # None for a history click whose article is missing from articles.parquet
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
    encoded_titles: int  # request-supplied titles encoded for this request (cache misses)


@dataclass(frozen=True)
class SuppliedArticle:
    article_id: int
    title: str
    category: str | None = None


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


class Recommender:
    def __init__(self, model, cfg, tokenizer, articles: ArticleTable, histories: UserHistories, *,
                 device: torch.device | str = "cpu", cache_size: int = 10_000, recent: int = 100,
                 batch_size: int = 256, source: str = "history.parquet"):
        if cfg.data.history_size != histories.history_size:
            raise ValueError("histories must be built with the run's data.history_size")
        self.model = model.eval()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.articles = articles
        self.histories = histories
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.recent = recent
        self.source = source
        self.history_size = histories.history_size
        self.cache = VectorCache(cache_size)
        self._model_lock = threading.Lock()
        self.encoded_on_the_fly = 0
        self._counter_lock = threading.Lock()

        start = time.perf_counter()
        # Every row from UNK on: UNK is the empty title, which is what `mtnews evaluate` uses for history
        # clicks missing from articles.parquet, so users with such clicks score identically here.
        tokens = tokenize_titles(articles.titles, tokenizer, cfg.model.max_title_length)
        self.table = encode_articles(self.model, tokens, np.arange(UNK, len(articles)), self.device, batch_size)
        self.encode_seconds = time.perf_counter() - start
        self.zero = torch.zeros(1, self.model.dim, dtype=self.table.dtype, device=self.device)

        # Default candidates of /recommend: newest first (ties by file order); without published_time,
        # the file's last rows stand in for the newest.
        real = np.arange(FIRST, len(articles))
        if articles.published_us is not None:
            self._by_recency = real[np.argsort(-articles.published_us[FIRST:], kind="stable")]
        else:
            self._by_recency = real[::-1].copy()

    @classmethod
    def from_run(cls, run_dir: str | Path, data: str | Path, split: str = "validation", *, device: str = "auto",
                 cache_size: int = 10_000, recent: int = 100) -> "Recommender":
        from mtnews.config import load_config
        from mtnews.data.articles import load_articles
        from mtnews.data.history import load_histories
        from mtnews.data.layout import split_paths
        from mtnews.errors import CheckpointError, ConfigError
        from mtnews.model.build import load_run

        run_dir = Path(run_dir)
        if not (run_dir / "config.yaml").is_file():
            raise CheckpointError(f"{run_dir}: not a run directory (no config.yaml)")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA device is available")
        cfg = load_config(run_dir / "config.yaml")
        paths = split_paths(data, split)
        # The entity-group count sizes the NER head, so it must match training's.
        articles = load_articles(paths.articles, max_entity_groups=cfg.model.ner_groups)
        model, cfg, tokenizer = load_run(run_dir, articles)
        model.to(device)
        histories = load_histories(paths.history, articles, cfg.data.history_size)
        return cls(model, cfg, tokenizer, articles, histories, device=device, cache_size=cache_size,
                   recent=recent, source=f"{split}/history.parquet")

    # --- lookups ------------------------------------------------------------------------------------
    @property
    def num_articles(self) -> int:
        return len(self.articles) - FIRST

    @property
    def num_users(self) -> int:
        return len(self.histories.user_ids)

    def describe(self) -> str:
        return (f"{self.num_articles} articles encoded in {self.encode_seconds:.1f}s ({self.model.dim}-dim, "
                f"{self.device}); {self.num_users} users from {self.source}; history size {self.history_size}")

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

    # --- scoring ------------------------------------------------------------------------------------
    def rank(self, history: list[int], candidates: list[int], top_k: int | None = None,
             supplied: list[SuppliedArticle] = ()) -> Ranking:
        """Rank `candidates` for a user who clicked `history` (oldest first; the last H are used)."""
        by_id: dict[int, SuppliedArticle] = {}
        for s in supplied:
            prev = by_id.get(s.article_id)
            if prev is not None and (prev.title != s.title or prev.category != s.category):
                raise InvalidRequest(f"article {s.article_id} is supplied twice with different fields")
            by_id[s.article_id] = s

        hist_ids = np.asarray(history, dtype=np.int64)
        cand_ids = np.asarray(candidates, dtype=np.int64)
        hist_idx = self.articles.index(hist_ids).astype(np.int64)
        cand_idx = self.articles.index(cand_ids).astype(np.int64)
        all_ids = np.concatenate([hist_ids, cand_ids])
        missing = all_ids[np.concatenate([hist_idx, cand_idx]) == UNK]
        # Dataset articles win over supplied ones: a known id is always scored with its own title.
        unknown = [int(i) for i in dict.fromkeys(missing.tolist()) if int(i) not in by_id]
        if unknown:
            raise UnknownArticles(unknown)

        # Every id was checked above; only the last H clicks are read (as in UserHistories).
        hist_ids, hist_idx = hist_ids[-self.history_size :], hist_idx[-self.history_size :]
        used_missing = np.concatenate([hist_ids[hist_idx == UNK], cand_ids[cand_idx == UNK]])
        # Supplied articles get negative slots -1, -2, ... into `extra`; dataset articles keep their index.
        extra_ids = list(dict.fromkeys(int(i) for i in used_missing.tolist()))
        slot_of = {aid: -(k + 1) for k, aid in enumerate(extra_ids)}
        extra, encoded = self._vectors([by_id[aid].title for aid in extra_ids])

        def slots(ids: np.ndarray, idx: np.ndarray) -> np.ndarray:
            out = idx.copy()
            for pos in np.flatnonzero(idx == UNK):
                out[pos] = slot_of[int(ids[pos])]
            return out

        hist_slots = slots(hist_ids, hist_idx)
        cand_slots = slots(cand_ids, cand_idx)
        scores = self._score(hist_slots, cand_slots, extra)

        def ranked(pos: int) -> Ranked:
            aid, idx = int(cand_ids[pos]), int(cand_idx[pos])
            if idx == UNK:
                s = by_id[aid]
                return Ranked(aid, float(scores[pos]), s.title, s.category)
            info = self._info(idx)
            return Ranked(aid, float(scores[pos]), info.title, info.category)

        return Ranking(self._top(scores, top_k, ranked), len(cand_ids), len(hist_slots), encoded)

    def recommend(self, user_id: int, candidates: list[int] | None = None, top_k: int | None = None) -> Ranking:
        """Rank `candidates` (default: the newest articles the user has not clicked) for a known user."""
        row = self._user_row(user_id)
        hist_slots = row[row != PAD].astype(np.int64)  # may hold UNK: scored as evaluate scores it
        if candidates is None:
            seen = set(hist_slots.tolist())
            pool = self._by_recency[: self.recent + len(hist_slots)]
            cand_idx = np.array([i for i in pool.tolist() if i not in seen][: self.recent], dtype=np.int64)
            cand_ids = self.articles.article_ids[cand_idx]
        else:
            cand_ids = np.asarray(candidates, dtype=np.int64)
            cand_idx = self.articles.index(cand_ids).astype(np.int64)
            unknown = [int(i) for i in dict.fromkeys(cand_ids[cand_idx == UNK].tolist())]
            if unknown:
                raise UnknownArticles(unknown)
        scores = self._score(hist_slots, cand_idx, None)

        def ranked(pos: int) -> Ranked:
            info = self._info(int(cand_idx[pos]))
            return Ranked(int(cand_ids[pos]), float(scores[pos]), info.title, info.category)

        return Ranking(self._top(scores, top_k, ranked), len(cand_ids), len(hist_slots), 0)

    @staticmethod
    def _top(scores: np.ndarray, top_k: int | None, ranked) -> list[Ranked]:
        order = np.argsort(-scores, kind="stable")  # ties keep the candidates' order
        if top_k is not None:
            order = order[:top_k]
        return [ranked(int(p)) for p in order]

    def _score(self, hist_slots: np.ndarray, cand_slots: np.ndarray, extra: torch.Tensor | None) -> np.ndarray:
        """Scores of candidate slots for a history of slots (>= 1: table rows, < 0: rows of `extra`).

        Builds a small table [zeros; the vectors involved] and a one-row history matrix, then calls
        `score_impressions`, the function `mtnews evaluate` scores with.
        """
        both = np.concatenate([hist_slots, cand_slots])
        uniq, inverse = np.unique(both, return_inverse=True)  # negatives (supplied) sort first
        n_neg = int((uniq < 0).sum())
        parts = [self.zero]
        if n_neg:
            parts.append(extra[torch.from_numpy(-uniq[:n_neg] - 1).to(self.device)])
        parts.append(self.table[torch.from_numpy(uniq[n_neg:]).to(self.device)])
        local = torch.cat(parts)
        pos = (inverse.reshape(-1) + 1).astype(np.int32)
        h, c = pos[: len(hist_slots)], pos[len(hist_slots) :]

        matrix = np.zeros((2, self.history_size), dtype=np.int32)  # row 0: the empty history, as always
        if len(h):
            matrix[1, self.history_size - len(h) :] = h
        users = UserHistories(np.array([0], dtype=np.int64), matrix)
        imps = EvalImpressions(np.zeros(1, dtype=np.int64), np.array([1], dtype=np.int32),
                               np.array([0, len(c)], dtype=np.int64), c, None, np.zeros(len(c), dtype=np.int64))
        with self._model_lock:
            return score_impressions(self.model, local, users, imps)

    def _vectors(self, titles: list[str]) -> tuple[torch.Tensor | None, int]:
        """([len(titles), D] vectors for request-supplied titles, how many had to be encoded)."""
        if not titles:
            return None, 0
        found = {t: v for t in dict.fromkeys(titles) if (v := self.cache.get(t)) is not None}
        todo = [t for t in dict.fromkeys(titles) if t not in found]
        encoded = 0
        if todo:
            with self._model_lock:
                # A concurrent request may have encoded some of these while this one waited for the lock.
                for t in todo:
                    if (v := self.cache.get(t, count=False)) is not None:
                        found[t] = v
                todo = [t for t in todo if t not in found]
                if todo:
                    # Index 0 of a token table is padding, which encode_articles skips: titles go from 1.
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
    """Token ids for request-supplied titles, with exactly the settings of `tokenize_titles`.

    Not that function itself: it keys its disk cache by hashing a sample of the sorted vocabulary, a cost
    worth paying once at start-up but not on every request, and one-off titles do not belong on disk.
    """
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    enc = tokenizer(titles, truncation=True, max_length=max_len, padding="max_length",
                    return_attention_mask=True, return_tensors="np")
    return TitleTokens(enc["input_ids"].astype(np.int32), enc["attention_mask"].sum(axis=1).astype(np.int32), pad_id)
