"""The synthetic EBNeRD generator: official schemas, invariants, a learnable signal, and articles for real logs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import roc_auc_score

from mtnews.data import synth
from mtnews.data.schema import ARTICLES, BEHAVIORS, HISTORY, TEST_BEHAVIORS
from mtnews.data.synth import synthesize
from mtnews.data.synth_articles import build_articles, synthesize_articles
from mtnews.data.time_profile import profile_file
from mtnews.errors import ConfigError, DataError

SIZE = dict(users=200, articles=300)
WEEK = np.timedelta64(7, "D")


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "ebnerd"
    synthesize(out, **SIZE, seed=0, with_testset=True)
    return out


def read(ds: Path, split: str, name: str) -> pl.DataFrame:
    return pl.read_parquet(ds / split / f"{name}.parquet")


def frames(root: Path) -> dict[str, pl.DataFrame]:
    return {str(p.relative_to(root)): pl.read_parquet(p) for p in sorted(root.rglob("*.parquet"))}


def split_start(split: str) -> np.datetime64:
    return np.datetime64(synth.TRAIN_START, "us") + synth.SPLITS.index(split) * WEEK


# --- schemas ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_history_schema_equals_real_fixture(ds, ebnerd_fixture, split):
    real = pl.read_parquet(ebnerd_fixture / "history.parquet").schema
    assert list(read(ds, split, "history").schema.items()) == list(real.items())


@pytest.mark.parametrize("split", ["train", "validation"])
def test_behaviors_schema_equals_real_fixture(ds, ebnerd_fixture, split):
    real = pl.read_parquet(ebnerd_fixture / "behaviors.parquet").schema
    assert list(read(ds, split, "behaviors").schema.items()) == list(real.items())


def test_schemas_equal_official_tables(ds):
    assert list(pl.read_parquet(ds / "articles.parquet").schema.items()) == list(ARTICLES.items())
    for split in ("train", "validation"):
        assert list(read(ds, split, "behaviors").schema.items()) == list(BEHAVIORS.items())
    assert list(read(ds, "test", "behaviors").schema.items()) == list(TEST_BEHAVIORS.items())
    for split in ("train", "validation", "test"):
        assert list(read(ds, split, "history").schema.items()) == list(HISTORY.items())
        assert read(ds, split, "oracle").schema == pl.Schema({"impression_id": pl.UInt32, "utility": pl.List(pl.Float64)})


def test_no_temporary_files_left(ds):
    assert sorted(p.name for p in ds.parent.iterdir()) == ["ebnerd"]
    assert not [p for p in ds.rglob("*") if p.name.startswith(".")]


# --- reproducibility ----------------------------------------------------------------------------------------

def test_same_seed_same_data_and_test_split_does_not_change_train(ds, tmp_path):
    synthesize(tmp_path / "again", **SIZE, seed=0, with_testset=True)
    synthesize(tmp_path / "no_test", **SIZE, seed=0)
    first, again, no_test = frames(ds), frames(tmp_path / "again"), frames(tmp_path / "no_test")
    assert first.keys() == again.keys()
    for name in first:
        assert first[name].equals(again[name]), name
    assert set(no_test) == {k for k in first if not k.startswith("test")}
    for name in no_test:
        assert first[name].equals(no_test[name]), name


def test_different_seed_different_data(ds, tmp_path):
    synthesize(tmp_path / "other", **SIZE, seed=1)
    other = frames(tmp_path / "other")
    first = frames(ds)
    for name in ("articles.parquet", "train/behaviors.parquet", "train/history.parquet"):
        assert not first[name].equals(other[name]), name


# --- invariants ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "validation"])
def test_impressions_are_well_formed(ds, split):
    b = read(ds, split, "behaviors")
    n = b["article_ids_inview"].list.len()
    assert n.min() >= 5 and n.max() <= 15
    assert (b["article_ids_inview"].list.n_unique() == n).all()
    clicks = b["article_ids_clicked"]
    assert clicks.list.len().is_between(1, 2).all()
    assert b.select(pl.col("article_ids_clicked").list.set_difference("article_ids_inview").list.len().max()).item() == 0
    assert (clicks.list.len() < n).all()  # at least one article shown and not clicked
    assert 0.5 < b["article_id"].null_count() / b.height < 0.9
    t = b["impression_time"].to_numpy()
    assert (t >= split_start(split)).all() and (t < split_start(split) + WEEK).all()


def test_oracle_aligned_with_inview(ds):
    for split in ("train", "validation", "test"):
        b = read(ds, split, "behaviors").join(read(ds, split, "oracle"), on="impression_id", how="left")
        assert b["utility"].null_count() == 0
        assert (b["utility"].list.len() == b["article_ids_inview"].list.len()).all()
        assert b["utility"].explode().is_finite().all()


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_history_is_ordered_aligned_and_before_the_split(ds, split):
    h, b = read(ds, split, "history"), read(ds, split, "behaviors")
    lens = h["article_id_fixed"].list.len()
    for col in ("impression_time_fixed", "scroll_percentage_fixed", "read_time_fixed"):
        assert (h[col].list.len() == lens).all(), col
    assert lens.min() >= 1 and lens.max() <= 100
    times = h["impression_time_fixed"]
    assert (times.list.eval(pl.element().diff().drop_nulls() >= pl.duration()).list.all()).all()
    assert times.explode().to_numpy().max() < split_start(split)
    assert h["user_id"].is_unique().all()
    users = set(b["user_id"].to_list())
    history_users = set(h["user_id"].to_list())
    assert history_users <= users
    absent = users - history_users
    assert 1 <= len(absent) <= max(1, round(0.02 * len(users)))  # ~1% deliberately without history


def test_every_id_exists_and_impression_ids_are_unique(ds):
    known = set(pl.read_parquet(ds / "articles.parquet")["article_id"].to_list())
    impression_ids = []
    for split in ("train", "validation", "test"):
        b, h = read(ds, split, "behaviors"), read(ds, split, "history")
        cols = [b["article_ids_inview"].explode(), b["article_id"].drop_nulls(), h["article_id_fixed"].explode()]
        if split != "test":
            cols.append(b["article_ids_clicked"].explode())
        for col in cols:
            assert set(col.to_list()) <= known
        impression_ids.append(b["impression_id"])
    all_ids = pl.concat(impression_ids)
    assert all_ids.is_unique().all()


@pytest.mark.parametrize("split", ["train", "validation"])
def test_articles_are_shown_and_read_only_after_publication(ds, split):
    published = pl.read_parquet(ds / "articles.parquet").select("article_id", "published_time")
    shown = read(ds, split, "behaviors").select("impression_time", pl.col("article_ids_inview").alias("article_id"))
    shown = shown.explode("article_id").join(published, on="article_id")
    assert (shown["published_time"] < shown["impression_time"]).all()
    reads = read(ds, split, "history").select(pl.col("impression_time_fixed").alias("t"),
                                               pl.col("article_id_fixed").alias("article_id"))
    reads = reads.explode("t", "article_id").join(published, on="article_id")
    assert (reads["published_time"] < reads["t"]).all()


def test_beyond_accuracy_rows_share_one_list(ds):
    b = read(ds, "test", "behaviors")
    beyond = b.filter("is_beyond_accuracy")
    normal = b.filter(~pl.col("is_beyond_accuracy"))
    assert 1 <= beyond.height < 0.1 * b.height
    lists = beyond["article_ids_inview"].to_list()
    assert all(x == lists[0] for x in lists)
    assert len(lists[0]) == len(set(lists[0])) == min(250, SIZE["articles"])
    n = normal["article_ids_inview"].list.len()
    assert n.min() >= 5 and n.max() <= 15
    assert normal.height == 2 * SIZE["users"]  # default: the validation rate
    t = b["impression_time"].to_numpy()
    assert (t >= split_start("test")).all() and (t < split_start("test") + WEEK).all()


def test_test_impressions_sets_the_normal_count(tmp_path):
    synthesize(tmp_path / "ds", users=50, articles=60, with_testset=True, test_impressions=33)
    b = pl.read_parquet(tmp_path / "ds" / "test" / "behaviors.parquet")
    assert b.filter(~pl.col("is_beyond_accuracy")).height == 33
    assert b.filter("is_beyond_accuracy")["article_ids_inview"].list.len().to_list() == [60]


# --- signal -------------------------------------------------------------------------------------------------

def test_titles_vary_and_carry_category_and_sentiment():
    rng = np.random.default_rng(0)
    n = 3000
    articles, _, _ = build_articles(rng, np.arange(n, dtype=np.int32), np.zeros(n, np.int64),
                                    np.ones(n, np.int64), np.ones(n, np.int64))
    assert articles["title"].n_unique() > 0.95 * n
    titles = articles["title"].to_list()
    features = CountVectorizer().fit(titles[:2000])
    x_train, x_test = features.transform(titles[:2000]), features.transform(titles[2000:])
    for label in ("category_str", "sentiment_label"):
        y = articles[label].to_numpy()
        # Logistic regression fitted by SGD: the same model as LogisticRegression, in a fraction of the time.
        model = SGDClassifier(loss="log_loss", alpha=1e-4, random_state=0).fit(x_train, y[:2000])
        assert model.score(x_test, y[2000:]) > 0.9, label
    groups = articles.group_by("category_str").agg(pl.col("entity_groups").list.first().mode().first())
    assert groups["entity_groups"].n_unique() >= 3  # entity types follow the category


@pytest.fixture(scope="module")
def content_only(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth0") / "ebnerd"
    synthesize(out, **SIZE, seed=0, time_effect=0)
    return out


def test_oracle_beats_popularity_beats_random(content_only):
    """The content-only model (time effect 0), where train clicks are a weak but real signal."""
    ds = content_only
    train = read(ds, "train", "behaviors")
    clicks = train["article_ids_clicked"].explode().value_counts()
    counts = dict(zip(clicks["article_ids_clicked"].to_list(), clicks["count"].to_list()))
    val = read(ds, "validation", "behaviors").join(read(ds, "validation", "oracle"), on="impression_id")
    rng = np.random.default_rng(0)
    aucs = []
    for inview, clicked, utility in val.select("article_ids_inview", "article_ids_clicked", "utility").iter_rows():
        y = np.isin(inview, clicked).astype(int)
        scores = np.column_stack([utility, [counts.get(a, 0) for a in inview], rng.random(len(inview))])
        # One call scores the three rankers on this impression (each column against the same labels).
        aucs.append(roc_auc_score(np.repeat(y[:, None], 3, axis=1), scores, average=None))
    auc_oracle, auc_pop, auc_random = np.mean(aucs, axis=0)
    assert 0.75 < auc_oracle < 0.95
    assert auc_oracle > auc_pop + 0.1
    # Popularity is a weak signal by design; compare with chance (0.5), not with the noisy random column.
    assert auc_pop > 0.515
    assert abs(auc_random - 0.5) < 0.05


# --- time ---------------------------------------------------------------------------------------------------

def series_digest(h, s: pl.Series) -> None:
    """Feed a column's dtype, nulls, list lengths and values into `h`, independently of the parquet writer."""
    h.update(f"{s.name}|{s.dtype}|{len(s)}".encode())
    h.update(s.is_null().to_numpy().astype(np.uint8).tobytes())
    while isinstance(s.dtype, pl.List):
        h.update(s.list.len().fill_null(-1).to_numpy().astype(np.int64).tobytes())
        s = s.explode(empty_as_null=False, keep_nulls=False)
        h.update(s.is_null().to_numpy().astype(np.uint8).tobytes())
    if s.dtype == pl.String:
        h.update("\x00".join(s.fill_null("").to_list()).encode())
    elif s.dtype == pl.Boolean:
        h.update(s.fill_null(False).to_numpy().astype(np.uint8).tobytes())
    elif s.dtype.is_float():
        h.update(s.fill_null(0).cast(pl.Float64).to_numpy().tobytes())
    else:
        h.update(s.to_physical().fill_null(0).cast(pl.Int64).to_numpy().tobytes())


