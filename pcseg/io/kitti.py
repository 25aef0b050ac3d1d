"""KITTI 3D-object files: velodyne scans, ``calib`` files, ``label_2`` boxes, and box conversion between the
rectified camera frame of the labels and the lidar frame of the detector.

Frames. Lidar: x forward, y left, z up. Rectified camera (labels): x right, y down, z forward;
``x_rect = R0_rect @ Tr_velo_to_cam @ [x_velo; 1]`` and pixels ``P2 @ [x_rect; 1]``.
A label gives ``location`` = bottom centre of the box in the rectified camera frame, ``dimensions`` = (h, w, l)
and ``rotation_y`` = heading about the camera y axis (0 = facing camera +x). Lidar boxes are
``[x, y, z, dx, dy, dz, yaw]`` with the centre (see `pcseg.geometry.boxes`).

The conversion maps the box centre exactly through the calibration (``location`` minus half the height along
camera y) and the heading as a direction vector through the calibration's rotation, so that the small rotation
between the two frames is kept rather than using ``yaw = -(rotation_y + pi/2)``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import BadInputError

__all__ = [
    "KittiObject", "Calibration", "read_velodyne", "read_labels", "read_label_frame", "format_label_lines",
    "objects_to_lidar_boxes", "lidar_boxes_to_objects", "difficulty_level", "LIDAR_FRAME_HEADER",
    "DEFAULT_IMAGE_SIZE",
]

# Width, height of KITTI's colour images (they vary by a few pixels between drives).
DEFAULT_IMAGE_SIZE = (1242, 375)
# First line of a label file whose boxes are in the lidar frame (written when no calibration is known).
LIDAR_FRAME_HEADER = ("# frame: lidar (no calibration given): location = box bottom centre x y z in the lidar frame "
                      "(x forward, y left, z up), rotation_y = yaw about +z from +x")

# Official difficulty thresholds of the KITTI object benchmark (easy, moderate, hard).
MIN_HEIGHT = (40.0, 25.0, 25.0)      # 2D box height in pixels
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)


@dataclass
class KittiObject:
    """One line of a KITTI ``label_2`` file (``score`` only in detection results)."""

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: np.ndarray            # (4,) left, top, right, bottom in pixels
    dimensions: np.ndarray      # (3,) h, w, l in metres
    location: np.ndarray        # (3,) bottom centre x, y, z in the rectified camera frame
    rotation_y: float
    score: float | None = None

    @property
    def difficulty(self) -> int:
        """0 easy, 1 moderate, 2 hard (from 2D box height, occlusion, truncation), -1 when none applies."""
        return int(difficulty_level([self])[0])


def difficulty_level(objects: list[KittiObject]) -> np.ndarray:
    """(B,) int64 KITTI difficulty of each object: the easiest level whose thresholds it meets, else -1."""
    level = np.full(len(objects), -1, dtype=np.int64)
    for i, o in enumerate(objects):
        height = float(o.bbox[3] - o.bbox[1])
        for d in (2, 1, 0):
            if height >= MIN_HEIGHT[d] and o.occluded <= MAX_OCCLUSION[d] and o.truncated <= MAX_TRUNCATION[d]:
                level[i] = d
    return level


def read_velodyne(path_or_bytes, columns: int = 4) -> np.ndarray:
    """A KITTI ``.bin`` scan: little-endian float32 records of ``columns`` values -> (N, columns) float32."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        raw, where = bytes(path_or_bytes), None
    else:
        where = os.fspath(path_or_bytes)
        try:
            raw = Path(where).read_bytes()
        except FileNotFoundError:
            raise BadInputError("no such file", where) from None
        except IsADirectoryError:
            raise BadInputError("is a folder, not a .bin scan", where) from None
        except OSError as e:
            raise BadInputError(f"cannot read: {e.strerror}", where) from None
    if len(raw) % (4 * columns):
        raise BadInputError(f"size {len(raw)} bytes is not a multiple of {columns} float32 columns "
                            f"({4 * columns} bytes per point): not a KITTI .bin scan", where)
    return np.frombuffer(raw, dtype="<f4").reshape(-1, columns).astype(np.float32)


