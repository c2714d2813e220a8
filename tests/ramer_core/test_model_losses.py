"""Behaviour of the loss building blocks and the stack shuffle."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ramer_core.losses import orthogonality_loss, reverse_gradient, supervised_contrastive_loss
from ramer_core.shuffle import stack_shuffle


def test_gradient_reversal_flips_sign_and_keeps_values():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    w = torch.tensor([0.5, 4.0, -1.0])
    y = reverse_gradient(x, 0.25)
    assert torch.equal(y, x.detach())
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -0.25 * w)


def test_orthogonality_zero_for_orthogonal_and_exact_otherwise():
    a = torch.tensor([[[1.0, 0, 0, 0], [0, 2.0, 0, 0]]])  # [1, 2, 4] rows in span(e1, e2)
    b = torch.tensor([[[0, 0, 3.0, 0], [0, 0, 1.0, 1.0]]])  # rows in span(e3, e4)
    assert orthogonality_loss(a, b).item() == 0.0
    c = torch.tensor([[[2.0, 0, 0, 0], [1.0, 1.0, 0, 0]]])
    # A C^T = [[2, 1], [0, 2]] -> squared Frobenius norm 9
    assert math.isclose(orthogonality_loss(a, c).item(), 9.0, rel_tol=1e-6)
    # masked samples are left out of the mean
    both = torch.cat([a, a]), torch.cat([b, c])
    assert orthogonality_loss(*both, mask=torch.tensor([True, False])).item() == 0.0


def _hand_supcon(anchors, ids, queue, queue_ids, t):
    everything = list(zip(anchors.tolist(), ids.tolist(), strict=True)) + list(zip(queue.tolist(), queue_ids.tolist(), strict=True))
    losses = []
    for i, (a, label) in enumerate(zip(anchors.tolist(), ids.tolist(), strict=True)):
        logits = [(sum(x * y for x, y in zip(a, k, strict=True)) / t, kid) for j, (k, kid) in enumerate(everything) if j != i]
        lse = math.log(sum(math.exp(s) for s, _ in logits))
        positives = [s for s, kid in logits if kid == label]
        losses.append(lse - sum(positives) / len(positives) if positives else 0.0)
    return sum(losses) / len(losses)


def test_supervised_contrastive_matches_hand_computed_value():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    ids = torch.tensor([0, 1, 0])
    queue = torch.tensor([[0.8, -0.6], [-1.0, 0.0]])
    queue_ids = torch.tensor([1, 2])
    t = 0.5
    # by hand, logits a.k / T of each anchor against the other anchors and the queue:
    # anchor 0 (id 0): 0 (a1), 1.2 (a2, positive), 1.6 (q0), -2 (q1)
    # anchor 1 (id 1): 0 (a0), 1.6 (a2), -1.2 (q0, positive), 0 (q1)
    # anchor 2 (id 0): 1.2 (a0, positive), 1.6 (a1), 0 (q0), -1.2 (q1)
    lse = lambda *xs: math.log(sum(math.exp(x) for x in xs))  # noqa: E731
    terms = [lse(0, 1.2, 1.6, -2) - 1.2, lse(0, 1.6, -1.2, 0) + 1.2, lse(1.2, 1.6, 0, -1.2) - 1.2]
    expected = sum(terms) / 3
    assert math.isclose(expected, 1.76076105, rel_tol=1e-7)
    loss = supervised_contrastive_loss(anchors, ids, queue, queue_ids, temperature=t, chunk=2)
    assert math.isclose(loss.item(), expected, rel_tol=1e-5)
    # an anchor without any positive contributes 0 to the mean
    alone = supervised_contrastive_loss(anchors, torch.tensor([0, 5, 0]), queue, queue_ids, temperature=t)
    assert math.isclose(alone.item(), (terms[0] + terms[2]) / 3, rel_tol=1e-5)


def test_supervised_contrastive_gradient_and_chunking():
    g = torch.Generator().manual_seed(1)
    anchors = F.normalize(torch.randn(9, 4, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    ids = torch.randint(0, 3, (9,), generator=g)
    queue = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=1)
    queue_ids = torch.randint(0, 3, (5,), generator=g)
    assert torch.autograd.gradcheck(lambda a: supervised_contrastive_loss(a, ids, queue, queue_ids, 0.3, chunk=4), (anchors,))
    whole = supervised_contrastive_loss(anchors, ids, queue, queue_ids, 0.3, chunk=100)
    chunked = supervised_contrastive_loss(anchors, ids, queue, queue_ids, 0.3, chunk=2)
    assert torch.allclose(whole, chunked)
    assert math.isclose(whole.item(), _hand_supcon(anchors.detach(), ids, queue, queue_ids, 0.3), rel_tol=1e-9)


def test_stack_shuffle_is_a_seeded_real_shuffle():
    n = 64
    draws = [stack_shuffle(n, 1, stacks=4, iterations=2, generator=torch.Generator().manual_seed(seed))[0]
             for seed in range(100)]
    identity, reversal = torch.arange(n), torch.arange(n - 1, -1, -1)
    for perm in draws:
        assert torch.equal(perm.sort().values, identity)  # a permutation
    trivial = sum(torch.equal(p, identity) or torch.equal(p, reversal) for p in draws)
    assert trivial <= 5
    assert len({tuple(p.tolist()) for p in draws}) >= 95  # seeds give different shuffles
    again = stack_shuffle(n, 1, stacks=4, iterations=2, generator=torch.Generator().manual_seed(7))[0]
    assert torch.equal(again, draws[7])  # reproducible


def _is_two_stack_deal(perm: list[int]) -> bool:
    """True when ``perm`` deals two contiguous stacks 0..k-1 and k..n-1 alternately, each in order."""
    n = len(perm)
    for k in range(1, n):
        low = [x for x in perm if x < k]
        high = [x for x in perm if x >= k]
        pairs = 2 * min(len(low), len(high))
        alternates = all((perm[i] < k) != (perm[i + 1] < k) for i in range(pairs - 1))
        if low == sorted(low) and high == sorted(high) and alternates:
            return True
    return False


def test_stack_shuffle_deals_stacks_round_robin():
    for seed in range(5):
        perm = stack_shuffle(10, 1, stacks=2, iterations=1, generator=torch.Generator().manual_seed(seed))[0].tolist()
        assert _is_two_stack_deal(perm), perm
    assert not _is_two_stack_deal([3, 1, 4, 0, 9, 2, 6, 5, 8, 7])  # the checker rejects a non-deal
    # three modalities: every order comes up, not only the reversal of the public code
    perms = stack_shuffle(3, 300, stacks=3, iterations=2, generator=torch.Generator().manual_seed(0))
    assert len({tuple(p) for p in perms.tolist()}) == 6
