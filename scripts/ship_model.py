#!/usr/bin/env python3
"""Ship a trained checkpoint as models/<name>.safetensors with its card models/<name>.json.

The card gets: what it was trained on (from the checkpoint), quality measured here with `pcseg segment`
(votes, per-file and pooled mIoU/OA/per-class IoU on files it did not train on), and a free-text note.
Usage:
    python scripts/ship_model.py NAME RUN_DIR/best.safetensors --eval FILE[:FIELD] ... [--note TEXT] [--votes 3]
        [--extra KEY=FILE.json ...]

The shipped checkpoint's own card is completed too (so that the file works the same outside the zoo): data
paths made relative, the one `pcseg train` command that reproduces it, and the vegetation height rule of an
airborne class set when the trainer that wrote it predates them.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import dataclasses
import json

from pcseg.engine.distill import DistillConfig
from pcseg.engine.quality import measure_quality, parse_eval_spec
from pcseg.engine.train import TrainConfig, portable_path, reproduce_command
from pcseg.engine.vegetation import default_building_test, default_split
from pcseg.models.checkpoint import load_checkpoint, save_checkpoint
from pcseg.models.zoo import MODELS_DIR, write_card


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("checkpoint")
    ap.add_argument("--eval", action="append", default=[],
                    help="FILE[:FIELD[:CLASSMAP]]: ground truth in FIELD, read with a built-in class map of the same "
                         "classes when its raw codes differ from the model's (e.g. nyu40-to-s3dis for ScanNet)")
    ap.add_argument("--votes", type=int, default=3)
    ap.add_argument("--note", default="")
    ap.add_argument("--trained-on-note", default="")
    ap.add_argument("--extra", action="append", default=[], help="KEY=FILE.json: the JSON file goes in the card")
    args = ap.parse_args()
    dest = MODELS_DIR / f"{args.name}.safetensors"
    ck = load_checkpoint(args.checkpoint)
    card = {k: v for k, v in ck.card.items() if k not in ("format", "version")}
    names = card["classes"]["names"]
    if default_split(names):  # the rule's current keys (ground test) over a card written before them
        card["vegetation_split"] = {**default_split(names), **{k: v for k, v in card.get("vegetation_split", {}).items()
                                                               if k != "source"}}
    if "building_test" not in card and default_building_test(names):
        card["building_test"] = default_building_test(names)
    card["trained_on"] = [portable_path(p) for p in card.get("trained_on", [])]
    card["validated_on"] = [portable_path(p) for p in card.get("validated_on", [])]
    training = card.get("training", {})
    if "config" in training:
        kind = DistillConfig if card.get("teacher") else TrainConfig  # a distilled student reruns with pcseg distill
        cfg = kind(**{k: v for k, v in training["config"].items() if k in {f.name for f in dataclasses.fields(kind)}})
        training["command"] = reproduce_command(cfg)
        training["config"] = {**training["config"], "data": [portable_path(p) for p in cfg.data],
                              "val": [portable_path(p) for p in cfg.val], "cache_dir": None}
    save_checkpoint(dest, ck.model, card)
    shutil.copystat(args.checkpoint, dest)
    ck = load_checkpoint(dest)
    quality = measure_quality(ck, args.eval, args.votes, echo=lambda m: print(m, file=sys.stderr))
    extra = {
        "task": "segment",
        "trained_on": ck.card.get("trained_on", []),
        "validated_on": ck.card.get("validated_on", []),
        "measured_on": [portable_path(parse_eval_spec(s)[0]) for s in args.eval],
        "quality": quality,
        "note": args.note,
    }
    if args.trained_on_note:
        extra["trained_on_note"] = args.trained_on_note
    for item in args.extra:
        key, _, path = item.partition("=")
        extra[key] = json.loads(Path(path).read_text())
    print(write_card(args.name, dest, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
