"""Operations on whole :class:`pcseg.io.PointCloud` objects (all fields carried along)."""
from __future__ import annotations

import numpy as np

from ..io.cloud import PointCloud
from .subsample import grid_subsample, majority_vote

# Integer fields that hold measurements (averaged when points merge); other integer fields are categories or
# flags (classification, return numbers, point source ids...) and take the majority value.
CONTINUOUS_INTEGER_FIELDS = {"intensity", "red", "green", "blue", "nir", "infrared", "alpha", "scan_angle",
                             "scan_angle_rank", "reflectance", "amplitude", "deviation"}


def is_categorical(name: str, values: np.ndarray) -> bool:
    kind = np.asarray(values).dtype.kind
    return kind in "bui" and name.lower() not in CONTINUOUS_INTEGER_FIELDS


def subsample_cloud(cloud: PointCloud, dl: float) -> tuple[PointCloud, np.ndarray]:
    """Grid-subsample a cloud (KPConv §3.3): barycentres; measurements averaged (rounded back to integer types);
    categorical fields (classes, flags, ids) by majority vote. Returns the new cloud and, for every input
    point, the index of its output point."""
    continuous = [n for n, v in cloud.fields.items() if not is_categorical(n, v)]
    feats = np.stack([cloud.fields[n].astype(np.float64) for n in continuous], axis=1) if continuous else None
    sub = grid_subsample(cloud.xyz, dl, features=feats)
    fields = {}
    m = len(sub.points)
    for name, values in cloud.fields.items():
        if name in continuous:
            avg = sub.features[:, continuous.index(name)]
            if values.dtype.kind in "iu":
                info = np.iinfo(values.dtype)
                avg = np.clip(np.round(avg), info.min, info.max)
            fields[name] = avg.astype(values.dtype)
        else:
            fields[name] = majority_vote(sub.inverse, values, m).astype(values.dtype)
    meta = {k: v for k, v in cloud.meta.items() if k != "ply_other_elements"}
    return PointCloud(sub.points, fields, meta), sub.inverse
