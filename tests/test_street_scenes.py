"""Street frames of CAD meshes (pcseg.data.street_scenes) and occlusion-aware copy-paste (pcseg.data.detection):
boxes are the tight boxes of the placed meshes, every return lies on a scene triangle and is the first hit of its
ray, sizes follow KITTI, frames are deterministic per seed, pasted objects are seen as the beam would see them,
sparse cars get detector targets, and the engine pre-trains on the meshes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pcseg.data import street_scenes as ss
from pcseg.data.detection import (
    GtDatabase, _hdl64_directions, gt_sampling, head_targets, range_image_cells, relocate_object, visible_paste,
)
from pcseg.errors import UsageError
from pcseg.geometry.raycast import cast_rays

pytestmark = pytest.mark.usefixtures("one_thread")

NOISE = 0.02


@pytest.fixture(scope="module")
def cad(cad_root):
    return cad_root         # the conftest fixture, under this module's shorter name


@pytest.fixture(scope="module")
def lib(cad):
    return ss.load_library(cad)


@pytest.fixture(scope="module")
def frame(cad, lib):
    """A frame with the default noise: (points, boxes, names, scene, scan)."""
    pts, boxes, names, (scene, scan) = ss.mesh_street_scene(np.random.default_rng(7), cad=cad, details=True)
    return pts, boxes, names, scene, scan


@pytest.fixture(scope="module")
def exact(cad, lib):
    """A frame without range noise."""
    pts, boxes, names, (scene, scan) = ss.mesh_street_scene(np.random.default_rng(11), cad=cad, range_noise=0.0,
                                                            details=True)
    return pts, boxes, names, scene, scan


def _moller_trumbore(origin_dirs, tri):
    """(t, u, v) of rays from the origin along ``origin_dirs`` (R, 3) against triangles ``tri`` (R, 3, 3), pairwise
    (textbook, one pair per row)."""
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(origin_dirs, e2)
    det = np.einsum("ij,ij->i", e1, p)
    tvec = -tri[:, 0]
    u = np.einsum("ij,ij->i", tvec, p) / det
    q = np.cross(tvec, e1)
    v = np.einsum("ij,ij->i", origin_dirs, q) / det
    t = np.einsum("ij,ij->i", e2, q) / det
    return t, u, v


def _nearest_hit(direction, tri):
    """Slow reference: the nearest hit of one ray from the origin over all triangles (every triangle tested)."""
    t, u, v = _moller_trumbore(np.broadcast_to(direction, (len(tri), 3)), tri)
    ok = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0) & np.isfinite(t)
    t = np.where(ok, t, np.inf)
    k = int(np.argmin(t))
    return float(t[k]), (k if np.isfinite(t[k]) else -1)


# ---------------------------------------------------------------------------------------------------------------
# the CAD library
# ---------------------------------------------------------------------------------------------------------------


def test_catalog_records_get_the_decided_roles(cad, lib):
    records = {r["file"].split("/")[-1]: r for r in json.loads((cad / "catalog.json").read_text())}
    expect = {"kenney__sedan.ply": "Car", "quaternius__suv_realcars.ply": "Car", "gazebo-osrf__prius_hybrid.ply": "Car",
              "kenney__van.ply": "Van", "gazebo-osrf__ambulance.ply": "Van", "quaternius__bus_transport.ply": "Van",
              "gazebo-osrf__bus.ply": "Truck", "kenney__garbage_truck.ply": "Truck", "kenney__truck.ply": None,
              "gazebo-osrf__pickup.ply": None, "kenney__tractor.ply": None, "kenney__race.ply": None,
              "quaternius__male_walking.ply": "Pedestrian", "quaternius__bicycle_transport.ply": "Bicycle",
              "aws-bookstore__bicycle_01.ply": None}
    for name, role in expect.items():
        assert ss.cad_role(records[name]) == role, name
    assert len(lib.by_role["Car"]) >= 20 and lib.riders
    assert not any(m.file.startswith("research-only/") for m in lib.models)       # free objects only by default
    assert ss.load_library(cad) is lib                                               # read once
    glass = [np.mean(m.part == ss.GLASS) for m in lib.models if m.role == "Car"]
    assert np.mean(np.array(glass) > 0) > 0.8                                        # windows found on most cars


# ---------------------------------------------------------------------------------------------------------------
# geometry of a frame
# ---------------------------------------------------------------------------------------------------------------


def test_boxes_are_the_tight_boxes_of_the_placed_meshes(frame):
    _, _, _, scene, _ = frame
    assert len(scene.boxes) > 10 and {"Car", "Pedestrian"} <= set(scene.names)
    for k, box in enumerate(scene.boxes):        # loop over objects
        v = scene.triangles[scene.face_owner == k].reshape(-1, 3)
        c, s = np.cos(box[6]), np.sin(box[6])
        d = v - box[:3]
        local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], 1)
        half = box[3:6] / 2
        assert np.all(np.abs(local) <= half + 1e-3), scene.names[k]               # every vertex inside (1 mm)
        assert np.allclose(local.max(0), half, atol=1e-6) and np.allclose(local.min(0), -half, atol=1e-6)


def test_every_return_lies_on_its_scene_triangle(frame):
    pts, boxes, names, scene, scan = frame
    assert 80_000 < len(pts) < 131_072 and pts.dtype == np.float32
    dirs, _ = _hdl64_directions(2048)
    d = dirs[scan.ray]
    t, u, v = _moller_trumbore(d, scene.triangles[scan.face])
    assert np.all((u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9))               # the ray hits its face
    r = np.linalg.norm(pts[:, :3].astype(np.float64), axis=1)
    assert np.abs(r - t).max() < 5 * NOISE                                         # within 5 sigma of it
    assert 0.5 * NOISE < np.std(r - t) < 1.5 * NOISE
    direction = pts[:, :3] / r[:, None]
    assert np.abs(direction - d).max() < 1e-5                                      # noise along the ray only
    assert np.all((pts[:, 3] >= 0) & (pts[:, 3] <= 1))
    counts = np.bincount(scan.owner[scan.owner >= 0], minlength=len(scene.boxes))
    labelled = counts >= 5
    assert len(boxes) == labelled.sum() and names == [n for n, k in zip(scene.names, labelled) if k]


def test_returns_are_the_first_hits_of_their_rays(exact):
    pts, _, _, scene, scan = exact
    dirs, _ = _hdl64_directions(2048)
    r = np.linalg.norm(pts[:, :3].astype(np.float64), axis=1)
    opaque = ~np.isin(scene.face_class, [ss.GLASS, ss.WINDOW])
    rng = np.random.default_rng(0)
    # returns seen through glass (found with the fast caster over all faces; checked below with the slow one)
    _, first = cast_rays(scene.vertices, scene.faces, np.zeros(3), dirs[scan.ray], 200.0)
    sample = np.concatenate([rng.choice(np.flatnonzero(scan.owner >= 0), 30, replace=False),
                             rng.choice(np.flatnonzero(scan.owner < 0), 30, replace=False),
                             rng.choice(np.flatnonzero(first != scan.face), 5, replace=False)])
    through = 0
    for i in sample:                             # loop over sampled returns: every triangle tested
        t, face = _nearest_hit(dirs[scan.ray[i]], scene.triangles)
        if face != scan.face[i]:
            # glass lets rays through: then the nearest hit is glass and the return the nearest opaque hit
            assert scene.face_class[face] in (ss.GLASS, ss.WINDOW)
            t, face = _nearest_hit(dirs[scan.ray[i]], np.where(opaque[:, None, None], scene.triangles, np.nan))
            through += 1
        assert abs(t - r[i]) < 1e-4
        if face != scan.face[i]:                 # a tie (a shared edge, coincident faces): its face is hit there too
            t_rec, u, v = _moller_trumbore(dirs[scan.ray[i]][None], scene.triangles[scan.face[i]][None])
            assert abs(t_rec[0] - t) < 1e-6 and u[0] >= -1e-9 and v[0] >= -1e-9 and u[0] + v[0] <= 1 + 1e-9
    assert 5 <= through < len(sample) / 2


def test_car_sizes_follow_kitti(lib):
    sizes = {"Car": [], "Pedestrian": [], "Cyclist": []}
    for seed in range(12):                       # loop over streets (no casting)
        scene = ss.street_layout(np.random.default_rng(100 + seed), lib, n_pedestrians=(6, 8), n_cyclists=(2, 3))
        for box, name in zip(scene.boxes, scene.names):
            if name in sizes:
                sizes[name].append(box[3:6])
    car = np.array(sizes["Car"])
    assert len(car) > 300
    assert np.allclose(car.mean(0), [3.9, 1.6, 1.56], atol=[0.05, 0.02, 0.02])
    assert np.allclose(car.std(0), [0.35, 0.1, 0.1], rtol=0.2)
    assert car.min(0)[0] > 3.9 - 2.6 * 0.35 and car.max(0)[1] < 1.6 + 2.6 * 0.1  # clipped draws: no toy shapes
    ped = np.array(sizes["Pedestrian"])
    assert len(ped) > 30 and abs(ped[:, 2].mean() - 1.73) < 0.06
    assert np.all(ped[:, :2] > 0.2) and np.all(ped[:, :2] < 1.3)
    cyc = np.array(sizes["Cyclist"])
    assert len(cyc) > 10 and abs(cyc[:, 0].mean() - 1.76) < 0.1 and abs(cyc[:, 2].mean() - 1.73) < 0.1


def test_frames_are_deterministic_per_seed(cad, frame):
    pts, boxes, names = ss.mesh_street_scene(np.random.default_rng(7), cad=cad)
    assert np.array_equal(pts, frame[0]) and np.array_equal(boxes, frame[1]) and names == frame[2]
    other, _, _ = ss.mesh_street_scene(np.random.default_rng(8), cad=cad)
    assert len(other) != len(pts) or not np.array_equal(other, pts)


def test_surfaces_give_kitti_like_intensities_and_glass_gaps(frame):
    pts, _, _, _, scan = frame
    car = np.isin(scan.surface, [ss.PAINT, ss.GLASS, ss.DARK])
    road = scan.surface == ss.ROAD
    assert np.median(pts[car, 3]) < 0.12 < np.median(pts[road, 3]) < 0.3           # KITTI: 0.05 and 0.25
    assert np.mean(scan.surface == ss.GLASS) < 0.2 * np.mean(scan.surface == ss.PAINT)


# ---------------------------------------------------------------------------------------------------------------
# occlusion-aware copy-paste
# ---------------------------------------------------------------------------------------------------------------


def _big_car(frame, min_count=300):
    """The car with the most returns 8-30 m away: (index, its points, its box, the other points)."""
    pts, _, _, scene, scan = frame
    r = np.hypot(scene.boxes[:, 0], scene.boxes[:, 1])
    k = next(k for k in np.argsort(-scan.counts) if scene.names[k] == "Car" and scan.counts[k] >= min_count
             and 8.0 < r[k] < 30.0)
    return int(k), pts[scan.owner == k], scene.boxes[k], pts[scan.owner != k]


def _moved_triangles(tri, box, azimuth, distance):
    """The object's triangles moved as relocate_object moves its points."""
    r0, a0 = np.hypot(box[0], box[1]), np.arctan2(box[1], box[0])
    c, s = np.cos(azimuth - a0), np.sin(azimuth - a0)
    out = tri.copy()
    out[..., 0], out[..., 1] = c * tri[..., 0] - s * tri[..., 1], s * tri[..., 0] + c * tri[..., 1]
    out[..., :2] += np.array([np.cos(azimuth), np.sin(azimuth)]) * (distance - r0)
    return out


