"""The ``shape`` input channel (issue #28): local shape of the normal (|n_z|, planarity, linearity) checked against
an explicit eigen-decomposition per point, and the floor / ceiling estimate on a generated room with known
geometry (a floor at z = 0, four walls, a ceiling at 2.8 m, a door), on crops without a ceiling, and on real
scans (skipped when ../shared/data is absent)."""
from __future__ import annotations

import numpy as np
import pytest

from pcseg.data.features import (
    CHANNEL_WIDTHS, FEATURE_PRESETS, LOCAL_CHANNELS, SHAPE_RANGE, channel_slices, fill_local_features, local_margin,
    make_features, num_features, shape_feature,
)
from pcseg.geometry.shape import SHAPE_CELL, SHAPE_K, eigen_features, local_shape, room_levels

L, W, H = 5.0, 4.0, 2.8  # room length (x), width (y), height (z)
DOOR_X, DOOR_TOP, DOOR_DEPTH = (1.0, 1.9), 2.05, 0.06  # door in the wall y = 0, its panel recessed to y = -0.06
DENSITY = 500.0  # points per square metre
NOISE = 0.003


def _rect(rng, origin, u, v, density=DENSITY):
    """Uniform samples of the parallelogram origin + a u + b v, a, b in [0, 1]."""
    origin, u, v = (np.asarray(a, dtype=np.float64) for a in (origin, u, v))
    n = rng.poisson(np.linalg.norm(np.cross(u, v)) * density)
    ab = rng.random((n, 2))
    return origin + ab[:, :1] * u + ab[:, 1:] * v


