"""MIND -> EBNeRD conversion against a plain-Python reference, its error messages, and MIND-layout synth.

The news rows are the real MIND sample (`../shared/data/mind-news-sample/news.tsv` from the repository root,
or $MTNEWS_MIND_SAMPLE; the `mind_sample` fixture in tests/conftest.py finds it, and the tests that need it
skip, saying where it looked, without it); the behaviors around them are synthetic, written line by line here
so that the expected parquet contents come from an independent parser of the same lines (`json.loads`,
str.split, Python datetime formatting).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mtnews.cli import main
from mtnews.data import schema
from mtnews.data.articles import load_articles
from mtnews.data.check import check_dataset
from mtnews.data.mind import CONVERSION_FILE, EXTRA_ARTICLE_COLUMNS, convert_mind, is_mind_root, mind_split_dirs
from mtnews.data.synth import synthesize
from mtnews.errors import ConfigError, DataError

START = datetime(2019, 11, 9, 0, 0, 0)
# MIND folder, mtnews split, sample news rows it lists (overlapping, so the union must deduplicate), impressions
SPLITS = [("MINDsmall_train", "train", slice(0, 1200), 80), ("MINDsmall_dev", "validation", slice(900, 1700), 40),
          ("MINDlarge_test", "test", slice(1500, 2000), 30)]
UNKNOWN = "N99999999"


def mind_time(t: datetime) -> str:
    hour = t.hour % 12 or 12
    return f"{t.month}/{t.day}/{t.year} {hour}:{t.minute:02d}:{t.second:02d} {'AM' if t.hour < 12 else 'PM'}"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def news_lines(mind_sample) -> list[str]:
    return mind_sample.read_text(encoding="utf-8").splitlines()


def synthetic_split(rng: np.random.Generator, news_ids: list[str], n: int, first_id: int, labelled: bool,
                    unknown: bool) -> tuple[list[str], list[dict]]:
    """behaviors.tsv lines over `news_ids` and the rows they mean, built independently of the converter."""
    users = [f"U{u}" for u in rng.choice(np.arange(1, 400), 12, replace=False)]
    history = {u: list(rng.choice(news_ids, int(rng.integers(0, 9)), replace=False)) for u in users}
    if unknown:
        history[users[0]] = history[users[0]] + [UNKNOWN]
    lines, rows = [], []
    for k in range(n):
        user = users[int(rng.integers(len(users)))]
        inview = list(rng.choice(news_ids, int(rng.integers(2, 8)), replace=False))
        if unknown and k == 3:
            inview.append(UNKNOWN)
        clicked = rng.random(len(inview)) < 0.3
        t = START + timedelta(seconds=int(rng.integers(0, 6 * 86_400)))
        tokens = [f"{a}-{int(c)}" if labelled else a for a, c in zip(inview, clicked)]
        lines.append("\t".join([str(first_id + k), user, mind_time(t), " ".join(history[user]), " ".join(tokens)]))
        rows.append({"impression_id": first_id + k, "user_id": int(user[1:]), "time": t,
                     "inview": [int(a[1:]) for a in inview],
                     "clicked": [int(a[1:]) for a, c in zip(inview, clicked) if c] if labelled else None,
                     "history": [int(a[1:]) for a in history[user]]})
    return lines, rows


@pytest.fixture(scope="module")
def mind(tmp_path_factory, news_lines) -> dict:
    """A MIND root with three split folders, its conversion, and the expected rows."""
    root = tmp_path_factory.mktemp("mind") / "MIND"
    rng = np.random.default_rng(7)
    expected: dict = {"splits": {}, "news": []}
    first_id = 1
    for folder, split, rows_slice, n in SPLITS:
        lines = news_lines[rows_slice]
        write_lines(root / folder / "news.tsv", lines)
        ids = [line.split("\t")[0] for line in lines]
        beh_lines, rows = synthetic_split(rng, ids, n, first_id, split != "test", unknown=split == "validation")
        write_lines(root / folder / "behaviors.tsv", beh_lines)
        expected["splits"][split] = rows
        expected["news"] += lines
        first_id += n
    out = tmp_path_factory.mktemp("converted") / "ebnerd"
    report = convert_mind(root, out)
    return {"root": root, "out": out, "report": report, **expected}


# --- the converted dataset matches a plain-Python reading of the same lines ---------------------------------

@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_behaviors_match_reference(mind, split):
    rows = mind["splits"][split]
    df = pl.read_parquet(mind["out"] / split / "behaviors.parquet")
    assert dict(df.schema) == (schema.BEHAVIORS if split != "test" else schema.TEST_BEHAVIORS)
    assert df["impression_id"].to_list() == [r["impression_id"] for r in rows]  # file order kept
    assert df["user_id"].to_list() == [r["user_id"] for r in rows]
    assert df["impression_time"].to_list() == [r["time"] for r in rows]
    assert df["article_ids_inview"].to_list() == [r["inview"] for r in rows]
    if split != "test":
        assert df["article_ids_clicked"].to_list() == [r["clicked"] for r in rows]
        assert df["read_time"].null_count() == df.height  # MIND has no read times
    else:
        assert df["is_beyond_accuracy"].null_count() == df.height


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_history_is_one_row_per_user_with_clicks(mind, split):
    expected = {r["user_id"]: r["history"] for r in mind["splits"][split] if r["history"]}
    df = pl.read_parquet(mind["out"] / split / "history.parquet")
    assert dict(df.schema) == schema.HISTORY
    assert df["user_id"].to_list() == sorted(expected)
    assert dict(zip(df["user_id"].to_list(), df["article_id_fixed"].to_list())) == expected
    # No timestamps in MIND: one null per click, so every *_fixed list stays aligned.
    for col in ("impression_time_fixed", "scroll_percentage_fixed", "read_time_fixed"):
        assert df[col].list.len().to_list() == df["article_id_fixed"].list.len().to_list()
        assert df[col].explode().null_count() == len(df[col].explode())


def test_articles_are_the_deduplicated_union_with_mind_fields(mind):
    first: dict[int, list[str]] = {}
    for line in mind["news"]:
        f = line.split("\t")
        first.setdefault(int(f[0][1:]), f)
    shown: dict[int, datetime] = {}
    for rows in mind["splits"].values():
        for r in rows:
            for a in r["inview"]:
                shown[a] = min(shown.get(a, r["time"]), r["time"])
    df = pl.read_parquet(mind["out"] / "articles.parquet")
    assert dict(df.schema) == {**schema.ARTICLES, **EXTRA_ARTICLE_COLUMNS}
    assert df["article_id"].to_list() == sorted(first)
    got = {r["article_id"]: r for r in df.iter_rows(named=True)}
    for i, f in first.items():
        ents = json.loads(f[6])
        row = got[i]
        assert (row["title"], row["category_str"], row["subcategory_str"], row["url"]) == (f[3], f[1], f[2], f[5])
        assert row["subtitle"] == (f[4] or None)
        assert row["entity_groups"] == [e["Type"] for e in ents]
        assert row["ner_clusters"] == [(e["SurfaceForms"] or [e["Label"]])[0] for e in ents]
        assert row["wikidata_ids"] == [e["WikidataId"] for e in ents]
        assert row["published_time"] == shown.get(i)  # first in-view time; never shown: null
        assert row["sentiment_label"] is None and row["category"] is None
    assert mind["report"]["articles_without_published_time"] == sum(i not in shown for i in first)
    assert mind["report"]["conflicting_news_ids"] == 0


def test_report_counts_unknown_ids_and_marks_the_output(mind):
    report = mind["report"]
    assert report["splits"]["validation"]["unknown_news_ids"] == 1
    assert report["splits"]["train"]["unknown_news_ids"] == 0
    assert report["unknown_news_ids"] == 1
    assert {s: r["folder"] for s, r in report["splits"].items()} == {
        "train": "MINDsmall_train", "validation": "MINDsmall_dev", "test": "MINDlarge_test"}
    assert report["splits"]["train"]["clicks"] == sum(len(r["clicked"]) for r in mind["splits"]["train"])
    saved = json.loads((mind["out"] / CONVERSION_FILE).read_text())
    assert saved == {k: v for k, v in report.items() if k != "seconds"}


def test_converted_dataset_loads_and_checks(mind):
    summary = check_dataset(mind["out"])
    assert summary["splits"]["validation"]["unknown_article_ids"] == 1
    articles = load_articles(mind["out"] / "articles.parquet")
    cats = {line.split("\t")[1] for line in mind["news"]}
    assert articles.category_names == sorted(cats)
    assert articles.entities.shape[1] == 10  # MIND's one-letter entity types, the ten most frequent


# --- layout ------------------------------------------------------------------------------------------------

def test_split_folders_and_root_detection(tmp_path):
    for name in ("MINDsmall_train", "dev", "other"):
        (tmp_path / name).mkdir()
    assert mind_split_dirs(tmp_path) == {"train": tmp_path / "MINDsmall_train", "validation": tmp_path / "dev"}
    assert not is_mind_root(tmp_path)  # no news.tsv / behaviors.tsv yet
    for f in ("news.tsv", "behaviors.tsv"):
        (tmp_path / "dev" / f).write_text("")
    assert is_mind_root(tmp_path)
    assert not is_mind_root(tmp_path / "dev") and not is_mind_root(tmp_path / "missing")
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match=r"several folders for the train split \(MINDsmall_train, train\)"):
        mind_split_dirs(tmp_path)


# --- small hand-made roots for the edge cases and the errors -----------------------------------------------

def tiny_root(tmp_path: Path, news: list[str], behaviors: list[str], folder: str = "train") -> Path:
    root = tmp_path / "mind"
    write_lines(root / folder / "news.tsv", news)
    write_lines(root / folder / "behaviors.tsv", behaviors)
    return root


NEWS = [
    "N1\tnews\tnewsus\tFirst title\t\thttps://x/1\t[]\t[]",
    "N2\tsports\tfootball\tSecond title\tAn abstract\thttps://x/2\t"
    '[{"Label": "A B", "Type": "P", "WikidataId": "Q1", "Confidence": 1.0, "OccurrenceOffsets": [0], '
    '"SurfaceForms": ["A"]}]\t[]',
    "N3\tnews\tnewsworld\tThird title\t\thttps://x/3\t[]\t[]",
]
BEHAVIORS = [
    "1\tU7\t11/15/2019 8:55:22 AM\tN1 N2\tN2-1 N3-0",
    "2\tU7\t11/15/2019 12:05:00 PM\tN1 N2 N3\tN3-1 N1-0",
    "3\tU8\t11/14/2019 11:59:59 PM\t\tN3-0 N2-1",
]


def test_varying_history_keeps_the_longest_and_is_counted(tmp_path):
    root = tiny_root(tmp_path, NEWS, BEHAVIORS)
    report = convert_mind(root, tmp_path / "out")
    hist = pl.read_parquet(tmp_path / "out" / "train" / "history.parquet")
    assert hist["user_id"].to_list() == [7]  # U8's history is empty: no row
    assert hist["article_id_fixed"].to_list() == [[1, 2, 3]]
    assert report["splits"]["train"]["users_with_varying_history"] == 1
    beh = pl.read_parquet(tmp_path / "out" / "train" / "behaviors.parquet")
    assert beh["impression_time"].to_list() == [datetime(2019, 11, 15, 8, 55, 22), datetime(2019, 11, 15, 12, 5),
                                                datetime(2019, 11, 14, 23, 59, 59)]
    arts = pl.read_parquet(tmp_path / "out" / "articles.parquet")
    # First in view, whatever the file order: N1 on line 2 (its history clicks do not count); N2 and N3 on
    # line 3, the earliest time though the last line.
    assert arts["published_time"].to_list() == [datetime(2019, 11, 15, 12, 5), datetime(2019, 11, 14, 23, 59, 59),
                                                datetime(2019, 11, 14, 23, 59, 59)]
    assert arts["subtitle"].to_list() == [None, "An abstract", None]
    assert arts["ner_clusters"].to_list() == [[], ["A"], []]


def test_windows_line_endings_read_the_same(tmp_path):
    lf = tiny_root(tmp_path / "lf", NEWS, BEHAVIORS)
    crlf = tmp_path / "crlf" / "mind"
    for f, lines in (("news.tsv", NEWS), ("behaviors.tsv", BEHAVIORS)):
        (crlf / "train").mkdir(parents=True, exist_ok=True)
        (crlf / "train" / f).write_bytes("".join(line + "\r\n" for line in lines).encode())
    convert_mind(lf, tmp_path / "a")
    convert_mind(crlf, tmp_path / "b")
    for f in ("articles.parquet", "train/behaviors.parquet", "train/history.parquet"):
        assert pl.read_parquet(tmp_path / "b" / f).equals(pl.read_parquet(tmp_path / "a" / f)), f


def test_rows_that_disagree_across_splits_keep_train_and_are_counted(tmp_path):
    root = tiny_root(tmp_path, NEWS, BEHAVIORS)
    changed = [NEWS[0].replace("First title", "Edited title"), NEWS[1]]
    write_lines(root / "dev" / "news.tsv", changed)
    write_lines(root / "dev" / "behaviors.tsv", ["9\tU7\t11/16/2019 1:00:00 AM\tN1\tN1-1 N2-0"])
    report = convert_mind(root, tmp_path / "out")
    assert report["conflicting_news_ids"] == 1
    assert pl.read_parquet(tmp_path / "out" / "articles.parquet")["title"].to_list()[0] == "First title"


def _sub(lines: list[str], i: int, old: str, new: str) -> list[str]:
    out = list(lines)
    assert old in out[i]
    out[i] = out[i].replace(old, new, 1)
    return out


# (id, file, news lines, behaviors lines, folder, line number, expectation the message must contain)
BAD = [
    ("news-columns", "news.tsv", NEWS[:2] + ["N3\tnews\tTitle only"], BEHAVIORS, "train", 3,
     "3 column(s), expected 8 tab-separated columns (news_id, category"),
    ("behaviors-columns", "behaviors.tsv", NEWS, BEHAVIORS[:1] + ["2\tU7\t11/15/2019 8:55:22 AM\tN1-1"], "train", 2,
     "4 column(s), expected 5 tab-separated columns"),
    ("blank-line", "behaviors.tsv", NEWS, BEHAVIORS[:2] + [""] + BEHAVIORS[2:], "train", 3, "expected 5"),
    ("label-2", "behaviors.tsv", NEWS, _sub(BEHAVIORS, 1, "N3-1", "N3-2"), "train", 2,
     "token 'N3-2', expected space-separated N<id>-1 (clicked) or N<id>-0"),
    ("unlabelled-in-train", "behaviors.tsv", NEWS, _sub(BEHAVIORS, 2, "N2-1", "N2"), "train", 3,
     "token 'N2', expected space-separated N<id>-1"),
    ("labelled-in-test", "behaviors.tsv", NEWS, [b.replace("-1", "").replace("-0", "") for b in BEHAVIORS[:2]]
     + [BEHAVIORS[2]], "test", 3, "token 'N3-0', expected space-separated N<id> tokens (the test split has no"),
    ("double-space", "behaviors.tsv", NEWS, _sub(BEHAVIORS, 0, "N2-1 N3-0", "N2-1  N3-0"), "train", 1, "token ''"),
    ("empty-impressions", "behaviors.tsv", NEWS, _sub(BEHAVIORS, 2, "N3-0 N2-1", ""), "train", 3,
     "column 'impressions' is empty"),
    ("history-token", "behaviors.tsv", NEWS, _sub(BEHAVIORS, 1, "N1 N2 N3", "N1 X2 N3"), "train", 2,
     "column 'history' has token 'X2', expected space-separated N<id> tokens or nothing"),
    ("time", "behaviors.tsv", NEWS, _sub(BEHAVIORS, 1, "11/15/2019 12:05:00 PM", "2019-11-15 12:05:00"), "train", 2,
     "column 'time' is '2019-11-15 12:05:00', expected a time like '11/15/2019 8:55:22 AM'"),
    ("hour-13", "behaviors.tsv", NEWS, _sub(BEHAVIORS, 0, "8:55:22 AM", "13:55:22 AM"), "train", 1, "column 'time'"),
    ("user-id", "behaviors.tsv", NEWS, _sub(BEHAVIORS, 2, "U8", "user8"), "train", 3,
     "column 'user_id' is 'user8', expected U<number> without leading zeros"),
    ("impression-id", "behaviors.tsv", NEWS, _sub(BEHAVIORS, 0, "1\tU7", "x1\tU7"), "train", 1,
     "column 'impression_id' is 'x1', expected <number>"),
    ("header", "behaviors.tsv", NEWS, ["impression_id\tuser_id\ttime\thistory\timpressions"] + BEHAVIORS, "train", 1,
     "(MIND files have no header line)"),
    ("leading-zero", "news.tsv", _sub(NEWS, 2, "N3", "N03"), BEHAVIORS, "train", 3,
     "column 'news_id' is 'N03', expected N<number> without leading zeros"),
    ("news-id-range", "news.tsv", _sub(NEWS, 0, "N1", "N2147483648"), BEHAVIORS, "train", 1, "at most N2147483647"),
    ("inview-id-range", "behaviors.tsv", NEWS, _sub(BEHAVIORS, 1, "N1-0", "N99999999999-0"), "train", 2,
     "news id above N2147483647"),
    ("duplicate-news", "news.tsv", NEWS + [NEWS[0]], BEHAVIORS, "train", 4, "expected each news id once"),
    ("json", "news.tsv", _sub(NEWS, 1, '"SurfaceForms": ["A"]}]', '"SurfaceForms": ["A"]]'), BEHAVIORS, "train", 2,
     "column 'title_entities' does not parse as a JSON list of entity objects"),
    ("json-abstract", "news.tsv", _sub(NEWS, 2, "[]\t[]", "[]\t[{]"), BEHAVIORS, "train", 3,
     "column 'abstract_entities' does not parse"),
    ("json-not-a-list", "news.tsv", _sub(NEWS, 0, "[]\t[]", '{"Type": "P"}\t[]'), BEHAVIORS, "train", 1,
     "does not parse as a JSON list of entity objects"),
    ("entity-without-type", "news.tsv", _sub(NEWS, 1, '"Type": "P", ', ""), BEHAVIORS, "train", 2,
     "expected a JSON list of entity objects, each with a string 'Type'"),
]


@pytest.mark.parametrize("name,file,news,behaviors,folder,line,expect", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_file_line_and_expectation(tmp_path, capsys, name, file, news, behaviors, folder, line,
                                                   expect):
    root = tiny_root(tmp_path, news, behaviors, folder)
    path = root / folder / file
    with pytest.raises(DataError) as err:
        convert_mind(root, tmp_path / "out")
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: "), msg
    assert expect in msg
    assert not (tmp_path / "out").exists()
    # The CLI: one stderr line, exit 2, no partial output.
    assert main(["data", "convert", "--from", "mind", str(root), "--out", str(tmp_path / "out")]) == 2
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and expect in err_text and "Traceback" not in err_text
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["mind"]


def test_bad_json_deep_in_the_real_sample_is_located(tmp_path, news_lines):
    lines = list(news_lines)
    lines[1233] = lines[1233].rsplit("\t", 1)[0] + '\t[{"Label": "x", "Type": "G",'
    root = tiny_root(tmp_path, lines, ["1\tU1\t11/15/2019 8:55:22 AM\t\t" + lines[0].split("\t")[0] + "-1"])
    with pytest.raises(DataError, match=r"news\.tsv:1234: column 'abstract_entities' does not parse"):
        convert_mind(root, tmp_path / "out")


def test_empty_and_invalid_utf8_files(tmp_path):
    root = tiny_root(tmp_path, NEWS, BEHAVIORS)
    (root / "train" / "behaviors.tsv").write_text("")
    with pytest.raises(DataError, match=r"behaviors\.tsv: file is empty, expected lines of 5 tab-separated"):
        convert_mind(root, tmp_path / "out")
    write_lines(root / "train" / "behaviors.tsv", BEHAVIORS)
    raw = (root / "train" / "news.tsv").read_bytes().replace(b"Third", b"Th\xffird")
    (root / "train" / "news.tsv").write_bytes(raw)
    with pytest.raises(DataError, match=r"news\.tsv:3: not valid UTF-8"):
        convert_mind(root, tmp_path / "out")


def test_missing_files_and_folders(tmp_path):
    with pytest.raises(DataError, match="MIND folder not found"):
        convert_mind(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MIND split folder, expected MIND<size>_train/"):
        convert_mind(tmp_path / "empty", tmp_path / "out")
    root = tiny_root(tmp_path, NEWS, BEHAVIORS)
    (root / "train" / "news.tsv").unlink()
    with pytest.raises(DataError, match=r"train/news\.tsv: file not found"):
        convert_mind(root, tmp_path / "out")
    with pytest.raises(DataError, match="no MIND folder for split"):
        convert_mind(root, tmp_path / "out", splits=["validation"])


def test_output_folder_is_never_a_foreign_folder(tmp_path):
    root = tiny_root(tmp_path, NEWS, BEHAVIORS)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty and holds no earlier conversion"):
        convert_mind(root, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    for bad in (root, tmp_path, root / "train" / "out"):
        with pytest.raises(ConfigError, match="must not be"):
            convert_mind(root, bad)
    out = tmp_path / "out"
    convert_mind(root, out)
    write_lines(root / "train" / "behaviors.tsv", BEHAVIORS[:1])
    assert convert_mind(root, out)["splits"]["train"]["impressions"] == 1  # an earlier conversion is replaced
    assert pl.read_parquet(out / "train" / "behaviors.parquet").height == 1


def test_convert_only_some_splits(tmp_path):
    root = tiny_root(tmp_path, NEWS, BEHAVIORS)
    write_lines(root / "dev" / "news.tsv", NEWS)
    write_lines(root / "dev" / "behaviors.tsv", BEHAVIORS[:1])
    report = convert_mind(root, tmp_path / "out", splits=["validation"])
    assert list(report["splits"]) == ["validation"]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted([CONVERSION_FILE, "articles.parquet", "validation"])


# --- synth in the MIND layout ------------------------------------------------------------------------------

SIZE = dict(users=150, articles=200, seed=3)


@pytest.fixture(scope="module")
def synth_pair(tmp_path_factory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("synth-mind")
    ebnerd = base / "ebnerd"
    synthesize(ebnerd, **SIZE, with_testset=True)
    assert main(["data", "synth", "--format", "mind", "--out", str(base / "mind"), "--users", "150",
                 "--articles", "200", "--seed", "3", "--with-testset"]) == 0
    assert main(["data", "convert", "--from", "mind", str(base / "mind"), "--out", str(base / "back")]) == 0
    return ebnerd, base / "mind", base / "back"


def test_synth_mind_layout(synth_pair):
    _, mind, _ = synth_pair
    assert sorted(p.name for p in mind.iterdir()) == ["dev", "test", "train"]
    first = (mind / "train" / "behaviors.tsv").read_text().splitlines()[0].split("\t")
    assert len(first) == 5 and first[1].startswith("U") and first[2].endswith(("AM", "PM"))
    assert all(t.endswith(("-0", "-1")) for t in first[4].split(" "))
    test_tokens = (mind / "test" / "behaviors.tsv").read_text().splitlines()[0].split("\t")[4].split(" ")
    assert all("-" not in t for t in test_tokens)


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_synth_mind_converts_back_to_the_same_log(synth_pair, split):
    ebnerd, _, back = synth_pair
    a = pl.read_parquet(ebnerd / split / "behaviors.parquet")
    b = pl.read_parquet(back / split / "behaviors.parquet")
    for col in ("impression_id", "user_id", "impression_time", "article_ids_inview"):
        assert b[col].equals(a[col]), col
    if split != "test":
        assert b["article_ids_clicked"].list.sort().equals(a["article_ids_clicked"].list.sort())
    ha = pl.read_parquet(ebnerd / split / "history.parquet").sort("user_id")
    hb = pl.read_parquet(back / split / "history.parquet")
    assert hb["user_id"].equals(ha["user_id"]) and hb["article_id_fixed"].equals(ha["article_id_fixed"])
    arts_a = pl.read_parquet(ebnerd / "articles.parquet")
    arts_b = pl.read_parquet(back / "articles.parquet")
    j = arts_b.join(arts_a, on="article_id", suffix="_ebnerd")
    assert j.height == arts_b.height
    for col in ("title", "subtitle", "url", "category_str", "entity_groups", "ner_clusters"):
        assert j[col].equals(j[f"{col}_ebnerd"].alias(col)), col
    assert j["subcategory_str"].equals(j["topics_ebnerd"].list.last().alias("subcategory_str"))


@pytest.mark.parametrize("scorer", ["random", "popularity"])
def test_synth_mind_gives_the_same_metrics(synth_pair, tmp_path, scorer):
    ebnerd, _, back = synth_pair
    results = []
    for data in (ebnerd, back):
        out = tmp_path / f"{data.name}.json"
        assert main(["evaluate", "--data", str(data), "--split", "validation", "--scorer", scorer,
                     "--seed", "5", "--json-out", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0] == results[1]
    assert 0.3 < results[0]["auc"] < 0.8 and results[0]["impressions"] > 0
