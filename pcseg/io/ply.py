"""PLY (ascii, binary little/big endian) through plyfile, keeping property order, types and comments."""
from __future__ import annotations

import io

import numpy as np

from ..errors import BadInputError

_XYZ = ("x", "y", "z")


def read_ply(data: bytes | str, path: str):
    from plyfile import PlyData

    from .cloud import PointCloud

    try:
        if isinstance(data, str):
            with open(data, "rb") as f:
                magic = f.read(4)
        else:
            magic = data[:4]
        if magic[:3] != b"ply":
            raise BadInputError("not a PLY file (no 'ply' magic line)", path)
        ply = PlyData.read(data if isinstance(data, str) else io.BytesIO(data))
    except BadInputError:
        raise
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInputError(f"cannot read PLY data ({msg}); the file may be truncated or corrupt", path) from None
    if "vertex" not in [el.name for el in ply.elements]:
        raise BadInputError("PLY file has no 'vertex' element", path)
    vertex = ply["vertex"].data
    names = vertex.dtype.names or ()
    missing = [c for c in _XYZ if c not in names]
    if missing:
        raise BadInputError(f"PLY vertices have no {', '.join(missing)} property (found: {', '.join(names)})", path)
    xyz = np.stack([vertex[c].astype(np.float64) for c in _XYZ], axis=1)
    fields = {n: np.array(vertex[n]) for n in names if n not in _XYZ}
    list_props = [p.name for p in ply["vertex"].properties if hasattr(p, "len_dtype")]
    if list_props:
        raise BadInputError(f"PLY vertex list properties are not supported ({', '.join(list_props)})", path)
    meta = {
        "format": "ply",
        "ply_text": bool(ply.text),
        "ply_byte_order": ply.byte_order,
        "ply_comments": list(ply.comments),
        "ply_obj_info": list(ply.obj_info),
        "ply_xyz_dtype": [vertex.dtype[c].str for c in _XYZ],
        "ply_other_elements": [el for el in ply.elements if el.name != "vertex"],
    }
    return PointCloud(xyz, fields, meta)


def write_ply(cloud, dest, path: str) -> list[str]:
    from plyfile import PlyData, PlyElement

    notes: list[str] = []
    meta = cloud.meta if cloud.meta.get("format") == "ply" else {}
    # Coordinates keep their PLY type when read from PLY; otherwise float64 so georeferenced values stay exact.
    xyz_types = meta.get("ply_xyz_dtype", ["<f8", "<f8", "<f8"])
    columns = [(c, np.dtype(t).newbyteorder("=")) for c, t in zip(_XYZ, xyz_types)]
    for name, values in cloud.fields.items():
        dt = np.asarray(values).dtype
        if dt == np.bool_:
            dt = np.dtype("u1")
        if dt.kind not in "iuf" or dt.itemsize > 8 or (dt.kind in "iu" and dt.itemsize == 8):
            target = np.dtype("f8") if dt.kind == "f" else np.dtype("i4") if dt.kind == "i" else np.dtype("u4")
            notes.append(f"field {name!r} ({dt}) stored as PLY {target}")
            dt = target
        columns.append((name, dt))
    arr = np.empty(len(cloud), dtype=columns)
    for i, c in enumerate(_XYZ):
        arr[c] = cloud.xyz[:, i]
    for name, values in cloud.fields.items():
        v = np.asarray(values)
        if v.dtype.kind in "iu" and arr.dtype[name].kind in "iu":
            info = np.iinfo(arr.dtype[name])
            if len(v) and (v.min() < info.min or v.max() > info.max):
                raise BadInputError(f"field {name!r} does not fit PLY type {arr.dtype[name]}", path)
        arr[name] = v
    elements = [PlyElement.describe(arr, "vertex")] + list(meta.get("ply_other_elements", []))
    ply = PlyData(elements, text=meta.get("ply_text", False), byte_order=meta.get("ply_byte_order", "<"),
                  comments=meta.get("ply_comments", []), obj_info=meta.get("ply_obj_info", []))
    ply.write(dest)
    return notes
