"""Array formats: KITTI/nuScenes ``.bin``, ``.npy`` and text (``.txt``/``.xyz``/``.csv``) with a column spec."""
from __future__ import annotations

import io
import math
import re

import numpy as np

from ..errors import BadInputError

KITTI_COLUMNS = {4: ("x", "y", "z", "intensity"), 5: ("x", "y", "z", "intensity", "ring")}


def parse_columns(spec: str | list[str] | None, n: int, path: str) -> list[str]:
    """Column names from a spec like ``x,y,z,intensity,class`` (``_`` skips a column); default x,y,z,col3..."""
    if spec is None:
        names = ["x", "y", "z"] + [f"col{i}" for i in range(3, n)]
    else:
        names = [c.strip() for c in (spec.split(",") if isinstance(spec, str) else spec)]
    if len(names) != n:
        raise BadInputError(f"the column spec names {len(names)} columns but the data has {n}", path)
    for c in ("x", "y", "z"):
        if c not in names:
            raise BadInputError(f"the column spec has no {c!r} column", path)
    return names


def flat_fields(fields: dict, keep=()) -> dict[str, np.ndarray]:
    """Fields with one value per point, for formats without per-point arrays: a field of n values per point (a
    LAS extra-bytes array, a PCD COUNT n field) becomes ``<name>_0`` ... ``<name>_<n-1>`` (except ``keep``)."""
    out = {}
    for name, values in fields.items():
        values = np.asarray(values)
        if values.ndim > 1 and name not in keep:
            flat = values.reshape(len(values), -1)
            out.update({f"{name}_{k}": np.ascontiguousarray(flat[:, k]) for k in range(flat.shape[1])})
        else:
            out[name] = values
    return out


def _from_columns(table: np.ndarray, names: list[str], meta: dict, int_columns: set[str] = frozenset()):
    from .cloud import PointCloud

    with np.errstate(invalid="ignore", over="ignore"):  # non-finite coordinates are reported by read()
        xyz = np.stack([table[:, names.index(c)] for c in ("x", "y", "z")], axis=1).astype(np.float64)
    fields = {}
    for i, name in enumerate(names):
        if name in ("x", "y", "z", "_"):
            continue
        col = table[:, i]
        fields[name] = col.astype(np.int64) if name in int_columns else col
    return PointCloud(xyz, fields, meta)


def read_bin(data: bytes, path: str, columns: int | str | None = None, labels: str | None = None):
    """KITTI velodyne ``.bin``: float32 rows x,y,z,intensity (``columns=5`` for nuScenes: +ring).

    ``labels``: a SemanticKITTI ``.label`` file (uint32 per point: semantic = low 16 bits, instance = high 16).
    """
    if columns is None or str(columns).strip().isdigit():
        ncol = 4 if columns is None else int(columns)
        if ncol < 3:
            raise BadInputError(f"--columns {columns}: a .bin scan has at least 3 float32 columns (x, y, z)", path)
        names = KITTI_COLUMNS.get(ncol) or ("x", "y", "z") + tuple(f"col{i}" for i in range(3, ncol))
    else:
        names = tuple(c.strip() for c in str(columns).split(","))
        ncol = len(names)
    names = parse_columns(list(names), ncol, path)  # the spec must name x, y and z
    if len(data) % (4 * ncol):
        raise BadInputError(f"size {len(data)} bytes is not a multiple of {ncol} float32 columns; the file is "
                            f"truncated or has another column count (use --columns)", path)
    table = np.frombuffer(data, dtype="<f4").reshape(-1, ncol)
    cloud = _from_columns(table, list(names), {"format": "bin", "bin_columns": list(names)})
    cloud.fields = {k: np.ascontiguousarray(v) for k, v in cloud.fields.items()}
    if labels is not None:
        try:
            raw = np.fromfile(labels, dtype="<u4")
        except OSError as e:
            raise BadInputError(f"cannot read labels: {e.strerror}", labels) from None
        if len(raw) != len(cloud):
            raise BadInputError(f"{len(raw)} labels for {len(cloud)} points in {path}", labels)
        cloud.fields["semantic"] = (raw & 0xFFFF).astype(np.uint16)
        cloud.fields["instance"] = (raw >> 16).astype(np.uint16)
    return cloud


