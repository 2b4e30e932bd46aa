"""MIND as a second native layout: every command takes a MIND folder as `--data` and agrees with the same
synthetic data written in the EBNeRD layout (baselines exactly, a trained run up to float noise).

The pair comes from one generator call each (`synthesize` and `synthesize_mind`, same seed), so both hold
the same impressions, clicks, users, histories and titles; MIND lacks only what it cannot hold (history
times, sentiment labels, the oracle utilities). Conversions go to the session's $MTNEWS_CACHE (conftest).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import mtnews
from mtnews.cli import main
from mtnews.config import load_config
from mtnews.data.check import check_dataset
from mtnews.data.dataset import load_split
from mtnews.data.layout import available_splits, resolve_dataset, split_paths
from mtnews.data.mind import CONVERSION_FILE, convert_mind
from mtnews.data.mind_synth import synthesize_mind
from mtnews.data.synth import synthesize
from mtnews.errors import ConfigError, DataError
from mtnews.io import cache_dir

REPO = Path(__file__).resolve().parents[1]
SIZE = dict(users=150, articles=200, seed=3)
# Sentiment off on both sides (MIND has none); NER on, so the entity vocabularies must agree too.
TRAIN = ["--train.max_steps", "4", "--train.eval_every", "2", "--train.batch_size", "8", "--train.device", "cpu",
         "--tasks.sentiment", "0", "--tasks.ner", "0.3", "--data.history_size", "10", "--model.max_title_length", "16",
         "--data.eval_impressions", "100"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("native")
    synthesize(base / "ebnerd", **SIZE, with_testset=True)
    synthesize_mind(base / "mind", **SIZE, with_testset=True)
    return base / "ebnerd", base / "mind"


def _one_error_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


# --- recognition and the conversion cache -----------------------------------------------------------------

def test_a_mind_folder_resolves_to_one_cached_conversion(pair, tmp_path, capsys):
    ebnerd, mind = pair
    assert resolve_dataset(ebnerd).kind == "ebnerd" and resolve_dataset(ebnerd).root == ebnerd
    ds = resolve_dataset(mind)
    assert ds.kind == "mind" and ds.source == mind and ds.root.parent == cache_dir() / "mind"
    marker = ds.root / CONVERSION_FILE
    stamp = marker.stat().st_mtime_ns
    again = resolve_dataset(mind)
    assert again.root == ds.root and marker.stat().st_mtime_ns == stamp  # reused, not converted again
    paths = split_paths(mind, "validation")
    assert paths.kind == "mind" and paths.source == mind and paths.behaviors.is_relative_to(ds.root)
    assert available_splits(mind) == ["train", "validation", "test"]
    # The cache holds exactly what the explicit `data convert` writes.
    convert_mind(mind, tmp_path / "explicit")
    for f in ("articles.parquet", "train/behaviors.parquet", "validation/history.parquet", "test/behaviors.parquet"):
        assert pl.read_parquet(ds.root / f).equals(pl.read_parquet(tmp_path / "explicit" / f)), f

    # One split folder on its own: the folder name says the split.
    dev = resolve_dataset(mind / "dev")
    assert dev.kind == "mind" and available_splits(mind / "dev") == ["validation"]
    with pytest.raises(DataError, match=r"/dev: no MIND folder for the train split \(expected e\.g\. "
                                        r"MINDsmall_train/ or train/; this dataset has: validation\)"):
        split_paths(mind / "dev", "train")

    # A changed file is a new conversion; the folder as downloaded (MINDsmall_*) is recognised too.
    copy = tmp_path / "MINDsmall"
    for src, dst in (("train", "MINDsmall_train"), ("dev", "MINDsmall_dev")):
        shutil.copytree(mind / src, copy / dst)
    first = resolve_dataset(copy).root
    st = (copy / "MINDsmall_dev" / "behaviors.tsv").stat()
    os.utime(copy / "MINDsmall_dev" / "behaviors.tsv", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = resolve_dataset(copy).root
    assert second != first and (first / CONVERSION_FILE).is_file() and (second / CONVERSION_FILE).is_file()
    assert available_splits(copy) == ["train", "validation"]


def test_data_check_reads_mind_like_its_twin(pair, capsys):
    ebnerd, mind = pair
    a, b = check_dataset(ebnerd), check_dataset(mind)
    assert (a["format"], b["format"]) == ("ebnerd", "mind") and b["root"] == str(mind)
    assert b["converted"] == str(resolve_dataset(mind).root)
    assert a["labelled_tasks"] == ["category", "ner", "sentiment"]
    assert b["labelled_tasks"] == ["category", "ner", "subcategory"] and b["subcategories"] > 0
    assert a["categories"] == b["categories"]
    for split in ("train", "validation", "test"):
        sa, sb = a["splits"][split], b["splits"][split]
        for key in ("impressions", "users", "users_without_history", "inview_length", "history_length",
                    "empty_inview", "unknown_article_ids"):
            assert sa[key] == sb[key], (split, key)
    assert main(["data", "check", "--data", str(mind)]) == 0
    out = capsys.readouterr().out
    assert "MIND layout" in out and "dataset OK" in out


@pytest.mark.parametrize("scorer", ["random", "popularity"])
def test_baselines_give_identical_metrics_on_the_native_mind_folder(pair, tmp_path, scorer):
    results = []
    for data in pair:
        out = tmp_path / f"{data.name}.json"
        assert main(["evaluate", "--data", str(data), "--split", "validation", "--scorer", scorer, "--seed", "5",
                     "--json-out", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0] == results[1]
    assert 0.3 < results[0]["auc"] < 0.8 and results[0]["impressions"] == 300


def test_oracle_on_mind_is_one_clear_error(pair, capsys):
    assert main(["evaluate", "--data", str(pair[1]), "--scorer", "oracle"]) == 2
    _one_error_line(capsys, "oracle.parquet")


# --- a trained run ----------------------------------------------------------------------------------------

def test_training_inputs_are_identical(pair):
    (ebnerd, mind), h = pair, 10
    for split in ("train", "validation"):
        a, b = load_split(ebnerd, split, h), load_split(mind, split, h)
        np.testing.assert_array_equal(a.articles.article_ids, b.articles.article_ids)
        assert a.articles.titles == b.articles.titles and a.articles.vocab.categories == b.articles.vocab.categories
        np.testing.assert_array_equal(a.histories.matrix, b.histories.matrix)
        if split == "train":
            sa, sb = a.train_samples(4, seed=42), b.train_samples(4, seed=42)
            for f in ("user_row", "candidates", "impression_id"):
                np.testing.assert_array_equal(getattr(sa, f), getattr(sb, f))
        ea, eb = a.eval_impressions(), b.eval_impressions()
        for f in ("impression_id", "user_row", "offsets", "candidates", "labels"):
            np.testing.assert_array_equal(getattr(ea, f), getattr(eb, f))


@pytest.fixture(scope="module")
def runs(pair, tiny_bert, tmp_path_factory) -> tuple[Path, Path]:
    """The same config trained on each layout: the EBNeRD one through `train`, the MIND one through the API."""
    from mtnews.train.loop import train

    base = tmp_path_factory.mktemp("native-runs")
    overrides = ["--model.pretrained", str(tiny_bert), *TRAIN]
    train(load_config(None, overrides), pair[0], base / "ebnerd", progress=False)
    mtnews.fit(None, data=pair[1], out=base / "mind", overrides=overrides)
    return base / "ebnerd", base / "mind"


def test_a_trained_run_gives_the_same_metrics_on_both_layouts(pair, runs):
    (ebnerd, mind), (run_e, run_m) = pair, runs
    a = mtnews.score_split(ebnerd, "validation", run=run_e)
    b = mtnews.score_split(mind, "validation", run=run_m)
    assert a.keys() == b.keys() and a["impressions"] == b["impressions"] == 300
    for k in ("auc", "mrr", "ndcg@5", "ndcg@10"):
        assert abs(a[k] - b[k]) <= 1e-6, (k, a[k], b[k])
    ea, eb = (pl.read_csv(r / "eval.csv") for r in runs)
    np.testing.assert_allclose(ea["auc"].to_numpy(), eb["auc"].to_numpy(), atol=1e-6)
    # Both runs recorded the same heads (MIND's subcategories only as a vocabulary: the task is off).
    sa, sb = (json.loads((r / "run.json").read_text()) for r in runs)
    assert sa["heads"] == sb["heads"] and sa["heads"]["sentiment"] == 0 and sa["heads"]["ner"] > 0
    assert sa["vocab"]["subcategories"] == [] and len(sb["vocab"]["subcategories"]) > 0


def test_predict_on_mind_writes_the_mind_leaderboard_zip_and_resumes(pair, runs, tmp_path, monkeypatch, capsys):
    from mtnews.evaluate.mind_submission import read_mind_predictions
    from mtnews.evaluate.run_scorer import ModelScorer
    from mtnews.evaluate.submission import read_predictions

    (ebnerd, mind), run = pair, runs[1]
    ref = tmp_path / "ebnerd.zip"
    assert main(["predict", "--run", str(run), "--data", str(ebnerd), "--out", str(ref), "--no-progress"]) == 0
    assert main(["predict", "--run", str(run), "--data", str(mind), "--out", str(tmp_path / "as-ebnerd.zip"),
                 "--format", "ebnerd", "--no-progress"]) == 0
    assert (tmp_path / "as-ebnerd.zip").read_bytes() == ref.read_bytes()
    assert "(ebnerd format)" in capsys.readouterr().out

    # The MIND default, interrupted after its first chunk and resumed: prediction.txt, the same lines.
    out = tmp_path / "prediction.zip"
    original, calls = ModelScorer.score, {"n": 0}

    def crash_second(self, imps):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash")
        return original(self, imps)

    monkeypatch.setattr(ModelScorer, "score", crash_second)
    with pytest.raises(RuntimeError):
        mtnews.predict(run, mind, out, chunk_rows=100)
    monkeypatch.undo()
    assert not out.exists() and (tmp_path / "prediction.zip.partial" / "state.json").is_file()
    result = mtnews.predict(run, mind, out, chunk_rows=100)
    assert result["resumed_from_row"] == 100 and result["format"] == "mind"
    assert zipfile.ZipFile(out).namelist() == ["prediction.txt"]
    assert zipfile.ZipFile(out).read("prediction.txt") == zipfile.ZipFile(ref).read("predictions.txt")
    ids, ranks = read_mind_predictions(out)
    ids_ref, ranks_ref = read_predictions(ref)
    np.testing.assert_array_equal(ids, ids_ref)
    tsv = (mind / "test" / "behaviors.tsv").read_text().splitlines()
    assert ids.tolist() == [int(line.split("\t")[0]) for line in tsv]  # behaviors.tsv order, as MIND's scorer wants
    # evaluate --predictions-out follows the dataset's format too.
    assert main(["evaluate", "--run", str(run), "--data", str(mind), "--split", "test",
                 "--predictions-out", str(tmp_path / "eval.zip")]) == 0
    assert zipfile.ZipFile(tmp_path / "eval.zip").namelist() == ["prediction.txt"]
    with pytest.raises(ConfigError, match="unknown submission format 'csv'"):
        mtnews.predict(run, mind, tmp_path / "x.zip", format="csv")


def test_the_recommender_serves_a_mind_folder(pair, runs):
    from mtnews.recommender import Recommender

    a = Recommender.from_run(runs[1], pair[0], "validation", device="cpu")
    b = Recommender.from_run(runs[1], pair[1], "validation", device="cpu")
    assert a.num_users == b.num_users > 0
    user = b.users(0, 1)[0]
    candidates = [int(x) for x in pl.read_parquet(pair[0] / "validation" / "behaviors.parquet")["article_ids_inview"][0]]
    ra, rb = a.recommend(user, candidates), b.recommend(user, candidates)
    assert [i.article_id for i in ra.items] == [i.article_id for i in rb.items]
    np.testing.assert_allclose([i.score for i in ra.items], [i.score for i in rb.items], rtol=1e-6)


# --- tasks: sentiment off, subcategory on, n/a rows ---------------------------------------------------------

def test_experiment_on_mind_pins_sentiment_off_and_marks_no_sent_not_applicable(pair, tiny_bert, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["experiment", "--data", str(pair[1]), "--out", str(out), "--seeds", "1",
                 "--variants", "random,no-sent,+subcat", "--model.pretrained", str(tiny_bert),
                 "--train.max_steps", "2", "--train.eval_every", "0", "--train.batch_size", "8",
                 "--train.device", "cpu", "--data.history_size", "6", "--model.max_title_length", "12",
                 "--data.eval_impressions", "50"]) == 0
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps lines at the console width
    assert "no sentiment labels" in printed and "no-sent (the articles have no sentiment labels)" in printed
    rows = pl.read_csv(out / "results.csv")
    assert sorted(rows["variant"].to_list()) == ["+subcat", "random"]
    report = (out / "report.md").read_text()
    assert "| no-sent | – | – | n/a | n/a | n/a | n/a | – | – | not applicable, not run: the articles have no " \
           "sentiment labels" in report
    run = out / "runs" / "+subcat" / "seed-42"
    cfg = load_config(run / "config.yaml")
    assert cfg.tasks.sentiment == 0.0 and cfg.tasks.subcategory == 0.3
    spec = json.loads((run / "run.json").read_text())
    assert spec["heads"]["sentiment"] == 0 and spec["heads"]["subcategory"] == len(spec["vocab"]["subcategories"]) > 0
    losses = pl.read_csv(run / "metrics.csv")["loss_subcategory"]
    assert losses.len() == 2 and (losses > 0).all()
    assert "`tasks.sentiment=0.0`" in report  # the mtrec pins the report states are the ones the runs used


def test_not_applicable_rows_follow_the_labels():
    from mtnews.experiment.variants import ALL_LABELS, not_applicable, variant_config

    every = ["mtrec", "no-cat", "no-sent", "+ner", "+subcat"]
    assert not_applicable(every) == {}
    mind = frozenset({"category", "ner", "subcategory"})
    ebnerd = frozenset({"category", "ner", "sentiment"})
    assert not_applicable(every, mind) == {"no-sent": "the articles have no sentiment labels"}
    assert not_applicable(every, ebnerd) == {"+subcat": "the articles have no subcategory labels"}
    base = load_config(None, [])
    assert variant_config(base, "mtrec", 0, mind).tasks.sentiment == 0.0
    assert variant_config(base, "mtrec", 0, ALL_LABELS).tasks.sentiment == 0.3
    assert variant_config(base, "+subcat", 0, mind).tasks.subcategory == 0.3


def test_demo_runs_on_the_mind_layout(tiny_bert, tmp_path, capsys):
    from mtnews.experiment.demo import run_demo

    out = tmp_path / "demo"
    args = dict(config=REPO / "configs" / "demo.yaml", users=150, articles=200,
                overrides=["--model.pretrained", str(tiny_bert), "--train.max_steps", "2", "--train.eval_every", "0",
                           "--data.eval_impressions", "50", "--train.batch_size", "8"])
    result = run_demo(out, format="mind", **args)
    err = capsys.readouterr().err
    assert err.count("tasks.sentiment 0.5 -> 0") == 1 and "have no sentiment labels" in err
    assert sorted((out / "data").iterdir()) == [out / "data" / s for s in ("dev", "train")]
    assert set(result["validation"]) == {"random", "popularity", "recency", "trending", "ctr", "mtrec (this run)"}
    assert result["gap_closed"] is None  # no oracle in the MIND layout
    saved = load_config(out / "run" / "config.yaml")
    assert saved.tasks.sentiment == 0.0
    # demo.yaml's label interest keeps the category head and drops the sentiment one with its task
    assert saved.model.interest == ["category"] and "model.interest scores category only" in err
    with pytest.raises(ConfigError, match="holds the demo data in the mind layout, not ebnerd"):
        run_demo(out, format="ebnerd", **args)
    if shutil.which("make"):
        import subprocess

        dry = subprocess.run(["make", "-n", "demo", "DATA_FORMAT=mind"], cwd=REPO, capture_output=True, text=True)
        assert "mtnews demo --out runs/demo-mind --format mind" in dry.stdout


# --- bad input: one clear error, nothing half-converted -----------------------------------------------------

def _mind_files(folder: Path, src: Path, files=("news.tsv", "behaviors.tsv")) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copyfile(src / f, folder / f)


def _conversions() -> set[str]:
    base = cache_dir() / "mind"
    return {p.name for p in base.iterdir()} if base.is_dir() else set()


@pytest.mark.parametrize("case", ["no-behaviors", "no-news-in-split-folder", "unnamed-split-folder",
                                  "two-train-folders", "bad-line", "missing-split"])
def test_broken_mind_folders_are_one_clear_error(pair, tmp_path, capsys, case):
    mind = pair[1]
    root = tmp_path / "MINDsmall"
    data, command, needles = root, ["data", "check"], []
    if case == "no-behaviors":
        _mind_files(root / "MINDsmall_train", mind / "train", ("news.tsv",))
        _mind_files(root / "MINDsmall_dev", mind / "dev")
        needles = ["MINDsmall_train/behaviors.tsv: file not found", "news.tsv and behaviors.tsv"]
    elif case == "no-news-in-split-folder":
        _mind_files(root / "MINDsmall_dev", mind / "dev", ("behaviors.tsv",))
        data, command = root / "MINDsmall_dev", ["evaluate", "--scorer", "random"]
        needles = ["MINDsmall_dev/news.tsv: file not found"]
    elif case == "unnamed-split-folder":
        _mind_files(root / "mydata", mind / "dev")
        data, needles = root / "mydata", ["mydata: holds MIND files", "name says no split"]
    elif case == "two-train-folders":
        _mind_files(root / "MINDsmall_train", mind / "train")
        _mind_files(root / "train", mind / "train")
        needles = ["several folders for the train split (MINDsmall_train, train)"]
    elif case == "bad-line":
        _mind_files(root / "MINDsmall_dev", mind / "dev")
        lines = (root / "MINDsmall_dev" / "behaviors.tsv").read_text().splitlines()
        lines[6] = lines[6].replace("-1", "-7", 1)
        (root / "MINDsmall_dev" / "behaviors.tsv").write_text("\n".join(lines) + "\n")
        command = ["evaluate", "--scorer", "popularity", "--split", "validation"]
        needles = ["MINDsmall_dev/behaviors.tsv:7: column 'impressions'"]
    else:
        _mind_files(root / "MINDsmall_train", mind / "train")
        _mind_files(root / "MINDsmall_dev", mind / "dev")
        command = ["evaluate", "--scorer", "random", "--split", "test", "--predictions-out", str(tmp_path / "p.zip")]
        needles = [f"{root}: no MIND folder for the test split", "this dataset has: train, validation"]
    before = _conversions()
    assert main([*command, "--data", str(data)]) == 2
    _one_error_line(capsys, *needles)
    assert {n for n in _conversions() - before if not n.endswith(".lock")} == set()  # nothing (half-)written
    assert not (tmp_path / "p.zip").exists()


def test_an_unwritable_cache_is_one_clear_error(pair, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MTNEWS_CACHE", str(blocker / "cache"))
    assert main(["data", "check", "--data", str(pair[1])]) == 2
    _one_error_line(capsys, "cannot write the MIND conversion cache", "set MTNEWS_CACHE",
                    f"mtnews data convert --from mind {pair[1]}")
