"""Oriented boxes: exact rotated IoU against hand-computed areas and an independent polygon clipper,
points-in-boxes against a direct loop, NMS on a hand-built case."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pcseg.geometry.boxes import (
    boxes_corners_3d, boxes_corners_bev, iou_3d, iou_bev, nms_bev, points_in_boxes, wrap_angle,
)


def box(x=0.0, y=0.0, z=0.0, dx=2.0, dy=2.0, dz=2.0, yaw=0.0):
    return np.array([[x, y, z, dx, dy, dz, yaw]], dtype=np.float64)


# --- slow, independent reference: Sutherland-Hodgman clipping of one polygon by another -------------------

def _clip(subject: list, clip: list) -> list:
    def inside(p, a, b):
        return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]) >= 0

    def crossing(p, q, a, b):
        # intersection of line pq with line ab
        x1, y1, x2, y2, x3, y3, x4, y4 = *p, *q, *a, *b
        den = (x1 - x2) * (y3 - y4) - (y1 - y2) * (x3 - x4)
        t = ((x1 - x3) * (y3 - y4) - (y1 - y3) * (x3 - x4)) / den
        return (x1 + t * (x2 - x1), y1 + t * (y2 - y1))

    out = subject
    for i in range(len(clip)):
        a, b = clip[i], clip[(i + 1) % len(clip)]
        inp, out = out, []
        for j in range(len(inp)):
            p, q = inp[j], inp[(j + 1) % len(inp)]
            if inside(q, a, b):
                if not inside(p, a, b):
                    out.append(crossing(p, q, a, b))
                out.append(q)
            elif inside(p, a, b):
                out.append(crossing(p, q, a, b))
        if not out:
            return []
    return out


def _area(poly: list) -> float:
    return 0.5 * abs(sum(p[0] * q[1] - q[0] * p[1] for p, q in zip(poly, poly[1:] + poly[:1])))


def _slow_iou(a: np.ndarray, b: np.ndarray, three_d: bool) -> float:
    pa = [tuple(c) for c in boxes_corners_bev(a[None])[0]]
    pb = [tuple(c) for c in boxes_corners_bev(b[None])[0]]
    inter = _area(_clip(pa, pb))
    sa, sb = a[3] * a[4], b[3] * b[4]
    if three_d:
        h = max(0.0, min(a[2] + a[5] / 2, b[2] + b[5] / 2) - max(a[2] - a[5] / 2, b[2] - b[5] / 2))
        inter, sa, sb = inter * h, sa * a[5], sb * b[5]
    return inter / (sa + sb - inter)


# --- IoU ------------------------------------------------------------------------------------------------------

def test_identical_boxes_have_iou_one():
    b = np.array([[1.0, -2.0, 0.5, 4.0, 1.8, 1.5, 0.3], [10.0, 3.0, -1.0, 0.8, 0.6, 1.7, -2.0]])
    np.testing.assert_allclose(np.diag(iou_bev(b, b)), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.diag(iou_3d(b, b)), 1.0, atol=1e-12)


def test_disjoint_boxes_have_iou_zero():
    a, b = box(), box(x=2.5, yaw=0.7)         # bounding circles overlap, rectangles do not
    assert iou_bev(a, b)[0, 0] == 0.0
    assert iou_bev(a, box(x=50.0))[0, 0] == 0.0
    assert iou_3d(a, box(z=3.0))[0, 0] == 0.0  # same footprint, stacked in z


def test_square_rotated_45_degrees():
    # A 2x2 square and the same square rotated by 45 deg overlap in a regular octagon of area 8 (sqrt 2 - 1);
    # union 8 - 8 (sqrt 2 - 1), so IoU = (sqrt 2 - 1) / (2 - sqrt 2) = 1 / sqrt 2.
    got = iou_bev(box(), box(yaw=math.pi / 4))[0, 0]
    assert got == pytest.approx(1 / math.sqrt(2), abs=1e-12)
    # a 4x2 rectangle and itself turned by 90 deg: a 2x2 square in common, union 12
    assert iou_bev(box(dx=4.0), box(dx=4.0, yaw=math.pi / 2))[0, 0] == pytest.approx(1 / 3, abs=1e-12)
    # the left vertex of a 45-deg square centred at x = sqrt 2 reaches x = 0: a triangle of base 2 (along x = 1)
    # and height 1 lies in the axis-aligned square: area 1, union 4 + 4 - 1
    tip = box(x=math.sqrt(2.0), yaw=math.pi / 4)
    assert iou_bev(box(), tip)[0, 0] == pytest.approx(1.0 / 7.0, abs=1e-12)


def test_partial_height_overlap():
    a, b = box(), box(z=1.0)               # same footprint, shifted by half the height
    assert iou_bev(a, b)[0, 0] == pytest.approx(1.0)
    assert iou_3d(a, b)[0, 0] == pytest.approx(1.0 / 3.0)  # 4 m^3 in common, union 12 m^3
    c = box(x=1.0, z=0.5)                  # half the footprint, 1.5 m of the 2 m height: 3 / (16 - 3)
    assert iou_3d(a, c)[0, 0] == pytest.approx(3.0 / 13.0)


def test_degenerate_configurations():
    rng = np.random.default_rng(3)
    a = np.concatenate([rng.uniform(-1, 1, (80, 3)), rng.uniform(0.5, 4, (80, 3)), rng.uniform(-3, 3, (80, 1))], 1)
    nested, touching, turned, nudged = a.copy(), a.copy(), a.copy(), a.copy()
    nested[:, 3] *= 0.5                                      # same centre, half the length: IoU 1/2
    touching[:, 0] += a[:, 3] * np.cos(a[:, 6])              # end to end: they share one face
    touching[:, 1] += a[:, 3] * np.sin(a[:, 6])
    turned[:, 6] += rng.choice([1e-12, 1e-9, 1e-6, np.pi, -np.pi], 80)   # (nearly) parallel edges everywhere
    nudged[:, :2] += rng.normal(0, 1e-9, (80, 2))

    def pairs(b):
        return np.diag(iou_bev(a, b))

    np.testing.assert_allclose(pairs(nested), 0.5, atol=1e-9)
    np.testing.assert_allclose(pairs(touching), 0.0, atol=1e-9)
    np.testing.assert_allclose(pairs(turned), 1.0, atol=1e-5)
    np.testing.assert_allclose(pairs(nudged), 1.0, atol=1e-7)
    assert pairs(turned).max() <= 1.0 and np.diag(iou_3d(a, turned)).max() <= 1.0


def test_random_boxes_match_slow_polygon_clipping():
    rng = np.random.default_rng(0)
    a = np.concatenate([rng.uniform(-2, 2, (40, 3)), rng.uniform(0.3, 4, (40, 3)), rng.uniform(-4, 4, (40, 1))], 1)
    b = np.concatenate([rng.uniform(-2, 2, (30, 3)), rng.uniform(0.3, 4, (30, 3)), rng.uniform(-4, 4, (30, 1))], 1)
    got_bev, got_3d = iou_bev(a, b), iou_3d(a, b)
    want_bev = np.array([[_slow_iou(p, q, False) for q in b] for p in a])
    want_3d = np.array([[_slow_iou(p, q, True) for q in b] for p in a])
    assert (want_bev > 0).mean() > 0.5      # the test really exercises overlapping pairs
    np.testing.assert_allclose(got_bev, want_bev, atol=1e-9)
    np.testing.assert_allclose(got_3d, want_3d, atol=1e-9)
    np.testing.assert_allclose(iou_bev(b, a), got_bev.T, atol=1e-12)


def test_iou_matches_monte_carlo_estimate():
    a = box(0.3, -0.2, 0.1, 4.2, 1.8, 1.6, 0.4)[0]
    b = box(1.1, 0.4, 0.4, 3.9, 1.7, 1.5, -0.35)[0]
    rng = np.random.default_rng(1)
    pts = rng.uniform([-4, -4, -2], [5, 5, 2], size=(400_000, 3))
    in_a = points_in_boxes(pts, a[None]) == 0
    in_b = points_in_boxes(pts, b[None]) == 0
    mc = (in_a & in_b).sum() / (in_a | in_b).sum()
    assert iou_3d(a[None], b[None])[0, 0] == pytest.approx(mc, abs=0.01)


def test_corners_and_angle_wrap():
    c = boxes_corners_3d(box(1.0, 2.0, 3.0, 4.0, 2.0, 1.0, math.pi / 2))[0]
    # heading along +y: the front-left corner is at (x - dy/2, y + dx/2) = (0, 4), bottom at z = 2.5
    np.testing.assert_allclose(c[0], [0.0, 4.0, 2.5], atol=1e-12)
    np.testing.assert_allclose(c[4], [0.0, 4.0, 3.5], atol=1e-12)
    np.testing.assert_allclose(c.mean(0), [1.0, 2.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(wrap_angle(np.array([math.pi, -math.pi, 3 * math.pi / 2])),
                               [-math.pi, -math.pi, -math.pi / 2])


# --- points in boxes --------------------------------------------------------------------------------------------

def test_points_in_boxes_matches_direct_loop():
    rng = np.random.default_rng(2)
    boxes = np.concatenate([rng.uniform(-5, 5, (25, 3)), rng.uniform(0.5, 3, (25, 3)),
                            rng.uniform(-np.pi, np.pi, (25, 1))], 1)
    pts = rng.uniform(-7, 7, (20_000, 3))
    got = points_in_boxes(pts, boxes)
    # direct: inside the BEV polygon (all edge cross products >= 0 for the counter-clockwise corners) and z range
    want = np.full(len(pts), -1)
    corners = boxes_corners_bev(boxes)
    for k in range(len(boxes) - 1, -1, -1):
        edges = np.roll(corners[k], -1, 0) - corners[k]
        rel = pts[:, None, :2] - corners[k][None]
        cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
        inside = (cross >= 0).all(1) & (np.abs(pts[:, 2] - boxes[k, 2]) <= boxes[k, 5] / 2)
        want[inside] = k
    assert (want >= 0).sum() > 500
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.int64


def test_points_in_boxes_edge_cases():
    assert points_in_boxes(np.zeros((0, 3)), box()).shape == (0,)
    np.testing.assert_array_equal(points_in_boxes(np.zeros((3, 4)), np.zeros((0, 7))), [-1, -1, -1])
    # faces belong to the box; overlapping boxes: the lower index wins
    pts = np.array([[1.0, 0.0, 0.0], [1.0 + 1e-6, 0.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(points_in_boxes(pts, box()), [0, -1, 0])
    np.testing.assert_array_equal(points_in_boxes(pts, np.concatenate([box(x=-0.5), box()])), [1, -1, 0])
    with pytest.raises(ValueError):
        points_in_boxes(pts, np.zeros((2, 6)))


# --- NMS ----------------------------------------------------------------------------------------------------------

def test_nms_hand_built_case():
    a = box(0.0, dx=4.0)[0]          # score 0.9
    b = box(1.0, dx=4.0)[0]          # IoU with a: 6 / 10 = 0.6            score 0.8
    d = box(2.0, dx=4.0)[0]          # IoU with a: 4 / 12, with b: 0.6      score 0.7
    c = box(20.0, dx=4.0)[0]         # far away                            score 0.6
    boxes = np.stack([c, d, a, b])
    scores = np.array([0.6, 0.7, 0.9, 0.8])
    assert iou_bev(a[None], b[None])[0, 0] == pytest.approx(0.6)
    # b is removed by a; d survives (its IoU with the kept a is 1/3), although it overlaps the removed b
    np.testing.assert_array_equal(nms_bev(boxes, scores, 0.5), [2, 1, 0])
    np.testing.assert_array_equal(nms_bev(boxes, scores, 0.7), [2, 3, 1, 0])
    np.testing.assert_array_equal(nms_bev(boxes, scores, 0.3), [2, 0])  # 1/3 > 0.3 removes d too
    assert nms_bev(np.zeros((0, 7)), np.zeros(0), 0.5).dtype == np.int64
