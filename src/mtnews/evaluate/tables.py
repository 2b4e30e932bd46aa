"""Metric tables for the terminal."""

from __future__ import annotations

from rich.table import Table

from mtnews.evaluate.metrics import METRIC_NAMES


def metrics_table(rows: dict[str, dict], title: str | None = None) -> Table:
    """One row per scorer/run, one column per metric, plus the impressions averaged."""
    table = Table(title=title)
    table.add_column("scorer")
    for m in METRIC_NAMES:
        table.add_column(m.upper() if m in ("auc", "mrr") else m, justify="right")
    table.add_column("impressions", justify="right")
    for name, r in rows.items():
        table.add_row(name, *(f"{r[m]:.4f}" for m in METRIC_NAMES), str(r.get("impressions", "")))
    return table
