"""Varied rooms (``synthetic:varied-rooms``, issue #28): beams or none, flat / shed / gable ceilings, partial-scan
crops; and the rooms of ``synthetic:rooms`` and ``synthetic:bank-rooms`` unchanged by them.

Rooms are small (density 300) so that the file stays fast on one thread; the bank tests use the real files of
../shared/data/indoor (skipped when absent) with a temporary cache.
"""
from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from pcseg.data import synthetic_rooms
from pcseg.data.cache import DiskCache
from pcseg.data.classmaps import S3DIS_NAMES
from pcseg.data.synthetic_rooms import CROP_MIN_HEIGHT, build_room, ceiling_height, generate_room

CLS = {n: i for i, n in enumerate(S3DIS_NAMES)}
NOISE = 0.004
SEEDS = (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 14, 15)  # every variant among them (the first test checks it)


@pytest.fixture(scope="module")
def varied():
    return {seed: build_room(np.random.default_rng(seed), density=300.0, noise=NOISE, variants=True)
            for seed in SEEDS}


@pytest.fixture(scope="module")
def bank(shared_data, tmp_path_factory):
    from pcseg.data.object_bank import load_bank

    cache = DiskCache(tmp_path_factory.mktemp("variant_bank_cache"))
    return load_bank(shared_data, cache=cache), cache


def _above_ceiling(room, xyz):
    """Distance of points above the room's ceiling, perpendicular to the plane that bounds them (< 0: below)."""
    planes = room.variant.planes
    z_k = planes[:, 0] + xyz[:, :2] @ planes[:, 1:].T  # (N, K) height of every plane
    k = np.argmin(z_k, axis=1)
    slope = np.linalg.norm(planes[k, 1:], axis=1)
    return (xyz[:, 2] - z_k[np.arange(len(xyz)), k]) / np.sqrt(1.0 + slope**2)


def _hash(room) -> str:
    m = hashlib.sha256()
    for a in (np.round(room.xyz, 6), room.rgb, room.labels, room.instances):
        m.update(np.ascontiguousarray(a).tobytes())
    return m.hexdigest()[:16]


def test_the_seeds_cover_every_variant(varied):
    vs = [r.variant for r in varied.values()]
    assert {v.ceiling for v in vs} == {"flat", "shed", "gable"}
    assert {v.beams for v in vs} == {True, False}
    assert any(v.crop_height is not None for v in vs) and any(v.crop_height is None and v.cut is None for v in vs)
    assert {v.cut_kind for v in vs if v.cut is not None} == {"wall", "corner"}
    for v in vs:
        assert (v.slope == 0.0) == (v.ceiling == "flat") and (v.ceiling == "flat" or 8.0 <= v.slope <= 25.0)
        assert len(v.planes) == {"flat": 1, "shed": 1, "gable": 2}[v.ceiling]


def test_variant_draws_follow_their_probabilities():
    rng = np.random.default_rng(0)
    n = 4000
    draws = [synthetic_rooms._draw_variant(rng, 6.0, 4.0, 2.8) for _ in range(n)]
    share = lambda f: np.mean([bool(f(v, cut)) for v, cut in draws])  # noqa: E731
    tol = 4 * np.sqrt(0.25 / n)
    assert abs(share(lambda v, c: not v.beams) - 0.5) < tol
    assert abs(share(lambda v, c: v.ceiling == "flat") - 0.5) < tol
    assert abs(share(lambda v, c: v.ceiling == "shed") - 0.25) < tol
    assert abs(share(lambda v, c: v.ceiling == "gable") - 0.25) < tol
    assert abs(share(lambda v, c: v.crop_height is not None or c is not None) - 0.35) < tol
    assert abs(share(lambda v, c: v.crop_height is not None) - 0.35 * 0.6) < tol
    assert abs(share(lambda v, c: c is not None) - 0.35 * 0.6) < tol
    assert abs(share(lambda v, c: v.crop_height is not None and c is not None) - 0.35 * 0.2) < tol
    heights = [v.crop_height for v, _ in draws if v.crop_height is not None]
    assert 1.6 <= min(heights) and max(heights) <= 2.7
    slopes = [v.slope for v, _ in draws if v.ceiling != "flat"]
    assert 8.0 <= min(slopes) < 9.0 and 24.0 < max(slopes) <= 25.0
    for v, _ in draws[:50]:  # a gable's ridge runs along the room's longer side (x here), in its middle
        if v.ceiling == "gable":
            assert np.all(v.planes[:, 1] == 0.0)
            np.testing.assert_allclose(ceiling_height(v.planes, [[3.0, 2.0]]), 2.8 + 2.0 * np.tan(np.radians(v.slope)))


