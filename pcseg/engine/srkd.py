"""SRKD loss terms (Li, Dong, Dong, Yang, An, Xu 2025: "SRKD: Towards Efficient 3D Point Cloud Segmentation via
Structure- and Relation-aware Knowledge Distillation", §3.1-3.5, Eq. 1-10).

Notation: ``F_t`` (N, C_t) and ``F_s`` (N, C_s) are the dense feature maps the segmentation heads read (§3.1),
``z_t`` / ``z_s`` (N, K) the logits, all for the same stacked batch of B clouds (``lengths``), so that row ``i`` of
every tensor is the same point.

The copy of the paper kept with this project (``../shared/papers/srkd.txt``) has the prose and the equation
numbers but not the formulas nor the numbers of §4.1 (temperature, loss weights). Each term below is written from
the prose; where the prose leaves a choice open, the choice is ours and says so:

- Eq. 2, KL(p_t || p_s) at temperature T, multiplied by T^2 so that its gradients keep their scale when T
  changes (Hinton et al. 2015). §3.1 says T "is typically set to 1": our default.
- Eq. 3, the class-aware super-voxel sampling weight, is given in words: cylindrical bins (radius rho, angle
  theta, height h), a ceiling of the distance of the super-voxel's outer contour to the XY origin, and a factor
  that gives rarer classes higher weights. Ours: w_i = ceil(r_i / d_rho) * mean_{p in i} 1 / f(y_p), with r_i the
  outer radius of the ring of super-voxel i, d_rho the ring width and f(c) the share of class c among the batch's
  points. The XY origin is the frame origin: the sensor for lidar frames, the sphere centre for sphere batches.
- Eq. 4, "affinity ... based on the distance" between point features: cosine similarity (as in PVKD, Hou et al.
  2022, which this module follows), so that teacher and student of different widths give matrices of the same
  size. Padding rows are zero vectors, whose similarity with anything is zero in both matrices.
- Eq. 5 / Eq. 6: mean squared difference of the student's and teacher's affinity matrices, averaged over the
  sampled super-voxels, for the points (Eq. 5) and for the sub-voxels (Eq. 6) of each super-voxel. A
  sub-voxel's feature is the mean of its points' features.
- Eq. 7, channel-wise distillation: per cloud and channel, a softmax over the cloud's points of the channel's
  activations at temperature tau, KL(teacher || student), scaled by tau^2 and averaged over channels and clouds
  (Shu et al. 2021, which the "general form" of Eq. 7 names). The student's features are first mapped to the
  teacher's width by a learned projection head.
- Eq. 8-9, cross-sample geometry: N points per cloud, features projected to D dims and L2-normalised; for every
  ordered pair (i, j), i != j, of clouds in the batch the N x N similarity matrix, each row softmax-normalised at
  temperature tau, KL(teacher row || student row), averaged over rows and pairs. A batch of one cloud pairs the
  cloud with itself. The student's projection is learned; the teacher's is fixed and random, with orthonormal
  rows when D >= C_t (an isometry: the teacher's similarities are its own cosine similarities), so that no
  learned teacher head can collapse the target.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


# --- Eq. 2 ------------------------------------------------------------------------------------------------

def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(2): T^2 * mean over points of KL(softmax(z_t / T) || softmax(z_s / T))."""
    t = temperature
    log_ps = F.log_softmax(student_logits / t, dim=1)
    log_pt = F.log_softmax(teacher_logits / t, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)
    return kl.mean() * t * t


# --- Eq. 7 ------------------------------------------------------------------------------------------------

def channel_loss(student_features: torch.Tensor, teacher_features: torch.Tensor, lengths: torch.Tensor,
                 temperature: float = 4.0) -> torch.Tensor:
    """(7): per cloud and channel, KL between the softmax over points (at ``temperature``) of the teacher's and
    the student's activations, times tau^2, averaged over channels and clouds. Both inputs (N, C), same C."""
    if student_features.shape != teacher_features.shape:
        raise ValueError(f"channel-wise distillation needs equal shapes, got {tuple(student_features.shape)} "
                         f"and {tuple(teacher_features.shape)} (project the student first)")
    tau = temperature
    total = student_features.new_zeros(())
    for s, t in zip(torch.split(student_features, lengths.tolist()), torch.split(teacher_features, lengths.tolist())):
        log_ps = F.log_softmax(s / tau, dim=0)  # softmax over the cloud's points, per channel
        log_pt = F.log_softmax(t / tau, dim=0)
        total = total + (log_pt.exp() * (log_pt - log_ps)).sum(dim=0).mean()
    return total / len(lengths) * tau * tau


# --- §3.2: super-voxels, Eq. 3-6 --------------------------------------------------------------------------

@dataclass
class SuperVoxels:
    """Cylindrical partition of a stacked batch (§3.2 "Voxel Sampling").

    ``ids`` (N,) super-voxel of every point (unique across the batch), ``ring`` (V,) ring index (0 = innermost)
    of every super-voxel id, ``count`` (V,) points per super-voxel, ``ring_width`` d_rho of the rings."""

    ids: torch.Tensor
    ring: torch.Tensor
    count: torch.Tensor
    ring_width: float


