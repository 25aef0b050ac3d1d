"""Airborne segmentation from geometry alone: ground surfaces, the ``hag`` channel, partial labels, xyz-only
files and the vegetation height split, each against a direct implementation of its definition."""
from __future__ import annotations

import json
import os

import laspy
import numpy as np
import pytest
import torch

from pcseg.cli.main import main
from pcseg.data.classmaps import IGNORE, builtin_class_map, partial_label, partial_masks
from pcseg.data.datasets import resolve_data
from pcseg.data.features import hag_surfaces, make_features
from pcseg.errors import UsageError
from pcseg.engine.vegetation import (TERRAIN_SLOPE_FACTOR, TERRAIN_TOLERANCE, default_split, refine_buildings,
                                     refine_ground, refine_low_vegetation)
from pcseg.geometry.ground import (PLANE_SLOPE_RIDGE, local_plane_height, opening_surface, points_surface, terrain_surface,
                                  vegetation_codes)
from pcseg.nn.losses import partial_cross_entropy

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "ign_lidarhd_77060_627760.laz")


def read_xyz(path):
    las = laspy.read(path)
    return np.stack([las.x, las.y, las.z], axis=1), np.asarray(las.classification)


# --- ground surfaces ----------------------------------------------------------------------------------------

def test_opening_surface_follows_a_slope_and_removes_a_house():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(40_000, 2))
    ground = 0.3 * xy[:, 0] + 0.1 * xy[:, 1]  # a 17-degree slope: 36 m of relief over the tile
    house = (np.abs(xy[:, 0] - 50) < 6) & (np.abs(xy[:, 1] - 50) < 6)
    z = ground + np.where(house, 8.0, 0.0)
    xyz = np.column_stack([xy, z])
    xyz = np.vstack([xyz, [[20.0, 20.0, -50.0]]])  # one noise return far below the ground
    h = opening_surface(xyz, cell=1.0, window=20.0).height(xyz)
    assert np.percentile(np.abs(h[:-1][~house]), 95) < 0.5  # ground: about 0 everywhere on the slope
    assert np.median(h[:-1][house]) == pytest.approx(8.0, abs=0.7)  # the roof stands 8 m above it
    assert h[-1] < -40  # the outlier stays below the surface instead of pulling it down


