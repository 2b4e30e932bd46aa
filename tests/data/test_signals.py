"""Time signals against a brute-force per-query Python reference, leakage properties, masking, files and errors.

The reference below shares no code with `mtnews.data.signals`/`events`: it walks plain Python lists of
events and counts, for each (article, time) query, the events that the module docs say an impression can see.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtnews.data.events import LogPart, unit_hash
from mtnews.data.signals import (
    AGGREGATE_COLUMNS,
    ArticleTimes,
    SignalIndex,
    SignalOptions,
    compute_signals,
    split_signals,
)
from mtnews.errors import ConfigError, DataError

HOUR = 3_600_000_000
EPOCH = datetime(1970, 1, 1)
T0 = int((datetime(2023, 5, 18, 7) - EPOCH).total_seconds()) * 1_000_000
M64 = (1 << 64) - 1


def dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


# --- the reference ------------------------------------------------------------------------------------------

def ref_unit(a: int, b: int, seed: int) -> float:
    """splitmix64 of the pair in Python integers: the masking rule as documented in data/events.py."""
    x = (a * 0x9E3779B97F4A7C15) & M64
    x ^= (b + ((seed * 0xBF58476D1CE4E5B9) & M64)) & M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    x ^= x >> 31
    return (x >> 11) * 2.0**-53


def ref_events(parts, o: SignalOptions):
    """parts: [(impressions, history, own)], impressions (id, user, t, inview, clicked), history {user: [(t, a)]}."""
    inviews, clicks, reads = [], [], set()
    for imps, history, own in parts:
        for imp, user, t, inview, clicked in imps:
            inviews += [(a, t) for a in inview if a is not None]
            for a in clicked:
                if own and ref_unit(imp, a, o.mask_seed) < o.mask_split_clicks:
                    continue
                clicks.append((user, a, t))
        for user, events in history.items():
            reads |= {(user, a, t) for t, a in events}
    tol = round(o.history_dedupe_h * HOUR)
    kept = [r for r in reads if not (tol > 0 and any(
        u == r[0] and a == r[1] and r[2] - tol <= t <= r[2] for u, a, t in clicks))]
    by_article: dict[int, tuple[list, list]] = {}
    for a, t in inviews:
        by_article.setdefault(a, ([], []))[0].append(t)
    for _, a, t in clicks + kept:
        by_article.setdefault(a, ([], []))[1].append(t)
    return by_article


def ref_signals(parts, queries, published: dict, o: SignalOptions, aggregates: dict | None = None) -> dict:
    events = ref_events(parts, o)
    out = {n: [] for n in o.names()}
    a_prior = o.ctr_prior_mean * o.ctr_prior_strength
    for article, t in queries:
        iv, cl = events.get(article, ([], []))
        pub = published.get(article)
        out["age_h"].append(math.nan if pub is None else (t - pub) / HOUR)
        out["age_known"].append(pub is not None)
        counts = {}
        for name, w in [*zip(o.window_names, o.windows_h), ("all", None)]:
            if o.window == "split":
                counts["inviews", name] = sum(1 for x in iv if w is None or t - w * HOUR <= x < t + w * HOUR)
            else:
                counts["inviews", name] = sum(1 for x in iv if x < t and (w is None or x >= t - w * HOUR))
            counts["clicks", name] = sum(1 for x in cl if x < t and (w is None or x >= t - w * HOUR))
            out[f"inviews_{name}"].append(counts["inviews", name])
            out[f"clicks_{name}"].append(counts["clicks", name])
            out[f"ctr_{name}"].append((counts["clicks", name] + a_prior) / (counts["inviews", name] + o.ctr_prior_strength))
        for c in AGGREGATE_COLUMNS if o.aggregates else ():
            out[c].append((aggregates or {}).get(article, {}).get(c, math.nan))
    return out


# --- the library on the same logs ---------------------------------------------------------------------------

def log_part(imps, history, own) -> LogPart:
    behaviors = pl.DataFrame({
        "impression_id": [i[0] for i in imps], "user_id": [i[1] for i in imps],
        "impression_time": [dt(i[2]) for i in imps], "article_ids_inview": [i[3] for i in imps],
        "article_ids_clicked": [i[4] for i in imps],
    }, schema={"impression_id": pl.UInt32, "user_id": pl.UInt32, "impression_time": pl.Datetime("us"),
               "article_ids_inview": pl.List(pl.Int32), "article_ids_clicked": pl.List(pl.Int32)})
    users = sorted(history)
    hist = pl.DataFrame({
        "user_id": users, "impression_time_fixed": [[dt(t) for t, _ in history[u]] for u in users],
        "article_id_fixed": [[a for _, a in history[u]] for u in users],
    }, schema={"user_id": pl.UInt32, "impression_time_fixed": pl.List(pl.Datetime("us")),
               "article_id_fixed": pl.List(pl.Int32)})
    return LogPart(behaviors, hist, own)


def lib_signals(parts, queries, published: dict, o: SignalOptions) -> dict:
    index = SignalIndex.from_parts([log_part(*p) for p in parts], o)
    ids = sorted(set(published) | {1, 2, 3})
    articles = ArticleTimes.from_frame(pl.DataFrame(
        {"article_id": ids, "published_time": [None if published.get(a) is None else dt(published[a]) for a in ids]},
        schema={"article_id": pl.Int32, "published_time": pl.Datetime("us")}))
    table = compute_signals(index, articles, np.array([q[0] for q in queries], dtype=np.int64),
                            np.array([q[1] for q in queries], dtype=np.int64))
    return table.columns


def assert_same(lib: dict, ref: dict, names=None) -> None:
    for name in names or ref:
        got, want = np.asarray(lib[name], dtype=np.float64), np.asarray(ref[name], dtype=np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, equal_nan=True, err_msg=name)


# --- random logs --------------------------------------------------------------------------------------------

TIMES = st.integers(0, 96).map(lambda k: T0 + k * HOUR // 2)  # half-hours over two days: ties and edges
ARTICLES = st.integers(1, 8)


@st.composite
def impressions(draw, first_id: int, times=TIMES, max_size: int = 8):
    out = []
    for i in range(draw(st.integers(0, max_size))):
        inview = draw(st.lists(ARTICLES, min_size=1, max_size=5, unique=True))
        clicked = draw(st.lists(st.sampled_from(inview), max_size=2, unique=True))
        out.append((first_id + i, draw(st.integers(1, 4)), draw(times), inview, clicked))
    return out


@st.composite
def histories(draw, times=TIMES):
    return {u: draw(st.lists(st.tuples(times, ARTICLES), max_size=5)) for u in range(1, 5) if draw(st.booleans())}


@st.composite
def logs(draw):
    """A train part and the scored split's part (own=True)."""
    return [(draw(impressions(1)), draw(histories()), False), (draw(impressions(100)), draw(histories()), True)]


