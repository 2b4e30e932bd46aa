"""Training stages: `train.stages` (or the run's single implicit stage) laid out on the global step axis.

A staged run is one run: one model, one checkpoint series, one metrics.csv. Stage k covers global steps
start_k + 1 .. end_k with its own optimizer, LR schedule (warm-up and decay over its own steps), frozen
prefix, batch size, surgery, the history clicks it trains on and whether it may supply best/; every other
key is the run's. Its data epochs follow the previous stages' (epoch numbers continue), so no stage replays
another's sample order. Without `train.stages` the single
stage is exactly the run's train section. With stages, `train.max_steps` > 0 cuts the run after that many
steps: the stage it falls in ends there (its schedule decays over its shortened length), later ones are
dropped; `mtnews train --config configs/demo.yaml --train.max_steps 20` is then a quick trial of the warm-up.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

from mtnews.config import Config
from mtnews.errors import MtnewsError


@dataclass(frozen=True)
class Stage:
    index: int
    name: str
    start: int  # global steps done before this stage
    steps: int
    freeze_layers: int | str
    prefix_cache: bool
    batch_size: int
    lr: float
    head_lr: float
    warmup_ratio: float
    surgery: str
    surgery_space: str
    eval_every: int
    steps_per_epoch: int
    epoch_base: int  # the data epoch this stage's first step reads
    history_size: int  # the last clicks of each history this stage trains on (data.history_size by default)
    select: bool = True  # whether this stage's holdout evaluations may make best/

    @property
    def end(self) -> int:
        return self.start + self.steps

    def config(self, cfg: Config) -> Config:
        """`cfg` with this stage's training keys in force (what the gradient engine reads)."""
        out = copy.deepcopy(cfg)
        t = out.train
        t.lr, t.head_lr, t.warmup_ratio, t.batch_size = self.lr, self.head_lr, self.warmup_ratio, self.batch_size
        t.surgery, t.surgery_space, t.eval_every, t.prefix_cache = (self.surgery, self.surgery_space,
                                                                     self.eval_every, self.prefix_cache)
        return out


def plan_stages(cfg: Config, n_samples: int, world: int, where: str | Path) -> list[Stage]:
    """The run's stages in order; `where` (the training behaviors file) names the data in errors."""
    t = cfg.train
    specs = t.stages or [None]
    stages: list[Stage] = []
    start = epoch = 0
    for i, st in enumerate(specs):

        def pick(name: str):
            v = getattr(st, name) if st is not None else None
            return getattr(t, name) if v is None else v

        batch = pick("batch_size")
        global_batch = batch * t.grad_accum * world
        per_epoch = n_samples // global_batch
        name = (st.name or f"stage{i + 1}") if st is not None else "train"
        if per_epoch == 0:
            label = f" (stage '{name}')" if st is not None else ""
            raise MtnewsError(f"{where}: {n_samples} training samples, fewer than one global batch{label} "
                              f"({global_batch} = batch_size x grad_accum x processes)")
        if st is None:
            steps = t.max_steps or t.epochs * per_epoch
        else:
            steps = st.steps or st.epochs * per_epoch
            if t.max_steps:
                steps = min(steps, t.max_steps - start)
                if steps <= 0:
                    break
        freeze = st.freeze_layers if st is not None and st.freeze_layers is not None else cfg.model.freeze_layers
        stages.append(Stage(i, name, start, steps, freeze, bool(pick("prefix_cache")), batch, pick("lr"),
                            pick("head_lr"), pick("warmup_ratio"), pick("surgery"), pick("surgery_space"),
                            pick("eval_every"), per_epoch, epoch,
                            st.history_size if st is not None and st.history_size else cfg.data.history_size,
                            st is None or st.select is not False))
        start += steps
        epoch += math.ceil(steps / per_epoch)
    return stages
