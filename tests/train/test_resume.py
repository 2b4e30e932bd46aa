"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed with --resume ends bitwise identical
to an uninterrupted run, and its logs hold every step exactly once.

Both runs are real `python -m mtnews train` processes with dropout active (the tiny BERT has dropout 0.1),
so the RNG state, optimizer, scheduler and data order all have to be restored for the weights to match.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mtnews.errors import CheckpointError
from mtnews.train.checkpoint import (checkpoint_dirs, load_checkpoint, prune_checkpoints, rng_state,
                                     save_checkpoint, set_rng_state)
from mtnews.train.logs import CsvLog

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


@pytest.mark.slow  # three training subprocesses, one killed: ~25 s
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
    # the holdout (selection) at every evaluation, validation (reported) at the end
    assert [(int(r["step"]), r["split"]) for r in evals] == [(10, "holdout"), (20, "holdout"), (20, "validation")]
    assert [r["auc"] for r in evals] == [r["auc"] for r in ref_evals]


# --- the pieces exact resume relies on, each on its own -----------------------------------------------


@pytest.fixture
def parts(tiny_dataset, tiny_bert):
    """(model, optimizer, scheduler, generator) shaped like the Trainer's, after one real optimizer step."""
    from transformers import get_linear_schedule_with_warmup

    from mtnews.config import load_config
    from mtnews.data.articles import load_articles
    from mtnews.model.build import build_model

    def make():
        cfg = load_config(None, ["--model.pretrained", str(tiny_bert)])
        torch.manual_seed(0)
        model, _ = build_model(cfg, load_articles(tiny_dataset(f"d{len(made)}") / "articles.parquet").vocab)
        heads = [p for ps in model.head_parameters().values() for p in ps]
        opt = torch.optim.AdamW([{"params": model.shared_parameters(), "lr": 1e-3}, {"params": heads, "lr": 1e-2}])
        sched = get_linear_schedule_with_warmup(opt, 2, 10)
        made.append(1)
        return model, opt, sched, torch.Generator().manual_seed(3)

    made: list = []
    return make


def _step(model, opt, sched):
    loss = sum((p.float() ** 2).sum() for p in model.parameters() if p.requires_grad)
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_checkpoint_round_trip_restores_everything(parts, tmp_path):
    model, opt, sched, gen = parts()
    _step(model, opt, sched)
    torch.randperm(5, generator=gen)
    torch.manual_seed(123)
    save_checkpoint(tmp_path / "step-1", model, opt, sched, [rng_state(gen)], {"step": 1, "best_auc": 0.6})
    want_rand, want_perm = torch.rand(3), torch.randperm(7, generator=gen)
    want_opt = opt.state_dict()

    model2, opt2, sched2, gen2 = parts()  # a fresh process: other weights, empty optimizer, step 0
    state, rng = load_checkpoint(tmp_path / "step-1", model2, opt2, sched2, rank=0)
    set_rng_state(rng, gen2)
    assert state == {"step": 1, "best_auc": 0.6}
    assert torch.equal(torch.rand(3), want_rand)  # dropout's RNG continues where it stopped
    assert torch.equal(torch.randperm(7, generator=gen2), want_perm)  # and PCGrad's task order
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    got_opt = opt2.state_dict()
    assert got_opt["param_groups"] == want_opt["param_groups"]
    for k, s in want_opt["state"].items():
        for name, v in s.items():
            assert torch.equal(got_opt["state"][k][name], v), (k, name)
    assert sched2.state_dict() == sched.state_dict()


CORRUPTIONS = {
    "weights truncated": ("model.safetensors", "half"),
    "weights empty": ("model.safetensors", b""),
    "optimizer truncated": ("optimizer.pt", "half"),
    "optimizer empty": ("optimizer.pt", b""),
    "optimizer garbage": ("optimizer.pt", b"not a torch file" * 8),
    "scheduler empty": ("scheduler.pt", b""),
    "rng garbage": ("rng.safetensors", b"\x01" * 64),
    "rng missing": ("rng.safetensors", None),
    "rng keys missing": ("rng.safetensors", "no-keys"),
    "state not json": ("state.json", b"{"),
    "state without step": ("state.json", b"{}"),
    "state a list": ("state.json", b"[1]"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupt_checkpoints_raise_checkpoint_error(parts, tmp_path, name):
    model, opt, sched, gen = parts()
    _step(model, opt, sched)
    ckpt = tmp_path / "step-1"
    save_checkpoint(ckpt, model, opt, sched, [rng_state(gen)], {"step": 1, "best_auc": 0.5})
    f, damage = CORRUPTIONS[name]
    path = ckpt / f
    if damage is None:
        path.unlink()
    elif damage == "half":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "no-keys":
        from safetensors.torch import save_file

        save_file({"rank0.other": torch.zeros(2)}, str(path))
    else:
        path.write_bytes(damage)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(ckpt, model, opt, sched, rank=0)
    assert str(ckpt) in str(e.value) and "\n" not in str(e.value)


def test_checkpoint_dirs_sort_numerically_and_ignore_partial_writes(tmp_path):
    for name in ("step-5", "step-40", "step-100", ".step-200.abc.tmp", "step-x", "notes"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-5", "step-40", "step-100"]
    prune_checkpoints(tmp_path, keep=2)
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-40", "step-100"]


def _log_steps(path) -> list[int]:
    return [int(r["step"]) for r in _rows(path)]


def test_csv_log_truncate_after(tmp_path):
    log = CsvLog(tmp_path / "m.csv", ["step", "loss"])
    for s in range(1, 13):
        log.append({"step": s, "loss": s / 10})
    log.truncate_after(5)
    assert _log_steps(tmp_path / "m.csv") == [1, 2, 3, 4, 5]
    log.append({"step": 6, "loss": 0.6})
    assert _log_steps(tmp_path / "m.csv") == [1, 2, 3, 4, 5, 6]
    assert _rows(tmp_path / "m.csv")[2] == {"step": "3", "loss": "0.3"}


def test_csv_log_drops_a_row_cut_short_by_a_crash(tmp_path):
    """A kill mid-write can leave '1' of a row '12,...' with no newline: it must not survive as step 1."""
    p = tmp_path / "m.csv"
    log = CsvLog(p, ["step", "loss"])
    for s in range(1, 12):
        log.append({"step": s, "loss": 0.5})
    with open(p, "a") as f:
        f.write("1")
    log.truncate_after(10)
    assert _log_steps(p) == list(range(1, 11))
    log.append({"step": 11, "loss": 0.5})
    assert _log_steps(p) == list(range(1, 12))


def test_state_json_is_plain_json(parts, tmp_path):
    model, opt, sched, gen = parts()
    save_checkpoint(tmp_path / "c", model, opt, sched, [rng_state(gen)], {"step": 3, "best_auc": float("-inf")})
    assert json.loads((tmp_path / "c" / "state.json").read_text())["step"] == 3
    state, _ = load_checkpoint(tmp_path / "c", model, opt, sched, rank=0)
    assert state["best_auc"] == float("-inf")  # no validation yet survives the round trip
