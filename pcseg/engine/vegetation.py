"""Low / medium / high vegetation from height above the predicted ground (IGN LiDAR HD specification).

An airborne model of the ``als`` class set predicts one vegetation class. Surveys split it by height above
ground: 0-0.5 m low (ASPRS 3), 0.5-1.5 m medium (4), above 1.5 m high vegetation (5). The ground surface is
interpolated from the points the model called ground (:func:`pcseg.geometry.ground.points_surface`: mean
height per 1 m cell, empty cells from the nearest ground cell, bilinear between cell centres). The card of
such a model carries the rule under ``vegetation_split``; ``pcseg segment --vegetation-heights LOW,MEDIUM``
changes the thresholds.
"""
from __future__ import annotations

import numpy as np

from ..geometry.ground import ASPRS_VEGETATION_CODES, IGN_VEGETATION_HEIGHTS, points_surface, vegetation_codes

SURFACE_CELL = 1.0
"""Cell of the ground raster, metres."""


def default_split(names) -> dict | None:
    """The card entry for a class set with ``ground`` and ``vegetation`` classes, else None."""
    names = list(names)
    if "ground" not in names or "vegetation" not in names:
        return None
    return {"ground_class": "ground", "vegetation_class": "vegetation", "thresholds": list(IGN_VEGETATION_HEIGHTS),
            "codes": list(ASPRS_VEGETATION_CODES), "cell": SURFACE_CELL,
            "source": "IGN LiDAR HD specification: low 0-0.5 m, medium 0.5-1.5 m, high vegetation above 1.5 m "
                      "above the ground interpolated from the predicted ground points"}


def height_above_predicted_ground(xyz: np.ndarray, labels: np.ndarray, ground_id: int,
                                  cell: float = SURFACE_CELL) -> np.ndarray:
    """(N,) float32 height of every point above the surface of the points labelled ``ground_id``; NaN for
    every point when no point is ground."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    ground = np.asarray(labels) == ground_id
    if not ground.any():
        return np.full(len(xyz), np.nan, np.float32)
    surface = points_surface(xyz[ground], cell, xyz[:, :2].min(axis=0), xyz[:, :2].max(axis=0))
    return surface.height(xyz).astype(np.float32)


def asprs_codes(labels: np.ndarray, height: np.ndarray, class_codes: np.ndarray, vegetation_id: int,
                thresholds=IGN_VEGETATION_HEIGHTS, codes=ASPRS_VEGETATION_CODES) -> np.ndarray:
    """ASPRS codes: ``class_codes`` (the class map's decode) with vegetation split by ``height``; vegetation of
    unknown height (no ground predicted) keeps its class code."""
    out = np.asarray(class_codes).astype(np.int64).copy()
    veg = (np.asarray(labels) == vegetation_id) & np.isfinite(height)
    out[veg] = vegetation_codes(height[veg], tuple(thresholds), tuple(codes))
    return out
