"""CAD bank (issue #28): CAD meshes of ../shared/data/cad virtually scanned into bank objects, and the rooms of
``synthetic:cad-rooms`` furnished with them. Skipped without the shared data; banks go to a temporary cache."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from scipy.spatial import cKDTree

from pcseg.data import cad_bank
from pcseg.data.cache import DiskCache
from pcseg.data.cad_bank import (CAD_CLASSES, GLASS_RETURN, WINDOW_SILL, load_cad_bank, load_object, open_side,
                                 read_catalog, scan_object, virtual_scan)
from pcseg.data.classmaps import S3DIS_NAMES
from pcseg.io.mesh import TriangleMesh, read_mesh

CLS = {n: i for i, n in enumerate(S3DIS_NAMES)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return DiskCache(tmp_path_factory.mktemp("cad_bank_cache"))


@pytest.fixture(scope="module")
def bank(cad_root, cache):
    return load_cad_bank(cad_root, cache=cache)


@pytest.fixture(scope="module")
def records(cad_root):
    return {r["file"]: r for r in read_catalog(cad_root)}


def _object(cad_root, records, file):
    obj, why = load_object(cad_root, records[file])
    assert obj is not None, why
    return obj


# --- independent geometry (textbook, one ray or one point at a time) ---------------------------------------

def _first_hit(origin, d, tri):
    """Möller–Trumbore of one ray against every triangle: (t, face) of the nearest hit (inf, -1: none)."""
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, p)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tv = origin - v0
    u = np.einsum("ij,ij->i", tv, p) * inv
    q = np.cross(tv, e1)
    v = (q @ d) * inv
    t = np.einsum("ij,ij->i", e2, q) * inv
    hit = ok & (u >= -1e-9) & (v >= -1e-9) & (u + v <= 1 + 1e-9) & (t > 1e-9)
    if not hit.any():
        return math.inf, -1
    k = int(np.flatnonzero(hit)[np.argmin(t[hit])])
    return float(t[k]), k


def _segment_distance(p, a, b):
    ab = b - a
    s = np.clip(np.einsum("ij,ij->i", p - a, ab) / np.maximum(np.einsum("ij,ij->i", ab, ab), 1e-300), 0.0, 1.0)
    return np.linalg.norm(a + s[:, None] * ab - p, axis=1)


def _distance_to_mesh(p, tri):
    """Exact distance from the point ``p`` to the nearest of the triangles."""
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    n = np.cross(b - a, c - a)
    nn = np.linalg.norm(n, axis=1)
    nu = n / np.maximum(nn, 1e-300)[:, None]
    h = np.einsum("ij,ij->i", p - a, nu)
    q = p - h[:, None] * nu
    inside = nn > 0
    for u, w in ((a, b), (b, c), (c, a)):
        inside &= np.einsum("ij,ij->i", np.cross(w - u, q - u), n) >= 0
    best = np.where(inside, np.abs(h), np.inf)
    for u, w in ((a, b), (b, c), (c, a)):
        best = np.minimum(best, _segment_distance(p, u, w))
    return float(best.min())


# --- the virtual scan -------------------------------------------------------------------------------------

@pytest.mark.parametrize("file", ["door/quaternius__door1_furn2019.ply", "chair/kenney__desk_chair_arms.ply"])
def test_scanned_points_are_the_first_hits_of_their_rays(cad_root, records, file):
    obj = _object(cad_root, records, file)
    rng = np.random.default_rng(3)
    wall = obj.record["class"] == "door"
    lo, hi = obj.mesh.vertices.min(axis=0), obj.mesh.vertices.max(axis=0)
    scanners = cad_bank.scanner_positions(rng, lo, hi, 3, wall)
    noise = 0.004
    scan = virtual_scan(obj.mesh, scanners, np.full(3, 0.006), noise, rng)
    assert len(scan.xyz) > 1000 and set(np.unique(scan.scanner)) == {0, 1, 2}
    tri = obj.mesh.triangles
    for i in np.random.default_rng(0).choice(len(scan.xyz), 120, replace=False):
        s = scanners[scan.scanner[i]]
        d = (scan.xyz[i] - s) / np.linalg.norm(scan.xyz[i] - s)
        t, face = _first_hit(s, d, tri)
        # the ray through the point hits first the face it is on, at its true range; noise only along the ray
        assert abs(t - scan.t[i]) < 1e-6, (i, t, scan.t[i])
        assert face == scan.face[i] or abs(_first_hit(s, d, tri[[scan.face[i]]])[0] - t) < 1e-6
        assert abs(np.linalg.norm(scan.xyz[i] - s) - t) < 5 * noise
        assert _distance_to_mesh(scan.xyz[i], tri) < 5 * noise
    if wall:  # the back of the door (its rearmost faces, toward the wall) is never seen
        rear = np.flatnonzero(tri[:, :, 1].max(axis=1) < lo[1] + 0.01)
        assert len(rear) > 10 and not np.isin(scan.face, rear).any()
        assert np.all(scanners[:, 1] > hi[1])


def test_bookcase_back_panel_is_not_scanned(cad_root, records):
    obj = _object(cad_root, records, "bookcase/quaternius__bookcase_furn2019.ply")
    rng = np.random.default_rng(1)
    lo, hi = obj.mesh.vertices.min(axis=0), obj.mesh.vertices.max(axis=0)
    scanners = cad_bank.scanner_positions(rng, lo, hi, 4, True)
    scan = virtual_scan(obj.mesh, scanners, np.full(4, 0.005), 0.0, rng)
    tri = obj.mesh.triangles
    rear = np.flatnonzero(tri[:, :, 1].max(axis=1) < lo[1] + 0.005)  # the back panel's outer face
    assert len(rear) and not np.isin(scan.face, rear).any()
    true = scanners[scan.scanner] + scan.t[:, None] * (scan.xyz - scanners[scan.scanner]) \
        / np.linalg.norm(scan.xyz - scanners[scan.scanner], axis=1, keepdims=True)
    assert true[:, 1].min() > lo[1] + 0.001  # the panel's inner face (3 mm thick) is seen between shelves


def test_spacing_grows_with_range():
    # a 2 x 2 m wall in the x-z plane, scanned face-on from 2 m and 4 m with one angular step
    quad = TriangleMesh([[-1, 0, 0], [1, 0, 0], [1, 0, 2], [-1, 0, 2]], [[0, 1, 2], [0, 2, 3]], [[200] * 3] * 2)
    step = 0.005  # 10 mm at 2 m
    spacing = []
    for y in (2.0, 4.0):
        scan = virtual_scan(quad, np.array([[0.0, y, 1.0]]), step, 0.0, np.random.default_rng(0))
        near = np.linalg.norm(scan.xyz[:, [0, 2]] - [0.0, 1.0], axis=1) < 0.3  # the middle: face-on
        d = cKDTree(scan.xyz[near]).query(scan.xyz[near], k=2)[0][:, 1]
        spacing.append(np.median(d))
        assert abs(spacing[-1] / (y * step) - 1) < 0.1
    assert 1.8 < spacing[1] / spacing[0] < 2.2


def test_bank_scan_spacing_is_terrestrial(cad_root, records):
    """The bank's own settings: 5-15 mm at 2 m, i.e. spacing = range x step, per scanner."""
    obj = _object(cad_root, records, "door/gazebo-osrf__hinged_door.ply")
    rng = np.random.default_rng(5)
    lo, hi = obj.mesh.vertices.min(axis=0), obj.mesh.vertices.max(axis=0)
    scanners = np.array([[0.0, 2.0, 1.5], [0.3, 4.5, 1.5]])
    steps = np.array([0.004, 0.004])
    scan = virtual_scan(obj.mesh, scanners, steps, 0.0, rng)
    med = []
    for i in range(2):
        p = scan.xyz[scan.scanner == i]
        d = cKDTree(p).query(p, k=2)[0][:, 1]
        med.append(np.median(d))
        assert 0.8 < med[-1] / (np.median(scan.t[scan.scanner == i]) * steps[i]) < 1.3
    assert med[1] > 1.7 * med[0]
    assert 0.0025 <= cad_bank.SPACING_AT_2M[0] / 2 and cad_bank.SPACING_AT_2M[1] / 2 <= 0.0075


