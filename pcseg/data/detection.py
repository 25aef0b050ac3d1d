"""Detection data: KITTI frames, a synthetic 64-beam lidar scene generator, and box-aware augmentation
(ground-truth sampling, flip, rotation, scaling) applied consistently to points and boxes.

For detectors that fuse camera images (Focals Conv-F, §3.3 "Feature alignment"), frames carry their image 2 and
:func:`augment_with_image` keeps the image aligned with the augmented points: ground-truth sampling also pastes
each object's image crop (its 2D label box) onto the image, and the flip / rotation / scaling are returned as the
3x3 matrix that takes augmented coordinates back to the frame's (the paper reverses the recorded transformations
before projecting; the images themselves are not transformed, supplementary A).

Boxes are (B, 7) ``[x, y, z, dx, dy, dz, yaw]`` in the lidar frame (centre, see `pcseg.geometry.boxes`);
points are (N, 4) float32 ``x, y, z, intensity``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInputError
from ..geometry.boxes import boxes_corners_bev, intersection_area_bev, points_in_boxes, wrap_angle
from ..io.image import read_image
from ..io.kitti import (
    DEFAULT_IMAGE_SIZE, Calibration, KittiObject, difficulty_level, objects_to_lidar_boxes, read_labels, read_velodyne,
)

__all__ = [
    "KittiFrame", "list_kitti_frames", "synthetic_scene", "scene_layout", "cast_rays", "SENSOR_HEIGHT",
    "GtDatabase", "semantickitti_objects", "turned_around", "gt_sampling", "paste_image_crops", "random_flip",
    "random_rotation", "random_scaling", "augment", "augment_with_image", "range_image_cells", "visible_paste",
    "relocate_object", "head_targets",
]

# ---------------------------------------------------------------------------------------------------------------
# KITTI frames
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class KittiFrame:
    """One frame of a KITTI ``training/`` folder, with the labels converted to lidar boxes (DontCare left out)."""

    frame_id: str
    points: np.ndarray            # (N, 4) float32
    boxes: np.ndarray             # (B, 7) float64, lidar frame
    names: list[str]
    calib: Calibration
    difficulty: np.ndarray        # (B,) int64: 0 easy, 1 moderate, 2 hard, -1 none of them
    objects: list[KittiObject] = field(repr=False, default_factory=list)  # the labels, camera frame
    image: np.ndarray | None = field(repr=False, default=None)            # (H, W, 3) uint8 image 2, if read

    @classmethod
    def load(cls, root, frame_id: str, fov_only: bool = False, image: bool = False) -> "KittiFrame":
        """Read ``root/{velodyne,calib,label_2}/<frame_id>.*``. ``fov_only`` keeps the points seen by image 2,
        the only part of the scan that KITTI labels (a frame without labels has no boxes). ``image`` also reads
        ``image_2/<frame_id>.png`` when it exists (``self.image`` stays None otherwise); the field of view is then
        that image's own size (KITTI's vary by a few pixels)."""
        root = Path(root)
        calib = Calibration.from_file(root / "calib" / f"{frame_id}.txt")
        points = read_velodyne(root / "velodyne" / f"{frame_id}.bin")
        label = root / "label_2" / f"{frame_id}.txt"
        objects = [o for o in read_labels(label) if o.type != "DontCare"] if label.is_file() else []
        boxes, names = objects_to_lidar_boxes(objects, calib)
        png = root / "image_2" / f"{frame_id}.png"
        pixels = read_image(png) if image and png.is_file() else None
        if fov_only:
            size = (pixels.shape[1], pixels.shape[0]) if pixels is not None else DEFAULT_IMAGE_SIZE
            points = points[calib.fov_mask(points[:, :3], size)]
        return cls(frame_id, points, boxes, names, calib, difficulty_level(objects), objects, pixels)


def list_kitti_frames(root) -> list[str]:
    """Ids of the frames that have a velodyne scan and a calibration under ``root`` (a ``training/`` folder)."""
    root = Path(root)
    if not (root / "velodyne").is_dir():
        raise BadInputError("no velodyne/ folder: not a KITTI training/ or testing/ folder", os.fspath(root))
    return sorted(p.stem for p in (root / "velodyne").glob("*.bin") if (root / "calib" / f"{p.stem}.txt").is_file())


# ---------------------------------------------------------------------------------------------------------------
# Synthetic scenes: a 64-beam spinning lidar ray-cast against the ground, objects and buildings
# ---------------------------------------------------------------------------------------------------------------

SENSOR_HEIGHT = 1.73                         # KITTI's velodyne above the road, metres (ground at z = -1.73)
_FLAT = (0.0, 0.0, -SENSOR_HEIGHT)
# Mean sizes (dx, dy, dz) and spread of KITTI objects
_SIZES = {"Car": ((3.9, 1.6, 1.56), (0.35, 0.1, 0.1)),
          "Pedestrian": ((0.8, 0.6, 1.73), (0.15, 0.08, 0.1)),
          "Cyclist": ((1.76, 0.6, 1.73), (0.12, 0.06, 0.08))}
_RAY_CHUNK = 8192


@dataclass
class SceneLayout:
    """Solids to ray-cast (each an opaque box) and the labelled objects they belong to."""

    solids: np.ndarray            # (S, 7) boxes
    reflectance: np.ndarray       # (S,) mean intensity of each solid
    owner: np.ndarray             # (S,) index of the labelled object, -1 for buildings
    boxes: np.ndarray             # (B, 7) labelled objects
    names: list[str]
    ground: tuple[float, float, float] = _FLAT   # the road plane z = g0 x + g1 y + g2


def _parts(name: str, box: np.ndarray) -> list[np.ndarray]:
    """Opaque parts of an object, all inside its box: car body + cabin, pedestrian, bicycle + rider."""
    x, y, z, l, w, h, yaw = box
    fwd = np.array([np.cos(yaw), np.sin(yaw)])
    bottom = z - h / 2

    def part(off, length, width, z0, z1):
        cx, cy = np.array([x, y]) + off * fwd
        return np.array([cx, cy, (z0 + z1) / 2, length, width, z1 - z0, yaw])

    if name == "Car":
        return [part(0.0, l, w, bottom + 0.25 * h, bottom + 0.6 * h),                 # body (wheels leave a gap)
                part(-0.05 * l, 0.55 * l, 0.9 * w, bottom + 0.6 * h, bottom + h),      # cabin
                part(0.33 * l, 0.2 * l, w, bottom + 0.05 * h, bottom + 0.25 * h),      # front wheels
                part(-0.33 * l, 0.2 * l, w, bottom + 0.05 * h, bottom + 0.25 * h)]     # rear wheels
    if name == "Pedestrian":
        return [part(0.0, 0.5 * l, 0.7 * w, bottom + 0.5 * h, bottom + 0.95 * h),       # torso and head
                part(0.0, 0.35 * l, 0.5 * w, bottom, bottom + 0.5 * h)]                 # legs
    return [part(0.0, l, 0.3 * w, bottom + 0.1 * h, bottom + 0.55 * h),                 # bicycle
            part(-0.1 * l, 0.35 * l, 0.8 * w, bottom + 0.55 * h, bottom + 0.97 * h)]    # rider


def scene_layout(rng: np.random.Generator, n_cars=(4, 14), n_pedestrians=(0, 8), n_cyclists=(0, 4),
                 n_buildings=(4, 10), n_poles=(2, 12), extent: float = 70.0) -> SceneLayout:
    """A random street: a road along x with cars in lanes and parked at the kerb, cyclists near the kerb,
    pedestrians on the pavements, buildings beyond, and unlabelled clutter (poles, tree trunks, bollards) on the
    pavements. Counts are (low, high) inclusive; objects never overlap. The road is a plane tilted by up to
    about 1 degree, 1.65-1.8 m below the sensor; objects stand on it, buildings and poles go into it."""
    boxes, names, taken = [], [], []
    g = (*rng.uniform(-0.015, 0.015, 2), -rng.uniform(1.65, 1.8))

    def ground(x, y):
        return g[0] * x + g[1] * y + g[2]

    def free(b: np.ndarray, margin: float) -> bool:
        grown = b.copy()
        grown[3:5] += 2 * margin
        if abs(b[0]) < 3.5 + b[3] / 2 and abs(b[1]) < 1.5 + b[4] / 2:   # the ego car stands at the origin
            return False
        return not taken or float(intersection_area_bev(grown[None], np.array(taken)).max()) <= 0.0

    def place(name: str, count: int, where) -> None:
        mean, spread = _SIZES[name]
        for _ in range(count):
            for _attempt in range(20):
                dims = np.maximum(rng.normal(mean, spread), 0.3)
                x, y, yaw = where()
                b = np.array([x, y, ground(x, y) + dims[2] / 2, *dims, wrap_angle(yaw)])
                if free(b, 0.3):
                    boxes.append(b)
                    names.append(name)
                    taken.append(b)
                    break

    def pick(n) -> int:
        return int(rng.integers(n[0], n[1] + 1))

    half_road = float(rng.uniform(5.0, 9.0))
    solids, refl, owner = [], [], []
    for _ in range(pick(n_buildings)):         # buildings first: everything else keeps clear of them
        side = rng.choice([-1.0, 1.0])
        depth, length, height = rng.uniform(6, 15), rng.uniform(8, 30), rng.uniform(4, 15)
        y = side * (half_road + rng.uniform(4.0, 9.0) + depth / 2)
        x = rng.uniform(-extent, extent)
        b = np.array([x, y, ground(x, y) + height / 2 - 0.5, length, depth, height + 1.0, rng.normal(0.0, 0.05)])
        if not taken or float(intersection_area_bev(b[None], np.array(taken)).max()) <= 0.0:
            taken.append(b)
            solids.append(b)
            refl.append(rng.uniform(0.15, 0.45))
            owner.append(-1)

    for _ in range(pick(n_poles)):
        side = rng.choice([-1.0, 1.0])
        width, height = rng.uniform(0.15, 0.6), rng.uniform(0.8, 8.0)
        x, y = rng.uniform(-extent, extent), side * (half_road + rng.uniform(0.3, 3.5))
        b = np.array([x, y, ground(x, y) + height / 2 - 0.25, width, width, height + 0.5, rng.uniform(-np.pi, np.pi)])
        if float(intersection_area_bev(b[None], np.array(taken)).max(initial=0.0)) <= 0.0:
            taken.append(b)
            solids.append(b)
            refl.append(rng.uniform(0.1, 0.6))
            owner.append(-1)

    def lane():
        y = rng.choice([-0.75, -0.25, 0.25, 0.75]) * half_road + rng.normal(0, 0.3)
        if rng.random() < 0.35:                # parked at the kerb, either way round
            y = np.sign(y) * (half_road - 1.0)
            return rng.uniform(-extent, extent), y, rng.choice([0.0, np.pi]) + rng.normal(0, 0.15)
        heading = 0.0 if y < 0 else np.pi      # driving on the right
        return rng.uniform(-extent, extent), y, heading + rng.normal(0, 0.08)

    def kerb():
        y = rng.choice([-1.0, 1.0]) * (half_road - rng.uniform(0.5, 2.0))
        return rng.uniform(-extent, extent), y, (0.0 if y < 0 else np.pi) + rng.normal(0, 0.15)

    def pavement():
        y = rng.choice([-1.0, 1.0]) * (half_road + rng.uniform(0.5, 3.5))
        return rng.uniform(-0.6 * extent, 0.6 * extent), y, rng.uniform(-np.pi, np.pi)

    place("Car", pick(n_cars), lane)
    place("Cyclist", pick(n_cyclists), kerb)
    place("Pedestrian", pick(n_pedestrians), pavement)
    base = {"Car": (0.05, 0.6), "Pedestrian": (0.15, 0.4), "Cyclist": (0.1, 0.5)}
    for k, (b, name) in enumerate(zip(boxes, names)):
        for p in _parts(name, b):
            solids.append(p)
            refl.append(rng.uniform(*base[name]))
            owner.append(k)
    return SceneLayout(np.array(solids).reshape(-1, 7), np.array(refl), np.array(owner, dtype=np.int64),
                       np.array(boxes).reshape(-1, 7), names, tuple(float(v) for v in g))


def _hdl64_directions(azimuth_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit ray directions of 64 beams from +2 to -24.8 deg elevation over a full turn, ordered by azimuth:
    ((64 * azimuth_steps, 3) directions, (64 * azimuth_steps,) azimuths)."""
    elevation = np.deg2rad(np.linspace(2.0, -24.8, 64))
    azimuth = np.linspace(-np.pi, np.pi, azimuth_steps, endpoint=False)
    az, el = np.meshgrid(azimuth, elevation, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    return dirs, az.reshape(-1)


def _azimuth_spans(solids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Azimuth interval [lo, hi] seen from the origin by each box; (-pi, pi) for boxes across the -x axis."""
    corners = boxes_corners_bev(solids)
    az = np.arctan2(corners[..., 1], corners[..., 0])
    lo, hi = az.min(1), az.max(1)
    across = (hi - lo > np.pi) | (np.abs(solids[:, :2]).max(1) < np.hypot(solids[:, 3], solids[:, 4]))
    return np.where(across, -np.pi, lo), np.where(across, np.pi, hi)


def _ray_box_entry(directions: np.ndarray, solids: np.ndarray) -> np.ndarray:
    """(R, S) distance along each ray (from the origin) where it enters each box; inf where it misses.
    The slab method in each box's frame: entry = max over axes of the near slab, exit = min of the far."""
    c, s = np.cos(solids[:, 6]), np.sin(solids[:, 6])
    # origin and directions in the box frame: R(yaw)^T (p - centre)
    o = np.stack([-(c * solids[:, 0] + s * solids[:, 1]), -(-s * solids[:, 0] + c * solids[:, 1]), -solids[:, 2]], -1)
    d = np.stack([directions[:, None, 0] * c + directions[:, None, 1] * s,
                  -directions[:, None, 0] * s + directions[:, None, 1] * c,
                  np.broadcast_to(directions[:, None, 2], (len(directions), len(solids)))], -1)   # (R, S, 3)
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    half = solids[:, 3:6] / 2
    t1 = (-half[None] - o[None]) / d
    t2 = (half[None] - o[None]) / d
    near = np.minimum(t1, t2).max(-1)
    far = np.maximum(t1, t2).min(-1)
    return np.where((far >= near) & (near > 0), near, np.inf)


def cast_rays(solids: np.ndarray, azimuth_steps: int = 2048, max_range: float = 80.0,
              ground: tuple[float, float, float] = _FLAT) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast a 64-beam spinning lidar at the origin against the ground plane z = g0 x + g1 y + g2 (g2 < 0)
    and opaque boxes.

    Each ray returns its first hit only (the nearest entry among the ground and all boxes) within ``max_range``.
    Returns ((M, 3) float64 hit points, (M,) index of the solid hit, -1 for the ground).
    """
    dirs, azimuth = _hdl64_directions(azimuth_steps)
    solids = np.asarray(solids, dtype=np.float64).reshape(-1, 7)
    lo, hi = _azimuth_spans(solids) if len(solids) else (np.zeros(0), np.zeros(0))
    points, hit = [], []
    for start in range(0, len(dirs), _RAY_CHUNK):   # chunks of consecutive azimuths
        d = dirs[start:start + _RAY_CHUNK]
        # t d_z = g0 t d_x + g1 t d_y + g2  ->  t = g2 / (d_z - g0 d_x - g1 d_y), for rays heading down to it
        down = d[:, 2] - ground[0] * d[:, 0] - ground[1] * d[:, 1]
        with np.errstate(divide="ignore"):
            t_ground = np.where(down < 0, ground[2] / down, np.inf)
        # only the boxes whose azimuth span meets this chunk's can be hit
        a = azimuth[start:start + _RAY_CHUNK]
        near = np.nonzero((hi >= a[0] - 1e-3) & (lo <= a[-1] + 1e-3))[0]
        which, t_solid = np.full(len(d), -1, np.int64), np.full(len(d), np.inf)
        if len(near):
            entry = _ray_box_entry(d, solids[near])
            first = entry.argmin(1)
            t_solid = entry[np.arange(len(d)), first]
            which = near[first]
        t = np.minimum(t_ground, t_solid)
        keep = t <= max_range
        points.append(d[keep] * t[keep, None])
        hit.append(np.where(t_solid[keep] < t_ground[keep], which[keep], -1))
    return np.concatenate(points), np.concatenate(hit).astype(np.int64)


def synthetic_scene(rng: np.random.Generator, azimuth_steps: int = 2048, max_range: float = 80.0,
                    range_noise: float = 0.02, min_points: int = 5, **layout_options):
    """A synthetic lidar frame: (points (N, 4) float32 x, y, z, intensity, boxes (B, 7), names).

    `scene_layout` places the street, `cast_rays` scans it (first hit per ray), then each return gets Gaussian
    range noise (``range_noise`` m) and an intensity drawn around the reflectance of the surface it hit.
    Objects hit by fewer than ``min_points`` rays are not labelled (their points stay), like unlabelled far or
    hidden objects in real data.
    """
    layout = scene_layout(rng, **layout_options)
    xyz, hit = cast_rays(layout.solids, azimuth_steps, max_range, layout.ground)
    rng_dist = np.linalg.norm(xyz, axis=1, keepdims=True)
    xyz = xyz * (1.0 + rng.normal(0.0, range_noise, (len(xyz), 1)) / np.maximum(rng_dist, 1e-6))
    base = np.where(hit >= 0, layout.reflectance[np.maximum(hit, 0)] if len(layout.reflectance) else 0.0,
                    rng.uniform(0.1, 0.3))
    intensity = np.clip(base + rng.normal(0.0, 0.05, len(xyz)), 0.0, 1.0)
    owner = np.where(hit >= 0, layout.owner[np.maximum(hit, 0)] if len(layout.owner) else -1, -1)
    counts = np.bincount(owner[owner >= 0], minlength=len(layout.boxes))
    labelled = counts >= min_points
    points = np.concatenate([xyz, intensity[:, None]], 1).astype(np.float32)
    return points, layout.boxes[labelled], [n for n, k in zip(layout.names, labelled) if k]


# ---------------------------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------------------------


class GtDatabase:
    """Objects cut out of frames (their box, class and the points inside) for ground-truth sampling; with the
    frame's image, also the image crop inside the object's 2D label box (Focals Conv §3.3: "we directly crop
    objects in bounding boxes")."""

    def __init__(self):
        self.boxes: list[np.ndarray] = []
        self.names: list[str] = []
        self.points: list[np.ndarray] = []
        self.crops: list[np.ndarray | None] = []        # (h, w, 3) uint8 pixels, None without an image
        self.crop_boxes: list[np.ndarray | None] = []   # (4,) int64 x0, y0, x1, y1 (ends excluded) in the image

    def __len__(self) -> int:
        return len(self.names)

    def add_frame(self, points, boxes, names, min_points: int = 5, difficulty=None,
                  classes: tuple[str, ...] = ("Car", "Pedestrian", "Cyclist"), image=None, bbox_2d=None) -> None:
        """Store every object of ``classes`` with at least ``min_points`` points (and, when ``difficulty`` is
        given, a KITTI difficulty other than -1). With ``image`` (H, W, 3) and ``bbox_2d`` (B, 4) label boxes
        (left, top, right, bottom pixels), each object's crop is stored too (pixels ``floor(left)`` to
        ``ceil(right)``, ``floor(top)`` to ``ceil(bottom)``, clipped to the image)."""
        points = np.asarray(points, dtype=np.float32)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        idx = points_in_boxes(points[:, :3], boxes)
        order = np.argsort(idx, kind="stable")
        starts = np.searchsorted(idx[order], np.arange(len(boxes) + 1))
        if image is not None:
            h, w = image.shape[:2]
            b2 = np.asarray(bbox_2d, dtype=np.float64).reshape(-1, 4)
            lo = np.clip(np.floor(b2[:, :2]), 0, [w, h]).astype(np.int64)
            hi = np.clip(np.ceil(b2[:, 2:]), 0, [w, h]).astype(np.int64)
            crop_boxes = np.concatenate([lo, hi], 1)
        for k, name in enumerate(names):         # loop over objects
            if name not in classes or (difficulty is not None and difficulty[k] < 0):
                continue
            mine = order[starts[k]:starts[k + 1]]
            if len(mine) >= min_points:
                self.boxes.append(boxes[k].copy())
                self.names.append(name)
                self.points.append(points[mine].copy())
                crop = None
                if image is not None:
                    x0, y0, x1, y1 = crop_boxes[k]
                    crop = image[y0:y1, x0:x1].copy() if x1 > x0 and y1 > y0 else None
                self.crops.append(crop)
                self.crop_boxes.append(crop_boxes[k].copy() if crop is not None else None)

    @classmethod
    def from_frames(cls, frames, min_points: int = 5, scans=()) -> "GtDatabase":
        """From `KittiFrame`s (objects of unknown difficulty left out, as is usual for KITTI); frames that carry
        an image give their objects' image crops. ``scans``: SemanticKITTI scans whose cars are added too
        (:func:`semantickitti_objects`)."""
        db = cls()
        for f in frames:
            bbox_2d = np.array([o.bbox for o in f.objects]).reshape(-1, 4) if f.image is not None else None
            db.add_frame(f.points, f.boxes, f.names, min_points, f.difficulty, image=f.image, bbox_2d=bbox_2d)
        for scan in scans:
            db.add_frame(*semantickitti_objects(scan), min_points=min_points)
        return db


SEMANTICKITTI_CARS = (10, 252)   # SemanticKITTI's "car" and "moving-car"
# people, riders and two-wheelers (parked or ridden, moving or not): KITTI's Pedestrian and Cyclist, which a
# car-sized box fit cannot give; their points leave a scan used for detection (neither positives nor negatives)
SEMANTICKITTI_UNBOXED = (11, 15, 30, 31, 32, 253, 254, 255)
MIN_SCAN_POINTS = 60             # fewer points than this give no reliable heading


def semantickitti_objects(scan: str | os.PathLike, min_points: int = MIN_SCAN_POINTS):
    """A SemanticKITTI scan as a detection frame with Car labels: (points (N, 4), boxes (B, 7), names).

    The scan is a KITTI Velodyne frame (same sensor and mount as the detection frames); its ``.label`` file
    (``../labels/<scan>.label``, semantic class in the low 16 bits, instance id in the high 16) gives each car
    its points. A box is fitted to each car seen by at least ``min_points`` points
    (:func:`pcseg.geometry.boxes.fit_object_box`: least-area rectangle for the heading, grown to a KITTI car's
    mean size on the side away from the sensor). The points of objects left without a box are removed: cars
    seen by fewer points, and people, riders and two-wheelers (``SEMANTICKITTI_UNBOXED``). Every remaining point
    is then either inside a Car box or a true negative, so the scan serves as a whole training frame (all 360
    degrees are labelled) as well as a source of cars for ground-truth sampling.
    """
    from ..geometry.boxes import fit_object_box
    from ..io.kitti import read_velodyne

    scan = Path(scan)
    label_path = scan.parent.parent / "labels" / (scan.stem + ".label")
    if not label_path.is_file():
        raise BadInputError(f"no labels for this scan (expected {label_path.name} in ../labels)", str(scan))
    points = read_velodyne(str(scan))
    raw = np.fromfile(label_path, dtype=np.uint32)
    if len(raw) != len(points):
        raise BadInputError(f"{len(raw)} labels for {len(points)} points", str(label_path))
    semantic, instance = raw & 0xFFFF, raw >> 16
    car = np.isin(semantic, SEMANTICKITTI_CARS) & (instance > 0)
    ids, inverse, counts = np.unique(instance[car], return_inverse=True, return_counts=True)
    boxed = ids[counts >= min_points]
    boxes = [fit_object_box(points[car & (instance == i), :3]) for i in boxed]   # loop over cars
    unboxed_car = np.zeros(len(points), dtype=bool)
    unboxed_car[np.nonzero(car)[0]] = counts[inverse] < min_points
    keep = ~(np.isin(semantic, SEMANTICKITTI_UNBOXED) | unboxed_car)
    return points[keep], np.array(boxes, dtype=np.float64).reshape(-1, 7), ["Car"] * len(boxes)


def turned_around(points, boxes):
    """The scene rotated by pi about the sensor: what lay behind is now in front. Detectors whose range covers
    only x >= 0 (KITTI's) then see a 360-degree scan's rear half as a second frame."""
    points, boxes, _ = _rotate(points, boxes, np.pi)
    return points, boxes


DEFAULT_SAMPLE_COUNTS = {"Car": 15, "Pedestrian": 10, "Cyclist": 10}   # objects per class after sampling


def _choose_samples(boxes, names, database: GtDatabase, rng: np.random.Generator, sample_counts: dict[str, int],
                    margin: float) -> list[int]:
    """Database objects to paste (see :func:`gt_sampling`)."""
    all_boxes = list(boxes)
    chosen = []
    for k in _draw_candidates(names, database, rng, sample_counts):   # loop over candidate objects
        b = database.boxes[k]
        grown = b.copy()
        grown[3:5] += 2 * margin
        if all_boxes and float(intersection_area_bev(grown[None], np.array(all_boxes)).max()) > 0.0:
            continue
        all_boxes.append(b)
        chosen.append(k)
    return chosen


def _draw_candidates(names, database: GtDatabase, rng: np.random.Generator,
                     sample_counts: dict[str, int]) -> list[int]:
    """Database objects that may be pasted, class by class in ``sample_counts`` order: for each class a random
    draw (without replacement) of as many as the frame lacks to reach its count."""
    db_names = np.array(database.names)
    candidates = []
    for cls, target in sample_counts.items():
        want = target - sum(n == cls for n in names)
        pool = np.nonzero(db_names == cls)[0]
        if want <= 0 or len(pool) == 0:
            continue
        candidates += [int(k) for k in rng.permutation(pool)[:want]]
    return candidates


def _paste_points(points, boxes, names, database: GtDatabase, chosen: list[int]):
    new_boxes = np.array([database.boxes[k] for k in chosen])
    outside = points_in_boxes(points[:, :3], new_boxes) < 0
    pasted = [database.points[k] for k in chosen]
    if pasted and pasted[0].shape[1] != points.shape[1]:
        raise ValueError(f"database points have {pasted[0].shape[1]} columns, the frame {points.shape[1]}")
    out_points = np.concatenate([points[outside], *pasted]).astype(np.float32)
    return out_points, np.concatenate([boxes, new_boxes]), names + [database.names[k] for k in chosen]


def gt_sampling(points, boxes, names, database: GtDatabase, rng: np.random.Generator,
                sample_counts: dict[str, int] | None = None, margin: float = 0.0, occlusion: bool = False,
                far_share: float = 0.0, far_range: tuple[float, float] = (40.0, 70.0), min_points: int = 5):
    """Ground-truth sampling (SECOND): paste database objects into the frame until each class has
    ``sample_counts[class]`` objects. Candidates are drawn without replacement and kept only when their footprint
    (grown by ``margin``) touches no existing or already pasted box; scene points inside a pasted box are removed
    and the object's own points added. Objects keep their original position (and hence their sensor view).
    Returns (points, boxes, names) with the pasted objects appended.

    With ``occlusion`` or ``far_share`` (both off by default: the behaviour above, draw for draw), objects are
    pasted as the beam would see them (:func:`_visible_sampling`): ``far_share`` of the candidates are first
    moved along their line of sight to a range drawn in ``far_range`` (when that is farther than where they were)
    and thinned to that range's point density (:func:`relocate_object`); with ``occlusion`` the object's points
    behind nearer scene points are dropped and the scene points it hides removed (:func:`visible_paste`).
    """
    sample_counts = DEFAULT_SAMPLE_COUNTS if sample_counts is None else sample_counts
    points = np.asarray(points, dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    names = list(names)
    if len(database) == 0:
        return points, boxes, names
    if occlusion or far_share > 0:
        return _visible_sampling(points, boxes, names, database, rng, sample_counts, margin, occlusion, far_share,
                                 far_range, min_points)
    chosen = _choose_samples(boxes, names, database, rng, sample_counts, margin)
    if not chosen:
        return points, boxes, names
    return _paste_points(points, boxes, names, database, chosen)


# ---------------------------------------------------------------------------------------------------------------
# Occlusion-aware copy-paste: objects pasted as the beam would see them (issue #29 item 3)
# ---------------------------------------------------------------------------------------------------------------

PASTE_AZIMUTH_STEPS = 2048                 # azimuth cells of the range image (those of synthetic_scene's beams)
PASTE_ELEVATION_TOP = np.deg2rad(2.0)      # the top beam of the HDL-64 pattern
PASTE_ELEVATION_STEP = np.deg2rad(26.8 / 63)   # its mean beam spacing: one row per beam
_ROW_MARGIN = 16                           # rows above the top beam and below the lowest kept in the image
_N_ROWS = 64 + 2 * _ROW_MARGIN
_BEAM_REACH = 0.6      # a moved object's sample stands for its cell's ray within this many sample spacings
STRUCTURE_POINTS = 10   # scene points standing in a box (0.3 m above its bottom) that refuse an occlusion paste


def range_image_cells(xyz, azimuth_steps: int = PASTE_AZIMUTH_STEPS,
                      elevation_step: float = PASTE_ELEVATION_STEP) -> tuple[np.ndarray, np.ndarray]:
    """Cell of each point in a spherical range image of the sensor at the origin, and its range:
    ((N,) int64 cell, (N,) float64 range). Rows are beams (``elevation_step`` apart from +2 degrees down, the
    synthetic HDL-64 pattern, rows beyond it clipped to 16 extra rows each side), columns ``azimuth_steps``
    azimuth cells centred on the pattern's azimuths. A cell holds at most one return of a scan by that pattern."""
    p = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    r = np.sqrt(np.einsum("ij,ij->i", p, p))
    az = np.arctan2(p[:, 1], p[:, 0])
    col = np.rint((az + np.pi) * (azimuth_steps / (2 * np.pi))).astype(np.int64) % azimuth_steps
    el = np.arctan2(p[:, 2], np.hypot(p[:, 0], p[:, 1]))
    row = np.clip(np.rint((PASTE_ELEVATION_TOP - el) / elevation_step).astype(np.int64) + _ROW_MARGIN, 0,
                  _N_ROWS - 1)
    return row * azimuth_steps + col, r


def _silhouette_fill(major, minor, depth, cover, to_cell) -> None:
    """For each ``major`` index (a row or a column), the cells between its smallest and largest ``minor`` index
    get at least the farthest ``depth`` of that line (``np.maximum`` into ``cover``)."""
    lines, inv = np.unique(major, return_inverse=True)
    inv = inv.reshape(-1)
    lo = np.full(len(lines), np.iinfo(np.int64).max)
    hi = np.full(len(lines), np.iinfo(np.int64).min)
    far = np.full(len(lines), -np.inf)
    np.minimum.at(lo, inv, minor)
    np.maximum.at(hi, inv, minor)
    np.maximum.at(far, inv, depth)
    length = hi - lo + 1
    total = int(length.sum())
    step = np.arange(total) - np.repeat(np.cumsum(length) - length, length)
    np.maximum.at(cover, to_cell(np.repeat(lines, length), np.repeat(lo, length) + step), np.repeat(far, length))


def _close_holes(image: np.ndarray) -> np.ndarray:
    """A range image (rows, azimuths; inf where empty) with its holes of one or two cells closed: an empty cell
    with returns within two cells on both sides along its row (azimuth wraps), or along its column, gets the
    farther of the two nearest such returns. A surface's dropouts (random ones, dark paint, glass) then still
    hide what is behind it; the sky above a roof line stays open."""
    def pad_rows(a, k):                          # a shifted by k rows, inf shifted in
        out = np.full_like(a, np.inf)
        if k > 0:
            out[k:] = a[:-k]
        else:
            out[:k] = a[-k:]
        return out

    def side(shift):
        first, second = shift(1), shift(2)
        return np.where(np.isfinite(first), first, second)

    left, right = side(lambda k: np.roll(image, k, axis=1)), side(lambda k: np.roll(image, -k, axis=1))
    up, down = side(lambda k: pad_rows(image, k)), side(lambda k: pad_rows(image, -k))
    along_row = np.where(np.isfinite(left) & np.isfinite(right), np.maximum(left, right), np.inf)
    along_col = np.where(np.isfinite(up) & np.isfinite(down), np.maximum(up, down), np.inf)
    return np.where(np.isfinite(image), image, np.minimum(along_row, along_col))


def visible_paste(scene_xyz, object_xyz, tolerance: float = 0.3, azimuth_steps: int = PASTE_AZIMUTH_STEPS,
                  elevation_step: float = PASTE_ELEVATION_STEP) -> tuple[np.ndarray, np.ndarray]:
    """What a sensor at the origin would see of a frame with an object pasted in: ((N,) bool scene points kept,
    (M,) bool object points kept).

    Both go into one spherical range image (:func:`range_image_cells`, a cell per beam and azimuth step). An
    object point is dropped when a scene point of its cell is nearer by more than ``tolerance`` (the object is
    behind it; holes of one or two cells in the scene's image count as the surface around them, so that a
    surface's dropouts do not let a hidden object through). A scene point is dropped when the object covers its
    cell and lies nearer by more than ``tolerance``: the cells of the object's kept points (its nearest range
    there), and, to close the object's silhouette where it returned nothing (glass, dropouts, the gaps of a
    thinned object), the cells between its leftmost and rightmost kept point of each row and its top and bottom
    kept point of each column (the farthest range of the object on that row or column). The object is meant to
    be at most half a turn wide. Scene points inside the object's box are the caller's to remove first
    (:func:`gt_sampling` does).
    """
    s_cell, s_r = range_image_cells(scene_xyz, azimuth_steps, elevation_step)
    o_cell, o_r = range_image_cells(object_xyz, azimuth_steps, elevation_step)
    n_cells = _N_ROWS * azimuth_steps
    nearest = np.full(n_cells, np.inf)
    np.minimum.at(nearest, s_cell, s_r)
    object_keep = o_r <= _close_holes(nearest.reshape(_N_ROWS, azimuth_steps)).reshape(-1)[o_cell] + tolerance
    scene_keep = np.ones(len(s_r), dtype=bool)
    if not object_keep.any():
        return scene_keep, object_keep
    cell, rr = o_cell[object_keep], o_r[object_keep]
    row, col = cell // azimuth_steps, cell % azimuth_steps
    half = azimuth_steps // 2
    rel = (col - col[0] + half) % azimuth_steps - half          # columns about the first point: no wrap
    cover = np.full(n_cells, -np.inf)                          # scene points beyond this range are hidden

    def to_cell(r, c):
        return r * azimuth_steps + (c + col[0]) % azimuth_steps

    _silhouette_fill(row, rel, rr, cover, to_cell)
    _silhouette_fill(rel, row, rr, cover, lambda c, r: to_cell(r, c))
    own = np.full(n_cells, np.inf)
    np.minimum.at(own, cell, rr)
    hit = np.isfinite(own)
    cover[hit] = own[hit]
    limit = cover[s_cell]
    scene_keep = ~(np.isfinite(limit) & (s_r > limit + tolerance))
    return scene_keep, object_keep


def relocate_object(points, box, distance: float, rng: np.random.Generator, azimuth: float | None = None,
                    ground_z: float | None = None, thinning: str = "beams"):
    """An object's points and box as a 64-beam sensor at the origin would see them at horizontal range
    ``distance``: (points, box). The object turns about the sensor to ``azimuth`` (default: where it is) and moves
    along its line of sight, so the sensor sees the same side of it; ``ground_z``: the height its bottom is set
    to (default: unchanged).

    A spinning lidar's samples on an object fall off about with range squared (its angular size shrinks in
    azimuth and in elevation), so a move from range r to a farther ``distance`` keeps about (r / distance)^2 of
    the points. ``thinning="beams"`` (default) keeps, in each cell of the range image of the synthetic HDL-64
    pattern (:func:`range_image_cells`: a beam and an azimuth step) the point nearest to the cell's ray, when
    that ray meets the object (a point lies within 0.6 of the moved samples' spacing of it, in azimuth and in
    elevation): the object is then sampled where the beams would sample it, one return per cell;
    ``"random"`` keeps round(n (r / distance)^2) of its n points drawn at random (``rng``). A nearer move keeps
    every point (it cannot add the samples it would gain)."""
    if thinning not in ("beams", "random"):
        raise ValueError(f"thinning is 'beams' or 'random', not {thinning!r}")
    pts = np.array(points, dtype=np.float32, copy=True)
    b = np.array(box, dtype=np.float64, copy=True).reshape(7)
    r0 = float(np.hypot(b[0], b[1]))
    a0 = float(np.arctan2(b[1], b[0]))
    if azimuth is not None:
        pts, rotated, _ = _rotate(pts, b[None], float(azimuth) - a0)
        b = rotated[0]
        a0 = float(azimuth)
    shift = np.array([np.cos(a0), np.sin(a0)]) * (float(distance) - r0)
    pts[:, :2] = (pts[:, :2].astype(np.float64) + shift).astype(np.float32)
    b[:2] += shift
    if ground_z is not None:
        dz = float(ground_z) - (b[2] - b[5] / 2)
        pts[:, 2] += np.float32(dz)
        b[2] += dz
    if distance > r0 > 0 and len(pts):
        if thinning == "random":
            keep = int(round(len(pts) * (r0 / float(distance)) ** 2))
            pts = pts[np.sort(rng.choice(len(pts), size=keep, replace=False))]
        else:
            # offsets from the cell's ray, in cells; the source's samples are now (r / distance) cells apart
            cell, _ = range_image_cells(pts[:, :3])
            row, col = cell // PASTE_AZIMUTH_STEPS, cell % PASTE_AZIMUTH_STEPS
            xyz = pts[:, :3].astype(np.float64)
            az_step = 2 * np.pi / PASTE_AZIMUTH_STEPS
            d_az = wrap_angle(np.arctan2(xyz[:, 1], xyz[:, 0]) - (-np.pi + col * az_step)) / az_step
            el = np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1]))
            d_el = (el - (PASTE_ELEVATION_TOP - (row - _ROW_MARGIN) * PASTE_ELEVATION_STEP)) / PASTE_ELEVATION_STEP
            order = np.lexsort((d_az ** 2 + d_el ** 2, cell))
            _, first = np.unique(cell[order], return_index=True)
            nearest = order[first]
            # the cell's ray meets the object when a sample lies within about half a sample spacing of it
            reach = _BEAM_REACH * r0 / float(distance)
            hit = (np.abs(d_az[nearest]) <= reach) & (np.abs(d_el[nearest]) <= reach)
            pts = pts[np.sort(nearest[hit])]
    return pts, b


def _ground_below(points: np.ndarray, xy, radius: float = 8.0, min_count: int = 10) -> float | None:
    """The ground height under ``xy``: the 10th percentile of z of the points within ``radius`` horizontally,
    None with fewer than ``min_count`` of them."""
    d = np.hypot(points[:, 0] - xy[0], points[:, 1] - xy[1])
    near = points[d < radius, 2]
    return float(np.percentile(near, 10)) if len(near) >= min_count else None


def _visible_sampling(points, boxes, names, database: GtDatabase, rng: np.random.Generator,
                      sample_counts: dict[str, int], margin: float, occlusion: bool, far_share: float,
                      far_range: tuple[float, float], min_points: int):
    """:func:`gt_sampling` with ``occlusion`` and/or ``far_share``.

    Candidates are drawn as in :func:`gt_sampling`; each is moved to a range drawn in ``far_range`` with
    probability ``far_share`` (when that is farther than its own range; its bottom set on the frame's ground
    there, the 10th percentile of the frame's z within 8 m, when there are points), then they are pasted
    nearest first, each kept only when its footprint (grown by ``margin``) touches no box and, with
    ``occlusion``, no more than ``STRUCTURE_POINTS`` scene points stand inside its box (a wall, a pole, an
    unlabelled object) and at least ``min_points`` of its points stay visible (:func:`visible_paste`). Scene
    objects that a pasted one leaves with fewer than ``min_points`` points (they had at least that many) lose
    their label, as do pasted objects that a later one hides."""
    candidates = _draw_candidates(names, database, rng, sample_counts)
    items = []
    for k in candidates:                         # loop over candidate objects
        pts, box = database.points[k], database.boxes[k]
        if far_share > 0 and rng.random() < far_share:
            d = float(rng.uniform(*far_range))
            if d > np.hypot(box[0], box[1]):
                u = np.array([np.cos(np.arctan2(box[1], box[0])), np.sin(np.arctan2(box[1], box[0]))])
                pts, box = relocate_object(pts, box, d, rng, ground_z=_ground_below(points, u * d))
        items.append((k, pts, np.asarray(box, dtype=np.float64)))
    items.sort(key=lambda it: float(np.hypot(it[2][0], it[2][1])))
    if items and items[0][1].shape[1] != points.shape[1]:
        raise ValueError(f"database points have {items[0][1].shape[1]} columns, the frame {points.shape[1]}")
    out = points
    all_boxes, new_boxes, new_names = list(boxes), [], []
    for k, pts, box in items:                    # loop over candidates, nearest first
        grown = box.copy()
        grown[3:5] += 2 * margin
        if all_boxes and float(intersection_area_bev(grown[None], np.array(all_boxes)).max()) > 0.0:
            continue
        inside = points_in_boxes(out[:, :3], box[None]) >= 0
        if occlusion:
            standing = inside & (out[:, 2] > box[2] - box[5] / 2 + 0.3)
            if np.count_nonzero(standing) > STRUCTURE_POINTS:
                continue
            rest = out[~inside]
            scene_keep, object_keep = visible_paste(rest[:, :3], pts[:, :3])
            if np.count_nonzero(object_keep) < min_points:
                continue
            out = np.concatenate([rest[scene_keep], pts[object_keep]])
        else:
            if len(pts) < min_points:
                continue
            out = np.concatenate([out[~inside], pts])
        all_boxes.append(box)
        new_boxes.append(box)
        new_names.append(database.names[k])
    out = out.astype(np.float32)
    if not new_boxes:
        return out, boxes, names
    every = np.concatenate([boxes, np.array(new_boxes)])
    after = np.bincount(np.maximum(points_in_boxes(out[:, :3], every), 0) + 1, minlength=len(every) + 1)[1:]
    before = np.bincount(np.maximum(points_in_boxes(points[:, :3], boxes), 0) + 1, minlength=len(boxes) + 1)[1:] \
        if len(boxes) else np.zeros(0, np.int64)
    keep = after >= min_points
    keep[:len(boxes)] |= before < min_points     # labels that were already sparse stay as they were
    return out, every[keep], [n for n, k in zip(list(names) + new_names, keep) if k]


def head_targets(model, points, boxes, names) -> list[dict]:
    """What a ``focals-centerpoint`` model's training targets make of each box of a frame, read from the model's
    own :meth:`targets` (CenterPoint): per box ``name``, ``points`` (inside it), ``voxels`` (occupied input voxels
    inside it, within the model's range: the importance positives of the focal convs are such voxels),
    ``in_range`` (centre inside the BEV map), ``positive`` (heatmap target 1 at its centre cell, for its class)
    and ``regressed`` (a box regression target at that cell). Targets do not depend on the points: any labelled
    box of a trained class whose centre is in range gets both, however few points it has (a car of 10 points
    included); boxes centred beyond the range get none while their points still train as negatives."""
    import torch

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    points = np.asarray(points, dtype=np.float32)
    labels = np.array([model.class_names.index(n) if n in model.class_names else -1 for n in names], np.int64)
    with torch.no_grad():
        t = model.targets([torch.from_numpy(boxes.astype(np.float32))], [torch.from_numpy(labels)])
    heat = t["heatmap"][0].cpu().numpy()
    regressed_cells = set(t["index"][0][t["mask"][0]].cpu().numpy().tolist())
    pr, vs = np.asarray(model.point_range), np.asarray(model.voxel_size)
    cx, cy = model.cell_size
    h, w = model.map_size
    idx = points_in_boxes(points[:, :3], boxes)
    inside_range = np.all((points[:, :3] >= pr[:3]) & (points[:, :3] < pr[3:]), axis=1)
    vox = np.floor((points[:, :3] - pr[:3]) / vs).astype(np.int64)
    out = []
    bx = torch.from_numpy(boxes.astype(np.float32))          # the cell as targets() computes it (float32)
    cell_x = ((bx[:, 0] - model.point_range[0]) / cx).floor().long().numpy()
    cell_y = ((bx[:, 1] - model.point_range[1]) / cy).floor().long().numpy()
    for k in range(len(boxes)):                  # loop over boxes
        mine = idx == k
        ix, iy = int(cell_x[k]), int(cell_y[k])
        in_map = 0 <= ix < w and 0 <= iy < h
        positive = bool(in_map and labels[k] >= 0 and heat[labels[k], iy, ix] == 1.0)
        regressed = bool(in_map and labels[k] >= 0 and iy * w + ix in regressed_cells)
        out.append({"name": names[k], "points": int(mine.sum()),
                    "voxels": int(len(np.unique(vox[mine & inside_range], axis=0))), "in_range": in_map,
                    "positive": positive, "regressed": regressed})
    return out


def paste_image_crops(image: np.ndarray, database: GtDatabase, chosen: list[int]) -> np.ndarray:
    """A copy of ``image`` with the crops of the database objects ``chosen`` pasted at their own 2D boxes (objects
    keep their position, so their box in this frame's image is where it was in theirs; KITTI's camera is fixed
    on the car), clipped to this image. Farther objects are pasted first so that nearer ones cover them, as the
    nearer object hides the farther one in a camera. Objects stored without a crop paste nothing."""
    out = image.copy()
    h, w = out.shape[:2]
    with_crop = [k for k in chosen if database.crops[k] is not None]
    far_first = sorted(with_crop, key=lambda k: -float(np.hypot(*database.boxes[k][:2])))
    for k in far_first:                          # loop over pasted objects
        x0, y0, x1, y1 = (int(v) for v in database.crop_boxes[k])
        x1, y1 = min(x1, w), min(y1, h)
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = database.crops[k][: y1 - y0, : x1 - x0]
    return out


def _flip(points, boxes, flip: bool):
    """Mirror about the x axis (y -> -y, yaw -> -yaw) when ``flip``; also returns the 3x3 map applied."""
    points = np.array(points, dtype=np.float32, copy=True)
    boxes = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 7)
    if flip:
        points[:, 1] = -points[:, 1]
        boxes[:, 1] = -boxes[:, 1]
        boxes[:, 6] = wrap_angle(-boxes[:, 6])
    return points, boxes, np.diag([1.0, -1.0 if flip else 1.0, 1.0])


