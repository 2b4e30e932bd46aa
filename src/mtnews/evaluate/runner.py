"""Stream a split through a scorer in chunks of impressions: metrics and/or a predictions.zip.

Peak memory is one chunk plus the scorer's own state (for a model, the article-vector table), so the
13.5M-impression test set streams like a small split.
"""

from __future__ import annotations

from pathlib import Path

from mtnews.data.articles import ArticleTable
from mtnews.data.behaviors import count_behaviors, iter_behaviors
from mtnews.data.history import UserHistories
from mtnews.data.impressions import build_eval_impressions
from mtnews.data.layout import SplitPaths
from mtnews.evaluate.metrics import MetricAccumulator
from mtnews.evaluate.submission import PredictionWriter


def run_scorer(
    scorer, paths: SplitPaths, articles: ArticleTable, histories: UserHistories, chunk_rows: int = 50_000,
    predictions_out: str | Path | None = None, progress: bool = False,
) -> dict:
    from tqdm.auto import tqdm

    acc = MetricAccumulator() if paths.labelled else None
    writer = PredictionWriter(predictions_out) if predictions_out else None
    unknown = impressions = 0
    bar = tqdm(total=count_behaviors(paths), disable=not progress, desc=f"score {paths.split}", unit="imp")
    try:
        if writer:
            writer.__enter__()
        for df in iter_behaviors(paths, chunk_rows):
            imps = build_eval_impressions(df, articles, histories)
            scores = scorer.score(imps)
            if acc is not None:
                acc.update(imps.labels, scores, imps.offsets)
            if writer:
                writer.write_chunk(imps.impression_id, scores, imps.offsets)
            unknown += imps.unknown
            impressions += len(imps)
            bar.update(len(imps))
    except BaseException:
        if writer:
            writer.abort()
        raise
    finally:
        bar.close()
    if writer:
        writer.close()
    result = acc.result() if acc is not None else {"impressions": impressions}
    result["unknown_candidates"] = unknown
    return result
