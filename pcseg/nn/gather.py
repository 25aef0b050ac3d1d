"""Neighbour gathers and max pools whose backward pass is cheap on a CPU.

Every network here reads neighbour rows out of a feature matrix, ``features[neighbors]`` with ``neighbors`` an
(M, H) index matrix. Two facts measured on this project's 2-core CPU (15k queries x 30 neighbours x 64 channels,
torch 2.13) decide how:

- Advanced indexing (``x[idx]``) differentiates into ``index_put_(accumulate=True)``, which took 16 ms on one
  thread and 77 ms on two: it serialises, then fights the second thread. ``index_select`` differentiates into
  ``index_add_``: 22 ms on one thread, 12 ms on two. :func:`gather_rows` is the second form; it was the largest
  single reason the training step did not scale with threads.
- A max over neighbours (``amax``) differentiates by comparing the whole (M, H, C) input with the broadcast
  output, counting ties and dividing: several passes over the largest tensor of the layer. A max is a
  selection, so :func:`neighbor_max_pool` finds the winners without autograd and gathers just them with
  autograd: the backward is one ``index_add_`` of M x C values. The forward values are identical; the gradient
  differs from ``amax``'s only on exact ties (``amax`` splits it, we give it to one winner), which is the
  subgradient ``torch.max`` uses too.
"""
from __future__ import annotations

import torch


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for an integer ``index`` of any shape, through ``index_select`` (cheap, threaded backward)."""
    return x.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])


def first_max_slot_(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Index along ``dim`` of the maximum of ``values``, the first one on ties (what ``max(dim).indices``
    gives), found as ``amax`` and then the first slot equal to it (an ``amax`` over reversed slot numbers).
    On a CPU ``max`` with indices ran 7x slower than ``amax`` over the same tensor (2 x 36 x 26 x 15k: 150 vs
    19 ms), ``argmax`` slower still. Overwrites ``values`` (no autograd)."""
    k = values.shape[dim]
    shape = [1] * values.dim()
    shape[dim] = k
    slots = torch.arange(k - 1, -1, -1, dtype=values.dtype, device=values.device).view(shape)
    return (k - 1) - values.eq_(values.amax(dim=dim, keepdim=True)).mul_(slots).amax(dim=dim).long()


def neighbor_max_pool(features: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """Channel-wise max of ``features`` (N, C) over each row of ``neighbors`` (M, H); shadow index N ignored.

    A query whose neighbours are all shadows gets 0.
    """
    n, c = features.shape
    padded = torch.cat([features, features.new_full((1, c), float("-inf"))])  # shadow row never wins
    if not (torch.is_grad_enabled() and features.requires_grad):
        pooled = gather_rows(padded, neighbors).amax(dim=1)  # no backward: the plain reduction is ~10x faster
        return pooled.masked_fill(pooled == float("-inf"), 0.0)
    with torch.no_grad():
        winner = first_max_slot_(gather_rows(padded, neighbors), dim=1)            # (M, C) slot of the max
        source = neighbors.gather(1, winner)                                       # (M, C) row of the max
        empty = source >= n                                                        # all-shadow queries
        source = source.masked_fill(empty, 0)
    # features[source[i, c], c] for every (i, c): one flat gather, differentiable (index_add_ backward).
    flat = (source * c + torch.arange(c, device=features.device)).reshape(-1)
    pooled = features.reshape(-1).index_select(0, flat).view(-1, c)
    return pooled.masked_fill(empty, 0.0)


def ragged_buckets(neighbors: torch.Tensor, n: int, min_rows: int = 4096,
                   min_saving: float = 0.3) -> list[tuple[torch.Tensor, int]] | None:
    """Rows of a distance-sorted neighbour matrix (M, H) (shadow index ``n`` after the real neighbours) grouped
    by their number of real neighbours, for layers that can run group by group: ``[(rows, width), ...]`` where
    every row of a group has at most ``width`` real neighbours. Three groups, cut at the median and the 80th
    percentile of the counts. None when that saves less than ``min_saving`` of the M x H pairs or M <
    ``min_rows``: dense clouds have neighbourhoods near the cap and are best run at once.

    On a 0.1 pts/m2 airborne tile the deep layers keep nearly every point and the counts spread from 1 to the
    cap (layer 3: mean 10, cap 36), so one matrix padded to the widest row moved mostly shadows.
    """
    m, h = neighbors.shape
    if m < min_rows or h < 4:
        return None
    counts, order = torch.sort((neighbors < n).sum(dim=1))
    cuts = sorted({int(counts[m // 2]), int(counts[(4 * m) // 5]), int(counts[-1])})
    groups, start, cost = [], 0, 0
    for width in cuts:
        end = int(torch.searchsorted(counts, torch.tensor(width, dtype=counts.dtype), right=True))
        if end > start:
            groups.append((order[start:end], max(width, 1)))
            cost += (end - start) * max(width, 1)
            start = end
    if cost > (1.0 - min_saving) * m * h:
        return None
    return groups