def partition(points: torch.Tensor, lengths: torch.Tensor, extent: float, rings: int = 4, sectors: int = 8,
              layers: int = 4) -> SuperVoxels:
    """Split every cloud (coordinates relative to its XY origin) into ``rings`` x ``sectors`` x ``layers``
    cylindrical super-voxels covering radius ``extent`` and heights [-extent, extent] (the outer bins take
    everything beyond)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    d_rho = extent / rings
    rho = torch.sqrt(x * x + y * y)
    ring = torch.clamp((rho / d_rho).long(), 0, rings - 1)
    theta = torch.atan2(y, x)  # [-pi, pi]
    sector = torch.clamp(((theta + math.pi) / (2 * math.pi / sectors)).long(), 0, sectors - 1)
    layer = torch.clamp(((z + extent) / (2 * extent / layers)).long(), 0, layers - 1)
    cloud = torch.repeat_interleave(torch.arange(len(lengths), device=points.device), lengths.to(points.device))
    per_cloud = rings * sectors * layers
    key = cloud * per_cloud + (ring * sectors + sector) * layers + layer
    uniq, ids, count = torch.unique(key, return_inverse=True, return_counts=True)
    ring_of = torch.div(uniq % per_cloud, sectors * layers, rounding_mode="floor")
    return SuperVoxels(ids=ids, ring=ring_of, count=count, ring_width=d_rho)


def sampling_weights(sv: SuperVoxels, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(3), our reading: w_i = ceil(r_i / d_rho) * mean over the points of i of 1 / f(y_p) (rarer classes weigh
    more); r_i = (ring + 1) * d_rho is the outer radius of the super-voxel. ``labels`` (N,) int64 in
    [0, num_classes). Super-voxels of fewer than two points cannot hold a relation: weight 0."""
    freq = torch.bincount(labels, minlength=num_classes).to(torch.float32)
    freq = freq / freq.sum()
    inv = 1.0 / freq.clamp_min(1e-12)
    per_point = inv[labels]
    class_term = torch.zeros(len(sv.count), dtype=torch.float32, device=labels.device).index_add_(
        0, sv.ids, per_point) / sv.count
    distance_term = sv.ring.to(torch.float32) + 1.0  # ceil(r_i / d_rho) with r_i = (ring + 1) * d_rho
    w = distance_term * class_term
    return torch.where(sv.count >= 2, w, torch.zeros_like(w))


