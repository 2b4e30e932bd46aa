"""`model.interest`: the label-interest term, recomputed by hand per user and candidate with numpy.

s(u,c) = r_u · r_c + Σ_t w_t · log((Σ_i π_{h_i}^t + β) / (n_u + β K_t)) · π_c^t, π^t = softmax(head_t(r_c)).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mtnews.config import load_config
from mtnews.data.dataset import load_split
from mtnews.errors import ConfigError
from mtnews.model.build import build_model
from mtnews.model.scoring import ArticleVectors, score_in_memory
from mtnews.model.tokens import tokenize_titles
from mtnews.train.batching import BatchBuilder

H = 6
BETA = 0.7

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _cfg(tiny_bert, *extra):
    return load_config(None, ["--model.pretrained", str(tiny_bert), "--model.lora.enabled", "false",
                              "--data.history_size", str(H), "--model.max_title_length", "16",
                              "--tasks.category", "0.3", "--tasks.sentiment", "0.2",
                              "--model.interest", "[category, sentiment]",
                              "--model.interest_smoothing", str(BETA), *extra])


@pytest.fixture
def setup(tiny_dataset, tiny_bert):
    cfg = _cfg(tiny_bert)
    split = load_split(tiny_dataset(), "train", H)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg, split.articles.vocab)
    with torch.no_grad():
        model.interest.weight.copy_(torch.tensor([0.7, 1.9]))  # not the initial 1s: each weight must act
    model.eval()
    tokens = tokenize_titles(split.articles.titles, tokenizer, 16)
    return model, split, tokens, split.train_samples(4, seed=0)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _hand_scores(model, split, tokens, hist_rows: np.ndarray, cand_rows: np.ndarray) -> np.ndarray:
    """Scores [B, C]: every title encoded on its own, users and shares one at a time in numpy."""
    n = len(split.articles.titles)
    with torch.no_grad():
        vec = [np.zeros(model.dim)]
        for a in range(1, n):
            ids, mask = tokens.batch(np.array([a]))
            vec.append(model.encode_news(ids, mask)[0].double().numpy())
        vec = np.stack(vec)
        ue = model.user_encoder
        q, pw, pb = (t.detach().double().numpy() for t in (ue.query, ue.proj.weight, ue.proj.bias))
        empty = ue.empty_user.detach().double().numpy()
        heads = [(h.weight.detach().double().numpy(), h.bias.detach().double().numpy())
                 for h in (model.category_head, model.sentiment_head)]
    w = model.interest.weight.detach().double().numpy()
    out = np.zeros(cand_rows.shape)
    for b, (hist, cands) in enumerate(zip(hist_rows, cand_rows)):
        clicks = vec[hist[hist > 0]]
        if len(clicks):
            logits = q * np.tanh(clicks @ pw.T + pb)
            a = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
            user = (a * clicks).sum(0)
        else:
            user = empty
        for j, c in enumerate(cands):
            s = user @ vec[c]
            for t, (hw, hb) in enumerate(heads):
                k = len(hb)
                counts = sum((_softmax(hw @ vec[i] + hb) for i in hist[hist > 0]), np.zeros(k))
                shares = (counts + BETA) / (len(clicks) + BETA * k)
                s += w[t] * np.log(shares) @ _softmax(hw @ vec[c] + hb)
            out[b, j] = s
    return out


def test_training_score_adds_the_hand_computed_label_interest(setup):
    model, split, tokens, samples = setup
    idx = np.arange(len(samples))
    assert (samples.user_row == 0).any()  # a user with no clicks: uniform shares, a constant term
    batch = BatchBuilder(samples, split.histories, split.articles, tokens)(idx)
    with torch.no_grad():
        news = model.encode_news(batch.input_ids, batch.attention_mask)
        got = model.score(news, batch.hist_pos, batch.cand_pos).double().numpy()
    want = _hand_scores(model, split, tokens, split.histories.matrix[samples.user_row], samples.candidates)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # The term is not negligible here: without it the scores differ.
    plain = (model.score.__func__)
    with torch.no_grad():
        interest, model.interest = model.interest, None
        try:
            bare = plain(model, news, batch.hist_pos, batch.cand_pos).double().numpy()
        finally:
            model.interest = interest
    assert np.abs(got - bare).max() > 1e-2


def test_inference_is_one_dot_product_in_the_ranking_space_and_matches_training(setup):
    model, split, tokens, samples = setup
    imps = split.eval_impressions()
    got = score_in_memory(model, tokens, split.histories, imps, chunk=2, batch_size=3)
    hist = split.histories.matrix[imps.user_row]
    owner = np.repeat(np.arange(len(imps)), np.diff(imps.offsets))
    want = np.concatenate([_hand_scores(model, split, tokens, hist[m : m + 1],
                                        imps.candidates[imps.offsets[m] : imps.offsets[m + 1]][None])[0]
                           for m in range(len(imps))])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)

    vectors = ArticleVectors.build(model, tokens, np.arange(1, len(split.articles.titles)))
    assert vectors.vectors.shape[1] == model.ranking_dim == model.dim + model.interest.width
    users = vectors.users(hist)
    dots = (users[owner] * vectors.vectors[torch.from_numpy(imps.candidates)]).sum(-1).double().numpy()
    np.testing.assert_allclose(dots, want, rtol=0, atol=1e-5)  # what retrieval indexes and exports


def test_the_heads_learn_from_their_own_losses_only(setup):
    model, split, tokens, samples = setup
    model.train()
    batch = BatchBuilder(samples, split.histories, split.articles, tokens)(np.arange(len(samples)))
    _, losses = model(batch)
    losses["main"].backward()
    for head in (model.category_head, model.sentiment_head):
        assert head.weight.grad is None or not head.weight.grad.any()
    assert model.interest.weight.grad is not None and model.interest.weight.grad.abs().min() > 0
    assert any(p is model.interest.weight for p in model.head_parameters()["main"])


@pytest.mark.parametrize("args, match", [
    (["--model.interest", "[topic]"], "model.interest: expected a list of category, sentiment"),
    (["--model.interest", "[category, category]"], "names a task twice"),
    (["--tasks.sentiment", "0"], "model.interest: sentiment needs its head, but tasks.sentiment is 0"),
    (["--model.interest_smoothing", "0"], "model.interest_smoothing: must be > 0"),
])
def test_config_errors_name_the_key(tiny_bert, args, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(tiny_bert, *args)


def test_category_interest_without_category_labels_is_one_clear_error(tiny_dataset, tiny_bert):
    split = load_split(tiny_dataset(), "train", H)
    with pytest.raises(ConfigError, match="model.interest: category needs its head"):
        build_model(_cfg(tiny_bert), dataclasses.replace(split.articles.vocab, categories=()))
