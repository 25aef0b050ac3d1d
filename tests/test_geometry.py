"""Grid subsampling, radius neighbours and sphere tiling against direct, slow implementations."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcseg.geometry import (covering_centers, grid_subsample, majority_vote, nearest_neighbor, points_in_spheres,
                            radius_neighbors, random_centers, subsample_cloud)
from pcseg.io import read


def slow_grid_subsample(xyz, dl, feats, labels):
    """The paper's definition, point by point: cells of size dl, barycentre, mean feature, majority label."""
    origin = xyz.min(axis=0)
    cells = defaultdict(list)
    for i, p in enumerate(xyz):
        cells[tuple(np.floor((p - origin) / dl).astype(int))].append(i)
    out = {}
    for key, idx in cells.items():
        counts = Counter(labels[idx].tolist())
        best = max(counts.values())
        out[key] = (xyz[idx].mean(axis=0), feats[idx].mean(axis=0), min(l for l, c in counts.items() if c == best), sorted(idx))
    return out


@pytest.fixture(scope="module")
def real_tile(als_files):
    path = next(p for p in als_files if p.name.startswith("test_data_77060_627760"))
    return read(str(path))


def test_grid_subsample_matches_direct_implementation_on_real_tile(real_tile):
    sel = np.arange(0, len(real_tile), 6)[:8000]  # a few thousand points keep the slow loop quick
    xyz = real_tile.xyz[sel]
    feats = real_tile.fields["intensity"][sel].astype(np.float64)[:, None]
    labels = real_tile.fields["classification"][sel]
    fast = grid_subsample(xyz, 0.5, feats, labels)
    slow = slow_grid_subsample(xyz, 0.5, feats, labels)
    assert len(fast.points) == len(slow)
    origin = xyz.min(axis=0)
    for j in range(len(fast.points)):
        members = np.flatnonzero(fast.inverse == j)
        key = tuple(np.floor((xyz[members[0]] - origin) / 0.5).astype(int))
        p, f, l, idx = slow[key]
        assert members.tolist() == idx
        assert np.allclose(fast.points[j], p, rtol=0, atol=1e-9)  # exact in float64 on centred coordinates
        assert np.allclose(fast.features[j], f)
        assert fast.labels[j] == l
    assert fast.counts.sum() == len(xyz)


def test_grid_subsample_one_point_per_cell_and_inverse(real_tile):
    sub = grid_subsample(real_tile.xyz, 1.0)
    cells = np.floor((sub.points - real_tile.xyz.min(axis=0)) / 1.0).astype(np.int64)
    assert len(np.unique(cells, axis=0)) == len(cells)  # barycentres stay inside their cells
    # every point's barycentre is within a cell diagonal
    assert np.linalg.norm(real_tile.xyz - sub.points[sub.inverse], axis=1).max() <= np.sqrt(3) + 1e-9


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=60), st.integers(1, 5))
def test_majority_vote_property(labels, groups):
    labels = np.array(labels)
    inverse = np.arange(len(labels)) % groups
    n = min(groups, len(labels))
    got = majority_vote(inverse, labels, n)
    for g in range(n):
        c = Counter(labels[inverse == g].tolist())
        best = max(c.values())
        assert got[g] == min(k for k, v in c.items() if v == best)


def test_majority_vote_large_label_values():
    labels = np.array([70000, 70000, 5, 5, 5, 2**40], dtype=np.int64)
    assert majority_vote(np.array([0, 0, 0, 1, 1, 1]), labels, 2).tolist() == [70000, 5]


def brute_neighbors(q, s, r):
    d = np.linalg.norm(q[:, None] - s[None], axis=2)
    return [np.flatnonzero(row <= r)[np.argsort(row[row <= r], kind="stable")] for row in d]


def test_radius_neighbors_matches_brute_force_with_cap_and_shadow(real_tile):
    pts = real_tile.xyz[:3000] - real_tile.xyz[:3000].mean(axis=0)
    q = pts[::7]
    got = radius_neighbors(q, pts, 1.5, max_neighbors=12)
    expected = brute_neighbors(q, pts, 1.5)
    assert got.shape == (len(q), 12)
    for qi, (row, exp) in enumerate(zip(got, expected)):
        valid = row[row < len(pts)]
        assert len(valid) == min(12, len(exp))
        # sorted by distance, and the kept ones are the nearest: same distances as the brute-force list
        d_got = np.linalg.norm(pts[valid] - q[qi], axis=1)
        d_exp = np.linalg.norm(pts[exp[: len(valid)]] - q[qi], axis=1)
        assert np.all(np.diff(d_got) >= 0) and np.allclose(d_got, d_exp)
        assert np.all(row[len(valid):] == len(pts))  # shadow index after real neighbours


