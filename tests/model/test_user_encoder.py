"""The user encoder's element-wise additive attention: padding masks, the empty-history vector, and the
formula itself, checked against a per-dimension softmax written out by hand."""

from __future__ import annotations

import math

import torch

from mtnews.model.user_encoder import AdditiveAttention

D = 6


def _encoder(seed: int = 0) -> AdditiveAttention:
    torch.manual_seed(seed)
    enc = AdditiveAttention(D).double()
    with torch.no_grad():
        # A non-zero query and empty-user vector, so neither a zero query nor a zero default can hide a bug.
        enc.query.normal_(0, 1.0)
        enc.empty_user.normal_(0, 1.0)
    return enc


def _brute_force(enc: AdditiveAttention, clicks: torch.Tensor) -> torch.Tensor:
    """r_u[d] = sum_i softmax_i(q[d] * tanh(W r_i + b)[d]) * r_i[d], one dimension and one slot at a time."""
    W, b, q = enc.proj.weight.detach(), enc.proj.bias.detach(), enc.query.detach()
    n = clicks.shape[0]
    out = torch.zeros(D, dtype=torch.float64)
    for d in range(D):
        logits = [float(q[d]) * math.tanh(float(W[d] @ clicks[i] + b[d])) for i in range(n)]
        m = max(logits)
        exps = [math.exp(x - m) for x in logits]
        z = sum(exps)
        out[d] = sum(exps[i] / z * float(clicks[i, d]) for i in range(n))
    return out


def test_matches_per_dimension_softmax_written_by_hand():
    enc = _encoder()
    torch.manual_seed(1)
    clicks = torch.randn(4, D, dtype=torch.float64)
    user = enc(clicks[None], torch.ones(1, 4, dtype=torch.bool))[0]
    torch.testing.assert_close(user, _brute_force(enc, clicks), rtol=0, atol=1e-12)
    # Element-wise, not one weight per click: a scalar-attention user vector would differ.
    scalar_w = torch.softmax((torch.tanh(enc.proj(clicks)) @ enc.query).detach(), 0)
    assert not torch.allclose(user, (scalar_w[:, None] * clicks).sum(0), atol=1e-6)


def test_padded_slots_do_not_change_the_user_vector():
    enc = _encoder()
    torch.manual_seed(2)
    clicks = torch.randn(3, D, dtype=torch.float64)
    short = enc(clicks[None], torch.ones(1, 3, dtype=torch.bool))
    # Left padding (as histories are stored) with large garbage values in the padded slots.
    garbage = 100 * torch.randn(5, D, dtype=torch.float64)
    padded = torch.cat([garbage, clicks])[None]
    mask = torch.tensor([[False] * 5 + [True] * 3])
    torch.testing.assert_close(enc(padded, mask), short, rtol=0, atol=1e-12)


def test_padded_slots_get_exactly_zero_weight_and_zero_gradient():
    enc = _encoder()
    torch.manual_seed(3)
    hist = torch.randn(2, 5, D, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[False, False, True, True, True], [False, True, False, True, True]])
    enc(hist, mask).sum().backward()
    # A padded slot's vector can only reach the output through its weight; weight 0 means gradient exactly 0.
    assert torch.equal(hist.grad[~mask], torch.zeros_like(hist.grad[~mask]))
    assert (hist.grad[mask].abs().sum(-1) > 0).all()


def test_all_padding_history_gives_the_learned_empty_user_without_nan():
    enc = _encoder()
    torch.manual_seed(4)
    hist = torch.randn(3, 4, D, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[False] * 4, [True, True, False, False], [False] * 4])
    user = enc(hist, mask)
    assert torch.equal(user[0], enc.empty_user.detach())
    assert torch.equal(user[2], enc.empty_user.detach())
    torch.testing.assert_close(user[1], _brute_force(enc, hist[1, :2].detach()), rtol=0, atol=1e-12)
    user.sum().backward()
    for name, p in [("history", hist), *enc.named_parameters()]:
        assert torch.isfinite(p.grad).all(), name
    # The empty-user vector is learned from the users with no history: d(sum)/d(empty_user) = 2 per dim.
    torch.testing.assert_close(enc.empty_user.grad, torch.full((D,), 2.0, dtype=torch.float64))
    # Empty users send no gradient into their (padding) history slots.
    assert torch.equal(hist.grad[0], torch.zeros_like(hist.grad[0]))


def test_float32_padding_invariance_within_1e_6():
    """The same invariance at training precision (float32), to the brief's 1e-6."""
    torch.manual_seed(5)
    enc = AdditiveAttention(32)
    clicks = torch.randn(1, 7, 32)
    full = enc(clicks, torch.ones(1, 7, dtype=torch.bool))
    padded = torch.cat([torch.zeros(1, 23, 32), clicks], 1)
    mask = torch.cat([torch.zeros(1, 23, dtype=torch.bool), torch.ones(1, 7, dtype=torch.bool)], 1)
    torch.testing.assert_close(enc(padded, mask), full, rtol=0, atol=1e-6)


def test_table_lookup_path_equals_forward_with_empty_users():
    """`from_tables` (inference: slot logits looked up per article) = `forward` (training), empty users too."""
    enc = _encoder(3).float()
    torch.manual_seed(3)
    n, d = 12, D
    vectors = torch.randn(n, d)
    vectors[0] = 0.0  # PAD
    logits = enc.slot_logits(vectors).detach()
    logits[0] = float("-inf")
    hist = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0], [0, 0, 0, 0, 11], [7, 7, 7, 2, 9]])
    with torch.no_grad():
        looked_up = enc.from_tables(vectors, logits, hist)
        direct = enc(vectors[hist], hist > 0)
    torch.testing.assert_close(looked_up, direct, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(looked_up[2], enc.empty_user.detach())  # the all-padding row
    assert torch.isfinite(looked_up).all()
