"""One optimizer step's gradients: per-task backward passes, gradient surgery, accumulation and DDP.

`sum` runs one backward through the DDP wrapper, so DDP reduces the gradients as usual.

The surgery modes need each task's gradient separately, and must project the *global* (all-rank) task
gradients so every replica applies the same update. They therefore run under `no_sync` and, on the
sync step, all-reduce (average) the flattened per-task gradients with torch.distributed before
projecting. Every rank then computes the identical projection and the replicas stay bitwise in sync.

Spaces
- params: task gradients w.r.t. the shared trainable encoder parameters (one forward, one backward per
  task with retain_graph). Exact, the seed's definition.
- representation: task gradients w.r.t. the batch's unique news vectors (cheap), projected per article
  vector (row-wise), then a single backward from the vectors with the combined gradient (MGDA-UB style).
  Under DDP each rank projects its own rows and the resulting parameter gradients are averaged.

With nothing shared to train (the whole BERT frozen, no projection) every parameter belongs to one task,
so there is nothing to project and every mode is `sum`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from mtnews.model.mtrec import Batch, MTRec, task_weights
from mtnews.train import surgery

AUX_TASKS = ("category", "sentiment", "ner", "subcategory")


@dataclass
class StepStats:
    losses: dict[str, float] = field(default_factory=dict)
    cosine: float = math.nan
    projected: float = math.nan  # 1/0 in params space; share of projected article vectors in representation space
    samples: int = 0
    rows: int = 0  # article vectors behind `projected` in representation space (to pool the share over ranks)


def _flat(grads: list[torch.Tensor | None], params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def _assign(flat: torch.Tensor, params: list[torch.nn.Parameter]) -> None:
    i = 0
    for p in params:
        n = p.numel()
        g = flat[i : i + n].view_as(p).to(p.dtype)
        p.grad = g.clone() if p.grad is None else p.grad.add_(g)
        i += n


def _all_reduce_mean(tensors: list[torch.Tensor], world: int) -> list[torch.Tensor]:
    if world <= 1 or not tensors:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world
    out, i = [], 0
    for t in tensors:
        out.append(flat[i : i + t.numel()].view_as(t))
        i += t.numel()
    return out


class GradientEngine:
    def __init__(self, model: torch.nn.Module, core: MTRec, accelerator, seed: int, cfg=None):
        self.model = model  # possibly DDP-wrapped
        self.core = core
        self.acc = accelerator
        self.cfg = cfg or core.cfg  # a training stage's config may change the surgery
        self.mode = self.cfg.train.surgery
        self.space = self.cfg.train.surgery_space
        self.weights = task_weights(self.cfg)
        self.generator = torch.Generator().manual_seed(seed)  # PCGrad's task order
        self.shared = core.shared_parameters()
        self.heads = core.head_parameters()
        if not self.shared:
            self.mode = "sum"

    @property
    def world(self) -> int:
        return self.acc.num_processes

    def _sync_ctx(self, last: bool):
        if last and self.mode == "sum":
            return contextlib.nullcontext()
        return self.acc.no_sync(self.model)

    def _forward(self, batch: Batch):
        with self.acc.autocast():
            return self.model(batch)

    def step(self, batches: list[Batch]) -> StepStats:
        """Accumulate gradients of `batches` (this rank's micro-batches) into .grad; no optimizer call."""
        stats = StepStats(samples=sum(b.size for b in batches))
        sums: dict[str, float] = {}
        if self.mode == "sum":
            self._step_sum(batches, sums)
        elif self.space == "params":
            self._step_params(batches, sums, stats)
        else:
            self._step_representation(batches, sums, stats)
        stats.losses = {k: v / len(batches) for k, v in sums.items()}
        return stats

    def _record(self, losses: dict[str, torch.Tensor], sums: dict[str, float]) -> None:
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())

    def _weighted(self, losses: dict[str, torch.Tensor], tasks) -> torch.Tensor | None:
        terms = [self.weights[t] * losses[t] for t in tasks if t in losses]
        return sum(terms) if terms else None

    def _groups(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The losses whose gradients are kept apart: main vs merged aux, or every task for PCGrad."""
        if self.mode == "pcgrad":
            return {t: self.weights[t] * l for t, l in losses.items()}
        groups = {"main": losses["main"]}
        aux = self._weighted(losses, AUX_TASKS)
        if aux is not None:
            groups["aux"] = aux
        return groups

    def _group_heads(self, group: str) -> list[torch.nn.Parameter]:
        if group == "aux":
            return [p for t in AUX_TASKS for p in self.heads[t]]
        return self.heads[group]

    def _step_sum(self, batches: list[Batch], sums: dict[str, float]) -> None:
        for m, batch in enumerate(batches):
            with self._sync_ctx(m == len(batches) - 1):
                _, losses = self._forward(batch)
                total = self._weighted(losses, ("main", *AUX_TASKS))
                self.acc.backward(total / len(batches))
            self._record(losses, sums)

    def _combine(self, parts: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float, bool]:
        names = list(parts)
        if len(names) == 1:
            return parts[names[0]], math.nan, False
        if self.mode == "pcgrad":
            aux = sum(parts[n] for n in names if n != "main")
            cos = surgery.cosine(parts["main"], aux)
            g, projected = surgery.pcgrad([parts[n] for n in names], self.generator)
            return g, cos, projected
        cos = surgery.cosine(parts["main"], parts["aux"])
        g, projected = surgery.combine(parts["main"], parts["aux"], self.mode)
        return g, cos, projected

    def _step_params(self, batches: list[Batch], sums: dict[str, float], stats: StepStats) -> None:
        bufs: dict[str, torch.Tensor] = {}
        head_params: list[torch.nn.Parameter] = []
        for m, batch in enumerate(batches):
            with self._sync_ctx(False):
                _, losses = self._forward(batch)
                groups = self._groups(losses)
                for gi, (name, loss) in enumerate(groups.items()):
                    heads = self._group_heads(name)
                    grads = torch.autograd.grad(loss / len(batches), self.shared + heads,
                                                retain_graph=gi < len(groups) - 1, allow_unused=True)
                    flat = _flat(list(grads[: len(self.shared)]), self.shared).float()
                    bufs[name] = bufs[name] + flat if name in bufs else flat
                    for p, g in zip(heads, grads[len(self.shared):]):
                        if g is not None:
                            p.grad = g.clone() if p.grad is None else p.grad.add_(g)
                        if m == 0:
                            head_params.append(p)
            self._record(losses, sums)
        names = list(bufs)
        reduced = _all_reduce_mean([bufs[n] for n in names] + [self._grad(p) for p in head_params], self.world)
        parts = dict(zip(names, reduced[: len(names)]))
        for p, g in zip(head_params, reduced[len(names):]):
            p.grad = g.clone()
        g, stats.cosine, projected = self._combine(parts)
        stats.projected = float(projected)
        _assign(g, self.shared)

    @staticmethod
    def _grad(p: torch.nn.Parameter) -> torch.Tensor:
        return p.grad if p.grad is not None else torch.zeros_like(p)

    def _step_representation(self, batches: list[Batch], sums: dict[str, float], stats: StepStats) -> None:
        cos_sum, proj_rows, rows = 0.0, 0, 0
        for m, batch in enumerate(batches):
            with self._sync_ctx(False):
                news, losses = self._forward(batch)
                groups = self._groups(losses)
                parts: dict[str, torch.Tensor] = {}
                for name, loss in groups.items():
                    heads = self._group_heads(name)
                    grads = torch.autograd.grad(loss / len(batches), [news] + heads, retain_graph=True, allow_unused=True)
                    parts[name] = grads[0] if grads[0] is not None else torch.zeros_like(news)
                    for p, g in zip(heads, grads[1:]):
                        if g is not None:
                            p.grad = g.clone() if p.grad is None else p.grad.add_(g)
                if len(parts) == 1:
                    g_news, projected = next(iter(parts.values())), torch.zeros(news.shape[0], dtype=torch.bool)
                elif self.mode == "pcgrad":
                    g_news, projected = surgery.pcgrad_rows([parts[n].float() for n in parts], self.generator)
                    aux = sum(parts[n] for n in parts if n != "main")
                    cos_sum += surgery.cosine(parts["main"].reshape(-1).float(), aux.reshape(-1).float())
                else:
                    g_news, projected = surgery.combine_rows(parts["main"].float(), parts["aux"].float(), self.mode)
                    cos_sum += surgery.cosine(parts["main"].reshape(-1).float(), parts["aux"].reshape(-1).float())
                news.backward(g_news.to(news.dtype))
            proj_rows += int(projected.sum())
            rows += news.shape[0]
            self._record(losses, sums)
        trainable = [p for p in self.core.parameters() if p.requires_grad]
        if self.world > 1:
            reduced = _all_reduce_mean([self._grad(p) for p in trainable], self.world)
            for p, g in zip(trainable, reduced):
                p.grad = g.clone()
        if len(self._groups_names()) > 1:
            stats.cosine = cos_sum / len(batches)
            stats.projected = proj_rows / max(rows, 1)
            stats.rows = rows

    def _groups_names(self) -> list[str]:
        w = self.weights
        active = ["main"] + [t for t in AUX_TASKS if w[t] > 0 and self.heads[t]]
        return active
