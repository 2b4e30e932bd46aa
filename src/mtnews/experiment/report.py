"""EXP_DIR/report.md and results.csv from the runs' result.json files (each written atomically)."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mtnews.config import Config
from mtnews.experiment.stats import (METRICS, REFERENCE, SEED_CLAIM_AUC, Row, aggregate, differences,
                                     pooled_auc_std)
from mtnews.experiment.rates import FULL_FINETUNE_LR, variant_rates
from mtnews.experiment.variants import ALL_LABELS, ORDER, VARIANTS, mtrec_pins
from mtnews.io import atomic_write_text

CSV_FIELDS = ["variant", "seed", "lr", "holdout_auc", "selected", *METRICS, "impressions", "seconds", "steps",
              "sec_per_step", "samples_per_s", "resumed"]
HEADERS = {"auc": "AUC", "mrr": "MRR", "ndcg@5": "nDCG@5", "ndcg@10": "nDCG@10"}


@dataclass
class ReportContext:
    data: Path
    base: Config
    config_source: str  # the --config file and overrides, as the user gave them
    seeds: int
    variants: list[str]
    dataset: dict  # mtnews.data.check.check_dataset(data)
    wall_seconds: float  # this invocation
    planned: int  # runs in the plan (finished or not)
    extra: list[str] = field(default_factory=list)  # notes such as "report only"
    invocations: list[dict] = field(default_factory=list)  # every completed invocation, this one included
    labels: frozenset[str] = ALL_LABELS  # the auxiliary tasks the data has labels for
    not_applicable: dict[str, str] = field(default_factory=dict)  # variant -> why it was not run
    rates: dict[str, list[float]] = field(default_factory=dict)  # experiment.lr (mtnews.experiment.rates)
    every_run: list[dict] | None = None  # every finished run, grid runs not chosen included (None: the results)


def _num(x, digits: int = 4) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _pm(mean: float, std: float) -> str:
    return _num(mean) if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _lr(x) -> str:
    return "–" if x is None else f"{x:g}"


def _key(r: dict) -> tuple:
    return r["variant"], r.get("seed"), r.get("lr")


def results_csv(results: list[dict], every_run: list[dict] | None = None) -> str:
    """One row per finished run: `selected` marks the runs in Table 1 (false: a grid rate not chosen)."""
    chosen = {_key(r) for r in results}
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in every_run if every_run is not None else results:
        w.writerow({"variant": r["variant"], "seed": "" if r.get("seed") is None else r["seed"],
                    "lr": "" if r.get("lr") is None else r["lr"],
                    "holdout_auc": "" if r.get("holdout_auc") is None else r["holdout_auc"],
                    "selected": _key(r) in chosen,
                    **{m: r["metrics"][m] for m in METRICS}, "impressions": r["metrics"].get("impressions", ""),
                    "seconds": r["seconds"], "steps": r.get("steps", 0), "sec_per_step": r.get("sec_per_step", ""),
                    "samples_per_s": r.get("samples_per_s", ""), "resumed": r.get("resumed", False)})
    return buf.getvalue()


def _row_rates(results: list[dict]) -> dict[str, str]:
    """Variant -> the learning rate(s) its rows used, with the grid they were chosen from."""
    used: dict[str, list] = {}
    grids: dict[str, list] = {}
    for r in results:
        if r.get("seed") is not None:
            used.setdefault(r["variant"], []).append(r.get("lr"))
            grids.setdefault(r["variant"], r.get("lr_grid") or [r.get("lr")])
    out = {}
    for v, lrs in used.items():
        cell = ", ".join(_lr(x) for x in sorted(set(lrs), key=lambda x: (x is None, x)))
        if len(grids[v]) > 1:
            cell += " (of " + ", ".join(_lr(x) for x in grids[v]) + ")"
        out[v] = cell
    return out


def _table1(rows: list[Row], not_applicable: dict[str, str] | None = None,
            rates: dict[str, str] | None = None) -> list[str]:
    rates = rates or {}
    out = ["| variant | seeds | lr | " + " | ".join(HEADERS[m] for m in METRICS) + " | s/step | samples/s | what |",
           "|---|---:|---:|" + "---:|" * len(METRICS) + "---:|---:|---|"]
    by = {r.variant: r for r in rows}
    na = not_applicable or {}
    for name in [v for v in ORDER if v in by or v in na]:
        if name not in by:
            out.append(f"| {name} | – | – | " + " | ".join("n/a" for _ in METRICS)
                       + f" | – | – | not applicable, not run: {na[name]} ({VARIANTS[name].description}) |")
            continue
        r = by[name]
        cells = [_pm(r.mean[m], r.std[m]) for m in METRICS]
        seeds = str(r.n) if r.trained else "–"
        name = f"**{r.variant}**" if r.variant == REFERENCE else r.variant
        out.append(f"| {name} | {seeds} | {rates.get(r.variant, '–')} | " + " | ".join(cells)
                   + f" | {_num(r.sec_per_step, 2)} | {_num(r.samples_per_s, 1)} | {VARIANTS[r.variant].description} |")
    return out


def _differences(rows: list[Row]) -> list[str]:
    diffs = differences(rows)
    if not diffs:
        return [f"No `{REFERENCE}` row (or no other trained variant), so nothing to compare."]
    out = ["Rule: a difference to `mtrec` counts when |Δmean| > 2·sqrt(sd_variant² + sd_mtrec²), i.e. more than "
           "twice the standard deviation of the difference between one run of each (sd = sample std over seeds). "
           "Each cell is Δmean (threshold), marked **exceeds** when the rule holds; `n/a` needs ≥ 2 seeds on both sides.",
           "", "| variant | " + " | ".join(f"Δ{HEADERS[m]}" for m in METRICS) + " |",
           "|---|" + "---:|" * len(METRICS)]
    by_variant: dict[str, dict[str, object]] = {}
    for d in diffs:
        verdict = "n/a" if d.exceeds is None else ("**exceeds**" if d.exceeds else "within")
        thr = "" if math.isnan(d.threshold) else f" ({d.threshold:.4f})"
        by_variant.setdefault(d.variant, {})[d.metric] = f"{d.delta:+.4f}{thr} {verdict}"
    for v, cells in by_variant.items():
        out.append(f"| {v} | " + " | ".join(str(cells[m]) for m in METRICS) + " |")
    flagged = sorted({d.variant for d in diffs if d.exceeds})
    if all(d.exceeds is None for d in diffs):
        out += ["", "No difference can be judged: that needs at least two seeds for mtrec and for the variant."]
    else:
        out += ["", f"Variants with at least one difference beyond the noise: {', '.join(flagged) if flagged else 'none'}."]
    return out


def _seed_claim(rows: list[Row]) -> list[str]:
    ref = next((r for r in rows if r.variant == REFERENCE), None)
    sd_ref = ref.std["auc"] if ref else math.nan
    pooled = pooled_auc_std(rows)
    sd = pooled if not math.isnan(pooled) else sd_ref
    pts = SEED_CLAIM_AUC * 100
    if math.isnan(sd):
        return [f"The poster reports ablation deltas of about {pts:.1f} AUC points and calls them within noise. "
                "This experiment has fewer than two seeds per variant, so it cannot measure the noise to check that."]
    thr = 2 * math.sqrt(2) * sd  # 2 * sqrt(sd^2 + sd^2): the rule above with equal stds
    verdict = "within" if SEED_CLAIM_AUC <= thr else "beyond"
    out = [f"The poster reports ablation deltas of about {pts:.1f} AUC points and calls them within noise. Here the "
           f"seed-to-seed AUC std is {_num(sd_ref * 100, 2)} points for mtrec and {_num(pooled * 100, 2)} points "
           f"pooled over the trained variants (root mean of their variances), so the 2σ threshold for one run vs "
           f"another is 2·√2·σ = {thr * 100:.2f} points: a {pts:.1f}-point delta is **{verdict}** the noise of "
           f"this setup."]
    if ref is not None:
        deltas = [f"{r.variant} {100 * (r.mean['auc'] - ref.mean['auc']):+.2f}" for r in rows
                  if r.trained and r.variant != REFERENCE]
        if deltas:
            out += ["", f"Observed ΔAUC vs mtrec, in points: {', '.join(deltas)}."]
    return out


def _timing(rows: list[Row], results: list[dict], ctx: ReportContext) -> list[str]:
    run_total = sum(r["seconds"] for r in results)
    total = sum(i["seconds"] for i in ctx.invocations) or ctx.wall_seconds
    n = max(1, len(ctx.invocations))
    out = [f"- Total wall time: {_duration(total)} over {n} invocation{'s' * (n != 1)} of `mtnews experiment` "
           f"(this one: {_duration(ctx.wall_seconds)}; an invocation killed midway is not counted, but the runs "
           f"it finished are in the sum below).",
           f"- Sum of run times (training + evaluation, over all invocations): {_duration(run_total)}; "
           f"{len(results)} of {ctx.planned} planned runs finished."]
    # Timings on a shared machine scale with contention; the load average says how much there was.
    worked = [i for i in ctx.invocations if i.get("runs_done") and i.get("load")]
    if worked:
        out.append(f"- 1-minute load average (start → end) of the invocations that ran runs, on {os.cpu_count()} "
                   "CPUs: " + "; ".join(f"{i['runs_done']} runs, {_duration(i['seconds'])}, load "
                                        f"{i['load'][0]:.1f} → {i['load'][1]:.1f}" for i in worked) + ".")
    resumed = [f"{r['variant']} seed {r['seed']}" for r in results if r.get("resumed")]
    if resumed:
        out.append(f"- Continued from an earlier attempt (their seconds count only the attempt that finished them): "
                   f"{', '.join(resumed)}.")
    by = {r.variant: r for r in rows}
    if "repr-space" in by and REFERENCE in by:
        a, b = by["repr-space"].sec_per_step, by[REFERENCE].sec_per_step
        ratio = f" ({a / b:.2f}× mtrec)" if b and not math.isnan(a) and not math.isnan(b) else ""
        out.append(f"- Time per step, surgery in representation space vs parameter space: repr-space "
                   f"{_num(a, 3)} s vs mtrec {_num(b, 3)} s{ratio}.")
    out.append("- s/step and samples/s come from the logged per-step throughput (optimizer steps only; validation, "
               "checkpoints and model loading excluded), averaged over seeds.")
    return out


def _dataset(report: dict) -> list[str]:
    out = [f"`{report['root']}`: {report['articles']} articles, {report['categories']} categories.", "",
           "| split | impressions | users | users without history | in-view length (mean) | history length (mean) | without click |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for split, s in report["splits"].items():
        out.append(f"| {split} | {s['impressions']} | {s['users']} | {s['users_without_history']} | "
                   f"{s['inview_length']['mean']} | {s['history_length']['mean']} | {s.get('without_click', '–')} |")
    return out


def _appendix(results: list[dict]) -> list[str]:
    out = ["| variant | seed | lr | holdout AUC | " + " | ".join(HEADERS[m] for m in METRICS)
           + " | steps | s/step | run seconds |",
           "|---|---:|---:|---:|" + "---:|" * len(METRICS) + "---:|---:|---:|"]
    for r in results:
        seed = "–" if r.get("seed") is None else str(r["seed"])
        out.append(f"| {r['variant']} | {seed} | {_lr(r.get('lr'))} | {_num(r.get('holdout_auc'))} | "
                   + " | ".join(_num(r["metrics"][m]) for m in METRICS)
                   + f" | {r.get('steps', '–')} | {_num(r.get('sec_per_step'), 3)} | {r['seconds']:.1f} |")
    return out


def _rates_section(results: list[dict], ctx: ReportContext) -> list[str]:
    trained = [v for v in ctx.variants if VARIANTS[v].trained and v not in ctx.not_applicable]
    out = [f"Each trained variant trains its encoder at its own learning rate (`train.lr`; the heads and user "
           f"encoder keep `train.head_lr` = {ctx.base.train.head_lr:g}). Defaults: a LoRA variant uses the base "
           f"config's `train.lr` ({ctx.base.train.lr:g}); a variant without LoRA (full fine-tuning) uses "
           f"{FULL_FINETUNE_LR:g}, the usual rate for fully fine-tuning BERT. `experiment.lr` overrides them with "
           "one rate or a grid. With a grid every rate trains for every seed, and per seed the run with the best "
           "selection-holdout AUC (train's last day, never validation) is the row's run.", "",
           "| variant | rate(s) tried |", "|---|---|"]
    for v in trained:
        out.append(f"| {v} | " + ", ".join(_lr(x) for x in variant_rates(ctx.base, v, ctx.rates, ctx.labels)) + " |")
    every = ctx.every_run if ctx.every_run is not None else results
    chosen = {_key(r) for r in results}
    grid = [r for r in every if r["variant"] in trained and len(variant_rates(ctx.base, r["variant"], ctx.rates,
                                                                                ctx.labels)) > 1]
    if grid:
        out += ["", "Every run of a grid (validation AUC shown for reference only: it played no part in the choice):",
                "", "| variant | seed | lr | holdout AUC | validation AUC | chosen |", "|---|---:|---:|---:|---:|---|"]
        for r in grid:
            out.append(f"| {r['variant']} | {r['seed']} | {_lr(r.get('lr'))} | {_num(r.get('holdout_auc'))} | "
                       f"{_num(r['metrics']['auc'])} | {'**yes**' if _key(r) in chosen else 'no'} |")
    return out


def _deltas(ctx: ReportContext) -> list[str]:
    pins = mtrec_pins(ctx.base, ctx.labels)
    out = ["`mtrec` = the base config with " + ", ".join(f"`{k}={v}`" for k, v in pins.items())
           + "; every other trained variant = `mtrec` plus (besides its learning rate, above):", "",
           "| variant | change on mtrec |", "|---|---|"]
    for v in ctx.variants:
        if VARIANTS[v].trained and v != "mtrec":
            na = f" (not run: {ctx.not_applicable[v]})" if v in ctx.not_applicable else ""
            out.append(f"| {v} | " + ", ".join(f"`{k}={val}`" for k, val in VARIANTS[v].delta.items()) + f"{na} |")
    return out


def render_report(results: list[dict], ctx: ReportContext) -> str:
    rows = aggregate(results)
    k = ctx.base.data.eval_impressions
    seeds = ", ".join(str(ctx.base.train.seed + i) for i in range(ctx.seeds))
    lines = [
        "# MTRec experiment: Table 1 (with ablations and seeds) and Figure 4",
        "",
        f"Data `{ctx.data}`, config {ctx.config_source}, {ctx.seeds} seed(s) per trained variant "
        f"(train.seed = {seeds}). Written {datetime.now().isoformat(timespec='seconds')}.",
        *[f"\n{e}" for e in ctx.extra],
        "",
        "## Table 1: validation split, full in-view lists",
        "",
        *_table1(rows, ctx.not_applicable, _row_rates(results)),
        "",
        "Metrics are the mean ± sample std (ddof=1) over seeds; baselines do not depend on a seed and run once. "
        "Each run is scored as `mtnews evaluate --run` scores it: its best weights by the AUC measured during "
        f"training on the selection holdout (the last {ctx.base.train.selection.holdout_hours:g} h of the train "
        f"log, held out of training; {'first ' + str(k) if k else 'all'} of its impressions), else its final "
        "weights. Validation is never selected on. `lr`: the encoder learning rate of the row's runs "
        "(see Learning rates).",
        "",
        "## Learning rates",
        "",
        *_rates_section(results, ctx),
        "",
        "## Differences to mtrec",
        "",
        *_differences(rows),
        "",
        "### The poster's noise claim",
        "",
        *_seed_claim(rows),
        "",
        "## Figures",
        "",
        "![Training loss and holdout AUC, full fine-tuning vs LoRA](curves.png)",
        "",
        "`curves.png`: training loss (moving average) and selection-holdout AUC during training for full "
        "fine-tuning (`no-lora`) and LoRA (`mtrec`), each at its own learning rate: mean over seeds, band = "
        "min–max over seeds.",
        "",
        "![Gradient cosine and projected share per surgery variant](conflicts.png)",
        "",
        "`conflicts.png`: per surgery variant, the distribution of cos(main gradient, auxiliary gradient) over "
        "training steps (all seeds pooled) and the rolling share of projected steps (`repr-space`: of projected "
        "news vectors), mean over seeds.",
        "",
        "## Timing",
        "",
        *_timing(rows, results, ctx),
        "",
        "## Dataset",
        "",
        *_dataset(ctx.dataset),
        "",
        "## Base config",
        "",
        "Every trained variant is this config plus its change below, with train.seed = base seed + i for seed i.",
        "",
        "```yaml",
        ctx.base.to_yaml().rstrip(),
        "```",
        "",
        *_deltas(ctx),
        "",
        "## Appendix: per-seed results",
        "",
        *_appendix(results),
        "",
    ]
    return "\n".join(lines)


def write_report(exp_dir: Path, results: list[dict], run_dirs: dict[str, list[Path]], ctx: ReportContext) -> None:
    """results.csv, curves.png, conflicts.png, then report.md (last, so a report always has its figures)."""
    from mtnews.experiment.plots import plot_conflicts, plot_curves

    atomic_write_text(exp_dir / "results.csv", results_csv(results, ctx.every_run))
    plot_curves(run_dirs, exp_dir / "curves.png", ctx.base.data.eval_impressions)
    plot_conflicts({v: d for v, d in run_dirs.items() if VARIANTS[v].surgery}, exp_dir / "conflicts.png")
    atomic_write_text(exp_dir / "report.md", render_report(results, ctx))
