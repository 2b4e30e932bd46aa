"""Resumable `mtnews predict`: stream a split through a trained run into a submission zip.

The format follows the dataset: RecSys'24 (`predictions.txt` in the zip) for EBNeRD, the MIND leaderboard's
(`prediction.txt`) for a MIND folder; `format` overrides it. The lines are the same in both, so only the
final zip differs, and a sidecar made for one format resumes into the other.

The 13.5M-impression test set takes hours on a CPU, so an interrupted run (a crash, SIGKILL, a preempted
job) continues from its last finished chunk instead of starting over:

* Beside the target ``<out>`` lives the sidecar folder ``<out>.partial/``, holding ``predictions.txt``
  (the lines written so far) and ``state.json`` (chunks and rows done, the byte length of the text that
  belongs to them, and a fingerprint of run, data, split, chunking and device).
* After every chunk the text is flushed and fsync'd, then the state is replaced atomically and fsync'd.
  Text appended after the last state (a chunk cut short) is truncated away on resume.
* A new run with the same fingerprint resumes automatically (``--resume`` insists on it, ``--fresh``
  discards the sidecar). A sidecar with another fingerprint is never continued.
* When the last chunk is in, the finished text is deflated into a temp zip that is renamed over
  ``<out>``, then the sidecar is removed. Since the zip is made from the whole text, not chunk by chunk,
  a resumed run gives a zip byte-identical to an uninterrupted one.

Chunk k is always rows [k * chunk, (k + 1) * chunk) of the behaviors file (see `runner`), so a resumed run
scores the remaining chunks exactly as an uninterrupted run would. Memory: the article-vector table plus
one chunk, whatever the split's size.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from mtnews.errors import ConfigError, MtnewsError
from mtnews.io import check_output_file

STATE = "state.json"
TEXT = "predictions.txt"
LOCK = "lock"
STATE_VERSION = 1
RESUME_MODES = ("auto", "require", "never")


@dataclass
class PredictState:
    fingerprint: str
    chunk_rows: int
    total_rows: int
    chunks_done: int = 0
    rows_done: int = 0
    bytes: int = 0
    impressions: int = 0
    unknown_candidates: int = 0
    version: int = STATE_VERSION


def sidecar_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _file_id(path: Path) -> dict:
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(run, paths, chunk_rows: int, max_candidates: int, device: str) -> str:
    """What the text depends on: the run (config, run.json, weights, by content), the split's files (by
    size and modification time; for a run with time signals the train split's too), the chunking, the
    device type and the library versions."""
    import torch

    from mtnews import __version__

    files = [paths.behaviors, paths.history, paths.articles]
    if run.signal_options is not None and paths.split != "train":
        # MTRec-T's time signals also count the train split's events (data.signals.SplitSignals.load).
        from mtnews.data.layout import split_paths

        train = split_paths(paths.root, "train")
        files += [p for p in (train.behaviors, train.history) if p.exists()]
    parts = {
        "run": run.fingerprint(),
        "split": paths.split,
        "files": [_file_id(p) for p in files],
        "chunk_rows": chunk_rows,
        "max_candidates": max_candidates,
        "device": device,
        "mtnews": __version__,
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Sidecar:
    """The ``<out>.partial/`` folder: text so far, state, and a lock against a second concurrent writer."""

    def __init__(self, out: str | os.PathLike):
        self.dir = sidecar_dir(out)
        self.text = self.dir / TEXT
        self.state_path = self.dir / STATE
        self._lock_fd: int | None = None
        self._fh = None

    def lock(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise MtnewsError(f"{self.dir}: another `mtnews predict` is writing this output") from None
            raise
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock; a killed process releases it too
            self._lock_fd = None

    def read_state(self) -> PredictState | None:
        """The committed state, or None when there is none or it is unreadable or from another version."""
        try:
            raw = json.loads(self.state_path.read_text())
            state = PredictState(**raw)
        except (OSError, ValueError, TypeError):
            return None
        if state.version != STATE_VERSION:
            return None
        try:
            if self.text.stat().st_size < state.bytes:
                return None  # text lost or cut below what the state vouches for: cannot continue
        except OSError:
            return None
        return state

    def reset(self, state: PredictState) -> None:
        """Start empty: truncate the text and commit `state` (nothing done)."""
        with open(self.text, "wb") as f:
            os.fsync(f.fileno())
        self.commit(state)

    def open_append(self, state: PredictState) -> None:
        """Open the text for appending after the committed bytes, dropping anything written past them."""
        self._fh = open(self.text, "r+b")
        self._fh.truncate(state.bytes)
        self._fh.seek(state.bytes)

    def write(self, data: bytes) -> None:
        self._fh.write(data)

    def commit(self, state: PredictState) -> None:
        """Make the text durable, then the state that vouches for it (atomic replace, fsync'd)."""
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        tmp = self.state_path.with_name(STATE + ".tmp")
        with open(tmp, "w") as f:
            f.write(json.dumps(asdict(state), indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)
        _fsync_dir(self.dir)

    def close_text(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def remove(self) -> None:
        self.close_text()
        self.unlock()
        shutil.rmtree(self.dir, ignore_errors=True)


def predict(
    run_dir,
    data: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "test",
    chunk_rows: int = 50_000,
    device: str = "auto",
    resume: str = "auto",
    compresslevel: int | None = None,
    max_candidates: int | None = None,
    progress: bool = False,
    log=None,
    format: str | None = None,
) -> dict:
    """Write ``out`` (a predictions.zip) for `split` of `data` with a run, resumably.

    `data` is an EBNeRD or a MIND folder; `format` (ebnerd or mind) defaults to its layout.

    `run_dir` is a run directory or a `Run` already loaded; either way the run is loaded once.

    Args:
        resume: "auto" continues a matching sidecar and replaces any other; "require" fails unless a
            matching sidecar exists; "never" discards any sidecar and starts over.
        log: callable taking one message string (default: print to stderr).

    Returns:
        ``{"impressions", "unknown_candidates", "chunks", "resumed_from_row", "out", "format"}``.
    """
    from tqdm.auto import tqdm

    from mtnews.data.behaviors import count_behaviors
    from mtnews.data.history import load_histories
    from mtnews.data.layout import split_paths
    from mtnews.evaluate.mind_submission import submission_member
    from mtnews.evaluate.run_scorer import ModelScorer
    from mtnews.evaluate.streaming import MAX_CANDIDATES, iter_behavior_chunks, iter_pieces, release_memory
    from mtnews.evaluate.submission import DEFAULT_COMPRESSLEVEL, render_predictions, zip_predictions_text
    from mtnews.model.run import Run, load_run
    from mtnews.model.scoring import resolve_device

    def say(msg: str) -> None:
        (log or (lambda m: print(m, file=sys.stderr)))(msg)

    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    if chunk_rows <= 0:
        raise ConfigError(f"--chunk must be a positive integer, got {chunk_rows}")
    max_candidates = max_candidates or MAX_CANDIDATES
    compresslevel = DEFAULT_COMPRESSLEVEL if compresslevel is None else compresslevel
    out = Path(out)
    check_output_file(out, "predictions zip")
    paths = split_paths(data, split)
    member = submission_member(format or paths.kind)
    dev = resolve_device(device)
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir, device=dev)
    fp = fingerprint(run, paths, chunk_rows, max_candidates, dev.type)
    total = count_behaviors(paths)

    side = Sidecar(out)
    side.lock()
    try:
        state = side.read_state() if resume != "never" else None
        if state is not None and (state.fingerprint != fp or state.total_rows != total):
            if resume == "require":
                raise ConfigError(f"{side.dir}: the unfinished prediction there was made with another run, data, "
                                  f"split, --chunk or device; run without --resume to start over")
            say(f"{side.dir}: made with another run, data, split, --chunk or device; starting over")
            state = None
        if state is None:
            if resume == "require":
                raise ConfigError(f"{side.dir}: no unfinished prediction to resume")
            state = PredictState(fp, chunk_rows, total)
            side.reset(state)
        elif state.rows_done:
            say(f"resuming {out} at row {state.rows_done:,} of {total:,} (chunk {state.chunks_done})")
        resumed_from = state.rows_done

        if state.rows_done < total:
            articles = run.load_dataset_articles(paths.articles)
            histories = load_histories(paths.history, articles, run.history_size)
            scorer = ModelScorer.for_split(run, paths, articles, histories)
            side.open_append(state)
            bar = tqdm(total=total, initial=state.rows_done, disable=not progress, desc=f"predict {split}",
                       unit="imp")
            try:
                for table in iter_behavior_chunks(paths, chunk_rows, state.rows_done):
                    for imps in iter_pieces(table, articles, histories, max_candidates, paths.behaviors):
                        text, n = render_predictions(imps.impression_id, scorer.score(imps), imps.offsets)
                        side.write(text)
                        state.bytes += len(text)
                        state.impressions += n
                        state.unknown_candidates += imps.unknown
                        release_memory()
                    state.rows_done += table.num_rows
                    state.chunks_done += 1
                    side.commit(state)
                    bar.update(table.num_rows)
            finally:
                bar.close()
                side.close_text()
        if state.rows_done != total:
            raise MtnewsError(f"{paths.behaviors}: read {state.rows_done} rows, the file says {total}")
        zip_predictions_text(side.text, out, compresslevel, member=member)
        _fsync_dir(out.parent)
    except BaseException:
        side.close_text()
        side.unlock()  # the sidecar stays: the next run continues from its last committed chunk
        raise
    side.remove()
    return {"impressions": state.impressions, "unknown_candidates": state.unknown_candidates,
            "chunks": state.chunks_done, "resumed_from_row": resumed_from, "out": str(out),
            "format": format or paths.kind}