def _wall_spots(frame, offset, near=14.0, far=35.0):
    """(azimuth, wall range) of wall returns where the frame's big car, moved ``offset`` metres beyond (or before)
    the wall along that azimuth, has every point's ray blocked by the wall (opaque faces, mostly wall)."""
    pts, _, _, scene, scan = frame
    _, car_pts, box, _ = _big_car(frame)
    opaque = np.flatnonzero(~np.isin(scene.face_class, [ss.GLASS, ss.WINDOW]))
    wall = np.flatnonzero(scan.surface == ss.WALL)
    rw = np.hypot(pts[wall, 0], pts[wall, 1])
    for i in np.random.default_rng(0).permutation(wall[(rw > near) & (rw < far)])[:300]:
        a, d = float(np.arctan2(pts[i, 1], pts[i, 0])), float(np.hypot(pts[i, 0], pts[i, 1]))
        moved, _ = relocate_object(car_pts, box, d + offset, np.random.default_rng(1), azimuth=a)
        t, f = cast_rays(scene.vertices, scene.faces[opaque], np.zeros(3), moved[:, :3].astype(np.float64), 200.0)
        blocked = t < np.linalg.norm(moved[:, :3], axis=1) - 0.5
        if blocked.all() and np.mean(scene.face_class[opaque[f]] == ss.WALL) > 0.8:
            yield a, d


