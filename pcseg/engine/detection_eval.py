"""KITTI 3D-object average precision: bird's-eye-view and 3D, R11 and R40, easy / moderate / hard.

Matching follows the official devkit (``evaluate_object_3d_offline.cpp``):

- per class, minimum overlap 0.7 Car, 0.5 Pedestrian, 0.5 Cyclist (strictly greater counts), boxes compared in
  the rectified camera frame of the labels (ground plane x-z, height along y), exact rotated IoU;
- difficulty: a ground truth is *ignored* (neither TP nor FN, but it may absorb one detection) when its 2D box
  height (px) < 40/25/25, occlusion > 0/1/2 or truncation > 0.15/0.3/0.5 for easy/moderate/hard;
- neighbouring classes (Van for Car, Person_sitting for Pedestrian) are ignored ground truth; other classes are
  not considered; detections lower than the minimum 2D height are ignored (their class is not checked, as in the
  devkit); detections of other classes are not considered;
- at a score threshold, each evaluated ground truth takes the unassigned detection of greatest overlap (a
  non-ignored one first); unassigned detections are false positives, except those overlapping a DontCare
  region by more than the class overlap (intersection over the detection). DontCare labels carry no 3D box, so
  in BEV and 3D they never match, exactly as in the devkit.

Where this differs from the devkit: the devkit evaluates precision at <= 41 score thresholds picked from the
true-positive scores (``getThresholds``) and reads precision at threshold *index* i as if it were recall i/40;
that is only accurate with many ground truths (a perfect detector on 10 objects scores R40 = 22.5). Here the
precision/recall curve is evaluated at every detection score, and AP uses the interpolated precision
``p(r) = max{precision at recall >= r}`` at r in {0, 0.1, ..., 1} (R11) or {1/40, ..., 1} (R40), the definition
the devkit approximates (Geiger et al. 2012; Simonelli et al. 2019). On large sets both agree.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import BadInputError, UsageError
from ..geometry.boxes import intersection_area_bev, iou_3d, iou_bev
from ..io.kitti import (
    MAX_OCCLUSION, MAX_TRUNCATION, MIN_HEIGHT, Calibration, KittiObject, lidar_boxes_to_objects,
    objects_to_lidar_boxes, read_label_frame, read_labels,
)

__all__ = ["evaluate", "evaluate_folders", "format_results", "average_precision", "score_reliability",
           "pool_reliability", "CLASSES", "MIN_OVERLAP", "LOOSE_OVERLAP"]

CLASSES = ("Car", "Pedestrian", "Cyclist")
MIN_OVERLAP = {"Car": 0.7, "Pedestrian": 0.5, "Cyclist": 0.5}
# The devkit's second, looser set (OpenPCDet prints it as "Car AP@0.70, 0.50, 0.50"): Car 0.5, others 0.25.
LOOSE_OVERLAP = {"Car": 0.5, "Pedestrian": 0.25, "Cyclist": 0.25}
NEIGHBOUR = {"car": "van", "pedestrian": "person_sitting"}
DIFFICULTIES = ("easy", "moderate", "hard")
METRICS = ("bev", "3d")
RECALL_POINTS = {"R11": np.linspace(0.0, 1.0, 11), "R40": np.linspace(1.0 / 40.0, 1.0, 40)}


def _camera_boxes(objects: list[KittiObject]) -> np.ndarray:
    """Labels as (B, 7) boxes in a right-angled frame built from the camera axes: ground plane (x, z), up = -y.

    The heading in the (x, z) plane is (cos ry, -sin ry), i.e. angle -ry; the box spans y in [y - h, y].
    """
    if not objects:
        return np.zeros((0, 7))
    loc = np.array([o.location for o in objects], dtype=np.float64)
    hwl = np.array([o.dimensions for o in objects], dtype=np.float64)
    ry = np.array([o.rotation_y for o in objects], dtype=np.float64)
    return np.stack([loc[:, 0], loc[:, 2], -loc[:, 1] + 0.5 * hwl[:, 0], hwl[:, 2], hwl[:, 1], hwl[:, 0], -ry], 1)


def _overlaps(det: np.ndarray, gt: np.ndarray, metric: str) -> np.ndarray:
    return iou_bev(det, gt) if metric == "bev" else iou_3d(det, gt)


def _overlap_over_det(det: np.ndarray, region: np.ndarray, metric: str) -> np.ndarray:
    """Intersection over the detection's area (BEV) or volume (3D), for DontCare regions."""
    inter = intersection_area_bev(det, region)
    size = det[:, 3] * det[:, 4]
    if metric == "3d":
        top = np.minimum((det[:, 2] + det[:, 5] / 2)[:, None], (region[:, 2] + region[:, 5] / 2)[None])
        bottom = np.maximum((det[:, 2] - det[:, 5] / 2)[:, None], (region[:, 2] - region[:, 5] / 2)[None])
        inter, size = inter * np.clip(top - bottom, 0, None), size * det[:, 5]
    return inter / np.maximum(size, 1e-12)[:, None]


