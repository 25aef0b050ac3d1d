"""Segmentation metrics from a confusion matrix: mIoU, overall accuracy, mean class accuracy, per-class IoU."""
from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, num_classes: int, ignore: int = -1) -> np.ndarray:
    """(C, C) int64 counts, rows = truth, columns = prediction; points whose truth is ``ignore`` are skipped."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    truth = np.asarray(truth).reshape(-1).astype(np.int64)
    if len(pred) != len(truth):
        raise ValueError(f"{len(pred)} predictions for {len(truth)} labels")
    keep = (truth != ignore) & (truth >= 0) & (truth < num_classes)
    return np.bincount(truth[keep] * num_classes + pred[keep], minlength=num_classes**2).reshape(num_classes, num_classes)


def scores(cm: np.ndarray, names: list[str] | tuple[str, ...] | None = None) -> dict:
    """mIoU, OA, mAcc and per-class IoU/accuracy. Classes absent from both truth and prediction are left out
    of the means (their IoU is undefined, reported as None). ``miou_present`` is the mean over the classes
    present in the ground truth only: a class predicted on a file that has none (IoU 0) is left out of it, its
    false positives still lower the IoU of the classes they were taken from."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    truth_n, pred_n = cm.sum(axis=1), cm.sum(axis=0)
    union = truth_n + pred_n - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(truth_n > 0, tp / truth_n, np.nan)
    total = cm.sum()
    names = list(names) if names is not None else [str(i) for i in range(len(cm))]
    present = ~np.isnan(iou)
    return {
        "miou": float(np.nanmean(iou)) if present.any() else None,
        "miou_present": float(iou[truth_n > 0].mean()) if (truth_n > 0).any() else None,
        "oa": float(tp.sum() / total) if total else None,
        "macc": float(np.nanmean(acc)) if (~np.isnan(acc)).any() else None,
        "iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
        "acc": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, acc)},
        "points": int(total),
    }
