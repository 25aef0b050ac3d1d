"""Detection data: KITTI frames, the synthetic lidar generator (points on objects, first hit only) and the
box-aware augmentations (points stay in their boxes; pasted objects never collide)."""
from __future__ import annotations

import numpy as np
import pytest

from pcseg.data.detection import (
    SENSOR_HEIGHT, GtDatabase, KittiFrame, augment, cast_rays, gt_sampling, list_kitti_frames, random_flip,
    random_rotation, random_scaling, scene_layout, synthetic_scene,
)
from pcseg.geometry.boxes import intersection_area_bev, points_in_boxes


@pytest.fixture(scope="module")
def kitti_root(shared_data):
    root = shared_data / "kitti" / "training"
    if not (root / "velodyne").is_dir():
        pytest.skip("no KITTI frames in ../shared/data")
    return root


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene(np.random.default_rng(7))


def test_kitti_frame_loading(kitti_root):
    ids = list_kitti_frames(kitti_root)
    assert {"000000", "000008", "004139"} <= set(ids)
    f = KittiFrame.load(kitti_root, "000008")
    assert f.points.dtype == np.float32 and f.points.shape[1] == 4 and len(f.points) > 100_000
    assert f.boxes.shape == (len(f.names), 7) and f.names.count("Car") == 6
    assert f.difficulty.tolist() == [-1, 1, -1, 1, 1, 0]
    front = KittiFrame.load(kitti_root, "000008", fov_only=True)
    assert len(front.points) < 0.3 * len(f.points) and (front.points[:, 0] > 0).all()
    # every labelled car with a known difficulty keeps its points after the field-of-view crop
    idx = points_in_boxes(front.points, front.boxes)
    assert all((idx == k).sum() >= 20 for k in np.nonzero(front.difficulty >= 0)[0])


def test_synthetic_scene_has_points_on_objects(scene):
    points, boxes, names = scene
    assert points.dtype == np.float32 and points.shape[1] == 4 and 60_000 < len(points) <= 64 * 2048
    assert 0.0 <= points[:, 3].min() and points[:, 3].max() <= 1.0
    assert np.linalg.norm(points[:, :3], axis=1).max() <= 80.5
    assert set(names) <= {"Car", "Pedestrian", "Cyclist"} and "Car" in names
    counts = np.bincount(points_in_boxes(points, boxes) + 1, minlength=len(boxes) + 1)[1:]
    assert (counts >= 3).mean() >= 0.9, counts            # range noise may push a few hits out of a box
    assert np.median(counts) >= 20
    # pairwise disjoint objects
    inter = intersection_area_bev(boxes, boxes)
    np.fill_diagonal(inter, 0.0)
    assert inter.max() == 0.0


def _shadowed(points: np.ndarray, solids: np.ndarray, steps: int = 64) -> np.ndarray:
    """For each point, whether the straight segment from the sensor to it passes through a solid (ends excluded)."""
    shrunk = solids.copy()
    shrunk[:, 3:6] -= 2e-3                                  # a hit on a face is not 'inside'
    frac = np.linspace(0.005, 0.995, steps)
    samples = points[:, None, :3] * frac[None, :, None]
    return (points_in_boxes(samples.reshape(-1, 3), shrunk).reshape(len(points), steps) >= 0).any(1)


def test_rays_stop_at_the_first_hit_hand_built():
    front = np.array([10.0, 0.0, -SENSOR_HEIGHT + 1.0, 2.0, 2.0, 2.0, 0.0])     # a 2 m cube 9 m ahead
    back = np.array([20.0, 0.0, -SENSOR_HEIGHT + 2.5, 2.0, 20.0, 5.0, 0.0])     # a wall behind it
    xyz, hit = cast_rays(np.stack([front, back]), azimuth_steps=1024)
    on_back = xyz[hit == 1]
    assert len(on_back) > 500 and (hit == 0).sum() > 50
    # the cube's shadow on the wall: rays below the cube's top edge and within its angular width never reach
    # the wall (the cube's near face at x = 9 spans |y| <= 1 and z <= 0.27)
    slope_y = np.abs(on_back[:, 1] / on_back[:, 0])
    slope_z = on_back[:, 2] / on_back[:, 0]
    assert not ((slope_y < 1.0 / 11.0) & (slope_z < 0.27 / 11.0)).any()
    assert not _shadowed(xyz[::5], np.stack([front, back])).any()
    # hits lie on the surface they report
    np.testing.assert_allclose(np.min(np.abs(np.abs(on_back[:, 0] - 20.0) - 1.0)), 0.0, atol=1e-9)
    np.testing.assert_allclose(xyz[hit == -1, 2], -SENSOR_HEIGHT, atol=1e-9)


