"""Export every shipped segmentation model (`pcseg export`) and compare it with the original on a real tile.

For each model: .pt2 (torch.export) always, .onnx when onnx/onnxscript/onnxruntime are installed; prints the
largest |logit difference| and the share of identical labels, file sizes and export times.
Usage: python benchmarks/check_export.py [--input FILE] [--models a,b] [--no-onnx]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pcseg.engine.export import compare, compare_onnx, export_model  # noqa: E402
from pcseg.io import read  # noqa: E402
from pcseg.models import zoo  # noqa: E402

INDOOR = HERE.parent.parent / "shared" / "data" / "indoor" / "scannet_scene0000_00.ply"
EXAMPLE = HERE.parent / "examples" / "ign_lidarhd_77060_627760.laz"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=None, help="comma-separated (default: every shipped segmentation model)")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    names = args.models.split(",") if args.models else [n for n, c in zoo.shipped().items()
                                                         if c.get("task", "segment") == "segment"]
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
        onnx = not args.no_onnx
    except ImportError:
        onnx = False
    report = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            ck = zoo.load(name)
            raw = str(ck.card["classes"].get("raw_kind", ""))
            src = EXAMPLE if "ASPRS" in raw else INDOOR
            cloud = read(str(src))
            entry = {"input": src.name}
            for ext in (".pt2", ".onnx") if onnx else (".pt2",):
                path = Path(tmp) / f"{name}{ext}"
                t = time.perf_counter()
                export_model(ck, cloud, path)
                seconds = time.perf_counter() - t
                r = compare(ck, zoo.load(str(path)), cloud) if ext == ".pt2" else compare_onnx(ck, path, cloud)
                entry[ext] = {"export_seconds": round(seconds, 1), "bytes": path.stat().st_size, **r}
                print(f"{name:14s} {ext:6s} {src.name}: max |logit diff| {r['max_abs_logit_diff']:.2e}, "
                      f"{100 * r['labels_identical']:.2f}% identical labels on {r['points']:,} points; "
                      f"{path.stat().st_size / 1e6:.1f} MB, exported in {seconds:.0f} s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
            report[name] = entry
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
