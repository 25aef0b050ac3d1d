"""Every SALA layer of a model on one real region, both ways of reducing over neighbours (inference): slot by
slot (``pcseg.nn.gather.SlotPlan``) and on the whole (S*C, H*M) tensor, each forced; prints per layer its
queries M, neighbour cap H, S*C, slot steps and real pairs, and the two times in ms.

    python benchmarks/bench_slot_reduce.py --model sala-als --file examples/ign_lidarhd_77060_627760.laz \
        --half-width 60 [--threads 2]

``--half-width`` (metres, in the model's frame) crops a square region around the cloud's centre. Set
OMP_WAIT_POLICY in the environment to compare thread-pool policies (SlotPlan.pays reads it).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from pcseg.data import build_batch
from pcseg.engine.infer import prepare_inputs
from pcseg.io import read
from pcseg.models.zoo import load as load_model
from pcseg.nn.gather import SlotPlan, reals_first, slot_plan
from pcseg.nn.sala import SALA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detect import median_time  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sala-als")
    ap.add_argument("--file", required=True)
    ap.add_argument("--half-width", type=float, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ck = load_model(args.model)
    spec, sub = prepare_inputs(ck, read(args.file))
    pts = sub.points - sub.points.mean(axis=0)
    sel = np.all(np.abs(pts[:, :2]) < args.half_width, axis=1)
    batch = build_batch([pts[sel].astype(np.float32)], [sub.features[sel].astype(np.float32)], spec).to("cpu")
    calls = []
    hooks = [m.register_forward_pre_hook(lambda m, a: calls.append((m, a))) for m in ck.model.modules()
             if isinstance(m, SALA)]
    with torch.inference_mode():
        ck.model.eval()(batch)
    for h in hooks:
        h.remove()
    print(f"# {args.model}, {int(sel.sum())} points, {args.threads} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, load {os.getloadavg()[0]:.2f}")
    print(f"{'M':>7} {'H':>3} {'S*C':>4} {'steps':>5} {'pairs':>8} {'slots ms':>9} {'whole ms':>9}")
    pays = SlotPlan.pays
    total = {"slots": 0.0, "whole": 0.0}
    try:
        with torch.inference_mode():
            for layer, (q, s, nbs, f) in calls:
                row = {}
                for way in ("slots", "whole"):
                    SlotPlan.pays = (lambda self, c, calls=4, w=way: w == "slots")
                    row[way] = 1000 * median_time(lambda: layer(q, s, nbs, f), args.repeats)
                    total[way] += row[way]
                sc = layer.groups * layer.out_channels
                plan = slot_plan(reals_first(nbs, len(s)), len(s), sc)
                print(f"{len(q):7d} {nbs.shape[1]:3d} {sc:4d} {plan.steps:5d} {int(plan.counts.sum()):8d} "
                      f"{row['slots']:9.1f} {row['whole']:9.1f}")
    finally:
        SlotPlan.pays = pays
    print(f"all layers: slots {total['slots']:.1f} ms, whole {total['whole']:.1f} ms")


if __name__ == "__main__":
    main()
