"""Voting inference over overlapping spheres (KPConv §4.2, SALA §4.1).

read -> grid subsample at the checkpoint's ``dl0`` -> regular covering spheres of the checkpoint's radius ->
batched forward passes -> for every subsampled point, the weighted average of the logits of every sphere that
saw it (weight decreasing with the distance to the sphere centre) -> ``votes`` passes with rotations about z
-> projection to every original point through the subsampling map.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..data import PyramidSpec, build_batch
from ..data.features import has_color, make_features
from ..geometry import grid_subsample
from ..geometry.tiling import column_covering_centers
from ..io import PointCloud
from ..models.checkpoint import Checkpoint

log = logging.getLogger(__name__)

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
    return np.maximum(1.0 - (dist / radius) ** 2, _MIN_WEIGHT)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def vote_logits(model: torch.nn.Module, spec: PyramidSpec, points: np.ndarray, features: np.ndarray,
                radius: float, num_classes: int, votes: int = 1, device: str | torch.device = "cpu",
                batch_points: int = 60_000, coverage: float = 0.7, progress=None,
                region_scale: float = 1.0, bf16: bool = False) -> tuple[np.ndarray, int]:
    """Weighted mean logits (M, C) of every point of an already subsampled cloud, and the number of spheres.

    ``points`` (M, 3) float64 (any frame; spheres are centred before the float32 cast), ``features`` (M, F).
    ``radius`` is the training sphere radius; inference regions are spheres of ``R = region_scale * radius``
    (the networks are fully convolutional, so a region may be larger than a training sphere). Every point lies
    at least ``(1 - coverage) * radius`` inside a region, the margin a training sphere gives a point at
    ``coverage * radius`` from its centre: centres by :func:`column_covering_centers` with reach
    ``R - (1 - coverage) * radius``. Measured passes of each point through the network per vote (flat
    airborne tiles at dl0 0.5 m, r = 25 m): the cubic lattice of ``covering_centers`` used before, 3.3
    (IGN example) and 4.7 (a sparse 1 km^2 tile); columns at R = r, 2.7 and 2.9; at R = 2r, 1.8 and 1.9.
    ``bf16``: run the network under bfloat16 autocast (CPUs with AVX-512 BF16 / AMX, recent GPUs); logits are
    averaged in float64 either way.
    """
    if region_scale < 1.0:
        raise ValueError("region_scale must be at least 1 (regions no smaller than training spheres)")
    region = float(region_scale) * radius
    centers = column_covering_centers(points, region - (1.0 - coverage) * radius)
    members = cKDTree(points).query_ball_point(centers, region, workers=-1)
    logit_sum = torch.zeros((len(points), num_classes), dtype=torch.float64)
    weight_sum = torch.zeros(len(points), dtype=torch.float64)
    features = np.asarray(features, dtype=np.float32)
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for v in range(max(1, int(votes))):
            theta = 2.0 * math.pi * v / max(1, int(votes))
            c, s = math.cos(theta), math.sin(theta)
            rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            pending: list[tuple[np.ndarray, np.ndarray]] = []
            budget = 0
            for k in range(len(centers)):
                idx = np.asarray(members[k], dtype=np.int64)
                if len(idx):
                    pending.append((idx, centers[k]))
                    budget += len(idx)
                if pending and (budget >= batch_points or k == len(centers) - 1):
                    batch = build_batch([((points[i] - ctr) @ rot.T).astype(np.float32) for i, ctr in pending],
                                        [features[i] for i, _ in pending], spec).to(device)
                    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                        logits = model(batch).double().cpu()
                    index = torch.from_numpy(np.concatenate([i for i, _ in pending]))
                    w = torch.from_numpy(np.concatenate(
                        [sphere_weight(np.linalg.norm(points[i] - ctr, axis=1), region) for i, ctr in pending]))
                    logit_sum.index_add_(0, index, logits * w[:, None])
                    weight_sum.index_add_(0, index, w)
                    if progress is not None:
                        progress(len(pending))
                    pending, budget = [], 0
    model.train(was_training)
    weight_sum = weight_sum.numpy()
    if not (weight_sum > 0).all():  # cannot happen with covering spheres; never return silent garbage
        raise RuntimeError(f"{int((weight_sum <= 0).sum())} points were seen by no sphere")
    return logit_sum.numpy() / weight_sum[:, None], len(centers)


def prepare_inputs(ckpt: Checkpoint, cloud: PointCloud):
    """(pyramid spec with the card's neighbour caps, the cloud grid-subsampled at dl0 with its input channels):
    what :func:`vote_logits` reads."""
    card = ckpt.card
    spec = ckpt.model.pyramid_spec
    if card.get("neighbor_limits"):
        spec = dataclasses.replace(spec, neighbor_limits=list(card["neighbor_limits"]))
    optional = bool(card.get("color_drop"))
    if optional and "rgb" in card["features"] and not has_color(cloud.fields):
        log.warning("%s has no colour: the model reads zero colour, the input it learnt from the %.0f%% of its "
                    "training spheres whose colour was dropped", cloud.meta.get("source") or "the cloud",
                    100 * card["color_drop"])
    feats = make_features(cloud.fields, cloud.xyz, card["features"], cloud.meta.get("source"),
                          color_optional=optional)
    return spec, grid_subsample(cloud.xyz - cloud.origin, float(card["dl0"]), features=feats)


def segment_points(ckpt: Checkpoint, cloud: PointCloud, votes: int = 3, device: str | torch.device = "cpu",
                   batch_points: int = 60_000, want_proba: bool = False, coverage: float = 0.7,
                   progress=None, region_scale: float | None = None, bf16: bool = False) -> Segmentation:
    """Segment a cloud with a loaded segmentation checkpoint."""
    t0 = time.perf_counter()
    card, model = ckpt.card, ckpt.model
    radius = float(card["sphere_radius"])
    spec, sub = prepare_inputs(ckpt, cloud)
    mean_logits, n_spheres = vote_logits(model, spec, sub.points, sub.features, radius,
                                         len(card["classes"]["names"]), votes, device, batch_points, coverage,
                                         progress, region_scale or float(card.get("region_scale", 1.0)), bf16)
    labels = mean_logits.argmax(axis=1)[sub.inverse].astype(np.int64)
    proba = softmax(mean_logits).astype(np.float32)[sub.inverse] if want_proba else None
    return Segmentation(labels=labels, proba=proba, sub_points=len(sub.points), spheres=n_spheres,
                        seconds=time.perf_counter() - t0)
