"""Score a whole split with a baseline or a trained run: the library behind `mtnews evaluate`.

The run is loaded once (`model.run.load_run`) and handed down; the dataset's articles are read with the
run's label vocabulary, and its histories with the run's `data.history_size`.
"""

from __future__ import annotations

from pathlib import Path

from mtnews.cf.params import CFParams
from mtnews.cf.scorers import SegmentScorer, make_cf_scorer
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
CF_SCORERS = ("cf-user", "cf-als", "mtrec+cf")  # mtnews.cf; cf-user and mtrec+cf score with a run's vectors
CF_NEEDS_RUN = ("cf-user", "mtrec+cf")
SCORERS = (*BASELINES, *CF_SCORERS)
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
                prediction_format: str | None = None, signals: SignalOptions | dict | None = None,
                cf: CFParams | None = None) -> dict:
    """Metrics over the full in-view lists of `split` (and/or a predictions.zip), streamed in chunks.

    A `scorer` (a baseline name) or a `run` (a run directory or a loaded `Run`) is given, not both, except
    for the CF scorers below.
    The test split has no labels: it needs `predictions_out` and returns only counts. `data` is an EBNeRD
    or a MIND folder; the zip is in that dataset's submission format unless `prediction_format` says
    otherwise (ebnerd: predictions.txt, mind: prediction.txt). `signals` sets the time baselines'
    `data.signals.SignalOptions` (or a mapping of its fields); their result carries a `signals` entry
    saying which window mode and sources produced it. A run with MTRec-T's branch reads the signals its
    run.json records (`Run.signal_options`, not `signals`), and says so in the same entry.

    The CF scorers (`mtnews.cf`, parameters `cf`): cf-user and mtrec+cf take `run` too (its user vectors
    find the neighbours; mtrec+cf blends its scores), cf-als takes none. Their result adds `cf` (what was
    fitted) and `segments`, the same metrics per history segment (cold / 1-4 / 5+ clicks).
    """
    if scorer is not None and scorer not in SCORERS:
        raise ConfigError(f"unknown scorer '{scorer}', expected one of {', '.join(SCORERS)}")
    if scorer is None and run is None:
        raise ConfigError(f"evaluate needs exactly one of a scorer ({'|'.join(SCORERS)}) or a run directory "
                          f"(cf-user and mtrec+cf take both)")
    if scorer in CF_NEEDS_RUN and run is None:
        raise ConfigError(f"--scorer {scorer} needs --run (a trained run directory: its user vectors find the neighbours)")
    if scorer is not None and scorer not in CF_NEEDS_RUN and run is not None:
        raise ConfigError(f"--scorer {scorer} takes no --run; give one or the other")
    if chunk <= 0:
        raise ConfigError(f"--chunk must be a positive integer, got {chunk}")
    paths = split_paths(data, split)
    if not paths.labelled and predictions_out is None:
        raise ConfigError("the test split has no clicks to evaluate; add --predictions-out to write predictions")
    check_output_file(predictions_out, "predictions zip")
    submission_member(prediction_format or paths.kind)  # an unknown format fails before any scoring
    cf = (cf or CFParams()).validate()
    if not isinstance(signals, SignalOptions):
        signals = SignalOptions.from_dict(signals)
    if run is not None and not isinstance(run, Run):
        run = load_run(run, device=resolve_device(device))
    articles = load_articles(paths.articles) if run is None else run.load_dataset_articles(paths.articles)
    histories = load_histories(paths.history, articles, BASELINE_HISTORY if run is None else run.history_size)
    cf_info = None
    if scorer in CF_SCORERS:
        s, cf_info = make_cf_scorer(scorer, data, paths, run, articles, histories, cf)
        s = SegmentScorer(s, histories)
    elif run is None:
        s = make_baseline(scorer, paths, seed, signals)
    else:
        s = ModelScorer.for_split(run, paths, articles, histories)
    result = run_scorer(s, paths, articles, histories, chunk, predictions_out, progress=progress,
                        prediction_format=prediction_format)
    if cf_info is not None:
        if hasattr(s.scorer, "description"):
            cf_info.update(s.scorer.description)
        result["cf"] = cf_info
        result["segments"] = s.segments()
    if isinstance(s, TimeScorer):
        result["signals"] = s.description
        if scorer == "recency":
            result["signals"]["undated_candidates"] = s.undated
    elif isinstance(s, ModelScorer) and s.description is not None:
        result["signals"] = s.description  # MTRec-T: the run's own signal options
    return result