def test_radius_neighbors_keeps_nearest():
    rng = np.random.default_rng(0)
    s = rng.random((500, 3))
    q = rng.random((40, 3))
    got = radius_neighbors(q, s, 0.3, max_neighbors=5)
    for i, row in enumerate(got):
        d = np.linalg.norm(s - q[i], axis=1)
        inside = np.sort(d[d <= 0.3])[:5]
        mine = np.sort(d[row[row < len(s)]])
        assert np.allclose(mine, inside)


def test_radius_neighbors_uncapped_width_is_largest_neighbourhood():
    rng = np.random.default_rng(1)
    s = rng.random((300, 3))
    got = radius_neighbors(s, s, 0.2)
    sizes = [len(x) for x in brute_neighbors(s, s, 0.2)]
    assert got.shape[1] == max(sizes)
    assert ((got < len(s)).sum(axis=1) == sizes).all()


def test_stacked_batches_never_cross_clouds():
    rng = np.random.default_rng(2)
    a, b = rng.random((200, 3)), rng.random((150, 3))  # overlapping in space on purpose
    pts = np.concatenate([a, b])
    lengths = np.array([200, 150])
    nb = radius_neighbors(pts, pts, 0.3, 20, lengths, lengths)
    valid = nb < len(pts)
    owner = np.repeat([0, 1], lengths)
    assert (owner[nb[valid]] == np.repeat(owner, valid.sum(axis=1))).all()
    nn = nearest_neighbor(pts, pts[::3], lengths, np.array([len(range(0, 200, 3)), len(range(200, 350, 3))]))
    assert (owner[::3][nn] == owner).all()


def test_covering_spheres_cover_every_point(real_tile):
    for radius in (2.0, 5.0):
        centers = covering_centers(real_tile.xyz, radius, coverage=0.7)
        from scipy.spatial import cKDTree

        d, _ = cKDTree(centers).query(real_tile.xyz)
        assert d.max() <= 0.7 * radius + 1e-9
        members = points_in_spheres(real_tile.xyz, centers, radius)
        assert len(np.unique(np.concatenate(members))) == len(real_tile)


def test_random_centers_balance_rare_classes(real_tile):
    labels = real_tile.fields["classification"]
    rng = np.random.default_rng(0)
    centres = random_centers(real_tile.xyz, 4000, rng, labels, balance_classes=True)
    idx = np.array([np.flatnonzero((real_tile.xyz == c).all(axis=1))[0] for c in centres[:400]])
    picked = Counter(labels[idx].tolist())
    classes = np.unique(labels)
    # roughly uniform over classes (each class ~ 1/len(classes) of the picks) although ground dominates the tile
    assert min(picked.get(int(c), 0) for c in classes) > 400 / len(classes) * 0.4


def test_subsample_cloud_keeps_types_and_majority(real_tile):
    sub, inverse = subsample_cloud(real_tile, 2.0)
    assert sub.fields.keys() == real_tile.fields.keys()
    for k in sub.fields:
        assert sub.fields[k].dtype == real_tile.fields[k].dtype
    j = np.bincount(inverse).argmax()
    members = inverse == j
    c = Counter(real_tile.fields["classification"][members].tolist())
    assert sub.fields["classification"][j] == max(c, key=lambda k: (c[k], -k))
    assert abs(int(sub.fields["intensity"][j]) - real_tile.fields["intensity"][members].mean()) <= 0.5


def test_column_covering_reaches_every_real_point(shared_data):
    """Every point of real airborne tiles (a dense 50 m tile and a sparse, hilly 1 km^2 one) lies within the
    reach of a column centre, and the columns need fewer centres than the cubic lattice."""
    import laspy
    from scipy.spatial import cKDTree

    from pcseg.geometry import covering_centers
    from pcseg.geometry.tiling import column_covering_centers

    for name in ("test_data_77060_627760_LA93_IGN69.laz", "test_semis_2022_0897_6577_LA93_IGN69_decimation.laz"):
        path = shared_data / "als" / name
        if not path.exists():
            pytest.skip("airborne tiles not present")
        las = laspy.read(path)
        xyz = np.stack([las.x, las.y, las.z], axis=1)
        for reach in (5.0, 17.5):
            centers = column_covering_centers(xyz, reach)
            d, _ = cKDTree(centers).query(xyz)
            assert d.max() <= reach + 1e-9
            assert len(centers) <= len(covering_centers(xyz, reach / 0.7, 0.7))


