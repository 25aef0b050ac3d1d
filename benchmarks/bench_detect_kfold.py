"""k-fold validation of the detection recipe over every labelled frame here (issue #29 item 1).

The frames: the KITTI ``training/`` frames with labels (``kitti:<frame>``) and the SemanticKITTI scans with labels
(``semantickitti:<sequence>/<scan>``, Car boxes fitted to their instances, not annotated). They are split into
``--k`` folds (``pcseg.engine.detect_folds.kfold_frames``, ``--seed``); fold i trains the recipe on the other
folds (from scratch, or from ``--init``, a checkpoint whose card lists none of the held-out frames: pre-trained
on synthetic scenes only) and scores its held-out frames with the *last* checkpoint of the fixed schedule (no
checkpoint is ever picked on the frames reported). Each fold is one run folder ``--run-root/fold-<i>``: a fold
whose run finished is not trained again, an interrupted one resumes where it stopped (the engine's resume), so
the folds may run in separate calls (``--only-fold``). The table shows every finished fold of the plan.

Figures: KITTI AP R40 (BEV, 3D) at the moderate difficulty and over all objects together (every labelled object
inside the detector's x-y range, whatever its 2D height, occlusion and truncation), Car at IoU 0.7 and 0.5,
Pedestrian / Cyclist at 0.5 and 0.25 (only KITTI frames have them); per fold, then mean / std (n - 1) / min / max
over the folds that have such objects, and "pooled": every held-out prediction of the finished folds evaluated
together (one AP over all frames; each fold's own model made its frames' predictions).

Usage:
  python benchmarks/bench_detect_kfold.py [--recipe focals-kitti|PATH|none] [--k 4] [--seed 0] [--steps N]
      [--synthetic-steps N] [--init PATH|none] [--threads N] [--run-root runs/kfold/NAME]
      [--time-limit-per-fold S] [--json OUT] [--only-fold I] [key=value ...]
``--recipe``: take a checkpoint's ``training.config`` (default: the shipped focals-kitti's) without its data
folders, held-out frames, init, device and time limit; ``key=value`` settings of DetectTrainConfig go on top,
then ``--steps`` and the others. Output names frames by id only.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_als import cpu_model  # noqa: E402  (one CPU record for every benchmark)
DATA = Path(os.environ.get("PCSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_KITTI = DATA / "kitti" / "training"
DEFAULT_SEQUENCES = DATA / "lidarseg" / "semantickitti" / "sequences"

# recipe settings that belong to one run's data or machine, not to the recipe
NOT_RECIPE = ("kitti", "val_frames", "gt_scans", "init", "device", "time_limit", "train_frames", "val_scans")
# left out of the recorded settings: machine paths, and the split (recorded as frame ids)
PATH_KEYS = ("kitti", "gt_scans", "val_scans", "init", "val_frames", "train_frames")
FOLD_FILE, TRAINED_FILE, PLAN_FILE = "fold.json", "trained.json", "plan.json"

# table columns: (header, (BEV figure key, 3D figure key)); a cell shows "BEV / 3D"
CAR_COLUMNS = [(f"Car {lvl[:3]} @{iou}", (f"Car_bev_{lvl}@{iou}", f"Car_3d_{lvl}@{iou}"))
               for lvl in ("moderate", "all") for iou in ("0.7", "0.5")]
OTHER_COLUMNS = [(f"{c[:3]} mod @{iou}", (f"{c}_bev_moderate@{iou}", f"{c}_3d_moderate@{iou}"))
                 for c in ("Pedestrian", "Cyclist") for iou in ("0.5", "0.25")]


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def portable_config(cfg) -> dict:
    """The configuration without machine paths (the frames are named by id elsewhere)."""
    d = dataclasses.asdict(cfg)
    for k in PATH_KEYS:
        d.pop(k, None)
    return d


def same_settings(a: dict, b: dict) -> bool:
    """Two portable configurations equal but for the device."""
    return {**a, "device": None} == {**b, "device": None}


def init_sha256(init: str | None) -> str | None:
    """The init's checksum (a plan resumed with another file of the same name is refused)."""
    if init is None:
        return None
    from pcseg.models import zoo
    from pcseg.models.checkpoint import sha256_file

    path, _, sha = zoo.resolve(init)
    return sha or sha256_file(path)


