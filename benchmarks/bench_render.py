"""`pcseg render` speed: pictures of 10 M synthetic points and of a real airborne tile.

The synthetic cloud tiles the shipped IGN example (examples/ign_lidarhd_*.laz, 59,606 points, 50 m x 50 m, with
its ASPRS classification) on a grid with sub-metre jitter, so it has a real airborne structure (ground, roofs,
canopy) over ~650 m x 650 m. Each case is timed in-process (rasterising, colouring and composing; no file I/O)
as the median of ``--repeats``; the real tile also reports its read time. Usage:

    python benchmarks/bench_render.py [--points 10000000] [--tile ../shared/data/als/X.laz] [--repeats 3]

numpy runs these operations on one thread; the script prints the thread settings and the machine load
(``uptime``) so that figures from a busy machine are read as such.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import numpy as np

from pcseg.engine.render import render_boxes_top, render_cloud, render_compare
from pcseg.io import PointCloud, read

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLE = os.path.join(HERE, "..", "examples", "ign_lidarhd_77060_627760.laz")
SHARED = os.environ.get("PCSEG_SHARED_DATA", os.path.join(HERE, "..", "..", "shared", "data"))
DEFAULT_TILE = os.path.join(SHARED, "als", "ign_las_with_several_extra_byte_bloc.laz")


def make_cloud(n: int, seed: int = 0) -> PointCloud:
    base = read(EXAMPLE)
    xyz = base.xyz - base.xyz.min(axis=0)
    reps = int(np.ceil(n / len(xyz)))
    side = int(np.ceil(np.sqrt(reps)))
    rng = np.random.default_rng(seed)
    k = np.arange(reps)
    shifts = np.stack([k % side * 50.0, k // side * 50.0, rng.normal(scale=2.0, size=reps)], 1)
    pts = (xyz[None] + shifts[:, None]).reshape(-1, 3)[:n]
    pts += rng.normal(scale=0.05, size=pts.shape)
    cls = np.tile(base.fields["classification"], reps)[:n]
    pred = cls.copy()
    flip = rng.random(n) < 0.05
    pred[flip] = rng.choice(np.array([2, 5, 6], np.uint8), size=int(flip.sum()))
    return PointCloud(pts, {"classification": cls, "pred_classification": pred,
                            "intensity": np.tile(base.fields["intensity"], reps)[:n]}, {"format": "laz"})


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def machine() -> str:
    up = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    threads = {k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    return (f"{os.cpu_count()} cores; numpy rasterising is single-threaded; "
            + ", ".join(f"{k}={v}" for k, v in threads.items()) + f"; uptime: {up}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=10_000_000)
    ap.add_argument("--tile", default=DEFAULT_TILE, help="a real LAS/LAZ tile")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="1200x900")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    print(machine())
    t0 = time.perf_counter()
    cloud = make_cloud(args.points)
    print(f"synthetic: {len(cloud):,} points ({time.perf_counter() - t0:.1f} s to build), picture {size[0]}x{size[1]}, "
          f"median of {args.repeats}")
    cases = [
        ("top, by classification", lambda: render_cloud(cloud, "classification", "top", size=size)),
        ("top, by classification, point size 0", lambda: render_cloud(cloud, "classification", "top", size=size,
                                                                       point_size=0)),
        ("top, by intensity (ramp)", lambda: render_cloud(cloud, "intensity", "top", size=size)),
        ("side, by classification", lambda: render_cloud(cloud, "classification", "side", size=size)),
        ("persp, by classification", lambda: render_cloud(cloud, "classification", "persp", size=size)),
        ("compare truth | prediction | errors (1800x700)",
         lambda: render_compare(cloud, "classification", "pred_classification")),
        ("top with 100 boxes", lambda: render_boxes_top(
            cloud, np.c_[np.random.default_rng(0).random((100, 3)) * [600, 600, 10], np.full((100, 3), 5.0),
                         np.zeros(100)], ["Car"] * 100, size=size)),
    ]
    for name, fn in cases:
        t, img = timed(fn, args.repeats)
        print(f"  {name:48s} {t:6.2f} s  ({len(cloud) / t / 1e6:.1f} M points/s)")
    del cloud
    if not os.path.exists(args.tile):
        print(f"real tile {os.path.basename(args.tile)} not found: skipped")
        return
    t_read, real = timed(lambda: read(args.tile), 1)
    by = "classification" if "classification" in real.fields else "z"
    t, _ = timed(lambda: render_cloud(real, by, "top", size=size), args.repeats)
    print(f"real tile {os.path.basename(args.tile)}: {len(real):,} points, read {t_read:.2f} s, "
          f"top view by {by} {t:.2f} s")
    print(machine())


if __name__ == "__main__":
    main()
