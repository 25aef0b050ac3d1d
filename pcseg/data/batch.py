"""The one batch format: clouds stacked along the point axis with per-cloud lengths (KPConv supp. A).

:func:`build_batch` turns a list of clouds into a multi-scale pyramid: layer 0 holds the input points (already
grid-subsampled at ``dl0`` by the caller); layer ``l`` holds the grid subsampling of layer 0 at
``dl0 * 2**l``. Per layer it computes the radius-neighbour matrix (shadow index = number of points of that
layer), the pooling neighbours of layer ``l+1`` among layer ``l`` (for strided convolutions), and the nearest
layer-``l+1`` point of every layer-``l`` point (for nearest upsampling). Queries never see other clouds.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch

from ..geometry import grid_subsample
from ..geometry.neighbors import CloudForest


@dataclass
class PyramidSpec:
    """How to build the pyramid a network needs.

    dl0: first cell size; layer ``l`` uses ``dl0 * 2**l``.
    radii: neighbourhood radius of each layer's convolutions (len = number of layers).
    pool_radii: radius of the strided-convolution neighbourhood of layer ``l+1`` among layer-``l`` points
        (len = layers - 1); defaults to ``radii[l]`` as in KPConv (the strided conv works at the finer scale).
    neighbor_limits: cap on neighbours per layer (nearest kept); pooling into ``l+1`` uses the cap of ``l``.
        None: no cap (the matrix is as wide as the largest neighbourhood).
    """

    dl0: float
    radii: list[float]
    pool_radii: list[float] | None = None
    neighbor_limits: list[int] | None = None

    @property
    def num_layers(self) -> int:
        return len(self.radii)

    def pool_radius(self, layer: int) -> float:
        return self.pool_radii[layer] if self.pool_radii is not None else self.radii[layer]

    def limit(self, layer: int) -> int | None:
        return None if self.neighbor_limits is None else int(self.neighbor_limits[layer])


@dataclass
class StackedBatch:
    """Stacked clouds with their pyramid. Index conventions are KPConv's.

    points[l]: (N_l, 3) float32, lengths[l]: (B,) int64 points per cloud at layer l.
    neighbors[l]: (N_l, H_l) int64 into points[l], shadow index N_l.
    pools[l]: (N_{l+1}, P_l) int64 into points[l], shadow N_l (l < L-1).
    upsamples[l]: (N_l,) int64, nearest point of points[l+1] for every point of points[l] (l < L-1).
    features: (N_0, F) float32; labels: (N_0,) int64 or None.
    """

    points: list
    lengths: list
    neighbors: list
    pools: list
    upsamples: list
    features: object
    labels: object = None
    extras: dict = field(default_factory=dict)

    @property
    def num_clouds(self) -> int:
        return int(len(self.lengths[0]))

    def to(self, device: str | torch.device) -> "StackedBatch":
        """Torch tensors on ``device`` (numpy arrays are converted)."""

        def conv(x):
            if x is None:
                return None
            if isinstance(x, list):
                return [conv(v) for v in x]
            if isinstance(x, dict):
                return {k: conv(v) for k, v in x.items()}
            t = torch.as_tensor(x)
            return t.to(device, non_blocking=True)

        return StackedBatch(**{f.name: conv(getattr(self, f.name)) for f in fields(self)})


def build_batch(
    points: list[np.ndarray],
    features: list[np.ndarray],
    spec: PyramidSpec,
    labels: list[np.ndarray] | None = None,
) -> StackedBatch:
    """Stack clouds (each (n_b, 3) coordinates, ideally centred; (n_b, F) features) into a pyramid batch."""
    if not points:
        raise ValueError("a batch needs at least one cloud")
    if len(features) != len(points) or (labels is not None and len(labels) != len(points)):
        raise ValueError("points, features and labels must list the same clouds")
    layer_pts = [[np.asarray(p, dtype=np.float64) for p in points]]
    for layer in range(1, spec.num_layers):
        dl = spec.dl0 * 2**layer
        layer_pts.append([grid_subsample(p, dl).points for p in layer_pts[-1]])
    stacked = [np.concatenate(ps, axis=0) for ps in layer_pts]
    lengths = [np.array([len(p) for p in ps], dtype=np.int64) for ps in layer_pts]
    # One tree per layer serves its convolutions, the pooling into the next layer and the upsampling from the
    # previous one. A layer-l point lies in a cell of layer l+1 whose barycentre is within the cell diagonal,
    # sqrt(3) * dl, of it: 2 * dl bounds the upsampling search (with room for rounding).
    upsample_within = [2.0 * spec.dl0 * 2 ** (layer + 1) for layer in range(spec.num_layers - 1)]
    reach = max(list(spec.radii) + [spec.pool_radius(layer) for layer in range(spec.num_layers - 1)]
                + upsample_within)
    forests = [CloudForest(stacked[layer], lengths[layer], reach) for layer in range(spec.num_layers)]
    neighbors, pools, upsamples = [], [], []
    for layer, forest in enumerate(forests):
        neighbors.append(forest.radius(stacked[layer], spec.radii[layer], spec.limit(layer), lengths[layer]))
        if layer + 1 < spec.num_layers:
            pools.append(forest.radius(stacked[layer + 1], spec.pool_radius(layer), spec.limit(layer),
                                       lengths[layer + 1]))
            upsamples.append(forests[layer + 1].nearest(stacked[layer], lengths[layer], upsample_within[layer]))
    feats = np.concatenate([np.asarray(f, dtype=np.float32).reshape(len(p), -1) for f, p in zip(features, points)])
    labs = None if labels is None else np.concatenate([np.asarray(l, dtype=np.int64).reshape(-1) for l in labels])
    return StackedBatch(
        points=[s.astype(np.float32) for s in stacked],
        lengths=lengths,
        neighbors=neighbors,
        pools=pools,
        upsamples=upsamples,
        features=feats,
        labels=labs,
    )
