"""A training run directory as one loadable object: everything needed to rebuild and use its model.

    RUN/
      config.yaml           the resolved training config
      run.json              format version, label vocabularies in head order, head sizes, backbone (+ sha256);
                            the subcategory vocabulary and head (MIND) were added within format 1, so a
                            run.json without them reads as having none; so was `temporal` (MTRec-T's
                            branch and its SignalOptions): without it a run is content-only
      tokenizer/            the tokenizer, saved (titles tokenize the same way wherever the run is used)
      articles.parquet      article_id, title, category_str, published_time of the training articles
      best/ final/ checkpoints/step-N/   model.safetensors (trainable tensors only)

Head sizes come from run.json, never from whatever articles file a later command reads, so a run scores
any dataset: a test set with its own, larger articles file included. The frozen backbone is loaded again
from `model.pretrained` and checked against the recorded sha256 when it is a local folder.
Runs written before run.json existed fail with one line saying how to convert them (`upgrade_run`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mtnews.config import Config, load_config
from mtnews.data.articles import FIRST, ArticleTable, LabelVocab, load_articles
from mtnews.data.signals import SignalOptions
from mtnews.errors import CheckpointError, ConfigError
from mtnews.io import atomic_dir, atomic_path, atomic_write_text
from mtnews.model.build import WEIGHTS, build_model, head_sizes, load_weights
from mtnews.model.mtrec import MTRec
from mtnews.model.pretrained import resolve_pretrained
from mtnews.model.temporal import signal_options

RUN_FORMAT = 1
RUN_JSON = "run.json"
TOKENIZER = "tokenizer"
ARTICLES = "articles.parquet"


def backbone_sha256(name: str) -> str | None:
    """sha256 over a local model folder's files (relative names and bytes); None for a hub id."""
    folder = Path(resolve_pretrained(name))
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(folder)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class RunManifest:
    """The contents of run.json."""

    backbone: str
    backbone_sha256: str | None
    vocab: LabelVocab
    heads: dict[str, int]
    format: int = RUN_FORMAT
    # MTRec-T: {"signals": SignalOptions.to_dict() used at scoring, "names": the branch's input columns};
    # None for a content-only run.
    temporal: dict | None = None

    def to_json(self) -> str:
        raw = {"format": self.format, "backbone": self.backbone, "backbone_sha256": self.backbone_sha256,
               "vocab": self.vocab.to_dict(), "heads": self.heads}
        if self.temporal is not None:
            raw["temporal"] = self.temporal
        return json.dumps(raw, indent=2)

    @classmethod
    def read(cls, path: Path) -> "RunManifest":
        try:
            raw = json.loads(path.read_text())
            fmt = raw["format"]
            if fmt != RUN_FORMAT:
                raise CheckpointError(f"{path}: run format {fmt}, this mtnews reads format {RUN_FORMAT}")
            heads = {k: int(raw["heads"][k]) for k in ("category", "sentiment", "ner")}
            # Added within format 1: a run.json without it has no subcategory head.
            heads["subcategory"] = int(raw["heads"].get("subcategory", 0))
            temporal = raw.get("temporal")  # added within format 1: absent = content-only
            if temporal is not None:
                temporal = {"signals": dict(temporal["signals"]), "names": [str(n) for n in temporal["names"]]}
            return cls(str(raw["backbone"]), raw["backbone_sha256"], LabelVocab.from_dict(raw["vocab"]), heads, fmt,
                       temporal)
        except CheckpointError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{path}: unreadable run description ({type(e).__name__}: {e}); "
                                  f"expected a JSON object with format, backbone, vocab and heads") from None


def write_run_files(run_dir: str | Path, cfg: Config, articles: ArticleTable, tokenizer) -> RunManifest:
    """Write run.json, tokenizer/ and articles.parquet (each atomically) beside a run's weights."""
    run_dir = Path(run_dir)
    vocab = articles.vocab
    spec = RunManifest(cfg.model.pretrained, backbone_sha256(cfg.model.pretrained), vocab, head_sizes(cfg, vocab),
                       temporal=temporal_record(cfg))
    atomic_write_text(run_dir / RUN_JSON, spec.to_json())
    with atomic_dir(run_dir / TOKENIZER) as tmp:
        tokenizer.save_pretrained(str(tmp))
    n = len(articles) - FIRST
    published = articles.published_us[FIRST:] if articles.published_us is not None else np.zeros(n, dtype=np.int64)
    frame = pl.DataFrame({
        "article_id": pl.Series(articles.article_ids[FIRST:], dtype=pl.Int32),
        "title": pl.Series(articles.titles[FIRST:], dtype=pl.String),
        "category": pl.Series(articles.category[FIRST:], dtype=pl.Int64),
        "published": pl.Series(published, dtype=pl.Int64),
    }).select(
        "article_id", "title",
        pl.col("category").replace_strict(list(range(len(articles.category_names))), articles.category_names,
                                          default=None, return_dtype=pl.String).alias("category_str"),
        # 0 is the article table's "no publication time"
        pl.when(pl.col("published") != 0).then(pl.col("published")).cast(pl.Datetime("us")).alias("published_time"),
    )
    with atomic_path(run_dir / ARTICLES, suffix=".parquet") as tmp:
        frame.write_parquet(tmp)
    return spec


def temporal_record(cfg: Config) -> dict | None:
    """What run.json records of MTRec-T's branch: the scoring SignalOptions and the input columns."""
    if not cfg.model.temporal.enabled:
        return None
    options = signal_options(cfg.model.temporal)
    return {"signals": options.to_dict(), "names": list(options.names())}


