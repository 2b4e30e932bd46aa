"""Where EBNeRD keeps its files: `<root>/articles.parquet` and `<root>/<split>/{behaviors,history}.parquet`.

The official test set has the same shape (`ebnerd_testset/articles.parquet`, `ebnerd_testset/test/...`),
so one rule serves `--data ebnerd_small --split validation` and `--data ebnerd_testset --split test`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mtnews.errors import DataError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitPaths:
    root: Path
    split: str
    behaviors: Path
    history: Path
    articles: Path
    oracle: Path

    @property
    def labelled(self) -> bool:
        """The test split carries no clicks."""
        return self.split != "test"


def split_paths(root: str | Path, split: str) -> SplitPaths:
    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}', expected one of {', '.join(SPLITS)}")
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    d = root / split
    if not d.is_dir():
        have = [s for s in SPLITS if (root / s).is_dir()]
        raise DataError(f"{d}: split folder not found (this dataset has: {', '.join(have) or 'no splits'})")
    return SplitPaths(root, split, d / "behaviors.parquet", d / "history.parquet", root / "articles.parquet", d / "oracle.parquet")


def available_splits(root: str | Path) -> list[str]:
    root = Path(root)
    return [s for s in SPLITS if (root / s / "behaviors.parquet").exists()]
