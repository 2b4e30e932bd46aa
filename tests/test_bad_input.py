"""Files that exist but hold the wrong thing, through the real CLI of every command that reads them.

Each case breaks one file of the tiny dataset (tests/conftest.py; its splits get a hand-made oracle.parquet
here) and asserts what the user sees: exit code 2, one stderr line naming the file, the column or field and
what was expected, no traceback, and no output file left behind.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from mtnews.cli import main
from mtnews.config import Config

# Hand-made oracles: the clicked article has the highest utility in every validation impression, so the
# oracle's AUC there is exactly 1. Lengths follow the in-view lists with nulls dropped (train imp 6 has two).
ORACLES = {
    "train": {1: [0.1, 0.9, 0.2, 0.3, 0.4], 2: [0.1, 0.8, 0.7], 3: [0.5, 0.6], 4: [0.9, 0.8], 5: [0.9, 0.1, 0.2],
              6: [0.9, 0.1]},
    "validation": {11: [0.1, 0.2, 0.9], 12: [0.3, 0.8]},
    "test": {21: [0.3, 0.2, 0.1], 22: [0.1, 0.2, 0.3], 23: [0.5]},
}
A, TB, VB, VH, XB = ("articles.parquet", "train/behaviors.parquet", "validation/behaviors.parquet",
                     "validation/history.parquet", "test/behaviors.parquet")
TH, VO = "train/history.parquet", "validation/oracle.parquet"


def write_oracle(path: Path, rows: dict[int, list[float]]) -> None:
    pl.DataFrame({"impression_id": list(rows), "utility": list(rows.values())},
                 schema={"impression_id": pl.UInt32, "utility": pl.List(pl.Float64)}).write_parquet(path)


@pytest.fixture
def root(tiny_dataset) -> Path:
    root = tiny_dataset(with_test=True)
    for split, rows in ORACLES.items():
        write_oracle(root / split / "oracle.parquet", rows)
    return root


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error_line(rc: int, err: str, path: Path, needles: list[str]) -> str:
    assert rc == 2, err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"mtnews: error: {path}: "), line
    for n in needles:
        assert n in line, (n, line)
    return line


def files_under(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file()) if out.exists() else []


# --- how to break a file ---------------------------------------------------------------------------------

def rewrite(rel: str, fn):
    def mutate(root: Path) -> None:
        p = root / rel
        fn(pl.read_parquet(p)).write_parquet(p)
    return mutate


def put(rel: str, column: str, value: pl.Expr):
    return rewrite(rel, lambda d: d.with_columns(value.alias(column)))


def cast(rel: str, column: str, dtype: pl.DataType):
    return put(rel, column, pl.col(column).cast(dtype))


def drop(rel: str, column: str):
    return rewrite(rel, lambda d: d.drop(column))


def write_bytes(rel: str, data: bytes):
    return lambda root: (root / rel).write_bytes(data)


def truncate(rel: str):
    return lambda root: (root / rel).write_bytes((root / rel).read_bytes()[:-40])


def corrupt_pages(rel: str):
    """The footer (so the schema) stays intact; the column chunks before it are overwritten."""
    def mutate(root: Path) -> None:
        raw = bytearray((root / rel).read_bytes())
        # A parquet file ends with its footer, the footer's 4-byte length and b"PAR1".
        footer = len(raw) - 8 - int.from_bytes(raw[-8:-4], "little")
        raw[4:footer] = b"\x55" * (footer - 4)
        (root / rel).write_bytes(bytes(raw))
    return mutate


def make_folder(rel: str):
    def mutate(root: Path) -> None:
        (root / rel).unlink()
        (root / rel).mkdir()
    return mutate


def copy(src: str, dst: str):
    return lambda root: shutil.copyfile(root / src, root / dst)


def first_row(value: pl.Expr, column: str) -> pl.Expr:
    return pl.when(pl.int_range(pl.len()) == 0).then(value).otherwise(pl.col(column))


# --- the commands ------------------------------------------------------------------------------------------

def evaluate(scorer: str, split: str = "validation"):
    def argv(root: Path, out: Path) -> list:
        args = ["evaluate", "--data", root, "--split", split, "--scorer", scorer, "--predictions-out", out / "p.zip"]
        return args + (["--json-out", out / "m.json"] if split != "test" else [])
    return argv


def check(root: Path, out: Path) -> list:
    return ["data", "check", "--data", root]


def synth_articles(root: Path, out: Path) -> list:
    return ["data", "synth-articles", "--log", root, "--out", out / "articles.parquet"]


def train(root: Path, out: Path) -> list:
    # Every data file is read before the model is built, so the default (embedded) model is never loaded.
    return ["train", "--data", root, "--out", out / "run", "--no-progress", "--train.device", "cpu"]


def experiment(root: Path, out: Path) -> list:
    return ["experiment", "--data", root, "--out", out / "exp", "--variants", "random,oracle", "--seeds", 1]


ORACLE, RANDOM, TEST = evaluate("oracle"), evaluate("random"), evaluate("random", "test")

UTILITY_NULL_FIRST = pl.col("utility").list.eval(pl.when(pl.int_range(pl.len()) == 0).then(None)
                                                   .otherwise(pl.element()))
NULL_TIMES = pl.col("article_id_fixed").list.eval(pl.lit(None, dtype=pl.Datetime("us")))

# (id, mutation, command, file named, substrings of the message)
CASES = [
    # oracle.parquet: the case, then every other way it can be wrong
    ("oracle-without-utility", drop(VO, "utility"), ORACLE, VO, ["missing column(s) 'utility' (list of numbers)"]),
    ("oracle-utility-as-string", put(VO, "utility", pl.col("utility").cast(pl.List(pl.String)).list.join(",")),
     ORACLE, VO, ["column 'utility' has dtype String, expected list of numbers"]),
    ("oracle-utility-as-string-list", cast(VO, "utility", pl.List(pl.String)), ORACLE, VO,
     ["column 'utility' has dtype List(String), expected list of numbers"]),
    ("oracle-impression-id-as-string", cast(VO, "impression_id", pl.String), ORACLE, VO,
     ["column 'impression_id' has dtype String, expected integer"]),
    ("oracle-of-another-split", copy("train/oracle.parquet", VO), ORACLE, VO,
     ["impression ids do not match", VB, "expected the oracle of the 'validation' split"]),
    ("oracle-missing-a-row", rewrite(VO, lambda d: d.filter(pl.col("impression_id") != 12)), ORACLE, VO,
     ["1 of the 2 impressions", "no oracle row (first: impression_id 12)"]),
    ("oracle-repeated-row", rewrite(VO, lambda d: pl.concat([d, d.head(1)])), ORACLE, VO,
     ["column 'impression_id' repeats 1 id(s) (first: 11), expected one row per impression"]),
    ("oracle-misaligned", put(VO, "utility", pl.col("utility").list.head(2)), ORACLE, VO,
     ["column 'utility' is not aligned with article_ids_inview", "impression_id 11 has 2 utilities, expected 3"]),
    ("oracle-null-utility", put(VO, "utility", UTILITY_NULL_FIRST), ORACLE, VO,
     ["column 'utility' has 2 null value(s), expected a number per in-view article"]),
    ("oracle-nan-utility", put(VO, "utility", first_row(pl.lit([float("nan"), 1.0, 2.0]), "utility")), ORACLE, VO,
     ["column 'utility' has 1 nan or infinite value(s), expected finite numbers"]),
    ("oracle-no-rows", rewrite(VO, lambda d: d.head(0)), ORACLE, VO, ["impression ids do not match"]),
    ("oracle-empty-file", write_bytes(VO, b""), ORACLE, VO, ["file is empty (0 bytes), expected a parquet file"]),
    ("oracle-truncated", truncate(VO), ORACLE, VO, ["not a readable parquet file"]),
    ("oracle-not-parquet", write_bytes(VO, b"impression_id,utility\n11,0.5\n"), ORACLE, VO,
     ["not a readable parquet file"]),
    ("oracle-is-a-folder", make_folder(VO), ORACLE, VO, ["is a folder, expected a parquet file"]),
    ("check-reads-the-oracle-too", drop(VO, "utility"), check, VO, ["'utility'"]),
    # behaviors.parquet
    ("behaviors-negative-impression-id", put(VB, "impression_id", pl.col("impression_id").cast(pl.Int64) - 100),
     RANDOM, VB, ["column 'impression_id' has negative values (min -89), expected non-negative integers"]),
    ("behaviors-no-rows", rewrite(VB, lambda d: d.head(0)), RANDOM, VB, ["no rows, expected at least one impression"]),
    ("behaviors-impression-id-as-float", cast(VB, "impression_id", pl.Float64), RANDOM, VB,
     ["column 'impression_id' has dtype Float64, expected integer"]),
    ("behaviors-without-clicks", drop(VB, "article_ids_clicked"), RANDOM, VB,
     ["missing column(s) 'article_ids_clicked' (list of integers)"]),
    ("behaviors-beyond-accuracy-as-string", cast(XB, "is_beyond_accuracy", pl.String), TEST, XB,
     ["column 'is_beyond_accuracy' has dtype String, expected boolean"]),
    ("behaviors-beyond-accuracy-as-int", cast(XB, "is_beyond_accuracy", pl.Int8), TEST, XB,
     ["column 'is_beyond_accuracy' has dtype Int8, expected boolean"]),
    ("behaviors-truncated", truncate(VB), RANDOM, VB, ["not a readable parquet file"]),
    ("behaviors-is-a-folder", make_folder(VB), RANDOM, VB, ["is a folder, expected a parquet file"]),
    ("behaviors-corrupt-page-oracle", corrupt_pages(VB), ORACLE, VB, ["not a readable parquet file"]),
    ("behaviors-corrupt-page-check", corrupt_pages(VB), check, VB, ["not a readable parquet file"]),
    ("train-behaviors-empty-file", write_bytes(TB, b""), evaluate("popularity"), TB, ["file is empty (0 bytes)"]),
    # history.parquet and articles.parquet, through evaluate and train
    ("history-ids-as-floats", cast(VH, "article_id_fixed", pl.List(pl.Float64)), RANDOM, VH,
     ["column 'article_id_fixed' has dtype List(Float64), expected list of integers"]),
    ("history-not-parquet", write_bytes(VH, b"PAR1 but not really"), RANDOM, VH, ["not a readable parquet file"]),
    ("articles-title-as-int", put(A, "title", pl.col("title").str.len_bytes()), RANDOM, A,
     ["column 'title' has dtype UInt32, expected string"]),
    ("train-articles-published-as-string", cast(A, "published_time", pl.String), train, A,
     ["column 'published_time' has dtype String, expected datetime"]),
    ("train-history-is-behaviors", copy(TB, TH), train, TH,
     ["missing column(s) 'article_id_fixed' (list of integers)"]),
    ("train-validation-no-rows", rewrite(VB, lambda d: d.head(0)), train, VB, ["no rows"]),
    ("experiment-history-users-as-strings", cast(VH, "user_id", pl.String), experiment, VH,
     ["column 'user_id' has dtype String, expected integer"]),
    ("experiment-oracle-of-another-split", copy("train/oracle.parquet", VO), experiment, VO,
     ["impression ids do not match"]),
    # the logs `data synth-articles` reads
    ("synth-articles-impression-time-as-string", put(TB, "impression_time", pl.lit("2023-05-01")), synth_articles, TB,
     ["column 'impression_time' has dtype String, expected datetime"]),
    ("synth-articles-clicked-as-strings", cast(TB, "article_ids_clicked", pl.List(pl.String)), synth_articles, TB,
     ["column 'article_ids_clicked' has dtype List(String), expected list of integers"]),
    ("synth-articles-history-times-misaligned", put(TH, "impression_time_fixed", NULL_TIMES.list.head(1)),
     synth_articles, TH, ["columns 'impression_time_fixed' and 'article_id_fixed' differ in length in 3 row(s) "
                          "(first: user_id 10)", "expected one time per article"]),
]


@pytest.mark.parametrize("mutate, command, rel, needles", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_wrong_file_is_one_clear_error(root, tmp_path, capsys, mutate, command, rel, needles):
    out = tmp_path / "out"
    mutate(root)
    rc, stdout, err = cli(capsys, *command(root, out))
    assert_one_error_line(rc, err, root / rel, needles)
    assert files_under(out) == []


def test_the_unbroken_dataset_passes_every_command(root, tmp_path, capsys):
    """The control for the cases above: with nothing broken, each command succeeds."""
    out = tmp_path / "out"
    rc, _, err = cli(capsys, *ORACLE(root, out))
    assert rc == 0, err
    result = json.loads((out / "m.json").read_text())
    assert result["auc"] == 1.0 and result["impressions"] == 2  # the oracle ranks every click first
    for command in (RANDOM, TEST, evaluate("oracle", "test"), evaluate("popularity"), check, synth_articles):
        rc, _, err = cli(capsys, *command(root, out))
        assert rc == 0, (command, err)


def test_empty_in_view_list_is_one_clear_error(root, tmp_path, capsys):
    """Found while streaming (it is per row), so tqdm's bar may precede the error; still no traceback, no output."""
    out = tmp_path / "out"
    put(VB, "article_ids_inview", first_row(pl.lit([], dtype=pl.List(pl.Int32)), "article_ids_inview"))(root)
    rc, _, err = cli(capsys, *RANDOM(root, out))
    assert rc == 2 and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if "mtnews: error:" in line]
    assert len(errors) == 1 and err.endswith(errors[0] + "\n"), err
    assert ("behaviors.parquet: column 'article_ids_inview' is empty or null in 1 row(s) (first: impression_id 11), "
            "expected at least one in-view article per impression") in errors[0]
    assert files_under(out) == []