@pytest.fixture(scope="module")
def wall_spot(frame):
    """(azimuth, range) of a wall return with the frame's big car fully hidden 5 m behind it."""
    spot = next(_wall_spots(frame, 5.0), None)
    assert spot is not None, "no wall in the test frame hides the car 5 m behind it"
    return spot


def test_a_car_pasted_behind_a_wall_keeps_no_points(frame, wall_spot):
    k, car_pts, box, rest = _big_car(frame)
    a, d = wall_spot
    moved, moved_box = relocate_object(car_pts, box, d + 5.0, np.random.default_rng(1), azimuth=a)
    assert len(moved) >= 50
    scene_keep, object_keep = visible_paste(rest[:, :3], moved[:, :3])
    assert not object_keep.any() and scene_keep.all()
    # through gt_sampling: the hidden car is not pasted (no box, no points)
    db = GtDatabase()
    db.boxes, db.names, db.points, db.crops, db.crop_boxes = [moved_box], ["Car"], [moved], [None], [None]
    out, boxes, names = gt_sampling(rest, np.zeros((0, 7)), [], db, np.random.default_rng(0), {"Car": 1},
                                    occlusion=True)
    assert len(boxes) == 0 and np.array_equal(out, rest)


def test_a_car_pasted_in_front_of_a_wall_hides_the_wall_behind_it(frame, wall_spot):
    _, _, _, scene, _ = frame
    k, car_pts, box, rest = _big_car(frame)
    a, d = wall_spot
    moved, moved_box = relocate_object(car_pts, box, d - 4.0, np.random.default_rng(1), azimuth=a)
    car_tri = _moved_triangles(scene.triangles[scene.face_owner == k], box, a, d - 4.0)
    solid = ~np.isin(scene.face_class[scene.face_owner == k], [ss.GLASS])
    scene_keep, object_keep = visible_paste(rest[:, :3], moved[:, :3])
    assert object_keep.mean() > 0.3

    def behind_car(p, tri):
        t, _ = cast_rays(tri.reshape(-1, 3), np.arange(3 * len(tri)).reshape(-1, 3), np.zeros(3),
                         p[:, :3].astype(np.float64), 200.0)
        return t < np.linalg.norm(p[:, :3], axis=1) - 0.3

    hidden = behind_car(rest, car_tri[solid])             # the scene points the car's body now hides
    assert hidden.sum() > 50
    assert np.count_nonzero(hidden & scene_keep) <= 0.02 * hidden.sum()
    removed = ~scene_keep
    assert np.mean(behind_car(rest[removed], car_tri)) > 0.9   # what goes is behind the car (its glass included)


