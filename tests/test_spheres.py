"""Preprocessing cache, training-sphere sampler, point-budget batches and neighbour-limit calibration."""
from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from pcseg.data.augment import Augmentation
from pcseg.data.batch import PyramidSpec
from pcseg.data.cache import DiskCache
from pcseg.data.datasets import CloudSource, resolve_data
from pcseg.data.spheres import (
    SphereSampler, calibrate_neighbor_limits, calibrated_spec, fallback_neighbor_limit, prepare_cloud,
    prepare_clouds, suggest_point_budget,
)
from pcseg.errors import BadInputError
from pcseg.geometry import grid_subsample


def _spec(dl, layers=3):
    return PyramidSpec(dl, [2.5 * dl * 2**l for l in range(layers)])


@pytest.fixture(scope="module")
def room(shared_data, tmp_path_factory):
    cache = DiskCache(tmp_path_factory.mktemp("cache"))
    srcs = resolve_data([str(shared_data / "indoor" / "s3dis" / "Area_3" / "hallway_3")], "one,rgb,z")
    return prepare_clouds(srcs, 0.04, cache)


# ----------------------------------------------------------------------------------------------- cache
def test_workers_prepare_the_same_clouds_and_fill_the_cache(shared_data, tmp_path):
    # two real files and three generated rooms: the misses are read in forked processes (the first here)
    indoor = shared_data / "indoor"
    srcs = resolve_data([str(indoor / "scannet_scene0000_00.ply"), str(indoor / "scannet_scene0000_01.ply"),
                         "synthetic:rooms:3"], "one,z", class_map="nyu40-to-s3dis")
    alone = prepare_clouds(srcs, 0.1, None)
    cache = DiskCache(tmp_path / "cache")
    helped = prepare_clouds(srcs, 0.1, cache, workers=3)
    again = prepare_clouds(srcs, 0.1, cache, workers=3)  # every cloud from the cache now
    assert [c.source for c in helped] == [c.source for c in alone]
    for a, b, c in zip(alone, helped, again):
        for name in ("points", "features", "labels"):
            assert np.array_equal(getattr(a, name), getattr(b, name)) and np.array_equal(getattr(a, name), getattr(c, name))
        assert b.tree.n == len(b.points) and b.cache_key == c.cache_key is not None


def test_cache_hit_and_invalidation_when_the_source_changes(shared_data, tmp_path, monkeypatch):
    tile = tmp_path / "tile.las"
    shutil.copy(shared_data / "als" / "warsaw_small.las", tile)
    cache = DiskCache(tmp_path / "cache")
    (src,) = resolve_data([str(tile)], "one,intensity")
    loads = []
    real_load = CloudSource.load
    monkeypatch.setattr(CloudSource, "load", lambda self: loads.append(1) or real_load(self))

    first = prepare_cloud(src, 0.5, cache)
    assert len(loads) == 1
    again = prepare_cloud(src, 0.5, cache)
    assert len(loads) == 1  # served from the cache, the file was not read
    np.testing.assert_array_equal(again.points, first.points)
    np.testing.assert_array_equal(again.labels, first.labels)
    assert again.tree.query(first.points[:5])[1].tolist() == list(range(5))

    st = os.stat(tile)
    os.utime(tile, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: recomputed
    prepare_cloud(src, 0.5, cache)
    assert len(loads) == 2
    prepare_cloud(src, 0.25, cache)  # another cell size is another entry
    assert len(loads) == 3
    prepare_cloud(src, 0.5, cache)
    assert len(loads) == 3
    # only one entry per (source, dl): the touched file replaced the old one
    assert len(list((tmp_path / "cache" / "clouds").glob("*.json"))) == 2


def test_damaged_or_unwritable_cache_never_stops_a_run(shared_data, tmp_path, caplog):
    cache = DiskCache(tmp_path / "cache")
    (src,) = resolve_data([str(shared_data / "als" / "warsaw_small.las")], "one")
    ref = prepare_cloud(src, 0.5, cache)
    for npz in (tmp_path / "cache" / "clouds").glob("*.npz"):
        npz.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        again = prepare_cloud(src, 0.5, cache)
    assert "damaged cache entry" in caplog.text
    np.testing.assert_array_equal(again.points, ref.points)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        out = prepare_cloud(src, 0.5, DiskCache(blocker / "cache"))
    assert "cannot write" in caplog.text and len(out) == len(ref)


# ----------------------------------------------------------------------------------------------- sampler
def test_batches_stay_under_the_budget_and_are_deterministic(room):
    spec = _spec(0.04)
    sampler = SphereSampler(room, spec, point_budget=6000, radius=1.0, augmentation=Augmentation())
    a = list(sampler.batches(3, seed=7))
    b = list(sampler.batches(3, seed=7))
    c = next(sampler.batches(1, seed=8))
    for x, y in zip(a, b):
        assert x.lengths[0].sum() <= 6000
        for u, v in zip(x.points + x.neighbors + [x.features, x.labels, x.extras["centers"]],
                        y.points + y.neighbors + [y.features, y.labels, y.extras["centers"]]):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0].extras["centers"], c.extras["centers"])
    # sphere points are centred on their centre: within radius * max scale (1.3) plus jitter
    for x in a:
        assert np.linalg.norm(x.points[0], axis=1).max() <= 1.0 * 1.3 * np.sqrt(3) + 0.01
        assert x.num_clouds >= 1 and len(x.labels) == len(x.points[0]) == len(x.features)
        assert x.features.shape[1] == 5


