"""Object bank: every labelled object cut out of the real indoor scans, to furnish synthetic rooms with.

The procedural rooms (:mod:`pcseg.data.synthetic_rooms`) build furniture from boxes; a network trained on them
learns floors and walls and little else, because no real chair, table or sofa looks like a box. The bank holds
the real thing: each object's points *as scanned* (with the holes, label noise, colours and sensor noise of
its scan), in a local frame, with the class it was labelled with (S3DIS ids, :data:`OBJECT_CLASSES`) and
the file it came from.

Where the objects come from (file names relative to the shared data root, ``../shared/data``):

* ``indoor/s3dis/<Area>/<room>``: S3DIS annotations are one file per object already; every annotation of an
  object class is one bank object (``stairs`` counts as clutter, as the reader does).
* ``indoor/scannet_sceneNNNN_NN.ply``: labels are per point (NYU40, mapped with the built-in
  ``nyu40-to-s3dis`` class map), with no instance ids, so objects are the connected components of each
  object class: a radius graph of the class's points (:class:`scipy.spatial.cKDTree` pairs within
  :data:`SCANNET_LINK_RADIUS` = 8 cm) and :func:`scipy.sparse.csgraph.connected_components`. The radius is
  measured on these files: their vertices lie 2.9 cm apart (median nearest neighbour), 4.8 cm at the 95th
  percentile, so at 5 cm a sofa falls into hundreds of pieces while at 8 cm every object holds together; and
  8 cm is below the gap between two pieces of furniture that do not touch (two tables 10 cm apart stay
  two). At 12 cm pieces start to merge (door fragments into doors, items on one shelf into one).
  Components under :data:`SCANNET_MIN_POINTS` (40) points are dropped: they are label noise along object
  borders (1-7 points at 8 cm) rather than objects, and 40 points at 3 cm spacing is a 20 x 20 cm surface,
  the smallest item worth placing. The dropped points are counted per class in :attr:`ObjectBank.dropped`.
* ``indoor/osd_tabletop/*.pcd``: Kinect frames of a table top; label 1-9 is the table, 20 and up the objects,
  one object per tens digit (41 and 42 are parts of object 40). The table plane is fitted to the table
  points (least squares, refitted on the points within 1 cm) and gives the objects their up direction:
  these frames are in the camera's frame, where "up" is not an axis.

Walls, floors, ceilings, beams and columns are not objects (the room generator builds the shell).

Local frame of an object: z along the source's up direction, from the object's lowest point (its base);
x, y the axes of the smallest rectangle around its footprint (found exactly from the edges of its convex
hull), centred on that rectangle, x along the longer side, +y toward the middle of the room it was scanned
in (toward the camera for the table tops). So the side the scan saw faces +y and the side that stood
against a wall faces -y, which is how wall-standing objects are placed back against a new wall.
``elevation`` is the base's height above the source floor (above the table for tabletop objects): a
window or a picture keeps the height it hung at. ``to_source`` maps local coordinates back to the file's
frame (the tests use it to find every bank point in its source).

Held out: ``indoor/scannet_scene0000_02.ply`` and the S3DIS crop (``indoor/s3dis/``) are validation files,
so :data:`HELD_OUT` removes them from the bank by default (:func:`load_bank` with ``exclude=HELD_OUT``):
their objects must not reach training through synthetic rooms. Note that scene0000_00 / _01 are rescans of
the same room as _02, so any validation on _02 of a model trained with this bank overstates quality (as
the data README says of training on those files directly).

What the training bank of ``../shared/data`` holds (held-out files excluded): 106 objects, 36 from
scene0000_00 (2 windows, 4 doors, 5 tables, 1 sofa, 1 bookcase, 23 clutter), 35 from scene0000_01 (2 windows,
2 doors, 1 table, 1 sofa, 29 clutter) and 35 tabletop items (clutter) from the 7 OSD frames; not every one is
placeable (a door standing open, a table leg cut off by label noise: placement ``none``). It has no chair and
no board: the only labelled chairs are in the validation rescan, so bank rooms keep procedural chairs and boards
(``synthetic:cad-rooms`` adds chairs and other furniture scanned virtually from CAD meshes: :mod:`pcseg.data.cad_bank`).

Every file's objects are cached on disk (:class:`pcseg.data.cache.DiskCache`, kind ``object_bank``), named
by the file and :data:`BANK_VERSION`, validated by the sizes and modification times of the files read.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import ConvexHull, QhullError, cKDTree

from ..errors import BadInputError
from .cache import DiskCache, file_fingerprint
from .classmaps import S3DIS_NAMES, builtin_class_map

log = logging.getLogger(__name__)

BANK_VERSION = 1
"""Bumped whenever what the bank extracts from a file changes (cached entries then miss)."""

OBJECT_CLASSES = ("window", "door", "table", "chair", "sofa", "bookcase", "board", "clutter")
"""S3DIS classes that are objects; the others (ceiling, floor, wall, beam, column) are the room's shell."""
_OBJECT_IDS = tuple(S3DIS_NAMES.index(n) for n in OBJECT_CLASSES)
C = {name: i for i, name in enumerate(S3DIS_NAMES)}

