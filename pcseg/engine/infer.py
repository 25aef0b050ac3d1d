"""Voting inference over tiles of the cloud (KPConv §4.2, SALA §4.1: test-time rotations averaged).

read -> grid subsample at the checkpoint's ``dl0`` -> square tiles with margins (at least a training sphere wide)
-> batched forward passes -> for every subsampled point, the logits of the tile that owns it -> ``votes`` passes
with rotations about z, averaged -> projection to every original point through the subsampling map.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..data import PyramidSpec, build_batch
from ..data.features import GROUND_CHANNELS, ground_surfaces, has_color, has_echo, make_features
from ..geometry import grid_subsample, thin_to_density, xy_density
from ..geometry.tiling import quadtree_tiles
from ..io import PointCloud
from ..models.checkpoint import Checkpoint
from .advice import density_advice

log = logging.getLogger(__name__)

@dataclass
class Segmentation:
    """Per original point: ``labels`` (training ids, int64), ``runner_up`` (the second most likely class, int64)
    and ``proba`` ((N, C) float32 or None);
    ``sub_points`` counts the subsampled points the network saw, ``regions`` the inference regions of one vote,
    ``passes`` how many times a subsampled point went through the network per vote (mean); ``seconds`` the time
    spent; ``hag`` the ground estimates of the ``hag`` or ``terrain`` input channel
    (:func:`pcseg.data.features.ground_surfaces`)
    for a model that reads it, which the building test reuses."""

    labels: np.ndarray
    runner_up: np.ndarray
    proba: np.ndarray | None
    sub_points: int
    regions: int
    passes: float
    seconds: float
    hag: list | None = None


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_two(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(most likely, second most likely) class of every row of (M, C) logits, int64 (the second is the first
    when C is 1)."""
    top = logits.argmax(axis=1).astype(np.int64)
    if logits.shape[1] < 2:
        return top, top.copy()
    rest = logits.copy()
    rest[np.arange(len(rest)), top] = -np.inf
    return top, rest.argmax(axis=1).astype(np.int64)


