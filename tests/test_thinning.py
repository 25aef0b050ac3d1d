"""Density estimate, random and pulse thinning to a target density, edge-crop placement
(pcseg.geometry.cloud_ops, pcseg.geometry.tiling)."""
from __future__ import annotations

import numpy as np
import pytest

from pcseg.geometry import edge_crop_centres, pulse_ids, square_crop, thin_to_density, xy_density

TARGETS = (10.0, 3.0, 1.0, 0.3, 0.1)


def uniform_cloud(side: float, density: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(side * side * density)
    return np.c_[rng.uniform(0, side, (n, 2)), rng.uniform(0, 20, n)] + [7e5, 6.6e6, 100.0]


def pulsed_cloud(side: float, pulse_density: float, seed: int = 0):
    """Pulses at uniform x, y with 1 to 4 returns each (returns of one pulse within 10 cm in x, y); fields as
    a LAS file holds them: shared gps_time and point_source_id, number_of_returns."""
    rng = np.random.default_rng(seed)
    m = int(side * side * pulse_density)
    returns = rng.integers(1, 5, m)
    pulse = np.repeat(np.arange(m), returns)
    xy = rng.uniform(0, side, (m, 2))[pulse] + rng.normal(0, 0.05, (len(pulse), 2))
    xyz = np.c_[xy, rng.uniform(0, 20, len(pulse))]
    fields = {"gps_time": 3e8 + pulse * 1e-5, "point_source_id": np.full(len(pulse), 7, np.uint16),
              "number_of_returns": returns[pulse].astype(np.uint8)}
    return xyz, fields, pulse


def test_density_of_uniform_clouds_dense_and_sparse():
    assert xy_density(uniform_cloud(100, 20)) == pytest.approx(20, rel=0.03)
    # 0.1 point/m2: 2 m cells would hold 0.4 points each; the cell grows until the count means something
    assert xy_density(uniform_cloud(1000, 0.1)) == pytest.approx(0.1, rel=0.05)


def test_density_leaves_out_empty_areas():
    a, b = uniform_cloud(50, 20, seed=1), uniform_cloud(50, 20, seed=2) + [150, 0, 0]
    assert xy_density(np.r_[a, b]) == pytest.approx(20, rel=0.05)  # two 50 m squares 100 m apart, not 200 x 50


@pytest.mark.parametrize("target", TARGETS)
def test_random_thinning_reaches_the_target_density(target):
    xyz = uniform_cloud(100, 20)
    kept = thin_to_density(xyz, target, np.random.default_rng(0))
    assert len(kept) / 100**2 == pytest.approx(target, rel=0.01)
    assert xy_density(xyz[kept]) == pytest.approx(target, rel=0.05)
    assert np.all(np.diff(kept) > 0) and kept.dtype == np.int64


@pytest.mark.parametrize("target", TARGETS)
def test_pulse_thinning_keeps_or_drops_whole_pulses(target):
    xyz, fields, pulse = pulsed_cloud(100, 8)
    ids = pulse_ids(fields)
    assert ids is not None and len(np.unique(ids)) == pulse.max() + 1
    kept = thin_to_density(xyz, target, np.random.default_rng(0), pulse_ids=ids)
    full, part = np.bincount(pulse, minlength=pulse.max() + 1), np.bincount(pulse[kept], minlength=pulse.max() + 1)
    assert np.all((part == 0) | (part == full))  # every pulse: all of its returns or none
    assert len(kept) / 100**2 == pytest.approx(target, rel=0.05)


def test_thinning_is_deterministic_for_a_seed():
    xyz, fields, _ = pulsed_cloud(60, 5)
    ids = pulse_ids(fields)
    for p in (None, ids):
        a = thin_to_density(xyz, 1.0, np.random.default_rng(42), pulse_ids=p)
        b = thin_to_density(xyz, 1.0, np.random.default_rng(42), pulse_ids=p)
        c = thin_to_density(xyz, 1.0, np.random.default_rng(43), pulse_ids=p)
        assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_a_target_at_or_above_the_density_keeps_everything():
    xyz, fields, _ = pulsed_cloud(50, 2)
    density = xy_density(xyz)
    for target in (density, 2 * density, 1e6):
        for p in (None, pulse_ids(fields)):
            assert np.array_equal(thin_to_density(xyz, target, np.random.default_rng(0), pulse_ids=p),
                                  np.arange(len(xyz)))
    with pytest.raises(ValueError):
        thin_to_density(xyz, 0.0, np.random.default_rng(0))


def test_pulse_ids_need_per_pulse_time_stamps():
    xyz, fields, pulse = pulsed_cloud(30, 5)
    assert np.array_equal(pulse_ids(fields), pulse)  # times increase with the pulse: ids in pulse order
    assert pulse_ids({k: v for k, v in fields.items() if k != "gps_time"}) is None
    assert pulse_ids({**fields, "gps_time": np.zeros(len(pulse))}) is None
    # times rounded to the millisecond: a hundred pulses per stamp, more points than returns per group
    assert pulse_ids({**fields, "gps_time": np.round(fields["gps_time"], 3)}) is None
    # two flight lines with the same times are different pulses
    two = {**fields, "point_source_id": (pulse % 2).astype(np.uint16), "gps_time": 3e8 + (pulse // 2) * 1e-5}
    assert len(np.unique(pulse_ids(two))) == pulse.max() + 1


def test_edge_crop_borders_pass_through_their_anchor():
    xy = np.random.default_rng(0).uniform(0, 100, (5000, 2)) + [7e5, 6.6e6]
    anchor = np.array([[7e5 + 20.0, 6.6e6 + 70.0]])
    centres = edge_crop_centres(xy, anchor, 30.0, 50, np.random.default_rng(1))
    offset = np.abs(centres - anchor)
    assert np.allclose(offset.max(axis=1), 15.0)  # the anchor lies on a side of every square
    on_x = np.isclose(offset[:, 0], 15.0)
    assert np.all(centres[on_x, 0] > anchor[0, 0]) and np.all(centres[~on_x, 1] < anchor[0, 1])  # towards the middle
    assert 0 < on_x.sum() < 50
    assert np.array_equal(centres, edge_crop_centres(xy, anchor, 30.0, 50, np.random.default_rng(1)))
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    other = np.where(on_x, 1, 0)
    assert np.all(np.abs(centres[np.arange(50), other] - (lo + hi)[other] / 2) <= (hi - lo)[other] / 2 - 15.0)
    # a square wider than the cloud covers all of it along the side through the anchor
    wide = edge_crop_centres(xy, anchor, 130.0, 20, np.random.default_rng(2))
    wide_other = np.where(np.isclose(np.abs(wide - anchor)[:, 0], 65.0), 1, 0)
    assert np.allclose(wide[np.arange(20), wide_other], ((lo + hi) / 2)[wide_other])
    inside = square_crop(xy, centres[0], 30.0)
    assert np.all(np.abs(xy[inside] - centres[0]).max(axis=1) <= 15.0)
    assert len(inside) + np.sum(np.abs(xy - centres[0]).max(axis=1) > 15.0) == len(xy)


def test_real_tile_density_and_pulse_thinning(shared_data):
    from pcseg.io import read

    path = shared_data / "als" / "ahn3_amsterdam_2386_9702.laz"
    if not path.exists():
        pytest.skip(f"{path.name} is not in ../shared/data/als")
    cloud = read(str(path))
    density = xy_density(cloud.xyz)
    assert 12 < density < 18  # AHN3: 43,536 points on 52 x 52 m
    ids = pulse_ids(cloud.fields)
    assert ids is not None
    kept = thin_to_density(cloud.xyz, 1.0, np.random.default_rng(0), pulse_ids=ids)
    full, part = np.bincount(ids), np.bincount(ids[kept], minlength=ids.max() + 1)
    assert np.all((part == 0) | (part == full))
    assert len(kept) / len(cloud) == pytest.approx(1.0 / density, rel=0.1)
    assert xy_density(cloud.xyz[kept]) == pytest.approx(1.0, rel=0.15)
    sample = shared_data / "als" / "sample_c.las"  # PDAL sample: time stamps shared by unrelated points
    if sample.exists():
        assert pulse_ids(read(str(sample)).fields) is None
