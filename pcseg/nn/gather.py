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
- Reductions over neighbours (the max here, SALA's Eq. 8) run slot by slot on blocks of queries
  (:class:`SlotPlan`) rather than on the gathered (M, H, C) tensor, which is far larger than the cache, where
  that pays.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch


def tracing() -> bool:
    """True while torch.compile or torch.export traces the network: data-dependent loops (the slot blocks) are
    then replaced by their whole-tensor forms."""
    return any(getattr(torch.compiler, f, lambda: False)() for f in ("is_compiling", "is_exporting"))


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for an integer ``index`` of any shape, through ``index_select`` (cheap, threaded backward)."""
    return x.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])


SLOT_BLOCK_VALUES = 1 << 19
"""A block of a slot-by-slot reduction (:class:`SlotPlan`) holds about this many values per slot: 2 MB in
float32, a slab that stays in the CPU's cache ..."""
MIN_SLOT_BLOCK = 256
"""... and at least this many queries, since each block and slot costs a few torch calls from Python."""
CALL_SECONDS = {"passive": 47e-6, "active": 13e-6}
"""What one torch call of the slot loop costs beyond its arithmetic with several threads: waking the thread pool.
Measured on this project's CPU (2 threads, sala-als and sala-s3dis, 4 calls per SALA step): with
OMP_WAIT_POLICY=PASSIVE (sleeping threads) ~190 us per step, else ~50 us (the threads spin a while)."""
WHOLE_VALUE_SECONDS = 1.5e-9
"""What one value of the whole (M, H, C) tensor costs the whole-tensor way on 2 threads (1.3-1.6 ns measured on
layers of 71-498 queries x 31-49 neighbours x 288-576 values)."""


def block_rows(channels: int) -> int:
    """Queries per block of a slot-by-slot reduction over ``channels`` values per query."""
    return max(MIN_SLOT_BLOCK, SLOT_BLOCK_VALUES // max(1, channels))


@dataclass
class SlotPlan:
    """How to run a reduction over the real neighbours of every query neighbour slot by neighbour slot, instead of
    on the whole gathered (M, H, channels) tensor (:func:`slot_plan`).

    The queries are sorted by their number of real neighbours, largest first (``counts``, ``order``; ``active``
    of them have one at least), and cut into blocks of :func:`block_rows`. In a block, slot j runs for the
    queries with more than j real neighbours: a prefix, so no shadow is ever touched. Each step holds one
    (block, channels) slab that stays in cache, where the whole tensor is far larger than the cache; and on a
    sparse cloud (a few real neighbours among H) the padding is skipped.
    """

    counts: torch.Tensor
    order: torch.Tensor
    active: int
    block: int
    width: int  # H

    @property
    def steps(self) -> int:
        """(block, slot) steps of the loop: the largest count of every block, summed."""
        return int(self.counts[:self.active:self.block].sum())

    def pays(self, channels: int, calls: int = 4) -> bool:
        """Whether the slot loop (``calls`` torch calls per step) beats the whole-tensor way. On one thread it
        always did here. With more threads each call wakes the pool (:data:`CALL_SECONDS`): the loop is taken
        when that overhead stays under half the whole way's cost (:data:`WHOLE_VALUE_SECONDS` per value). Small
        deep layers (a few hundred queries) then run whole; wide or sparse ones by slots. sala-als, 2 threads,
        OMP_WAIT_POLICY=PASSIVE: a layer of 71 x 46 x 576 took 3.0 ms whole, 8.6 ms by slots; one of 5,832 x 34
        x 72, 35 ms whole, 20 ms by slots."""
        if self.counts.device.type != "cpu":
            # On a GPU every call is a kernel launch and every block a host sync (the slot ends): the whole
            # tensor, a few large kernels in device memory, is the way there.
            return False
        if torch.get_num_threads() <= 1:
            return True
        policy = "passive" if os.environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive" else "active"
        overhead = self.steps * calls * CALL_SECONDS[policy]
        return overhead <= 0.5 * WHOLE_VALUE_SECONDS * len(self.counts) * self.width * channels

    def output(self, like: torch.Tensor, columns: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A (M, ``columns``) output for the loop, on ``like``'s device (and dtype unless given): the rows of
        queries without a real neighbour are 0, the others are left for the blocks to write (zeroing the whole
        output first was a pass over up to 61 MB per layer on the sparse airborne tile)."""
        out = like.new_empty((len(self.counts), columns), dtype=dtype)
        idle = self.order[self.active:]
        if len(idle):
            out.index_fill_(0, idle, 0)
        return out

    def blocks(self, neighbors: torch.Tensor):
        """Yields ``(rows, block_neighbors, ends)``: the block's query rows, their neighbour rows, and for every
        slot j how many of the block's queries have more than j real neighbours. Queries without any real
        neighbour are in no block."""
        for start in range(0, self.active, self.block):
            rows = self.order[start:min(start + self.block, self.active)]
            block_counts = self.counts[start:start + len(rows)]
            slots = torch.arange(int(block_counts[0]), device=neighbors.device)
            ends = (block_counts[None, :] > slots[:, None]).sum(dim=1).tolist()
            yield rows, neighbors.index_select(0, rows), ends


def slot_plan(neighbors: torch.Tensor, n: int, channels: int) -> SlotPlan:
    """The :class:`SlotPlan` of ``neighbors`` (M, H) (shadow index ``n``, real entries first: :func:`reals_first`)
    for a reduction over ``channels`` values per query."""
    counts, order = torch.sort((neighbors < n).sum(dim=1), descending=True, stable=True)
    return SlotPlan(counts, order, int((counts > 0).sum()), block_rows(channels), int(neighbors.shape[1]))


def first_max_slot_(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Index along ``dim`` of the maximum of ``values``, the first one on ties (what ``max(dim).indices``
    gives), found as ``amax`` and then the first slot equal to it (an ``amax`` over reversed slot numbers).
    On a CPU ``max`` with indices ran 7x slower than ``amax`` over the same tensor (2 x 36 x 26 x 15k: 150 vs
    19 ms), ``argmax`` slower still. Overwrites ``values`` (no autograd). The whole-tensor way, for when a
    :class:`SlotPlan` does not pay."""
    k = values.shape[dim]
    shape = [1] * values.dim()
    shape[dim] = k
    slots = torch.arange(k - 1, -1, -1, dtype=values.dtype, device=values.device).view(shape)
    return (k - 1) - values.eq_(values.amax(dim=dim, keepdim=True)).mul_(slots).amax(dim=dim).long()


def slot_max(features: torch.Tensor, neighbors: torch.Tensor, want_winner: bool = False):
    """Channel-wise max of ``features`` (N, C) over the real neighbours of each row of ``neighbors`` (M, H)
    (shadow index N, real entries first), without autograd: ((M, C) maxima, 0 for a query without real
    neighbours; (M, C) neighbour slot of every maximum, the first on ties as ``max(dim).indices`` gives it, or
    None). Slot by slot (:class:`SlotPlan`) where that pays, else on the whole gathered tensor."""
    n, c = features.shape
    m, h = neighbors.shape
    with torch.no_grad():
        plan = slot_plan(neighbors, n, c)
        if not plan.pays(c, calls=5 if want_winner else 2):
            return _whole_max(features, neighbors, want_winner)
        slot_type = torch.uint8 if h <= 256 else torch.int64
        pooled = plan.output(features, c)
        winner = plan.output(features, c, slot_type) if want_winner else None
        for rows, nbs, ends in plan.blocks(neighbors):
            acc = features.index_select(0, nbs[:, 0])
            won = torch.zeros(acc.shape, dtype=slot_type, device=features.device) if want_winner else None
            for j in range(1, len(ends)):  # loop over neighbour slots, not points
                e = ends[j]
                y = features.index_select(0, nbs[:e, j])
                if want_winner:
                    mark_winners_(won[:e], y, acc[:e], j)
                torch.maximum(acc[:e], y, out=acc[:e])
            pooled.index_copy_(0, rows, acc)
            if want_winner:
                winner.index_copy_(0, rows, won)
    return pooled, winner


def _whole_max(features: torch.Tensor, neighbors: torch.Tensor, want_winner: bool = False):
    """:func:`slot_max` on the whole gathered (M, H, C) tensor: a few large calls, no data-dependent loop."""
    c = features.shape[1]
    padded = torch.cat([features, features.new_full((1, c), float("-inf"))])  # shadow row never wins
    gathered = gather_rows(padded, neighbors)                                 # (M, H, C)
    pooled = gathered.amax(dim=1)
    winner = first_max_slot_(gathered, dim=1) if want_winner else None
    return pooled.masked_fill(pooled == float("-inf"), 0.0), winner


def mark_winners_(won: torch.Tensor, y: torch.Tensor, acc: torch.Tensor, slot: int) -> None:
    """Record ``slot`` in ``won`` where ``y`` beats the running maximum ``acc`` (strictly: the first slot keeps
    ties). Slots are visited in increasing order, so the winner is max(won, slot * [y > acc]); on a CPU that is
    about 50x faster than ``masked_fill_`` with the boolean mask (0.04 vs 2.5 ms on 15k x 36 uint8)."""
    torch.maximum(won, (y > acc).to(won.dtype).mul_(slot), out=won)


def neighbor_max_pool(features: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """Channel-wise max of ``features`` (N, C) over each row of ``neighbors`` (M, H); shadow index N ignored.

    A query whose neighbours are all shadows gets 0.
    """
    n, c = features.shape
    if tracing():  # torch.export: no data-dependent loop
        return _whole_max(features, neighbors)[0]
    neighbors = reals_first(neighbors, n)
    training = torch.is_grad_enabled() and features.requires_grad
    pooled, winner = slot_max(features.detach(), neighbors, want_winner=training)
    if not training:
        return pooled
    source = neighbors.gather(1, winner.long())                                    # (M, C) row of the max
    empty = source >= n                                                            # all-shadow queries
    source = source.masked_fill(empty, 0)
    # features[source[i, c], c] for every (i, c): one flat gather, differentiable (index_add_ backward).
    flat = (source * c + torch.arange(c, device=features.device)).reshape(-1)
    pooled = features.reshape(-1).index_select(0, flat).view(-1, c)
    return pooled.masked_fill(empty, 0.0)


def reals_first(neighbors: torch.Tensor, n: int) -> torch.Tensor:
    """``neighbors`` (M, H) with the real entries of every row (index < ``n``) before its shadows (index ``n``),
    in their order. The radius searches here already return rows that way (distance-sorted, shadows last); then
    the matrix is returned as it is."""
    valid = neighbors < n
    if neighbors.shape[1] < 2 or not (valid[:, 1:] & ~valid[:, :-1]).any():
        return neighbors
    order = torch.sort((~valid).to(torch.int8), dim=1, stable=True).indices
    return neighbors.gather(1, order)
