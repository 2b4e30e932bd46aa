"""Run `mtnews train` jobs in this process (one rank of torchrun / accelerate launch, or a lone process)
and record, per rank, what the test in test_ddp.py needs to check DDP from the outside.

    python ddp_worker.py SPEC.json                       # one process
    torchrun --nproc_per_node 2 ddp_worker.py SPEC.json  # two ranks

SPEC.json: {"record": DIR, "jobs": [{"name": str, "argv": [mtnews CLI args...], "rewind": {...}?}, ...]}

Each job goes through the real CLI (`mtnews.cli.main`). The Trainer is observed by wrapping two of its
methods here, so the package carries no test-only code:
* `_epoch_plan`: the batch builder is wrapped to log the sample indices every micro-batch of this rank used;
* `fit`: after training, this rank's trainable weights are hashed (replicas must be bitwise equal).
They land in DIR/<job>.rank<r>.json.

`rewind: {"run": RUN, "to_step": N}` first turns a finished run into what a run stopped right after its
step-N checkpoint leaves behind: later checkpoints, final/, summary.json and a best/ saved after step N
are removed (rows metrics.csv and eval.csv logged after step N stay, as they can after a crash), then the
job resumes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

from mtnews.cli import main
from mtnews.model.build import trainable_state
from mtnews.train.loop import Trainer

torch.set_num_threads(1)  # 2 ranks on 2 cores; one thread each also keeps the 1-process reference comparable

_current: dict = {}
_orig_plan = Trainer._epoch_plan
_orig_fit = Trainer.fit


class _Recording:
    """Stands in for the epoch's BatchBuilder: logs (step, epoch, indices) and builds the batch as usual."""

    def __init__(self, builder, trainer: Trainer, epoch: int):
        self.builder, self.trainer, self.epoch = builder, trainer, epoch

    def __call__(self, idx: np.ndarray):
        _current["micro"].append([self.trainer.step, self.epoch, [int(i) for i in idx]])
        return self.builder(idx)


def _epoch_plan(self: Trainer, epoch: int):
    plan = _orig_plan(self, epoch)
    if not isinstance(plan.builder, _Recording):
        s = plan.builder.samples
        digest = hashlib.sha256(plan.order.tobytes() + s.candidates.tobytes() + s.user_row.tobytes()).hexdigest()
        _current["epochs"][str(epoch)] = digest  # the epoch's samples and order, which every rank must agree on
        plan.builder = _Recording(plan.builder, self, epoch)
    return plan


def _fit(self: Trainer) -> dict:
    summary = _orig_fit(self)
    h = hashlib.sha256()
    for name, t in sorted(trainable_state(self.model).items()):
        h.update(name.encode())
        h.update(t.numpy().tobytes())
    _current.update(rank=self.acc.process_index, world=self.world, weights_sha256=h.hexdigest(), summary=summary)
    return summary


Trainer._epoch_plan = _epoch_plan
Trainer.fit = _fit


def _rewind(run: Path, to_step: int) -> None:
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0:
        for ckpt in (run / "checkpoints").glob("step-*"):
            if int(ckpt.name.split("-")[1]) > to_step:
                shutil.rmtree(ckpt)
        shutil.rmtree(run / "final", ignore_errors=True)
        best = run / "best" / "step.json"
        if best.is_file() and json.loads(best.read_text())["step"] > to_step:
            shutil.rmtree(run / "best")
        (run / "summary.json").unlink(missing_ok=True)
    if dist.is_initialized():
        dist.barrier()


def run(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    record = Path(spec["record"])
    record.mkdir(parents=True, exist_ok=True)
    for job in spec["jobs"]:
        if "rewind" in job:
            _rewind(Path(job["rewind"]["run"]), int(job["rewind"]["to_step"]))
        _current.clear()
        _current.update(micro=[], epochs={})
        rc = main(["train", *job["argv"]])
        if rc != 0:
            raise SystemExit(f"job {job['name']}: mtnews train exited with {rc}")
        out = record / f"{job['name']}.rank{_current['rank']}.json"
        out.write_text(json.dumps(_current, default=float))


if __name__ == "__main__":
    run(sys.argv[1])