def test_a_car_pasted_at_60_m_keeps_the_share_of_points_of_that_range(frame, cad):
    pts, boxes, names, scene, scan = frame
    _, car_pts, box, _ = _big_car(frame)
    r_src = float(np.hypot(box[0], box[1]))
    share = (r_src / 60.0) ** 2
    moved, moved_box = relocate_object(car_pts, box, 60.0, np.random.default_rng(3), thinning="random")
    assert len(moved) == round(len(car_pts) * share)
    assert np.isclose(np.hypot(*moved_box[:2]), 60.0) and np.isclose(moved_box[6], box[6])
    assert set(map(tuple, moved[:, 3:].tolist())) <= set(map(tuple, car_pts[:, 3:].tolist()))
    # the default samples the moved car where the beams would: one point per beam and azimuth step it meets
    beams, _ = relocate_object(car_pts, box, 60.0, np.random.default_rng(3))
    cell, _ = range_image_cells(beams[:, :3])
    assert len(np.unique(cell)) == len(cell) and 0.7 < len(beams) / (len(car_pts) * share) < 1.3
    ratios = []
    for k in np.flatnonzero((scan.counts >= 30) & (np.array(scene.names) == "Car")):   # every car seen enough
        r = np.hypot(*scene.boxes[k, :2])
        if 6.0 < r < 45.0:
            moved, _ = relocate_object(pts[scan.owner == k], scene.boxes[k], 60.0, np.random.default_rng(0))
            ratios.append(len(moved) / (scan.counts[k] * (r / 60.0) ** 2))
    assert len(ratios) >= 5 and 0.85 < np.median(ratios) < 1.15
    # gt_sampling moves every candidate 59.5-60.5 m away, on the frame's ground, and pastes what stays visible
    db = GtDatabase()
    db.add_frame(*ss.mesh_street_scene(np.random.default_rng(21), cad=cad), min_points=60, classes=("Car",))
    out, new_boxes, new_names = gt_sampling(pts, boxes, names, db, np.random.default_rng(0), {"Car": len(names) + 6},
                                            occlusion=True, far_share=1.0, far_range=(59.5, 60.5))
    pasted = new_boxes[len(boxes):]
    assert len(pasted) >= 1 and np.all(np.abs(np.hypot(pasted[:, 0], pasted[:, 1]) - 60.0) <= 0.5)
    from pcseg.geometry.boxes import points_in_boxes

    counts = np.bincount(points_in_boxes(out[:, :3], pasted) + 1, minlength=len(pasted) + 1)[1:]
    src = {tuple(np.round(b[3:6], 6)): (len(p), np.hypot(*b[:2])) for b, p in zip(db.boxes, db.points)}
    for b, n in zip(pasted, counts):             # loop over pasted cars
        n_src, r = src[tuple(np.round(b[3:6], 6))]
        assert 5 <= n <= 1.4 * n_src * (r / np.hypot(*b[:2])) ** 2 + 3
        assert abs((b[2] - b[5] / 2) - scene.ground[2]) < 1.2   # standing near the road, not in the air


