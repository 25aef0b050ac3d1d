"""Procedural indoor rooms labelled with the 13 S3DIS classes (``--data synthetic:rooms``), optionally furnished
with real scanned objects (``--data synthetic:bank-rooms``), and bank rooms of varied shape and completeness
(``--data synthetic:varied-rooms``, see *Variants* below).

For tests, smoke runs and pre-training only: scores measured on these rooms say nothing about real-world
quality and must never be reported as such.

A room is a box (floor, ceiling, four walls; a varied room's ceiling may slope) with doors and windows cut
into the walls, boards hung on them, ceiling beams, columns along the walls, and furniture on the floor: tables
with chairs around them, sofas, bookcases against the walls, and clutter (boxes, bins, cylinders) on tables,
shelves and the floor. Every element is built from boxes, rectangles and cylinders whose surfaces are sampled
uniformly at random (Poisson-distributed counts per face, no Python loop over points). Then:

* hidden surfaces are removed: points inside another part's solid volume (the floor under a bookcase, the
  wall behind a column);
* scanner occlusion: one or two scanner positions are placed at eye height in free floor space; a point is
  kept when the segment from some scanner to it crosses no solid box (a slab test per box, vectorised over
  points). Back faces of objects and the surfaces behind them disappear, as in a real scan;
* the scanner's density falls with range: a visible point is kept with probability ``min(1, (r0 / r)**2)``
  (r0 = 3 m), as the spacing of a terrestrial scan grows with range;
* scanner noise: isotropic Gaussian, 4 mm by default;
* colours: each object draws a base colour from its class palette (walls, beams and columns share the
  room's paint, as in S3DIS), with per-point noise and a simple shading by surface orientation.

With an object bank (:mod:`pcseg.data.object_bank`, ``bank=``) each piece of furniture is, with probability
``bank_share``, a real object of its class instead of boxes, placed where its kind belongs: doors and windows
fill wall openings cut to their size (front face flush with the wall), bookcases and sofas stand back to a
wall, tables stand free with chairs around them and clutter on their top surface (the top found in the scan),
pictures and screens hang on free wall segments, small clutter (the tabletop objects) stands on tables and
shelves, larger clutter on the floor. Each gets a yaw (a quarter turn for tables and chairs, which stand square
to the room; any angle for clutter; wall-facing for wall objects), a scale jitter of +-10% and a colour jitter
(per-channel gain and offset). Nothing overlaps: every footprint (the rectangle around the rotated object) is
reserved on the floor plan or on its supporting surface before anything is drawn, and the rooms report their
layout (:class:`Room`) so that tests can check it on the points. The bank objects are thinned to the room's
sampling density (one scanned point per cell of ``1 / sqrt(density)``), then the whole room goes through the
same scan simulation:

* occlusion by other things: procedural boxes hide bank points with the slab test, and bank objects hide
  everything behind them (walls, the floor under a sofa, another object) with a z-buffer of their points
  seen from the scanner (:func:`_hidden_by_points`: spherical range images, one per angular resolution, each
  bank point splatted at the resolution of its spacing seen from its range). An object's own points are never
  hidden by itself: a bank object is already a scan, its back and underside already missing where the real
  scanner did not see them, and a z-buffer of scattered points against themselves would only punch holes in
  surfaces where neighbouring samples of the same surface happen to be nearer;
* range falloff and noise as for the procedural parts (the scans' own noise stays; 4 mm more is small);
* per room (bank rooms only, so that the procedural default stays as it was): the sampling density is drawn
  in 0.6-1.4 x ``density``, the falloff range r0 in 2-4.5 m, and a white balance / exposure (per-channel gain
  0.85-1.15 times a brightness 0.8-1.15) is applied to every colour. Real colours are not re-shaded or
  re-noised: they already carry the light and sensor noise of their scans.

Variants (``variants=True``, the rooms of ``synthetic:varied-rooms``; issue #28): so that a model learns what
makes a ceiling a ceiling (the highest surface above the floor) rather than what the training rooms looked like,
each room draws, independently of one another and before its layout:

* beams: none with probability 1/2 (:data:`VARIANT_NO_BEAMS`; the beam class is then absent);
* the ceiling (:data:`VARIANT_CEILINGS`): flat (1/2), a shed roof (1/4: one plane tilted 8-25 degrees about
  the axis of one of the four walls, drawn uniformly, rising away from it) or a gable (1/4: two planes of the
  same 8-25 degree pitch, rising from the two long walls to a ridge along the middle of the room). The drawn
  room height is the ceiling's lowest point (the eaves), so that doors, windows, boards and furniture, placed
  below it as in a flat room, stay below the ceiling everywhere; walls and columns reach up to the ceiling
  (their tops follow it), beams run level along the slope's contour lines with their top at the ceiling's
  lowest point above them. The ceiling keeps its label and is sampled at the room's density over its true
  (sloped) area; :attr:`RoomVariant.planes` and :func:`ceiling_height` describe it;
* a partial scan, with probability 0.35 (:data:`VARIANT_CROP`), as a crop box around a real scan gives it:
  a height crop only (40% of the cropped rooms), a wall cut only (40%) or both (20%). The height crop cuts
  away everything above a height drawn uniformly between 1.6 m and the lowest ceiling point minus 0.1 m (the
  scan then has no ceiling, and usually no beam); the wall cut is one vertical plane, with probability 1/2
  (:data:`VARIANT_CUT_CORNER`) parallel to the wall farthest from the scanners (0.3 m to 40% of the room's
  span inside it: that wall is missing), else oblique across the corner farthest from them (through the two
  walls that meet there, at 30-100% of their lengths from the corner: their far parts are missing); every
  scanner stays on the kept side, at least 0.5 m from the plane (a wall cut with no wall far enough from the
  scanners becomes a corner cut).
  The crop applies to the finished scan (after occlusion, range thinning and noise): it is a crop of a real
  scan, not a room without walls whose scanners would see outside. Objects cut in two keep their points on the
  kept side; the room keeps its scanner positions (above a height crop, possibly) and the layout objects that
  still have points or reach the kept part.

Occlusion needs nothing more: a room under a sloped ceiling is still convex (the floor box cut by one or two
planes), so the shell occludes nothing, and the boxes of columns reaching above a sloped ceiling are only crossed
by segments that leave the room. The 13-class rule becomes "every class but those the variant removed"
(:attr:`Room.absent`: the beams it did not draw, the classes the crop cut away), checked on the room before its
crop so that crops are not redrawn. Without variants nothing of this is drawn: the rooms of ``synthetic:rooms``
and ``synthetic:bank-rooms`` are unchanged for a seed.

:func:`generate_room` returns ``(xyz float64 (N, 3), rgb uint8 (N, 3), labels int64 (N,))`` with S3DIS ids
(:data:`pcseg.data.classmaps.S3DIS_NAMES`); every room contains all 13 classes (but those its variant removed).
:func:`build_room` returns the :class:`Room` with instances, layout, scanner positions and variant. Without a
bank both give exactly the rooms of generator version 1 for the same seeds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from ..geometry import group_by_cell
from .classmaps import S3DIS_NAMES

if TYPE_CHECKING:
    from .object_bank import ObjectBank

GENERATOR_VERSION = 2
"""Bumped whenever the generator's output for a seed changes (cached preprocessing of old rooms then misses).
2: rooms furnished from the object bank (the procedural rooms of a seed are unchanged). The variants
(``synthetic:varied-rooms``) came later without a bump: they add rooms and change none (their sources have
their own names and options, hence their own cache entries)."""

C = {name: i for i, name in enumerate(S3DIS_NAMES)}

# Base colours per class (RGB 0-255); each object picks one and perturbs it
_PALETTE = {
    "paint": [(225, 222, 210), (236, 232, 220), (205, 210, 205), (230, 215, 190)],
    "ceiling": [(240, 240, 238), (228, 228, 222)],
    "floor": [(120, 110, 100), (90, 95, 110), (150, 120, 90), (170, 165, 155)],
    "door": [(140, 95, 60), (110, 80, 55), (170, 170, 175), (200, 190, 170)],
    "window": [(170, 190, 210), (140, 160, 175), (200, 210, 220)],
    "board": [(245, 245, 245), (40, 70, 50), (230, 232, 235)],
    "table": [(160, 120, 80), (230, 230, 225), (120, 90, 60), (90, 90, 95)],
    "chair": [(30, 30, 35), (40, 60, 130), (150, 40, 40), (110, 110, 115)],
    "sofa": [(90, 70, 60), (60, 80, 110), (130, 40, 50), (150, 145, 130)],
    "bookcase": [(150, 110, 70), (100, 100, 105), (190, 170, 140)],
}


class _Scene:
    """Accumulates sampled surfaces (points, normals, labels, colours) and the solid boxes that occlude."""

    def __init__(self, rng: np.random.Generator, density: float):
        self.rng, self.density = rng, density
        self.pts, self.nrm, self.lab, self.col, self.part, self.inst = [], [], [], [], [], []
        self.boxes: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_parts = 0
        self.current = -1  # the layout object being drawn (-1: the room's shell, beams)

    def color(self, key: str) -> np.ndarray:
        base = np.array(_PALETTE[key][self.rng.integers(len(_PALETTE[key]))], dtype=np.float64)
        return np.clip(base + self.rng.normal(0, 12, 3), 0, 255)

    def _add(self, pts, nrm, label, color, part) -> None:
        self.pts.append(pts)
        self.nrm.append(nrm)
        self.lab.append(np.full(len(pts), label, np.int64))
        self.col.append(np.broadcast_to(color, (len(pts), 3)))
        self.part.append(np.full(len(pts), part, np.int64))
        self.inst.append(np.full(len(pts), self.current, np.int64))

    def scanned(self, pts, rgb, label) -> None:
        """Points of a real scan (a bank object): no normal (never re-shaded), part -3 (never a box)."""
        self._add(pts, np.zeros((len(pts), 3)), label, rgb, _SCANNED)

    def rect(self, origin, u, v, label, color, density_factor=1.0) -> None:
        """The parallelogram origin + a*u + b*v, a, b in [0, 1] (normal u x v)."""
        origin, u, v = (np.asarray(a, dtype=np.float64) for a in (origin, u, v))
        normal = np.cross(u, v)
        area = np.linalg.norm(normal)
        n = self.rng.poisson(area * self.density * density_factor)
        ab = self.rng.random((n, 2))
        pts = origin + ab[:, :1] * u + ab[:, 1:] * v
        self._add(pts, np.broadcast_to(normal / max(area, 1e-12), (n, 3)), label, color, -1)

    def box(self, lo, hi, label, color, solid=True) -> int:
        """The six faces of the axis-aligned box [lo, hi]; a solid box hides what lies inside it and occludes."""
        lo, hi = np.minimum(lo, hi).astype(np.float64), np.maximum(lo, hi).astype(np.float64)
        part = self.n_parts
        self.n_parts += 1
        size = hi - lo
        for axis in range(3):
            a, b = [k for k in range(3) if k != axis]
            area = size[a] * size[b]
            for side in (0, 1):
                n = self.rng.poisson(area * self.density)
                pts = lo + self.rng.random((n, 3)) * size
                pts[:, axis] = hi[axis] if side else lo[axis]
                nrm = np.zeros((n, 3))
                nrm[:, axis] = 1.0 if side else -1.0
                self._add(pts, nrm, label, color, part)
        if solid:
            self.boxes.append((lo, hi, part))
        return part

    def cylinder(self, center_xy, radius, z0, z1, label, color) -> None:
        """A vertical cylinder's side and top (an open bin or a round object)."""
        n = self.rng.poisson(2 * np.pi * radius * (z1 - z0) * self.density)
        phi = self.rng.uniform(0, 2 * np.pi, n)
        nrm = np.stack([np.cos(phi), np.sin(phi), np.zeros(n)], axis=1)
        pts = np.column_stack([center_xy[0] + radius * nrm[:, 0], center_xy[1] + radius * nrm[:, 1],
                               self.rng.uniform(z0, z1, n)])
        self._add(pts, nrm, label, color, -1)
        m = self.rng.poisson(np.pi * radius**2 * self.density)
        r, t = radius * np.sqrt(self.rng.random(m)), self.rng.uniform(0, 2 * np.pi, m)
        top = np.column_stack([center_xy[0] + r * np.cos(t), center_xy[1] + r * np.sin(t), np.full(m, z1)])
        self._add(top, np.broadcast_to([0.0, 0.0, 1.0], (m, 3)), label, color, -1)
        # the cylinder occludes like its inscribed box
        h = radius / np.sqrt(2)
        self.boxes.append((np.array([center_xy[0] - h, center_xy[1] - h, z0]),
                           np.array([center_xy[0] + h, center_xy[1] + h, z1]), -2))

    def arrays(self):
        cat = np.concatenate
        return (cat(self.pts), cat(self.nrm), cat(self.lab), cat(self.col).astype(np.float64), cat(self.part),
                cat(self.inst))


