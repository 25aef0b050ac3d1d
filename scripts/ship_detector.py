#!/usr/bin/env python3
"""Ship a trained detector as models/<name>.safetensors with its card models/<name>.json.

The card gets KITTI AP (R40; BEV and 3D; easy / moderate / hard; the benchmark's overlaps and the devkit's looser
set) on the held-out frames named in the checkpoint's card, and the same on its training frames (fit, not
quality), measured here; and a free-text note.
Usage:
    python scripts/ship_detector.py NAME RUN_DIR/last.safetensors --kitti ../shared/data/kitti/training
        [--note TEXT] [--extra KEY=FILE.json ...]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from pcseg.data.detection import KittiFrame, list_kitti_frames
from pcseg.engine.detect import evaluate_frames, load_detector
from pcseg.models.zoo import MODELS_DIR, write_card


def ap_table(model, frames) -> dict:
    """{"CLASS METRIC @IoU": {difficulty: AP R40}, "CLASS num_gt": {...}} at both overlap sets."""
    result = evaluate_frames(model, frames, min_overlap="both")
    table = {}
    for res in (result, result["loose"]):
        for cls, entry in res["classes"].items():
            iou = res["min_overlap"][cls]
            for metric in ("bev", "3d"):
                table[f"{cls} {metric} @{iou:g}"] = {d: None if v is None else round(v, 1)
                                                    for d, v in entry[metric]["R40"].items()}
            table[f"{cls} num_gt"] = entry["num_gt"]
    return table


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("checkpoint")
    ap.add_argument("--kitti", required=True, help="KITTI training/ folder (velodyne, label_2, calib)")
    ap.add_argument("--note", default="")
    ap.add_argument("--extra", action="append", default=[], help="KEY=FILE.json: the JSON file goes in the card")
    args = ap.parse_args()
    model, card = load_detector(args.checkpoint)[:2]
    held_out = card["training"]["held_out"]
    trained = [f for f in list_kitti_frames(args.kitti) if f in card["training"]["kitti_frames"]]
    load = lambda ids: [KittiFrame.load(args.kitti, f, fov_only=True) for f in ids]  # noqa: E731
    extra = {
        "quality": {"frames": held_out, "AP_R40": ap_table(model, load(held_out)),
                    "note": "frames held out of training; KITTI's evaluation rules (pcseg.engine.detection_eval)"},
        "fit_on_training_frames": {"frames": trained, "AP_R40": ap_table(model, load(trained)),
                                   "note": "AP on the frames it was trained on: shows fit, not quality"},
        "note": args.note,
    }
    for item in args.extra:
        key, _, path = item.partition("=")
        extra[key] = json.loads(Path(path).read_text())
    dest = MODELS_DIR / f"{args.name}.safetensors"
    shutil.copyfile(args.checkpoint, dest)
    print(write_card(args.name, dest, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
