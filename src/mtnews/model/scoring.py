"""The one inference path of a trained MTRec: article vectors once, then users and dot products in blocks.

    r_c = BERT(title_c)[CLS]                   `encode_articles`, each needed article once, under no_grad
    l_c = q ⊙ tanh(W r_c + b)                   `ArticleVectors.build`: the user encoder's slot logits per article
    r_u = Σ_i softmax_i(l_{h_i}) ⊙ r_{h_i}      `AdditiveAttention.from_tables`, for distinct users only
    s   = r_u · r_c                             in blocks of candidates
    s   = r_u · r_c + g(r_u) · p(c, t)          MTRec-T (`model.temporal`): `signals` [T, F] per candidate

With `model.interest` every article row is [r_c ; π_c] and every user row [r_u ; w ⊙ log q_u]
(`MTRec.ranking_vectors` / `ranking_users`), so the label-interest term is part of the same dot product and
`vectors` / `users` are what retrieval indexes and exports; the time branch reads the first D columns.

Training's validation, `mtnews evaluate`, `predict`, `serve` and the Python API all score through
`ArticleVectors`, so a score never depends on which of them computed it. Every temporary is kept near
`BLOCK_ELEMENTS` floats: 40k users x 30 slots x 384 dims would otherwise be 1.8 GB per tensor, and a 50k-row
chunk of 250-article beyond-accuracy impressions holds 12.5M candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mtnews.data.articles import PAD
from mtnews.data.history import UserHistories
from mtnews.data.impressions import EvalImpressions
from mtnews.errors import ConfigError
from mtnews.model.mtrec import MTRec
from mtnews.model.tokens import TitleTokens

# Elements per float32 temporary (16 MB): with D=384 and H=30 that is 364 users per user-encoder call
# and 10922 candidates per gather-and-dot block.
BLOCK_ELEMENTS = 1 << 22


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' is CUDA when present, else CPU; asking for CUDA without one is a clear error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
    return device


@torch.no_grad()
def encode_articles(
    model: MTRec, tokens: TitleTokens, indices: np.ndarray, device: torch.device | str = "cpu",
    batch_size: int = 256, table: torch.Tensor | None = None,
) -> torch.Tensor:
    """A [n_articles, D] float32 table with rows `indices` filled with news vectors (row 0, padding, stays 0).

    Batches are sorted by title length, so padding is minimal. bf16 autocast on CUDA, fp32 on CPU.
    """
    n = len(tokens.lengths)
    if table is None:
        table = torch.zeros(n, model.dim, dtype=torch.float32, device=device)
    indices = np.asarray(indices)
    indices = indices[indices > PAD]
    order = indices[np.argsort(tokens.lengths[indices], kind="stable")]
    use_bf16 = torch.device(device).type == "cuda"
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids, mask = tokens.batch(idx)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            vec = model.encode_news(ids.to(device), mask.to(device))
        table[torch.from_numpy(idx).to(device)] = vec.float()
    return table


def block_sizes(dim: int, history_size: int, elements: int = BLOCK_ELEMENTS) -> tuple[int, int]:
    """(users per user-encoder call, candidates per dot block) keeping each temporary near `elements`."""
    return max(1, elements // max(1, dim * history_size)), max(1, elements // max(1, dim))


@dataclass
class ArticleVectors:
    """Ranking vectors [N, R] (`MTRec.ranking_vectors`: R = D, or D + the label columns with `model.interest`)
    and the user encoder's slot logits [N, D] (row PAD: -inf) of one article table."""

    model: MTRec
    vectors: torch.Tensor
    logits: torch.Tensor

    @classmethod
    @torch.no_grad()
    def build(cls, model: MTRec, tokens: TitleTokens, indices: np.ndarray, device: torch.device | str = "cpu",
              batch_size: int = 256, block: int = 4096) -> "ArticleVectors":
        """Encode rows `indices` of the token table (others stay zero), then their slot logits."""
        model.eval()
        vectors = encode_articles(model, tokens, indices, device, batch_size)
        return cls.from_vectors(model, vectors, indices, block)

    @classmethod
    @torch.no_grad()
    def from_vectors(cls, model: MTRec, vectors: torch.Tensor, indices: np.ndarray | None = None,
                     block: int = 4096) -> "ArticleVectors":
        """From news vectors [N, D] (rows not in `indices` and PAD stay zero)."""
        enc = model.user_encoder
        logits = torch.zeros_like(vectors)
        table = vectors if model.interest is None else vectors.new_zeros(len(vectors), model.ranking_dim)
        idx = torch.arange(len(vectors)) if indices is None else torch.from_numpy(np.asarray(indices, dtype=np.int64))
        idx = idx[idx != PAD].to(vectors.device)
        for s in range(0, len(idx), block):
            rows = idx[s : s + block]
            logits[rows] = enc.slot_logits(vectors[rows])
            if model.interest is not None:
                table[rows] = model.ranking_vectors(vectors[rows])
        logits[PAD] = float("-inf")
        return cls(model, table, logits)

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @torch.no_grad()
    def users(self, hist: np.ndarray, user_block: int | None = None) -> torch.Tensor:
        """User vectors [B, R] (`MTRec.ranking_users`) for left-padded history index rows [B, H] (PAD = 0),
        in blocks."""
        hist = np.asarray(hist)
        user_block = user_block or block_sizes(self.dim, max(1, hist.shape[1]))[0]
        out = torch.empty(len(hist), self.dim, dtype=self.vectors.dtype, device=self.vectors.device)
        model = self.model
        news = self.vectors[:, : model.dim]
        for s in range(0, len(hist), user_block):
            h = torch.from_numpy(hist[s : s + user_block].astype(np.int64)).to(self.vectors.device)
            out[s : s + user_block] = model.ranking_users(model.user_encoder.from_tables(news, self.logits, h),
                                                          self.vectors, h)
        return out

    def check_signals(self, signals: np.ndarray | None, n: int) -> np.ndarray | None:
        """The signals a scoring call needs: None for a content-only model (whatever was passed); for
        MTRec-T a float32 [n, F] array, else one clear error."""
        branch = self.model.temporal
        if branch is None:
            return None
        if signals is None:
            raise ConfigError("this run has the time-aware branch (model.temporal): scoring it needs the "
                              f"candidates' time signals ({', '.join(branch.names)})")
        signals = np.asarray(signals, dtype=np.float32)
        if signals.shape != (n, branch.n_features):
            raise ConfigError(f"time signals: expected shape ({n}, {branch.n_features}) (one row per candidate, "
                              f"columns {', '.join(branch.names)}), got {signals.shape}")
        return signals

    @torch.no_grad()
    def dots(self, users: torch.Tensor, owner: np.ndarray, candidates: np.ndarray,
             dot_block: int | None = None, signals: np.ndarray | None = None) -> np.ndarray:
        """float64 scores users[owner[t]] · r_{candidates[t]} for every t, in blocks; for MTRec-T plus
        g(users[owner[t]]) · p(candidates[t], signals[t])."""
        dot_block = dot_block or block_sizes(self.dim, 1)[1]
        device = self.vectors.device
        signals = self.check_signals(signals, len(candidates))
        branch = self.model.temporal
        d = self.model.dim
        gates = branch.gate(users[:, :d]) if branch is not None else None
        out = np.empty(len(candidates), dtype=np.float64)
        for s in range(0, len(out), dot_block):
            own = torch.from_numpy(np.asarray(owner[s : s + dot_block], dtype=np.int64)).to(device)
            u = users[own]
            c = self.vectors[torch.from_numpy(np.asarray(candidates[s : s + dot_block], dtype=np.int64)).to(device)]
            score = (u * c).sum(-1)
            if branch is not None:
                pop = branch.popularity(torch.from_numpy(signals[s : s + dot_block]).to(device), c[:, :d])
                score = branch.combine(score, gates[own], pop)
            out[s : s + dot_block] = score.double().cpu().numpy()
        return out

    def score(self, histories: UserHistories, imps: EvalImpressions, user_block: int | None = None,
              dot_block: int | None = None, signals: np.ndarray | None = None) -> np.ndarray:
        """Flat float64 scores aligned with `imps.candidates`; users repeating in `imps` are encoded once.
        `signals`: MTRec-T's time signals, float32 [len(imps.candidates), F] (ignored by a content-only model)."""
        signals = self.check_signals(signals, len(imps.candidates))
        rows, inverse = np.unique(imps.user_row, return_inverse=True)
        users = self.users(histories.matrix[rows], user_block)
        owner = np.repeat(inverse, np.diff(imps.offsets))
        return self.dots(users, owner, imps.candidates, dot_block, signals)