def _ignore_flags(cls: str, level: int, gts: list[KittiObject], dets: list[KittiObject]):
    """The devkit's ``cleanData``: (ignored_gt, ignored_det) with 0 evaluated, 1 ignored, -1 not considered."""
    name = cls.lower()
    ignored_gt = np.full(len(gts), -1, dtype=np.int64)
    for i, g in enumerate(gts):
        t = g.type.lower()
        valid = 1 if t == name else (0 if NEIGHBOUR.get(name) == t else -1)
        hard = (g.occluded > MAX_OCCLUSION[level] or g.truncated > MAX_TRUNCATION[level]
                or (g.bbox[3] - g.bbox[1]) < MIN_HEIGHT[level])
        if valid == 1 and not hard:
            ignored_gt[i] = 0
        elif valid == 0 or (valid == 1 and hard):
            ignored_gt[i] = 1
    ignored_det = np.full(len(dets), -1, dtype=np.int64)
    for j, d in enumerate(dets):
        if int(abs(d.bbox[3] - d.bbox[1])) < MIN_HEIGHT[level]:   # the devkit truncates the height to int
            ignored_det[j] = 1
        elif d.type.lower() == name:
            ignored_det[j] = 0
    return ignored_gt, ignored_det


def _statistics(overlap, ignored_gt, ignored_det, scores, dc_overlap, min_overlap, thresh) -> tuple[int, int, int]:
    """The devkit's ``computeStatistics`` with false positives, at one score threshold: (tp, fp, fn)."""
    assigned = np.zeros(len(scores), dtype=bool)
    usable = (ignored_det != -1) & (scores >= thresh)
    tp = fp = fn = 0
    for i in range(len(ignored_gt)):          # loop over ground-truth objects of one frame
        if ignored_gt[i] == -1:
            continue
        cand = usable & ~assigned & (overlap[:, i] > min_overlap)
        normal = cand & (ignored_det == 0)
        if normal.any():
            j = int(np.argmax(np.where(normal, overlap[:, i], -np.inf)))
        elif cand.any():
            j = int(np.argmax(cand))           # the first ignored detection
        else:
            fn += int(ignored_gt[i] == 0)
            continue
        assigned[j] = True
        if ignored_gt[i] == 0 and ignored_det[j] == 0:
            tp += 1
    open_det = usable & ~assigned & (ignored_det == 0)
    fp = int(open_det.sum())
    for k in range(dc_overlap.shape[1]):       # detections inside DontCare regions are not false positives
        inside = open_det & (dc_overlap[:, k] > min_overlap)
        fp -= int(inside.sum())
        open_det &= ~inside
    return tp, fp, fn