def write_bin(cloud, dest, path: str) -> list[str]:
    names = cloud.meta.get("bin_columns") if cloud.meta.get("format") == "bin" else None
    names = list(names or KITTI_COLUMNS[4])
    table = np.zeros((len(cloud), len(names)), dtype="<f4")
    for i, name in enumerate(names):
        if name in ("x", "y", "z"):
            table[:, i] = cloud.xyz[:, "xyz".index(name)]
        elif name in cloud.fields:
            table[:, i] = cloud.fields[name]
    notes = []
    dropped = [n for n in cloud.fields if n not in names]
    if dropped:
        notes.append(f"the .bin format holds only {','.join(names)}; not written: {', '.join(dropped)}")
    missing = [n for n in names if n not in ("x", "y", "z") and n not in cloud.fields]
    if missing:
        notes.append(f"no {', '.join(missing)} field: written as 0")
    if len(cloud) and np.abs(cloud.xyz).max() > 1e5:
        notes.append("coordinates above 100 km are stored as float32 in .bin and lose precision")
    dest.write(table.tobytes())
    return notes


def _check_npy_size(data: bytes, path: str) -> None:
    """The array a .npy header declares must fit in the bytes after it: numpy allocates the declared array
    before reading into it, so a damaged shape would otherwise cost its full size first."""
    from numpy.lib import format as npy_format

    buf = io.BytesIO(data)
    try:
        version = npy_format.read_magic(buf)
        read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = read_header(buf)
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError and others for a malformed header
        raise BadInputError(f"cannot read .npy data ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                            path) from None
    need = math.prod(shape) * dtype.itemsize
    if need > len(data) - buf.tell():
        raise BadInputError(f"file is truncated: the header declares an array of shape {shape} ({need:,} bytes) but "
                            f"{len(data) - buf.tell():,} bytes follow it", path)


def _numeric(dt: np.dtype) -> bool:
    return dt.kind in "iuf" and dt.shape == ()


def read_npy(data: bytes, path: str, columns: str | None = None):
    _check_npy_size(data, path)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # noqa: BLE001
        raise BadInputError(f"cannot read .npy data ({str(e).splitlines()[0] if str(e) else type(e).__name__})", path) from None
    if arr.dtype.names:  # structured array: fields by name
        from .cloud import PointCloud

        names = arr.dtype.names
        missing = [c for c in ("x", "y", "z") if c not in names]
        if missing:
            raise BadInputError(f"structured array has no {', '.join(missing)} field (found: {', '.join(names)})", path)
        if arr.ndim != 1:
            raise BadInputError(f"expected a one-dimensional structured array; got shape {arr.shape}", path)
        odd = [f"{n} ({arr.dtype[n]})" for n in names if arr.dtype[n].base.kind not in "iufb"]
        if odd or any(not _numeric(arr.dtype[c]) for c in ("x", "y", "z")):
            raise BadInputError(f"structured array fields must be numbers; not: {', '.join(odd or ['x, y, z'])}", path)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite coordinates are reported by read()
            xyz = np.stack([arr[c].astype(np.float64) for c in ("x", "y", "z")], axis=1)
        return PointCloud(xyz, {n: np.array(arr[n]) for n in names if n not in ("x", "y", "z")},
                          {"format": "npy", "npy_structured": True})
    if not _numeric(arr.dtype):
        raise BadInputError(f"expected an array of numbers; got {arr.dtype}", path)
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise BadInputError(f"expected an (N, >=3) array or a structured array with x, y, z; got shape {arr.shape}", path)
    names = parse_columns(columns, arr.shape[1], path)
    return _from_columns(arr, names, {"format": "npy", "npy_columns": names, "npy_dtype": arr.dtype.str})


def write_npy(cloud, dest, path: str) -> list[str]:
    """Writes a structured array (x, y, z float64 + every field with its dtype): nothing is lost."""
    cols = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")] + [(n, np.asarray(v).dtype.str, np.shape(v)[1:])
                                                         for n, v in cloud.fields.items()]
    arr = np.empty(len(cloud), dtype=cols)
    for i, c in enumerate("xyz"):
        arr[c] = cloud.xyz[:, i]
    for n, v in cloud.fields.items():
        arr[n] = v
    np.save(dest, arr, allow_pickle=False)
    return []