def vote_logits(model: torch.nn.Module, spec: PyramidSpec, points: np.ndarray, features: np.ndarray,
                radius: float, num_classes: int, votes: int = 1, device: str | torch.device = "cpu",
                batch_points: int = 60_000, coverage: float = 0.7, progress=None,
                bf16: bool = False, density_cap: float | None = None) -> tuple[np.ndarray, int, float]:
    """Mean logits (M, C) over the votes of every point of an already subsampled cloud, the number of regions
    of the first vote, and the passes: points sent through the network per point and vote.

    ``points`` (M, 3) float64 (any frame; regions are centred before the float32 cast), ``features`` (M, F),
    ``radius`` the training sphere radius ``r``. The networks are fully convolutional, so an inference region
    need not be a training sphere: regions are square columns, the tiles of :func:`quadtree_tiles` (squares at
    least ``2 r`` wide, as large as ``batch_points`` allows, each seen with a margin of ``(1 - coverage) r`` on
    every side). A point's logits come from the one tile whose square holds it: it lies at least
    ``(1 - coverage) r`` inside that region horizontally, the margin a training sphere gives a point at
    ``coverage * r`` from its centre. KPConv §4.2 instead averages overlapping spheres; with the margins as the
    only overlap, each point goes through the network 1.0-1.07 times per vote on the airborne tiles here (at
    most ``((2 + 2 (1 - coverage)) / 2)^2`` = 1.69 where every tile is at its smallest), against 1.8-1.9 for
    spheres twice the training radius and 2.7-4.7 for training-sized ones.
    Vote ``v`` turns the cloud by ``2 pi v / votes`` about z before tiling: the rotation is test-time
    augmentation, and the tiles' borders move between votes.
    ``bf16``: run the network under bfloat16 autocast (CPUs with AVX-512 BF16 / AMX, recent GPUs); logits are
    averaged in float64 either way.
    ``density_cap`` (points/m², a model trained with ``density_cap``): a cloud denser than the cap is thinned
    to it at random (:func:`pcseg.geometry.thin_to_density`, a fixed seed: the same cloud, the same points)
    the way the training spheres were, the network sees the kept points only, and every other point takes the
    logits of the nearest kept point (3-D distance). The passes then count the kept points.
    """
    if density_cap is not None and len(points):
        keep = thin_to_density(points, float(density_cap), np.random.default_rng(0))
        if len(keep) < len(points):
            kept_logits, n_regions, passes = vote_logits(model, spec, points[keep], np.asarray(features)[keep],
                                                         radius, num_classes, votes, device, batch_points,
                                                         coverage, progress, bf16)
            nearest = cKDTree(points[keep]).query(points, workers=torch.get_num_threads())[1]
            return kept_logits[nearest], n_regions, passes * len(keep) / len(points)
    margin = (1.0 - coverage) * radius
    logit_sum = torch.zeros((len(points), num_classes), dtype=torch.float64)
    seen = np.zeros(len(points), dtype=np.int64)
    features = np.asarray(features, dtype=np.float32)
    mid = points.mean(axis=0) if len(points) else np.zeros(3)
    n_regions, fed = 0, 0

    def tile_groups():
        """Per vote (one turn of the cloud about z), the tiles grouped into batches of about ``batch_points``:
        (turned cloud, owner tile of every point, tile centres, [(member rows, tile), ...]). A generator, so that
        one vote's turned cloud is alive at a time."""
        nonlocal n_regions, fed
        for v in range(max(1, int(votes))):
            theta = 2.0 * math.pi * v / max(1, int(votes))
            c, s = math.cos(theta), math.sin(theta)
            rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
            turned = (points - mid) @ rot.T
            lower, side, owner = quadtree_tiles(turned[:, :2], 2.0 * radius, margin, batch_points)
            centre_xy = lower + side[:, None] / 2.0
            members = cKDTree(turned[:, :2]).query_ball_point(centre_xy, side / 2.0 + margin, p=np.inf,
                                                              workers=torch.get_num_threads())
            n_regions = n_regions or len(side)
            pending: list[tuple[np.ndarray, int]] = []   # (member rows, tile)
            budget = 0
            for t in range(len(side)):                  # loop over tiles
                idx = np.asarray(members[t], dtype=np.int64)
                if len(idx):
                    pending.append((idx, t))
                    budget += len(idx)
                    fed += len(idx)
                if pending and (budget >= batch_points or t == len(side) - 1):
                    yield turned, owner, centre_xy, pending
                    pending, budget = [], 0

    def prepare(group):
        """The batch of one group of tiles (neighbour searches: numpy and scipy, which release the GIL), and which
        of its points the group owns: the margins only gave context."""
        turned, owner, centre_xy, pending = group
        centres = [np.array([*centre_xy[k], np.median(turned[i, 2])]) for i, k in pending]
        batch = build_batch([(turned[i] - ctr).astype(np.float32) for (i, _), ctr in zip(pending, centres)],
                            [features[i] for i, _ in pending], spec)
        own = np.concatenate([owner[i] == k for i, k in pending])
        return batch, own, np.concatenate([i for i, _ in pending])[own], len(pending)

    was_training = model.training
    model.eval()
    # The next batch is built in a second thread while the network runs on this one: the same batches in the
    # same order, so the same logits.
    groups = tile_groups()
    with torch.inference_mode(), ThreadPoolExecutor(max_workers=1) as builder:
        first = next(groups, None)
        upcoming = builder.submit(prepare, first) if first is not None else None
        while upcoming is not None:                 # loop over batches
            batch, own, index, tiles = upcoming.result()
            following = next(groups, None)
            upcoming = builder.submit(prepare, following) if following is not None else None
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(batch.to(device)).double().cpu()
            logit_sum.index_add_(0, torch.from_numpy(index), logits[torch.from_numpy(own)])
            np.add.at(seen, index, 1)
            if progress is not None:
                progress(tiles)
    model.train(was_training)
    if not (seen == max(1, int(votes))).all():  # the tiles own every point once per vote; never return garbage
        raise RuntimeError(f"{int((seen == 0).sum())} points were seen by no region")
    return logit_sum.numpy() / seen[:, None], n_regions, fed / max(1, len(points) * max(1, int(votes)))


