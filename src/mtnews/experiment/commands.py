"""`mtnews experiment`: every Table-1 row over N seeds, resumably, then report.md, results.csv and figures."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path



def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "experiment",
        help="reproduce Table 1 (ablations x seeds) and Figure 4 as EXP_DIR/report.md (resumable)",
        description="Train every variant with N seeds, score them on the validation split and write "
        "report.md, results.csv, curves.png and conflicts.png. Re-running skips finished runs and resumes "
        "half-finished ones. Dotted overrides (--train.max_steps 40, ...) change the base config of every variant.",
    )
    e.add_argument("--data", required=True, help="dataset root folder (train/ and validation/ inside), or a MIND folder")
    e.add_argument("--out", required=True, help="experiment folder (runs/, report.md, results.csv, *.png)")
    e.add_argument("--config", help="base YAML config; an optional `experiment:` section sets seeds and variants")
    e.add_argument("--seeds", type=int, default=None, help="seeds per trained variant (default 3, or the config's experiment.seeds)")
    e.add_argument("--variants", default=None, help="comma-separated subset, e.g. random,mtrec,no-lora (default: all)")
    e.add_argument("--report-only", action="store_true", help="train nothing; rebuild the report from finished runs")
    e.set_defaults(func=_experiment, accepts_overrides=True)

    d = sub.add_parser("demo", help="synthesize, train, evaluate against baselines, plot (the `make demo` job)")
    d.add_argument("--out", default="runs/demo", help="output folder (data/, run/, results.json, training_curve.png)")
    d.add_argument("--config", default=None, help="training config (default: configs/demo.yaml when present)")
    d.add_argument("--users", type=int, default=2000)
    d.add_argument("--articles", type=int, default=1500)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--format", choices=("ebnerd", "mind"), default="ebnerd",
                   help="layout of the synthetic data: EBNeRD parquet, or MIND TSV folders read as MIND "
                        "(no sentiment task, no oracle row)")
    d.set_defaults(func=_demo, accepts_overrides=True)


def _demo(args: argparse.Namespace) -> int:
    from mtnews.experiment.demo import run_demo

    run_demo(args.out, args.config, args.overrides, users=args.users, articles=args.articles, seed=args.seed,
             format=args.format)
    return 0


class RichListener:
    """One progress bar over runs: the current run, runs done / planned, elapsed time, and an ETA from the
    mean duration of finished trained runs times the trained runs left (baselines take seconds)."""

    def __init__(self, console):
        self.console = console
        self.durations: list[float] = []
        self.left = 0

    def begin(self, runs, done) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        finished = {(r["variant"], r.get("seed")) for r in done}
        self.left = sum(1 for s in runs if s.trained and (s.variant, s.seed) not in finished)
        # A resumed run's seconds cover only its last attempt, so it would bias the estimate low.
        self.durations = [r["seconds"] for r in done if r.get("seed") is not None and not r.get("resumed")]
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[eta]}"), console=self.console)
        self.task = self.progress.add_task("experiment", total=len(runs), completed=len(done), eta=self._eta())
        if done:
            self.console.print(f"{len(done)} of {len(runs)} runs already finished; skipping them")
        self.progress.start()

    def _eta(self) -> str:
        if self.left == 0:
            return "ETA 0s"
        if not self.durations:
            return "ETA after the first trained run"
        secs = int(sum(self.durations) / len(self.durations) * self.left)
        return f"ETA {secs // 3600}h {secs % 3600 // 60:02d}m" if secs >= 3600 else f"ETA {secs // 60}m {secs % 60:02d}s"

    def start(self, spec) -> None:
        verb = "training + scoring" if spec.trained else "scoring"
        self.progress.update(self.task, description=f"{verb} {spec.label}")

    def finish(self, spec, result) -> None:
        if spec.trained:
            self.left -= 1
            if not result.get("resumed"):
                self.durations.append(result["seconds"])
        m = result["metrics"]
        self.console.print(f"[green]done[/] {spec.label}: AUC {m['auc']:.4f}, nDCG@10 {m['ndcg@10']:.4f} "
                           f"({result['seconds']:.0f} s)")
        self.progress.update(self.task, advance=1, eta=self._eta())

    def end(self) -> None:
        self.progress.stop()


def _summary_table(results):
    import math

    from rich.table import Table

    from mtnews.experiment.stats import METRICS, aggregate

    # Narrow enough for an 80-column terminal: std for AUC only; report.md has every std.
    table = Table(title="validation, mean over seeds (report.md has all stds)")
    table.add_column("variant", no_wrap=True)
    table.add_column("seeds", justify="right")
    table.add_column("AUC ± std", justify="right", no_wrap=True)
    for m in METRICS[1:]:
        table.add_column(m.upper() if m == "mrr" else m, justify="right")
    table.add_column("s/step", justify="right")
    for r in aggregate(results):
        auc = f"{r.mean['auc']:.4f}" + ("" if math.isnan(r.std["auc"]) else f" ± {r.std['auc']:.4f}")
        sps = "" if math.isnan(r.sec_per_step) else f"{r.sec_per_step:.2f}"
        table.add_row(r.variant, str(r.n) if r.trained else "–", auc, *(f"{r.mean[m]:.4f}" for m in METRICS[1:]), sps)
    return table


def _experiment(args: argparse.Namespace) -> int:
    from rich.console import Console

    from mtnews.data.articles import labelled_tasks
    from mtnews.data.check import check_dataset
    from mtnews.data.layout import split_paths
    from mtnews.errors import ConfigError
    from mtnews.experiment.rates import choose_rates
    from mtnews.experiment.report import ReportContext, write_report
    from mtnews.experiment.runner import load_result, plan_runs, run_all
    from mtnews.experiment.settings import DEFAULT_SEEDS, load_experiment_config, record_invocation
    from mtnews.experiment.variants import not_applicable, parse_variants

    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    console = Console()
    data, out = Path(args.data), Path(args.out)
    base, settings = load_experiment_config(args.config, args.overrides)
    seeds = args.seeds if args.seeds is not None else int(settings.get("seeds", DEFAULT_SEEDS))
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    variants = parse_variants(args.variants if args.variants is not None else settings.get("variants"), data)
    dataset = check_dataset(data)  # fails fast on a broken dataset, before any training
    labels = labelled_tasks(split_paths(data, "train").articles)
    na = not_applicable(variants, labels)
    runs = plan_runs(out, base, [v for v in variants if v not in na], seeds, labels, settings.get("lr"))
    out.mkdir(parents=True, exist_ok=True)

    extra = []
    if "sentiment" not in labels:
        extra.append("The articles have no sentiment labels (MIND has none): tasks.sentiment is 0 in every run.")
    if na:
        extra.append("Not applicable, so not run: " + "; ".join(f"{v} ({why})" for v, why in na.items()) + ".")
    if extra:
        console.print("note: " + " ".join(extra))
    already = sum(s.finished() for s in runs)
    if args.report_only:
        results = [r for r in (load_result(s) for s in runs) if r is not None]
        extra.append(f"Report only: {len(results)} of {len(runs)} planned runs had finished.")
    else:
        console.print(f"experiment: {len(variants)} variants, {seeds} seed(s), {len(runs)} runs -> {out}")
        results = run_all(runs, data, base.train.device, RichListener(console))
    every_run = results
    results = choose_rates(results)  # per variant and seed, the grid's run with the best holdout AUC
    chosen = {(r["variant"], r.get("seed"), r.get("lr")) for r in results}
    run_dirs: dict[str, list[Path]] = {}
    for s in runs:
        if s.trained and s.finished() and (s.variant, s.seed, s.lr) in chosen:
            run_dirs.setdefault(s.variant, []).append(s.dir)
    source = f"`{args.config}`" if args.config else "defaults"
    if args.overrides:
        source += " with `" + " ".join(args.overrides) + "`"
    invocations = record_invocation(out, time.perf_counter() - t0, len(every_run) - already, args.report_only,
                                    (load0, os.getloadavg()[0]))
    ctx = ReportContext(data=data, base=base, config_source=source, seeds=seeds, variants=variants,
                        dataset=dataset, wall_seconds=invocations[-1]["seconds"], planned=len(runs), extra=extra,
                        invocations=invocations, labels=labels, not_applicable=na, rates=settings.get("lr") or {},
                        every_run=every_run)
    write_report(out, results, run_dirs, ctx)
    if results:
        console.print(_summary_table(results))
    console.print(f"wrote {out / 'report.md'}, results.csv, curves.png, conflicts.png "
                  f"({time.perf_counter() - t0:.0f} s)")
    return 0
