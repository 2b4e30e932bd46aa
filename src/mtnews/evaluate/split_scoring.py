"""Score a whole split with a baseline or a trained run: the library behind `mtnews evaluate`.

The run is loaded once (`model.run.load_run`) and handed down; the dataset's articles are read with the
run's label vocabulary, and its histories with the run's `data.history_size`.
"""

from __future__ import annotations

from pathlib import Path

from mtnews.data.articles import load_articles
from mtnews.data.history import load_histories
from mtnews.data.layout import SplitPaths, split_paths
from mtnews.data.signals import SignalOptions
from mtnews.errors import ConfigError
from mtnews.io import check_output_file
from mtnews.evaluate.mind_submission import submission_member
from mtnews.evaluate.run_scorer import ModelScorer
from mtnews.evaluate.scorers import OracleScorer, PopularityScorer, RandomScorer, TimeScorer
from mtnews.evaluate.streaming import run_scorer
from mtnews.model.run import Run, load_run
from mtnews.model.scoring import resolve_device

BASELINES = ("random", "popularity", "oracle", *TimeScorer.NAMES)
BASELINE_HISTORY = 30  # baselines ignore histories; any size does


def make_baseline(name: str, paths: SplitPaths, seed: int = 0, signals: SignalOptions | None = None):
    if name in TimeScorer.NAMES:
        return TimeScorer(name, paths, signals)
    if name == "random":
        return RandomScorer(seed)
    if name == "popularity":
        return PopularityScorer(paths.root)
    if name == "oracle":
        return OracleScorer(paths)
    raise ConfigError(f"unknown scorer '{name}', expected one of {', '.join(BASELINES)}")


def score_split(data: str | Path, split: str = "validation", *, scorer: str | None = None,
                run: str | Path | Run | None = None, chunk: int = 50_000, predictions_out: str | Path | None = None,
                seed: int = 0, device: str = "auto", progress: bool = False,
                prediction_format: str | None = None, signals: SignalOptions | dict | None = None) -> dict:
    """Metrics over the full in-view lists of `split` (and/or a predictions.zip), streamed in chunks.

    Exactly one of `scorer` (a baseline name) and `run` (a run directory or a loaded `Run`) is given.
    The test split has no labels: it needs `predictions_out` and returns only counts. `data` is an EBNeRD
    or a MIND folder; the zip is in that dataset's submission format unless `prediction_format` says
    otherwise (ebnerd: predictions.txt, mind: prediction.txt). `signals` sets the time baselines'
    `data.signals.SignalOptions` (or a mapping of its fields); their result carries a `signals` entry
    saying which window mode and sources produced it. A run with MTRec-T's branch reads the signals its
    run.json records (`Run.signal_options`, not `signals`), and says so in the same entry.
    """
    if (scorer is None) == (run is None):
        raise ConfigError(f"evaluate needs exactly one of a scorer ({'|'.join(BASELINES)}) or a run directory")
    if chunk <= 0:
        raise ConfigError(f"--chunk must be a positive integer, got {chunk}")
    paths = split_paths(data, split)
    if not paths.labelled and predictions_out is None:
        raise ConfigError("the test split has no clicks to evaluate; add --predictions-out to write predictions")
    check_output_file(predictions_out, "predictions zip")
    submission_member(prediction_format or paths.kind)  # an unknown format fails before any scoring
    if scorer is not None and scorer not in BASELINES:
        raise ConfigError(f"unknown scorer '{scorer}', expected one of {', '.join(BASELINES)}")
    if not isinstance(signals, SignalOptions):
        signals = SignalOptions.from_dict(signals)
    if run is not None and not isinstance(run, Run):
        run = load_run(run, device=resolve_device(device))
    articles = load_articles(paths.articles) if run is None else run.load_dataset_articles(paths.articles)
    histories = load_histories(paths.history, articles, BASELINE_HISTORY if run is None else run.history_size)
    if run is None:
        s = make_baseline(scorer, paths, seed, signals)
    else:
        s = ModelScorer.for_split(run, paths, articles, histories)
    result = run_scorer(s, paths, articles, histories, chunk, predictions_out, progress=progress,
                        prediction_format=prediction_format)
    if isinstance(s, TimeScorer):
        result["signals"] = s.description
        if scorer == "recency":
            result["signals"]["undated_candidates"] = s.undated
    elif isinstance(s, ModelScorer) and s.description is not None:
        result["signals"] = s.description  # MTRec-T: the run's own signal options
    return result
