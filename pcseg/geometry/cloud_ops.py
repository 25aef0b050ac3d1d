"""Operations on whole :class:`pcseg.io.PointCloud` objects (all fields carried along)."""
from __future__ import annotations

import numpy as np

from ..io.cloud import PointCloud
from .subsample import grid_subsample, majority_vote

# Integer fields that hold measurements (averaged when points merge); other integer fields are categories or
# flags (classification, return numbers, point source ids...) and take the majority value.
CONTINUOUS_INTEGER_FIELDS = {"intensity", "red", "green", "blue", "nir", "infrared", "alpha", "scan_angle",
                             "scan_angle_rank", "reflectance", "amplitude", "deviation"}


def is_categorical(name: str, values: np.ndarray) -> bool:
    kind = np.asarray(values).dtype.kind
    return kind in "bui" and name.lower() not in CONTINUOUS_INTEGER_FIELDS


def subsample_cloud(cloud: PointCloud, dl: float) -> tuple[PointCloud, np.ndarray]:
    """Grid-subsample a cloud (KPConv §3.3): barycentres; measurements averaged (rounded back to integer types);
    categorical fields (classes, flags, ids) by majority vote. Returns the new cloud and, for every input
    point, the index of its output point."""
    continuous = [n for n, v in cloud.fields.items() if not is_categorical(n, v)]
    feats = np.stack([cloud.fields[n].astype(np.float64) for n in continuous], axis=1) if continuous else None
    sub = grid_subsample(cloud.xyz, dl, features=feats)
    fields = {}
    m = len(sub.points)
    for name, values in cloud.fields.items():
        if name in continuous:
            avg = sub.features[:, continuous.index(name)]
            if values.dtype.kind in "iu":
                info = np.iinfo(values.dtype)
                avg = np.clip(np.round(avg), info.min, info.max)
            fields[name] = avg.astype(values.dtype)
        else:
            fields[name] = majority_vote(sub.inverse, values, m).astype(values.dtype)
    meta = {k: v for k, v in cloud.meta.items() if k != "ply_other_elements"}
    return PointCloud(sub.points, fields, meta), sub.inverse


DENSITY_MIN_POINTS_PER_CELL = 4.0
""":func:`xy_density`: the cell is doubled until occupied cells hold at least this many points on average (a
Poisson cloud then occupies 98% of its cells, so counting occupied area overstates the area by under 2%)."""

PULSE_SHARE_LIMIT = 0.05
""":func:`pulse_ids`: the most points that may sit in groups larger than a pulse can be before the groups are
taken for something else than pulses (time stamps rounded, or one per scan line)."""

MAX_RETURNS_PER_PULSE = 15
"""The most returns one pulse can have in LAS 1.4 (4-bit return numbers): the pulse size limit of a cloud
without ``number_of_returns``."""


