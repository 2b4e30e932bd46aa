"""MTRec-T's popularity/recency branch: a time-aware score per (candidate, impression time), gated per user.

Inputs, one row per candidate c at impression time t, in `SignalOptions.names()` order (`data.signals`):
age_h, age_known, in-view/click counts and CTRs per trailing window (and over all time), optionally the
articles' whole-period aggregates.

    b(c,t)  = bucket of age_h among `age_edges_h` (0: below the first edge, ..., E: above the last),
              E + 1 when the age is unknown (no published_time): a learned "age unknown" bucket
    x(c,t)  = [ log1p(age_h) · known,  log1p(counts),  log(ctr / ctr_prior_mean),  log1p(aggregates) ]
    h(c,t)  = GELU(A[b] + W_x x + b_x)                               A: [E + 2, H] age embedding
    p(c,t)  = w_p · h + b_p  (+ w_c · r_c, the content-popularity term, with `content_popularity`)
    g(r_u)  = softplus(w_g · tanh(W_g r_u + b_g) + c)                 the user gate; `gate: false` uses
                                                                     softplus(c), one learned scalar
    s(u,c,t) = r_u · r_c + g(r_u) · p(c,t)                           (PP-Rec's combination; `content:
                                                                     false` drops r_u · r_c)

w_p and w_g start at 0 and c at softplus^-1(1), so a fresh branch scores p = b_p + w_c · r_c with g = 1.
The branch is part of the main task only: its parameters are main-task heads, so gradient surgery never
projects them (params space), and it sits after the news vectors (representation space).
Training (`MTRec.score`) and every inference path (`model.scoring.ArticleVectors`) call `popularity`,
`gate` and `combine`, so the two cannot drift apart.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mtnews.config import TemporalConfig
from mtnews.data.signals import AGGREGATE_COLUMNS, SignalOptions
from mtnews.errors import ConfigError

SOFTPLUS_ONE = math.log(math.e - 1)  # softplus(SOFTPLUS_ONE) = 1


def signal_options(cfg: TemporalConfig, training: bool = False) -> SignalOptions:
    """The `SignalOptions` of `model.temporal.signals`; `training` applies `train_mask_clicks`."""
    s = cfg.signals
    try:
        return SignalOptions(windows_h=tuple(s.windows_h), window=s.window, ctr_prior_mean=s.ctr_prior_mean,
                             ctr_prior_strength=s.ctr_prior_strength,
                             mask_split_clicks=s.train_mask_clicks if training else s.mask_split_clicks,
                             mask_seed=s.mask_seed, aggregates=s.aggregates, history_dedupe_h=s.history_dedupe_h)
    except ConfigError as e:
        raise ConfigError(f"model.temporal.{e}") from None


class TemporalBranch(nn.Module):
    def __init__(self, cfg: TemporalConfig, names: tuple[str, ...], dim: int, ctr_prior_mean: float):
        super().__init__()
        self.names = tuple(names)
        self.use_content = cfg.content
        self.use_gate = cfg.gate
        col = {n: i for i, n in enumerate(self.names)}
        if "age_h" not in col or "age_known" not in col:
            raise ConfigError("model.temporal: the signals must include age_h and age_known")
        self.age_col, self.known_col = col["age_h"], col["age_known"]
        self.count_cols = [i for n, i in col.items() if n.startswith(("inviews_", "clicks_"))]
        self.ctr_cols = [i for n, i in col.items() if n.startswith("ctr_")]
        self.agg_cols = [col[n] for n in AGGREGATE_COLUMNS if n in col]
        self.log_prior = math.log(ctr_prior_mean)
        self.register_buffer("edges", torch.tensor(list(cfg.age_edges_h), dtype=torch.float32), persistent=False)
        n_buckets = len(cfg.age_edges_h) + 2  # below/between/above the edges, plus "age unknown"
        n_x = 1 + len(self.count_cols) + len(self.ctr_cols) + len(self.agg_cols)
        h = cfg.hidden
        self.age_embedding = nn.Embedding(n_buckets, h)
        nn.init.normal_(self.age_embedding.weight, 0.0, 0.1)
        self.features = nn.Linear(n_x, h)
        self.out = nn.Linear(h, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.content_popularity = nn.Linear(dim, 1, bias=False) if cfg.content_popularity else None
        if self.content_popularity is not None:
            nn.init.zeros_(self.content_popularity.weight)
        if cfg.gate:
            self.gate_hidden = nn.Linear(dim, h)
            self.gate_out = nn.Linear(h, 1)
            nn.init.zeros_(self.gate_out.weight)
            nn.init.constant_(self.gate_out.bias, SOFTPLUS_ONE)
        else:
            self.gate_scalar = nn.Parameter(torch.tensor(SOFTPLUS_ONE))

    @property
    def n_features(self) -> int:
        return len(self.names)

    def buckets(self, signals: torch.Tensor) -> torch.Tensor:
        """b(c,t) for signals [..., F]: the age bucket, or the last index for an unknown age."""
        age = signals[..., self.age_col]
        known = (signals[..., self.known_col] > 0.5) & torch.isfinite(age)
        b = torch.bucketize(torch.nan_to_num(age, nan=0.0).clamp_min(0).contiguous(), self.edges)
        return torch.where(known, b, torch.full_like(b, len(self.edges) + 1))

    def inputs(self, signals: torch.Tensor) -> torch.Tensor:
        """x(c,t) [..., n_x]: the scaled numeric features (NaN and negative counts read as 0)."""
        s = torch.nan_to_num(signals.float(), nan=0.0)
        known = (s[..., self.known_col] > 0.5).to(s.dtype)
        parts = [(torch.log1p(s[..., self.age_col].clamp_min(0)) * known)[..., None]]
        if self.count_cols:
            parts.append(torch.log1p(s[..., self.count_cols].clamp_min(0)))
        if self.ctr_cols:
            parts.append(torch.log(s[..., self.ctr_cols].clamp_min(1e-6)) - self.log_prior)
        if self.agg_cols:
            parts.append(torch.log1p(s[..., self.agg_cols].clamp_min(0)))
        return torch.cat(parts, dim=-1)

    def popularity(self, signals: torch.Tensor, news: torch.Tensor) -> torch.Tensor:
        """p(c,t) [...] for signals [..., F] and the candidates' news vectors [..., D]."""
        if signals.shape[-1] != self.n_features:
            raise ConfigError(f"time signals: got {signals.shape[-1]} columns, the model reads {self.n_features} "
                              f"({', '.join(self.names)})")
        h = F.gelu(self.age_embedding(self.buckets(signals)) + self.features(self.inputs(signals)))
        p = self.out(h)[..., 0]
        if self.content_popularity is not None:
            p = p + self.content_popularity(news.to(p.dtype))[..., 0]
        return p

    def gate(self, users: torch.Tensor) -> torch.Tensor:
        """g(r_u) [B] for user vectors [B, D] (the learned scalar, broadcast, without the gate)."""
        if not self.use_gate:
            return F.softplus(self.gate_scalar).expand(users.shape[0]).to(users.dtype)
        return F.softplus(self.gate_out(torch.tanh(self.gate_hidden(users)))[..., 0])

    def combine(self, content: torch.Tensor, gate: torch.Tensor, popularity: torch.Tensor) -> torch.Tensor:
        """s = r_u · r_c + g(r_u) · p(c,t) (without the content term under `content: false`); `gate`
        broadcasts against `popularity` (e.g. [B, 1] against [B, C])."""
        time_score = gate * popularity
        return content + time_score if self.use_content else time_score
