"""MIND leaderboard submissions: ``prediction.zip`` holding one member ``prediction.txt``.

The lines are those of the RecSys'24 format (`mtnews.evaluate.submission`), which MIND's scorer shares:
``<impression_id> [r1,r2,...]``, for every in-view article in behaviors.tsv order its 1-based rank (1 =
highest score, ties by position). MIND's scorer reads prediction lines alongside the truth file's lines,
so write impressions in behaviors.tsv order, which `mtnews data convert --from mind` keeps.

Only the member name differs, so the ranking, rendering, streaming, atomic zipping and validation are
those of `submission`: same guarantees (streamed, deterministic bytes, nothing left behind on error).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mtnews.errors import ConfigError
from mtnews.evaluate import submission
from mtnews.evaluate.metrics import ArrayLike
from mtnews.evaluate.submission import DEFAULT_COMPRESSLEVEL, PredictionWriter, read_predictions, zip_predictions_text

MEMBER = "prediction.txt"
# Submission format -> the zip member it names; `predict` picks the format from the dataset's layout.
FORMATS = {"ebnerd": submission.MEMBER, "mind": MEMBER}


def submission_member(fmt: str) -> str:
    """The zip member of submission format `fmt` (ebnerd: predictions.txt, mind: prediction.txt)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown submission format '{fmt}', expected one of {', '.join(FORMATS)}")
    return FORMATS[fmt]


class MindPredictionWriter(PredictionWriter):
    """`PredictionWriter` (same interface: context manager, `write_chunk`, `close`, `abort`) for MIND."""

    def __init__(self, path: str | os.PathLike, compresslevel: int = DEFAULT_COMPRESSLEVEL) -> None:
        super().__init__(path, compresslevel, member=MEMBER)


def zip_mind_predictions_text(txt: str | os.PathLike, path: str | os.PathLike,
                              compresslevel: int = DEFAULT_COMPRESSLEVEL) -> Path:
    """Deflate a finished prediction text (e.g. a resumable predict's) into a MIND zip, atomically."""
    return zip_predictions_text(txt, path, compresslevel, member=MEMBER)


def write_mind_predictions(impression_ids: ArrayLike, scores: ArrayLike, path: str | os.PathLike,
                           offsets: ArrayLike | None = None, compresslevel: int = DEFAULT_COMPRESSLEVEL) -> Path:
    """A complete MIND submission zip in one call; arguments as `submission.write_predictions`."""
    with MindPredictionWriter(path, compresslevel) as writer:
        writer.write_chunk(impression_ids, scores, offsets)
    return Path(path)


def read_mind_predictions(path: str | os.PathLike) -> tuple[np.ndarray, list[np.ndarray]]:
    """(impression ids, one rank array per impression) of a MIND zip; malformed lines name file and line."""
    return read_predictions(path, member=MEMBER)