_SCANNED = -3  # part id of bank points


@dataclass
class PlacedObject:
    """One object of a room's layout: its footprint is the rectangle of half extents ``half`` around
    ``center`` turned by ``yaw`` (radians, counter-clockwise), from height ``z0`` to ``z1``.

    support: ``floor`` (stands on the floor), ``surface`` (on the top of object ``on``: a table, a shelf),
    ``wall`` (hangs on a wall) or ``opening`` (fills a door or window opening); bank: the bank object's
    index (None for procedural ones) and source its file.
    """

    label: int
    support: str
    center: tuple[float, float]
    yaw: float
    half: tuple[float, float]
    z0: float
    z1: float
    on: int | None = None
    bank: int | None = None
    source: str | None = None

    def corners(self) -> np.ndarray:
        """(4, 2) footprint corners, counter-clockwise."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        local = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * self.half
        return local @ np.array([[c, s], [-s, c]]) + self.center


@dataclass
class Room:
    """A generated room: points (``xyz``, ``rgb``, S3DIS ``labels``), the layout object each point belongs to
    (``instances``, -1 for the shell and beams), the ``objects`` of the layout, the ``scanners`` (S, 3) and
    the scan settings drawn for it (``falloff`` r0 in metres, sampling ``density`` per square metre), its
    ``size`` (length, width, height: the height of the ceiling's lowest point) and, in a varied room, its
    ``variant``."""

    xyz: np.ndarray
    rgb: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    objects: list[PlacedObject] = field(default_factory=list)
    scanners: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    falloff: float = 3.0
    density: float = 800.0
    size: tuple[float, float, float] = (0.0, 0.0, 0.0)
    variant: "RoomVariant | None" = None
    absent: tuple[int, ...] = ()
    """Classes the variant removed (the beam class of a room without beams, classes a crop cut away): every
    other S3DIS class is present."""


@dataclass
class RoomVariant:
    """What a varied room (``variants=True``, see the module docstring) drew.

    beams: whether it has ceiling beams; ceiling: ``flat``, ``shed`` or ``gable``, tilted by ``slope``
    degrees (0 when flat); planes: (K, 3) rows (c, gx, gy), the ceiling is ``z = min_k(c + gx x + gy y)``
    (:func:`ceiling_height`); its lowest point is the room's drawn height, ``Room.size[2]``. crop_height: the
    height above which the scan was cut away (None: not cropped); cut: (mx, my, off), the points with
    ``mx x + my y > off`` were cut away (None: not cut); cut_kind: ``wall`` (a plane parallel to the wall
    farthest from the scanners: that wall is missing) or ``corner`` (an oblique plane across the farthest
    corner: the far parts of the two walls that meet there are missing).
    """

    beams: bool
    ceiling: str
    slope: float
    planes: np.ndarray
    crop_height: float | None = None
    cut: np.ndarray | None = None
    cut_kind: str | None = None


def ceiling_height(planes: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Height of the ceiling ``min_k(c_k + gx_k x + gy_k y)`` of :attr:`RoomVariant.planes` above ``xy`` (N, 2)."""
    planes = np.asarray(planes, dtype=np.float64).reshape(-1, 3)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    return np.min(planes[:, 0] + xy @ planes[:, 1:].T, axis=1)


def _ceiling_extremes(planes: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float]:
    """(lowest, highest) ceiling height over the rectangle [x0, x1] x [y0, y1] (a segment when degenerate).

    The ceiling is a minimum of planes: its lowest point over a rectangle is a corner, its highest a corner or
    a point of a ridge (where two planes meet; the ridges drawn here are parallel to x or y)."""
    xs, ys = [x0, x1], [y0, y1]
    for i in range(len(planes)):
        for j in range(i + 1, len(planes)):
            dc, dgx, dgy = planes[i] - planes[j]
            if dgx == 0.0 and dgy != 0.0 and y0 <= -dc / dgy <= y1:
                ys.append(-dc / dgy)
            elif dgy == 0.0 and dgx != 0.0 and x0 <= -dc / dgx <= x1:
                xs.append(-dc / dgx)
    corners = ceiling_height(planes, np.array([(x, y) for x in (x0, x1) for y in (y0, y1)]))
    top = ceiling_height(planes, np.array([(x, y) for x in xs for y in ys]))
    return float(corners.min()), float(top.max())


class _Floorplan:
    """Free floor rectangles: rejection sampling of furniture footprints that do not overlap.

    Also used for the top of a table or shelf (``x0``, ``y0``: its corner)."""

    def __init__(self, length: float, width: float, x0: float = 0.0, y0: float = 0.0):
        self.length, self.width = length, width
        self.x0, self.y0 = x0, y0
        self.taken: list[tuple[float, float, float, float]] = []

    def free(self, x0, y0, x1, y1, margin=0.05) -> bool:
        if x0 < self.x0 or y0 < self.y0 or x1 > self.x0 + self.length or y1 > self.y0 + self.width:
            return False
        return all(x1 + margin <= a or x0 - margin >= c or y1 + margin <= b or y0 - margin >= d
                   for a, b, c, d in self.taken)

    def take(self, x0, y0, x1, y1) -> None:
        self.taken.append((x0, y0, x1, y1))


def _wall_frame(wall: int, length: float, width: float):
    """Origin, unit direction along the wall, inward normal, wall length, for walls 0..3 (counter-clockwise)."""
    frames = [
        (np.array([0.0, 0.0]), np.array([1.0, 0.0]), np.array([0.0, 1.0]), length),
        (np.array([length, 0.0]), np.array([0.0, 1.0]), np.array([-1.0, 0.0]), width),
        (np.array([length, width]), np.array([-1.0, 0.0]), np.array([0.0, -1.0]), length),
        (np.array([0.0, width]), np.array([0.0, -1.0]), np.array([1.0, 0.0]), width),
    ]
    return frames[wall]


def _footprint_against_wall(wall, s0, s1, depth, length, width):
    """Axis-aligned footprint (x0, y0, x1, y1) of a piece of furniture against ``wall`` from s0 to s1."""
    o, d, n, _ = _wall_frame(wall, length, width)
    corners = np.array([o + d * s0, o + d * s1, o + d * s0 + n * depth, o + d * s1 + n * depth])
    return (*corners.min(axis=0), *corners.max(axis=0))


def generate_room(
    rng: np.random.Generator,
    density: float = 800.0,
    noise: float = 0.004,
    n_scanners: int | None = None,
    size: tuple[float, float, float] | None = None,
    bank: "ObjectBank | None" = None,
    bank_share: float = 0.6,
    variants: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random room: ``(xyz float64 (N, 3), rgb uint8 (N, 3), labels int64 (N,))``, S3DIS ids.

    density: surface samples per square metre before occlusion and range thinning (which remove a share);
    noise: scanner noise standard deviation in metres; n_scanners: 1 or 2 (random when None);
    size: (length, width, height) in metres (random 4-8 x 3.5-6 x 2.7-3.3 when None); bank: an object bank
    to furnish the room with real objects (None: procedural furniture only, the rooms of generator version 1);
    bank_share: the probability that a piece of furniture is a bank object when the bank has one that fits;
    variants: draw the room's variant (beams or none, flat or sloped ceiling, partial-scan crop: see the module
    docstring; False: the rooms of ``synthetic:rooms`` / ``synthetic:bank-rooms``, unchanged).
    Coordinates: the floor's corner at the origin, z up, floor at z = 0. All 13 classes are present (but those
    a variant removed): a layout where some piece of furniture found no room is drawn again (from the same
    generator, so still deterministic for a seed).
    """
    room = build_room(rng, density, noise, n_scanners, size, bank=bank, bank_share=bank_share, variants=variants)
    return room.xyz, room.rgb, room.labels


def build_room(
    rng: np.random.Generator,
    density: float = 800.0,
    noise: float = 0.004,
    n_scanners: int | None = None,
    size: tuple[float, float, float] | None = None,
    bank: "ObjectBank | None" = None,
    bank_share: float = 0.6,
    occlusion: bool = True,
    variants: bool = False,
) -> Room:
    """:func:`generate_room` with everything it knows: the :class:`Room` (instances, layout, scanners).

    occlusion: False keeps the points that the scanners cannot see (range thinning still applies, with the
    same random draws, so the room is otherwise identical): what tests compare occlusion against.
    size[2]: the height of the ceiling's lowest point (a sloped ceiling rises from it).
    """
    if size is not None and (min(size[0], size[1]) < 3.0 or size[2] < 2.4):
        raise ValueError("rooms need at least 3 x 3 m of floor and 2.4 m of height")
    if not 0.0 <= bank_share <= 1.0:
        raise ValueError("bank_share must lie in [0, 1]")
    for _ in range(50):
        room = _generate_room(rng, density, noise, n_scanners, size, bank, bank_share, occlusion, variants)
        if len(set(np.unique(room.labels).tolist()) | set(room.absent)) == len(S3DIS_NAMES):
            return room
    raise RuntimeError("could not place all 13 classes in 50 layouts (room too small or density too low)")


def _thin(local: np.ndarray, spacing: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of one random point per grid cell of size ``spacing``: a scan thinned to a sampling density,
    keeping real points (barycentres would smooth away the scan's noise)."""
    inverse, _ = group_by_cell(local, spacing)
    order = rng.permutation(len(local))
    _, first = np.unique(inverse[order], return_index=True)
    return np.sort(order[first])