def average_precision(recall: np.ndarray, precision: np.ndarray) -> dict[str, float]:
    """AP (percent) from operating points: mean interpolated precision at the R11 and R40 recall positions."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    out = {}
    for key, points in RECALL_POINTS.items():
        reached = recall[None, :] >= points[:, None] - 1e-9
        interp = np.where(reached, precision[None, :], 0.0).max(axis=1) if len(recall) else np.zeros(len(points))
        out[key] = float(100.0 * interp.mean())
    return out


def _class_curve(frames: list[dict], cls: str, level: int, metric: str,
                 min_overlap: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Recall and precision at every detection score over all frames, and the number of evaluated objects.

    Per frame the statistics are a step function of the threshold that changes only at that frame's own
    scores; their increments are merged over frames by descending score.
    """
    base = np.zeros(3, dtype=np.int64)
    steps_score, steps_delta = [], []
    n_gt = 0
    for f in frames:
        ignored_gt, ignored_det = _ignore_flags(cls, level, f["gt"], f["det"])
        n_gt += int((ignored_gt == 0).sum())
        prev = np.array([0, 0, int((ignored_gt == 0).sum())])  # no detection kept
        base += prev
        scores = f["scores"]
        own = np.unique(scores[ignored_det != -1])[::-1]
        for s in own:                          # loop over this frame's distinct scores
            cur = np.array(_statistics(f["overlap"][metric], ignored_gt, ignored_det, scores,
                                       f["dc_overlap"][metric], min_overlap, s))
            steps_score.append(s)
            steps_delta.append(cur - prev)
            prev = cur
    if not steps_score:
        return np.zeros(0), np.zeros(0), n_gt
    s = np.asarray(steps_score)
    order = np.argsort(-s, kind="stable")
    s, totals = s[order], base + np.cumsum(np.asarray(steps_delta)[order], axis=0)
    last = np.r_[s[1:] != s[:-1], True]        # the state once every detection at that score is kept
    tp, fp, fn = totals[last].T.astype(np.float64)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    return recall, precision, n_gt


def evaluate(pred: dict[str, list[KittiObject]], truth: dict[str, list[KittiObject]],
             calibs: dict[str, Calibration] | None = None, pred_frame: str = "camera",
             classes: tuple[str, ...] = CLASSES, min_overlap: dict[str, float] | None = None) -> dict:
    """KITTI AP of detections ``pred`` against labels ``truth`` (both: frame id -> objects).

    Frames are those of ``pred`` (as the devkit: frames without a result are not evaluated) and each needs
    labels. ``min_overlap``: the IoU a detection must exceed per class (default :data:`MIN_OVERLAP`, the
    benchmark's; :data:`LOOSE_OVERLAP` is the devkit's looser set). ``pred_frame='lidar'`` means the detections
    were written without calibration (lidar frame, see `pcseg.io.kitti.lidar_boxes_to_objects`); ``calibs`` then
    converts them to the camera frame.

    Returns ``{"frames": n, "min_overlap": {cls: IoU}, "classes": {cls: {"num_gt": {difficulty: n},
    "bev"|"3d": {"R11"|"R40": {difficulty: AP in percent or None when there is nothing to evaluate}}}}}``.
    """
    if pred_frame not in ("camera", "lidar"):
        raise UsageError(f"unknown frame {pred_frame!r}: use 'camera' or 'lidar'")
    overlaps = MIN_OVERLAP if min_overlap is None else {**MIN_OVERLAP, **min_overlap}
    unknown = [c for c in classes if c not in MIN_OVERLAP]
    if unknown:
        raise UsageError(f"cannot evaluate class {unknown[0]!r}: KITTI AP covers {', '.join(CLASSES)}")
    frames = []
    for fid in sorted(pred):
        if fid not in truth:
            raise BadInputError(f"no ground truth for frame {fid}")
        dets = list(pred[fid])
        if pred_frame == "lidar":
            if not calibs or fid not in calibs:
                raise UsageError(f"detections of frame {fid} are in the lidar frame: a calibration is needed")
            boxes, names = objects_to_lidar_boxes(dets, None)
            dets = lidar_boxes_to_objects(boxes, names, [d.score for d in dets], calibs[fid])
        gts = [g for g in truth[fid] if g.type != "DontCare"]
        dc = [g for g in truth[fid] if g.type == "DontCare" and np.all(np.asarray(g.dimensions) > 0)]
        det_boxes, gt_boxes, dc_boxes = _camera_boxes(dets), _camera_boxes(gts), _camera_boxes(dc)
        scores = np.array([1.0 if d.score is None else d.score for d in dets], dtype=np.float64)
        frames.append({
            "gt": gts, "det": dets, "scores": scores,
            "overlap": {m: _overlaps(det_boxes, gt_boxes, m) for m in METRICS},
            "dc_overlap": {m: _overlap_over_det(det_boxes, dc_boxes, m) for m in METRICS},
        })
    result = {"frames": len(frames), "min_overlap": {c: overlaps[c] for c in classes}, "classes": {}}
    for cls in classes:
        entry = {"num_gt": {}}
        for metric in METRICS:
            entry[metric] = {key: {} for key in RECALL_POINTS}
            for level, diff in enumerate(DIFFICULTIES):
                recall, precision, n_gt = _class_curve(frames, cls, level, metric, overlaps[cls])
                entry["num_gt"][diff] = n_gt
                ap = average_precision(recall, precision)
                for key in RECALL_POINTS:
                    entry[metric][key][diff] = ap[key] if n_gt > 0 else None
        result["classes"][cls] = entry
    return result


