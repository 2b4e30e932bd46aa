"""Score impressions with a trained model through a cache of article vectors.

Each needed article is encoded once under no_grad (in batches sorted by title length, so padding is
minimal); impressions are then scored in chunks with gathers and dot products. Users that repeat within
a chunk share one user vector. Nothing is re-encoded per impression, unlike evaluating "naively".
"""

from __future__ import annotations

import numpy as np
import torch

from mtnews.data.history import UserHistories
from mtnews.data.impressions import EvalImpressions
from mtnews.model.mtrec import MTRec
from mtnews.model.tokens import TitleTokens


@torch.no_grad()
def encode_articles(
    model: MTRec, tokens: TitleTokens, indices: np.ndarray, device: torch.device | str = "cpu",
    batch_size: int = 256, table: torch.Tensor | None = None,
) -> torch.Tensor:
    """A [n_articles, D] float32 table with rows `indices` filled with news vectors (row 0, padding, stays 0)."""
    n = len(tokens.lengths)
    if table is None:
        table = torch.zeros(n, model.dim, dtype=torch.float32, device=device)
    indices = np.asarray(indices)
    indices = indices[indices > 0]
    order = indices[np.argsort(tokens.lengths[indices], kind="stable")]
    use_bf16 = torch.device(device).type == "cuda"
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids, mask = tokens.batch(idx)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            vec = model.encode_news(ids.to(device), mask.to(device))
        table[torch.from_numpy(idx).to(device)] = vec.float()
    return table


def needed_articles(impressions: EvalImpressions, histories: UserHistories) -> np.ndarray:
    return np.unique(np.concatenate([histories.matrix[np.unique(impressions.user_row)].ravel(), impressions.candidates]))


@torch.no_grad()
def score_impressions(
    model: MTRec, table: torch.Tensor, histories: UserHistories, imps: EvalImpressions
) -> np.ndarray:
    """Flat float64 scores aligned with `imps.candidates`."""
    device = table.device
    rows, inverse = np.unique(imps.user_row, return_inverse=True)
    hist = torch.from_numpy(histories.matrix[rows].astype(np.int64)).to(device)
    users = model.user_encoder(table[hist], hist > 0)  # one vector per distinct user in the chunk
    lengths = np.diff(imps.offsets)
    owner = torch.from_numpy(np.repeat(inverse, lengths).astype(np.int64)).to(device)
    cand = table[torch.from_numpy(imps.candidates.astype(np.int64)).to(device)]
    return (users[owner] * cand).sum(-1).double().cpu().numpy()


def score_split(
    model: MTRec, tokens: TitleTokens, histories: UserHistories, imps: EvalImpressions,
    device: torch.device | str = "cpu", chunk: int = 4096, batch_size: int = 256,
) -> np.ndarray:
    was_training = model.training
    model.eval()
    try:
        table = encode_articles(model, tokens, needed_articles(imps, histories), device, batch_size)
        out = [score_impressions(model, table, histories, c) for c in imps.chunks(chunk)]
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)
