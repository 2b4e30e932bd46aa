"""The CF scorers of `mtnews evaluate --scorer cf-user|cf-als|mtrec+cf`, built for one split.

Each takes a chunk of `EvalImpressions` and returns scores aligned with its candidates, as every other
scorer does (evaluate/scorers.py), so the same streaming runner, metrics and submission writer serve them.

A run's vectors: every article of the dataset's articles file is encoded once (`run_vectors`), since the
neighbour search needs the vector of every history user, not only of the split's users. `SegmentScorer`
wraps any scorer to report the same metrics per history segment (cold / 1-4 / 5+ clicks).
"""

from __future__ import annotations

import numpy as np

from mtnews.cf.als import AlsModel, als_training_clicks
from mtnews.cf.blend import blend, fit_weight
from mtnews.cf.clicks import ClickLog, ImpressionTimes
from mtnews.cf.neighbours import UserNeighbours
from mtnews.cf.params import CFParams
from mtnews.cf.user_cf import UserCF
from mtnews.data.articles import FIRST, PAD, ArticleTable
from mtnews.data.behaviors import read_behaviors
from mtnews.data.history import UserHistories, load_histories
from mtnews.data.holdout import split_holdout
from mtnews.data.impressions import EvalImpressions, build_eval_impressions
from mtnews.data.layout import SplitPaths, split_paths
from mtnews.errors import DataError
from mtnews.evaluate.metrics import MetricAccumulator
from mtnews.evaluate.run_scorer import ModelScorer
from mtnews.model.run import Run
from mtnews.model.scoring import ArticleVectors
from mtnews.model.tokens import tokenize_titles

SEGMENTS = (("cold", 0, 1), ("1-4", 1, 5), ("5+", 5, None))  # history clicks, as retrieval reports them
USER_BLOCK = 65_536


def run_vectors(run: Run, articles: ArticleTable) -> ArticleVectors:
    tokens = tokenize_titles(articles.titles, run.tokenizer, run.cfg.model.max_title_length)
    device = next(run.model.parameters()).device
    return ArticleVectors.build(run.model, tokens, np.arange(FIRST, len(articles)), device)


def history_user_vectors(vectors: ArticleVectors, histories: UserHistories) -> tuple[np.ndarray, np.ndarray]:
    """(history rows, user vectors) of every history user with at least one click, in blocks."""
    rows = np.flatnonzero((histories.matrix != PAD).any(axis=1))
    parts = [vectors.users(histories.matrix[rows[s : s + USER_BLOCK]]).cpu().numpy()
             for s in range(0, len(rows), USER_BLOCK)]
    dim = vectors.dim
    return rows, (np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32))


class UserCFScorer:
    name = "cf-user"

    def __init__(self, cf: UserCF, neighbours: UserNeighbours, times: ImpressionTimes):
        self.cf, self.neighbours, self.times = cf, neighbours, times

    @classmethod
    def for_split(cls, vectors: ArticleVectors, paths: SplitPaths, histories: UserHistories, params: CFParams,
                  behaviors=None) -> "UserCFScorer":
        rows, users = history_user_vectors(vectors, histories)
        clicks = ClickLog.for_split(paths, histories)
        return cls(UserCF(clicks, params.half_life_us), UserNeighbours(rows, users, params),
                   ImpressionTimes.for_split(paths, behaviors))

    def score(self, imps: EvalImpressions) -> np.ndarray:
        t = self.times.times_us[self.times.find(imps.impression_id)]
        owner = np.repeat(np.arange(len(imps)), np.diff(imps.offsets))
        return self.cf.at(self.neighbours.of_rows(imps.user_row), t, owner, imps.article_ids)


class AlsScorer:
    name = "cf-als"

    def __init__(self, model: AlsModel, times: ImpressionTimes):
        self.model, self.times = model, times
        self.candidates = self.known_candidates = self.known_users = self.impressions = 0

    def score(self, imps: EvalImpressions) -> np.ndarray:
        users = self.times.user_ids[self.times.find(imps.impression_id)]
        owner = np.repeat(np.arange(len(imps)), np.diff(imps.offsets))
        self.impressions += len(imps)
        self.known_users += int((self.model.user_rows(users) >= 0).sum())
        self.candidates += len(imps.article_ids)
        self.known_candidates += int((self.model.item_rows(imps.article_ids) >= 0).sum())
        return self.model.score(users[owner], imps.article_ids)

    @property
    def description(self) -> dict:
        return {"users": len(self.model.user_ids), "articles": len(self.model.article_ids),
                "known_user_share": self.known_users / max(self.impressions, 1),
                "known_candidate_share": self.known_candidates / max(self.candidates, 1)}


