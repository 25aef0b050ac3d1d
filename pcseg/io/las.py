"""LAS/LAZ (LAS 1.0-1.4, point formats 0-10, extra bytes) through laspy, losslessly.

Reading keeps every dimension as its raw stored values (standard dimensions, bit fields and extra bytes) and
the whole header (version, point format, scales, offsets, VLRs/EVLRs with the CRS, extra-bytes
definitions). Writing back with the same points gives the same raw integer X/Y/Z and the same records.
"""
from __future__ import annotations

import copy
import io
import re

import numpy as np

from typing import TYPE_CHECKING

from ..errors import BadInputError

if TYPE_CHECKING:
    import laspy

    from .cloud import PointCloud

# ASPRS standard classification codes (LAS 1.4 R15, Table 17).
ASPRS_CLASS_NAMES = {0: "created, never classified", 1: "unclassified", 2: "ground", 3: "low vegetation",
                     4: "medium vegetation", 5: "high vegetation", 6: "building", 7: "low point (noise)",
                     8: "model key-point", 9: "water", 10: "rail", 11: "road surface", 12: "overlap",
                     13: "wire guard", 14: "wire conductor", 15: "transmission tower", 16: "wire connector",
                     17: "bridge deck", 18: "high noise"}
SUPPORTED_VERSIONS = {(1, 0), (1, 1), (1, 2), (1, 3), (1, 4)}
_XYZ = ("X", "Y", "Z")
_LAS_EB_TYPES = {np.dtype(t) for t in ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8")}


def _check_signature(head: bytes, path: str) -> None:
    if len(head) < 227 or head[:4] != b"LASF":
        raise BadInputError("not a LAS/LAZ file (no 'LASF' signature at the start, or shorter than a LAS header)", path)
    major, minor = head[24], head[25]
    if (major, minor) not in SUPPORTED_VERSIONS:
        raise BadInputError(f"unsupported LAS version {major}.{minor} (pcseg reads LAS 1.0 to 1.4)", path)


def read_las(data: bytes | str, path: str) -> "PointCloud":
    import laspy

    if isinstance(data, str):
        with open(data, "rb") as f:
            head = f.read(227)
        _check_signature(head, path)
        source = data
    else:
        _check_signature(data[:227], path)
        source = io.BytesIO(data)
    try:
        las = laspy.read(source)
    except Exception as e:  # laspy raises many types for truncated/corrupt files
        raise BadInputError(f"cannot read LAS/LAZ data ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'corrupt'}); "
                            "the file may be truncated or corrupt", path) from None
    n = len(las.points)
    header = las.header
    declared = int(header.point_count)
    if declared and n != declared:
        raise BadInputError(f"file is truncated: header declares {declared} points, {n} could be read", path)
    return _cloud_from_points(las.points, header, path)


def _cloud_from_points(points, header, path: str) -> "PointCloud":
    """A PointCloud of a laspy point record: float64 xyz, every dimension as its raw stored values."""
    from .cloud import PointCloud

    raw = points.array
    xyz = np.stack([raw[d].astype(np.float64) * header.scales[i] + header.offsets[i]
                    for i, d in enumerate(_XYZ)], axis=1)
    fields: dict[str, np.ndarray] = {}
    for dim in header.point_format.dimensions:
        if dim.name in _XYZ:
            continue
        if dim.name in raw.dtype.names:  # stored as its own field: take the raw stored values
            fields[dim.name] = np.array(raw[dim.name])
        else:  # bit field packed in a byte
            fields[dim.name] = np.array(points[dim.name])
    meta = {"format": "laz" if header.are_points_compressed else "las", "las_header": copy.deepcopy(header)}
    return PointCloud(xyz, fields, meta)


def iter_las_chunks(path: str, chunk_size: int = 1_000_000):
    """Stream a LAS/LAZ file: yields (index of the chunk's first point, PointCloud of the chunk)."""
    import laspy

    with open(path, "rb") as f:
        _check_signature(f.read(227), path)
    try:
        with laspy.open(path) as reader:
            start = 0
            for points in reader.chunk_iterator(chunk_size):
                cloud = _cloud_from_points(points, reader.header, path)
                yield start, cloud
                start += len(cloud)
    except BadInputError:
        raise
    except Exception as e:
        raise BadInputError(f"cannot read LAS/LAZ data ({type(e).__name__}: {e}); the file may be truncated", path) from None


def _new_header(cloud) -> "laspy.LasHeader":
    import laspy

    has_rgb = all(c in cloud.fields for c in ("red", "green", "blue"))
    header = laspy.LasHeader(version="1.4", point_format=7 if has_rgb else 6)
    lo = np.floor(cloud.xyz.min(axis=0)) if len(cloud) else np.zeros(3)
    header.offsets = lo
    extent = (cloud.xyz.max(axis=0) - lo) if len(cloud) else np.zeros(3)
    # 1 mm resolution unless the extent would not fit in int32 (2147 km at 1 mm).
    header.scales = np.where(extent / 0.001 < 2**31 - 1, 0.001, 0.01)
    return header


def _fit_standard(name: str, values: np.ndarray, dim, path: str) -> np.ndarray:
    """Values for a standard LAS dimension, checked against what the dimension can hold."""
    values = np.asarray(values)
    if dim.kind.name == "FloatingPoint":
        return values.astype(np.float64)
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise BadInputError(f"field {name!r} has non-integer values and cannot be stored in LAS dimension {name}", path)
    bits = dim.num_bits
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if dim.kind.name == "SignedInteger" else (0, 2**bits - 1)
    if len(values) and (values.min() < lo or values.max() > hi):
        raise BadInputError(f"field {name!r} has values in [{values.min()}, {values.max()}] that do not fit LAS "
                            f"dimension {name} ({lo}..{hi})", path)
    return values


def output_header(cloud, fields: dict[str, np.dtype], path: str) -> tuple["laspy.LasHeader", list[str]]:
    """The header to write: the input's own (a deep copy) or a new LAS 1.4 one, plus extra-bytes dimensions
    for fields the point format does not have. Returns it with notes for the user."""
    import laspy

    notes: list[str] = []
    header = cloud.meta.get("las_header")
    header = copy.deepcopy(header) if header is not None else _new_header(cloud)
    std = {d.name for d in header.point_format.dimensions}
    new_dims = []
    for name, dt in fields.items():
        if name in std or name.lower() in ("x", "y", "z"):
            continue
        dt = np.dtype("u1") if np.dtype(dt) == np.bool_ else np.dtype(dt)
        if dt not in _LAS_EB_TYPES:
            raise BadInputError(f"field {name!r} of type {dt} cannot be stored in LAS extra bytes", path)
        if len(name.encode()) > 32:
            raise BadInputError(f"field name {name!r} is longer than the 32 bytes LAS allows", path)
        new_dims.append(laspy.ExtraBytesParams(name=name, type=dt))
    if new_dims:
        header.add_extra_dims(new_dims)
        notes.append("new fields stored as LAS extra bytes: " + ", ".join(d.name for d in new_dims))
    return header, notes


def fill_record(header, cloud, path: str):
    """A laspy point record of ``cloud`` under ``header`` (raw X/Y/Z from the header's scales and offsets)."""
    import laspy

    record = laspy.ScaleAwarePointRecord.zeros(len(cloud), header=header)
    scales, offsets = np.asarray(header.scales), np.asarray(header.offsets)
    raw_xyz = np.round((cloud.xyz - offsets) / scales)
    if len(cloud) and (raw_xyz.min() < -(2**31) or raw_xyz.max() > 2**31 - 1):
        raise BadInputError("coordinates do not fit the LAS scale/offset of this header (int32 overflow)", path)
    arr = record.array
    for i, d in enumerate(_XYZ):
        arr[d] = raw_xyz[:, i].astype(np.int32)
    std = {d.name: d for d in header.point_format.dimensions}
    for name, values in cloud.fields.items():
        if name.lower() in ("x", "y", "z"):
            continue
        dim = std[name]
        if not dim.is_standard:
            arr[name] = np.asarray(values).astype(arr.dtype[name], copy=False)
        elif name in arr.dtype.names:
            arr[name] = _fit_standard(name, values, dim, path).astype(arr.dtype[name], copy=False)
        else:
            record[name] = _fit_standard(name, values, dim, path)
    return record


def write_las(cloud, dest, compressed: bool, path: str) -> list[str]:
    """Write ``cloud`` as LAS (or LAZ) to the binary stream ``dest``. Returns notes about converted fields."""
    import laspy

    header, notes = output_header(cloud, {k: np.asarray(v).dtype for k, v in cloud.fields.items()}, path)
    las = laspy.LasData(header=header, points=fill_record(header, cloud, path))
    try:
        las.write(dest, do_compress=compressed)
    except Exception as e:
        raise BadInputError(f"cannot write LAS data: {e}", path) from None
    return notes


def las_version(header) -> str:
    return f"{header.version.major}.{header.version.minor}"


def las_crs(header) -> str | None:
    """A short description of the CRS held in the VLRs (WKT name and EPSG code, or GeoTIFF EPSG), or None.

    Parsed from the VLR text itself so that no projection library (pyproj) is needed.
    """
    for vlr in list(header.vlrs) + list(header.evlrs or []):
        if vlr.record_id == 2112:  # OGC coordinate system WKT
            text = getattr(vlr, "string", None)
            if text is None:
                text = bytes(getattr(vlr, "record_data", b"")).decode("latin-1")
            text = text.strip("\x00 ")
            name = re.match(r'\s*\w+\["([^"]*)"', text)
            # The CRS's own code is the AUTHORITY that closes the outermost bracket (inner ones name units, datums).
            code = re.search(r'AUTHORITY\["EPSG",\s*"?(\d+)"?\]\]\s*$', text)
            label = name.group(1) if name else "WKT"
            return f"{label} (EPSG:{code.group(1)})" if code else label
    for vlr in header.vlrs:
        if vlr.record_id == 34735:  # GeoKeyDirectory
            for key in getattr(vlr, "geo_keys", []):
                if key.id in (3072, 2048) and key.value_offset not in (0, 32767):  # Projected / Geographic CS type
                    return f"EPSG:{key.value_offset}"
            return "GeoTIFF keys (user-defined)"
    return None


__all__ = ["read_las", "write_las", "las_version", "las_crs", "SUPPORTED_VERSIONS"]