def test_quadtree_tiles_own_every_real_point_once(shared_data):
    """Square inference tiles on real airborne tiles (dense 50 m, sparse 1 km^2): every point is owned by exactly
    the one square that holds it (checked square by square), squares are disjoint and at least ``min_side`` wide,
    and a tile that could still split holds no more than the budget (margins included, counted directly)."""
    import laspy

    from pcseg.geometry.tiling import quadtree_tiles

    for name, budget in (("test_data_77060_627760_LA93_IGN69.laz", 20_000),
                         ("test_semis_2022_0897_6577_LA93_IGN69_decimation.laz", 60_000)):
        path = shared_data / "als" / name
        if not path.exists():
            pytest.skip("airborne tiles not present")
        las = laspy.read(path)
        xy = np.stack([las.x, las.y], axis=1)
        lower, side, owner = quadtree_tiles(xy, 25.0, 7.5, budget)
        assert (side >= 25.0).all() and (owner >= 0).all()
        for t in range(len(side)):                      # loop over squares: the direct definition
            inside = ((xy >= lower[t]) & (xy < lower[t] + side[t])).all(axis=1)
            np.testing.assert_array_equal(inside, owner == t)
            tile = ((xy >= lower[t] - 7.5) & (xy <= lower[t] + side[t] + 7.5)).all(axis=1).sum()
            if side[t] >= 50.0:                         # could have split: its estimate was within the budget
                assert tile <= 1.3 * budget, (name, t, tile)
        assert len(side) > 1


def test_vote_logits_returns_each_points_own_output():
    """With a stand-in network that echoes its input features, every point gets back exactly its own features:
    each tile's outputs go to the points it owns, once per vote, whatever the rotation."""
    import torch

    from pcseg.data import PyramidSpec
    from pcseg.engine.infer import vote_logits

    class Echo(torch.nn.Module):
        def forward(self, batch):
            return batch.features.double()

    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.uniform(0, 200, (3000, 2)), rng.uniform(0, 5, (3000, 1))], axis=1)
    pts[:1500, :2] *= 0.1                               # a dense corner and a sparse rest
    feats = rng.normal(size=(3000, 3)).astype(np.float32)
    spec = PyramidSpec(dl0=1.0, radii=[2.5, 5.0], neighbor_limits=[8, 8])
    for votes in (1, 3):
        logits, regions, passes = vote_logits(Echo(), spec, pts, feats, radius=10.0, num_classes=3, votes=votes,
                                              batch_points=800)
        np.testing.assert_allclose(logits, feats, rtol=1e-6)
        assert regions > 1 and 1.0 < passes < 3.0


def test_vote_logits_density_cap_feeds_the_kept_points_and_gives_the_rest_their_nearest():
    """A cloud denser than the cap: the network sees about cap points/m^2 (a fixed draw), and every point gets
    the logits of its nearest kept point (checked against a brute-force nearest neighbour); a sparser cloud is
    untouched."""
    import torch

    from pcseg.data import PyramidSpec
    from pcseg.engine.infer import vote_logits
    from pcseg.geometry import thin_to_density, xy_density

    class Echo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = 0

        def forward(self, batch):
            self.seen += len(batch.features)
            return batch.features.double()

    rng = np.random.default_rng(1)
    pts = np.column_stack([rng.uniform(0, 25, (3000, 2)), rng.uniform(0, 2, 3000)])   # 4.8 points/m^2
    feats = rng.normal(size=(3000, 2)).astype(np.float32)
    spec = PyramidSpec(dl0=1.0, radii=[2.5, 5.0], neighbor_limits=[8, 8])
    net = Echo()
    logits, _, passes = vote_logits(net, spec, pts, feats, radius=10.0, num_classes=2, density_cap=1.0)
    keep = thin_to_density(pts, 1.0, np.random.default_rng(0))
    assert abs(len(keep) / len(pts) - 1.0 / xy_density(pts)) < 0.01
    assert len(keep) <= net.seen < 1.7 * len(keep)
    d2 = ((pts[:, None, :] - pts[keep][None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(logits, feats[keep][d2.argmin(axis=1)], rtol=1e-6)
    assert passes < 0.4
    again = vote_logits(Echo(), spec, pts, feats, radius=10.0, num_classes=2, density_cap=1.0)[0]
    np.testing.assert_array_equal(again, logits)
    untouched = vote_logits(Echo(), spec, pts, feats, radius=10.0, num_classes=2, density_cap=50.0)[0]
    np.testing.assert_allclose(untouched, feats, rtol=1e-6)