def test_default_gt_sampling_is_unchanged(frame, cad):
    pts, boxes, names, _, _ = frame
    db = GtDatabase()
    db.add_frame(*ss.mesh_street_scene(np.random.default_rng(21), cad=cad))
    a = gt_sampling(pts, boxes, names, db, np.random.default_rng(5))
    b = gt_sampling(pts, boxes, names, db, np.random.default_rng(5), occlusion=False, far_share=0.0)
    from pcseg.data.detection import _choose_samples, _paste_points

    chosen = _choose_samples(boxes, list(names), db, np.random.default_rng(5), {"Car": 15, "Pedestrian": 10,
                                                                                 "Cyclist": 10}, 0.0)
    c = _paste_points(pts, boxes, list(names), db, chosen)
    for x, y, z in zip(a, b, c):
        assert np.array_equal(np.asarray(x), np.asarray(y)) and np.array_equal(np.asarray(x), np.asarray(z))


def test_range_image_cells_hold_one_return_of_the_pattern(exact):
    pts = exact[0]
    cell, r = range_image_cells(pts[:, :3])
    assert len(np.unique(cell)) == len(cell)     # one beam, one azimuth step: one cell
    assert np.allclose(r, np.linalg.norm(pts[:, :3].astype(np.float64), axis=1))


