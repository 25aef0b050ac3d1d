"""Long fuzz of the readers: many mutated real files through `pcseg info`, `convert` (and `segment`).

The seeds, mutations and verdicts are those of tests/test_fuzz_io.py (one definition of what a correct outcome
is); this runs many more cases from a seeded random generator and counts, per seed format and command, how
many mutated files were tried and how each ended. Accepted: exit 0 with a result that agrees with the input,
or exit 3 with one line. Everything else is listed (first few cases of each failure class).

    nice -n 15 env OMP_NUM_THREADS=1 python benchmarks/bench_fuzz.py --cases 2000 --seed 1
    ... --segment 20          # also 20 segment runs on mutated LAS/LAZ crops (about 4 s each)
    ... --keep /tmp/fuzz-fail # keep the failing mutated files there
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_fuzz_io as fz  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000, help="mutated files (each runs info and convert)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (the same seed gives the same cases)")
    ap.add_argument("--segment", type=int, default=0, help="extra segment runs on mutated LAS/LAZ crops")
    ap.add_argument("--model", default="sala-als", help="model for the segment runs")
    ap.add_argument("--only", default=None, help="comma-separated seed names (default: all)")
    ap.add_argument("--timeout", type=float, default=fz.IO_TIMEOUT, help="seconds before a case counts as a hang")
    ap.add_argument("--keep", type=Path, default=None, help="folder for the failing mutated files")
    ap.add_argument("--show", type=int, default=3, help="failures printed per class")
    args = ap.parse_args(argv)

    seeds = fz.build_seeds(str(fz.SHARED))
    names = sorted(seeds) if not args.only else args.only.split(",")
    rng = random.Random(args.seed)
    chooser = fz.RandomChooser(rng)
    tried = collections.Counter()
    verdicts: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    failures: dict[str, list[str]] = collections.defaultdict(list)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    plan = [("io", i) for i in range(args.cases)] + [("segment", i) for i in range(args.segment)]
    with tempfile.TemporaryDirectory(prefix="pcseg-bench-fuzz-") as tmp:
        work = Path(tmp)
        for k, (kind, i) in enumerate(plan):
            if kind == "io":
                seed = seeds[chooser.choice(names)]
                commands = ("info", "convert")
            else:
                seed = seeds[chooser.choice([n for n in ("las-1.2", "las-1.4-evlr", "laz-fixed-chunks",
                                                         "laz-real-bridge") if n in seeds])]
                commands = ("segment",)
            what, data = fz.mutate(seed, chooser)
            for command in commands:
                timeout = fz.SEGMENT_TIMEOUT if command == "segment" else args.timeout
                outcome = fz.run_case(command, data, seed.ext, work / "case", timeout, model=args.model)
                fam = seed.kind
                tried[(fam, command)] += 1
                verdicts[(fam, command)][outcome.verdict] += 1
                if outcome.verdict not in fz.ACCEPTED:
                    label = f"{outcome.verdict} [{fam} {command}]"
                    last = outcome.detail.splitlines()[-1][:200] if outcome.detail else ""
                    failures[label].append(f"{seed.name}: {what}: {last}")
                    if args.keep:
                        name = f"{len(failures[label]):03d}-{outcome.verdict.replace(' ', '_')}-{seed.name}.{seed.ext}"
                        (args.keep / name).write_bytes(data)
            if (k + 1) % 100 == 0:
                print(f"... {k + 1}/{len(plan)} files, {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)

    print(f"\n{sum(tried.values())} runs on {len(plan)} mutated files (seed {args.seed}, "
          f"{time.monotonic() - t0:.0f} s)\n")
    print(f"| format | command | tried | exit 0, correct | exit 3, one line | failures |")
    print("|---|---|---|---|---|---|")
    for (fam, command) in sorted(tried):
        v = verdicts[(fam, command)]
        bad = {k: c for k, c in v.items() if k not in fz.ACCEPTED}
        print(f"| {fam} | {command} | {tried[(fam, command)]} | {v['ok']} | {v['bad input']} | "
              f"{', '.join(f'{k}: {c}' for k, c in sorted(bad.items())) or 0} |")
    if failures:
        print("\nFailures:")
        for label, cases in sorted(failures.items()):
            print(f"  {label}: {len(cases)}")
            for c in cases[:args.show]:
                print(f"    {c}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
