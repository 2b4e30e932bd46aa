"""The experiment's figures: curves.png (Figure 4 analogue) and conflicts.png (gradient conflicts).

Both read the per-step logs of finished runs (metrics.csv, eval.csv) and aggregate over seeds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mtnews.io import atomic_path
from mtnews.train.curve import smooth
from mtnews.train.logs import read_csv

# Figure 4 compares full fine-tuning with LoRA; in this experiment those are the no-lora and mtrec rows.
CURVES = (("no-lora", "full fine-tuning (no-lora)", "tab:red"), ("mtrec", "LoRA (mtrec)", "tab:blue"))


def smoothing_window(n: int) -> int:
    """Moving-average width for n logged steps: ~4% of the run, but at least 3 so short runs are readable."""
    return max(1, min(n, max(3, n // 25)))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_png: Path) -> Path:
    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return out_png


def _column(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one logged column, skipping empty/nan cells."""
    steps, vals = [], []
    for r in rows:
        v = r.get(key)
        if v in (None, "", "nan"):
            continue
        x = float(v)
        if not math.isnan(x):
            steps.append(int(r["step"]))
            vals.append(x)
    return np.array(steps, dtype=int), np.array(vals, dtype=float)


def holdout_rows(rows: list[dict]) -> list[dict]:
    """eval.csv's selection-holdout rows (the curve every run has; validation rows are for reporting)."""
    return [r for r in rows if r.get("split") == "holdout"]


def seed_band(series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) over seeds, on the steps every seed logged (seeds share a step grid)."""
    series = [(s, v) for s, v in series if len(s)]
    if not series:
        empty = np.zeros(0)
        return empty, empty, empty, empty
    common = series[0][0]
    for s, _ in series[1:]:
        common = np.intersect1d(common, s)
    stack = np.stack([v[np.searchsorted(s, common)] for s, v in series])
    return common, stack.mean(0), stack.min(0), stack.max(0)


def _band(ax, series, label: str, color: str, marker: str | None = None, band: bool = True) -> bool:
    steps, mean, lo, hi = seed_band(series)
    if len(steps) == 0:
        return False
    n = len([s for s in series if len(s[0])])
    ax.plot(steps, mean, color=color, marker=marker, label=f"{label}, mean of {n} seed{'s' * (n != 1)}")
    if band and n > 1:
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0, label=f"{label}, min–max over seeds")
    return True


def _no_data(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_curves(run_dirs: dict[str, list[Path]], out_png: str | Path, eval_impressions: int = 0) -> Path:
    """Training loss and selection-holdout AUC vs step for full fine-tuning vs LoRA, mean line and min–max band."""
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    drawn_loss = drawn_auc = False
    window = 1
    for variant, label, color in CURVES:
        dirs = run_dirs.get(variant, [])
        losses = []
        for d in dirs:
            steps, loss = _column(read_csv(d / "metrics.csv"), "loss")
            window = max(window, smoothing_window(len(loss)))
            losses.append((steps, smooth(loss, smoothing_window(len(loss)))))
        drawn_loss |= _band(ax1, losses, label, color)
        aucs = [_column(holdout_rows(read_csv(d / "eval.csv")), "auc") for d in dirs]
        drawn_auc |= _band(ax2, aucs, label, color, marker="o")
    for ax, drawn in ((ax1, drawn_loss), (ax2, drawn_auc)):
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            _no_data(ax, "no finished no-lora / mtrec runs")
    ax1.set_ylabel(f"training loss, weighted total\n(moving average, {window} steps)")
    ax1.set_title("Training loss")
    subset = f"first {eval_impressions} impressions" if eval_impressions else "all impressions"
    ax2.set_ylabel("selection-holdout AUC")
    ax2.set_title(f"Holdout AUC during training ({subset})")
    fig.suptitle("Full fine-tuning vs LoRA (Figure 4 analogue)")
    fig.tight_layout()
    try:
        return _save(fig, Path(out_png))
    finally:
        plt.close(fig)


def plot_conflicts(run_dirs: dict[str, list[Path]], out_png: str | Path) -> Path:
    """Per surgery variant: a histogram of the main/aux gradient cosine over all logged steps (seeds
    pooled), one small panel each so a narrow distribution does not flatten the others; below, the
    rolling share of projected steps vs step (mean over seeds) for every variant on one axis."""
    plt = _pyplot()
    logs = {v: [read_csv(d / "metrics.csv") for d in dirs] for v, dirs in run_dirs.items() if dirs}
    cosines = {v: np.concatenate([_column(rows, "cosine")[1] for rows in runs]) for v, runs in logs.items()}
    cols = max(1, min(4, len(logs)))
    hist_rows = max(1, math.ceil(len(logs) / cols))
    fig = plt.figure(figsize=(3.2 * cols + 1, 2.3 * hist_rows + 4))
    grid = fig.add_gridspec(hist_rows + 1, cols, height_ratios=[1] * hist_rows + [1.6])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    pooled = np.concatenate(list(cosines.values())) if cosines else np.zeros(0)
    bins = np.linspace(min(-0.05, pooled.min()), max(0.05, pooled.max()), 31) if len(pooled) else 30
    first = None
    for i, variant in enumerate(logs):
        ax = fig.add_subplot(grid[i // cols, i % cols], sharex=first)  # own y: one narrow peak would flatten the rest
        first = first or ax
        cos = cosines[variant]
        if len(cos):
            # Weights make each bar the share of that variant's steps, comparable across panels.
            ax.hist(cos, bins=bins, weights=np.full(len(cos), 1 / len(cos)), color=colors[i % len(colors)])
            ax.set_title(f"{variant}: {(cos < 0).mean():.0%} of steps < 0", fontsize=9)
        else:
            ax.set_title(f"{variant}: no cosine logged", fontsize=9)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("share of steps")
        if i + cols >= len(logs):  # the lowest panel of its column
            ax.set_xlabel("cos(main grad, aux grad)")
    ax2 = fig.add_subplot(grid[hist_rows, :])
    window = 1
    for i, (variant, runs) in enumerate(logs.items()):
        series = []
        for rows in runs:
            steps, proj = _column(rows, "projected")
            w = smoothing_window(len(proj))
            window = max(window, w)
            series.append((steps, smooth(proj, w)))
        unit = "share of news vectors" if variant == "repr-space" else "share of steps"
        # Mean line only: seven min-max bands on one axis would hide each other.
        _band(ax2, series, f"{variant} ({unit})", colors[i % len(colors)], band=False)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel(f"projected share\n(rolling mean, {window} steps)")
    ax2.set_title("Surgery activity over training")
    ax2.set_ylim(-0.05, 1.05)
    ax2.grid(alpha=0.3)
    if logs:
        ax2.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        _no_data(ax2, "no finished surgery runs")
    fig.suptitle("Main vs auxiliary gradients in the surgery variants (cosine per step; seeds pooled)")
    fig.tight_layout()
    try:
        return _save(fig, Path(out_png))
    finally:
        plt.close(fig)