def _rotated_half(half_w: float, half_d: float, yaw: float) -> tuple[float, float]:
    """Half extents of the axis-aligned box around a (half_w, half_d) rectangle turned by ``yaw``."""
    c, s = abs(math.cos(yaw)), abs(math.sin(yaw))
    return c * half_w + s * half_d, s * half_w + c * half_d


def _wall_yaw(wall: int, length: float, width: float) -> float:
    """Yaw that turns an object's local +y (its front) to the wall's inward normal."""
    n = _wall_frame(wall, length, width)[2]
    return math.atan2(n[1], n[0]) - math.pi / 2


# Varied rooms (``variants=True``): the probabilities of each room's independent draws (module docstring)
VARIANT_NO_BEAMS = 0.5
VARIANT_CEILINGS = (("flat", 0.5), ("shed", 0.25), ("gable", 0.25))
VARIANT_SLOPE = (8.0, 25.0)  # degrees
VARIANT_CROP = 0.35  # a partial scan: the share of cropped rooms, then what the crop does:
VARIANT_CROP_KINDS = (("height", 0.4), ("cut", 0.4), ("both", 0.2))
VARIANT_CUT_CORNER = 0.5  # a cut across the far corner (else parallel to the far wall)
CROP_MIN_HEIGHT = 1.6  # a height crop lies between this and the lowest ceiling point minus CROP_CEILING_GAP
CROP_CEILING_GAP = 0.1


def _draw_variant(rng: np.random.Generator, length: float, width: float,
                  height: float) -> tuple[RoomVariant, tuple[str, np.ndarray] | None]:
    """The variant of a room whose ceiling's lowest point is at ``height``, and the draws of its wall cut (kind
    and two uniforms; resolved by :func:`_resolve_cut` once the scanners stand). Always the same number of
    draws."""
    beams = bool(rng.random() >= VARIANT_NO_BEAMS)
    u = rng.random()
    edges = np.cumsum([p for _, p in VARIANT_CEILINGS])
    ceiling = VARIANT_CEILINGS[min(int(np.searchsorted(edges, u, side="right")), len(edges) - 1)][0]
    slope = float(rng.uniform(*VARIANT_SLOPE))
    low_wall = int(rng.integers(4))
    cropped, u_kind, u_height = rng.random() < VARIANT_CROP, rng.random(), rng.random()
    corner, u_cut = rng.random() < VARIANT_CUT_CORNER, rng.random(2)

    def plane(wall: int) -> np.ndarray:  # rising from ``wall`` at the slope: height + t * distance to it
        o, _, n, _ = _wall_frame(wall, length, width)
        t = math.tan(math.radians(slope))
        return np.array([height - t * float(o @ n), t * n[0], t * n[1]])

    if ceiling == "flat":
        slope, planes = 0.0, np.array([[height, 0.0, 0.0]])
    elif ceiling == "shed":  # tilted about the axis of the low wall
        planes = plane(low_wall)[None]
    else:  # the ridge along the room's longer side, in its middle
        planes = np.stack([plane(0), plane(2)] if length >= width else [plane(1), plane(3)])
    kinds = np.cumsum([p for _, p in VARIANT_CROP_KINDS])
    kind = VARIANT_CROP_KINDS[min(int(np.searchsorted(kinds, u_kind, side="right")), len(kinds) - 1)][0]
    crop_height = None
    if cropped and kind in ("height", "both"):
        crop_height = CROP_MIN_HEIGHT + u_height * (height - CROP_CEILING_GAP - CROP_MIN_HEIGHT)
    cut = ("corner" if corner else "wall", u_cut) if cropped and kind in ("cut", "both") else None
    return RoomVariant(beams, ceiling, slope, planes, crop_height), cut


