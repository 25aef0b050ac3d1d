"""Low / medium / high vegetation from height above the predicted ground (IGN LiDAR HD specification).

An airborne model of the ``als`` class set predicts one vegetation class. Surveys split it by height above
ground: 0-0.5 m low (ASPRS 3), 0.5-1.5 m medium (4), above 1.5 m high vegetation (5). The ground surface is
interpolated from the points the model called ground (:func:`pcseg.geometry.ground.points_surface`: mean
height per 1 m cell, empty cells from the nearest ground cell, bilinear between cell centres). The card of
such a model carries the rule under ``vegetation_split``; ``pcseg segment --vegetation-heights LOW,MEDIUM``
changes the thresholds.

Before the split, every point the network called ground is tested on its own (:func:`refine_ground`): the
network labels 0.5 m cells, and a cell of a meadow or a crop field holds the soil and the grass above it, which
surveys class apart (ground, and low vegetation up to 0.5 m). A predicted ground point that stands more than
``ground_tolerance`` above the plane of its nearest ground points becomes vegetation
(``pcseg segment --ground-tolerance``).
"""
from __future__ import annotations

import numpy as np

from ..geometry.ground import (ASPRS_VEGETATION_CODES, IGN_VEGETATION_HEIGHTS, local_plane_height, points_surface,
                               vegetation_codes)

SURFACE_CELL = 1.0
"""Cell of the ground raster, metres."""

GROUND_TOLERANCE, GROUND_NEIGHBOURS = 0.5, 8
"""The ground test of :func:`refine_ground`: a predicted ground point more than 0.5 m above the plane of its 8
nearest other ground points becomes vegetation. 0.5 m is the top of IGN's low vegetation; it was also the best of
0.1 / 0.2 / 0.3 / 0.5 / 1.0 m for sala-als on seven of its *training* tiles (ground and vegetation IoU), chosen
there and not on the validation tiles. Cards written before the test carry no ``ground_tolerance`` and get these."""


def default_split(names) -> dict | None:
    """The card entry for a class set with ``ground`` and ``vegetation`` classes, else None."""
    names = list(names)
    if "ground" not in names or "vegetation" not in names:
        return None
    return {"ground_class": "ground", "vegetation_class": "vegetation", "thresholds": list(IGN_VEGETATION_HEIGHTS),
            "codes": list(ASPRS_VEGETATION_CODES), "cell": SURFACE_CELL,
            "ground_tolerance": GROUND_TOLERANCE, "ground_neighbours": GROUND_NEIGHBOURS,
            "source": "IGN LiDAR HD specification: low 0-0.5 m, medium 0.5-1.5 m, high vegetation above 1.5 m "
                      "above the ground interpolated from the predicted ground points; a predicted ground point "
                      "more than ground_tolerance above the plane of its ground_neighbours nearest ground points "
                      "is vegetation"}


def refine_ground(xyz: np.ndarray, labels: np.ndarray, ground_id: int, vegetation_id: int, tolerance: float,
                  neighbours: int = 8) -> np.ndarray:
    """Labels with every predicted ground point that stands more than ``tolerance`` metres above the plane of
    its ``neighbours`` nearest other ground points (:func:`pcseg.geometry.ground.local_plane_height`) made
    vegetation. The network labels 0.5 m cells, and a cell of a meadow holds both the soil and the grass on it;
    the test runs on every original point. Points below the plane keep their label (a pit is still ground)."""
    labels = np.asarray(labels).copy()
    ground = np.flatnonzero(labels == ground_id)
    h = local_plane_height(np.asarray(xyz, dtype=np.float64).reshape(-1, 3)[ground], neighbours)
    labels[ground[h > tolerance]] = vegetation_id
    return labels


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