# --- windows ----------------------------------------------------------------------------------------------

GLASS_COLOURS = {"window/aws-smallhouse__room_window_01.ply": lambda c: c[:, 0] == 255,
                 "window/kenney__wall_window.ply": lambda c: np.all(c == (218, 235, 227), axis=1),
                 "window/kenney__wall_window_slide.ply": lambda c: np.all(c == (218, 235, 227), axis=1)}


def test_glass_rule_on_the_free_windows(cad_root, records):
    free = [f for f, r in records.items() if r["class"] == "window" and r["licence_class"] == "free"]
    assert len(free) == 6
    for f in free:
        obj, why = load_object(cad_root, records[f])
        if f not in GLASS_COLOURS:  # the shop front and the corridor modules: not room windows
            assert obj is None and "placement rule" in why, f
            continue
        # the faces coloured as glass that face the room (the edges of the small-house panes, 2.6 cm strips
        # inside the frame, stay frame)
        normal = np.cross(*(np.diff(obj.mesh.triangles, axis=1).transpose(1, 0, 2)))
        facing = np.abs(normal[:, 1]) >= 0.95 * np.linalg.norm(normal, axis=1)
        expected = GLASS_COLOURS[f](obj.mesh.face_rgb) & facing
        assert expected.any() and np.array_equal(obj.glass, expected), f
        # the wall segment's wall is gone: the window alone, under 1 m wide
        assert obj.mesh.extent()[0] < (1.0 if "kenney" in f else 2.5)