def needed_articles(imps: EvalImpressions, histories: UserHistories) -> np.ndarray:
    """Article indices an in-memory set of impressions touches: candidates and their users' histories."""
    return np.unique(np.concatenate([histories.matrix[np.unique(imps.user_row)].ravel(), imps.candidates]))


def score_in_memory(model: MTRec, tokens: TitleTokens, histories: UserHistories, imps: EvalImpressions,
                    device: torch.device | str = "cpu", chunk: int = 4096, batch_size: int = 256,
                    signals: np.ndarray | None = None) -> np.ndarray:
    """Scores for impressions already in memory (training's validation), `chunk` impressions at a time,
    leaving the model's train/eval mode as it was. `signals`: as `ArticleVectors.score`'s, for all of `imps`."""
    was_training = model.training
    try:
        vectors = ArticleVectors.build(model, tokens, needed_articles(imps, histories), device, batch_size)
        signals = vectors.check_signals(signals, len(imps.candidates))
        out = []
        for s in range(0, len(imps), chunk):
            e = min(s + chunk, len(imps))
            rows = slice(int(imps.offsets[s]), int(imps.offsets[e]))
            out.append(vectors.score(histories, imps.slice(s, e), signals=None if signals is None else signals[rows]))
        return np.concatenate(out) if out else np.zeros(0)
    finally:
        model.train(was_training)
