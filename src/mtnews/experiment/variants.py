"""The rows of the Table-1 experiment: baselines and MTRec variants, each a config delta on one base config.

Every trained ablation is `mtrec` plus exactly one change, so its difference to the `mtrec` row isolates
that change. `mtrec` itself pins what the poster calls MTRec (LoRA on, category + sentiment heads,
`project-both` surgery in parameter space, no NER, no subcategory) on top of whatever the base config sets
for the rest (learning rates, steps, sequence lengths, ...).

A dataset without labels for a task (MIND has no sentiment, EBNeRD no subcategory names) gets that task's
weight pinned to 0 in every run, and the rows that need the task (`no-sent`, `+subcat`, ...) are not run
but marked not applicable in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mtnews.config import Config, TasksConfig, merge_dicts, load_config
from mtnews.data.articles import AUX_TASKS
from mtnews.data.layout import split_paths
from mtnews.errors import ConfigError


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    delta: dict = field(default_factory=dict)  # dotted key -> value, applied after the mtrec pins
    trained: bool = True
    # Surgery variants have two gradient groups, so their metrics.csv carries cosine / projected values.
    surgery: bool = False
    needs: tuple[str, ...] = ()  # auxiliary tasks whose labels the row is about (n/a on data without them)
    # A CF row (mtnews.cf): scored once per seed, not trained; `on_mtrec` rows use that seed's mtrec run.
    cf: bool = False
    on_mtrec: bool = False


BASELINES = ("random", "popularity", "recency", "trending", "ctr", "oracle")
ALL_LABELS = frozenset(AUX_TASKS)  # data with labels for every auxiliary task

VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("random", "random scores (lower bound)", trained=False),
    Variant("popularity", "train-split click counts", trained=False),
    Variant("recency", "newest first (time signals, past-only)", trained=False),
    Variant("trending", "trailing-window in-view counts (time signals, past-only)", trained=False),
    Variant("ctr", "smoothed click-through rate of the longest window (time signals, past-only)", trained=False),
    Variant("bert-baseline", "BERT + LoRA, main task only, no surgery",
            {"tasks.category": 0.0, "tasks.sentiment": 0.0, "tasks.ner": 0.0, "train.surgery": "sum"}),
    Variant("mtrec", "MTRec: LoRA, category + sentiment, project-both surgery", surgery=True),
    Variant("no-lora", "mtrec with full fine-tuning instead of LoRA", {"model.lora.enabled": False}, surgery=True),
    Variant("no-cat", "mtrec without the category task", {"tasks.category": 0.0}, surgery=True,
            needs=("category",)),
    Variant("no-sent", "mtrec without the sentiment task", {"tasks.sentiment": 0.0}, surgery=True,
            needs=("sentiment",)),
    Variant("no-gs", "mtrec without gradient surgery (plain sum)", {"train.surgery": "sum"}),
    Variant("project-aux", "mtrec projecting only the auxiliary gradient", {"train.surgery": "project-aux"}, surgery=True),
    Variant("pcgrad", "mtrec with PCGrad over every task", {"train.surgery": "pcgrad"}, surgery=True),
    Variant("repr-space", "mtrec with surgery on news vectors instead of parameters",
            {"train.surgery_space": "representation"}, surgery=True),
    Variant("+ner", "mtrec plus the NER task (lambda 0.3)", {"tasks.ner": 0.3}, surgery=True, needs=("ner",)),
    Variant("+subcat", "mtrec plus the subcategory task (lambda 0.3; MIND)", {"tasks.subcategory": 0.3},
            surgery=True, needs=("subcategory",)),
    Variant("cf-user", "user-user CF: 50 nearest users by mtrec's user vectors, their past clicks decayed",
            trained=False, cf=True, on_mtrec=True),
    Variant("cf-als", "implicit ALS on the clicks known before the split (seed = ALS seed)", trained=False, cf=True),
    Variant("mtrec+cf", "z(mtrec) + w z(cf-user), w chosen on the train log's last 24 h", trained=False, cf=True,
            on_mtrec=True),
    Variant("+temporal", "MTRec-T: mtrec plus the user-gated popularity/recency branch",
            {"model.temporal.enabled": True}, surgery=True),
    Variant("temporal-only", "MTRec-T without the content term r_u . r_c (the gated time score alone)",
            {"model.temporal.enabled": True, "model.temporal.content": False}, surgery=True),
    Variant("no-gate", "MTRec-T with one learned scalar instead of the user gate g(r_u)",
            {"model.temporal.enabled": True, "model.temporal.gate": False}, surgery=True),
    Variant("oracle", "generator's true utilities (upper bound; synthetic data only)", trained=False),
)}

# Table order: lower bounds, the reference rows, the ablations, the CF rows, then the upper bound.
ORDER = list(VARIANTS)


def not_applicable(variants: list[str], labels: frozenset[str] = ALL_LABELS) -> dict[str, str]:
    """Variant -> why it is not run, for the variants that need a task the data has no labels for."""
    out = {}
    for v in variants:
        missing = [t for t in VARIANTS[v].needs if t not in labels]
        if missing:
            out[v] = f"the articles have no {' or '.join(missing)} labels"
    return out


def has_oracle(data: str | Path) -> bool:
    return split_paths(data, "validation").oracle.is_file()


def default_variants(data: str | Path) -> list[str]:
    return [n for n in ORDER if n != "oracle" or has_oracle(data)]


def parse_variants(spec: str | list[str] | None, data: str | Path) -> list[str]:
    """Variant names in table order; `None` means every variant (oracle only when the data has one)."""
    if spec is None:
        return default_variants(data)
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    if not names:
        raise ConfigError("--variants: name at least one variant")
    on_mtrec = [n for n in names if VARIANTS[n].on_mtrec]
    if on_mtrec and "mtrec" not in names:
        raise ConfigError(f"--variants: {', '.join(on_mtrec)} score with each seed's mtrec run; add mtrec to the list")
    if "oracle" in names and not has_oracle(data):
        raise ConfigError(f"{split_paths(data, 'validation').oracle}: no oracle file, so the oracle row cannot be scored")
    return [n for n in ORDER if n in names]


def _nested(dotted: dict) -> dict:
    out: dict = {}
    for key, value in dotted.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def mtrec_pins(base: Config, labels: frozenset[str] = ALL_LABELS) -> dict:
    """The settings that make a config MTRec, keeping the base's auxiliary weights when they are on;
    a task without labels in the data (`labels`: `mtnews.data.articles.labelled_tasks`) is pinned off."""
    default = TasksConfig()
    return {
        "model.lora.enabled": True,
        "tasks.category": (base.tasks.category or default.category) if "category" in labels else 0.0,
        "tasks.sentiment": (base.tasks.sentiment or default.sentiment) if "sentiment" in labels else 0.0,
        "tasks.ner": 0.0,
        "tasks.subcategory": 0.0,
        "train.surgery": "project-both",
        "train.surgery_space": "params",
    }


def variant_delta(base: Config, name: str, labels: frozenset[str] = ALL_LABELS) -> dict:
    """The dotted overrides that turn `base` into variant `name` (mtrec pins, then the variant's change)."""
    variant = VARIANTS[name]
    if not variant.trained:
        raise ValueError(f"{name} is a baseline; it has no training config")
    return {**mtrec_pins(base, labels), **variant.delta}


def variant_config(base: Config, name: str, seed_offset: int, labels: frozenset[str] = ALL_LABELS,
                   lr: float | None = None) -> Config:
    """The full, validated training config of one run: variant delta plus train.seed = base seed + offset,
    and with `lr` (see `mtnews.experiment.rates`) the encoder learning rate train.lr."""
    delta = {**variant_delta(base, name, labels), "train.seed": base.train.seed + seed_offset}
    if lr is not None:
        overriding = [i for i, st in enumerate(base.train.stages) if st.lr is not None and st.lr != lr]
        if overriding:  # a stage's own rate would silently replace the variant's
            raise ConfigError(f"train.stages[{overriding[0]}].lr: {base.train.stages[overriding[0]].lr} would "
                              f"replace variant {name}'s learning rate {lr}; drop the stage's lr in an experiment")
        delta["train.lr"] = lr
    return load_config(None, merge_dicts(base.to_dict(), _nested(delta)))
