"""Airborne model quality and speed on files it never trained on: the figures of an airborne model card.

For every validation file (each read with the class map its labels need; nothing is copied from
../shared/data):
- IoU of ground, vegetation and building (and the other classes present) and their mean, per file and pooled
  over the fully labelled files (class 1 of AHN3 tiles is "vegetation or other" and is not scored);
- the ASPRS codes after the vegetation height split (ground, low / medium / high vegetation, building, ...),
  per file, where the file labels them;
- ground / non-ground total error and ground IoU on every file (the ground-only files included);
- segmentation speed at ``--votes`` (points per second of the original file; reading excluded) and the
  network passes per subsampled point.

    python benchmarks/bench_als.py --model MODEL [--votes 1] [--bf16] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pcseg.data.classmaps import builtin_class_map  # noqa: E402
from pcseg.engine.infer import segment_points  # noqa: E402
from pcseg.engine.metrics import confusion_matrix, scores  # noqa: E402
from pcseg.engine.options import metres_or_off  # noqa: E402
from pcseg.engine.segment import airborne_rules, asprs_prediction, class_map_of, refine_and_split  # noqa: E402
from pcseg.io import read  # noqa: E402
from pcseg.models import zoo  # noqa: E402

DATA = HERE.parents[1] / "shared" / "data"
VALIDATION = [  # (file, class map of its labels, fully labelled)
    ("als/test_data_77060_627760_LA93_IGN69.laz", "als", True),       # IGN LiDAR HD, flat, France (README)
    ("als/ign_mnx_crop_3.laz", "als", True),                          # IGN LiDAR HD, fields (README)
    ("als/test_semis_2024_0751_6690_LA93_IGN69.laz", "als", True),    # IGN, hilly: ground spans 57 m, 1 km^2
    ("als/ahn3_amsterdam_2386_9702.laz", "als-ahn3", True),           # AHN3, the Netherlands: another sensor
    ("als/autzen_trim.las", "als-ground", False),                     # Oregon, USA: ground / non-ground (README)
    ("als_ground/bcts_4.laz", "als-ground", False),                   # British Columbia forest: ground only
]
SPEED = [HERE.parent / "examples" / "ign_lidarhd_77060_627760.laz",   # the README example (24 pts/m^2)
         DATA / "als" / "test_semis_2021_0382_6565_LA93_IGN69.laz"]  # a sparse 1 km^2 tile (0.3 pts/m^2)
GROUND_EXCLUDED = (0, 7, 12, 18, 65, 66)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--votes", type=int, default=1)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--ground-tolerance", help="metres or 'off' (default: the model card's)")
    ap.add_argument("--building-min-height", help="metres or 'off' (default: the model card's)")
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ck = zoo.load(args.model, "cpu")
    if "ASPRS" not in class_map_of(ck).raw_kind:
        print(f"{args.model}: not an airborne (ASPRS) model", file=sys.stderr)
        return 2
    # Every model is scored on the als classes through the ASPRS codes it writes (low / medium / high
    # vegetation of an asprs-class model count as vegetation), so that models of either class set compare.
    als, asprs = builtin_class_map("als"), builtin_class_map("asprs")
    names = als.names
    split = airborne_rules(ck, ground_tolerance=metres_or_off(args.ground_tolerance, "--ground-tolerance"),
                           building_min_height=metres_or_off(args.building_min_height, "--building-min-height"))
    g = names.index("ground")
    pooled = np.zeros((len(names), len(names)), np.int64)
    ground_pooled = np.zeros((2, 2), np.int64)
    report: dict = {"votes": args.votes, "bf16": args.bf16, "threads": args.threads, "per_file": {}}
    if split is not None:
        report["ground_tolerance"] = split["ground_tolerance"] if np.isfinite(split["ground_tolerance"]) else "off"
        report["building_min_height"] = split["building_min_height"] or "off"
    for rel, map_name, full in VALIDATION:
        path = DATA / rel
        cloud = read(str(path))
        raw = np.asarray(cloud.fields["classification"]).astype(np.int64)
        pred, codes, seg = predict_als(ck, split, cloud, votes=args.votes, bf16=args.bf16)
        cm, s = score_als(pred, raw, map_name)
        entry = {"miou": s["miou"], "iou": s["iou"], "points": len(cloud), "seconds": round(seg.seconds, 2)}
        if full:
            pooled += cm
        keep = ~np.isin(raw, GROUND_EXCLUDED)
        gt, gp = (raw[keep] == 2).astype(np.int64), (pred[keep] == g).astype(np.int64)
        gcm = np.bincount(gt * 2 + gp, minlength=4).reshape(2, 2)
        ground_pooled += gcm
        entry["ground_total_error"] = float((gcm[0, 1] + gcm[1, 0]) / max(gcm.sum(), 1))
        entry["ground_iou"] = float(gcm[1, 1] / max(gcm[1, 1] + gcm[0, 1] + gcm[1, 0], 1))
        if map_name == "als":
            a = scores(confusion_matrix(asprs.encode(codes), asprs.encode(raw), asprs.num_classes), asprs.names)
            entry["asprs_iou"] = a["iou"]
        report["per_file"][Path(rel).name] = entry
        iou = s["iou"]
        print(f"{Path(rel).name:48s} ground {fmt(iou['ground'])} vegetation {fmt(iou['vegetation'])} building "
              f"{fmt(iou['building'])} | ground/non-ground error {100 * entry['ground_total_error']:5.1f}% "
              f"ground IoU {100 * entry['ground_iou']:5.1f} | {seg.seconds:6.1f} s", flush=True)
    p = scores(pooled, names)
    three = [p["iou"][k] for k in ("ground", "vegetation", "building")]
    report["pooled"] = {"files": [Path(r).name for r, _, f in VALIDATION if f], "iou": p["iou"], "miou": p["miou"],
                        "mean_ground_vegetation_building": float(np.mean(three)),
                        "ground_total_error": float((ground_pooled[0, 1] + ground_pooled[1, 0]) / ground_pooled.sum()),
                        "ground_iou": float(ground_pooled[1, 1] / (ground_pooled.sum() - ground_pooled[0, 0]))}
    print(f"pooled over the fully labelled files: ground {fmt(three[0])} vegetation {fmt(three[1])} building "
          f"{fmt(three[2])} mean {fmt(np.mean(three))}; ground/non-ground over all files: error "
          f"{100 * report['pooled']['ground_total_error']:.1f}%, ground IoU {100 * report['pooled']['ground_iou']:.1f}")
    if not args.no_speed:
        report["speed"] = {}
        load = os.getloadavg()
        for rel in SPEED:
            cloud = read(str(rel))
            t = time.perf_counter()
            seg = segment_points(ck, cloud, votes=1, bf16=args.bf16)
            dt = time.perf_counter() - t
            report["speed"][Path(rel).name] = {"points": len(cloud), "seconds": round(dt, 2),
                                              "points_per_second": round(len(cloud) / dt),
                                              "regions": seg.regions, "passes": round(seg.passes, 3),
                                              "subsampled_points": seg.sub_points}
            print(f"speed {Path(rel).name}: {len(cloud):,} points in {dt:.2f} s = {len(cloud) / dt:,.0f} points/s "
                  f"({seg.regions} regions, {seg.passes:.2f} passes per point, votes 1, {args.threads} threads, "
                  f"load {load[0]:.2f})", flush=True)
        report["speed_load"] = load[0]
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo), for the figures' records."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def predict_als(ck, split, cloud, votes: int = 1, bf16: bool = False):
    """(the ``als`` class id of every point, its ASPRS code, the :func:`segment_points` result) of ``ck`` on
    ``cloud`` with the per-point tests ``split`` (:func:`airborne_rules`): what ``pcseg segment`` writes. Code 1
    (the model's "none of the named classes") counts as ``other``."""
    als = builtin_class_map("als")
    seg = segment_points(ck, cloud, votes=votes, bf16=bf16)
    labels, height = refine_and_split(ck, split, cloud.xyz, seg.labels, seg.runner_up, seg.hag)
    codes = asprs_prediction(ck, labels, height, split)
    pred = als.encode(codes)
    pred[pred < 0] = als.names.index("other")
    return pred, codes, seg


def score_als(pred: np.ndarray, raw: np.ndarray, map_name: str):
    """(confusion matrix, :func:`scores`) of ``als`` predictions against raw ASPRS codes read with the class map
    ``map_name`` (``als``, ``als-ahn3``, ``als-ground``: ignored and partial labels are not scored)."""
    names = builtin_class_map("als").names
    cm = confusion_matrix(pred, builtin_class_map(map_name).encode(raw), len(names))
    return cm, scores(cm, names)


def fmt(v) -> str:
    return "  -  " if v is None else f"{100 * v:5.1f}"


if __name__ == "__main__":
    sys.exit(main())
