"""Forward and training-step time of pcseg's networks against another pcseg checkout, side by side.

Both versions run in fresh subprocesses, alternately (A, B, A, B, ...), on identical batches: real ScanNet
spheres (scene0000_00, radius 2 m, 4 cm grid; read from ../shared/data, nothing copied), the same pyramid and
the same neighbour caps ([24, 36, 41, 39, 30] for KP-FCNN as in the KPConv-PyTorch comparison of the speed
issue; SALANet's S3DIS caps 26/31/38/41/39). Each process builds the batch once, warms up, and reports the
median of ``--repeats`` forward passes (eval, no autograd) and training steps (forward + cross-entropy +
backward + SGD step). Ratios are what to read; absolute times only with the thread count and load printed in
the header.

    git worktree add /tmp/pcseg-base <commit>      # the version to compare against
    python benchmarks/bench_speed_vs_baseline.py --baseline /tmp/pcseg-base [--threads 2] [--rounds 3]

``--bf16`` adds rows with torch.autocast(bfloat16) on the CPU for the current version.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCAN = HERE.parents[1] / "shared" / "data" / "indoor" / "scannet_scene0000_00.ply"

CASES = {  # name: (network, options, input features, points)
    "salanet36-15k": ("salanet", {"width": 36}, 5, 15_000),
    "kpfcnn-rigid-15k": ("kpfcnn", {"deformable": False}, 4, 15_000),
    "kpfcnn-rigid-50k": ("kpfcnn", {"deformable": False}, 4, 50_000),
    "kpfcnn-deform-15k": ("kpfcnn", {"deformable": True}, 4, 15_000),
}
KPCONV_PYTORCH_LIMITS = [24, 36, 41, 39, 30]


def child(case: str, repeats: int, threads: int, bf16: bool) -> dict:
    import dataclasses

    import numpy as np
    import torch

    from pcseg.data import build_batch
    from pcseg.models import build

    sys.path.insert(0, str(HERE))
    from bench_detect import median_time
    from bench_train_step import spheres

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    name, opts, feats, points = CASES[case]
    clouds = spheres(points)
    rng = np.random.default_rng(0)
    model = build(name, num_classes=13, in_features=feats, **opts)
    spec = model.pyramid_spec
    if name == "kpfcnn":
        spec = dataclasses.replace(spec, neighbor_limits=KPCONV_PYTORCH_LIMITS)
    batch = build_batch(clouds, [np.ones((len(c), feats), np.float32) for c in clouds], spec,
                        [rng.integers(0, 13, len(c)) for c in clouds]).to("cpu")
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

    def forward():
        model.eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(batch)

    def step():
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    out = {label: median_time(fn, repeats) for label, fn in (("forward", forward), ("train_step", step))}
    out["points"] = int(batch.points[0].shape[0])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", help="root of the pcseg checkout to compare against")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternating A/B processes per case")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per process")
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "BF16"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.repeats, args.threads, args.child[1] == "1")))
        return 0
    if not SCAN.exists():
        print(f"skipped: {SCAN} is not there (the benchmark reads ../shared/data)", file=sys.stderr)
        return 0
    if not args.baseline or not (Path(args.baseline) / "pcseg").is_dir():
        print("skipped: give --baseline, a pcseg checkout to compare against (git worktree add DIR COMMIT)",
              file=sys.stderr)
        return 0
    versions = {"baseline": str(Path(args.baseline).resolve()), "current": str(HERE.parent)}
    load = os.getloadavg()
    print(f"# threads {args.threads}, load before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{args.rounds} alternating rounds x {args.repeats} timed calls, medians")
    runs = [("baseline", False), ("current", False)] + ([("current", True)] if args.bf16 else [])
    print(f"{'case':20s} {'points':>7s} " + " ".join(f"{v + (' bf16' if b else ''):>22s}" for v, b in runs)
          + f" {'fwd x':>6s} {'step x':>6s}")
    for case in args.cases:
        results: dict = {r: [] for r in runs}
        for _ in range(args.rounds):
            for version, bf16 in runs:
                env = {**os.environ, "PYTHONPATH": versions[version], "OMP_NUM_THREADS": str(args.threads)}
                out = subprocess.run([sys.executable, __file__, "--child", case, "1" if bf16 else "0",
                                      "--threads", str(args.threads), "--repeats", str(args.repeats)],
                                     env=env, capture_output=True, text=True, cwd=versions[version])
                if out.returncode:
                    print(f"{case}: {version} failed: {out.stderr.strip().splitlines()[-1]}", file=sys.stderr)
                    return 1
                results[(version, bf16)].append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {r: {k: statistics.median(x[k] for x in v) for k in ("forward", "train_step")} for r, v in
               results.items()}
        base, cur = med[("baseline", False)], med[("current", False)]
        cells = " ".join(f"{m['forward']:9.3f} / {m['train_step']:7.3f} s" for m in med.values())
        print(f"{case:20s} {results[runs[0]][0]['points']:7d} {cells} {base['forward'] / cur['forward']:6.2f} "
              f"{base['train_step'] / cur['train_step']:6.2f}")
    load = os.getloadavg()
    print(f"# load after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
