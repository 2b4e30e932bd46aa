"""`mtnews data check`: validate a dataset and summarise it. Any invalid file raises DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from mtnews.data.articles import labelled_tasks, load_articles
from mtnews.data.behaviors import read_behaviors
from mtnews.data.history import read_history
from mtnews.data.layout import SPLITS, resolve_dataset, split_paths
from mtnews.data.oracle import load_oracle
from mtnews.errors import DataError


def _stats(x: np.ndarray) -> dict:
    if len(x) == 0:
        return {"min": 0, "median": 0.0, "mean": 0.0, "max": 0}
    return {"min": int(x.min()), "median": float(np.median(x)), "mean": round(float(x.mean()), 2), "max": int(x.max())}


def check_dataset(root: str | Path) -> dict:
    """The summary of every split; a MIND folder is checked through its conversion (made on first use)."""
    if not Path(root).is_dir():
        raise DataError(f"{root}: dataset folder not found")
    ds = resolve_dataset(root)
    root = ds.root
    # Every split folder present is checked, so one missing its behaviors.parquet is an error, not skipped.
    splits = [s for s in SPLITS if (root / s).is_dir()]
    if not splits:
        raise DataError(f"{root}: no split found, expected {root}/<train|validation|test>/behaviors.parquet")
    articles = load_articles(split_paths(root, splits[0]).articles)
    n_articles = len(articles) - 2
    if n_articles == 0:
        raise DataError(f"{articles.path}: no articles, expected at least one row")
    report = {"root": str(ds.source), "format": ds.kind, "articles": n_articles,
              "categories": articles.num_categories, "subcategories": len(articles.subcategory_names),
              "labelled_tasks": sorted(labelled_tasks(articles.path)), "splits": {}}
    if ds.kind == "mind":
        report["converted"] = str(ds.root)
    for split in splits:
        paths = split_paths(root, split)
        beh = read_behaviors(paths)  # rejects a file without rows
        hist = read_history(paths.history)
        hist_len = hist["article_id_fixed"].list.drop_nulls().list.len().fill_null(0).to_numpy()
        no_history = ~beh["user_id"].cast(pl.Int64).is_in(hist["user_id"].cast(pl.Int64).implode())
        inview = beh["article_ids_inview"].list.drop_nulls()
        if paths.oracle.exists():  # synthetic datasets: checked as `evaluate --scorer oracle` would read it
            load_oracle(paths)
        ids = [inview.explode().drop_nulls().to_numpy(), hist["article_id_fixed"].explode().drop_nulls().to_numpy()]
        row = {
            "impressions": beh.height,
            "users": beh["user_id"].n_unique(),
            "users_without_history": beh["user_id"].filter(no_history).n_unique(),
            "inview_length": _stats(inview.list.len().fill_null(0).to_numpy()),
            "history_length": _stats(hist_len),
            "empty_inview": int((inview.list.len().fill_null(0) == 0).sum()),
        }
        if paths.labelled:
            clicked = beh["article_ids_clicked"].list.drop_nulls()
            row["without_click"] = int((clicked.list.len().fill_null(0) == 0).sum())
            ids.append(clicked.explode().drop_nulls().to_numpy())
        all_ids = np.unique(np.concatenate(ids).astype(np.int64))
        row["unknown_article_ids"] = int((articles.index(all_ids) == 1).sum())
        report["splits"][split] = row
    return report
