"""Turn sample indices into a deduplicated `Batch`: each unique article in the batch is tokenized rows once.

Popular articles recur across histories and candidates, so encoding unique articles and scattering the
vectors back to their slots is what keeps BERT cost proportional to distinct titles, not to slots.
`dedupe=False` gives every slot its own row (the naive baseline that the benchmark compares against).
With a `prefix` cache the batch also carries the unique titles' cached prefix output (`Batch.prefix`).
For MTRec-T, `sample_signals` computes every sample's candidate signals at its impression time once per
epoch (vectorised, from the split's event index), and each batch gathers its rows (`Batch.cand_signals`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mtnews.data.articles import ArticleTable
from mtnews.data.history import UserHistories
from mtnews.data.samples import TrainSamples
from mtnews.data.signals import SplitSignals
from mtnews.model.mtrec import Batch
from mtnews.model.tokens import TitleTokens
from mtnews.train.prefix_cache import PrefixCache


def sample_signals(signals: SplitSignals, samples: TrainSamples, articles: ArticleTable) -> np.ndarray:
    """float32 [N, 1+K, F]: the time signals of each sample's candidates at its impression time, columns in
    `signals.options.names()` order. A candidate missing from the articles file (UNK) reads as an article
    without events or published time."""
    n, width = samples.candidates.shape
    ids = articles.article_ids[samples.candidates.ravel()]
    offsets = np.arange(0, n * width + 1, width, dtype=np.int64)
    names = signals.options.names()
    table = signals.compute(samples.impression_id, ids, offsets, names)
    return table.matrix(names).reshape(n, width, len(names))


@dataclass
class BatchBuilder:
    samples: TrainSamples
    histories: UserHistories
    articles: ArticleTable
    tokens: TitleTokens
    aux_on_candidates: bool = False
    dedupe: bool = True
    prefix: PrefixCache | None = None
    signals: np.ndarray | None = None  # `sample_signals` of `samples` (MTRec-T)
    history_size: int | None = None  # keep each history's last N clicks (the matrix is left-padded)

    def __call__(self, idx: np.ndarray) -> Batch:
        hist = self.histories.matrix[self.samples.user_row[idx]]
        if self.history_size is not None and self.history_size < hist.shape[1]:
            hist = hist[:, -self.history_size:]
        cand = self.samples.candidates[idx]
        slots = np.concatenate([hist.ravel(), cand.ravel()])
        if self.dedupe:
            uniq, inv = np.unique(slots, return_inverse=True)
            if uniq[0] == 0:  # PAD keeps position 0 and is never encoded
                uniq, pos = uniq[1:], inv
            else:
                pos = inv + 1
        else:
            real = slots != 0
            uniq = slots[real]
            pos = np.zeros(len(slots), dtype=np.int64)
            pos[real] = np.arange(1, len(uniq) + 1)
        n_hist = hist.size
        hist_pos = pos[:n_hist].reshape(hist.shape)
        cand_pos = pos[n_hist:].reshape(cand.shape)
        counted = pos if self.aux_on_candidates else hist_pos.ravel()
        weight = np.bincount(counted, minlength=len(uniq) + 1)[1:]
        input_ids, mask = self.tokens.batch(uniq)
        a = self.articles
        return Batch(
            input_ids=input_ids,
            attention_mask=mask,
            hist_pos=torch.from_numpy(hist_pos.astype(np.int64)),
            cand_pos=torch.from_numpy(cand_pos.astype(np.int64)),
            aux_weight=torch.from_numpy(weight.astype(np.float32)),
            category=torch.from_numpy(a.category[uniq]),
            sentiment=torch.from_numpy(a.sentiment[uniq]),
            entities=torch.from_numpy(a.entities[uniq]) if a.entities.shape[1] else torch.zeros(len(uniq), 0),
            entities_known=torch.from_numpy(a.entities_known[uniq]),
            subcategory=torch.from_numpy(a.subcategory[uniq]),
            prefix=self.prefix.batch(uniq) if self.prefix is not None else None,
            cand_signals=torch.from_numpy(self.signals[idx]) if self.signals is not None else None,
        )
