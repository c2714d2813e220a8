"""Random stack shuffle: cut the index list into stacks at random points, interleave the stacks one
item at a time in a random stack order, repeat.

The public RAMer code ends its stack shuffle with ``sorted(lst, reverse=True)``, which throws the
interleaving away and always returns the reversed list; this one returns the interleaved order.
Vectorised: many independent shuffles of the same length are drawn at once, with no Python loop over
them.
"""

from __future__ import annotations

import torch


def stack_shuffle(
    length: int,
    count: int = 1,
    stacks: int = 3,
    iterations: int = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``count`` independent stack-shuffled permutations of ``range(length)``.

    Returns a long tensor ``[count, length]`` on the CPU; row ``r`` lists the original indices in their
    new order. Each iteration cuts the current order into ``min(stacks, length)`` non-empty stacks at
    uniformly random cut points, puts the stacks in a random order and deals them round-robin.
    """
    if length < 0 or count < 0 or stacks < 1 or iterations < 0:
        raise ValueError(f"stack_shuffle: bad arguments length={length} count={count} stacks={stacks}")
    order = torch.arange(length).expand(count, length).clone()  # [count, L]
    num_stacks = min(stacks, length)
    if num_stacks < 2:
        return order
    positions = torch.arange(length)  # [L]
    for _ in range(iterations):
        # k-1 distinct cut points in 1..L-1: the first k-1 of a random permutation, sorted
        cut_choice = torch.rand(count, length - 1, generator=generator).argsort(dim=1)[:, : num_stacks - 1] + 1
        cuts, _ = cut_choice.sort(dim=1)                                        # [count, k-1]
        stack_id = torch.searchsorted(cuts, positions.expand(count, length).contiguous(), right=True)  # [count, L]
        starts = torch.cat([torch.zeros(count, 1, dtype=torch.long), cuts], dim=1)  # [count, k]
        within = positions - starts.gather(1, stack_id)                          # [count, L] place in its stack
        deal_rank = torch.rand(count, num_stacks, generator=generator).argsort(dim=1)  # [count, k] stack order
        # dealing round-robin = sorting by (place within stack, rank of the stack); empty turns are skipped
        key = within * num_stacks + deal_rank.gather(1, stack_id)
        order = order.gather(1, key.argsort(dim=1))
    return order