def _rotate(points, boxes, theta: float):
    """Rotate about the z axis by ``theta``; also returns the 3x3 map applied."""
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    points = np.array(points, dtype=np.float32, copy=True)
    boxes = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 7)
    points[:, :2] = (points[:, :2].astype(np.float64) @ rot.T).astype(np.float32)
    boxes[:, :2] = boxes[:, :2] @ rot.T
    boxes[:, 6] = wrap_angle(boxes[:, 6] + theta)
    m = np.eye(3)
    m[:2, :2] = rot
    return points, boxes, m


def _scale(points, boxes, f: float):
    """Scale about the sensor by ``f`` (boxes' sizes too); also returns the 3x3 map applied."""
    points = np.array(points, dtype=np.float32, copy=True)
    boxes = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 7)
    points[:, :3] = (points[:, :3].astype(np.float64) * f).astype(np.float32)
    boxes[:, :6] *= f
    return points, boxes, np.eye(3) * f


def random_flip(points, boxes, rng: np.random.Generator, probability: float = 0.5):
    """Mirror the scene about the x axis (y -> -y, yaw -> -yaw) with the given probability."""
    points, boxes, _ = _flip(points, boxes, rng.random() < probability)
    return points, boxes


def random_rotation(points, boxes, rng: np.random.Generator, max_angle: float = np.pi / 4):
    """Rotate the scene about the z axis by an angle drawn uniformly in [-max_angle, max_angle]."""
    points, boxes, _ = _rotate(points, boxes, rng.uniform(-max_angle, max_angle))
    return points, boxes


