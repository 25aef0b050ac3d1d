"""Focal sparse convolution (Chen et al., "Focal Sparse Convolutional Networks for 3D Object Detection", §3.2)
and its multi-modal version, Focals Conv-F (§3.3, :class:`FocalSparseConv3dFusion`).

Output positions are decided per input voxel from a predicted *cubic importance map* (Eq. 6-8)::

    P_out = ( U_{p in P_im} P(p, K_im(p)) )  U  P_in/im                                   (6)
    P_im  = {p | I^p_0 >= tau, p in P_in}                                                 (7)
    K_im(p) = {k | I^p_k >= tau, k in K^d}                                                (8)

* the importance map ``I^p`` (one value per kernel offset, k^3 values) comes from an extra submanifold
  convolution followed by a sigmoid;
* important voxels (centre importance >= tau) dilate to the offsets whose importance >= tau; the others keep
  submanifold output (only their own position);
* every output feature is Eq. 2 over the active inputs around it (gather-GEMM-scatter on a kernel map), then
  batch norm + ReLU, then multiplied by its importance as attention (§3.2 "Supervision manners");
* :func:`importance_focal_loss` supervises the centre importance with voxels inside ground-truth boxes as
  targets (supplementary C.2, Eq. 1-2: gamma = 2, loss weight 1, averaged over all sparse features).

Where the paper and the public implementation differ we follow the paper:

* Eq. 8 as printed also asks ``p + k in P_in``; with that condition no position outside ``P_in`` could ever
  appear and tau = 0 could not give regular sparse convolution as the paper states right after Eq. 7, so the
  condition is read as a typo and dropped (the public code drops it too).
* The public code multiplies the *input* features of important voxels by their centre importance; the paper
  multiplies the importance onto the *output* features. An output ``q`` can be reached from several inputs,
  each of which predicted an importance for it (``I^p_{q-p}``); its attention is the mean of those
  predictions over the inputs that feed ``q`` (the pairs of the kernel map), which includes ``I^q_0`` when
  ``q`` is itself an input.
* Important inputs are chosen by the threshold tau of Eq. 7 (tau = 0.5, §4.1); the public code's top-k
  selection (the most important ``top_ratio`` of each cloud's voxels) is available as an option.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .image import ImageFeatures
from .sparse import (
    KernelMap, SparseTensor, SubMConv3d, _triple, build_kernel_map, kernel_offsets, pack_coords, sorted_cache,
    sparse_conv, submanifold_map, unpack_keys,
)

__all__ = ["FocalSparseConv3d", "FocalSparseConv3dFusion", "FocalOutput", "focal_output_coords", "dilated_keys",
           "importance_focal_loss", "voxel_centers", "points_in_boxes_torch"]


@dataclass
class FocalOutput:
    out: SparseTensor            # output sparse features (after norm, ReLU and importance attention)
    importance: torch.Tensor     # (N_in, k^3) cubic importance maps of the input voxels, in [0, 1]
    x: SparseTensor              # the input (its coordinates are where the importance loss applies)
    important: torch.Tensor      # (N_in,) bool, P_im


def select_important(centre: torch.Tensor, batch: torch.Tensor, tau: float, top_ratio: float | None) -> torch.Tensor:
    """P_im (Eq. 7), or the ``top_ratio`` most important voxels of each cloud (public code's option)."""
    if top_ratio is None:
        return centre >= tau
    # rank within each cloud: sort by (batch, -importance) and compare the rank to the cloud's quota
    order = torch.argsort(centre.detach(), descending=True, stable=True)
    order = order[torch.argsort(batch[order], stable=True)]
    counts = torch.bincount(batch, minlength=int(batch.max()) + 1 if len(batch) else 0)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device) - starts[batch[order]]
    return rank < torch.ceil(counts[batch].float() * top_ratio).long()


def dilated_keys(x: SparseTensor, importance: torch.Tensor, important: torch.Tensor, offsets: torch.Tensor,
                 tau: float) -> torch.Tensor:
    """The first part of Eq. 6, U_{p in P_im} P(p, K_im(p)), as sorted unique packed keys: for every important
    input p, the positions p + k with I^p_k >= tau (Eq. 8), inside the grid."""
    dilate = important[:, None] & (importance >= tau)                 # (N, K)
    src, k = dilate.nonzero(as_tuple=True)
    cand = x.coords[src].clone()
    cand[:, 1:] += offsets[k]
    lim = torch.tensor(x.spatial_shape, device=cand.device)
    cand = cand[((cand[:, 1:] >= 0) & (cand[:, 1:] < lim)).all(1)]
    return torch.unique(pack_coords(cand, x.spatial_shape))


