"""Indoor model quality on held-out real scans and, stated separately, on held-out generated rooms (issue #28).

Real files (read from ../shared/data, nothing copied): ScanNet scene0000_02 (a rescan of the training rooms
scene0000_00/01: it overstates quality) and the S3DIS crop Area_3/hallway_3 (another building and sensor; about
2 x 2 m). Generated rooms: ``--rooms N`` validation rooms of each of ``--room-kinds`` (seeds from 1,000,000, never
drawn for training), written to a scratch folder and read back as a user's file would be.

Every prediction is what ``pcseg segment`` writes (``pcseg.engine.quality.measure_quality``, ``--votes``); a
row gives per-class IoU over the file's points and mIoU over the classes the file holds. ``--no-color``
repeats the real files with their colour removed. ``--speed`` times ``segment_points`` in process on the shipped
example ``examples/synthetic_room.ply`` (median of ``--repeats`` after one warm-up).

    python benchmarks/bench_indoor.py --model sala-s3dis [--votes 3] [--rooms 4] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_als import cpu_model  # noqa: E402
from pcseg.data.classmaps import S3DIS_NAMES  # noqa: E402
from pcseg.data.datasets import resolve_data  # noqa: E402
from pcseg.engine.infer import segment_points  # noqa: E402
from pcseg.engine.quality import measure_quality  # noqa: E402
from pcseg.io import PointCloud, read  # noqa: E402
from pcseg.io.api import write  # noqa: E402
from pcseg.models import zoo  # noqa: E402

DATA = HERE.parents[1] / "shared" / "data"
REAL = [str(DATA / "indoor" / "scannet_scene0000_02.ply") + ":nyu40:nyu40-to-s3dis",
        str(DATA / "indoor" / "s3dis" / "Area_3" / "hallway_3")]


def write_rooms(kind: str, n: int, folder: Path) -> list[str]:
    """The first ``n`` validation rooms of ``synthetic:<kind>`` as PLY files (x, y, z, colour, S3DIS class)."""
    out = []
    for src in resolve_data([f"synthetic:{kind}:{n}"], ["rgb"], role="val", class_map="s3dis")[:n]:
        room = src.load()                      # features: colour in [0, 1]; labels: S3DIS ids
        rgb = np.clip(np.round(room.features * 255.0), 0, 255).astype(np.uint8)
        pc = PointCloud(room.xyz, {"red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2],
                                   "class": room.labels.astype(np.uint8)})
        path = folder / f"{src.path.split(':', 1)[1].replace('#', '_')}.ply"
        write(pc, str(path))
        out.append(str(path))
    return out


def table(title: str, result: dict) -> list[str]:
    names = [n for n in S3DIS_NAMES]
    lines = [f"### {title}", "", "| file | mIoU (classes held) | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    rows = list(result["per_file"].items()) + [("pooled", result["pooled"])]
    for name, r in rows:
        iou = r["iou"]
        cells = ["-" if iou.get(n) is None else f"{100 * iou[n]:.1f}" for n in names]
        mp = r.get("miou_present")
        lines.append(f"| {Path(name).name} | {'-' if mp is None else f'{100 * mp:.1f}'} | " + " | ".join(cells) + " |")
    return lines + [""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--votes", type=int, default=3)
    ap.add_argument("--rooms", type=int, default=4)
    ap.add_argument("--room-kinds", default="varied-rooms,cad-rooms")
    ap.add_argument("--no-color", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ck = zoo.load(args.model)
    report = {"model": Path(args.model).name, "votes": args.votes, "cpu": cpu_model(),
              "torch_threads": torch.get_num_threads()}
    lines = [f"model {Path(args.model).name}, votes {args.votes}, {report['cpu']}, {torch.get_num_threads()} threads", ""]
    report["real"] = measure_quality(ck, REAL, votes=args.votes)
    lines += table("held-out real scans", report["real"])
    if args.no_color:
        report["real_without_color"] = measure_quality(ck, REAL, votes=args.votes, without_color=True)
        lines += table("held-out real scans, colour removed", report["real_without_color"])
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [k for k in args.room_kinds.split(",") if k]:
            files = write_rooms(kind, args.rooms, Path(tmp))
            res = measure_quality(ck, [f + ":class:s3dis" for f in files], votes=args.votes)
            res["per_file"] = {Path(k).name: v for k, v in res["per_file"].items()}
            report[f"generated_{kind}"] = res
            lines += table(f"held-out generated rooms: synthetic:{kind} (validation seeds; say nothing about real "
                           f"scans)", res)
    if args.speed:
        cloud = read(str(HERE.parent / "examples" / "synthetic_room.ply"))
        segment_points(ck, cloud, votes=1)
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            segment_points(ck, cloud, votes=1)
            times.append(time.perf_counter() - t0)
        report["speed"] = {"file": "synthetic_room.ply", "points": len(cloud), "votes": 1,
                           "median_s": statistics.median(times), "all_s": times, "load": os.getloadavg()[0]}
        lines.append(f"speed: synthetic_room.ply ({len(cloud)} points), votes 1, in process: median "
                     f"{statistics.median(times):.3f} s of {args.repeats}; load {os.getloadavg()[0]:.2f}")
    report["load_at_end"] = os.getloadavg()[0]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