def random_scaling(points, boxes, rng: np.random.Generator, low: float = 0.95, high: float = 1.05):
    """Scale the scene about the sensor by a factor drawn uniformly in [low, high] (boxes' sizes too)."""
    points, boxes, _ = _scale(points, boxes, rng.uniform(low, high))
    return points, boxes


def _global_transforms(points, boxes, rng: np.random.Generator):
    """Flip (p = 0.5), rotation (+-pi/4), scaling (0.95-1.05), drawn in this order; returns the points, the boxes
    and the 3x3 matrix ``A`` of the whole chain (augmented = ``A`` original)."""
    points, boxes, flip = _flip(points, boxes, rng.random() < 0.5)
    points, boxes, rot = _rotate(points, boxes, rng.uniform(-np.pi / 4, np.pi / 4))
    points, boxes, scale = _scale(points, boxes, rng.uniform(0.95, 1.05))
    return points, boxes, scale @ rot @ flip


def augment(points, boxes, names, rng: np.random.Generator, database: GtDatabase | None = None,
            sample_counts: dict[str, int] | None = None, paste: dict | None = None):
    """The usual KITTI training chain: ground-truth sampling, flip, rotation (+-pi/4), scaling (0.95-1.05).
    ``paste``: options of :func:`gt_sampling` (``occlusion``, ``far_share``, ``far_range``, ``min_points``)."""
    if database is not None:
        points, boxes, names = gt_sampling(points, boxes, names, database, rng, sample_counts, **(paste or {}))
    points, boxes, _ = _global_transforms(points, boxes, rng)
    return points, boxes, list(names)


def augment_with_image(points, boxes, names, image: np.ndarray, rng: np.random.Generator,
                       database: GtDatabase | None = None, sample_counts: dict[str, int] | None = None):
    """:func:`augment` for detectors that fuse the camera image (same draws from ``rng``): ground-truth sampling
    also pastes the objects' image crops (:func:`paste_image_crops`). Returns (points, boxes, names, image,
    undo) where ``undo`` (3, 3) takes augmented lidar coordinates back to the frame's, for projecting them
    into the (untransformed) image: ``pcseg.geometry.camera.lidar_to_image_matrix(..., undo=undo)``."""
    if database is not None and len(database):
        points = np.asarray(points, dtype=np.float32)
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
        names = list(names)
        counts = DEFAULT_SAMPLE_COUNTS if sample_counts is None else sample_counts
        chosen = _choose_samples(boxes, names, database, rng, counts, 0.0)
        if chosen:
            points, boxes, names = _paste_points(points, boxes, names, database, chosen)
            image = paste_image_crops(image, database, chosen)
    points, boxes, a = _global_transforms(points, boxes, rng)
    return points, boxes, list(names), image, np.linalg.inv(a)
