"""Build an MTRec model from a config, and save/load its trainable weights as safetensors.

Only trainable tensors are saved (LoRA adapters or the fine-tuned encoder, plus user encoder and heads);
the frozen backbone comes from `model.pretrained` again at load time. Nothing is ever unpickled.
A run directory as a whole (config, vocabularies, tokenizer, weights) is loaded by `model.run`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mtnews.config import Config
from mtnews.data.articles import LabelVocab
from mtnews.errors import CheckpointError
from mtnews.io import atomic_path
from mtnews.model.mtrec import MTRec
from mtnews.model.pretrained import load_backbone, set_encoder_dropout

WEIGHTS = "model.safetensors"


def head_sizes(cfg: Config, vocab: LabelVocab) -> dict[str, int]:
    """Output sizes of the heads the model has (a task switched off, or without labels, has none)."""
    t = cfg.tasks
    return {"category": len(vocab.categories) if t.category > 0 else 0,
            "sentiment": len(vocab.sentiments) if t.sentiment > 0 else 0,
            "ner": len(vocab.entity_groups) if t.ner > 0 else 0,
            "subcategory": len(vocab.subcategories) if t.subcategory > 0 else 0}


def build_model(cfg: Config, vocab: LabelVocab):
    """(MTRec, the backbone's tokenizer) for `cfg`, with heads sized by the label vocabulary."""
    bert, tokenizer = load_backbone(cfg.model.pretrained)
    set_encoder_dropout(bert, cfg.model.encoder_dropout)
    heads = head_sizes(cfg, vocab)
    return MTRec(bert, cfg, heads["category"], heads["ner"], heads["subcategory"]), tokenizer


def trainable_state(model: MTRec) -> dict[str, torch.Tensor]:
    """The model's weights (`MTRec.weight_parameters`: the same set whichever training stage is running)."""
    return {n: p.detach().contiguous().cpu() for n, p in model.weight_parameters().items()}


def save_weights(model: MTRec, path: str | Path) -> None:
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(trainable_state(model), str(tmp))


def load_weights(model: MTRec, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or unreadable safetensors file ({e})") from None
    expected = model.weight_parameters()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path}: weights do not match the model built from the run's config "
                              f"(missing {missing[:3]}, unexpected {extra[:3]})")
    with torch.no_grad():
        for n, p in expected.items():
            if state[n].shape != p.shape:
                raise CheckpointError(f"{path}: tensor '{n}' has shape {tuple(state[n].shape)}, expected {tuple(p.shape)}")
            p.copy_(state[n])
