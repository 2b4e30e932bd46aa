"""The article table: article_id -> dense index, titles and auxiliary-task labels.

Index 0 is padding and index 1 stands for every article id that the articles file does not know
(counted and reported by `mtnews data check`); real articles start at 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from mtnews.data import schema
from mtnews.errors import DataError

PAD = 0
UNK = 1
FIRST = 2
IGNORE = -100  # torch's cross-entropy ignore_index, for pad/unknown/unlabelled articles


@dataclass(frozen=True)
class LabelVocab:
    """The auxiliary tasks' label names in head order: what a trained head's output k means.

    A run stores the vocabulary it was trained with; loading another articles file with it maps that
    file's labels onto the run's heads by name (labels the run never saw become IGNORE).
    """

    categories: tuple[str, ...]
    sentiments: tuple[str, ...]
    entity_groups: tuple[str, ...]
    subcategories: tuple[str, ...] = ()  # MIND's subcategories; none for EBNeRD

    def to_dict(self) -> dict:
        return {"categories": list(self.categories), "sentiments": list(self.sentiments),
                "entity_groups": list(self.entity_groups), "subcategories": list(self.subcategories)}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelVocab":
        # A vocabulary written before the subcategory task existed has no subcategories.
        return cls(tuple(d["categories"]), tuple(d["sentiments"]), tuple(d["entity_groups"]),
                   tuple(d.get("subcategories", ())))


@dataclass
class ArticleTable:
    article_ids: np.ndarray  # int64 [n]; -1 at PAD and UNK
    titles: list[str]
    category: np.ndarray  # int64 [n], class index or IGNORE
    category_names: list[str]
    sentiment: np.ndarray  # int64 [n], index into schema.SENTIMENT_LABELS or IGNORE
    entities: np.ndarray  # float32 [n, G], multi-hot over the G most frequent entity groups
    entity_names: list[str]
    published_us: np.ndarray | None = None  # int64 microseconds since epoch, or None
    path: Path | None = None
    # bool [n]: whether the article's entity_groups is annotated. A null entity_groups is unannotated (no NER
    # target at all); an empty list is annotated with no entities (all-zero target). False at PAD and UNK.
    # None (a table built by hand) means every real article is annotated.
    entities_known: np.ndarray | None = None
    # int64 [n], index into subcategory_names or IGNORE (from the `subcategory_str` column, which MIND has);
    # None (no such column) means no subcategory labels.
    subcategory: np.ndarray | None = None
    subcategory_names: list[str] = field(default_factory=list)
    _sorted_ids: np.ndarray = field(init=False, repr=False)
    _sorted_pos: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.entities_known is None:
            self.entities_known = np.arange(len(self.article_ids)) >= FIRST
        if self.subcategory is None:
            self.subcategory = np.full(len(self.article_ids), IGNORE, dtype=np.int64)
        real = self.article_ids[FIRST:]
        order = np.argsort(real, kind="stable")
        self._sorted_ids = real[order]
        self._sorted_pos = (order + FIRST).astype(np.int32)

    def __len__(self) -> int:
        return len(self.article_ids)

    @property
    def num_categories(self) -> int:
        return len(self.category_names)

    @property
    def vocab(self) -> LabelVocab:
        return LabelVocab(tuple(self.category_names), tuple(schema.SENTIMENT_LABELS), tuple(self.entity_names),
                          tuple(self.subcategory_names))

    def index(self, ids: np.ndarray) -> np.ndarray:
        """Map article ids to dense indices; unknown ids map to UNK. Vectorised binary search."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(self._sorted_ids) == 0:
            return np.full(ids.shape, UNK, dtype=np.int32)
        pos = np.searchsorted(self._sorted_ids, ids).clip(0, len(self._sorted_ids) - 1)
        found = self._sorted_ids[pos] == ids
        return np.where(found, self._sorted_pos[pos], UNK).astype(np.int32)


def _class_index(values: pl.Series, classes: list | None = None) -> tuple[np.ndarray, list]:
    """Dense class ids for a label column (nulls and labels outside `classes` -> IGNORE).

    Without `classes`, the column's own labels, sorted for reproducibility.
    """
    if classes is None:
        classes = values.drop_nulls().unique().sort().to_list()
    mapping = pl.DataFrame({"v": classes, "i": np.arange(len(classes), dtype=np.int64)}, schema={"v": values.dtype, "i": pl.Int64})
    idx = pl.DataFrame({"v": values}).join(mapping, on="v", how="left", maintain_order="left")["i"]
    return idx.fill_null(IGNORE).to_numpy().astype(np.int64), classes


# The auxiliary tasks whose labels an articles file may hold (the config's `tasks.*` weights).
AUX_TASKS = ("category", "sentiment", "ner", "subcategory")


def labelled_tasks(path: str | Path) -> frozenset[str]:
    """The auxiliary tasks of AUX_TASKS with at least one label in an articles.parquet (one scan).

    MIND has no sentiment labels, EBNeRD no subcategory names: training switches the sentiment task off
    where it has none (its head has a fixed size), and the experiment marks rows needing a missing task
    as not applicable.
    """
    path = Path(path)
    sch = schema.validate(path, schema.REQUIRED_ARTICLES, {**schema.OPTIONAL_ARTICLES, **schema.EXTRA_ARTICLES})
    checks = {
        "category": [pl.col(c).is_not_null().any() for c in ("category_str", "category") if c in sch],
        "sentiment": [pl.col("sentiment_label").cast(pl.String).is_in(list(schema.SENTIMENT_LABELS)).any()]
        if "sentiment_label" in sch else [],
        "ner": [(pl.col("entity_groups").list.len() > 0).any()] if "entity_groups" in sch else [],
        "subcategory": [pl.col("subcategory_str").is_not_null().any()] if "subcategory_str" in sch else [],
    }
    exprs = {(task, i): e for task, es in checks.items() for i, e in enumerate(es)}
    row = schema.aggregate(path, *(e.alias(f"{t}{i}") for (t, i), e in exprs.items())) if exprs else ()
    return frozenset(task for (task, _), found in zip(exprs, row) if found)


