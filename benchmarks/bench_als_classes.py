"""Where an airborne model puts the classes surveyors argue about (issue #27 item 5): low vegetation and water.

For every file of the set holding ASPRS code 3 (low vegetation: IGN LiDAR HD's 0-0.5 m above ground) or 9
(water), the ASPRS codes ``pcseg segment --as-classification`` writes for those points (network at ``--votes``,
then the card's per-point tests and the height split): how many of them come out as ground (2), low / medium /
high vegetation (3/4/5), building (6), water (9) or anything else. The ``als`` classes follow the specifications
(see the model cards): low vegetation is vegetation, water is its own class; so every low-vegetation point
written as 2 and every water point written as 2 is an error by IGN's and ASPRS's definitions.

    python benchmarks/bench_als_classes.py --model MODEL [--files val|test|FILE...] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_als import VALIDATION, cpu_model, predict_als  # noqa: E402
from bench_als_robustness import TEST  # noqa: E402
from pcseg.engine.segment import airborne_rules  # noqa: E402
from pcseg.io import read  # noqa: E402
from pcseg.models import zoo  # noqa: E402

DATA = HERE.parents[1] / "shared" / "data"
COLUMNS = (("ground", (2,)), ("low veg.", (3,)), ("medium veg.", (4,)), ("high veg.", (5,)), ("building", (6,)),
           ("water", (9,)), ("other", None))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--files", nargs="+", default=["val", "test"])
    ap.add_argument("--votes", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files: list[Path] = []
    for f in args.files:
        group = {"val": VALIDATION, "test": TEST}.get(f)
        files += [DATA / rel for rel, *_ in group] if group is not None else [Path(f)]
    ck = zoo.load(args.model)
    split = airborne_rules(ck)
    out = {"model": Path(args.model).name, "votes": args.votes, "cpu": cpu_model(),
           "threads": torch.get_num_threads(), "rows": []}
    print(f"model {out['model']}, votes {args.votes}, {out['cpu']}, {out['threads']} threads\n")
    print("| file | truth | points | " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|---|---|---|" + "---|" * len(COLUMNS))
    for path in files:
        cloud = read(str(path))
        raw = np.asarray(cloud.fields.get("classification", np.zeros(len(cloud), np.int64))).astype(np.int64)
        if not np.isin(raw, (3, 9)).any():
            continue
        codes = predict_als(ck, split, cloud, votes=args.votes)[1]
        for truth, name in ((3, "low veg. (3)"), (9, "water (9)")):
            m = raw == truth
            if not m.any():
                continue
            c = codes[m]
            known = np.zeros(m.sum(), bool)
            shares = {}
            for col, vals in COLUMNS:
                hit = np.isin(c, vals) if vals is not None else ~known
                if vals is not None:
                    known |= hit
                shares[col] = float(hit.mean())
            out["rows"].append({"file": path.name, "truth": truth, "points": int(m.sum()), "shares": shares})
            print(f"| {path.name} | {name} | {int(m.sum()):,} | "
                  + " | ".join(f"{100 * shares[col]:.1f}%" for col, _ in COLUMNS) + " |")
    print(f"\nload {os.getloadavg()[0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
