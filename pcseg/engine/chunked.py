"""Segmentation of LAS/LAZ files larger than memory: spatial tiles with a margin, streamed in chunks.

1. Stream the file once: bounds, point count and the whole-cloud feature statistics (lowest z, colour and
   intensity divisors), so that every tile gets the features the whole cloud would have.
2. Choose square XY tiles holding about ``tile_points`` points each. Stream again and append every point that
   falls in a tile or within ``margin`` (at least the sphere radius) of it to that tile's scratch files.
3. Segment each tile on its own (grid subsampling, inference regions, votes); keep the predictions of the
   points inside the tile proper (the margin only gives them their context) in memory-mapped arrays.
4. Stream the input a third time and write it out chunk by chunk with the new fields: the output has every
   original record unchanged, in the original order. Peak memory is bounded by the tile and chunk sizes.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..data.features import FeatureStats, fill_local_features, local_margin, make_features, parse_channels
from ..geometry import grid_subsample
from ..io.atomic import atomic_write
from ..io.las import fill_record, iter_las_chunks, output_header
from ..models.checkpoint import Checkpoint
from .infer import softmax, top_two, vote_logits, warn_inputs
from .options import SegmentOptions


CHUNK = 1_000_000


def _stats_pass(path: str, channels: tuple[str, ...]):
    n, lo, hi = 0, np.full(3, np.inf), np.full(3, -np.inf)
    rgb_peak, hist = 0.0, None
    for _, c in iter_las_chunks(path, CHUNK):
        n += len(c)
        lo, hi = np.minimum(lo, c.xyz.min(axis=0)), np.maximum(hi, c.xyz.max(axis=0))
        if "rgb" in channels and "red" in c.fields:
            rgb_peak = max(rgb_peak, float(max(c.fields[k].max() for k in ("red", "green", "blue"))))
        if "intensity" in channels and "intensity" in c.fields:
            h = np.bincount(c.fields["intensity"].astype(np.int64), minlength=65536)
            hist = h if hist is None else hist + h
    intensity = 1.0
    if hist is not None and hist.sum():
        cum = np.cumsum(hist)
        # 99th percentile of the integer intensities (numpy's linear interpolation between order statistics)
        rank = 0.99 * (cum[-1] - 1)
        lo_v, hi_v = np.searchsorted(cum, math.floor(rank) + 1), np.searchsorted(cum, math.ceil(rank) + 1)
        intensity = float(lo_v + (hi_v - lo_v) * (rank - math.floor(rank))) or float(np.flatnonzero(hist)[-1])
    stats = FeatureStats(z_min=float(lo[2]), color_scale=255.0 if rgb_peak <= 255 else 65535.0,
                         intensity_scale=intensity)
    return n, lo, hi, stats


def segment_las_chunked(ck: Checkpoint, src: str, dest: str, compressed: bool, new_fields, opts: SegmentOptions,
                        truth=None, progress=None, refine=None) -> dict:
    """Segment a LAS/LAZ file tile by tile and write ``dest``.

    ``new_fields(chunk, labels, proba, height) -> dict`` makes the output fields of a chunk; ``truth(chunk) ->
    training ids`` (optional) adds a confusion matrix; ``refine(xyz, labels, runner_up) -> (labels, height)``
    (optional) turns a tile's predictions (margin included) into its final labels and their height above
    ground, passed on as ``height``.
    Returns points, tiles, notes, class counts, confusion, seconds.
    """
    t0 = time.perf_counter()
    card, model = ck.card, ck.model
    channels = parse_channels(card["features"])
    dl0, radius = float(card["dl0"]), float(card["sphere_radius"])
    tile_points = opts.tile_points
    num_classes = len(card["classes"]["names"])
    spec = model.pyramid_spec
    if card.get("neighbor_limits"):
        import dataclasses

        spec = dataclasses.replace(spec, neighbor_limits=list(card["neighbor_limits"]))
    n, lo, hi, stats = _stats_pass(src, channels)
    area = max((hi[0] - lo[0]) * (hi[1] - lo[1]), 1e-9)
    size = max(math.sqrt(area * tile_points / max(n, 1)), radius)
    nx, ny = int(math.ceil((hi[0] - lo[0] + 1e-9) / size)), int(math.ceil((hi[1] - lo[1] + 1e-9) / size))
    # more than the inference tiles' margin (1 - coverage) r: full context; and whatever the neighbourhood
    # channels need to equal the whole file's (half the widest ground window)
    margin = max(radius + 2 * dl0, local_margin(channels))
    scratch = Path(tempfile.mkdtemp(prefix="pcseg-tiles-", dir=os.environ.get("TMPDIR")))
    try:
        f_dim = None
        handles: dict[tuple[int, int], list] = {}
        for start, c in iter_las_chunks(src, CHUNK):
            if start == 0:   # the first million points (density over the cells they occupy)
                warn_inputs(card, c.xyz, src, c.fields)
            feats = make_features(c.fields, c.xyz, channels, src, stats, local=False,
                                  color_optional=bool(card.get("color_drop")))
            f_dim = feats.shape[1]
            gx0 = np.floor((c.xyz[:, 0] - margin - lo[0]) / size).astype(int)
            gx1 = np.floor((c.xyz[:, 0] + margin - lo[0]) / size).astype(int)
            gy0 = np.floor((c.xyz[:, 1] - margin - lo[1]) / size).astype(int)
            gy1 = np.floor((c.xyz[:, 1] + margin - lo[1]) / size).astype(int)
            for i in range(max(gx0.min(), 0), min(gx1.max(), nx - 1) + 1):
                for j in range(max(gy0.min(), 0), min(gy1.max(), ny - 1) + 1):
                    sel = np.flatnonzero((gx0 <= i) & (gx1 >= i) & (gy0 <= j) & (gy1 >= j))
                    if not len(sel):
                        continue
                    if (i, j) not in handles:
                        handles[(i, j)] = [open(scratch / f"{i}_{j}.{k}", "wb") for k in ("xyz", "f", "idx")]
                    hx, hf, hi_ = handles[(i, j)]
                    hx.write(c.xyz[sel].tobytes())
                    hf.write(feats[sel].astype(np.float32).tobytes())
                    hi_.write((sel + start).astype(np.int64).tobytes())
        for hs in handles.values():
            for h in hs:
                h.close()
        labels = np.lib.format.open_memmap(scratch / "labels.npy", mode="w+", dtype=np.int64, shape=(n,))
        proba = (np.lib.format.open_memmap(scratch / "proba.npy", mode="w+", dtype=np.float32, shape=(n, num_classes))
                 if opts.want_proba else None)
        height = (np.lib.format.open_memmap(scratch / "height.npy", mode="w+", dtype=np.float32, shape=(n,))
                  if refine is not None else None)
        for (i, j) in sorted(handles):
            xyz = np.fromfile(scratch / f"{i}_{j}.xyz", dtype=np.float64).reshape(-1, 3)
            feats = np.fromfile(scratch / f"{i}_{j}.f", dtype=np.float32).reshape(-1, f_dim)
            fill_local_features(feats, xyz, channels)  # e.g. height above ground: from the tile and its margin
            idx = np.fromfile(scratch / f"{i}_{j}.idx", dtype=np.int64)
            core = ((np.floor((xyz[:, 0] - lo[0]) / size).astype(int).clip(0, nx - 1) == i)
                    & (np.floor((xyz[:, 1] - lo[1]) / size).astype(int).clip(0, ny - 1) == j))
            if not core.any():
                continue
            # cells aligned on the whole cloud's corner, as the in-memory path aligns them
            shift = np.floor(lo)
            sub = grid_subsample(xyz - shift, dl0, features=feats, origin=lo - shift)
            logits = vote_logits(model, spec, sub.points, sub.features, radius, num_classes, opts.votes,
                                 opts.device, opts.batch_points, bf16=opts.bf16,
                                 density_cap=card.get("density_cap"))[0]
            pick = sub.inverse[core]
            top, second = top_two(logits)
            tile_labels = top[sub.inverse]
            if refine is not None:
                tile_labels, tile_height = refine(xyz, tile_labels, second[sub.inverse])
                height[idx[core]] = tile_height[core]
            labels[idx[core]] = tile_labels[core]
            if proba is not None:
                proba[idx[core]] = softmax(logits)[pick].astype(np.float32)
            if progress is not None:
                progress(1)
            del xyz, feats, idx, sub, logits

        def write(f):
            import laspy

            header = notes = writer = None
            for start, c in iter_las_chunks(src, CHUNK):
                sl = slice(start, start + len(c))
                lab = np.asarray(labels[sl])
                if truth is not None:
                    t = truth(c)
                    keep = t >= 0
                    confusion[:] += np.bincount(t[keep] * num_classes + lab[keep],
                                                minlength=num_classes**2).reshape(num_classes, num_classes)
                extra = new_fields(c, lab, None if proba is None else np.asarray(proba[sl]),
                                   None if height is None else np.asarray(height[sl]))
                chunk = c.with_fields(**extra)
                if writer is None:
                    header, notes = output_header(chunk, {k: np.asarray(v).dtype for k, v in chunk.fields.items()}, dest)
                    writer = laspy.open(f, mode="w", header=header, do_compress=compressed, closefd=False)
                writer.write_points(fill_record(header, chunk, dest))
            writer.close()
            return notes

        confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
        notes = atomic_write(dest, write)
        counts = np.zeros(num_classes, dtype=np.int64)
        for s in range(0, n, CHUNK):
            counts += np.bincount(labels[s:s + CHUNK], minlength=num_classes)
        return {"points": n, "tiles": len(handles), "notes": notes, "counts": counts, "confusion": confusion,
                "seconds": time.perf_counter() - t0}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
