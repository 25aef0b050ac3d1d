"""CPU time of `segment_points` (votes 1) on the shipped IGN LiDAR HD example, and of its build_batch calls alone.

Models: the shipped ``sala-als`` and ``sala-als-tiny`` (same channels, cell and spheres, so both read, subsample
and tile the cloud identically; before 2026-12-07 the first was the retired ``kpconv-als``).

Per model: median wall time of ``segment_points`` over ``--repeats`` runs (after one warm-up), the share of it
spent in ``build_batch`` (timed inside those runs), and ``build_batch`` alone re-run on the exact inputs the
warm-up passed to it. The machine is shared: the load average is printed next to the figures.

    python benchmarks/bench_infer_speed.py [--repeats 7] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

import pcseg.engine.infer as infer
from pcseg.io import read
from pcseg.models import zoo

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ign_lidarhd_77060_627760.laz"


class TimedBuild:
    """Stands in for ``infer.build_batch``: records the seconds of every call and, when asked, its arguments."""

    def __init__(self, build_batch):
        self.build_batch = build_batch
        self.seconds = 0.0
        self.calls: list[tuple] | None = None

    def __call__(self, *args, **kwargs):
        if self.calls is not None:
            self.calls.append((args, kwargs))
        t0 = time.perf_counter()
        out = self.build_batch(*args, **kwargs)
        self.seconds += time.perf_counter() - t0
        return out


def bench(name: str, ck, cloud, repeats: int) -> None:
    timer = TimedBuild(infer.build_batch)
    infer.build_batch = timer
    try:
        timer.calls = []
        seg = infer.segment_points(ck, cloud, votes=1)  # warm-up, and the build_batch inputs to replay
        calls, timer.calls = timer.calls, None
        total, in_build = [], []
        for _ in range(repeats):
            timer.seconds = 0.0
            t0 = time.perf_counter()
            infer.segment_points(ck, cloud, votes=1)
            total.append(time.perf_counter() - t0)
            in_build.append(timer.seconds)
    finally:
        infer.build_batch = timer.build_batch
    alone = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for args, kwargs in calls:
            timer.build_batch(*args, **kwargs)
        alone.append(time.perf_counter() - t0)
    t, b, a = statistics.median(total), statistics.median(in_build), statistics.median(alone)
    print(f"| {name} | {seg.sub_points} | {seg.regions} | {len(calls)} | {t:.3f} (min {min(total):.3f}) | "
          f"{b:.3f} | {t - b:.3f} | {a:.3f} (min {min(alone):.3f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cloud = read(str(EXAMPLE))
    ck = zoo.load("sala-als")
    print(f"{EXAMPLE.name}: {len(cloud.xyz)} points; torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"votes 1, medians of {args.repeats} runs; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print("| model | subsampled points | regions | batches | segment_points s | in build_batch s | rest s "
          "| build_batch alone s |")
    print("|---|---|---|---|---|---|---|---|")
    bench("sala-als", ck, cloud, args.repeats)
    bench("sala-als-tiny", zoo.load("sala-als-tiny"), cloud, args.repeats)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
