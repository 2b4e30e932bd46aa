"""Label interest (`model.interest`): the user's shares of the auxiliary heads' predicted labels, scored.

For each task t named in `model.interest` (category, sentiment), with K_t labels:

    π_c^t = softmax(head_t(r_c))                     the head's label distribution for article c (no gradient)
    q_u^t = (Σ_i π_{h_i}^t + β) / (n_u + β · K_t)     the user's smoothed label shares over their n_u clicks
    s(u,c) = r_u · r_c + Σ_t w_t · log(q_u^t) · π_c^t   (+ MTRec-T's time term)

w_t is learned with the main task (it starts at 1) and β is `model.interest_smoothing`. The term is itself a
dot product, of [r_u ; w ⊙ log q_u] with [r_c ; π_c]: inference appends π_c to every article vector and the
log-shares to every user vector (`MTRec.ranking_vectors`, `MTRec.ranking_users`), so scoring, retrieval
and the exported embeddings stay one inner product.

Why: a dot product of attention-pooled title vectors is linear in the history, while a reader's taste is
a sharp distribution over labels (the synthetic generator's is log(p_cat + ε)). On the default synthetic
data (time effect 0) the demo model's own category and sentiment heads, used this way after training,
ranked validation at 0.813 AUC against its dot product's 0.762 (docs/performance.md).

The heads keep learning from their own losses only: π is computed under no_grad, so the ranking loss
reaches the news vectors through r_c alone and gradient surgery's split of the tasks is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class LabelInterest(nn.Module):
    def __init__(self, tasks: tuple[str, ...], sizes: tuple[int, ...], smoothing: float):
        super().__init__()
        self.tasks = tuple(tasks)
        self.sizes = tuple(int(k) for k in sizes)
        self.smoothing = float(smoothing)
        self.weight = nn.Parameter(torch.ones(len(self.tasks)))

    @property
    def width(self) -> int:
        return sum(self.sizes)

    @torch.no_grad()
    def article_part(self, heads: list[nn.Module], news: torch.Tensor) -> torch.Tensor:
        """π_c for news vectors [..., D]: the heads' softmaxes side by side, [..., width]."""
        return torch.cat([torch.softmax(h(news), dim=-1) for h in heads], dim=-1)

    def user_part(self, table: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """w ⊙ log q_u [B, width] for history index rows `hist` [B, H] into π rows `table` [N, width]
        (row 0, padding, all zeros). A user with no clicks gets uniform shares: a constant term."""
        counts = table[hist].sum(dim=1)
        n = (hist > 0).sum(dim=1, keepdim=True).to(counts.dtype)
        parts, start = [], 0
        for w, k in zip(self.weight, self.sizes):
            shares = (counts[:, start : start + k] + self.smoothing) / (n + self.smoothing * k)
            parts.append(w.to(counts.dtype) * torch.log(shares))
            start += k
        return torch.cat(parts, dim=-1)
