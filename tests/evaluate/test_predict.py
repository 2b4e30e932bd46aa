"""Streaming, bounded-memory and resumable prediction: `mtnews predict` and `mtnews evaluate --run`.

A tiny BERT run (3 steps) scores a small synthetic test split of ~600 impressions (including the shared
beyond-accuracy rows) in chunks of 4, so one prediction is ~150 chunks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from mtnews.cli import main
from mtnews.errors import ConfigError, MtnewsError
from mtnews.model.run import load_run

CHUNK = 4
HISTORY = 10


@pytest.fixture(scope="module")
def pred_data(tmp_path_factory) -> Path:
    from mtnews.data.synth import synthesize

    out = tmp_path_factory.mktemp("predict") / "data"
    synthesize(out, users=150, articles=200, seed=3, with_testset=True, test_impressions=600)
    return out


@pytest.fixture(scope="module")
def pred_run(tmp_path_factory, pred_data, tiny_bert) -> Path:
    from mtnews.config import load_config
    from mtnews.train.loop import train

    out = tmp_path_factory.mktemp("predict") / "run"
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--train.max_steps", "3", "--train.batch_size", "8",
                             "--train.eval_every", "0", "--train.device", "cpu", "--data.history_size", str(HISTORY),
                             "--data.eval_impressions", "50"])
    train(cfg, pred_data, out, progress=False)
    return out


@pytest.fixture(scope="module")
def reference_zip(tmp_path_factory, pred_data, pred_run) -> Path:
    """An uninterrupted `mtnews predict` of the test split."""
    out = tmp_path_factory.mktemp("predict") / "reference.zip"
    argv = ["predict", "--run", str(pred_run), "--data", str(pred_data), "--out", str(out),
            "--chunk", str(CHUNK), "--no-progress"]
    assert main(argv) == 0
    return out


def _test_rows(data: Path) -> int:
    return pl.scan_parquet(data / "test" / "behaviors.parquet").select(pl.len()).collect().item()


def test_prediction_covers_the_test_split(reference_zip, pred_data):
    from mtnews.evaluate import read_predictions

    ids, ranks = read_predictions(reference_zip)
    beh = pl.read_parquet(pred_data / "test" / "behaviors.parquet")
    np.testing.assert_array_equal(ids, beh["impression_id"].to_numpy())
    assert [len(r) for r in ranks] == beh["article_ids_inview"].list.len().to_list()
    assert beh["is_beyond_accuracy"].sum() > 0  # the 200-article shared lists are in there
    assert not Path(str(reference_zip) + ".partial").exists()


def test_sigkill_then_resume_is_byte_identical(reference_zip, pred_data, pred_run, tmp_path, capsys):
    out = tmp_path / "predictions.zip"
    state_path = tmp_path / "predictions.zip.partial" / "state.json"
    argv = ["predict", "--run", str(pred_run), "--data", str(pred_data), "--out", str(out),
            "--chunk", str(CHUNK), "--no-progress"]
    log = tmp_path / "predict.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "mtnews", *argv], stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    killed = False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                done = json.loads(state_path.read_text())["chunks_done"]
            except (OSError, ValueError, KeyError):
                done = 0
            if done >= 1:
                os.kill(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.002)
    finally:
        if not killed and proc.poll() is None:
            proc.kill()
        proc.wait()
    assert killed, f"predict ended before a chunk could be interrupted:\n{log.read_text()}"
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    state = json.loads(state_path.read_text())
    total = _test_rows(pred_data)
    assert 0 < state["rows_done"] < total and state["rows_done"] == state["chunks_done"] * CHUNK

    assert main([*argv, "--resume"]) == 0
    assert f"resuming {out} at row" in capsys.readouterr().err
    assert out.read_bytes() == reference_zip.read_bytes()
    assert not state_path.parent.exists()


def _fail_on_call(monkeypatch, n: int) -> None:
    from mtnews.evaluate.run_scorer import ModelScorer

    original = ModelScorer.score
    calls = {"n": 0}

    def score(self, imps):
        calls["n"] += 1
        if calls["n"] == n:
            raise RuntimeError("simulated crash")
        return original(self, imps)

    monkeypatch.setattr(ModelScorer, "score", score)


def test_text_past_the_last_commit_is_dropped_on_resume(reference_zip, pred_data, pred_run, tmp_path, monkeypatch):
    from mtnews.evaluate.predict import predict

    out = tmp_path / "p.zip"
    _fail_on_call(monkeypatch, 6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict(pred_run, pred_data, out, chunk_rows=CHUNK, device="cpu")
    monkeypatch.undo()
    side = tmp_path / "p.zip.partial"
    state = json.loads((side / "state.json").read_text())
    assert state["chunks_done"] == 5 and state["rows_done"] == 5 * CHUNK
    assert (side / "predictions.txt").stat().st_size == state["bytes"]
    with open(side / "predictions.txt", "ab") as f:  # a chunk cut short by the crash
        f.write(b"123456 [3,1,")
    result = predict(pred_run, pred_data, out, chunk_rows=CHUNK, device="cpu", resume="require")
    assert result["resumed_from_row"] == 5 * CHUNK
    assert result["impressions"] == _test_rows(pred_data)
    assert out.read_bytes() == reference_zip.read_bytes()
    assert not side.exists()


def test_a_sidecar_from_other_settings_is_never_continued(pred_data, pred_run, tmp_path, monkeypatch):
    from mtnews.evaluate import read_predictions
    from mtnews.evaluate.predict import predict

    out = tmp_path / "p.zip"
    _fail_on_call(monkeypatch, 3)
    with pytest.raises(RuntimeError):
        predict(pred_run, pred_data, out, chunk_rows=CHUNK, device="cpu")
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="another run, data, split, --chunk or device"):
        predict(pred_run, pred_data, out, chunk_rows=CHUNK + 1, device="cpu", resume="require")
    messages: list[str] = []
    result = predict(pred_run, pred_data, out, chunk_rows=CHUNK + 1, device="cpu", log=messages.append)
    assert any("starting over" in m for m in messages)
    assert result["resumed_from_row"] == 0
    ids, _ = read_predictions(out)
    assert len(ids) == _test_rows(pred_data)


def test_resume_without_a_sidecar_fails(pred_data, pred_run, tmp_path):
    from mtnews.evaluate.predict import predict

    with pytest.raises(ConfigError, match="no unfinished prediction"):
        predict(pred_run, pred_data, tmp_path / "p.zip", chunk_rows=CHUNK, device="cpu", resume="require")


def test_finished_text_is_zipped_without_scoring_again(reference_zip, pred_data, pred_run, tmp_path, monkeypatch):
    from mtnews.evaluate import submission
    from mtnews.evaluate.run_scorer import ModelScorer
    from mtnews.evaluate.predict import predict

    out = tmp_path / "p.zip"

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(submission, "zip_predictions_text", crash)
    with pytest.raises(OSError, match="disk full"):
        predict(pred_run, pred_data, out, chunk_rows=CHUNK, device="cpu")
    monkeypatch.undo()
    assert not out.exists()

    def no_model(*args, **kwargs):
        raise AssertionError("every chunk was done; nothing should be scored again")

    monkeypatch.setattr(ModelScorer, "for_split", no_model)
    result = predict(pred_run, pred_data, out, chunk_rows=CHUNK, device="cpu")
    assert result["resumed_from_row"] == _test_rows(pred_data)
    assert out.read_bytes() == reference_zip.read_bytes()


def test_a_second_writer_is_refused(pred_data, pred_run, tmp_path):
    from mtnews.evaluate.predict import Sidecar, predict

    out = tmp_path / "p.zip"
    holder = Sidecar(out)
    holder.lock()
    try:
        with pytest.raises(MtnewsError, match="another `mtnews predict` is writing"):
            predict(pred_run, pred_data, out, chunk_rows=CHUNK, device="cpu")
    finally:
        holder.unlock()


def _validation(pred_data: Path):
    from mtnews.data.articles import load_articles
    from mtnews.data.behaviors import read_behaviors
    from mtnews.data.history import load_histories
    from mtnews.data.impressions import build_eval_impressions
    from mtnews.data.layout import split_paths

    paths = split_paths(pred_data, "validation")
    articles = load_articles(paths.articles)
    histories = load_histories(paths.history, articles, HISTORY)
    imps = build_eval_impressions(read_behaviors(paths), articles, histories)
    return paths, articles, histories, imps


def test_evaluate_run_equals_one_shot_metrics_on_the_same_scores(pred_data, pred_run, tmp_path):
    from mtnews.evaluate import ranking_metrics
    from mtnews.evaluate.run_scorer import ModelScorer

    js = tmp_path / "m.json"
    assert main(["evaluate", "--run", str(pred_run), "--data", str(pred_data), "--split", "validation",
                 "--chunk", "7", "--json-out", str(js), "--device", "cpu"]) == 0
    got = json.loads(js.read_text())
    paths, articles, histories, imps = _validation(pred_data)
    scorer = ModelScorer.for_split(load_run(pred_run), paths, articles, histories)
    scores = np.concatenate([scorer.score(c) for c in imps.chunks(7)])
    want = ranking_metrics(imps.labels, scores, offsets=imps.offsets)
    assert got == {**want, "unknown_candidates": 0}
    # Scoring everything as one chunk changes only the float rounding of batched user vectors.
    np.testing.assert_allclose(scorer.score(imps), scores, rtol=1e-5, atol=1e-6)


def test_model_scorer_equals_the_module_forward_per_impression(pred_data, pred_run):
    """The streamed kernel (slot logits looked up per article, users and dots in blocks) against the
    training path written out per impression: `AdditiveAttention.forward` on gathered history vectors."""
    import torch

    from mtnews.evaluate.run_scorer import ModelScorer

    paths, articles, histories, imps = _validation(pred_data)
    assert (imps.user_row == 0).any()  # users without a history get the learned empty-user vector
    run = load_run(pred_run)
    scorer = ModelScorer.for_split(run, paths, articles, histories)
    table = scorer.vectors.vectors
    want = []
    with torch.no_grad():
        for m in range(len(imps)):
            hist = torch.from_numpy(histories.matrix[imps.user_row[m]].astype(np.int64))[None]
            user = run.model.user_encoder(table[hist], hist > 0)[0]
            cands = torch.from_numpy(imps.candidates[imps.offsets[m] : imps.offsets[m + 1]].astype(np.int64))
            want.append((table[cands] @ user).double().numpy())
    want = np.concatenate(want)
    np.testing.assert_allclose(scorer.score(imps), want, rtol=1e-5, atol=1e-6)
    tiny_blocks = scorer.vectors.score(histories, imps, user_block=3, dot_block=17)
    np.testing.assert_allclose(tiny_blocks, want, rtol=1e-5, atol=1e-6)


def test_split_article_indices_streams_to_the_exploded_answer(pred_data):
    from mtnews.data.articles import load_articles
    from mtnews.data.history import load_histories
    from mtnews.data.layout import split_paths
    from mtnews.evaluate.run_scorer import split_article_indices

    paths = split_paths(pred_data, "test")
    articles = load_articles(paths.articles)
    histories = load_histories(paths.history, articles, HISTORY)
    beh = pl.read_parquet(paths.behaviors)
    inview = beh["article_ids_inview"].explode().drop_nulls().unique().to_numpy()
    users = beh["user_id"].unique().cast(pl.Int64).to_numpy()
    naive = np.unique(np.concatenate([articles.index(inview), histories.matrix[histories.rows(users)].ravel()]))
    naive = naive[naive > 0]
    for batch_rows in (37, 1 << 17):
        np.testing.assert_array_equal(split_article_indices(paths, articles, histories, batch_rows), naive)


def test_chunks_are_exact_row_ranges_across_row_groups(pred_data, tmp_path):
    import shutil

    from mtnews.data.layout import split_paths
    from mtnews.evaluate.streaming import iter_behavior_chunks

    root = tmp_path / "d"
    (root / "test").mkdir(parents=True)
    shutil.copyfile(pred_data / "articles.parquet", root / "articles.parquet")
    shutil.copyfile(pred_data / "test" / "history.parquet", root / "test" / "history.parquet")
    beh = pl.read_parquet(pred_data / "test" / "behaviors.parquet")
    beh.write_parquet(root / "test" / "behaviors.parquet", row_group_size=50)
    paths = split_paths(root, "test")
    ids = beh["impression_id"].to_numpy()
    chunks = list(iter_behavior_chunks(paths, 7))
    assert [c.num_rows for c in chunks[:-1]] == [7] * (len(chunks) - 1) and 0 < chunks[-1].num_rows <= 7
    np.testing.assert_array_equal(np.concatenate([c.column("impression_id").to_numpy() for c in chunks]), ids)
    for k in (0, 7, 15, len(chunks) - 1):  # start 49, 105 and the last chunk straddle row-group edges
        resumed = list(iter_behavior_chunks(paths, 7, start_row=7 * k))
        assert len(resumed) == len(chunks) - k
        for a, b in zip(resumed, chunks[k:]):
            assert a.equals(b)
    assert list(iter_behavior_chunks(paths, 7, start_row=len(ids))) == []


def test_piece_bounds_cap_candidates():
    from mtnews.evaluate.streaming import piece_bounds

    lengths = np.array([10] * 30 + [250] * 12 + [9] * 5)
    b = piece_bounds(lengths, 600)
    assert b[0] == 0 and b[-1] == len(lengths) and np.all(np.diff(b) > 0)
    sums = np.add.reduceat(lengths, b[:-1])
    assert sums.max() <= 600 + lengths.max()
    np.testing.assert_array_equal(piece_bounds(lengths, 10**9), [0, len(lengths)])


def test_pieces_do_not_change_streamed_metrics(pred_data):
    from mtnews.data.articles import load_articles
    from mtnews.data.history import load_histories
    from mtnews.data.layout import split_paths
    from mtnews.evaluate.streaming import run_scorer
    from mtnews.evaluate.scorers import OracleScorer

    paths = split_paths(pred_data, "validation")
    articles = load_articles(paths.articles)
    histories = load_histories(paths.history, articles, HISTORY)
    whole = run_scorer(OracleScorer(paths), paths, articles, histories, chunk_rows=10**6)
    pieces = run_scorer(OracleScorer(paths), paths, articles, histories, chunk_rows=50, max_candidates=40)
    assert pieces == whole