# ---------------------------------------------------------------------------------------------------------------
# detector targets and the engine
# ---------------------------------------------------------------------------------------------------------------


def test_sparse_cars_get_detector_targets(frame):
    from pcseg.models import build
    from pcseg.models.detector import PRESETS

    pts, boxes, names, scene, scan = frame
    model = build("focals-centerpoint", **PRESETS["cpu"], channels=[4, 8, 8, 8], bev_channels=8)
    _, car_pts, box, _ = _big_car(frame)
    far_pts, far_box = relocate_object(car_pts, box, 60.0, np.random.default_rng(0), azimuth=0.05)
    far_pts = far_pts[:12]                       # a car of 12 points at 60 m
    outside = far_box.copy()
    outside[0] = 70.0                            # beyond the cpu preset's 64 m
    all_pts = np.concatenate([pts, far_pts])
    all_boxes = np.concatenate([boxes, far_box[None], outside[None]])
    res = head_targets(model, all_pts, all_boxes, list(names) + ["Car", "Car"])
    sparse = [r for r in res if r["name"] == "Car" and 10 <= r["points"] <= 30 and r["in_range"]]
    assert len(sparse) >= 2                      # the 60 m car and the frame's own sparse cars
    assert all(r["positive"] and r["regressed"] and r["voxels"] >= 3 for r in sparse)
    assert 10 <= res[-2]["points"] <= 12 and res[-2]["positive"]     # (noise leaves a return outside its box)
    assert not res[-1]["in_range"] and not res[-1]["positive"]


def test_engine_pretrains_on_mesh_streets(cad, tmp_path):
    from pcseg.engine.detect import DetectTrainConfig, train_detector
    from pcseg.models.checkpoint import load_checkpoint

    assert DetectTrainConfig().synthetic_source == "boxes" and DetectTrainConfig().paste == {}
    with pytest.raises(UsageError):
        DetectTrainConfig.from_overrides({"synthetic_source": "cad"})
    with pytest.raises(UsageError):
        DetectTrainConfig.from_overrides({"paste_far": 2})
    assert DetectTrainConfig(paste_occlusion=True).paste == {"occlusion": True, "far_share": 0.0,
                                                             "far_range": (40.0, 62.0)}
    tiny = dict(channels=[4, 8, 8, 8], bev_channels=8, point_range=[0, -12.8, -3, 25.6, 12.8, 1],
                voxel_size=[0.2, 0.2, 0.4])
    cfg = DetectTrainConfig.from_overrides({"synthetic_source": "meshes", "synthetic_cad": str(cad),
                                            "synthetic_steps": 2, "steps": 0, "batch_size": 1, "log_every": 1,
                                            "checkpoint_every": 1, "val_frames": [], "model_options": tiny})
    run = tmp_path / "run"
    result = train_detector(cfg, run)
    assert result["step"] == 2
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in recs] == ["synthetic", "synthetic"] and all(np.isfinite(r["loss_total"]) for r in recs)
    card = load_checkpoint(run / "last.safetensors").card
    assert card["training"]["config"]["synthetic_source"] == "meshes"
    assert card["training"]["config"]["paste_occlusion"] is False
