"""Sparse 3D convolution in plain PyTorch (no spconv): voxelisation, sparse tensors, kernel maps, convolutions.

Focal Sparse Conv §3.1 reviews the formulation every layer here implements: an output feature at position
``p`` sums the kernel weights applied to the input features at ``p + k`` for the offsets ``k`` of the
kernel space ``K^d`` whose position holds an active input (Eq. 2-3)::

    y_p = sum_{k in K^d(p, P_in)} w_k x_{p+k},    K^d(p, P_in) = {k | p + k in P_in, k in K^d}

The layers differ only by their output positions ``P_out``:

* submanifold convolution: ``P_out = P_in`` (Graham et al.; the paper's "P_in = P_out" case);
* regular sparse convolution: the union of every input's dilation, Eq. 4-5 (with a stride, the dilated
  positions that fall on the strided output grid);
* inverse convolution: the input positions of the strided convolution it undoes (its kernel map transposed).

Each layer runs as gather-GEMM-scatter over a *kernel map*: for every offset ``k``, the pairs
(input row, output row) with ``in = out * stride + k``. Kernel maps are found by sorting packed int64
keys of the input coordinates and ``torch.searchsorted``; they are cached on the coordinate set, so every
submanifold layer at one resolution (and the inverse of a strided layer) reuses the same map.

Coordinates are ``(batch, z, y, x)`` int64 voxel indices, as in spconv/OpenPCDet.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

KEY_MARGIN = 2          # cells of padding in packed keys: kernels up to 5 wide need no bounds tests

__all__ = [
    "SparseTensor", "KernelMap", "voxelize", "kernel_offsets", "build_kernel_map", "submanifold_map",
    "regular_output_coords", "sparse_conv", "pack_coords", "unpack_keys", "sorted_cache", "SubMConv3d",
    "SparseConv3d", "SparseInverseConv3d", "SparseBatchNorm", "SparseReLU", "SparseSequential", "to_dense",
]


def _triple(v) -> tuple[int, int, int]:
    if isinstance(v, int):
        return (v, v, v)
    t = tuple(int(a) for a in v)
    if len(t) != 3:
        raise ValueError(f"expected 3 values, got {v!r}")
    return t


@dataclass
class KernelMap:
    """Neighbour table of a convolution: ``table[o, k]`` is the input row at offset ``k`` of output row ``o``,
    or the shadow index ``num_in`` where that position holds no active input (the project's neighbour-matrix
    convention, ``pcseg.geometry.radius_neighbors``). For any convolution an (input, offset) pair reaches at
    most one output, so the table of the inverse convolution is the transpose (:meth:`transpose`)."""

    table: torch.Tensor     # (num_out, K) int64
    num_in: int
    _pairs: list | None = field(default=None, repr=False, compare=False)

    @property
    def num_pairs(self) -> int:
        return int((self.table < self.num_in).sum())

    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Per offset: (input rows, output rows) of its pairs; ``None`` for an identity offset (the centre of a
        submanifold map), which needs no gather or scatter. Computed once per map."""
        if self._pairs is None:
            valid = self.table < self.num_in
            k_idx, out_idx = valid.t().nonzero(as_tuple=True)             # grouped by offset
            counts = valid.sum(0).tolist()
            self._pairs = []
            start = 0
            for k, c in enumerate(counts):
                o = out_idx[start:start + c]
                i = self.table[o, k]
                start += c
                identity = (c == self.num_in == len(self.table)
                            and torch.equal(i, torch.arange(c, device=i.device)) and torch.equal(i, o))
                self._pairs.append(None if identity else (i, o))
        return self._pairs

    def transpose(self) -> "KernelMap":
        out_idx, k = (self.table < self.num_in).nonzero(as_tuple=True)
        table = torch.full((self.num_in, self.table.shape[1]), len(self.table), dtype=torch.int64,
                           device=self.table.device)
        table[self.table[out_idx, k], k] = out_idx
        return KernelMap(table, len(self.table))