@dataclass
class Calibration:
    """KITTI object calibration: ``P2`` (3, 4), ``R0_rect`` (3, 3), ``Tr_velo_to_cam`` (3, 4)."""

    P2: np.ndarray
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    path: str | None = field(default=None, compare=False)

    def __post_init__(self):
        self.P2 = np.asarray(self.P2, dtype=np.float64).reshape(3, 4)
        self.R0_rect = np.asarray(self.R0_rect, dtype=np.float64).reshape(3, 3)
        self.Tr_velo_to_cam = np.asarray(self.Tr_velo_to_cam, dtype=np.float64).reshape(3, 4)
        # lidar -> rectified camera as one affine map x_rect = A x_velo + t, and its exact inverse
        self._A = self.R0_rect @ self.Tr_velo_to_cam[:, :3]
        self._t = self.R0_rect @ self.Tr_velo_to_cam[:, 3]
        self._A_inv = np.linalg.inv(self._A)

    @classmethod
    def from_file(cls, path) -> "Calibration":
        """Read a ``calib/*.txt`` of the object benchmark (also accepts the tracking names R_rect, Tr_velo_cam)."""
        where = os.fspath(path)
        try:
            text = Path(where).read_text()
        except FileNotFoundError:
            raise BadInputError("no such calibration file", where) from None
        except (OSError, UnicodeDecodeError) as e:
            raise BadInputError(f"cannot read calibration: {e}", where) from None
        values = {}
        for n, line in enumerate(text.splitlines(), 1):
            if ":" not in line:
                continue
            key, _, rest = line.partition(":")
            try:
                values[key.strip()] = np.array(rest.split(), dtype=np.float64)
            except ValueError:
                raise BadInputError(f"line {n}: {key.strip()} has non-numeric values", where) from None
            if not np.isfinite(values[key.strip()]).all():
                raise BadInputError(f"line {n}: {key.strip()} has NaN or infinite values", where)
        aliases = {"P2": ("P2",), "R0_rect": ("R0_rect", "R_rect"), "Tr_velo_to_cam": ("Tr_velo_to_cam", "Tr_velo_cam")}
        sizes = {"P2": 12, "R0_rect": 9, "Tr_velo_to_cam": 12}
        found = {}
        for name, keys in aliases.items():
            key = next((k for k in keys if k in values), None)
            if key is None:
                raise BadInputError(f"calibration has no {name} line", where)
            if values[key].size != sizes[name]:
                raise BadInputError(f"{key} has {values[key].size} values, expected {sizes[name]}", where)
            found[name] = values[key]
        try:
            return cls(found["P2"], found["R0_rect"], found["Tr_velo_to_cam"], path=where)
        except np.linalg.LinAlgError:
            raise BadInputError("R0_rect @ Tr_velo_to_cam is singular", where) from None

    def lidar_to_camera(self, xyz) -> np.ndarray:
        """(N, 3) lidar points -> (N, 3) rectified camera coordinates."""
        return np.asarray(xyz, dtype=np.float64)[:, :3] @ self._A.T + self._t

    def camera_to_lidar(self, xyz) -> np.ndarray:
        """(N, 3) rectified camera coordinates -> (N, 3) lidar points (exact inverse of `lidar_to_camera`)."""
        return (np.asarray(xyz, dtype=np.float64)[:, :3] - self._t) @ self._A_inv.T

    def camera_to_image(self, xyz_rect) -> tuple[np.ndarray, np.ndarray]:
        """Rectified camera points -> ((N, 2) pixel u, v in image 2, (N,) depth)."""
        p = np.asarray(xyz_rect, dtype=np.float64)[:, :3] @ self.P2[:, :3].T + self.P2[:, 3]
        depth = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = p[:, :2] / depth[:, None]
        return uv, depth

    def fov_mask(self, xyz_lidar, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> np.ndarray:
        """(N,) bool: lidar points in front of the camera that project inside image 2 (labels exist only there)."""
        uv, depth = self.camera_to_image(self.lidar_to_camera(xyz_lidar))
        w, h = image_size
        return (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)


def read_labels(path) -> list[KittiObject]:
    """A ``label_2`` file (15 values per line, 16 with a score). Blank lines and ``#`` comments are skipped."""
    where = os.fspath(path)
    try:
        text = Path(where).read_text()
    except FileNotFoundError:
        raise BadInputError("no such label file", where) from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"cannot read labels: {e}", where) from None
    objects = []
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) not in (15, 16):
            raise BadInputError(f"line {n}: {len(parts)} values, a KITTI label line has 15 (16 with a score)", where)
        try:
            v = [float(x) for x in parts[1:]]
        except ValueError:
            raise BadInputError(f"line {n}: non-numeric value after the type", where) from None
        if not all(math.isfinite(x) for x in v):
            raise BadInputError(f"line {n}: a value is NaN or infinite", where)
        objects.append(KittiObject(
            type=parts[0], truncated=v[0], occluded=int(v[1]), alpha=v[2], bbox=np.array(v[3:7]),
            dimensions=np.array(v[7:10]), location=np.array(v[10:13]), rotation_y=v[13],
            score=v[14] if len(v) == 15 else None))
    return objects


