"""MTRec-T's branch: its formula recomputed by hand on a tiny case, the scoring kernel against the training
forward pass, the config's validation, and one clear error for missing or misshapen signals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtnews.config import TemporalConfig, load_config
from mtnews.data.dataset import load_split
from mtnews.data.signals import SignalOptions, SplitSignals
from mtnews.errors import ConfigError
from mtnews.model.build import build_model
from mtnews.model.scoring import ArticleVectors
from mtnews.model.temporal import TemporalBranch, signal_options
from mtnews.model.tokens import tokenize_titles
from mtnews.train.batching import BatchBuilder, sample_signals

H = 6
NAMES = SignalOptions(windows_h=(1.0,)).names()  # age_h, age_known, inviews_1h/all, clicks_1h/all, ctr_1h/all


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _branch(**kw) -> TemporalBranch:
    cfg = TemporalConfig(enabled=True, age_edges_h=[1.0, 10.0], hidden=2, **kw)
    torch.manual_seed(0)
    b = TemporalBranch(cfg, NAMES, dim=3, ctr_prior_mean=0.1)
    with torch.no_grad():  # every weight non-zero, so each term shows in the result
        for p in b.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return b


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _softplus(x):
    return np.log1p(np.exp(x))


SIGNALS = np.array([
    # age_h, known, in_1h, in_all, cl_1h, cl_all, ctr_1h, ctr_all
    [0.5, 1, 0, 3, 0, 1, 0.1, 2 / 13],
    [5.0, 1, 2, 8, 1, 2, 2 / 12, 3 / 18],
    [50.0, 1, 0, 0, 0, 0, 0.1, 0.1],
    [np.nan, 0, 4, 9, 0, 0, 1 / 14, 1 / 19],  # no published_time: the "age unknown" bucket
], dtype=np.float32)


def test_popularity_gate_and_score_by_hand():
    b = _branch()
    news = np.array([[0.3, -0.2, 0.5], [1.0, 0.0, -1.0], [0.1, 0.1, 0.1], [-0.4, 0.2, 0.0]], dtype=np.float64)
    user = np.array([0.2, -0.5, 0.7])
    w = {n: p.detach().double().numpy() for n, p in b.named_parameters()}
    buckets = [0, 1, 2, 3]  # age <= 1 h, (1, 10], above 10 h, unknown
    assert b.buckets(torch.from_numpy(SIGNALS)).tolist() == buckets
    known = SIGNALS[:, 1].astype(np.float64)
    x = np.stack([np.log1p(np.nan_to_num(SIGNALS[:, 0].astype(np.float64))) * known,
                  *[np.log1p(SIGNALS[:, i].astype(np.float64)) for i in (2, 3, 4, 5)],
                  *[np.log(SIGNALS[:, i].astype(np.float64)) - np.log(0.1) for i in (6, 7)]], axis=1)
    h = _gelu(w["age_embedding.weight"][buckets] + x @ w["features.weight"].T + w["features.bias"])
    p = h @ w["out.weight"][0] + w["out.bias"][0] + news @ w["content_popularity.weight"][0]
    g = _softplus(np.tanh(user @ w["gate_hidden.weight"].T + w["gate_hidden.bias"]) @ w["gate_out.weight"][0]
                  + w["gate_out.bias"][0])
    s = news @ user + g * p

    pop = b.popularity(torch.from_numpy(SIGNALS), torch.from_numpy(news).float())
    np.testing.assert_allclose(pop.detach().numpy(), p, rtol=1e-5, atol=1e-6)
    gate = b.gate(torch.from_numpy(user).float()[None])
    np.testing.assert_allclose(gate.detach().numpy(), [g], rtol=1e-5)
    content = torch.from_numpy(news @ user).float()
    np.testing.assert_allclose(b.combine(content, gate, pop).detach().numpy(), s, rtol=1e-5, atol=1e-6)


def test_ablations_drop_the_content_term_or_the_user_gate():
    only = _branch(content=False)
    pop = torch.tensor([1.5, -2.0])
    gate = torch.tensor([0.7])
    assert torch.equal(only.combine(torch.tensor([10.0, 20.0]), gate, pop), gate * pop)
    scalar = _branch(gate=False)
    assert not hasattr(scalar, "gate_hidden")
    users = torch.randn(3, 3)
    g = scalar.gate(users)
    assert g.shape == (3,) and torch.allclose(g, torch.nn.functional.softplus(scalar.gate_scalar).expand(3))


def test_a_fresh_branch_starts_with_gate_one_and_no_time_score():
    cfg = TemporalConfig(enabled=True, content_popularity=False)
    b = TemporalBranch(cfg, NAMES, dim=3, ctr_prior_mean=0.1)
    assert torch.allclose(b.gate(torch.randn(4, 3)), torch.ones(4))
    assert torch.equal(b.popularity(torch.from_numpy(SIGNALS), torch.zeros(4, 3)), torch.zeros(4))


def test_config_is_validated_with_the_key_named():
    cfg = load_config(None, ["--model.temporal.enabled", "true"])
    assert cfg.model.temporal.signals.aggregates is False and cfg.model.temporal.gate is True
    assert signal_options(cfg.model.temporal).mask_split_clicks == 0.0
    assert signal_options(cfg.model.temporal, training=True).mask_split_clicks == 0.5
    bad = {"--model.temporal.age_edges_h": "[4, 2]", "--model.temporal.hidden": "0",
           "--model.temporal.signals.window": "future", "--model.temporal.signals.train_mask_clicks": "1.5",
           "--model.temporal.signals.windows_h": "[1, 1]", "--model.temporal.signals.ctr_prior_mean": "0"}
    for key, value in bad.items():
        with pytest.raises(ConfigError, match=key[2:].replace(".", r"\.")):
            load_config(None, [key, value])
    with pytest.raises(ConfigError, match="model.temporal.signals.bogus"):
        load_config(None, ["--model.temporal.signals.bogus", "1"])


@pytest.fixture
def temporal_setup(tiny_dataset, tiny_bert):
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--model.lora.enabled", "false",
                             "--data.history_size", str(H), "--model.max_title_length", "16",
                             "--model.temporal.enabled", "true", "--model.projection", "true"])
    root = tiny_dataset()
    split = load_split(root, "train", H)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg, split.articles.vocab)
    with torch.no_grad():  # a trained-looking branch: non-zero output and gate weights
        for p in model.temporal.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.eval()
    tokens = tokenize_titles(split.articles.titles, tokenizer, 16)
    samples = split.train_samples(4, seed=0)
    signals = SplitSignals.load(root, "train", signal_options(cfg.model.temporal, training=True))
    return model, split, tokens, samples, sample_signals(signals, samples, split.articles)


def test_kernel_with_signals_equals_the_training_forward(temporal_setup):
    model, split, tokens, samples, sig = temporal_setup
    assert sig.shape == (*samples.candidates.shape, len(model.temporal.names))
    idx = np.arange(len(samples))
    batch = BatchBuilder(samples, split.histories, split.articles, tokens, signals=sig)(idx)
    with torch.no_grad():
        news, _ = model(batch)
        forward = model.score(news, batch.hist_pos, batch.cand_pos, batch.cand_signals).double().numpy()
        content = torch.einsum("bd,bcd->bc", *_users_and_candidates(model, news, batch)).double().numpy()
    assert np.abs(forward - content).max() > 1e-3  # the branch really contributes

    vectors = ArticleVectors.build(model, tokens, np.arange(1, len(split.articles.titles)))
    users = vectors.users(split.histories.matrix[samples.user_row])
    width = samples.candidates.shape[1]
    owner = np.repeat(idx, width)
    flat = sig.reshape(-1, sig.shape[-1])
    kernel = vectors.dots(users, owner, samples.candidates.ravel(), signals=flat)
    np.testing.assert_allclose(kernel.reshape(forward.shape), forward, rtol=1e-6, atol=1e-6)  # float32 sums
    # Blocks of any size give the same scores.
    np.testing.assert_allclose(vectors.dots(users, owner, samples.candidates.ravel(), dot_block=3, signals=flat),
                               kernel, rtol=1e-6, atol=1e-6)


def _users_and_candidates(model, news, batch):
    table = torch.cat([news.new_zeros(1, news.shape[1]), news])
    logits = model.user_encoder.slot_logits(news)
    logits = torch.cat([logits.new_full((1, logits.shape[1]), float("-inf")), logits])
    return model.user_encoder.from_tables(table, logits, batch.hist_pos), table[batch.cand_pos]


def test_missing_or_misshapen_signals_are_one_clear_error(temporal_setup):
    model, split, tokens, samples, sig = temporal_setup
    vectors = ArticleVectors.build(model, tokens, np.arange(1, len(split.articles.titles)))
    users = vectors.users(split.histories.matrix[samples.user_row[:2]])
    cands = samples.candidates[:2].ravel()
    owner = np.repeat([0, 1], samples.candidates.shape[1])
    with pytest.raises(ConfigError, match="time-aware branch.*age_h, age_known"):
        vectors.dots(users, owner, cands)
    with pytest.raises(ConfigError, match=r"expected shape \(10, 14\)"):
        vectors.dots(users, owner, cands, signals=np.zeros((10, 3), dtype=np.float32))
    batch = BatchBuilder(samples, split.histories, split.articles, tokens)(np.arange(2))
    with pytest.raises(ConfigError, match="need the candidates' time signals"):
        model(batch)


def test_content_only_model_ignores_signals(tiny_dataset, tiny_bert):
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--model.lora.enabled", "false",
                             "--data.history_size", str(H), "--model.max_title_length", "16"])
    split = load_split(tiny_dataset(), "train", H)
    model, tokenizer = build_model(cfg, split.articles.vocab)
    assert model.temporal is None
    assert not any(n.startswith("temporal") for n in model.weight_parameters())
    vectors = ArticleVectors.build(model.eval(), tokenize_titles(split.articles.titles, tokenizer, 16),
                                   np.arange(1, len(split.articles.titles)))
    users = vectors.users(split.histories.matrix[[1, 2]])
    cands, owner = np.array([2, 3, 4]), np.array([0, 1, 1])
    np.testing.assert_array_equal(vectors.dots(users, owner, cands, signals=np.ones((3, 5))),
                                  vectors.dots(users, owner, cands))
