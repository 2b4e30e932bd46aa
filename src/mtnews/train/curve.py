"""Training-curve figures from a run's metrics.csv and eval.csv (matplotlib, headless).

A staged run (`train.stages`) gets a dashed line after each stage's last step on both panels, with the
stages' names along the top.
"""

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


def stage_boundaries(rows: list[dict]) -> list[tuple[int, int, str]]:
    """(first step, last step, name) of each stage in metrics.csv order; [] for a run without stages."""
    spans: list[tuple[int, int, str]] = []
    for r in rows:
        step, name = int(r["step"]), r.get("stage") or ""
        if spans and spans[-1][2] == name:
            spans[-1] = (spans[-1][0], step, name)
        else:
            spans.append((step, step, name))
    return spans if len(spans) > 1 else []


def _mark_stages(ax, spans: list[tuple[int, int, str]]) -> None:
    for i, (first, last, name) in enumerate(spans):
        if i < len(spans) - 1:
            ax.axvline(last + 0.5, color="0.4", linestyle="--", linewidth=1)
        ax.text((first + last) / 2, 0.98, name, transform=ax.get_xaxis_transform(), ha="center", va="top",
                fontsize=8, color="0.3")


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
    spans = stage_boundaries(rows)
    for ax in (ax1, ax2):
        _mark_stages(ax, spans)
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("training loss (moving average)")
    ax1.set_title("Training loss")
    ax1.grid(alpha=0.3)
    if evals:
        # The holdout (selection) curve as lines; validation, scored for reporting only, as open markers.
        styles = {"holdout": {"marker": "o"}, "validation": {"marker": "s", "linestyle": ":", "mfc": "none"}}
        for split, style in styles.items():
            part = [r for r in evals if r.get("split", "validation") == split]
            if part:
                es = [int(r["step"]) for r in part]
                for color, key in zip(("C0", "C1", "C2"), ("auc", "mrr", "ndcg@10")):  # one colour per metric
                    ax2.plot(es, [float(r[key]) for r in part], label=f"{split} {key.upper()}", color=color, **style)
        ax2.legend(fontsize=8)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("ranking metric")
    ax2.set_title("Selection holdout and validation (full in-view lists)")
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return out_png
