"""Ground / non-ground quality of a pcseg model against classic ground filters (CSF, and SMRF where installed).

What: for each airborne tile, pcseg's predicted ``ground`` class (one forward pass per region with
``--votes 1``, followed by the model card's per-point building and ground tests as `pcseg segment` runs them)
is turned into a ground / non-ground mask and scored against the file's ASPRS ``classification``, next to the
Cloth Simulation Filter (CSF, Zhang et al. 2016) and the Simple Morphological Filter (SMRF, Pingel et al. 2013)
run on exactly the same points. Per file and method, and pooled over all files (confusion counts summed, then
the rates), it reports:

- total error: misclassified points / scored points,
- type I error: ground called non-ground / true ground points,
- type II error: non-ground called ground / true non-ground points,
- ground IoU: TP / (TP + FN + FP) for the ground class,
- seconds: wall time of the method alone (pcseg: ``segment_points``, incl. its grid subsampling, and the
  tests; CSF and SMRF: the filter call incl. handing the points over), not reading the file or loading the
  model.

Why: a learned segmenter should at least match a standard, parameter-light ground filter on ground / non-ground
before its ground class is worth using for DTMs; this gives a fair, rerunnable comparison on files pcseg never
trained on.

Truth: ASPRS class 2 is ground, every other code non-ground (AHN3 and autzen put all non-ground in code 1, and
ASPRS 10 rail / 11 road surface count as non-ground, as their codes are not 2), EXCEPT the codes
0 (never classified), 7 (low noise), 12 (overlap), 18 (high noise), 65 (IGN artefacts) and 66 (IGN virtual
points), which are not scored. Every method still receives every point of the file (noise included), as a user
would hand them a raw tile; ``--drop-excluded`` removes the unscored codes from every method's input instead.
Reading the numbers: IGN LiDAR HD's class 3 (low vegetation, roughly 0-0.5 m above the ground) counts as
non-ground here, but it lies within CSF's and SMRF's 0.5 m threshold, so the filters call nearly all of it ground:
on grass or crop tiles (``ign_mnx_crop_3``) that shows as a large type II error for them, with a type I near 0.

Settings, fixed for all files (no per-file tuning, so the comparison is fair):

- pcseg: ``--model`` (shipped name or checkpoint path), ``--votes`` (default 1), CPU, ``torch`` threads as
  printed in the header (``--threads`` sets them).
- CSF (PyPI ``cloth-simulation-filter``, module ``CSF``), its usual settings for mixed terrain:
  bSloopSmooth=True, cloth_resolution=0.5, rigidness=2, time_step=0.65, class_threshold=0.5, iterations=500
  (spelt ``interations`` in its API), run on coordinates minus the cloud's minimum corner, no cloth export.
- SMRF: PDAL's ``filters.smrf`` (and its ``pdal`` Python bindings) is not installable from PyPI without a
  toolchain / libpdal, so SMRF comes from the pure-Python PyPI package ``pysmrf`` (a numpy/scipy port of
  Pingel's ``smrf``; it pulls rasterio, pandas, click) when that is installed, with PDAL's defaults:
  cell 1.0 m, window radii 1..18 cells (18 m), slope 0.15, threshold 0.5 m, scalar 1.25, 1 worker,
  on coordinates minus the minimum corner. Without ``pysmrf`` the SMRF rows are skipped with a note.

Both filters are benchmark-only dependencies, never dependencies of pcseg:

    pip install cloth-simulation-filter          # required
    pip install pysmrf                           # optional, adds SMRF rows

Run (from anywhere; default files are the validation tiles below, resolved relative to this script):

    python benchmarks/bench_ground_vs_csf.py --model sala-als [--files F1 F2 ...] [--votes 1] \\
        [--methods pcseg csf smrf] [--threads N] [--drop-excluded] [--json out.json]

The machine may be shared: the header prints the torch thread count and the load average next to the timings.
A missing file, a missing CSF or a model without a ``ground`` class is reported on one line, exit code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
if str(REPO) not in sys.path:  # run from anywhere, also without ``pip install -e .``
    sys.path.insert(0, str(REPO))
DEFAULT_FILES = [
    DATA / "als" / "test_data_77060_627760_LA93_IGN69.laz",
    DATA / "als" / "ign_mnx_crop_3.laz",
    DATA / "als" / "autzen_trim.las",
    DATA / "als" / "test_semis_2024_0751_6690_LA93_IGN69.laz",
    DATA / "als" / "ahn3_amsterdam_2386_9702.laz",
    DATA / "als_ground" / "bcts_4.laz",
]
GROUND_CODE = 2
EXCLUDED_CODES = (0, 7, 12, 18, 65, 66)
CSF_SETTINGS = {"bSloopSmooth": True, "cloth_resolution": 0.5, "rigidness": 2, "time_step": 0.65,
                "class_threshold": 0.5, "interations": 500}
SMRF_SETTINGS = {"cellsize": 1.0, "windows": 18, "slope_threshold": 0.15, "elevation_threshold": 0.5,
                 "elevation_scaler": 1.25, "workers": 1}
METHODS = ("pcseg", "csf", "smrf")


class Fail(Exception):
    """A one-line, user-facing failure: printed without a traceback, exit code 2."""


@contextlib.contextmanager
def quiet_stdout():
    """Silence C-level writes to stdout (CSF prints its progress there) for the duration of the block."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def import_csf():
    try:
        import CSF
    except ImportError:
        raise Fail("CSF is not installed: pip install cloth-simulation-filter (benchmark-only dependency)") from None
    return CSF