def _resolve_cut(kind: str, u: np.ndarray, scanners: np.ndarray, length: float,
                 width: float) -> tuple[str, np.ndarray]:
    """(kind, plane (mx, my, off)) of a wall cut: the points with ``mx x + my y > off`` are cut away; the
    scanners all stay on the kept side, at least 0.5 m from the plane.

    wall: parallel to the wall farthest from the scanners (its nearest scanner the farthest), 0.3 m to 40% of
    the room's span inside it (a corner cut instead when that wall has no scanner 0.8 m or more away); corner:
    an oblique plane across the corner farthest from the scanners' centre, meeting the two walls there at
    30-100% of their lengths from the corner (pulled toward the corner until the scanners are clear)."""
    xy = scanners[:, :2]
    if kind == "wall":
        frames = [_wall_frame(w, length, width) for w in range(4)]
        o, _, n, _ = max(frames, key=lambda f: float(((xy - f[0]) @ f[2]).min()))
        span = width if n[0] == 0 else length
        clear = float(((xy - o) @ n).min()) - 0.5  # the nearest scanner's distance to the wall, less 0.5 m
        if clear >= 0.3:
            depth = 0.3 + u[0] * (min(0.4 * span, clear) - 0.3)
            m = -n  # toward the far wall
            return "wall", np.array([m[0], m[1], float(m @ o) - depth])
    centre = xy.mean(axis=0)
    corners = np.array([[0.0, 0.0], [length, 0.0], [length, width], [0.0, width]])
    k = int(np.argmax(np.linalg.norm(corners - centre, axis=1)))
    c, a_end, b_end = corners[k], corners[(k + 1) % 4], corners[(k - 1) % 4]
    fa, fb = 0.3 + 0.7 * u[0], 0.3 + 0.7 * u[1]
    for _ in range(60):
        a, b = c + fa * (a_end - c), c + fb * (b_end - c)
        t = (b - a) / np.linalg.norm(b - a)
        m = np.array([t[1], -t[0]])
        if m @ (c - a) < 0:
            m = -m  # toward the corner
        if float((xy @ m).max()) <= float(m @ a) - 0.5:
            break
        fa, fb = fa * 0.9, fb * 0.9
    return "corner", np.array([m[0], m[1], float(m @ a)])


