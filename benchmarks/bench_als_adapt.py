"""Adapting an airborne model to one's own survey (`pcseg adapt`): adapt on one half of a tile, score the other.

For every tile: split it at the median x into a west and an east half (temporary LAS files), run
``pcseg adapt MODEL MAP:WEST -o ...`` with the default settings (and ``--minutes``, ``--threads``), then score the
shipped and the adapted model on the east half; and the reverse (adapt on the east half, score the west one).
Scores are those of ``benchmarks/bench_als.py`` (its helpers): ground / vegetation / building IoU after each
model's per-point tests (building height test, ground tolerance, vegetation split: the adapted card's may differ,
see ``pcseg adapt --help``), and their mean over the classes the half's labels hold (AHN3's code 1, "vegetation or
other", is not scored, so AHN3 halves have no vegetation); the network's own figures (tests off) are in the JSON.
"kept": the step ``pcseg adapt``'s check wrote (0: the model unchanged; see ``pcseg.engine.adapt``).
Each adaptation is the whole command in a fresh process (its wall-clock seconds are reported, with the load
average before and after) and an empty cache (``PCSEG_CACHE`` in the temporary folder), as a first run would be.

``--split cut`` (default) segments each half as a file of its own: a narrow half has cut edges with no context
(the shipped sala-als scores 88.8 on the whole 50 m tile test_data_77060_627760 and 66.6 / 52.3 on its halves cut
this way), and adapting on a cut half also learns those edges. ``--split labels`` adapts on the whole tile with
the other half's labels removed (ASPRS 0, ignored) and scores the other half of the whole tile's segmentation:
the surveyor who labels a patch of a tile.

Goal (issue #27): adapting, within 5 minutes on 2 threads, never loses on the other half, and gains >= 10 points
of mean IoU wherever the shipped model scores below 80 there. A tile the model trained on is flagged (``*``).

    python benchmarks/bench_als_adapt.py --model sala-als [--tile als/FILE.laz[:MAP]]... [--split cut|labels]
        [--minutes 5] [--threads 2] [--json out.json] [-- extra pcseg adapt options]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_als import DATA, cpu_model, predict_als, score_als  # noqa: E402

from pcseg.engine.segment import airborne_rules  # noqa: E402
from pcseg.io import read, write  # noqa: E402
from pcseg.models import zoo  # noqa: E402

TILES = [  # (file under ../shared/data, class map of its labels)
    ("als/test_semis_2021_0382_6565_LA93_IGN69.laz", "als"),  # IGN LiDAR HD, sparse 1 km^2 tile
    ("als/test_data_77050_627760_LA93_IGN69.laz", "als"),     # IGN LiDAR HD, dense 50 m tile
    ("als/ahn3_cropped_2.laz", "als-ahn3"),                    # AHN3, the Netherlands
    ("als/sample_c.las", "als"),                               # PDAL sample (USA), mostly one building
]
CLASSES = ("ground", "vegetation", "building")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="sala-als")
    ap.add_argument("--tile", action="append", help="FILE[:MAP] under ../shared/data (or a path), repeatable; "
                    "MAP is the class map of its labels (default als)")
    ap.add_argument("--minutes", type=float, default=5.0, help="pcseg adapt --minutes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--votes", type=int, default=1)
    ap.add_argument("--split", choices=("cut", "labels"), default="cut",
                    help="cut: the halves are separate files (adapt on one, segment the other alone); labels: adapt on "
                    "the whole tile with the other half's labels removed (ASPRS 0, ignored), score the other half of "
                    "the whole tile's segmentation: a surveyor who labels a patch of a tile, without the cut edges")
    ap.add_argument("--json")
    ap.add_argument("adapt_options", nargs="*", help="more pcseg adapt options, after --")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tiles = [_tile(t) for t in args.tile] if args.tile else [(DATA / rel, m) for rel, m in TILES]
    shipped = zoo.load(args.model)
    trained_on = {os.path.basename(p) for p in shipped.card.get("trained_on", [])}
    report = {"model": args.model, "split": args.split, "minutes": args.minutes, "threads": args.threads,
              "votes": args.votes, "adapt_options": args.adapt_options, "cpu": cpu_model(), "cores": os.cpu_count(), "tiles": []}
    print(f"{args.model}: adapt on one half, score the other (--split {args.split}); --minutes {args.minutes:g} --threads {args.threads}; "
          f"{report['cpu']}, {report['cores']} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-adapt-") as tmp:
        env = {**os.environ, "PCSEG_CACHE": os.path.join(tmp, "cache")}
        for path, map_name in tiles:
            cloud = read(str(path))
            x = cloud.xyz[:, 0]
            median = float(np.median(x))
            halves = {"west": x < median, "east": x >= median}
            files, entry = {}, {"tile": path.name, "class_map": map_name, "points": len(cloud), "median_x": median,
                                "model_trained_on_it": path.name in trained_on, "runs": []}
            raw_all = np.asarray(cloud.fields["classification"])
            for side, mask in halves.items():
                files[side] = os.path.join(tmp, f"{path.stem}_{side}.las")
                if args.split == "cut":
                    write(cloud.select(mask), files[side])
                else:  # the whole tile, labelled on this side only
                    write(cloud.with_fields(classification=np.where(mask, raw_all, 0).astype(raw_all.dtype)),
                          files[side])
            if entry["model_trained_on_it"]:
                print(f"{path.name}: NOTE {args.model} trained on this tile (both halves)", flush=True)
            shipped_scores = {}
            for train_side, test_side in (("west", "east"), ("east", "west")):
                out = os.path.join(tmp, f"{path.stem}_adapted_{train_side}.safetensors")
                cmd = [sys.executable, "-m", "pcseg", "adapt", args.model, f"{map_name}:{files[train_side]}", "-o",
                       out, "--minutes", f"{args.minutes:g}", "--threads", str(args.threads), "--json", "--quiet",
                       *args.adapt_options]
                load_before = os.getloadavg()
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                seconds = time.perf_counter() - t0
                load_after = os.getloadavg()
                if proc.returncode != 0:
                    print(f"{path.name} {train_side}: pcseg adapt failed: {proc.stderr.strip()}", file=sys.stderr)
                    return 1
                summary = json.loads(proc.stdout.strip().splitlines()[-1])
                # cut: the other half alone; labels: the whole tile, scored on the other half
                test, scored = (read(files[test_side]), None) if args.split == "cut" else (cloud, halves[test_side])
                raw = np.asarray(test.fields["classification"]).astype(np.int64)
                if test_side not in shipped_scores:
                    shipped_scores[test_side] = _score(shipped, test, raw, map_name, args.votes, scored)
                adapted = _score(zoo.load(out), test, raw, map_name, args.votes, scored)
                run = {"adapt_on": train_side, "score_on": test_side, "points_adapt": int(halves[train_side].sum()),
                       "points_score": int(halves[test_side].sum()), "shipped": shipped_scores[test_side], "adapted": adapted,
                       "gain": _gain(shipped_scores[test_side], adapted), "seconds": round(seconds, 1),
                       "steps": summary["steps"], "planned_steps": summary["planned_steps"],
                       "stopped_by": summary["stopped_by"], "lr": summary["lr"],
                       "building_test": _building_test(out), "check": _check(out),
                       "loadavg_before": [round(v, 2) for v in load_before],
                       "loadavg_after": [round(v, 2) for v in load_after]}
                entry["runs"].append(run)
                print(_row(path.name, run), flush=True)
            report["tiles"].append(entry)
    report["goal"] = _goal(report, args.minutes)
    print(_table(report))
    print(report["goal"]["summary"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def _tile(spec: str) -> tuple[Path, str]:
    rel, sep, map_name = spec.rpartition(":")
    if not sep or "/" in map_name:
        rel, map_name = spec, "als"
    path = Path(rel) if Path(rel).exists() else DATA / rel
    if not path.exists():
        raise SystemExit(f"no tile {rel}")
    return path, map_name


def _score(ck, cloud, raw, map_name: str, votes: int, scored: np.ndarray | None = None) -> dict:
    """IoU of ground / vegetation / building and their mean over the classes the labels hold, with the card's
    per-point tests (the goal's figure) and of the network alone (tests off: what adapting changes); on the
    points ``scored`` of ``cloud`` (default all)."""
    out = {}
    scored = np.ones(len(cloud), bool) if scored is None else scored
    for key, split in (("", airborne_rules(ck)),
                       ("network_", airborne_rules(ck, ground_tolerance=math.inf, building_min_height=math.inf))):
        pred, _, seg = predict_als(ck, split, cloud, votes=votes)
        cm, s = score_als(pred[scored], raw[scored], map_name)
        names = list(s["iou"])
        present = [c for c in CLASSES if cm[names.index(c)].sum() > 0]  # classes the half's labels hold
        iou = {c: s["iou"][c] for c in CLASSES}
        out.update({f"{key}iou": iou, f"{key}mean": float(np.mean([iou[c] or 0.0 for c in present])) if present
                    else None})
    return {**out, "classes": present, "seconds": round(seg.seconds, 2)}


def _building_test(path: str) -> str:
    tests = zoo.load(path).card["adaptation"].get("per_point_tests") or {}
    return tests.get("building_test", "-")


def _check(path: str) -> dict | None:
    """What ``pcseg adapt``'s check saw (held-out scores by step, the step written; 0: the model's weights)."""
    return zoo.load(path).card["adaptation"].get("check")


def _gain(before: dict, after: dict) -> float | None:
    if before["mean"] is None or after["mean"] is None:
        return None
    return 100 * (after["mean"] - before["mean"])


def _goal(report: dict, minutes: float) -> dict:
    runs = [r for t in report["tiles"] for r in t["runs"]]
    losses = [r for r in runs if r["gain"] is not None and r["gain"] < 0]
    low = [r for r in runs if r["shipped"]["mean"] is not None and 100 * r["shipped"]["mean"] < 80]
    short = [r for r in low if r["gain"] < 10]
    slow = [r for r in runs if r["seconds"] > 60 * minutes]
    ok = not losses and not short and not slow
    summary = (f"goal {'MET' if ok else 'NOT MET'}: {len(losses)} of {len(runs)} adaptations lose on the other half "
               f"(worst {min((r['gain'] for r in runs if r['gain'] is not None), default=0):+.1f}); "
               f"{len(low)} halves below 80 for the shipped model, {len(short)} of them gain < 10; "
               f"{len(slow)} adaptations over {minutes:g} min (longest "
               f"{max((r['seconds'] for r in runs), default=0):.0f} s)")
    return {"met": ok, "losses": len(losses), "below_80": len(low), "below_80_gain_under_10": len(short),
            "over_budget": len(slow), "summary": summary}


def _fmt(v) -> str:
    return "  -  " if v is None else f"{100 * v:5.1f}"


def _scores(s: dict) -> str:
    return " ".join(_fmt(s["iou"][c]) for c in CLASSES) + f" |{_fmt(s['mean'])}"


def _row(tile: str, r: dict) -> str:
    gain = "  -  " if r["gain"] is None else f"{r['gain']:+5.1f}"
    return (f"{tile[:36]:36s} {r['adapt_on'] + '->' + r['score_on']:10s} {r['points_score']:8,d} | "
            f"{_scores(r['shipped'])} | {_scores(r['adapted'])} | {gain} | {r['building_test']:5s} {r['steps']:5d} "
            f"{_kept(r.get('check')):>5s} {r['seconds']:6.1f} s  load {r['loadavg_before'][0]:.1f}")


def _kept(check: dict | None) -> str:
    """The step the check wrote ('0': the model unchanged), '-' without a check."""
    return "-" if not check or check.get("chosen_step") is None else str(check["chosen_step"])


def _table(report: dict) -> str:
    cols = "    G     V     B | mean"
    head = [f"{'':36s} {'':10s} {'':8s} | {'shipped':24s} | {'adapted':24s} |",
            f"{'tile':36s} {'halves':10s} {'points':>8s} | {cols} | {cols} | {'gain':>5s} | {'b.test':5s} steps  kept   time"]
    rows = [_row(t["tile"] + (" *" if t["model_trained_on_it"] else ""), r) for t in report["tiles"] for r in t["runs"]]
    note = ["* the model trained on this tile (both halves)"] if any(t["model_trained_on_it"] for t in report["tiles"]) else []
    return "\n".join(head + rows + note)


if __name__ == "__main__":
    sys.exit(main())