HELD_OUT = ("indoor/scannet_scene0000_02.ply", "indoor/s3dis/")
"""Sources (prefixes of names relative to the data root) kept out of the bank by default: validation files."""

SCANNET_LINK_RADIUS = 0.08
SCANNET_MIN_POINTS = 40
OSD_MIN_POINTS = 40
OSD_PLANE_INLIER = 0.01

PLACEMENTS = ("floor", "surface", "wall", "opening", "none")
"""How a room may use an object: stands on the floor; small enough to stand on a table or shelf (or the
floor); stands or hangs against a wall at its elevation; fills a door or window opening; not placed (an open
door sticking out of its wall, a large object hanging in mid-air)."""


def default_data_root() -> Path:
    """``$PCSEG_SHARED_DATA`` if set, else ``../shared/data`` (the project's convention for the real data)."""
    return Path(os.environ.get("PCSEG_SHARED_DATA") or os.path.join("..", "shared", "data"))


@dataclass(frozen=True)
class BankObject:
    """One object of the bank (views into the bank's arrays).

    xyz: (n, 3) float32 local coordinates (see the module docstring); rgb: (n, 3) uint8 as scanned;
    size: (width along x, depth along y, height); top: height of its top surface (tables), None otherwise;
    top_rect: (x0, y0, x1, y1) of that surface in the local frame; clearance: free height above it;
    to_source: (3, 4) [R | t], source = R @ local + t.
    """

    index: int
    label: int
    source: str
    placement: str
    xyz: np.ndarray
    rgb: np.ndarray
    size: np.ndarray
    elevation: float
    top: float | None
    top_rect: np.ndarray | None
    clearance: float
    to_source: np.ndarray

    @property
    def name(self) -> str:
        return S3DIS_NAMES[self.label]

    def as_cloud(self, frame: str = "local"):
        """The object as a :class:`pcseg.io.PointCloud` (``red``/``green``/``blue``, ``class`` = S3DIS id), in
        its local frame or, with ``frame="source"``, in its file's frame: to write it out or render it."""
        from ..io import PointCloud

        if frame not in ("local", "source"):
            raise ValueError("frame is 'local' or 'source'")
        xyz = to_source(self) if frame == "source" else self.xyz.astype(np.float64)
        return PointCloud(xyz, {"red": self.rgb[:, 0], "green": self.rgb[:, 1], "blue": self.rgb[:, 2],
                                "class": np.full(len(xyz), self.label, np.uint8)}, {"source": self.source})


