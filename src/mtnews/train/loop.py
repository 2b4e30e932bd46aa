"""The training loop: data, model, optimizer, surgery steps, validation, logs, checkpoints, exact resume.

Batching across ranks: one optimizer step consumes a *global* batch of batch_size x grad_accum x world
samples from a permutation seeded by (seed, epoch). Micro-batch m of rank r takes slice m*world + r, so
one process with grad_accum=2 and two processes with grad_accum=1 see exactly the same samples per step.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from mtnews.config import Config, flatten, load_config
from mtnews.data.articles import load_articles
from mtnews.data.dataset import Split, load_split
from mtnews.data.layout import available_splits, split_paths
from mtnews.errors import ConfigError, MtnewsError
from mtnews.evaluate.metrics import METRIC_NAMES, ranking_metrics
from mtnews.io import atomic_dir, atomic_write_text
from mtnews.model.build import WEIGHTS, build_model, save_weights
from mtnews.model.run import write_run_files
from mtnews.model.scoring import resolve_device, score_in_memory
from mtnews.model.tokens import tokenize_titles
from mtnews.train.batching import BatchBuilder
from mtnews.train.checkpoint import (checkpoint_dirs, load_checkpoint, prune_checkpoints, rng_state,
                                     save_checkpoint, set_rng_state)
from mtnews.train.logs import CsvLog
from mtnews.train.step import GradientEngine, StepStats

METRIC_FIELDS = ["step", "epoch", "loss", "loss_main", "loss_category", "loss_sentiment", "loss_ner",
                 "cosine", "projected", "lr", "samples_per_s", "grad_norm", "loss_subcategory"]
EVAL_FIELDS = ["step", *METRIC_NAMES, "impressions", "skipped", "seconds"]


# Validation and checkpoints run on rank 0 while the other ranks wait in a barrier. NCCL's default 10
# minute collective timeout would abort them during a long validation pass, so allow much longer.
PROCESS_GROUP_TIMEOUT = timedelta(hours=2)


def make_accelerator(cfg: Config):
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    try:
        want_cuda = resolve_device(cfg.train.device).type == "cuda"
    except ConfigError as e:
        raise ConfigError(f"train.device: {e}") from None
    return Accelerator(cpu=not want_cuda, mixed_precision="bf16" if want_cuda else "no",
                       kwargs_handlers=[InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)])


@dataclass
class EpochPlan:
    """Which samples each step of an epoch uses; rebuilt deterministically from (seed, epoch)."""

    epoch: int
    builder: BatchBuilder
    order: np.ndarray


class Trainer:
    def __init__(self, cfg: Config, data: str | Path, out: str | Path, resume: bool = False, progress: bool = True):
        from accelerate.utils import set_seed

        self.data, self.out = Path(data), Path(out)
        self.acc = make_accelerator(cfg)
        self.main = self.acc.is_main_process
        latest = checkpoint_dirs(self.out)[-1] if self.out.exists() and checkpoint_dirs(self.out) else None
        if self.acc.num_processes > 1:
            from accelerate.utils import gather_object

            # Rank 0 alone writes the run directory; on several nodes the others must see it too, or they
            # would start afresh on --resume while rank 0 restores. Every rank sees the same list and stops.
            seen = gather_object([str(latest) if latest is not None else "no checkpoint"])
            if len(set(seen)) > 1:
                raise MtnewsError(f"{self.out}: the processes see different latest checkpoints ({', '.join(sorted(set(seen)))}); "
                                  f"put the run directory on a filesystem every node shares")
        if latest is not None and not resume:
            raise MtnewsError(f"{self.out}: already holds checkpoints; pass --resume to continue it, or choose a new --out")
        if resume and (self.out / "config.yaml").is_file():
            cfg = load_config(self.out / "config.yaml")  # exact resume uses the run's own config
        self.cfg, self.progress, self.resume_from = cfg, progress, latest if resume else None
        t = cfg.train
        set_seed(t.seed)

        paths = split_paths(self.data, "train")
        self.articles = load_articles(paths.articles, max_entity_groups=cfg.model.ner_groups)
        self.train_split = load_split(self.data, "train", cfg.data.history_size, self.articles)
        self.val_split: Split | None = None
        self._val_imps = None
        if "validation" in available_splits(self.data):
            self.val_split = load_split(self.data, "validation", cfg.data.history_size, self.articles)
            self._validation_impressions()  # a broken validation split fails now, not after the first steps
        self.model, self.tokenizer = build_model(cfg, self.articles.vocab)
        tokenizer = self.tokenizer
        self.tokens = tokenize_titles(self.articles.titles, tokenizer, cfg.model.max_title_length)

        self.world = self.acc.num_processes
        self.micro = t.batch_size
        self.global_batch = t.batch_size * t.grad_accum * self.world
        n = len(self.train_split.train_samples(cfg.data.npratio, t.seed))
        self.steps_per_epoch = n // self.global_batch
        if self.steps_per_epoch == 0:
            raise MtnewsError(f"{paths.behaviors}: {n} training samples, fewer than one global batch "
                              f"({self.global_batch} = batch_size x grad_accum x processes)")
        self.total_steps = t.max_steps or t.epochs * self.steps_per_epoch

        from transformers import get_linear_schedule_with_warmup

        heads = [p for ps in self.model.head_parameters().values() for p in ps]
        shared = self.model.shared_parameters()
        self.optimizer = torch.optim.AdamW(
            [{"params": shared, "lr": t.lr}, {"params": heads, "lr": t.head_lr}], weight_decay=t.weight_decay
        )
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, int(t.warmup_ratio * self.total_steps), self.total_steps
        )
        self.ddp_model = self.acc.prepare(self.model)
        # Every rank built identical weights from the shared seed (and DDP broadcast rank 0's anyway); from
        # here on each rank draws its own dropout masks, as its micro-batches hold different samples.
        set_seed(t.seed, device_specific=True)
        self.engine = GradientEngine(self.ddp_model, self.model, self.acc, t.seed)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.metrics_log = CsvLog(self.out / "metrics.csv", METRIC_FIELDS)
        self.eval_log = CsvLog(self.out / "eval.csv", EVAL_FIELDS)
        self.step, self.best_auc = 0, -math.inf
        self._plan: EpochPlan | None = None

    # --- data ------------------------------------------------------------------------------------
    def _epoch_plan(self, epoch: int) -> EpochPlan:
        if self._plan is None or self._plan.epoch != epoch:
            seed = self.cfg.train.seed
            samples = self.train_split.train_samples(self.cfg.data.npratio, seed + epoch)
            order = np.random.default_rng([seed, epoch]).permutation(len(samples))
            builder = BatchBuilder(samples, self.train_split.histories, self.articles, self.tokens,
                                   aux_on_candidates=self.cfg.tasks.on_candidates)
            self._plan = EpochPlan(epoch, builder, order)
        return self._plan

    def _micro_batches(self, step: int) -> list:
        epoch, pos = divmod(step, self.steps_per_epoch)
        plan = self._epoch_plan(epoch)
        g = plan.order[pos * self.global_batch : (pos + 1) * self.global_batch]
        rank = self.acc.process_index
        out = []
        for m in range(self.cfg.train.grad_accum):
            k = m * self.world + rank
            out.append(plan.builder(g[k * self.micro : (k + 1) * self.micro]).to(self.acc.device))
        return out

    # --- evaluation ------------------------------------------------------------------------------
    def _validation_impressions(self):
        if self._val_imps is None:
            imps = self.val_split.eval_impressions()
            k = self.cfg.data.eval_impressions
            self._val_imps = imps.slice(0, min(k, len(imps))) if k else imps
        return self._val_imps

    def evaluate(self) -> dict | None:
        if self.val_split is None:
            return None
        t0 = time.perf_counter()
        imps = self._validation_impressions()
        scores = score_in_memory(self.model, self.tokens, self.val_split.histories, imps, self.acc.device,
                                 self.cfg.data.eval_chunk)
        m = ranking_metrics(imps.labels, scores, offsets=imps.offsets)
        m["seconds"] = round(time.perf_counter() - t0, 3)
        return m

    # --- checkpoints -----------------------------------------------------------------------------
    def _save(self) -> None:
        rngs = [rng_state(self.engine.generator)]
        if self.world > 1:
            import torch.distributed as dist

            gathered: list = [None] * self.world
            dist.all_gather_object(gathered, rngs[0])
            rngs = gathered
        if self.main:
            state = {"step": self.step, "best_auc": self.best_auc, "world_size": self.world,
                     "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps}
            save_checkpoint(self.out / "checkpoints" / f"step-{self.step}", self.model, self.optimizer,
                            self.scheduler, rngs, state)
            prune_checkpoints(self.out, self.cfg.train.keep_checkpoints)
        self.acc.wait_for_everyone()

    def _restore(self) -> None:
        state, rng = load_checkpoint(self.resume_from, self.model, self.optimizer, self.scheduler,
                                     self.acc.process_index)
        saved_world = int(state.get("world_size", 1))
        if saved_world != self.world:
            # The global batch (batch_size x grad_accum x processes) fixes which samples every step uses,
            # so a different process count would silently replay or skip data and shift the LR schedule.
            raise MtnewsError(f"{self.resume_from}: written by {saved_world} process(es), resumed with {self.world}; "
                              f"resume with the same number of processes")
        set_rng_state(rng, self.engine.generator)
        self.step, self.best_auc = int(state["step"]), float(state["best_auc"])

    def _save_weights(self, name: str) -> None:
        with atomic_dir(self.out / name) as tmp:
            save_weights(self.model, tmp / WEIGHTS)
            (tmp / "step.json").write_text(json.dumps({"step": self.step, "best_auc": self.best_auc}))

    def _global_stats(self, stats: StepStats) -> StepStats:
        """The step's losses, cosine and projected share over all ranks, as one process would log them.

        Every rank holds the same number of micro-batches, so the mean of the rank means is the global mean;
        the representation space's projected share is pooled over its article vectors (`rows`) instead.
        """
        if self.world == 1:
            return stats
        keys = list(stats.losses)
        pooled = stats.rows > 0
        share = stats.projected * stats.rows if pooled else stats.projected
        local = torch.tensor([stats.losses[k] for k in keys] + [stats.cosine, share, stats.rows],
                             dtype=torch.float64, device=self.acc.device)
        vals = self.acc.reduce(local, reduction="sum").tolist()
        n = len(keys)
        stats.losses = {k: v / self.world for k, v in zip(keys, vals[:n])}
        stats.cosine = vals[n] / self.world
        stats.projected = vals[n + 1] / vals[n + 2] if pooled else vals[n + 1] / self.world
        stats.rows = int(vals[n + 2])
        return stats

    # --- the loop --------------------------------------------------------------------------------
    def fit(self) -> dict:
        from accelerate.utils import broadcast_object_list
        from tqdm.auto import tqdm

        t = self.cfg.train
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.yaml", self.cfg.to_yaml())
            write_run_files(self.out, self.cfg, self.articles, self.tokenizer)
        if self.resume_from is not None:
            self._restore()
        if self.main:
            self.metrics_log.truncate_after(self.step)
            self.eval_log.truncate_after(self.step)
        # Redirected to a log file, a bar redrawn every step floods it; there, report every 30 s instead.
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (self.progress and self.main),
                   mininterval=0.1 if sys.stderr.isatty() else 30.0,
                   desc="train", unit="step", dynamic_ncols=True)
        last_eval = None
        t_start = time.perf_counter()
        while self.step < self.total_steps:
            t0 = time.perf_counter()
            self.ddp_model.train()
            batches = self._micro_batches(self.step)
            stats = self._global_stats(self.engine.step(batches))
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, t.max_grad_norm) if t.max_grad_norm > 0 else torch.tensor(0.0)
            lr = self.scheduler.get_last_lr()[0]
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            sps = self.global_batch / (time.perf_counter() - t0)
            if self.main:
                losses = stats.losses
                total = sum(self.engine.weights[k] * v for k, v in losses.items())
                row = {"step": self.step, "epoch": (self.step - 1) // self.steps_per_epoch, "loss": total,
                       **{f"loss_{k}": v for k, v in losses.items()}, "cosine": stats.cosine,
                       "projected": stats.projected, "lr": lr, "samples_per_s": round(sps, 2),
                       "grad_norm": float(grad_norm)}
                self.metrics_log.append(row)
                bar.set_postfix(loss=f"{total:.4f}", sps=f"{sps:.1f}")
                bar.update(1)
            done = self.step == self.total_steps
            if (t.eval_every and self.step % t.eval_every == 0) or done:
                if self.main:
                    last_eval = self.evaluate()
                    if last_eval is not None:
                        self.eval_log.append({"step": self.step, **last_eval})
                        bar.write(f"step {self.step}: validation auc {last_eval['auc']:.4f} "
                                  f"mrr {last_eval['mrr']:.4f} ndcg@10 {last_eval['ndcg@10']:.4f}")
                        if last_eval["auc"] > self.best_auc:
                            self.best_auc = last_eval["auc"]
                            self._save_weights("best")
                if self.world > 1:
                    # The other ranks wait here (no deadlock: evaluation uses the unwrapped model, so no
                    # collective runs inside it) and then learn the result, so every rank's checkpoint state
                    # and returned summary agree with rank 0's.
                    shared = broadcast_object_list([last_eval, self.best_auc], from_process=0)
                    last_eval, self.best_auc = shared
            if self.step % t.checkpoint_every == 0 or done:
                self._save()
        bar.close()
        if self.main:
            self._save_weights("final")
            if self.val_split is None and not (self.out / "best").exists():
                self._save_weights("best")
        self.acc.wait_for_everyone()
        summary = {"steps": self.step, "best_auc": self.best_auc, "final_eval": last_eval,
                   "seconds": round(time.perf_counter() - t_start, 1), "world_size": self.world}
        if self.main:
            atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2, default=float))
        return summary


def check_resume_config(out: str | Path, cfg: Config, keys: set[str]) -> None:
    """Exact resume replays the run's own config; silently dropping a value the user set would mislead."""
    saved_path = Path(out) / "config.yaml"
    if not keys or not saved_path.is_file():
        return
    a, b = flatten(load_config(saved_path).to_dict()), flatten(cfg.to_dict())
    changed = [f"{k} ({a[k]!r} -> {b[k]!r})" for k in sorted(keys & set(a)) if a[k] != b[k]]
    if changed:
        raise ConfigError(f"{saved_path}: --resume continues the run with its saved config, but these differ: "
                          f"{', '.join(changed)}; start a new --out to change them")


def train(cfg: Config, data: str | Path, out: str | Path, resume: bool = False, progress: bool = True,
          given: set[str] | None = None) -> dict:
    """Train (or with `resume`, continue) a run in `out`. `given`: the config keys the caller set
    explicitly; resuming refuses any of them that differs from the run's saved config. A task the data
    cannot teach (sentiment without sentiment labels) is switched off first, with a note on stderr."""
    import os

    from mtnews.train.tasks import without_unlabelled_tasks

    cfg, note = without_unlabelled_tasks(cfg, data)
    if note and os.environ.get("RANK", "0") == "0":  # once under torchrun, not once per rank
        print(f"mtnews: {note}", file=sys.stderr)
    if resume:
        check_resume_config(out, cfg, given or set())
    return Trainer(cfg, data, out, resume=resume, progress=progress).fit()
