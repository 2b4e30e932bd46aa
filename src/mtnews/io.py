"""Atomic file writes: readers never see a half-written file, and a crash leaves no partial output."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from mtnews.errors import MtnewsError


def cache_dir() -> Path:
    """Where mtnews keeps what it can rebuild (title tokens, MIND conversions): $MTNEWS_CACHE or ~/.cache/mtnews."""
    return Path(os.environ.get("MTNEWS_CACHE", Path.home() / ".cache" / "mtnews"))


def check_output_file(path: str | os.PathLike | None, what: str = "output") -> None:
    """Fail before any work when `path` can never be written as a file (it is a folder, or sits under a file)."""
    if path is None:
        return
    path = Path(path)
    if path.is_dir():
        raise MtnewsError(f"{path}: is a folder, expected a file path for the {what}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise MtnewsError(f"{path}: {parent} is a file, expected a folder to hold the {what}")
            break


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside `path`; swap it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
