"""A MIND folder given as `--data`: converted once into the EBNeRD layout, then reused by every command.

Every command reads EBNeRD's layout (`mtnews.data.layout`). When `--data` names a MIND root or one MIND
split folder, `converted_root` runs `convert_mind` into

    $MTNEWS_CACHE/mind/<folder name>-<key>/        (default ~/.cache/mtnews/mind/...)

and every reader then reads that folder. The cache, not a folder beside the data, because downloaded
datasets often sit on read-only or shared storage, and a conversion is rebuilt from them at will.
The key is a sha256 over the conversion's version, each split folder's absolute path, and the size and
modification time (ns) of its news.tsv and behaviors.tsv: editing or replacing a file gives a new key
and so a new conversion, while an unchanged folder is converted exactly once. Entries for files that
changed are not removed (a long `predict` may still be reading one); delete `$MTNEWS_CACHE/mind` to
reclaim the space.

The conversion is atomic (`convert_mind` writes a temporary folder and renames it, so a folder holding
`mind_conversion.json` is complete), and a lock file serialises concurrent first uses, e.g. the ranks
of one torchrun, which then all read the one conversion. A conversion that takes a while (MINDlarge)
prints one line on stderr saying where it went; `mtnews data check` names the folder too.
`mtnews data convert --from mind` remains the explicit way to put a conversion where you choose.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import time
from pathlib import Path

from mtnews.data.mind import CONVERSION_FILE, convert_mind
from mtnews.errors import DataError
from mtnews.io import cache_dir

# Bump when the conversion writes different files from the same input, so no stale conversion is reused.
CONVERSION_VERSION = 1
SOURCE_FILES = ("news.tsv", "behaviors.tsv")
NOTE_AFTER_SECONDS = 5.0


def conversion_key(dirs: dict[str, Path]) -> str:
    """What a conversion depends on: the split folders (by absolute path) and their files (size, mtime)."""
    parts: list = [CONVERSION_VERSION]
    for split, folder in dirs.items():
        folder = folder.resolve()
        files = []
        for name in SOURCE_FILES:
            try:
                st = (folder / name).stat()
                files.append([name, st.st_size, st.st_mtime_ns])
            except OSError:
                files.append([name, None, None])  # missing: the conversion will say so
        parts.append([split, str(folder), files])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def converted_root(source: str | Path, dirs: dict[str, Path]) -> Path:
    """The EBNeRD-layout conversion of the MIND split folders `dirs` (found in `source`), made if needed."""
    source = Path(source)
    base = cache_dir() / "mind"
    dst = base / f"{source.resolve().name}-{conversion_key(dirs)}"
    if (dst / CONVERSION_FILE).is_file():
        return dst
    try:
        base.mkdir(parents=True, exist_ok=True)
        fd = os.open(base / f"{dst.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise DataError(f"{base}: cannot write the MIND conversion cache ({e.strerror or e}); set MTNEWS_CACHE "
                        f"to a writable folder, or convert once with `mtnews data convert --from mind {source} "
                        "--out DIR` and pass --data DIR") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a concurrent first use waits here, then finds the conversion done
        if not (dst / CONVERSION_FILE).is_file():
            t0 = time.perf_counter()
            convert_mind(source, dst)
            seconds = time.perf_counter() - t0
            # Only a slow first use explains itself (MINDlarge takes minutes), after the fact: a failed
            # conversion, or an error right after a quick one, stays the command's one line.
            if seconds >= NOTE_AFTER_SECONDS:
                print(f"mtnews: converted the MIND folder {source} to the EBNeRD layout in {dst} "
                      f"({seconds:.0f} s, done once; later commands reuse it)", file=sys.stderr)
    finally:
        os.close(fd)
    return dst
