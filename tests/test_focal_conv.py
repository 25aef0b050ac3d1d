"""Focal sparse convolution: tau = 0 is regular sparse conv, tau = 1 is submanifold, any tau matches a direct
set-based implementation of Eq. 6-8 and of the importance attention; the focal loss matches its formula."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pcseg.nn.focal import (
    FocalSparseConv3d, focal_output_coords, importance_focal_loss, points_in_boxes_torch, select_important,
    voxel_centers,
)
from pcseg.nn.sparse import SparseConv3d, SparseTensor, SubMConv3d, kernel_offsets, pack_coords, unpack_keys

from test_sparse_conv import random_sparse


pytestmark = pytest.mark.usefixtures("one_thread")


def sorted_by_key(x: SparseTensor) -> SparseTensor:
    order = torch.argsort(pack_coords(x.coords, x.spatial_shape))
    return SparseTensor(x.features[order], x.coords[order], x.spatial_shape, x.batch_size)


def raw_focal(layer: FocalSparseConv3d, x: SparseTensor, importance: torch.Tensor):
    keys, coords, feats, attention, important = layer.conv_features(x, importance)
    return coords, feats, attention


@pytest.fixture()
def setup():
    rng = np.random.default_rng(0)
    x = sorted_by_key(random_sparse(rng, shape=(5, 6, 7), density=0.15))
    torch.manual_seed(0)
    layer = FocalSparseConv3d(3, 4)
    imp = torch.rand(len(x.coords), 27) * 0.98 + 0.01
    return x, layer, imp


def test_tau_zero_is_regular_sparse_conv(setup):
    x, layer, imp = setup
    layer.tau = 0.0
    coords, feats, _ = raw_focal(layer, x, imp)
    reg = SparseConv3d(3, 4, 3, stride=1, padding=1)
    with torch.no_grad():
        reg.weight.copy_(layer.conv.weight)
    ref = reg(x)
    assert torch.equal(coords, ref.coords)
    torch.testing.assert_close(feats, ref.features, rtol=1e-5, atol=1e-5)
    assert len(coords) > len(x.coords)


def test_tau_one_is_submanifold_conv(setup):
    x, layer, imp = setup
    layer.tau = 1.0
    coords, feats, attention = raw_focal(layer, x, imp)
    sub = SubMConv3d(3, 4)
    with torch.no_grad():
        sub.weight.copy_(layer.conv.weight)
    assert torch.equal(coords, x.coords)
    torch.testing.assert_close(feats, sub(x).features, rtol=1e-5, atol=1e-5)


def test_dynamic_shape_and_attention_match_direct_implementation(setup):
    x, layer, imp = setup
    layer.tau = 0.5
    coords, feats, attention = raw_focal(layer, x, imp)
    offsets = kernel_offsets(3).tolist()
    inputs = {tuple(c): i for i, c in enumerate(x.coords.tolist())}
    # Eq. 6-8 with sets
    out = set(inputs)
    for p, i in inputs.items():
        if imp[i, 13] >= 0.5:                                          # Eq. 7, centre of the cubic map
            for k, off in enumerate(offsets):                          # Eq. 8
                q = (p[0], p[1] + off[0], p[2] + off[1], p[3] + off[2])
                if imp[i, k] >= 0.5 and all(0 <= q[a + 1] < x.spatial_shape[a] for a in range(3)):
                    out.add(q)
    assert set(map(tuple, coords.tolist())) == out
    w = layer.conv.weight.detach()
    for row, q in enumerate(map(tuple, coords.tolist())):
        y, votes = torch.zeros(4), []
        for k, off in enumerate(offsets):                              # Eq. 2: y_q = sum_k w_k x_{q+k}
            p = (q[0], q[1] + off[0], q[2] + off[1], q[3] + off[2])
            if p in inputs:
                y += x.features[inputs[p]] @ w[k]
                back = offsets.index([-off[0], -off[1], -off[2]])     # p predicted I^p_{q-p} for q
                votes.append(float(imp[inputs[p], back]))
        torch.testing.assert_close(feats[row].detach(), y, rtol=1e-5, atol=1e-5)
        assert math.isclose(float(attention[row]), float(np.mean(votes)), rel_tol=1e-5)


def test_forward_applies_attention_and_trains_importance_branch(setup):
    x, layer, _ = setup
    layer.train()
    res = layer(x)
    assert res.importance.shape == (len(x.coords), 27)
    assert torch.all((res.importance >= 0) & (res.importance <= 1))
    coords, feats, attention = raw_focal(layer, x, res.importance)
    expected = torch.relu(layer.norm(feats)) * attention[:, None]
    torch.testing.assert_close(res.out.features, expected)
    res.out.features.sum().backward()
    assert layer.importance.weight.grad is not None and layer.importance.weight.grad.abs().sum() > 0


def test_top_ratio_selects_half_of_each_cloud():
    centre = torch.tensor([0.9, 0.1, 0.5, 0.7, 0.2, 0.3, 0.8])
    batch = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    sel = select_important(centre, batch, 0.5, top_ratio=0.5)
    assert sel.tolist() == [True, False, False, True, False, True, True]
    assert select_important(centre, batch, 0.5, None).tolist() == [True, False, True, True, False, False, True]


def test_importance_focal_loss_formula():
    p = torch.tensor([0.9, 0.2, 0.3, 0.99])
    t = torch.tensor([True, True, False, False])
    pbar = [0.9, 0.2, 0.7, 0.01]
    expected = np.mean([-(1 - q) ** 2 * math.log(q) for q in pbar])
    assert math.isclose(float(importance_focal_loss(p, t)), expected, rel_tol=1e-6)
    assert float(importance_focal_loss(torch.tensor([1 - 1e-7]), torch.tensor([True]))) < 1e-10


def test_voxel_centers_and_box_targets():
    x = SparseTensor(torch.zeros(3, 1), torch.tensor([[0, 0, 0, 0], [0, 1, 2, 3], [0, 0, 10, 10]]), (4, 20, 20), 1,
                     stride=(2, 2, 2))
    c = voxel_centers(x, [0, -4, -1, 8, 4, 1], (0.2, 0.2, 0.25))
    torch.testing.assert_close(c, torch.tensor([[0.2, -3.8, -0.75], [1.4, -3.0, -0.25], [4.2, 0.2, -0.75]]))
    boxes = torch.tensor([[1.4, -3.0, -0.25, 1.0, 0.3, 0.2, math.pi / 2]])     # long axis along y after yaw
    assert points_in_boxes_torch(c, boxes).tolist() == [False, True, False]
    pts = torch.tensor([[1.4, -2.6, -0.25], [1.7, -3.0, -0.25]])
    assert points_in_boxes_torch(pts, boxes).tolist() == [True, False]


def test_points_in_boxes_matches_geometry_module():
    boxes_mod = pytest.importorskip("pcseg.geometry.boxes")
    rng = np.random.default_rng(3)
    pts = rng.uniform(-5, 5, (2000, 3))
    boxes = np.concatenate([rng.uniform(-4, 4, (6, 3)), rng.uniform(0.5, 3, (6, 3)), rng.uniform(-3, 3, (6, 1))], 1)
    ref = boxes_mod.points_in_boxes(pts, boxes) >= 0
    got = points_in_boxes_torch(torch.from_numpy(pts).float(), torch.from_numpy(boxes).float()).numpy()
    assert (ref != got).sum() <= 2          # float32 vs float64 on the boundary


def test_output_coords_stay_in_grid():
    x = SparseTensor(torch.zeros(1, 1), torch.tensor([[0, 0, 0, 0]]), (1, 2, 2), 1)
    keys = focal_output_coords(x, torch.ones(1, 27), torch.tensor([True]), kernel_offsets(3), 0.5)
    coords = unpack_keys(keys, x.spatial_shape)
    assert sorted(map(tuple, coords.tolist())) == [(0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 1, 0), (0, 0, 1, 1)]


def test_top_ratio_module_selects_half_of_the_voxels(setup):
    x, _, _ = setup
    layer = FocalSparseConv3d(3, 4, top_ratio=0.5).eval()
    with torch.no_grad():
        res = layer(x)
    for b in range(x.batch_size):
        rows = x.coords[:, 0] == b
        assert int(res.important[rows].sum()) == math.ceil(int(rows.sum()) * 0.5)
        centre = res.importance[rows, 13]
        assert centre[res.important[rows]].min() >= centre[~res.important[rows]].max()


def test_focal_kernel_map_equals_the_full_look_up_on_a_real_frame(shared_data):
    """P_out's kernel map reuses the submanifold map for the outputs that are inputs and looks up only the
    dilated ones: the table must equal the one built by looking up every output."""
    from pcseg.nn.focal import focal_kernel_map
    from pcseg.nn.sparse import build_kernel_map, voxelize

    path = shared_data / "kitti" / "training" / "velodyne" / "000001.bin"
    pts = torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(-1, 4))
    x = voxelize([pts], [0, -32, -3, 64, 32, 1], (0.1, 0.1, 0.2))
    offsets = kernel_offsets(3)
    gen = torch.Generator().manual_seed(0)
    importance = torch.rand(len(x.coords), 27, generator=gen) ** 4          # a few percent important
    important = importance[:, 13] >= 0.5
    keys = focal_output_coords(x, importance, important, offsets, 0.5)
    coords = unpack_keys(keys, x.spatial_shape)
    assert len(keys) > len(x.coords)                                          # some outputs were dilated
    table = focal_kernel_map(x, keys, coords, 3, offsets).table
    assert torch.equal(table, build_kernel_map(x, coords, offsets).table)
