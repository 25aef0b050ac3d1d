"""Training-sphere augmentation: rotation about z, anisotropic scaling, flips, jitter, colour drop.

Applied to one input sphere at a time (points already centred on the sphere centre), in this order: rotation
about the vertical axis, per-axis scaling with random flips, additive Gaussian jitter, colour drop. Defaults
and their sources:

* rotation about z, angle uniform in [0, 2*pi): SALA supp. B.1/B.2 ("random rotations along the z-axis");
  KPConv §4.4 trains with "random rotation augmentations around vertical axis".
* scaling ratios 0.7 to 1.3: SALA supp. B.1 (S3DIS); :meth:`Augmentation.sala_scannet` uses 0.9 to 1.1
  (supp. B.2). The papers do not say whether the ratio is per axis; ``anisotropic=True`` draws one ratio per
  axis, as KPConv-PyTorch's configurations do (a ratio per axis also varies aspect ratios, which a uniform
  scale cannot).
* flips: KPConv §4.1 lists "scaling, flipping and perturbing the points" without saying which axes; the
  default mirrors x with probability 1/2 (KPConv-PyTorch's scene setting). With a free rotation about z,
  mirroring one horizontal axis gives every planar reflection; flipping z would put ceilings below floors.
* jitter: Gaussian, standard deviation 0.001 m (SALA supp. B: delta = 0.001), added after scaling.
* colour drop: SALA supp. B "random color drop" gives no probability; 0.2 (the rgb columns of a sphere are
  zeroed with probability 0.2, the constant-1 channel is kept) follows KPConv-PyTorch, which keeps colours
  with probability 0.8.

* echo drop (not in the papers; pcseg's airborne models): the ``echo`` columns of a sphere are zeroed with
  probability ``echo_drop``, the input of a file without return numbers, so that one model reads x, y, z-only
  files and files with returns alike.

Features other than colour and echoes are not changed: the ``z`` channel is the height in the original cloud (see
:mod:`pcseg.data.features`), so it does not follow the scaling.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """Random transform of a training sphere (defaults: SALA supp. B.1, S3DIS; see the module docstring)."""

    rotate_z: bool = True
    scale_min: float = 0.7
    scale_max: float = 1.3
    anisotropic: bool = True
    flip_axes: tuple[bool, bool, bool] = (True, False, False)
    jitter_sigma: float = 0.001
    color_drop: float = 0.2
    echo_drop: float = 0.0

    def __post_init__(self) -> None:
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError("scaling needs 0 < scale_min <= scale_max")
        if self.jitter_sigma < 0 or not 0 <= self.color_drop <= 1 or not 0 <= self.echo_drop <= 1:
            raise ValueError("jitter_sigma must be >= 0, color_drop and echo_drop in [0, 1]")

    @classmethod
    def sala_s3dis(cls) -> "Augmentation":
        """SALA supp. B.1 (S3DIS): the defaults."""
        return cls()

    @classmethod
    def sala_scannet(cls) -> "Augmentation":
        """SALA supp. B.2 (ScanNet): scaling 0.9 to 1.1."""
        return cls(scale_min=0.9, scale_max=1.1)

    @classmethod
    def none(cls) -> "Augmentation":
        """Identity (validation, tests)."""
        return cls(rotate_z=False, scale_min=1.0, scale_max=1.0, flip_axes=(False, False, False),
                   jitter_sigma=0.0, color_drop=0.0)

    def matrix(self, rng: np.random.Generator) -> np.ndarray:
        """(3, 3) random linear part: rotation about z, then scaling with flips (applied as ``p @ M``)."""
        rot = np.eye(3)
        if self.rotate_z:
            theta = rng.uniform(0.0, 2.0 * np.pi)
            c, s = np.cos(theta), np.sin(theta)
            rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])  # row-vector convention
        ratios = rng.uniform(self.scale_min, self.scale_max, size=3 if self.anisotropic else 1)
        scale = np.broadcast_to(ratios, (3,)).copy()
        flips = np.where(np.array(self.flip_axes) & (rng.random(3) < 0.5), -1.0, 1.0)
        return rot @ np.diag(scale * flips)

    def __call__(
        self,
        points: np.ndarray,
        features: np.ndarray,
        rng: np.random.Generator,
        rgb_columns: slice | None = None,
        echo_columns: slice | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Augmented copies of ``points`` (n, 3) and ``features`` (n, F); ``rgb_columns`` / ``echo_columns``: the
        colour / echo columns (from :func:`pcseg.data.features.channel_slices`), None when there are none."""
        pts = np.asarray(points, dtype=np.float64) @ self.matrix(rng)
        if self.jitter_sigma > 0:
            pts = pts + rng.normal(0.0, self.jitter_sigma, size=pts.shape)
        feats = np.array(features, dtype=np.float32, copy=True)
        if rgb_columns is not None and self.color_drop > 0 and rng.random() < self.color_drop:
            feats[:, rgb_columns] = 0.0
        if echo_columns is not None and self.echo_drop > 0 and rng.random() < self.echo_drop:
            feats[:, echo_columns] = 0.0
        return pts, feats