class ObjectBank:
    """Objects as concatenated arrays: ``xyz`` / ``rgb`` with ``offsets`` (object k is rows
    ``offsets[k]:offsets[k+1]``) and per-object ``labels``, ``sources``, ``placements``, ``sizes``,
    ``elevations``, ``tops`` (NaN: none), ``top_rects``, ``clearances``, ``to_source``. ``dropped``: per source,
    points of each object class left out (ScanNet components under the minimum size)."""

    _PER_OBJECT = ("labels", "sizes", "elevations", "tops", "top_rects", "clearances", "to_source")

    def __init__(self, xyz, rgb, offsets, labels, sources, placements, sizes, elevations, tops, top_rects,
                 clearances, to_source, dropped=None):
        self.xyz, self.rgb = np.asarray(xyz, np.float32).reshape(-1, 3), np.asarray(rgb, np.uint8).reshape(-1, 3)
        self.offsets = np.asarray(offsets, np.int64)
        self.labels = np.asarray(labels, np.int64)
        self.sources, self.placements = list(sources), list(placements)
        self.sizes = np.asarray(sizes, np.float64).reshape(-1, 3)
        self.elevations = np.asarray(elevations, np.float64)
        self.tops = np.asarray(tops, np.float64)
        self.top_rects = np.asarray(top_rects, np.float64).reshape(-1, 4)
        self.clearances = np.asarray(clearances, np.float64)
        self.to_source = np.asarray(to_source, np.float64).reshape(-1, 3, 4)
        self.dropped: dict[str, dict[str, int]] = dict(dropped or {})

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, k: int) -> BankObject:
        a, b = self.offsets[k], self.offsets[k + 1]
        top = None if np.isnan(self.tops[k]) else float(self.tops[k])
        return BankObject(int(k), int(self.labels[k]), self.sources[k], self.placements[k], self.xyz[a:b],
                          self.rgb[a:b], self.sizes[k], float(self.elevations[k]), top,
                          None if top is None else self.top_rects[k], float(self.clearances[k]), self.to_source[k])

    def __iter__(self):
        return (self[k] for k in range(len(self)))

    def point_counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{source: {class name: number of objects}}``."""
        out: dict[str, dict[str, int]] = {}
        for src, lab in zip(self.sources, self.labels):
            per = out.setdefault(src, {})
            per[S3DIS_NAMES[lab]] = per.get(S3DIS_NAMES[lab], 0) + 1
        return out

    def find(self, label: int, placements: tuple[str, ...]) -> np.ndarray:
        """Indices of the objects of class ``label`` with one of ``placements``."""
        ok = np.array([p in placements for p in self.placements], dtype=bool)
        return np.flatnonzero((self.labels == label) & ok) if len(self) else np.zeros(0, np.int64)

    def select(self, keep) -> "ObjectBank":
        """The bank of the objects ``keep`` (boolean mask or indices), in bank order."""
        keep = np.flatnonzero(np.asarray(keep)) if np.asarray(keep).dtype == bool else np.asarray(keep, np.int64)
        counts = self.point_counts()[keep]
        rows = (np.concatenate([np.arange(self.offsets[k], self.offsets[k + 1]) for k in keep])
                if len(keep) else np.zeros(0, np.int64))
        kept_sources = {self.sources[k] for k in keep}
        return ObjectBank(self.xyz[rows], self.rgb[rows], np.concatenate([[0], np.cumsum(counts)]),
                          self.labels[keep], [self.sources[k] for k in keep], [self.placements[k] for k in keep],
                          self.sizes[keep], self.elevations[keep], self.tops[keep], self.top_rects[keep],
                          self.clearances[keep], self.to_source[keep],
                          {s: d for s, d in self.dropped.items() if s in kept_sources})

    def excluding(self, prefixes=HELD_OUT) -> "ObjectBank":
        """The bank without the objects whose source starts with one of ``prefixes``."""
        prefixes = tuple(prefixes or ())
        return self.select(np.array([not s.startswith(prefixes) for s in self.sources], dtype=bool))

    @classmethod
    def concatenate(cls, banks) -> "ObjectBank":
        banks = list(banks)
        if not banks:
            return cls.empty()
        offsets = [np.zeros(1, np.int64)]
        total = 0
        for b in banks:
            offsets.append(b.offsets[1:] + total)
            total += int(b.offsets[-1])
        cat = np.concatenate
        dropped = {}
        for b in banks:
            dropped.update(b.dropped)
        return cls(cat([b.xyz for b in banks]), cat([b.rgb for b in banks]), cat(offsets),
                   cat([b.labels for b in banks]), [s for b in banks for s in b.sources],
                   [p for b in banks for p in b.placements], cat([b.sizes for b in banks]),
                   cat([b.elevations for b in banks]), cat([b.tops for b in banks]), cat([b.top_rects for b in banks]),
                   cat([b.clearances for b in banks]), cat([b.to_source for b in banks]), dropped)

    @classmethod
    def empty(cls) -> "ObjectBank":
        z = np.zeros(0)
        return cls(np.zeros((0, 3)), np.zeros((0, 3)), [0], np.zeros(0, np.int64), [], [], np.zeros((0, 3)), z, z,
                   np.zeros((0, 4)), z, np.zeros((0, 3, 4)))


# ---------------------------------------------------------------------------------------------------------
# Local frames

def _min_area_axes(ab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit axes (u, v) of the smallest rectangle around the 2-D points ``ab``: one of its sides lies along
    an edge of the convex hull, so trying the hull's edge directions is exact."""
    try:
        hull = ab[ConvexHull(ab).vertices]
    except (QhullError, ValueError):  # collinear or too few points: any rectangle along the spread
        hull = ab
    edges = np.roll(hull, -1, axis=0) - hull
    theta = np.unique(np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2))
    if len(theta) == 0:
        theta = np.zeros(1)
    c, s = np.cos(theta), np.sin(theta)
    u = hull @ np.stack([c, s])  # (H, A)
    v = hull @ np.stack([-s, c])
    area = np.ptp(u, axis=0) * np.ptp(v, axis=0)
    k = int(np.argmin(area))
    return np.array([c[k], s[k]]), np.array([-s[k], c[k]])