def xy_density(xyz: np.ndarray, cell: float = 2.0) -> float:
    """Points per square metre of the area the cloud covers in x, y.

    Definition: number of points / occupied area, where the occupied area is the total area of the square
    cells (side ``cell`` m, grid aligned on the cloud's minimum x, y corner, each cell clipped to the cloud's
    x, y bounding box) that hold at least one point. Holes (water, areas outside a survey's footprint) are
    not counted, unlike points / bounding-box area. Where the occupied cells hold fewer than
    :data:`DENSITY_MIN_POINTS_PER_CELL` points on average the cell side is doubled and the count repeated:
    with cells finer than the point spacing most of the ground between points would count as empty and a
    sparse cloud (0.1 points/m²) would read as about 1 / ``cell``². 0.0 for an empty cloud; inf when all
    points share one x or one y (no area).
    """
    if cell <= 0:
        raise ValueError(f"cell must be positive, got {cell}")
    xy = np.asarray(xyz, dtype=np.float64)[:, :2]
    n = len(xy)
    if n == 0:
        return 0.0
    lo = xy.min(axis=0)
    extent = xy.max(axis=0) - lo
    while True:
        cells = np.floor((xy - lo) / cell).astype(np.int64)
        rows = int(cells[:, 1].max()) + 1
        keys = np.unique(cells[:, 0] * rows + cells[:, 1])
        if n / len(keys) >= DENSITY_MIN_POINTS_PER_CELL or cell >= extent.max():
            break
        cell *= 2.0
    corner = np.stack([keys // rows, keys % rows], axis=1) * cell
    sides = np.clip(extent - corner, 0.0, cell)  # a cell past the far edge of the bounding box is clipped
    area = float(np.prod(sides, axis=1).sum())
    return n / area if area > 0 else float("inf")


def pulse_ids(fields: dict[str, np.ndarray]) -> np.ndarray | None:
    """(N,) int64 pulse number of every point (0 .. pulses - 1), or None where the fields do not tell pulses.

    The returns of one laser pulse share ``gps_time`` (and the flight line's ``point_source_id``, used as well
    where present). None when there is no ``gps_time``, when all points have the same time, or when more than
    :data:`PULSE_SHARE_LIMIT` of the points sit in groups holding more points than a pulse can return (more
    than the group's largest ``number_of_returns``, or than :data:`MAX_RETURNS_PER_PULSE` without that field):
    then the time stamps are rounded or per scan line, not per pulse.
    """
    gps = fields.get("gps_time")
    if gps is None or len(gps) == 0:
        return None
    gps = np.asarray(gps, dtype=np.float64) + 0.0  # + 0.0: -0.0 and 0.0 get one bit pattern
    if len(gps) > 1 and np.all(gps == gps[0]):
        return None
    source = fields.get("point_source_id")
    source = np.zeros(len(gps), np.int64) if source is None else np.asarray(source).astype(np.int64)
    key = np.stack([gps.view(np.int64), source], axis=1)
    _, ids, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    ids = ids.reshape(-1).astype(np.int64)
    returns = fields.get("number_of_returns")
    if returns is None:
        limit = np.full(len(counts), MAX_RETURNS_PER_PULSE)
    else:
        limit = np.zeros(len(counts), np.int64)
        np.maximum.at(limit, ids, np.asarray(returns).astype(np.int64))
    if counts[counts > limit].sum() > PULSE_SHARE_LIMIT * len(gps):
        return None
    return ids


def thin_to_density(xyz: np.ndarray, target: float, rng: np.random.Generator,
                    pulse_ids: np.ndarray | None = None) -> np.ndarray:
    """Sorted int64 indices of the points to keep so that the cloud has ``target`` points/m².

    The cloud's density is :func:`xy_density` ``(xyz)``; a ``target`` at or above it keeps every point.
    Otherwise a share ``p = target / density`` is kept, drawn with ``rng`` (same generator state, same
    result):

    - ``pulse_ids`` None: random point thinning, exactly ``round(p * N)`` points drawn without replacement;
    - ``pulse_ids`` given ((N,) integers, one per pulse, e.g. from :func:`pulse_ids`): pulse thinning, as a
      sparser survey would record, exactly ``round(p * pulses)`` pulses drawn without replacement (each pulse
      kept with probability ``p``), with all of their returns; the point count is then about ``p * N``.

    Both keep points all over the cloud: the kept count divided by the full cloud's occupied area (the
    denominator of :func:`xy_density`) is ``target`` (in expectation for pulse thinning).
    """
    if not target > 0:
        raise ValueError(f"target density must be positive, got {target}")
    xyz = np.asarray(xyz)
    n = len(xyz)
    density = xy_density(xyz) if n else 0.0
    if target >= density:
        return np.arange(n, dtype=np.int64)
    p = target / density
    if pulse_ids is None:
        return np.sort(rng.choice(n, size=int(round(p * n)), replace=False)).astype(np.int64)
    pulse_ids = np.asarray(pulse_ids).reshape(-1)
    if len(pulse_ids) != n:
        raise ValueError(f"{len(pulse_ids)} pulse ids for {n} points")
    _, pulse = np.unique(pulse_ids, return_inverse=True)
    pulse = pulse.reshape(-1)
    m = int(pulse.max()) + 1
    kept = np.zeros(m, dtype=bool)
    kept[rng.choice(m, size=int(round(p * m)), replace=False)] = True
    return np.flatnonzero(kept[pulse]).astype(np.int64)
