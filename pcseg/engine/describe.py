"""Parameter and MAC counts of a network on a real cloud."""
from __future__ import annotations

import numpy as np

from ..data import build_batch
from ..geometry import grid_subsample
from ..io import read
from ..models import build, count_macs, count_params


def real_sample(path: str, dl0: float, points: int) -> np.ndarray:
    """The ``points`` subsampled points (cell ``dl0``) nearest to the cloud's median point, centred on it."""
    cloud = read(path)
    sub = grid_subsample(cloud.xyz, dl0).points
    centre = np.median(sub, axis=0)
    d = np.linalg.norm(sub - centre, axis=1)
    keep = np.argsort(d)[: min(points, len(sub))]
    return sub[keep] - centre


def describe_network(name: str, num_classes: int, in_features: int, options: dict, cloud: str, points: int) -> dict:
    model = build(name, num_classes=num_classes, in_features=in_features, **options)
    spec = model.pyramid_spec
    xyz = real_sample(cloud, spec.dl0, points)
    batch = build_batch([xyz], [np.ones((len(xyz), in_features), dtype=np.float32)], spec).to("cpu")
    return {"model": name, "options": model.config(), "params": count_params(model),
            "macs": count_macs(model, batch), "points": int(len(xyz)), "cloud": cloud}
