"""`pcseg segment` on one input: read, voting inference, fields written back, metrics."""
from __future__ import annotations

import math
import re
import time

import numpy as np

from ..data.classmaps import ClassMap
from ..data.features import ground_surfaces
from ..errors import BadInputError, UsageError
from ..io import PointCloud, format_from_path, read, write
from ..io.las import las_point_count
from ..models.checkpoint import Checkpoint
from .infer import segment_points
from .metrics import confusion_matrix, scores
from .options import SegmentOptions
from .vegetation import (GROUND_NEIGHBOURS, GROUND_TOLERANCE, asprs_codes, default_building_test,
                         height_above_predicted_ground, refine_buildings, refine_ground, refine_low_vegetation)


def class_map_of(ck: Checkpoint) -> ClassMap:
    return ClassMap.from_dict(ck.card["classes"])


def _free_name(cloud: PointCloud, name: str) -> str:
    """``name`` unless the input already has such a field (original fields are never replaced): then pred_<name>."""
    return name if name not in cloud.fields else f"pred_{name}"


def airborne_rules(ck: Checkpoint, heights: tuple[float, float] | None = None, ground_tolerance: float | None = None,
                   building_min_height: float | None = None) -> dict | None:
    """The model's height rules (:mod:`pcseg.engine.vegetation`) as one dict: the card's ``vegetation_split``
    (thresholds replaced by ``heights``, the ground test's tolerance by ``ground_tolerance``) plus
    ``building_min_height`` from its ``building_test`` (``inf`` turns either test off; the rules hold None for
    a building test that is off). None for a model without a vegetation split, which takes none of these
    options."""
    split = ck.card.get("vegetation_split")
    if split is None:
        for given, option in ((heights, "--vegetation-heights"), (ground_tolerance, "--ground-tolerance"),
                              (building_min_height, "--building-min-height")):
            if given is not None:
                raise UsageError(f"model {ck.name!r} predicts no single vegetation class to split by height; "
                                 f"drop {option}")
        return None
    rules = {"ground_tolerance": GROUND_TOLERANCE, "ground_neighbours": GROUND_NEIGHBOURS, **split}
    building = ck.card.get("building_test") or default_building_test(class_map_of(ck).names)
    rules["building_class"] = building["building_class"] if building else None
    # None: no test (a card whose building_test.min_height is null turned it off, e.g. `pcseg adapt`)
    rules["building_min_height"] = (float(building["min_height"]) if building and building.get("min_height") is not None
                                    else None)
    if heights is not None:
        low, medium = (float(v) for v in heights)
        if not 0 <= low <= medium:
            raise UsageError(f"--vegetation-heights needs 0 <= LOW <= MEDIUM, got {low:g},{medium:g}")
        rules["thresholds"] = [low, medium]
    if ground_tolerance is not None:
        if not ground_tolerance > 0:
            raise UsageError(f"--ground-tolerance needs a height above 0 m (or 'off'), got {ground_tolerance:g}")
        rules["ground_tolerance"] = float(ground_tolerance)
    if building_min_height is not None:
        if rules["building_class"] is None:
            raise UsageError(f"model {ck.name!r} has no building class; drop --building-min-height")
        if not building_min_height >= 0:
            raise UsageError(f"--building-min-height needs a height of 0 m or more (or 'off'), "
                             f"got {building_min_height:g}")
        rules["building_min_height"] = None if math.isinf(building_min_height) else float(building_min_height)
    return rules


