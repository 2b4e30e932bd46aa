"""Training checkpoints: everything exact resume needs, written atomically, loaded without unpickling.

RUN_DIR/checkpoints/step-N/
  model.safetensors   trainable weights
  optimizer.pt        AdamW state (tensors and numbers only; loaded with weights_only=True)
  scheduler.pt        LR scheduler state (weights_only=True)
  rng.safetensors     torch CPU (and CUDA) RNG state of every rank, and PCGrad's task-order generator
  state.json          step, best selection-holdout AUC and early-stopping state, world size, the training
                      stage whose optimizer it holds
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mtnews.errors import CheckpointError
from mtnews.io import atomic_dir
from mtnews.model.build import WEIGHTS, load_weights, trainable_state


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    ckpts = [p for p in (run_dir / "checkpoints").glob("step-*") if p.is_dir() and p.name.split("-")[1].isdigit()]
    return sorted(ckpts, key=lambda p: int(p.name.split("-")[1]))


def rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state(), "pcgrad": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["pcgrad"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(path: Path, model, optimizer, scheduler, rng_by_rank: list[dict], state: dict) -> None:
    with atomic_dir(path) as tmp:
        save_file(trainable_state(model), str(tmp / WEIGHTS))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        flat = {f"rank{r}.{k}": v.contiguous() for r, s in enumerate(rng_by_rank) for k, v in s.items()}
        save_file(flat, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=2))


def checkpoint_stage(path: Path) -> int:
    """The training stage (`train.stages` index) a checkpoint was written in: 0 for runs without stages."""
    try:
        state = json.loads((path / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt or incomplete checkpoint (state.json: {type(e).__name__})") from None
    stage = state.get("stage", 0) if isinstance(state, dict) else None
    if not isinstance(stage, int) or isinstance(stage, bool) or stage < 0:
        raise CheckpointError(f"{path}: corrupt or incomplete checkpoint (state.json has no valid stage)")
    return stage


def load_checkpoint(path: Path, model, optimizer, scheduler, rank: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore weights, optimizer and scheduler in place; return (state.json, this rank's RNG state)."""
    try:
        state = json.loads((path / "state.json").read_text())
        load_weights(model, path / WEIGHTS)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True, map_location="cpu"))
        flat = load_file(str(path / "rng.safetensors"))
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, json.JSONDecodeError,
            EOFError, pickle.UnpicklingError) as e:  # torch.load of an empty / non-zip file raises these
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: corrupt or incomplete checkpoint ({first})") from None
    prefix = f"rank{rank}." if any(k.startswith(f"rank{rank}.") for k in flat) else "rank0."
    rng = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
    # Readable but incomplete files would otherwise fail later with a KeyError/AttributeError traceback.
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or "best_auc" not in state:
        raise CheckpointError(f"{path}: corrupt or incomplete checkpoint (state.json lacks step or best_auc)")
    if not {"torch", "pcgrad"} <= set(rng):
        raise CheckpointError(f"{path}: corrupt or incomplete checkpoint (rng.safetensors lacks the RNG states)")
    return state, rng


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    for old in checkpoint_dirs(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