def test_sloped_ceilings_lie_on_their_planes_and_top_every_floor_cell(varied, bank):
    rooms = list(varied.values())
    rooms += [build_room(np.random.default_rng(s), density=300.0, noise=NOISE, bank=bank[0], variants=True)
              for s in (1, 4)]  # bank rooms: a gable without and one with beams
    checked = 0
    for room in rooms:
        v = room.variant
        ceil = room.labels == CLS["ceiling"]
        if v.ceiling == "flat" or v.crop_height is not None:
            continue
        checked += 1
        # on the drawn plane(s), and they do slope: the ceiling rises by the drawn pitch over the room
        assert np.abs(_above_ceiling(room, room.xyz[ceil])).max() < 5 * NOISE
        rise = np.ptp(ceiling_height(v.planes, room.xyz[ceil, :2]))
        assert rise > 0.5 and abs(np.ptp(room.xyz[ceil, 2]) - rise) < 10 * NOISE
        # nothing above the ceiling anywhere (walls, columns and beams reach up to it, no further)
        up = _above_ceiling(room, room.xyz)
        assert up.max() < 5 * NOISE
        near = up > -5 * NOISE
        assert set(np.unique(room.labels[near])) <= {CLS[n] for n in ("ceiling", "wall", "column", "beam")}
        # above every floor cell (0.25 m) the ceiling is the top: no point of the cell lies higher above its
        # sloped surface than the cell's highest ceiling point (but noise), and most cells have ceiling points
        floor = room.xyz[room.labels == CLS["floor"], :2]
        cell = lambda p: np.floor(p / 0.25).astype(np.int64) @ np.array([1, 100_000])  # noqa: E731
        cells = np.unique(cell(floor))
        key = cell(room.xyz[:, :2])
        in_floor = np.isin(key, cells)
        top_ceiling = np.full(len(cells), -np.inf)
        top_other = np.full(len(cells), -np.inf)
        idx = np.searchsorted(cells, key[in_floor])
        np.maximum.at(top_ceiling, idx[ceil[in_floor]], up[in_floor][ceil[in_floor]])
        np.maximum.at(top_other, idx[~ceil[in_floor]], up[in_floor][~ceil[in_floor]])
        has = np.isfinite(top_ceiling)
        assert has.mean() > 0.7, has.mean()
        assert np.all(top_other[has] <= top_ceiling[has] + 5 * NOISE)
        # wall objects stay below the ceiling everywhere
        for obj in room.objects:
            if obj.label != CLS["column"]:
                assert obj.z1 <= ceiling_height(v.planes, obj.corners()).min() + 1e-9, obj
    assert checked >= 6


def test_beams_are_drawn_or_absent(varied):
    for seed, room in varied.items():
        v, present = room.variant, set(np.unique(room.labels).tolist())
        assert present | set(room.absent) == set(range(13)) and not present & set(room.absent), seed
        if not v.beams:
            assert CLS["beam"] not in present and CLS["beam"] in room.absent
        elif v.crop_height is None and v.cut is None:
            assert CLS["beam"] in present and room.absent == ()
        if v.crop_height is None and v.cut is None:  # only a crop removes anything else
            assert set(room.absent) <= {CLS["beam"]}


def test_crops_cut_the_ceiling_and_the_far_walls(varied):
    heights = cuts = 0
    for seed, room in varied.items():
        v, eaves = room.variant, room.size[2]
        if v.crop_height is not None:
            heights += 1
            assert CROP_MIN_HEIGHT <= v.crop_height <= eaves - 0.1
            assert room.xyz[:, 2].max() <= v.crop_height
            assert not np.any(room.labels == CLS["ceiling"]) and CLS["ceiling"] in room.absent
        if v.cut is not None:
            cuts += 1
            m, off = v.cut[:2], v.cut[2]
            assert np.isclose(np.linalg.norm(m), 1.0)
            assert np.all(room.xyz[:, :2] @ m <= off)
            assert np.all(room.scanners[:, :2] @ m <= off - 0.5)  # the scanners stand on the kept side
            corners = np.array([[0, 0], [room.size[0], 0], room.size[:2], [0, room.size[1]]])
            beyond = corners @ m > off
            # wall: the far wall's two corners are cut away (that wall is missing), corner: one corner
            assert beyond.sum() == (2 if v.cut_kind == "wall" else 1), seed
        # the layout: instance ids point into the kept objects, and every kept object reaches the kept part
        assert room.instances.max() < len(room.objects)
        for i, obj in enumerate(room.objects):
            if not np.any(room.instances == i):
                assert v.crop_height is None or obj.z0 < v.crop_height
                assert v.cut is None or np.any(obj.corners() @ v.cut[:2] < v.cut[2])
            if obj.on is not None:
                assert 0 <= obj.on < len(room.objects)
    assert heights >= 3 and cuts >= 4