def _generate_room(rng: np.random.Generator, density: float, noise: float, n_scanners: int | None,
                   size: tuple[float, float, float] | None, bank: "ObjectBank | None" = None,
                   bank_share: float = 0.6, occlusion: bool = True, variants: bool = False) -> Room:
    composed = bank is not None
    if composed:  # per-room scan settings and colour balance (see the module docstring)
        density = density * rng.uniform(0.6, 1.4)
        falloff = float(rng.uniform(2.0, 4.5))
        gain = rng.uniform(0.85, 1.15, 3) * rng.uniform(0.8, 1.15)
    else:
        falloff, gain = 3.0, None
    if size is None:
        size = (rng.uniform(4.0, 8.0), rng.uniform(3.5, 6.0), rng.uniform(2.7, 3.3))
    length, width, height = (float(v) for v in size)
    variant, cut_draw = _draw_variant(rng, length, width, height) if variants else (None, None)
    planes = variant.planes if variant is not None else None
    sc = _Scene(rng, density)
    plan = _Floorplan(length, width)
    paint = sc.color("paint")
    objects: list[PlacedObject] = []
    spacing = 1.0 / math.sqrt(density)  # bank objects are thinned to the room's sampling density

    def record(obj: PlacedObject) -> int:
        objects.append(obj)
        sc.current = len(objects) - 1
        return sc.current

    def from_bank(label: int, placements: tuple[str, ...], fits=None) -> int | None:
        """A bank object of class ``label`` whose size (scaled up to +10%) ``fits``, with probability
        ``bank_share`` (only in bank rooms: procedural rooms draw nothing here); None: build it from boxes."""
        if not composed or rng.random() >= bank_share:
            return None
        idx = bank.find(label, placements)
        if fits is not None:
            idx = idx[[bool(fits(bank.sizes[k] * 1.1)) for k in idx]] if len(idx) else idx
        return int(idx[rng.integers(len(idx))]) if len(idx) else None

    def place(k: int, cx: float, cy: float, yaw: float, z0: float, scale: float, support: str,
              on: int | None = None) -> int:
        """Draw bank object ``k`` scaled by ``scale``, turned by ``yaw``, its footprint centred on (cx, cy), its
        base at ``z0``; colour jittered per object."""
        obj = bank[k]
        local = obj.xyz.astype(np.float64) * scale
        keep = _thin(local, spacing, rng)
        c, s = math.cos(yaw), math.sin(yaw)
        xy = local[keep, :2] @ np.array([[c, s], [-s, c]]) + (cx, cy)
        pts = np.column_stack([xy, local[keep, 2] + z0])
        col = obj.rgb[keep].astype(np.float64) * rng.uniform(0.9, 1.1, 3) + rng.normal(0.0, 8.0, 3)
        w, d, h = obj.size * scale
        idx = record(PlacedObject(obj.label, support, (cx, cy), yaw, (w / 2, d / 2), z0, z0 + h, on, k, obj.source))
        sc.scanned(pts, np.clip(col, 0, 255), obj.label)
        sc.current = -1
        return idx

    def against_wall(k: int, scale: float, wall: int, s_mid: float, offset: float, z0: float, support: str) -> int:
        """Place bank object ``k`` with its back to ``wall``, centred at ``s_mid`` along it, its back ``offset``
        metres in front of the wall plane (negative: into the wall)."""
        o, d, n, _ = _wall_frame(wall, length, width)
        depth = bank.sizes[k][1] * scale
        cx, cy = o + d * s_mid + n * (depth / 2 + offset)
        return place(k, float(cx), float(cy), _wall_yaw(wall, length, width), z0, scale, support)

    # Floor, ceiling and walls (points of openings are removed below)
    sc.rect([0, 0, 0], [0, width, 0], [length, 0, 0], C["floor"], sc.color("floor"))  # normal +z
    if variant is None or variant.ceiling == "flat":
        sc.rect([0, 0, height], [length, 0, 0], [0, width, 0], C["ceiling"], sc.color("ceiling"))  # normal -z
    else:  # each plane over the part of the floor where it is the lowest (a gable: one half each)
        ceiling_col = sc.color("ceiling")
        for c0, gx, gy in planes:
            x0, y0, x1, y1 = 0.0, 0.0, length, width
            if len(planes) > 1 and gx != 0.0:  # ridge across x = length / 2
                x0, x1 = (0.0, length / 2) if gx > 0 else (length / 2, length)
            elif len(planes) > 1:  # ridge across y = width / 2
                y0, y1 = (0.0, width / 2) if gy > 0 else (width / 2, width)
            u, v = np.array([x1 - x0, 0.0, gx * (x1 - x0)]), np.array([0.0, y1 - y0, gy * (y1 - y0)])
            sc.rect([x0, y0, c0 + gx * x0 + gy * y0], v, u, C["ceiling"], ceiling_col)  # normal down
    walls_pts_start = len(sc.pts)
    for wall in range(4):
        o, d, n, wlen = _wall_frame(wall, length, width)
        top = height
        if variant is not None:  # up to the ceiling's highest point along it (what is above is cut below)
            end = o + d * wlen
            top = _ceiling_extremes(planes, min(o[0], end[0]), min(o[1], end[1]), max(o[0], end[0]),
                                    max(o[1], end[1]))[1]
        sc.rect([*o, 0.0], [0, 0, top], [*(d * wlen), 0.0], C["wall"], paint)  # normal points inward
    walls_pts_end = len(sc.pts)

    # Openings: one or two doors, one to three windows, each (wall, s0, s1, z0, z1); a door keeps floor clear.
    # filled: opening / board index -> (bank object, scale) for those a bank object fills
    openings, filled = [], {}
    for _door in range(int(rng.integers(1, 3))):
        k = from_bank(C["door"], ("opening",), lambda sz: sz[0] <= 2.2 and sz[2] <= height - 0.2)
        scale = rng.uniform(0.9, 1.1) if k is not None else 1.0
        for _ in range(20):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            w = rng.uniform(0.85, 1.0) * (2 if rng.random() < 0.15 else 1)
            if k is not None:
                w = bank.sizes[k][0] * scale
                if w > wlen - 0.4:
                    continue
            s0 = rng.uniform(0.2, wlen - w - 0.2)
            if all(o_[0] != wall or s0 + w + 0.3 < o_[1] or s0 > o_[2] + 0.3 for o_ in openings):
                if k is not None:
                    filled[len(openings)] = (k, scale)
                    z1 = bank.sizes[k][2] * scale
                else:
                    z1 = rng.uniform(2.0, 2.2)
                openings.append((wall, s0, s0 + w, 0.0, z1, "door"))
                plan.take(*_footprint_against_wall(wall, s0 - 0.1, s0 + w + 0.1, 1.0, length, width))
                break
    for _window in range(int(rng.integers(1, 4))):
        k = from_bank(C["window"], ("opening",), lambda sz: sz[0] <= 2.5 and sz[2] <= height - 0.9)
        scale = rng.uniform(0.9, 1.1) if k is not None else 1.0
        for _ in range(20):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            w = rng.uniform(0.8, min(2.5, wlen - 0.6))
            if k is not None:
                w = bank.sizes[k][0] * scale
                if w > wlen - 0.6:
                    continue
            s0 = rng.uniform(0.3, wlen - w - 0.3)
            if all(o_[0] != wall or s0 + w + 0.3 < o_[1] or s0 > o_[2] + 0.3 for o_ in openings):
                if k is not None:  # the sill height it was scanned at, within the wall
                    h = bank.sizes[k][2] * scale
                    z0 = float(np.clip(bank.elevations[k], 0.6, height - 0.3 - h))
                    filled[len(openings)] = (k, scale)
                    openings.append((wall, s0, s0 + w, z0, z0 + h, "window"))
                else:
                    openings.append((wall, s0, s0 + w, rng.uniform(0.8, 1.0),
                                     min(height - 0.3, rng.uniform(2.0, 2.4)), "window"))
                break
    # Boards: on a wall segment free of openings
    boards = []
    for _item in range(int(rng.integers(1, 3))):
        k = from_bank(C["board"], ("wall",), lambda sz: sz[0] <= 3.0 and sz[2] <= height - 1.5)
        scale = rng.uniform(0.9, 1.1) if k is not None else 1.0
        for _ in range(30):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            w = rng.uniform(1.0, min(3.0, wlen - 1.0))
            if k is not None:
                w = bank.sizes[k][0] * scale
                if w > wlen - 0.6:
                    continue
            s0 = rng.uniform(0.3, wlen - w - 0.3)
            busy = [o_ for o_ in openings + boards if o_[0] == wall and not (s0 + w + 0.2 < o_[1] or s0 > o_[2] + 0.2)]
            if not busy:
                if k is not None:
                    z0 = rng.uniform(0.8, 1.0)
                    filled[len(openings) + len(boards)] = (k, scale)
                    boards.append((wall, s0, s0 + w, z0, z0 + bank.sizes[k][2] * scale, "board"))
                else:
                    boards.append((wall, s0, s0 + w, rng.uniform(0.8, 1.0), rng.uniform(1.9, 2.1), "board"))
                break

    for i, (wall, s0, s1, z0, z1, kind) in enumerate(openings + boards):
        o, d, n, _ = _wall_frame(wall, length, width)
        if i in filled:  # doors and windows flush with the wall plane, boards 1.5 cm proud of it
            k, scale = filled[i]
            offset = 0.015 if kind == "board" else -bank.sizes[k][1] * scale
            against_wall(k, scale, wall, (s0 + s1) / 2, offset, z0, "wall" if kind == "board" else "opening")
            continue
        a = np.array([*(o + d * s0), z0])
        u, v = np.array([0.0, 0.0, z1 - z0]), np.array([*(d * (s1 - s0)), 0.0])
        mid, yaw = o + d * (s0 + s1) / 2, _wall_yaw(wall, length, width)
        if kind == "door":  # a door leaf recessed 3 cm into the wall opening
            record(PlacedObject(C["door"], "opening", tuple(mid - n * 0.03), yaw, ((s1 - s0) / 2, 0.005), z0, z1))
            inset = np.array([*(-n * 0.03), 0.0])
            sc.rect(a + inset, u, v, C["door"], sc.color("door"))
        elif kind == "window":  # glass set back 8 cm (sparse: glass returns few points) and a sill
            record(PlacedObject(C["window"], "opening", tuple(mid - n * 0.04), yaw, ((s1 - s0) / 2, 0.04), z0, z1))
            inset = np.array([*(-n * 0.08), 0.0])
            col = sc.color("window")
            sc.rect(a + inset, u, v, C["window"], col, density_factor=0.5)
            sc.rect(a, v, np.array([*(-n * 0.08), 0.0]), C["window"], col)  # the sill
        else:  # board 1.5 cm proud of the wall
            record(PlacedObject(C["board"], "wall", tuple(mid + n * 0.015), yaw, ((s1 - s0) / 2, 0.005), z0, z1))
            t = np.array([*(n * 0.015), 0.0])
            sc.rect(a + t, u, v, C["board"], sc.color("board"))
        sc.current = -1

    # remove wall points inside openings and behind boards
    for k in range(walls_pts_start, walls_pts_end):
        wall = k - walls_pts_start
        o, d, n, _ = _wall_frame(wall, length, width)
        p = sc.pts[k]
        s = (p[:, :2] - o) @ d
        keep = np.ones(len(p), dtype=bool)
        for w_, s0, s1, z0, z1, _ in openings + boards:
            if w_ == wall:
                keep &= ~((s >= s0) & (s <= s1) & (p[:, 2] >= z0) & (p[:, 2] <= z1))
        for lst in (sc.pts, sc.nrm, sc.lab, sc.col, sc.part, sc.inst):
            lst[k] = lst[k][keep]

    # Columns: against a wall, floor to ceiling, painted like the walls
    for _item in range(int(rng.integers(1, 3))):
        for _ in range(30):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            w, dep = rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.5)
            s0 = rng.choice([0.0, wlen - w]) if rng.random() < 0.5 else rng.uniform(0.0, wlen - w)
            fp = _footprint_against_wall(wall, s0, s0 + w, dep, length, width)
            clear = all(o_[0] != wall or s0 + w < o_[1] or s0 > o_[2] for o_ in openings + boards)
            if clear and plan.free(*fp, margin=0.0):
                plan.take(*fp)
                # under a sloped ceiling: up to its highest point there, what is above the ceiling is cut below
                top = height if variant is None else _ceiling_extremes(planes, *fp)[1]
                record(PlacedObject(C["column"], "floor", ((fp[0] + fp[2]) / 2, (fp[1] + fp[3]) / 2), 0.0,
                                    ((fp[2] - fp[0]) / 2, (fp[3] - fp[1]) / 2), 0.0, top))
                sc.box([fp[0], fp[1], 0.0], [fp[2], fp[3], top], C["column"], paint)
                sc.current = -1
                break
    # Beams: across the room under the ceiling, same paint
    # (varied rooms: half have none; under a sloped ceiling they run level, along its slope's contour lines,
    # their top at the ceiling's lowest point above them)
    for _item in range(int(rng.integers(1, 3)) if variant is None or variant.beams else 0):
        h, w = rng.uniform(0.25, 0.5), rng.uniform(0.25, 0.45)
        along_y = rng.random() < 0.5  # at some x, from wall to wall along y
        if variant is not None and variant.ceiling != "flat":
            along_y = bool(np.all(planes[:, 2] == 0.0))  # level along y: the ceiling rises along x
        if along_y:
            x = rng.uniform(0.5, length - 0.5 - w)
            top = height if variant is None else _ceiling_extremes(planes, x, 0.0, x + w, width)[0]
            sc.box([x, 0.0, top - h], [x + w, width, top], C["beam"], paint)
        else:
            y = rng.uniform(0.5, width - 0.5 - w)
            top = height if variant is None else _ceiling_extremes(planes, 0.0, y, length, y + w)[0]
            sc.box([0.0, y, top - h], [length, y + w, top], C["beam"], paint)

    clutter_spots = []  # (x0, y0, x1, y1, z, hmax) surfaces where clutter may stand
    spot_owner = []  # the layout object each spot is the top of
    low = height - 0.55  # bank objects stay below the beams (at most 0.5 m deep)

    # Tables with chairs around them
    chair_count = 0
    for _item in range(int(rng.integers(1, 3))):
        k = from_bank(C["table"], ("floor",), lambda sz: sz[2] <= low)
        if k is not None:  # a quarter turn: tables stand square to the room, chairs go along their sides
            scale, quarter = rng.uniform(0.9, 1.1), int(rng.integers(4))
            bw, bd = bank.sizes[k][:2] * scale
            if quarter % 2:
                bw, bd = bd, bw
        for _ in range(40):
            tl, tw = rng.uniform(1.0, 2.2), rng.uniform(0.7, 1.1)
            if rng.random() < 0.5:
                tl, tw = tw, tl
            if k is not None:
                tl, tw = bw, bd
                if tl > length - 1.2 or tw > width - 1.2:
                    break
            x0, y0 = rng.uniform(0.6, length - tl - 0.6), rng.uniform(0.6, width - tw - 0.6)
            if x0 < 0.6 or y0 < 0.6 or not plan.free(x0 - 0.55, y0 - 0.55, x0 + tl + 0.55, y0 + tw + 0.55):
                continue
            plan.take(x0, y0, x0 + tl, y0 + tw)
            if k is not None:
                yaw = quarter * math.pi / 2
                table = place(k, x0 + tl / 2, y0 + tw / 2, yaw, 0.0, scale, "floor")
                rect, top = bank.top_rects[k] * scale, bank.tops[k] * scale
                hmax = min(0.3, bank.clearances[k] * scale - 0.02)
                roomy = np.all(np.isfinite(rect)) and min(rect[2] - rect[0], rect[3] - rect[1]) >= 0.15
                if roomy and hmax >= 0.05:  # a top with room for a cup and free height above it
                    corners = PlacedObject(0, "", (x0 + tl / 2, y0 + tw / 2), yaw,
                                           ((rect[2] - rect[0]) / 2, (rect[3] - rect[1]) / 2), 0, 0)
                    # the rectangle is not centred on the footprint: move it by its centre, turned
                    c, s = math.cos(yaw), math.sin(yaw)
                    mx, my = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
                    shift = np.array([c * mx - s * my, s * mx + c * my])
                    pts = corners.corners() + shift
                    clutter_spots.append((*pts.min(axis=0), *pts.max(axis=0), top, hmax))
                    spot_owner.append(table)
            else:
                col, th, leg = sc.color("table"), rng.uniform(0.72, 0.76), 0.05
                table = record(PlacedObject(C["table"], "floor", (x0 + tl / 2, y0 + tw / 2), 0.0, (tl / 2, tw / 2),
                                            0.0, th))
                sc.box([x0, y0, th - 0.04], [x0 + tl, y0 + tw, th], C["table"], col)
                for lx in (x0 + 0.03, x0 + tl - 0.03 - leg):
                    for ly in (y0 + 0.03, y0 + tw - 0.03 - leg):
                        sc.box([lx, ly, 0.0], [lx + leg, ly + leg, th - 0.04], C["table"], col)
                sc.current = -1
                clutter_spots.append((x0 + 0.05, y0 + 0.05, x0 + tl - 0.05, y0 + tw - 0.05, th, 0.3))
                spot_owner.append(table)
            # chairs on all four sides, facing the table
            for side in range(4):
                horizontal = side < 2
                span = tl if horizontal else tw
                for c in range(int(rng.integers(0, max(1, int(span / 0.6)) + 1))):
                    cs = 0.45
                    kc = from_bank(C["chair"], ("floor",), lambda sz: sz[2] <= low)
                    cw = cd = cs
                    if kc is not None:
                        c_scale, c_yaw = rng.uniform(0.9, 1.1), int(rng.integers(4)) * math.pi / 2
                        hw, hd = _rotated_half(*(bank.sizes[kc][:2] * c_scale / 2), c_yaw)
                        cw, cd = 2 * hw, 2 * hd
                    if (cw if horizontal else cd) > span:  # a small table: no chair fits along this side
                        continue
                    pos = rng.uniform(0.0, span - (cw if horizontal else cd))
                    off = rng.uniform(0.05, 0.25)
                    if side == 0:
                        cx, cy, back_dir = x0 + pos, y0 - off - cd, (0, -1)
                    elif side == 1:
                        cx, cy, back_dir = x0 + pos, y0 + tw + off, (0, 1)
                    elif side == 2:
                        cx, cy, back_dir = x0 - off - cw, y0 + pos, (-1, 0)
                    else:
                        cx, cy, back_dir = x0 + tl + off, y0 + pos, (1, 0)
                    if not plan.free(cx, cy, cx + cw, cy + cd, margin=0.02):
                        continue
                    plan.take(cx, cy, cx + cw, cy + cd)
                    if kc is not None:
                        place(kc, cx + cw / 2, cy + cd / 2, c_yaw, 0.0, c_scale, "floor")
                    else:
                        record(PlacedObject(C["chair"], "floor", (cx + cs / 2, cy + cs / 2), 0.0, (cs / 2, cs / 2),
                                            0.0, 0.95))
                        _chair(sc, cx, cy, cs, back_dir)
                        sc.current = -1
                    chair_count += 1
            break
    # at least one chair per room (so that all 13 classes are present): a free-standing one
    for _ in range(200 if chair_count == 0 else 0):
        cx, cy = rng.uniform(0.2, length - 0.65), rng.uniform(0.2, width - 0.65)
        if plan.free(cx, cy, cx + 0.45, cy + 0.45):
            plan.take(cx, cy, cx + 0.45, cy + 0.45)
            record(PlacedObject(C["chair"], "floor", (cx + 0.225, cy + 0.225), 0.0, (0.225, 0.225), 0.0, 0.95))
            _chair(sc, cx, cy, 0.45, [(0, -1), (0, 1), (-1, 0), (1, 0)][int(rng.integers(4))])
            sc.current = -1
            break

    # Bookcases against walls, with shelves
    for _item in range(int(rng.integers(1, 3))):
        k = from_bank(C["bookcase"], ("wall",), lambda sz: sz[2] <= low)
        scale = rng.uniform(0.9, 1.1) if k is not None else 1.0
        for _ in range(30):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            w, dep, h = rng.uniform(0.8, 1.6), rng.uniform(0.3, 0.45), rng.uniform(1.2, 2.2)
            if k is not None:
                w, dep, h = bank.sizes[k] * scale
                dep += 0.01  # its back 1 cm off the wall
                if w > wlen:
                    continue
            s0 = rng.uniform(0.0, wlen - w)
            fp = _footprint_against_wall(wall, s0, s0 + w, dep, length, width)
            clear = all(o_[0] != wall or s0 + w < o_[1] or s0 > o_[2] or o_[5] == "window" and h < o_[3]
                        for o_ in openings + boards)
            if clear and plan.free(*fp):
                plan.take(*fp)
                if k is not None:
                    against_wall(k, scale, wall, s0 + w / 2, 0.01, 0.0, "floor")
                    break
                col = sc.color("bookcase")
                lo, hi = np.array([fp[0], fp[1], 0.0]), np.array([fp[2], fp[3], h])
                n = _wall_frame(wall, length, width)[2]
                case = record(PlacedObject(C["bookcase"], "floor", ((fp[0] + fp[2]) / 2, (fp[1] + fp[3]) / 2), 0.0,
                                           ((fp[2] - fp[0]) / 2, (fp[3] - fp[1]) / 2), 0.0, h))
                # the carcass: back, sides, top and bottom as thin solid boxes; shelves inside
                t = 0.02
                back_lo, back_hi = lo.copy(), hi.copy()
                if n[0] > 0:
                    back_hi[0] = lo[0] + t
                elif n[0] < 0:
                    back_lo[0] = hi[0] - t
                elif n[1] > 0:
                    back_hi[1] = lo[1] + t
                else:
                    back_lo[1] = hi[1] - t
                sc.box(back_lo, back_hi, C["bookcase"], col)
                along = 0 if n[0] == 0 else 1
                for side in (0, 1):
                    s_lo, s_hi = lo.copy(), hi.copy()
                    if side:
                        s_lo[along] = hi[along] - t
                    else:
                        s_hi[along] = lo[along] + t
                    sc.box(s_lo, s_hi, C["bookcase"], col)
                n_shelves = int(rng.integers(3, 6))
                for z in np.linspace(0.0, h - t, n_shelves):
                    sc.box([lo[0], lo[1], z], [hi[0], hi[1], z + t], C["bookcase"], col)
                    if z + 0.25 < h:
                        clutter_spots.append((lo[0] + 0.03, lo[1] + 0.03, hi[0] - 0.03, hi[1] - 0.03, z + t,
                                              min(0.25, (h - t) / max(n_shelves - 1, 1) - 0.03)))
                        spot_owner.append(case)
                sc.current = -1
                break

    # Sofas against walls
    for _item in range(int(rng.integers(1, 3))):
        k = from_bank(C["sofa"], ("wall",), lambda sz: sz[2] <= low)
        scale = rng.uniform(0.9, 1.1) if k is not None else 1.0
        for _ in range(30):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            w, dep = rng.uniform(1.4, 2.2), rng.uniform(0.8, 0.95)
            if k is not None:
                w, dep = bank.sizes[k][:2] * scale
                dep += 0.01
            if w > wlen - 0.2:
                continue
            s0 = rng.uniform(0.1, wlen - w - 0.1)
            fp = _footprint_against_wall(wall, s0, s0 + w, dep, length, width)
            # in bank rooms a sofa's back also keeps clear of boards and windows it would reach (the
            # procedural default keeps its version-1 layouts)
            h = bank.sizes[k][2] * scale if k is not None else 0.85
            clear = not composed or all(o_[0] != wall or s0 + w < o_[1] or s0 > o_[2] or h < o_[3]
                                        for o_ in openings + boards)
            if clear and plan.free(*fp):
                plan.take(*fp)
                if k is not None:
                    against_wall(k, scale, wall, s0 + w / 2, 0.01, 0.0, "floor")
                    break
                col = sc.color("sofa")
                o, d, n, _ = _wall_frame(wall, length, width)
                record(PlacedObject(C["sofa"], "floor", ((fp[0] + fp[2]) / 2, (fp[1] + fp[3]) / 2), 0.0,
                                    ((fp[2] - fp[0]) / 2, (fp[3] - fp[1]) / 2), 0.0, 0.85))
                lo, hi = np.array([fp[0], fp[1], 0.0]), np.array([fp[2], fp[3], 0.45])
                sc.box(lo, hi, C["sofa"], col)  # seat block
                back = _footprint_against_wall(wall, s0, s0 + w, 0.22, length, width)
                sc.box([back[0], back[1], 0.45], [back[2], back[3], 0.85], C["sofa"], col)
                for a0, a1 in ((s0, s0 + 0.18), (s0 + w - 0.18, s0 + w)):
                    arm = _footprint_against_wall(wall, a0, a1, dep, length, width)
                    sc.box([arm[0], arm[1], 0.45], [arm[2], arm[3], 0.65], C["sofa"], col)
                sc.current = -1
                break

    # Pictures, mirrors, screens (bank rooms): on a free stretch of wall, at the height they hung at
    hung = []
    for _item in range(int(rng.integers(0, 3)) if composed else 0):
        k = from_bank(C["clutter"], ("wall",), lambda sz: sz[0] <= 2.5 and sz[2] <= low - 0.3)
        if k is None:
            continue
        scale = rng.uniform(0.9, 1.1)
        w, dep, h = bank.sizes[k] * scale
        z0 = float(np.clip(bank.elevations[k], 0.3, low - h))
        for _ in range(20):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            if w > wlen - 0.2:
                break
            s0 = rng.uniform(0.1, wlen - w - 0.1)
            fp = _footprint_against_wall(wall, s0, s0 + w, dep + 0.005, length, width)
            clear = all(o_[0] != wall or s0 + w + 0.1 < o_[1] or s0 > o_[2] + 0.1 for o_ in openings + boards + hung)
            # the floor below is reserved too: nothing stands in front of it up to its height
            if clear and plan.free(*fp):
                plan.take(*fp)
                against_wall(k, scale, wall, s0 + w / 2, 0.005, z0, "wall")
                hung.append((wall, s0, s0 + w, z0, z0 + h, "hung"))
                break

    # Clutter: on tables and shelves, and a few items on the floor
    for (x0, y0, x1, y1, z, hmax), owner in zip(clutter_spots, spot_owner):
        if not composed:  # version 1: boxes at random on the surface
            for _ in range(int(rng.integers(1, 4))):
                w, dp, h = rng.uniform(0.08, 0.35), rng.uniform(0.08, 0.3), rng.uniform(0.05, hmax)
                if x1 - x0 <= w or y1 - y0 <= dp:
                    continue
                cx, cy = rng.uniform(x0, x1 - w), rng.uniform(y0, y1 - dp)
                record(PlacedObject(C["clutter"], "surface", (cx + w / 2, cy + dp / 2), 0.0, (w / 2, dp / 2), z,
                                    z + h, owner))
                sc.box([cx, cy, z], [cx + w, cy + dp, z + h], C["clutter"], rng.uniform(20, 235, 3))
                sc.current = -1
            continue
        surface = _Floorplan(x1 - x0, y1 - y0, x0, y0)  # items on one surface do not overlap either
        for _ in range(int(rng.integers(1, 4))):
            k = from_bank(C["clutter"], ("surface",),
                          lambda sz: sz[2] <= hmax and max(sz[0], sz[1]) <= min(x1 - x0, y1 - y0))
            for _ in range(10):
                if k is not None:
                    scale, yaw = rng.uniform(0.9, 1.1), rng.uniform(0.0, 2 * math.pi)
                    hx, hy = _rotated_half(*(bank.sizes[k][:2] * scale / 2), yaw)
                    if 2 * hx >= x1 - x0 or 2 * hy >= y1 - y0:
                        continue
                    cx, cy = rng.uniform(x0 + hx, x1 - hx), rng.uniform(y0 + hy, y1 - hy)
                    if surface.free(cx - hx, cy - hy, cx + hx, cy + hy, margin=0.02):
                        surface.take(cx - hx, cy - hy, cx + hx, cy + hy)
                        place(k, cx, cy, yaw, z, scale, "surface", on=owner)
                        break
                    continue
                w, dp, h = rng.uniform(0.08, 0.35), rng.uniform(0.08, 0.3), rng.uniform(0.05, hmax)
                if x1 - x0 <= w or y1 - y0 <= dp:
                    continue
                cx, cy = rng.uniform(x0, x1 - w), rng.uniform(y0, y1 - dp)
                if surface.free(cx, cy, cx + w, cy + dp, margin=0.02):
                    surface.take(cx, cy, cx + w, cy + dp)
                    record(PlacedObject(C["clutter"], "surface", (cx + w / 2, cy + dp / 2), 0.0, (w / 2, dp / 2), z,
                                        z + h, owner))
                    sc.box([cx, cy, z], [cx + w, cy + dp, z + h], C["clutter"], rng.uniform(20, 235, 3))
                    sc.current = -1
                    break
    for _ in range(int(rng.integers(2, 6))):
        k = from_bank(C["clutter"], ("floor", "surface"), lambda sz: sz[2] <= low)
        for _ in range(20):
            if k is not None:  # any yaw: boxes, bins and bags lie about at any angle
                scale, yaw = rng.uniform(0.9, 1.1), rng.uniform(0.0, 2 * math.pi)
                hx, hy = _rotated_half(*(bank.sizes[k][:2] * scale / 2), yaw)
                if 2 * hx > length - 0.1 or 2 * hy > width - 0.1:
                    continue
                cx, cy = rng.uniform(hx + 0.05, length - hx - 0.05), rng.uniform(hy + 0.05, width - hy - 0.05)
                if plan.free(cx - hx, cy - hy, cx + hx, cy + hy):
                    plan.take(cx - hx, cy - hy, cx + hx, cy + hy)
                    place(k, cx, cy, yaw, 0.0, scale, "floor")
                    break
                continue
            r, h = rng.uniform(0.12, 0.25), rng.uniform(0.25, 0.7)
            cx, cy = rng.uniform(r + 0.05, length - r - 0.05), rng.uniform(r + 0.05, width - r - 0.05)
            if plan.free(cx - r, cy - r, cx + r, cy + r):
                plan.take(cx - r, cy - r, cx + r, cy + r)
                record(PlacedObject(C["clutter"], "floor", (cx, cy), 0.0, (r, r), 0.0, h))
                if rng.random() < 0.5:
                    sc.cylinder((cx, cy), r, 0.0, h, C["clutter"], rng.uniform(20, 235, 3))
                else:
                    sc.box([cx - r, cy - r, 0.0], [cx + r, cy + r, h], C["clutter"], rng.uniform(20, 235, 3))
                sc.current = -1
                break

    xyz, nrm, lab, col, part, inst = sc.arrays()
    boxes = sc.boxes

    # Hidden surfaces: points strictly inside another part's solid box
    eps = 0.005
    keep = np.ones(len(xyz), dtype=bool)
    for lo, hi, pid in boxes:
        # a surface touching the box counts as inside: the floor under a leg, the ceiling above a beam
        keep &= ~(np.all((xyz > lo - eps) & (xyz < hi + eps), axis=1) & (part != pid))
    # the wall behind a hung picture or screen (thinner than the z-buffer's margin, so it would show through)
    for wall, s0, s1, z0, z1, _ in hung:
        o, d, n, _ = _wall_frame(wall, length, width)
        s = (xyz[:, :2] - o) @ d
        keep &= ~((lab == C["wall"]) & (inst == -1) & (np.abs((xyz[:, :2] - o) @ n) < 0.02)
                  & (s >= s0) & (s <= s1) & (xyz[:, 2] >= z0) & (xyz[:, 2] <= z1))
    if variant is not None:  # walls and columns were drawn up to the ceiling's highest point: cut them to it
        keep &= xyz[:, 2] <= ceiling_height(planes, xyz[:, :2]) + 1e-6
    xyz, nrm, lab, col, part, inst = xyz[keep], nrm[keep], lab[keep], col[keep], part[keep], inst[keep]

    # Scanner positions at eye height in free space, then occlusion and range thinning
    n_scanners = int(n_scanners if n_scanners is not None else rng.integers(1, 3))
    scanners = []
    for _ in range(500):
        sx, sy = rng.uniform(0.5, length - 0.5), rng.uniform(0.5, width - 0.5)
        if plan.free(sx - 0.2, sy - 0.2, sx + 0.2, sy + 0.2, margin=0.0):
            scanners.append(np.array([sx, sy, rng.uniform(1.4, 1.8)]))
            if len(scanners) == n_scanners:
                break
    if not scanners:
        scanners.append(np.array([length / 2, width / 2, 1.6]))
    scanned = part == _SCANNED
    seen = np.zeros(len(xyz), dtype=bool)
    for s in scanners:
        vis = _visible(xyz, s, boxes, eps=0.02) if occlusion else np.ones(len(xyz), dtype=bool)
        if occlusion and scanned.any():
            vis &= ~_hidden_by_points(xyz, inst, scanned, s, spacing)
        r = np.linalg.norm(xyz - s, axis=1)
        seen |= vis & (rng.random(len(xyz)) < np.minimum(1.0, (falloff / np.maximum(r, 1e-6)) ** 2))
    xyz, nrm, lab, col, part, inst = xyz[seen], nrm[seen], lab[seen], col[seen], part[seen], inst[seen]

    # Colour: shading by orientation (light from above) and per-point noise (not on real scans: they have both)
    shade = 0.8 + 0.2 * np.abs(nrm[:, 2:3]) + 0.05 * nrm[:, 0:1]
    jitter = rng.normal(0.0, 6.0, col.shape)
    if composed:
        real = part == _SCANNED
        shade[real], jitter[real] = 1.0, 0.0
        rgb = np.clip((col * shade + jitter) * gain, 0, 255).astype(np.uint8)
    else:
        rgb = np.clip(col * shade + jitter, 0, 255).astype(np.uint8)
    xyz = xyz + rng.normal(0.0, noise, xyz.shape)
    scanners = np.array(scanners)
    absent: tuple[int, ...] = ()
    if variant is not None:
        if cut_draw is not None:
            variant.cut_kind, variant.cut = _resolve_cut(*cut_draw, scanners, length, width)
        before = set(np.unique(lab).tolist())
        xyz, rgb, lab, inst, objects = _crop(variant, xyz, rgb, lab, inst, objects)
        # what the variant removed: the beams it did not draw, the classes its crop cut away
        absent = tuple(sorted(({C["beam"]} if not variant.beams else set()) | (before - set(np.unique(lab).tolist()))))
    return Room(xyz, rgb, lab, inst, objects, scanners, falloff, density, (length, width, height), variant,
                absent)


