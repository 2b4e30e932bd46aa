"""Gradient surgery on hand-computed vectors: every mode, with and without conflict, and zero vectors."""

from __future__ import annotations

import itertools

import pytest
import torch

from mtnews.train import surgery


def t(*xs) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


# (g_main, g_aux, mode, expected, projected). Worked out by hand:
#   2-D conflict: m=(1,0), a=(-1,1): m.a=-1, |m|^2=1, |a|^2=2
#     aux' = a - (-1/1) m = (0,1);  main' = m - (-1/2) a = (0.5,0.5)
#   3-D conflict: m=(1,2,0), a=(-2,0,1): m.a=-2, |m|^2=5, |a|^2=5
#     aux' = a + 0.4 m = (-1.6,0.8,1);  main' = m + 0.4 a = (0.2,2,0.4)
CASES = [
    # no conflict (m.a >= 0): every mode is the plain sum
    (t(1, 0), t(1, 1), "sum", t(2, 1), False),
    (t(1, 0), t(1, 1), "project-aux", t(2, 1), False),
    (t(1, 0), t(1, 1), "project-both", t(2, 1), False),
    # orthogonal (m.a == 0) is not a conflict
    (t(1, 0), t(0, 3), "project-both", t(1, 3), False),
    # 2-D conflict
    (t(1, 0), t(-1, 1), "sum", t(0, 1), False),
    (t(1, 0), t(-1, 1), "project-aux", t(1, 1), True),
    (t(1, 0), t(-1, 1), "project-both", t(0.5, 1.5), True),
    # 3-D conflict
    (t(1, 2, 0), t(-2, 0, 1), "sum", t(-1, 2, 1), False),
    (t(1, 2, 0), t(-2, 0, 1), "project-aux", t(-0.6, 2.8, 1), True),
    (t(1, 2, 0), t(-2, 0, 1), "project-both", t(-1.4, 2.8, 1.4), True),
    # 3-D no conflict: m.a = 2
    (t(1, 2, 0), t(2, 0, -1), "project-both", t(3, 2, -1), False),
    # zero vectors: nothing to project against, and no NaN from 0/0
    (t(0, 0, 0), t(-2, 0, 1), "project-both", t(-2, 0, 1), False),
    (t(1, 2, 0), t(0, 0, 0), "project-aux", t(1, 2, 0), False),
    (t(0, 0), t(0, 0), "project-both", t(0, 0), False),
]


@pytest.mark.parametrize("g_main,g_aux,mode,expected,projected", CASES)
def test_combine_hand_computed(g_main, g_aux, mode, expected, projected):
    got, did = surgery.combine(g_main, g_aux, mode)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert did is projected


def test_project_aux_never_changes_the_main_component():
    # MTRec's rule: after projection the aux part is orthogonal to g_main, so g_main.result = |g_main|^2.
    m, a = t(1, 2, 0), t(-2, 0, 1)
    got, _ = surgery.combine(m, a, "project-aux")
    assert float(m @ got) == pytest.approx(float(m @ m))
    # project-both's result no longer conflicts with either original gradient
    both, _ = surgery.combine(m, a, "project-both")
    assert float(m @ both) >= 0 and float(a @ both) >= 0


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError):
        surgery.combine(t(1, 0), t(-1, 0), "nope")
    with pytest.raises(ValueError):
        surgery.combine_rows(t(1, 0)[None], t(-1, 0)[None], "nope")


def test_cosine():
    assert surgery.cosine(t(1, 0), t(0, 5)) == 0.0
    assert surgery.cosine(t(1, 1), t(-2, -2)) == pytest.approx(-1.0)
    assert surgery.cosine(t(3, 4), t(4, 3)) == pytest.approx(24 / 25)
    assert surgery.cosine(t(0, 0), t(1, 1)) == 0.0  # zero vector: defined as 0, not NaN