def import_smrf():
    try:
        import pysmrf
    except ImportError:
        return None
    return pysmrf


def csf_ground(csf_module, xyz: np.ndarray) -> np.ndarray:
    """Boolean ground mask from CSF with the fixed CSF_SETTINGS."""
    csf = csf_module.CSF()
    for name, value in CSF_SETTINGS.items():
        setattr(csf.params, name, value)
    csf.setPointCloud(np.ascontiguousarray(xyz - xyz.min(axis=0)))
    ground, non_ground = csf_module.VecInt(), csf_module.VecInt()
    with quiet_stdout():
        csf.do_filtering(ground, non_ground, False)  # False: do not write cloth_nodes.txt to the cwd
    mask = np.zeros(len(xyz), dtype=bool)
    mask[np.asarray(ground, dtype=np.int64)] = True
    return mask


def smrf_ground(smrf_module, xyz: np.ndarray) -> np.ndarray:
    """Boolean ground mask from pysmrf with the fixed SMRF_SETTINGS (PDAL's defaults)."""
    local = xyz - xyz.min(axis=0)
    result = smrf_module.classify(local[:, 0], local[:, 1], local[:, 2], **SMRF_SETTINGS)
    return np.asarray(result.is_ground, dtype=bool)


def confusion(truth_ground: np.ndarray, pred_ground: np.ndarray) -> dict:
    """tp/fn/fp/tn counts for the ground class (both arrays: scored points only)."""
    tp = int(np.count_nonzero(truth_ground & pred_ground))
    fn = int(np.count_nonzero(truth_ground & ~pred_ground))
    fp = int(np.count_nonzero(~truth_ground & pred_ground))
    tn = int(np.count_nonzero(~truth_ground & ~pred_ground))
    return {"tp": tp, "fn": fn, "fp": fp, "tn": tn}


def rates(c: dict) -> dict:
    def ratio(a, b):
        return a / b if b else float("nan")

    n = c["tp"] + c["fn"] + c["fp"] + c["tn"]
    return {"total_error": ratio(c["fn"] + c["fp"], n), "type1_error": ratio(c["fn"], c["tp"] + c["fn"]),
            "type2_error": ratio(c["fp"], c["fp"] + c["tn"]), "ground_iou": ratio(c["tp"], c["tp"] + c["fn"] + c["fp"])}


def pct(x: float) -> str:
    return "   nan" if x != x else f"{100 * x:6.2f}"


