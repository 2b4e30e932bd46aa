"""Gradient surgery between the main task and the auxiliary tasks.

All functions work on flat gradient vectors (or on rows of a matrix, one per article vector, for the
representation space), so the caller flattens once per step and no Python loop runs per element.

Modes
- sum:          g = g_main + g_aux
- project-both: the seed's Figure 3. If g_main·g_aux < 0, project each onto the normal plane of the
                other (using the originals), then sum.
- project-aux:  MTRec's rule. If they conflict, only g_aux is projected; g_main is never changed.
- pcgrad:       Yu et al. (2020), per task, each projected against the others in random order
                (per row in the representation space, like the two modes above).
"""

from __future__ import annotations

import torch

EPS = 1e-20


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = a.norm(), b.norm()
    if na.item() == 0.0 or nb.item() == 0.0:
        return 0.0
    return float(torch.dot(a, b) / (na * nb))


def combine(g_main: torch.Tensor, g_aux: torch.Tensor, mode: str) -> tuple[torch.Tensor, bool]:
    """Merge two flat gradients; returns (combined, whether a projection happened)."""
    if mode == "sum":
        return g_main + g_aux, False
    dot = torch.dot(g_main, g_aux)
    if dot >= 0:
        return g_main + g_aux, False
    aux = g_aux - dot / g_main.dot(g_main).clamp_min(EPS) * g_main
    if mode == "project-aux":
        return g_main + aux, True
    if mode == "project-both":
        main = g_main - dot / g_aux.dot(g_aux).clamp_min(EPS) * g_aux
        return main + aux, True
    raise ValueError(f"unknown surgery mode {mode!r}")


def combine_rows(g_main: torch.Tensor, g_aux: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise `combine` for [N, D] matrices (one row per news vector); returns (combined, projected mask)."""
    if mode == "sum":
        return g_main + g_aux, torch.zeros(g_main.shape[0], dtype=torch.bool, device=g_main.device)
    dot = (g_main * g_aux).sum(1, keepdim=True)
    conflict = dot < 0
    coef = torch.where(conflict, dot, torch.zeros_like(dot))
    aux = g_aux - coef / (g_main * g_main).sum(1, keepdim=True).clamp_min(EPS) * g_main
    if mode == "project-aux":
        return g_main + aux, conflict[:, 0]
    if mode == "project-both":
        main = g_main - coef / (g_aux * g_aux).sum(1, keepdim=True).clamp_min(EPS) * g_aux
        return main + aux, conflict[:, 0]
    raise ValueError(f"unknown row-wise surgery mode {mode!r}")


def pcgrad(grads: list[torch.Tensor], generator: torch.Generator | None = None) -> tuple[torch.Tensor, bool]:
    """PCGrad over per-task flat gradients: each task's gradient is projected, in a random order of the
    other tasks, off every original task gradient it conflicts with; the results are summed."""
    out, projected = pcgrad_rows([g[None] for g in grads], generator)
    return out[0], bool(projected[0])


def pcgrad_rows(grads: list[torch.Tensor], generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise `pcgrad` for per-task [N, D] matrices (one row per news vector): every row is its own PCGrad
    problem, so a row is projected only where its own task gradients conflict. Returns (combined [N, D],
    projected mask [N]). Each task's random order of the others is drawn once per call and shared by the
    rows, so the generator advances as for one flat `pcgrad` call."""
    n = len(grads)
    g = torch.stack(grads)  # [T, N, D]
    # einsum contracts as a batched matmul: no [N, D] temporaries, which matters for flat params-space grads
    norms2 = torch.einsum("tnd,tnd->tn", g, g).clamp_min(EPS)
    out = g.clone()
    projected = torch.zeros(g.shape[1], dtype=torch.bool, device=g.device)
    for i in range(n):  # loops over tasks (2-4), never over rows or elements
        order = torch.randperm(n, generator=generator).tolist()
        for j in order:
            if j == i:
                continue
            dot = torch.einsum("nd,nd->n", out[i], g[j])
            conflict = dot < 0
            coef = torch.where(conflict, dot / norms2[j], torch.zeros_like(dot))
            out[i].addcmul_(coef[:, None], g[j], value=-1)
            projected |= conflict
    return out.sum(0), projected
