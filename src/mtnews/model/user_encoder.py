"""MTRec's user encoder: element-wise additive attention over the clicked-history vectors.

    a_i = softmax_i(q ⊙ tanh(W r_i))     (a softmax per dimension, over the history)
    r_u = Σ_i a_i ⊙ r_i

Padded slots get -inf before the softmax, so they have exactly zero weight. A user with no history at all
gets a learned default vector instead of the NaN an all-masked softmax would give.
"""

from __future__ import annotations

import torch
from torch import nn


class AdditiveAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.empty(dim).normal_(0, 0.02))
        self.empty_user = nn.Parameter(torch.zeros(dim))

    def forward(self, history: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """history [B, H, D], mask [B, H] (True = real click) -> user vectors [B, D]."""
        logits = self.query * torch.tanh(self.proj(history))
        logits = logits.masked_fill(~mask[..., None], float("-inf"))
        has_history = mask.any(dim=1, keepdim=True)
        # An all -inf row would softmax to NaN; give it finite logits, then replace its output below.
        logits = torch.where(has_history[..., None], logits, torch.zeros_like(logits))
        weights = torch.softmax(logits, dim=1)
        user = (weights * history).sum(dim=1)
        return torch.where(has_history, user, self.empty_user.to(user.dtype).expand_as(user))