def read_label_frame(path) -> str:
    """'lidar' when the label file starts with `LIDAR_FRAME_HEADER` (written without calibration), else 'camera'."""
    try:
        with open(os.fspath(path)) as f:
            first = f.readline()
    except OSError as e:
        raise BadInputError(f"cannot read labels: {e.strerror}", os.fspath(path)) from None
    return "lidar" if first.startswith("# frame: lidar") else "camera"


def format_label_lines(objects: list[KittiObject], frame: str = "camera") -> str:
    """KITTI ``label_2`` text (a score column where objects have one). ``frame='lidar'`` adds the header line
    that says the boxes are in the lidar frame."""
    if frame not in ("camera", "lidar"):
        raise ValueError("frame must be 'camera' or 'lidar'")
    lines = [LIDAR_FRAME_HEADER] if frame == "lidar" else []
    for o in objects:
        b, d, loc = np.asarray(o.bbox), np.asarray(o.dimensions), np.asarray(o.location)
        line = (f"{o.type} {o.truncated:.2f} {int(o.occluded)} {o.alpha:.4f} "
                f"{b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f} {d[0]:.4f} {d[1]:.4f} {d[2]:.4f} "
                f"{loc[0]:.4f} {loc[1]:.4f} {loc[2]:.4f} {o.rotation_y:.4f}")
        if o.score is not None:
            line += f" {o.score:.4f}"
        lines.append(line)
    return "\n".join(lines) + ("\n" if lines else "")


def _corners_3d(b: np.ndarray) -> np.ndarray:
    """(B, 8, 3) corners of lidar boxes (`pcseg.geometry.boxes.boxes_corners_3d`; io may not import geometry)."""
    bev = ((0.5, 0.5), (-0.5, 0.5), (-0.5, -0.5), (0.5, -0.5))
    signs = np.array([[sx, sy, sz] for sz in (-0.5, 0.5) for sx, sy in bev])
    local = signs[None] * b[:, None, 3:6]
    c, s = np.cos(b[:, 6])[:, None], np.sin(b[:, 6])[:, None]
    x = c * local[..., 0] - s * local[..., 1]
    y = s * local[..., 0] + c * local[..., 1]
    return np.stack([x, y, local[..., 2]], -1) + b[:, None, :3]


def _wrap(a):
    return (np.asarray(a) + np.pi) % (2.0 * np.pi) - np.pi


