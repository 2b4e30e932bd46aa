"""Title token ids, computed once per (titles, tokenizer, max length) and cached on disk as int arrays.

Batches then gather rows by article index and trim to their longest title, so no tokenizer runs in the loop.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

from mtnews.io import atomic_path, cache_dir


@dataclass
class TitleTokens:
    ids: np.ndarray  # int32 [n_articles, max_len], right-padded with the tokenizer's pad id
    lengths: np.ndarray  # int32 [n_articles]
    pad_id: int

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids and attention_mask for article indices `idx`, padded to the batch's longest title."""
        lens = self.lengths[idx]
        width = int(lens.max()) if len(lens) else 1
        ids = torch.from_numpy(self.ids[idx, :width].astype(np.int64))
        mask = torch.arange(width)[None, :] < torch.from_numpy(lens.astype(np.int64))[:, None]
        return ids, mask.long()


def _key(titles: list[str], tokenizer, max_len: int) -> str:
    h = hashlib.sha256()
    h.update(f"{type(tokenizer).__name__}|{tokenizer.name_or_path}|{len(tokenizer)}|{max_len}|".encode())
    h.update(repr(sorted(tokenizer.get_vocab().items())[:: max(1, len(tokenizer) // 997)]).encode())
    for t in titles:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def tokenize_titles(titles: list[str], tokenizer, max_len: int, use_cache: bool = True) -> TitleTokens:
    path = cache_dir() / "tokens" / f"{_key(titles, tokenizer, max_len)}.npz"
    if use_cache and path.is_file():
        try:
            with np.load(path) as z:
                return TitleTokens(z["ids"], z["lengths"], int(z["pad_id"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # empty or truncated files too
            path.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never trusted
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = np.full((len(titles), max_len), pad_id, dtype=np.int32)
    lengths = np.zeros(len(titles), dtype=np.int32)
    step = 65536
    for s in range(0, len(titles), step):
        enc = tokenizer(titles[s : s + step], truncation=True, max_length=max_len, padding="max_length",
                        return_attention_mask=True, return_tensors="np")
        ids[s : s + step] = enc["input_ids"]
        lengths[s : s + step] = enc["attention_mask"].sum(axis=1)
    tokens = TitleTokens(ids, lengths, pad_id)
    if use_cache:
        try:
            with atomic_path(path, suffix=".npz") as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, ids=ids, lengths=lengths, pad_id=np.int64(pad_id))
        except OSError:
            pass  # a read-only cache folder only costs speed
    return tokens