@pytest.mark.parametrize("mode", ["sum", "project-aux", "project-both"])
def test_combine_rows_equals_flat_combine_row_by_row(mode):
    torch.manual_seed(0)
    m = torch.randn(40, 7, dtype=torch.float64)
    a = torch.randn(40, 7, dtype=torch.float64)
    m[3] = 0  # a zero row on either side
    a[5] = 0
    a[6] = -2 * m[6]  # exactly opposite
    got, mask = surgery.combine_rows(m, a, mode)
    for i in range(len(m)):
        want, did = surgery.combine(m[i], a[i], mode)
        torch.testing.assert_close(got[i], want, rtol=0, atol=1e-12)
        assert bool(mask[i]) is did
    if mode != "sum":
        assert 0 < int(mask.sum()) < len(m)  # the random rows cover both conflict and no conflict


def test_pcgrad_two_tasks_hand_computed():
    # With two tasks the order cannot matter; each is projected off the other's original: same as project-both.
    g, did = surgery.pcgrad([t(1, 0), t(-1, 1)], torch.Generator().manual_seed(0))
    torch.testing.assert_close(g, t(0.5, 1.5), rtol=0, atol=1e-12)
    assert did
    g, did = surgery.pcgrad([t(1, 0), t(1, 1)], torch.Generator().manual_seed(0))
    torch.testing.assert_close(g, t(2, 1), rtol=0, atol=1e-12)
    assert not did


