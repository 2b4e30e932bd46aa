"""`mtnews evaluate --scorer cf-*` and `mtnews retrieve --scorer cf-*` on the small synthetic data, and their
bad input: one line naming what is wrong, exit 2, no output left."""

from __future__ import annotations

import json
import math

import pytest

from mtnews.cf.blend import WEIGHT_GRID
from mtnews.cli import main
from mtnews.evaluate.split_scoring import score_split
from mtnews.retrieval.task import retrieve_split

METRICS = ("auc", "mrr", "ndcg@5", "ndcg@10")


@pytest.mark.parametrize("scorer", ["cf-user", "cf-als", "mtrec+cf"])
def test_evaluate_cf(small_synth, trained_run, scorer):
    run = None if scorer == "cf-als" else trained_run
    r = score_split(small_synth, "validation", scorer=scorer, run=run, device="cpu")
    assert all(math.isfinite(r[m]) for m in METRICS) and r["impressions"] > 0
    assert sum(s["impressions"] for s in r["segments"].values()) + sum(s["skipped"] for s in r["segments"].values()) \
        == r["impressions"] + r["skipped"]
    if scorer == "mtrec+cf":
        assert r["cf"]["blend"]["weight"] in WEIGHT_GRID and r["cf"]["blend"]["holdout_impressions"] > 0
    if scorer == "cf-als":
        assert 0 < r["cf"]["known_candidate_share"] <= 1


@pytest.mark.parametrize("scorer", ["cf-user", "cf-als", "mtrec+cf"])
def test_retrieve_cf(small_synth, trained_run, scorer):
    r = retrieve_split(small_synth, "validation", scorer=scorer, run=None if scorer == "cf-als" else trained_run,
                       k=20, device="cpu")
    assert r["evaluated"] > 0 and 0 <= r["recall@20"] <= 1 and "cf" in r
    if scorer == "mtrec+cf":
        assert r["cf"]["blend"]["weight"] in WEIGHT_GRID


def check(capsys, argv, out, needles):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert rc == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)
    assert not out.exists()


@pytest.mark.parametrize("scorer", ["cf-user", "mtrec+cf"])
def test_needs_a_run(small_synth, tmp_path, capsys, scorer):
    out = tmp_path / "m.json"
    check(capsys, ["evaluate", "--data", small_synth, "--scorer", scorer, "--json-out", out], out,
          [f"--scorer {scorer} needs --run"])
    if scorer == "cf-user":
        check(capsys, ["retrieve", "--data", small_synth, "--scorer", scorer, "--json-out", out], out,
              ["--scorer cf-user needs --run"])


def test_missing_run_and_bad_k(small_synth, tmp_path, capsys, trained_run):
    out = tmp_path / "m.json"
    check(capsys, ["evaluate", "--data", small_synth, "--scorer", "cf-user", "--run", tmp_path / "no-run",
                   "--json-out", out], out, [str(tmp_path / "no-run")])
    for k in ("0", "-1"):
        check(capsys, ["evaluate", "--data", small_synth, "--scorer", "cf-user", "--run", trained_run, "--cf.k", k,
                       "--json-out", out], out, ["--cf.k", "positive"])
        check(capsys, ["retrieve", "--data", small_synth, "--scorer", "cf-als", "--cf.k", k, "--json-out", out], out,
              ["--cf.k", "positive"])
    check(capsys, ["evaluate", "--data", small_synth, "--scorer", "cf-als", "--run", trained_run, "--json-out", out],
          out, ["--scorer cf-als takes no --run"])


def test_experiment_plans_cf_rows_per_seed(small_synth, tmp_path):
    from mtnews.config import load_config
    from mtnews.errors import ConfigError
    from mtnews.experiment.runner import plan_runs
    from mtnews.experiment.variants import parse_variants

    variants = parse_variants("cf-als,mtrec+cf,mtrec,cf-user", small_synth)
    assert variants == ["mtrec", "cf-user", "cf-als", "mtrec+cf"]  # table order: each seed's mtrec first
    base = load_config(None, [])
    runs = plan_runs(tmp_path, base, variants, seeds=2)
    cf = [r for r in runs if r.variant != "mtrec"]
    assert [(r.variant, r.seed) for r in cf] == [(v, base.train.seed + i) for i in range(2)
                                                 for v in ("cf-user", "cf-als", "mtrec+cf")]
    assert all(not r.trained for r in cf)
    user = [r for r in cf if r.variant == "cf-user"]
    assert [r.source for r in user] == [tmp_path / "runs" / "mtrec" / f"seed-{base.train.seed + i}" for i in range(2)]
    assert all(r.source is None for r in cf if r.variant == "cf-als")
    with pytest.raises(ConfigError, match="add mtrec"):
        parse_variants("cf-user,random", small_synth)


def test_experiment_reports_cf_rows(small_synth, tiny_bert, tmp_path):
    import csv

    out = tmp_path / "exp"
    argv = ["experiment", "--data", small_synth, "--out", out, "--seeds", "1", "--variants", "mtrec,cf-user,cf-als,mtrec+cf",
            "--model.pretrained", tiny_bert, "--train.max_steps", "2", "--train.eval_every", "0", "--train.device", "cpu",
            "--train.batch_size", "8", "--data.eval_impressions", "50", "--data.history_size", "4",
            "--model.max_title_length", "16"]
    assert main([str(a) for a in argv]) == 0
    rows = list(csv.DictReader((out / "results.csv").open()))
    got = sorted((r["variant"], r["seed"]) for r in rows)
    assert got == sorted((v, "42") for v in ("mtrec", "cf-user", "cf-als", "mtrec+cf"))
    assert all(0 < float(r["auc"]) < 1 for r in rows)
    table = (out / "report.md").read_text()
    for v in ("cf-user", "cf-als", "mtrec+cf"):
        assert f"| {v} | 1 |" in table
    user = json.loads((out / "runs" / "cf-user" / "seed-42" / "result.json").read_text())
    assert user["metrics"]["cf"]["params"]["seed"] == 42 and "segments" in user["metrics"]
