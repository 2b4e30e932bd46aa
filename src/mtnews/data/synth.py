"""A synthetic EBNeRD dataset with a known click model, in the official file layout.

Generative model (every step is vectorised over impressions, history events, users or articles):

* Time: train behaviors cover one week from TRAIN_START, validation the next week, test the week after.
  Each split's history holds the HISTORY_DAYS days before that split's first impression. Articles are
  published over the whole span; a back catalogue published before the earliest history event makes sure
  every moment has enough articles to show.
* Articles (`synth_articles.build_articles`): a category (15, unequal shares), a sentiment
  (Negative/Neutral/Positive), an English title built from category- and sentiment-specific phrases, an
  entity, and a lognormal popularity.
* Users: category preference p_u ~ Dirichlet(PREF_ALPHA) over the 15 categories, a standard normal
  preference per sentiment, and a lognormal activity that sets how many impressions they get.
* Utility of article a for user u (the "oracle" utility written to oracle.parquet):
      v(u, a) = CAT_W * log(p_u[cat a] + PREF_EPS) + SENT_W * s_u[sent a] + POP_W * z(log popularity a)
  where z standardises over the catalogue. Content preference dominates and popularity is a weak signal.
* Exposure: an impression at time t shows 5..15 distinct articles published before t (within WINDOW_DAYS),
  drawn with weight popularity^EXPOSURE_POP * exp(-age / RECENCY_DAYS). The age factor is exp(pub / τ)
  times a constant per impression, so one cumulative sum over the time-sorted catalogue samples every
  window by inverse CDF.
* Clicks: Gumbel-top-k on v + Gumbel(0, 1) noise, k = 1 (2 with probability TWO_CLICK_SHARE). Ranking by v
  is the oracle: the best any model can do in expectation.
* Time effect, of strength X = `time_effect` (0 is exactly the content-only model above, draw for draw;
  DEFAULT_TIME_EFFECT otherwise). Each article has a latent buzz b ~ N(0, 1), drawn from its own stream and
  never written anywhere, so it is observable only through exposure and clicks:
      v(u, a, t) = v(u, a) + X * (BUZZ_W * b_a - FRESH_W * log(1 + age_h(a, t) / FRESH_HOURS))
  so news goes stale within hours to days, and the oracle's utilities include the time term. The site shows
  fresh and buzzing articles more: the exposure weight gains a factor exp(X * EXPOSURE_BUZZ * b_a), and its
  recency rate grows from 1 / RECENCY_DAYS to 1 / RECENCY_DAYS + X / EXPOSURE_FRESH_DAYS (still exp(pub / τ)
  times a constant, so the one-cumsum sampler stands). Traffic follows a day cycle (DIURNAL, shaped on the
  real EBNeRD fixture), mixed in with weight min(X, 1): impressions and history reads cluster in the day.
* History: each split's users (except ~1%, left out on purpose) get a lognormal number of reads spread over
  the history window; each read is the Gumbel-argmax of the same utility over HISTORY_CHOICES articles
  drawn (with replacement) by the same exposure rule at that moment.
* Test split (optional): normal impressions without clicks, plus a small share of beyond-accuracy rows
  that all show one common list of min(250, articles) articles, as in the real test set.

Same seed, same bytes: every component draws from its own seeded stream, so adding the test split does
not change train or validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from mtnews.data.schema import BEHAVIORS, HISTORY, TEST_BEHAVIORS
from mtnews.data.synth_articles import N_CATEGORIES, build_articles
from mtnews.errors import ConfigError, DataError
from mtnews.io import atomic_dir, atomic_path

# Click model, tuned at the default size with time effect 0 (validation, per-impression AUC, seed 0): oracle
# 0.91, ranking by train click counts 0.54, random 0.5. An ideal content model (the true category and sentiment of the
# user's last 20 clicks, counted) reaches 0.82: titles carry most of the signal, so a title-based
# recommender can close most of the popularity-to-oracle gap. Most validation articles are new, which is
# what keeps click-count popularity weak.
PREF_ALPHA = 0.3
PREF_EPS = 0.01
CAT_W = 2.0
SENT_W = 0.5
POP_W = 0.6
TWO_CLICK_SHARE = 0.05

# Time effect (see the module docs), tuned at the default size and DEFAULT_TIME_EFFECT (validation, seeds
# 0-2): the best single time baseline (ctr, 0.63-0.65) stays within an AUC of 0.60-0.66, the ideal content
# model falls from 0.82 to 0.79, the oracle rises to 0.92, and train-click popularity drops below 0.5 (last
# week's news is stale). docs/time.md has the measured tables.
DEFAULT_TIME_EFFECT = 1.0
MAX_TIME_EFFECT = 5.0  # beyond this the exposure weights' exp(pub / τ) would leave float64's range
BUZZ_W = 0.6
FRESH_W = 1.5
FRESH_HOURS = 12.0
FRESH_SPREAD = 1.0  # log-sd of the per-article time scale: breaking news stale in hours, features in days
FRESH_USER_SPREAD = 1.0  # log-sd of each user's weight of staleness (mean 1): some readers want news now
EXPOSURE_BUZZ = 0.8
EXPOSURE_FRESH_DAYS = 1.5
# Relative traffic per hour of day (mean 1): 1 + 0.5 cos(2π (h - 14) / 24), the trough at 02:00 a third
# of the 14:00 peak, as in the hour-of-day counts of the real EBNeRD fixture (docs/time.md).
DIURNAL = 1.0 + 0.5 * np.cos(2 * np.pi * (np.arange(24) - 14) / 24)

# Exposure.
MIN_INVIEW, MAX_INVIEW = 5, 15
WINDOW_DAYS = 14.0
RECENCY_DAYS = 10.0
EXPOSURE_POP = 0.5
HISTORY_CHOICES = 16
EXTRA_DRAWS = 5  # in-view draws beyond MAX_INVIEW, to absorb repeats without a second round
BEYOND_ACCURACY_SIZE = 250
BEYOND_ACCURACY_SHARE = 0.02

# Calendar (the real EBNeRD train week starts 2023-05-18 07:00).
_S = 1_000_000
_DAY = 86_400 * _S
TRAIN_START = int(np.datetime64("2023-05-18T07:00:00", "us").astype(np.int64))
HISTORY_DAYS = 21
SPLITS = ("train", "validation", "test")
CATALOGUE_START = TRAIN_START - (HISTORY_DAYS + 7) * _DAY
CATALOGUE_END = TRAIN_START + 3 * 7 * _DAY
MIN_ARTICLES = 50

CHUNK = 1 << 17  # rows per vectorised block: bounds the temporaries to a few hundred MB at any size


@dataclass
class _Catalogue:
    ids: np.ndarray  # int32, sorted by published time
    pub: np.ndarray  # int64 microseconds, ascending
    cat: np.ndarray  # int8 category index
    sent: np.ndarray  # int8 sentiment index
    pop_util: np.ndarray  # float64, POP_W * z(log popularity)
    cum_weight: np.ndarray  # float64, len + 1: prefix sums of the exposure weights
    articles: pl.DataFrame
    buzz: np.ndarray  # float64, the latent buzz b_a (never written)
    stale_hours: np.ndarray  # float64, the latent freshness time scale of each article (never written)
    time_effect: float = 0.0


@dataclass
class _Users:
    ids: np.ndarray  # uint32
    cat_util: np.ndarray  # (U, categories) float64
    sent_util: np.ndarray  # (U, 3) float64
    activity: np.ndarray  # probabilities summing to 1
    attrs: dict[str, np.ndarray]
    freshness: np.ndarray | None = None  # float64, the latent weight of staleness per user (never written)


_STREAMS = {"articles": 1, "users": 2, "train": 3, "validation": 4, "test": 5, "buzz": 6}


def _stream(seed: int, part: str) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAMS[part]])


def _increasing_ids(rng: np.random.Generator, n: int, start: int, max_gap: int) -> np.ndarray:
    return start + np.cumsum(rng.integers(1, max_gap + 1, n))


def _catalogue(rng: np.random.Generator, n: int, time_effect: float = 0.0,
               buzz_rng: np.random.Generator | None = None) -> _Catalogue:
    # The back catalogue guarantees at least 2 * MAX_INVIEW articles exist before the earliest history event.
    n_back = max(2 * MAX_INVIEW + 2, n // 8)
    first_event = TRAIN_START - HISTORY_DAYS * _DAY
    pub = np.concatenate([
        rng.integers(CATALOGUE_START // _S, first_event // _S, n_back),
        rng.integers(first_event // _S, CATALOGUE_END // _S, n - n_back),
    ])
    pub = np.sort(pub) * _S
    ids = _increasing_ids(rng, n, 9_500_000, 40).astype(np.int32)
    log_pop = rng.normal(0.0, 1.0, n)
    pageviews = np.round(np.exp(log_pop) * 400 * rng.lognormal(0.0, 0.3, n)).astype(np.int64) + 1
    inviews = np.round(pageviews * rng.uniform(3.0, 12.0, n)).astype(np.int64)
    articles, cat, sent = build_articles(rng, ids, pub, inviews, pageviews)
    buzz_rng = buzz_rng or np.random.default_rng(0)
    buzz = buzz_rng.normal(0.0, 1.0, n)
    stale_hours = FRESH_HOURS * np.exp(FRESH_SPREAD * buzz_rng.normal(0.0, 1.0, n))
    if time_effect == 0:  # the content-only model, to the last bit
        weight = np.exp(EXPOSURE_POP * log_pop + (pub - CATALOGUE_START) / (RECENCY_DAYS * _DAY))
    else:
        rate = 1.0 / RECENCY_DAYS + time_effect / EXPOSURE_FRESH_DAYS
        weight = np.exp(EXPOSURE_POP * log_pop + time_effect * EXPOSURE_BUZZ * buzz
                        + (pub - CATALOGUE_START) * rate / _DAY)
    cum = np.concatenate([[0.0], np.cumsum(weight)])
    z = (log_pop - log_pop.mean()) / max(log_pop.std(), 1e-9)
    return _Catalogue(ids, pub, cat, sent, POP_W * z, cum, articles, buzz, stale_hours, time_effect)


def _users(rng: np.random.Generator, n: int) -> _Users:
    pref = rng.gamma(PREF_ALPHA, 1.0, (n, N_CATEGORIES))
    pref /= np.maximum(pref.sum(axis=1, keepdims=True), 1e-300)
    attrs = {
        "is_sso_user": rng.random(n) < 0.97,
        "gender": rng.choice(np.array([0, 1, -1], np.int8), n, p=[0.6, 0.2, 0.2]),
        "postcode": rng.choice(np.array([-1, 0, 1, 2, 3, 4], np.int8), n, p=[0.76, 0.08, 0.08, 0.015, 0.02, 0.045]),
        "age": rng.choice(np.array([-1, 20, 30, 40, 50, 60, 70, 80], np.int8), n,
                          p=[0.57, 0.02, 0.03, 0.1, 0.09, 0.13, 0.05, 0.01]),
        "is_subscriber": rng.random(n) < 0.63,
        "device_type": rng.choice(np.array([1, 2, 3], np.int8), n, p=[0.28, 0.65, 0.07]),
    }
    activity = rng.lognormal(0.0, 0.7, n)
    return _Users(
        ids=_increasing_ids(rng, n, 10_000, 12).astype(np.uint32),
        cat_util=CAT_W * np.log(pref + PREF_EPS),
        sent_util=SENT_W * rng.normal(0.0, 1.0, (n, 3)),
        activity=activity / activity.sum(),
        attrs=attrs,
    )


def _utility(users: _Users, cat: _Catalogue, user: np.ndarray, art: np.ndarray, t: np.ndarray) -> np.ndarray:
    """v(user, article, t) for a (rows, width) block of article indices shown at times t (rows);
    -inf where art is padding (-1)."""
    a = np.maximum(art, 0)
    u = user[:, None]
    v = users.cat_util[u, cat.cat[a]] + users.sent_util[u, cat.sent[a]] + cat.pop_util[a]
    if cat.time_effect:
        age_h = np.maximum(t[:, None] - cat.pub[a], 0) / (_DAY / 24)
        stale = np.log1p(age_h / cat.stale_hours[a]) * users.freshness[u]
        v += cat.time_effect * (BUZZ_W * cat.buzz[a] - FRESH_W * stale)
    v[art < 0] = -np.inf
    return v


def _window(cat: _Catalogue, t: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    hi = np.searchsorted(cat.pub, t, side="left")  # published strictly before t
    lo = np.searchsorted(cat.pub, t - int(WINDOW_DAYS * _DAY), side="left")
    return np.maximum(np.minimum(lo, hi - width), 0), hi


def _weighted(rng: np.random.Generator, cat: _Catalogue, lo: np.ndarray, hi: np.ndarray, k: int) -> np.ndarray:
    """k draws per row with replacement from articles lo..hi-1, weighted by exposure (inverse-CDF)."""
    base = cat.cum_weight[lo]
    r = base[:, None] + rng.random((len(lo), k)) * (cat.cum_weight[hi] - base)[:, None]
    idx = np.searchsorted(cat.cum_weight, r, side="right") - 1
    return np.clip(idx, lo[:, None], hi[:, None] - 1).astype(np.int32)


def _first_distinct(cand: np.ndarray, n: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first n distinct non-negative values of cand in order, padded with -1 to width."""
    order = np.argsort(cand, axis=1, kind="stable")  # stable: the earliest copy leads each run of equals
    srt = np.take_along_axis(cand, order, axis=1)
    lead = np.ones_like(srt, dtype=bool)
    lead[:, 1:] = srt[:, 1:] != srt[:, :-1]
    first = np.empty_like(lead)
    np.put_along_axis(first, order, lead, axis=1)
    first &= cand >= 0
    rank = np.cumsum(first, axis=1) - 1
    keep = first & (rank < n[:, None])
    out = np.full((len(cand), width), -1, dtype=cand.dtype)
    r, c = np.nonzero(keep)
    out[r, rank[r, c]] = cand[r, c]
    return out, keep.sum(axis=1)


