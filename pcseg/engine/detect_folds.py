"""k-fold validation of the detector over every labelled frame (issue #29: a validation that can tell 45 from 50).

Frames are named by id, whatever their source: ``kitti:<frame>`` (a frame of a KITTI ``training/`` folder, its
annotated labels) and ``semantickitti:<sequence>/<scan>`` (a SemanticKITTI scan, Car boxes fitted to its labelled
instances by ``pcseg.data.detection.semantickitti_objects``: not annotated). :func:`kfold_frames` splits them into
k folds; :func:`fold_config` turns a recipe (a :class:`~pcseg.engine.detect.DetectTrainConfig`) into the run that
trains on the other folds and holds one out: its KITTI frames as ``val_frames``, its scans as ``val_scans``
(neither in the ground-truth database nor trained as frames). :func:`check_init` refuses weights whose card
lists a held-out frame (``focals-kitti`` trained on every frame but 004139). :func:`evaluate_fold` scores the
held-out frames: KITTI AP R40, BEV and 3D, at the benchmark's overlaps (Car 0.7, Pedestrian / Cyclist 0.5) and
the devkit's looser ones (Car 0.5, 0.25), at the moderate difficulty and over all objects together (every
labelled object of the class inside the detector's x-y range, whatever its 2D height, occlusion or truncation).
:func:`aggregate` gives the mean and spread of one figure over folds.

``benchmarks/bench_detect_kfold.py`` runs the whole thing.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path

import numpy as np

from ..errors import UsageError

KITTI_PREFIX = "kitti:"
SCAN_PREFIX = "semantickitti:"


# ---------------------------------------------------------------------------------------------------------------
# frame ids and folds
# ---------------------------------------------------------------------------------------------------------------

def kitti_frame_id(frame: str) -> str:
    return f"{KITTI_PREFIX}{frame}"


def scan_frame_id(scan: str | os.PathLike) -> str:
    """``semantickitti:<sequence>/<scan>`` of ``.../sequences/<sequence>/velodyne/<scan>.bin``."""
    p = Path(scan)
    seq = p.parent.parent.name if p.parent.name == "velodyne" else p.parent.name
    return f"{SCAN_PREFIX}{seq}/{p.stem}"


def list_scans(sequences: str | os.PathLike) -> list[str]:
    """The labelled scans of a SemanticKITTI ``sequences/`` folder (``<seq>/velodyne/<scan>.bin`` with
    ``<seq>/labels/<scan>.label``), sorted."""
    root = Path(sequences)
    return sorted(str(p) for p in root.glob("*/velodyne/*.bin")
                  if (p.parent.parent / "labels" / f"{p.stem}.label").is_file())


def all_frames(kitti: str | os.PathLike | None, scans: list[str]) -> list[str]:
    """Every labelled frame id: the KITTI folder's frames that have labels, then the scans."""
    ids = []
    if kitti is not None:
        from ..data.detection import list_kitti_frames

        ids += [kitti_frame_id(f) for f in list_kitti_frames(kitti) if (Path(kitti) / "label_2" / f"{f}.txt").is_file()]
    ids += [scan_frame_id(s) for s in scans]
    if len(set(ids)) != len(ids):
        raise UsageError("two scans have the same frame id (sequence/scan)")
    return ids


def kfold_frames(frames: list[str], k: int, seed: int) -> list[list[str]]:
    """``frames`` in ``k`` folds: every frame in exactly one, sizes differing by at most one, each fold sorted.
    Deterministic: the frames are sorted, shuffled by ``np.random.default_rng(seed)`` and dealt in turn (the
    input's order does not matter; another seed gives another split)."""
    frames = list(frames)
    if len(set(frames)) != len(frames):
        raise UsageError("kfold_frames: a frame is listed twice")
    if not 2 <= k <= len(frames):
        raise UsageError(f"k-fold needs 2 <= k <= the number of frames ({len(frames)}), not k={k}")
    order = np.random.default_rng(seed).permutation(len(frames))
    ordered = [sorted(frames)[i] for i in order]
    return [sorted(ordered[i::k]) for i in range(k)]


def split_ids(ids: list[str]) -> tuple[list[str], list[str]]:
    """(KITTI frame names, scan ids) of frame ids; an id of no known source is a usage error."""
    kitti, scans = [], []
    for fid in ids:
        if fid.startswith(KITTI_PREFIX):
            kitti.append(fid[len(KITTI_PREFIX):])
        elif fid.startswith(SCAN_PREFIX):
            scans.append(fid)
        else:
            raise UsageError(f"frame id {fid!r}: expected kitti:<frame> or semantickitti:<sequence>/<scan>")
    return kitti, scans