def _object_frame(points: np.ndarray, origin: np.ndarray, e1: np.ndarray, e2: np.ndarray, up: np.ndarray,
                  toward: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(local xyz, to_source (3, 4), elevation) of one object.

    origin: a point of the support plane (floor or table); e1, e2, up: an orthonormal frame with ``up``
    normal to it; toward: a 2-D point (in e1, e2 coordinates) that the object's +y should face.
    """
    q = points - origin
    ab = np.column_stack([q @ e1, q @ e2])
    h = q @ up
    u, v = _min_area_axes(ab)
    pu, pv = ab @ u, ab @ v
    if np.ptp(pv) > np.ptp(pu):  # x along the longer side
        u, v = v, -u
        pu, pv = ab @ u, ab @ v
    centre = u * (pu.min() + pu.max()) / 2 + v * (pv.min() + pv.max()) / 2
    if (np.asarray(toward) - centre) @ v < 0:  # +y toward the room (the scanned side)
        u, v = -u, -v
    base = float(h.min())
    local = np.column_stack([(ab - centre) @ u, (ab - centre) @ v, h - base])
    x3, y3 = u[0] * e1 + u[1] * e2, v[0] * e1 + v[1] * e2
    t = origin + centre[0] * e1 + centre[1] * e2 + base * up
    return local, np.column_stack([x3, y3, up, t]), base


def _top_surface(local: np.ndarray) -> tuple[float, np.ndarray, float]:
    """(height, (x0, y0, x1, y1), clearance) of an object's top surface: the 2 cm layer holding the most
    points in its upper 60% (a table top), its extent (5th-95th percentiles, 3 cm inset: a cup may not
    overhang) and the free height above it within that extent (0.5 m when nothing is above)."""
    z = local[:, 2]
    h = float(z.max())
    layer = np.floor(z / 0.02).astype(np.int64)
    counts = np.bincount(layer)
    first = int(np.ceil(0.4 * h / 0.02))
    if first >= len(counts):
        first = len(counts) - 1
    k = first + int(np.argmax(counts[first:]))
    top = (k + 1) * 0.02
    on = layer == k
    lo, hi = np.percentile(local[on, :2], 5, axis=0) + 0.03, np.percentile(local[on, :2], 95, axis=0) - 0.03
    rect = np.array([lo[0], lo[1], hi[0], hi[1]])
    above = (z > top + 0.03) & np.all((local[:, :2] >= lo) & (local[:, :2] <= hi), axis=1)
    clearance = float(min(0.5, z[above].min() - top)) if above.any() else 0.5
    return top, rect, clearance


def _placement(label: int, size: np.ndarray, elevation: float) -> str:
    """How rooms may use an object (see :data:`PLACEMENTS`), from its class, size and elevation."""
    w, d, h = (float(s) for s in size)
    name = S3DIS_NAMES[label]
    if name in ("door", "window"):
        flat = d <= 0.3 and w >= 0.4 and h >= 0.4
        if name == "door":
            return "opening" if flat and elevation <= 0.2 and h >= 1.5 else "none"
        return "opening" if flat else "none"
    if name == "board":
        return "wall" if d <= 0.15 else "none"
    if name in ("bookcase", "sofa"):  # against a wall, back first; fragments of label noise are left out
        return "wall" if elevation <= 0.15 and 0.5 <= w <= 3.5 and h >= 0.4 else "none"
    if name == "table":  # a fragment (a table leg cut off by label noise) is not a table to furnish with
        return "floor" if elevation <= 0.15 and max(w, d) <= 3.0 and min(w, d) >= 0.3 and h >= 0.3 else "none"
    if name == "chair":
        return "floor" if elevation <= 0.15 and max(w, d) <= 1.2 and h >= 0.3 else "none"
    # clutter
    if elevation > 0.3 and d <= 0.12 and w <= 2.5 and h <= 1.5:
        return "wall"  # flat and off the floor: a picture, a mirror, a television on its bracket
    if max(w, d) <= 0.6 and h <= 0.6:
        return "surface"
    if elevation <= 0.15 and max(w, d) <= 2.5:
        return "floor"
    return "none"


# ---------------------------------------------------------------------------------------------------------
# Extraction per source

def _components(points: np.ndarray, radius: float) -> np.ndarray:
    """Connected component of each point in the graph linking points closer than ``radius``."""
    pairs = cKDTree(points).query_pairs(radius, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(len(points),) * 2)
    return connected_components(graph, directed=False)[1]


def _make(objects, name: str, dropped: dict[str, int] | None = None) -> ObjectBank:
    """A bank from ``[(label, points, rgb, origin, e1, e2, up, toward)]`` of one source."""
    xyzs, rgbs, meta = [], [], []
    for label, pts, rgb, origin, e1, e2, up, toward in objects:
        local, to_src, elevation = _object_frame(pts, origin, e1, e2, up, toward)
        size = np.array([np.ptp(local[:, 0]), np.ptp(local[:, 1]), local[:, 2].max()])
        place = _placement(label, size, elevation)
        top, rect, clear = (_top_surface(local) if S3DIS_NAMES[label] == "table" else (np.nan, np.full(4, np.nan), 0.0))
        xyzs.append(local)
        rgbs.append(rgb)
        meta.append((label, place, size, elevation, top, rect, clear, to_src))
    if not meta:
        b = ObjectBank.empty()
        b.dropped = {name: dict(dropped or {})}
        return b
    counts = [len(x) for x in xyzs]
    return ObjectBank(np.concatenate(xyzs), np.concatenate(rgbs), np.concatenate([[0], np.cumsum(counts)]),
                      [m[0] for m in meta], [name] * len(meta), [m[1] for m in meta], [m[2] for m in meta],
                      [m[3] for m in meta], [m[4] for m in meta], [m[5] for m in meta], [m[6] for m in meta],
                      [m[7] for m in meta], {name: dict(dropped or {})})


def _rgb(fields) -> np.ndarray:
    return np.column_stack([fields["red"], fields["green"], fields["blue"]]).astype(np.uint8)


_Z, _X, _Y = np.array([0.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])


def _room_frame(xyz: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(origin on the floor, middle of the room in x, y) of a z-up room scan: the median floor height and the
    mean of the floor points (the lowest percentile and the mean of all points when no point is floor)."""
    floor = labels == C["floor"]
    pts = xyz[floor] if floor.sum() >= 10 else xyz
    z0 = float(np.median(pts[:, 2])) if floor.sum() >= 10 else float(np.percentile(xyz[:, 2], 1))
    mid = pts[:, :2].mean(axis=0)
    return np.array([0.0, 0.0, z0]), mid


def extract_scannet(path: str, name: str) -> ObjectBank:
    """Objects of a ScanNet PLY: connected components per object class (see the module docstring)."""
    from ..io import read

    cloud = read(path)
    if "nyu40" in cloud.fields:
        labels = builtin_class_map("nyu40-to-s3dis").encode(cloud.fields["nyu40"])
    elif "class" in cloud.fields:
        labels = builtin_class_map("scannet20-to-s3dis").encode(cloud.fields["class"])
    else:
        raise BadInputError("a ScanNet file needs a 'nyu40' or 'class' field for the object bank", path)
    xyz, rgb = cloud.xyz, _rgb(cloud.fields)
    origin, mid = _room_frame(xyz, labels)
    objects, dropped = [], {}
    for label in _OBJECT_IDS:
        idx = np.flatnonzero(labels == label)
        if len(idx) == 0:
            continue
        comp = _components(xyz[idx], SCANNET_LINK_RADIUS)
        sizes = np.bincount(comp)
        small = sizes < SCANNET_MIN_POINTS
        if small.any():
            dropped[S3DIS_NAMES[label]] = int(sizes[small].sum())
        order = np.argsort(comp, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        for k in np.flatnonzero(~small):
            members = idx[order[bounds[k]:bounds[k + 1]]]
            objects.append((label, xyz[members], rgb[members], origin, _X, _Y, _Z, mid))
    return _make(objects, name, dropped)


def extract_s3dis(path: str, name: str) -> ObjectBank:
    """Objects of an S3DIS room folder: one per annotation file of an object class."""
    from ..io import read

    cloud = read(path)
    labels = cloud.fields["class"].astype(np.int64)  # the reader's order is S3DIS_NAMES
    inst = cloud.fields["instance"].astype(np.int64)
    xyz, rgb = cloud.xyz, _rgb(cloud.fields)
    origin, mid = _room_frame(xyz, labels)
    order = np.argsort(inst, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inst))])
    objects = []
    for k in range(len(bounds) - 1):
        members = order[bounds[k]:bounds[k + 1]]
        if len(members) and labels[members[0]] in _OBJECT_IDS:
            objects.append((int(labels[members[0]]), xyz[members], rgb[members], origin, _X, _Y, _Z, mid))
    return _make(objects, name)


