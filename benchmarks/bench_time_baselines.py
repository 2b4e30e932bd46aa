"""Validation AUC of every baseline and of the ideal content model, on synthetic data at given time effects.

    .venv/bin/python benchmarks/bench_time_baselines.py [--effects 0,1] [--seeds 0] [--users 2000] [--articles 1500]

For each time effect X and seed, `mtnews data synth` data (the CLI defaults unless told) is written to a
temporary folder and every baseline of `mtnews evaluate --scorer` scores its validation split (the
oracle ranks by the generator's utility, time term included), plus:

* `ideal content`: what a perfect content model could know. It sees the true category and sentiment of
  the user's last 20 history clicks (no titles, no time) and scores an article by the generator's own
  content weights: CAT_W * log(p̂_cat + PREF_EPS) + SENT_W * log(p̂_sent), with p̂ the click shares
  smoothed by PREF_ALPHA per category and 1 per sentiment. It bounds what content-only MTRec can reach.
  `ideal content (last 50)` reads 50 history clicks instead.
* `ideal content + freshness`: the ideal content score plus the generator's freshness term at its typical
  latents, -X * FRESH_W * log(1 + age_h / FRESH_HOURS) (the user's weight f_u and the article's time scale
  are latent; their mean and median stand in). It sees no buzz and no counts: about what a past-only model
  that knew every article's true category could reach, and so a practical ceiling for MTRec-T.
* the time baselines again under `signals.window: split` (transductive, for comparison only).

The rows `recency`, `trending` and `ctr` use the default past-only signals.

Prints one table (rows: scorers; columns: X / seed) and the load average.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from benchcommon import load_average


def ideal_content_auc(root: Path, split: str = "validation", last: int = 20, time_effect: float = 0.0) -> float:
    from mtnews.data import synth
    from mtnews.data.schema import SENTIMENT_LABELS
    from mtnews.evaluate.metrics import ranking_metrics

    art = pl.read_parquet(root / "articles.parquet",
                          columns=["article_id", "category_str", "sentiment_label", "published_time"])
    cats = sorted(art["category_str"].unique().to_list())
    art = art.sort("article_id").with_columns(
        pl.col("category_str").replace_strict(cats, list(range(len(cats)))).alias("c"),
        pl.col("sentiment_label").replace_strict(list(SENTIMENT_LABELS), [0, 1, 2]).alias("s"))
    ids, acat, asent = (art[c].to_numpy() for c in ("article_id", "c", "s"))
    published = art["published_time"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()
    hist = pl.read_parquet(root / split / "history.parquet", columns=["user_id", "article_id_fixed"]).sort("user_id")
    tails = hist["article_id_fixed"].list.tail(last)
    owner = np.repeat(np.arange(hist.height), tails.list.len().to_numpy())
    pos = np.searchsorted(ids, tails.explode().to_numpy())
    n_cat = np.zeros((hist.height + 1, len(cats)))
    n_sent = np.zeros((hist.height + 1, 3))
    np.add.at(n_cat, (owner, acat[pos]), 1)
    np.add.at(n_sent, (owner, asent[pos]), 1)
    p_cat = (n_cat + synth.PREF_ALPHA) / (n_cat.sum(1, keepdims=True) + len(cats) * synth.PREF_ALPHA)
    p_sent = (n_sent + 1) / (n_sent.sum(1, keepdims=True) + 3)
    util = synth.CAT_W * np.log(p_cat + synth.PREF_EPS)
    sent = synth.SENT_W * np.log(p_sent)

    b = pl.read_parquet(root / split / "behaviors.parquet",
                        columns=["user_id", "impression_time", "article_ids_inview", "article_ids_clicked"])
    users = hist["user_id"].to_numpy()
    u = np.searchsorted(users, b["user_id"].to_numpy()).clip(0, len(users) - 1)
    u = np.where(users[u] == b["user_id"].to_numpy(), u, hist.height)  # no history: the all-zero last row
    lengths = b["article_ids_inview"].list.len().to_numpy()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = b["article_ids_inview"].explode().to_numpy()
    row = np.repeat(np.arange(b.height), lengths)
    clicked = b.with_row_index("r").select("r", pl.col("article_ids_clicked")).explode("article_ids_clicked")
    key = (row.astype(np.int64) << 32) | flat.astype(np.int64)
    ckey = (clicked["r"].cast(pl.Int64).to_numpy() << 32) | clicked["article_ids_clicked"].cast(pl.Int64).to_numpy()
    labels = np.isin(key, ckey).astype(np.int8)
    p = np.searchsorted(ids, flat)
    score = util[u[row], acat[p]] + sent[u[row], asent[p]]
    if time_effect:
        t = b["impression_time"].cast(pl.Datetime("us")).cast(pl.Int64).to_numpy()[row]
        age_h = np.maximum(t - published[p], 0) / 3.6e9
        score = score - time_effect * synth.FRESH_W * np.log1p(age_h / synth.FRESH_HOURS)
    return ranking_metrics(labels, score, offsets=offsets)["auc"]


def measure(x: float, seed: int, users: int, articles: int) -> dict[str, float]:
    from mtnews.data.synth import synthesize
    from mtnews.evaluate.scorers import TimeScorer
    from mtnews.evaluate.split_scoring import BASELINES, score_split

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        synthesize(root, users=users, articles=articles, seed=seed, time_effect=x)
        out = {name: score_split(root, "validation", scorer=name)["auc"] for name in BASELINES}
        for name in TimeScorer.NAMES:  # the transductive mode, for comparison only
            out[f"{name} (split window)"] = score_split(root, "validation", scorer=name,
                                                        signals={"window": "split"})["auc"]
        out["ideal content"] = ideal_content_auc(root)
        out["ideal content (last 50)"] = ideal_content_auc(root, last=50)
        if x:
            out["ideal content + freshness"] = ideal_content_auc(root, time_effect=x)
            out["ideal content + freshness (last 50)"] = ideal_content_auc(root, last=50, time_effect=x)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--effects", default="0,1", help="time effects X, comma-separated")
    ap.add_argument("--seeds", default="0", help="seeds, comma-separated")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--articles", type=int, default=1500)
    args = ap.parse_args()
    cols, results = [], {}
    t0 = time.perf_counter()
    for x in (float(v) for v in args.effects.split(",")):
        for seed in (int(v) for v in args.seeds.split(",")):
            col = f"X={x:g} seed {seed}"
            cols.append(col)
            for name, auc in measure(x, seed, args.users, args.articles).items():
                results.setdefault(name, {})[col] = auc
    table = Table(title=f"validation AUC, {args.users} users, {args.articles} articles")
    table.add_column("scorer")
    for c in cols:
        table.add_column(c, justify="right")
    for name, row in results.items():
        table.add_row(name, *(f"{row[c]:.4f}" if c in row else "" for c in cols))
    console = Console()
    console.print(table)
    console.print(f"{time.perf_counter() - t0:.1f} s; load average {load_average()}")


if __name__ == "__main__":
    main()