def evaluate_folders(pred_dir, truth_dir, calib_dir=None, classes: tuple[str, ...] = CLASSES) -> dict:
    """`evaluate` on folders of ``<frame>.txt`` label files. Result files written in the lidar frame (they start
    with the lidar header line) are converted with ``calib_dir`` (default: ``truth_dir/../calib``)."""
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    for d in (pred_dir, truth_dir):
        if not d.is_dir():
            raise BadInputError("not a folder", os.fspath(d))
    files = sorted(pred_dir.glob("*.txt"))
    if not files:
        raise BadInputError("no .txt result files", os.fspath(pred_dir))
    calib_dir = Path(calib_dir) if calib_dir is not None else truth_dir.parent / "calib"
    pred, truth, calibs, frames = {}, {}, {}, set()
    for f in files:
        fid = f.stem
        label = truth_dir / f.name
        if not label.is_file():
            raise BadInputError(f"no ground-truth labels for result {f.name}", os.fspath(truth_dir))
        truth[fid] = read_labels(label)
        pred[fid] = read_labels(f)
        frame = read_label_frame(f)
        frames.add(frame)
        if frame == "lidar":
            cf = calib_dir / f.name
            if not cf.is_file():
                raise UsageError(f"{f} holds lidar-frame boxes: give the calibration folder (no {cf})")
            calibs[fid] = Calibration.from_file(cf)
    if len(frames) > 1:
        raise BadInputError("mixes camera-frame and lidar-frame result files", os.fspath(pred_dir))
    return evaluate(pred, truth, calibs, pred_frame=frames.pop(), classes=classes)


def format_results(result: dict) -> str:
    """A plain-text table: one line per class, metric and recall positions (AP in percent: easy moderate hard)."""
    overlaps = ", ".join(f"{c} {v:g}" for c, v in result.get("min_overlap", MIN_OVERLAP).items())
    lines = [f"KITTI AP on {result['frames']} frame(s); overlap {overlaps}",
             f"{'class':<11}{'metric':<7}{'points':<7}{'easy':>8}{'moderate':>10}{'hard':>8}"]
    for cls, entry in result["classes"].items():
        for metric in METRICS:
            for key in RECALL_POINTS:
                vals = [entry[metric][key][d] for d in DIFFICULTIES]
                cells = "".join(f"{'-' if v is None or math.isnan(v) else f'{v:.2f}':>{w}}"
                                for v, w in zip(vals, (8, 10, 8)))
                lines.append(f"{cls:<11}{metric:<7}{key:<7}{cells}")
        n = entry["num_gt"]
        lines.append(f"{cls:<11}objects evaluated (easy/moderate/hard): {n['easy']}/{n['moderate']}/{n['hard']}")
    return "\n".join(lines)


