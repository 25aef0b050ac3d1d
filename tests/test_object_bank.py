"""Object bank from the real indoor scans, rooms furnished with it, and mixing real and synthetic spheres.

Everything runs on the real files of ../shared/data/indoor (skipped when absent): the bank is built once per
module into a temporary cache; rooms are small (density 300) to keep the file fast on a loaded machine.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from pcseg.data.cache import DiskCache
from pcseg.data.classmaps import S3DIS_NAMES, builtin_class_map
from pcseg.data.object_bank import (
    HELD_OUT, OBJECT_CLASSES, SCANNET_LINK_RADIUS, bank_fingerprint, load_bank, to_source,
)
from pcseg.data.synthetic_rooms import build_room, generate_room
from pcseg.errors import UsageError
from pcseg.io import read

CLS = {n: i for i, n in enumerate(S3DIS_NAMES)}
HALLWAY = "indoor/s3dis/Area_3/hallway_3"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return DiskCache(tmp_path_factory.mktemp("bank_cache"))


@pytest.fixture(scope="module")
def full_bank(shared_data, cache):
    """Every file's objects, the validation files included."""
    return load_bank(shared_data, exclude=(), cache=cache)


@pytest.fixture(scope="module")
def bank(shared_data, cache, full_bank):
    return load_bank(shared_data, cache=cache)  # the default: held-out files excluded (entries from the cache)


@pytest.fixture(scope="module")
def rooms(bank):
    """Rooms furnished from the bank wherever it has a fitting object (bank_share=1)."""
    return [build_room(np.random.default_rng(seed), density=300.0, bank=bank, bank_share=1.0) for seed in range(3)]


# ----------------------------------------------------------------------------------------------- the bank
def test_s3dis_objects_are_the_annotation_files(shared_data, full_bank):
    ann = sorted((shared_data / HALLWAY / "Annotations").glob("*.txt"))
    wanted = [f for f in ann if f.name.split("_")[0] in OBJECT_CLASSES]
    assert [f.name for f in wanted] == ["clutter_1.txt", "clutter_2.txt", "clutter_3.txt",
                                       "door_1.txt", "door_2.txt", "door_3.txt"]
    objs = [o for o in full_bank if o.source == HALLWAY]
    assert full_bank.counts()[HALLWAY] == {"clutter": 3, "door": 3}
    for obj, f in zip(objs, wanted):  # same order, same points, same colours, the file's class
        table = np.loadtxt(f)
        assert obj.name == f.name.split("_")[0]
        assert len(obj.xyz) == len(table)
        np.testing.assert_allclose(to_source(obj), table[:, :3], atol=1e-4)
        np.testing.assert_array_equal(obj.rgb, table[:, 3:].astype(np.uint8))
        # local frame: footprint centred, base at z = 0, doors stand on the floor of the room
        assert abs(obj.xyz[:, 0].min() + obj.xyz[:, 0].max()) < 1e-3 and obj.xyz[:, 2].min() == 0.0
    assert all(o.placement == "opening" and o.elevation < 0.05 for o in objs if o.name == "door")
    cloud = objs[3].as_cloud("source")  # the one point cloud type, in the file's frame
    np.testing.assert_allclose(cloud.xyz, np.loadtxt(wanted[3])[:, :3], atol=1e-4)
    assert set(np.unique(cloud.fields["class"])) == {CLS["door"]}


def test_scannet_objects_keep_every_labelled_point_once(shared_data, full_bank):
    name = "indoor/scannet_scene0000_00.ply"
    cloud = read(str(shared_data / name))
    labels = builtin_class_map("nyu40-to-s3dis").encode(cloud.fields["nyu40"])
    tree = cKDTree(cloud.xyz)
    objs = [o for o in full_bank if o.source == name]
    used = []
    for obj in objs:
        dist, idx = tree.query(to_source(obj))
        assert dist.max() < 1e-4  # every bank point is a point of the scan ...
        assert np.all(labels[idx] == obj.label)  # ... labelled with the object's class
        used.append(idx)
    used = np.concatenate(used)
    assert len(np.unique(used)) == len(used)  # no point in two objects
    for c in OBJECT_CLASSES:  # objects + dropped fragments = the class's points in the file
        in_bank = sum(len(o.xyz) for o in objs if o.name == c)
        assert in_bank + full_bank.dropped[name].get(c, 0) == int(np.sum(labels == CLS[c])), c
    assert full_bank.counts()[name] == {"window": 2, "door": 4, "table": 5, "sofa": 1, "bookcase": 1, "clutter": 23}
    # objects of one class are connected components: two of them never come within the link radius
    for c in ("table", "door", "clutter"):
        same = [to_source(o) for o in objs if o.name == c]
        for i in range(len(same)):
            rest = np.concatenate(same[:i] + same[i + 1:])
            assert cKDTree(rest).query(same[i])[0].min() > SCANNET_LINK_RADIUS - 1e-3
    # walls, floors and ceilings are not objects
    assert not {o.name for o in objs} & {"wall", "floor", "ceiling"}