def _crop(variant: RoomVariant, xyz, rgb, lab, inst, objects):
    """A partial scan: the points above ``variant.crop_height`` and beyond ``variant.cut`` cut away (after the
    scan and its noise, as a crop box cuts a real scan). The layout keeps the objects that still have points or
    whose box reaches the kept part (an object the scanners never saw); instance ids are renumbered."""
    keep = np.ones(len(xyz), dtype=bool)
    if variant.crop_height is not None:
        keep &= xyz[:, 2] <= variant.crop_height
    if variant.cut is not None:
        keep &= xyz[:, :2] @ variant.cut[:2] <= variant.cut[2]
    if keep.all():
        return xyz, rgb, lab, inst, objects
    xyz, rgb, lab, inst = xyz[keep], rgb[keep], lab[keep], inst[keep]
    has_points = np.zeros(len(objects), dtype=bool)
    has_points[inst[inst >= 0]] = True
    survive = []
    for i, obj in enumerate(objects):
        reaches = variant.crop_height is None or obj.z0 < variant.crop_height
        if variant.cut is not None:
            reaches = reaches and bool(np.any(obj.corners() @ variant.cut[:2] < variant.cut[2]))
        survive.append(has_points[i] or reaches)
    new_id = np.cumsum(survive) - 1
    remap = {i: int(new_id[i]) for i in range(len(objects)) if survive[i]}
    kept = [replace(obj, on=remap.get(obj.on) if obj.on is not None else None)
            for i, obj in enumerate(objects) if survive[i]]
    lut = np.concatenate([[-1], np.where(survive, new_id, -1)]).astype(np.int64) if objects else np.array([-1])
    return xyz, rgb, lab, lut[inst + 1], kept