RELIABILITY_EDGES = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
"""Score bins of :func:`score_reliability`: [0.1, 0.3), [0.3, 0.5), ... [0.9, 1.0]."""


def score_reliability(pred: dict[str, list[KittiObject]], truth: dict[str, list[KittiObject]], cls: str = "Car",
                      min_overlap: float = 0.5, edges=RELIABILITY_EDGES) -> dict:
    """What a detection's score says: per score bin, how many ``cls`` boxes were predicted and the share that
    found a ``cls`` ground truth of any difficulty (bird's-eye-view IoU above ``min_overlap``; each ground truth
    taken by at most one box: boxes in descending score each take the unassigned ground truth of greatest
    overlap, the greedy matching of COCO-style evaluation); and, over the frames holding no ``cls`` ground truth
    (a frame without cars), how many boxes score 0.5 or more. A calibrated score reads as that share. DontCare regions are not excluded here: a box on
    one counts as unmatched."""
    edges = np.asarray(edges, dtype=np.float64)
    scores, hits, empty_frames, empty_boxes = [], [], 0, 0
    for frame, dets in pred.items():
        d = [o for o in dets if o.type.lower() == cls.lower()]
        g = [o for o in truth.get(frame, []) if o.type.lower() == cls.lower()]
        if not g:
            empty_frames += 1
            empty_boxes += sum(o.score >= 0.5 for o in d)
        if not d:
            continue
        order = np.argsort([-o.score for o in d], kind="stable")
        ov = (_overlaps(_camera_boxes([d[i] for i in order]), _camera_boxes(g), "bev") if g
              else np.zeros((len(d), 0)))
        taken = np.zeros(len(g), bool)
        for row, i in enumerate(order):
            cand = np.where(taken, -1.0, ov[row]) if len(g) else np.zeros(0)
            j = int(np.argmax(cand)) if len(cand) else -1
            hit = j >= 0 and cand[j] > min_overlap
            if hit:
                taken[j] = True
            scores.append(d[i].score)
            hits.append(hit)
    scores, hits = np.asarray(scores, dtype=np.float64), np.asarray(hits, dtype=bool)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (scores >= lo) & ((scores < hi) | ((hi == edges[-1]) & (scores <= hi)))
        bins.append({"from": float(lo), "to": float(hi), "boxes": int(m.sum()), "matched": int(hits[m].sum()),
                     "matched_share": float(hits[m].mean()) if m.any() else None})
    return {"class": cls, "min_overlap": min_overlap, "bins": bins, "frames_without": empty_frames,
            "boxes_at_0.5_in_frames_without": int(empty_boxes)}


def pool_reliability(results: list[dict]) -> dict:
    """:func:`score_reliability` results of disjoint frame sets (the folds of a k-fold) summed into one."""
    if not results:
        raise ValueError("nothing to pool")
    out = {k: results[0][k] for k in ("class", "min_overlap")}
    bins = []
    for i, b in enumerate(results[0]["bins"]):
        boxes = sum(r["bins"][i]["boxes"] for r in results)
        matched = sum(r["bins"][i]["matched"] for r in results)
        bins.append({"from": b["from"], "to": b["to"], "boxes": boxes, "matched": matched,
                     "matched_share": matched / boxes if boxes else None})
    out.update(bins=bins, frames_without=sum(r["frames_without"] for r in results),
               **{"boxes_at_0.5_in_frames_without": sum(r["boxes_at_0.5_in_frames_without"] for r in results)})
    return out