def digests(root: Path) -> dict[str, str]:
    out = {}
    for name, df in frames(root).items():
        h = hashlib.sha256()
        for col in df.get_columns():
            series_digest(h, col)
        out[name] = h.hexdigest()[:16]
    return out


# Written by the generator before it had a time effect (commit d4466af), 200 users, 300 articles, seed 0,
# with the test split: time effect 0 must reproduce them value for value.
CONTENT_ONLY_DIGESTS = {
    "articles.parquet": "12e47458cf9cae00",
    "test/behaviors.parquet": "244164a9fd0831d7",
    "test/history.parquet": "ae9db1b7adf1dbab",
    "test/oracle.parquet": "4011d7ddf770ee38",
    "train/behaviors.parquet": "849c409c8bb10a8f",
    "train/history.parquet": "37f198f35dc8cdec",
    "train/oracle.parquet": "b8bf7d6dba1984e5",
    "validation/behaviors.parquet": "c5b8a2f39935cba3",
    "validation/history.parquet": "0af7b06e665ab6fe",
    "validation/oracle.parquet": "ec6776f80b8fe43a",
}


def test_time_effect_zero_reproduces_the_content_only_generator(tmp_path, ds):
    synthesize(tmp_path / "zero", **SIZE, seed=0, with_testset=True, time_effect=0)
    assert digests(tmp_path / "zero") == CONTENT_ONLY_DIGESTS
    assert digests(ds) != CONTENT_ONLY_DIGESTS  # the default has a time effect


