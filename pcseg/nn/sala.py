"""SALA: Soft Assignment Local Aggregation (Itani et al., 3DV 2021, §3.2, Eq. 4-9).

For a query point ``p_i`` and its neighbours ``j in N(i)``:

    r_j      = MLP_p(p_j - p_i)                              (4)  lifted relative position
    h(r_j)   = Softmax(MLP_sa(r_j))          in R^S          (5)  soft assignment to S groups
    W_{j,g}  = h(r_j, g) W_g                                 (6)
    f*_j     = concat(r_j, f_j)                              (7)
    f'_{i,g} = MAX_j (W_{j,g} f*_j)                          (8)
    f'_i     = sum_g f'_{i,g}                                (9)

The options reproduce the ablations of Table 3: ``reduction="sum"`` replaces the MAX of Eq. 8 by a SUM (the
variant of Eq. 10), ``assignment="hard"`` thresholds h at 0.5, ``assignment="none"`` sets every h to one and
``pos_encoding=False`` uses f*_j = f_j instead of Eq. 7 (h is still regressed from r_j).

Implementation notes
- Eq. 7 is a concatenation followed by the linear map W_g, so W_g f*_j = W_g^r r_j + W_g^f f_j. The feature
  part W_g^f f_j does not depend on the centre i: it is computed once per support point and gathered, instead of
  once per (i, j) pair. The result is identical (checked against a direct loop in tests/test_sala.py); the
  multiply-accumulates of that part drop by the neighbourhood size.
- The paper does not give the width of r_j ("lifted relative position") nor the depth of MLP_p / MLP_sa. Here
  MLP_p is one dense layer 3 -> ``pos_channels`` (default 8) with ReLU and MLP_sa one dense layer
  ``pos_channels`` -> S; with these choices SALANet lands on the paper's parameter counts (1.6 M at C = 36,
  0.41 M at C = 18, 6.4 M at C = 72). W_g has no bias: the network follows the layer with batch norm.
- The layer takes coordinates as given. SALANet passes coordinates divided by the neighbourhood radius so that
  MLP_p sees relative positions in units of the radius, as the unified framework of Liu et al. 2020 does.
- Inference and the search for the MAX winners in training run slot by slot (``_slot_reduce``): the queries are
  sorted by their number of real neighbours and run in cache-sized blocks; for neighbour slot j, the (block,
  S*C) slab of W_{j,g} f*_j is computed for the queries that have a j-th real neighbour and folded into a
  running MAX (or SUM). The whole (S*C, H*M) tensor is never built and no shadow pair is computed. Every
  number is the same product, softmax and maximum as in Eq. 4-9; only the order of evaluation changes. With
  several threads, small layers whose many small calls would cost more (:meth:`pcseg.nn.gather.SlotPlan.pays`)
  take the whole tensor instead.
- Training recomputes only the winning terms with autograd (``_max_with_selected_gradient``); there, and in the
  path used while torch.export traces the network (``_aggregate``), per-pair quantities are stored channels
  first, as (channels, H*M) with the neighbour index outermost: with 3, ``pos_channels`` or S = 2 values per
  pair in the last dimension, torch's softmax and narrow dense layers ran 3-10x slower on CPU than along the
  long H*M dimension.
- Shadow neighbours (index == number of support points) take part in nothing: they are excluded from the MAX
  and contribute zero to the SUM. A query without any real neighbour gets a zero feature.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import UsageError
from .gather import SlotPlan, first_max_slot_, mark_winners_, reals_first, slot_plan, tracing

REDUCTIONS = ("max", "sum")
ASSIGNMENTS = ("soft", "hard", "none")


class SALA(nn.Module):
    """Soft Assignment Local Aggregation with S = ``groups`` learnable, non-spatial groups.

    forward(query_points (M,3), support_points (N,3), neighbors (M,H) int64 with shadow index N,
    features (N, in_channels)) -> (M, out_channels).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int = 2,
        reduction: str = "max",
        assignment: str = "soft",
        pos_encoding: bool = True,
        pos_channels: int = 8,
    ):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise UsageError(f"SALA reduction must be one of {', '.join(REDUCTIONS)}, not {reduction!r}")
        if assignment not in ASSIGNMENTS:
            raise UsageError(f"SALA assignment must be one of {', '.join(ASSIGNMENTS)}, not {assignment!r}")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups),
                            ("pos_channels", pos_channels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"SALA {name} must be a positive integer, not {value!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.groups = int(groups)
        self.reduction = reduction
        self.assignment = assignment
        self.pos_encoding = bool(pos_encoding)
        self.pos_channels = int(pos_channels)

        # MLP_p (Eq. 4) is needed whenever r_j is used: by the assignment (Eq. 5) or in f*_j (Eq. 7).
        self.uses_r = self.assignment != "none" or self.pos_encoding
        self.mlp_p = nn.Sequential(nn.Linear(3, self.pos_channels), nn.ReLU(inplace=True)) if self.uses_r else None
        # MLP_sa (Eq. 5); with "none" every h(r_j, g) is one and there is nothing to regress.
        self.mlp_sa = nn.Linear(self.pos_channels, self.groups) if self.assignment != "none" else None
        # Group kernel weights {W_g} (Eq. 6), split along the input of Eq. 7: W_g = [W_g^r | W_g^f].
        fan_in = self.in_channels + (self.pos_channels if self.pos_encoding else 0)
        std = math.sqrt(2.0 / fan_in)  # He initialisation on the full f*_j
        self.weight_f = nn.Parameter(torch.randn(self.in_channels, self.groups * self.out_channels) * std)
        self.weight_r = (nn.Parameter(torch.randn(self.pos_channels, self.groups * self.out_channels) * std)
                         if self.pos_encoding else None)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, groups={self.groups}, reduction={self.reduction!r}, "
                f"assignment={self.assignment!r}, pos_encoding={self.pos_encoding}, "
                f"pos_channels={self.pos_channels}")

    def group_weight(self, g: int) -> torch.Tensor:
        """W_g as one (out, pos + in) matrix acting on f*_j = concat(r_j, f_j) (Eq. 7), or (out, in) without r."""
        cols = slice(g * self.out_channels, (g + 1) * self.out_channels)
        parts = ([self.weight_r[:, cols]] if self.pos_encoding else []) + [self.weight_f[:, cols]]
        return torch.cat(parts, dim=0).t()

    def assign(self, r: torch.Tensor) -> torch.Tensor:
        """h(r_j) for every neighbour: (..., S) group membership (Eq. 5 and the Table 3 variants)."""
        h = self._assign_columns(r.reshape(-1, r.shape[-1]).t())
        return h.t().reshape(r.shape[:-1] + (self.groups,))

    def _assign_columns(self, r: torch.Tensor, weights: dict | None = None) -> torch.Tensor:
        """(S, P) memberships of the (pos, P) columns ``r``: :meth:`assign` in the forward's layout. ``weights``:
        MLP_sa's weight and bias already cast (:meth:`_slot_weights`), else the module's own."""
        if self.assignment == "none":
            return r.new_ones((self.groups, r.shape[1]))
        w, b = (weights["sa_weight"], weights["sa_bias"]) if weights else (self.mlp_sa.weight, self.mlp_sa.bias)
        # MLP_sa as W r + b on columns, then the softmax over the S logits of each column (dim 0): the same
        # numbers as softmax(MLP_sa(r_j)) row by row, in a layout where the reduction over S is fast. The softmax
        # runs in float32 at least (what autocast does for bfloat16).
        logits = torch.addmm(b[:, None], w, r)
        h = torch.softmax(logits, dim=0, dtype=torch.promote_types(logits.dtype, torch.float32))  # (5)
        if self.assignment == "hard":
            # Table 3 "hard assignment": scores binarised at 0.5, as the paper states (no straight-through
            # estimator, so MLP_sa receives no gradient in this ablation).
            h = (h > 0.5).to(h.dtype)
        return h

    def _pair_positions(self, query_points: torch.Tensor, support_points: torch.Tensor, flat: torch.Tensor,
                        k: int, m: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """r_j (4) and h(r_j) (5) of every (neighbour, query) pair, channels first: (pos, H*M) and (S, H*M) for
        the neighbour-major pair columns ``flat`` of H = ``k`` slots and M = ``m`` queries (j*M + i, shadows
        included: they get finite values)."""
        if not self.uses_r:
            return None, None
        padded = torch.cat([support_points.t(), support_points.new_zeros((3, 1))], dim=1)  # finite shadow
        rel = (padded.index_select(1, flat).view(3, k, m) - query_points.t()[:, None, :]).view(3, k * m)
        dense = self.mlp_p[0]
        r = torch.addmm(dense.bias[:, None], dense.weight, rel).relu_()  # (4): MLP_p on columns
        return r, (self._assign_columns(r) if self.assignment != "none" else None)

    def forward(self, query_points: torch.Tensor, support_points: torch.Tensor, neighbors: torch.Tensor,
                features: torch.Tensor) -> torch.Tensor:
        n = support_points.shape[0]
        if features.shape != (n, self.in_channels):
            raise ValueError(f"SALA expects features of shape ({n}, {self.in_channels}), got {tuple(features.shape)}")
        if n == 0 or neighbors.shape[1] == 0:
            return features.new_zeros((neighbors.shape[0], self.out_channels))
        # (not while torch.export traces the network: the slot loop depends on the data)
        if tracing() or (torch.is_grad_enabled() and self.reduction == "sum"):
            # W_g^f f_j for every support point and all groups at once, channels first.
            return self._aggregate(query_points, support_points, neighbors, self.weight_f.t() @ features.t())
        neighbors = reals_first(neighbors, n)
        plan = slot_plan(neighbors, n, self.groups * self.out_channels)
        if torch.is_grad_enabled():
            wf = features @ self.weight_f  # (N, S*C): W_g^f f_j of every support point, once (see the notes)
            return self._max_with_selected_gradient(query_points, support_points, neighbors, wf, plan)
        if not plan.pays(self.groups * self.out_channels):
            return self._aggregate(query_points, support_points, neighbors, self.weight_f.t() @ features.t())
        per_group, _ = self._slot_reduce(query_points, support_points, neighbors, features @ self.weight_f, plan)
        return per_group.view(-1, self.groups, self.out_channels).sum(dim=1)  # (8), (9)

    def _slot_weights(self, dtype: torch.dtype) -> dict:
        """The small weights the slot loop applies per pair, cast once to ``dtype`` (under bfloat16 autocast
        each call would cast them again, for every slot of every block)."""
        out = {}
        if self.uses_r:
            dense = self.mlp_p[0]
            out.update(p_weight_t=dense.weight.t().to(dtype), p_bias=dense.bias.to(dtype))
        if self.assignment != "none":
            out.update(sa_weight=self.mlp_sa.weight.to(dtype), sa_bias=self.mlp_sa.bias.to(dtype))
        if self.pos_encoding:
            out.update(r_weight=self.weight_r.to(dtype))
        return out

    def _block_positions(self, queries: torch.Tensor, padded_support: torch.Tensor, columns: torch.Tensor,
                         dtype: torch.dtype, weights: dict) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """r_j (4) and h(r_j) (5) for every (slot, query) pair of a block at once: ``columns`` (W, B) support
        rows (shadow rows of ``padded_support`` where a query has fewer neighbours; their values are never
        read). Returns (W, B, pos) and (W, B, S), slot-major, so that slot j's prefix is one contiguous slice;
        the few calls for the whole block replace several per slot. Relative positions are differences of large
        numbers, taken before any cast to ``dtype`` (bfloat16 keeps 8 bits)."""
        if not self.uses_r:
            return None, None
        w, b = columns.shape
        rel = (padded_support.index_select(0, columns.reshape(-1)).view(w, b, 3) - queries[None]).to(dtype)
        r = torch.addmm(weights["p_bias"], rel.view(-1, 3), weights["p_weight_t"]).relu_()  # (4)
        h = None
        if self.assignment != "none":
            h = self._assign_columns(r.t(), weights).t().to(dtype).contiguous().view(w, b, self.groups)  # (5)
        return r.view(w, b, -1), h

    def _slot_terms(self, wf: torch.Tensor, column: torch.Tensor, r: torch.Tensor | None, h: torch.Tensor | None,
                    weights: dict) -> torch.Tensor:
        """W_{j,g} f*_j = h(r_j, g) (W_g^f f_j + W_g^r r_j) (Eq. 6-7) for E pairs of one slot: support rows
        ``column`` (E,), their r_j (E, pos) and h(r_j) (E, S). Returns (E, S*C), a fresh tensor."""
        y = wf.index_select(0, column)  # W_g^f f_j
        if self.pos_encoding:
            torch.addmm(y, r, weights["r_weight"], out=y)  # + W_g^r r_j (7)
        if h is not None:
            e = len(column)
            y.view(e, self.groups, self.out_channels).mul_(h[:, :, None])  # (6)
        return y

    def _slot_reduce(self, query_points: torch.Tensor, support_points: torch.Tensor, neighbors: torch.Tensor,
                     wf: torch.Tensor, plan: SlotPlan,
                     want_winner: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The reduction of Eq. 8 (MAX, or SUM for Eq. 10) per query and group, (M, S*C), zero for a query
        without real neighbours; with ``want_winner`` (MAX only) also the neighbour slot of every maximum,
        (M, S*C) (uint8 up to 256 slots), the first on ties, as ``max(dim).indices`` gives it.

        ``neighbors`` (M, H) must hold its real neighbours before its shadows (:func:`reals_first`). The queries
        are sorted by their number of real neighbours, largest first, and run in blocks; inside a block, slot j
        is run for the prefix of queries that have more than j real neighbours. So no shadow pair is ever
        computed, and each step holds one (block, S*C) slab that stays in the CPU's cache, instead of the whole
        (S*C, H*M) tensor: on this project's CPU (2 threads, benchmarks/bench_slot_reduce.py), sala-als ran its
        10 SALA layers of a 32k-point region of the sparse 0.1 pts/m2 tile in 0.40 s instead of 2.12 s, and of
        the dense example in 85 ms instead of 190 ms.
        """
        device = wf.device.type
        if torch.is_autocast_enabled(device):
            # One dtype for the whole loop, the weights cast once: wf is already in autocast's dtype (its product
            # ran under autocast); coordinates are cast after their differences (_block_positions).
            with torch.autocast(device, enabled=False):
                return self._slot_reduce(query_points, support_points, neighbors, wf, plan, want_winner)
        weights = self._slot_weights(wf.dtype)
        sc = self.groups * self.out_channels
        use_max = self.reduction == "max"
        slot_type = torch.uint8 if neighbors.shape[1] <= 256 else torch.int64
        out = plan.output(wf, sc)
        winner = plan.output(wf, sc, slot_type) if want_winner else None
        padded = torch.cat([support_points, support_points.new_zeros((1, 3))])  # finite shadow row
        for rows, nbs, ends in plan.blocks(neighbors):
            queries = query_points.index_select(0, rows)
            r, h = self._block_positions(queries, padded, nbs[:, :len(ends)].t(), wf.dtype, weights)
            # slot 0: every query of the block has it
            acc = self._slot_terms(wf, nbs[:, 0], None if r is None else r[0], None if h is None else h[0], weights)
            won = torch.zeros(acc.shape, dtype=slot_type, device=wf.device) if want_winner else None
            for j in range(1, len(ends)):  # loop over neighbour slots, not points
                e = ends[j]
                y = self._slot_terms(wf, nbs[:e, j], None if r is None else r[j, :e],
                                     None if h is None else h[j, :e], weights)
                if not use_max:
                    acc[:e] += y  # (10)
                    continue
                if want_winner:
                    mark_winners_(won[:e], y, acc[:e], j)
                torch.maximum(acc[:e], y, out=acc[:e])  # (8)
            out.index_copy_(0, rows, acc)
            if want_winner:
                winner.index_copy_(0, rows, won)
        return out, winner

    def _aggregate(self, query_points: torch.Tensor, support_points: torch.Tensor, neighbors: torch.Tensor,
                   wf: torch.Tensor) -> torch.Tensor:
        """Eq. 4-9 for the queries of ``neighbors`` (M, H), given ``wf`` = W_g^f f_j of every support point."""
        m, k = neighbors.shape
        n = support_points.shape[0]
        s, c = self.groups, self.out_channels
        # Channels first (see the notes above): columns are the H*M (neighbour, query) pairs, neighbour-major so
        # that the MAX of Eq. 8 reduces over a leading dimension.
        flat = neighbors.t().reshape(-1)
        valid = (flat < n)[None]  # (1, H*M); shadow neighbours are False
        use_max = self.reduction == "max"
        r, h = self._pair_positions(query_points, support_points, flat, k, m)  # (4), (5): (pos, H*M), (S, H*M)
        # The shadow column is -inf for MAX (it can never win, whatever is added to it) and 0 for SUM (weighted
        # by 0 below).
        wf = torch.cat([wf, wf.new_full((s * c, 1), float("-inf") if use_max else 0.0)], dim=1)
        # (S*C, H*M). gather with a broadcast index, not index_select(1, .): the same values, but on CPU the
        # column index_select does not use a second thread (27 vs 18 ms on 2 threads for 36 x 390k).
        y = wf.gather(1, flat[None].expand(s * c, -1)) if not torch.is_grad_enabled() else wf.index_select(1, flat)
        if self.pos_encoding:
            # + W_g^r r_j: together W_g f*_j with f*_j = concat(r_j, f_j) (7). Without autograd the sum is
            # written into y: on CPU a fresh (S*C, H*M) tensor costs more than the product itself.
            # (Under autocast the out= form is not cast, so the product takes the autocast path.)
            in_place = not torch.is_grad_enabled() and not torch.is_autocast_enabled(y.device.type)
            out = y if in_place else None
            y = torch.addmm(y, self.weight_r.t(), r, out=out)
        y = y.view(s, c, k, m)

        if use_max:
            # W_{j,g} f*_j = h(r_j, g) W_g f*_j (6); shadows are scaled by 1 so that they stay -inf.
            scale = None if h is None else h.masked_fill(~valid, 1.0)
        else:
            # R = SUM: f'_i = sum_j sum_g h(r_j, g) W_g f*_j (Eq. 10), shadows weighted by 0.
            scale = valid.to(y.dtype) if h is None else h * valid
        if scale is not None:
            y = y.mul_(scale.view(-1, 1, k, m))  # in place: autograd keeps what it needs
        if use_max:
            per_group = y.amax(dim=2)  # (8): (S, C, M), -inf where a query has no real neighbour
            per_group = per_group.masked_fill(~valid.view(k, m).any(dim=0), 0.0)
        else:
            per_group = y.sum(dim=2)
        return per_group.sum(dim=0).t().contiguous()  # (9)

    def _max_with_selected_gradient(self, query_points, support_points, neighbors, wf, plan):
        """Eq. 4-9 with MAX, for training: the same values as the inference path, a cheap backward.

        The MAX of Eq. 8 selects one neighbour per (group, channel, query). The winners are found without
        autograd, slot by slot (:meth:`_slot_reduce`) where the ``plan`` pays, else on the whole (H*M, S*C)
        tensor; then only the S*C*M winning terms h(r_j, g) (W_g^f f_j + W_g^r r_j) are recomputed with autograd,
        from gathered f_j and r_j. Autograd on the full tensor (the amax backward compares the whole tensor with
        the output, the in-place scaling copies it) took 60-70% of a SALANet training step; the backward of the
        selected terms is a few gathers of S*C*M values. ``neighbors`` holds its real neighbours first; ``wf`` is
        (N, S*C) W_g^f f_j with autograd.
        """
        m, k = neighbors.shape
        n = support_points.shape[0]
        s, c = self.groups, self.out_channels
        sc = s * c
        flat = neighbors.t().reshape(-1)  # pair columns j*M + i, neighbour-major as in _aggregate
        # r_j (4) and h(r_j) (5) with autograd on every pair (pos and S values per pair: cheap)
        r, h = self._pair_positions(query_points, support_points, flat, k, m)
        with torch.no_grad():
            if plan.pays(sc, calls=7):  # with the winners' bookkeeping
                _, winner = self._slot_reduce(query_points, support_points, neighbors, wf.detach(), plan,
                                              want_winner=True)
            else:  # small layers on several threads: a few calls on the whole tensor beat many small ones
                wfd = wf.detach()
                y = torch.cat([wfd, wfd.new_full((1, sc), float("-inf"))]).index_select(0, flat)  # (H*M, S*C)
                if self.pos_encoding:
                    y.addmm_(r.detach().t().to(y.dtype), self.weight_r.to(y.dtype))
                if h is not None:  # shadows scaled by 1 so that they stay -inf
                    y.view(k * m, s, c).mul_(h.detach().masked_fill(~(flat < n)[None], 1.0).t()[:, :, None])
                winner = first_max_slot_(y.view(k, m, sc), dim=0)  # (M, S*C)
                del y
            column = (winner.t().long() * m + torch.arange(m, device=wf.device)).contiguous()  # (S*C, M) pairs
            source = flat.index_select(0, column.view(-1)).view(sc, m)  # support index of each winner
            empty = source >= n  # every neighbour of the query is a shadow: the feature is zero
            source = source.masked_fill(empty, 0)
            column = column.view(-1)
        rows = torch.arange(sc, device=wf.device)[:, None]
        # W_g^f f_j at the winners: one flat gather from the (N, S*C) rows.
        term = wf.reshape(-1).index_select(0, (source * sc + rows).view(-1)).view(sc, m)
        if self.pos_encoding:
            # W_g^r r_j at the winners: r_j gathered per winner, dotted with the (g, c) column of W_g^r.
            r_win = r.index_select(1, column).view(-1, sc, m)  # (pos, S*C, M)
            term = term + (r_win * self.weight_r[:, :, None]).sum(dim=0)
        if h is not None:
            groups = (rows // c).expand(-1, m).reshape(-1)
            term = term * h.reshape(-1).index_select(0, groups * (k * m) + column).view(sc, m)  # (6)
        per_group = term.masked_fill(empty, 0.0).view(s, c, m)  # (8)
        return per_group.sum(dim=0).t().contiguous()  # (9)