def warn_inputs(card: dict, xyz: np.ndarray, source: str, fields: dict) -> None:
    """Log what a cloud (points ``xyz``, per-point ``fields``) lacks for the model of ``card``: return numbers
    for a model that reads them, and density where the card's density figures say the model does not hold up
    (:func:`pcseg.engine.advice.density_advice`)."""
    if "echo" in card["features"] and len(xyz) and not has_echo(fields):
        log.warning("%s has no usable return numbers: %s reads them, and its card gives its quality without them "
                    "(a model reading x, y, z only, such as sala-als, may suit this file better)", source,
                    card.get("name") or "the model")
    if len(xyz) and (card.get("robustness_validation") or {}).get("density"):
        from ..models import zoo

        line = density_advice(card, xy_density(xyz), source, zoo.shipped(), has_echo(fields))
        if line:
            log.warning("%s", line)


def prepare_inputs(ckpt: Checkpoint, cloud: PointCloud, hag: list | None = None):
    """(pyramid spec with the card's neighbour caps, the cloud grid-subsampled at dl0 with its input channels):
    what :func:`vote_logits` reads. ``hag``: the cloud's :func:`pcseg.data.features.ground_surfaces`, when the
    caller computed them."""
    card = ckpt.card
    spec = ckpt.model.pyramid_spec
    if card.get("neighbor_limits"):
        spec = dataclasses.replace(spec, neighbor_limits=list(card["neighbor_limits"]))
    optional = bool(card.get("color_drop"))
    if optional and "rgb" in card["features"] and not has_color(cloud.fields):
        log.warning("%s has no colour: the model reads zero colour, the input it learnt from the %.0f%% of its "
                    "training spheres whose colour was dropped", cloud.meta.get("source") or "the cloud",
                    100 * card["color_drop"])
    warn_inputs(card, cloud.xyz, cloud.meta.get("source") or "the cloud", cloud.fields)
    feats = make_features(cloud.fields, cloud.xyz, card["features"], cloud.meta.get("source"),
                          color_optional=optional, hag=hag)
    return spec, grid_subsample(cloud.xyz - cloud.origin, float(card["dl0"]), features=feats)


def segment_points(ckpt: Checkpoint, cloud: PointCloud, votes: int = 3, device: str | torch.device = "cpu",
                   batch_points: int = 60_000, want_proba: bool = False, coverage: float = 0.7,
                   progress=None, bf16: bool = False) -> Segmentation:
    """Segment a cloud with a loaded segmentation checkpoint."""
    t0 = time.perf_counter()
    card, model = ckpt.card, ckpt.model
    radius = float(card["sphere_radius"])
    grounded = any(c in GROUND_CHANNELS for c in card["features"])
    hag = ground_surfaces(cloud.xyz, card["features"]) if grounded and len(cloud) else None
    spec, sub = prepare_inputs(ckpt, cloud, hag)
    mean_logits, n_regions, passes = vote_logits(model, spec, sub.points, sub.features, radius,
                                                 len(card["classes"]["names"]), votes, device, batch_points,
                                                 coverage, progress, bf16, card.get("density_cap"))
    top, second = top_two(mean_logits)
    labels, runner_up = top[sub.inverse], second[sub.inverse]
    proba = softmax(mean_logits).astype(np.float32)[sub.inverse] if want_proba else None
    return Segmentation(labels=labels, runner_up=runner_up, proba=proba, sub_points=len(sub.points),
                        regions=n_regions, passes=passes, seconds=time.perf_counter() - t0, hag=hag)
