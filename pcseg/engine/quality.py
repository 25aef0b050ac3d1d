"""Quality and speed of a segmentation checkpoint on labelled files: what model cards report."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..data.classmaps import BUILTIN_CLASS_MAPS, load_class_map
from ..data.features import COLOR_FIELDS
from ..errors import BadInputError, UsageError
from ..io import read
from ..models.checkpoint import Checkpoint
from .infer import segment_points
from .metrics import confusion_matrix, scores
from .segment import airborne_rules, class_map_of, refine_and_split

TRUTH_FIELDS = ("classification", "class", "label")


def parse_eval_spec(spec: str) -> tuple[str, str, str]:
    """``FILE[:FIELD[:CLASSMAP]]``, or ``CLASSMAP:FILE`` as training's ``--val`` writes it (``als-ground:x.las``)
    -> (file, field or "", class map name or ""). Points a partial-label map reads as a set of classes are
    left out of the scores."""
    head, sep, rest = spec.partition(":")
    if sep and head in BUILTIN_CLASS_MAPS and rest:
        return rest, "", head
    path, field, map_name = (spec.split(":") + ["", ""])[:3]
    return path, field, map_name


def measure_quality(ck: Checkpoint, specs: list[str], votes: int = 3, echo=None, without_color: bool = False) -> dict:
    """Segment every ``FILE[:FIELD[:CLASSMAP]]`` with ``ck`` and score the labels `pcseg segment` writes (an
    airborne model's ground test included) against its ground truth.

    ``without_color``: the files' colour fields are removed first (how a model whose card has ``color_drop``
    does on scans that store no colour).

    Returns ``{"votes", "pooled": {miou, miou_present, oa, macc, iou}, "per_file": {name: {miou, miou_present,
    oa, iou, points, seconds, points_per_second}}, "seconds"}`` (:func:`pcseg.engine.metrics.scores`); ``seconds`` is the time of segmentation proper (subsampling, spheres,
    network, voting), without reading the file."""
    cmap = class_map_of(ck)
    pooled = np.zeros((cmap.num_classes, cmap.num_classes), dtype=np.int64)
    per_file, total_seconds = {}, 0.0
    rules = airborne_rules(ck)
    for spec in specs:
        path, field, map_name = parse_eval_spec(spec)
        cloud = read(path)
        if without_color:
            cloud = dataclasses.replace(cloud, fields={k: v for k, v in cloud.fields.items() if k not in COLOR_FIELDS})
        field = field or next((f for f in TRUTH_FIELDS if f in cloud.fields), "")
        if field not in cloud.fields:
            raise BadInputError(f"no ground-truth field in {path}; name it as {path}:FIELD", path)
        reader = load_class_map(map_name) if map_name else cmap
        if reader.names != cmap.names:
            raise UsageError(f"class map {map_name} does not have the model's classes")
        seg = segment_points(ck, cloud, votes=votes)
        # the labels `pcseg segment` writes: the airborne height tests included
        labels = refine_and_split(ck, rules, cloud.xyz, seg.labels, seg.runner_up, seg.hag)[0]
        cm = confusion_matrix(labels, reader.encode(cloud.fields[field]), cmap.num_classes)
        pooled += cm
        total_seconds += seg.seconds
        s = scores(cm, cmap.names)
        per_file[Path(path).name] = {"miou": s["miou"], "miou_present": s["miou_present"], "oa": s["oa"],
                                     "iou": s["iou"], "points": s["points"],
                                     "seconds": round(seg.seconds, 3),
                                     "points_per_second": round(len(cloud) / seg.seconds, 1)}
        if echo is not None:
            echo(f"{Path(path).name}: mIoU {100 * (s['miou'] or 0):.1f} OA {100 * (s['oa'] or 0):.1f} "
                 f"({seg.seconds:.2f} s)")
    p = scores(pooled, cmap.names)
    return {"votes": votes, "pooled": {k: p[k] for k in ("miou", "miou_present", "oa", "macc", "iou")},
            "per_file": per_file, "seconds": round(total_seconds, 3)}
