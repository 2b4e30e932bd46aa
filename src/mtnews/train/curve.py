"""Training-curve figures from a run's metrics.csv and eval.csv (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtnews.io import atomic_path
from mtnews.train.logs import read_csv


def smooth(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average; the first points average what exists so far."""
    if len(y) == 0 or window <= 1:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, len(y) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_training_curve(run_dir: str | Path, out_png: str | Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rows = read_csv(run_dir / "metrics.csv")
    evals = read_csv(run_dir / "eval.csv")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if rows:
        step = np.array([int(r["step"]) for r in rows])
        window = max(1, len(rows) // 25)
        for key, label in (("loss", "total (weighted)"), ("loss_main", "main (NCE)"),
                           ("loss_category", "category"), ("loss_sentiment", "sentiment"), ("loss_ner", "NER"),
                           ("loss_subcategory", "subcategory")):
            vals = [r.get(key) for r in rows]
            if any(v not in (None, "", "nan") for v in vals):
                y = np.array([float(v) if v not in (None, "") else np.nan for v in vals])
                ax1.plot(step, smooth(y, window), label=label)
        ax1.legend()
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("training loss (moving average)")
    ax1.set_title("Training loss")
    ax1.grid(alpha=0.3)
    if evals:
        es = [int(r["step"]) for r in evals]
        for key in ("auc", "mrr", "ndcg@10"):
            ax2.plot(es, [float(r[key]) for r in evals], marker="o", label=key.upper())
        ax2.legend()
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("validation metric")
    ax2.set_title("Validation (full in-view lists)")
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_png
