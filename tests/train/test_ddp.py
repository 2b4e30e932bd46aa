"""DDP on CPU (gloo): 2 processes under torchrun and under accelerate launch, against 1 process.

The global batch is held equal (2 processes x batch 4 x accum 1 against 1 process x batch 4 x accum 2)
and dropout is off, so the runs differ at most by the order of floating-point reductions. All launches
start together in one module fixture (each rank runs several `mtnews train` jobs through
tests/train/ddp_worker.py, which records per rank the sample indices used and a hash of the weights).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mtnews.cli import main
from mtnews.train.loop import EpochPlan, Trainer

WORKER = Path(__file__).with_name("ddp_worker.py")
STEPS = 4
BATCH = 4
ATOL = 1e-6
LAUNCH_TIMEOUT = 300


def _common(data: Path, bert: Path) -> list[str]:
    # Full fine-tuning (no LoRA) puts the embeddings and every encoder weight under DDP; lr is high enough
    # that 4 steps move the weights well beyond the tolerance.
    return ["--data", str(data), "--model.pretrained", str(bert), "--model.lora.enabled", "false",
            "--data.history_size", "10", "--train.device", "cpu", "--train.batch_size", str(BATCH),
            "--train.max_steps", str(STEPS), "--train.lr", "1e-3", "--train.head_lr", "1e-2", "--train.seed", "7"]


def _jobs(data: Path, bert: Path, runs: Path, accum: int) -> list[dict]:
    c = _common(data, bert) + ["--train.grad_accum", str(accum)]
    return [
        # sum: DDP's own all-reduce; validation on all impressions at the end only.
        {"name": "sum", "argv": [*c, "--out", str(runs / "sum"), "--no-progress", "--train.surgery", "sum",
                                 "--train.eval_every", "0", "--data.eval_impressions", "0"]},
        # project-both in params space: manual all-reduce then projection; validation on a 40-impression
        # subset every 2 steps; checkpoints every 2 steps (kept) for the resume job; progress bar on. With
        # MTRec-T's branch (main-task heads, all-reduced with the other heads; signals in every batch).
        {"name": "pb", "argv": [*c, "--out", str(runs / "pb"), "--train.surgery", "project-both",
                                "--train.surgery_space", "params", "--train.eval_every", "2",
                                "--data.eval_impressions", "40", "--train.checkpoint_every", "2",
                                "--train.keep_checkpoints", "5", "--model.temporal.enabled", "true"]},
    ]


def _staged_job(data: Path, bert: Path, runs: Path, accum: int, cache: bool) -> dict:
    """Two stages (cached [CLS] with a projection, then layer 1 of 2 fine-tuned): the DDP wrapper is rebuilt
    at the boundary. With `cache` the prefix cache is written by rank 0 while rank 1 waits."""
    stages = "[{name: warm, steps: 2, freeze_layers: all}, {name: tune, steps: 2}]"
    return {"name": "staged", "argv": [
        *_common(data, bert), "--train.grad_accum", str(accum), "--out", str(runs / "staged"), "--no-progress",
        "--train.max_steps", "0", "--train.stages", stages, "--model.freeze_layers", "1", "--model.projection", "true",
        "--train.surgery", "project-both", "--train.surgery_space", "representation", "--train.eval_every", "0",
        "--data.eval_impressions", "40", "--train.prefix_cache", str(cache).lower()]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], log: Path, env: dict) -> tuple[subprocess.Popen, Path]:
    f = log.open("w")
    return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env), log


def _finish(proc: subprocess.Popen, log: Path, deadline: float) -> None:
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{' '.join(proc.args[:6])} ... timed out; log tail:\n{log.read_text()[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(proc.args[:6])} ... exited with {proc.returncode}; log tail:\n{log.read_text()[-6000:]}")


# Its multi-process runs take ~30 s on 2 cores, so every test that uses it is marked slow (CI runs them).
@pytest.fixture(scope="module")
def ddp(small_synth, bert_no_dropout, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data, bert = small_synth, bert_no_dropout
    one, two, acc = root / "one", root / "two", root / "accelerate"
    spec_one = {"record": str(one / "record"),
                "jobs": [*_jobs(data, bert, one, accum=2), _staged_job(data, bert, one, accum=2, cache=False)]}
    spec_two = {"record": str(two / "record"), "jobs": [
        *_jobs(data, bert, two, accum=1), _staged_job(data, bert, two, accum=1, cache=True),
        # A run stopped right after its step-2 checkpoint, then resumed with --resume.
        {"name": "pb-resumed", "rewind": {"run": str(two / "pb"), "to_step": 2},
         "argv": ["--data", str(data), "--out", str(two / "pb"), "--resume", "--no-progress"]},
    ]}
    for d, spec in ((one, spec_one), (two, spec_two)):
        d.mkdir()
        (d / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(root / "hf-home")}
    py = sys.executable
    t0 = time.monotonic()
    deadline = t0 + LAUNCH_TIMEOUT
    procs = [
        _start([py, str(WORKER), str(one / "spec.json")], one / "launch.log", env),
        # --standalone: a free local rendezvous port, so parallel test sessions cannot collide.
        _start([py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "--log-dir", str(two / "ranks"), "--redirects", "3", str(WORKER), str(two / "spec.json")],
               two / "launch.log", env),
        # accelerate's CPU launch: --multi_gpu selects its torchrun-based launcher (with --cpu it would
        # start a single process); the Accelerator then finds no CUDA and uses gloo on CPU.
        _start([py, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
                "-m", "mtnews", "train", *_common(data, bert), "--train.grad_accum", "1", "--out", str(acc / "sum"),
                "--no-progress", "--train.surgery", "sum", "--train.eval_every", "0", "--data.eval_impressions", "0"],
               root / "accelerate.log", env),
    ]
    for proc, log in procs:
        _finish(proc, log, deadline)
    rank_dirs = sorted((two / "ranks").glob("*/attempt_0"))
    return SimpleNamespace(root=root, data=data, one=one, two=two, acc=acc, seconds=time.monotonic() - t0,
                           ranks=rank_dirs[-1], accelerate_log=root / "accelerate.log")


def _record(run_root: Path, job: str, rank: int) -> dict:
    return json.loads((run_root / "record" / f"{job}.rank{rank}.json").read_text())


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _file_hash(path: Path) -> str:
    """The worker's weights hash, recomputed from a saved safetensors file."""
    h = hashlib.sha256()
    for name, t in sorted(load_file(str(path)).items()):
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


