"""`pcseg segment` on one input: read, voting inference, fields written back, metrics."""
from __future__ import annotations

import re
import time

import numpy as np

from ..data.classmaps import ClassMap
from ..errors import BadInputError, UsageError
from ..io import PointCloud, format_from_path, read, write
from ..models.checkpoint import Checkpoint
from .infer import segment_points
from .metrics import confusion_matrix, scores


def class_map_of(ck: Checkpoint) -> ClassMap:
    return ClassMap.from_dict(ck.card["classes"])


def _free_name(cloud: PointCloud, name: str) -> str:
    """``name`` unless the input already has such a field (original fields are never replaced): then pred_<name>."""
    return name if name not in cloud.fields else f"pred_{name}"


def prediction_fields(cloud: PointCloud, ck: Checkpoint, labels: np.ndarray, proba: np.ndarray | None,
                      confidence: bool, with_proba: bool, as_classification: bool, fmt: str | None) -> dict:
    """New per-point fields for the output; ``classification`` only with ``as_classification``."""
    cmap = class_map_of(ck)
    out = {}
    if as_classification:
        if fmt not in ("las", "laz"):
            raise UsageError("--as-classification writes into a LAS/LAZ 'classification'; the output is not LAS/LAZ")
        if "ASPRS" not in cmap.raw_kind:
            raise UsageError(f"model {ck.name!r} has no ASPRS class map ({cmap.raw_kind}); drop --as-classification")
        out["classification"] = cmap.decode(labels).astype(np.uint8)
    else:
        dtype = np.uint8 if cmap.num_classes <= 255 else np.uint16
        out[_free_name(cloud, "class")] = labels.astype(dtype)
    if confidence:
        out[_free_name(cloud, "confidence")] = proba.max(axis=1).astype(np.float32)
    if with_proba:
        for i, name in enumerate(cmap.names):
            field = "prob_" + re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")
            out[_free_name(cloud, field)] = proba[:, i].astype(np.float32)
    return out


def evaluate(cloud: PointCloud, ck: Checkpoint, labels: np.ndarray, field: str) -> dict:
    if field not in cloud.fields:
        raise BadInputError(f"no field {field!r} to evaluate against (fields: {', '.join(cloud.fields)})",
                            cloud.meta.get("source"))
    cmap = class_map_of(ck)
    truth = cmap.encode(cloud.fields[field])
    if (truth >= 0).sum() == 0:
        raise BadInputError(f"no value of field {field!r} is a known {cmap.raw_kind} of model {ck.name!r}",
                            cloud.meta.get("source"))
    return scores(confusion_matrix(labels, truth, cmap.num_classes), cmap.names)


def las_point_count(path: str) -> int:
    import laspy

    try:
        with laspy.open(path) as r:
            return int(r.header.point_count)
    except Exception:
        return 0  # the normal reader reports what is wrong with the file


def segment_file(ck: Checkpoint, src: str, output: str | None, in_format: str | None = None,
                 out_format: str | None = None, votes: int = 3, device: str = "cpu", confidence: bool = False,
                 with_proba: bool = False, as_classification: bool = False, eval_field: str | None = None,
                 batch_points: int = 60_000, tile_points: int = 5_000_000, progress=None) -> dict:
    """Segment one file; returns the summary `--json` prints. LAS/LAZ files of more than ``tile_points``
    points written to LAS/LAZ are processed in tiles with bounded memory (:mod:`pcseg.engine.chunked`)."""
    t0 = time.perf_counter()
    fmt_in = in_format or (format_from_path(src) if src != "-" else None)
    fmt_out = out_format or (format_from_path(output) if output not in (None, "-") else None)
    if (src != "-" and output not in (None, "-") and fmt_in in ("las", "laz") and fmt_out in ("las", "laz")
            and las_point_count(src) > tile_points):
        return _segment_large(ck, src, output, fmt_out, votes, device, confidence, with_proba, as_classification,
                              eval_field, batch_points, tile_points, progress, t0)
    cloud = read(src, in_format)
    seg = segment_points(ck, cloud, votes=votes, device=device, batch_points=batch_points,
                         want_proba=confidence or with_proba, progress=progress)
    cmap = class_map_of(ck)
    summary = {"input": src, "output": output, "points": len(cloud), "model": ck.name, "votes": votes}
    if output is not None:
        new = prediction_fields(cloud, ck, seg.labels, seg.proba, confidence, with_proba, as_classification, fmt_out)
        notes = write(cloud.with_fields(**new), output, out_format)
        summary["fields_written"] = list(new)
        summary["notes"] = notes
    counts = np.bincount(seg.labels, minlength=cmap.num_classes)
    summary["classes"] = {n: int(c) for n, c in zip(cmap.names, counts)}
    if eval_field is not None:
        summary["metrics"] = evaluate(cloud, ck, seg.labels, eval_field)
    seconds = time.perf_counter() - t0
    summary.update(seconds=round(seconds, 3), points_per_second=round(len(cloud) / seconds, 1),
                   subsampled_points=seg.sub_points, spheres=seg.spheres)
    return summary


def _segment_large(ck, src, output, fmt_out, votes, device, confidence, with_proba, as_classification, eval_field,
                   batch_points, tile_points, progress, t0) -> dict:
    from .chunked import segment_las_chunked

    cmap = class_map_of(ck)

    def fields(chunk, labels, proba):
        return prediction_fields(chunk, ck, labels, proba, confidence, with_proba, as_classification, fmt_out)

    def truth(chunk):
        if eval_field not in chunk.fields:
            raise BadInputError(f"no field {eval_field!r} to evaluate against", src)
        return cmap.encode(chunk.fields[eval_field])

    r = segment_las_chunked(ck, src, output, fmt_out == "laz", fields, votes, device, batch_points, tile_points,
                            confidence or with_proba, truth if eval_field else None, progress)
    seconds = time.perf_counter() - t0
    summary = {"input": src, "output": output, "points": r["points"], "model": ck.name, "votes": votes,
               "classes": {n: int(c) for n, c in zip(cmap.names, r["counts"])}, "notes": r["notes"],
               "tiles": r["tiles"], "seconds": round(seconds, 3),
               "points_per_second": round(r["points"] / seconds, 1)}
    if eval_field:
        summary["metrics"] = scores(r["confusion"], cmap.names)
    return summary