def test_windows_keep_few_glass_points_and_every_frame_point(cad_root, records):
    obj = _object(cad_root, records, "window/aws-smallhouse__room_window_01.ply")
    mesh = obj.mesh
    rng = np.random.default_rng(2)
    lo, hi = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    scanners = cad_bank.scanner_positions(rng, lo, hi, 3, True)
    scan = virtual_scan(mesh, scanners, np.full(3, 0.005), 0.003, rng, obj.glass, 0.1, keep_rays=True)
    first = scan.ray_first
    on_glass = (first >= 0) & obj.glass[np.maximum(first, 0)]
    on_frame = (first >= 0) & ~obj.glass[np.maximum(first, 0)]
    assert on_glass.sum() == scan.glass_rays > 5000
    # few glass points: about 10% of the rays that reach the glass
    glass_pts = obj.glass[scan.face]
    assert glass_pts.sum() == scan.glass_returns
    assert abs(scan.glass_returns / scan.glass_rays - 0.1) < 0.02
    assert glass_pts.mean() < 0.2
    # every ray whose first hit is the frame returns a point there
    assert np.all(scan.ray_point[on_frame] >= 0)
    assert np.array_equal(scan.face[scan.ray_point[on_frame]], first[on_frame])
    # the other glass rays go on through: their points are the first frame hit behind the glass
    through = on_glass & (scan.ray_point >= 0) & ~obj.glass[scan.face[np.maximum(scan.ray_point, 0)]]
    assert through.any()
    frame = np.flatnonzero(~obj.glass)
    for r in np.flatnonzero(through)[:30]:
        s, d = scanners[scan.ray_scanner[r]], scan.ray_dir[r]
        t, f = _first_hit(s, d, mesh.triangles[frame])
        assert abs(t - scan.t[scan.ray_point[r]]) < 1e-6
    assert GLASS_RETURN[0] >= 0.05 and GLASS_RETURN[1] <= 0.15


# --- bank objects -----------------------------------------------------------------------------------------

