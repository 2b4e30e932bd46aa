"""Append-only CSV logs (metrics.csv, eval.csv) that survive a crash and resume cleanly."""

from __future__ import annotations

import csv
from pathlib import Path


class CsvLog:
    def __init__(self, path: Path, fields: list[str]):
        self.path = path
        self.fields = fields

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step`: a resumed run re-logs them, so the file has each step once."""
        if not self.path.exists():
            return
        with self.path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        self._write(rows, "w")

    def append(self, row: dict) -> None:
        self._write([row], "a")

    def _write(self, rows: list[dict], mode: str) -> None:
        new = mode == "w" or not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open(mode, newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerows(rows)
            f.flush()


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))
