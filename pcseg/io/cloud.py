"""The one in-memory point cloud type."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PointCloud:
    """A point cloud: float64 coordinates, named per-point fields and what is needed to write the file back.

    xyz: (N, 3) float64 coordinates in the file's own frame (georeferenced coordinates are kept exactly).
    fields: per-point arrays, in file order, with their original dtypes (e.g. LAS ``classification`` uint8,
        ``intensity`` uint16, extra-bytes dimensions; PLY vertex properties). Never includes x, y, z.
    meta: format metadata (``meta["format"]`` names the format it was read from; LAS keeps its header with
        version, point format, scales, offsets, VLRs/EVLRs and extra-bytes definitions; PLY keeps property
        types, comments and text/binary encoding). Writers use it to reproduce the file.
    """

    xyz: np.ndarray
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyz = np.asarray(self.xyz, dtype=np.float64).reshape(-1, 3)
        for name, values in self.fields.items():
            if len(values) != len(self.xyz):
                raise ValueError(f"field {name!r} has {len(values)} values for {len(self.xyz)} points")

    def __len__(self) -> int:
        return len(self.xyz)

    @property
    def origin(self) -> np.ndarray:
        """A float64 origin for float32 computation: the minimum corner rounded down to the metre."""
        if not len(self):
            return np.zeros(3)
        return np.floor(self.xyz.min(axis=0))

    def local_xyz(self, origin: np.ndarray | None = None) -> np.ndarray:
        """float32 coordinates relative to ``origin`` (default :attr:`origin`); add the origin back in float64."""
        o = self.origin if origin is None else np.asarray(origin, dtype=np.float64)
        return (self.xyz - o).astype(np.float32)

    def select(self, index: np.ndarray) -> "PointCloud":
        """A new cloud with the points ``index`` (boolean mask or integer indices); format metadata is kept,
        but anything tied to the point order (PLY faces) is dropped."""
        meta = {k: v for k, v in self.meta.items() if k != "ply_other_elements"}
        return PointCloud(self.xyz[index], {k: v[index] for k, v in self.fields.items()}, meta)

    def with_fields(self, **new: np.ndarray) -> "PointCloud":
        """A new cloud with fields added or replaced (original fields keep their order)."""
        fields = dict(self.fields)
        fields.update({k: np.asarray(v) for k, v in new.items()})
        return PointCloud(self.xyz, fields, dict(self.meta))

    @property
    def format(self) -> str | None:
        return self.meta.get("format")