@dataclass
class SparseTensor:
    """Active voxels of a batch of 3D grids.

    features: (N, C) float; coords: (N, 4) int64 ``(batch, z, y, x)``, unique; spatial_shape: ``(Z, Y, X)``;
    stride: voxel size of this grid in units of the input voxel (per axis z, y, x).
    ``cache`` holds kernel maps and strided output coordinates; tensors that share ``coords`` share it.
    """

    features: torch.Tensor
    coords: torch.Tensor
    spatial_shape: tuple[int, int, int]
    batch_size: int
    stride: tuple[int, int, int] = (1, 1, 1)
    cache: dict = field(default_factory=dict, repr=False)

    def replace_features(self, features: torch.Tensor) -> "SparseTensor":
        if features.shape[0] != self.coords.shape[0]:
            raise ValueError(f"{features.shape[0]} feature rows for {self.coords.shape[0]} voxels")
        return SparseTensor(features, self.coords, self.spatial_shape, self.batch_size, self.stride, self.cache)

    def keys(self) -> torch.Tensor:
        """Packed int64 key of each voxel (cached with its sort order)."""
        if "keys" not in self.cache:
            keys = pack_coords(self.coords, self.spatial_shape)
            order = torch.argsort(keys)
            self.cache["keys"] = keys
            self.cache["sorted"] = (keys[order], order)
        return self.cache["keys"]

    def find(self, keys: torch.Tensor) -> torch.Tensor:
        """Row of each packed key in this tensor, ``len(self.coords)`` (the shadow index) where not active."""
        self.keys()
        sorted_keys, order = self.cache["sorted"]
        n = len(sorted_keys)
        if n == 0:
            return torch.zeros_like(keys)
        if keys.device.type == "cpu":
            # numpy's binary search starts from the previous answer when the queries increase, which kernel-map
            # queries do offset by offset: 22 ms against torch's 52 ms for the 27 x 29k queries of a KITTI frame.
            pos = torch.from_numpy(np.searchsorted(sorted_keys.numpy(), keys.numpy())).clamp_max_(n - 1)
        else:
            pos = torch.searchsorted(sorted_keys, keys).clamp_max_(n - 1)
        return torch.where(sorted_keys[pos] == keys, order[pos], n)


def sorted_cache(sorted_keys: torch.Tensor) -> dict:
    """A cache for a tensor whose rows are in increasing key order (no sort needed for look-ups)."""
    return {"keys": sorted_keys, "sorted": (sorted_keys, torch.arange(len(sorted_keys), device=sorted_keys.device))}