def sample_supervoxels(weights: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of ``k`` super-voxels drawn without replacement with probability proportional to ``weights``
    (fewer when fewer have a non-zero weight)."""
    k = min(int(k), int((weights > 0).sum()))
    if k == 0:
        return torch.zeros(0, dtype=torch.long, device=weights.device)
    return torch.multinomial(weights, k, replacement=False, generator=generator)


def fixed_members(ids: torch.Tensor, selected: torch.Tensor, size: int,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """(len(selected), size) indices of the elements of each selected group, in random order, truncated to
    ``size`` (excess discarded) and padded with -1 (§3.2: fixed counts by discarding or zero padding)."""
    n = len(ids)
    out = torch.full((len(selected), size), -1, dtype=torch.long, device=ids.device)
    if n == 0 or len(selected) == 0:
        return out
    slot = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long, device=ids.device)
    slot[selected] = torch.arange(len(selected), device=ids.device)
    perm = torch.randperm(n, generator=generator, device="cpu").to(ids.device)
    perm = perm[slot[ids[perm]] >= 0]  # members of selected groups, in random order
    group = slot[ids[perm]]
    order = torch.argsort(group, stable=True)
    perm, group = perm[order], group[order]
    starts = torch.searchsorted(group, torch.arange(len(selected), device=ids.device))
    rank = torch.arange(len(perm), device=ids.device) - starts[group]
    keep = rank < size
    out[group[keep], rank[keep]] = perm[keep]
    return out


def affinity(features: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
    """(4): (G, P, P) cosine similarities between the features of each group's members; padding (-1) rows are
    zero vectors."""
    x = features[members.clamp_min(0)] * (members >= 0).unsqueeze(-1).to(features.dtype)
    x = F.normalize(x, dim=-1)  # zero rows stay zero
    return x @ x.transpose(1, 2)


def affinity_loss(student_features: torch.Tensor, teacher_features: torch.Tensor,
                  members: torch.Tensor) -> torch.Tensor:
    """(5)/(6): mean over groups and matrix entries of (A_s - A_t)^2."""
    if len(members) == 0:
        return student_features.new_zeros(())
    return (affinity(student_features, members) - affinity(teacher_features, members)).pow(2).mean()


def subvoxel_features(features: torch.Tensor, ids: torch.Tensor, num: int) -> torch.Tensor:
    """(num, C) mean feature of the points of each sub-voxel."""
    total = features.new_zeros((num, features.shape[1])).index_add_(0, ids, features)
    count = torch.bincount(ids, minlength=num).to(features.dtype).clamp_min(1.0)
    return total / count[:, None]


def subvoxels(points: torch.Tensor, sv_ids: torch.Tensor, cell: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Split every super-voxel into cubic cells of side ``cell``: (N,) sub-voxel id of every point and (S,) the
    super-voxel of every sub-voxel."""
    cells = torch.floor(points / cell).long()
    cells = cells - cells.min(dim=0).values
    span = cells.max(dim=0).values + 1
    key = ((sv_ids * span[0] + cells[:, 0]) * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
    uniq, ids = torch.unique(key, return_inverse=True)
    parent = torch.div(uniq, span[0] * span[1] * span[2], rounding_mode="floor")
    return ids, parent


def relation_losses(student_features: torch.Tensor, teacher_features: torch.Tensor, points: torch.Tensor,
                    lengths: torch.Tensor, labels: torch.Tensor, num_classes: int, extent: float, cell: float,
                    num_supervoxels: int = 16, points_per_supervoxel: int = 64, voxels_per_supervoxel: int = 32,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """§3.2: (point-wise affinity loss (5), inter-voxel affinity loss (6)) on ``num_supervoxels`` super-voxels
    drawn with the weights of (3). ``labels`` (N,) class of every point (ground truth, or the teacher's
    prediction where there is none)."""
    sv = partition(points, lengths, extent)
    chosen = sample_supervoxels(sampling_weights(sv, labels, num_classes), num_supervoxels, generator)
    members = fixed_members(sv.ids, chosen, points_per_supervoxel, generator)
    loss_p = affinity_loss(student_features, teacher_features, members)
    sub_ids, parent = subvoxels(points, sv.ids, cell)
    num = len(parent)
    sub_members = fixed_members(parent, chosen, voxels_per_supervoxel, generator)
    loss_v = affinity_loss(subvoxel_features(student_features, sub_ids, num),
                           subvoxel_features(teacher_features, sub_ids, num), sub_members)
    return loss_p, loss_v


# --- §3.3: Eq. 8-9 ----------------------------------------------------------------------------------------

def cross_sample_loss(student_embed: torch.Tensor, teacher_embed: torch.Tensor, lengths: torch.Tensor,
                      points_per_sample: int = 1024, temperature: float = 0.1,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """(8)-(9): for every ordered pair of clouds (i, j), i != j, the similarity matrix between N points of i and
    N points of j, rows softmax-normalised at ``temperature``, KL(teacher || student) averaged over rows and
    pairs. Embeddings (N_total, D), already projected; they are L2-normalised here. Clouds with fewer than N
    points are sampled with replacement."""
    n = int(points_per_sample)
    starts = torch.cumsum(lengths, 0) - lengths
    picks = []
    for b in range(len(lengths)):
        m = int(lengths[b])
        if m >= n:
            idx = torch.randperm(m, generator=generator)[:n]
        else:
            idx = torch.randint(m, (n,), generator=generator)
        picks.append(idx.to(student_embed.device) + starts[b].to(student_embed.device))
    picks = torch.stack(picks)  # (B, N)
    fs = F.normalize(student_embed[picks], dim=-1)  # (B, N, D)
    ft = F.normalize(teacher_embed[picks], dim=-1)
    b = len(lengths)
    total, pairs = fs.new_zeros(()), 0
    for i in range(b):
        others = [j for j in range(b) if j != i] or [i]
        # (8): M_ij = F_i F_j^T for every partner j of i at once: (J, N, N)
        ms = torch.einsum("nd,jmd->jnm", fs[i], fs[others]) / temperature
        mt = torch.einsum("nd,jmd->jnm", ft[i], ft[others]) / temperature
        log_ps, log_pt = F.log_softmax(ms, dim=-1), F.log_softmax(mt, dim=-1)
        # (9): KL between the a-th rows, summed over the row's entries, mean over rows
        total = total + (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean(-1).sum()
        pairs += len(others)
    return total / pairs


# --- projection heads --------------------------------------------------------------------------------------

class ProjectionHeads(nn.Module):
    """What distillation adds to the student and never saves: ``channel`` maps the student's features to the
    teacher's width (Eq. 7); ``geometry`` maps them to D dims (Eq. 8) while the teacher's features go through
    the fixed random isometry ``teacher_geometry`` (a buffer, never trained)."""

    def __init__(self, student_channels: int, teacher_channels: int, embed_dim: int = 128, seed: int = 0):
        super().__init__()
        self.channel = nn.Linear(student_channels, teacher_channels)
        self.geometry = nn.Linear(student_channels, embed_dim)
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(max(teacher_channels, embed_dim), min(teacher_channels, embed_dim),
                                           generator=g))
        iso = q if teacher_channels >= embed_dim else q.t()  # (C_t, D): orthonormal columns, or rows (isometry)
        self.register_buffer("teacher_geometry", iso.contiguous())

    def project_teacher(self, teacher_features: torch.Tensor) -> torch.Tensor:
        return teacher_features @ self.teacher_geometry