def test_pcgrad_three_tasks_hand_computed():
    # g1=(1,0,0), g2=(-1,1,0), g3=(0,1,1): g1.g2=-1 (conflict), g1.g3=0, g2.g3=1.
    #   g1 -> g1 + 1/2 g2 = (0.5,0.5,0); then .g3 = 0.5 >= 0, unchanged (same in either order)
    #   g2 -> g2 + 1 g1   = (0,1,0);     then .g3 = 1 >= 0, unchanged (same in either order)
    #   g3 conflicts with neither        -> (0,1,1)
    grads = [t(1, 0, 0), t(-1, 1, 0), t(0, 1, 1)]
    for seed in range(5):
        g, did = surgery.pcgrad(grads, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(g, t(0.5, 2.5, 1), rtol=0, atol=1e-12)
        assert did
    g, did = surgery.pcgrad([t(1, 0, 0), t(0, 1, 0), t(0, 0, 0)], torch.Generator().manual_seed(0))
    torch.testing.assert_close(g, t(1, 1, 0), rtol=0, atol=1e-12)
    assert not did


def _pcgrad_one(grads, i, order):
    """Yu et al. (2020), one task, a given order of the others: project off each original it conflicts with."""
    g = grads[i].clone()
    for j in order:
        d = g @ grads[j]
        if d < 0:
            g = g - d / (grads[j] @ grads[j]) * grads[j]
    return g


def test_pcgrad_order_dependent_case_matches_one_of_the_brute_force_orders():
    # g1=(1,0,0), g2=(-1,1,0), g3=(-1,0,1): g1 conflicts with both, and the projected g1 depends on the
    # order, e.g. (g2 then g3) -> (0.25,0.5,0.25) but (g3 then g2) -> (0.25,0.25,0.5).
    grads = [t(1, 0, 0), t(-1, 1, 0), t(-1, 0, 1)]
    assert torch.allclose(_pcgrad_one(grads, 0, [1, 2]), t(0.25, 0.5, 0.25))
    assert torch.allclose(_pcgrad_one(grads, 0, [2, 1]), t(0.25, 0.25, 0.5))
    per_task = [[_pcgrad_one(grads, i, [j for j in p if j != i]) for p in itertools.permutations(range(3))]
                for i in range(3)]
    possible = [sum(c) for c in itertools.product(*per_task)]
    seen = set()
    for seed in range(12):
        g, _ = surgery.pcgrad(grads, torch.Generator().manual_seed(seed))
        match = [k for k, p in enumerate(possible) if torch.allclose(g, p, atol=1e-12)]
        assert match, g
        seen.add(tuple(round(x, 9) for x in g.tolist()))
    assert len(seen) > 1  # the order really is random, not fixed
    # ... and reproducible for a given generator seed
    a, _ = surgery.pcgrad(grads, torch.Generator().manual_seed(3))
    b, _ = surgery.pcgrad(grads, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_pcgrad_does_not_modify_its_inputs():
    grads = [t(1, 0), t(-1, 1)]
    surgery.pcgrad(grads, torch.Generator().manual_seed(0))
    assert torch.equal(grads[0], t(1, 0)) and torch.equal(grads[1], t(-1, 1))


def test_pcgrad_rows_two_tasks_hand_computed():
    # Rows of g1 / g2: r0 (1,0) / (-1,1) conflict, r1 (1,0) / (1,1) agree, r2 (0,2) / (3,-1) conflict.
    #   r0: g1.g2=-1, |g1|^2=1, |g2|^2=2: g1' = (1,0) + 1/2 (-1,1) = (0.5,0.5), g2' = (-1,1) + (1,0) = (0,1)
    #   r1: no conflict: (1,0) + (1,1) = (2,1)
    #   r2: g1.g2=-2, |g1|^2=4, |g2|^2=10: g1' = (0,2) + 0.2 (3,-1) = (0.6,1.8), g2' = (3,-1) + 0.5 (0,2) = (3,0)
    g1 = t(1, 0, 1, 0, 0, 2).view(3, 2)
    g2 = t(-1, 1, 1, 1, 3, -1).view(3, 2)
    want = t(0.5, 1.5, 2, 1, 3.6, 1.8).view(3, 2)
    for seed in range(3):
        got, mask = surgery.pcgrad_rows([g1, g2], torch.Generator().manual_seed(seed))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        assert mask.tolist() == [True, False, True]
    # The rows are separate problems: flattening all three (g1.g2 = -2 < 0 overall) would also move r1.
    flat, did = surgery.pcgrad([g1.reshape(-1), g2.reshape(-1)], torch.Generator().manual_seed(0))
    assert did and not torch.allclose(flat.view(3, 2)[1], want[1])
    # ... and the inputs are left alone
    assert torch.equal(g1, t(1, 0, 1, 0, 0, 2).view(3, 2)) and torch.equal(g2, t(-1, 1, 1, 1, 3, -1).view(3, 2))


def _pcgrad_row_brute(grads, orders):
    """One row's PCGrad for given per-task orders: (sum of projected gradients, whether any was projected)."""
    total, projected = 0, False
    for i, order in enumerate(orders):
        g = grads[i].clone()
        for j in order:
            d = g @ grads[j]
            if d < 0:
                g = g - d / (grads[j] @ grads[j]) * grads[j]
                projected = True
        total = total + g
    return total, projected


def test_pcgrad_rows_three_tasks_match_brute_force_per_row():
    """Every row equals Yu et al.'s PCGrad of that row alone, for one random task order shared by the rows."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(30, 3, dtype=torch.float64, generator=gen) for _ in range(3)]
    grads[1][4] = 0  # a zero row: nothing to project against, no NaN
    combos = list(itertools.product(*[[[j for j in p if j != i] for p in itertools.permutations(range(3))]
                                      for i in range(3)]))
    brute = []
    for orders in combos:
        rows = [_pcgrad_row_brute([g[r] for g in grads], orders) for r in range(30)]
        brute.append((torch.stack([v for v, _ in rows]), [did for _, did in rows]))
    seen = set()
    for seed in range(8):
        got, mask = surgery.pcgrad_rows(grads, torch.Generator().manual_seed(seed))
        match = [k for k, (want, did) in enumerate(brute)
                 if torch.allclose(got, want, rtol=0, atol=1e-12) and mask.tolist() == did]
        assert match, seed
        assert 0 < int(mask.sum()) < 30  # both projected and untouched rows
        seen.add(match[0])
    assert len(seen) > 1  # the order is random across calls
