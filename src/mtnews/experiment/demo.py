"""The `mtnews demo` job end to end on the embedded MiniLM, on CPU.

synthesize a dataset -> train MTRec (LoRA, both auxiliary tasks, gradient surgery) -> evaluate on the
validation split beside the random, popularity and oracle baselines -> save the training curve.
Every stage is skipped when its output already exists, so a second `make demo` resumes.
"""

from __future__ import annotations

import json
from pathlib import Path


def run_demo(out: str | Path, config: str | Path | None = None, overrides: list[str] | None = None,
             users: int = 2000, articles: int = 1500, seed: int = 0, console=None) -> dict:
    """Run (or resume) the demo in `out`; returns {"validation": {scorer: metrics}, "gap_closed": float}."""
    from rich.console import Console

    from mtnews.config import load_config
    from mtnews.data.check import check_dataset
    from mtnews.data.synth import synthesize
    from mtnews.evaluate.split_scoring import BASELINES, score_split
    from mtnews.evaluate.tables import metrics_table
    from mtnews.io import atomic_write_text
    from mtnews.train.checkpoint import checkpoint_dirs
    from mtnews.train.curve import plot_training_curve
    from mtnews.train.loop import train

    console = console or Console(soft_wrap=True)  # long paths stay on one line in logs
    out = Path(out)
    data, run = out / "data", out / "run"
    if config is None and Path("configs/demo.yaml").is_file():
        config = "configs/demo.yaml"
    cfg = load_config(config, overrides)

    if not (data / "validation" / "behaviors.parquet").exists():
        console.rule("1/4 synthesize")
        synthesize(data, users=users, articles=articles, seed=seed)
    report = check_dataset(data)
    console.print(f"dataset {data}: {report['articles']} articles, "
                  + ", ".join(f"{s} {r['impressions']} impressions" for s, r in report["splits"].items()))

    console.rule("2/4 train")
    if (run / "final").exists():
        console.print(f"{run} already trained; delete it to retrain")
    else:
        summary = train(cfg, data, run, resume=bool(run.exists() and checkpoint_dirs(run)))
        console.print(f"trained {summary['steps']} steps in {summary['seconds']} s")

    console.rule("3/4 evaluate (validation, full in-view lists)")
    rows = {name: score_split(data, "validation", scorer=name) for name in BASELINES}
    rows["mtrec (this run)"] = score_split(data, "validation", run=run)
    console.print(metrics_table(rows, title="validation"))
    pop, oracle, model = rows["popularity"]["auc"], rows["oracle"]["auc"], rows["mtrec (this run)"]["auc"]
    gap = (model - pop) / (oracle - pop) if oracle > pop else float("nan")
    console.print(f"MTRec closes {gap:.0%} of the AUC gap between popularity and the oracle.")
    result = {"validation": rows, "gap_closed": gap}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))

    console.rule("4/4 plot")
    png = plot_training_curve(run, out / "training_curve.png", title="MTRec demo (MiniLM + LoRA, CPU)")
    console.print(f"wrote {png} and {out / 'results.json'}")
    return result
