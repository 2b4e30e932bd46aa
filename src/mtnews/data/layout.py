"""Where EBNeRD keeps its files: `<root>/articles.parquet` and `<root>/<split>/{behaviors,history}.parquet`.

The official test set has the same shape (`ebnerd_testset/articles.parquet`, `ebnerd_testset/test/...`),
so one rule serves `--data ebnerd_small --split validation` and `--data ebnerd_testset --split test`.

A MIND folder (a root holding `MINDsmall_train/`, `MINDsmall_dev/`, ... or `train/`, `dev/`, `test/`, or one
such split folder) is the second native layout. `resolve_dataset` is the one place a `--data` path is
recognised: a MIND folder resolves to its EBNeRD-layout conversion (made once, `mtnews.data.mind_cache`),
so every reader below works on either layout; `kind` and `source` remember what the user named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mtnews.errors import DataError

SPLITS = ("train", "validation", "test")
KINDS = ("ebnerd", "mind")


@dataclass(frozen=True)
class Dataset:
    """A `--data` path, recognised: `root` is the EBNeRD-layout folder every reader reads."""

    root: Path
    kind: str = "ebnerd"  # one of KINDS: the layout of `source`
    source: Path | None = None  # the path as given (for MIND, the folder that was converted into `root`)


@dataclass(frozen=True)
class SplitPaths:
    root: Path
    split: str
    behaviors: Path
    history: Path
    articles: Path
    oracle: Path
    kind: str = "ebnerd"  # the layout the dataset came in (see `Dataset`)
    source: Path | None = None

    @property
    def labelled(self) -> bool:
        """The test split carries no clicks."""
        return self.split != "test"


def resolve_dataset(data: str | Path | Dataset) -> Dataset:
    """Recognise the layout of `data`; a MIND folder is converted on first use (a DataError if it is broken)."""
    if isinstance(data, Dataset):
        return data
    from mtnews.data.mind import MIND_SPLITS, mind_folders

    path = Path(data)
    dirs = mind_folders(path)
    if dirs is None:
        return Dataset(path, "ebnerd", path)
    from mtnews.data.mind_cache import converted_root

    if not dirs:
        raise DataError(f"{path}: no MIND split folder, expected MIND<size>_train/, _dev/, _test/ or "
                        f"{', '.join(f'{s}/' for s in MIND_SPLITS.values())} holding news.tsv and behaviors.tsv")
    return Dataset(converted_root(path, dirs), "mind", path)


def split_paths(root: str | Path | Dataset, split: str) -> SplitPaths:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}', expected one of {', '.join(SPLITS)}")
    if not isinstance(root, Dataset):
        if not Path(root).is_dir():
            raise DataError(f"{root}: dataset folder not found")
        from mtnews.data.mind import mind_folders

        dirs = mind_folders(root)
        if dirs and split not in dirs:  # said before converting anything
            _no_mind_split(root, split, list(dirs))
    ds = resolve_dataset(root)
    root = ds.root
    d = root / split
    if not d.is_dir():
        have = [s for s in SPLITS if (root / s).is_dir()]
        if ds.kind == "mind":
            _no_mind_split(ds.source, split, have)
        raise DataError(f"{d}: split folder not found (this dataset has: {', '.join(have) or 'no splits'})")
    return SplitPaths(root, split, d / "behaviors.parquet", d / "history.parquet", root / "articles.parquet",
                      d / "oracle.parquet", ds.kind, ds.source)


def _no_mind_split(source, split: str, have: list[str]) -> None:
    from mtnews.data.mind import MIND_SPLITS

    raise DataError(f"{source}: no MIND folder for the {split} split (expected e.g. MINDsmall_{MIND_SPLITS[split]}/ "
                    f"or {MIND_SPLITS[split]}/; this dataset has: {', '.join(have) or 'no splits'})")


def available_splits(root: str | Path | Dataset) -> list[str]:
    root = resolve_dataset(root).root
    return [s for s in SPLITS if (root / s / "behaviors.parquet").exists()]