def test_rays_stop_at_the_first_hit_random_scene():
    layout = scene_layout(np.random.default_rng(3))
    xyz, hit = cast_rays(layout.solids, azimuth_steps=512, ground=layout.ground)
    assert len(xyz) <= 64 * 512 and (hit >= 0).sum() > 1000
    # ground returns lie on the tilted road plane, and the objects stand on it
    g0, g1, g2 = layout.ground
    assert layout.ground != (0.0, 0.0, -SENSOR_HEIGHT) and (hit == -1).mean() > 0.3
    np.testing.assert_allclose(xyz[hit == -1, 2], g0 * xyz[hit == -1, 0] + g1 * xyz[hit == -1, 1] + g2, atol=1e-9)
    b = layout.boxes
    np.testing.assert_allclose(b[:, 2] - b[:, 5] / 2, g0 * b[:, 0] + g1 * b[:, 1] + g2, atol=1e-9)
    sample = np.random.default_rng(0).choice(len(xyz), 3000, replace=False)
    assert not _shadowed(xyz[sample], layout.solids).any()
    grown = layout.solids.copy()
    grown[:, 3:6] += 1e-6
    own = hit[sample] >= 0
    inside = points_in_boxes(xyz[sample][own], grown)
    # a hit point lies on the face of its solid (or on a touching one, which points_in_boxes would list first)
    assert (inside >= 0).all()


def _inside(points, boxes, grow):
    b = boxes.copy()
    b[:, 3:6] += 2 * grow
    return points_in_boxes(points, b)


def _assert_same_membership(p0, b0, p1, b1, msg=""):
    """Points well inside a box (3 cm from its faces) stay inside it; points well outside every box (1 cm) stay
    outside (float32 rounding and a 0.95 scaling move a point relative to a face by less than that)."""
    deep = _inside(p0, b0, -0.03)
    np.testing.assert_array_equal(_inside(p1, b1, -0.02)[deep >= 0], deep[deep >= 0], err_msg=msg)
    out = _inside(p0, b0, 0.01) < 0
    assert (_inside(p1, b1, 0.005)[out] < 0).all(), msg
    assert (deep >= 0).sum() > 100


def test_augmentations_keep_points_in_their_boxes(scene):
    points, boxes, _ = scene
    rng = np.random.default_rng(1)
    for name, fn in (("flip", lambda p, b: random_flip(p, b, rng, probability=1.0)),
                     ("rotation", lambda p, b: random_rotation(p, b, rng)),
                     ("scaling", lambda p, b: random_scaling(p, b, rng))):
        p2, b2 = fn(points, boxes)
        assert p2.dtype == np.float32 and p2.shape == points.shape, name
        _assert_same_membership(points, boxes, p2, b2, name)
    # flip mirrors y and the heading; rotation keeps ranges; scaling scales sizes
    p2, b2 = random_flip(points, boxes, rng, probability=1.0)
    np.testing.assert_allclose(b2[:, [1, 6]], -boxes[:, [1, 6]], atol=1e-12)
    p2, b2 = random_rotation(points, boxes, np.random.default_rng(5))
    np.testing.assert_allclose(np.linalg.norm(b2[:, :2], axis=1), np.linalg.norm(boxes[:, :2], axis=1))
    assert np.abs(np.angle(np.exp(1j * (b2[:, 6] - boxes[:, 6])))).max() <= np.pi / 4 + 1e-9
    p2, b2 = random_scaling(points, boxes, np.random.default_rng(5))
    f = b2[0, 3] / boxes[0, 3]
    assert 0.95 <= f <= 1.05
    np.testing.assert_allclose(b2[:, :6], boxes[:, :6] * f)


