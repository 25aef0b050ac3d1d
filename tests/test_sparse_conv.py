"""Sparse convolutions against a dense ``nn.Conv3d`` on small grids, voxelisation against a direct loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pcseg.nn.sparse import (
    SparseBatchNorm, SparseConv3d, SparseInverseConv3d, SparseTensor, SubMConv3d, kernel_offsets, to_dense,
    voxelize,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def random_sparse(rng: np.random.Generator, shape=(5, 6, 7), batch=2, density=0.2, channels=3) -> SparseTensor:
    coords = []
    for b in range(batch):
        occ = np.argwhere(rng.random(shape) < density)
        coords.append(np.concatenate([np.full((len(occ), 1), b), occ], 1))
    coords = torch.from_numpy(np.concatenate(coords)).long()
    perm = torch.from_numpy(rng.permutation(len(coords)))                     # any row order
    feats = torch.from_numpy(rng.standard_normal((len(coords), channels))).float()
    return SparseTensor(feats, coords[perm], shape, batch)


def dense_conv_like(layer, kernel_size, stride=1, padding=None) -> torch.nn.Conv3d:
    """A Conv3d carrying the same weights: sparse weight[j] is dense weight[:, :, jz, jy, jx].T."""
    ks = (kernel_size,) * 3 if isinstance(kernel_size, int) else kernel_size
    pad = tuple(k // 2 for k in ks) if padding is None else padding
    conv = torch.nn.Conv3d(layer.in_channels, layer.out_channels, ks, stride=stride, padding=pad, bias=False)
    with torch.no_grad():
        conv.weight.copy_(layer.weight.permute(2, 1, 0).reshape(layer.out_channels, layer.in_channels, *ks))
    return conv


def at(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    return dense[coords[:, 0], :, coords[:, 1], coords[:, 2], coords[:, 3]]


def test_kernel_offsets_order_matches_conv3d():
    offs = kernel_offsets(3)
    assert offs.shape == (27, 3)
    assert offs[0].tolist() == [-1, -1, -1] and offs[13].tolist() == [0, 0, 0] and offs[1].tolist() == [-1, -1, 0]


@pytest.mark.parametrize("kernel_size", [3, (3, 1, 5)])
def test_submanifold_equals_dense_conv_at_active_sites(kernel_size):
    rng = np.random.default_rng(0)
    x = random_sparse(rng)
    layer = SubMConv3d(3, 4, kernel_size)
    out = layer(x)
    dense = dense_conv_like(layer, kernel_size)(to_dense(x))
    assert torch.equal(out.coords, x.coords)
    torch.testing.assert_close(out.features, at(dense, x.coords), rtol=1e-5, atol=1e-5)


def test_submanifold_map_is_cached_and_shared():
    rng = np.random.default_rng(1)
    x = random_sparse(rng)
    a, b = SubMConv3d(3, 3), SubMConv3d(3, 3)
    y = a(x)
    assert ("subm", (3, 3, 3)) in x.cache and y.cache is x.cache
    kmap = x.cache[("subm", (3, 3, 3))]
    b(y)
    assert y.cache[("subm", (3, 3, 3))] is kmap


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1), ((2, 2, 2), (0, 1, 1)), ((2, 1, 1), 0)])
def test_regular_sparse_conv_equals_dense_conv(stride, padding):
    rng = np.random.default_rng(2)
    x = random_sparse(rng, shape=(6, 7, 9), density=0.1)
    layer = SparseConv3d(3, 5, 3, stride=stride, padding=padding)
    out = layer(x)
    dense = dense_conv_like(layer, 3, stride, padding)(to_dense(x))
    assert out.spatial_shape == tuple(dense.shape[2:])
    torch.testing.assert_close(out.features, at(dense, out.coords), rtol=1e-5, atol=1e-5)
    # every other site of the dense output is zero (nothing reaches it) and every active output is reachable
    mask = torch.zeros(dense.shape[0], *dense.shape[2:], dtype=torch.bool)
    mask[out.coords[:, 0], out.coords[:, 1], out.coords[:, 2], out.coords[:, 3]] = True
    assert torch.all(dense.permute(0, 2, 3, 4, 1)[~mask] == 0)
    occupancy = torch.nn.functional.conv3d(
        (to_dense(x).abs().sum(1, keepdim=True) > 0).float(), torch.ones(1, 1, 3, 3, 3),
        stride=stride, padding=padding)
    assert torch.equal(occupancy[:, 0] > 0, mask)
    s = (stride,) * 3 if isinstance(stride, int) else stride
    assert out.stride == s


def test_inverse_conv_is_transposed_conv():
    rng = np.random.default_rng(3)
    x = random_sparse(rng, shape=(6, 6, 6), density=0.15)
    down = SparseConv3d(3, 4, 3, stride=2, padding=1)
    y = down(x)
    inv = SparseInverseConv3d(4, 2, 3, stride=2, padding=1)
    z = inv(y, x)
    assert torch.equal(z.coords, x.coords)
    tconv = torch.nn.ConvTranspose3d(4, 2, 3, stride=2, padding=1, output_padding=1, bias=False)
    with torch.no_grad():  # transposed conv weight (C_in, C_out, k, k, k)
        tconv.weight.copy_(inv.weight.permute(1, 2, 0).reshape(4, 2, 3, 3, 3))
    dense = tconv(to_dense(y))
    torch.testing.assert_close(z.features, at(dense, x.coords), rtol=1e-5, atol=1e-5)


def test_gradients_match_dense():
    rng = np.random.default_rng(4)
    x = random_sparse(rng, shape=(4, 5, 5), density=0.3)
    x.features.requires_grad_(True)
    layer = SubMConv3d(3, 2)
    layer(x).features.square().sum().backward()
    g_sparse = layer.weight.grad.clone()
    conv = dense_conv_like(layer, 3)
    d = to_dense(SparseTensor(x.features.detach(), x.coords, x.spatial_shape, x.batch_size))
    mask = (d.abs().sum(1, keepdim=True) > 0).float()
    (conv(d) * mask).square().sum().backward()
    torch.testing.assert_close(g_sparse, conv.weight.grad.reshape(2, 3, 27).permute(2, 1, 0), rtol=1e-4, atol=1e-5)


def test_batchnorm_on_features():
    rng = np.random.default_rng(5)
    x = random_sparse(rng, channels=4)
    y = SparseBatchNorm(4).train()(x)
    torch.testing.assert_close(y.features.mean(0), torch.zeros(4), atol=1e-5, rtol=0)


def test_voxelize_means_against_loop():
    rng = np.random.default_rng(6)
    pts = [torch.from_numpy(rng.uniform([-1, -1, -1, 0], [3, 3, 2, 1], (500, 4))).float() for _ in range(2)]
    rng_, vs = [0.0, 0.0, 0.0, 2.0, 2.0, 1.0], (0.5, 0.5, 0.25)
    x = voxelize(pts, rng_, vs)
    assert x.spatial_shape == (4, 4, 4)
    expected = {}
    for b, p in enumerate(pts):
        for row in p.numpy():
            i = np.floor((row[:3] - np.array(rng_[:3])) / np.array(vs)).astype(int)
            if np.all(i >= 0) and np.all(i < [4, 4, 4]):
                expected.setdefault((b, i[2], i[1], i[0]), []).append(row)
    assert len(expected) == len(x.coords)
    for c, f in zip(x.coords.tolist(), x.features):
        np.testing.assert_allclose(f.numpy(), np.mean(expected[tuple(c)], 0), rtol=1e-5, atol=1e-6)


def test_voxelize_real_kitti_frame(shared_data):
    path = shared_data / "kitti" / "training" / "velodyne" / "000000.bin"
    pts = torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(-1, 4))
    x = voxelize([pts], [0, -40, -3, 70.4, 40, 1], (0.1, 0.1, 0.2))
    assert x.spatial_shape == (20, 800, 704)
    assert 10_000 < len(x.coords) < len(pts)
    assert len(torch.unique(x.keys())) == len(x.coords)
    # a submanifold conv on a real frame matches the dense one on a crop of it
    crop = x.coords[:, 3] < 60
    sub = SparseTensor(x.features[crop], x.coords[crop], (20, 800, 60), 1)
    layer = SubMConv3d(4, 8)
    torch.testing.assert_close(layer(sub).features, at(dense_conv_like(layer, 3)(to_dense(sub)), sub.coords),
                               rtol=1e-4, atol=1e-4)
