"""Training step time (forward + backward + SGD step) of SALANet C=36 and KP-FCNN on real 2 m spheres.

Spheres of radius 2 m from ScanNet scene0000_00 (../shared/data/indoor) subsampled at 4 cm, batched up to
``--points``; ZRGB1-like 5 input features for SALANet, 1+RGB for KP-FCNN; 13 classes. Median of repeats.
Usage: python benchmarks/bench_train_step.py [--points 30000] [--repeats 5] [--threads N] [--device cpu]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from pcseg.data import build_batch
from pcseg.geometry import grid_subsample
from pcseg.io import read
from pcseg.models import build, count_params

HERE = os.path.dirname(os.path.abspath(__file__))
SCAN = os.path.join(HERE, "..", "..", "shared", "data", "indoor", "scannet_scene0000_00.ply")


def spheres(points: int, seed: int = 0) -> list[np.ndarray]:
    pts = grid_subsample(read(SCAN).xyz, 0.04).points
    rng = np.random.default_rng(seed)
    out, total = [], 0
    while total < points:
        c = pts[rng.integers(len(pts))]
        s = pts[np.linalg.norm(pts - c, axis=1) < 2.0] - c
        out.append(s[: points - total])
        total += len(out[-1])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=30_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clouds = spheres(args.points)
    for name, opts, feats in (("salanet", {"width": 36}, 5), ("kpfcnn", {}, 4)):
        model = build(name, num_classes=13, in_features=feats, **opts).to(args.device)
        batch = build_batch(clouds, [np.ones((len(c), feats), np.float32) for c in clouds], model.pyramid_spec,
                            [np.zeros(len(c), np.int64) for c in clouds]).to(args.device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.98)
        times = []
        for _ in range(args.repeats + 1):
            t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(batch), batch.labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        med = statistics.median(times[1:])
        print(f"{name:8s} {count_params(model) / 1e6:5.2f} M params, {len(batch.points[0]):,} points in "
              f"{len(clouds)} spheres: {med:.2f} s/step (median of {args.repeats}, {args.threads} threads, "
              f"{args.device})")


if __name__ == "__main__":
    main()
