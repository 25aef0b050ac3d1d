"""S3DIS room folders: ``room/Annotations/<class>_<n>.txt`` with lines ``x y z r g b``."""
from __future__ import annotations

import os
import re

import numpy as np

from ..errors import BadInputError

# The 13 S3DIS classes in their usual order (Armeni et al. 2016); "stairs" is counted as clutter, as is usual.
S3DIS_CLASSES = ("ceiling", "floor", "wall", "beam", "column", "window", "door",
                 "table", "chair", "sofa", "bookcase", "board", "clutter")
_ALIASES = {"stairs": "clutter"}
_NAME = re.compile(r"^([A-Za-z]+)_(\d+)\.txt$")


def is_s3dis_room(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "Annotations"))


def read_s3dis_room(path: str):
    """Points of every annotation file, with ``red``/``green``/``blue`` (uint8), ``class`` (uint8, index in
    :data:`S3DIS_CLASSES`) and ``instance`` (int32, one per annotation file, from 0)."""
    from .cloud import PointCloud

    ann = os.path.join(path, "Annotations")
    files = sorted(f for f in os.listdir(ann) if f.endswith(".txt"))
    if not files:
        raise BadInputError("S3DIS room folder has no Annotations/*.txt files", path)
    xyzs, rgbs, classes, instances = [], [], [], []
    for inst, name in enumerate(files):
        m = _NAME.match(name)
        cls = _ALIASES.get(m.group(1), m.group(1)) if m else None
        if cls not in S3DIS_CLASSES:
            raise BadInputError(f"annotation file {name!r} does not name an S3DIS class ({', '.join(S3DIS_CLASSES)})", path)
        with open(os.path.join(ann, name), "rb") as f:
            raw = f.read().decode("utf-8", errors="replace")
        try:
            table = np.array(raw.split(), dtype=np.float64)
        except ValueError:
            raise BadInputError(f"non-numeric value in {name}", path) from None
        if len(table) % 6:
            raise BadInputError(f"{name}: lines must hold 6 values 'x y z r g b'", path)
        table = table.reshape(-1, 6)
        xyzs.append(table[:, :3])
        rgbs.append(table[:, 3:].astype(np.uint8))
        classes.append(np.full(len(table), S3DIS_CLASSES.index(cls), dtype=np.uint8))
        instances.append(np.full(len(table), inst, dtype=np.int32))
    rgb = np.concatenate(rgbs)
    fields = {"red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2],
              "class": np.concatenate(classes), "instance": np.concatenate(instances)}
    meta = {"format": "s3dis", "class_names": list(S3DIS_CLASSES), "instance_files": files}
    return PointCloud(np.concatenate(xyzs), fields, meta)
