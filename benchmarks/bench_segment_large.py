"""Peak memory of `pcseg segment` on a 20 M-point LAS made by tiling a real IGN tile (goal: under 3 GB).

Usage: python benchmarks/bench_segment_large.py [--points 20000000] [--model sala-als] [--votes 1]
Builds the file once in a temporary folder (written chunk by chunk), runs `pcseg segment` on it in a child
process and reports the child's peak RSS (getrusage), wall time and points/s.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import laspy
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
TILE = os.path.join(HERE, "..", "examples", "ign_lidarhd_77060_627760.laz")


def build(path: str, n: int) -> int:
    src = laspy.read(TILE)
    side = 50.0  # the tile is 50 m x 50 m
    copies = int(np.ceil(n / len(src.points)))
    cols = int(np.ceil(np.sqrt(copies)))
    header = laspy.LasHeader(version=src.header.version, point_format=src.header.point_format)
    header.scales, header.offsets = src.header.scales, src.header.offsets
    written = 0
    with laspy.open(path, mode="w", header=header) as w:
        for k in range(copies):
            rec = src.points.copy()
            m = min(len(rec), n - written)
            rec = rec[:m]
            rec.X = rec.X + int(round((k % cols) * side / src.header.scales[0]))
            rec.Y = rec.Y + int(round((k // cols) * side / src.header.scales[1]))
            w.write_points(rec)
            written += m
    return written


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=20_000_000)
    ap.add_argument("--model", default="sala-als")
    ap.add_argument("--votes", type=int, default=1)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pcseg-bench-")
    big = os.path.join(tmp, "big.las")
    t = time.perf_counter()
    n = build(big, args.points)
    print(f"built {n:,} points ({os.path.getsize(big) / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s")
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pcseg", "segment", big, "--model", args.model, "-o",
                        os.path.join(tmp, "out.las"), "--votes", str(args.votes), "--quiet"])
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB -> GiB
    print(f"exit {r.returncode}; {wall:.0f} s, {n / wall:,.0f} points/s, peak RSS {peak:.2f} GiB, "
          f"{os.cpu_count()} cores, votes {args.votes}")
    for f in ("big.las", "out.las"):
        p = os.path.join(tmp, f)
        if os.path.exists(p):
            os.unlink(p)
    os.rmdir(tmp)


if __name__ == "__main__":
    main()
