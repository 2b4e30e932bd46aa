"""A trained run as a streaming scorer: encode every article the split needs once, then score chunks.

Memory: the article-vector table ([n_articles, D] float32) and the user encoder's per-article attention
logits (the same shape) are the only state that lives for the whole split. Finding the articles a split needs streams the behaviors file in record batches into two boolean
masks (one per article, one per history row), so it never materialises the exploded in-view column of a
13.5M-impression test set. Scoring a chunk encodes its distinct users in blocks (the user encoder's
[users, H, D] temporaries would otherwise grow with the chunk: 40k users x 30 x 384 floats is 1.8 GB each)
and takes the dot products in blocks of candidates (a 50k-row chunk of 250-article beyond-accuracy
impressions holds 12.5M candidates).
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from mtnews.data import schema
from mtnews.data.articles import PAD, ArticleTable
from mtnews.data.history import UserHistories
from mtnews.data.impressions import EvalImpressions
from mtnews.data.layout import SplitPaths
from mtnews.evaluate.model_scorer import encode_articles
from mtnews.model.build import load_run
from mtnews.model.mtrec import MTRec
from mtnews.model.tokens import TitleTokens, tokenize_titles

SCAN_ROWS = 1 << 17  # behaviors rows per record batch when scanning a split for its articles
# Elements per float32 temporary when scoring (16 MB): with D=384 and H=30 that is 364 users per
# user-encoder call and 10922 candidates per gather-and-dot block.
BLOCK_ELEMENTS = 1 << 22


def split_article_indices(paths: SplitPaths, articles: ArticleTable, histories: UserHistories,
                          batch_rows: int = SCAN_ROWS) -> np.ndarray:
    """Every article index a split's impressions can touch: in-view lists and the users' histories.

    Sorted and unique, PAD excluded; UNK (1) is included when some in-view id is unknown. Memory is one
    record batch plus a boolean per article and per history row, whatever the number of impressions.
    """
    schema.validate(paths.behaviors, schema.REQUIRED_BEHAVIORS)
    need = np.zeros(len(articles), dtype=bool)
    seen_rows = np.zeros(histories.matrix.shape[0], dtype=bool)
    pf = pq.ParquetFile(paths.behaviors)
    for batch in pf.iter_batches(batch_size=batch_rows, columns=["user_id", "article_ids_inview"]):
        inview = pc.drop_null(pc.list_flatten(batch.column(1))).to_numpy(zero_copy_only=False)
        # Few distinct ids per batch (a 250-article beyond-accuracy list repeats), so dedupe before lookup.
        need[articles.index(np.unique(inview))] = True
        users = pc.drop_null(pc.unique(batch.column(0))).to_numpy(zero_copy_only=False)
        seen_rows[histories.rows(users)] = True
    rows = np.flatnonzero(seen_rows)
    for s in range(0, len(rows), SCAN_ROWS):
        need[histories.matrix[rows[s : s + SCAN_ROWS]]] = True
    need[PAD] = False
    return np.flatnonzero(need)


def block_sizes(dim: int, history_size: int, elements: int = BLOCK_ELEMENTS) -> tuple[int, int]:
    """(users per user-encoder call, candidates per dot block) keeping each temporary near `elements`."""
    return max(1, elements // max(1, dim * history_size)), max(1, elements // max(1, dim))


@torch.no_grad()
def attention_logits(model: MTRec, table: torch.Tensor, indices: np.ndarray, block: int = 4096) -> torch.Tensor:
    """The user encoder's slot logits q * tanh(W r + b) for the rows `indices` of the article table.

    They depend on the article alone, so computing them once per article replaces a [D, D] projection per
    (user, history slot): 40k distinct users x 30 slots (D=384) take 4.3 s through the module on 2 CPU
    cores and 1.2 s with this table, its own computation for 20k articles included (lookups, softmax and
    the weighted sum remain). Row PAD holds -inf, so padded slots get zero weight straight from the lookup.
    """
    enc = model.user_encoder
    out = torch.zeros_like(table)
    idx = torch.from_numpy(np.asarray(indices, dtype=np.int64)).to(table.device)
    idx = idx[idx != PAD]
    for s in range(0, len(idx), block):
        rows = idx[s : s + block]
        out[rows] = enc.query * torch.tanh(enc.proj(table[rows]))
    out[PAD] = float("-inf")
    return out


def users_from_logits(model: MTRec, table: torch.Tensor, logits: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
    """`AdditiveAttention.forward(table[hist], hist > 0)` with the slot logits looked up, not recomputed.

    Padded slots look up -inf (row PAD of `logits`), so they get exactly zero weight; a user without any
    history (every slot padded, a NaN softmax) gets the learned empty-user vector, as in the module.
    """
    weights = torch.softmax(logits[hist], dim=1)
    user = (weights * table[hist]).sum(dim=1)
    has_history = (hist > 0).any(dim=1, keepdim=True)
    return torch.where(has_history, user, model.user_encoder.empty_user.to(user.dtype).expand_as(user))


@torch.no_grad()
def score_blocked(model: MTRec, table: torch.Tensor, histories: UserHistories, imps: EvalImpressions,
                  user_block: int | None = None, dot_block: int | None = None,
                  logits: torch.Tensor | None = None) -> np.ndarray:
    """Flat float64 scores aligned with `imps.candidates`, in memory bounded by the block sizes.

    The same computation as `model_scorer.score_impressions` (one user vector per distinct user of the
    chunk, then dot products), cut into blocks. With `logits` (from `attention_logits`) the user encoder's
    projection is looked up per article instead of recomputed per history slot.
    """
    default_users, default_dot = block_sizes(table.shape[1], histories.history_size)
    user_block, dot_block = user_block or default_users, dot_block or default_dot
    device = table.device
    rows, inverse = np.unique(imps.user_row, return_inverse=True)
    users = torch.empty(len(rows), table.shape[1], dtype=table.dtype, device=device)
    for s in range(0, len(rows), user_block):
        hist = torch.from_numpy(histories.matrix[rows[s : s + user_block]].astype(np.int64)).to(device)
        if logits is None:
            users[s : s + user_block] = model.user_encoder(table[hist], hist > 0)
        else:
            users[s : s + user_block] = users_from_logits(model, table, logits, hist)
    owner = np.repeat(inverse, np.diff(imps.offsets)).astype(np.int64)
    out = np.empty(len(imps.candidates), dtype=np.float64)
    for s in range(0, len(out), dot_block):
        u = users[torch.from_numpy(owner[s : s + dot_block]).to(device)]
        c = table[torch.from_numpy(imps.candidates[s : s + dot_block].astype(np.int64)).to(device)]
        out[s : s + dot_block] = (u * c).sum(-1).double().cpu().numpy()
    return out


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


class ModelScorer:
    name = "model"

    def __init__(self, run_dir, paths: SplitPaths, articles: ArticleTable, histories: UserHistories,
                 device: str = "auto", batch_size: int = 256):
        model, cfg, tokenizer = load_run(run_dir, articles)
        if cfg.data.history_size != histories.history_size:
            raise ValueError("histories must be built with the run's data.history_size")
        self.cfg = cfg
        tokens = tokenize_titles(articles.titles, tokenizer, cfg.model.max_title_length)
        self._setup(model, tokens, paths, articles, histories, resolve_device(device), batch_size)

    @classmethod
    def from_model(cls, model: MTRec, tokens: TitleTokens, paths: SplitPaths, articles: ArticleTable,
                   histories: UserHistories, device: str = "auto", batch_size: int = 256) -> "ModelScorer":
        """The scorer for an in-memory model (benchmarks, notebooks); `mtnews evaluate` loads a run instead."""
        self = cls.__new__(cls)
        self.cfg = model.cfg
        self._setup(model, tokens, paths, articles, histories, resolve_device(device), batch_size)
        return self

    def _setup(self, model: MTRec, tokens: TitleTokens, paths: SplitPaths, articles: ArticleTable,
               histories: UserHistories, device: torch.device, batch_size: int) -> None:
        self.device = device
        self.model = model.to(device).eval()
        self.histories = histories
        self.user_block, self.dot_block = block_sizes(model.dim, histories.history_size)
        self.indices = split_article_indices(paths, articles, histories)
        self.table = encode_articles(self.model, tokens, self.indices, self.device, batch_size)
        self.logits = attention_logits(self.model, self.table, self.indices)

    def score(self, imps: EvalImpressions) -> np.ndarray:
        return score_blocked(self.model, self.table, self.histories, imps, self.user_block, self.dot_block,
                             self.logits)