def test_batches_are_filled_and_spheres_unaugmented_match_the_cloud(room):
    spec = _spec(0.04, layers=2)
    sampler = SphereSampler(room, spec, point_budget=4000, radius=0.5)
    rng = np.random.default_rng(0)
    s = sampler.sample_sphere(rng)
    cloud = room[0]
    inside = np.linalg.norm(cloud.points - s.center, axis=1) <= 0.5
    np.testing.assert_allclose(np.sort(s.points + s.center, axis=0), np.sort(cloud.points[inside], axis=0))
    np.testing.assert_array_equal(np.sort(s.labels), np.sort(cloud.labels[inside]))
    # several spheres per batch when they are small, as many as fit
    sizes = [len(sampler.sample_sphere(rng).points) for _ in range(20)]
    batch = sampler.sample_batch(np.random.default_rng(1))
    assert batch.num_clouds >= 2 and batch.lengths[0].sum() > 4000 - 2 * max(sizes)


def test_a_sphere_larger_than_the_budget_keeps_its_nearest_points(room):
    sampler = SphereSampler(room, _spec(0.04, 2), point_budget=300, radius=2.0)
    batch = sampler.sample_batch(np.random.default_rng(3))
    assert batch.num_clouds == 1 and batch.lengths[0].sum() == 300
    c = batch.extras["centers"][0]
    d = np.linalg.norm(room[0].points - c, axis=1)
    kept = np.linalg.norm(batch.points[0].astype(np.float64), axis=1)
    assert kept.max() <= np.sort(d)[299] + 1e-5


def test_class_balanced_centres_favour_rare_classes(shared_data, tmp_path):
    srcs = resolve_data([str(shared_data / "als" / "ign_mnx_pont.laz")], "one")
    (cloud,) = prepare_clouds(srcs, 1.0, DiskCache(tmp_path))
    labels = cloud.labels

    def centre_classes(balance):
        sampler = SphereSampler([cloud], _spec(1.0, 1), point_budget=10**6, radius=3.0, balance_classes=balance)
        rng = np.random.default_rng(0)
        idx = cloud.tree.query(np.stack([sampler.sample_sphere(rng).center for _ in range(600)]))[1]
        return labels[idx]

    present = np.unique(labels[labels >= 0])
    bal, uni = centre_classes(True), centre_classes(False)
    assert np.all(bal >= 0)
    freq = np.array([(bal == k).mean() for k in present])
    assert freq.min() > 0.5 / len(present) and freq.max() < 1.5 / len(present)  # about uniform over classes
    rare = present[np.argmin([(labels == k).sum() for k in present])]
    assert (bal == rare).mean() > 5 * (uni == rare).mean()


def test_unlabelled_data_is_a_clear_error(room):
    from dataclasses import replace

    unlabelled = replace(room[0], labels=np.full(len(room[0]), -1))
    with pytest.raises(BadInputError, match="no training point has a label"):
        SphereSampler([unlabelled], _spec(0.04), point_budget=100)