def direct_points_surface(ground, cell, lo, hi, queries):
    """Mean height per cell, empty cells from the nearest non-empty cell centre, bilinear between centres:
    written point by point. Also says, per query, whether no cell it reads had several nearest cells (the
    definition leaves such ties open)."""
    nx, ny = int(np.floor((hi[0] - lo[0]) / cell)) + 1, int(np.floor((hi[1] - lo[1]) / cell)) + 1
    sums, counts = {}, {}
    for x, y, z in ground:
        key = (min(int((x - lo[0]) // cell), nx - 1), min(int((y - lo[1]) // cell), ny - 1))
        sums[key] = sums.get(key, 0.0) + z
        counts[key] = counts.get(key, 0) + 1
    full = list(sums)
    grid, tied = np.zeros((nx, ny)), np.zeros((nx, ny), dtype=bool)
    for i in range(nx):
        for j in range(ny):
            if (i, j) in sums:
                grid[i, j] = sums[(i, j)] / counts[(i, j)]
            else:
                d = [(k[0] - i) ** 2 + (k[1] - j) ** 2 for k in full]
                near = full[int(np.argmin(d))]
                tied[i, j] = d.count(min(d)) > 1
                grid[i, j] = sums[near] / counts[near]
    out, clear = [], []
    for x, y, z in queries:
        u = min(max((x - lo[0]) / cell - 0.5, 0.0), nx - 1.0)
        v = min(max((y - lo[1]) / cell - 0.5, 0.0), ny - 1.0)
        i0, j0 = min(int(u), max(nx - 2, 0)), min(int(v), max(ny - 2, 0))
        i1, j1 = min(i0 + 1, nx - 1), min(j0 + 1, ny - 1)
        fu, fv = u - i0, v - j0
        s = ((1 - fu) * (1 - fv) * grid[i0, j0] + fu * (1 - fv) * grid[i1, j0] + (1 - fu) * fv * grid[i0, j1]
             + fu * fv * grid[i1, j1])
        out.append(z - s)
        clear.append(not (tied[i0, j0] or tied[i1, j0] or tied[i0, j1] or tied[i1, j1]))
    return np.array(out), np.array(clear)


def test_points_surface_and_vegetation_split_match_direct_implementation():
    xyz, cls = read_xyz(EXAMPLE)
    keep = (xyz[:, 0] < xyz[:, 0].min() + 12) & (xyz[:, 1] < xyz[:, 1].min() + 12)  # a 12 m corner, real points
    xyz, cls = xyz[keep], cls[keep]
    lo, hi = xyz[:, :2].min(axis=0), xyz[:, :2].max(axis=0)
    ground = xyz[cls == 2]
    assert len(ground) > 50 and (cls == 5).any()
    got = points_surface(ground, 1.0, lo, hi).height(xyz)
    expected, clear = direct_points_surface(ground, 1.0, lo, hi, xyz)
    assert clear.mean() > 0.8
    np.testing.assert_allclose(got[clear], expected[clear], atol=1e-9)
    codes = vegetation_codes(got, (0.5, 1.5))
    direct = [3 if h < 0.5 else 4 if h < 1.5 else 5 for h in got]
    assert codes.tolist() == direct


def test_local_plane_height_matches_direct_least_squares():
    xyz, cls = read_xyz(EXAMPLE)
    keep = (xyz[:, 0] < xyz[:, 0].min() + 15) & (xyz[:, 1] < xyz[:, 1].min() + 15) & (cls == 2)
    pts = xyz[keep]
    pts = np.vstack([pts, pts[:1]])  # a duplicate: for each other, one more point at distance 0
    k = 8
    got = local_plane_height(pts, k)
    np.testing.assert_allclose(local_plane_height(pts, k, rows=7), got, atol=1e-9)  # row chunks change nothing
    lam = np.sqrt(PLANE_SLOPE_RIDGE * k)
    checked = 0
    for i in range(len(pts)):
        d = np.hypot(*(pts[:, :2] - pts[i, :2]).T)
        d[i] = np.inf                                      # leave one out: never the point itself
        order = np.argsort(d, kind="stable")
        if d[order[k]] - d[order[k - 1]] < 1e-9:
            continue                                       # the k nearest are not unique
        nb = pts[order[:k]] - pts[i]
        # z = a + b x + c y in least squares, plus the ridge rows sqrt(lam) b = 0 and sqrt(lam) c = 0
        a = np.vstack([np.column_stack([np.ones(k), nb[:, :2]]), [[0, lam, 0], [0, 0, lam]]])
        coef = np.linalg.lstsq(a, np.concatenate([nb[:, 2], [0, 0]]), rcond=None)[0]
        assert got[i] == pytest.approx(-coef[0], abs=1e-7)
        checked += 1
    assert checked > 0.9 * len(pts) and np.isfinite(got).all()
    assert got[0] == pytest.approx(got[-1], abs=1e-9)      # the twins hold each other up equally
    assert np.isnan(local_plane_height(pts[:3])).all()     # too few points for a plane


def test_refine_ground_tests_each_ground_point_against_its_neighbours_plane():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 30, size=(3000, 2))
    z = 0.3 * xy[:, 0] - 0.2 * xy[:, 1] + rng.normal(0, 0.02, len(xy))  # a 20-degree slope, 2 cm noise
    xyz = np.column_stack([xy, z])
    labels = np.zeros(len(xy), np.int64)                   # all predicted ground ...
    labels[:50] = 2                                        # ... but 50 buildings
    xyz[50:60, 2] += 0.8                                   # grass tops called ground: 0.8 m above the slope
    xyz[60:70, 2] += 0.3                                   # 0.3 m: under the tolerance
    xyz[70:80, 2] -= 0.8                                   # pits stay ground
    out = refine_ground(xyz, labels, ground_id=0, vegetation_id=1, tolerance=0.5)
    assert (out[50:60] == 1).all() and (out[60:80] == 0).all()
    assert (out[:50] == 2).all() and (out[80:] == 0).all()  # other classes and the slope itself unchanged
    assert (labels == np.repeat([2, 0], [50, len(xy) - 50])).all()  # the input is not modified


def test_refine_buildings_gives_low_buildings_their_runner_up_class():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 80, size=(30_000, 2))
    z = 0.2 * xy[:, 0] + rng.normal(0, 0.02, len(xy))                    # an 11-degree slope
    house = (np.abs(xy[:, 0] - 25) < 5) & (np.abs(xy[:, 1] - 40) < 5)     # a 6 m house
    shed = (np.abs(xy[:, 0] - 55) < 4) & (np.abs(xy[:, 1] - 40) < 4)      # a 2.5 m shed
    deck = (np.abs(xy[:, 0] - 40) < 5) & (np.abs(xy[:, 1] - 15) < 5)      # a 1 m platform called building
    z = z + 6.0 * house + 2.5 * shed + 1.0 * deck
    xyz = np.column_stack([xy, z])
    labels = np.where(house | shed | deck, 2, 0)
    runner_up = np.full(len(xy), 5)
    out = refine_buildings(xyz, labels, runner_up, building_id=2, min_height=2.0)
    # direct: height above each label-free estimate (1 m cell minima opened with 10 m and 40 m windows)
    height = np.max([opening_surface(xyz, 1.0, w).height(xyz) for w in (10.0, 40.0)], axis=0)
    expected = np.where((labels == 2) & (height < 2.0), runner_up, labels)
    assert np.array_equal(out, expected)
    assert (out[house] == 2).all() and (out[shed] == 2).mean() > 0.95 and (out[deck] == 5).all()
    assert (out[labels == 0] == 0).all() and (labels[deck] == 2).all()  # ground untouched, input unchanged
    # the estimates the hag channel computed for the network, handed over instead of recomputed: same labels
    assert np.array_equal(refine_buildings(xyz, labels, runner_up, 2, 2.0, hag_surfaces(xyz)), expected)


def crop_field(density, seed=3):
    """A 60 m field on a 10 % slope: soil returns between the rows, a crop canopy 0.3-0.45 m above the soil on
    x < 30 (every point of it called ground, as a network might), bare soil beyond. Returns xyz, labels
    (all 0 = ground), canopy mask."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 60, size=(rng.poisson(3600 * density), 2))
    soil = 0.1 * xy[:, 1] + rng.normal(0, 0.02, len(xy))
    canopy = (xy[:, 0] < 30) & (rng.random(len(xy)) < 0.6)            # 40 % of the pulses reach the soil
    z = soil + np.where(canopy, rng.uniform(0.3, 0.45, len(xy)), 0.0)
    return np.column_stack([xy, z]), np.zeros(len(xy), np.int64), canopy


def ref_low_vegetation(xyz, labels, terrain, tolerance, factor):
    """Direct: per predicted ground point, the terrain's slope at its cell from central differences (one-sided
    at the raster's edges), and its height above the bilinear terrain."""
    z, c = terrain.z, terrain.cell
    out = labels.copy()
    if c > 1.0:
        return out
    for k in np.flatnonzero(labels == 0):
        i = min(max(int(np.floor((xyz[k, 0] - terrain.origin[0]) / c)), 0), z.shape[0] - 1)
        j = min(max(int(np.floor((xyz[k, 1] - terrain.origin[1]) / c)), 0), z.shape[1] - 1)
        di = ((z[i + 1, j] - z[i - 1, j]) / (2 * c) if 0 < i < z.shape[0] - 1 else
              (z[1, j] - z[0, j]) / c if i == 0 else (z[-1, j] - z[-2, j]) / c)
        dj = ((z[i, j + 1] - z[i, j - 1]) / (2 * c) if 0 < j < z.shape[1] - 1 else
              (z[i, 1] - z[i, 0]) / c if j == 0 else (z[i, -1] - z[i, -2]) / c)
        if terrain.height(xyz[k:k + 1])[0] > tolerance + factor * np.hypot(di, dj) * c:
            out[k] = 1
    return out


def test_low_vegetation_test_reads_the_terrain_model_on_dense_surveys():
    xyz, labels, canopy = crop_field(4.0)
    terrain = terrain_surface(xyz)
    assert terrain.cell == 1.0
    out = refine_low_vegetation(xyz, labels, 0, 1, terrain, TERRAIN_TOLERANCE, TERRAIN_SLOPE_FACTOR)
    np.testing.assert_array_equal(out, ref_low_vegetation(xyz, labels, terrain, TERRAIN_TOLERANCE,
                                                          TERRAIN_SLOPE_FACTOR))
    assert (out[canopy] == 1).mean() > 0.6            # most of the canopy is vegetation (cells without soil: not)
    assert (out[~canopy] == 0).mean() > 0.97          # the soil and the bare half stay ground
    assert (labels == 0).all()                        # the input is not modified
    # the local-plane test does not see it: the canopy's own plane
    assert (refine_ground(xyz, labels, 0, 1, 0.5)[canopy] == 1).mean() < 0.05


def test_low_vegetation_test_is_off_where_terrain_cells_are_coarser_than_1_m():
    xyz, labels, canopy = crop_field(0.3)
    terrain = terrain_surface(xyz)
    assert terrain.cell > 1.0
    assert np.array_equal(refine_low_vegetation(xyz, labels, 0, 1, terrain), labels)


def test_terrain_models_get_the_low_vegetation_test_in_their_card():
    names = ["ground", "vegetation", "building"]
    assert "terrain_tolerance" not in default_split(names, ("one", "hag"))
    split = default_split(names, ("one", "terrain", "echo"))
    assert split["terrain_tolerance"] == TERRAIN_TOLERANCE and split["terrain_slope_factor"] == TERRAIN_SLOPE_FACTOR


# --- input features ------------------------------------------------------------------------------------------

def test_hag_channel_reads_geometry_only():
    xyz, cls = read_xyz(EXAMPLE)
    feats = make_features({}, xyz, ["one", "hag"])  # no field at all: x, y, z suffice
    assert feats.shape == (len(xyz), 3) and np.isfinite(feats).all()
    hag = feats[:, 1] * 10  # metres (10 m window)
    assert np.median(np.abs(hag[cls == 2])) < 0.3
    assert np.median(hag[cls == 6]) > 3 and np.median(hag[cls == 5]) > 2
    shifted = make_features({}, xyz + [0, 0, 1000.0], ["one", "hag"])
    np.testing.assert_allclose(shifted, feats, atol=1e-4)  # independent of the absolute height


# --- partial labels --------------------------------------------------------------------------------------------

def test_ground_only_files_give_partial_labels(shared_data):
    cmap = builtin_class_map("als-ground")
    labels = cmap.encode(np.array([2, 1, 7]))
    assert labels[0] == cmap.index("ground") and labels[2] == IGNORE
    allowed = partial_masks(labels, cmap.num_classes)
    assert allowed[1].tolist() == [n != "ground" for n in cmap.names]
    ahn3 = builtin_class_map("als-ahn3").encode(np.array([1, 26]))
    assert partial_masks(ahn3[:1], 6)[0].tolist() == [n in ("vegetation", "other") for n in cmap.names]
    assert ahn3[1] == cmap.index("bridge")
    src = resolve_data([f"als-ground:{shared_data / 'als_ground' / 'lidr_mixedconifer.laz'}"], ["one", "hag"],
                       class_map="als")
    cloud = src[0].load()
    assert (cloud.labels <= -2).sum() > 30_000 and (cloud.labels == 0).sum() > 5000
    with pytest.raises(UsageError):
        resolve_data([f"als-ground:{shared_data / 'als_ground' / 'lidr_mixedconifer.laz'}"], ["one"],
                     class_map="asprs")


def test_partial_cross_entropy_is_the_marginal_likelihood():
    torch.manual_seed(0)
    logits = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 3, IGNORE, partial_label([1, 2, 3, 4, 5]), partial_label([1, 5]), 5,
                           partial_label([2])])
    weight = torch.tensor([1.0, 2.0, 0.5, 1.0, 3.0, 1.0], dtype=torch.float64)
    loss = partial_cross_entropy(logits, labels, weight)
    p = torch.softmax(logits, dim=1)
    terms = [(-torch.log(p[0, 0]), weight[0]), (-torch.log(p[1, 3]), weight[3]), (-torch.log(p[3, 1:].sum()), 1.0),
             (-torch.log(p[4, 1] + p[4, 5]), 1.0), (-torch.log(p[5, 5]), weight[5]), (-torch.log(p[6, 2]), 1.0)]
    direct = sum(t * w for t, w in terms) / sum(w for _, w in terms)
    torch.testing.assert_close(loss, direct)
    # "not ground" constrains only p_ground: moving logit mass among the other classes changes nothing
    z = torch.randn(1, 6, dtype=torch.float64)
    other = z.clone()
    other[0, 1:] = torch.log(torch.softmax(z[0, 1:], 0).flip(0)) + torch.logsumexp(z[0, 1:], 0)
    not_ground = torch.tensor([partial_label([1, 2, 3, 4, 5])])
    torch.testing.assert_close(partial_cross_entropy(z, not_ground), partial_cross_entropy(other, not_ground))
    full = torch.tensor([0, 3, IGNORE])
    torch.testing.assert_close(partial_cross_entropy(logits[:3], full),
                               torch.nn.functional.cross_entropy(logits[:3], full, ignore_index=IGNORE))


