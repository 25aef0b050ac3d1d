"""Procedural indoor rooms labelled with the 13 S3DIS classes (``--data synthetic:rooms``).

For tests, smoke runs and pre-training only: scores measured on these rooms say nothing about real-world
quality and must never be reported as such.

A room is a box (floor, ceiling, four walls) with doors and windows cut into the walls, boards hung on them,
ceiling beams, columns along the walls, and furniture on the floor: tables with chairs around them, sofas,
bookcases against the walls, and clutter (boxes, bins, cylinders) on tables, shelves and the floor. Every
element is built from boxes, rectangles and cylinders whose surfaces are sampled uniformly at random
(Poisson-distributed counts per face, no Python loop over points). Then:

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

:func:`generate_room` returns ``(xyz float64 (N, 3), rgb uint8 (N, 3), labels int64 (N,))`` with S3DIS ids
(:data:`pcseg.data.classmaps.S3DIS_NAMES`); every room contains all 13 classes.
"""
from __future__ import annotations

import numpy as np

from .classmaps import S3DIS_NAMES

GENERATOR_VERSION = 1
"""Bumped whenever the generator's output for a seed changes (cached preprocessing of old rooms then misses)."""

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
        self.pts, self.nrm, self.lab, self.col, self.part = [], [], [], [], []
        self.boxes: list[tuple[np.ndarray, np.ndarray]] = []
        self.n_parts = 0

    def color(self, key: str) -> np.ndarray:
        base = np.array(_PALETTE[key][self.rng.integers(len(_PALETTE[key]))], dtype=np.float64)
        return np.clip(base + self.rng.normal(0, 12, 3), 0, 255)

    def _add(self, pts, nrm, label, color, part) -> None:
        self.pts.append(pts)
        self.nrm.append(nrm)
        self.lab.append(np.full(len(pts), label, np.int64))
        self.col.append(np.broadcast_to(color, (len(pts), 3)))
        self.part.append(np.full(len(pts), part, np.int64))

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
        return cat(self.pts), cat(self.nrm), cat(self.lab), cat(self.col).astype(np.float64), cat(self.part)


