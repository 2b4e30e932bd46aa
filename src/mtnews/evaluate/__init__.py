"""Evaluation: exact ranking metrics and the RecSys Challenge 2024 submission format."""

from mtnews.evaluate.metrics import METRIC_NAMES, MetricAccumulator, ranking_metrics
from mtnews.evaluate.submission import PredictionWriter, read_predictions, write_predictions

__all__ = [
    "METRIC_NAMES",
    "MetricAccumulator",
    "PredictionWriter",
    "ranking_metrics",
    "read_predictions",
    "write_predictions",
]
