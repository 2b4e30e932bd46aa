"""Build an MTRec model from a config, and save/load its trainable weights as safetensors.

Only trainable tensors are saved (LoRA adapters or the fine-tuned encoder, plus user encoder and heads);
the frozen backbone comes from `model.pretrained` again at load time. Nothing is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mtnews.config import Config, load_config
from mtnews.data.articles import ArticleTable
from mtnews.errors import CheckpointError
from mtnews.io import atomic_path
from mtnews.model.mtrec import MTRec
from mtnews.model.pretrained import load_backbone

WEIGHTS = "model.safetensors"


def build_model(cfg: Config, articles: ArticleTable):
    """(MTRec, tokenizer) for `cfg`, with heads sized from the article table."""
    bert, tokenizer = load_backbone(cfg.model.pretrained)
    n_ent = articles.entities.shape[1] if cfg.tasks.ner > 0 else 0
    return MTRec(bert, cfg, articles.num_categories, n_ent), tokenizer


def trainable_state(model: MTRec) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


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
    expected = {n: p for n, p in model.named_parameters() if p.requires_grad}
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


def run_weights(run_dir: str | Path) -> Path:
    """The weights a finished run serves: best by validation AUC, else final, else the latest checkpoint."""
    run_dir = Path(run_dir)
    for sub in ("best", "final"):
        if (run_dir / sub / WEIGHTS).is_file():
            return run_dir / sub / WEIGHTS
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    if ckpts and (ckpts[-1] / WEIGHTS).is_file():
        return ckpts[-1] / WEIGHTS
    raise CheckpointError(f"{run_dir}: no trained weights found (expected best/, final/ or checkpoints/step-N/)")


def load_run(run_dir: str | Path, articles: ArticleTable, weights: str | Path | None = None):
    """(model in eval mode, config, tokenizer) for a run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise CheckpointError(f"{run_dir}: not a run directory (no config.yaml)")
    cfg = load_config(run_dir / "config.yaml")
    model, tokenizer = build_model(cfg, articles)
    load_weights(model, weights or run_weights(run_dir))
    return model.eval(), cfg, tokenizer