def objects_to_lidar_boxes(objects: list[KittiObject], calib: Calibration | None) -> tuple[np.ndarray, list[str]]:
    """Labels -> ((B, 7) float64 lidar boxes, B type names); DontCare entries are left out.

    With ``calib=None`` the objects are taken to be in the lidar frame (as `lidar_boxes_to_objects` writes them
    without calibration): location = bottom centre, rotation_y = yaw.
    """
    objs = [o for o in objects if o.type != "DontCare"]
    names = [o.type for o in objs]
    if not objs:
        return np.zeros((0, 7)), names
    hwl = np.array([o.dimensions for o in objs], dtype=np.float64)
    loc = np.array([o.location for o in objs], dtype=np.float64)
    ry = np.array([o.rotation_y for o in objs], dtype=np.float64)
    h, w, l = hwl[:, 0], hwl[:, 1], hwl[:, 2]
    if calib is None:
        centre = loc + np.stack([np.zeros_like(h), np.zeros_like(h), 0.5 * h], 1)
        yaw = ry
    else:
        centre = calib.camera_to_lidar(loc - np.stack([np.zeros_like(h), 0.5 * h, np.zeros_like(h)], 1))
        # heading = the box's length axis: camera direction (cos ry, 0, -sin ry), rotated into the lidar frame
        heading_cam = np.stack([np.cos(ry), np.zeros_like(ry), -np.sin(ry)], 1)
        heading = heading_cam @ calib._A_inv.T
        yaw = np.arctan2(heading[:, 1], heading[:, 0])
    boxes = np.concatenate([centre, np.stack([l, w, h, _wrap(yaw)], 1)], axis=1)
    return boxes, names


def lidar_boxes_to_objects(boxes, names, scores=None, calib: Calibration | None = None,
                           image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE) -> list[KittiObject]:
    """Lidar boxes -> KITTI objects (truncation and occlusion -1, as detections carry neither).

    With ``calib``: the rectified camera frame, alpha from the viewing angle and the 2D box from the projected
    corners, clipped to the image. Without: the lidar frame (location = bottom centre, rotation_y = yaw,
    alpha = -10 'unknown', 2D box = -1); write those with ``format_label_lines(..., frame='lidar')``.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    names = list(names)
    if len(names) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(names)} names")
    sc = [None] * len(b) if scores is None else [float(s) for s in np.asarray(scores).reshape(-1)]
    if len(sc) != len(b):
        raise ValueError(f"{len(b)} boxes but {len(sc)} scores")
    if len(b) == 0:
        return []
    hwl = b[:, [5, 4, 3]]
    if calib is None:
        loc = b[:, :3] - np.stack([np.zeros(len(b)), np.zeros(len(b)), 0.5 * b[:, 5]], 1)
        ry, alpha = b[:, 6], np.full(len(b), -10.0)
        bbox = np.full((len(b), 4), -1.0)
    else:
        loc = calib.lidar_to_camera(b[:, :3]) + np.stack([np.zeros(len(b)), 0.5 * b[:, 5], np.zeros(len(b))], 1)
        heading = np.stack([np.cos(b[:, 6]), np.sin(b[:, 6]), np.zeros(len(b))], 1) @ calib._A.T
        ry = _wrap(np.arctan2(-heading[:, 2], heading[:, 0]))
        alpha = _wrap(ry - np.arctan2(loc[:, 0], loc[:, 2]))
        corners = calib.lidar_to_camera(_corners_3d(b).reshape(-1, 3))
        corners[:, 2] = np.maximum(corners[:, 2], 0.1)  # corners behind the camera: project at 10 cm depth
        uv, _ = calib.camera_to_image(corners)
        uv = uv.reshape(len(b), 8, 2)
        w, h = image_size
        bbox = np.concatenate([uv.min(1), uv.max(1)], axis=1)
        bbox[:, [0, 2]] = np.clip(bbox[:, [0, 2]], 0, w - 1)
        bbox[:, [1, 3]] = np.clip(bbox[:, [1, 3]], 0, h - 1)
    return [KittiObject(type=str(names[i]), truncated=-1.0, occluded=-1, alpha=float(alpha[i]), bbox=bbox[i],
                        dimensions=hwl[i], location=loc[i], rotation_y=float(ry[i]), score=sc[i])
            for i in range(len(b))]