class _Floorplan:
    """Free floor rectangles: rejection sampling of furniture footprints that do not overlap."""

    def __init__(self, length: float, width: float):
        self.length, self.width = length, width
        self.taken: list[tuple[float, float, float, float]] = []

    def free(self, x0, y0, x1, y1, margin=0.05) -> bool:
        if x0 < 0 or y0 < 0 or x1 > self.length or y1 > self.width:
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
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random room: ``(xyz float64 (N, 3), rgb uint8 (N, 3), labels int64 (N,))``, S3DIS ids.

    density: surface samples per square metre before occlusion and range thinning (which remove a share);
    noise: scanner noise standard deviation in metres; n_scanners: 1 or 2 (random when None);
    size: (length, width, height) in metres (random 4-8 x 3.5-6 x 2.7-3.3 when None).
    Coordinates: the floor's corner at the origin, z up, floor at z = 0. All 13 classes are present: a layout
    where some piece of furniture found no room is drawn again (from the same generator, so still
    deterministic for a seed).
    """
    if size is not None and (min(size[0], size[1]) < 3.0 or size[2] < 2.4):
        raise ValueError("rooms need at least 3 x 3 m of floor and 2.4 m of height")
    for _ in range(50):
        xyz, rgb, lab = _generate_room(rng, density, noise, n_scanners, size)
        if len(np.unique(lab)) == len(S3DIS_NAMES):
            return xyz, rgb, lab
    raise RuntimeError("could not place all 13 classes in 50 layouts (room too small or density too low)")


def _generate_room(rng: np.random.Generator, density: float, noise: float, n_scanners: int | None,
                   size: tuple[float, float, float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if size is None:
        size = (rng.uniform(4.0, 8.0), rng.uniform(3.5, 6.0), rng.uniform(2.7, 3.3))
    length, width, height = (float(v) for v in size)
    sc = _Scene(rng, density)
    plan = _Floorplan(length, width)
    paint = sc.color("paint")

    # Floor, ceiling and walls (points of openings are removed below)
    sc.rect([0, 0, 0], [0, width, 0], [length, 0, 0], C["floor"], sc.color("floor"))  # normal +z
    sc.rect([0, 0, height], [length, 0, 0], [0, width, 0], C["ceiling"], sc.color("ceiling"))  # normal -z
    walls_pts_start = len(sc.pts)
    for wall in range(4):
        o, d, n, wlen = _wall_frame(wall, length, width)
        sc.rect([*o, 0.0], [0, 0, height], [*(d * wlen), 0.0], C["wall"], paint)  # normal points inward
    walls_pts_end = len(sc.pts)

    # Openings: one or two doors, one to three windows, each (wall, s0, s1, z0, z1); a door keeps floor clear
    openings = []
    for _door in range(int(rng.integers(1, 3))):
        for _ in range(20):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            w = rng.uniform(0.85, 1.0) * (2 if rng.random() < 0.15 else 1)
            s0 = rng.uniform(0.2, wlen - w - 0.2)
            if all(o_[0] != wall or s0 + w + 0.3 < o_[1] or s0 > o_[2] + 0.3 for o_ in openings):
                openings.append((wall, s0, s0 + w, 0.0, rng.uniform(2.0, 2.2), "door"))
                plan.take(*_footprint_against_wall(wall, s0 - 0.1, s0 + w + 0.1, 1.0, length, width))
                break
    for _window in range(int(rng.integers(1, 4))):
        for _ in range(20):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            w = rng.uniform(0.8, min(2.5, wlen - 0.6))
            s0 = rng.uniform(0.3, wlen - w - 0.3)
            if all(o_[0] != wall or s0 + w + 0.3 < o_[1] or s0 > o_[2] + 0.3 for o_ in openings):
                openings.append((wall, s0, s0 + w, rng.uniform(0.8, 1.0), min(height - 0.3, rng.uniform(2.0, 2.4)),
                                 "window"))
                break
    # Boards: on a wall segment free of openings
    boards = []
    for _item in range(int(rng.integers(1, 3))):
        for _ in range(30):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            w = rng.uniform(1.0, min(3.0, wlen - 1.0))
            s0 = rng.uniform(0.3, wlen - w - 0.3)
            busy = [o_ for o_ in openings + boards if o_[0] == wall and not (s0 + w + 0.2 < o_[1] or s0 > o_[2] + 0.2)]
            if not busy:
                boards.append((wall, s0, s0 + w, rng.uniform(0.8, 1.0), rng.uniform(1.9, 2.1), "board"))
                break

    for wall, s0, s1, z0, z1, kind in openings + boards:
        o, d, n, _ = _wall_frame(wall, length, width)
        a = np.array([*(o + d * s0), z0])
        u, v = np.array([0.0, 0.0, z1 - z0]), np.array([*(d * (s1 - s0)), 0.0])
        if kind == "door":  # a door leaf recessed 3 cm into the wall opening
            inset = np.array([*(-n * 0.03), 0.0])
            sc.rect(a + inset, u, v, C["door"], sc.color("door"))
        elif kind == "window":  # glass set back 8 cm (sparse: glass returns few points) and a sill
            inset = np.array([*(-n * 0.08), 0.0])
            col = sc.color("window")
            sc.rect(a + inset, u, v, C["window"], col, density_factor=0.5)
            sc.rect(a, v, np.array([*(-n * 0.08), 0.0]), C["window"], col)  # the sill
        else:  # board 1.5 cm proud of the wall
            t = np.array([*(n * 0.015), 0.0])
            sc.rect(a + t, u, v, C["board"], sc.color("board"))

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
        for lst in (sc.pts, sc.nrm, sc.lab, sc.col, sc.part):
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
                sc.box([fp[0], fp[1], 0.0], [fp[2], fp[3], height], C["column"], paint)
                break
    # Beams: across the room under the ceiling, same paint
    for _item in range(int(rng.integers(1, 3))):
        h, w = rng.uniform(0.25, 0.5), rng.uniform(0.25, 0.45)
        if rng.random() < 0.5:
            x = rng.uniform(0.5, length - 0.5 - w)
            sc.box([x, 0.0, height - h], [x + w, width, height], C["beam"], paint)
        else:
            y = rng.uniform(0.5, width - 0.5 - w)
            sc.box([0.0, y, height - h], [length, y + w, height], C["beam"], paint)

    clutter_spots = []  # (x0, y0, x1, y1, z) surfaces where clutter may stand

    # Tables with chairs around them
    chair_count = 0
    for _item in range(int(rng.integers(1, 3))):
        for _ in range(40):
            tl, tw = rng.uniform(1.0, 2.2), rng.uniform(0.7, 1.1)
            if rng.random() < 0.5:
                tl, tw = tw, tl
            x0, y0 = rng.uniform(0.6, length - tl - 0.6), rng.uniform(0.6, width - tw - 0.6)
            if x0 < 0.6 or y0 < 0.6 or not plan.free(x0 - 0.55, y0 - 0.55, x0 + tl + 0.55, y0 + tw + 0.55):
                continue
            plan.take(x0, y0, x0 + tl, y0 + tw)
            col, th, leg = sc.color("table"), rng.uniform(0.72, 0.76), 0.05
            sc.box([x0, y0, th - 0.04], [x0 + tl, y0 + tw, th], C["table"], col)
            for lx in (x0 + 0.03, x0 + tl - 0.03 - leg):
                for ly in (y0 + 0.03, y0 + tw - 0.03 - leg):
                    sc.box([lx, ly, 0.0], [lx + leg, ly + leg, th - 0.04], C["table"], col)
            clutter_spots.append((x0 + 0.05, y0 + 0.05, x0 + tl - 0.05, y0 + tw - 0.05, th, 0.3))
            # chairs on all four sides, facing the table
            for side in range(4):
                horizontal = side < 2
                span = tl if horizontal else tw
                for c in range(int(rng.integers(0, max(1, int(span / 0.6)) + 1))):
                    cs = 0.45
                    pos = rng.uniform(0.0, span - cs)
                    off = rng.uniform(0.05, 0.25)
                    if side == 0:
                        cx, cy, back_dir = x0 + pos, y0 - off - cs, (0, -1)
                    elif side == 1:
                        cx, cy, back_dir = x0 + pos, y0 + tw + off, (0, 1)
                    elif side == 2:
                        cx, cy, back_dir = x0 - off - cs, y0 + pos, (-1, 0)
                    else:
                        cx, cy, back_dir = x0 + tl + off, y0 + pos, (1, 0)
                    if not plan.free(cx, cy, cx + cs, cy + cs, margin=0.02):
                        continue
                    plan.take(cx, cy, cx + cs, cy + cs)
                    _chair(sc, cx, cy, cs, back_dir)
                    chair_count += 1
            break
    # at least one chair per room (so that all 13 classes are present): a free-standing one
    for _ in range(200 if chair_count == 0 else 0):
        cx, cy = rng.uniform(0.2, length - 0.65), rng.uniform(0.2, width - 0.65)
        if plan.free(cx, cy, cx + 0.45, cy + 0.45):
            plan.take(cx, cy, cx + 0.45, cy + 0.45)
            _chair(sc, cx, cy, 0.45, [(0, -1), (0, 1), (-1, 0), (1, 0)][int(rng.integers(4))])
            break

    # Bookcases against walls, with shelves
    for _item in range(int(rng.integers(1, 3))):
        for _ in range(30):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            w, dep, h = rng.uniform(0.8, 1.6), rng.uniform(0.3, 0.45), rng.uniform(1.2, 2.2)
            s0 = rng.uniform(0.0, wlen - w)
            fp = _footprint_against_wall(wall, s0, s0 + w, dep, length, width)
            clear = all(o_[0] != wall or s0 + w < o_[1] or s0 > o_[2] or o_[5] == "window" and h < o_[3]
                        for o_ in openings + boards)
            if clear and plan.free(*fp):
                plan.take(*fp)
                col = sc.color("bookcase")
                lo, hi = np.array([fp[0], fp[1], 0.0]), np.array([fp[2], fp[3], h])
                n = _wall_frame(wall, length, width)[2]
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
                break

    # Sofas against walls
    for _item in range(int(rng.integers(1, 3))):
        for _ in range(30):
            wall = int(rng.integers(4))
            wlen = _wall_frame(wall, length, width)[3]
            w, dep = rng.uniform(1.4, 2.2), rng.uniform(0.8, 0.95)
            if w > wlen - 0.2:
                continue
            s0 = rng.uniform(0.1, wlen - w - 0.1)
            fp = _footprint_against_wall(wall, s0, s0 + w, dep, length, width)
            if plan.free(*fp):
                plan.take(*fp)
                col = sc.color("sofa")
                o, d, n, _ = _wall_frame(wall, length, width)
                lo, hi = np.array([fp[0], fp[1], 0.0]), np.array([fp[2], fp[3], 0.45])
                sc.box(lo, hi, C["sofa"], col)  # seat block
                back = _footprint_against_wall(wall, s0, s0 + w, 0.22, length, width)
                sc.box([back[0], back[1], 0.45], [back[2], back[3], 0.85], C["sofa"], col)
                for a0, a1 in ((s0, s0 + 0.18), (s0 + w - 0.18, s0 + w)):
                    arm = _footprint_against_wall(wall, a0, a1, dep, length, width)
                    sc.box([arm[0], arm[1], 0.45], [arm[2], arm[3], 0.65], C["sofa"], col)
                break

    # Clutter: on tables and shelves, and a few items on the floor
    for x0, y0, x1, y1, z, hmax in clutter_spots:
        for _ in range(int(rng.integers(1, 4))):
            w, dp, h = rng.uniform(0.08, 0.35), rng.uniform(0.08, 0.3), rng.uniform(0.05, hmax)
            if x1 - x0 <= w or y1 - y0 <= dp:
                continue
            cx, cy = rng.uniform(x0, x1 - w), rng.uniform(y0, y1 - dp)
            sc.box([cx, cy, z], [cx + w, cy + dp, z + h], C["clutter"], rng.uniform(20, 235, 3))
    for _ in range(int(rng.integers(2, 6))):
        for _ in range(20):
            r, h = rng.uniform(0.12, 0.25), rng.uniform(0.25, 0.7)
            cx, cy = rng.uniform(r + 0.05, length - r - 0.05), rng.uniform(r + 0.05, width - r - 0.05)
            if plan.free(cx - r, cy - r, cx + r, cy + r):
                plan.take(cx - r, cy - r, cx + r, cy + r)
                if rng.random() < 0.5:
                    sc.cylinder((cx, cy), r, 0.0, h, C["clutter"], rng.uniform(20, 235, 3))
                else:
                    sc.box([cx - r, cy - r, 0.0], [cx + r, cy + r, h], C["clutter"], rng.uniform(20, 235, 3))
                break

    xyz, nrm, lab, col, part = sc.arrays()
    boxes = sc.boxes

    # Hidden surfaces: points strictly inside another part's solid box
    eps = 0.005
    keep = np.ones(len(xyz), dtype=bool)
    for lo, hi, pid in boxes:
        # a surface touching the box counts as inside: the floor under a leg, the ceiling above a beam
        keep &= ~(np.all((xyz > lo - eps) & (xyz < hi + eps), axis=1) & (part != pid))
    xyz, nrm, lab, col = xyz[keep], nrm[keep], lab[keep], col[keep]

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
    seen = np.zeros(len(xyz), dtype=bool)
    for s in scanners:
        vis = _visible(xyz, s, boxes, eps=0.02)
        r = np.linalg.norm(xyz - s, axis=1)
        seen |= vis & (rng.random(len(xyz)) < np.minimum(1.0, (3.0 / np.maximum(r, 1e-6)) ** 2))
    xyz, nrm, lab, col = xyz[seen], nrm[seen], lab[seen], col[seen]

    # Colour: shading by orientation (light from above) and per-point noise
    shade = 0.8 + 0.2 * np.abs(nrm[:, 2:3]) + 0.05 * nrm[:, 0:1]
    rgb = np.clip(col * shade + rng.normal(0.0, 6.0, col.shape), 0, 255).astype(np.uint8)
    xyz = xyz + rng.normal(0.0, noise, xyz.shape)
    return xyz, rgb, lab


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