def _fit_plane(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point, unit normal) of the least-squares plane, refitted twice on the points within 1 cm of it
    (objects' edges and the table's border are labelled table in places)."""
    for _ in range(3):
        mu = pts.mean(axis=0)
        normal = np.linalg.svd(pts - mu, full_matrices=False)[2][2]
        near = np.abs((pts - mu) @ normal) < OSD_PLANE_INLIER
        if near.sum() < 100:
            break
        pts = pts[near]
    return mu, normal


def extract_osd(path: str, name: str) -> ObjectBank:
    """Objects on the table of an OSD frame (label // 10 >= 2), all clutter, up = the table's normal."""
    from ..io import read

    cloud = read(path)
    if "label" not in cloud.fields:
        raise BadInputError("an OSD frame needs its 'label' field for the object bank", path)
    lab = cloud.fields["label"].astype(np.int64)
    ok = np.isfinite(cloud.xyz).all(axis=1)
    table = ok & (lab >= 1) & (lab <= 9)
    if table.sum() < 100:
        raise BadInputError("an OSD frame needs table points (labels 1-9) to find the up direction", path)
    origin, up = _fit_plane(cloud.xyz[table])
    camera = np.zeros(3)  # the PCD viewpoint of these frames is the origin
    if (camera - origin) @ up < 0:
        up = -up
    e1 = np.cross(up, _X if abs(up[0]) < 0.9 else _Y)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    cam_ab = np.array([(camera - origin) @ e1, (camera - origin) @ e2])
    group = np.where(ok & (lab >= 20), lab // 10, -1)
    rgb = _rgb(cloud.fields)
    objects, dropped = [], {}
    for g in np.unique(group[group >= 0]):
        members = np.flatnonzero(group == g)
        if len(members) < OSD_MIN_POINTS:
            dropped["clutter"] = dropped.get("clutter", 0) + len(members)
            continue
        objects.append((C["clutter"], cloud.xyz[members], rgb[members], origin, e1, e2, up, cam_ab))
    return _make(objects, name, dropped)


EXTRACTORS = {"scannet": extract_scannet, "s3dis": extract_s3dis, "osd": extract_osd}


def bank_sources(data_root: str | os.PathLike | None = None) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """``(name, kind, path, files)`` of every labelled indoor source under ``data_root/indoor``: ScanNet PLYs,
    S3DIS room folders, OSD frames. ``name`` is relative to the data root (``indoor/...``)."""
    root = Path(data_root) if data_root is not None else default_data_root()
    indoor = root / "indoor"
    if not indoor.is_dir():
        raise BadInputError("no indoor/ folder: the object bank reads the real scans of the shared data "
                            "(set PCSEG_SHARED_DATA or give the data root)", str(root))
    out = []
    for p in sorted(indoor.glob("scannet_scene*.ply")):
        out.append((p.relative_to(root).as_posix(), "scannet", str(p), (str(p),)))
    for ann in sorted(indoor.glob("s3dis/**/Annotations")):
        room = ann.parent
        files = tuple(sorted(str(f) for f in ann.glob("*.txt")))
        if files:
            out.append((room.relative_to(root).as_posix(), "s3dis", str(room), files))
    for p in sorted(indoor.glob("osd_tabletop/*.pcd")):
        out.append((p.relative_to(root).as_posix(), "osd", str(p), (str(p),)))
    return out


def _to_arrays(bank: ObjectBank) -> tuple[dict[str, np.ndarray], dict]:
    arrays = {"xyz": bank.xyz, "rgb": bank.rgb, "offsets": bank.offsets,
              **{k: getattr(bank, k) for k in ObjectBank._PER_OBJECT}}
    return arrays, {"sources": bank.sources, "placements": bank.placements, "dropped": bank.dropped}


def _from_arrays(arrays: dict[str, np.ndarray], extra: dict) -> ObjectBank:
    return ObjectBank(arrays["xyz"], arrays["rgb"], arrays["offsets"], arrays["labels"], extra["sources"],
                      extra["placements"], arrays["sizes"], arrays["elevations"], arrays["tops"],
                      arrays["top_rects"], arrays["clearances"], arrays["to_source"], extra.get("dropped"))


def bank_fingerprint(data_root: str | os.PathLike | None = None, exclude=HELD_OUT) -> list:
    """What a bank of ``data_root`` without ``exclude`` is computed from (for caches of rooms built with it)."""
    sources = [s for s in bank_sources(data_root) if not s[0].startswith(tuple(exclude or ()))]
    return [BANK_VERSION, [[name, file_fingerprint(files)] for name, _, _, files in sources]]


def load_bank(data_root: str | os.PathLike | None = None, exclude=HELD_OUT,
              cache: DiskCache | None | bool = True) -> ObjectBank:
    """The object bank of every indoor source under ``data_root`` (default :func:`default_data_root`) except
    the sources starting with a prefix in ``exclude`` (default :data:`HELD_OUT`, the validation files; pass
    ``()`` for every file). cache: a :class:`DiskCache`, True for the default one, False / None for none.
    """
    if cache is True:
        cache = DiskCache()
    exclude = tuple(exclude or ())
    banks = []
    for name, kind, path, files in bank_sources(data_root):
        if name.startswith(exclude):
            continue
        identity = {"step": "object_bank", "version": BANK_VERSION, "source": name, "kind": kind,
                    "path": os.path.abspath(path), "scannet": [SCANNET_LINK_RADIUS, SCANNET_MIN_POINTS],
                    "osd": [OSD_MIN_POINTS, OSD_PLANE_INLIER]}
        try:
            fingerprint = file_fingerprint(files)
        except OSError as e:
            raise BadInputError(f"cannot read: {e.strerror}", e.filename or path) from None
        hit = cache.load("object_bank", identity, fingerprint) if cache else None
        if hit is not None:
            banks.append(_from_arrays(hit[0], hit[2]))
            continue
        bank = EXTRACTORS[kind](path, name)
        if cache:
            arrays, extra = _to_arrays(bank)
            cache.save("object_bank", identity, fingerprint, arrays, extra=extra)
        banks.append(bank)
    bank = ObjectBank.concatenate(banks)
    log.info("object bank: %d objects from %d sources", len(bank), len({*bank.sources}))
    return bank


def to_source(obj: BankObject) -> np.ndarray:
    """An object's points in its source file's frame (float64)."""
    return obj.xyz.astype(np.float64) @ obj.to_source[:, :3].T + obj.to_source[:, 3]