class BlendScorer:
    name = "mtrec+cf"

    def __init__(self, content, cf, weight: float):
        self.content, self.cf, self.weight = content, cf, weight

    def score(self, imps: EvalImpressions) -> np.ndarray:
        return blend(self.content.score(imps), self.cf.score(imps), imps.offsets, self.weight)


class SegmentScorer:
    """Passes a scorer through, feeding one MetricAccumulator per history segment on the way."""

    def __init__(self, scorer, histories: UserHistories):
        self.scorer, self.name = scorer, scorer.name
        self.lengths = histories.lengths()
        self.accs = [MetricAccumulator() for _ in SEGMENTS]

    def score(self, imps: EvalImpressions) -> np.ndarray:
        scores = self.scorer.score(imps)
        if imps.labels is not None:
            seg = np.zeros(len(imps), dtype=np.int64)
            for i, (_, lo, _) in enumerate(SEGMENTS):
                seg[self.lengths[imps.user_row] >= lo] = i
            owner = np.repeat(np.arange(len(imps)), np.diff(imps.offsets))
            for i, acc in enumerate(self.accs):
                keep = seg == i
                if keep.any():
                    lengths = np.diff(imps.offsets)[keep]
                    offsets = np.concatenate([[0], np.cumsum(lengths)])
                    acc.update(imps.labels[keep[owner]], scores[keep[owner]], offsets)
        return scores

    def segments(self) -> dict:
        return {label: acc.result() for (label, _, _), acc in zip(SEGMENTS, self.accs)}


def fit_blend(run: Run, data, params: CFParams, paths: SplitPaths, articles: ArticleTable,
              vectors: ArticleVectors) -> dict:
    """The blend weight, chosen on the train log's selection holdout (see `blend`); what it saw, for the result.
    `articles` and `vectors` are the evaluated split's (`paths`), reused when train reads the same file."""
    train = split_paths(data, "train")
    if not train.labelled:
        raise DataError(f"{train.behaviors}: the selection holdout needs the labelled train log")
    if train.articles != paths.articles:
        articles = run.load_dataset_articles(train.articles)
        vectors = run_vectors(run, articles)
    histories = load_histories(train.history, articles, run.history_size)
    behaviors = read_behaviors(train, extra=("impression_time",))
    cut = split_holdout(behaviors, params.holdout_hours, str(train.behaviors))
    imps = build_eval_impressions(cut.holdout, articles, histories, train.behaviors)
    content = ModelScorer(vectors, histories, np.arange(FIRST, len(articles)))
    cf = UserCFScorer.for_split(vectors, train, histories, params, behaviors)
    parts = [(content.score(c), cf.score(c)) for c in imps.chunks(50_000)]
    weight, aucs = fit_weight(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                              imps.labels, imps.offsets)
    return {"weight": weight, "holdout_auc": aucs, "holdout_impressions": len(imps),
            "holdout_cutoff": str(cut.cutoff), "holdout_hours": params.holdout_hours}


def make_cf_scorer(name: str, data, paths: SplitPaths, run: Run | None, articles: ArticleTable,
                   histories: UserHistories, params: CFParams):
    """(scorer, description) for cf-user, cf-als or mtrec+cf on `paths`' split."""
    params = params.validate()
    info: dict = {"params": params.to_dict()}
    if name == "cf-als":
        model = AlsModel.fit(als_training_clicks(data, paths), params, str(paths.history))
        return AlsScorer(model, ImpressionTimes.for_split(paths)), info
    vectors = run_vectors(run, articles)
    cf = UserCFScorer.for_split(vectors, paths, histories, params)
    info.update(neighbour_users=len(cf.neighbours), clicks=len(cf.cf.clicks))
    if name == "cf-user":
        return cf, info
    info["blend"] = fit_blend(run, data, params, paths, articles, vectors)
    content = ModelScorer(vectors, histories, np.arange(FIRST, len(articles)))
    return BlendScorer(content, cf, info["blend"]["weight"]), info