def test_suggest_point_budget(room):
    sampler = SphereSampler(room, _spec(0.04), point_budget=10, radius=0.6)
    budget = suggest_point_budget(sampler, spheres_per_batch=4)
    sizes = [len(sampler.sample_sphere(np.random.default_rng(0)).points) for _ in range(5)]
    assert 2 * min(sizes) < budget < 6 * max(sizes)


# ----------------------------------------------------------------------------------------------- calibration
def _slow_limits(samples, spec, q):
    """Brute force: pairwise distances at every layer of every sample."""
    out = []
    sizes = [[] for _ in range(spec.num_layers)]
    for pts in samples:
        layer = pts
        for l in range(spec.num_layers):
            sizes[l] += list((cdist(layer, layer) <= spec.radii[l]).sum(axis=1))
            if l + 1 < spec.num_layers:
                coarser = grid_subsample(layer, spec.dl0 * 2 ** (l + 1)).points
                sizes[l] += list((cdist(coarser, layer) <= spec.pool_radius(l)).sum(axis=1))
                layer = coarser
    for s in sizes:
        out.append(int(np.ceil(np.quantile(np.array(s), q))))
    return out


def test_calibration_matches_brute_force(room):
    sampler = SphereSampler(room, _spec(0.04), point_budget=10**6, radius=0.4)
    rng = np.random.default_rng(0)
    samples = [sampler.sample_sphere(rng).points for _ in range(4)]
    spec = _spec(0.04)
    for q in (0.5, 0.8, 1.0):
        assert calibrate_neighbor_limits(samples, spec, q) == _slow_limits(samples, spec, q)


@pytest.mark.parametrize("samples", [
    [],
    [np.zeros((1, 3))],
    [np.full((10, 3), np.nan)],
    [np.zeros((0, 3))],
    ["not points"],
])
def test_calibration_falls_back_on_degenerate_input(samples, caplog):
    spec = _spec(0.04)
    with caplog.at_level(logging.WARNING):
        limits = calibrate_neighbor_limits(samples, spec)
    assert limits == [fallback_neighbor_limit(r, 0.04 * 2**l) for l, r in enumerate(spec.radii)]
    assert "fallback" in caplog.text
    assert fallback_neighbor_limit(0.1, 0.04) == 66  # ceil(4/3 pi 2.5^3)


def test_calibrated_spec_is_cached_and_never_crashes(room, tmp_path, monkeypatch, caplog):
    cache = DiskCache(tmp_path)
    sampler = SphereSampler(room, _spec(0.04), point_budget=5000, radius=0.5, augmentation=Augmentation())
    spec = calibrated_spec(sampler, cache, n_spheres=10)
    assert len(spec.neighbor_limits) == 3 and all(v >= 1 for v in spec.neighbor_limits)
    assert spec.radii == sampler.spec.radii
    monkeypatch.setattr(SphereSampler, "sample_sphere", lambda *a, **k: 1 / 0)
    assert calibrated_spec(sampler, cache, n_spheres=10).neighbor_limits == spec.neighbor_limits  # from cache
    with caplog.at_level(logging.WARNING):
        fb = calibrated_spec(sampler, DiskCache(tmp_path / "other"), n_spheres=10)
    assert "ZeroDivisionError" in caplog.text
    assert fb.neighbor_limits == [fallback_neighbor_limit(r, 0.04 * 2**l) for l, r in enumerate(fb.radii)]


def test_batch_indices_point_back_into_the_cloud(room):
    sampler = SphereSampler(room, _spec(0.04, 2), point_budget=3000, radius=0.6)
    batch = sampler.sample_batch(np.random.default_rng(5))
    idx, start = batch.extras["indices"], 0
    assert len(idx) == batch.lengths[0].sum()
    for b, n in enumerate(batch.lengths[0]):
        cloud = room[batch.extras["clouds"][b]]
        np.testing.assert_allclose(batch.points[0][start:start + n] + batch.extras["centers"][b],
                                   cloud.points[idx[start:start + n]], atol=1e-4)
        np.testing.assert_array_equal(batch.labels[start:start + n], cloud.labels[idx[start:start + n]])
        start += n