def test_gt_sampling_pastes_objects_without_collisions(kitti_root):
    frames = [KittiFrame.load(kitti_root, fid) for fid in ("000006", "000007", "000008")]
    db = GtDatabase.from_frames(frames)
    rng = np.random.default_rng(0)
    for _ in range(2):
        p, b, n = synthetic_scene(rng, n_cars=(1, 2), azimuth_steps=512)
        db.add_frame(p, b, n)
    assert len(db) >= 8 and {"Car", "Pedestrian", "Cyclist"} & set(db.names)
    points, boxes, names = synthetic_scene(np.random.default_rng(11), n_cars=(2, 3), azimuth_steps=512)
    p2, b2, n2 = gt_sampling(points, boxes, names, db, rng, {"Car": 12, "Cyclist": 4, "Pedestrian": 4})
    added = len(b2) - len(boxes)
    assert added >= 3 and n2[:len(names)] == names and len(n2) == len(b2)
    np.testing.assert_array_equal(b2[:len(boxes)], boxes)
    inter = intersection_area_bev(b2, b2)
    np.fill_diagonal(inter, 0.0)
    assert inter.max() == 0.0                                  # no pasted box touches another box
    # inside each pasted box: exactly the object's own points (the scene's were removed)
    idx = points_in_boxes(p2, b2)
    for k in range(len(boxes), len(b2)):
        match = [j for j, bb in enumerate(db.boxes) if np.array_equal(bb, b2[k])]
        assert len(match) == 1 and (idx == k).sum() == len(db.points[match[0]])
    # the full training chain keeps the labelled points inside their boxes
    p3, b3, n3 = augment(p2, b2, n2, np.random.default_rng(2))
    assert n3 == n2
    _assert_same_membership(p2, b2, p3, b3, "augment")


def _faces(centre, size, yaw, faces, n=400, seed=0):
    """Points on the named vertical faces ('left', 'right', 'front', 'rear') of a box, z in [-1.5, 0]."""
    rng = np.random.default_rng(seed)
    L, W = size
    out = []
    for f in faces:
        t = rng.uniform(-0.5, 0.5, n)
        local = {"left": np.c_[t * L, np.full(n, W / 2)], "right": np.c_[t * L, np.full(n, -W / 2)],
                 "front": np.c_[np.full(n, L / 2), t * W], "rear": np.c_[np.full(n, -L / 2), t * W]}[f]
        c, s = np.cos(yaw), np.sin(yaw)
        xy = local @ np.array([[c, s], [-s, c]]) + centre
        out.append(np.c_[xy, rng.uniform(-1.5, 0.0, n)])
    return np.concatenate(out)


def test_fit_object_box_on_an_l_shape_recovers_the_box():
    from pcseg.geometry.boxes import fit_object_box

    yaw = np.radians(30)
    pts = _faces((10.0, 5.0), (4.2, 1.8), yaw, ["rear", "left"])    # the faces a sensor at the origin sees
    box = fit_object_box(pts, full_size=(3.9, 1.6, 1.5))
    assert abs(box[6] - yaw) < np.radians(1.5)
    assert np.allclose(box[3:5], [4.2, 1.8], atol=0.05) and np.allclose(box[:2], [10.0, 5.0], atol=0.05)
    assert points_in_boxes(pts, box[None]).min() == 0


def test_fit_object_box_seen_from_behind_grows_away_from_the_sensor():
    """A car straight ahead shows its rear only: the length runs along the ray and the box extends beyond the
    face, not towards the sensor."""
    from pcseg.geometry.boxes import fit_object_box

    pts = _faces((20.0, 0.0), (4.0, 1.7), 0.0, ["rear"])          # the rear face at x = 18
    box = fit_object_box(pts, full_size=(3.9, 1.6, 1.5))
    assert abs(box[6]) < np.radians(1.5)
    assert box[3] == pytest.approx(3.9) and box[4] == pytest.approx(1.7, abs=0.02)
    assert box[0] - box[3] / 2 == pytest.approx(18.0, abs=0.02)   # the near end stays on the face
    assert box[5] == pytest.approx(1.5) and box[2] - box[5] / 2 == pytest.approx(pts[:, 2].min())


def _semantickitti_scans(shared_data):
    scans = sorted((shared_data / "lidarseg" / "semantickitti" / "sequences").glob("*/velodyne/*.bin"))
    if not scans:
        pytest.skip("no SemanticKITTI scans")
    return scans