def test_oracle_utilities_include_the_time_effect(ds, content_only):
    """An article's true utility falls as it ages (within the article: users vary, the article does not)."""
    published = pl.read_parquet(ds / "articles.parquet").select("article_id", "published_time")

    def within_article_slope(root: Path) -> float:
        b = read(root, "train", "behaviors").join(read(root, "train", "oracle"), on="impression_id")
        rows = (b.select("impression_time", pl.col("article_ids_inview").alias("article_id"), "utility")
                .explode("article_id", "utility").join(published, on="article_id")
                .with_columns(((pl.col("impression_time") - pl.col("published_time")).dt.total_seconds() / 3600)
                              .log1p().alias("log_age")))
        r = rows.group_by("article_id").agg(pl.corr("log_age", "utility").alias("r"), pl.len()).filter(pl.col("len") >= 20)
        return float(r["r"].drop_nans().mean())

    assert within_article_slope(ds) < -0.15
    assert abs(within_article_slope(content_only)) < 0.05


@pytest.mark.parametrize("bad", [-0.1, 5.5, float("nan"), True])
def test_bad_time_effect_is_a_config_error(tmp_path, bad):
    with pytest.raises(ConfigError, match="time_effect"):
        synthesize(tmp_path / "ds", users=20, articles=60, time_effect=bad)
    assert not (tmp_path / "ds").exists()