def refine_and_split(ck: Checkpoint, rules: dict | None, xyz: np.ndarray, labels: np.ndarray,
                     runner_up: np.ndarray, hag: list | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(labels after the building and ground tests, height above the predicted ground of every point) for a
    model with height rules (:func:`airborne_rules`); else (labels, None). ``runner_up``: every point's second
    most likely class, ``hag``: the ``hag`` / ``terrain`` channel's ground estimates of this ``xyz`` when the inference made
    them (both from :class:`pcseg.engine.infer.Segmentation`)."""
    if rules is None:
        return labels, None
    cmap = class_map_of(ck)
    ground = cmap.index(rules["ground_class"])
    low_vegetation = rules.get("terrain_tolerance") is not None and "terrain" in ck.card["features"]
    if hag is None and low_vegetation:   # both tests read them: computed once (chunked tiles come without)
        hag = ground_surfaces(xyz, ck.card["features"])
    if rules["building_min_height"] is not None:
        labels = refine_buildings(xyz, labels, runner_up, cmap.index(rules["building_class"]),
                                  rules["building_min_height"], hag, ck.card["features"])
    if np.isfinite(rules["ground_tolerance"]):
        labels = refine_ground(xyz, labels, ground, cmap.index(rules["vegetation_class"]),
                               float(rules["ground_tolerance"]), int(rules["ground_neighbours"]))
    if low_vegetation:
        labels = refine_low_vegetation(xyz, labels, ground, cmap.index(rules["vegetation_class"]), hag[1],
                                       float(rules["terrain_tolerance"]), float(rules["terrain_slope_factor"]))
    return labels, height_above_predicted_ground(xyz, labels, ground, float(rules["cell"]))


def asprs_prediction(ck: Checkpoint, labels: np.ndarray, height: np.ndarray | None, split: dict | None) -> np.ndarray:
    """ASPRS codes of the predictions: the class map's codes, vegetation split by height when the model says so."""
    cmap = class_map_of(ck)
    codes = cmap.decode(labels)
    if split is None or height is None:
        return codes
    return asprs_codes(labels, height, codes, cmap.index(split["vegetation_class"]), split["thresholds"],
                       split["codes"])


def prediction_fields(cloud: PointCloud, ck: Checkpoint, labels: np.ndarray, proba: np.ndarray | None,
                      confidence: bool, with_proba: bool, as_classification: bool, fmt: str | None,
                      height: np.ndarray | None = None, split: dict | None = None) -> dict:
    """New per-point fields for the output; ``classification`` only with ``as_classification``;
    ``height_above_ground`` (float32, metres above the predicted ground) when the model splits vegetation."""
    cmap = class_map_of(ck)
    out = {}
    if as_classification:
        if fmt not in ("las", "laz"):
            raise UsageError("--as-classification writes into a LAS/LAZ 'classification'; the output is not LAS/LAZ")
        if "ASPRS" not in cmap.raw_kind:
            raise UsageError(f"model {ck.name!r} has no ASPRS class map ({cmap.raw_kind}); drop --as-classification")
        out["classification"] = asprs_prediction(ck, labels, height, split).astype(np.uint8)
    else:
        dtype = np.uint8 if cmap.num_classes <= 255 else np.uint16
        out[_free_name(cloud, "class")] = labels.astype(dtype)
    if height is not None:
        out[_free_name(cloud, "height_above_ground")] = height.astype(np.float32)
    if confidence:
        out[_free_name(cloud, "confidence")] = proba.max(axis=1).astype(np.float32)
    if with_proba:
        for i, name in enumerate(cmap.names):
            field = "prob_" + re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")
            out[_free_name(cloud, field)] = proba[:, i].astype(np.float32)
    return out


def evaluate_asprs(truth_raw: np.ndarray, pred_codes: np.ndarray) -> dict:
    """Scores on the full ASPRS class set (ground, low / medium / high vegetation, building, water, bridge,
    other) of predicted ASPRS codes against the file's codes: how the vegetation height split scores."""
    from ..data.classmaps import builtin_class_map

    asprs = builtin_class_map("asprs")
    return scores(confusion_matrix(asprs.encode(pred_codes), asprs.encode(truth_raw), asprs.num_classes),
                  asprs.names)


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


def segment_file(ck: Checkpoint, src: str, output: str | None, opts: SegmentOptions,
                 in_format: str | None = None, out_format: str | None = None, progress=None) -> dict:
    """Segment one file; returns the summary `--json` prints. LAS/LAZ files of more than ``opts.tile_points``
    points written to LAS/LAZ are processed in tiles with bounded memory (:mod:`pcseg.engine.chunked`)."""
    t0 = time.perf_counter()
    fmt_in = in_format or (format_from_path(src) if src != "-" else None)
    fmt_out = out_format or (format_from_path(output) if output not in (None, "-") else None)
    if (src != "-" and output not in (None, "-") and fmt_in in ("las", "laz") and fmt_out in ("las", "laz")
            and las_point_count(src) > opts.tile_points):
        return _segment_large(ck, src, output, fmt_out, opts, progress, t0)
    cloud = read(src, in_format)
    seg = segment_points(ck, cloud, votes=opts.votes, device=opts.device, batch_points=opts.batch_points,
                         want_proba=opts.want_proba, progress=progress, bf16=opts.bf16)
    cmap = class_map_of(ck)
    split = airborne_rules(ck, opts.vegetation_heights, opts.ground_tolerance, opts.building_min_height)
    labels, height = refine_and_split(ck, split, cloud.xyz, seg.labels, seg.runner_up, seg.hag)
    summary = {"input": src, "output": output, "points": len(cloud), "model": ck.name, "votes": opts.votes}
    if output is not None:
        new = prediction_fields(cloud, ck, labels, seg.proba, opts.confidence, opts.proba,
                                opts.as_classification, fmt_out, height, split)
        notes = write(cloud.with_fields(**new), output, out_format)
        summary["fields_written"] = list(new)
        summary["notes"] = notes
    counts = np.bincount(labels, minlength=cmap.num_classes)
    summary["classes"] = {n: int(c) for n, c in zip(cmap.names, counts)}
    if split is not None and height is not None:
        codes = asprs_prediction(ck, labels, height, split)
        summary["asprs_codes"] = {str(k): int(v) for k, v in zip(*np.unique(codes, return_counts=True))}
    if opts.eval_field is not None:
        summary["metrics"] = evaluate(cloud, ck, labels, opts.eval_field)
        if split is not None and height is not None and "ASPRS" in cmap.raw_kind:
            summary["metrics_asprs"] = evaluate_asprs(cloud.fields[opts.eval_field], codes)
    if opts.png:
        codes = asprs_prediction(ck, labels, height, split) if opts.as_classification else None
        summary["png"] = draw_result(ck, cloud, labels, codes, opts)
    seconds = time.perf_counter() - t0
    summary.update(seconds=round(seconds, 3), points_per_second=round(len(cloud) / seconds, 1),
                   subsampled_points=seg.sub_points, regions=seg.regions)
    return summary


def draw_result(ck: Checkpoint, cloud: PointCloud, labels: np.ndarray, codes: np.ndarray | None,
                opts: SegmentOptions) -> str:
    """``--png``: the segmented cloud from above in the model's class colours, or in ASPRS colours when the
    codes went into the classification (``codes``)."""
    from .render import render_cloud, save_png

    if codes is not None:
        image = render_cloud(PointCloud(cloud.xyz, {"classification": codes}, dict(cloud.meta)), by="classification")
    else:
        image = render_cloud(PointCloud(cloud.xyz, {"class": labels}, dict(cloud.meta)), by="class",
                             class_map=class_map_of(ck))
    save_png(image, opts.png)
    return opts.png


def _segment_large(ck, src: str, output: str, fmt_out: str, opts: SegmentOptions, progress, t0: float) -> dict:
    from .chunked import segment_las_chunked

    cmap = class_map_of(ck)
    split = airborne_rules(ck, opts.vegetation_heights, opts.ground_tolerance, opts.building_min_height)

    def fields(chunk, labels, proba, height):
        return prediction_fields(chunk, ck, labels, proba, opts.confidence, opts.proba, opts.as_classification,
                                 fmt_out, height, split)

    def refine(xyz, labels, runner_up):  # per tile, from the tile's own predictions (margin included)
        return refine_and_split(ck, split, xyz, labels, runner_up)

    def truth(chunk):
        if opts.eval_field not in chunk.fields:
            raise BadInputError(f"no field {opts.eval_field!r} to evaluate against", src)
        return cmap.encode(chunk.fields[opts.eval_field])

    r = segment_las_chunked(ck, src, output, fmt_out == "laz", fields, opts, truth if opts.eval_field else None,
                            progress, refine if split is not None else None)
    seconds = time.perf_counter() - t0
    summary = {"input": src, "output": output, "points": r["points"], "model": ck.name, "votes": opts.votes,
               "classes": {n: int(c) for n, c in zip(cmap.names, r["counts"])}, "notes": r["notes"],
               "tiles": r["tiles"], "seconds": round(seconds, 3),
               "points_per_second": round(r["points"] / seconds, 1)}
    if opts.eval_field:
        summary["metrics"] = scores(r["confusion"], cmap.names)
    if opts.png:  # the tiles are gone: draw from the written file
        written = read(output)
        name = "classification" if opts.as_classification else ("pred_class" if "pred_class" in written.fields
                                                                 else "class")
        values = written.fields[name]
        summary["png"] = draw_result(ck, written, values, values if opts.as_classification else None, opts)
    return summary