def focal_output_coords(x: SparseTensor, importance: torch.Tensor, important: torch.Tensor,
                        offsets: torch.Tensor, tau: float) -> torch.Tensor:
    """P_out of Eq. 6 as sorted packed keys: the dilated important positions (:func:`dilated_keys`) and P_in."""
    return torch.unique(torch.cat([x.keys(), dilated_keys(x, importance, important, offsets, tau)]))


def focal_kernel_map(x: SparseTensor, keys: torch.Tensor, coords: torch.Tensor, kernel_size,
                     offsets: torch.Tensor) -> KernelMap:
    """The kernel map from ``x`` to P_out (sorted ``keys``, their ``coords``) of Eq. 6: ``build_kernel_map``'s
    table, built from the cached submanifold map for the outputs that are inputs (P_in, most of P_out: trained
    importance dilates 1-4% of the voxels) and by look-up for the dilated outputs only."""
    n = len(x.coords)
    rows = torch.searchsorted(keys, x.keys())                    # P_in is part of P_out: exact matches
    new = torch.ones(len(keys), dtype=torch.bool, device=keys.device)
    new[rows] = False
    table = torch.full((len(keys), offsets.shape[0]), n, dtype=torch.int64, device=keys.device)
    table[rows] = submanifold_map(x, kernel_size).table
    if bool(new.any()):
        table[new] = build_kernel_map(x, coords[new], offsets).table
    return KernelMap(table, n)


