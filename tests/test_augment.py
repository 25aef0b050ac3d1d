"""Sphere augmentation: each transform does what its paper describes, with the documented defaults."""
from __future__ import annotations

import numpy as np
import pytest

from pcseg.data.augment import Augmentation
from pcseg.data.features import channel_slices


def _cloud(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    pts = rng.normal(0.0, 1.0, (n, 3))
    feats = np.concatenate([np.ones((n, 1)), rng.random((n, 3)), rng.random((n, 1))], axis=1).astype(np.float32)
    return pts, feats


def test_defaults_are_sala_s3dis_values():
    a = Augmentation()
    assert (a.scale_min, a.scale_max, a.jitter_sigma) == (0.7, 1.3, 0.001)  # SALA supp. B.1
    assert a.rotate_z and a.anisotropic and a.color_drop == 0.2
    assert (Augmentation.sala_scannet().scale_min, Augmentation.sala_scannet().scale_max) == (0.9, 1.1)


def test_none_is_identity():
    pts, feats = _cloud()
    p, f = Augmentation.none()(pts, feats, np.random.default_rng(1), slice(1, 4))
    np.testing.assert_allclose(p, pts)
    np.testing.assert_array_equal(f, feats)


def test_rotation_is_about_z_only():
    pts, feats = _cloud()
    aug = Augmentation(scale_min=1.0, scale_max=1.0, flip_axes=(False, False, False), jitter_sigma=0.0, color_drop=0)
    rng = np.random.default_rng(2)
    angles = []
    for _ in range(50):
        p, _ = aug(pts, feats, rng)
        np.testing.assert_allclose(p[:, 2], pts[:, 2], atol=1e-12)
        np.testing.assert_allclose(np.hypot(p[:, 0], p[:, 1]), np.hypot(pts[:, 0], pts[:, 1]), atol=1e-12)
        angles.append(np.arctan2(p[0, 1], p[0, 0]) - np.arctan2(pts[0, 1], pts[0, 0]))
    angles = np.mod(angles, 2 * np.pi)
    assert angles.min() < 1.0 and angles.max() > 2 * np.pi - 1.0  # the whole circle is used


def test_anisotropic_scaling_stays_in_range_and_varies_per_axis():
    pts, feats = _cloud()
    aug = Augmentation(rotate_z=False, flip_axes=(False, False, False), jitter_sigma=0.0, color_drop=0)
    rng = np.random.default_rng(3)
    ratios = np.array([aug(pts, feats, rng)[0][0] / pts[0] for _ in range(200)])
    assert ratios.min() >= 0.7 - 1e-12 and ratios.max() <= 1.3 + 1e-12
    assert np.abs(ratios[:, 0] - ratios[:, 1]).max() > 0.1  # one ratio per axis
    iso = Augmentation(rotate_z=False, anisotropic=False, flip_axes=(False, False, False), jitter_sigma=0, color_drop=0)
    r = iso(pts, feats, rng)[0][0] / pts[0]
    assert np.allclose(r, r[0])


def test_flip_mirrors_x_half_of_the_time():
    pts, feats = _cloud()
    aug = Augmentation(rotate_z=False, scale_min=1.0, scale_max=1.0, jitter_sigma=0.0, color_drop=0)
    rng = np.random.default_rng(4)
    signs = []
    for _ in range(400):
        p = aug(pts, feats, rng)[0]
        np.testing.assert_allclose(np.abs(p), np.abs(pts))
        np.testing.assert_allclose(p[:, 1:], pts[:, 1:])
        signs.append(np.sign(p[0, 0] / pts[0, 0]))
    assert 0.4 < np.mean(np.array(signs) < 0) < 0.6


def test_jitter_standard_deviation():
    pts, feats = _cloud(n=20000)
    aug = Augmentation(rotate_z=False, scale_min=1.0, scale_max=1.0, flip_axes=(False, False, False), color_drop=0)
    p = aug(pts, feats, np.random.default_rng(5))[0]
    assert np.std(p - pts) == pytest.approx(0.001, rel=0.05)


def test_colour_drop_zeroes_only_rgb_with_its_probability():
    pts, feats = _cloud(n=100)
    rgb = channel_slices(("one", "rgb", "z"))["rgb"]
    aug = Augmentation()
    rng = np.random.default_rng(6)
    dropped = 0
    for _ in range(2000):
        _, f = aug(pts, feats, rng, rgb)
        if not f[:, rgb].any():
            dropped += 1
            np.testing.assert_array_equal(f[:, 0], 1.0)  # the constant channel stays
            np.testing.assert_array_equal(f[:, 4], feats[:, 4])
        else:
            np.testing.assert_array_equal(f, feats)
    assert dropped / 2000 == pytest.approx(0.2, abs=0.03)
    # without colour columns nothing is dropped, and the input is never modified in place
    _, f = Augmentation(color_drop=1.0)(pts, feats, rng, None)
    np.testing.assert_array_equal(f, feats)


def test_deterministic_for_a_seed():
    pts, feats = _cloud()
    a = Augmentation()
    p1, f1 = a(pts, feats, np.random.default_rng(7), slice(1, 4))
    p2, f2 = a(pts, feats, np.random.default_rng(7), slice(1, 4))
    np.testing.assert_array_equal(p1, p2)
    np.testing.assert_array_equal(f1, f2)
    with pytest.raises(ValueError):
        Augmentation(scale_min=0.0)
