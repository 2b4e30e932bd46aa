"""MTRec's score and losses, recomputed by brute force one sample and one history slot at a time.

The model runs in eval mode (the tiny BERT has dropout 0.1), so two forward passes over the same titles
agree and dedupe / no-dedupe batches can be compared exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtnews.config import load_config
from mtnews.data.dataset import load_split
from mtnews.model.build import build_model
from mtnews.model.mtrec import Batch, task_losses
from mtnews.model.tokens import tokenize_titles
from mtnews.train.batching import BatchBuilder

H = 6

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py



@pytest.fixture
def setup(tiny_dataset, tiny_bert):
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--model.lora.enabled", "false",
                             "--data.history_size", str(H), "--model.max_title_length", "16",
                             "--tasks.category", "0.3", "--tasks.sentiment", "0.2", "--tasks.ner", "0.1"])
    split = load_split(tiny_dataset(), "train", H)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg, split.articles.vocab)
    model.eval()
    tokens = tokenize_titles(split.articles.titles, tokenizer, 16)
    samples = split.train_samples(4, seed=0)
    return model, split, tokens, samples


def _vectors(model, tokens, n_articles: int) -> torch.Tensor:
    """Every article's news vector, each title encoded on its own (no batching, no dedupe)."""
    rows = [torch.zeros(model.dim)]
    for a in range(1, n_articles):
        ids, mask = tokens.batch(np.array([a]))
        rows.append(model.encode_news(ids, mask)[0])
    return torch.stack(rows)


def _user(model, clicks: torch.Tensor) -> torch.Tensor:
    """r_u = sum_i a_i * r_i with a per-dimension softmax over the real clicks (the MTRec formula)."""
    if len(clicks) == 0:
        return model.user_encoder.empty_user
    ue = model.user_encoder
    logits = ue.query * torch.tanh(clicks @ ue.proj.weight.T + ue.proj.bias)
    return (torch.softmax(logits, dim=0) * clicks).sum(0)


def _hand_scores(model, split, tokens, samples, idx) -> torch.Tensor:
    vec = _vectors(model, tokens, len(split.articles.titles))
    out = []
    for i in idx:
        hist = split.histories.matrix[samples.user_row[i]]
        user = _user(model, vec[hist[hist > 0]])
        out.append(torch.stack([user @ vec[c] for c in samples.candidates[i]]))
    return torch.stack(out)


def test_the_fixture_batch_exercises_the_interesting_cases(setup):
    model, split, tokens, samples = setup
    rows = samples.user_row
    # A user with no history (empty-user path), repeated users (articles in several history slots), an
    # unlabelled article in a history (category/sentiment -100) and duplicate candidates.
    assert (rows == 0).any() and len(set(rows.tolist())) < len(rows)
    hist = split.histories.matrix[rows]
    assert (split.articles.category[hist[hist > 0]] < 0).any()
    assert not split.articles.entities_known[hist[hist > 0]].all()  # article 104: null entity_groups
    assert any(len(set(c)) < len(c) for c in samples.candidates.tolist())


def test_score_is_user_vector_dot_candidate_vector(setup):
    model, split, tokens, samples = setup
    idx = np.arange(len(samples))
    batch = BatchBuilder(samples, split.histories, split.articles, tokens)(idx)
    with torch.no_grad():
        news = model.encode_news(batch.input_ids, batch.attention_mask)
        got = model.score(news, batch.hist_pos, batch.cand_pos)
        want = _hand_scores(model, split, tokens, samples, idx)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_main_loss_is_softmax_cross_entropy_on_the_clicked_column(setup):
    model, split, tokens, samples = setup
    idx = np.arange(len(samples))
    batch = BatchBuilder(samples, split.histories, split.articles, tokens)(idx)
    with torch.no_grad():
        _, losses = model(batch)
        s = _hand_scores(model, split, tokens, samples, idx).double()
    # -log(exp(s_0) / sum_j exp(s_j)), averaged over samples.
    want = (-(s[:, 0] - torch.log(torch.exp(s).sum(1)))).mean()
    assert abs(float(losses["main"]) - float(want)) < 1e-5


