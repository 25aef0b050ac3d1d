"""One-tree neighbour search on stacked batches (pcseg.geometry.neighbors) against per-cloud brute force.

The shared tree may order equidistant neighbours differently from a tree per cloud, so rows are checked for what
the contract fixes: the sorted distances, the set of neighbours nearer than the last one kept, the shadow index
after them, and that no neighbour comes from another cloud.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import pcseg.geometry.neighbors as nb
from pcseg.data import PyramidSpec, build_batch
from pcseg.geometry import grid_subsample, nearest_neighbor, neighborhood_sizes, radius_neighbors
from pcseg.io import read

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "ign_lidarhd_77060_627760.laz")


@pytest.fixture(scope="module")
def spheres():
    """Eight overlapping 7 m spheres of the real IGN tile subsampled at 0.5 m, each centred like inference does."""
    cloud = read(EXAMPLE)
    sub = grid_subsample(cloud.xyz - cloud.origin, 0.5).points
    rng = np.random.default_rng(0)
    centers = sub[rng.choice(len(sub), 8, replace=False)]
    out = []
    for c in centers:
        inside = np.linalg.norm(sub[:, :2] - c[:2], axis=1) < 7.0
        out.append(sub[inside] - c)
    return out


def stack(clouds):
    return np.concatenate(clouds), np.array([len(c) for c in clouds], dtype=np.int64)


def check_rows(got, queries, supports, q_lengths, s_lengths, radius, cap):
    """Every row of ``got`` against the brute-force neighbours of its query within its own cloud."""
    n = len(supports)
    qs = np.concatenate([[0], np.cumsum(q_lengths)])
    ss = np.concatenate([[0], np.cumsum(s_lengths)])
    for b in range(len(q_lengths)):
        q, s = queries[qs[b]:qs[b + 1]], supports[ss[b]:ss[b + 1]]
        dist = np.linalg.norm(q[:, None] - s[None], axis=2)
        for i, row in enumerate(got[qs[b]:qs[b + 1]]):
            real = row[row < n]
            assert np.all(row[len(real):] == n)  # shadows only after the real neighbours
            assert np.all((real >= ss[b]) & (real < ss[b + 1]))  # never another cloud's point
            inside = np.flatnonzero(dist[i] < radius)
            expected = np.sort(dist[i][inside])
            assert len(real) == (len(inside) if cap is None else min(cap, len(inside)))
            d_got = dist[i][real - ss[b]]
            assert np.all(np.diff(d_got) >= 0)
            np.testing.assert_allclose(d_got, expected[: len(real)], rtol=1e-12, atol=1e-12)
            if len(real):  # strictly nearer than the last kept neighbour: no choice, the same points
                nearer = inside[dist[i][inside] < d_got[-1] - 1e-9]
                assert set((real - ss[b]).tolist()) >= set(nearer.tolist())


@pytest.mark.parametrize("radius,cap", [(1.25, 12), (2.5, 30), (1.3, None)])
def test_self_neighbours_of_a_stacked_batch_match_brute_force(spheres, radius, cap):
    pts, lengths = stack(spheres)
    got = radius_neighbors(pts, pts, radius, cap, lengths, lengths)
    widest = max(int((np.linalg.norm(c[:, None] - c[None], axis=2) < radius).sum(axis=1).max()) for c in spheres)
    assert got.shape == (len(pts), cap if cap is not None else widest)
    check_rows(got, pts, pts, lengths, lengths, radius, cap)


def test_pooling_neighbours_between_layers_match_brute_force(spheres):
    coarse = [grid_subsample(c, 1.0).points for c in spheres]
    queries, q_lengths = stack(coarse)
    supports, s_lengths = stack(spheres)
    got = radius_neighbors(queries, supports, 1.25, 12, q_lengths, s_lengths)
    check_rows(got, queries, supports, q_lengths, s_lengths, 1.25, 12)


def test_ties_on_a_lattice_are_cut_at_the_same_distance():
    """A regular grid has many equidistant neighbours; the cap cuts through them. Two copies of the same grid
    stacked as two clouds must each see only their own copy."""
    g = np.stack(np.meshgrid(*[np.arange(6.0)] * 3, indexing="ij"), axis=-1).reshape(-1, 3) * 0.5
    pts, lengths = stack([g, g])
    got = radius_neighbors(pts, pts, 0.8, 10, lengths, lengths)  # 1 + 6 at 0.5, 12 at 0.707: cut inside ties
    check_rows(got, pts, pts, lengths, lengths, 0.8, 10)


def test_georeferenced_coordinates_keep_exact_distances(spheres):
    """Clouds far from the origin (Lambert-93 metres) lose nothing to the per-cloud offset of the shared tree."""
    shifted = [c + np.array([770_600.0, 6_277_550.0, 20.0]) for c in spheres[:3]]
    pts, lengths = stack(shifted)
    got = radius_neighbors(pts, pts, 1.25, 16, lengths, lengths)
    check_rows(got, pts, pts, lengths, lengths, 1.25, 16)


def test_nearest_neighbour_stays_in_its_cloud(spheres):
    coarse = [grid_subsample(c, 2.0).points for c in spheres]
    supports, s_lengths = stack(coarse)
    queries, q_lengths = stack(spheres)
    got = nearest_neighbor(queries, supports, q_lengths, s_lengths)
    qs, ss = np.concatenate([[0], np.cumsum(q_lengths)]), np.concatenate([[0], np.cumsum(s_lengths)])
    for b in range(len(spheres)):
        own = got[qs[b]:qs[b + 1]]
        assert np.all((own >= ss[b]) & (own < ss[b + 1]))
        dist = np.linalg.norm(spheres[b][:, None] - coarse[b][None], axis=2)
        np.testing.assert_allclose(dist[np.arange(len(own)), own - ss[b]], dist.min(axis=1), rtol=1e-12, atol=1e-12)


def test_neighbourhood_sizes_count_each_cloud_alone(spheres):
    pts, lengths = stack(spheres[:4])
    got = neighborhood_sizes(pts, 1.5, lengths)
    expected = np.concatenate([(np.linalg.norm(c[:, None] - c[None], axis=2) <= 1.5).sum(axis=1) for c in spheres[:4]])
    assert np.array_equal(got, expected)


def test_empty_clouds_and_errors():
    rng = np.random.default_rng(3)
    a, b = rng.random((30, 3)), rng.random((20, 3))
    pts = np.concatenate([a, b])
    # An empty cloud between two others: its neighbours of the others stay right, nothing crosses.
    got = radius_neighbors(pts, pts, 0.4, 8, np.array([30, 0, 20]), np.array([30, 0, 20]))
    check_rows(got, pts, pts, np.array([30, 0, 20]), np.array([30, 0, 20]), 0.4, 8)
    assert radius_neighbors(np.empty((0, 3)), pts, 0.4, 5).shape == (0, 5)
    assert (radius_neighbors(a, np.empty((0, 3)), 0.4, 5) == 0).all()  # no support: all shadows (index 0)
    with pytest.raises(ValueError, match="no support points"):
        nearest_neighbor(pts, a, np.array([30, 20]), np.array([30, 0]))
    with pytest.raises(ValueError, match="different number of clouds"):
        radius_neighbors(pts, pts, 0.4, 5, np.array([50]), np.array([30, 20]))
    with pytest.raises(ValueError, match="lengths sum"):
        radius_neighbors(pts, pts, 0.4, 5, np.array([30, 21]), np.array([30, 20]))
    forest = nb.CloudForest(pts, np.array([30, 20]), reach=0.5)
    with pytest.raises(ValueError, match="reach"):
        forest.radius(pts, 0.6, 5, np.array([30, 20]))
    with pytest.raises(ValueError, match="reach"):  # queries 10 m away: their nearest may be in another cloud
        forest.nearest(pts + 10.0, np.array([30, 20]))
    with pytest.raises(ValueError, match="within"):
        forest.nearest(pts + 0.4, np.array([30, 20]), within=0.01)


def test_one_tree_per_call_and_per_layer(spheres, monkeypatch):
    real = nb._kdtree
    built = []
    monkeypatch.setattr(nb, "_kdtree", lambda *a, **k: built.append(1) or real(*a, **k))
    pts, lengths = stack(spheres)
    radius_neighbors(pts, pts, 1.25, 12, lengths, lengths)
    halves, half_lengths = stack([c[::2] for c in spheres])
    nearest_neighbor(pts, halves, lengths, half_lengths)
    assert len(built) == 2  # eight clouds, one tree each call
    built.clear()
    spec = PyramidSpec(0.5, [1.25, 2.5, 5.0], neighbor_limits=[12, 12, 12])
    build_batch(spheres, [np.ones((len(c), 1), np.float32) for c in spheres], spec)
    assert len(built) == 3  # a tree per layer serves its convolutions, the pooling and the upsampling


def test_build_batch_pyramid_matches_brute_force(spheres):
    """Every neighbour matrix of a 3-layer pyramid of eight overlapping clouds, checked cloud by cloud."""
    spec = PyramidSpec(0.5, [1.25, 2.5, 5.0], neighbor_limits=[12, 16, 16])
    clouds = spheres[:5]
    batch = build_batch(clouds, [np.ones((len(c), 1), np.float32) for c in clouds], spec)
    layers = [clouds, [grid_subsample(c, 1.0).points for c in clouds]]
    layers.append([grid_subsample(c, 2.0).points for c in layers[1]])
    for layer in range(3):
        pts, lengths = stack(layers[layer])
        assert np.array_equal(batch.lengths[layer], lengths)
        assert np.array_equal(batch.points[layer], pts.astype(np.float32))
        check_rows(batch.neighbors[layer], pts, pts, lengths, lengths, spec.radii[layer], spec.limit(layer))
        if layer < 2:
            coarse, c_lengths = stack(layers[layer + 1])
            check_rows(batch.pools[layer], coarse, pts, c_lengths, lengths, spec.radii[layer], spec.limit(layer))
            up = batch.upsamples[layer]
            cs = np.concatenate([[0], np.cumsum(c_lengths)])
            for b, (c, q) in enumerate(zip(layers[layer + 1], layers[layer])):
                own = up[np.sum(lengths[:b]):np.sum(lengths[:b + 1])]
                assert np.all((own >= cs[b]) & (own < cs[b + 1]))
                dist = np.linalg.norm(q[:, None] - c[None], axis=2)
                np.testing.assert_allclose(dist[np.arange(len(q)), own - cs[b]], dist.min(axis=1), rtol=1e-12)


def test_small_queries_start_no_thread(spheres, monkeypatch):
    """scipy starts a Python thread per worker and query; on a few hundred points that costs more than the query."""
    started = []
    real_start = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda self: started.append(self) or real_start(self))
    small = spheres[0][:300]
    radius_neighbors(small, small, 1.25, 12)
    nearest_neighbor(small, small[::4])
    assert started == []