# --- sharding, without processes --------------------------------------------------------------------------

class _Built:
    def __init__(self, idx):
        self.idx = [int(i) for i in idx]

    def to(self, device):
        return self


def _fake_trainer(world: int, rank: int, accum: int, micro: int, n: int, seed: int):
    plans: dict[int, EpochPlan] = {}

    def plan(epoch: int) -> EpochPlan:
        if epoch not in plans:  # the loop's own rule: the permutation depends on (seed, epoch) only
            plans[epoch] = EpochPlan(epoch, _Built, np.random.default_rng([seed, epoch]).permutation(n))
        return plans[epoch]

    gb = micro * accum * world
    return SimpleNamespace(steps_per_epoch=n // gb, global_batch=gb, micro=micro, world=world,
                           acc=SimpleNamespace(process_index=rank, device="cpu"),
                           cfg=SimpleNamespace(train=SimpleNamespace(grad_accum=accum, seed=seed)), _epoch_plan=plan)


@pytest.mark.parametrize("world,accum", [(2, 1), (2, 3), (4, 2)])
def test_micro_batches_shard_every_global_batch_disjointly(world, accum):
    n, micro, seed = 103, 3, 5
    single = _fake_trainer(1, 0, accum * world, micro, n, seed)
    ranks = [_fake_trainer(world, r, accum, micro, n, seed) for r in range(world)]
    steps = single.steps_per_epoch
    assert steps == ranks[0].steps_per_epoch
    seen_by_rank: list[list[int]] = [[] for _ in range(world)]
    for step in range(2 * steps):  # two epochs
        if step % steps == 0:
            epoch_seen = set()
        one = [b.idx for b in Trainer._micro_batches(single, step)]
        per_rank = [[b.idx for b in Trainer._micro_batches(t, step)] for t in ranks]
        flat = [set(i for mb in mbs for i in mb) for mbs in per_rank]
        for r in range(world):
            assert all(len(mb) == micro for mb in per_rank[r])
            for q in range(r + 1, world):
                assert not flat[r] & flat[q], "two ranks used the same sample in one step"
            seen_by_rank[r] += sorted(flat[r])
        # Together the ranks use exactly the one-process step's samples, micro-batch for micro-batch.
        assert [per_rank[k % world][k // world] for k in range(accum * world)] == one
        step_samples = set().union(*flat)
        assert not step_samples & epoch_seen, "a sample came back within one epoch"
        epoch_seen |= step_samples
    # Reproducible from the seed: a second set of ranks gives the same shards.
    again = _fake_trainer(world, world - 1, accum, micro, n, seed)
    assert [b.idx for b in Trainer._micro_batches(again, 1)] == [b.idx for b in Trainer._micro_batches(ranks[-1], 1)]


# --- real 2-process runs ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("job", ["sum", "pb"])
def test_two_processes_match_one_process(ddp, job):
    diff = _max_diff(_weights(ddp.one / job), _weights(ddp.two / job))
    print(f"{job}: max |w_1proc - w_2proc| = {diff:.3g}")
    assert diff <= ATOL, f"{job}: 2 processes differ from 1 process by {diff}"
    # The logged step metrics (losses averaged over ranks, cosine, projected, grad norm) agree too.
    one, two = _csv(ddp.one / job / "metrics.csv"), _csv(ddp.two / job / "metrics.csv")
    assert [r["step"] for r in two] == [str(s) for s in range(1, STEPS + 1)]  # rank 0 alone writes
    for a, b in zip(one, two):
        for k in ("loss", "loss_main", "loss_category", "loss_sentiment", "cosine", "projected", "grad_norm", "lr"):
            assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-6, abs=1e-9, nan_ok=True), (job, a["step"], k)


@pytest.mark.slow
def test_training_moves_the_weights(ddp):
    """The equality above means something only if steps change the weights far beyond the tolerance."""
    step2 = load_file(str(ddp.two / "pb" / "checkpoints" / "step-2" / "model.safetensors"))
    assert _max_diff(step2, _weights(ddp.two / "pb")) > 1000 * ATOL


@pytest.mark.slow
def test_surgery_projected_at_least_once(ddp):
    rows = _csv(ddp.two / "pb" / "metrics.csv")
    assert all(r["cosine"] not in ("", "nan") for r in rows)
    assert any(float(r["projected"]) == 1.0 for r in rows), "no conflicting step: project-both was never exercised"


@pytest.mark.slow
@pytest.mark.parametrize("job", ["sum", "pb", "pb-resumed"])
def test_replicas_are_bitwise_identical(ddp, job):
    r0, r1 = _record(ddp.two, job, 0), _record(ddp.two, job, 1)
    assert (r0["rank"], r1["rank"], r0["world"], r1["world"]) == (0, 1, 2, 2)
    assert r0["weights_sha256"] == r1["weights_sha256"]
    assert _file_hash(ddp.two / job.removesuffix("-resumed") / "final" / "model.safetensors") == r0["weights_sha256"]
    assert r0["summary"]["best_auc"] == r1["summary"]["best_auc"]
    assert r0["summary"]["final_eval"] == r1["summary"]["final_eval"]  # rank 0's validation, shared


@pytest.mark.slow
@pytest.mark.parametrize("job", ["sum", "pb"])
def test_ranks_use_disjoint_shards_of_the_one_process_batches(ddp, job):
    one = _record(ddp.one, job, 0)
    r0, r1 = _record(ddp.two, job, 0), _record(ddp.two, job, 1)
    assert r0["epochs"] == r1["epochs"] == one["epochs"]  # same samples and permutation everywhere
    for step in range(STEPS):
        mine = [[m[2] for m in rec["micro"] if m[0] == step] for rec in (r0, r1)]
        ref = [m[2] for m in one["micro"] if m[0] == step]
        assert [len(x) for x in mine] == [1, 1] and len(ref) == 2
        assert not set(mine[0][0]) & set(mine[1][0])
        assert [mine[0][0], mine[1][0]] == ref  # micro-batch m of rank r = slice m*world + r
    used = [i for rec in (r0, r1) for m in rec["micro"] for i in m[2]]
    assert len(used) == len(set(used)) == STEPS * 2 * BATCH  # nothing used twice within the epoch


@pytest.mark.slow
def test_rank0_alone_prints_logs_and_progress(ddp):
    out0, out1 = (ddp.ranks / r / "stdout.log" for r in "01")
    err0, err1 = (ddp.ranks / r / "stderr.log" for r in "01")
    assert out0.read_text().count('"world_size": 2') == 4  # one summary per job
    assert out1.read_text().strip() == ""
    assert "train:" in err0.read_text()  # the pb job shows a progress bar
    assert "train:" not in err1.read_text() and "validation auc" not in err1.read_text()


@pytest.mark.slow
def test_resume_under_ddp_matches_the_uninterrupted_run(ddp):
    uninterrupted = _record(ddp.two, "pb", 0)
    resumed = _record(ddp.two, "pb-resumed", 0)
    assert [m[0] for m in resumed["micro"]] == [2, 3]  # it really restarted from the step-2 checkpoint
    assert resumed["weights_sha256"] == uninterrupted["weights_sha256"]
    assert resumed["micro"] == [m for m in uninterrupted["micro"] if m[0] >= 2]
    rows = _csv(ddp.two / "pb" / "metrics.csv")
    assert [r["step"] for r in rows] == [str(s) for s in range(1, STEPS + 1)]  # re-logged steps appear once
    evals = [{k: v for k, v in r.items() if k != "seconds"} for r in _csv(ddp.two / "pb" / "eval.csv")]
    assert evals == [{k: v for k, v in r.items() if k != "seconds"} for r in _csv(ddp.one / "pb" / "eval.csv")]


@pytest.mark.slow
def test_checkpoint_holds_every_ranks_rng_state(ddp):
    rng = load_file(str(ddp.two / "pb" / "checkpoints" / "step-2" / "rng.safetensors"))
    assert {k.split(".")[0] for k in rng} == {"rank0", "rank1"}
    assert not torch.equal(rng["rank0.torch"], rng["rank1.torch"])  # per-rank dropout streams
    assert torch.equal(rng["rank0.pcgrad"], rng["rank1.pcgrad"])  # the projection's generator stays in step
    assert json.loads((ddp.two / "pb" / "checkpoints" / "step-2" / "state.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_rank0_validation_equals_single_process_evaluation(ddp, tmp_path):
    # sum: validation of all impressions at the end, on rank 0 only, against `mtnews evaluate` in this
    # single process on the same weights (best/ = the only evaluated step).
    row = _csv(ddp.two / "sum" / "eval.csv")[-1]
    out = tmp_path / "m.json"
    assert main(["evaluate", "--data", str(ddp.data), "--split", "validation", "--run", str(ddp.two / "sum"),
                 "--device", "cpu", "--json-out", str(out)]) == 0
    m = json.loads(out.read_text())
    assert int(row["impressions"]) == m["impressions"] > 40
    for k in ("auc", "mrr", "ndcg@5", "ndcg@10"):
        assert float(row[k]) == pytest.approx(m[k], abs=1e-9), k
    # pb: the 40-impression validation subset, 2 processes against 1 (same weights up to ATOL).
    for a, b in zip(_csv(ddp.one / "pb" / "eval.csv"), _csv(ddp.two / "pb" / "eval.csv")):
        assert a["impressions"] == b["impressions"] == "40"
        for k in ("auc", "mrr", "ndcg@5", "ndcg@10"):
            assert float(a[k]) == pytest.approx(float(b[k]), abs=1e-9)


@pytest.mark.slow
def test_accelerate_launch_runs_two_processes(ddp):
    summary = json.loads((ddp.acc / "sum" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == STEPS
    assert ddp.accelerate_log.read_text().count('"world_size": 2') == 1  # printed by rank 0 only
    assert _max_diff(_weights(ddp.acc / "sum"), _weights(ddp.two / "sum")) <= ATOL


@pytest.mark.slow
def test_resume_with_another_process_count_is_refused(ddp, tmp_path, capsys):
    run = tmp_path / "pb"
    shutil.copytree(ddp.two / "pb", run)
    assert main(["train", "--data", str(ddp.data), "--out", str(run), "--resume", "--no-progress"]) == 2
    assert "written by 2 process(es), resumed with 1" in capsys.readouterr().err


def test_prefix_cache_and_stages_under_ddp_match_one_process_without_the_cache(ddp):
    """2 processes reading the cache rank 0 wrote = 1 process running the whole BERT, step by step."""
    one, two = _csv(ddp.one / "staged" / "metrics.csv"), _csv(ddp.two / "staged" / "metrics.csv")
    assert [r["stage"] for r in two] == ["warm", "warm", "tune", "tune"]
    for a, b in zip(one, two):
        for k in ("loss", "loss_main", "loss_category", "loss_sentiment", "grad_norm"):
            assert float(b[k]) == pytest.approx(float(a[k]), rel=1e-5, abs=1e-9), (a["step"], k)
        # A cosine near 0 (here ~4e-4) has no useful relative precision: compare it absolutely.
        assert float(b["cosine"]) == pytest.approx(float(a["cosine"]), abs=1e-6), a["step"]
    # Close, not to ATOL: AdamW magnifies rounding in gradients that are zero in exact arithmetic.
    assert _max_diff(_weights(ddp.one / "staged"), _weights(ddp.two / "staged")) <= 1e-3
    r0, r1 = _record(ddp.two, "staged", 0), _record(ddp.two, "staged", 1)
    assert r0["weights_sha256"] == r1["weights_sha256"]  # the replicas stayed bitwise in sync across the boundary
    summary = json.loads((ddp.two / "staged" / "summary.json").read_text())
    assert set(summary["prefix_cache"]) == {"1", "2"}
    assert json.loads((ddp.one / "staged" / "summary.json").read_text())["prefix_cache"] == {}