# --- end to end: partial-label training, xyz-only files, vegetation split ---------------------------------

@pytest.fixture(scope="module")
def xyz_checkpoint(shared_data, tmp_path_factory):
    from pcseg.engine.train import Trainer, TrainConfig

    os.environ.setdefault("PCSEG_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    run = tmp_path_factory.mktemp("als-xyz-run")
    cfg = TrainConfig(data=[str(shared_data / "als" / "test_data_77050_627755_LA93_IGN69.laz"),
                            f"als-ground:{shared_data / 'als_ground' / 'lidr_mixedconifer.laz'}"],
                      model="salanet", model_options={"width": 8}, features=["one", "hag"], dl0=1.0,
                      sphere_radius=15.0, class_map="als", optimizer="adamw", lr=5e-3, max_steps=4,
                      spheres_per_batch=2, log_every=1, partial_share=0.5)
    Trainer(cfg, run).train()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    return str(run / "last.safetensors")


def test_xyz_only_las_is_segmented_with_vegetation_split(xyz_checkpoint, tmp_path, capsys):
    xyz, _ = read_xyz(EXAMPLE)
    src = laspy.read(EXAMPLE)
    bare = laspy.LasData(laspy.LasHeader(point_format=0, version="1.2"))  # x, y, z; intensity all zero
    bare.header.offsets, bare.header.scales = src.header.offsets, src.header.scales
    bare.x, bare.y, bare.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    bare.classification = np.asarray(src.classification)
    path = tmp_path / "bare.las"
    bare.write(path)
    out = tmp_path / "out.las"
    assert main(["segment", str(path), "--model", xyz_checkpoint, "-o", str(out), "--votes", "1",
                 "--as-classification", "--eval", "classification", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "metrics_asprs" in summary and "asprs_codes" in summary
    res = laspy.read(out)
    codes = np.asarray(res.classification).astype(np.int64)
    height = np.asarray(res["height_above_ground"])
    assert set(np.unique(codes)) <= {1, 2, 3, 4, 5, 6, 9, 17}
    veg = np.isin(codes, [3, 4, 5])
    expected = np.where(height[veg] < 0.5, 3, np.where(height[veg] < 1.5, 4, 5))
    assert np.array_equal(codes[veg], expected)
    # the thresholds are settable
    out2 = tmp_path / "out2.las"
    assert main(["segment", str(path), "--model", xyz_checkpoint, "-o", str(out2), "--votes", "1",
                 "--as-classification", "--vegetation-heights", "0,0", "--quiet"]) == 0
    res2 = laspy.read(out2)
    codes2 = np.asarray(res2.classification)
    veg2, height2 = np.isin(codes2, [3, 4, 5]), np.asarray(res2["height_above_ground"])
    assert veg2.sum() > 1000 and not (codes2 == 4).any()  # no medium band; low only below the ground surface
    assert np.array_equal(codes2[veg2], np.where(height2[veg2] < 0, 3, 5))
    assert main(["segment", str(path), "--model", xyz_checkpoint, "-o", str(tmp_path / "x.las"),
                 "--vegetation-heights", "2,1", "--quiet"]) == 2


def test_ground_tolerance_tests_predicted_ground_points(tmp_path, capsys):
    from pcseg.engine.segment import class_map_of
    from pcseg.models import zoo

    cmap = class_map_of(zoo.load("sala-als"))
    outs = {}
    for tol in ("off", "0.5", "0.1"):
        out = tmp_path / f"t{tol}.las"
        assert main(["segment", EXAMPLE, "--model", "sala-als", "-o", str(out), "--votes", "1",
                     "--ground-tolerance", tol, "--quiet"]) == 0
        outs[tol] = np.asarray(laspy.read(out)["class"]).astype(np.int64)
    xyz, _ = read_xyz(EXAMPLE)
    ground, vegetation = cmap.index("ground"), cmap.index("vegetation")
    for tol in ("0.5", "0.1"):
        expected = refine_ground(xyz, outs["off"], ground, vegetation, float(tol))
        assert np.array_equal(outs[tol], expected)
        changed = outs[tol] != outs["off"]
        assert (outs["off"][changed] == ground).all() and (outs[tol][changed] == vegetation).all()
    assert (outs["0.1"] != outs["off"]).sum() > (outs["0.5"] != outs["off"]).sum() > 0
    default = tmp_path / "default.las"
    assert main(["segment", EXAMPLE, "--model", "sala-als", "-o", str(default), "--votes", "1", "--quiet"]) == 0
    assert np.array_equal(np.asarray(laspy.read(default)["class"]), outs["0.5"])  # the card's 0.5 m
    tiled = tmp_path / "tiled.las"  # tile by tile (bounded memory): each tile tests its ground with its margin
    assert main(["segment", EXAMPLE, "--model", "sala-als", "-o", str(tiled), "--votes", "1", "--quiet",
                 "--ground-tolerance", "0.1", "--tile-points", "20000"]) == 0
    assert np.mean(np.asarray(laspy.read(tiled)["class"]) == outs["0.1"]) > 0.97
    capsys.readouterr()
    for bad in ("-1", "abc"):
        assert main(["segment", EXAMPLE, "--model", "sala-als", "-o", str(tmp_path / "x.las"),
                     "--ground-tolerance", bad]) == 2
        assert "--ground-tolerance" in capsys.readouterr().err


def test_building_min_height_takes_the_runner_up_of_low_buildings(tmp_path, capsys):
    from pcseg.engine.segment import class_map_of
    from pcseg.models import zoo

    names = class_map_of(zoo.load("sala-als")).names
    outs, proba = {}, None
    for value in ("off", "2"):
        out = tmp_path / f"b{value}.las"
        assert main(["segment", EXAMPLE, "--model", "sala-als", "-o", str(out), "--votes", "1", "--quiet",
                     "--building-min-height", value, "--ground-tolerance", "off", "--proba"]) == 0
        las = laspy.read(out)
        outs[value] = np.asarray(las["class"]).astype(np.int64)
        proba = np.stack([np.asarray(las[f"prob_{n}"]) for n in names], axis=1)
    xyz, _ = read_xyz(EXAMPLE)
    changed = outs["2"] != outs["off"]
    assert changed.sum() > 100 and (outs["off"][changed] == names.index("building")).all()
    ranked = np.argsort(-proba[changed], axis=1, kind="stable")
    assert np.array_equal(outs["2"][changed], ranked[:, 1])          # the second most likely class
    height = np.max([opening_surface(xyz, 1.0, w).height(xyz) for w in (10.0, 40.0)], axis=0)
    building = outs["off"] == names.index("building")
    assert np.array_equal(changed, building & (height < 2.0))
    default = tmp_path / "default.las"
    assert main(["segment", EXAMPLE, "--model", "sala-als", "-o", str(default), "--votes", "1", "--quiet",
                 "--ground-tolerance", "off"]) == 0
    assert np.array_equal(np.asarray(laspy.read(default)["class"]), outs["2"])  # the card's 2 m
    capsys.readouterr()
    for bad in ("-1", "two"):
        assert main(["segment", EXAMPLE, "--model", "sala-als", "-o", str(tmp_path / "x.las"),
                     "--building-min-height", bad]) == 2
        assert "--building-min-height" in capsys.readouterr().err


def test_card_holds_no_machine_path_and_the_train_command(xyz_checkpoint, shared_data):
    from pcseg.models.checkpoint import read_card

    card = read_card(xyz_checkpoint)
    text = json.dumps(card)
    assert str(shared_data.resolve()) not in text and os.getcwd() not in text
    command = card["training"]["command"]
    assert command.startswith("pcseg train -d ") and "als-ground:" in command and "max_steps=4" in command
    assert card["vegetation_split"]["thresholds"] == [0.5, 1.5]
    assert card["vegetation_split"]["ground_tolerance"] == 0.5
    assert card["building_test"]["min_height"] == 2.0


def test_quality_reads_validation_files_as_training_names_them():
    """`--val als-ground:FILE` (a class map before the file) works where cards measure quality, as FILE:FIELD:MAP
    does; the ground / not-ground file's "not ground" points are a set of classes and are left out."""
    import os

    from pcseg.engine.quality import measure_quality, parse_eval_spec
    from pcseg.models import zoo

    assert parse_eval_spec("als-ground:../d/autzen.las") == ("../d/autzen.las", "", "als-ground")
    assert parse_eval_spec("tile.laz:classification:als") == ("tile.laz", "classification", "als")
    assert parse_eval_spec("C:/tiles/a.laz")[0] == "C"          # not a class map: the old FILE:FIELD form
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "ign_lidarhd_77060_627760.laz")
    ck = zoo.load("sala-als")
    a = measure_quality(ck, [example], votes=1)
    b = measure_quality(ck, [f"als:{example}"], votes=1)
    assert a["pooled"] == b["pooled"]
    c = measure_quality(ck, [f"als-ground:{example}"], votes=1)   # read as ground / not ground
    assert set(k for k, v in c["pooled"]["iou"].items() if v is not None) <= {"ground", "vegetation", "building",
                                                                             "water", "bridge", "other"}
    assert c["per_file"]["ign_lidarhd_77060_627760.laz"]["points"] < a["per_file"]["ign_lidarhd_77060_627760.laz"]["points"]


def test_segmentation_hands_its_hag_estimates_to_the_building_test(xyz_checkpoint, shared_data):
    """segment_points keeps the hag channel's ground estimates (Segmentation.hag); refine_and_split with them
    gives the labels it gives when it recomputes them, on a real tile."""
    from pcseg.engine.infer import segment_points
    from pcseg.engine.segment import airborne_rules, refine_and_split
    from pcseg.io import read
    from pcseg.models.checkpoint import load_checkpoint

    ck = load_checkpoint(xyz_checkpoint)
    cloud = read(EXAMPLE)
    seg = segment_points(ck, cloud, votes=1)
    assert seg.hag is not None and len(seg.hag) == 2
    rules = airborne_rules(ck)
    reused = refine_and_split(ck, rules, cloud.xyz, seg.labels, seg.runner_up, seg.hag)
    fresh = refine_and_split(ck, rules, cloud.xyz, seg.labels, seg.runner_up)
    assert np.array_equal(reused[0], fresh[0]) and np.array_equal(reused[1], fresh[1])
