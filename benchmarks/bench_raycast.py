"""Speed of the exact mesh ray caster (`pcseg.geometry.raycast.cast_rays`) on two scenes made of real CAD meshes.

* room: a 6 x 5 x 3 m box of 12 triangles with two CAD chairs and a CAD table, scanned from inside with
  1800 x 900 rays over the whole sphere;
* kitti: a 160 x 160 m ground of 2 triangles and 10 CAD cars 5-60 m away, 64 beams (-24.8..+2 degrees) x 2048
  azimuths from 1.73 m, max range 120 m.

Prints faces, rays, the share that hit, best / median of ``--repeats`` runs, rays/s, torch-free (numpy only),
and the load average. Set OMP_NUM_THREADS to choose the threads numpy's BLAS may use (the caster itself is
single-threaded numpy).

    python benchmarks/bench_raycast.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pcseg.geometry.raycast import cast_rays, spherical_directions  # noqa: E402
from pcseg.io import TriangleMesh, concatenate, read_mesh, transform  # noqa: E402

CAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "cad"
CARS = ["quaternius__normal_car1_realcars", "quaternius__suv_realcars", "gazebo-osrf__prius_hybrid",
        "kenney__sedan", "quaternius__taxi_realcars", "gazebo-osrf__hatchback", "quaternius__sports_car_realcars",
        "gazebo-osrf__suv", "kenney__van", "quaternius__cop_suv_realcars"]


def box_mesh(lo, hi) -> TriangleMesh:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    v = np.array([[x, y, z] for z in (lo[2], hi[2]) for y in (lo[1], hi[1]) for x in (lo[0], hi[0])])
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 5, 7], [4, 7, 6], [0, 1, 5], [0, 5, 4],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 3, 7], [1, 7, 5]])
    return TriangleMesh(v, f, np.full((12, 3), 200, np.uint8))


def room():
    meshes = [box_mesh([-3, -2.5, 0], [3, 2.5, 3]),
              transform(read_mesh(CAD / "chair/aws-smallhouse__chair_a_01.ply"), 0.4, 1.0, (1.5, 1.0, 0)),
              transform(read_mesh(CAD / "chair/quaternius__office_chair_furn2019.ply"), 2.5, 1.0, (-1.8, -1.2, 0)),
              transform(read_mesh(CAD / "table/aws-smallhouse__kitchen_table_01.ply"), 0.1, 1.0, (0.8, -1.5, 0))]
    m, _ = concatenate(meshes)
    el = -np.pi / 2 + (np.arange(900) + 0.5) * np.pi / 900
    return m, np.array([0.3, 0.2, 1.6]), spherical_directions(1800, el), np.inf


def kitti():
    rng = np.random.default_rng(7)
    ground = TriangleMesh(np.array([[-80, -80, 0], [80, -80, 0], [80, 80, 0], [-80, 80, 0]], float),
                          np.array([[0, 1, 2], [0, 2, 3]]), np.full((2, 3), 120, np.uint8))
    meshes = [ground]
    for i, name in enumerate(CARS):
        r, a = 5 + 55 * i / 9, rng.uniform(-np.pi, np.pi)
        meshes.append(transform(read_mesh(CAD / f"car/{name}.ply"), rng.uniform(-np.pi, np.pi), 1.0,
                                (r * np.cos(a), r * np.sin(a), 0)))
    m, _ = concatenate(meshes)
    return m, np.array([0, 0, 1.73]), spherical_directions(2048, np.deg2rad(np.linspace(-24.8, 2.0, 64))), 120.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}")
    for name, make in (("room", room), ("kitti", kitti)):
        m, o, d, mr = make()
        t, _ = cast_rays(m.vertices, m.faces, o, d, mr)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            cast_rays(m.vertices, m.faces, o, d, mr)
            times.append(time.perf_counter() - t0)
        best, med = min(times), statistics.median(times)
        print(f"{name}: {len(m.faces)} faces, {len(d)} rays, {np.isfinite(t).mean():.1%} hit; best {best:.3f} s "
              f"({len(d) / best / 1e6:.2f} M rays/s), median {med:.3f} s ({len(d) / med / 1e6:.2f} M rays/s); "
              f"load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