_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(nan|inf)$", re.IGNORECASE)


def read_text(data: bytes, path: str, columns: str | None = None):
    """Whitespace- or comma-separated numbers, one point per line; an optional first line of column names
    (``x y z intensity`` or ``//X,Y,Z``) is used when no column spec is given."""
    text = data.decode("utf-8", errors="replace")
    lines = text.splitlines()
    header = None
    skip = 0  # leading blank, comment and non-numeric lines; the first non-blank one may name the columns
    while skip < len(lines) and (not lines[skip].strip() or lines[skip].lstrip().startswith(("#", "//"))
                                 or not all(_NUMBER.match(t) for t in re.split(r"[,\s;]+", lines[skip].strip()))):
        first = lines[skip].strip().lstrip("#/").strip()
        if first and header is None:
            header = [t.lower() for t in re.split(r"[,\s;]+", first) if t]
        skip += 1
    lines = lines[skip:]
    body = "\n".join(lines).replace(",", " ").replace(";", " ")
    try:
        flat = np.array(body.split(), dtype=np.float64)
    except ValueError as e:
        raise BadInputError(f"non-numeric value in the data ({e})", path) from None
    ncol = len(lines[0].split()) if lines and "," not in lines[0] else (len(re.split(r"[,;\s]+", lines[0].strip())) if lines else 0)
    if ncol == 0:
        raise BadInputError("no points in the file", path)
    if ncol < 3 or len(flat) % ncol:
        raise BadInputError(f"rows do not all have {ncol} columns (at least x, y, z needed)", path)
    table = flat.reshape(-1, ncol)
    names = parse_columns(columns if columns is not None else (header if header and len(header) == ncol else None),
                          ncol, path)
    # Columns written as integers stay integers (labels, classes): whole numbers that float64 and int64 both
    # hold exactly (below 2**53).
    ints = {n for i, n in enumerate(names) if n not in ("x", "y", "z")
            and np.all(np.abs(table[:, i]) < 2.0**53) and np.all(table[:, i] == np.round(table[:, i]))}
    return _from_columns(table, names, {"format": "txt", "txt_columns": names}, ints)


def write_text(cloud, dest, path: str) -> list[str]:
    fields = flat_fields(cloud.fields)
    names = ["x", "y", "z"] + list(fields)
    fmts = ["%.17g"] * 3
    cols = [cloud.xyz[:, 0], cloud.xyz[:, 1], cloud.xyz[:, 2]]
    for v in fields.values():
        v = np.asarray(v)
        fmts.append("%d" if v.dtype.kind in "iub" else "%.9g" if v.dtype == np.float32 else "%.17g")
        cols.append(v)
    out = io.StringIO()
    out.write(" ".join(names) + "\n")
    if len(cloud):
        # Format column by column (vectorised), then join rows.
        with np.errstate(invalid="ignore"):  # a signalling NaN warns when widened; it is written as nan
            parts = [np.char.mod(f, c.astype(np.int64) if f == "%d" else c.astype(np.float64))
                     for f, c in zip(fmts, cols)]
        rows = parts[0]
        for p in parts[1:]:
            rows = np.char.add(np.char.add(rows, " "), p)
        out.write("\n".join(rows.tolist()))
        out.write("\n")
    dest.write(out.getvalue().encode())
    return []