@dataclass
class Run:
    """A run loaded once: config, run.json, tokenizer, model in eval mode and the weights it holds."""

    dir: Path
    cfg: Config
    spec: RunManifest
    tokenizer: object
    model: MTRec
    weights: Path
    _articles: ArticleTable | None = field(default=None, repr=False)

    @property
    def history_size(self) -> int:
        return self.cfg.data.history_size

    @property
    def signal_options(self) -> SignalOptions | None:
        """The time signals the run's MTRec-T branch reads (columns in `.names()` order); None: content-only."""
        if self.spec.temporal is None:
            return None
        try:
            return SignalOptions.from_dict(self.spec.temporal["signals"])
        except ConfigError as e:
            raise CheckpointError(f"{self.dir / RUN_JSON}: temporal.signals: {e}") from None

    @property
    def articles(self) -> ArticleTable:
        """The run's own article table (its training articles), labels in head order."""
        if self._articles is None:
            self._articles = load_articles(self.dir / ARTICLES, vocab=self.spec.vocab)
        return self._articles

    def load_dataset_articles(self, path: str | Path) -> ArticleTable:
        """Another articles file with its labels mapped onto this run's heads."""
        return load_articles(path, vocab=self.spec.vocab)

    def fingerprint(self) -> str:
        """sha256 over the config, run.json and the weights' bytes: what every score depends on."""
        h = hashlib.sha256()
        for p in (self.dir / "config.yaml", self.dir / RUN_JSON, self.weights):
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()


def run_weights(run_dir: str | Path) -> Path:
    """The weights a finished run serves: best by selection-holdout AUC (train.selection), else final, else the latest checkpoint."""
    run_dir = Path(run_dir)
    for sub in ("best", "final"):
        if (run_dir / sub / WEIGHTS).is_file():
            return run_dir / sub / WEIGHTS
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    if ckpts and (ckpts[-1] / WEIGHTS).is_file():
        return ckpts[-1] / WEIGHTS
    raise CheckpointError(f"{run_dir}: no trained weights found (expected best/, final/ or checkpoints/step-N/)")


def check_run_dir(run_dir: str | Path) -> Path:
    """The run directory, or one clear error when it is missing or is not a run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no config.yaml)")
    if not (run_dir / RUN_JSON).is_file():
        raise CheckpointError(f"{run_dir}: written before run format {RUN_FORMAT} (no {RUN_JSON}); convert it with "
                              f"`mtnews run upgrade --run {run_dir} --data DATASET` (the dataset it was trained on)")
    return run_dir


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot load the run's tokenizer ({str(e).splitlines()[0] if str(e) else e})") from None


def load_run(run_dir: str | Path, weights: str | Path | None = None, device: str | torch.device = "cpu",
             check_backbone: bool = True) -> Run:
    """Rebuild a run's model from the run directory alone, with its weights loaded, in eval mode."""
    run_dir = check_run_dir(run_dir)
    cfg = load_config(run_dir / "config.yaml")
    spec = RunManifest.read(run_dir / RUN_JSON)
    if spec.backbone != cfg.model.pretrained:
        raise CheckpointError(f"{run_dir / RUN_JSON}: backbone '{spec.backbone}' differs from config.yaml's "
                              f"model.pretrained '{cfg.model.pretrained}'")
    if check_backbone and spec.backbone_sha256 is not None:
        try:
            got = backbone_sha256(spec.backbone)
        except ConfigError as e:
            raise CheckpointError(f"{run_dir}: the run's backbone is not available: {e}") from None
        if got != spec.backbone_sha256:
            raise CheckpointError(f"{run_dir / RUN_JSON}: backbone '{spec.backbone}' has sha256 {got[:12]}..., the run "
                                  f"was trained on {spec.backbone_sha256[:12]}...; restore that model folder")
    if head_sizes(cfg, spec.vocab) != spec.heads:
        raise CheckpointError(f"{run_dir / RUN_JSON}: heads {spec.heads} do not follow from its vocabularies and "
                              f"config.yaml's tasks ({head_sizes(cfg, spec.vocab)})")
    if spec.temporal != temporal_record(cfg):
        raise CheckpointError(f"{run_dir / RUN_JSON}: its time-aware branch ({spec.temporal}) does not follow from "
                              f"config.yaml's model.temporal ({temporal_record(cfg)})")
    tokenizer = load_tokenizer(run_dir / TOKENIZER)
    model, _ = build_model(cfg, spec.vocab)
    path = Path(weights) if weights else run_weights(run_dir)
    load_weights(model, path)
    return Run(run_dir, cfg, spec, tokenizer, model.to(device).eval(), path)


def upgrade_run(run_dir: str | Path, data: str | Path) -> RunManifest:
    """Write run.json, tokenizer/ and articles.parquet for a run made before they existed.

    The vocabularies are rebuilt from the dataset the run was trained on, exactly as training built them
    (the training articles file and `model.ner_groups`); the run's weights must then fit the rebuilt heads.
    """
    from mtnews.data.layout import split_paths
    from mtnews.model.pretrained import load_backbone

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no config.yaml)")
    if (run_dir / RUN_JSON).is_file():
        raise CheckpointError(f"{run_dir}: already holds {RUN_JSON} (format {RUN_FORMAT}); nothing to upgrade")
    cfg = load_config(run_dir / "config.yaml")
    articles = load_articles(split_paths(data, "train").articles, max_entity_groups=cfg.model.ner_groups)
    _, tokenizer = load_backbone(cfg.model.pretrained)
    model, _ = build_model(cfg, articles.vocab)
    load_weights(model, run_weights(run_dir))  # fails if `data` is not the dataset the run was trained on
    return write_run_files(run_dir, cfg, articles, tokenizer)