def test_cli_time_effect_reaches_the_generator(tmp_path):
    from mtnews.cli import main

    assert main(["data", "synth", "--out", str(tmp_path / "cli"), "--users", "30", "--articles", "60",
                 "--time-effect", "0"]) == 0
    synthesize(tmp_path / "lib", users=30, articles=60, time_effect=0)
    synthesize(tmp_path / "strong", users=30, articles=60, time_effect=5)
    assert digests(tmp_path / "cli") == digests(tmp_path / "lib") != digests(tmp_path / "strong")


def test_synthetic_traffic_has_the_real_fixtures_hourly_shape(tmp_path, ebnerd_fixture):
    """At the fixture's traffic (about 1,000 impressions a week), the hourly shape of impressions and of
    in-view repeats matches the real log; the content-only generator's flat traffic does not."""
    real = profile_file(ebnerd_fixture / "behaviors.parquet")
    shapes = {}
    for x in (synth.DEFAULT_TIME_EFFECT, 0.0):
        synthesize(tmp_path / str(x), users=200, articles=1500, seed=0, time_effect=x)
        shapes[x] = profile_file(tmp_path / str(x) / "train" / "behaviors.parquet")
        assert abs(shapes[x]["impressions"] / real["impressions"] - 1) < 0.1
    timed, flat = shapes[synth.DEFAULT_TIME_EFFECT], shapes[0.0]
    assert abs(timed["trough_to_peak"] - real["trough_to_peak"]) < 0.15 < abs(flat["trough_to_peak"] - real["trough_to_peak"])
    assert abs(timed["repeat_share"] - real["repeat_share"]) < 0.04 < abs(flat["repeat_share"] - real["repeat_share"])
    assert abs(timed["articles_per_hour"] / real["articles_per_hour"] - 1) < 0.15 < \
        abs(flat["articles_per_hour"] / real["articles_per_hour"] - 1)


