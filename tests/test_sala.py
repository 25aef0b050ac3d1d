"""SALA layer (SALA paper §3.2, Eq. 4-9): vectorised layer vs a direct loop over the equations."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pcseg.errors import UsageError
from pcseg.geometry import grid_subsample, radius_neighbors
from pcseg.models import count_macs
from pcseg.nn import SALA
from pcseg.nn.gather import reals_first


def fragment(shared_data):
    """The real 100-point S3DIS fragment: xyz (float64) and rgb/255 features."""
    pts = np.fromfile(shared_data / "indoor" / "s3dis_fragment" / "Area_1_office_2_points.bin",
                      dtype=np.float32).reshape(-1, 6).astype(np.float64)
    return pts[:, :3], pts[:, 3:] / 255.0


def real_inputs(shared_data, strided: bool, radius: float = 1.0, limit: int = 12):
    """Queries, supports, neighbours (with shadows) and features on the real fragment, in float64."""
    xyz, rgb = fragment(shared_data)
    queries = grid_subsample(xyz, 1.0).points if strided else xyz[::2]
    nbs = radius_neighbors(queries, xyz, radius, limit)
    assert (nbs == len(xyz)).any(), "the test needs shadow neighbours"
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    return t(queries), t(xyz), torch.as_tensor(nbs), t(rgb)


def direct_sala(layer: SALA, q, s, nbs, f) -> torch.Tensor:
    """Eq. 4-9 written out point by point and group by group, with the concatenation of Eq. 7."""
    n = len(s)
    weights = [layer.group_weight(g) for g in range(layer.groups)]  # W_g acting on f*_j
    out = torch.zeros(len(q), layer.out_channels, dtype=f.dtype)
    for i in range(len(q)):
        encoded = [[] for _ in range(layer.groups)]
        for j in (int(j) for j in nbs[i] if j < n):
            r_j = layer.mlp_p(s[j] - q[i]) if layer.mlp_p is not None else None  # (4)
            if layer.assignment == "none":
                h_j = torch.ones(layer.groups, dtype=f.dtype)
            else:
                h_j = torch.softmax(layer.mlp_sa(r_j), dim=0)  # (5)
                if layer.assignment == "hard":
                    h_j = (h_j > 0.5).to(f.dtype)
            f_star = torch.cat([r_j, f[j]]) if layer.pos_encoding else f[j]  # (7)
            for g in range(layer.groups):
                encoded[g].append((h_j[g] * weights[g]) @ f_star)  # (6): W_{j,g} f*_j
        for g in range(layer.groups):
            if encoded[g]:
                stacked = torch.stack(encoded[g])
                out[i] += stacked.max(dim=0).values if layer.reduction == "max" else stacked.sum(dim=0)  # (8), (9)
    return out


@pytest.mark.parametrize("reduction,assignment,pos_encoding",
                         list(itertools.product(["max", "sum"], ["soft", "hard", "none"], [True, False])))
def test_vectorised_layer_matches_direct_loop(shared_data, reduction, assignment, pos_encoding, reduction_path):
    torch.manual_seed(0)
    layer = SALA(3, 5, groups=3, reduction=reduction, assignment=assignment, pos_encoding=pos_encoding).double()
    for strided in (False, True):
        q, s, nbs, f = real_inputs(shared_data, strided)
        with torch.no_grad():
            expected = direct_sala(layer, q, s, nbs, f)
            torch.testing.assert_close(layer(q, s, nbs, f), expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(layer(q, s, nbs, f).detach(), expected, rtol=1e-10, atol=1e-10)  # autograd path


def test_one_group_is_a_pointwise_mlp_with_max(shared_data):
    """S = 1: the softmax over one group is 1, so f'_i = MAX_j W [r_j, f_j] (shared MLP + max)."""
    torch.manual_seed(1)
    layer = SALA(3, 7, groups=1).double()
    q, s, nbs, f = real_inputs(shared_data, strided=False)
    n = len(s)
    valid = nbs < n
    idx = torch.where(valid, nbs, 0)
    with torch.no_grad():
        r = layer.mlp_p(s[idx] - q[:, None])
        assert torch.equal(layer.assign(r), torch.ones(r.shape[:-1] + (1,), dtype=r.dtype))
        shared_mlp = torch.cat([r, f[idx]], dim=-1) @ layer.group_weight(0).t()  # (M, H, 7)
        expected = shared_mlp.masked_fill(~valid[..., None], -torch.inf).amax(dim=1)
        torch.testing.assert_close(layer(q, s, nbs, f), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("assignment", ["soft", "none"])
def test_shadow_neighbours_never_win_the_max(assignment, reduction_path):
    torch.manual_seed(2)
    layer = SALA(4, 6, groups=2, assignment=assignment)
    with torch.no_grad():  # every real W_g f*_j negative: a zero (or any padded) shadow value would win
        layer.weight_f.copy_(-layer.weight_f.abs())
        layer.weight_r.copy_(-layer.weight_r.abs())
        for mod in layer.modules():
            if isinstance(mod, torch.nn.Linear):
                mod.bias.fill_(0.5)
    s = torch.rand(10, 3)
    f = torch.rand(10, 4) + 0.1
    q = s[:4]
    n = len(s)
    nbs = torch.tensor([[0, 1, 2, n, n], [1, n, n, n, n], [n, n, n, n, n], [3, 4, 5, 6, 7]])
    with torch.no_grad():
        out = layer(q, s, nbs, f)
        assert (out[[0, 1, 3]] < 0).all()
        assert torch.equal(out[2], torch.zeros(6))  # no real neighbour at all
        # Same result without the shadow columns, and whatever the neighbour order.
        torch.testing.assert_close(out[1:2], layer(q[1:2], s, nbs[1:2, :1], f))
        torch.testing.assert_close(out[0:1], layer(q[0:1], s, nbs[0:1, [2, 0, 1]], f))


def test_shadow_neighbours_add_nothing_to_the_sum():
    torch.manual_seed(3)
    layer = SALA(4, 6, reduction="sum")
    s, f = torch.rand(10, 3), torch.rand(10, 4)
    nbs = torch.tensor([[0, 1, 2, 10, 10]])
    with torch.no_grad():
        torch.testing.assert_close(layer(s[:1], s, nbs, f), layer(s[:1], s, nbs[:, :3], f))


def test_assignment_variants():
    torch.manual_seed(4)
    r = torch.randn(50, 8)
    soft, hard, none = (SALA(4, 4, groups=2, assignment=a) for a in ("soft", "hard", "none"))
    hard.load_state_dict(soft.state_dict())
    h = soft.assign(r)
    torch.testing.assert_close(h.sum(-1), torch.ones(50))  # probability axioms (Eq. 5)
    assert torch.equal(hard.assign(r), (h > 0.5).float())
    assert torch.equal(none.assign(r), torch.ones(50, 2))
    assert none.mlp_sa is None and SALA(4, 4, assignment="none", pos_encoding=False).mlp_p is None


@pytest.mark.parametrize("assignment,pos_encoding", [("soft", True), ("hard", True), ("none", False)])
def test_training_gradients_match_the_direct_loop(shared_data, assignment, pos_encoding, reduction_path):
    """The MAX path used in training (winners found without autograd, only they recomputed) gives the
    gradients of autograd through the direct loop of Eq. 4-9, for the features and every parameter."""
    torch.manual_seed(1)
    layer = SALA(3, 5, groups=3, reduction="max", assignment=assignment, pos_encoding=pos_encoding).double()
    for strided in (False, True):
        q, s, nbs, f = real_inputs(shared_data, strided)
        weights = torch.randn(len(q), 5, dtype=torch.float64)  # a loss that weighs every output differently
        grads = []
        for forward in (direct_sala, lambda lay, *a: lay(*a)):
            layer.zero_grad()
            f_req = f.clone().requires_grad_(True)
            (forward(layer, q, s, nbs, f_req) * weights).sum().backward()
            grads.append([f_req.grad] + [p.grad.clone() if p.grad is not None else None
                                         for p in layer.parameters()])
        for expected, got in zip(*grads):
            if expected is None:
                assert got is None or not got.any()
            else:
                torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("reduction", ["max", "sum"])
def test_gradients_reach_every_parameter_and_stay_finite(reduction):
    torch.manual_seed(5)
    layer = SALA(4, 6, groups=2, reduction=reduction)
    s, f = torch.rand(30, 3), torch.rand(30, 4, requires_grad=True)
    nbs = torch.as_tensor(radius_neighbors(s.numpy(), s.numpy(), 0.5, 8))
    nbs[0] = len(s)  # a query without any real neighbour
    layer(s, s, nbs, f).square().sum().backward()
    assert torch.isfinite(f.grad).all()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_macs_are_counted_on_the_matmuls():
    """count_macs sees MLP_p, MLP_sa and both halves of W_g (Eq. 7 split): N*Cin*S*C + P*(3d + dS + dSC), with P
    the real (query, neighbour) pairs: counted on one thread, where the slot loop runs, which computes nothing
    for a shadow, whatever the thread count outside."""
    layer = SALA(10, 12, groups=2)
    n, m, k, d = 40, 15, 9, layer.pos_channels
    s, f = torch.rand(n, 3), torch.rand(n, 10)
    nbs = torch.randint(0, n, (m, k))
    nbs[:, 6:] = n                   # 6 real neighbours per query, then shadows
    pairs = m * 6
    expected = n * 10 * 2 * 12 + pairs * (3 * d + d * 2 + d * 2 * 12)
    assert count_macs(layer, s[:m], s, nbs, f) == expected


@pytest.mark.parametrize("kwargs", [dict(reduction="mean"), dict(assignment="sparse"), dict(groups=0)])
def test_invalid_options_are_usage_errors(kwargs):
    with pytest.raises(UsageError, match="SALA"):
        SALA(4, 4, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    torch.manual_seed(6)
    layer = SALA(4, 6)
    s, f = torch.rand(200, 3), torch.rand(200, 4)
    nbs = torch.as_tensor(radius_neighbors(s.numpy(), s.numpy(), 0.2, 16))
    with torch.no_grad():
        cpu = layer(s, s, nbs, f)
        gpu = layer.to("cuda")(s.cuda(), s.cuda(), nbs.cuda(), f.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("reduction", ["max", "sum"])
def test_slot_blocks_give_the_direct_loop_on_shuffled_ragged_rows(shared_data, monkeypatch, reduction):
    """Inference runs the queries sorted by their number of real neighbours, in blocks, slot by slot. Forced
    into many small blocks, with the shadows of every row moved in front of its real neighbours and a query
    that has no real neighbour at all, it must still give Eq. 4-9 written out (0 for the empty query)."""
    import pcseg.nn.gather as gather_module

    monkeypatch.setattr(gather_module, "SLOT_BLOCK_VALUES", 1)
    monkeypatch.setattr(gather_module, "MIN_SLOT_BLOCK", 7)
    monkeypatch.setattr(gather_module.SlotPlan, "pays", lambda self, channels, calls=4: True)  # any threads
    torch.manual_seed(0)
    layer = SALA(3, 5, groups=2, reduction=reduction).double()
    q, s, nbs, f = real_inputs(shared_data, strided=False, limit=20)
    n = len(s)
    nbs = nbs.flip(1).clone()           # shadows first: not the order the radius search gives
    nbs[3] = n                          # a query without any real neighbour
    counts = (nbs < n).sum(dim=1)
    assert counts.min() == 0 and len(set(counts.tolist())) > 5 and len(q) > 7
    with torch.no_grad():
        got = layer(q, s, nbs, f)
        torch.testing.assert_close(got, direct_sala(layer, q, s, nbs, f), rtol=1e-10, atol=1e-10)
    assert not got[3].any()


def test_reals_first_keeps_the_order_of_real_neighbours():
    n = 9
    nbs = torch.tensor([[3, 9, 1, 9, 2], [9, 9, 9, 9, 9], [0, 1, 2, 3, 4], [9, 8, 9, 7, 9]])
    assert torch.equal(reals_first(nbs, n), torch.tensor([[3, 1, 2, 9, 9], [9, 9, 9, 9, 9], [0, 1, 2, 3, 4],
                                                          [8, 7, 9, 9, 9]]))
    ordered = torch.tensor([[1, 2, 9], [4, 9, 9]])
    assert reals_first(ordered, n) is ordered   # the radius search's order is used as it is


def test_training_winners_are_the_first_maximum_on_ties(reduction_path):
    """With duplicated support points every maximum is tied; the slot search must pick the first slot, as
    ``max(dim).indices`` does, so that the selected gradient goes to one neighbour, the first."""
    torch.manual_seed(3)
    layer = SALA(2, 3, groups=2).double()
    s = torch.rand(4, 3, dtype=torch.float64)
    s = torch.cat([s, s])                       # support j and j + 4 are the same point with the same feature
    f = torch.rand(4, 2, dtype=torch.float64)
    f = torch.cat([f, f]).requires_grad_(True)
    nbs = torch.tensor([[0, 4, 1, 5], [2, 6, 8, 8]])
    layer(s[:2], s, nbs, f).sum().backward()
    assert f.grad[4:].abs().sum() == 0 and f.grad[:4].abs().sum() > 0


def test_slot_max_is_amax_and_its_winners_are_max_indices_ties_included(monkeypatch, reduction_path):
    """The slot-by-slot max (many small blocks forced) equals amax over the real neighbours, and its winner
    slots are those of ``max(dim).indices``, the first on ties, for rows with shadows and an empty row."""
    import pcseg.nn.gather as gather_module
    from pcseg.nn.gather import slot_max

    monkeypatch.setattr(gather_module, "SLOT_BLOCK_VALUES", 1)
    monkeypatch.setattr(gather_module, "MIN_SLOT_BLOCK", 5)
    gen = torch.Generator().manual_seed(0)
    n, m, h, c = 30, 41, 9, 6
    features = torch.randint(0, 4, (n, c), generator=gen).float()      # many ties
    counts = torch.randint(0, h + 1, (m,), generator=gen)
    counts[0] = 0
    neighbors = torch.randint(0, n, (m, h), generator=gen)
    neighbors[torch.arange(h)[None, :] >= counts[:, None]] = n         # shadows after the real neighbours
    pooled, winner = slot_max(features, neighbors, want_winner=True)
    padded = torch.cat([features, torch.full((1, c), float("-inf"))])
    gathered = padded[neighbors]                                        # (M, H, C)
    expected = gathered.max(dim=1)
    real = counts > 0
    assert torch.equal(pooled[real], expected.values[real]) and not pooled[~real].any()
    assert torch.equal(winner[real].long(), expected.indices[real])


def test_slot_plan_takes_the_whole_tensor_for_small_layers_on_several_threads(monkeypatch):
    """The cost rule of SlotPlan.pays: one thread always loops by slots; with two threads a deep layer of a few
    dozen queries runs whole (the calls would cost more than the arithmetic), a wide one by slots, and a
    sleeping thread pool (OMP_WAIT_POLICY=PASSIVE) moves the line towards the whole tensor."""
    from pcseg.nn.gather import slot_plan

    def plan(m, h, real, channels):
        nbs = torch.full((m, h), m)
        nbs[:, :real] = torch.arange(real)
        nbs[0] = torch.arange(h)                   # one full row: h slots to run
        return slot_plan(nbs, m, channels)

    small, large = plan(71, 46, 26, 576), plan(6000, 34, 27, 72)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert small.pays(576) and large.pays(72)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert not small.pays(576) and large.pays(72)
    middle = plan(318, 46, 28, 288)
    assert middle.pays(288)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    assert not middle.pays(288) and large.pays(72)
