"""The training loop: data, model, optimizer, surgery steps, validation, logs, checkpoints, exact resume.

Batching across ranks: one optimizer step consumes a *global* batch of batch_size x grad_accum x world
samples from a permutation seeded by (seed, epoch). Micro-batch m of rank r takes slice m*world + r, so
one process with grad_accum=2 and two processes with grad_accum=1 see exactly the same samples per step.

Stages (`train.stages`, see `mtnews.train.stages`): each has its own optimizer, schedule, frozen prefix and
batch size, set up by `_enter_stage` when the previous stage ends (and on resume, for the checkpoint's
stage). Checkpoints record the stage; every stage ends with an evaluation and a checkpoint.

Selection (`train.selection`): the last `holdout_hours` of the train log are held out of training. Every
evaluation point scores that holdout, and `best/` and early stopping are chosen on it; the validation split
is scored only for reporting (at the run's end, and at every evaluation point with `validation_curve`), so
the validation numbers a run reports were never selected on. eval.csv's `split` column says which is which.
"""

from __future__ import annotations

import dataclasses
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
from mtnews.data.holdout import split_holdout
from mtnews.data.layout import available_splits, split_paths
from mtnews.data.signals import SplitSignals
from mtnews.errors import CheckpointError, ConfigError, MtnewsError
from mtnews.evaluate.metrics import METRIC_NAMES, ranking_metrics
from mtnews.io import atomic_dir, atomic_write_text
from mtnews.model.build import WEIGHTS, build_model, save_weights
from mtnews.model.mtrec import prefix_depth
from mtnews.model.run import write_run_files
from mtnews.model.scoring import resolve_device, score_in_memory
from mtnews.model.temporal import signal_options
from mtnews.model.tokens import tokenize_titles
from mtnews.train.batching import BatchBuilder, sample_signals
from mtnews.train.checkpoint import (checkpoint_dirs, checkpoint_stage, load_checkpoint, prune_checkpoints,
                                     rng_state, save_checkpoint, set_rng_state)
from mtnews.train.logs import CsvLog
from mtnews.train.prefix_cache import PrefixCache, open_prefix_cache
from mtnews.train.stages import plan_stages
from mtnews.train.step import GradientEngine, StepStats

METRIC_FIELDS = ["step", "epoch", "stage", "loss", "loss_main", "loss_category", "loss_sentiment", "loss_ner",
                 "cosine", "projected", "lr", "samples_per_s", "grad_norm", "loss_subcategory"]