def test_bank_holds_the_indoor_classes_in_the_local_frame(bank, cad_root, records):
    assert len(bank) > 60 and len(bank.skipped) > 0
    names = {S3DIS_NAMES[k] for k in bank.labels}
    assert {"chair", "table", "sofa", "bookcase", "door", "window"} <= names <= set(CAD_CLASSES)
    assert "board" not in names and "cad/board/aws-smallhouse__board_01.ply" in bank.skipped
    for obj in bank:
        rec = records[obj.source[len("cad/"):]]
        assert obj.source == f"cad/{rec['class']}/{os.path.basename(rec['file'])}" and rec["licence_class"] == "free"
        p = obj.xyz
        assert p[:, 2].min() == 0.0 and abs(p[:, 0].min() + p[:, 0].max()) < 1e-4 \
            and abs(p[:, 1].min() + p[:, 1].max()) < 1e-4
        np.testing.assert_allclose(obj.size, [np.ptp(p[:, 0]), np.ptp(p[:, 1]), p[:, 2].max()], atol=1e-5)
        assert obj.placement == {"door": "opening", "window": "opening", "table": "floor", "chair": "floor",
                                 "sofa": "wall", "bookcase": "wall"}[obj.name]
        if obj.name == "window":  # hangs at its sill
            assert WINDOW_SILL[0] - 0.02 < obj.elevation < WINDOW_SILL[1] + 0.02 and obj.size[1] < 0.3
        else:  # stands on the floor
            assert abs(obj.elevation) < 0.02
        assert (obj.top is not None) == (obj.name in ("table", "bookcase"))
        if obj.top is not None:
            assert 0.2 < obj.top <= obj.size[2] + 0.02 and np.all(np.isfinite(obj.top_rect))
        rot = obj.to_source[:, :3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
        front = rot @ [0.0, 1.0, 0.0]  # local +y in the catalog's frame
        if obj.name in ("chair", "sofa", "door", "window", "bookcase"):  # the catalog's front / open side: +x
            np.testing.assert_allclose(front, [1.0, 0.0, 0.0], atol=1e-9)
        if obj.name == "chair" and "backrest heuristic" in rec["notes"] and obj.size[2] > 0.8:
            top = p[p[:, 2] > 0.8 * obj.size[2]]  # the backrest: behind the seat, at -y
            assert top[:, 1].mean() < -0.1, obj.source


@pytest.mark.parametrize("file", ["chair/quaternius__chair_furn2019.ply", "window/kenney__wall_window.ply",
                                  "bookcase/quaternius__bookcase_furn2019.ply", "table/kenney__table_round.ply"])
def test_bank_points_lie_on_their_mesh(bank, cad_root, file):
    k = bank.sources.index("cad/" + file)
    obj = bank[k]
    tri = read_mesh(cad_root / file).triangles
    src = obj.xyz.astype(np.float64) @ obj.to_source[:, :3].T + obj.to_source[:, 3]
    for i in np.random.default_rng(0).choice(len(src), 60, replace=False):
        assert _distance_to_mesh(src[i], tri) < 0.025  # 5 sigma of the largest ranging noise


def test_bookcases_turn_their_open_side_to_the_front(cad_root, records):
    for f, r in records.items():
        if r["class"] == "bookcase" and r["licence_class"] == "free" and "open side to +x" in r["notes"]:
            assert open_side(read_mesh(cad_root / f)) == 1, f


def test_the_same_seed_gives_the_same_bank(cad_root, records, bank):
    obj = _object(cad_root, records, "chair/kenney__chair.ply")
    a, b, c = scan_object(obj, 0), scan_object(obj, 0), scan_object(obj, 1)
    np.testing.assert_array_equal(a["xyz"], b["xyz"])
    np.testing.assert_array_equal(a["rgb"], b["rgb"])
    assert len(a["xyz"]) != len(c["xyz"]) or not np.array_equal(a["xyz"], c["xyz"])
    # an object scans the same whatever else is in the bank
    k = bank.sources.index("cad/chair/kenney__chair.ply")
    np.testing.assert_array_equal(bank[k].xyz, a["xyz"])
    windows = load_cad_bank(cad_root, classes=("window",), cache=False)
    again = load_cad_bank(cad_root, classes=("window",), cache=False)
    np.testing.assert_array_equal(windows.xyz, again.xyz)
    np.testing.assert_array_equal(windows.rgb, again.rgb)
    with pytest.raises(ValueError, match="column"):
        load_cad_bank(cad_root, classes=("chair", "column"), cache=False)


def test_the_bank_is_cached_without_machine_paths(bank, cad_root, cache, monkeypatch):
    monkeypatch.setattr(cad_bank, "_build", lambda *a: pytest.fail("rebuilt instead of read from the cache"))
    again = load_cad_bank(cad_root, cache=cache)
    np.testing.assert_array_equal(again.xyz, bank.xyz)
    assert again.sources == bank.sources and again.skipped == bank.skipped
    for meta in (cache.root / "cad_bank").glob("*.json"):
        text = meta.read_text()
        assert str(cad_root) not in text and json.loads(text)["identity"]["version"] == cad_bank.CAD_BANK_VERSION


# --- rooms ------------------------------------------------------------------------------------------------

def test_cad_rooms_hold_cad_chairs_and_keep_the_old_strings(shared_data, cad_root, cache, bank, monkeypatch):
    from pcseg.cli.models_cmds import data_set
    from pcseg.data import datasets
    from pcseg.data.datasets import check_disjoint, resolve_data
    from pcseg.data.synthetic_rooms import build_room, generate_room

    monkeypatch.setenv("PCSEG_CACHE", str(cache.root))
    monkeypatch.setattr(datasets, "_BANKS", {})
    train = resolve_data([f"synthetic:cad-rooms:2@{shared_data}"], "one,rgb,z")
    val = resolve_data([f"synthetic:cad-rooms:1@{shared_data}"], "one,rgb,z", role="val")
    varied = resolve_data([f"synthetic:varied-rooms:2@{shared_data}"], "one,rgb,z")
    plain = resolve_data([f"synthetic:bank-rooms:2@{shared_data}"], "one,rgb,z")
    assert [s.path for s in train] == ["synthetic:cad-rooms#0", "synthetic:cad-rooms#1"]
    assert val[0].path == "synthetic:cad-rooms#1000000"
    assert train[0].options == {"seed": 0, "bank": os.path.abspath(shared_data), "variants": True,
                                "cad": os.path.abspath(cad_root), "cad_bank": cad_bank.cad_bank_key(cad_root)}
    # the old strings resolve as before (no CAD option: the same rooms and cache entries)
    assert varied[0].options == {"seed": 0, "bank": os.path.abspath(shared_data), "variants": True}
    assert plain[0].options == {"seed": 0, "bank": os.path.abspath(shared_data)}
    check_disjoint(train, val)
    check_disjoint(varied, train)
    assert train[0].identity() != varied[0].identity() and data_set(train[0].path) == "synthetic rooms"
    real = datasets._object_bank(str(shared_data))
    assert not any(s.startswith("cad/") for s in real.sources)
    both = datasets._object_bank(train[0].options["bank"], train[0].options["cad"])
    assert len(both) == len(real) + len(bank) and both.sources[len(real):] == bank.sources

    cloud = train[0].load()
    xyz, _, labels = generate_room(np.random.default_rng(0), bank=both, variants=True)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.labels, labels)
    room = build_room(np.random.default_rng(0), bank=both, variants=True)
    np.testing.assert_array_equal(room.xyz, xyz)
    chairs = [i for i, o in enumerate(room.objects)
              if o.label == CLS["chair"] and (o.source or "").startswith("cad/chair/")]
    assert chairs, "no CAD chair in the room"
    seen = [i for i in chairs if (room.instances == i).any()]  # a chair may be hidden or cropped away
    assert seen and all(np.all(room.labels[room.instances == i] == CLS["chair"]) for i in seen)
    assert CLS["board"] in set(room.labels.tolist()) | set(room.absent)  # boards: procedural (no CAD wall board)
    assert set(np.unique(room.labels).tolist()) | set(room.absent) == set(range(len(S3DIS_NAMES)))