def test_osd_objects_stand_on_the_table(shared_data, full_bank):
    for path in sorted((shared_data / "indoor" / "osd_tabletop").glob("*.pcd")):
        name = path.relative_to(shared_data).as_posix()
        label = read(str(path)).fields["label"].astype(np.int64)
        groups, sizes = np.unique(label[label >= 20] // 10, return_counts=True)
        objs = [o for o in full_bank if o.source == name]
        assert sorted(len(o.xyz) for o in objs) == sorted(sizes.tolist()), name
        assert all(o.name == "clutter" and o.placement == "surface" for o in objs)
        for o in objs:
            up, origin = o.to_source[:, 2], o.to_source[:, 3]
            assert abs(np.linalg.norm(up) - 1) < 1e-9 and (np.zeros(3) - origin) @ up > 0.3  # up faces the camera
            assert -0.01 < o.elevation < 0.25  # on the table, or stacked on another object


def test_held_out_files_are_excluded_by_default(shared_data, full_bank, bank):
    assert any(s.startswith(HELD_OUT) for s in full_bank.sources)
    assert not any(s.startswith(HELD_OUT) for s in bank.sources)
    assert {"indoor/scannet_scene0000_00.ply", "indoor/scannet_scene0000_01.ply"} <= set(bank.sources)
    assert len(bank) == len(full_bank) - sum(s.startswith(HELD_OUT) for s in full_bank.sources)
    names = [entry[0] for entry in bank_fingerprint(shared_data)[1]]
    assert "indoor/scannet_scene0000_02.ply" not in names and not any(n.startswith("indoor/s3dis/") for n in names)
    # the only chairs of the data are in the validation rescan: the training bank has none
    assert len(full_bank.find(CLS["chair"], ("floor",))) and not len(bank.find(CLS["chair"], ("floor",)))


# ----------------------------------------------------------------------------------------------- rooms
def _inside(obj, xy: np.ndarray, tol: float) -> np.ndarray:
    c, s = math.cos(obj.yaw), math.sin(obj.yaw)
    d = xy - obj.center
    u, v = d @ [c, s], d @ [-s, c]
    return (np.abs(u) <= obj.half[0] + tol) & (np.abs(v) <= obj.half[1] + tol)


def _penetration(a: np.ndarray, b: np.ndarray) -> float:
    """How deep two convex polygons overlap (separating axis test): <= 0 when they do not."""
    depth = np.inf
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        for nx, ny in np.column_stack([-edges[:, 1], edges[:, 0]]):
            if math.hypot(nx, ny) < 1e-12:  # a degenerate edge has no normal
                continue
            n = np.array([nx, ny]) / math.hypot(nx, ny)
            pa, pb = a @ n, b @ n
            depth = min(depth, min(pa.max(), pb.max()) - max(pa.min(), pb.min()))
    return depth


def test_composed_rooms_place_bank_objects_without_overlap(rooms, bank):
    placed = set()
    for room in rooms:
        length, width, height = room.size
        objs = room.objects
        for i, obj in enumerate(objs):
            pts = room.xyz[room.instances == i]
            assert np.all(room.labels[room.instances == i] == obj.label)
            # the points are where the layout says: in the footprint, between z0 and z1 (noise 4 mm)
            assert np.all(_inside(obj, pts[:, :2], 0.02)), (i, obj)
            assert len(pts) == 0 or (pts[:, 2].min() > obj.z0 - 0.02 and pts[:, 2].max() < obj.z1 + 0.02)
            if obj.bank is not None:
                placed.add(S3DIS_NAMES[obj.label])
                assert room.labels[room.instances == i].size == 0 or bank.labels[obj.bank] == obj.label
            # what it stands on
            if obj.support == "floor":
                assert obj.z0 == 0.0
            elif obj.support == "surface":
                below = objs[obj.on]
                assert below.z0 < obj.z0 <= below.z1 + 0.03
                assert np.all(_inside(below, obj.corners(), 0.001))
            else:  # wall, opening: against the room's boundary, inside the wall's plane
                corners = obj.corners()
                gap = np.minimum.reduce([corners[:, 0], length - corners[:, 0], corners[:, 1], width - corners[:, 1]])
                assert np.abs(gap).min() < 0.03, obj
            assert obj.z1 <= height + 1e-9
        # no two objects overlap (except an object and what it stands on)
        for i in range(len(objs)):
            for j in range(i + 1, len(objs)):
                a, b = objs[i], objs[j]
                if a.on == j or b.on == i or min(a.z1, b.z1) - max(a.z0, b.z0) <= 0.01:
                    continue
                assert _penetration(a.corners(), b.corners()) <= 0.005, (a, b)
    # real objects of many classes were used (the training bank has no chair and no board)
    assert {"door", "window", "table", "sofa", "clutter"} <= placed


def test_a_table_too_small_for_a_chair_gets_none_on_that_side(bank):
    """Seed 6 draws a table narrower than a procedural chair (0.45 m); it used to stop the room generator."""
    room = build_room(np.random.default_rng(6), density=800.0, bank=bank, bank_share=0.6)
    assert len(room.xyz) > 0


def test_procedural_rooms_are_unchanged_without_a_bank():
    room = build_room(np.random.default_rng(4), density=150.0)
    xyz, rgb, lab = generate_room(np.random.default_rng(4), density=150.0)
    np.testing.assert_array_equal(room.xyz, xyz)
    assert all(o.bank is None for o in room.objects) and room.falloff == 3.0 and room.density == 150.0


def _shadowed(points: np.ndarray, scanner: np.ndarray, occluder: np.ndarray, radius: float) -> np.ndarray:
    """True where the segment scanner -> point passes within ``radius`` of an occluder point lying more than
    0.15 m before the point: the ground truth of 'behind that object', without any z-buffer."""
    q = occluder - scanner
    out = np.zeros(len(points), dtype=bool)
    for chunk in np.array_split(np.arange(len(points)), max(1, len(points) // 2000)):
        d = points[chunk] - scanner
        rng_ = np.linalg.norm(d, axis=1)
        u = d / rng_[:, None]
        t = u @ q.T
        dist2 = np.sum(q**2, axis=1)[None, :] - t**2
        out[chunk] = np.any((t > 0) & (t < rng_[:, None] - 0.15) & (dist2 < radius**2), axis=1)
    return out


def test_scan_pattern_occlusion_behind_bank_objects(bank):
    kw = dict(density=300.0, bank=bank, bank_share=1.0, n_scanners=1, size=(7.0, 5.0, 3.0))
    seen = build_room(np.random.default_rng(21), **kw)
    full = build_room(np.random.default_rng(21), occlusion=False, **kw)
    assert [o.center for o in seen.objects] == [o.center for o in full.objects]  # the same room
    scanner = seen.scanners[0]
    spacing = 1.0 / math.sqrt(seen.density)
    shell = (full.instances == -1) & np.isin(full.labels, [CLS["floor"], CLS["wall"]])
    shell_seen = (seen.instances == -1) & np.isin(seen.labels, [CLS["floor"], CLS["wall"]])
    checked = 0
    for i, obj in enumerate(full.objects):
        if obj.bank is None or obj.support != "floor" or obj.z1 < 0.4:
            continue
        occ = full.xyz[full.instances == i]
        behind_full = _shadowed(full.xyz[shell], scanner, occ, 0.3 * spacing)
        clear_full = ~_shadowed(full.xyz[shell], scanner, occ, 3 * spacing)
        behind_seen = _shadowed(seen.xyz[shell_seen], scanner, occ, 0.3 * spacing)
        clear_seen = ~_shadowed(seen.xyz[shell_seen], scanner, occ, 3 * spacing)
        if behind_full.sum() < 30:
            continue
        checked += 1
        # behind a real object, the floor and walls lose most of their points; elsewhere the bank object
        # takes none (other objects and boxes may)
        assert behind_seen.sum() < 0.25 * behind_full.sum(), (obj, behind_seen.sum(), behind_full.sum())
        assert clear_seen.sum() > 0.5 * clear_full.sum()
    assert checked >= 2
    # and bank objects hide nothing of themselves: all the points an object keeps are its own
    assert len(seen.xyz) < len(full.xyz)


def test_scan_pattern_density_falls_with_range(bank):
    room = build_room(np.random.default_rng(3), density=300.0, bank=bank, bank_share=1.0, n_scanners=1,
                      size=(8.0, 6.0, 3.0), occlusion=False)
    scanner, r0, dens = room.scanners[0], room.falloff, room.density
    floor = room.xyz[room.labels == CLS["floor"]]
    # the floor's free area per range bin (a 2 cm grid), away from everything standing on it
    g = np.stack(np.meshgrid(np.arange(0.01, 8.0, 0.02), np.arange(0.01, 6.0, 0.02)), -1).reshape(-1, 2)
    free = np.ones(len(g), dtype=bool)
    for obj in room.objects:
        free &= ~_inside(obj, g, 0.1)
    on_free = np.ones(len(floor), dtype=bool)
    for obj in room.objects:
        on_free &= ~_inside(obj, floor[:, :2], 0.1)
    r_cell = np.hypot(np.linalg.norm(g[free] - scanner[:2], axis=1), scanner[2])
    r_pts = np.linalg.norm(floor[on_free] - scanner, axis=1)
    bins = np.arange(1.5, 9.0, 1.0)
    area = np.histogram(r_cell, bins)[0] * 0.02**2
    count = np.histogram(r_pts, bins)[0]
    mid = (bins[:-1] + bins[1:]) / 2
    ok = area > 3.0
    expected = dens * np.minimum(1.0, (r0 / mid) ** 2)
    observed = count[ok] / area[ok]
    np.testing.assert_allclose(observed, expected[ok], rtol=0.2)
    assert observed[-1] < 0.6 * observed[0]  # it does fall


def test_bank_rooms_vary_density_and_colour(rooms):
    assert len({round(r.density) for r in rooms}) == 3 and len({round(r.falloff, 3) for r in rooms}) == 3
    means = [r.rgb[r.labels == CLS["wall"]].mean(axis=0) for r in rooms]
    assert max(np.ptp(np.array(means), axis=0)) > 10


# ----------------------------------------------------------------------------------------------- training data
def test_bank_rooms_as_training_data(shared_data, cache, monkeypatch):
    from pcseg.data import datasets
    from pcseg.data.datasets import resolve_data

    monkeypatch.setenv("PCSEG_CACHE", str(cache.root))
    monkeypatch.setattr(datasets, "_BANKS", {})
    (src,) = resolve_data([f"synthetic:bank-rooms:1@{shared_data}"], "one,rgb,z",
                          class_map="nyu40-to-s3dis")
    assert src.path == "synthetic:bank-rooms#0" and src.class_map.name == "s3dis"
    assert any("scannet_scene0000_00" in str(e) for e in src.fingerprint()[1])
    cloud = src.load()
    assert set(np.unique(cloud.labels)) == set(range(13)) and cloud.features.shape[1] == 5
    with pytest.raises(UsageError):
        resolve_data(["synthetic:bank-rooms:x"], "one")


def test_the_sampler_honours_the_synthetic_share(shared_data):
    from pcseg.data.batch import PyramidSpec
    from pcseg.data.datasets import resolve_data
    from pcseg.data.spheres import SphereSampler, prepare_clouds
    from pcseg.engine.train import TrainConfig

    srcs = resolve_data(["synthetic:rooms:1", str(shared_data / "indoor" / "scannet_scene0000_00.ply"),
                         str(shared_data / "indoor" / "scannet_scene0000_01.ply")], "one,z", class_map="nyu40-to-s3dis")
    clouds = prepare_clouds(srcs, 0.1)
    spec = PyramidSpec(0.1, [0.25])
    n = 1500
    for share in (0.2, 0.7):
        sampler = SphereSampler(clouds, spec, point_budget=10**6, radius=0.5, synthetic_share=share)
        rng = np.random.default_rng(0)
        got = np.mean([sampler.sample_sphere(rng).cloud == 0 for _ in range(n)])
        assert abs(got - share) < 4 * math.sqrt(share * (1 - share) / n), (share, got)
    # without the setting, spheres follow the point counts (the room holds most of the points)
    plain = SphereSampler(clouds, spec, point_budget=10**6, radius=0.5)
    rng = np.random.default_rng(0)
    frac = len(clouds[0]) / sum(len(c) for c in clouds)
    got = np.mean([plain.sample_sphere(rng).cloud == 0 for _ in range(n)])
    assert abs(got - frac) < 0.05
    with pytest.raises(UsageError):
        SphereSampler(clouds[1:], spec, point_budget=100, synthetic_share=0.5)
    assert TrainConfig.from_preset("s3dis-salanet-bank").synthetic_share == 0.5
    assert "rgb" not in TrainConfig.from_preset("s3dis-salanet-bank-xyz").features