def _chair(sc: _Scene, x: float, y: float, s: float, back_dir: tuple[int, int]) -> None:
    """Seat, four legs and a backrest on the ``back_dir`` side (away from the table)."""
    col, seat, leg = sc.color("chair"), 0.45, 0.04
    sc.box([x, y, seat - 0.05], [x + s, y + s, seat], C["chair"], col)
    for lx in (x, x + s - leg):
        for ly in (y, y + s - leg):
            sc.box([lx, ly, 0.0], [lx + leg, ly + leg, seat - 0.05], C["chair"], col)
    t = 0.04
    bx0, by0, bx1, by1 = x, y, x + s, y + s
    if back_dir == (0, -1):
        by1 = y + t
    elif back_dir == (0, 1):
        by0 = y + s - t
    elif back_dir == (-1, 0):
        bx1 = x + t
    else:
        bx0 = x + s - t
    sc.box([bx0, by0, seat], [bx1, by1, seat + sc.rng.uniform(0.35, 0.5)], C["chair"], col)


def _visible(xyz: np.ndarray, scanner: np.ndarray, boxes, eps: float) -> np.ndarray:
    """True where the segment scanner -> point crosses no box before reaching the point (slab test).

    The segment is ``scanner + t * (p - scanner)``, t in [0, 1]. It enters box [lo, hi] at
    ``t_in = max_k min(t_lo_k, t_hi_k)`` and leaves at ``t_out = min_k max(...)``; the point is hidden when
    ``[t_in, t_out]`` overlaps ``[0, t_max]``, ``t_max`` lying ``eps`` metres before the point (a point on a face
    turned toward the scanner is entered exactly at t = 1, so it stays visible).
    """
    d = xyz - scanner
    t_max = 1.0 - eps / np.maximum(np.linalg.norm(d, axis=1), eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = [np.ascontiguousarray(1.0 / d[:, k]) for k in range(3)]  # per axis: column arrays are fastest
        hidden = np.zeros(len(xyz), dtype=bool)
        for lo, hi, _ in boxes:
            t_in, t_out = np.zeros(len(xyz)), t_max.copy()  # clamp to the segment: t in [0, t_max]
            for k in range(3):
                t1, t2 = (lo[k] - scanner[k]) * inv[k], (hi[k] - scanner[k]) * inv[k]
                t_in = np.fmax(t_in, np.minimum(t1, t2))  # fmax/fmin skip the NaN of 0 * inf
                t_out = np.fmin(t_out, np.maximum(t1, t2))
            hidden |= t_in <= t_out
    return ~hidden


_ZBUFFER_BASE = math.radians(0.25)  # finest angular pixel of the z-buffer
_ZBUFFER_LEVELS = 7  # pixels of 0.25 to 16 degrees


def _hidden_by_points(xyz: np.ndarray, inst: np.ndarray, occluders: np.ndarray, scanner: np.ndarray,
                      spacing: float) -> np.ndarray:
    """True where a point of another object among ``occluders`` (a mask) lies in front of a point, seen from
    ``scanner``: a z-buffer of the occluders in spherical coordinates (azimuth, elevation).

    A sampled surface hides what is behind it only where its samples cover the pixel: a sample ``spacing``
    apart seen from range r covers about ``1.5 * spacing / r`` radians, so each occluder is written into the
    range image whose pixel is that size (levels of 0.25 deg x 2**l), and every point is tested against every
    level. Per pixel the image keeps the nearest range of each object, so a point is compared with the nearest
    *other* object (an object never hides itself, see the module docstring). Hidden: nearer by more than
    ``max(0.05, 2 * spacing)`` (a surface's own depth spread within one pixel, and contact between an object
    and what it stands on, stay visible).
    """
    d = xyz - scanner
    r = np.maximum(np.linalg.norm(d, axis=1), 1e-9)
    az = np.arctan2(d[:, 1], d[:, 0]) + np.pi
    el = np.arcsin(np.clip(d[:, 2] / r, -1.0, 1.0)) + np.pi / 2
    margin = max(0.05, 2.0 * spacing)
    occ = np.flatnonzero(occluders)
    level = np.clip(np.ceil(np.log2(1.5 * spacing / r[occ] / _ZBUFFER_BASE)), 0, _ZBUFFER_LEVELS - 1).astype(np.int64)
    hidden = np.zeros(len(xyz), dtype=bool)
    for lv in np.unique(level):
        pix = _ZBUFFER_BASE * 2.0 ** lv
        n_el = int(np.ceil(np.pi / pix)) + 1

        def key(idx):
            return np.floor(az[idx] / pix).astype(np.int64) * n_el + np.floor(el[idx] / pix).astype(np.int64)

        sel = occ[level == lv]
        k, rr, ii = key(sel), r[sel], inst[sel]
        # nearest range per (pixel, object), then per pixel the nearest and the nearest of another object
        order = np.lexsort((rr, ii, k))
        k, rr, ii = k[order], rr[order], ii[order]
        first = np.r_[True, (k[1:] != k[:-1]) | (ii[1:] != ii[:-1])]
        k, rr, ii = k[first], rr[first], ii[first]
        order = np.lexsort((rr, k))
        k, rr, ii = k[order], rr[order], ii[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
        pix_key, best_r, best_i = k[starts], rr[starts], ii[starts]
        nxt = np.minimum(starts + 1, len(k) - 1)
        second_r = np.where((starts + 1 < len(k)) & (k[nxt] == pix_key), rr[nxt], np.inf)
        q = key(np.arange(len(xyz)))
        pos = np.minimum(np.searchsorted(pix_key, q), len(pix_key) - 1)
        found = pix_key[pos] == q
        nearest = np.where(best_i[pos] == inst, second_r[pos], best_r[pos])
        hidden |= found & (nearest < r - margin)
    return hidden
