#!/usr/bin/env python3
"""Ship a trained checkpoint as models/<name>.safetensors with its card models/<name>.json.

The card gets: what it was trained on (from the checkpoint), quality measured here with `pcseg segment`
(votes, per-file and pooled mIoU/OA/per-class IoU on files it did not train on), and a free-text note.
Usage:
    python scripts/ship_model.py NAME RUN_DIR/best.safetensors --eval FILE[:FIELD] ... [--note TEXT] [--votes 3]
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pcseg.engine.quality import measure_quality
from pcseg.models.checkpoint import load_checkpoint
from pcseg.models.zoo import MODELS_DIR, write_card


def _short(path: str) -> str:
    """Paths relative to the shared data folder, as a reader of the card can find them."""
    marker = "/shared/data/"
    return "../shared/data/" + path.split(marker, 1)[1] if marker in path else path


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
    args = ap.parse_args()
    dest = MODELS_DIR / f"{args.name}.safetensors"
    shutil.copyfile(args.checkpoint, dest)
    ck = load_checkpoint(dest)
    quality = measure_quality(ck, args.eval, args.votes, echo=lambda m: print(m, file=sys.stderr))
    extra = {
        "task": "segment",
        "trained_on": [_short(p) for p in ck.card.get("trained_on", [])],
        "validated_on": [_short(p) for p in ck.card.get("validated_on", [])],
        "measured_on": [_short(s.split(":")[0]) for s in args.eval],
        "quality": quality,
        "note": args.note,
    }
    if args.trained_on_note:
        extra["trained_on_note"] = args.trained_on_note
    print(write_card(args.name, dest, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
