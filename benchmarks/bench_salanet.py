"""SALANet size, MACs and CPU forward time on real indoor scans (SALA paper Table 2 and issue 4).

Data (read from ../shared/data, nothing is copied): ScanNet scene0000_00 (RGB-D reconstruction) grid-subsampled
at the network's 4 cm, cropped to the N points nearest to the scene centre; ZRGB1 input features as in the
paper's S3DIS setting. MACs are also given on the S3DIS Area_3/hallway_3 crop at 4 cm.

MACs are torch's FLOP counter / 2 (pcseg.models.count_macs). SALA computes the feature half of W_g f*_j once per
support point (see pcseg/nn/sala.py); "per-pair MACs" adds back what a literal per-(i, j) evaluation of Eq. 6-8
would cost, which is what a counter sees on a straightforward implementation.

    python benchmarks/bench_salanet.py [--points 50000] [--repeats 5] [--widths 36 18] [--compare kpfcnn]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from pcseg.data.batch import build_batch
from pcseg.geometry import grid_subsample
from pcseg.models import build, count_macs, count_params, entries
from pcseg.nn import SALA

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def scannet_crop(n_points: int, dl: float) -> tuple[np.ndarray, np.ndarray]:
    from plyfile import PlyData

    v = PlyData.read(str(DATA / "indoor" / "scannet_scene0000_00.ply"))["vertex"]
    xyz = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    rgb = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.float64)
    sub = grid_subsample(xyz, dl, features=rgb)
    centre = np.median(sub.points, axis=0)
    order = np.argsort(np.linalg.norm(sub.points[:, :2] - centre[:2], axis=1))[:n_points]
    if len(order) < n_points:
        print(f"note: only {len(order)} points in the scene at {dl} m")
    return sub.points[order], sub.features[order]


def s3dis_room(dl: float) -> tuple[np.ndarray, np.ndarray]:
    files = sorted((DATA / "indoor" / "s3dis" / "Area_3" / "hallway_3" / "Annotations").glob("*.txt"))
    pts = np.concatenate([np.loadtxt(f) for f in files])
    sub = grid_subsample(pts[:, :3], dl, features=pts[:, 3:6])
    return sub.points, sub.features


def zrgb1(xyz: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([xyz[:, 2:3], rgb / 255.0, np.ones((len(xyz), 1))], axis=1).astype(np.float32)


def per_pair_extra_macs(model: torch.nn.Module, batch) -> int:
    """MACs a literal per-(i, j) evaluation of W_g^f f_j would add: (M*H - N) * C_in * S * C_out per SALA."""
    extra = []

    def hook(layer, args, _out):
        query, support, neighbors, _ = args
        m, k = neighbors.shape
        extra.append((m * k - support.shape[0]) * layer.in_channels * layer.groups * layer.out_channels)

    handles = [mod.register_forward_hook(hook) for mod in model.modules() if isinstance(mod, SALA)]
    try:
        with torch.no_grad():
            model.eval()(batch)
    finally:
        for h in handles:
            h.remove()
    return sum(extra)


def forward_times(model, batch, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process CPU seconds of each forward pass (CPU time is less sensitive to a shared machine)."""
    model.eval()
    wall, cpu = [], []
    with torch.no_grad():
        model(batch)  # warm-up
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            model(batch)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--widths", type=int, nargs="+", default=[36, 18])
    ap.add_argument("--compare", nargs="*", default=["kpfcnn"], help="other registered networks to time")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    models = {f"salanet C={w}": build("salanet", num_classes=13, in_features=5, width=w) for w in args.widths}
    for name in args.compare:
        if name in entries():
            models[name] = build(name, num_classes=13, in_features=5)
        else:
            print(f"note: {name!r} is not registered, skipped")

    inputs = {"scannet 15000": scannet_crop(15_000, 0.04), "s3dis hallway_3": s3dis_room(0.04),
              f"scannet {args.points}": scannet_crop(args.points, 0.04)}
    for name, model in models.items():
        spec = model.pyramid_spec
        print(f"\n{name}: {count_params(model):,} parameters")
        for data_name, (xyz, rgb) in inputs.items():
            t0 = time.perf_counter()
            batch = build_batch([xyz - xyz.mean(axis=0)], [zrgb1(xyz, rgb)], spec).to("cpu")
            t_batch = time.perf_counter() - t0
            macs = count_macs(model, batch)
            extra = per_pair_extra_macs(model, batch) if name.startswith("salanet") else 0
            line = (f"  {data_name}: {len(xyz)} points, pyramid {[len(p) for p in batch.points]}, "
                    f"{macs / 1e9:.2f} GMACs" + (f" ({(macs + extra) / 1e9:.2f} per-pair)" if extra else ""))
            if data_name.endswith(str(args.points)):
                wall, cpu = forward_times(model, batch, args.repeats)
                line += (f"; batch build {t_batch:.2f} s; forward median {statistics.median(wall):.3f} s "
                         f"(min {min(wall):.3f}, max {max(wall):.3f}, {args.repeats} runs; "
                         f"median CPU {statistics.median(cpu):.3f} s)")
            print(line)


if __name__ == "__main__":
    main()