def fold_config(base, held_out: list[str], frames: list[str], kitti: str | None, scans: list[str]):
    """The run of one fold: ``base`` (a DetectTrainConfig: the recipe) training on ``frames`` minus ``held_out``
    and validating on ``held_out``. ``scans``: the paths of every scan in ``frames``. Training scans feed the
    ground-truth database (and train as whole frames when the recipe has ``scan_frames=true``); held-out scans
    go to ``val_scans`` only."""
    unknown = sorted(set(held_out) - set(frames))
    if unknown:
        raise UsageError(f"held-out frame(s) {', '.join(unknown)} are not among the frames")
    by_id = {scan_frame_id(s): s for s in scans}
    train_kitti, train_scans = split_ids([f for f in frames if f not in set(held_out)])
    val_kitti, val_scans = split_ids(held_out)
    missing = sorted(set(train_scans + val_scans) - set(by_id))
    if missing:
        raise UsageError(f"no scan file for {', '.join(missing)}")
    return dataclasses.replace(
        base, kitti=kitti, train_frames=train_kitti, val_frames=val_kitti,
        gt_scans=[by_id[s] for s in train_scans], val_scans=[by_id[s] for s in val_scans],
        scan_frames=bool(base.scan_frames and train_scans), model_options=copy.deepcopy(base.model_options))


def training_ids(data) -> dict[str, list[str]]:
    """What a run's data (``pcseg.engine.detect._Data``) trains on, as frame ids: ``frames`` (whole training
    frames: KITTI frames and scans), ``database`` (the sources of the ground-truth sampling database) and
    ``held_out`` (the validation frames)."""
    from .detect import _ScanFrame

    frames = [f.source if isinstance(f, _ScanFrame) else kitti_frame_id(f.frame_id) for f in data.train]
    db = []
    if getattr(data, "database", None) is not None:   # built from the KITTI training frames and gt_scans
        db = [kitti_frame_id(f.frame_id) for f in data.train if not isinstance(f, _ScanFrame)]
        db += [scan_frame_id(s) for s in data.cfg.gt_scans]
    held = [kitti_frame_id(f.frame_id) for f in data.val] + sorted({f.frame_id for f in data.val_scans})
    return {"frames": sorted(set(frames)), "database": sorted(set(db)), "held_out": held}


# ---------------------------------------------------------------------------------------------------------------
# the init may not have seen the held-out frames
# ---------------------------------------------------------------------------------------------------------------

def card_training_ids(card: dict, _seen: set | None = None) -> set[str]:
    """Frame ids a checkpoint's card says it learned from: its KITTI frames, its scans (trained as frames or
    in the ground-truth database), and, through its own ``init``, whatever that one learned from. A card that
    does not say is a usage error (it cannot be checked)."""
    from ..models import zoo

    name = card.get("name", "this checkpoint")
    training = card.get("training")
    if not isinstance(training, dict) or "kitti_frames" not in training:
        raise UsageError(f"{name}'s card lists no training frames: it cannot be checked against the held-out ones")
    ids = {kitti_frame_id(f) for f in training.get("kitti_frames", [])}
    for s in training.get("scan_frames", []):
        ids.add(scan_frame_id(str(s).split(" (")[0]))
    cfg = training.get("config", {}) or {}
    ids |= {scan_frame_id(s) for s in cfg.get("gt_scans", []) or []}
    init = cfg.get("init")
    if init:
        seen = set() if _seen is None else _seen
        if init not in seen:
            seen.add(init)
            try:
                _, init_card, _ = zoo.resolve(init)
            except Exception:
                raise UsageError(f"{name} started from {init}, which is not here: its training frames cannot be "
                                 "checked") from None
            ids |= card_training_ids(init_card, seen)
    return ids


def check_init(init: str | None, held_out: list[str], fold: int | None = None) -> str:
    """A line saying what the run starts from, or a one-line usage error when ``init``'s card lists a held-out
    frame (or cannot be checked)."""
    if init is None:
        return "none (from scratch)"
    from ..models import zoo

    _, card, _ = zoo.resolve(init)
    seen = sorted(card_training_ids(card) & set(held_out))
    if seen:
        where = f" (held out in fold {fold})" if fold is not None else ""
        raise UsageError(f"init {init} trained on {', '.join(seen)}{where}: k-fold needs an init that never saw the "
                         "held-out frames (--init none, or a checkpoint pre-trained on synthetic scenes only)")
    steps = card.get("training", {}).get("synthetic_steps", 0)
    frames = card_training_ids(card)
    what = f"{steps} synthetic steps" if steps else "no synthetic steps"
    label = Path(init).name if Path(init).exists() else init   # a file by its name only: no machine path
    return f"{label} ({what}; real frames: {', '.join(sorted(frames)) or 'none'})"


