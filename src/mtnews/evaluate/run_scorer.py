"""A trained run as a streaming scorer: encode every article a split needs once, then score its chunks.

Memory: the article vectors and the user encoder's per-article slot logits ([n_articles, D] float32 each)
are the only state that lives for the whole split. Finding the articles a split needs streams the
behaviors file in record batches into two boolean masks (one per article, one per history row), so it
never materialises the exploded in-view column of a 13.5M-impression test set. Scoring itself is
`model.scoring.ArticleVectors`, the kernel every other caller uses too.

A run with MTRec-T's branch also builds the split's time-signal index once (`data.signals.SplitSignals`,
with the run's `signal_options`: train plus the split's own earlier events); each chunk then computes its
candidates' signals and hands them to the kernel. A chunk's signals depend on the chunk alone, so a resumed
`predict` scores exactly what an uninterrupted one does.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from mtnews.data.behaviors import behavior_batches, behavior_columns
from mtnews.data.articles import PAD, ArticleTable
from mtnews.data.history import UserHistories
from mtnews.data.impressions import EvalImpressions
from mtnews.data.layout import SplitPaths
from mtnews.data.signals import SplitSignals
from mtnews.errors import DataError
from mtnews.model.run import Run
from mtnews.model.scoring import ArticleVectors
from mtnews.model.mtrec import MTRec
from mtnews.model.tokens import TitleTokens, tokenize_titles

SCAN_ROWS = 1 << 17  # behaviors rows per record batch when scanning a split for its articles


def split_article_indices(paths: SplitPaths, articles: ArticleTable, histories: UserHistories,
                          batch_rows: int = SCAN_ROWS) -> np.ndarray:
    """Every article index a split's impressions can touch: in-view lists and the users' histories.

    Sorted and unique, PAD excluded; UNK (1) is included when some in-view id is unknown. Memory is one
    record batch plus a boolean per article and per history row, whatever the number of impressions.
    """
    behavior_columns(paths)  # validates the file up front
    need = np.zeros(len(articles), dtype=bool)
    seen_rows = np.zeros(histories.matrix.shape[0], dtype=bool)
    for batch in behavior_batches(paths, ["user_id", "article_ids_inview"], batch_rows):
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


class ModelScorer:
    """Scores a split's impressions with a loaded run; the dataset's titles are encoded by the run's tokenizer."""

    name = "model"

    def __init__(self, vectors: ArticleVectors, histories: UserHistories, indices: np.ndarray,
                 signals: SplitSignals | None = None):
        self.vectors = vectors
        self.histories = histories
        self.indices = indices
        self.signals = signals

    @classmethod
    def for_split(cls, run: Run, paths: SplitPaths, articles: ArticleTable, histories: UserHistories,
                  batch_size: int = 256) -> "ModelScorer":
        if run.history_size != histories.history_size:
            raise DataError(f"{paths.history}: histories were built with {histories.history_size} clicks, "
                            f"the run {run.dir} uses data.history_size {run.history_size}")
        tokens = tokenize_titles(articles.titles, run.tokenizer, run.cfg.model.max_title_length)
        options = run.signal_options
        signals = SplitSignals.load(paths.root, paths.split, options) if options is not None else None
        return cls.from_model(run.model, tokens, paths, articles, histories, batch_size, signals)

    @classmethod
    def from_model(cls, model: MTRec, tokens: TitleTokens, paths: SplitPaths, articles: ArticleTable,
                   histories: UserHistories, batch_size: int = 256,
                   signals: SplitSignals | None = None) -> "ModelScorer":
        """The scorer for an in-memory model (benchmarks, notebooks), on the model's device; a model with
        the time-aware branch needs the split's `signals`."""
        device = next(model.parameters()).device
        indices = split_article_indices(paths, articles, histories)
        return cls(ArticleVectors.build(model, tokens, indices, device, batch_size), histories, indices, signals)

    @property
    def description(self) -> dict | None:
        """What produced MTRec-T's time signals (as the time baselines say it); None for content-only."""
        if self.signals is None:
            return None
        o = self.signals.options
        return {"window": o.window, "options": o.to_dict(), "sources": list(self.signals.sources)}

    def score(self, imps: EvalImpressions) -> np.ndarray:
        matrix = None
        if self.signals is not None and self.vectors.model.temporal is not None:
            names = self.vectors.model.temporal.names
            matrix = self.signals.for_impressions(imps, names).matrix(names)
        return self.vectors.score(self.histories, imps, signals=matrix)