def load_articles(path: str | Path, max_entity_groups: int = 10, vocab: LabelVocab | None = None) -> ArticleTable:
    """The article table of an articles.parquet.

    With `vocab` (a trained run's), labels are indexed in the run's head order and the entity groups are
    the run's, whatever this file holds; otherwise they come from the file (the `max_entity_groups` most
    frequent entity groups).
    """
    path = Path(path)
    optional = {**schema.OPTIONAL_ARTICLES, **schema.EXTRA_ARTICLES}
    sch = schema.validate(path, schema.REQUIRED_ARTICLES, optional)
    cols = ["article_id", "title"] + [c for c in optional if c in sch]
    df = schema.read_frame(path, cols)
    if df["article_id"].null_count():
        raise DataError(f"{path}: column 'article_id' has {df['article_id'].null_count()} null values, expected none")
    dup = df.height - df["article_id"].n_unique()
    if dup:
        raise DataError(f"{path}: column 'article_id' has {dup} duplicate ids, expected unique ids")
    n = df.height + FIRST

    def with_pad(arr: np.ndarray, fill) -> np.ndarray:
        return np.concatenate([np.full(FIRST, fill, dtype=arr.dtype), arr])

    ids = with_pad(df["article_id"].cast(pl.Int64).to_numpy(), -1)
    titles = ["", ""] + df["title"].cast(pl.String).fill_null("").to_list()

    if "category_str" in df.columns or "category" in df.columns:
        # Prefer the readable name, so class names in reports and the API are words.
        label_col = "category_str" if "category_str" in df.columns else "category"
        labels = df[label_col] if vocab is None else df[label_col].cast(pl.String)
        cat_idx, classes = _class_index(labels, None if vocab is None else list(vocab.categories))
        category, category_names = with_pad(cat_idx, IGNORE), [str(c) for c in classes]
    else:
        category, category_names = np.full(n, IGNORE, dtype=np.int64), []
    if vocab is not None:
        category_names = list(vocab.categories)

    subcategory, subcategory_names = None, []
    if "subcategory_str" in df.columns:
        labels = df["subcategory_str"].cast(pl.String)
        sub_idx, sub_classes = _class_index(labels, None if vocab is None else list(vocab.subcategories))
        subcategory, subcategory_names = with_pad(sub_idx, IGNORE), [str(c) for c in sub_classes]
    if vocab is not None:
        subcategory_names = list(vocab.subcategories)

    if "sentiment_label" in df.columns:
        lab = pl.DataFrame({"v": list(schema.SENTIMENT_LABELS), "i": np.arange(3, dtype=np.int64)})
        s = pl.DataFrame({"v": df["sentiment_label"].cast(pl.String)}).join(lab, on="v", how="left", maintain_order="left")["i"]
        sentiment = with_pad(s.fill_null(IGNORE).to_numpy().astype(np.int64), IGNORE)
    else:
        sentiment = np.full(n, IGNORE, dtype=np.int64)

    entities = np.zeros((n, 0), dtype=np.float32)
    entity_names: list[str] = []
    if "entity_groups" in df.columns:
        entities_known = with_pad(df["entity_groups"].is_not_null().to_numpy(), False)
    else:
        entities_known = np.zeros(n, dtype=bool)
    if vocab is not None:
        entities = np.zeros((n, len(vocab.entity_groups)), dtype=np.float32)
        entity_names = list(vocab.entity_groups)
    if "entity_groups" in df.columns and (max_entity_groups > 0 if vocab is None else entity_names):
        ex = (
            df.select(pl.int_range(FIRST, n).alias("row"), pl.col("entity_groups").cast(pl.List(pl.String)))
            .explode("entity_groups")
            .drop_nulls()
        )
        # Ties broken by name, so the label space depends on the articles, not on their row order.
        if vocab is None:
            counts = ex["entity_groups"].value_counts(name="n")
            top = counts.sort(["n", "entity_groups"], descending=[True, False]).head(max_entity_groups)
            entity_names = sorted(top["entity_groups"].to_list())
        if entity_names:
            ex = ex.join(
                pl.DataFrame({"entity_groups": entity_names, "g": np.arange(len(entity_names), dtype=np.int64)}),
                on="entity_groups",
            )
            entities = np.zeros((n, len(entity_names)), dtype=np.float32)
            entities[ex["row"].to_numpy(), ex["g"].to_numpy()] = 1.0

    published = None
    if "published_time" in df.columns:
        published = with_pad(df["published_time"].cast(pl.Datetime("us")).cast(pl.Int64).fill_null(0).to_numpy(), 0)

    return ArticleTable(ids, titles, category, category_names, sentiment, entities, entity_names, published, path,
                        entities_known=entities_known, subcategory=subcategory, subcategory_names=subcategory_names)