def row(name: str, method: str, points: int, scored: int, r: dict, seconds: float) -> str:
    return (f"{name:<44} {method:<6} {points:>9} {scored:>9} {pct(r['total_error'])} {pct(r['type1_error'])} "
            f"{pct(r['type2_error'])} {pct(r['ground_iou'])} {seconds:8.2f}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="pcseg model: shipped name or checkpoint path")
    p.add_argument("--files", nargs="+", default=None, help="LAS/LAZ files (default: the 6 validation tiles)")
    p.add_argument("--votes", type=int, default=1, help="pcseg votes per point (default 1)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="methods to run (default all; smrf is skipped with a note when pysmrf is missing)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--drop-excluded", action="store_true",
                   help="remove the unscored codes (0 7 12 18 65 66) from every method's input")
    p.add_argument("--json", default=None, help="also write per-file and pooled results to this JSON file")
    return p.parse_args(argv)


def run(args) -> int:
    files = [Path(f) for f in args.files] if args.files else DEFAULT_FILES
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise Fail(f"no such file: {', '.join(missing)}")
    methods = list(dict.fromkeys(args.methods))
    csf_module = import_csf() if "csf" in methods else None
    smrf_module = import_smrf() if "smrf" in methods else None
    notes = []
    if "smrf" in methods and smrf_module is None:
        methods.remove("smrf")
        notes.append("SMRF skipped: pysmrf not installed (pip install pysmrf); PDAL's Python bindings need libpdal")

    import torch

    from pcseg.engine.infer import segment_points
    from pcseg.engine.segment import airborne_rules, refine_and_split
    from pcseg.errors import PcsegError
    from pcseg.io import read
    from pcseg.models import zoo

    if args.threads:
        torch.set_num_threads(args.threads)
    ck = ground_id = None
    load_s = 0.0
    if "pcseg" in methods:
        t0 = time.perf_counter()
        try:
            ck = zoo.load(args.model, "cpu")
        except PcsegError as e:
            raise Fail(f"cannot load model: {e}") from None
        load_s = time.perf_counter() - t0
        names = ck.card.get("classes", {}).get("names", [])
        if "ground" not in names:
            raise Fail(f"model {args.model!r} has no 'ground' class (classes: {', '.join(names) or 'none'})")
        ground_id = names.index("ground")

    threads, load = torch.get_num_threads(), os.getloadavg()
    print(f"# ground vs non-ground | model {args.model} votes {args.votes} | torch threads {threads} | "
          f"loadavg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} | model load {load_s:.2f}s")
    print(f"# CSF {CSF_SETTINGS}")
    if "smrf" in methods:
        print(f"# SMRF (pysmrf {getattr(smrf_module, '__version__', '?')}) {SMRF_SETTINGS}")
    print(f"# truth: class {GROUND_CODE} = ground, other = non-ground, not scored: {EXCLUDED_CODES}"
          f"{' (also removed from the input)' if args.drop_excluded else ''}")
    for note in notes:
        print(f"# {note}")
    header = (f"{'file':<44} {'method':<6} {'points':>9} {'scored':>9} {'total%':>6} {'typeI%':>6} "
              f"{'typeII%':>6} {'gIoU%':>6} {'seconds':>8}")
    print(header)
    print("-" * len(header))

    pooled = {m: {"tp": 0, "fn": 0, "fp": 0, "tn": 0, "seconds": 0.0, "points": 0, "scored": 0} for m in methods}
    results = []
    for path in files:
        try:
            cloud = read(str(path))
        except PcsegError as e:
            raise Fail(str(e)) from None
        if "classification" not in cloud.fields:
            raise Fail(f"{path}: no classification field to score against")
        cls = np.asarray(cloud.fields["classification"]).astype(np.int64)
        scored = ~np.isin(cls, EXCLUDED_CODES)
        if args.drop_excluded:
            cloud = cloud.select(np.flatnonzero(scored))
            cls, scored = cls[scored], np.ones(int(scored.sum()), dtype=bool)
        truth = cls[scored] == GROUND_CODE
        for method in methods:
            t0 = time.perf_counter()
            if method == "pcseg":
                seg = segment_points(ck, cloud, votes=args.votes, device="cpu")
                labels = refine_and_split(ck, airborne_rules(ck), cloud.xyz, seg.labels,  # as `pcseg segment`
                                          seg.runner_up, seg.hag)[0]
                pred = labels == ground_id
            elif method == "csf":
                pred = csf_ground(csf_module, cloud.xyz)
            else:
                pred = smrf_ground(smrf_module, cloud.xyz)
            seconds = time.perf_counter() - t0
            c = confusion(truth, pred[scored])
            r = rates(c)
            print(row(path.name[:44], method, len(cloud), int(scored.sum()), r, seconds), flush=True)
            results.append({"file": path.name, "method": method, "points": len(cloud), "scored": int(scored.sum()),
                            **c, **r, "seconds": seconds})
            acc = pooled[method]
            for k in ("tp", "fn", "fp", "tn"):
                acc[k] += c[k]
            acc["seconds"] += seconds
            acc["points"] += len(cloud)
            acc["scored"] += int(scored.sum())
    print("-" * len(header))
    pooled_out = {}
    for method, acc in pooled.items():
        r = rates(acc)
        pooled_out[method] = {**acc, **r}
        print(row(f"POOLED ({len(files)} files)", method, acc["points"], acc["scored"], r, acc["seconds"]))

    if args.json:
        out = {"model": os.path.basename(args.model), "votes": args.votes, "torch_threads": threads, "loadavg": list(load),
               "model_load_seconds": load_s, "ground_code": GROUND_CODE, "excluded_codes": list(EXCLUDED_CODES),
               "drop_excluded": args.drop_excluded, "csf_settings": CSF_SETTINGS,
               "smrf_settings": SMRF_SETTINGS if "smrf" in methods else None, "notes": notes,
               "files": results, "pooled": pooled_out}
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except Fail as e:
        print(f"bench_ground_vs_csf: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
