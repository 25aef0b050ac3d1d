"""Time `pcseg detect` on a real ~120k-point KITTI frame, with and without the focal sparse convolutions.

Measures (median of --repeats runs after one warm-up):
* ``detect``: reading the frame + voxelisation + network + decoding + NMS, in process (what `pcseg detect`
  spends per frame once the model is loaded);
* the same with the focal convolutions removed from the same weights (the plain VoxelNet backbone);
* ``cli``: one whole `pcseg detect FRAME` process (Python start, imports, model load, one frame).

Usage: python benchmarks/bench_detect.py [--model focals-kitti|PATH] [--frame FILE] [--threads N] [--repeats 5]
Timings on a shared machine are noisy: the script prints torch.get_num_threads() and the machine load.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FRAME = REPO.parent / "shared" / "data" / "kitti" / "training" / "velodyne" / "000001.bin"


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="focals-kitti")
    ap.add_argument("--frame", default=str(DEFAULT_FRAME))
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-cli", action="store_true", help="skip the whole-process timing")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from pcseg.engine.detect import detect_points, load_detector, load_frame
    from pcseg.engine.runtime import configure_allocator
    from pcseg.models import build

    configure_allocator()  # what the pcseg command does first

    model, card = load_detector(args.model)
    plain = build("focals-centerpoint", **{**model.config(), "focal": False}).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("focal_convs.")})
    points = load_frame(args.frame)
    print(f"frame {args.frame}: {len(points):,} points; model {args.model}; torch threads {torch.get_num_threads()}; "
          f"load average {os.getloadavg()[0]:.1f}")

    with torch.no_grad():
        out = model([torch.from_numpy(points)])
    sizes = [(len(r.x.coords), len(r.out.coords)) for r in out["focal"]]
    print("focal convs: voxels in -> out " + ", ".join(f"{a:,} -> {b:,}" for a, b in sizes))

    t_focal = median_time(lambda: detect_points(model, load_frame(args.frame)), args.repeats)
    t_plain = median_time(lambda: detect_points(plain, load_frame(args.frame)), args.repeats)
    print(f"detect (in process, median of {args.repeats}): with focal conv {t_focal:.3f} s, "
          f"without {t_plain:.3f} s")
    if not args.no_cli:
        cmd = [sys.executable, "-m", "pcseg", "detect", args.frame, "--model", args.model, "-o", os.devnull]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        times = []
        for _ in range(max(1, args.repeats // 2)):
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        print(f"whole `pcseg detect` process (start, imports, model load, one frame): {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
