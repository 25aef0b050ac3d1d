"""Procedural rooms: all 13 S3DIS classes, plausible geometry, scanner occlusion and noise, determinism."""
from __future__ import annotations

import numpy as np
import pytest

from pcseg.data.classmaps import S3DIS_NAMES
from pcseg.data.synthetic_rooms import _visible, generate_room

CLS = {n: i for i, n in enumerate(S3DIS_NAMES)}


@pytest.fixture(scope="module")
def rooms():
    return [generate_room(np.random.default_rng(seed), density=300.0) for seed in range(3)]


def test_every_room_has_all_13_classes_with_right_types(rooms):
    for xyz, rgb, lab in rooms:
        assert xyz.dtype == np.float64 and xyz.shape[1] == 3
        assert rgb.dtype == np.uint8 and rgb.shape == xyz.shape
        assert lab.dtype == np.int64 and len(lab) == len(xyz)
        assert set(np.unique(lab)) == set(range(13))


def test_layout_is_plausible(rooms):
    for xyz, rgb, lab in rooms:
        z = xyz[:, 2]
        top = np.percentile(z[lab == CLS["ceiling"]], 50)
        assert abs(np.median(z[lab == CLS["floor"]])) < 0.01
        assert 2.6 < top < 3.4
        # beams hang under the ceiling, tables and chairs stand on the floor below it
        assert np.median(z[lab == CLS["beam"]]) > top - 0.6
        assert np.percentile(z[lab == CLS["table"]], 95) < 0.85
        assert np.percentile(z[lab == CLS["chair"]], 95) < 1.05
        col = z[lab == CLS["column"]]  # floor to ceiling (its top may hide behind a beam)
        assert np.percentile(col, 1) < 0.3 and np.percentile(col, 99) > top - 0.7
        # doors reach the floor, windows do not
        assert np.percentile(z[lab == CLS["door"]], 1) < 0.1
        assert np.percentile(z[lab == CLS["window"]], 1) > 0.6
        # walls, doors, windows and boards lie on the room's boundary (within a few cm)
        lo, hi = xyz[lab == CLS["floor"]].min(axis=0), xyz[lab == CLS["floor"]].max(axis=0)
        for name in ("wall", "door", "window", "board"):
            p = xyz[lab == CLS[name]][:, :2]
            d = np.minimum.reduce([p[:, 0] - lo[0], hi[0] - p[:, 0], p[:, 1] - lo[1], hi[1] - p[:, 1]])
            assert np.percentile(np.abs(d), 95) < 0.12, name


def test_colours_differ_between_classes_and_vary_within(rooms):
    xyz, rgb, lab = rooms[0]
    floor = rgb[lab == CLS["floor"]].astype(float)
    assert floor.std(axis=0).min() > 2.0  # per-point variation
    means = np.array([rgb[lab == c].mean(axis=0) for c in range(13)])
    assert np.ptp(means, axis=0).max() > 50  # classes do not all share one colour


def test_scanner_noise_on_the_floor():
    xyz, _, lab = generate_room(np.random.default_rng(5), density=200.0, noise=0.01)
    assert np.std(xyz[lab == CLS["floor"], 2]) == pytest.approx(0.01, rel=0.15)


def test_deterministic_for_a_seed():
    a = generate_room(np.random.default_rng(11), density=150.0)
    b = generate_room(np.random.default_rng(11), density=150.0)
    c = generate_room(np.random.default_rng(12), density=150.0)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert len(a[0]) != len(c[0]) or not np.array_equal(a[0], c[0])


def _visible_slow(p, s, boxes, eps):
    """Per point, per box: Liang-Barsky clipping of the segment s -> p, stopped eps before p."""
    out = []
    for q in p:
        d = q - s
        t_end = 1.0 - eps / max(np.linalg.norm(d), eps)
        hidden = False
        for lo, hi, _ in boxes:
            t0, t1 = 0.0, t_end
            for k in range(3):
                if d[k] == 0.0:
                    if not lo[k] <= s[k] <= hi[k]:
                        t0, t1 = 1.0, 0.0
                    continue
                a, b = (lo[k] - s[k]) / d[k], (hi[k] - s[k]) / d[k]
                t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
            hidden |= t0 <= t1
        out.append(not hidden)
    return np.array(out)


def test_occlusion_matches_a_direct_segment_box_test():
    rng = np.random.default_rng(0)
    boxes = [(np.array([1.0, 1.0, 0.0]), np.array([2.0, 1.5, 0.8]), 0),
             (np.array([3.0, 0.0, 0.0]), np.array([3.5, 4.0, 2.0]), 1)]
    pts = rng.uniform([0, 0, 0], [5, 4, 3], (400, 3))
    pts[:50] = np.array([1.0, 1.2, 0.4]) + rng.uniform(0, 1, (50, 3)) * [0, 0.3, 0.4]  # on the box face x = 1
    pts[50:60, 2] = 0.4  # rays parallel to the floor
    scanner = np.array([0.2, 1.3, 0.4])
    fast = _visible(pts, scanner, boxes, eps=0.02)
    np.testing.assert_array_equal(fast, _visible_slow(pts, scanner, boxes, 0.02))
    assert fast[:50].all()  # the face turned to the scanner is seen
    behind = (pts[:, 0] > 3.6) & (pts[:, 2] < 1.5) & (pts[:, 1] > 0.5) & (pts[:, 1] < 3.5)
    assert behind.any() and not fast[behind].any()  # the wall of box 1 hides what lies behind it
