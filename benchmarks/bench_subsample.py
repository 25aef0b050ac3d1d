"""Grid subsampling of 10 M points at 4 cm: pcseg (numpy) against Open3D's voxel_down_sample, same run.

The cloud is made by tiling a real airborne tile (examples/ign_lidarhd_*.laz) with random sub-cell jitter
and scaling it to indoor density so that 4 cm cells hold several points. Usage:
    python benchmarks/bench_subsample.py [--points 10000000] [--repeats 3]
Prints medians over repeats and the torch/numpy thread situation (numpy here is single-threaded).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from pcseg.geometry import grid_subsample
from pcseg.io import read

HERE = os.path.dirname(os.path.abspath(__file__))
TILE = os.path.join(HERE, "..", "examples", "ign_lidarhd_77060_627760.laz")


def make_cloud(n: int, seed: int = 0) -> np.ndarray:
    base = read(TILE).xyz
    base = (base - base.min(axis=0)) / 10.0  # 50 m tile -> 5 m: about 2.4 points per 4 cm cell at 10 M points
    reps = int(np.ceil(n / len(base)))
    rng = np.random.default_rng(seed)
    shifts = np.stack([np.arange(reps) % 8 * 5.0, np.arange(reps) // 8 % 8 * 5.0, np.zeros(reps)], 1)
    pts = (base[None] + shifts[:, None]).reshape(-1, 3)[:n]
    return pts + rng.normal(scale=0.01, size=pts.shape)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=10_000_000)
    ap.add_argument("--cell", type=float, default=0.04)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    pts = make_cloud(args.points)
    print(f"{len(pts):,} points, cell {args.cell} m, {os.cpu_count()} cores, median of {args.repeats}")
    t, sub = timed(lambda: grid_subsample(pts, args.cell), args.repeats)
    print(f"pcseg grid_subsample (barycentres + inverse index): {t:.2f} s -> {len(sub.points):,} points")
    feats = np.random.default_rng(1).random((len(pts), 3))
    t, _ = timed(lambda: grid_subsample(pts, args.cell, features=feats), args.repeats)
    print(f"pcseg grid_subsample with 3 averaged features:      {t:.2f} s")
    try:
        import open3d as o3d
    except Exception as e:  # optional dependency
        print(f"open3d not available ({type(e).__name__}: {e}); install the 'open3d' extra to compare")
        return
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    t, down = timed(lambda: pcd.voxel_down_sample(args.cell), args.repeats)
    print(f"open3d voxel_down_sample (barycentres, no inverse): {t:.2f} s -> {len(down.points):,} points")


if __name__ == "__main__":
    main()