def base_config(args, settings: list[str]):
    from pcseg.cli.common import parse_key_values
    from pcseg.engine.detect import DetectTrainConfig
    from pcseg.errors import UsageError

    values: dict = {}
    if args.recipe != "none":
        from pcseg.models import zoo

        _, card, _ = zoo.resolve(args.recipe)
        recipe = (card.get("training") or {}).get("config")
        if not isinstance(recipe, dict):
            raise UsageError(f"{args.recipe}'s card has no training.config to take the recipe from")
        values = {k: v for k, v in recipe.items() if k not in NOT_RECIPE}
    extra = parse_key_values(settings)
    bad = sorted(set(extra) & set(NOT_RECIPE) - {"device"})
    if bad:
        raise UsageError(f"{', '.join(bad)}: set by the folds (use --init / --time-limit-per-fold)")
    if "model_options" in extra and "model_options" in values:
        extra["model_options"] = {**values["model_options"], **extra["model_options"]}
    values.update(extra)
    if args.steps is not None:
        values["steps"] = args.steps
    if args.synthetic_steps is not None:
        values["synthetic_steps"] = args.synthetic_steps
    values["init"] = None if args.init in (None, "none") else args.init
    values["time_limit"] = args.time_limit_per_fold
    return DetectTrainConfig.from_overrides(values)


def load_held_out(cfg, fusion: bool):
    from pcseg.data.detection import KittiFrame
    from pcseg.engine.detect import scan_eval_frames

    frames = [KittiFrame.load(cfg.kitti, f, fov_only=True, image=fusion) for f in cfg.val_frames]
    return frames + scan_eval_frames(cfg.val_scans)


def objects_json(objects) -> list[dict]:
    return [{"type": o.type, "truncated": float(o.truncated), "occluded": int(o.occluded), "alpha": float(o.alpha),
             "bbox": [float(v) for v in o.bbox], "dimensions": [float(v) for v in o.dimensions],
             "location": [float(v) for v in o.location], "rotation_y": float(o.rotation_y),
             "score": None if o.score is None else float(o.score)} for o in objects]


def objects_from_json(items) -> list:
    from pcseg.io.kitti import KittiObject

    return [KittiObject(d["type"], d["truncated"], d["occluded"], d["alpha"], np.array(d["bbox"]),
                        np.array(d["dimensions"]), np.array(d["location"]), d["rotation_y"], d["score"])
            for d in items]


def run_fold(i: int, cfg, run: Path, init_line: str) -> dict:
    """Train (or resume, or reuse) fold ``i`` and score its held-out frames; returns its record."""
    from pcseg.engine.detect import saved_config, train_detector
    from pcseg.engine.detect_folds import evaluate_fold, figures, kitti_frame_id, scan_frame_id
    from pcseg.errors import UsageError
    from pcseg.models.checkpoint import load_checkpoint, load_state

    done = run / FOLD_FILE
    if done.is_file():
        rec = json.loads(done.read_text())
        if not same_settings(rec["config"], portable_config(cfg)):
            raise UsageError(f"fold {i} in {run} finished with other settings: choose another --run-root")
        print(f"fold {i}: finished earlier, not trained again", file=sys.stderr)
        return rec
    t0 = time.time()
    if not (run / TRAINED_FILE).is_file():
        resume = run.is_dir() and any(run.iterdir())
        if resume and (run / "last.state.safetensors").is_file():
            old = saved_config(run)
            if not same_settings(portable_config(old), portable_config(cfg)):
                raise UsageError(f"fold {i} in {run} was started with other settings: choose another --run-root")

        def progress(step, total, loss):
            if step % max(cfg.log_every, 1) == 0 or step == total:
                print(f"fold {i}: step {step}/{total} loss {loss:.3f}", file=sys.stderr, flush=True)

        result = train_detector(cfg, run, resume=resume, progress=progress)
        state = load_state(run / "last.state.safetensors")
        (run / TRAINED_FILE).write_text(json.dumps({"step": result["step"], "seconds": float(state["seconds"])}))
    trained = json.loads((run / TRAINED_FILE).read_text())
    t1 = time.time()
    model = load_checkpoint(run / "last.safetensors").model.eval()   # the last weights: never the "best"
    frames = load_held_out(cfg, model.fusion)
    result, pred = evaluate_fold(model, frames)
    rec = {
        "fold": i,
        "held_out": [kitti_frame_id(f) for f in cfg.val_frames] + [scan_frame_id(s) for s in cfg.val_scans],
        "train": [kitti_frame_id(f) for f in cfg.train_frames] + [scan_frame_id(s) for s in cfg.gt_scans],
        "init": init_line,
        "steps": trained["step"], "total_steps": cfg.total_steps,
        "stopped_by_time_limit": trained["step"] < cfg.total_steps,
        "train_seconds": trained["seconds"], "eval_seconds": time.time() - t1,
        "wall_seconds_this_call": time.time() - t0,
        "seconds_per_step": trained["seconds"] / max(trained["step"], 1),
        "figures": figures(result),
        "predictions": {k: objects_json(v) for k, v in pred.items()},
        "config": portable_config(cfg),
    }
    done.write_text(json.dumps(rec, indent=1))
    return rec