def test_isolated_points_never_make_a_sphere(tmp_path):
    from pcseg.data.spheres import MIN_SPHERE_POINTS, PreparedCloud
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0)
    dense = rng.uniform(0, 5, size=(500, 3))
    lonely = np.array([[100.0, 100.0, 100.0]])  # labelled, 100 m from anything: a 1-point sphere
    pts = np.vstack([dense, lonely])
    labels = np.zeros(len(pts), dtype=np.int64)
    labels[-1] = 1  # the only point of its class: class-balanced sampling draws it half the time
    cloud = PreparedCloud(pts, np.ones((len(pts), 1), np.float32), labels, cKDTree(pts), "mem", ("one",), 0.1)
    sampler = SphereSampler([cloud], _spec(0.1, 2), point_budget=200, radius=1.0, balance_classes=True)
    sizes = [len(sampler.sample_sphere(np.random.default_rng(k)).points) for k in range(40)]
    assert min(sizes) >= MIN_SPHERE_POINTS


def test_per_cloud_and_partial_share_sampling(shared_data, tmp_path):
    """A large sparse tile next to a small dense one: per_cloud draws each about half the time (by points the
    large one wins); partial_share sets the share of centres on partially labelled points."""
    als = shared_data / "als"
    srcs = resolve_data([str(als / "test_semis_2021_0382_6565_LA93_IGN69.laz"), str(als / "warsaw_small.las"),
                         f"als-ground:{shared_data / 'als_ground' / 'lidr_mixedconifer.laz'}"], "one",
                        class_map="als")
    clouds = prepare_clouds(srcs, 1.0, DiskCache(tmp_path))
    full = clouds[:2]

    def share_of_small(per_cloud):
        sampler = SphereSampler(full, _spec(1.0, 1), point_budget=10**6, radius=3.0, per_cloud=per_cloud)
        rng = np.random.default_rng(0)
        return np.mean([sampler._draw_center(rng)[0] == 1 for _ in range(2000)])

    assert share_of_small(False) < 0.05 and 0.45 < share_of_small(True) < 0.55
    sampler = SphereSampler(clouds, _spec(1.0, 1), point_budget=10**6, radius=3.0, partial_share=0.3,
                            per_cloud=True)
    rng = np.random.default_rng(1)
    draws = [sampler._draw_center(rng) for _ in range(2000)]
    labels = np.array([clouds[c].labels[i] for c, i in draws])
    assert 0.25 < np.mean(labels <= -2) < 0.35 and np.all(labels != -1)


def _dense_plane(n=40_000, side=60.0, seed=0):
    """A 60 x 60 m cloud at about 11 points/m^2 with a labelled point everywhere."""
    from pcseg.data.spheres import PreparedCloud
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(0, side, (n, 2)), rng.uniform(0, 1, n)])
    labels = (pts[:, 0] > side / 2).astype(np.int64)
    return PreparedCloud(pts, np.ones((n, 1), np.float32), labels, cKDTree(pts), "mem", ("one",), 0.1)


def test_density_cap_thins_every_sphere_and_bounds_the_drawn_densities():
    """With density_cap every sphere is at most that dense; the thinned share is drawn in [lowest, cap], so a
    highest density above the cap is lowered to it."""
    from pcseg.errors import UsageError
    from pcseg.geometry import xy_density

    cloud = _dense_plane()
    full = xy_density(cloud.points)
    assert full > 10
    capped = SphereSampler([cloud], _spec(0.5, 1), point_budget=10**6, radius=12.0, density_cap=3.0)
    both = SphereSampler([cloud], _spec(0.5, 1), point_budget=10**6, radius=12.0, density_cap=3.0,
                         thin=(0.5, 50.0), thin_share=0.5)
    assert both.thin == (0.5, 3.0)
    rng = np.random.default_rng(0)
    capped_d = [xy_density(capped.sample_sphere(rng).points) for _ in range(20)]
    both_d = np.array([xy_density(both.sample_sphere(rng).points) for _ in range(60)])
    assert max(capped_d) < 3.0 * 1.1 and min(capped_d) > 3.0 * 0.8
    assert both_d.max() < 3.0 * 1.1 and both_d.min() > 0.5 * 0.7
    assert 0.3 < np.mean(both_d < 2.4) < 0.7          # about half drawn below the cap, the rest at it
    plain = SphereSampler([cloud], _spec(0.5, 1), point_budget=10**6, radius=12.0)
    assert xy_density(plain.sample_sphere(rng).points) > 10
    with pytest.raises(UsageError, match="density_cap"):
        SphereSampler([cloud], _spec(0.5, 1), point_budget=10**6, density_cap=0.0)
    assert capped.fingerprint() != plain.fingerprint()