# --- failure handling ---------------------------------------------------------------------------------------

def test_crash_leaves_previous_output_untouched(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    synthesize(out, users=50, articles=60)
    before = frames(out)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synth, "_history", boom)
    with pytest.raises(RuntimeError):
        synthesize(out, users=50, articles=60, seed=3)
    after = frames(out)
    assert before.keys() == after.keys() and all(before[k].equals(after[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.parametrize("kwargs", [dict(articles=10), dict(users=0), dict(train_impressions_per_user=0),
                                    dict(test_impressions=0, with_testset=True)])
def test_bad_sizes_are_config_errors(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        synthesize(tmp_path / "ds", **{"users": 20, "articles": 60, **kwargs})
    assert not (tmp_path / "ds").exists()


# --- articles for a real log --------------------------------------------------------------------------------

def test_synthesize_articles_covers_the_real_fixture(ebnerd_fixture, tmp_path):
    logs = tmp_path / "logs"
    (logs / "train").mkdir(parents=True)
    for name in ("behaviors", "history"):
        shutil.copy(ebnerd_fixture / f"{name}.parquet", logs / "train" / f"{name}.parquet")
    b = pl.read_parquet(ebnerd_fixture / "behaviors.parquet")
    h = pl.read_parquet(ebnerd_fixture / "history.parquet")
    listed = set(pl.concat([b["article_ids_inview"].explode(), b["article_ids_clicked"].explode(),
                            h["article_id_fixed"].explode()]).to_list())
    referenced = listed | set(b["article_id"].drop_nulls().to_list())
    assert len(listed) == 3376

    n = synthesize_articles(logs, tmp_path / "articles.parquet", seed=0)
    articles = pl.read_parquet(tmp_path / "articles.parquet")
    assert n == articles.height == len(referenced)
    assert set(articles["article_id"].to_list()) == referenced
    assert list(articles.schema.items()) == list(ARTICLES.items())
    assert articles["title"].null_count() == 0 and articles["title"].n_unique() > 0.9 * n
    # Published before first being shown.
    first_shown = b.select("impression_time", pl.col("article_ids_inview").alias("article_id")).explode("article_id")
    joined = first_shown.group_by("article_id").agg(pl.col("impression_time").min()).join(articles, on="article_id")
    assert (joined["published_time"] < joined["impression_time"]).all()

    again = tmp_path / "again.parquet"
    synthesize_articles(logs, again, seed=0)
    assert pl.read_parquet(again).equals(articles)


def test_synthesize_articles_reads_a_synthetic_layout(ds, tmp_path):
    n = synthesize_articles(ds, tmp_path / "articles.parquet")
    referenced = set()
    for split in ("train", "validation", "test"):
        referenced |= set(read(ds, split, "behaviors")["article_ids_inview"].explode().to_list())
    assert referenced <= set(pl.read_parquet(tmp_path / "articles.parquet")["article_id"].to_list())
    assert n >= len(referenced)


def test_synthesize_articles_errors_name_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        synthesize_articles(empty, tmp_path / "a.parquet")
    with pytest.raises(DataError, match="not a directory"):
        synthesize_articles(tmp_path / "missing", tmp_path / "a.parquet")
    broken = tmp_path / "broken"
    (broken / "validation").mkdir(parents=True)
    (broken / "validation" / "history.parquet").write_bytes(b"PAR1 not really parquet")
    with pytest.raises(DataError, match=r"validation/history\.parquet"):
        synthesize_articles(broken, tmp_path / "a.parquet")
    assert not (tmp_path / "a.parquet").exists()
