"""The `mtnews demo` job end to end on the embedded MiniLM, on CPU.

synthesize a dataset -> train MTRec (LoRA, both auxiliary tasks, gradient surgery) -> evaluate on the
validation split beside the random, popularity and oracle baselines -> save the training curve.
Every stage is skipped when its output already exists, so a second `make demo` resumes.

With `format="mind"` (`make demo DATA_FORMAT=mind`) the same synthetic data is written in the MIND layout
(train/, dev/, test/ TSV folders) and every later stage reads that folder as MIND. MIND cannot hold
sentiment labels or the generator's utilities, so the sentiment task is off (training says so) and there
is no oracle row.
"""

from __future__ import annotations

import json
from pathlib import Path


FORMATS = ("ebnerd", "mind")
# A finished synthesis, per layout: the last file each writer puts in place.
_DONE = {"ebnerd": Path("validation") / "behaviors.parquet", "mind": Path("dev") / "behaviors.tsv"}


def run_demo(out: str | Path, config: str | Path | None = None, overrides: list[str] | None = None,
             users: int = 2000, articles: int = 1500, seed: int = 0, console=None, format: str = "ebnerd") -> dict:
    """Run (or resume) the demo in `out`; returns {"validation": {scorer: metrics}, "gap_closed": float}.

    `format`: the layout the synthetic data is written in (ebnerd, or mind); gap_closed is None without
    an oracle (MIND)."""
    from rich.console import Console

    from mtnews.config import load_config
    from mtnews.data.check import check_dataset
    from mtnews.data.layout import split_paths
    from mtnews.data.mind_synth import synthesize_mind
    from mtnews.data.synth import synthesize
    from mtnews.errors import ConfigError
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
    if format not in FORMATS:
        raise ConfigError(f"--format: '{format}' is not one of {', '.join(FORMATS)}")
    cfg = load_config(config, overrides)

    other = next(f for f in FORMATS if f != format)
    if (data / _DONE[other]).exists():
        raise ConfigError(f"{data}: holds the demo data in the {other} layout, not {format}; choose another --out "
                          f"(or delete {out}) to run the demo on {format} data")
    if not (data / _DONE[format]).exists():
        console.rule(f"1/4 synthesize ({format} layout)")
        (synthesize_mind if format == "mind" else synthesize)(data, users=users, articles=articles, seed=seed)
    report = check_dataset(data)
    console.print(f"dataset {data} ({format} layout): {report['articles']} articles, "
                  + ", ".join(f"{s} {r['impressions']} impressions" for s, r in report["splits"].items()))

    console.rule("2/4 train")
    if (run / "final").exists():
        console.print(f"{run} already trained; delete it to retrain")
    else:
        summary = train(cfg, data, run, resume=bool(run.exists() and checkpoint_dirs(run)))
        console.print(f"trained {summary['steps']} steps in {summary['seconds']} s")

    console.rule("3/4 evaluate (validation, full in-view lists)")
    has_oracle = split_paths(data, "validation").oracle.is_file()
    rows = {name: score_split(data, "validation", scorer=name) for name in BASELINES if name != "oracle" or has_oracle}
    rows["mtrec (this run)"] = score_split(data, "validation", run=run)
    console.print(metrics_table(rows, title="validation"))
    pop, model = rows["popularity"]["auc"], rows["mtrec (this run)"]["auc"]
    oracle = rows["oracle"]["auc"] if has_oracle else float("nan")
    gap = (model - pop) / (oracle - pop) if oracle > pop else float("nan")
    if has_oracle:
        console.print(f"MTRec closes {gap:.0%} of the AUC gap between popularity and the oracle.")
    else:
        console.print(f"MTRec AUC {model - pop:+.4f} over popularity (the {format} layout holds no oracle utilities).")
    result = {"validation": rows, "gap_closed": gap if has_oracle else None}
    atomic_write_text(out / "results.json", json.dumps(result, indent=2))

    console.rule("4/4 plot")
    png = plot_training_curve(run, out / "training_curve.png", title="MTRec demo (MiniLM + LoRA, CPU)")
    console.print(f"wrote {png} and {out / 'results.json'}")
    return result