def _exposure(rng: np.random.Generator, cat: _Catalogue, t: np.ndarray, n: np.ndarray, width: int) -> np.ndarray:
    """n[i] distinct article indices shown at time t[i], in random order, padded with -1 to width."""
    lo, hi = _window(cat, t, width)
    picks = np.full((len(t), width), -1, dtype=np.int32)
    todo = np.arange(len(t))
    # Popular articles repeat among the draws; a few redraws fill almost every row, and the last pass takes
    # the newest articles (always >= width of them) so that every row ends complete.
    for attempt in range(4):
        if attempt == 0:
            cand = _weighted(rng, cat, lo, hi, width + EXTRA_DRAWS)
        elif attempt < 3:
            cand = np.concatenate([picks[todo], _weighted(rng, cat, lo[todo], hi[todo], 2 * width)], axis=1)
        else:
            cand = np.concatenate([picks[todo], (hi[todo, None] - 1 - np.arange(width)).astype(np.int32)], axis=1)
        picks[todo], count = _first_distinct(cand, n[todo], width)
        todo = todo[count < n[todo]]
        if not len(todo):
            break
    # Draw order favours popular articles (they tend to come up first), so shuffle to keep position neutral.
    key = rng.random(picks.shape)
    key[picks < 0] = 2.0  # padding stays at the end
    return np.take_along_axis(picks, np.argsort(key, axis=1), axis=1)