def _hand_aux(model, split, tokens, samples, idx, on_candidates: bool) -> dict[str, float]:
    """Per-slot means: one cross-entropy term per labelled history slot (and candidate slot if asked)."""
    a = split.articles
    vec = _vectors(model, tokens, len(a.titles))
    ce = {"category": [], "sentiment": [], "ner": []}
    for i in idx:
        hist = split.histories.matrix[samples.user_row[i]]
        slots = list(hist[hist > 0]) + (list(samples.candidates[i]) if on_candidates else [])
        for art in slots:
            v = vec[art]
            if a.category[art] >= 0:
                ce["category"].append(-F.log_softmax(model.category_head(v), -1)[a.category[art]])
            if a.sentiment[art] >= 0:
                ce["sentiment"].append(-F.log_softmax(model.sentiment_head(v), -1)[a.sentiment[art]])
            if a.entities_known[art]:
                target = torch.from_numpy(a.entities[art])
                ce["ner"].append(F.binary_cross_entropy_with_logits(model.ner_head(v), target))
    return {k: float(torch.stack(v).mean()) for k, v in ce.items()}


@pytest.mark.parametrize("on_candidates", [False, True])
@pytest.mark.parametrize("dedupe", [True, False])
def test_aux_losses_are_per_slot_means_over_labelled_slots(setup, dedupe, on_candidates):
    model, split, tokens, samples = setup
    idx = np.arange(len(samples))
    builder = BatchBuilder(samples, split.histories, split.articles, tokens, aux_on_candidates=on_candidates,
                           dedupe=dedupe)
    with torch.no_grad():
        _, losses = model(builder(idx))
        want = _hand_aux(model, split, tokens, samples, idx, on_candidates)
    for task in ("category", "sentiment", "ner"):
        assert abs(float(losses[task]) - want[task]) < 1e-5, task


