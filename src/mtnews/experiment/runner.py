"""Plan and run the experiment's runs, resumably.

Layout under EXP_DIR/runs/:
  <baseline>/result.json            random, popularity, oracle: scored once (they do not depend on a seed)
  <cf row>/seed-<s>/result.json     cf-user, cf-als, mtrec+cf: scored per seed (cf-user and mtrec+cf on
                                    mtrec/seed-<s>, cf-als with ALS seed s); nothing is trained for them
  <variant>/seed-<s>/               a training run directory (config.yaml, metrics.csv, eval.csv, final/, ...)
  <variant>/seed-<s>/result.json    its validation metrics, learning rate, holdout AUC and timings, written last
  <variant>/lr-<rate>/seed-<s>/     the same, for each rate of a variant with a learning-rate grid

A run is finished when result.json exists (and, for a trained run, final/): it is skipped. A trained run
with final/ but no result.json is only evaluated; one with checkpoints resumes from the latest of them;
so re-running a killed experiment redoes at most the steps since each run's last checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from mtnews.config import Config, load_config
from mtnews.errors import ConfigError
from mtnews.experiment.rates import variant_rates
from mtnews.experiment.variants import ALL_LABELS, VARIANTS, variant_config
from mtnews.io import atomic_write_text
from mtnews.train.logs import read_csv

RESULT = "result.json"
# Keys that change where or how fast a run executes, not what it computes; a finished run stays valid
# when only these differ (e.g. an experiment started on CPU and finished with --train.device cuda).
RUNTIME_KEYS = {("train", "device"), ("train", "num_workers"), ("data", "eval_chunk")}


@dataclass(frozen=True)
class RunSpec:
    variant: str
    seed: int | None  # train.seed of a trained run; None for a baseline
    dir: Path
    cfg: Config | None = None  # None for a baseline
    source: Path | None = None  # a CF row's mtrec run

    @property
    def lr(self) -> float | None:
        return self.cfg.train.lr if self.cfg is not None else None

    @property
    def trained(self) -> bool:
        return self.cfg is not None

    @property
    def label(self) -> str:
        return self.variant if self.seed is None else f"{self.variant} seed {self.seed}"

    @property
    def result_path(self) -> Path:
        return self.dir / RESULT

    def finished(self) -> bool:
        return self.result_path.is_file() and (not self.trained or (self.dir / "final").is_dir())


def plan_runs(exp_dir: Path, base: Config, variants: list[str], seeds: int,
              labels: frozenset[str] = ALL_LABELS, rates: dict[str, list[float]] | None = None) -> list[RunSpec]:
    """Baselines first (seconds each), then one pass over the variants per seed, so an interrupted
    experiment already has a complete table for its first seeds. `labels`: the tasks the data has labels for;
    `rates`: the experiment's `lr` settings (`mtnews.experiment.rates`), one run per rate of a variant's grid."""
    runs = [RunSpec(v, None, exp_dir / "runs" / v) for v in variants if not VARIANTS[v].trained and not VARIANTS[v].cf]
    for i in range(seeds):
        seed = base.train.seed + i
        for v in variants:
            if VARIANTS[v].cf:  # after mtrec in table order, so that seed's mtrec run exists by then
                # With an mtrec learning-rate grid, CF rows build on the grid's first rate (documented).
                first = variant_rates(base, "mtrec", rates, labels)
                mtrec_dir = exp_dir / "runs" / "mtrec" / (f"lr-{first[0]:g}" if len(first) > 1 else "")
                source = mtrec_dir / f"seed-{seed}" if VARIANTS[v].on_mtrec else None
                runs.append(RunSpec(v, seed, exp_dir / "runs" / v / f"seed-{seed}", source=source))
                continue
            if not VARIANTS[v].trained:
                continue
            grid = variant_rates(base, v, rates, labels)
            for lr in grid:
                cfg = variant_config(base, v, i, labels, lr)
                where = exp_dir / "runs" / v / (f"lr-{lr:g}" if len(grid) > 1 else "")
                runs.append(RunSpec(v, cfg.train.seed, where / f"seed-{cfg.train.seed}", cfg))
    return runs


def _config_diff(a: dict, b: dict, prefix: tuple = ()) -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = prefix + (k,)
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, key)
        elif va != vb and key not in RUNTIME_KEYS:
            out.append(f"{'.'.join(key)}: {va!r} in the run, {vb!r} now")
    return out


def check_run_config(spec: RunSpec) -> None:
    """Refuse to reuse a run directory trained with another config (its results would not be this row's)."""
    path = spec.dir / "config.yaml"
    if not spec.trained or not path.is_file():
        return
    saved = load_config(path)
    if "selection" not in (yaml.safe_load(path.read_text()) or {}).get("train", {}):
        raise ConfigError(f"{spec.dir}: was trained before runs chose best/ on the selection holdout (it chose on "
                          f"validation, the split it reports); use a new --out, or delete that run to retrain it")
    diff = _config_diff(saved.to_dict(), spec.cfg.to_dict())
    if diff:
        raise ConfigError(f"{spec.dir}: was trained with another config ({'; '.join(diff[:5])}); "
                          f"use a new --out, or delete that run to retrain it")


def step_timing(run_dir: Path, cfg: Config) -> dict:
    """Mean seconds per optimizer step and samples/s, from the per-step throughput in metrics.csv.

    Only the steps themselves count (not validation, checkpoints or model loading), and a resumed run's
    steps are counted once each, so variants compare fairly however their runs were interrupted.
    """
    rows = read_csv(run_dir / "metrics.csv")
    summary = run_dir / "summary.json"
    world = json.loads(summary.read_text()).get("world_size", 1) if summary.is_file() else 1
    batch = cfg.train.batch_size * cfg.train.grad_accum * world
    sps = np.array([float(r["samples_per_s"]) for r in rows if r.get("samples_per_s")], dtype=float)
    sps = sps[sps > 0]
    if len(sps) == 0:
        return {"steps": len(rows), "sec_per_step": float("nan"), "samples_per_s": float("nan")}
    sec = float(np.mean(batch / sps))
    return {"steps": len(rows), "sec_per_step": sec, "samples_per_s": batch / sec}


class Evaluator:
    """Scores finished runs and baselines on the validation split, as `mtnews evaluate --run/--scorer` does:
    full in-view lists, a trained run's best weights by its selection-holdout AUC (else final)."""

    def __init__(self, data: Path, device: str):
        from mtnews.data.articles import load_articles
        from mtnews.data.layout import split_paths

        self.data, self.device = data, device
        self.paths = split_paths(data, "validation")
        self.articles = load_articles(self.paths.articles)
        self._histories: dict[int, object] = {}

    def _hist(self, size: int):
        from mtnews.data.history import load_histories

        if size not in self._histories:
            self._histories[size] = load_histories(self.paths.history, self.articles, size)
        return self._histories[size]

    def __call__(self, spec: RunSpec) -> dict:
        from mtnews.evaluate.run_scorer import ModelScorer
        from mtnews.evaluate.split_scoring import BASELINE_HISTORY, make_baseline
        from mtnews.evaluate.streaming import run_scorer
        from mtnews.model.run import load_run
        from mtnews.model.scoring import resolve_device

        if VARIANTS[spec.variant].cf:
            return self.cf(spec)
        if spec.trained:
            run = load_run(spec.dir, device=resolve_device(self.device))
            hist = self._hist(run.history_size)
            scorer = ModelScorer.for_split(run, self.paths, self.articles, hist)
        else:
            hist = self._hist(BASELINE_HISTORY)
            scorer = make_baseline(spec.variant, self.paths, seed=0)
        return run_scorer(scorer, self.paths, self.articles, hist)


    def cf(self, spec: RunSpec) -> dict:
        """A CF row, as `mtnews evaluate --scorer <row> [--run mtrec/seed-s]` scores it (ALS seed = the row's)."""
        from mtnews.cf.params import CFParams
        from mtnews.cf.scorers import SegmentScorer, make_cf_scorer
        from mtnews.data.history import load_histories
        from mtnews.evaluate.split_scoring import BASELINE_HISTORY
        from mtnews.evaluate.streaming import run_scorer
        from mtnews.model.run import load_run
        from mtnews.model.scoring import resolve_device

        run = load_run(spec.source, device=resolve_device(self.device)) if spec.source is not None else None
        articles = self.articles if run is None else run.load_dataset_articles(self.paths.articles)
        hist = load_histories(self.paths.history, articles, BASELINE_HISTORY if run is None else run.history_size)
        scorer, info = make_cf_scorer(spec.variant, self.data, self.paths, run, articles, hist, CFParams(seed=spec.seed))
        scorer = SegmentScorer(scorer, hist)
        metrics = run_scorer(scorer, self.paths, articles, hist)
        return {**metrics, "cf": info, "segments": scorer.segments()}


def execute(spec: RunSpec, data: Path, evaluator: Evaluator) -> dict:
    """Train (or resume) one run if needed, evaluate it, and write its result.json last."""
    from mtnews.train.checkpoint import checkpoint_dirs
    from mtnews.train.loop import train

    t0 = time.perf_counter()
    # "resumed": an earlier attempt did part of the work, so this attempt's seconds undercount the run.
    resumed = spec.trained and (spec.dir / "final").is_dir()
    if spec.trained and not resumed:
        resumed = spec.dir.is_dir() and bool(checkpoint_dirs(spec.dir))
        # resume=True also covers a fresh directory (no checkpoint: it starts at step 0), and a run killed
        # before its first checkpoint restarts cleanly (train truncates its logs to the restored step).
        train(spec.cfg, data, spec.dir, resume=True, progress=False)
    metrics = evaluator(spec)
    result = {"variant": spec.variant, "seed": spec.seed, "metrics": metrics,
              "seconds": round(time.perf_counter() - t0, 2), "resumed": resumed}
    if spec.trained:
        summary = json.loads((spec.dir / "summary.json").read_text()) if (spec.dir / "summary.json").is_file() else {}
        result.update(lr=spec.lr, holdout_auc=summary.get("best_auc"), selected_on=summary.get("selected_on"),
                      **step_timing(spec.dir, spec.cfg))
    elif spec.seed is not None:  # a CF row: seeded like a trained row, but no step of its own
        result.update(steps=0, sec_per_step=float("nan"), samples_per_s=float("nan"))
    spec.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(spec.result_path, json.dumps(result, indent=2, default=float))
    return result


def load_result(spec: RunSpec) -> dict | None:
    return json.loads(spec.result_path.read_text()) if spec.finished() else None


class Listener:
    """What the runner reports; the CLI shows it with rich, tests pass nothing."""

    def begin(self, runs: list[RunSpec], done: list[dict]) -> None: ...
    def start(self, spec: RunSpec) -> None: ...
    def finish(self, spec: RunSpec, result: dict) -> None: ...
    def end(self) -> None: ...


def run_all(runs: list[RunSpec], data: Path, device: str, listener: Listener | None = None,
            evaluator_factory: Callable[[], Evaluator] | None = None) -> list[dict]:
    """Every run's result, in plan order; only unfinished runs do any work."""
    listener = listener or Listener()
    for spec in runs:  # before any work: a stale run directory is an error now, not after an hour
        check_run_config(spec)
    results: dict[Path, dict] = {}
    for spec in runs:
        r = load_result(spec)
        if r is not None:
            results[spec.dir] = r
    todo = [s for s in runs if s.dir not in results]
    listener.begin(runs, list(results.values()))
    evaluator = None
    try:
        for spec in todo:
            listener.start(spec)
            if evaluator is None:  # loaded lazily: a fully finished experiment only rebuilds its report
                evaluator = (evaluator_factory or (lambda: Evaluator(data, device)))()
            results[spec.dir] = execute(spec, data, evaluator)
            listener.finish(spec, results[spec.dir])
    finally:
        listener.end()
    return [results[s.dir] for s in runs]
