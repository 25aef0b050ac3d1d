"""KP-FCNN size, MACs and CPU forward time on real clouds (KPConv issue 3; paper Table 3).

Network: KP-FCNN in the paper's ScanNet setting (4 input features, 20 classes, dl0 = 4 cm, K = 15), rigid unless
``--deformable``. Data (read from ../shared/data, nothing copied):
- ``scannet``: ScanNet scene0000_00 grid-subsampled at 4 cm, the N points nearest to the scene centre;
  features [1, R, G, B].
- ``ign``: the IGN LiDAR HD tile test_data_77050_627755 (84 k points, 50 x 50 m; "IGN LiDAR HD"), grid-subsampled
  at ``--ign-dl0`` (default 0.25 m, about its point spacing, so neighbourhoods hold as many points as indoors);
  features [1, R, G, B]. At 4 cm an ALS tile is so sparse that most neighbourhoods hold a single point.
The time is the median of ``--repeats`` forward passes (eval mode, no autograd) after one warm-up; the batch
(pyramid and neighbour search, numpy/scipy) is built once and timed separately.

    python benchmarks/bench_kpfcnn.py [--cloud scannet|ign] [--points 50000] [--repeats 5] [--deformable]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pcseg.data.batch import build_batch
from pcseg.geometry import grid_subsample
from pcseg.models import build, count_macs, count_params

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
IGN_TILE = DATA / "als" / "test_data_77050_627755_LA93_IGN69.laz"
SCANNET = DATA / "indoor" / "scannet_scene0000_00.ply"


def load(cloud: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) float64 coordinates and (N, 3) RGB in [0, 1]."""
    if cloud == "scannet":
        from plyfile import PlyData

        v = PlyData.read(str(SCANNET))["vertex"]
        xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
        rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1) / 255.0
    else:
        import laspy

        las = laspy.read(str(IGN_TILE))
        xyz = np.stack([las.x, las.y, las.z], axis=1)
        rgb = np.stack([las.red, las.green, las.blue], axis=1) / 65535.0
    return xyz, rgb.astype(np.float32)


def crop(xyz: np.ndarray, rgb: np.ndarray, dl: float, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    sub = grid_subsample(xyz, dl, features=rgb)
    centre = np.median(sub.points, axis=0)
    order = np.argsort(np.linalg.norm(sub.points - centre, axis=1))[:n_points]
    if len(order) < n_points:
        print(f"note: only {len(order)} points after subsampling at {dl} m")
    points = sub.points[order] - sub.points[order].mean(axis=0)
    feats = np.concatenate([np.ones((len(order), 1), np.float32), sub.features[order].astype(np.float32)], 1)
    return points, feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cloud", choices=["scannet", "ign"], default="scannet")
    ap.add_argument("--points", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--deformable", action="store_true")
    ap.add_argument("--ign-dl0", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    dl0 = 0.04 if args.cloud == "scannet" else args.ign_dl0
    torch.manual_seed(0)
    model = build("kpfcnn", num_classes=20, in_features=4, deformable=args.deformable, dl0=dl0).eval()
    xyz, rgb = load(args.cloud)
    points, feats = crop(xyz, rgb, dl0, args.points)

    t0 = time.perf_counter()
    batch = build_batch([points], [feats], model.pyramid_spec).to("cpu")
    t_batch = time.perf_counter() - t0

    with torch.no_grad():
        model(batch)  # warm-up
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model(batch)
            times.append(time.perf_counter() - t0)
    macs = count_macs(model, batch)

    print(f"KP-FCNN ({'deformable' if args.deformable else 'rigid'}), ScanNet setting (4 features, 20 classes), "
          f"cloud {args.cloud}, dl0 {dl0:g} m")
    print(f"torch threads: {torch.get_num_threads()}; device: cpu")
    print(f"parameters: {count_params(model):,}")
    print(f"points per layer: {[len(p) for p in batch.points]}")
    print(f"neighbour matrix widths: {[n.shape[1] for n in batch.neighbors]}")
    print(f"MACs: {macs / 1e9:.2f} G")
    print(f"batch build (pyramid + neighbours): {t_batch:.2f} s")
    print(f"forward: median {statistics.median(times):.2f} s over {args.repeats} "
          f"(min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