def test_a_crop_cuts_the_finished_scan(monkeypatch):
    """The kept points are exactly the uncropped scan's points on the kept side (a crop of a real scan: the
    scanners did not see through the missing walls)."""
    seed = 4  # a shed room with a height crop and a wall cut
    cropped = build_room(np.random.default_rng(seed), density=300.0, variants=True)
    assert cropped.variant.crop_height is not None and cropped.variant.cut_kind == "wall"
    monkeypatch.setattr(synthetic_rooms, "_crop", lambda v, xyz, rgb, lab, inst, objects: (xyz, rgb, lab, inst,
                                                                                          objects))
    full = build_room(np.random.default_rng(seed), density=300.0, variants=True)
    v = cropped.variant
    keep = (full.xyz[:, 2] <= v.crop_height) & (full.xyz[:, :2] @ v.cut[:2] <= v.cut[2])
    assert 0.2 * len(full.xyz) < keep.sum() < len(full.xyz)
    np.testing.assert_array_equal(cropped.xyz, full.xyz[keep])
    np.testing.assert_array_equal(cropped.rgb, full.rgb[keep])
    np.testing.assert_array_equal(cropped.labels, full.labels[keep])
    np.testing.assert_array_equal(cropped.scanners, full.scanners)
    # objects cut in two keep their points on the kept side, under their own (renumbered) instance
    kept_objects = {(o.label, o.center) for o in cropped.objects}
    assert kept_objects <= {(o.label, o.center) for o in full.objects} and len(kept_objects) < len(full.objects)
    for i, obj in enumerate(cropped.objects):
        j = next(j for j, o in enumerate(full.objects) if (o.label, o.center) == (obj.label, obj.center))
        np.testing.assert_array_equal(cropped.xyz[cropped.instances == i], full.xyz[keep & (full.instances == j)])


def test_the_same_seed_gives_the_same_varied_room():
    a = build_room(np.random.default_rng(6), density=200.0, variants=True)
    b = build_room(np.random.default_rng(6), density=200.0, variants=True)
    for u, w in ((a.xyz, b.xyz), (a.rgb, b.rgb), (a.labels, b.labels), (a.instances, b.instances),
                 (a.variant.planes, b.variant.planes), (a.variant.cut, b.variant.cut)):
        np.testing.assert_array_equal(u, w)
    assert a.variant.crop_height == b.variant.crop_height and a.absent == b.absent
    # and a varied room is not the plain room of that seed
    plain = generate_room(np.random.default_rng(6), density=200.0)
    assert len(plain[0]) != len(a.xyz) or not np.array_equal(plain[0], a.xyz)


# Hashes of the rooms computed with the generator before the variants existed (generator version 2): the rooms
# of synthetic:rooms and synthetic:bank-rooms must not change (tests and cached shipped-model data rely on them).
PROCEDURAL_HASHES = {(0, 300.0): "f45ab7018c139b51", (1, 300.0): "9d7dfc12dd305c0d", (2, 300.0): "083cee99790eb80b",
                     (0, 800.0): "e687b28ce3324d46"}
BANK_HASHES = {(0, 300.0, 1.0): "a9bdbaa3533f637a", (1, 300.0, 1.0): "454250ae04fdfa55",
               (2, 300.0, 1.0): "9b2282c7139ee1bf", (0, 800.0, 0.6): "8724823f21380657"}


def test_procedural_rooms_are_unchanged():
    for (seed, density), h in PROCEDURAL_HASHES.items():
        room = build_room(np.random.default_rng(seed), density=density)
        assert room.variant is None and room.absent == ()
        assert _hash(room) == h, (seed, density)


def test_bank_rooms_are_unchanged(bank):
    for (seed, density, share), h in BANK_HASHES.items():
        assert _hash(build_room(np.random.default_rng(seed), density=density, bank=bank[0], bank_share=share)) == h


def test_varied_rooms_as_training_data(shared_data, bank, monkeypatch):
    from pcseg.data import datasets
    from pcseg.data.datasets import check_disjoint, resolve_data
    from pcseg.errors import UsageError

    monkeypatch.setenv("PCSEG_CACHE", str(bank[1].root))
    monkeypatch.setattr(datasets, "_BANKS", {})
    train = resolve_data([f"synthetic:varied-rooms:2@{shared_data}"], "one,rgb,z")
    val = resolve_data([f"synthetic:varied-rooms:1@{shared_data}"], "one,rgb,z", role="val")
    plain = resolve_data([f"synthetic:bank-rooms:2@{shared_data}"], "one,rgb,z")
    assert [s.path for s in train] == ["synthetic:varied-rooms#0", "synthetic:varied-rooms#1"]
    assert val[0].path == "synthetic:varied-rooms#1000000" and val[0].options["variants"] is True
    assert train[0].options == {"seed": 0, "bank": os.path.abspath(shared_data), "variants": True}
    assert "variants" not in plain[0].options  # bank rooms keep their cache entries
    check_disjoint(train, val)
    check_disjoint(plain, train)  # the same seeds, other rooms: no overlap
    assert train[0].identity() != plain[0].identity()
    assert len(resolve_data([f"synthetic:varied-rooms@{shared_data}"], "one")) == 8
    cloud = train[0].load()
    xyz, _, labels = generate_room(np.random.default_rng(0), bank=bank[0], variants=True)
    np.testing.assert_array_equal(cloud.xyz, xyz)
    np.testing.assert_array_equal(cloud.labels, labels)  # s3dis: the ids themselves
    with pytest.raises(UsageError):
        resolve_data(["synthetic:varied-rooms:x"], "one")
