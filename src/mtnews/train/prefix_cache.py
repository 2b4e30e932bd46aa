"""The frozen prefix's output, computed once per title and memory-mapped, so a step runs only layers F..N-1.

When the embeddings and layers 0..F-1 are frozen (and run in eval mode, see `mtnews.model.mtrec`), the
hidden states entering layer F are a fixed function of the title. They are computed once, in the training
dtype (float32 on CPU, bfloat16 on CUDA), and every step gathers the rows of its unique titles. With the
whole BERT frozen (F = N, `model.freeze_layers: all`) only the [CLS] vectors are kept.

    $MTNEWS_CACHE/prefix/<key>/     (next to the token cache, `mtnews.model.tokens.cache_dir`)
      states.npy    F < N: each title's first `length` token states, titles back to back: [sum of lengths, D]
                    F = N: the [CLS] vectors, [n_articles, D]
                    (bfloat16 is stored as its int16 bit pattern; numpy has no bfloat16)
      meta.json     format, key, F, dtype, shape, and a CRC-32 of the data

The key hashes the frozen prefix's tensors and the backbone's config (the model), the token table (the
titles, tokenizer and max length), F and the dtype. A folder that is missing, truncated or fails its CRC
is rebuilt; the folder is written beside its final name and renamed into place, so a crash leaves none
half-written. Under DDP only one process per filesystem writes it while the others wait (`open_prefix_cache`).

Batches gather from the memory map on the CPU. On a GPU that gather and the host-to-device copy (tens of MB
per step with a BERT-base) would cost about what the skipped layers save, so a cache that fits in a
quarter of the free GPU memory is copied there once (`make_resident`) and gathered on the device.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtnews.errors import MtnewsError
from mtnews.io import atomic_dir, atomic_write_text
from mtnews.model.mtrec import MTRec
from mtnews.model.tokens import TitleTokens, cache_dir

FORMAT = 1
STATES, META = "states.npy", "meta.json"
RESERVE_BYTES = 64 << 20  # left free on the disk after the cache is written
BUILD_ROWS = 256  # titles per forward pass while building


@dataclass
class PrefixCache:
    depth: int  # F: layers the cached states have been through (n_layers: [CLS] vectors)
    n_layers: int
    states: np.ndarray  # memory-mapped float32, or int16 holding bfloat16 bits
    dtype: torch.dtype
    tokens: TitleTokens
    offsets: np.ndarray  # int64 [n_articles + 1]: title i's rows are offsets[i]:offsets[i + 1] (F < N)
    path: Path
    resident: torch.Tensor | None = None  # the states as one tensor on a device (`make_resident`)

    @property
    def nbytes(self) -> int:
        return int(self.states.nbytes)

    @property
    def cls_only(self) -> bool:
        return self.depth >= self.n_layers

    def batch(self, idx: np.ndarray) -> torch.Tensor:
        """The cached prefix output for article indices `idx`: [U, W, D] hidden states padded (with zeros,
        which the attention mask hides) to the batch's longest title as `TitleTokens.batch` pads, or [U, D]."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.cls_only:
            if self.resident is not None:
                return self.resident[torch.from_numpy(idx).to(self.resident.device)]
            return self._tensor(self.states[idx])
        lens = self.tokens.lengths[idx].astype(np.int64)
        width = int(lens.max()) if len(lens) else 1
        pos = np.arange(width)
        valid = pos[None, :] < lens[:, None]
        rows = (self.offsets[idx][:, None] + pos[None, :])[valid]
        if self.resident is not None:
            dev = self.resident.device
            out_t = self.resident.new_zeros(len(idx), width, self.resident.shape[1])
            out_t[torch.from_numpy(valid).to(dev)] = self.resident[torch.from_numpy(rows).to(dev)]
            return out_t
        out = np.zeros((len(idx), width, self.states.shape[1]), dtype=self.states.dtype)
        out[valid] = self.states[rows]
        return self._tensor(out)

    def make_resident(self, device: torch.device | str) -> None:
        """Copy the states to `device` once; batches are then gathered there (and already live there)."""
        self.resident = self._tensor(np.asarray(self.states)).to(device)

    def fits_on(self, device: torch.device) -> bool:
        """Whether `device` is a GPU with four times the cache's size free."""
        if device.type != "cuda":
            return False
        free, _ = torch.cuda.mem_get_info(device)
        return 4 * self.nbytes <= free

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.view(torch.bfloat16) if self.dtype == torch.bfloat16 else t


def _offsets(tokens: TitleTokens) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(tokens.lengths.astype(np.int64))])


