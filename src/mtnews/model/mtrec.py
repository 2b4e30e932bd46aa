"""MTRec: a BERT title encoder shared by the main ranking task and the auxiliary classification tasks.

news vector r  = BERT(title)[CLS] (last layer)
user vector r_u = AdditiveAttention(r_1..r_H)
score s        = r_u · r_c; MTRec-T (`model.temporal`, see model.temporal) adds g(r_u) · p(c, t);
                 `model.interest` (see model.interest) adds Σ_t w_t · log(q_u^t) · π_c^t
main loss      = softmax cross-entropy over 1 clicked + K non-clicked candidates (NCE)
aux losses     = category / sentiment cross-entropy (and optional multi-label NER, and MIND's subcategory
                 cross-entropy) on history articles

The frozen prefix (the embeddings and the layers below `model.freeze_layers`, or the whole BERT for "all")
runs in eval mode even while training: no dropout below F, so its output is a fixed function of the title.
That is what lets training cache it once per title (`encode_from_prefix` then runs only layers F..N-1) and
get the same losses and gradients as the full forward pass (`encode_news`), which inference always uses.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mtnews.config import Config, freeze_depth
from mtnews.errors import ConfigError
from mtnews.model.interest import LabelInterest
from mtnews.model.temporal import TemporalBranch, signal_options
from mtnews.model.user_encoder import AdditiveAttention

N_SENTIMENTS = 3


@dataclass
class Batch:
    """One training batch in deduplicated form: each unique article appears once in `input_ids`.

    `hist_pos`/`cand_pos` index rows of [zeros; news vectors], so position 0 is padding.
    """

    input_ids: torch.Tensor  # [U, L]
    attention_mask: torch.Tensor  # [U, L]
    hist_pos: torch.Tensor  # [B, H]
    cand_pos: torch.Tensor  # [B, 1+K], column 0 is the clicked article
    aux_weight: torch.Tensor  # [U] how many labelled slots each unique article fills (history, optionally candidates)
    category: torch.Tensor  # [U] class index or -100
    sentiment: torch.Tensor  # [U]
    entities: torch.Tensor  # [U, G]
    entities_known: torch.Tensor  # [U] bool: entity_groups annotated (null = unannotated, [] = no entities)
    subcategory: torch.Tensor | None = None  # [U] class index or -100; None: no subcategory labels
    # The frozen prefix's cached output for the unique articles: hidden states [U, L, D] entering layer F,
    # or [CLS] vectors [U, D] when the whole BERT is frozen; None = encode from input_ids.
    prefix: torch.Tensor | None = None
    # MTRec-T: each candidate's time signals [B, 1+K, F] at its impression time (`data.signals`, columns in
    # `SignalOptions.names()` order); None for a content-only model.
    cand_signals: torch.Tensor | None = None

    def to(self, device) -> "Batch":
        return Batch(**{k: v.to(device) if v is not None else None for k, v in self.__dict__.items()})

    @property
    def size(self) -> int:
        return self.hist_pos.shape[0]


def freeze_lower_layers(bert: nn.Module, n: int) -> None:
    if n <= 0:
        return
    for p in bert.embeddings.parameters():
        p.requires_grad_(False)
    for layer in bert.encoder.layer[:n]:
        for p in layer.parameters():
            p.requires_grad_(False)


def prefix_depth(freeze_layers: int | str, lora: bool, n_layers: int) -> int | None:
    """F, the number of layers the frozen prefix runs after the embeddings (n_layers: the whole BERT is
    frozen); None when nothing is frozen (full fine-tuning of the embeddings too).

    With LoRA the embeddings are always frozen, and an integer F keeps adapters on the last layer at least.
    """
    if freeze_layers == "all":
        return n_layers
    depth = freeze_depth(freeze_layers)
    if lora:
        return min(depth, n_layers - 1)
    return min(depth, n_layers) if depth > 0 else None


class MTRec(nn.Module):
    def __init__(self, bert: nn.Module, cfg: Config, num_categories: int, num_entities: int,
                 num_subcategories: int = 0):
        super().__init__()
        dim = bert.config.hidden_size
        lora = cfg.model.lora
        self.n_layers = bert.config.num_hidden_layers
        self.frozen_prefix = prefix_depth(cfg.model.freeze_layers, lora.enabled, self.n_layers)
        if cfg.model.freeze_layers == "all":
            bert.requires_grad_(False)  # no adapters: nothing of BERT trains
        elif lora.enabled:
            from peft import LoraConfig, get_peft_model

            for p in bert.parameters():
                p.requires_grad_(False)
            # Adapters only above the frozen layers: backward then stops there, which is most of the
            # saving on CPU, since nothing below needs gradients.
            n_layers = bert.config.num_hidden_layers
            layers = list(range(min(cfg.model.freeze_layers, n_layers - 1), n_layers)) if cfg.model.freeze_layers else None
            with warnings.catch_warnings():
                # peft calls transformers' deprecated is_gradient_checkpointing: a FutureWarning on stderr at
                # every model build, including ahead of the CLI's one-line error messages.
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                bert = get_peft_model(
                    bert,
                    LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                               target_modules=list(lora.target_modules), bias="none", layers_to_transform=layers),
                )
        else:
            freeze_lower_layers(bert, cfg.model.freeze_layers)
            # The news vector is the last layer's [CLS] state, so BERT's pooler never reaches a loss.
            # Left trainable, DDP fails on the next step waiting for its gradient ("Expected to have
            # finished reduction in the prior iteration"), and AdamW would decay weights nothing uses.
            if getattr(bert, "pooler", None) is not None:
                bert.pooler.requires_grad_(False)
        self.bert = bert
        self.user_encoder = AdditiveAttention(dim)
        # Heads exist only for active tasks, so every parameter gets a gradient (DDP requires it).
        t = cfg.tasks
        self.category_head = nn.Linear(dim, num_categories) if num_categories and t.category > 0 else None
        self.sentiment_head = nn.Linear(dim, N_SENTIMENTS) if t.sentiment > 0 else None
        self.ner_head = nn.Linear(dim, num_entities) if num_entities and t.ner > 0 else None
        # Made last, so the other heads' initial weights do not depend on whether this one exists.
        self.subcategory_head = (nn.Linear(dim, num_subcategories) if num_subcategories and t.subcategory > 0
                                 else None)
        self.projection = None
        if cfg.model.projection:  # created after the heads, so their initial weights do not depend on it
            self.projection = nn.Linear(dim, dim)
            with torch.no_grad():
                self.projection.weight.copy_(torch.eye(dim))
                self.projection.bias.zero_()
        # Made last of all, so every other weight starts the same with the branch on or off.
        self.temporal = None
        if cfg.model.temporal.enabled:
            options = signal_options(cfg.model.temporal)
            self.temporal = TemporalBranch(cfg.model.temporal, options.names(), dim, options.ctr_prior_mean)
        self.interest = None
        if cfg.model.interest:  # after the time branch, so neither changes the other's initial weights
            heads = self._label_heads()
            missing = [t for t in cfg.model.interest if heads[t] is None]
            if missing:
                raise ConfigError(f"model.interest: {', '.join(missing)} needs its head (tasks.{missing[0]} > 0, "
                                  f"and for category the articles' category labels)")
            self.interest = LabelInterest(tuple(cfg.model.interest),
                                          tuple(heads[t].out_features for t in cfg.model.interest),
                                          cfg.model.interest_smoothing)
        self.dim = dim
        self.cfg = cfg
        # The model's weights: what it trains in some stage, saves and loads. A stage that freezes more
        # layers (`set_frozen_prefix`) changes requires_grad, never this list.
        self._weight_names = [n for n, p in self.named_parameters() if p.requires_grad]

    def forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(unique news vectors [U, D], each task's loss) for a training batch."""
        if batch.prefix is not None:
            news = self.encode_from_prefix(batch.prefix, batch.attention_mask, self.frozen_prefix)
        else:
            news = self.encode_news(batch.input_ids, batch.attention_mask)
        return news, task_losses(self, news, batch, self.cfg)

    def encode_news(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """News vectors from titles: the whole BERT, its last layer's [CLS] state, the projection."""
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return self._project(out.last_hidden_state[:, 0])

    # --- the frozen prefix ---------------------------------------------------------------------------
    @torch.no_grad()
    def prefix_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, depth: int) -> torch.Tensor:
        """What the embeddings and layers 0..depth-1 hand layer `depth`: hidden states [U, L, D], or for
        depth = n_layers the last layer's [CLS] states [U, D] (before the projection)."""
        backbone = self.backbone()
        if depth >= self.n_layers:
            return backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        hidden = backbone.embeddings(input_ids=input_ids)
        return self._run_layers(hidden, attention_mask, 0, depth)

    def encode_from_prefix(self, states: torch.Tensor, attention_mask: torch.Tensor, depth: int) -> torch.Tensor:
        """News vectors from `prefix_states(..., depth)`: layers depth..N-1, [CLS], the projection."""
        states = states.float()  # a bf16 cache (CUDA) feeds the fp32 residual stream, as the embeddings do
        if depth < self.n_layers:
            states = self._run_layers(states, attention_mask, depth, self.n_layers)[:, 0]
        return self._project(states)

    def set_frozen_prefix(self, depth: int | None) -> None:
        """Freeze the embeddings and layers below `depth` (all of BERT for n_layers) for the stage that
        follows, keeping them in eval mode; the model's other weights train. None: nothing frozen."""
        self.frozen_prefix = depth
        frozen = {id(p) for m in self.prefix_modules(depth) for p in m.parameters()}
        weights = set(self._weight_names)
        for name, p in self.named_parameters():
            p.requires_grad_(name in weights and id(p) not in frozen)
        self.train(self.training)

    def prefix_modules(self, depth: int | None) -> list[nn.Module]:
        if depth is None:
            return []
        backbone = self.backbone()
        if depth >= self.n_layers:
            return [backbone]
        return [backbone.embeddings, *backbone.encoder.layer[:depth]]

    def train(self, mode: bool = True) -> "MTRec":
        super().train(mode)
        if mode:
            for m in self.prefix_modules(self.frozen_prefix):
                m.eval()
        return self

    def weight_parameters(self) -> dict[str, nn.Parameter]:
        """The tensors a checkpoint holds, the same in every stage."""
        named = dict(self.named_parameters())
        return {n: named[n] for n in self._weight_names}

    def backbone(self) -> nn.Module:
        """The BertModel itself (inside peft's wrapper when LoRA is on; its layers hold the adapters)."""
        return self.bert.get_base_model() if hasattr(self.bert, "get_base_model") else self.bert

    def _run_layers(self, hidden: torch.Tensor, attention_mask: torch.Tensor, first: int, last: int) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        backbone = self.backbone()
        # The mask BertModel.forward builds for these inputs (its attention implementation's format).
        mask = create_bidirectional_mask(config=backbone.config, inputs_embeds=hidden, attention_mask=attention_mask)
        for layer in backbone.encoder.layer[first:last]:
            hidden = layer(hidden, mask)
        return hidden

    def _project(self, cls: torch.Tensor) -> torch.Tensor:
        cls = F.dropout(cls, self.cfg.model.news_dropout, self.training)
        return cls if self.projection is None else self.projection(cls)

    def score(self, news: torch.Tensor, hist_pos: torch.Tensor, cand_pos: torch.Tensor,
              cand_signals: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [B, C] from unique news vectors [U, D] and padded positions into [zeros; news]; MTRec-T
        also needs the candidates' time signals [B, C, F]."""
        # The ranking space, as inference lays it out: [r_c ; π_c] rows, [r_u ; w ⊙ log q_u] users.
        ranked = self.ranking_vectors(news)
        table = torch.cat([ranked.new_zeros(1, ranked.shape[1]), ranked])
        # Slot logits once per unique article rather than per history slot (as inference does): the same
        # values, U projections instead of B x H, which is most of a step on cached [CLS] vectors.
        logits = self.user_encoder.slot_logits(news)
        logits = torch.cat([logits.new_full((1, logits.shape[1]), float("-inf")), logits])
        user = self.user_encoder.from_tables(table[:, : self.dim], logits, hist_pos)
        ranked_user = self.ranking_users(user, table, hist_pos)
        cand = table[cand_pos]
        content = torch.einsum("bd,bcd->bc", ranked_user, cand)
        cand = cand[..., : self.dim]
        if self.temporal is None:
            return content
        if cand_signals is None:
            raise ConfigError("this model has the time-aware branch (model.temporal): its batches need the "
                              "candidates' time signals")
        pop = self.temporal.popularity(cand_signals.to(cand.dtype), cand)
        return self.temporal.combine(content, self.temporal.gate(user)[:, None], pop)

    # --- the ranking space: what scoring, retrieval and exported embeddings take dot products in ------
    @property
    def ranking_dim(self) -> int:
        """Width of `ranking_vectors` / `ranking_users`: D, plus the label columns with `model.interest`."""
        return self.dim + (self.interest.width if self.interest is not None else 0)

    def interest_vectors(self, news: torch.Tensor) -> torch.Tensor:
        """π_c [..., width] for news vectors [..., D] (no gradient; `model.interest` only)."""
        heads = self._label_heads()
        return self.interest.article_part([heads[t] for t in self.interest.tasks], news)

    def _label_heads(self) -> dict[str, nn.Module | None]:
        """The heads `model.interest` can name (config.INTEREST_TASKS), None where the task is off."""
        return {"category": self.category_head, "sentiment": self.sentiment_head}

    def ranking_vectors(self, news: torch.Tensor) -> torch.Tensor:
        """Article vectors [..., ranking_dim]: r_c, then π_c with `model.interest`."""
        return news if self.interest is None else torch.cat([news, self.interest_vectors(news)], dim=-1)

    def ranking_users(self, users: torch.Tensor, table: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """User vectors [B, ranking_dim] from r_u [B, D], the `ranking_vectors` rows `table` [N, ranking_dim]
        (row 0 all zeros) and history index rows `hist` [B, H]: r_u, then w ⊙ log q_u with `model.interest`."""
        if self.interest is None:
            return users
        return torch.cat([users, self.interest.user_part(table[:, self.dim :], hist)], dim=-1)

    # --- parameter groups used by gradient surgery -------------------------------------------------
    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters every task's loss reaches: the news encoder's (BERT and the projection)."""
        projection = list(self.projection.parameters()) if self.projection is not None else []
        return [p for p in [*self.bert.parameters(), *projection] if p.requires_grad]

    def head_parameters(self) -> dict[str, list[nn.Parameter]]:
        # The time-aware branch is the main task's alone: surgery never projects it.
        branch = list(self.temporal.parameters()) if self.temporal is not None else []
        branch += list(self.interest.parameters()) if self.interest is not None else []
        heads = {"main": [*self.user_encoder.parameters(), *branch], "category": [], "sentiment": [], "ner": [],
                 "subcategory": []}
        if self.category_head is not None:
            heads["category"] = list(self.category_head.parameters())
        if self.sentiment_head is not None:
            heads["sentiment"] = list(self.sentiment_head.parameters())
        if self.ner_head is not None:
            heads["ner"] = list(self.ner_head.parameters())
        if self.subcategory_head is not None:
            heads["subcategory"] = list(self.subcategory_head.parameters())
        return heads


def _weighted_mean(per_article: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    total = weight.sum()
    return (per_article * weight).sum() / total.clamp_min(1.0)


def task_losses(model: MTRec, news: torch.Tensor, batch: Batch, cfg: Config) -> dict[str, torch.Tensor]:
    """Each task's unweighted loss from the batch's unique news vectors. Absent tasks are omitted.

    Auxiliary losses average over labelled history slots (as the seed does): a unique article counts once
    per slot it fills, which is the same as a per-slot mean without materialising per-slot logits. For NER
    "labelled" means an annotated entity_groups: a null one is skipped rather than taught as "no entities".
    """
    scores = model.score(news, batch.hist_pos, batch.cand_pos, batch.cand_signals)
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    losses = {"main": F.cross_entropy(scores.float(), target)}
    tasks = cfg.tasks
    if tasks.category > 0 and model.category_head is not None:
        w = batch.aux_weight * (batch.category >= 0)
        ce = F.cross_entropy(model.category_head(news).float(), batch.category.clamp_min(0), reduction="none")
        losses["category"] = _weighted_mean(ce, w)
    if tasks.sentiment > 0 and model.sentiment_head is not None:
        w = batch.aux_weight * (batch.sentiment >= 0)
        ce = F.cross_entropy(model.sentiment_head(news).float(), batch.sentiment.clamp_min(0), reduction="none")
        losses["sentiment"] = _weighted_mean(ce, w)
    if tasks.ner > 0 and model.ner_head is not None:
        bce = F.binary_cross_entropy_with_logits(model.ner_head(news).float(), batch.entities, reduction="none").mean(1)
        losses["ner"] = _weighted_mean(bce, batch.aux_weight * batch.entities_known)
    if tasks.subcategory > 0 and model.subcategory_head is not None and batch.subcategory is not None:
        w = batch.aux_weight * (batch.subcategory >= 0)
        ce = F.cross_entropy(model.subcategory_head(news).float(), batch.subcategory.clamp_min(0), reduction="none")
        losses["subcategory"] = _weighted_mean(ce, w)
    return losses


def task_weights(cfg: Config) -> dict[str, float]:
    return {"main": 1.0, "category": cfg.tasks.category, "sentiment": cfg.tasks.sentiment, "ner": cfg.tasks.ner,
            "subcategory": cfg.tasks.subcategory}
