"""BatchBuilder: deduplicated rows, slot positions, per-slot auxiliary weights and labels.

Title tokens are fake: article a's first token is 1000 + a, so every encoded row says which article it is.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtnews.data.dataset import load_split
from mtnews.model.tokens import TitleTokens
from mtnews.train.batching import BatchBuilder


@pytest.fixture
def parts(tiny_dataset):
    split = load_split(tiny_dataset(), "train", 6)
    n = len(split.articles.titles)
    lengths = (np.arange(n) % 3 + 2).astype(np.int32)  # 2..4 tokens, so rows get trimmed differently
    ids = np.zeros((n, 8), dtype=np.int32)
    for a in range(n):
        ids[a, : lengths[a]] = 1000 + a
    tokens = TitleTokens(ids, lengths, 0)
    samples = split.train_samples(4, seed=0)
    return split, tokens, samples


def _row_article(batch) -> np.ndarray:
    """The article behind each encoded row, read back from the fake token ids; position 0 = padding."""
    return np.concatenate([[0], batch.input_ids[:, 0].numpy() - 1000])


# [0] alone has no padding slot at all (full history), which takes the other branch of the dedupe code.
@pytest.mark.parametrize("idx", [[4, 0, 1, 3], [0]])
@pytest.mark.parametrize("dedupe", [True, False])
def test_positions_point_at_each_slots_article(parts, dedupe, idx):
    split, tokens, samples = parts
    idx = np.array(idx)
    batch = BatchBuilder(samples, split.histories, split.articles, tokens, dedupe=dedupe)(idx)
    art = _row_article(batch)
    hist = split.histories.matrix[samples.user_row[idx]]
    assert np.array_equal(art[batch.hist_pos.numpy()], hist)  # padding slots land on position 0, article 0
    assert np.array_equal(art[batch.cand_pos.numpy()], samples.candidates[idx])
    assert (batch.hist_pos.numpy()[hist == 0] == 0).all()
    assert 0 not in art[1:]  # padding is never encoded
    assert batch.size == len(idx)


@pytest.mark.parametrize("keep", [1, 3, 6, 9])
def test_a_stage_history_size_keeps_the_most_recent_clicks(parts, keep):
    split, tokens, samples = parts
    idx = np.arange(len(samples))
    batch = BatchBuilder(samples, split.histories, split.articles, tokens, history_size=keep)(idx)
    full = split.histories.matrix[samples.user_row[idx]]  # left-padded: the newest click is the last column
    newest = [[a for a in row if a != 0][-keep:] for row in full.tolist()]  # reference: per row, by hand
    got = _row_article(batch)[batch.hist_pos.numpy()]
    assert got.shape == (len(idx), min(keep, full.shape[1]))
    assert [[a for a in row if a != 0] for row in got.tolist()] == newest
    assert np.array_equal(_row_article(batch)[batch.cand_pos.numpy()], samples.candidates[idx])


def test_dedupe_encodes_each_article_once_and_no_dedupe_once_per_slot(parts):
    split, tokens, samples = parts
    idx = np.arange(len(samples))
    hist = split.histories.matrix[samples.user_row[idx]]
    slots = np.concatenate([hist.ravel(), samples.candidates[idx].ravel()])
    real = slots[slots > 0]
    dd = BatchBuilder(samples, split.histories, split.articles, tokens)(idx)
    raw = BatchBuilder(samples, split.histories, split.articles, tokens, dedupe=False)(idx)
    assert sorted(_row_article(dd)[1:].tolist()) == sorted(set(real.tolist()))
    assert dd.input_ids.shape[0] == len(set(real.tolist())) < raw.input_ids.shape[0] == len(real)


def test_rows_are_trimmed_to_the_longest_title_and_masked(parts):
    split, tokens, samples = parts
    batch = BatchBuilder(samples, split.histories, split.articles, tokens)(np.array([3]))
    art = _row_article(batch)[1:]
    assert batch.input_ids.shape[1] == tokens.lengths[art].max()
    assert batch.attention_mask.sum(1).tolist() == tokens.lengths[art].tolist()


@pytest.mark.parametrize("on_candidates", [False, True])
def test_aux_weight_counts_slots_and_labels_follow_rows(parts, on_candidates):
    split, tokens, samples = parts
    idx = np.arange(len(samples))
    batch = BatchBuilder(samples, split.histories, split.articles, tokens, aux_on_candidates=on_candidates)(idx)
    art = _row_article(batch)[1:]
    hist = split.histories.matrix[samples.user_row[idx]]
    counted = list(hist[hist > 0].ravel())
    if on_candidates:
        counted += list(samples.candidates[idx].ravel())
    want = [counted.count(a) for a in art]
    assert batch.aux_weight.tolist() == want
    assert max(want) > 1  # some article fills several slots: a per-unique weight of 1 would be wrong
    if not on_candidates:
        assert 0 in want  # candidate-only articles carry no auxiliary weight
    a = split.articles
    assert batch.category.tolist() == a.category[art].tolist()
    assert batch.sentiment.tolist() == a.sentiment[art].tolist()
    assert batch.entities.numpy().tolist() == a.entities[art].tolist()
    assert batch.entities_known.dtype == torch.bool
    assert batch.entities_known.tolist() == a.entities_known[art].tolist()
    assert 8 in art and not batch.entities_known[art.tolist().index(8)]  # article 104: null entity_groups