def pooled(records: list[dict], cfgs: dict, point_range) -> tuple[dict, dict]:
    """Every held-out prediction of the finished folds evaluated together (labels as the folds saw them): the
    AP figures, and what the Car scores say (``score_reliability`` at BEV IoU 0.5, every difficulty)."""
    from pcseg.engine.detect import ScanEvalFrame, scan_objects
    from pcseg.engine.detect_folds import evaluate_predictions, figures
    from pcseg.engine.detection_eval import score_reliability

    pred, truth, calibs = {}, {}, {}
    for rec in records:
        for f in load_held_out(cfgs[rec["fold"]], False):
            key = f.eval_id if isinstance(f, ScanEvalFrame) else f.frame_id
            scan = isinstance(f, ScanEvalFrame)
            truth[key] = scan_objects(f.boxes, f.names, None, point_range) if scan else f.objects
            calibs[key] = f.calib
            pred[key] = objects_from_json(rec["predictions"][key])
    return figures(evaluate_predictions(pred, truth, calibs, point_range)), score_reliability(pred, truth)


def reliability_table(r: dict) -> str:
    """Score bins of the pooled held-out Car boxes: how many, and the share that found a car."""
    lines = [f"What the held-out Car scores say (BEV IoU > {r['min_overlap']}, cars of every difficulty). Held-out "
             f"frames without a car: {r['frames_without']}; their boxes scoring 0.5 or more: "
             f"{r['boxes_at_0.5_in_frames_without']}.", "", "| score | boxes | found a car |", "|---|---|---|"]
    for b in r["bins"]:
        share = "-" if b["matched_share"] is None else f"{100 * b['matched_share']:.0f}%"
        lines.append(f"| {b['from']:.1f}-{b['to']:.1f} | {b['boxes']} | {share} |")
    return "\n".join(lines)


