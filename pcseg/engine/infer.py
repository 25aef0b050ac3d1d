"""Voting inference over overlapping spheres (KPConv §4.2, SALA §4.1).

read -> grid subsample at the checkpoint's ``dl0`` -> regular covering spheres of the checkpoint's radius ->
batched forward passes -> for every subsampled point, the weighted average of the logits of every sphere that
saw it (weight decreasing with the distance to the sphere centre) -> ``votes`` passes with rotations about z
-> projection to every original point through the subsampling map.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..data import build_batch
from ..data.features import make_features
from ..geometry import covering_centers, grid_subsample
from ..io import PointCloud
from ..models.checkpoint import Checkpoint

# A point at the sphere's border still counts, but 20x less than one at its centre.
_MIN_WEIGHT = 0.05


@dataclass
class Segmentation:
    """Per original point: ``labels`` (training ids, int64) and ``proba`` ((N, C) float32 or None);
    ``sub_points`` counts the subsampled points the network saw; ``seconds`` the time spent."""

    labels: np.ndarray
    proba: np.ndarray | None
    sub_points: int
    spheres: int
    seconds: float


def sphere_weight(dist: np.ndarray, radius: float) -> np.ndarray:
    """Vote weight of a point at ``dist`` from its sphere's centre: 1 at the centre, falling to 0.05 at the border."""
    return np.maximum(1.0 - (dist / radius) ** 2, _MIN_WEIGHT).astype(np.float32)


def segment_points(
    ckpt: Checkpoint,
    cloud: PointCloud,
    votes: int = 3,
    device: str | torch.device = "cpu",
    batch_points: int = 60_000,
    want_proba: bool = False,
    coverage: float = 0.7,
    progress=None,
) -> Segmentation:
    """Segment a cloud with a loaded segmentation checkpoint."""
    t0 = time.perf_counter()
    card = ckpt.card
    model = ckpt.model
    dl0, radius = float(card["dl0"]), float(card["sphere_radius"])
    spec = model.pyramid_spec
    if card.get("neighbor_limits"):
        spec = dataclasses.replace(spec, neighbor_limits=list(card["neighbor_limits"]))
    feats = make_features(cloud.fields, cloud.xyz, card["features"], cloud.meta.get("source"))
    local = cloud.xyz - cloud.origin  # float64 relative coordinates; float32 only inside spheres
    sub = grid_subsample(local, dl0, features=feats)
    pts, sub_feats = sub.points, sub.features.astype(np.float32)
    centers = covering_centers(pts, radius, coverage)
    tree = cKDTree(pts)
    members = tree.query_ball_point(centers, radius, workers=-1)
    num_classes = len(card["classes"]["names"])
    logit_sum = torch.zeros((len(pts), num_classes), dtype=torch.float64)
    weight_sum = torch.zeros(len(pts), dtype=torch.float64)
    votes = max(1, int(votes))
    model.eval()
    with torch.inference_mode():
        for v in range(votes):
            theta = 2.0 * math.pi * v / votes
            c, s = math.cos(theta), math.sin(theta)
            rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            batch_idx, batch_pts, batch_feats, budget = [], [], [], 0
            order = np.arange(len(centers))
            for k in order:
                idx = np.asarray(members[k], dtype=np.int64)
                if not len(idx):
                    continue
                batch_idx.append((idx, centers[k]))
                batch_pts.append(((pts[idx] - centers[k]) @ rot.T).astype(np.float32))
                batch_feats.append(sub_feats[idx])
                budget += len(idx)
                last = k == order[-1]
                if budget >= batch_points or last:
                    batch = build_batch(batch_pts, batch_feats, spec).to(device)
                    logits = model(batch).double().cpu()
                    idx_all = np.concatenate([i for i, _ in batch_idx])
                    w = np.concatenate([sphere_weight(np.linalg.norm(pts[i] - ctr, axis=1), radius) for i, ctr in batch_idx])
                    w = torch.from_numpy(w.astype(np.float64))
                    index = torch.from_numpy(idx_all)
                    logit_sum.index_add_(0, index, logits * w[:, None])
                    weight_sum.index_add_(0, index, w)
                    if progress is not None:
                        progress(len(batch_idx))
                    batch_idx, batch_pts, batch_feats, budget = [], [], [], 0
    logit_sum, weight_sum = logit_sum.numpy(), weight_sum.numpy()
    seen = weight_sum > 0
    if not seen.all():  # cannot happen with covering spheres; guard against silent garbage all the same
        raise RuntimeError(f"{int((~seen).sum())} subsampled points were seen by no sphere")
    mean_logits = logit_sum / weight_sum[:, None]
    sub_labels = mean_logits.argmax(axis=1)
    proba = None
    if want_proba:
        z = mean_logits - mean_logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        proba = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)[sub.inverse]
    return Segmentation(labels=sub_labels[sub.inverse].astype(np.int64), proba=proba, sub_points=len(pts),
                        spheres=len(centers), seconds=time.perf_counter() - t0)