def test_semantickitti_cars_join_the_gt_database(shared_data):
    from pcseg.data.detection import GtDatabase, semantickitti_objects

    scans = _semantickitti_scans(shared_data)
    total = 0
    for scan in scans:
        points, boxes, names = semantickitti_objects(scan)
        full = np.fromfile(scan, np.float32).reshape(-1, 4)
        raw = np.fromfile(scan.parent.parent / "labels" / (scan.stem + ".label"), np.uint32)
        semantic, instance = raw & 0xFFFF, raw >> 16
        car = np.isin(semantic, (10, 252)) & (instance > 0)
        ids, counts = np.unique(instance[car], return_counts=True)
        fitted = ids[counts >= 60]
        assert len(boxes) == len(fitted) and set(names) <= {"Car"}
        # removed: people, riders, two-wheelers and the cars too small to fit (direct per-instance count)
        small_car = np.zeros(len(raw), bool)
        for i in ids[counts < 60]:                          # loop over small cars
            small_car |= car & (instance == i)
        keep = ~(np.isin(semantic, (11, 15, 30, 31, 32, 253, 254, 255)) | small_car)
        np.testing.assert_array_equal(points, full[keep])
        inside = points_in_boxes(points[:, :3], boxes)
        for i in fitted:                                     # every point of a fitted car is inside one box
            assert (inside[(car & (instance == i))[keep]] >= 0).all()
        assert ((boxes[:, 3] >= 3.8) & (boxes[:, 3] <= 4.6) & (boxes[:, 4] >= 1.6) & (boxes[:, 4] <= 2.3)).all()
        total += len(boxes)
    assert total >= 10
    db = GtDatabase.from_frames([], scans=scans)
    assert len(db) == total and set(db.names) == {"Car"}


def test_semantickitti_scans_train_as_whole_frames(shared_data):
    import dataclasses

    from pcseg.data.detection import semantickitti_objects
    from pcseg.engine.detect import DetectTrainConfig, _Data
    from pcseg.errors import UsageError

    scans = [str(s) for s in _semantickitti_scans(shared_data)]
    kitti = shared_data / "kitti" / "training"
    cfg = DetectTrainConfig(kitti=str(kitti), gt_scans=scans, scan_frames=True)
    data, kitti_only = _Data(cfg), _Data(dataclasses.replace(cfg, scan_frames=False))
    assert len(data.train) == len(kitti_only.train) + 2 * len(scans)
    points, boxes, _ = semantickitti_objects(scans[-1])
    front, back = data.train[-2], data.train[-1]
    np.testing.assert_array_equal(front.points, points)
    # turned around: x, y -> -x, -y and yaw + pi; the same points stay in the same boxes
    np.testing.assert_allclose(back.points[:, :2], -points[:, :2], atol=1e-5)
    np.testing.assert_allclose(back.boxes[:, :2], -boxes[:, :2], atol=1e-9)
    np.testing.assert_allclose(np.cos(back.boxes[:, 6] - boxes[:, 6]), -1.0, atol=1e-9)
    np.testing.assert_array_equal(points_in_boxes(back.points[:, :3], back.boxes),
                                  points_in_boxes(points[:, :3], boxes))
    assert (boxes[:, 0] < 0).any() and (back.boxes[:, 0] > 0).any()   # rear cars come into the x >= 0 range
    # the card names the KITTI frames and, apart, the scans (as portable paths), never the scans as KITTI frames
    from types import SimpleNamespace

    from pcseg.engine.detect import _card

    model = SimpleNamespace(class_names=["Car"], point_range=[0, -32, -3, 64, 32, 1], voxel_size=[0.1, 0.1, 0.2])
    training = _card(model, cfg, data, 0, None)["training"]
    assert training["kitti_frames"] == [f.frame_id for f in kitti_only.train]
    assert len(training["scan_frames"]) == len(scans) and all("velodyne" in s for s in training["scan_frames"])
    assert "scan_frames" not in _card(model, kitti_only.cfg, kitti_only, 0, None)["training"]
    with pytest.raises(UsageError, match="gt_scans"):
        _Data(dataclasses.replace(cfg, gt_scans=[]))
    with pytest.raises(UsageError, match="no camera image"):
        _Data(dataclasses.replace(cfg, val_frames=["000000"]), fusion=True)