def _top(rng: np.random.Generator, v: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Gumbel-top-k column positions (k is 1 or 2): (rows, 2), second column -1 where k == 1."""
    noisy = v + rng.gumbel(0.0, 1.0, v.shape)
    rows = np.arange(len(v))
    best = np.empty((len(v), 2), dtype=np.int64)
    best[:, 0] = np.argmax(noisy, axis=1)
    noisy[rows, best[:, 0]] = -np.inf
    best[:, 1] = np.where(k >= 2, np.argmax(noisy, axis=1), -1)
    return best


def _reads(rng: np.random.Generator, users: _Users, cat: _Catalogue, user: np.ndarray, t: np.ndarray) -> np.ndarray:
    """One read per (user, t): the Gumbel-argmax of utility over HISTORY_CHOICES exposure draws.

    Draws are with replacement (a repeat only doubles that article's chance), which keeps the many history
    events cheap next to the distinct in-view lists of the impressions.
    """
    out = np.empty(len(t), dtype=np.int32)
    for s in range(0, len(t), CHUNK):
        sl = slice(s, s + CHUNK)
        lo, hi = _window(cat, t[sl], HISTORY_CHOICES)
        picks = _weighted(rng, cat, lo, hi, HISTORY_CHOICES)
        noisy = _utility(users, cat, user[sl], picks, t[sl]) + rng.gumbel(0.0, 1.0, picks.shape)
        out[sl] = np.take_along_axis(picks, np.argmax(noisy, axis=1)[:, None], axis=1)[:, 0]
    return out


def _ragged(values, lengths: np.ndarray, dtype: pl.DataType, mask: np.ndarray | None = None) -> pl.Series:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    arr = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, mask=mask))
    return pl.Series(pl.from_arrow(arr)).cast(pl.List(dtype))


def _nullable(values: np.ndarray, null: np.ndarray, dtype: pl.DataType) -> pl.Series:
    return pl.Series(pl.from_arrow(pa.array(values, mask=null))).cast(dtype)


def _offsets(rng: np.random.Generator, start: int, span: int, n: int, time_effect: float) -> np.ndarray:
    """n whole-second offsets in [0, span) after `start` (us): uniform, or with the day cycle when X > 0."""
    if time_effect == 0:
        return rng.integers(0, span, n)
    first = start // _S
    hours = np.arange(first // 3600, (first + span - 1) // 3600 + 1)
    mix = min(time_effect, 1.0)
    lo = np.maximum(hours * 3600, first) - first  # the span's first and last hours may be partial
    hi = np.minimum(hours * 3600 + 3600, first + span) - first
    cum = np.cumsum((1 - mix + mix * DIURNAL[hours % 24]) * (hi - lo))
    h = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(hours) - 1)
    return lo[h] + np.floor(rng.random(n) * (hi[h] - lo[h])).astype(np.int64)


def _seconds(rng: np.random.Generator, start: int, days: float, n: int, time_effect: float = 0.0) -> np.ndarray:
    return (start // _S + _offsets(rng, start, int(days * 86_400), n, time_effect)) * _S


def _reading(rng: np.random.Generator, n: int, median: float) -> np.ndarray:
    return np.clip(np.round(rng.lognormal(np.log(median), 1.1, n)), 0, 1800).astype(np.float32)


def _scroll(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.where(rng.random(n) < 0.4, 100.0, np.round(rng.uniform(0, 100, n))).astype(np.float32)


def _sessions(user: np.ndarray, t: np.ndarray, first: int) -> np.ndarray:
    """Session ids: a user's impressions less than 30 minutes apart share one."""
    order = np.lexsort((t, user))
    u, tt = user[order], t[order]
    new = np.ones(len(u), dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | (tt[1:] - tt[:-1] > 30 * 60 * _S)
    sid = np.empty(len(u), dtype=np.int64)
    sid[order] = first + np.cumsum(new)
    return sid


class _Counter:
    """Hands out increasing ids across splits, so impression and session ids never collide."""

    def __init__(self, start: int) -> None:
        self.next = start

    def take(self, values: np.ndarray) -> np.ndarray:
        out = self.next + values
        self.next = int(out.max(initial=self.next)) + 1
        return out


@dataclass
class _Shown:
    user: np.ndarray  # user index per impression
    t: np.ndarray
    lengths: np.ndarray
    articles: np.ndarray  # flat article indices, impression after impression
    utility: np.ndarray  # flat, aligned with articles
    clicked: np.ndarray | None  # (rows, 2) article indices, -1 padded


def _show(rng, users: _Users, cat: _Catalogue, user, t, n, width, clicks: np.ndarray | None) -> _Shown:
    arts, utils, clicked = [], [], []
    for s in range(0, len(t), CHUNK):
        sl = slice(s, s + CHUNK)
        picks = _exposure(rng, cat, t[sl], n[sl], width)
        v = _utility(users, cat, user[sl], picks, t[sl])
        if clicks is not None:
            pos = _top(rng, v, clicks[sl])
            chosen = np.take_along_axis(picks, np.maximum(pos, 0), axis=1)
            clicked.append(np.where(pos >= 0, chosen, -1))
        keep = picks >= 0
        arts.append(picks[keep])
        utils.append(v[keep])
    return _Shown(user, t, n, np.concatenate(arts), np.concatenate(utils),
                  np.concatenate(clicked) if clicks is not None else None)


def _behaviors(rng, users: _Users, cat: _Catalogue, shown: _Shown, imp_ids: _Counter, sessions: _Counter,
               labelled: bool, beyond: np.ndarray) -> pl.DataFrame:
    m = len(shown.t)
    u = shown.user
    reading = rng.random(m) < 0.3  # impression seen on an article page rather than the front page
    lo, hi = _window(cat, shown.t, 1)
    page = cat.ids[_weighted(rng, cat, lo, hi, 1)[:, 0]]
    device = np.where(rng.random(m) < 0.9, users.attrs["device_type"][u], rng.integers(1, 4, m).astype(np.int8))
    cols: dict[str, pl.Series | np.ndarray] = {
        "impression_id": imp_ids.take(np.cumsum(rng.integers(1, 4, m))),
        "article_id": _nullable(page, ~reading, pl.Int32),
        "impression_time": pl.Series(shown.t).cast(pl.Datetime("us")),
        "read_time": np.where(reading, _reading(rng, m, 50), _reading(rng, m, 17)),
        "scroll_percentage": _nullable(_scroll(rng, m), ~reading | (rng.random(m) < 0.1), pl.Float32),
        "device_type": device,
        "article_ids_inview": _ragged(cat.ids[shown.articles], shown.lengths, pl.Int32),
        "user_id": users.ids[u],
        "is_sso_user": users.attrs["is_sso_user"][u],
        "gender": _nullable(users.attrs["gender"][u], users.attrs["gender"][u] < 0, pl.Int8),
        "postcode": _nullable(users.attrs["postcode"][u], users.attrs["postcode"][u] < 0, pl.Int8),
        "age": _nullable(users.attrs["age"][u], users.attrs["age"][u] < 0, pl.Int8),
        "is_subscriber": users.attrs["is_subscriber"][u],
        "session_id": sessions.take(_sessions(u, shown.t, 0)),
    }
    if labelled:
        clicked = shown.clicked
        n_clicks = (clicked >= 0).sum(axis=1)
        cols["article_ids_clicked"] = _ragged(cat.ids[clicked[clicked >= 0]], n_clicks, pl.Int32)
        cols["next_read_time"] = _nullable(_reading(rng, m, 25), rng.random(m) < 0.03, pl.Float32)
        cols["next_scroll_percentage"] = _nullable(_scroll(rng, m), rng.random(m) < 0.2, pl.Float32)
        schema = BEHAVIORS
    else:
        cols["is_beyond_accuracy"] = beyond
        schema = TEST_BEHAVIORS
    return pl.DataFrame({name: cols[name] for name in schema}).cast(schema)


def _history(rng, users: _Users, cat: _Catalogue, split_users: np.ndarray, start: int) -> pl.DataFrame:
    """Reads before `start` for all but ~1% of split_users (those are left out to exercise missing history)."""
    n_absent = max(1, round(0.01 * len(split_users))) if len(split_users) > 1 else 0
    absent = rng.choice(split_users, n_absent, replace=False)
    present = np.setdiff1d(split_users, absent)
    lengths = np.clip(np.round(rng.lognormal(np.log(25.0), 0.8, len(present))), 1, 100).astype(np.int64)
    owner = np.repeat(np.arange(len(present)), lengths)
    span = HISTORY_DAYS * 86_400
    offset = _offsets(rng, start - span * _S, span, len(owner), cat.time_effect)
    order = np.argsort(owner * span + offset, kind="stable")  # groups stay contiguous, time ascending within
    t = (start // _S - span + offset[order]) * _S
    user = present[owner]
    read = _reads(rng, users, cat, user, t)
    e = len(t)
    cols = {
        "user_id": users.ids[present],
        "impression_time_fixed": _ragged(t, lengths, pl.Datetime("us")),
        "scroll_percentage_fixed": _ragged(_scroll(rng, e), lengths, pl.Float32, mask=rng.random(e) < 0.08),
        "article_id_fixed": _ragged(cat.ids[read], lengths, pl.Int32),
        "read_time_fixed": _ragged(_reading(rng, e, 30), lengths, pl.Float32),
    }
    return pl.DataFrame(cols).cast(HISTORY)


def _beyond_accuracy(rng, users: _Users, cat: _Catalogue, n_rows: int, start: int) -> _Shown:
    """n_rows impressions that all show one list of the most exposed articles published before `start`."""
    size = min(BEYOND_ACCURACY_SIZE, len(cat.ids))
    before = np.searchsorted(cat.pub, start, side="left")
    weight = np.diff(cat.cum_weight)
    # Gumbel-top-k over log weight: a popularity- and recency-weighted sample without replacement; articles
    # published later only fill the list if fewer than `size` exist before the test week.
    key = np.log(weight) + rng.gumbel(0.0, 1.0, len(weight)) - 1e6 * (np.arange(len(weight)) >= before)
    common = np.sort(np.argsort(-key)[:size]).astype(np.int32)
    user = rng.choice(len(users.ids), n_rows, p=users.activity)
    t = _seconds(rng, start, 7, n_rows, cat.time_effect)
    utils = [_utility(users, cat, user[s:s + CHUNK], np.broadcast_to(common, (len(user[s:s + CHUNK]), size)),
                      t[s:s + CHUNK]) for s in range(0, n_rows, CHUNK)]
    utility = np.concatenate([x.ravel() for x in utils]) if utils else np.zeros(0)
    return _Shown(user, t, np.full(n_rows, size), np.tile(common, n_rows), utility, None)


def _concat(a: _Shown, b: _Shown) -> _Shown:
    return _Shown(*(np.concatenate([x, y]) for x, y in
                    [(a.user, b.user), (a.t, b.t), (a.lengths, b.lengths), (a.articles, b.articles),
                     (a.utility, b.utility)]), None)


def _write(df: pl.DataFrame, path: Path) -> None:
    with atomic_path(path, suffix=".parquet") as tmp:
        df.write_parquet(tmp)


def _split(rng, users: _Users, cat: _Catalogue, name: str, n_imp: int, n_beyond: int,
           imp_ids: _Counter, sessions: _Counter, out: Path) -> dict:
    start = TRAIN_START + SPLITS.index(name) * 7 * _DAY
    labelled = name != "test"
    user = rng.choice(len(users.ids), n_imp, p=users.activity)
    t = np.sort(_seconds(rng, start, 7, n_imp, cat.time_effect))
    n = MIN_INVIEW + np.minimum(rng.poisson(4.5, n_imp), MAX_INVIEW - MIN_INVIEW)
    clicks = 1 + (rng.random(n_imp) < TWO_CLICK_SHARE) if labelled else None
    shown = _show(rng, users, cat, user, t, n, MAX_INVIEW, clicks)
    beyond = np.zeros(n_imp, dtype=bool)
    if n_beyond:
        shown = _concat(shown, _beyond_accuracy(rng, users, cat, n_beyond, start))
        beyond = np.concatenate([beyond, np.ones(n_beyond, dtype=bool)])
    behaviors = _behaviors(rng, users, cat, shown, imp_ids, sessions, labelled, beyond)
    oracle = pl.DataFrame({
        "impression_id": behaviors["impression_id"],
        "utility": _ragged(shown.utility, shown.lengths, pl.Float64),
    })
    history = _history(rng, users, cat, np.unique(shown.user), start)
    _write(behaviors, out / name / "behaviors.parquet")
    _write(history, out / name / "history.parquet")
    _write(oracle, out / name / "oracle.parquet")
    summary = {"impressions": n_imp, "users": int(behaviors["user_id"].n_unique()), "history_users": history.height}
    if labelled:
        summary["clicks"] = int((shown.clicked >= 0).sum())
    else:
        summary["beyond_accuracy"] = n_beyond
    return summary


def _check_replaceable(out: Path) -> None:
    """`out` is swapped in whole, so whatever is there is deleted: allow only an empty folder or a dataset."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder, expected a new, empty or dataset folder to write")
    if out.is_dir() and not (out / "articles.parquet").exists() and any(out.iterdir()):
        raise DataError(f"{out}: folder holds other files and no articles.parquet, expected a new, empty or "
                        f"dataset folder to write (it would be replaced)")


def synthesize(
    out: str | Path,
    *,
    users: int = 2000,
    articles: int = 1500,
    seed: int = 0,
    with_testset: bool = False,
    train_impressions_per_user: float = 5.0,
    val_impressions_per_user: float = 2.0,
    test_impressions: int | None = None,
    time_effect: float = DEFAULT_TIME_EFFECT,
) -> dict:
    """Write a synthetic EBNeRD dataset to `out` (replacing it only once complete); return split counts.

    `time_effect` is the strength X of freshness, buzz and the day cycle (module docs); 0 writes exactly
    the content-only data of earlier versions.
    """
    if users < 1:
        raise ConfigError(f"users must be at least 1, got {users}")
    if articles < MIN_ARTICLES:
        raise ConfigError(f"articles must be at least {MIN_ARTICLES}, got {articles}")
    if train_impressions_per_user <= 0 or val_impressions_per_user <= 0:
        raise ConfigError("impressions per user must be positive")
    if test_impressions is not None and test_impressions < 1:
        raise ConfigError(f"test_impressions must be at least 1, got {test_impressions}")
    if isinstance(time_effect, bool) or not (isinstance(time_effect, (int, float))
                                             and 0 <= time_effect <= MAX_TIME_EFFECT):
        raise ConfigError(f"time_effect must be a number in [0, {MAX_TIME_EFFECT:g}], got {time_effect}")
    _check_replaceable(Path(out))
    sizes = {
        "train": max(1, round(train_impressions_per_user * users)),
        "validation": max(1, round(val_impressions_per_user * users)),
    }
    if with_testset:
        sizes["test"] = test_impressions if test_impressions is not None else sizes["validation"]
    latent = _stream(seed, "buzz")
    cat = _catalogue(_stream(seed, "articles"), articles, float(time_effect), latent)
    people = _users(_stream(seed, "users"), users)
    people.freshness = np.exp(FRESH_USER_SPREAD * latent.normal(0.0, 1.0, users) - FRESH_USER_SPREAD**2 / 2)
    imp_ids, sessions = _Counter(1), _Counter(1)
    summary: dict = {"articles": articles, "users": users, "time_effect": float(time_effect)}
    with atomic_dir(out) as tmp:
        _write(cat.articles, tmp / "articles.parquet")
        for name, n_imp in sizes.items():
            n_beyond = max(1, round(BEYOND_ACCURACY_SHARE * n_imp)) if name == "test" else 0
            summary[name] = _split(_stream(seed, name), people, cat, name, n_imp, n_beyond, imp_ids, sessions, tmp)
    return summary