EVAL_FIELDS = ["step", "stage", "split", *METRIC_NAMES, "impressions", "skipped", "seconds"]


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
        self.train_split = load_split(self.data, "train", cfg.data.history_size, self.articles, ("impression_time",))
        self.val_split: Split | None = None
        self._eval_imps: dict = {}
        if "validation" in available_splits(self.data):
            self.val_split = load_split(self.data, "validation", cfg.data.history_size, self.articles)
            self._validation_impressions()  # a broken validation split fails now, not after the first steps
        # Training samples come from the fit part only; the holdout is what every choice is made on.
        self.holdout = split_holdout(self.train_split.behaviors, t.selection.holdout_hours, str(paths.behaviors))
        self.holdout_split = dataclasses.replace(self.train_split, behaviors=self.holdout.holdout)
        self.train_split = dataclasses.replace(self.train_split, behaviors=self.holdout.fit)
        self.eval_splits = {"holdout": self.holdout_split, "validation": self.val_split}
        self._validation_impressions("holdout")
        self.model, self.tokenizer = build_model(cfg, self.articles.vocab)
        tokenizer = self.tokenizer
        self.tokens = tokenize_titles(self.articles.titles, tokenizer, cfg.model.max_title_length)
        self.train_signals, self._eval_signals = None, {}
        if self.model.temporal is not None:
            self.train_signals = SplitSignals.load(self.data, "train", signal_options(cfg.model.temporal, training=True))

        self.world = self.acc.num_processes
        n = len(self.train_split.train_samples(cfg.data.npratio, t.seed))
        self.stages = plan_stages(cfg, n, self.world, paths.behaviors)
        self.total_steps = self.stages[-1].end

        # Every rank built identical weights from the shared seed (and DDP broadcasts rank 0's anyway); from
        # here on each rank draws its own dropout masks, as its micro-batches hold different samples.
        set_seed(t.seed, device_specific=True)
        self.generator = torch.Generator().manual_seed(t.seed)  # PCGrad's task order, one stream for all stages
        self.metrics_log = CsvLog(self.out / "metrics.csv", METRIC_FIELDS)
        self.eval_log = CsvLog(self.out / "eval.csv", EVAL_FIELDS)
        self.step, self.best_auc = 0, -math.inf
        self.best_step, self.since_best, self.stopped = 0, 0, False  # early stopping's state, checkpointed
        self._plan: EpochPlan | None = None
        self.ddp_model = self.engine = None
        self.prefix: PrefixCache | None = None
        self.prefix_caches: dict[int, PrefixCache] = {}
        first = checkpoint_stage(self.resume_from) if self.resume_from is not None else 0
        if first >= len(self.stages):
            raise CheckpointError(f"{self.resume_from}: written in stage {first + 1}, but the run's config has "
                                  f"{len(self.stages)} stage(s)")
        self._enter_stage(first)

    # --- stages ----------------------------------------------------------------------------------
    def _enter_stage(self, k: int) -> None:
        """Set up stage k: frozen prefix, optimizer and schedule, DDP wrapper, gradient engine, prefix cache."""
        from transformers import get_linear_schedule_with_warmup

        st, t = self.stages[k], self.cfg.train
        if self.ddp_model is not None:
            # DDP fixes the set of trainable parameters when it wraps the model, and this stage changes it:
            # release the old wrapper (and accelerate's references to it) before wrapping again.
            self.acc.unwrap_model(self.ddp_model, keep_fp32_wrapper=False)
            self.ddp_model = self.engine = None
            self.acc.free_memory()
        depth = prefix_depth(st.freeze_layers, self.cfg.model.lora.enabled, self.model.n_layers)
        self.model.set_frozen_prefix(depth)
        self.stage = st
        self.micro, self.steps_per_epoch = st.batch_size, st.steps_per_epoch
        self.global_batch = st.batch_size * t.grad_accum * self.world
        # The projection starts from the identity, not from pretraining: it learns at the heads' rate.
        fresh = list(self.model.projection.parameters()) if self.model.projection is not None else []
        heads = [p for ps in self.model.head_parameters().values() for p in ps] + [p for p in fresh if p.requires_grad]
        encoder = [p for p in self.model.shared_parameters() if all(p is not q for q in fresh)]
        # MTRec-T's branch: its own rate when model.temporal.lr is set (it learns from a handful of features).
        branch = list(self.model.temporal.parameters()) if self.model.temporal is not None else []
        heads = [p for p in heads if all(p is not q for q in branch)]
        branch_lr = self.cfg.model.temporal.lr or st.head_lr
        groups = [{"params": encoder, "lr": st.lr}, {"params": heads, "lr": st.head_lr},
                  {"params": branch, "lr": branch_lr}]
        self.optimizer = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=t.weight_decay)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(st.warmup_ratio * st.steps), st.steps)
        self.ddp_model = self.acc.prepare(self.model)
        self.engine = GradientEngine(self.ddp_model, self.model, self.acc, t.seed, cfg=st.config(self.cfg))
        self.engine.generator = self.generator
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.prefix = self._prefix_cache(depth) if st.prefix_cache else None
        self._plan = None

    def _prefix_cache(self, depth: int) -> PrefixCache:
        if depth not in self.prefix_caches:
            t0 = time.perf_counter()
            cache = open_prefix_cache(self.model, self.tokens, depth, self.acc)
            if cache.fits_on(self.acc.device):
                cache.make_resident(self.acc.device)
            self.prefix_caches[depth] = cache
            if self.main and self.progress:
                what = "[CLS] vectors" if cache.cls_only else f"hidden states entering layer {depth}"
                print(f"prefix cache ({what}, {cache.states.shape[0]:,} x {cache.states.shape[1]} {cache.dtype}): "
                      f"{cache.nbytes / 2**20:,.1f} MiB in {cache.path}{' (copied to the GPU)' if cache.resident is not None else ''} "
                      f"({time.perf_counter() - t0:.1f} s)",
                      file=sys.stderr)
        return self.prefix_caches[depth]

    # --- data ------------------------------------------------------------------------------------
    def _epoch_plan(self, epoch: int) -> EpochPlan:
        """Epoch `epoch` of the current stage (data epoch epoch_base + epoch of the run)."""
        if self._plan is None or self._plan.epoch != epoch:
            seed = self.cfg.train.seed
            data_epoch = self.stage.epoch_base + epoch
            samples = self.train_split.train_samples(self.cfg.data.npratio, seed + data_epoch)
            order = np.random.default_rng([seed, data_epoch]).permutation(len(samples))
            signals = (sample_signals(self.train_signals, samples, self.articles)
                       if self.train_signals is not None else None)
            builder = BatchBuilder(samples, self.train_split.histories, self.articles, self.tokens,
                                   aux_on_candidates=self.cfg.tasks.on_candidates, prefix=self.prefix,
                                   signals=signals, history_size=self.stage.history_size)
            self._plan = EpochPlan(epoch, builder, order)
        return self._plan

    def _micro_batches(self, step: int) -> list:
        """This rank's micro-batches for step `step` of the current stage (0-based, stage-local)."""
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
    def _validation_impressions(self, name: str = "validation"):
        """The impressions scored for `name` ("holdout" or "validation"), the first data.eval_impressions."""
        if name not in self._eval_imps:
            imps = (self.val_split if name == "validation" else self.holdout_split).eval_impressions()
            k = self.cfg.data.eval_impressions
            self._eval_imps[name] = imps.slice(0, min(k, len(imps))) if k else imps
        return self._eval_imps[name]

    def evaluate(self, name: str = "validation") -> dict | None:
        split = self.eval_splits[name]
        if split is None:
            return None
        t0 = time.perf_counter()
        imps = self._validation_impressions(name)
        signals = None
        if self.model.temporal is not None:
            if name not in self._eval_signals:
                # The holdout's impressions are train's own: their features count train's earlier events.
                source = SplitSignals.load(self.data, "validation" if name == "validation" else "train",
                                           signal_options(self.cfg.model.temporal))
                names = source.options.names()
                self._eval_signals[name] = source.for_impressions(imps, names).matrix(names)
            signals = self._eval_signals[name]
        scores = score_in_memory(self.model, self.tokens, split.histories, imps, self.acc.device,
                                 self.cfg.data.eval_chunk, signals=signals)
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
            state = {"step": self.step, "best_auc": self.best_auc, "best_step": self.best_step,
                     "since_best": self.since_best, "stopped": self.stopped, "world_size": self.world,
                     "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                     "stage": self.stage.index, "stage_name": self.stage.name}
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
        self.best_step, self.since_best = int(state.get("best_step", 0)), int(state.get("since_best", 0))
        self.stopped = bool(state.get("stopped", False))

    def _save_weights(self, name: str) -> None:
        with atomic_dir(self.out / name) as tmp:
            save_weights(self.model, tmp / WEIGHTS)
            (tmp / "step.json").write_text(json.dumps({"step": self.step, "best_auc": self.best_auc,
                                                       "selected_on": self.selected_on()}))

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
    def _stage_tag(self) -> str:
        return f" [{self.stage.name}]" if len(self.stages) > 1 else ""

    def selected_on(self) -> str:
        imps = self._validation_impressions("holdout")
        return (f"holdout (train, last {self.cfg.train.selection.holdout_hours:g} h, cutoff "
                f"{self.holdout.cutoff.isoformat()}, {len(imps)} impressions scored)")

    def _log_eval(self, name: str, bar) -> dict | None:
        m = self.evaluate(name)
        if m is not None:
            self.eval_log.append({"step": self.step, "stage": self.stage.name, "split": name, **m})
            what = "selection" if name == "holdout" else "reported, not selected on"
            bar.write(f"step {self.step}{self._stage_tag()}: {name} auc {m['auc']:.4f} mrr {m['mrr']:.4f} "
                      f"ndcg@10 {m['ndcg@10']:.4f} ({what})")
        return m

    def _select(self, bar) -> None:
        """Score the holdout; keep `best/` on it, and stop after `patience` evaluations without a new best
        (a stage with `select: false` only logs the score)."""
        m = self._log_eval("holdout", bar)
        if not self.stage.select:
            return
        if m is not None and m["auc"] > self.best_auc:
            self.best_auc, self.best_step, self.since_best = m["auc"], self.step, 0
            self._save_weights("best")
        else:
            self.since_best += 1
        patience = self.cfg.train.selection.patience
        if patience and self.since_best >= patience and self.step < self.total_steps:
            self.stopped = True
            bar.write(f"step {self.step}: early stop, no better holdout auc in {patience} evaluations "
                      f"(best {self.best_auc:.4f} at step {self.best_step})")

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
                   desc="train" + self._stage_tag(), unit="step", dynamic_ncols=True)
        last_eval = None
        if self.main:  # said even without a progress bar: the log must show what the run selects on
            print(f"selection: best/ and early stopping on the {self.selected_on()}; training on the "
                  f"{self.holdout.fit.height} impressions before the cutoff", file=sys.stderr)
        t_start = time.perf_counter()
        while self.step < self.total_steps and not self.stopped:
            if self.step == self.stage.end:
                self._enter_stage(self.stage.index + 1)
                bar.set_description("train" + self._stage_tag())
            st = self.stage
            t0 = time.perf_counter()
            self.ddp_model.train()
            batches = self._micro_batches(self.step - st.start)
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
                epoch = st.epoch_base + (self.step - st.start - 1) // self.steps_per_epoch
                row = {"step": self.step, "epoch": epoch, "stage": st.name, "loss": total,
                       **{f"loss_{k}": v for k, v in losses.items()}, "cosine": stats.cosine,
                       "projected": stats.projected, "lr": lr, "samples_per_s": round(sps, 2),
                       "grad_norm": float(grad_norm)}
                self.metrics_log.append(row)
                bar.set_postfix(loss=f"{total:.4f}", sps=f"{sps:.1f}")
                bar.update(1)
            stage_done = self.step == st.end  # the run's last step ends its last stage
            if (st.eval_every and (self.step - st.start) % st.eval_every == 0) or stage_done:
                if self.main:
                    self._select(bar)
                    if self.step == self.total_steps or self.stopped or t.selection.validation_curve:
                        last_eval = self._log_eval("validation", bar)
                if self.world > 1:
                    # The other ranks wait here (no deadlock: evaluation uses the unwrapped model, so no
                    # collective runs inside it) and then learn the result, so every rank's checkpoint state
                    # and returned summary agree with rank 0's.
                    shared = [last_eval, self.best_auc, self.best_step, self.since_best, self.stopped]
                    last_eval, self.best_auc, self.best_step, self.since_best, self.stopped = broadcast_object_list(
                        shared, from_process=0)
            if self.step % t.checkpoint_every == 0 or stage_done or self.stopped:
                self._save()
        bar.close()
        if self.best_step == 0:  # no selecting evaluation gave a number (none scorable, or only select: false stages)
            self.best_step = self.step
        if self.main:
            self._save_weights("final")
            if not (self.out / "best").exists():
                self._save_weights("best")
        self.acc.wait_for_everyone()
        summary = {"steps": self.step, "selected_on": self.selected_on(), "best_auc": self.best_auc,
                   "best_step": self.best_step, "stopped_early": self.stopped, "final_eval": last_eval,
                   "seconds": round(time.perf_counter() - t_start, 1), "world_size": self.world,
                   "stages": [{"name": s.name, "first_step": s.start + 1, "last_step": s.end} for s in self.stages],
                   "prefix_cache": {str(d): {"path": str(c.path), "bytes": c.nbytes, "rows": int(c.states.shape[0])}
                                    for d, c in self.prefix_caches.items()}}
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

    if resume:  # a refused resume is said before any data is read
        check_resume_config(out, cfg, given or set())
    cfg, note = without_unlabelled_tasks(cfg, data)
    if note and os.environ.get("RANK", "0") == "0":  # once under torchrun, not once per rank
        print(f"mtnews: {note}", file=sys.stderr)
    return Trainer(cfg, data, out, resume=resume, progress=progress).fit()