def test_ner_loss_skips_unannotated_articles_hand_computed(setup):
    """Hand-built batch of 107 [LOC, PER], 103 [PER, PER], 104 (null entity_groups) and 105 ([]), filling
    2, 1, 3 and 1 history slots. With a zero NER weight matrix and every bias ln 3, each logit is ln 3,
    sigma = 3/4: a positive group costs ln(4/3), a negative one ln 4. Over the G = 5 groups
    (EVENT, LOC, ORG, PER, PROD):
        107: 2 positives -> (2 ln(4/3) + 3 ln 4) / 5        103: 1 positive -> (ln(4/3) + 4 ln 4) / 5
        105: none        -> ln 4                            104: unannotated, no term
    loss = (2 * l107 + 1 * l103 + 1 * l105) / 4; counting 104 as "no entities" would give
    (2 * l107 + l103 + 3 ln 4 + l105) / 7 instead."""
    model, split, _, _ = setup
    a = split.articles
    assert a.entity_names == ["EVENT", "LOC", "ORG", "PER", "PROD"]
    art = np.array([2, 5, 8, 11])  # 107, 103, 104, 105 (conftest: index = row + 2)
    assert a.article_ids[art].tolist() == [107, 103, 104, 105]
    assert a.entities[art].tolist() == [[0, 1, 0, 1, 0], [0, 0, 0, 1, 0], [0] * 5, [0] * 5]
    # positions 1..4 = 107, 103, 104, 105; slot counts 2, 1, 3, 1
    hist_pos = torch.tensor([[1, 1, 2, 3, 0, 0], [3, 3, 4, 0, 0, 0]])
    batch = Batch(input_ids=torch.zeros(4, 1, dtype=torch.long), attention_mask=torch.ones(4, 1, dtype=torch.long),
                  hist_pos=hist_pos, cand_pos=torch.tensor([[1, 2], [4, 3]]),
                  aux_weight=torch.tensor([2.0, 1.0, 3.0, 1.0]),
                  category=torch.from_numpy(a.category[art]), sentiment=torch.from_numpy(a.sentiment[art]),
                  entities=torch.from_numpy(a.entities[art]), entities_known=torch.from_numpy(a.entities_known[art]))
    assert batch.entities_known.tolist() == [True, True, False, True]
    with torch.no_grad():
        model.ner_head.weight.zero_()
        model.ner_head.bias.fill_(math.log(3))
    news = torch.randn(4, model.dim, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = float(task_losses(model, news, batch, model.cfg)["ner"].detach())
    pos, neg = math.log(4 / 3), math.log(4)
    l107, l103, l105 = (2 * pos + 3 * neg) / 5, (pos + 4 * neg) / 5, neg
    assert loss == pytest.approx((2 * l107 + l103 + l105) / 4, abs=1e-6)
    assert loss != pytest.approx((2 * l107 + l103 + 3 * neg + l105) / 7, abs=1e-3)

    # With a non-zero head the loss reaches every annotated article's vector, and never 104's.
    with torch.no_grad():
        model.ner_head.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(task_losses(model, news, batch, model.cfg)["ner"], news)
    assert (grad[2] == 0).all()
    assert all(grad[r].abs().sum() > 0 for r in (0, 1, 3))


def test_per_slot_mean_differs_from_a_per_unique_article_mean(setup):
    """Guards the test above: on this batch a per-unique-article mean gives a different number."""
    model, split, tokens, samples = setup
    idx = np.arange(len(samples))
    batch = BatchBuilder(samples, split.histories, split.articles, tokens)(idx)
    with torch.no_grad():
        news, losses = model(batch)
        ce = F.cross_entropy(model.category_head(news), batch.category.clamp_min(0), reduction="none")
        in_hist = (batch.aux_weight > 0) & (batch.category >= 0)
        per_unique = float(ce[in_hist].mean())
    assert abs(per_unique - float(losses["category"])) > 1e-3


def test_dedupe_and_no_dedupe_give_the_same_losses_and_gradients(setup):
    model, split, tokens, samples = setup
    idx = np.arange(len(samples))
    results = []
    for dedupe in (True, False):
        batch = BatchBuilder(samples, split.histories, split.articles, tokens, dedupe=dedupe)(idx)
        model.zero_grad()
        _, losses = model(batch)
        sum(losses.values()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((batch.input_ids.shape[0], {k: float(v.detach()) for k, v in losses.items()}, grads))
    (n_dd, l_dd, g_dd), (n_raw, l_raw, g_raw) = results
    assert n_dd < n_raw  # dedupe really encoded fewer rows
    assert l_dd.keys() == l_raw.keys() == {"main", "category", "sentiment", "ner"}
    for k in l_dd:
        assert abs(l_dd[k] - l_raw[k]) < 1e-5, k
    assert g_dd.keys() == g_raw.keys()
    for n in g_dd:
        torch.testing.assert_close(g_dd[n], g_raw[n], rtol=1e-4, atol=1e-6, msg=n)


def test_inactive_tasks_have_no_head_and_no_loss(tiny_dataset, tiny_bert):
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--model.lora.enabled", "false",
                             "--tasks.category", "0", "--tasks.sentiment", "0.5", "--tasks.ner", "0"])
    split = load_split(tiny_dataset(), "train", H)
    model, tokenizer = build_model(cfg, split.articles.vocab)
    tokens = tokenize_titles(split.articles.titles, tokenizer, 16)
    samples = split.train_samples(2, seed=0)
    _, losses = model(BatchBuilder(samples, split.histories, split.articles, tokens)(np.arange(len(samples))))
    assert model.category_head is None and model.ner_head is None
    assert set(losses) == {"main", "sentiment"}