@st.composite
def options(draw):
    return SignalOptions(
        windows_h=draw(st.sampled_from([(1.0, 6.0, 24.0), (0.5, 2.0), (3.0,)])),
        window=draw(st.sampled_from(["past", "split"])),
        ctr_prior_mean=draw(st.sampled_from([0.1, 0.3])),
        ctr_prior_strength=draw(st.sampled_from([10.0, 2.0])),
        mask_split_clicks=draw(st.sampled_from([0.0, 0.5, 1.0])),
        mask_seed=draw(st.integers(0, 3)),
        history_dedupe_h=draw(st.sampled_from([0.0, 1.0, 2.5])),
    )


QUERIES = st.lists(st.tuples(st.integers(0, 9), TIMES.map(lambda t: t + HOUR // 4) | TIMES), min_size=1, max_size=12)
PUBLISHED = st.dictionaries(ARTICLES, st.none() | TIMES, max_size=8)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(logs(), QUERIES, PUBLISHED, options())
def test_equals_brute_force_reference(parts, queries, published, o):
    assert_same(lib_signals(parts, queries, published, o), ref_signals(parts, queries, published, o))


def _alter_after(parts, cut: int, data) -> list:
    """The log with every event at or after `cut` removed or replaced at random, and rows shuffled."""
    later = TIMES.filter(lambda t: t >= cut) | st.just(cut)
    out = []
    for k, (imps, history, own) in enumerate(parts):
        kept = [i for i in imps if i[2] < cut] + data.draw(impressions(1000 + 100 * k, later, 4))
        random.Random(data.draw(st.integers(0, 9))).shuffle(kept)
        hist = {u: [e for e in ev if e[0] < cut] for u, ev in history.items()}
        for u, ev in data.draw(histories(later)).items():
            hist[u] = hist.get(u, []) + ev
        out.append((kept, hist, own))
    return out


@FAST
@given(logs(), TIMES, options(), st.data())
def test_events_at_or_after_t_never_change_a_feature_at_t(parts, cut, o, data):
    queries = data.draw(st.lists(st.tuples(st.integers(0, 9), TIMES.filter(lambda t: t <= cut) | st.just(cut)),
                                 min_size=1, max_size=10))
    published = {a: T0 for a in range(1, 9)}
    before = lib_signals(parts, queries, published, o)
    after = lib_signals(_alter_after(parts, cut, data), queries, published, o)
    # The transductive mode looks ahead on purpose, for in-views only; clicks stay past-only in both modes.
    names = [n for n in o.names() if o.window == "past" or n.startswith("clicks_") or n.startswith("age")]
    assert_same(after, before, names)


def test_a_scored_impression_never_sees_its_own_events():
    own = [(7, 1, T0 + HOUR, [1, 2], [1])]
    q = [(1, T0 + HOUR), (2, T0 + HOUR)]
    s = lib_signals([([], {}, False), (own, {}, True)], q, {}, SignalOptions())
    assert s["inviews_all"].tolist() == [0, 0] and s["clicks_all"].tolist() == [0, 0]
    s = lib_signals([([], {}, False), (own, {}, True)], [(1, T0 + HOUR + 1)], {}, SignalOptions())
    assert s["inviews_1h"].tolist() == [1] and s["clicks_1h"].tolist() == [1]  # one microsecond later: past
    split = lib_signals([([], {}, False), (own, {}, True)], q, {}, SignalOptions(window="split"))
    assert split["inviews_all"].tolist() == [1, 1] and split["clicks_all"].tolist() == [0, 0]


def test_hand_computed_counts_ctr_and_age():
    train = [(1, 1, T0, [1, 2], [1]), (2, 2, T0 + 2 * HOUR, [1], []), (3, 1, T0 + 10 * HOUR, [1, 3], [3])]
    hist = {1: [(T0 + 10 * HOUR + HOUR // 2, 3), (T0 - 3 * HOUR, 1)], 2: [(T0 - 30 * HOUR, 1)]}
    q = [(1, T0 + 11 * HOUR), (3, T0 + 11 * HOUR), (9, T0 + 11 * HOUR)]
    s = lib_signals([(train, hist, False)], q, {1: T0 - 5 * HOUR, 3: None}, SignalOptions())
    # Article 1 at t0+11h: in-views at t0, t0+2h, t0+10h; a click at t0, reads at t0-3h and t0-30h.
    assert s["inviews_1h"].tolist() == [1, 1, 0] and s["inviews_6h"].tolist() == [1, 1, 0]
    assert s["inviews_24h"].tolist() == [3, 1, 0] and s["inviews_all"].tolist() == [3, 1, 0]
    # Article 3: the t0+10h log click, and the read 30 minutes later is its trace (deduplicated).
    assert s["clicks_1h"].tolist() == [0, 1, 0] and s["clicks_24h"].tolist() == [2, 1, 0]
    assert s["clicks_all"].tolist() == [3, 1, 0]
    assert s["ctr_all"].tolist() == pytest.approx([(3 + 1) / (3 + 10), (1 + 1) / (1 + 10), 1 / 10])
    assert s["age_h"][0] == 16.0 and np.isnan(s["age_h"][1:]).all()  # unknown time is flagged, never 0
    assert s["age_known"].tolist() == [True, False, False]
    no_dedupe = lib_signals([(train, hist, False)], q, {}, SignalOptions(history_dedupe_h=0))
    assert no_dedupe["clicks_all"].tolist() == [3, 2, 0]


def test_mask_one_is_the_split_without_its_clicks_and_a_half_drops_about_half():
    rng = np.random.default_rng(0)
    own = [(i, int(rng.integers(1, 50)), T0 + int(rng.integers(0, 48)) * HOUR, [1, 2, 3], [int(rng.integers(1, 4))])
           for i in range(2000)]
    train = [(10_000, 1, T0 - HOUR, [1, 2], [2])]
    q = [(a, T0 + 49 * HOUR) for a in (1, 2, 3)]
    full = lib_signals([(train, {}, False), (own, {}, True)], q, {}, SignalOptions())
    masked = lib_signals([(train, {}, False), (own, {}, True)], q, {}, SignalOptions(mask_split_clicks=1.0))
    without = lib_signals([(train, {}, False), ([(*i[:4], []) for i in own], {}, True)], q, {}, SignalOptions())
    assert_same(masked, without)
    assert masked["clicks_all"].tolist() == [0, 1, 0]  # train's click is never masked
    half = lib_signals([(train, {}, False), (own, {}, True)], q, {}, SignalOptions(mask_split_clicks=0.5))
    kept = half["clicks_all"].sum() - 1
    assert abs(kept / (full["clicks_all"].sum() - 1) - 0.5) < 0.05
    # The mask is a hash of (impression, article), the documented splitmix64, not a draw in row order.
    a, b = np.array([3, 100, 2**31]), np.array([9_650_148, 1, 7])
    assert unit_hash(a, b, 5).tolist() == [ref_unit(int(x), int(y), 5) for x, y in zip(a, b)]
    other = lib_signals([(train, {}, False), (own[::-1], {}, True)], q, {}, SignalOptions(mask_split_clicks=0.5))
    assert_same(other, half)


@pytest.mark.parametrize("bad", [dict(windows_h=()), dict(windows_h=(1, 1)), dict(windows_h=(-1,)),
                                 dict(window="future"), dict(ctr_prior_mean=1.0), dict(ctr_prior_strength=0),
                                 dict(mask_split_clicks=1.5), dict(history_dedupe_h=-1), dict(windows=(1,))])
def test_bad_options_are_one_config_error(bad):
    with pytest.raises(ConfigError, match="signals"):
        SignalOptions.from_dict(bad)


# --- files --------------------------------------------------------------------------------------------------

def read_parts(root: Path, split: str) -> list:
    """The reference's view of a dataset's files, read with plain Python lists."""
    def part(name: str, own: bool):
        b = pl.read_parquet(root / name / "behaviors.parquet")
        clicked = b["article_ids_clicked"].to_list() if "article_ids_clicked" in b.columns else [[]] * b.height
        times = [int((t - EPOCH).total_seconds() * 1_000_000) for t in b["impression_time"].to_list()]
        imps = [(i, u, t, [a for a in iv], [a for a in c if a is not None])
                for i, u, t, iv, c in zip(b["impression_id"].to_list(), b["user_id"].to_list(), times,
                                          b["article_ids_inview"].to_list(), clicked)]
        h = pl.read_parquet(root / name / "history.parquet")
        hist = {}
        for u, ts, aa in zip(h["user_id"].to_list(), h["impression_time_fixed"].to_list(), h["article_id_fixed"].to_list()):
            if ts is not None:
                hist[u] = [(int((t - EPOCH).total_seconds() * 1_000_000), a)
                           for t, a in zip(ts, aa) if t is not None and a is not None]
        return imps, hist, own
    return [part(split, True)] if split == "train" else [part("train", False), part(split, True)]


def published_of(root: Path) -> dict:
    a = pl.read_parquet(root / "articles.parquet", columns=["article_id", "published_time"])
    return {i: None if t is None else int((t - EPOCH).total_seconds() * 1_000_000)
            for i, t in zip(a["article_id"].to_list(), a["published_time"].to_list())}


def sampled_queries(parts, n: int, seed: int = 0) -> tuple[list, list]:
    rows = [(imp[0], a, imp[2]) for imp in parts[-1][0] for a in imp[3] if a is not None]
    pick = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [rows[i] for i in pick], pick


@pytest.mark.parametrize("split,window,mask", [("validation", "past", 0.0), ("validation", "split", 0.5),
                                               ("test", "past", 0.0), ("train", "past", 1.0)])
def test_split_signals_of_a_synthetic_dataset_equal_the_reference(small_synth, split, window, mask):
    o = SignalOptions(window=window, mask_split_clicks=mask)
    s = split_signals(small_synth, split, o)
    assert s.sources[-1].endswith(split) and len(s.sources) == (1 if split == "train" else 2)
    frame = s.frame()
    parts = read_parts(small_synth, split)
    queries, pick = sampled_queries(parts, 150)
    ref = ref_signals(parts, [(a, t) for _, a, t in queries], published_of(small_synth), o)
    assert frame.height == sum(len(i[3]) for i in parts[-1][0])
    got = frame[pick]
    assert got["impression_id"].to_list() == [q[0] for q in queries]
    assert got["article_id"].to_list() == [q[1] for q in queries]
    assert_same({n: got[n].to_numpy() for n in o.names()}, ref)
    if split == "test":  # no clicks in the test log: what it knows of clicks comes from train and histories
        assert s.index.n_clicks - s.index.history_reads == sum(len(i[4]) for i in parts[0][0])


def test_chunks_of_evaluation_impressions_get_the_same_signals(small_synth):
    from mtnews.data.articles import load_articles
    from mtnews.data.dataset import load_split

    s = split_signals(small_synth, "validation")
    imps = load_split(small_synth, "validation", 10, load_articles(small_synth / "articles.parquet")).eval_impressions()
    whole = s.for_impressions(imps)
    pieces = [s.for_impressions(c) for c in imps.chunks(37)]
    for name in whole.columns:
        np.testing.assert_array_equal(np.concatenate([p[name] for p in pieces]), whole[name])
    assert whole.matrix().shape == (int(imps.offsets[-1]), len(s.options.names()))


def test_the_real_fixture_equals_the_reference_and_flags_every_missing_age(fixture_dataset):
    o = SignalOptions()
    s = split_signals(fixture_dataset, "train", o)
    assert s.index.history_reads > 8000  # the fixture's 44 histories, timestamped
    frame = s.frame()
    parts = read_parts(fixture_dataset, "train")
    queries, pick = sampled_queries(parts, 150, seed=1)
    ref = ref_signals(parts, [(a, t) for _, a, t in queries], published_of(fixture_dataset), o)
    assert_same({n: frame[pick][n].to_numpy() for n in o.names()}, ref)
    assert frame["inviews_all"].max() > 0 and frame["clicks_all"].max() > 0
    # The fixture has no published times: every age is missing, and flagged as such.
    assert not frame["age_known"].any() and frame["age_h"].is_nan().all()


def test_tiny_dataset_ties_and_the_transductive_mode(tiny_dataset):
    root = tiny_dataset()
    # Validation impression 11 is at 08:00, exactly when train impression 1 happened: strictly before
    # excludes it. Impression 12 (08:01) sees train impression 1 and validation impression 11.
    past = split_signals(root, "validation").frame()
    row = past.filter(pl.col("impression_id") == 12).sort("article_id")
    assert row["article_id"].to_list() == [104, 105]
    assert row["inviews_1h"].to_list() == [1, 1] and row["clicks_all"].to_list() == [0, 0]
    assert row["ctr_1h"].to_list() == pytest.approx([1 / 11, 1 / 11])
    minutes = (datetime(2023, 5, 1, 8, 1) - datetime(2023, 1, 7)).total_seconds() / 3600
    assert row["age_h"][0] == pytest.approx(minutes)
    first = past.filter(pl.col("impression_id") == 11)
    assert first["inviews_all"].to_list() == [0, 0, 0]
    # Both ways, the impression itself included: 101 is in view in train 1, 2, 5, 6 and validation 11.
    split = split_signals(root, "validation", {"window": "split"}).frame()
    assert split.filter((pl.col("impression_id") == 11) & (pl.col("article_id") == 101))["inviews_1h"].item() == 5


def test_aggregates_are_off_by_default_and_read_when_asked(small_synth):
    assert not set(AGGREGATE_COLUMNS) & set(SignalOptions().names())
    frame = split_signals(small_synth, "validation", {"aggregates": True}).frame()
    articles = pl.read_parquet(small_synth / "articles.parquet", columns=["article_id", *AGGREGATE_COLUMNS])
    joined = frame.join(articles.with_columns(pl.col("article_id").cast(pl.Int64)), on="article_id", suffix="_file")
    assert joined.height == frame.height
    for c in AGGREGATE_COLUMNS:
        assert (joined[c] == joined[f"{c}_file"].cast(pl.Float64)).all(), c


def test_missing_published_time_is_flagged(tmp_path, tiny_dataset):
    root = tiny_dataset()
    a = pl.read_parquet(root / "articles.parquet")
    a.with_columns(pl.when(pl.col("article_id") == 104).then(None).otherwise(pl.col("published_time"))
                   .alias("published_time")).write_parquet(root / "articles.parquet")
    frame = split_signals(root, "validation").frame()
    dated = frame.filter(pl.col("article_id") == 104)
    assert not dated["age_known"].any() and dated["age_h"].is_nan().all()
    assert frame.filter(pl.col("article_id") != 104)["age_known"].all()


def test_errors_name_the_file_and_column(tiny_dataset):
    root = tiny_dataset()
    b = root / "validation" / "behaviors.parquet"
    pl.read_parquet(b).drop("impression_time").write_parquet(b)
    with pytest.raises(DataError, match=r"validation/behaviors\.parquet.*'impression_time'"):
        split_signals(root, "validation")
    root = tiny_dataset("short")
    h = root / "train" / "history.parquet"
    pl.read_parquet(h).with_columns(pl.lit([datetime(2023, 4, 1)], dtype=pl.List(pl.Datetime("us")))
                                    .alias("impression_time_fixed")).write_parquet(h)
    with pytest.raises(DataError, match=r"train/history\.parquet.*'impression_time_fixed'.*user_id 10"):
        split_signals(root, "validation")
    s = split_signals(tiny_dataset("fine"), "validation")
    with pytest.raises(DataError, match="impression_id 99 is not in this split"):
        s.compute(np.array([99]), np.array([101]), np.array([0, 1]))
    with pytest.raises(ConfigError, match="unknown signal"):
        s.compute(np.array([11]), np.array([101]), np.array([0, 1]), names=("clicks_2h",))
