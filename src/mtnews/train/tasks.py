"""Auxiliary tasks a dataset cannot teach, switched off before training, with a one-line note.

Sentiment: its head has a fixed size (three labels), so on articles without any sentiment label (MIND has
none) it would train on nothing. Category, NER and subcategory heads are sized by the labels the articles
have, so without labels they simply do not exist.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mtnews.config import Config
from mtnews.data.articles import labelled_tasks
from mtnews.data.layout import split_paths


def without_unlabelled_tasks(cfg: Config, data: str | Path) -> tuple[Config, str | None]:
    """(`cfg`, None), or a copy with tasks.sentiment = 0 and the note saying why, for data without sentiment
    (`model.interest` then drops sentiment too: its head no longer exists)."""
    if cfg.tasks.sentiment <= 0:
        return cfg, None
    paths = split_paths(data, "train")
    if "sentiment" in labelled_tasks(paths.articles):
        return cfg, None
    where = f"{paths.source} (MIND)" if paths.kind == "mind" else str(paths.articles)
    note = (f"tasks.sentiment {cfg.tasks.sentiment:g} -> 0: the articles of {where} have no sentiment labels, "
            "so the sentiment task is off")
    model = cfg.model
    if "sentiment" in model.interest:
        model = dataclasses.replace(model, interest=[t for t in model.interest if t != "sentiment"])
        note += " (and model.interest scores category only)" if model.interest else " (and so is model.interest)"
    return dataclasses.replace(cfg, tasks=dataclasses.replace(cfg.tasks, sentiment=0.0), model=model), note