def test_demo_checks_an_existing_dataset_before_training(root, tmp_path, capsys):
    """`mtnews demo` reuses OUT/data when it is there; a wrong file in it stops the demo before it trains."""
    out = tmp_path / "demo"
    shutil.copytree(root, out / "data")
    drop(VO, "utility")(out / "data")
    before = files_under(out)
    rc, _, err = cli(capsys, "demo", "--out", out)
    assert_one_error_line(rc, err, out / "data" / VO, ["missing column(s) 'utility' (list of numbers)"])
    assert files_under(out) == before


# --- config files ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, needles", [
    (b"1: 2\n", ["unknown config key(s) 1; valid keys under 'top level'"]),
    (b"train:\n  yes: 1\n  lr: 0.1\n", ["unknown config key(s) train.True"]),
    (b"\xff\xfetrain: {}\n", ["not a text file (byte 0 is not UTF-8), expected a YAML config"]),
    (b"train:\n  batch_size: many\n", ["train.batch_size: expected an integer, got 'many'"]),
    (b"model:\n  lora: [1]\n", ["model.lora: expected a mapping"]),
    (b"trian:\n  lr: 1\n", ["unknown config key(s) trian"]),
], ids=["int-key", "bool-key", "not-utf8", "wrong-type", "list-for-section", "unknown-section"])
def test_wrong_config_file_is_one_clear_error(root, tmp_path, capsys, text, needles):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(text)
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "train", "--data", root, "--out", out / "run", "--config", cfg, "--no-progress")
    assert_one_error_line(rc, err, cfg, needles)
    assert files_under(out) == []


