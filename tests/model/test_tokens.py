"""Title token ids: the on-disk cache (hit, miss, corrupt entry) and batch trimming."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtnews.model import tokens as tokmod
from mtnews.model.tokens import TitleTokens, tokenize_titles

TITLES = ["", "", "Short", "A somewhat longer title about the weather in Odense today",
          "Midsize title here", "Århus wins the cup"]


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_bert))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MTNEWS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tokens"


def _no_tokenizing(monkeypatch, tokenizer):
    def boom(*a, **k):
        raise AssertionError("the tokenizer ran although the cache should have answered")

    monkeypatch.setattr(type(tokenizer), "__call__", boom)


def test_tokens_match_the_tokenizer_and_respect_max_len(tokenizer, cache):
    t = tokenize_titles(TITLES, tokenizer, 8)
    assert t.ids.shape == (len(TITLES), 8) and t.ids.dtype == np.int32
    for i, title in enumerate(TITLES):
        want = tokenizer(title, truncation=True, max_length=8)["input_ids"]
        assert t.lengths[i] == len(want)
        assert t.ids[i, : len(want)].tolist() == want
        assert (t.ids[i, len(want):] == tokenizer.pad_token_id).all()
    assert t.lengths[3] == 8  # the long title was truncated
    assert t.pad_id == tokenizer.pad_token_id


def test_cache_hit_returns_identical_arrays_without_tokenizing(tokenizer, cache, monkeypatch):
    first = tokenize_titles(TITLES, tokenizer, 16)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1
    _no_tokenizing(monkeypatch, tokenizer)
    second = tokenize_titles(TITLES, tokenizer, 16)
    assert np.array_equal(first.ids, second.ids) and first.ids.dtype == second.ids.dtype
    assert np.array_equal(first.lengths, second.lengths)
    assert first.pad_id == second.pad_id


def test_cache_key_depends_on_titles_and_max_len(tokenizer, cache):
    tokenize_titles(TITLES, tokenizer, 16)
    tokenize_titles(TITLES, tokenizer, 12)
    tokenize_titles(TITLES[:-1] + ["Aarhus wins the cup"], tokenizer, 16)
    assert len(list(cache.glob("*.npz"))) == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "wrong-keys"])
def test_corrupt_cache_entry_is_rebuilt(tokenizer, cache, damage):
    good = tokenize_titles(TITLES, tokenizer, 16)
    (path,) = cache.glob("*.npz")
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not an npz file at all" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with open(path, "wb") as f:
            np.savez(f, something_else=np.zeros(3))
    again = tokenize_titles(TITLES, tokenizer, 16)
    assert np.array_equal(again.ids, good.ids) and np.array_equal(again.lengths, good.lengths)
    # ... and the entry on disk is healthy again
    with np.load(path) as z:
        assert np.array_equal(z["ids"], good.ids)


def test_use_cache_false_writes_nothing(tokenizer, cache):
    tokenize_titles(TITLES, tokenizer, 16, use_cache=False)
    assert not cache.exists() or not list(cache.glob("*"))


def test_unwritable_cache_only_costs_speed(tokenizer, tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("MTNEWS_CACHE", str(blocker))  # tokens/ cannot be created under a file
    t = tokenize_titles(TITLES, tokenizer, 16)
    assert t.ids.shape == (len(TITLES), 16)
    assert tokmod.cache_dir() == blocker


def test_batch_trims_to_the_longest_title_and_masks_by_length():
    ids = np.array([[101, 7, 8, 9, 102, 0], [101, 5, 102, 0, 0, 0], [101, 102, 0, 0, 0, 0]], dtype=np.int32)
    t = TitleTokens(ids, np.array([5, 3, 2], dtype=np.int32), 0)
    got_ids, mask = t.batch(np.array([1, 2]))
    # Longest title in this batch has 3 tokens, so width 3 (not the stored 6).
    assert got_ids.tolist() == [[101, 5, 102], [101, 102, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert got_ids.dtype == torch.int64 and mask.dtype == torch.int64
    got_ids, mask = t.batch(np.array([2, 0, 2]))
    assert got_ids.shape == (3, 5)
    assert mask.sum(1).tolist() == [2, 5, 2]
