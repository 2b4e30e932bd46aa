"""Append-only CSV logs (metrics.csv, eval.csv) that survive a crash and resume cleanly."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mtnews.io import atomic_path


class CsvLog:
    def __init__(self, path: Path, fields: list[str]):
        self.path = path
        self.fields = fields

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after `step`: a resumed run re-logs them, so the file has each step once."""
        if not self.path.exists():
            return
        text = self.path.read_text()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]  # a row cut short by a crash ("1" of "12,...") is dropped
        rows = [r for r in csv.DictReader(io.StringIO(text)) if (r.get("step") or "").isdigit() and int(r["step"]) <= step]
        with atomic_path(self.path) as tmp:  # a crash while rewriting keeps the old file
            with tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)

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