def pack_coords(coords: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """One int64 per ``(batch, z, y, x)`` on the grid padded by ``KEY_MARGIN`` cells on every side:
    ``((b * Z' + z + m) * Y' + y + m) * X' + x + m`` with ``Z' = Z + 2m`` etc. Positions up to ``m`` cells
    outside the grid get keys of their own that no active voxel has, so kernel look-ups need no bounds test."""
    m = KEY_MARGIN
    z, y, x = (d + 2 * m for d in shape)
    return ((coords[..., 0] * z + coords[..., 1] + m) * y + coords[..., 2] + m) * x + coords[..., 3] + m


def unpack_keys(keys: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    m = KEY_MARGIN
    z, y, x = (d + 2 * m for d in shape)
    out = torch.empty(keys.shape[0], 4, dtype=torch.int64, device=keys.device)
    out[:, 3] = keys % x - m
    rest = keys // x
    out[:, 2] = rest % y - m
    rest = rest // y
    out[:, 1] = rest % z - m
    out[:, 0] = rest // z
    return out


def kernel_offsets(kernel_size, device=None) -> torch.Tensor:
    """(K, 3) offsets ``(dz, dy, dx)`` of a kernel with padding ``k // 2``, z slowest (Conv3d weight order)."""
    kz, ky, kx = _triple(kernel_size)
    grid = itertools.product(range(kz), range(ky), range(kx))
    return torch.tensor([[a - kz // 2, b - ky // 2, c - kx // 2] for a, b, c in grid], dtype=torch.int64,
                        device=device)


def build_kernel_map(x: SparseTensor, out_coords: torch.Tensor, offsets: torch.Tensor, stride=(1, 1, 1)) -> KernelMap:
    """Kernel map from ``x`` to the output voxels ``out_coords`` (Eq. 3): for offset ``k``, the input at
    ``out * stride + k`` when it is active in ``x``. The key of a queried position is the output's key plus a
    per-offset key delta (positions just outside the grid have keys of their own, see :func:`pack_coords`)."""
    if int(offsets.abs().max()) > KEY_MARGIN:
        raise ValueError(f"kernel offsets beyond {KEY_MARGIN} cells are not supported")
    base = out_coords.clone()
    base[:, 1:] *= torch.tensor(_triple(stride), device=out_coords.device)
    _, y, xx = (d + 2 * KEY_MARGIN for d in x.spatial_shape)
    delta = (offsets[:, 0] * y + offsets[:, 1]) * xx + offsets[:, 2]                  # (K,)
    keys = delta[:, None] + pack_coords(base, x.spatial_shape)[None]                   # (K, N_out), offset-major
    table = x.find(keys.view(-1)).view(keys.shape).t().contiguous()
    return KernelMap(table, len(x.coords))


def submanifold_map(x: SparseTensor, kernel_size) -> KernelMap:
    """The cached submanifold kernel map of ``x`` (shared by every layer at this coordinate set).

    Only the first half of the offsets is looked up: input ``i`` at offset ``k`` of output ``o`` means ``o`` is
    at offset ``-k`` (index ``K-1-k``) of ``i``; the centre is the identity."""
    key = ("subm", _triple(kernel_size))
    if key not in x.cache:
        offsets = kernel_offsets(kernel_size, x.coords.device)
        k, n = offsets.shape[0], len(x.coords)
        half = build_kernel_map(x, x.coords, offsets[: k // 2]).table        # (N, K//2)
        table = torch.full((n, k), n, dtype=torch.int64, device=x.coords.device)
        table[:, : k // 2] = half
        table[:, k // 2] = torch.arange(n, device=x.coords.device)
        out_idx, kk = (half < n).nonzero(as_tuple=True)
        table[half[out_idx, kk], k - 1 - kk] = out_idx
        x.cache[key] = KernelMap(table, n)
    return x.cache[key]


def regular_output_coords(x: SparseTensor, kernel_size, stride, padding) -> tuple[torch.Tensor, tuple]:
    """Sorted keys of the output voxels of a regular (strided) sparse convolution (Eq. 4-5 on the strided
    grid), and the output grid shape.

    An input ``p`` reaches output ``o`` through kernel index ``j`` when ``o * s - pad + j = p`` (the dense
    ``Conv3d`` indexing), i.e. ``o = (p + pad - j) / s`` when that is a whole number inside the output grid.
    The test is separable: done per axis on (N, k) arrays, then combined into (N, kz, ky, kx).
    """
    ks, st, pad = _triple(kernel_size), _triple(stride), _triple(padding)
    shape = tuple((d + 2 * p - k) // s + 1 for d, k, s, p in zip(x.spatial_shape, ks, st, pad))
    m = KEY_MARGIN
    dims = [d + 2 * m for d in shape]
    ok, part = [], []
    for a in range(3):
        num = x.coords[:, 1 + a, None] + pad[a] - torch.arange(ks[a], device=x.coords.device)   # (N, k_a)
        o = torch.div(num, st[a], rounding_mode="floor")
        ok.append((num % st[a] == 0) & (o >= 0) & (o < shape[a]))
        part.append(o + m)
    valid = ok[0][:, :, None, None] & ok[1][:, None, :, None] & ok[2][:, None, None, :]
    # pack_coords written out on the separable parts: ((b * Z' + z) * Y' + y) * X' + x
    keys = (((x.coords[:, 0, None, None, None] * dims[0] + part[0][:, :, None, None]) * dims[1]
             + part[1][:, None, :, None]) * dims[2] + part[2][:, None, None, :])
    return torch.unique(keys[valid]), shape                                 # sorted keys: deterministic order


def sparse_conv(features: torch.Tensor, kmap: KernelMap, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 2 as gather-GEMM-scatter: for every offset ``k``, ``out[o] += x[i] @ W_k`` over its pairs ``(i, o)``
    (``index_add_``); an identity offset is one plain GEMM. Only existing neighbours cost work: lidar voxels
    have 6-15 of 27 (one im2col GEMM over all 27 was 2.5-8x slower on a CPU, benchmarks/bench_detect.py).
    weight: (K, C_in, C_out). Returns (num_out, C_out).
    """
    pairs = kmap.pairs()
    out = None
    for k, p in enumerate(pairs):
        if p is None:
            out = features @ weight[k]
    if out is None:
        out = features.new_zeros(len(kmap.table), weight.shape[2])
    for k, p in enumerate(pairs):
        if p is not None and len(p[0]):
            out.index_add_(0, p[1], features[p[0]] @ weight[k])
    return out


class _SparseConvBase(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size, bias: bool):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _triple(kernel_size)
        k = math.prod(self.kernel_size)
        self.weight = nn.Parameter(torch.empty(k, in_channels, out_channels))
        nn.init.kaiming_uniform_(self.weight.view(k * in_channels, out_channels).t(), a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        return out + self.bias if self.bias is not None else out


class SubMConv3d(_SparseConvBase):
    """Submanifold sparse convolution: outputs only at the input voxels (P_out = P_in), odd kernel."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, bias)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError("submanifold convolution needs odd kernel sizes")

    def forward(self, x: SparseTensor) -> SparseTensor:
        kmap = submanifold_map(x, self.kernel_size)
        return x.replace_features(self._finish(sparse_conv(x.features, kmap, self.weight)))


class SparseConv3d(_SparseConvBase):
    """Regular sparse convolution (Eq. 4-5), optionally strided; indexing of ``nn.Conv3d(kernel, stride,
    padding)`` restricted to the outputs reached by an active input."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=1, padding=1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, bias)
        self.stride, self.padding = _triple(stride), _triple(padding)
        if any(p > KEY_MARGIN or k - 1 - p > KEY_MARGIN for k, p in zip(self.kernel_size, self.padding)):
            raise ValueError(f"kernel offsets beyond {KEY_MARGIN} cells are not supported")

    def forward(self, x: SparseTensor) -> SparseTensor:
        key = ("down", self.kernel_size, self.stride, self.padding)
        if key not in x.cache:
            out_keys, shape = regular_output_coords(x, self.kernel_size, self.stride, self.padding)
            out_coords = unpack_keys(out_keys, shape)
            # in = out * s - pad + j: offsets (j - pad) applied to out * s
            offs = torch.tensor(list(itertools.product(*[range(k) for k in self.kernel_size])),
                                device=x.coords.device) - torch.tensor(self.padding, device=x.coords.device)
            kmap = build_kernel_map(x, out_coords, offs, self.stride)
            x.cache[key] = (out_coords, shape, kmap, sorted_cache(out_keys))
        out_coords, shape, kmap, out_cache = x.cache[key]
        feats = self._finish(sparse_conv(x.features, kmap, self.weight))
        stride = tuple(a * b for a, b in zip(x.stride, self.stride))
        return SparseTensor(feats, out_coords, shape, x.batch_size, stride, out_cache)


class SparseInverseConv3d(_SparseConvBase):
    """Inverse of a :class:`SparseConv3d` with the same kernel/stride/padding: maps its outputs back onto its
    input voxels through the transposed kernel map (``target`` is the tensor that layer consumed)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, stride=2, padding=1, bias: bool = False):
        super().__init__(in_channels, out_channels, kernel_size, bias)
        self.stride, self.padding = _triple(stride), _triple(padding)

    def forward(self, x: SparseTensor, target: SparseTensor) -> SparseTensor:
        key = ("down", self.kernel_size, self.stride, self.padding)
        if key not in target.cache:
            raise ValueError("target was never downsampled with this kernel size / stride / padding")
        out_coords, _, kmap, _ = target.cache[key]
        if out_coords.shape != x.coords.shape or not torch.equal(out_coords, x.coords):
            raise ValueError("x is not the output of the strided convolution applied to target")
        up = ("up",) + key[1:]
        if up not in target.cache:
            target.cache[up] = kmap.transpose()
        feats = self._finish(sparse_conv(x.features, target.cache[up], self.weight))
        return target.replace_features(feats)


class SparseBatchNorm(nn.BatchNorm1d):
    """Batch norm over the active voxels' features."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace_features(super().forward(x.features))


class SparseReLU(nn.ReLU):
    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace_features(torch.relu(x.features))


class SparseSequential(nn.Sequential):
    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        for m in self:
            x = m(x)
        return x


def voxelize(points: list[torch.Tensor], point_range, voxel_size) -> SparseTensor:
    """Mean point features per voxel (OpenPCDet's MeanVFE) for a batch of clouds.

    points: per cloud (N_i, F) float with x, y, z first; point_range ``[x0, y0, z0, x1, y1, z1]``;
    voxel_size ``(vx, vy, vz)``. Points outside the range are dropped. Returns features (V, F) = mean of the
    points' features in each voxel, coords ``(batch, z, y, x)``.
    """
    dev = points[0].device
    lo = torch.tensor(point_range[:3], dtype=torch.float64, device=dev)
    hi = torch.tensor(point_range[3:], dtype=torch.float64, device=dev)
    vs = torch.tensor(voxel_size, dtype=torch.float64, device=dev)
    grid_xyz = torch.round((hi - lo) / vs).long()
    shape = (int(grid_xyz[2]), int(grid_xyz[1]), int(grid_xyz[0]))
    feats, coords = [], []
    for b, p in enumerate(points):
        idx = torch.floor((p[:, :3].double() - lo) / vs).long()
        keep = ((idx >= 0) & (idx < grid_xyz)).all(1)
        idx = idx[keep]
        feats.append(p[keep].float())
        coords.append(torch.stack([torch.full_like(idx[:, 0], b), idx[:, 2], idx[:, 1], idx[:, 0]], 1))
    feats_all, coords_all = torch.cat(feats), torch.cat(coords)
    keys, inverse, counts = torch.unique(pack_coords(coords_all, shape), return_inverse=True, return_counts=True)
    sums = feats_all.new_zeros(len(keys), feats_all.shape[1]).index_add_(0, inverse, feats_all)
    return SparseTensor(sums / counts[:, None].to(sums.dtype), unpack_keys(keys, shape), shape, len(points),
                        cache=sorted_cache(keys))


def to_dense(x: SparseTensor) -> torch.Tensor:
    """(B, C, Z, Y, X) dense grid, zeros at inactive voxels."""
    z, y, xx = x.spatial_shape
    dense = x.features.new_zeros(x.batch_size, z, y, xx, x.features.shape[1])
    c = x.coords
    dense[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = x.features
    return dense.permute(0, 4, 1, 2, 3).contiguous()