def _box(rng, lo, hi, faces=("top", "x0", "x1", "y0", "y1")):
    """Faces of an axis-aligned box (no bottom: it stands on the floor)."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    dx, dy, dz = hi - lo
    rects = {"top": ([lo[0], lo[1], hi[2]], [dx, 0, 0], [0, dy, 0]),
             "x0": (lo, [0, dy, 0], [0, 0, dz]), "x1": ([hi[0], lo[1], lo[2]], [0, dy, 0], [0, 0, dz]),
             "y0": (lo, [dx, 0, 0], [0, 0, dz]), "y1": ([lo[0], hi[1], lo[2]], [dx, 0, 0], [0, 0, dz])}
    return [_rect(rng, *rects[f]) for f in faces]


def make_room(seed=0, ceiling=True, ceiling_part=1.0, wall_top=H, furniture=(), outliers=0):
    """A room of L x W x H: floor at z = 0, four walls up to ``wall_top``, a ceiling at H (its first
    ``ceiling_part`` share in x), a door in the wall y = 0, a table top at 0.75 m and ``furniture`` boxes
    (lo, hi); ``outliers`` stray points below the floor. Returns (xyz, part name per point)."""
    rng = np.random.default_rng(seed)
    parts = {"floor": [_rect(rng, [0, 0, 0], [L, 0, 0], [0, W, 0])]}
    if ceiling:
        parts["ceiling"] = [_rect(rng, [0, 0, H], [L * ceiling_part, 0, 0], [0, W, 0])]
    walls = [_rect(rng, [0, 0, 0], [L, 0, 0], [0, 0, H]), _rect(rng, [0, W, 0], [L, 0, 0], [0, 0, H]),
             _rect(rng, [0, 0, 0], [0, W, 0], [0, 0, H]), _rect(rng, [L, 0, 0], [0, W, 0], [0, 0, H])]
    w0 = walls[0]
    walls[0] = w0[~((w0[:, 0] > DOOR_X[0]) & (w0[:, 0] < DOOR_X[1]) & (w0[:, 2] < DOOR_TOP))]  # the opening
    parts["wall"] = walls
    dw = DOOR_X[1] - DOOR_X[0]
    parts["door"] = [_rect(rng, [DOOR_X[0], -DOOR_DEPTH, 0], [dw, 0, 0], [0, 0, DOOR_TOP])]
    parts["jamb"] = [_rect(rng, [x, -DOOR_DEPTH, 0], [0, DOOR_DEPTH, 0], [0, 0, DOOR_TOP]) for x in DOOR_X]
    parts["jamb"].append(_rect(rng, [DOOR_X[0], -DOOR_DEPTH, DOOR_TOP], [dw, 0, 0], [0, DOOR_DEPTH, 0]))
    parts["table"] = _box(rng, [2.0, 1.6, 0.70], [3.2, 2.4, 0.75])
    parts["furniture"] = [r for lo, hi in furniture for r in _box(rng, lo, hi)]
    if outliers:
        parts["outlier"] = [np.column_stack([rng.uniform(0, L, outliers), rng.uniform(0, W, outliers),
                                             rng.uniform(-0.5, -0.1, outliers)])]
    names, xyz = [], []
    for name, rects in parts.items():
        for r in rects:
            xyz.append(r)
            names += [name] * len(r)
    xyz = np.concatenate(xyz)
    keep = xyz[:, 2] <= wall_top
    xyz = xyz + rng.normal(0.0, NOISE, xyz.shape)
    return xyz[keep], np.array(names)[keep]


@pytest.fixture(scope="module")
def room():
    xyz, names = make_room(outliers=40)
    return xyz, names, local_shape(xyz, workers=1)


def _direct(points: np.ndarray, i: int, k: int = SHAPE_K) -> np.ndarray:
    """|n_z|, planarity, linearity of point i from its k nearest points by brute force and numpy.linalg.eigh."""
    d = np.linalg.norm(points - points[i], axis=1)
    q = points[np.argsort(d, kind="stable")[:k]]
    q = q - q.mean(axis=0)
    w, v = np.linalg.eigh(q.T @ q / k)
    l3, l2, l1 = np.maximum(w, 0.0)
    return np.array([abs(v[2, 0]), (l2 - l3) / l1, (l1 - l2) / l1])


def test_grid_is_the_cell_barycentres(room):
    xyz, _, shape = room
    keys, inverse = np.unique(np.floor(xyz / SHAPE_CELL).astype(np.int64), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    bary = np.stack([np.bincount(inverse, weights=xyz[:, d]) for d in range(3)], axis=1)
    bary /= np.bincount(inverse)[:, None]
    assert len(shape.points) == len(keys)
    np.testing.assert_allclose(shape.points[shape.inverse], bary[inverse], atol=1e-9)
    np.testing.assert_array_equal(shape.features, shape.grid_features[shape.inverse])


def test_local_shape_matches_direct_eigendecomposition(room):
    _, _, shape = room
    rng = np.random.default_rng(1)
    sample = rng.choice(len(shape.points), 60, replace=False)
    direct = np.array([_direct(shape.points, i) for i in sample])
    got = shape.grid_features[sample]
    # |n_z| is defined where the smallest eigenvalue is separated from the middle one (not on a line)
    defined = direct[:, 1] > 0.05
    assert defined.sum() > 40
    np.testing.assert_allclose(got[defined, 0], direct[defined, 0], atol=1e-6)
    np.testing.assert_allclose(got[:, 1:], direct[:, 1:], atol=1e-6)
    # the same on raw points (no grid), another k
    pts = shape.points[:3000]
    np.testing.assert_allclose(eigen_features(pts, k=10, workers=1, block=512)[:20, 1:],
                               np.array([_direct(pts, i, 10) for i in range(20)])[:, 1:], atol=1e-6)


def test_walls_door_floor_ceiling_orientation(room):
    xyz, names, shape = room
    x, y, z = xyz.T
    inner = (z > 0.2) & (z < H - 0.2)
    nz, planarity, linearity = shape.features.T
    door = (names == "door") & (x > DOOR_X[0] + 0.15) & (x < DOOR_X[1] - 0.15) & inner & (z < DOOR_TOP - 0.15)
    corner = ((x < 0.2) | (x > L - 0.2)) & ((y < 0.2) | (y > W - 0.2))
    by_door = (x > DOOR_X[0] - 0.2) & (x < DOOR_X[1] + 0.2) & (y < 0.2)
    wall = (names == "wall") & inner & ~corner & ~by_door
    far = (x > 0.2) & (x < L - 0.2) & (y > 0.2) & (y < W - 0.2)
    floor, ceiling = (names == "floor") & far, (names == "ceiling") & far
    assert door.sum() > 100
    for side in (x < 0.01, x > L - 0.01, y < 0.01, y > W - 0.01):  # all four walls
        assert (wall & side).sum() > 300
    for vertical in (door, wall):
        assert np.percentile(nz[vertical], 99) < 0.1
    for horizontal in (floor, ceiling):
        assert np.percentile(nz[horizontal], 1) > 0.99
    for plane in (door, wall, floor, ceiling):
        assert np.median(planarity[plane]) > 0.5 > np.median(linearity[plane])
    # the crease where a wall meets the floor is a line: more linear than the planes
    crease = (names == "wall") & (z < 0.03) & (x > 0.3) & (x < L - 0.3)
    assert np.median(linearity[crease]) > np.median(linearity[floor]) + 0.1


def test_room_levels_and_channel(room):
    xyz, _, shape = room
    levels = room_levels(shape.points, shape.grid_features[:, 0])
    assert abs(levels.floor) < 0.02  # not the 40 stray points below it
    assert levels.ceiling is not None and abs(levels.ceiling - H) < 0.02
    assert levels.floor_share > 0.8 and levels.ceiling_share > 0.8
    f = shape_feature(xyz, workers=1)
    assert f.shape == (len(xyz), 6) and f.dtype == np.float32
    np.testing.assert_allclose(f[:, :3], shape.features, atol=1e-6)
    np.testing.assert_allclose(f[:, 3], np.clip(xyz[:, 2] - levels.floor, *SHAPE_RANGE), atol=1e-5)
    np.testing.assert_allclose(f[:, 4], np.clip(levels.ceiling - xyz[:, 2], *SHAPE_RANGE), atol=1e-5)
    # and against the true floor and ceiling
    np.testing.assert_allclose(f[:, 3], np.clip(xyz[:, 2], *SHAPE_RANGE), atol=0.02)
    np.testing.assert_allclose(f[:, 4], np.clip(H - xyz[:, 2], *SHAPE_RANGE), atol=0.02)
    assert (f[:, 5] == 1).all()


def test_crop_without_ceiling_gets_none(room):
    xyz, _, _ = room
    crop = xyz[xyz[:, 2] < 2.0]
    shape = local_shape(crop, workers=1)
    levels = room_levels(shape.points, shape.grid_features[:, 0])
    assert levels.ceiling is None and abs(levels.floor) < 0.02
    f = shape_feature(crop, workers=1)
    assert (f[:, 5] == 0).all() and (f[:, 4] == SHAPE_RANGE[1]).all()


def _levels(xyz):
    shape = local_shape(xyz, workers=1)
    return room_levels(shape.points, shape.grid_features[:, 0])


BOOKCASE = ([0.2, W - 0.4, 0.0], [1.7, W, 2.0])


def test_bookcase_top_is_no_ceiling():
    # the room's tallest thing is a bookcase 2.0 m high and the scan saw no ceiling
    xyz, names = make_room(seed=2, ceiling=False, furniture=[BOOKCASE])
    top = (names == "furniture") & (xyz[:, 2] > 1.99)
    assert top.sum() > 200
    levels = _levels(xyz)
    assert levels.ceiling is None and abs(levels.floor) < 0.02
    # wardrobes 2.1 m high along two walls, walls cut just above them: no wall rises above the tops, the
    # footprint share alone keeps them from being a ceiling
    wardrobes = [([0.2, W - 0.6, 0], [2.2, W, 2.1]), ([L - 0.6, 0.5, 0], [L, 2.5, 2.1])]
    xyz, _ = make_room(seed=3, ceiling=False, wall_top=2.2, furniture=wardrobes)
    assert _levels(xyz).ceiling is None


def test_partial_ceiling_is_found():
    # a scan that saw 40% of the ceiling still has one
    xyz, _ = make_room(seed=4, ceiling_part=0.4, furniture=[BOOKCASE])
    levels = _levels(xyz)
    assert levels.ceiling is not None and abs(levels.ceiling - H) < 0.02


def test_channel_registry_and_pieces(room):
    xyz = room[0]
    assert CHANNEL_WIDTHS["shape"] == 6 and "shape" in LOCAL_CHANNELS
    assert num_features(FEATURE_PRESETS["sala-s3dis-shape"]) == 11
    assert FEATURE_PRESETS["sala-s3dis"] == ("one", "rgb", "z")  # the paper's preset is unchanged
    assert local_margin(["one", "shape"]) >= 1.0
    chans = ("one", "z", "shape")
    full = make_features({}, xyz, chans)
    cols = channel_slices(chans)["shape"]
    np.testing.assert_allclose(full[:, cols], shape_feature(xyz, workers=1), atol=1e-6)
    lazy = make_features({}, xyz, chans, local=False)
    assert np.isnan(lazy[:, cols]).all()
    np.testing.assert_allclose(fill_local_features(lazy, xyz, chans), full, atol=1e-6)
    # a piece with a margin of 0.5 m gets the whole cloud's local shape on its core (cells aligned on multiples of
    # the cell size, not on the piece's corner)
    piece = xyz[:, 0] < 3.0
    core = xyz[piece][:, 0] < 2.5
    part = shape_feature(xyz[piece], workers=1)
    np.testing.assert_allclose(part[core, :3], full[piece][core][:, cols][:, :3], atol=1e-6)


def test_tiny_clouds():
    assert shape_feature(np.zeros((0, 3))).shape == (0, 6)
    for n in (1, 2, 5):
        f = shape_feature(np.random.default_rng(n).random((n, 3)), workers=1)
        assert f.shape == (n, 6) and np.isfinite(f).all()
    same = shape_feature(np.zeros((30, 3)), workers=1)  # coincident points: no shape, no ceiling
    assert np.isfinite(same).all() and (same[:, :3] == 0).all() and (same[:, 5] == 0).all()


def test_scannet_scan(shared_data):
    path = shared_data / "indoor" / "scannet_scene0000_00.ply"
    if not path.exists():
        pytest.skip(f"{path} is not present")
    from pcseg.io import read

    cloud = read(str(path))
    shape = local_shape(cloud.xyz, workers=1)
    levels = room_levels(shape.points, shape.grid_features[:, 0])
    nyu = cloud.fields["nyu40"]  # 1 wall, 2 floor
    floor_z = np.median(cloud.xyz[nyu == 2, 2])
    assert abs(levels.floor - floor_z) < 0.03 and levels.floor_share > 0.5
    # this scan saw a seventh of its ceiling, mostly not horizontal: none is claimed, and never a piece of furniture
    assert levels.ceiling is None or levels.ceiling > levels.floor + 2.0
    nz = shape.features[:, 0]
    assert np.median(nz[nyu == 1]) < 0.15 and (nz[nyu == 1] < 0.3).mean() > 0.75
    assert np.median(nz[nyu == 2]) > 0.98


def test_s3dis_room(shared_data):
    room = shared_data / "indoor" / "s3dis" / "Area_3" / "hallway_3"
    if not room.is_dir():
        pytest.skip(f"{room} is not present")
    from pcseg.io import read

    cloud = read(str(room))
    names = cloud.meta["class_names"]
    label = np.array(names)[cloud.fields["class"]]
    levels = _levels(cloud.xyz)
    assert abs(levels.floor - np.median(cloud.xyz[label == "floor", 2])) < 0.02
    # two ceilings: a dropped one at 2.19 m over a third of the hallway, the slab at 2.69 m over the rest; the
    # walls end at 2.2 m
    top = cloud.xyz[label == "ceiling", 2]
    assert levels.ceiling is not None and abs(levels.ceiling - np.percentile(top, 90)) < 0.02


def test_closed_form_eigen_matches_lapack():
    """symmetric_eigen3 against np.linalg.eigh on random, flat, linear and degenerate covariances: eigenvalues
    within 1e-12 of the largest, and the returned vector is a unit eigenvector of the smallest eigenvalue."""
    from pcseg.geometry.shape import symmetric_eigen3

    rng = np.random.default_rng(3)
    pts = rng.normal(size=(5000, 24, 3)) * rng.choice([[1, 1, 1], [1, 0.5, 0.01], [1, 0.01, 0.01], [1, 1, 0]],
                                                       size=5000)[:, None, :]
    rot = np.linalg.qr(rng.normal(size=(5000, 3, 3)))[0]
    pts = np.matmul(pts, rot)
    pts -= pts.mean(axis=1, keepdims=True)
    cov = np.concatenate([np.matmul(pts.transpose(0, 2, 1), pts) / 24,
                          np.stack([np.eye(3), np.zeros((3, 3)), np.diag([2.0, 0, 0]), np.diag([3.0, 1, 1])])])
    w, v = symmetric_eigen3(cov)
    ref = np.linalg.eigh(cov)[0]
    scale = np.maximum(np.abs(ref).max(axis=1), 1e-12)
    assert np.all(np.abs(w - ref).max(axis=1) <= 1e-7 * scale)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-9)
    residual = np.matmul(cov, v[:, :, None])[:, :, 0] - w[:, :1] * v
    assert np.all(np.linalg.norm(residual, axis=1) <= 1e-6 * scale)
