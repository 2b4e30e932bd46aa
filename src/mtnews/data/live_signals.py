"""Live time signals: the columns of a `SignalTable`, from events that arrive while a server runs.

`signals.SplitSignals` counts a whole split's events at once; `LiveSignals` takes them as they come
(`record`: in-views and clicks at a time, e.g. from `POST /v1/events`) and answers `features(article_ids,
t)` with exactly the columns, names and semantics of a `SignalTable` under the same `SignalOptions`:
past-only counts in [t - w, t) and before t, the same smoothed CTR, the same ages (`compute_signals` is
the one implementation of both). Replaying a split's log in time order, each impression queried before its
own events are recorded, gives the same features as `SplitSignals` computes for that split (tested).

Start-up: `from_parts` seeds the counters with the events of the logs a server is given (`collect_events`,
with its de-duplication of history reads), so a restart recovers what those logs hold. The clicks mask
(`mask_split_clicks`) is a training device and does not apply to live events: every click counts.
The transductive mode (`window="split"`) needs the future, so it has no live form (a ConfigError).

Memory. Events are kept with their exact times only while a window can still see them: for the longest
window plus `lateness_h` after the newest event. Older events fold into per-article totals (they count
in `*_all` only), and an article with no event for `forget_h` hours is dropped whole. So memory is the
recent events plus one row per live article, however long the server runs. A query for a time so far
back that a window reaches before the kept events (t < newest - lateness) is refused
(`BeforeHorizon`) rather than answered wrongly.

Events posted to a server survive a restart through an `EventJournal`: an append-only JSON-lines file that
the server writes as it records and replays at start-up after the logs.

Cost: kept events live in a sorted `SignalIndex`; new events go to a small unsorted tail, which a query
indexes on its own (it is at most `tail_max` events) and which merges into the sorted part when full.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtnews.data.events import HOUR_US, Events, LogPart, collect_events
from mtnews.data.signals import ArticleTimes, SignalIndex, SignalOptions, SignalTable, compute_signals
from mtnews.errors import ConfigError, DataError

DEFAULT_LATENESS_H = 24.0
DEFAULT_FORGET_H = 30 * 24.0
DEFAULT_TAIL = 4096
KINDS = ("inviews", "clicks")


class BeforeHorizon(DataError):
    """A query time whose windows reach before the events the live counters still hold."""

    def __init__(self, t_us: int, horizon_us: int):
        self.t_us, self.horizon_us = t_us, horizon_us
        super().__init__(f"time signals at {t_us} us are no longer exact: the live counters keep the events of "
                         f"the longest window before {horizon_us} us or later (raise lateness_h to keep more)")


@dataclass
class _Kept:
    """Events of one kind kept with their times (article ids, times in us), unsorted."""

    article: np.ndarray
    time: np.ndarray

    @classmethod
    def empty(cls) -> "_Kept":
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.time)


def _index(inviews: _Kept, clicks: _Kept, options: SignalOptions) -> SignalIndex:
    return SignalIndex(Events(inviews.article.copy(), inviews.time.copy(), clicks.article.copy(), clicks.time.copy()),
                       options)


class LiveSignals:
    """Windowed per-article counters fed by events, answering `SignalTable`s for (article, time) queries."""

    def __init__(self, options: SignalOptions | None = None, articles: ArticleTimes | None = None, *,
                 lateness_h: float = DEFAULT_LATENESS_H, forget_h: float = DEFAULT_FORGET_H,
                 tail_max: int = DEFAULT_TAIL):
        self.options = options or SignalOptions()
        if self.options.window != "past":
            raise ConfigError("signals.window: live signals count past events only; 'split' (transductive) needs "
                              "the whole split, future included")
        self.longest_us = int(round(max(self.options.windows_h) * HOUR_US))
        if not lateness_h >= 0:
            raise ConfigError(f"live signals: lateness_h must be >= 0, got {lateness_h}")
        self.lateness_us = int(round(lateness_h * HOUR_US))
        self.forget_us = int(round(forget_h * HOUR_US))
        if not self.forget_us >= self.longest_us + self.lateness_us:
            raise ConfigError(f"live signals: forget_h ({forget_h}) must cover the longest window plus lateness_h "
                              f"({(self.longest_us + self.lateness_us) / HOUR_US:g} h)")
        if tail_max < 1:
            raise ConfigError(f"live signals: tail_max must be >= 1, got {tail_max}")
        self.tail_max = tail_max
        self.articles = articles if articles is not None else ArticleTimes(
            np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
        self._lock = threading.Lock()
        self.newest: int | None = None  # the latest event time seen
        self.cutoff: int | None = None  # events before it are folded into the totals
        self._kept = {k: _Kept.empty() for k in KINDS}
        self._tail = {k: _Kept.empty() for k in KINDS}
        self._main = _index(self._kept["inviews"], self._kept["clicks"], self.options)
        self._tail_index: SignalIndex | None = None
        # Folded totals: article id (sorted) -> in-views, clicks, last folded event time.
        self._total_ids = np.zeros(0, dtype=np.int64)
        self._totals = {k: np.zeros(0, dtype=np.int64) for k in KINDS}
        self._total_last = np.zeros(0, dtype=np.int64)
        self.recorded = 0

    # --- building -----------------------------------------------------------------------------------
    @classmethod
    def from_parts(cls, parts: list[LogPart], options: SignalOptions | None = None,
                   articles: ArticleTimes | None = None, **kwargs) -> "LiveSignals":
        """Counters seeded with the events of in-memory log parts (as `SignalIndex.from_parts` reads them)."""
        live = cls(options, articles, **kwargs)
        events = collect_events(parts, mask=0.0, history_dedupe_h=live.options.history_dedupe_h)
        live.record(events.inview_article, events.inview_time, events.click_article, events.click_time)
        live.compact()
        return live

    def add_articles(self, article_ids: np.ndarray, published_us: np.ndarray) -> None:
        """Publication times of articles the catalogue lacked (0 = unknown), for their ages; known ids keep theirs."""
        ids = np.asarray(article_ids, dtype=np.int64)
        pub = np.asarray(published_us, dtype=np.int64)
        new = self.articles.lookup.find(ids) < 0
        if not new.any():
            return
        ids, pub = ids[new], pub[new]
        ids, first = np.unique(ids, return_index=True)
        pub = pub[first]
        a = self.articles
        all_ids = np.concatenate([a.ids, ids])
        order = np.argsort(all_ids, kind="stable")
        aggs = {c: np.concatenate([v, np.full(len(ids), np.nan)])[order] for c, v in a.aggregates.items()}
        with self._lock:
            self.articles = ArticleTimes(all_ids[order], np.concatenate([a.published, pub])[order],
                                         np.concatenate([a.published_known, pub != 0])[order], aggs)

    # --- events -------------------------------------------------------------------------------------
    def record(self, inview_articles: np.ndarray, inview_times: np.ndarray,
               click_articles: np.ndarray = (), click_times: np.ndarray = ()) -> int:
        """Count in-views and clicks (article ids, times in us); returns how many events were taken."""
        new = {"inviews": (np.asarray(inview_articles, dtype=np.int64), np.asarray(inview_times, dtype=np.int64)),
               "clicks": (np.asarray(click_articles, dtype=np.int64), np.asarray(click_times, dtype=np.int64))}
        n = 0
        for kind, (a, t) in new.items():
            if a.shape != t.shape or a.ndim != 1:
                raise DataError(f"live signals: {kind} need one time per article id, got {a.shape} and {t.shape}")
            n += len(a)
        if n == 0:
            return 0
        with self._lock:
            for kind, (a, t) in new.items():
                tail = self._tail[kind]
                self._tail[kind] = _Kept(np.concatenate([tail.article, a]), np.concatenate([tail.time, t]))
                if len(t):
                    self.newest = int(t.max()) if self.newest is None else max(self.newest, int(t.max()))
            self._tail_index = None
            self.recorded += n
            if sum(len(v) for v in self._tail.values()) > self.tail_max:
                self._compact()
        return n

    def compact(self) -> None:
        """Merge the tail into the sorted events and fold what no window can see any more into the totals."""
        with self._lock:
            self._compact()

    def _compact(self) -> None:
        kept = {k: _Kept(np.concatenate([self._kept[k].article, self._tail[k].article]),
                         np.concatenate([self._kept[k].time, self._tail[k].time])) for k in KINDS}
        if self.newest is not None:
            cutoff = self.newest - self.longest_us - self.lateness_us
            self.cutoff = cutoff if self.cutoff is None else max(self.cutoff, cutoff)
            old = {k: kept[k].time < self.cutoff for k in KINDS}
            if any(o.any() for o in old.values()):
                self._fold({k: _Kept(kept[k].article[old[k]], kept[k].time[old[k]]) for k in KINDS})
                kept = {k: _Kept(kept[k].article[~old[k]], kept[k].time[~old[k]]) for k in KINDS}
            self._forget(self.newest - self.forget_us, np.concatenate([kept[k].article for k in KINDS]))
        self._kept = kept
        self._tail = {k: _Kept.empty() for k in KINDS}
        self._main = _index(kept["inviews"], kept["clicks"], self.options)
        self._tail_index = None

    def _fold(self, old: dict[str, _Kept]) -> None:
        ids = np.unique(np.concatenate([self._total_ids] + [old[k].article for k in KINDS]))
        pos_old = np.searchsorted(ids, self._total_ids)
        last = np.full(len(ids), np.iinfo(np.int64).min, dtype=np.int64)
        last[pos_old] = self._total_last
        totals = {}
        for k in KINDS:
            t = np.zeros(len(ids), dtype=np.int64)
            t[pos_old] = self._totals[k]
            p = np.searchsorted(ids, old[k].article)
            np.add.at(t, p, 1)
            np.maximum.at(last, p, old[k].time)
            totals[k] = t
        self._total_ids, self._totals, self._total_last = ids, totals, last

    def _forget(self, before_us: int, active: np.ndarray) -> None:
        """Drop the totals of articles with no event since `before_us` (none kept, none folded later)."""
        keep = (self._total_last >= before_us) | np.isin(self._total_ids, active)
        if not keep.all():
            self._total_ids, self._total_last = self._total_ids[keep], self._total_last[keep]
            self._totals = {k: v[keep] for k, v in self._totals.items()}

    # --- queries ------------------------------------------------------------------------------------
    @property
    def horizon(self) -> int | None:
        """The earliest query time answered exactly (None: every time)."""
        return None if self.cutoff is None else self.cutoff + self.longest_us

    @property
    def live_articles(self) -> int:
        """Articles with any counted event: the folded totals plus those with kept events (a sort: for
        monitoring, not for every request)."""
        ids = [self._total_ids] + [v.article for v in self._kept.values()] + [v.article for v in self._tail.values()]
        return len(np.unique(np.concatenate(ids)))

    @property
    def kept_events(self) -> int:
        return sum(len(v) for v in self._kept.values()) + sum(len(v) for v in self._tail.values())

    def counts(self, article_ids: np.ndarray, times: np.ndarray) -> dict[str, np.ndarray]:
        """In-view and click counts per window and over all time, as `SignalIndex.counts` gives them."""
        ids = np.asarray(article_ids, dtype=np.int64)
        t = np.asarray(times, dtype=np.int64)
        with self._lock:
            horizon = self.horizon
            if horizon is not None and len(t) and int(t.min()) < horizon:
                raise BeforeHorizon(int(t.min()), horizon)
            main = self._main
            if self._tail_index is None:
                self._tail_index = _index(self._tail["inviews"], self._tail["clicks"], self.options)
            tail = self._tail_index
            total_ids, totals = self._total_ids, self._totals
        out = main.counts(ids, t)
        for name, extra in tail.counts(ids, t).items():
            out[name] = out[name] + extra
        if len(total_ids):
            # Folded events all lie before the horizon, so before every t answered: each counts in *_all.
            pos = np.searchsorted(total_ids, ids).clip(0, len(total_ids) - 1)
            found = total_ids[pos] == ids
            for k in KINDS:
                out[f"{k}_all"] = out[f"{k}_all"] + np.where(found, totals[k][pos], 0)
        return out

    def features(self, article_ids: np.ndarray, times: np.ndarray | int,
                 names: tuple[str, ...] | None = None) -> SignalTable:
        """The `SignalTable` of (article id, time in us) pairs; a scalar time applies to every article."""
        ids = np.asarray(article_ids, dtype=np.int64)
        t = np.broadcast_to(np.asarray(times, dtype=np.int64), ids.shape).copy()
        return compute_signals(self, self.articles, ids, t, names)


class EventJournal:
    """An append-only JSON-lines file of recorded events, one impression a line:
    `{"t": microseconds, "inview": [article ids], "clicked": [article ids]}`.

    A line is written whole and flushed before the request is answered; a crash can only leave a last line
    without its newline, which `read` skips (that request was never answered). Any other bad line is a
    DataError naming the file and line.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_file():
            raise DataError(f"{self.path}: is not a file, expected the events journal (JSON lines)")
        self._lock = threading.Lock()

    def append(self, t_us: int, inview: np.ndarray, clicked: np.ndarray) -> None:
        line = json.dumps({"t": int(t_us), "inview": [int(x) for x in inview], "clicked": [int(x) for x in clicked]})
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()

    def read(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(in-view ids, their times, click ids, their times) of every complete line; empty without a file."""
        iv_a, iv_t, cl_a, cl_t = [], [], [], []
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for n, line in enumerate(f, start=1):
                    if not line.endswith("\n"):
                        break  # the last write of a crashed server: never acknowledged
                    try:
                        rec = json.loads(line)
                        t = rec["t"]
                        lists = [rec["inview"], rec["clicked"]]
                        if type(t) is not int or not all(isinstance(x, list) and all(type(a) is int for a in x)
                                                          for x in lists):
                            raise ValueError("wrong types")
                    except (ValueError, KeyError, TypeError) as e:
                        raise DataError(f"{self.path}: line {n} is not an event record ({e}), expected "
                                        f'{{"t": microseconds, "inview": [ids], "clicked": [ids]}}') from None
                    iv_a += lists[0]
                    iv_t += [t] * len(lists[0])
                    cl_a += lists[1]
                    cl_t += [t] * len(lists[1])
        return tuple(np.array(x, dtype=np.int64) for x in (iv_a, iv_t, cl_a, cl_t))


def startup_parts(root, split: str, with_split_log: bool = True) -> list[LogPart]:
    """The logs a server seeds its counters with: train (when `root` has it) and `split`, as `SplitSignals`
    counts them; without `with_split_log`, only the split's history (its impressions are to be replayed)."""
    from mtnews.data.layout import split_paths
    from mtnews.data.signals import _read_part

    own = _read_part(split_paths(root, split), own=True)
    if not with_split_log:
        own = LogPart(own.behaviors.clear(), own.history, True, own.name, own.history_name)
    parts = [own]
    if split != "train" and (Path(root) / "train" / "behaviors.parquet").exists():
        parts.insert(0, _read_part(split_paths(root, "train"), own=False))
    return parts
