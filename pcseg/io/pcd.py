"""PCD (Point Cloud Library) reader and writer in numpy: ascii, binary and binary_compressed (LZF).

Organised clouds mark missing returns with NaN coordinates; those points are dropped on reading (the count is
kept in ``meta["pcd_dropped"]``).
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import BadInputError

_TYPES = {("F", 4): "<f4", ("F", 8): "<f8", ("U", 1): "u1", ("U", 2): "<u2", ("U", 4): "<u4", ("U", 8): "<u8",
          ("I", 1): "i1", ("I", 2): "<i2", ("I", 4): "<i4", ("I", 8): "<i8"}


def lzf_decompress(src: bytes, size: int) -> bytes:
    """LZF decompression (liblzf format as used by PCL's binary_compressed)."""
    out = bytearray(size)
    ip = op = 0
    n = len(src)
    while ip < n:
        ctrl = src[ip]
        ip += 1
        if ctrl < 32:  # literal run of ctrl + 1 bytes
            length = ctrl + 1
            if ip + length > n or op + length > size:
                raise ValueError("corrupt LZF literal run")
            out[op:op + length] = src[ip:ip + length]
            ip += length
            op += length
        else:  # back reference
            length = ctrl >> 5
            if length == 7:
                length += src[ip]
                ip += 1
            ref = op - ((ctrl & 0x1F) << 8) - src[ip] - 1
            ip += 1
            length += 2
            if ref < 0 or op + length > size:
                raise ValueError("corrupt LZF back reference")
            if ref + length <= op:
                out[op:op + length] = out[ref:ref + length]
            else:  # overlapping copy repeats the pattern
                for k in range(length):
                    out[op + k] = out[ref + k]
            op += length
    if op != size:
        raise ValueError(f"LZF data decompressed to {op} bytes, expected {size}")
    return bytes(out)


def _parse_header(data: bytes, path: str):
    header, pos = {}, 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise BadInputError("PCD header is incomplete (no DATA line)", path)
        raw = data[pos:end].strip()
        pos = end + 1
        if not raw or raw.startswith(b"#"):
            continue
        # the header is printable ASCII (comments aside): another byte means a damaged header, not a field name
        if re.search(rb"[^\x20-\x7e\t\r]", raw):
            raise BadInputError(f"PCD header line {raw[:40]!r} has non-text bytes; the file is damaged", path)
        line = raw.decode("ascii")
        key, _, value = line.partition(" ")
        header[key.upper()] = value.split()
        if key.upper() == "DATA":
            return header, pos


# LZF expands at most 264 bytes per 3-byte back reference (and 32 per 33-byte literal run): a declared
# uncompressed size beyond this ratio cannot come from the compressed bytes, whatever the header says.
_LZF_MAX_RATIO = 88


def _layout(header: dict, path: str):
    """(names, sizes, types, counts, points, data kind) from a parsed header, checked against each other."""
    try:
        names = header["FIELDS"]
        sizes = [int(s) for s in header["SIZE"]]
        types = [t.upper() for t in header["TYPE"]]
        counts = [int(c) for c in header.get("COUNT", ["1"] * len(names))]
        npts = int(header["POINTS"][0]) if "POINTS" in header else int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        kind = header["DATA"][0].lower()
    except (KeyError, ValueError, IndexError):
        raise BadInputError("PCD header lacks FIELDS/SIZE/TYPE/POINTS or has malformed values", path) from None
    if not (len(names) == len(sizes) == len(types) == len(counts)):
        raise BadInputError(f"PCD header lists {len(names)} FIELDS but {len(sizes)} SIZE, {len(types)} TYPE and "
                            f"{len(counts)} COUNT values", path)
    if npts < 0 or any(c < 1 for c in counts):
        raise BadInputError("PCD header has a negative POINTS or a COUNT below 1", path)
    named = [n for n in names if n != "_"]
    if len(set(named)) != len(named):
        raise BadInputError(f"PCD header names a field twice ({' '.join(names)})", path)
    return names, sizes, types, counts, npts, kind


def read_pcd(data: bytes, path: str):
    from .cloud import PointCloud

    if not (data.startswith(b"#") or data.startswith(b"VERSION") or data.startswith(b"FIELDS")):
        raise BadInputError("not a PCD file (no PCD header)", path)
    header, pos = _parse_header(data, path)
    names, sizes, types, counts, npts, kind = _layout(header, path)
    # PCL pads records with fields named "_", possibly several: give them distinct names, dropped below.
    keys = [f"_pad{i}" if n == "_" else n for i, n in enumerate(names)]
    cols = []
    for name, key, size, typ, count in zip(names, keys, sizes, types, counts):
        if (typ, size) not in _TYPES:
            raise BadInputError(f"PCD field {name!r} has unsupported TYPE {typ} SIZE {size}", path)
        cols.append((key, _TYPES[(typ, size)], (count,)) if count > 1 else (key, _TYPES[(typ, size)]))
    try:
        dtype = np.dtype(cols)
    except (ValueError, TypeError, OverflowError):  # a COUNT of billions: no record layout numpy can hold
        raise BadInputError(f"PCD header COUNT {' '.join(map(str, counts))} describes records too large to "
                            "read; the file is damaged", path) from None
    body = data[pos:]
    try:
        if kind == "ascii":
            flat = np.array(body.split(), dtype=np.float64)
            ncol = sum(counts)
            table = flat[: npts * ncol].reshape(-1, ncol)
            arr = np.empty(len(table), dtype=dtype)
            c = 0
            for key, count in zip(keys, counts):
                values = table[:, c] if count == 1 else table[:, c:c + count]
                if dtype[key].base.kind in "iu":  # text for an integer field must be an integer it can hold
                    info = np.iinfo(dtype[key].base)
                    if not (np.all(values == np.round(values)) and np.all(values >= info.min)
                            and np.all(values <= info.max)):
                        raise BadInputError(f"PCD field {names[keys.index(key)]!r} ({dtype[key].base}) has values "
                                            "that are not integers it can hold", path)
                arr[key] = values
                c += count
        elif kind == "binary":
            if len(body) < npts * dtype.itemsize:
                raise BadInputError(f"file is truncated: header declares {npts:,} points of {dtype.itemsize} bytes, "
                                    f"{len(body) // dtype.itemsize:,} present", path)
            arr = np.frombuffer(body, dtype=dtype, count=npts)
        elif kind == "binary_compressed":
            if len(body) < 8:
                raise BadInputError("file is truncated: binary_compressed data has no size header", path)
            csize, usize = (int(v) for v in np.frombuffer(body[:8], dtype="<u4"))
            if usize != npts * dtype.itemsize:
                raise BadInputError(f"binary_compressed data says {usize:,} bytes uncompressed but {npts:,} points "
                                    f"of {dtype.itemsize} bytes need {npts * dtype.itemsize:,}; the file is damaged",
                                    path)
            if csize > len(body) - 8:
                raise BadInputError(f"file is truncated: {csize:,} bytes of compressed data declared, "
                                    f"{len(body) - 8:,} present", path)
            if usize > _LZF_MAX_RATIO * csize + 32:
                raise BadInputError(f"{csize:,} compressed bytes cannot expand to the {usize:,} bytes that "
                                    f"{npts:,} points need; the header's POINTS is wrong or the file is damaged", path)
            raw = lzf_decompress(body[8:8 + csize], usize)
            # Column-major: all values of the first field, then the second, ...
            arr = np.empty(npts, dtype=dtype)
            off = 0
            for key, size, count in zip(keys, sizes, counts):
                nbytes = size * count * npts
                arr[key] = np.frombuffer(raw[off:off + nbytes], dtype=dtype[key].base).reshape(arr[key].shape)
                off += nbytes
        else:
            raise BadInputError(f"unknown PCD DATA kind {kind!r}", path)
    except BadInputError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy and the LZF decoder raise several types on corrupt data
        raise BadInputError(f"cannot decode PCD {kind} data ({e}); the file may be truncated", path) from None
    if len(arr) != npts:
        raise BadInputError(f"file is truncated: header declares {npts} points, {len(arr)} present", path)
    for c in ("x", "y", "z"):
        if c not in names:
            raise BadInputError(f"PCD file has no {c!r} field", path)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN marks a missing return: dropped below
        xyz = np.stack([arr[c].astype(np.float64) for c in ("x", "y", "z")], axis=1)
    valid = np.isfinite(xyz).all(axis=1)
    fields = {}
    for name, key, count in zip(names, keys, counts):
        if name in ("x", "y", "z", "_"):
            continue
        v = np.array(arr[key][valid])
        if (name == "rgba" or name == "rgb") and count == 1:  # packed colour: split into channels
            with np.errstate(invalid="ignore"):  # a non-finite packed colour becomes black, not a warning
                packed = v.view("<u4") if v.dtype.itemsize == 4 else np.nan_to_num(v).astype(np.int64).astype("<u4")
            fields["red"] = ((packed >> 16) & 255).astype(np.uint8)
            fields["green"] = ((packed >> 8) & 255).astype(np.uint8)
            fields["blue"] = (packed & 255).astype(np.uint8)
            if name == "rgba":
                fields["alpha"] = ((packed >> 24) & 255).astype(np.uint8)
        else:  # a COUNT n field (a histogram, a descriptor) is an (N, n) array
            fields[name] = v
    viewpoint = header.get("VIEWPOINT")
    if viewpoint is not None and (len(viewpoint) != 7 or not all(_is_number(t) for t in viewpoint)):
        viewpoint = None  # written back as the identity rather than copying a damaged line
    meta = {"format": "pcd", "pcd_dropped": int((~valid).sum()), "pcd_viewpoint": viewpoint}
    return PointCloud(xyz[valid], fields, meta)


def _is_number(token: str) -> bool:
    try:
        return np.isfinite(float(token))
    except ValueError:
        return False


def write_pcd(cloud, dest, path: str) -> list[str]:
    """Binary PCD v0.7, unorganised; x, y, z as float64 (F 8) so nothing is lost, fields with their types."""
    rev = {np.dtype(v): k for k, v in _TYPES.items()}
    cols = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")]
    notes = []
    fields, used = {}, {"x", "y", "z"}
    for n, v in cloud.fields.items():  # the header is ASCII, fields separated by spaces
        name = re.sub(r"[^\x21-\x7e]", "_", n)
        while name in used:
            name += "_"
        if name != n:
            notes.append(f"field {n!r} written as PCD field {name!r}")
        used.add(name)
        fields[name] = v
    for n, v in fields.items():
        dt = np.asarray(v).dtype
        if dt == np.bool_:
            dt = np.dtype("u1")
        if np.dtype(dt).newbyteorder("<") not in rev and dt not in rev:
            notes.append(f"field {n!r} ({dt}) stored as F 8")
            dt = np.dtype("<f8")
        # n values per point (an extra-bytes array, a descriptor): one field of COUNT n
        cols.append((n, np.dtype(dt).newbyteorder("<") if dt.itemsize > 1 else dt, np.shape(v)[1:]))
    arr = np.empty(len(cloud), dtype=cols)
    for i, c in enumerate("xyz"):
        arr[c] = cloud.xyz[:, i]
    for n, v in fields.items():
        arr[n] = v
    types = [rev.get(np.dtype(arr.dtype[n]).base) for n in arr.dtype.names]
    counts = [int(np.prod(arr.dtype[n].shape)) for n in arr.dtype.names]
    head = ["# .PCD v0.7 - Point Cloud Data file format (written by pcseg)", "VERSION 0.7",
            "FIELDS " + " ".join(arr.dtype.names), "SIZE " + " ".join(str(t[1]) for t in types),
            "TYPE " + " ".join(t[0] for t in types), "COUNT " + " ".join(str(c) for c in counts),
            f"WIDTH {len(arr)}", "HEIGHT 1", "VIEWPOINT " + " ".join(cloud.meta.get("pcd_viewpoint") or
                                                                      ["0", "0", "0", "1", "0", "0", "0"]),
            f"POINTS {len(arr)}", "DATA binary"]
    dest.write(("\n".join(head) + "\n").encode("ascii"))
    dest.write(arr.tobytes())
    return notes