def fmt(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def pair(figs: dict, keys) -> str:
    return " / ".join(fmt(figs.get(k)) for k in keys)


def table(records: list[dict], pooled_figs: dict | None, k: int) -> str:
    from pcseg.engine.detect_folds import aggregate

    cols = CAR_COLUMNS + [c for c in OTHER_COLUMNS if any(r["figures"].get(c[1][0]) is not None for r in records)]
    head = (["fold", "held-out frames", "Car gt E/M/H/all"] + [f"{c[0]} BEV / 3D" for c in cols]
            + ["steps", "train s", "s/step"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def gt(f, cls="Car"):
        return "/".join(str(f.get(f"{cls}_gt_{d}", 0)) for d in ("easy", "moderate", "hard", "all"))

    for r in records:
        f = r["figures"]
        frames = ", ".join(r["held_out"])
        steps = f"{r['steps']}/{r['total_steps']}" + (" (time limit)" if r["stopped_by_time_limit"] else "")
        lines.append("| " + " | ".join([str(r["fold"]), frames, gt(f)] + [pair(f, c[1]) for c in cols]
                                       + [steps, f"{r['train_seconds']:.0f}", f"{r['seconds_per_step']:.2f}"]) + " |")
    n = len(records)
    for stat in ("mean", "std", "min", "max"):
        cells = []
        for c in cols:
            a = [aggregate([r["figures"].get(key) for r in records]) for key in c[1]]
            cell = " / ".join(fmt(x[stat]) for x in a)
            if a[0]["n"] and a[0]["n"] < n and stat == "mean":
                cell += f" (n={a[0]['n']})"
            cells.append(cell)
        secs = aggregate([r["train_seconds"] for r in records])[stat]
        lines.append("| " + " | ".join([f"**{stat}**", f"{n} of {k} folds", ""] + cells + ["", fmt(secs, 0), ""])
                     + " |")
    if pooled_figs is not None:
        lines.append("| " + " | ".join(["**pooled**", f"{sum(len(r['held_out']) for r in records)} frames",
                                        gt(pooled_figs)] + [pair(pooled_figs, c[1]) for c in cols] + ["", "", ""])
                     + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="focals-kitti", help="checkpoint whose training.config is the recipe, or none")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0, help="fold assignment seed (the training seed is seed=...)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--synthetic-steps", type=int, default=None)
    ap.add_argument("--init", default="none", help="PATH of a checkpoint pre-trained on synthetic scenes, or none")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--run-root", default="runs/kfold/default")
    ap.add_argument("--time-limit-per-fold", type=float, default=None,
                    help="seconds; the one-cycle schedule then follows the clock (machine-dependent)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--only-fold", type=int, default=None)
    ap.add_argument("--kitti", default=str(DEFAULT_KITTI), help="KITTI training/ folder")
    ap.add_argument("--sequences", default=str(DEFAULT_SEQUENCES), help="SemanticKITTI sequences/ folder")
    ap.add_argument("settings", nargs="*", help="key=value settings of DetectTrainConfig")
    args = ap.parse_args()

    from pcseg.engine.detect_folds import aggregate, all_frames, check_init, fold_config, kfold_frames, list_scans
    from pcseg.models.checkpoint import read_card
    from pcseg.engine.runtime import configure_allocator
    from pcseg.errors import PcsegError

    if args.threads:
        torch.set_num_threads(args.threads)
    configure_allocator()
    try:
        base = base_config(args, args.settings)
        scans = list_scans(args.sequences) if Path(args.sequences).is_dir() else []
        frames = all_frames(args.kitti, scans)
        folds = kfold_frames(frames, args.k, args.seed)
        if args.only_fold is not None and not 0 <= args.only_fold < args.k:
            raise SystemExit(f"--only-fold {args.only_fold}: folds are 0-{args.k - 1}")
        init_lines = [check_init(base.init, fold, i) for i, fold in enumerate(folds)]   # every fold, before training
        root = Path(args.run_root)
        plan = {"k": args.k, "seed": args.seed, "folds": folds, "config": portable_config(base),
                "init": init_lines[0], "init_sha256": init_sha256(base.init), "recipe": args.recipe}
        plan_file = root / PLAN_FILE
        if plan_file.is_file():
            old = json.loads(plan_file.read_text())
            if {**old, "config": None} != {**plan, "config": None} or not same_settings(old["config"], plan["config"]):
                raise SystemExit(f"{args.run_root} holds another plan (folds, settings or init): "
                                 "choose another --run-root")
        root.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(plan, indent=1))
        load_start, t_start = uptime(), time.time()
        cfgs = {i: fold_config(base, fold, frames, args.kitti, scans) for i, fold in enumerate(folds)}
        walls = {}
        for i in range(args.k):
            if args.only_fold is not None and i != args.only_fold:
                continue
            t = time.time()
            run_fold(i, cfgs[i], root / f"fold-{i}", init_lines[i])
            walls[i] = time.time() - t
        records = [json.loads((root / f"fold-{i}" / FOLD_FILE).read_text()) for i in range(args.k)
                   if (root / f"fold-{i}" / FOLD_FILE).is_file()]
        pooled_figs = reliability = None
        if records:   # the detector's range, as the folds' checkpoints record it
            point_range = read_card(root / f"fold-{records[0]['fold']}" / "last.safetensors")["point_range"]
            pooled_figs, reliability = pooled(records, cfgs, point_range)
    except PcsegError as e:
        raise SystemExit(f"error: {e}") from None
    load_end = uptime()

    scan_ids = [f for f in frames if f.startswith("semantickitti:")]
    print(f"# k-fold detection validation: k={args.k}, fold seed {args.seed}, {len(frames)} frames "
          f"({len(frames) - len(scan_ids)} KITTI, {len(scan_ids)} SemanticKITTI scans)")
    print(f"recipe: {args.recipe} training.config without data, held-out frames, init, device and time limit; "
          f"init: {init_lines[0]}; steps {base.steps}, synthetic_steps {base.synthetic_steps}, "
          f"time limit per fold {args.time_limit_per_fold or 'none'}")
    print("scores: the last checkpoint of each fold's schedule (never the 'best'); KITTI AP R40 in percent; "
          "SemanticKITTI scans: Car boxes fitted to the labelled instances (not annotated), both halves "
          "(as recorded, turned around), difficulty from distance (see pcseg.engine.detect.scan_objects); "
          "'all' = every labelled object in the detector's x-y range; std over folds with n - 1")
    for i, fold in enumerate(folds):
        print(f"fold {i}: {', '.join(fold)}")
    print()
    print(table(records, pooled_figs, args.k))
    print()
    if reliability is not None:
        print(reliability_table(reliability))
        print()
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; torch threads {torch.get_num_threads()}")
    print(f"uptime before: {load_start}")
    print(f"uptime after:  {load_end}")
    for i, w in walls.items():
        print(f"fold {i}: {w:.1f} s wall in this call (training, loading, evaluation)")
    print(f"whole call: {time.time() - t_start:.1f} s")
    if args.json:
        out = {"plan": plan, "frames": frames, "records": [{k: v for k, v in r.items() if k != "predictions"}
                                                           for r in records],
               "aggregate": {key: aggregate([r["figures"].get(key) for r in records])
                             for key in (records[0]["figures"] if records else {})},
               "pooled": pooled_figs, "score_reliability": reliability, "machine": {"cpu": cpu_model(), "cores": os.cpu_count(),
                                                  "torch_threads": torch.get_num_threads(),
                                                  "uptime_before": load_start, "uptime_after": load_end},
               "wall_seconds_this_call": walls,
               "notes": ["SemanticKITTI Car boxes are fitted to the labelled instances, not annotated",
                         "each fold is scored with the last checkpoint of its fixed schedule"]}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