def test_cached_evaluator_matches_naive_per_impression_scoring(small_synth, tiny_bert):
    """score_in_memory (encode each article once, score chunks) = encoding every impression's history and
    candidates on their own and taking dot products, impression by impression."""
    from mtnews.model.scoring import score_in_memory

    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--data.history_size", "10"])
    split = load_split(small_synth, "validation", 10)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg, split.articles.vocab)
    with torch.no_grad():  # non-zero LoRA B matrices, so the adapters take part in the comparison too
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    tokens = tokenize_titles(split.articles.titles, tokenizer, 16)
    imps = split.eval_impressions().slice(0, 40)
    model.train()  # score_in_memory must switch dropout off itself, and restore the mode afterwards
    got = score_in_memory(model, tokens, split.histories, imps, chunk=7, batch_size=16)
    assert model.training

    model.eval()
    want = []
    with torch.no_grad():
        for m in range(len(imps)):
            hist = split.histories.matrix[imps.user_row[m]]
            hist = hist[hist > 0]
            cands = imps.candidates[imps.offsets[m] : imps.offsets[m + 1]]
            ids, mask = tokens.batch(np.concatenate([hist, cands]))
            vec = model.encode_news(ids, mask)
            user = _user(model, vec[: len(hist)])
            want.append((vec[len(hist):] @ user).double().numpy())
    want = np.concatenate(want)
    assert got.shape == want.shape == (imps.offsets[-1],)
    assert len(set(imps.user_row.tolist())) < len(imps)  # repeated users share a vector in the cached path
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_subcategory_loss_is_a_per_slot_mean_over_labelled_slots_and_joins_the_aux_group(tiny_dataset, tiny_bert):
    """MIND's subcategory task: labels from `subcategory_str` (null = unlabelled, masked like category),
    checked against one cross-entropy term per labelled history slot; surgery counts it as auxiliary."""
    import polars as pl
    from accelerate import Accelerator

    from mtnews.train.step import GradientEngine

    root = tiny_dataset()
    arts = pl.read_parquet(root / "articles.parquet")
    subs = ["football", "football", None, "tennis", "politics", None, "politics", "tennis", "crime", None]
    arts.with_columns(pl.Series("subcategory_str", subs)).write_parquet(root / "articles.parquet")
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--model.lora.enabled", "false",
                             "--data.history_size", str(H), "--model.max_title_length", "16",
                             "--tasks.category", "0", "--tasks.sentiment", "0", "--tasks.subcategory", "0.4"])
    split = load_split(root, "train", H)
    a = split.articles
    assert a.subcategory_names == ["crime", "football", "politics", "tennis"]
    assert a.vocab.subcategories == ("crime", "football", "politics", "tennis")
    assert a.subcategory[2:].tolist() == [1, 1, -100, 3, 2, -100, 2, 3, 0, -100]
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg, a.vocab)
    model.eval()
    assert model.subcategory_head.out_features == 4 and model.category_head is None
    tokens = tokenize_titles(a.titles, tokenizer, 16)
    samples = split.train_samples(4, seed=0)
    idx = np.arange(len(samples))
    batch = BatchBuilder(samples, split.histories, a, tokens)(idx)
    with torch.no_grad():
        _, losses = model(batch)
        vec = _vectors(model, tokens, len(a.titles))
        terms = []
        for i in idx:
            hist = split.histories.matrix[samples.user_row[i]]
            for art in hist[hist > 0]:
                if a.subcategory[art] >= 0:
                    terms.append(-F.log_softmax(model.subcategory_head(vec[art]), -1)[a.subcategory[art]])
    assert set(losses) == {"main", "subcategory"}
    assert abs(float(losses["subcategory"]) - float(torch.stack(terms).mean())) < 1e-5
    assert len(terms) < sum(int((split.histories.matrix[samples.user_row[i]] > 0).sum()) for i in idx)  # some masked

    engine = GradientEngine(model, model, Accelerator(cpu=True), seed=0)
    assert engine.weights["subcategory"] == 0.4
    groups = engine._groups(losses)
    assert set(groups) == {"main", "aux"} and float(groups["aux"]) == pytest.approx(0.4 * float(losses["subcategory"]))
    assert engine._group_heads("aux") == list(model.subcategory_head.parameters())