# ---------------------------------------------------------------------------------------------------------------
# evaluation of a fold
# ---------------------------------------------------------------------------------------------------------------

def _centres(objects, calib) -> np.ndarray:
    from ..io.kitti import objects_to_lidar_boxes

    boxes, _ = objects_to_lidar_boxes([o for o in objects if o.type != "DontCare"], calib)
    return boxes[:, :3]


def every_difficulty(objects, calib, point_range) -> list:
    """Copies of ``objects`` that every difficulty level evaluates: 2D height large, occlusion and truncation 0,
    for those centred inside the detector's x-y range; height 0 (ignored) outside it. DontCare stays."""
    objects = [copy.copy(o) for o in objects]
    real = [o for o in objects if o.type != "DontCare"]
    if not real:
        return objects
    c = _centres(real, calib)
    r = point_range
    inside = (c[:, 0] >= r[0]) & (c[:, 0] < r[3]) & (c[:, 1] >= r[1]) & (c[:, 1] < r[4])
    for o, ok in zip(real, inside):
        o.bbox = np.array([0.0, 0.0, 1.0, 1000.0 if ok else 0.0])
        o.truncated, o.occluded = 0.0, 0
    return objects


def evaluate_predictions(pred: dict, truth: dict, calibs: dict, point_range) -> dict:
    """The fold's four KITTI evaluations (``pcseg.engine.detection_eval.evaluate`` results):
    ``strict`` (Car 0.7, Pedestrian / Cyclist 0.5), ``loose`` (Car 0.5, others 0.25), and the same over every
    difficulty together, ``all_strict`` and ``all_loose`` (:func:`every_difficulty`)."""
    from .detection_eval import LOOSE_OVERLAP, evaluate

    pa = {k: every_difficulty(v, calibs[k], point_range) for k, v in pred.items()}
    ta = {k: every_difficulty(v, calibs[k], point_range) for k, v in truth.items()}
    return {"strict": evaluate(pred, truth), "loose": evaluate(pred, truth, min_overlap=LOOSE_OVERLAP),
            "all_strict": evaluate(pa, ta), "all_loose": evaluate(pa, ta, min_overlap=LOOSE_OVERLAP)}


def evaluate_fold(model, frames, score_thresh: float = 0.1) -> tuple[dict, dict]:
    """(:func:`evaluate_predictions` of ``model`` on the held-out ``frames`` (``KittiFrame``s and
    ``ScanEvalFrame``s), the predictions as JSON-able lidar boxes per evaluation id)."""
    from .detect import predict_frames

    pred, truth = predict_frames(model, frames, score_thresh)
    calibs = {getattr(f, "eval_id", f.frame_id): f.calib for f in frames}
    return evaluate_predictions(pred, truth, calibs, model.point_range), pred


def figures(result: dict) -> dict:
    """Flat figures of :func:`evaluate_predictions`: ``<Class>_<bev|3d>_<moderate|all>@<IoU>`` AP R40 (None
    where the fold has no such object) and ``<Class>_gt_<easy|moderate|hard|all>`` object counts."""
    out = {}
    for key, level in (("strict", "moderate"), ("loose", "moderate"), ("all_strict", "all"), ("all_loose", "all")):
        r = result[key]
        for cls, entry in r["classes"].items():
            iou = r["min_overlap"][cls]
            for metric in ("bev", "3d"):
                out[f"{cls}_{metric}_{level}@{iou:g}"] = entry[metric]["R40"]["moderate"]
            if key == "strict":
                for d in ("easy", "moderate", "hard"):
                    out[f"{cls}_gt_{d}"] = entry["num_gt"][d]
            if key == "all_strict":
                out[f"{cls}_gt_all"] = entry["num_gt"]["moderate"]
    return out


def aggregate(values) -> dict:
    """Mean, sample standard deviation (n - 1; None under two values), min and max of the values that are
    not None, and how many there were."""
    v = np.array([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], float)
    if not len(v):
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": int(len(v)), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else None,
            "min": float(v.min()), "max": float(v.max())}