class FocalSparseConv3d(nn.Module):
    """Focal sparse convolution block: importance branch, dynamic output shape, conv + BN + ReLU, attention."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size=3, tau: float = 0.5,
                 top_ratio: float | None = None):
        super().__init__()
        self.kernel_size = _triple(kernel_size)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError("focal convolution needs odd kernel sizes")
        k = self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]
        self.tau, self.top_ratio = float(tau), top_ratio
        self.importance = SubMConv3d(in_channels, k, kernel_size, bias=True)   # cubic importance prediction
        self.conv = SubMConv3d(in_channels, out_channels, kernel_size)          # its weights, used on P_out
        self.norm = nn.BatchNorm1d(out_channels)

    def conv_features(self, x: SparseTensor, importance: torch.Tensor):
        """Eq. 2 on the dynamic output positions of Eq. 6. Returns (sorted keys, coords, features before norm,
        attention, P_im mask)."""
        offsets = kernel_offsets(self.kernel_size, x.coords.device)
        centre = offsets.shape[0] // 2
        important = select_important(importance[:, centre], x.coords[:, 0], self.tau, self.top_ratio)
        keys = focal_output_coords(x, importance.detach(), important, offsets, self.tau)
        if len(keys) == len(x.coords) and torch.equal(keys, x.keys()):
            # nothing dilated (or only inside P_in): the submanifold map, already cached for the importance conv
            coords, kmap = x.coords, submanifold_map(x, self.kernel_size)
        else:
            coords = unpack_keys(keys, x.spatial_shape)
            kmap = focal_kernel_map(x, keys, coords, self.kernel_size, offsets)
        feats = sparse_conv(x.features, kmap, self.conv.weight)
        # attention: input p = q + k of output q predicted I^p_{-k} for q; offsets are symmetric: -k is K-1-k
        k = offsets.shape[0]
        padded = torch.cat([importance, importance.new_zeros(1, k)])       # shadow row: no vote
        votes = padded[kmap.table, torch.arange(k - 1, -1, -1, device=coords.device)[None]]
        count = (kmap.table < kmap.num_in).sum(1)
        return keys, coords, feats, votes.sum(1) / count, important

    def forward(self, x: SparseTensor) -> FocalOutput:
        importance = torch.sigmoid(self.importance(x).features)
        keys, coords, feats, attention, important = self.conv_features(x, importance)
        out = torch.relu(self.norm(feats)) * attention[:, None]
        cache = x.cache if coords is x.coords else sorted_cache(keys)    # nothing dilated: keep the maps
        y = SparseTensor(out, coords, x.spatial_shape, x.batch_size, x.stride, cache)
        return FocalOutput(y, importance, x, important)


class FocalSparseConv3dFusion(FocalSparseConv3d):
    """Fusion focal sparse convolution (Focals Conv-F, §3.3, Fig. 3 dashed lines).

    Image features aligned to the voxels (:class:`pcseg.nn.image.ImageFeatures`: projected voxel centres,
    bilinear samples, zeros outside the image) are fused twice, by summation (§3.3 "Fusion manners": "directly
    fused to sparse features in summation, as they share the same channel numbers"):

    1. onto the *input* features, for the cubic importance prediction only: ``I = sigmoid(SubM(x + rgb(x)))``;
       the convolution itself (Eq. 2) reads the lidar features ``x`` (our reading of "first fused to input
       features for cubic importance prediction"; the public code does the same);
    2. onto the *important output* features only, the first part of Eq. 6, ``U_{p in P_im} P(p, K_im(p))``
       (the paper's text says "the first part in Eq. (5)"; Eq. 5 has one part and Eq. 6, which it generalises,
       has two: we read Eq. 6), not onto the submanifold outputs of unimportant inputs (Tab. 10, scope "Imp.").

    Differences from the public code, where we follow the paper: the public code concatenates image and voxel
    features for the importance branch (its ``fuse_sum`` is False there) and adds the image features to *all*
    outputs; the paper sums, and fuses only onto the important outputs. Our choice where the paper is silent:
    the output fusion is added to the convolution's output before batch norm and ReLU (where the public code adds
    it); the importance attention then multiplies the result, as in :class:`FocalSparseConv3d`.

    Input and output channels are equal: the same image features are summed to both.
    """

    def __init__(self, channels: int, point_range, voxel_size, kernel_size=3, tau: float = 0.5,
                 top_ratio: float | None = None):
        super().__init__(channels, channels, kernel_size, tau, top_ratio)
        self.point_range = [float(v) for v in point_range]
        self.voxel_size = [float(v) for v in voxel_size]

    def forward(self, x: SparseTensor, image: ImageFeatures) -> FocalOutput:  # type: ignore[override]
        if image.maps.shape[1] != self.conv.in_channels:
            raise ValueError(f"image features have {image.maps.shape[1]} channels, the voxels {self.conv.in_channels}")
        rgb_in, _ = image.sample(voxel_centers(x, self.point_range, self.voxel_size), x.coords[:, 0])
        importance = torch.sigmoid(self.importance(x.replace_features(x.features + rgb_in)).features)   # fusion 1
        keys, coords, feats, attention, important = self.conv_features(x, importance)
        offsets = kernel_offsets(self.kernel_size, x.coords.device)
        rows = torch.isin(keys, dilated_keys(x, importance.detach(), important, offsets, self.tau)).nonzero()[:, 0]
        cache = x.cache if coords is x.coords else sorted_cache(keys)
        y = SparseTensor(feats, coords, x.spatial_shape, x.batch_size, x.stride, cache)
        centres = voxel_centers(y, self.point_range, self.voxel_size)[rows]
        rgb_out, _ = image.sample(centres, coords[rows, 0])
        feats = feats.index_add(0, rows, rgb_out)                                                      # fusion 2
        out = torch.relu(self.norm(feats)) * attention[:, None]
        return FocalOutput(y.replace_features(out), importance, x, important)


def importance_focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Supplementary Eq. 1-2: mean over the sparse features of ``-(1 - p_bar)^gamma log(p_bar)`` with
    ``p_bar = p`` for targets 1 and ``1 - p`` otherwise."""
    if prob.numel() == 0:
        return prob.sum()
    p_bar = torch.where(target, prob, 1 - prob).clamp(1e-6, 1.0)
    return (-(1 - p_bar) ** gamma * torch.log(p_bar)).mean()


def voxel_centers(x: SparseTensor, point_range, voxel_size) -> torch.Tensor:
    """(N, 3) lidar-frame x, y, z of the voxel centres of ``x`` (coords ``(b, z, y, x)`` at stride ``x.stride``)."""
    lo = torch.tensor(point_range[:3], dtype=torch.float32, device=x.coords.device)
    vs = torch.tensor(voxel_size, dtype=torch.float32, device=x.coords.device)
    stride = torch.tensor(x.stride[::-1], dtype=torch.float32, device=x.coords.device)   # x, y, z
    return lo + (x.coords[:, [3, 2, 1]].float() + 0.5) * vs * stride


def points_in_boxes_torch(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(N,) bool: inside any box ``[x, y, z, dx, dy, dz, yaw]`` (box centre, yaw about +z). Torch twin of
    ``pcseg.geometry.boxes.points_in_boxes`` so the targets stay on the network's device."""
    if boxes.numel() == 0:
        return torch.zeros(points.shape[0], dtype=torch.bool, device=points.device)
    d = points[:, None, :] - boxes[None, :, :3]                        # (N, B, 3)
    c, s = torch.cos(boxes[:, 6]), torch.sin(boxes[:, 6])
    local_x = d[..., 0] * c + d[..., 1] * s
    local_y = -d[..., 0] * s + d[..., 1] * c
    inside = ((local_x.abs() <= boxes[:, 3] / 2) & (local_y.abs() <= boxes[:, 4] / 2)
              & (d[..., 2].abs() <= boxes[:, 5] / 2))
    return inside.any(1)