def test_config_path_that_is_a_folder(root, tmp_path, capsys):
    (tmp_path / "c.yaml").mkdir()
    rc, _, err = cli(capsys, "train", "--data", root, "--out", tmp_path / "run", "--config", tmp_path / "c.yaml")
    assert_one_error_line(rc, err, tmp_path / "c.yaml", ["is a folder, expected a YAML config file"])


def test_run_config_of_wrong_type_is_named(root, tmp_path, capsys):
    """`evaluate --run` reads the run's config.yaml before anything else."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(Config().to_yaml().replace("history_size: 30", "history_size: thirty"))
    (run / "run.json").write_text("{}")  # read after the config
    rc, _, err = cli(capsys, "evaluate", "--data", root, "--run", run, "--json-out", tmp_path / "m.json")
    assert_one_error_line(rc, err, run / "config.yaml", ["data.history_size: expected an integer, got 'thirty'"])
    assert not (tmp_path / "m.json").exists()


# --- output paths that exist and hold the wrong thing --------------------------------------------------------

def test_synth_refuses_to_replace_a_file_or_a_foreign_folder(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    rc, _, err = cli(capsys, "data", "synth", "--out", f, "--users", 5, "--articles", 50)
    assert_one_error_line(rc, err, f, ["exists and is not a folder"])
    assert f.read_text() == "keep me"
    d = tmp_path / "project"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    rc, _, err = cli(capsys, "data", "synth", "--out", d, "--users", 5, "--articles", 50)
    assert_one_error_line(rc, err, d, ["holds other files and no articles.parquet"])
    assert [p.name for p in d.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "project"]  # no temp folder left


def test_synth_articles_out_that_is_a_folder(root, tmp_path, capsys):
    (tmp_path / "a.parquet").mkdir()
    rc, _, err = cli(capsys, "data", "synth-articles", "--log", root, "--out", tmp_path / "a.parquet")
    assert_one_error_line(rc, err, tmp_path / "a.parquet", ["is a folder, expected the path of the articles.parquet"])
    assert list((tmp_path / "a.parquet").iterdir()) == []


# --- commands that need a trained run ---------------------------------------------------------------------------

def test_commands_with_a_run_name_the_wrong_file(root, tmp_path, capsys, tiny_bert):
    """predict, serve and evaluate --run read the data through the same checks, before loading the model."""
    from mtnews.config import load_config
    from mtnews.train.loop import train as train_run

    run = tmp_path / "run"
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--train.max_steps", "1", "--train.batch_size", "4",
                             "--train.eval_every", "0", "--train.device", "cpu", "--data.history_size", "3",
                             "--train.selection.holdout_hours", "0.01"])  # this log spans 0.1 h
    train_run(cfg, root, run, progress=False)

    def broken(name: str, mutate) -> Path:
        copy_of = tmp_path / name
        shutil.copytree(root, copy_of)
        mutate(copy_of)
        return copy_of

    out = tmp_path / "out"
    data = broken("negative-ids", rewrite(XB, lambda d: d.with_columns(pl.col("impression_id").cast(pl.Int64) - 22)))
    rc, _, err = cli(capsys, "predict", "--run", run, "--data", data, "--out", out / "p.zip", "--no-progress")
    assert_one_error_line(rc, err, data / XB, ["column 'impression_id' has negative values (min -1)"])
    assert files_under(out) == [] and not (out / "p.zip.partial").exists()

    data = broken("no-rows", rewrite(XB, lambda d: d.head(0)))
    rc, _, err = cli(capsys, "predict", "--run", run, "--data", data, "--out", out / "p.zip", "--no-progress")
    assert_one_error_line(rc, err, data / XB, ["no rows, expected at least one impression"])
    assert files_under(out) == [] and not (out / "p.zip.partial").exists()

    data = broken("history-as-strings", rewrite(VH, lambda d: d.with_columns(pl.col("user_id").cast(pl.String))))
    rc, _, err = cli(capsys, "evaluate", "--run", run, "--data", data, "--json-out", out / "m.json",
                     "--predictions-out", out / "p.zip", "--device", "cpu")
    assert_one_error_line(rc, err, data / VH, ["column 'user_id' has dtype String, expected integer"])
    assert files_under(out) == []

    data = broken("articles-ids-as-strings", rewrite(A, lambda d: d.with_columns(pl.col("article_id").cast(pl.String))))
    rc, _, err = cli(capsys, "serve", "--run", run, "--data", data, "--port", 0, "--device", "cpu")
    assert rc == 2, err
    # serve prints what it loads on stdout; stderr holds the error alone.
    assert_one_error_line(rc, err, data / A, ["column 'article_id' has dtype String, expected integer"])

    # The control: the unbroken copy predicts.
    rc, _, err = cli(capsys, "predict", "--run", run, "--data", root, "--out", out / "p.zip", "--no-progress")
    assert rc == 0, err
    assert files_under(out) == [out / "p.zip"]


def test_subprocess_shows_one_line_and_no_traceback(root, tmp_path):
    """The issue's case end to end, as a user runs it."""
    rewrite(VO, lambda d: d.drop("utility"))(root)
    proc = subprocess.run([sys.executable, "-m", "mtnews", "evaluate", "--data", str(root), "--scorer", "oracle",
                           "--json-out", str(tmp_path / "m.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"mtnews: error: {root / VO}: missing column(s) 'utility' (list of numbers)\n"
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize("flag", ["--json-out", "--predictions-out"])
def test_an_output_path_that_is_a_folder_fails_before_scoring(root, tmp_path, capsys, flag):
    folder = tmp_path / "already-a-folder"
    folder.mkdir()
    rc, _, err = cli(capsys, "evaluate", "--data", root, "--scorer", "random", flag, folder)
    assert_one_error_line(rc, err, folder, ["is a folder, expected a file path"])
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("section, needles", [
    ("experiment: {seeds: many}", ["experiment.seeds", "expected an integer", "'many'"]),
    ("experiment: {seeds: true}", ["experiment.seeds", "expected an integer"]),
    ("experiment: {variants: 5}", ["experiment.variants", "expected a comma-separated string or a list"]),
])
def test_experiment_settings_of_the_wrong_type(root, tmp_path, capsys, section, needles):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(section + "\n")
    rc, _, err = cli(capsys, "experiment", "--data", root, "--out", tmp_path / "exp", "--config", cfg)
    assert_one_error_line(rc, err, cfg, needles)
    assert not (tmp_path / "exp").exists()