def cache_key(model: MTRec, tokens: TitleTokens, depth: int, dtype: torch.dtype) -> str:
    """sha256 over the frozen prefix's tensors, the backbone config, the token table, F and the dtype."""
    h = hashlib.sha256(f"mtnews-prefix|{FORMAT}|{depth}|{model.n_layers}|{dtype}|".encode())
    config = {k: v for k, v in model.backbone().config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for m in model.prefix_modules(depth):
        for name, t in sorted(m.state_dict().items()):
            t = t.detach().cpu().contiguous().reshape(-1)
            h.update(f"{name}|{t.dtype}|{t.numel()}|".encode())
            h.update(t.view(torch.uint8).numpy())
    h.update(np.ascontiguousarray(tokens.ids).tobytes())
    h.update(np.ascontiguousarray(tokens.lengths).tobytes())
    return h.hexdigest()[:24]


def _crc(a: np.ndarray) -> int:
    crc, flat = 0, a.reshape(-1).view(np.uint8)
    for s in range(0, len(flat), 64 << 20):
        crc = zlib.crc32(flat[s : s + (64 << 20)], crc)
    return crc


def _np_dtype(dtype: torch.dtype):
    return np.int16 if dtype == torch.bfloat16 else np.float32


def _shape(model: MTRec, tokens: TitleTokens, depth: int) -> tuple[int, int]:
    hidden = model.backbone().config.hidden_size
    rows = len(tokens.lengths) if depth >= model.n_layers else int(tokens.lengths.astype(np.int64).sum())
    return rows, hidden


def read_cache(folder: Path, model: MTRec, tokens: TitleTokens, depth: int, dtype: torch.dtype,
               key: str) -> tuple[PrefixCache | None, str]:
    """(the cache in `folder`, "") if it is complete and matches; (None, why not) otherwise."""
    try:
        meta = json.loads((folder / META).read_text())
        states = np.load(folder / STATES, mmap_mode="r")
    except FileNotFoundError:
        return None, "not built"
    except (OSError, ValueError, EOFError) as e:  # unparseable meta, a header or data cut short
        return None, f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    want = {"format": FORMAT, "key": key, "depth": depth, "dtype": str(dtype),
            "shape": list(_shape(model, tokens, depth))}
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in want.items()):
        return None, "written for other settings"
    if list(states.shape) != want["shape"] or states.dtype != _np_dtype(dtype):
        return None, f"states.npy holds {states.dtype} {list(states.shape)}, expected {want['shape']}"
    if meta.get("crc32") != _crc(states):
        return None, "corrupt (CRC-32 mismatch)"
    return PrefixCache(depth, model.n_layers, states, dtype, tokens, _offsets(tokens), folder), ""


@torch.no_grad()
def build_cache(folder: Path, model: MTRec, tokens: TitleTokens, depth: int, device: torch.device,
                dtype: torch.dtype, key: str) -> None:
    """Compute every title's prefix output in batches sorted by length and write `folder` atomically."""
    rows, hidden = _shape(model, tokens, depth)
    itemsize = np.dtype(_np_dtype(dtype)).itemsize
    need = rows * hidden * itemsize
    probe = folder.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need + RESERVE_BYTES > free:
        raise MtnewsError(f"{folder}: the prefix cache needs {need / 2**20:,.0f} MiB but {probe} has "
                          f"{free / 2**20:,.0f} MiB free; free some space, point MTNEWS_CACHE at a larger disk, "
                          f"or set train.prefix_cache: false")
    offsets = _offsets(tokens)
    order = np.argsort(tokens.lengths, kind="stable")
    was_training = model.training
    model.eval()
    try:
        with atomic_dir(folder) as tmp:
            states = np.lib.format.open_memmap(tmp / STATES, mode="w+", dtype=_np_dtype(dtype), shape=(rows, hidden))
            for s in range(0, len(order), BUILD_ROWS):
                idx = order[s : s + BUILD_ROWS]
                ids, mask = tokens.batch(idx)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    out = model.prefix_states(ids.to(device), mask.to(device), depth)
                out = out.to(dtype).cpu()
                a = (out.view(torch.int16) if dtype == torch.bfloat16 else out).numpy()
                if depth >= model.n_layers:
                    states[idx] = a
                else:
                    valid = mask.numpy().astype(bool)
                    dest = (offsets[idx][:, None] + np.arange(ids.shape[1])[None, :])[valid]
                    states[dest] = a[valid]
            states.flush()
            meta = {"format": FORMAT, "key": key, "depth": depth, "dtype": str(dtype), "shape": [rows, hidden],
                    "crc32": _crc(states), "bytes": need}
            del states
            atomic_write_text(tmp / META, json.dumps(meta, indent=2))
    finally:
        model.train(was_training)


def open_prefix_cache(model: MTRec, tokens: TitleTokens, depth: int, accelerator,
                      root: Path | None = None) -> PrefixCache:
    """The prefix cache for (model, tokens, F), built if missing or damaged.

    Rank 0 builds it while the other processes wait; then any node whose cache folder rank 0 could not
    write (node-local disks) builds its own copy on its local main process, while the rest wait again.
    """
    device = accelerator.device
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    key = cache_key(model, tokens, depth, dtype)
    folder = (root or cache_dir() / "prefix") / key

    def ensure() -> PrefixCache:
        cache, _ = read_cache(folder, model, tokens, depth, dtype, key)
        if cache is None:
            build_cache(folder, model, tokens, depth, device, dtype, key)
            cache, why = read_cache(folder, model, tokens, depth, dtype, key)
            if cache is None:
                raise MtnewsError(f"{folder}: the prefix cache just written cannot be read back ({why})")
        return cache

    cache = ensure() if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    if cache is None and accelerator.is_local_main_process:
        cache = ensure()
    accelerator.wait_for_everyone()
    if cache is None:
        cache, why = read_cache(folder, model, tokens, depth, dtype, key)
        if cache is None:
            raise MtnewsError(f"{folder}: process {accelerator.process_index} cannot read the prefix cache its "
                              f"node's main process wrote ({why})")
    return cache
