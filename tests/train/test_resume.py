"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed with --resume ends bitwise identical
to an uninterrupted run, and its logs hold every step exactly once.

Both runs are real `python -m mtnews train` processes with dropout active (the tiny BERT has dropout 0.1),
so the RNG state, optimizer, scheduler and data order all have to be restored for the weights to match.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

STEPS = 20


def _cmd(data: Path, out: Path, tiny_bert: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mtnews", "train", "--data", str(data), "--out", str(out), "--no-progress",
            "--model.pretrained", str(tiny_bert), "--model.lora.enabled", "false", "--train.device", "cpu",
            "--train.max_steps", str(STEPS), "--train.checkpoint_every", "5", "--train.eval_every", "10",
            "--train.log_every", "1", "--train.lr", "1e-3", "--train.batch_size", "8",
            "--data.history_size", "8", "--model.max_title_length", "16", "--data.eval_impressions", "50",
            *extra]


def _env() -> dict:
    # One thread in every run: the same reduction order, so the same floating-point results.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _checkpoint_steps(out: Path) -> list[int]:
    d = out / "checkpoints"
    if not d.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in d.iterdir() if p.name.startswith("step-"))


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_killed_and_resumed_run_matches_an_uninterrupted_one(small_synth, tiny_bert, tmp_path):
    ref_out, run_out = tmp_path / "reference", tmp_path / "killed"
    logs = {n: open(tmp_path / f"{n}.log", "w") for n in ("reference", "killed", "resumed")}
    # The reference and the victim start together (two cores); the victim dies at its first checkpoint.
    ref = subprocess.Popen(_cmd(small_synth, ref_out, tiny_bert), env=_env(), stdout=logs["reference"],
                           stderr=subprocess.STDOUT)
    victim = subprocess.Popen(_cmd(small_synth, run_out, tiny_bert), env=_env(), stdout=logs["killed"],
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not _checkpoint_steps(run_out):
            assert victim.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.01)
        victim.kill()  # SIGKILL: no cleanup, no atexit, no flush beyond what was already written
        victim.wait(30)
        assert victim.returncode == -9
        killed_at = _checkpoint_steps(run_out)
        assert 5 <= max(killed_at) < STEPS, killed_at
        assert not (run_out / "final").exists()
        assert ref.wait(300) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    finally:
        for p in (ref, victim):
            if p.poll() is None:
                p.kill()
                p.wait()

    resumed = subprocess.run(_cmd(small_synth, run_out, tiny_bert, "--resume"), env=_env(), stdout=logs["resumed"],
                             stderr=subprocess.STDOUT, timeout=300)
    for f in logs.values():
        f.close()
    assert resumed.returncode == 0, (tmp_path / "resumed.log").read_text()[-3000:]

    want = load_file(str(ref_out / "final" / "model.safetensors"))
    got = load_file(str(run_out / "final" / "model.safetensors"))
    assert want.keys() == got.keys() and len(want) > 10
    different = [k for k in want if not (want[k].dtype == got[k].dtype and want[k].shape == got[k].shape
                                         and bool((want[k] == got[k]).all()))]
    assert not different, f"tensors differ after resume: {different[:5]}"

    # Each step logged exactly once, and the per-step losses are the uninterrupted run's, to the last digit.
    rows, ref_rows = _rows(run_out / "metrics.csv"), _rows(ref_out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    loss_cols = ["loss", "loss_main", "loss_category", "loss_sentiment", "cosine", "projected", "lr", "grad_norm"]
    assert [[r[c] for c in loss_cols] for r in rows] == [[r[c] for c in loss_cols] for r in ref_rows]
    evals, ref_evals = _rows(run_out / "eval.csv"), _rows(ref_out / "eval.csv")
    assert [int(r["step"]) for r in evals] == [10, 20]
    assert [r["auc"] for r in evals] == [r["auc"] for r in ref_evals]
