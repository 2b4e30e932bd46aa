"""GradientEngine: the gradients it leaves in .grad, against per-task gradients computed here independently.

Heads (user encoder, classifier heads) must get exactly their own task's gradient, never projected; the
shared encoder gets the surgery of the per-task gradients (params space), or the backward of the row-wise
surgery of the per-task news-vector gradients (representation space). The model runs in eval mode so every
forward pass is the same function (the tiny BERT has dropout).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator

from mtnews.config import load_config
from mtnews.data.dataset import load_split
from mtnews.model.build import build_model
from mtnews.model.mtrec import task_weights
from mtnews.model.tokens import tokenize_titles
from mtnews.train import surgery
from mtnews.train.batching import BatchBuilder
from mtnews.train.step import GradientEngine

AUX = ("category", "sentiment")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SEED = 7


@pytest.fixture(scope="module")
def data(small_synth, tiny_bert):
    split = load_split(small_synth, "train", 8)
    from transformers import AutoTokenizer

    tokens = tokenize_titles(split.articles.titles, AutoTokenizer.from_pretrained(str(tiny_bert)), 12)
    samples = split.train_samples(3, seed=0)
    builder = BatchBuilder(samples, split.histories, split.articles, tokens)
    return split, builder


def _model(data, tiny_bert, mode: str, space: str, lora: bool = False, sentiment: float = 0.4):
    split, _ = data
    cfg = load_config(None, ["--model.pretrained", str(tiny_bert), "--model.lora.enabled", str(lora).lower(),
                             "--data.history_size", "8", "--train.surgery", mode, "--train.surgery_space", space,
                             "--tasks.category", "0.7", "--tasks.sentiment", str(sentiment)])
    torch.manual_seed(0)
    model, _ = build_model(cfg, split.articles.vocab)
    return model.eval()


def _batches(data, n: int, size: int = 6, start: int = 0):
    _, builder = data
    return [builder(np.arange(start + i * size, start + (i + 1) * size)) for i in range(n)]


@pytest.fixture(scope="module")
def starts(data, tiny_bert) -> dict[str, int]:
    """A batch start whose main and aux gradients (on the shared encoder) conflict, and one where they agree,
    found with gradients computed here, so the tests below cover both branches whatever the data holds."""
    model = _model(data, tiny_bert, "project-both", "params")
    shared = model.shared_parameters()
    found: dict[str, int] = {}
    for start in range(0, 600, 12):
        losses, _ = _task_losses(model, _batches(data, 2, start=start))
        dot = float(_flat(_grads(losses["main"], shared)) @ _flat(_grads(losses["category"] + losses["sentiment"], shared)))
        found.setdefault("conflict" if dot < 0 else "agree", start)
        if len(found) == 2:
            return found
    pytest.fail(f"no {'conflicting' if 'agree' in found else 'agreeing'} batch pair in the first 600 samples")


def _run_engine(model, batches):
    model.zero_grad(set_to_none=True)
    engine = GradientEngine(model, model, Accelerator(cpu=True), SEED)
    stats = engine.step(batches)
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, stats


def _grads(loss, params):
    gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [g if g is not None else torch.zeros_like(p) for g, p in zip(gs, params)]


def _flat(gs):
    return torch.cat([g.reshape(-1) for g in gs])


def _unflat(flat, params):
    out, i = [], 0
    for p in params:
        out.append(flat[i : i + p.numel()].view_as(p))
        i += p.numel()
    return out


def _names(model):
    return {id(p): n for n, p in model.named_parameters()}


def _task_losses(model, batches):
    """Each task's weighted loss, averaged over micro-batches (what one big batch's step would see)."""
    w = task_weights(model.cfg)
    out: dict[str, torch.Tensor] = {}
    news_list = []
    for b in batches:
        news, losses = model(b)
        news_list.append((news, losses))
        for t, l in losses.items():
            out[t] = out.get(t, 0) + w[t] * l / len(batches)
    return out, news_list


def _expected_heads(model, losses) -> dict[str, torch.Tensor]:
    """Each head's own task gradient, via autograd.grad of that task's loss alone."""
    names = _names(model)
    heads = model.head_parameters()
    out = {}
    for task, params in heads.items():
        if not params:
            continue
        for p, g in zip(params, _grads(losses[task], params)):
            out[names[id(p)]] = g
    return out


def _assert_grads(got: dict, want: dict):
    for n, g in want.items():
        if not g.any():  # e.g. the empty-user vector when every user in the batch has a history
            assert n not in got or not got[n].any(), n
            continue
        assert n in got, n
        torch.testing.assert_close(got[n], g, rtol=1e-4, atol=1e-7, msg=n)


@pytest.mark.parametrize("kind", ["conflict", "agree"])
@pytest.mark.parametrize("mode", ["project-both", "project-aux", "pcgrad"])
@pytest.mark.parametrize("n_micro", [1, 2])
def test_params_space(data, tiny_bert, starts, mode, n_micro, kind):
    model = _model(data, tiny_bert, mode, "params")
    # n_micro=2 accumulates the pair `starts` was chosen on; n_micro=1 uses its first half only
    batches = _batches(data, n_micro, start=starts[kind])
    got, stats = _run_engine(model, batches)

    losses, _ = _task_losses(model, batches)
    want = _expected_heads(model, losses)
    shared = model.shared_parameters()
    per_task = {t: _flat(_grads(losses[t], shared)) for t in ("main", *AUX)}
    g_aux = per_task["category"] + per_task["sentiment"]
    if mode == "pcgrad":
        combined, projected = surgery.pcgrad([per_task[t] for t in ("main", *AUX)],
                                             torch.Generator().manual_seed(SEED))
    else:
        combined, projected = surgery.combine(per_task["main"], g_aux, mode)
    names = _names(model)
    want.update({names[id(p)]: g for p, g in zip(shared, _unflat(combined, shared))})
    assert set(want) == {n for n, p in model.named_parameters() if p.requires_grad}
    _assert_grads(got, want)

    assert stats.cosine == pytest.approx(surgery.cosine(per_task["main"], g_aux), abs=1e-5)
    assert stats.projected == float(projected)
    with torch.no_grad():
        for t in ("main", *AUX):
            mean = sum(float(model(b)[1][t]) for b in batches) / len(batches)
            assert stats.losses[t] == pytest.approx(mean, rel=1e-5)


@pytest.mark.parametrize("mode", ["project-both", "project-aux"])
def test_params_space_projects_exactly_when_the_task_gradients_conflict(data, tiny_bert, starts, mode):
    model = _model(data, tiny_bert, mode, "params")
    _, stats = _run_engine(model, _batches(data, 2, start=starts["conflict"]))
    assert stats.cosine < 0 and stats.projected == 1.0
    _, stats = _run_engine(model, _batches(data, 2, start=starts["agree"]))
    assert stats.cosine >= 0 and stats.projected == 0.0


class _Capture(torch.nn.Module):
    """Stands in for the (DDP) wrapper and records the gradient that reaches the news vectors."""

    def __init__(self, core):
        super().__init__()
        self.core = core
        self.seen: list[torch.Tensor] = []

    def forward(self, batch):
        news, losses = self.core(batch)
        news.register_hook(lambda g: self.seen.append(g.detach().clone()))
        return news, losses


@pytest.mark.parametrize("mode", ["project-both", "project-aux", "pcgrad"])
@pytest.mark.parametrize("n_micro", [1, 2])
def test_representation_space(data, tiny_bert, mode, n_micro):
    core = _model(data, tiny_bert, mode, "representation")
    batches = _batches(data, n_micro)
    wrapper = _Capture(core)
    core.zero_grad(set_to_none=True)
    stats = GradientEngine(wrapper, core, Accelerator(cpu=True), SEED).step(batches)
    got = {n: p.grad.clone() for n, p in core.named_parameters() if p.grad is not None}

    gen = torch.Generator().manual_seed(SEED)
    w = task_weights(core.cfg)
    shared = core.shared_parameters()
    losses_mean, per_batch = _task_losses(core, batches)
    want = _expected_heads(core, losses_mean)
    shared_grad = [torch.zeros_like(p) for p in shared]
    flowing = []
    cos = []
    projected_rows = rows = 0
    for news, losses in per_batch:
        g = {t: torch.autograd.grad(w[t] * losses[t] / n_micro, news, retain_graph=True)[0] for t in ("main", *AUX)}
        g_aux = g["category"] + g["sentiment"]
        if mode == "pcgrad":
            g_news, mask = surgery.pcgrad_rows([g[t] for t in ("main", *AUX)], gen)
        else:
            g_news, mask = surgery.combine_rows(g["main"], g_aux, mode)
        flowing.append(g_news)
        projected_rows += int(mask.sum())
        rows += news.shape[0]
        cos.append(surgery.cosine(g["main"].reshape(-1), g_aux.reshape(-1)))
        for acc, d in zip(shared_grad, torch.autograd.grad(news, shared, grad_outputs=g_news, retain_graph=True)):
            acc += d
    names = _names(core)
    want.update({names[id(p)]: g for p, g in zip(shared, shared_grad)})
    _assert_grads(got, want)

    # The gradient that flowed back into each micro-batch's news vectors is the surgery's output. The hook
    # also fires for the per-task autograd.grad calls; the single backward per micro-batch is the last one.
    per_micro = len(wrapper.seen) // n_micro
    for m in range(n_micro):
        torch.testing.assert_close(wrapper.seen[(m + 1) * per_micro - 1], flowing[m], rtol=1e-5, atol=1e-8)
    assert stats.cosine == pytest.approx(sum(cos) / n_micro, abs=1e-5)
    assert stats.rows == rows  # every unique news vector of every micro-batch
    assert stats.projected == pytest.approx(projected_rows / rows)
    assert 0 < projected_rows < rows  # a share, not the all-or-nothing of a flattened projection


def test_representation_rows_are_projected_independently(data, tiny_bert):
    """project-aux on rows: each news vector keeps its main gradient, and its aux part is projected only if
    that row conflicts, whatever the other rows do."""
    core = _model(data, tiny_bert, "project-aux", "representation")
    batches = _batches(data, 1)
    wrapper = _Capture(core)
    stats = GradientEngine(wrapper, core, Accelerator(cpu=True), SEED).step(batches)
    news, losses = core(batches[0])
    w = task_weights(core.cfg)
    g_main = torch.autograd.grad(losses["main"], news, retain_graph=True)[0]
    g_aux = torch.autograd.grad(w["category"] * losses["category"] + w["sentiment"] * losses["sentiment"], news)[0]
    aux_part = wrapper.seen[-1] - g_main
    conflict = (g_main * g_aux).sum(1) < 0
    scale = g_main.norm(dim=1) * g_aux.norm(dim=1) + 1e-30
    cos_after = (aux_part * g_main).sum(1) / scale
    assert (cos_after[conflict].abs() < 1e-4).all()  # conflicting rows: aux part now orthogonal to main
    # others: untouched (up to float32 cancellation in (g_main + g_aux) - g_main)
    torch.testing.assert_close(aux_part[~conflict], g_aux[~conflict], rtol=1e-4, atol=1e-5 * float(g_main.abs().max()))
    assert stats.projected == pytest.approx(float(conflict.float().mean()))
    assert 0 < int(conflict.sum()) < len(conflict)  # both kinds of rows are present


def test_representation_pcgrad_projects_each_news_vector_on_its_own(data, tiny_bert):
    """PCGrad with two tasks (main, category) on rows, written out here: a row whose two gradients conflict
    becomes (g_m - d/|g_c|^2 g_c) + (g_c - d/|g_m|^2 g_m) with d = g_m.g_c < 0; every other row is g_m + g_c.
    With two tasks the random order cannot matter. Regression: pcgrad used to flatten the whole batch."""
    core = _model(data, tiny_bert, "pcgrad", "representation", sentiment=0.0)
    assert core.sentiment_head is None
    batches = _batches(data, 1)
    wrapper = _Capture(core)
    stats = GradientEngine(wrapper, core, Accelerator(cpu=True), SEED).step(batches)
    news, losses = core(batches[0])
    w = task_weights(core.cfg)
    g_m = torch.autograd.grad(losses["main"], news, retain_graph=True)[0].double()
    g_c = torch.autograd.grad(w["category"] * losses["category"], news)[0].double()
    d = (g_m * g_c).sum(1, keepdim=True)
    conflict = d[:, 0] < 0
    want = g_m + g_c
    fix = (g_m - d / (g_c * g_c).sum(1, keepdim=True) * g_c) + (g_c - d / (g_m * g_m).sum(1, keepdim=True) * g_m)
    want[conflict] = fix[conflict]
    got = wrapper.seen[-1].double()
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * scale)
    assert 0 < int(conflict.sum()) < len(conflict)  # both kinds of rows are present
    assert stats.projected == pytest.approx(float(conflict.double().mean()))
    assert stats.rows == news.shape[0]
    # The flattened projection (one dot product over the whole batch) is a different gradient here.
    flat, _ = surgery.pcgrad([g_m.reshape(-1), g_c.reshape(-1)])
    assert (flat.view_as(got) - want).abs().max() > 1e-2 * scale


@pytest.mark.parametrize("space", ["params", "representation"])
@pytest.mark.parametrize("n_micro", [1, 2])
def test_sum_mode_is_the_gradient_of_the_weighted_total(data, tiny_bert, space, n_micro):
    model = _model(data, tiny_bert, "sum", space)
    batches = _batches(data, n_micro)
    got, stats = _run_engine(model, batches)
    losses, _ = _task_losses(model, batches)
    params = [p for p in model.parameters() if p.requires_grad]
    names = _names(model)
    want = {names[id(p)]: g for p, g in zip(params, _grads(sum(losses.values()), params))}
    _assert_grads(got, want)
    assert math.isnan(stats.cosine)  # sum mode never separates the tasks


def test_lora_params_space_shared_are_adapters_only(data, tiny_bert):
    """With LoRA the shared parameters are the adapters; frozen BERT weights get no gradient at all."""
    model = _model(data, tiny_bert, "project-aux", "params", lora=True)
    batches = _batches(data, 1)
    got, _ = _run_engine(model, batches)
    losses, _ = _task_losses(model, batches)
    shared = model.shared_parameters()
    assert shared and all("lora_" in _names(model)[id(p)] for p in shared)
    per = {t: _flat(_grads(losses[t], shared)) for t in ("main", *AUX)}
    combined, _ = surgery.combine(per["main"], per["category"] + per["sentiment"], "project-aux")
    names = _names(model)
    want = _expected_heads(model, losses)
    want.update({names[id(p)]: g for p, g in zip(shared, _unflat(combined, shared))})
    _assert_grads(got, want)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not (frozen & set(got))
