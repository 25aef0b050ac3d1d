"""`pcseg export`: a segmentation model as a deployable network file, checked against the original.

The network is traced on real regions of a real cloud (:func:`example_batch`), so the exported graph sees the
shapes and index patterns it will meet; every point and neighbour count stays dynamic (see
:mod:`pcseg.models.export` for the input convention).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..data.batch import StackedBatch, build_batch
from ..errors import UsageError
from ..geometry.tiling import column_covering_centers
from ..io import PointCloud
from ..models.checkpoint import Checkpoint
from ..models.export import export_onnx, export_program, load_exported
from .infer import prepare_inputs, vote_logits

FORMATS = {".pt2": "torch.export", ".onnx": "onnx"}


def example_batch(ck: Checkpoint, cloud: PointCloud, regions: int = 2):
    """(spec, a StackedBatch of ``regions`` inference regions of ``cloud``) as `pcseg segment` builds them."""
    from scipy.spatial import cKDTree

    spec, sub = prepare_inputs(ck, cloud)
    radius = float(ck.card["sphere_radius"])
    centers = column_covering_centers(sub.points, 0.3 * radius)
    members = cKDTree(sub.points).query_ball_point(centers, radius)
    picked = sorted(range(len(centers)), key=lambda k: -len(members[k]))[:regions]
    if not picked or len(members[picked[0]]) < 2:
        raise UsageError("the example cloud is too small to trace the network on; pass a larger --input")
    batch = build_batch([(sub.points[members[k]] - centers[k]).astype(np.float32) for k in picked],
                        [sub.features[members[k]] for k in picked], spec)
    return spec, batch.to("cpu")


def export_model(ck: Checkpoint, cloud: PointCloud, path: str | Path) -> dict:
    """Export ``ck``'s network to ``path`` (.pt2 or .onnx), traced on regions of ``cloud``; returns the card."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"export writes {', '.join(FORMATS)} files, not {suffix or 'no extension'!r}")
    if ck.card.get("task", "segment") != "segment":
        raise UsageError(f"{ck.name} is a {ck.card.get('task')} model; export covers segmentation networks")
    spec, batch = example_batch(ck, cloud)
    if suffix == ".pt2":
        return export_program(ck, spec, batch, path)
    return export_onnx(ck, spec, batch, path)


def mean_logits(ck: Checkpoint, cloud: PointCloud, votes: int = 1) -> np.ndarray:
    """Voted logits of every subsampled point (the network's output, before labels are spread back)."""
    spec, sub = prepare_inputs(ck, cloud)
    return vote_logits(ck.model, spec, sub.points, sub.features, float(ck.card["sphere_radius"]),
                       len(ck.card["classes"]["names"]), votes)[0]


def compare(original: Checkpoint, exported: Checkpoint, cloud: PointCloud) -> dict:
    """Max |logit difference| and the share of identical labels of the two networks on ``cloud`` (votes 1)."""
    t0 = time.perf_counter()
    a = mean_logits(original, cloud)
    t1 = time.perf_counter()
    b = mean_logits(exported, cloud)
    t2 = time.perf_counter()
    return {"points": int(len(a)), "max_abs_logit_diff": float(np.abs(a - b).max()),
            "labels_identical": float((a.argmax(1) == b.argmax(1)).mean()),
            "seconds_original": round(t1 - t0, 3), "seconds_exported": round(t2 - t1, 3)}


def compare_onnx(original: Checkpoint, path: str | Path, cloud: PointCloud) -> dict:
    """The .onnx file run by ONNX Runtime against the original network, on regions of ``cloud`` other than the
    ones it was traced on (three, not two)."""
    import torch

    _, batch = example_batch(original, cloud, regions=3)
    with torch.inference_mode():
        a = original.model.eval()(batch).numpy()
    b = run_onnx(path, batch)
    return {"points": int(len(a)), "max_abs_logit_diff": float(np.abs(a - b).max()),
            "labels_identical": float((a.argmax(1) == b.argmax(1)).mean())}


def run_onnx(path: str | Path, batch: StackedBatch) -> np.ndarray:
    """Logits of an exported .onnx on one batch, with ONNX Runtime (optional extra)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UsageError("running an .onnx file needs onnxruntime: pip install 'pcseg[onnx]'") from None
    from ..models.export import flat_inputs, input_names

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = input_names(len(batch.points))
    feeds = {n: t.numpy() for n, t in zip(names, flat_inputs(batch))}
    wanted = {i.name for i in session.get_inputs()}
    return session.run(["logits"], {k: v for k, v in feeds.items() if k in wanted})[0]


__all__ = ["FORMATS", "compare", "compare_onnx", "example_batch", "export_model", "load_exported", "mean_logits", "run_onnx"]
